//! One client connection: its stream, its auth table, its rate limit.
//!
//! Ownership: the server's accept loop spawns [`serve`] into a `JoinSet` it owns;
//! `serve` owns the writer task (joined before it returns). Frames to the client go
//! through a bounded [`Outbox`] (in frames and in bytes); a connection whose outbox
//! is full is dropped instead of buffering without limit, and its queue is freed
//! before the connection is closed with [`close_code::TOO_SLOW`].
//!
//! The other way round, a client that sends a frame slowly is bounded too: a frame
//! must be complete within [`FrameLimits::deadline`] of its first byte (else
//! [`close_code::FRAME_TOO_SLOW`]), and the bytes of frames still being received,
//! over all connections, within [`FrameLimits::max_partial_bytes`] (else
//! [`close_code::BUSY`]). Without them a client that sends a 1 MiB frame one byte a
//! second holds a megabyte for as long as it likes: every packet resets the idle
//! timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nook_proto::limits::PROTOCOL_VERSION;
use nook_proto::{
    ClientFrame, Create, CreateToken, ErrorCode, ErrorFrame, FrameDecoder, HelloOk, MailboxId,
    MemberKey, Outcome, Request, Response, ServerFrame,
};
use tokio::sync::mpsc;

use crate::admission::Admission;

use crate::engine::Engine;
use crate::outbox::{Outbox, Queued};

/// Frames queued for one client before it counts as too slow.
const OUTBOX: usize = 8192;
/// Frames handed to quinn in one stream write at most.
const BATCH: usize = 256;

/// Application close codes of the QUIC connection.
pub mod close_code {
    pub const OK: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const TOO_SLOW: u32 = 2;
    pub const SHUTDOWN: u32 = 3;
    /// A frame was not complete within the frame deadline of its first byte.
    pub const FRAME_TOO_SLOW: u32 = 4;
    /// The relay's budget for frames still being received was full.
    pub const BUSY: u32 = 5;
}

/// How long a frame may take to arrive, unless configured otherwise: a 1 MiB frame
/// then needs about 100 KiB/s.
pub const DEFAULT_FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// Bytes of frames still being received, over all connections, unless configured
/// otherwise: 256 maximal frames at once.
pub const DEFAULT_MAX_PARTIAL_FRAME_BYTES: usize = 256 << 20;

/// The bounds on frames a client is still sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Time from a frame's first byte to its last.
    pub deadline: Duration,
    /// Bytes of partially received frames the relay holds for all connections together.
    pub max_partial_bytes: usize,
}

impl Default for FrameLimits {
    fn default() -> FrameLimits {
        FrameLimits {
            deadline: DEFAULT_FRAME_DEADLINE,
            max_partial_bytes: DEFAULT_MAX_PARTIAL_FRAME_BYTES,
        }
    }
}

/// What the relay's connections and its accept loop share besides the engine: the
/// bytes of partial frames held, handshakes in progress, and counts of what was
/// refused or closed (for logs and tests). Counts only: no address, no id.
#[derive(Debug, Default)]
pub struct ConnStats {
    partial_bytes: AtomicUsize,
    peak_partial_bytes: AtomicUsize,
    frames_timed_out: AtomicU64,
    partial_budget_closed: AtomicU64,
    pub(crate) handshaking: AtomicUsize,
    pub(crate) retries_sent: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) handshakes_timed_out: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) refused_at_limit: AtomicU64,
}

impl ConnStats {
    /// Bytes of partially received frames held now.
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes.load(Ordering::Relaxed)
    }
    /// The most partial-frame bytes ever held at once.
    pub fn peak_partial_bytes(&self) -> usize {
        self.peak_partial_bytes.load(Ordering::Relaxed)
    }
    /// Connections closed with [`close_code::FRAME_TOO_SLOW`].
    pub fn frames_timed_out(&self) -> u64 {
        self.frames_timed_out.load(Ordering::Relaxed)
    }
    /// Connections closed with [`close_code::BUSY`].
    pub fn partial_budget_closed(&self) -> u64 {
        self.partial_budget_closed.load(Ordering::Relaxed)
    }
    /// Connections accepted whose handshake has not finished.
    pub fn handshaking(&self) -> usize {
        self.handshaking.load(Ordering::Relaxed)
    }
    /// QUIC Retry packets sent to validate a client's address.
    pub fn retries_sent(&self) -> u64 {
        self.retries_sent.load(Ordering::Relaxed)
    }
    /// Connection attempts refused because too many handshakes were in progress.
    pub fn handshakes_refused(&self) -> u64 {
        self.handshakes_refused.load(Ordering::Relaxed)
    }
    /// Handshakes abandoned because they did not finish in time.
    pub fn handshakes_timed_out(&self) -> u64 {
        self.handshakes_timed_out.load(Ordering::Relaxed)
    }
    /// Connections the relay holds now, handshakes in progress included: what
    /// `--max-connections` bounds.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
    /// Connection attempts refused because `--max-connections` were held.
    pub fn refused_at_limit(&self) -> u64 {
        self.refused_at_limit.load(Ordering::Relaxed)
    }
}

/// One connection's share of [`ConnStats::partial_bytes`], given back when dropped.
struct PartialCharge<'a> {
    stats: &'a ConnStats,
    budget: usize,
    held: usize,
}

impl PartialCharge<'_> {
    /// Charges `bytes` (the connection's partial frame now) in place of what it held;
    /// false, charging nothing more, if that would pass the budget.
    fn set(&mut self, bytes: usize) -> bool {
        if bytes > self.held {
            let more = bytes - self.held;
            let before = self.stats.partial_bytes.fetch_add(more, Ordering::Relaxed);
            if before + more > self.budget {
                self.stats.partial_bytes.fetch_sub(more, Ordering::Relaxed);
                return false;
            }
            self.stats
                .peak_partial_bytes
                .fetch_max(before + more, Ordering::Relaxed);
        } else {
            self.stats
                .partial_bytes
                .fetch_sub(self.held - bytes, Ordering::Relaxed);
        }
        self.held = bytes;
        true
    }
}

impl Drop for PartialCharge<'_> {
    fn drop(&mut self) {
        self.stats
            .partial_bytes
            .fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// What one connection has established: its challenge, greeting, the mailboxes it
/// proved membership of, its subscriptions and its request budget; and where it comes
/// from, which only the create rate per address uses (never logged).
struct ConnState {
    challenge: [u8; 32],
    source: IpAddr,
    greeted: bool,
    authed: HashMap<MailboxId, MemberKey>,
    subscribed: Vec<MailboxId>,
    bucket: TokenBucket,
    /// `Ask`s this connection may still send (spec §17.3).
    asks: crate::engine::AskBudget,
}

struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            tokens: rate * 4.0,
            rate,
            burst: rate * 4.0,
            last: Instant::now(),
        }
    }
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves one connection until it ends. Never panics on what the client sends.
pub async fn serve(
    engine: Arc<Engine>,
    conn: quinn::Connection,
    conn_id: u64,
    frames: FrameLimits,
    stats: Arc<ConnStats>,
    admission: Arc<Admission>,
) {
    let (send, recv) = match conn.accept_bi().await {
        Ok(s) => s,
        Err(_) => return,
    };
    let source = conn.remote_address().ip();
    let ends = Ends {
        recv: Reader::Quic(recv),
        send: Writer::Quic(send),
        source,
    };
    if let Some((code, why)) = serve_stream(engine, ends, conn_id, frames, stats, admission).await {
        conn.close(code.into(), why.as_bytes());
    }
}

/// Serves one forwarded inner session (protocol-spec.md §18.5): the same requests,
/// answers and pushes as a connection, over the inner TLS channel of a route stream.
/// `source` is the forwarder's address, the only one this relay learns. A violation
/// ends the inner channel rather than a QUIC connection that other members share.
pub(crate) async fn serve_inner(
    engine: Arc<Engine>,
    inner: crate::forward::InnerStream,
    source: IpAddr,
    conn_id: u64,
    frames: FrameLimits,
    stats: Arc<ConnStats>,
    admission: Arc<Admission>,
) {
    let (recv, send) = tokio::io::split(inner);
    let ends = Ends {
        recv: Reader::Inner(recv, vec![0; INNER_READ].into_boxed_slice()),
        send: Writer::Inner(send),
        source,
    };
    if let Some((code, why)) = serve_stream(engine, ends, conn_id, frames, stats, admission).await {
        tracing::debug!(code, why, "inner session ended by the relay");
    }
}

/// Bytes read from an inner channel at once (TLS records are at most 16 KiB).
const INNER_READ: usize = 16 * 1024;

/// The two directions of one session and where it comes from (never logged).
struct Ends {
    recv: Reader,
    send: Writer,
    source: IpAddr,
}

/// Where a session's bytes come from: a QUIC stream, or an inner TLS channel.
enum Reader {
    Quic(quinn::RecvStream),
    Inner(tokio::io::ReadHalf<crate::forward::InnerStream>, Box<[u8]>),
}

/// What one read gave.
enum Read {
    Chunk(bytes::Bytes),
    /// The client finished its side.
    Finished,
    /// The stream ended otherwise; how, without the peer's address or text.
    Ended(String),
}

impl Reader {
    /// Cancel-safe: both quinn's `read_chunk` and tokio's `read` are.
    async fn read(&mut self) -> Read {
        match self {
            Reader::Quic(recv) => match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => Read::Chunk(chunk.bytes),
                Ok(None) => Read::Finished,
                Err(e) => Read::Ended(ended_how(&e)),
            },
            Reader::Inner(recv, buf) => match tokio::io::AsyncReadExt::read(recv, buf).await {
                Ok(0) => Read::Finished,
                Ok(n) => Read::Chunk(bytes::Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Read::Ended(format!("inner channel: {}", e.kind())),
            },
        }
    }
}

/// Where a session's answers go.
enum Writer {
    Quic(quinn::SendStream),
    Inner(tokio::io::WriteHalf<crate::forward::InnerStream>),
}

/// Serves one session's stream until it ends; what to close the connection with, if
/// the relay ends it.
async fn serve_stream(
    engine: Arc<Engine>,
    ends: Ends,
    conn_id: u64,
    frames: FrameLimits,
    stats: Arc<ConnStats>,
    admission: Arc<Admission>,
) -> Option<(u32, &'static str)> {
    let Ends {
        mut recv,
        send,
        source,
    } = ends;
    let (tx, rx) = mpsc::channel(OUTBOX);
    let outbox = Outbox::new(conn_id, tx, engine.queues().clone());
    let writer = tokio::spawn(write_loop(send, rx));
    let mut challenge = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut challenge);
    let mut session = ConnState {
        challenge,
        source,
        greeted: false,
        authed: HashMap::new(),
        subscribed: Vec::new(),
        bucket: TokenBucket::new(engine.limits().requests_per_second),
        asks: crate::engine::AskBudget::new(engine.limits().asks_per_minute),
    };
    let mut decoder = FrameDecoder::new();
    let mut partial = PartialCharge {
        stats: &stats,
        budget: frames.max_partial_bytes,
        held: 0,
    };
    // When the frame the decoder holds part of must be complete.
    let mut deadline: Option<tokio::time::Instant> = None;
    // Chunks straight from quinn's receive buffer: no read buffer per connection, so
    // an idle connection costs only what quinn and the decoder hold.
    let reason: Option<(u32, &'static str)> = 'conn: loop {
        // Back-pressure: stop reading while too many durable answers are pending. The
        // client cannot finish a frame the relay does not read, so the wait does not
        // count against its deadline.
        let paused = tokio::time::Instant::now();
        while outbox.in_flight() >= engine.limits().max_in_flight as u64 {
            tokio::select! {
                _ = outbox.in_flight_changed() => {}
                _ = outbox.killed() => break 'conn Some((close_code::TOO_SLOW, "too slow")),
            }
        }
        if let Some(d) = deadline.as_mut() {
            *d += paused.elapsed();
        }
        let chunk = tokio::select! {
            r = recv.read() => match r {
                Read::Chunk(chunk) => chunk,
                Read::Finished => {
                    tracing::debug!(how = "the client finished its stream", "connection ended");
                    if decoder.finish().is_err() {
                        break 'conn Some((close_code::PROTOCOL, "stream ended mid-frame"));
                    }
                    break 'conn None;
                }
                Read::Ended(how) => {
                    tracing::debug!(how, "connection ended");
                    break 'conn None;
                }
            },
            _ = outbox.killed() => break 'conn Some((close_code::TOO_SLOW, "too slow")),
            // Never polled without a deadline; the far instant is only a placeholder.
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                stats.frames_timed_out.fetch_add(1, Ordering::Relaxed);
                break 'conn Some((close_code::FRAME_TOO_SLOW, "frame not completed in time"));
            }
        };
        // Frames are decoded from quinn's chunk in place; only one split across
        // chunks is copied.
        let mut completed = false;
        let fed = decoder.feed(&chunk, |frame: ClientFrame| {
            completed = true;
            match handle(&engine, &admission, &outbox, &mut session, frame) {
                Ok(()) => ControlFlow::Continue(()),
                Err(fatal) => ControlFlow::Break(fatal),
            }
        });
        match fed {
            Ok(None) => {}
            Ok(Some(fatal)) => break 'conn Some(fatal),
            Err(e) => {
                tracing::debug!("malformed frame: {e}");
                outbox.send(&ServerFrame::Response {
                    id: 0,
                    result: Outcome::Err(ErrorFrame::new(ErrorCode::Malformed, e.to_string())),
                });
                break 'conn Some((close_code::PROTOCOL, "malformed frame"));
            }
        }
        // What the decoder holds now is the beginning of one frame: its clock starts
        // with its first byte, i.e. in this chunk unless it was already running for
        // the same frame.
        let pending = decoder.buffered();
        if pending == 0 {
            deadline = None;
        } else if deadline.is_none() || completed {
            deadline = Some(tokio::time::Instant::now() + frames.deadline);
        }
        if !partial.set(pending) {
            stats.partial_budget_closed.fetch_add(1, Ordering::Relaxed);
            break 'conn Some((close_code::BUSY, "relay busy: too many partial frames"));
        }
    };
    // The partial frame's memory goes now, not after the writer's last words.
    drop(partial);
    drop(decoder);
    engine.unsubscribe(conn_id, &session.subscribed);
    let slow = outbox.is_killed();
    drop(outbox);
    let mut writer = writer;
    // Let queued answers (including a last error) reach the client, but never
    // wait on a client that stopped reading.
    if slow
        || tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
        // Joined, not left to the runtime: its queue and the frames it held are
        // freed (and their bytes given back) before the connection is closed.
        let _ = writer.await;
    }
    if let Some((code, why)) = reason {
        if code == close_code::TOO_SLOW {
            tracing::debug!(limit = "slow client dropped", "limit hit");
        }
        tracing::debug!(code, why, "connection closed by the relay");
    }
    reason
}

/// An instant no frame deadline reaches (about 30 years ahead).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// Handles one request. `Err` means the connection must end (protocol violation).
fn handle(
    engine: &Engine,
    admission: &Admission,
    outbox: &Outbox,
    s: &mut ConnState,
    frame: ClientFrame,
) -> Result<(), (u32, &'static str)> {
    let id = frame.id;
    // Kinds and error codes only: never the mailbox, keys or the message text (which
    // may quote what the client sent).
    let kind = kind_of(&frame.request);
    tracing::debug!(kind, "request");
    let now_reply = |result: Result<Response, ErrorFrame>| {
        let result = match result {
            Ok(r) => Outcome::Ok(r),
            Err(e) => {
                log_refusal(kind, e.code);
                Outcome::Err(e)
            }
        };
        outbox.send(&ServerFrame::Response { id, result });
    };
    if !s.greeted {
        return match frame.request {
            Request::Hello { version } if version == PROTOCOL_VERSION => {
                s.greeted = true;
                now_reply(Ok(Response::Hello(HelloOk {
                    version: PROTOCOL_VERSION,
                    challenge: s.challenge,
                    relay_key: engine.identity().public(),
                    now: engine.now(),
                    rotations: engine.rotations().to_vec(),
                    retiring_at: engine.retiring_at(),
                })));
                Ok(())
            }
            Request::Hello { version } => {
                now_reply(Err(ErrorFrame::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "this relay speaks protocol version {PROTOCOL_VERSION}, not {version}; update the client"
                    ),
                )));
                Err((close_code::PROTOCOL, "unsupported version"))
            }
            _ => {
                now_reply(Err(ErrorFrame::new(
                    ErrorCode::UnsupportedVersion,
                    "the first request must be Hello",
                )));
                Err((close_code::PROTOCOL, "no hello"))
            }
        };
    }
    if !s.bucket.take() {
        now_reply(Err(ErrorFrame::new(
            ErrorCode::RateLimited,
            "too many requests; slow down",
        )));
        return Ok(());
    }
    let member_of = |s: &ConnState, mailbox: &MailboxId| -> Result<MemberKey, ErrorFrame> {
        s.authed.get(mailbox).copied().ok_or_else(|| {
            ErrorFrame::new(
                ErrorCode::NotAuthenticated,
                "authenticate for this mailbox first (Auth, Join or Create)",
            )
        })
    };
    let room = |s: &ConnState, mailbox: &MailboxId| -> Result<(), ErrorFrame> {
        if s.authed.contains_key(mailbox)
            || s.authed.len() < engine.limits().max_mailboxes_per_connection
        {
            Ok(())
        } else {
            Err(too_many_mailboxes())
        }
    };
    match frame.request {
        Request::Hello { .. } => {
            now_reply(Err(ErrorFrame::new(
                ErrorCode::UnsupportedVersion,
                "Hello was already sent",
            )));
            return Err((close_code::PROTOCOL, "repeated hello"));
        }
        Request::Create(c) => create(engine, admission, outbox, s, id, c, None, &now_reply),
        Request::CreateWithToken { create: c, token } => {
            create(
                engine,
                admission,
                outbox,
                s,
                id,
                c,
                Some(&token),
                &now_reply,
            );
        }
        Request::Join(j) => {
            let (mailbox, member) = (j.mailbox, j.member);
            match room(s, &mailbox).and_then(|()| engine.join(outbox, id, &s.challenge, j)) {
                Ok(_) => {
                    s.authed.insert(mailbox, member);
                }
                Err(e) => now_reply(Err(e)),
            }
        }
        Request::Auth(a) => {
            let r = room(s, &a.mailbox)
                .and_then(|()| engine.auth(&s.challenge, &a.mailbox, &a.member, &a.signature));
            if r.is_ok() {
                s.authed.insert(a.mailbox, a.member);
            }
            now_reply(r);
        }
        Request::Subscribe { mailbox } => {
            let r = member_of(s, &mailbox).and_then(|m| engine.subscribe(outbox, &mailbox, &m));
            if r.is_ok() && !s.subscribed.contains(&mailbox) {
                s.subscribed.push(mailbox);
            }
            now_reply(r);
        }
        Request::Put(p) => {
            if let Err(e) = member_of(s, &p.mailbox).and_then(|m| engine.put(outbox, id, &m, p)) {
                now_reply(Err(e));
            }
        }
        Request::Fetch {
            mailbox,
            after,
            limit,
        } => {
            now_reply(
                member_of(s, &mailbox).and_then(|m| engine.fetch(&mailbox, &m, after, limit)),
            );
        }
        Request::Ack { mailbox, upto } => {
            now_reply(member_of(s, &mailbox).and_then(|m| engine.ack(&mailbox, &m, upto)));
        }
        Request::Leave { mailbox, signature } => {
            let r = member_of(s, &mailbox)
                .and_then(|m| engine.leave(outbox, id, &s.challenge, &mailbox, &m, &signature));
            match r {
                Ok(()) => {
                    s.authed.remove(&mailbox);
                }
                Err(e) => now_reply(Err(e)),
            }
        }
        Request::Close(c) => {
            let mailbox = c.mailbox;
            let r =
                member_of(s, &mailbox).and_then(|m| engine.close(outbox, id, &s.challenge, &m, c));
            match r {
                Ok(()) => {
                    s.authed.remove(&mailbox);
                }
                Err(e) => now_reply(Err(e)),
            }
        }
        Request::Ping { nonce } => now_reply(Ok(Response::Pong { nonce })),
        // Boards (spec §17): answered once durable, or now with the error.
        Request::Post(p) => {
            if let Err(e) = member_of(s, &p.mailbox).and_then(|m| engine.post(outbox, id, &m, p)) {
                now_reply(Err(e));
            }
        }
        Request::Unpost { mailbox, listing } => {
            if let Err(e) = member_of(s, &mailbox)
                .and_then(|m| engine.unpost(outbox, id, &m, &mailbox, &listing))
            {
                now_reply(Err(e));
            }
        }
        Request::Browse { board, after } => now_reply(Ok(engine.browse(&board, after))),
        Request::Ask(a) => {
            let r = if s.asks.take() {
                engine.ask(outbox, id, a)
            } else {
                Err(ErrorFrame::new(
                    ErrorCode::RateLimited,
                    "too many seat requests from this connection; wait a minute",
                ))
            };
            if let Err(e) = r {
                now_reply(Err(e));
            }
        }
        Request::Requests { mailbox } => {
            now_reply(member_of(s, &mailbox).and_then(|m| engine.requests(&m, &mailbox)));
        }
        Request::Answer {
            mailbox,
            request,
            body,
        } => {
            if let Err(e) = member_of(s, &mailbox)
                .and_then(|m| engine.answer(outbox, id, &m, &mailbox, &request, body))
            {
                now_reply(Err(e));
            }
        }
        Request::AskState { request } => now_reply(engine.ask_state(&request)),
        Request::Withdraw { request } => {
            if let Err(e) = engine.withdraw(outbox, id, &request) {
                now_reply(Err(e));
            }
        }
    }
    Ok(())
}

/// A request's kind, for logs.
fn kind_of(request: &Request) -> &'static str {
    match request {
        Request::Hello { .. } => "hello",
        Request::Create(_) => "create",
        Request::Join(_) => "join",
        Request::Auth(_) => "auth",
        Request::Subscribe { .. } => "subscribe",
        Request::Put(_) => "put",
        Request::Fetch { .. } => "fetch",
        Request::Ack { .. } => "ack",
        Request::Leave { .. } => "leave",
        Request::Close(_) => "close",
        Request::Ping { .. } => "ping",
        Request::CreateWithToken { .. } => "create",
        Request::Post(_) => "post",
        Request::Unpost { .. } => "unpost",
        Request::Browse { .. } => "browse",
        Request::Ask(_) => "ask",
        Request::Requests { .. } => "requests",
        Request::Answer { .. } => "answer",
        Request::AskState { .. } => "ask_state",
        Request::Withdraw { .. } => "withdraw",
    }
}

/// `Create`, with or without a creation token (spec §6.3): the token first, so a
/// stranger's creates never use up the create rates; then room on the connection,
/// the create rates, and the engine's checks.
#[allow(clippy::too_many_arguments)]
fn create(
    engine: &Engine,
    admission: &Admission,
    outbox: &Outbox,
    s: &mut ConnState,
    id: u64,
    c: Create,
    token: Option<&CreateToken>,
    now_reply: &impl Fn(Result<Response, ErrorFrame>),
) {
    let owner = c.owner;
    let room = if s.authed.len() < engine.limits().max_mailboxes_per_connection {
        Ok(())
    } else {
        Err(too_many_mailboxes())
    };
    let r = admission
        .check_token(token)
        .and(room)
        .and_then(|()| admission.take_create(s.source, Instant::now()))
        .and_then(|()| engine.create(outbox, id, &s.challenge, c));
    match r {
        Ok(mailbox) => {
            s.authed.insert(mailbox, owner);
        }
        Err(e) => now_reply(Err(e)),
    }
}

fn too_many_mailboxes() -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::TooManyMailboxes,
        "too many talks on one connection; open another",
    )
}

/// One refusal at debug, and the operator limits among them once more as a limit hit.
fn log_refusal(kind: &'static str, code: ErrorCode) {
    tracing::debug!(kind, code = ?code, "refused");
    let limit = match code {
        ErrorCode::MailboxFull => "mailbox full",
        ErrorCode::RateLimited => "rate limited",
        ErrorCode::TooManyMailboxes => "too many mailboxes on one connection",
        ErrorCode::CreateRefused => "creation token",
        _ => return,
    };
    tracing::debug!(kind, limit, "limit hit");
}

/// How a connection's stream ended, without the peer's address or close reason text.
fn ended_how(e: &quinn::ReadError) -> String {
    use quinn::{ConnectionError as C, ReadError as R};
    match e {
        R::ConnectionLost(C::ApplicationClosed(c)) => {
            format!("closed by the client (code {})", c.error_code)
        }
        R::ConnectionLost(C::ConnectionClosed(c)) => {
            format!("closed by the client's QUIC stack ({})", c.error_code)
        }
        R::ConnectionLost(C::TimedOut) => "idle timeout".into(),
        R::ConnectionLost(C::Reset) => "reset by the client".into(),
        R::ConnectionLost(C::LocallyClosed) => "closed by the relay".into(),
        R::ConnectionLost(_) => "lost".into(),
        R::Reset(code) => format!("the client reset its stream (code {code})"),
        _ => "stream error".into(),
    }
}

/// Writes queued frames, handing whatever is ready to quinn in one call. The frames
/// are already encoded and quinn keeps the `Bytes` as they are (no copy), so an idle
/// connection holds no write buffer.
async fn write_loop(mut send: Writer, mut rx: mpsc::Receiver<Queued>) {
    loop {
        // Sized for what is queued, and dropped after each write, not kept at its
        // largest for the life of the connection.
        let mut batch = Vec::with_capacity(rx.len().clamp(1, BATCH));
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        // The frames count as queued until quinn has them all: a client that
        // grants no flow credit keeps this write waiting, and its bytes counted.
        let (mut chunks, charges): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|q| (q.wire, q.charge)).unzip();
        let written = match &mut send {
            Writer::Quic(send) => send.write_all_chunks(&mut chunks).await.is_ok(),
            Writer::Inner(send) => write_inner(send, &chunks).await.is_ok(),
        };
        if !written {
            return;
        }
        drop(charges);
    }
    match send {
        Writer::Quic(mut send) => {
            let _ = send.finish();
        }
        Writer::Inner(mut send) => {
            // TLS close_notify, then the route stream's FIN.
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut send).await;
        }
    }
}

/// Writes a batch into the inner channel: rustls seals it into records as it goes,
/// and the flush hands the last of them to quinn.
async fn write_inner(
    send: &mut tokio::io::WriteHalf<crate::forward::InnerStream>,
    chunks: &[bytes::Bytes],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    for chunk in chunks {
        send.write_all(chunk).await?;
    }
    send.flush().await
}

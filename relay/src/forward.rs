//! Private routing (protocol-spec.md §18): route connections, both roles.
//!
//! A connection that negotiated [`nook_quic::ROUTE_ALPN`] carries route streams. Each
//! starts with one [`RouteRequest`]:
//!
//! - `Forward { host, port }` (this relay is a member's **forwarder**): the relay opens
//!   a stream on its pooled connection to the destination, sends `Deliver` there, and
//!   passes bytes both ways until either side ends. It reads none of them: they are
//!   the member's inner TLS channel to the destination.
//! - `Deliver` (this relay is the **destination**): the stream carries an inner TLS 1.3
//!   session for this relay, which [`crate::conn::serve_inner`] then serves like any
//!   connection. The only address it learns is the forwarder's.
//!
//! What the forwarder keeps: a count of forwarded sessions per source address (the
//! entry goes with the last session) and in total, and one pooled QUIC connection per
//! destination, closed after [`POOL_IDLE`] without sessions. Nothing about a session
//! outlives it, and nothing it logs names an address, a host or a session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nook_proto::route::{
    RouteReply, RouteRequest, decode_route_reply, decode_route_request, encode_route,
    route_header_len,
};
use nook_proto::{ErrorCode, ErrorFrame};
use tokio::task::JoinSet;

use crate::admission::Admission;
use crate::conn::{ConnStats, FrameLimits};
use crate::engine::Engine;

/// The inner channel as the destination serves it: TLS over one route stream.
pub type InnerStream =
    tokio_rustls::server::TlsStream<tokio::io::Join<quinn::RecvStream, quinn::SendStream>>;

/// Forwarded sessions one source address may hold at once, unless configured otherwise.
pub const DEFAULT_FORWARD_PER_ADDRESS: usize = 64;
/// Forwarded sessions the relay carries at once, unless configured otherwise.
pub const DEFAULT_FORWARD_MAX: usize = 4096;
/// Time a route stream's header (and the inner handshake after `Deliver`) may take.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the forwarder gives the destination to answer (QUIC handshake, stream and
/// `Ready` together) before it refuses with `DestinationUnreachable`. The member waits
/// a little longer, so it hears the refusal rather than a timeout of its own.
pub const DESTINATION_TIMEOUT: Duration = Duration::from_secs(3);
/// A pooled connection to a destination is closed after this long without sessions.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// The operator's forwarding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Whether this relay forwards for members (`--no-forward` turns it off); it is a
    /// destination for forwarded sessions either way.
    pub enabled: bool,
    /// Forwarded sessions at once from one source address (an IPv6 address by its /64).
    pub per_address: usize,
    /// Forwarded sessions at once in all.
    pub total: usize,
}

impl Default for ForwardLimits {
    fn default() -> ForwardLimits {
        ForwardLimits {
            enabled: true,
            per_address: DEFAULT_FORWARD_PER_ADDRESS,
            total: DEFAULT_FORWARD_MAX,
        }
    }
}

/// Counts of the route service (no address, no host).
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Forwarded sessions open now.
    pub active: AtomicUsize,
    /// Forwarded sessions set up since start.
    pub forwarded: AtomicU64,
    /// `Forward`s refused: forwarding off, or a limit.
    pub refused: AtomicU64,
    /// `Forward`s whose destination did not answer.
    pub unreachable: AtomicU64,
    /// Inner sessions served as the destination since start.
    pub delivered: AtomicU64,
}

/// What the route service shares with the rest of the relay.
pub(crate) struct Serving {
    /// Inner sessions and connections together at most (`--max-connections`): an
    /// inner session holds about what a connection does.
    pub(crate) max_sessions: usize,
    pub(crate) engine: Arc<Engine>,
    pub(crate) frames: FrameLimits,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) admission: Arc<Admission>,
}

/// The route service of one relay.
pub struct Router {
    limits: ForwardLimits,
    /// The relay's own endpoint: the forwarder dials destinations from the address and
    /// port it serves on.
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    acceptor: tokio_rustls::TlsAcceptor,
    serving: Serving,
    /// Ids of connections and inner sessions, shared with the accept loop.
    next_conn: Arc<AtomicU64>,
    sources: Mutex<HashMap<IpAddr, usize>>,
    pool: Arc<Mutex<HashMap<SocketAddr, Pooled>>>,
    stats: ForwardStats,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("limits", &self.limits)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Pooled {
    conn: quinn::Connection,
    sessions: Arc<AtomicUsize>,
}

impl Router {
    pub(crate) fn new(
        limits: ForwardLimits,
        endpoint: quinn::Endpoint,
        inner: Arc<rustls::ServerConfig>,
        serving: Serving,
        next_conn: Arc<AtomicU64>,
    ) -> Result<Router, nook_quic::ProfileError> {
        Ok(Router {
            limits,
            endpoint,
            client: nook_quic::forward_client_config()?,
            acceptor: tokio_rustls::TlsAcceptor::from(inner),
            serving,
            next_conn,
            sources: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(HashMap::new())),
            stats: ForwardStats::default(),
        })
    }

    /// The route service's counts.
    pub fn stats(&self) -> &ForwardStats {
        &self.stats
    }

    /// Serves one route connection until it ends: each stream on its own task.
    pub(crate) async fn serve(self: Arc<Router>, conn: quinn::Connection) {
        conn.set_max_concurrent_bi_streams(nook_quic::ROUTE_STREAMS.into());
        let peer = conn.remote_address().ip();
        let mut streams = JoinSet::new();
        loop {
            tokio::select! {
                accepted = conn.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        streams.spawn(self.clone().stream(send, recv, peer));
                    }
                    Err(_) => break,
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
            }
        }
        // The connection is gone, and its streams with it.
        while streams.join_next().await.is_some() {}
    }

    async fn stream(
        self: Arc<Router>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        peer: IpAddr,
    ) {
        let request = match tokio::time::timeout(HEADER_TIMEOUT, read_request(&mut recv)).await {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => {
                tracing::debug!(why, "route stream refused: bad header");
                refuse(&mut send, ErrorCode::Malformed, why).await;
                return;
            }
            Err(_) => return,
        };
        match request {
            RouteRequest::Deliver => self.deliver(send, recv, peer).await,
            RouteRequest::Forward { host, port } => {
                self.forward(send, recv, peer, &host, port).await
            }
        }
    }

    /// The destination's side: `Ready`, the inner handshake, then the session.
    async fn deliver(&self, mut send: quinn::SendStream, recv: quinn::RecvStream, peer: IpAddr) {
        let s = &self.serving;
        // Counted as a connection for its whole life, so that the connection limit
        // (the relay's memory budget) bounds inner sessions too.
        let _held = SessionCount::new(&s.stats);
        if s.stats.connections() > s.max_sessions {
            tracing::debug!(limit = "connections", "inner session refused");
            refuse(
                &mut send,
                ErrorCode::ForwardLimit,
                "the relay serves as many sessions as it allows; try again later",
            )
            .await;
            return;
        }
        if write_reply(&mut send, &RouteReply::Ready).await.is_err() {
            return;
        }
        let handshake = self.acceptor.accept(tokio::io::join(recv, send));
        let inner = match tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
            Ok(Ok(inner)) => inner,
            Ok(Err(e)) => {
                tracing::debug!(kind = ?e.kind(), "inner handshake failed");
                return;
            }
            Err(_) => return,
        };
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        crate::conn::serve_inner(
            s.engine.clone(),
            inner,
            peer,
            id,
            s.frames,
            s.stats.clone(),
            s.admission.clone(),
        )
        .await;
    }

    /// The forwarder's side.
    async fn forward(
        &self,
        mut send: quinn::SendStream,
        recv: quinn::RecvStream,
        source: IpAddr,
        host: &str,
        port: u16,
    ) {
        if !self.limits.enabled {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            refuse(
                &mut send,
                ErrorCode::ForwardRefused,
                "this relay does not forward (its operator runs it with --no-forward); \
                 route through another relay, or without --via",
            )
            .await;
            return;
        }
        let Some(_charge) = self.charge(source) else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(limit = "forwarded sessions", "limit hit");
            refuse(
                &mut send,
                ErrorCode::ForwardLimit,
                "this relay carries as many forwarded sessions as it allows; try again later \
                 or route through another relay",
            )
            .await;
            return;
        };
        let (dsend, drecv, _session) = match self.open(host, port).await {
            Ok(Opened::Ready(s, r, session)) => (s, r, session),
            Ok(Opened::Refused(e)) => {
                let _ = write_reply(&mut send, &RouteReply::Refused(e)).await;
                let _ = send.finish();
                return;
            }
            Err(()) => {
                self.stats.unreachable.fetch_add(1, Ordering::Relaxed);
                refuse(
                    &mut send,
                    ErrorCode::DestinationUnreachable,
                    "no answer from it within 3 s",
                )
                .await;
                return;
            }
        };
        if write_reply(&mut send, &RouteReply::Ready).await.is_err() {
            return;
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        tokio::join!(pipe(recv, dsend), pipe(drecv, send));
    }

    /// One stream to the destination on the pooled connection (dialled if there is
    /// none), with `Deliver` sent and answered, all within [`DESTINATION_TIMEOUT`].
    /// A pooled connection that fails this is taken out of the pool, so the next
    /// session dials afresh (a destination that restarted does not answer on it).
    async fn open(&self, host: &str, port: u16) -> Result<Opened, ()> {
        let deadline = tokio::time::Instant::now() + DESTINATION_TIMEOUT;
        let target = tokio::time::timeout_at(deadline, resolve(host, port))
            .await
            .ok()
            .flatten()
            .ok_or(())?;
        let pooled = tokio::time::timeout_at(deadline, self.pooled(target, host))
            .await
            .map_err(|_| ())??;
        let session = Session::new(self, target, &pooled);
        let deliver = async {
            let (mut dsend, mut drecv) = pooled.conn.open_bi().await.map_err(|_| ())?;
            let header = encode_route(&RouteRequest::Deliver).map_err(|_| ())?;
            dsend.write_all(&header).await.map_err(|_| ())?;
            let reply = read_reply(&mut drecv).await?;
            Ok::<_, ()>((dsend, drecv, reply))
        };
        match tokio::time::timeout_at(deadline, deliver).await {
            Ok(Ok((dsend, drecv, RouteReply::Ready))) => Ok(Opened::Ready(dsend, drecv, session)),
            Ok(Ok((_, _, RouteReply::Refused(e)))) => Ok(Opened::Refused(e)),
            Ok(Err(())) | Err(_) => {
                self.evict(target, &pooled.conn);
                Err(())
            }
        }
    }

    /// Takes `conn` out of the pool (if it is still the pooled one) and closes it.
    fn evict(&self, target: SocketAddr, conn: &quinn::Connection) {
        if let Ok(mut pool) = self.pool.lock()
            && pool
                .get(&target)
                .is_some_and(|p| p.conn.stable_id() == conn.stable_id())
        {
            pool.remove(&target);
        }
        conn.close(0u32.into(), b"unanswered");
    }

    async fn pooled(&self, target: SocketAddr, host: &str) -> Result<Pooled, ()> {
        let live = self.pool.lock().map_err(|_| ())?.get(&target).cloned();
        if let Some(p) = live.filter(|p| p.conn.close_reason().is_none()) {
            return Ok(p);
        }
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), target, server_name(host))
            .map_err(|_| ())?;
        let conn = connecting.await.map_err(|_| ())?;
        let mut pool = self.pool.lock().map_err(|_| ())?;
        // Another session may have dialled meanwhile: keep one connection.
        if let Some(p) = pool
            .get(&target)
            .filter(|p| p.conn.close_reason().is_none())
        {
            conn.close(0u32.into(), b"pooled");
            return Ok(p.clone());
        }
        let p = Pooled {
            conn,
            sessions: Arc::new(AtomicUsize::new(0)),
        };
        pool.insert(target, p.clone());
        Ok(p)
    }

    /// Counts one forwarded session from `source`, or `None` past a limit.
    fn charge(&self, source: IpAddr) -> Option<Charge<'_>> {
        let key = crate::admission::address_key(source);
        let mut sources = self.sources.lock().ok()?;
        let mine = sources.get(&key).copied().unwrap_or(0);
        let all = self.stats.active.load(Ordering::Relaxed);
        if mine >= self.limits.per_address || all >= self.limits.total {
            return None;
        }
        sources.insert(key, mine + 1);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        Some(Charge { router: self, key })
    }
}

enum Opened {
    Ready(quinn::SendStream, quinn::RecvStream, Session),
    Refused(ErrorFrame),
}

/// One forwarded session's count on its pooled connection; the last one out starts
/// the connection's idle clock.
struct Session {
    sessions: Arc<AtomicUsize>,
    conn: quinn::Connection,
    pool: Arc<Mutex<HashMap<SocketAddr, Pooled>>>,
    target: SocketAddr,
}

impl Session {
    fn new(router: &Router, target: SocketAddr, pooled: &Pooled) -> Session {
        pooled.sessions.fetch_add(1, Ordering::Relaxed);
        Session {
            sessions: pooled.sessions.clone(),
            conn: pooled.conn.clone(),
            pool: router.pool.clone(),
            target,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.sessions.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let (sessions, conn, pool, target) = (
            self.sessions.clone(),
            self.conn.clone(),
            self.pool.clone(),
            self.target,
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                tokio::time::sleep(POOL_IDLE).await;
                if sessions.load(Ordering::Relaxed) != 0 {
                    return;
                }
                if let Ok(mut pool) = pool.lock()
                    && pool
                        .get(&target)
                        .is_some_and(|p| p.conn.stable_id() == conn.stable_id())
                {
                    pool.remove(&target);
                }
                conn.close(0u32.into(), b"idle");
            });
        }
    }
}

/// One forwarded session's place in the per-address and total counts; the address's
/// entry goes with its last session.
struct Charge<'a> {
    router: &'a Router,
    key: IpAddr,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.router.stats.active.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut sources) = self.router.sources.lock()
            && let Some(n) = sources.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                sources.remove(&self.key);
            }
        }
    }
}

/// Passes one direction's bytes on as quinn hands them over (no copy), until the
/// sender finishes (then finishes the other side) or fails (then resets it).
async fn pipe(mut from: quinn::RecvStream, mut to: quinn::SendStream) {
    loop {
        match from.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                if to.write_chunk(chunk.bytes).await.is_err() {
                    let _ = from.stop(0u32.into());
                    return;
                }
            }
            Ok(None) => {
                let _ = to.finish();
                return;
            }
            Err(_) => {
                let _ = to.reset(0u32.into());
                return;
            }
        }
    }
}

/// Reads a route header's body, its length checked before anything else is read.
async fn read_body(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, &'static str> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|_| "the route stream ended before its header")?;
    let len = route_header_len(prefix).map_err(|_| "route header too large or empty")?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|_| "the route stream ended inside its header")?;
    Ok(body)
}

async fn read_request(recv: &mut quinn::RecvStream) -> Result<RouteRequest, &'static str> {
    let body = read_body(recv).await?;
    decode_route_request(&body).map_err(|_| "the route header is not a route request")
}

async fn read_reply(recv: &mut quinn::RecvStream) -> Result<RouteReply, ()> {
    let body = read_body(recv).await.map_err(|_| ())?;
    decode_route_reply(&body).map_err(|_| ())
}

async fn write_reply(send: &mut quinn::SendStream, reply: &RouteReply) -> Result<(), ()> {
    let bytes = encode_route(reply).map_err(|_| ())?;
    send.write_all(&bytes).await.map_err(|_| ())
}

/// Answers `Refused` and finishes the stream.
async fn refuse(send: &mut quinn::SendStream, code: ErrorCode, message: &str) {
    let _ = write_reply(send, &RouteReply::Refused(ErrorFrame::new(code, message))).await;
    let _ = send.finish();
}

async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

/// The SNI a forwarder sends: the host when it is a DNS name (as members do, §2.2),
/// a placeholder for an IP address (never checked).
fn server_name(host: &str) -> &str {
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        "nook-relay"
    } else {
        host
    }
}

/// One inner session in [`ConnStats`]'s connection count, while it lives.
struct SessionCount<'a>(&'a ConnStats);

impl<'a> SessionCount<'a> {
    fn new(stats: &'a ConnStats) -> SessionCount<'a> {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        SessionCount(stats)
    }
}

impl Drop for SessionCount<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

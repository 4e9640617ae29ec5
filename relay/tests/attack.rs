//! Clients that try to make the relay hold what they never take.
//!
//! A member that stops reading and keeps sending `Fetch` for a mailbox of large
//! envelopes: each answer is up to 768 KiB, and without a byte bound on what is
//! queued for a connection, 2,400 of them grew the relay by gigabytes. The relay
//! must drop such a connection once its queue passes the bound (close code
//! `TOO_SLOW`) and give the queue's memory back. Observed through the relay's queue
//! counters and the close, never through timing or RSS.
//!
//! The same for what a client sends: a frame announced as 1 MiB and sent one byte a
//! second, a header and nothing after it, and handshakes begun and never finished.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nook_crypto::RelayAddr;
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_proto::codec::encode_frame;
use nook_proto::limits::{ALPN, MAX_ENVELOPE, MAX_FRAME, PROTOCOL_VERSION};
use nook_proto::*;
use nook_relay::conn::close_code;

/// A client on raw QUIC with a 64 KiB receive window that reads the answer to its
/// `Hello` and nothing after it: the relay's writes to it stall once the window is
/// used up, and everything else it is sent waits in the relay.
struct NonReader {
    conn: quinn::Connection,
    send: quinn::SendStream,
    _recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
    challenge: [u8; 32],
    next_id: u64,
}

impl NonReader {
    async fn connect(addr: &RelayAddr) -> NonReader {
        let mut config = nook_quic::client_config(addr.fingerprint, ALPN).unwrap();
        let mut transport = nook_quic::client_transport();
        transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
        transport.receive_window(quinn::VarInt::from_u32(64 * 1024));
        config.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        let target: SocketAddr = addr.host_port().parse().unwrap();
        let conn = endpoint
            .connect(target, addr.host_name())
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = ClientFrame {
            id: 0,
            request: Request::Hello {
                version: PROTOCOL_VERSION,
            },
        };
        send.write_all(&encode_frame(&hello).unwrap())
            .await
            .unwrap();
        let mut decoder = FrameDecoder::new();
        let answer = loop {
            let chunk = recv.read_chunk(usize::MAX, true).await.unwrap().unwrap();
            decoder.push(&chunk.bytes);
            if let Some(frame) = decoder.next_frame::<ServerFrame>().unwrap() {
                break frame;
            }
        };
        let ServerFrame::Response {
            result: Outcome::Ok(Response::Hello(hello)),
            ..
        } = answer
        else {
            panic!("unexpected {answer:?}")
        };
        NonReader {
            conn,
            send,
            _recv: recv,
            _endpoint: endpoint,
            challenge: hello.challenge,
            next_id: 1,
        }
    }

    async fn send(&mut self, request: Request) {
        let frame = ClientFrame {
            id: self.next_id,
            request,
        };
        self.next_id += 1;
        self.send
            .write_all(&encode_frame(&frame).unwrap())
            .await
            .unwrap();
    }

    /// Authenticates as `member` and asks `fetches` times for everything waiting.
    async fn fetch_and_never_read(&mut self, member: &Member, fetches: usize) {
        let signature = sign_relay_auth(
            &member.id,
            AuthOp::Auth,
            &self.challenge,
            &member.mailbox,
            &[],
        );
        self.send(Request::Auth(Auth {
            mailbox: member.mailbox,
            member: member.id.member_key(),
            signature,
        }))
        .await;
        for _ in 0..fetches {
            self.send(Request::Fetch {
                mailbox: member.mailbox,
                after: Seq(0),
                limit: 256,
            })
            .await;
        }
    }

    /// Waits for the relay to close the connection (a guard against hanging, not a
    /// measure: the assertion is on the code) and returns the application close code.
    async fn closed_by_relay(&self) -> u64 {
        let closed = tokio::time::timeout(Duration::from_secs(60), self.conn.closed())
            .await
            .expect("the relay kept a client that takes nothing");
        match closed {
            quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
            e => panic!("closed otherwise: {e}"),
        }
    }
}

/// A talk whose recipient `b` has 7 envelopes of 128 KiB waiting: each `Fetch` of
/// them is answered with 6 of them (768 KiB).
async fn seven_large_envelopes(relay: &TestRelay) -> (Created, Member) {
    let c = create(relay, 2, 1, ClosePolicy::Owner).await;
    let b = join(relay, c.owner.mailbox, &c.seats[0]).await;
    for i in 0..7u8 {
        c.owner
            .put_raw(EnvelopeKind::Chat, vec![i; MAX_ENVELOPE])
            .await
            .unwrap();
    }
    (c, b)
}

#[tokio::test]
async fn a_member_that_fetches_and_never_reads_is_dropped_at_its_byte_bound() {
    const BOUND: usize = 4 << 20;
    let limits = nook_relay::engine::Limits {
        max_queued_bytes_per_connection: BOUND,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    let (_c, b) = seven_large_envelopes(&relay).await;
    let queues = relay.engine.queues().clone();
    assert_eq!(queues.dropped(), 0);

    // 64 answers of 768 KiB (48 MiB) asked for; the bound is passed after six.
    let mut attacker = NonReader::connect(&relay.addr).await;
    attacker.fetch_and_never_read(&b, 64).await;
    assert_eq!(
        attacker.closed_by_relay().await,
        u64::from(close_code::TOO_SLOW)
    );
    assert_eq!(queues.dropped(), 1);
    assert!(
        queues.peak_connection() <= BOUND,
        "a queue held {} bytes, past its bound of {BOUND}",
        queues.peak_connection()
    );
    // Its queue went with it: the other connections have taken everything.
    assert_eq!(queues.queued(), 0);
    // The member itself, reading, is served as before.
    assert_eq!(b.fetch(0).await.unwrap().len(), 6);
    relay.stop().await;
}

#[tokio::test]
async fn past_the_relays_byte_bound_the_largest_queue_is_dropped_and_readers_carry_on() {
    // A connection may queue plenty, but the relay as a whole only 4 MiB: the client
    // that takes nothing holds the most and is the one dropped.
    let limits = nook_relay::engine::Limits {
        max_queued_bytes_per_connection: 64 << 20,
        max_queued_bytes: 4 << 20,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    let (_c, b) = seven_large_envelopes(&relay).await;
    let queues = relay.engine.queues().clone();

    let mut attacker = NonReader::connect(&relay.addr).await;
    attacker.fetch_and_never_read(&b, 64).await;
    assert_eq!(
        attacker.closed_by_relay().await,
        u64::from(close_code::TOO_SLOW)
    );
    assert_eq!(queues.dropped(), 1);
    assert_eq!(queues.queued(), 0);
    for _ in 0..4 {
        assert_eq!(b.fetch(0).await.unwrap().len(), 6);
    }
    assert_eq!(queues.dropped(), 1, "a reader is not dropped");
    relay.stop().await;
}

/// A client on raw QUIC that writes the beginning of a frame and never its end.
struct SlowSender {
    conn: quinn::Connection,
    _send: quinn::SendStream,
    _endpoint: quinn::Endpoint,
}

impl SlowSender {
    /// Connects and writes a header announcing a maximal frame, then `body` bytes of it.
    async fn begin(addr: &RelayAddr, body: usize) -> SlowSender {
        let endpoint = raw_endpoint(addr);
        let conn = handshake(&endpoint, addr).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let mut bytes = (MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.resize(4 + body, 7);
        send.write_all(&bytes).await.unwrap();
        SlowSender {
            conn,
            _send: send,
            _endpoint: endpoint,
        }
    }
}

#[tokio::test]
async fn a_frame_not_completed_by_its_deadline_is_closed_and_its_bytes_given_back() {
    let (relay, stats) = TestRelay::start_watched(tempfile::tempdir().unwrap(), |c| {
        c.frames.deadline = Duration::from_millis(300);
    });
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    // A 1 MiB frame of which 100 bytes came, and a header alone. Neither would ever
    // meet the idle timeout (60 s): a trickle of bytes keeps resetting it.
    let trickle = SlowSender::begin(&relay.addr, 100).await;
    let header_only = SlowSender::begin(&relay.addr, 0).await;
    assert_eq!(
        close_code_of(&trickle.conn).await,
        u64::from(close_code::FRAME_TOO_SLOW)
    );
    assert_eq!(
        close_code_of(&header_only.conn).await,
        u64::from(close_code::FRAME_TOO_SLOW)
    );
    assert_eq!(stats.frames_timed_out(), 2);
    assert!(stats.peak_partial_bytes() >= 104, "never charged");
    assert_eq!(
        stats.partial_bytes(),
        0,
        "a closed connection's frame is freed"
    );
    // A member whose frames arrive whole is not touched.
    c.owner
        .put(EnvelopeKind::Chat, b"still here")
        .await
        .unwrap();
    assert_eq!(stats.frames_timed_out(), 2);
    relay.stop().await;
}

#[tokio::test]
async fn past_the_budget_for_partial_frames_connections_are_closed_busy_and_counted() {
    const EACH: usize = 40_000;
    const BUDGET: usize = 100_000;
    let (relay, stats) = TestRelay::start_watched(tempfile::tempdir().unwrap(), |c| {
        c.frames.max_partial_bytes = BUDGET;
        // Long enough that only the budget closes anything here.
        c.frames.deadline = Duration::from_secs(3600);
    });
    // Two partial frames of 40,004 bytes fit in 100,000 bytes; a third does not.
    let mut held = Vec::new();
    for k in 1..=2 {
        held.push(SlowSender::begin(&relay.addr, EACH).await);
        until("the relay holds the partial frame", || {
            stats.partial_bytes() == k * (EACH + 4)
        })
        .await;
    }
    for _ in 0..3 {
        let over = SlowSender::begin(&relay.addr, EACH).await;
        assert_eq!(close_code_of(&over.conn).await, u64::from(close_code::BUSY));
    }
    assert_eq!(stats.partial_budget_closed(), 3);
    assert_eq!(stats.partial_bytes(), 2 * (EACH + 4));
    assert!(stats.peak_partial_bytes() <= BUDGET);
    for h in &held {
        assert!(
            h.conn.close_reason().is_none(),
            "a frame within budget was cut"
        );
    }
    // Whole frames need no budget: a member carries on.
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    c.owner.put(EnvelopeKind::Chat, b"whole").await.unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn with_retry_always_required_a_client_still_connects_through_the_retry() {
    let (relay, stats) = TestRelay::start_watched(tempfile::tempdir().unwrap(), |c| {
        c.retry_from_handshakes = 0;
    });
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    c.owner
        .put(EnvelopeKind::Chat, b"after a retry")
        .await
        .unwrap();
    assert!(stats.retries_sent() >= 1, "no Retry was sent");
    assert_eq!(stats.handshakes_refused(), 0);
    relay.stop().await;
}

/// Handshakes that begin and never finish: a client endpoint behind a UDP relay-way
/// that passes what the client sends and drops every answer, so its connections stay
/// in their handshake on the relay. The forwarding task is owned by the caller.
async fn half_open(
    addr: &RelayAddr,
    n: usize,
) -> (
    quinn::Endpoint,
    Vec<quinn::Connecting>,
    tokio::task::JoinHandle<()>,
) {
    let relay: SocketAddr = addr.host_port().parse().unwrap();
    let way = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let way_addr = way.local_addr().unwrap();
    let forward = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, from)) = way.recv_from(&mut buf).await else {
                return;
            };
            if from != relay {
                let _ = way.send_to(&buf[..len], relay).await;
            }
        }
    });
    let endpoint = raw_endpoint(addr);
    let connecting = (0..n)
        .map(|_| endpoint.connect(way_addr, addr.host_name()).unwrap())
        .collect();
    (endpoint, connecting, forward)
}

#[tokio::test]
async fn past_the_bound_on_handshakes_in_progress_attempts_are_refused_and_counted() {
    let (relay, stats) = TestRelay::start_watched(tempfile::tempdir().unwrap(), |c| {
        c.retry_from_handshakes = usize::MAX;
        c.max_handshakes = 2;
        c.handshake_timeout = Duration::from_secs(2);
    });
    let (stalled, connecting, forward) = half_open(&relay.addr, 2).await;
    until("two handshakes in progress", || stats.handshaking() == 2).await;

    let endpoint = raw_endpoint(&relay.addr);
    let target: SocketAddr = relay.addr.host_port().parse().unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        endpoint.connect(target, relay.addr.host_name()).unwrap(),
    )
    .await
    .expect("neither refused nor accepted");
    assert!(refused.is_err(), "a third handshake was taken");
    assert!(stats.handshakes_refused() >= 1);
    assert_eq!(stats.handshaking(), 2);

    // The stalled ones are abandoned at the handshake timeout, and their places freed.
    forward.abort();
    let _ = forward.await;
    drop(connecting);
    drop(stalled);
    until("the stalled handshakes abandoned", || {
        stats.handshaking() == 0
    })
    .await;
    assert_eq!(stats.handshakes_timed_out(), 2);
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    c.owner
        .put(EnvelopeKind::Chat, b"room again")
        .await
        .unwrap();
    relay.stop().await;
}

// ---- who may create talks (issue 25: the creation token and the create rates) ----

const CREATE_TOKEN: &str = "a personal relay's creation token";

/// What a client presents for `text` (as `nook_client::create_token` makes it).
fn presented(text: &str) -> CreateToken {
    nook_client::create_token(text).unwrap()
}

/// One `Create` of a two-seat talk on `conn`, with `token` if given.
async fn try_create(
    conn: &nook_client::RelayConnection,
    token: Option<CreateToken>,
) -> Result<MailboxId, (ErrorCode, String)> {
    let mut rng = rand::rng();
    let seat = nook_crypto::SeatSecret::random(&mut rng);
    let id = nook_crypto::TalkIdentity::generate(&mut rng);
    let p = params(2, 2, ClosePolicy::Owner, std::slice::from_ref(&seat));
    let signature = sign_relay_auth(
        &id,
        AuthOp::Create,
        &conn.hello().challenge,
        &MailboxId([0; 16]),
        &nook_crypto::auth::params_digest(&p).unwrap(),
    );
    let create = Create {
        params: p,
        owner: id.member_key(),
        signature,
    };
    let request = match token {
        Some(token) => Request::CreateWithToken { create, token },
        None => Request::Create(create),
    };
    match conn.request(request).await {
        Ok(Response::Created { mailbox, .. }) => Ok(mailbox),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(nook_client::RequestError::Refused { code, message, .. }) => Err((code, message)),
        Err(e) => panic!("not an answer: {e:?}"),
    }
}

#[tokio::test]
async fn strangers_without_the_token_never_use_up_the_owners_creates() {
    let relay = TestRelay::start_config(tempfile::tempdir().unwrap(), |c| {
        c.create_token =
            Some(nook_relay::admission::CreateTokenHash::from_text(CREATE_TOKEN).unwrap());
        c.create_rate_per_address = nook_relay::admission::Rate {
            count: 2,
            per: Duration::from_secs(86_400),
        };
    });
    let conn = relay.connect().await;
    // Twenty creates from the same address: none has the token, none is charged.
    for k in 0..20 {
        let token = (k % 2 == 1).then(|| presented("a guess at the token"));
        let (code, message) = try_create(&conn, token).await.unwrap_err();
        assert_eq!(code, ErrorCode::CreateRefused, "{message}");
        assert!(!message.contains(CREATE_TOKEN));
    }
    // The owner, from the same address, still gets the whole share, and no more.
    let first = try_create(&conn, Some(presented(CREATE_TOKEN))).await;
    assert!(first.is_ok(), "{first:?}");
    assert!(
        try_create(&conn, Some(presented(CREATE_TOKEN)))
            .await
            .is_ok()
    );
    let (code, message) = try_create(&conn, Some(presented(CREATE_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::RateLimited, "{message}");
    assert!(message.contains("your address"), "{message}");
    // A plain Create on the same connection is still told about the token, not the
    // rate: the connection stayed usable through every refusal.
    assert_eq!(
        try_create(&conn, None).await.unwrap_err().0,
        ErrorCode::CreateRefused
    );
    relay.stop().await;
}

#[tokio::test]
async fn invitees_of_a_relay_with_a_creation_token_join_and_talk_without_it() {
    let relay = TestRelay::start_config(tempfile::tempdir().unwrap(), |c| {
        c.create_token =
            Some(nook_relay::admission::CreateTokenHash::from_text(CREATE_TOKEN).unwrap());
    });
    let owner_conn = relay.connect().await;
    let mut rng = rand::rng();
    let seat = nook_crypto::SeatSecret::random(&mut rng);
    let id = nook_crypto::TalkIdentity::generate(&mut rng);
    let p = params(2, 2, ClosePolicy::Owner, std::slice::from_ref(&seat));
    let signature = sign_relay_auth(
        &id,
        AuthOp::Create,
        &owner_conn.hello().challenge,
        &MailboxId([0; 16]),
        &nook_crypto::auth::params_digest(&p).unwrap(),
    );
    let r = owner_conn
        .request(Request::CreateWithToken {
            create: Create {
                params: p,
                owner: id.member_key(),
                signature,
            },
            token: presented(CREATE_TOKEN),
        })
        .await
        .unwrap();
    let Response::Created { mailbox, .. } = r else {
        panic!("unexpected {r:?}")
    };
    // The invitee's connection never presents a token.
    let (bob, _, status) = join_with(relay.connect().await, mailbox, &seat)
        .await
        .unwrap();
    assert_eq!(status.state, TalkPhase::Open);
    bob.put(EnvelopeKind::Chat, b"no token needed")
        .await
        .unwrap();
    relay.stop().await;
}

/// The `nook-relay` binary of this package, started with `args` on a fresh data
/// folder: its child process (killed on drop) and address.
struct RelayBinary {
    child: std::process::Child,
    addr: RelayAddr,
    _dir: tempfile::TempDir,
}

impl RelayBinary {
    fn start(args: &[&str]) -> RelayBinary {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nook-relay"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("relay"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        RelayBinary {
            child,
            addr: line.trim().parse().expect("the relay printed its address"),
            _dir: dir,
        }
    }
}

impl Drop for RelayBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binarys_partial_frame_and_handshake_flags_reach_its_connections() {
    let relay = RelayBinary::start(&[
        "--max-partial-frame-bytes",
        "1048580",
        "--frame-deadline",
        "1h",
        "--max-handshakes",
        "1",
        "--retry-from-handshakes",
        "1000",
        "--handshake-timeout",
        "60s",
    ]);
    // Two partial frames of 600,004 bytes pass the smallest budget the flag takes
    // (the default is 256 MiB, and the deadline of an hour closes neither).
    let held = SlowSender::begin(&relay.addr, 600_000).await;
    let over = SlowSender::begin(&relay.addr, 600_000).await;
    let first_closed = tokio::select! {
        code = close_code_of(&held.conn) => code,
        code = close_code_of(&over.conn) => code,
    };
    assert_eq!(first_closed, u64::from(close_code::BUSY));
    drop((held, over));
    // One handshake held open: with --max-handshakes 1 the next attempt is refused
    // once the relay has seen it (attempts until then complete, and are dropped).
    let (_stalled, _connecting, forward) = half_open(&relay.addr, 1).await;
    let endpoint = raw_endpoint(&relay.addr);
    let target: SocketAddr = relay.addr.host_port().parse().unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            endpoint.connect(target, relay.addr.host_name()).unwrap(),
        )
        .await
        .expect("neither refused nor accepted");
        match attempt {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(conn) => {
                conn.close(0u32.into(), b"");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(refused, "--max-handshakes 1 never refused an attempt");
    forward.abort();
}

/// Creates `talks` talks of 64 seats with 8 KiB welcomes on the relay at `addr`, 64
/// per connection (the per-connection bound), one at a time (so that what the relay
/// holds for requests in flight stays one frame, whatever the timing); every
/// connection is dropped afterwards, so the talks sit idle.
async fn create_idle_heavy_talks(addr: &RelayAddr, talks: usize) {
    let mut left = talks;
    while left > 0 {
        let batch = left.min(64);
        left -= batch;
        let conn = nook_client::RelayConnection::connect(addr).await.unwrap();
        for _ in 0..batch {
            let (req, _) = heavy_create(&conn.hello().challenge, 64, 8192);
            let answer = conn.request(req).await.unwrap();
            assert!(matches!(answer, Response::Created { .. }), "{answer:?}");
        }
    }
}

/// 1,728 talks of 64 seats, each with 63 welcomes of 8 KiB, grew a relay by 1.05 GB
/// of memory: what was written to the store stayed in sled's page cache (1 GB by
/// default). An idle talk's welcomes belong on disk; what the relay holds in memory
/// per idle talk must stay small. Measured as the real binary's resident memory
/// after a warm-up (allocator, caches filled to their bound), over enough talks
/// that a per-talk cost would show: a bound on memory held, not a timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_created_talks_are_held_on_disk_not_in_memory() {
    const WARM: usize = 128;
    const MEASURED: usize = 384;
    let dir = tempfile::tempdir().unwrap();
    // One client creates them all, far faster than the default create rates allow.
    let unlimited = "4000000000/1s";
    let relay = RelayProcess::spawn(
        dir.path(),
        &[
            "--create-rate",
            unlimited,
            "--create-rate-per-address",
            unlimited,
        ],
    )
    .unwrap();
    create_idle_heavy_talks(&relay.addr, WARM).await;
    let before = relay.rss();
    create_idle_heavy_talks(&relay.addr, MEASURED).await;
    let after = relay.rss();
    let per_talk = after.saturating_sub(before) / MEASURED as u64;
    eprintln!(
        "relay RSS {} KiB after {WARM} talks, {} KiB after {} more: {per_talk} bytes per idle talk",
        before / 1024,
        after / 1024,
        MEASURED
    );
    // Each talk sent 504 KiB of welcomes, and before sled's cache was bounded the
    // relay kept them: 715 KiB of RSS per talk. What an idle talk holds now is its
    // state (63 free seats' token hashes, 2 KiB), its namespace handle and sled's
    // bookkeeping of where its values are on disk; RSS moves in steps of the
    // allocator's and sled's buffers, so this measures 7 to 36 KiB per talk from run
    // to run. The bound leaves room for that noise and is still a fifth of what the
    // welcomes in memory cost.
    assert!(
        per_talk < 128 * 1024,
        "the relay grew by {per_talk} bytes per idle talk"
    );
    relay.stop();
}

//! The attack suite of issue 16, part 2: a raw protocol client that breaks the rules
//! on purpose (forged and replayed `Auth`, frames before `Hello`, other versions,
//! oversize, truncated and unknown frames, streams past the one the profile allows,
//! a connection flood, frames that never finish, a member that puts as fast as it
//! can). For each: the attacker gets the documented error or loses its connection
//! with the documented close code (spec §2.1, §5.4, §9), what the relay holds stays
//! bounded (asserted on its counts of held state, never on timing or RSS), a real
//! member on another talk still sends and reads, and the relay stays up.
//!
//! What `attack.rs`, `relay.rs` and `model.rs` already try is not repeated here.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_crypto::{RelayAddr, TalkIdentity};
use nook_proto::codec::encode_frame;
use nook_proto::limits::{MAX_FRAME, PROTOCOL_VERSION};
use nook_proto::*;
use nook_relay::conn::{ConnStats, close_code};

/// Bound on any one wait for the relay (a guard against hanging, not a measure).
const PATIENCE: Duration = Duration::from_secs(30);

/// A client on raw QUIC that writes whatever bytes it is told to on the one stream
/// and decodes what comes back.
struct Raw {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    challenge: [u8; 32],
    _endpoint: quinn::Endpoint,
}

impl Raw {
    /// Connected with its stream open, nothing sent yet.
    async fn open(addr: &RelayAddr) -> Raw {
        let endpoint = raw_endpoint(addr);
        let conn = handshake(&endpoint, addr).await;
        let (send, recv) = conn.open_bi().await.unwrap();
        Raw {
            conn,
            send,
            recv,
            decoder: FrameDecoder::new(),
            challenge: [0; 32],
            _endpoint: endpoint,
        }
    }

    /// Connected and greeted.
    async fn greeted(addr: &RelayAddr) -> Raw {
        let mut raw = Raw::open(addr).await;
        raw.request(
            0,
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .await;
        match raw.answer().await {
            Some((0, Outcome::Ok(Response::Hello(hello)))) => raw.challenge = hello.challenge,
            other => panic!("no HelloOk: {other:?}"),
        }
        raw
    }

    /// Writes `bytes` as they are; a relay that already closed makes this a no-op.
    async fn write(&mut self, bytes: &[u8]) {
        let _ = self.send.write_all(bytes).await;
    }

    async fn request(&mut self, id: u64, request: Request) {
        self.write(&encode_frame(&ClientFrame { id, request }).unwrap())
            .await;
    }

    /// The next response (pushes skipped), or `None` once the relay ended the stream.
    async fn answer(&mut self) -> Option<(u64, Outcome)> {
        next_answer(&mut self.recv, &mut self.decoder).await
    }

    /// The refusal's code of the next response.
    async fn refusal(&mut self) -> (u64, ErrorCode) {
        match self.answer().await {
            Some((id, Outcome::Err(e))) => (id, e.code),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The application close code the relay closed the connection with.
    async fn close_code(&self) -> u64 {
        close_code_of(&self.conn).await
    }
}

/// The next response on `recv` (pushes skipped), or `None` once the stream ended.
async fn next_answer(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Option<(u64, Outcome)> {
    loop {
        match decoder.next_frame::<ServerFrame>().unwrap() {
            Some(ServerFrame::Response { id, result }) => return Some((id, result)),
            Some(ServerFrame::Push(_)) => continue,
            None => {}
        }
        let chunk = tokio::time::timeout(PATIENCE, recv.read_chunk(usize::MAX, true))
            .await
            .expect("the relay neither answered nor closed");
        match chunk {
            Ok(Some(c)) => decoder.push(&c.bytes),
            _ => return None,
        }
    }
}

/// A talk of two seated members on their own connections, for the "others still
/// work" half of every attack.
struct Bystanders {
    owner: Member,
    bob: Member,
    sent: u64,
}

impl Bystanders {
    async fn seat(relay: &TestRelay) -> Bystanders {
        let c = create(relay, 2, 2, ClosePolicy::Owner).await;
        let bob = join(relay, c.owner.mailbox, &c.seats[0]).await;
        Bystanders {
            owner: c.owner,
            bob,
            sent: 0,
        }
    }

    /// The owner puts one envelope and Bob fetches it: both ways of the talk work.
    async fn still_talk(&mut self) {
        let seq = self
            .owner
            .put(EnvelopeKind::Chat, b"still talking")
            .await
            .expect("a bystander's put was refused");
        self.sent += 1;
        let got = self
            .bob
            .fetch(seq.0 - 1)
            .await
            .expect("a bystander's fetch");
        assert_eq!(got.first().map(|e| e.seq), Some(seq));
        assert_eq!(
            self.bob
                .conn
                .request(Request::Ping { nonce: 7 })
                .await
                .unwrap(),
            Response::Pong { nonce: 7 }
        );
    }
}

/// Waits until the relay holds exactly `n` connections.
async fn connections_settle(stats: &ConnStats, n: usize) {
    until(&format!("the relay holds {n} connections"), || {
        stats.connections() == n
    })
    .await;
}

fn watched(adjust: impl FnOnce(&mut nook_relay::Config)) -> (TestRelay, Arc<ConnStats>) {
    TestRelay::start_watched(tempfile::tempdir().unwrap(), adjust)
}

// ---- Hello: missing, repeated, other versions ----

#[tokio::test]
async fn requests_before_hello_and_other_versions_get_unsupported_version_and_code_1() {
    let (relay, stats) = watched(|_| {});
    let mut others = Bystanders::seat(&relay).await;
    let talks = relay.engine.mailbox_count();
    let baseline = stats.connections();
    let mailbox = others.owner.mailbox;
    let forged = Signature([9; 64]);
    let create_request = Create {
        params: params(
            2,
            2,
            ClosePolicy::Owner,
            &[nook_crypto::SeatSecret::random(&mut rand::rng())],
        ),
        owner: MemberKey([3; 32]),
        signature: forged,
    };
    // Every kind of request as a connection's first frame, and Hello of other versions.
    let first_frames = [
        Request::Ping { nonce: 1 },
        Request::Auth(Auth {
            mailbox,
            member: others.owner.id.member_key(),
            signature: forged,
        }),
        Request::Subscribe { mailbox },
        Request::Put(Put {
            mailbox,
            kind: EnvelopeKind::Chat,
            body: vec![0; 512],
        }),
        Request::Fetch {
            mailbox,
            after: Seq(0),
            limit: 256,
        },
        Request::Ack {
            mailbox,
            upto: Seq(u64::MAX),
        },
        Request::Leave {
            mailbox,
            signature: forged,
        },
        Request::Join(Join {
            mailbox,
            token: [1; 32],
            member: MemberKey([2; 32]),
            signature: forged,
        }),
        Request::Close(Close {
            mailbox,
            farewell: vec![0; 512],
            signature: forged,
        }),
        Request::Create(create_request.clone()),
        Request::CreateWithToken {
            create: create_request,
            token: CreateToken([4; 32]),
        },
        Request::Hello { version: 0 },
        Request::Hello { version: 2 },
        Request::Hello { version: u16::MAX },
    ];
    let tried = first_frames.len();
    for (k, request) in first_frames.into_iter().enumerate() {
        let mut raw = Raw::open(&relay.addr).await;
        let id = 1000 + k as u64;
        raw.request(id, request.clone()).await;
        assert_eq!(
            raw.refusal().await,
            (id, ErrorCode::UnsupportedVersion),
            "{request:?}"
        );
        assert_eq!(raw.close_code().await, u64::from(close_code::PROTOCOL));
    }
    // A second Hello on a greeted connection.
    let mut twice = Raw::greeted(&relay.addr).await;
    twice
        .request(
            5,
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .await;
    assert_eq!(twice.refusal().await, (5, ErrorCode::UnsupportedVersion));
    assert_eq!(twice.close_code().await, u64::from(close_code::PROTOCOL));
    // Nothing was executed and nothing is held for them.
    connections_settle(&stats, baseline).await;
    assert_eq!(relay.engine.mailbox_count(), talks);
    assert_eq!(relay.engine.held(&mailbox).unwrap().envelopes, 0);
    assert_eq!(relay.engine.queues().queued(), 0);
    others.still_talk().await;
    assert_eq!(tried, 14);
    relay.stop().await;
}

// ---- broken frames ----

/// One body byte sequence and what it is.
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let ping = encode_frame(&ClientFrame {
        id: 3,
        request: Request::Ping { nonce: 4 },
    })
    .unwrap();
    let ping_body = ping[4..].to_vec();
    let with_header = |body: Vec<u8>| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend(body);
        f
    };
    vec![
        ("an empty frame", 0u32.to_be_bytes().to_vec()),
        (
            "a frame one byte past MAX_FRAME",
            (MAX_FRAME as u32 + 1).to_be_bytes().to_vec(),
        ),
        ("a frame of 4 GiB", u32::MAX.to_be_bytes().to_vec()),
        // id 1, then request variant 12: one past the last (CreateWithToken, 11).
        ("the first unknown request tag", with_header(vec![1, 12])),
        ("request tag 250", with_header(vec![1, 250])),
        // A u32 enum index written with the u64 marker.
        (
            "a too-wide tag",
            with_header(vec![1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
        ("the u128 marker as an id", with_header(vec![0xfe, 10, 0])),
        (
            "a Ping with a trailing byte",
            with_header([ping_body.clone(), vec![0]].concat()),
        ),
        (
            "a Ping cut short",
            with_header(ping_body[..ping_body.len() - 1].to_vec()),
        ),
        // Put { mailbox, kind: Chat, body: Vec of 2^40 bytes announced }.
        ("a Put announcing a 1 TiB body", {
            let mut b = vec![1, 5];
            b.extend([7u8; 16]);
            b.push(0);
            b.push(0xfd);
            b.extend((1u64 << 40).to_le_bytes());
            b.extend([0u8; 32]);
            with_header(b)
        }),
        (
            "Auth with a bool-less garbage tail",
            with_header(vec![1, 3, 0xff]),
        ),
    ]
}

#[tokio::test]
async fn oversize_unknown_and_undecodable_frames_get_malformed_id_0_and_code_1() {
    let (relay, stats) = watched(|_| {});
    let mut others = Bystanders::seat(&relay).await;
    let baseline = stats.connections();
    let cases = bodies();
    for (what, bytes) in &cases {
        // Before Hello and after it alike: decoding comes first.
        for greet in [false, true] {
            let mut raw = if greet {
                Raw::greeted(&relay.addr).await
            } else {
                Raw::open(&relay.addr).await
            };
            raw.write(bytes).await;
            assert_eq!(
                raw.refusal().await,
                (0, ErrorCode::Malformed),
                "{what} (greeted: {greet})"
            );
            assert_eq!(
                raw.close_code().await,
                u64::from(close_code::PROTOCOL),
                "{what}"
            );
        }
    }
    connections_settle(&stats, baseline).await;
    assert_eq!(stats.partial_bytes(), 0);
    assert_eq!(relay.engine.queues().queued(), 0);
    others.still_talk().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_stream_ended_mid_frame_is_closed_with_code_1_and_nothing_sent() {
    let (relay, stats) = watched(|_| {});
    let mut others = Bystanders::seat(&relay).await;
    let baseline = stats.connections();
    let ping = encode_frame(&ClientFrame {
        id: 3,
        request: Request::Ping { nonce: 4 },
    })
    .unwrap();
    let cuts: [(&str, &[u8]); 3] = [
        ("half a header", &ping[..2]),
        ("a header alone", &ping[..4]),
        ("a body cut short", &ping[..ping.len() - 1]),
    ];
    for (what, bytes) in cuts {
        for greet in [false, true] {
            let mut raw = if greet {
                Raw::greeted(&relay.addr).await
            } else {
                Raw::open(&relay.addr).await
            };
            raw.write(bytes).await;
            raw.send.finish().unwrap();
            assert!(raw.answer().await.is_none(), "{what}: answered");
            assert_eq!(
                raw.close_code().await,
                u64::from(close_code::PROTOCOL),
                "{what}"
            );
        }
    }
    connections_settle(&stats, baseline).await;
    assert_eq!(stats.partial_bytes(), 0);
    others.still_talk().await;
    relay.stop().await;
}

// ---- forged and replayed authentication ----

/// What an attacker on its own connection sends to pass as a member.
fn forged_auths(
    victim: &Member,
    attacker: &TalkIdentity,
    challenge: &[u8; 32],
) -> Vec<(&'static str, Auth, ErrorCode)> {
    let mailbox = victim.mailbox;
    let member = victim.id.member_key();
    let on = |id: &TalkIdentity, op, challenge: &[u8; 32], mailbox: &MailboxId| {
        sign_relay_auth(id, op, challenge, mailbox, &[])
    };
    vec![
        (
            "the victim's Auth replayed from its own connection",
            Auth {
                mailbox,
                member,
                signature: on(
                    &victim.id,
                    AuthOp::Auth,
                    &victim.conn.hello().challenge,
                    &mailbox,
                ),
            },
            ErrorCode::BadSignature,
        ),
        (
            "the victim's key, signed by the attacker",
            Auth {
                mailbox,
                member,
                signature: on(attacker, AuthOp::Auth, challenge, &mailbox),
            },
            ErrorCode::BadSignature,
        ),
        (
            "the victim's key and 64 random bytes",
            Auth {
                mailbox,
                member,
                signature: Signature(std::array::from_fn(|i| i as u8)),
            },
            ErrorCode::BadSignature,
        ),
        (
            "a victim's signature for another operation (Leave)",
            Auth {
                mailbox,
                member,
                signature: on(
                    &victim.id,
                    AuthOp::Leave,
                    &victim.conn.hello().challenge,
                    &mailbox,
                ),
            },
            ErrorCode::BadSignature,
        ),
        (
            "the attacker's own key, properly signed",
            Auth {
                mailbox,
                member: attacker.member_key(),
                signature: on(attacker, AuthOp::Auth, challenge, &mailbox),
            },
            ErrorCode::NotAllowed,
        ),
        (
            "a mailbox that does not exist",
            Auth {
                mailbox: MailboxId([0xee; 16]),
                member: attacker.member_key(),
                signature: on(attacker, AuthOp::Auth, challenge, &MailboxId([0xee; 16])),
            },
            ErrorCode::UnknownMailbox,
        ),
    ]
}

#[tokio::test]
async fn forged_and_replayed_auth_and_join_are_refused_and_gain_nothing() {
    const ROUNDS: usize = 25;
    let (relay, stats) = watched(|_| {});
    let c = create(&relay, 3, 2, ClosePolicy::Owner).await;
    let bob = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut others = Bystanders::seat(&relay).await;
    let attacker_id = TalkIdentity::generate(&mut rand::rng());
    let attacker = relay.connect().await;
    let baseline = stats.connections();
    let code = |r: Result<Response, nook_client::RequestError>| match r {
        Err(e) => e.code().expect("an answer, not a lost connection"),
        Ok(r) => panic!("accepted: {r:?}"),
    };
    let mut tried = 0;
    for _ in 0..ROUNDS {
        for (what, auth, want) in forged_auths(&bob, &attacker_id, &attacker.hello().challenge) {
            let r = attacker.request(Request::Auth(auth)).await;
            assert_eq!(code(r), want, "{what}");
            tried += 1;
            // Still nobody on this connection: it may not read the talk.
            let r = attacker
                .request(Request::Fetch {
                    mailbox: c.owner.mailbox,
                    after: Seq(0),
                    limit: 256,
                })
                .await;
            assert_eq!(code(r), ErrorCode::NotAuthenticated, "after {what}");
        }
    }
    // A Join replayed from Bob's connection onto another: its signature is bound to
    // Bob's challenge, and his used token spends nothing more.
    let token = *c.seats[0].join_token();
    let bobs_join = Join {
        mailbox: c.owner.mailbox,
        token,
        member: bob.id.member_key(),
        signature: sign_relay_auth(
            &bob.id,
            AuthOp::Join,
            &bob.conn.hello().challenge,
            &c.owner.mailbox,
            &token,
        ),
    };
    for _ in 0..ROUNDS {
        let r = attacker.request(Request::Join(bobs_join.clone())).await;
        assert_eq!(code(r), ErrorCode::BadSignature);
        // The used token under the attacker's own, valid signature.
        let r = attacker
            .request(Request::Join(Join {
                mailbox: c.owner.mailbox,
                token,
                member: attacker_id.member_key(),
                signature: sign_relay_auth(
                    &attacker_id,
                    AuthOp::Join,
                    &attacker.hello().challenge,
                    &c.owner.mailbox,
                    &token,
                ),
            }))
            .await;
        assert_eq!(code(r), ErrorCode::InviteInvalid);
    }
    // Every refusal kept the connection open (§5.4), and nothing was seated.
    assert_eq!(
        attacker.request(Request::Ping { nonce: 9 }).await.unwrap(),
        Response::Pong { nonce: 9 }
    );
    assert_eq!(stats.connections(), baseline);
    let status = c.owner.subscribe().await;
    assert_eq!(status.members, 2, "a forged join took a seat");
    // The unused seat still works for its real holder, and the talk carries on.
    let carol = join(&relay, c.owner.mailbox, &c.seats[1]).await;
    let seq = c.owner.put(EnvelopeKind::Chat, b"hi").await.unwrap();
    assert_eq!(bob.fetch(0).await.unwrap().last().unwrap().seq, seq);
    assert_eq!(carol.fetch(0).await.unwrap().last().unwrap().seq, seq);
    others.still_talk().await;
    assert_eq!(tried, ROUNDS * 6);
    relay.stop().await;
}

// ---- streams past the one the profile allows ----

/// Whether `f`, polled once, is still waiting.
fn is_pending<F: Future>(f: F) -> bool {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.as_mut().poll(&mut cx).is_pending()
}

#[tokio::test]
async fn thousands_of_streams_wait_on_flow_control_and_only_the_first_is_served() {
    const STREAMS: usize = 5000;
    let (relay, stats) = watched(|_| {});
    let mut others = Bystanders::seat(&relay).await;
    let baseline = stats.connections();
    let mut raw = Raw::greeted(&relay.addr).await;
    // The relay's transport parameters grant one bidirectional stream and no
    // unidirectional one (§2.1): every further stream waits for credit it never gets,
    // so the relay never holds one.
    for _ in 0..STREAMS {
        assert!(
            is_pending(raw.conn.open_bi()),
            "a second bidirectional stream"
        );
        assert!(is_pending(raw.conn.open_uni()), "a unidirectional stream");
    }
    // A round trip later (any MAX_STREAMS the relay sent would have come): still none,
    // and the first stream serves as before.
    raw.request(1, Request::Ping { nonce: 1 }).await;
    assert_eq!(
        raw.answer().await,
        Some((1, Outcome::Ok(Response::Pong { nonce: 1 })))
    );
    assert!(is_pending(raw.conn.open_bi()));
    assert_eq!(raw.conn.stats().frame_rx.max_streams_bidi, 0);
    assert_eq!(raw.conn.stats().frame_rx.max_streams_uni, 0);
    assert_eq!(stats.connections(), baseline + 1);
    others.still_talk().await;
    // Giving up the one stream to get another ends the connection instead.
    raw.send.reset(0u32.into()).unwrap();
    assert_eq!(raw.close_code().await, u64::from(close_code::OK));
    connections_settle(&stats, baseline).await;
    others.still_talk().await;
    relay.stop().await;
}

// ---- a connection flood ----

#[tokio::test]
async fn a_connection_flood_stops_at_max_connections_and_a_member_gets_in_after_it() {
    const LIMIT: usize = 20;
    const OVER: u64 = 30;
    let (relay, stats) = watched(|c| c.max_connections = LIMIT);
    let mut others = Bystanders::seat(&relay).await;
    connections_settle(&stats, 2).await;
    // The flood: half of it finishes the handshake and never opens a stream, half
    // says Hello and nothing more (what an idle member looks like).
    let endpoint = raw_endpoint(&relay.addr);
    let mut silent = Vec::new();
    let mut greeted = Vec::new();
    for k in 0..LIMIT - 2 {
        if k % 2 == 0 {
            silent.push(handshake(&endpoint, &relay.addr).await);
        } else {
            greeted.push(Raw::greeted(&relay.addr).await);
        }
    }
    connections_settle(&stats, LIMIT).await;
    // Past the limit each attempt is refused in its handshake (CONNECTION_REFUSED, §9).
    let target: SocketAddr = relay.addr.host_port().parse().unwrap();
    for _ in 0..OVER {
        let attempt = tokio::time::timeout(
            PATIENCE,
            endpoint.connect(target, relay.addr.host_name()).unwrap(),
        )
        .await
        .expect("neither refused nor accepted");
        match attempt {
            Err(quinn::ConnectionError::ConnectionClosed(c))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {}
            other => panic!("not refused: {other:?}"),
        }
    }
    // A member's client says the relay cannot be reached now.
    let r = nook_client::RelayConnection::connect(&relay.addr).await;
    assert!(
        matches!(r, Err(nook_client::ConnectError::Unreachable { .. })),
        "{r:?}"
    );
    assert_eq!(stats.refused_at_limit(), OVER + 1);
    assert_eq!(stats.connections(), LIMIT);
    assert_eq!(stats.handshaking(), 0);
    // Members already connected carry on through the flood.
    others.still_talk().await;
    // The flood ends: the relay lets the places go, and a member coming back gets in.
    for conn in &silent {
        conn.close(0u32.into(), b"bye");
    }
    for raw in &greeted {
        raw.conn.close(0u32.into(), b"bye");
    }
    connections_settle(&stats, 2).await;
    let fresh = relay.connect().await;
    assert!(matches!(
        others.bob.auth_on(&fresh).await.unwrap(),
        Response::Authed { .. }
    ));
    let seq = others
        .owner
        .put(EnvelopeKind::Chat, b"after the flood")
        .await
        .unwrap();
    match fresh
        .request(Request::Fetch {
            mailbox: others.bob.mailbox,
            after: Seq(seq.0 - 1),
            limit: 1,
        })
        .await
        .unwrap()
    {
        Response::Envelopes { items, .. } => assert_eq!(items[0].seq, seq),
        r => panic!("unexpected {r:?}"),
    }
    assert_eq!(stats.refused_at_limit(), OVER + 1);
    relay.stop().await;
}

/// The `nook-relay` binary started with `args` on a fresh data folder, its log
/// (stderr) read line by line; killed on drop.
struct RelayBinary {
    child: std::process::Child,
    addr: RelayAddr,
    log: std::sync::mpsc::Receiver<String>,
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
            .env("RUST_LOG", "nook_relay=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        RelayBinary {
            child,
            addr: line.trim().parse().expect("the relay printed its address"),
            log,
            _dir: dir,
        }
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("the relay never logged {text:?}"),
            }
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
async fn the_binarys_max_connections_refuses_the_flood_and_its_status_line_counts_it() {
    const OVER: u64 = 5;
    let relay = RelayBinary::start(&["--max-connections", "3", "--status-every", "1s"]);
    let owner = TestRelayAddr(relay.addr.clone()).create(2, 2).await;
    let _flood = [
        Raw::greeted(&relay.addr).await,
        Raw::greeted(&relay.addr).await,
    ];
    let endpoint = raw_endpoint(&relay.addr);
    let target: SocketAddr = relay.addr.host_port().parse().unwrap();
    for _ in 0..OVER {
        let attempt = tokio::time::timeout(
            PATIENCE,
            endpoint.connect(target, relay.addr.host_name()).unwrap(),
        )
        .await
        .expect("neither refused nor accepted");
        match attempt {
            Err(quinn::ConnectionError::ConnectionClosed(c))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {}
            other => panic!("not refused: {other:?}"),
        }
    }
    let line = relay.wait_for_log(&format!("refused_at_limit={OVER}"));
    assert!(line.contains("connections=3"), "{line}");
    // The member inside is served.
    assert_eq!(
        owner
            .owner
            .conn
            .request(Request::Ping { nonce: 3 })
            .await
            .unwrap(),
        Response::Pong { nonce: 3 }
    );
}

// ---- frames begun and never finished, many at once ----

#[tokio::test]
async fn many_frames_begun_and_never_finished_are_closed_and_their_bytes_given_back() {
    const SLOW: usize = 40;
    let (relay, stats) = watched(|c| c.frames.deadline = Duration::from_millis(500));
    let mut others = Bystanders::seat(&relay).await;
    let baseline = stats.connections();
    // Each sends Hello, then a whole Put but its last byte, and holds.
    let put = encode_frame(&ClientFrame {
        id: 1,
        request: Request::Put(Put {
            mailbox: others.owner.mailbox,
            kind: EnvelopeKind::Chat,
            body: vec![5; 512],
        }),
    })
    .unwrap();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut raw = Raw::greeted(&relay.addr).await;
        raw.write(&put[..put.len() - 1]).await;
        slow.push(raw);
    }
    others.still_talk().await;
    for raw in &slow {
        assert_eq!(
            raw.close_code().await,
            u64::from(close_code::FRAME_TOO_SLOW)
        );
    }
    assert_eq!(stats.frames_timed_out(), SLOW as u64);
    assert!(stats.peak_partial_bytes() <= SLOW * put.len());
    assert_eq!(stats.partial_bytes(), 0);
    connections_settle(&stats, baseline).await;
    assert_eq!(
        relay.engine.held(&others.owner.mailbox).unwrap().envelopes,
        others.sent
    );
    others.still_talk().await;
    relay.stop().await;
}

// ---- a member that puts as fast as it can ----

/// The owner of `c` on a raw connection of its own, authenticated.
async fn flooder(relay: &TestRelay, c: &Created) -> Raw {
    let mut raw = Raw::greeted(&relay.addr).await;
    let mailbox = c.owner.mailbox;
    let signature = sign_relay_auth(&c.owner.id, AuthOp::Auth, &raw.challenge, &mailbox, &[]);
    raw.request(
        1,
        Request::Auth(Auth {
            mailbox,
            member: c.owner.id.member_key(),
            signature,
        }),
    )
    .await;
    match raw.answer().await {
        Some((1, Outcome::Ok(Response::Authed { .. }))) => {}
        other => panic!("not authenticated: {other:?}"),
    }
    raw
}

/// `n` Puts, numbered in their bodies and ids (from 100), as one stream of bytes.
fn numbered_puts(mailbox: MailboxId, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..n {
        let mut body = vec![0u8; 512];
        body[..8].copy_from_slice(&k.to_le_bytes());
        nook_proto::codec::encode_frame_into(
            &ClientFrame {
                id: 100 + k,
                request: Request::Put(Put {
                    mailbox,
                    kind: EnvelopeKind::Chat,
                    body,
                }),
            },
            &mut out,
        )
        .unwrap();
    }
    out
}

/// What a flood of Puts was answered: the seq each stored one got, by its number,
/// and the count of each refusal.
#[derive(Default, Debug)]
struct Tally {
    stored: std::collections::BTreeMap<u64, Seq>,
    refused: std::collections::BTreeMap<String, u64>,
}

/// Writes `puts` as fast as the relay takes them while reading every answer.
async fn flood_puts(raw: &mut Raw, mailbox: MailboxId, n: u64) -> Tally {
    let bytes = numbered_puts(mailbox, n);
    let Raw {
        send,
        recv,
        decoder,
        ..
    } = raw;
    let write = async {
        send.write_all(&bytes).await.unwrap();
    };
    let read = async {
        let mut tally = Tally::default();
        for _ in 0..n {
            match next_answer(recv, decoder).await {
                Some((id, Outcome::Ok(Response::Stored { seq }))) => {
                    assert!(tally.stored.insert(id - 100, seq).is_none());
                }
                Some((_, Outcome::Err(e))) => {
                    *tally.refused.entry(format!("{:?}", e.code)).or_default() += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        tally
    };
    tokio::join!(write, read).1
}

/// Every stored envelope of `tally` is fetched by `reader` with the body of its number.
async fn all_stored_are_fetchable(reader: &Member, tally: &Tally) {
    let mut got = Vec::new();
    let mut after = 0;
    for _ in 0..tally.stored.len() + 1 {
        let page = reader.fetch(after).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq.0;
        got.extend(page);
    }
    assert_eq!(got.len(), tally.stored.len(), "stored but not fetchable");
    for (number, seq) in &tally.stored {
        let e = got
            .iter()
            .find(|e| e.seq == *seq)
            .expect("a stored seq is missing");
        assert_eq!(
            e.body[..8],
            number.to_le_bytes(),
            "seq {seq:?} holds another body"
        );
    }
}

#[tokio::test]
async fn a_member_putting_as_fast_as_it_can_fills_its_quota_only_and_loses_nothing_stored() {
    const QUOTA: u64 = 100;
    const PUTS: u64 = 1500;
    let (relay, _stats) = watched(|c| c.limits.max_envelopes_per_mailbox = QUOTA);
    let mut others = Bystanders::seat(&relay).await;
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let bob = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut raw = flooder(&relay, &c).await;
    let (tally, ()) = tokio::join!(flood_puts(&mut raw, c.owner.mailbox, PUTS), async {
        for _ in 0..5 {
            others.still_talk().await;
        }
    });
    // Exactly the quota stored, in order and without gaps, and every other Put
    // refused MailboxFull (§5.4: the connection stays open).
    assert_eq!(tally.stored.len() as u64, QUOTA, "{:?}", tally.refused);
    let seqs: Vec<u64> = tally.stored.values().map(|s| s.0).collect();
    assert_eq!(seqs, (1..=QUOTA).collect::<Vec<_>>());
    assert_eq!(tally.refused.get("MailboxFull"), Some(&(PUTS - QUOTA)));
    assert_eq!(tally.refused.len(), 1, "{:?}", tally.refused);
    let held = relay.engine.held(&c.owner.mailbox).unwrap();
    assert_eq!(held.envelopes, QUOTA);
    assert_eq!(relay.engine.queues().queued(), 0);
    // Nothing that was answered Stored is lost.
    all_stored_are_fetchable(&bob, &tally).await;
    eprintln!(
        "put flood, quota {QUOTA}: {PUTS} Puts, {} stored and fetched, refused {:?}",
        tally.stored.len(),
        tally.refused
    );
    // Acknowledging frees the quota: the flooder may put again.
    bob.ack(QUOTA).await.unwrap();
    let again = flood_puts(&mut raw, c.owner.mailbox, 1).await;
    assert_eq!(again.stored.values().next(), Some(&Seq(QUOTA + 1)));
    others.still_talk().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_member_putting_past_its_request_rate_is_refused_rate_limited_and_keeps_what_was_stored()
{
    const RATE: u32 = 5;
    const PUTS: u64 = 600;
    let (relay, _stats) = watched(|c| c.limits.requests_per_second = RATE);
    let mut others = Bystanders::seat(&relay).await;
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let bob = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut raw = flooder(&relay, &c).await;
    let tally = flood_puts(&mut raw, c.owner.mailbox, PUTS).await;
    let limited = tally.refused.get("RateLimited").copied().unwrap_or(0);
    assert!(limited > 0, "no Put was rate-limited: {tally:?}");
    assert!(
        !tally.stored.is_empty(),
        "the bucket's burst stored nothing"
    );
    assert_eq!(
        tally.stored.len() as u64 + limited,
        PUTS,
        "{:?}",
        tally.refused
    );
    // A refused request was not executed (§5.4): only the stored ones are held.
    let held = relay.engine.held(&c.owner.mailbox).unwrap();
    assert_eq!(held.envelopes, tally.stored.len() as u64);
    all_stored_are_fetchable(&bob, &tally).await;
    eprintln!(
        "put flood, {RATE} requests/s: {PUTS} Puts, {} stored and fetched, refused {:?}",
        tally.stored.len(),
        tally.refused
    );
    // The connection stayed open, and other connections have their own budget.
    assert!(raw.conn.close_reason().is_none());
    others.still_talk().await;
    relay.stop().await;
}

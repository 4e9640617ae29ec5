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
use nook_crypto::{RelayAddr, TalkIdentity};
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_proto::codec::encode_frame;
use nook_proto::limits::{ALPN, MAX_FRAME, PROTOCOL_VERSION};
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

/// A pinned client endpoint for raw QUIC.
fn raw_endpoint(addr: &RelayAddr) -> quinn::Endpoint {
    let config = nook_quic::client_config(addr.fingerprint, ALPN).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

/// A finished QUIC handshake with the relay, no stream opened.
async fn handshake(endpoint: &quinn::Endpoint, addr: &RelayAddr) -> quinn::Connection {
    let target: SocketAddr = addr.host_port().parse().unwrap();
    endpoint
        .connect(target, addr.host_name())
        .unwrap()
        .await
        .unwrap()
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
        raw.request(0, Request::Hello {
            version: PROTOCOL_VERSION,
        })
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
        loop {
            match self.decoder.next_frame::<ServerFrame>().unwrap() {
                Some(ServerFrame::Response { id, result }) => return Some((id, result)),
                Some(ServerFrame::Push(_)) => continue,
                None => {}
            }
            let chunk = tokio::time::timeout(PATIENCE, self.recv.read_chunk(usize::MAX, true))
                .await
                .expect("the relay neither answered nor closed");
            match chunk {
                Ok(Some(c)) => self.decoder.push(&c.bytes),
                _ => return None,
            }
        }
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

async fn close_code_of(conn: &quinn::Connection) -> u64 {
    let closed = tokio::time::timeout(PATIENCE, conn.closed())
        .await
        .expect("the relay kept the connection");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        e => panic!("closed otherwise: {e}"),
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
        let got = self.bob.fetch(seq.0 - 1).await.expect("a bystander's fetch");
        assert_eq!(got.first().map(|e| e.seq), Some(seq));
        assert_eq!(
            self.bob.conn.request(Request::Ping { nonce: 7 }).await.unwrap(),
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
        .request(5, Request::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;
    assert_eq!(twice.refusal().await, (5, ErrorCode::UnsupportedVersion));
    assert_eq!(twice.close_code().await, u64::from(close_code::PROTOCOL));
    // Nothing was executed and nothing is held for them.
    connections_settle(&stats, baseline).await;
    assert_eq!(relay.engine.mailbox_count(), talks);
    assert_eq!(relay.engine.held(&mailbox).unwrap().envelopes, 0);
    assert_eq!(relay.engine.queues().queued(), 0);
    others.still_talk().await;
    assert!(tried >= 11);
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
        ("a too-wide tag", with_header(vec![1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0])),
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
        ("Auth with a bool-less garbage tail", with_header(vec![1, 3, 0xff])),
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
fn forged_auths(victim: &Member, attacker: &TalkIdentity, challenge: &[u8; 32]) -> Vec<(&'static str, Auth, ErrorCode)> {
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
                signature: on(&victim.id, AuthOp::Auth, &victim.conn.hello().challenge, &mailbox),
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
                signature: on(&victim.id, AuthOp::Leave, &victim.conn.hello().challenge, &mailbox),
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

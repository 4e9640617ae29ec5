//! Clients that try to make the relay hold what they never take.
//!
//! A member that stops reading and keeps sending `Fetch` for a mailbox of large
//! envelopes: each answer is up to 768 KiB, and without a byte bound on what is
//! queued for a connection, 2,400 of them grew the relay by gigabytes. The relay
//! must drop such a connection once its queue passes the bound (close code
//! `TOO_SLOW`) and give the queue's memory back. Observed through the relay's queue
//! counters and the close, never through timing or RSS.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nook_crypto::RelayAddr;
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_proto::codec::encode_frame;
use nook_proto::limits::{ALPN, MAX_ENVELOPE, PROTOCOL_VERSION};
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

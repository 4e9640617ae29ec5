//! Private routing against an in-process relay (protocol-spec.md §18): hostile route
//! headers are refused and the relay keeps serving; a forwarded session speaks the
//! ordinary protocol; the destination's pin is checked end to end, inside the inner
//! channel, so a forwarder cannot stand in for the destination.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use nook_client::{ConnectError, RelayConnection};
use nook_proto::route::{RouteReply, decode_route_reply, route_header_len};
use nook_proto::{ErrorCode, Request, Response};

const LIMIT: Duration = Duration::from_secs(5);

/// Sends `bytes` as the start of a route stream and reads the relay's reply.
async fn reply_to(relay: &TestRelay, bytes: &[u8]) -> RouteReply {
    let config = nook_quic::client_config(relay.addr.fingerprint, nook_quic::ROUTE_ALPN).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let target = format!("127.0.0.1:{}", relay.addr.port).parse().unwrap();
    let conn = endpoint
        .connect_with(config, target, "nook-relay")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let read = async {
        let mut prefix = [0u8; 4];
        recv.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; route_header_len(prefix).unwrap()];
        recv.read_exact(&mut body).await.unwrap();
        decode_route_reply(&body).unwrap()
    };
    let reply = tokio::time::timeout(LIMIT, read).await.unwrap();
    conn.close(0u32.into(), b"done");
    reply
}

fn refused_with(reply: &RouteReply) -> Option<ErrorCode> {
    match reply {
        RouteReply::Refused(e) => Some(e.code),
        RouteReply::Ready => None,
    }
}

#[tokio::test]
async fn hostile_route_headers_are_refused_and_the_relay_keeps_serving() {
    let relay = TestRelay::start();
    // A length past the cap: refused from the prefix alone.
    let r = reply_to(&relay, &513u32.to_be_bytes()).await;
    assert_eq!(refused_with(&r), Some(ErrorCode::Malformed), "{r:?}");
    // A body that is no route request (variant 7).
    let r = reply_to(&relay, &[0, 0, 0, 1, 7]).await;
    assert_eq!(refused_with(&r), Some(ErrorCode::Malformed), "{r:?}");
    // A Forward naming no host.
    let r = reply_to(&relay, &[0, 0, 0, 3, 0, 0, 1]).await;
    assert_eq!(refused_with(&r), Some(ErrorCode::Malformed), "{r:?}");
    // Trailing bytes after a Deliver.
    let r = reply_to(&relay, &[0, 0, 0, 2, 1, 0]).await;
    assert_eq!(refused_with(&r), Some(ErrorCode::Malformed), "{r:?}");
    let conn = relay.connect().await;
    assert_eq!(
        conn.request(Request::Ping { nonce: 9 }).await.unwrap(),
        Response::Pong { nonce: 9 }
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_forwarded_session_speaks_the_protocol_and_a_talk_works_through_it() {
    let dest = TestRelay::start();
    let fwd = TestRelay::start();
    let conn = RelayConnection::connect_via(&dest.addr, &fwd.addr, LIMIT)
        .await
        .unwrap();
    assert_eq!(
        conn.hello().relay_key,
        dest.engine.identity().public(),
        "the greeting is the destination's"
    );
    assert_eq!(
        conn.request(Request::Ping { nonce: 7 }).await.unwrap(),
        Response::Pong { nonce: 7 }
    );
    conn.close().await;
    // A whole create, join, subscribe, put and push, each member through the forwarder.
    let via = || async {
        RelayConnection::connect_via(&dest.addr, &fwd.addr, LIMIT)
            .await
            .unwrap()
    };
    let created = create_on(via().await, 2, 2, nook_proto::ClosePolicy::Owner).await;
    let (mut bob, _, _) = join_with(via().await, created.owner.mailbox, &created.seats[0])
        .await
        .unwrap();
    bob.subscribe().await;
    let mut pushes = bob.conn.take_pushes().unwrap();
    let seq = created
        .owner
        .put(nook_proto::EnvelopeKind::Chat, b"through")
        .await
        .unwrap();
    match next_push(&mut pushes).await {
        nook_proto::Push::Envelope { envelope, .. } => assert_eq!(envelope.seq, seq),
        p => panic!("unexpected push {p:?}"),
    }
    let fetched = bob.fetch(0).await.unwrap();
    assert_eq!(fetched.iter().map(|e| e.seq).collect::<Vec<_>>(), [seq]);
    fwd.stop().await;
    dest.stop().await;
}

#[tokio::test]
async fn the_destination_s_pin_is_checked_inside_the_inner_channel() {
    let dest = TestRelay::start();
    let fwd = TestRelay::start();
    // The forwarder is reached and forwards, but the relay behind it is not the one
    // the address pins: refused as on a direct connection, naming the destination.
    let mut wrong = dest.addr.clone();
    wrong.fingerprint = nook_crypto::Fingerprint([7; 32]);
    match RelayConnection::connect_via(&wrong, &fwd.addr, LIMIT).await {
        Err(ConnectError::WrongFingerprint { got, addr, .. }) => {
            assert_eq!(got, dest.addr.fingerprint);
            assert_eq!(addr, dest.addr.host_port());
        }
        r => panic!("expected a fingerprint refusal, got {r:?}"),
    }
    // And a forwarder that is not the one `--via` pins is refused before anything.
    let mut wrong_fwd = fwd.addr.clone();
    wrong_fwd.fingerprint = nook_crypto::Fingerprint([8; 32]);
    match RelayConnection::connect_via(&dest.addr, &wrong_fwd, LIMIT).await {
        Err(ConnectError::WrongFingerprint { got, .. }) => assert_eq!(got, fwd.addr.fingerprint),
        r => panic!("expected a fingerprint refusal, got {r:?}"),
    }
    fwd.stop().await;
    dest.stop().await;
}

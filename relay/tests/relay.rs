//! The relay over real QUIC on 127.0.0.1: every operation, its refusals, retention,
//! close, and what stays on disk.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nook_client::{RelayConnection, RequestError};
use nook_crypto::auth::verify_receipt;
use nook_proto::*;

fn code(r: Result<impl std::fmt::Debug, RequestError>) -> ErrorCode {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a relay refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

#[tokio::test]
async fn create_join_open_put_push_fetch_ack() {
    let relay = TestRelay::start();
    let mut c = create(&relay, 3, 3, ClosePolicy::Owner).await;
    assert_eq!(c.status.state, TalkPhase::Pending);
    assert_eq!(
        (c.status.members, c.status.seats, c.status.quorum),
        (1, 3, 3)
    );
    let mut owner_push = c.owner.conn.take_pushes().unwrap();
    c.owner.subscribe().await;

    let (mut b, welcome, status) = join_with(relay.connect().await, c.owner.mailbox, &c.seats[0])
        .await
        .unwrap();
    assert_eq!(b.seat, 1);
    assert_eq!(
        nook_crypto::seal::open_welcome(&c.seats[0], &welcome)
            .unwrap()
            .as_slice(),
        b"welcome for this seat"
    );
    assert_eq!((status.members, status.state), (2, TalkPhase::Pending));
    match next_push(&mut owner_push).await {
        Push::SeatTaken { status, .. } => assert_eq!(status.members, 2),
        p => panic!("unexpected {p:?}"),
    }

    // Pending: handshake accepted, chat refused with "k/n seats".
    b.put(EnvelopeKind::Handshake, b"hello keys").await.unwrap();
    let refused = b.put(EnvelopeKind::Chat, b"too early").await;
    match &refused {
        Err(RequestError::Refused {
            code,
            message,
            detail,
        }) => {
            assert_eq!(*code, ErrorCode::TalkNotOpen);
            assert_eq!(
                *detail,
                ErrorDetail::Seats {
                    members: 2,
                    quorum: 3
                }
            );
            assert!(message.contains("2/3"), "{message}");
        }
        r => panic!("expected refusal, got {r:?}"),
    }
    match next_push(&mut owner_push).await {
        Push::Envelope { envelope, .. } => assert_eq!(envelope.kind, EnvelopeKind::Handshake),
        p => panic!("unexpected {p:?}"),
    }

    let mut b_push = b.conn.take_pushes().unwrap();
    b.subscribe().await;
    let d = join(&relay, c.owner.mailbox, &c.seats[1]).await;
    // Quorum reached: every subscriber hears "opened".
    for rx in [&mut owner_push, &mut b_push] {
        let mut saw_open = false;
        for _ in 0..2 {
            if let Push::Opened { status, .. } = next_push(rx).await {
                assert_eq!(status.state, TalkPhase::Open);
                saw_open = true;
                break;
            }
        }
        assert!(saw_open);
    }

    let seq = d.put(EnvelopeKind::Chat, b"first message").await.unwrap();
    for rx in [&mut owner_push, &mut b_push] {
        match next_push(rx).await {
            Push::Envelope { envelope, .. } => assert_eq!(envelope.seq, seq),
            p => panic!("unexpected {p:?}"),
        }
    }
    // The sender is not a recipient of its own envelope.
    assert!(d.fetch(0).await.unwrap().is_empty());
    assert_eq!(waiting_seqs(&c.owner).await, vec![Seq(1), seq]);
    // Retention: the envelope stays until both recipients acked it.
    c.owner.ack(seq.0).await.unwrap();
    assert_eq!(b.fetch(1).await.unwrap().len(), 1);
    b.ack(seq.0).await.unwrap();
    assert!(
        c.owner.fetch(0).await.unwrap().is_empty(),
        "acked by all recipients"
    );
    assert!(b.fetch(0).await.unwrap().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn used_and_unknown_invites_are_refused() {
    let relay = TestRelay::start();
    let c = create(&relay, 3, 2, ClosePolicy::Owner).await;
    join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let again = join_with(relay.connect().await, c.owner.mailbox, &c.seats[0]).await;
    assert_eq!(code(again.map(|_| ())), ErrorCode::InviteInvalid);
    let unknown = MailboxId([9; 16]);
    let r = join_with(relay.connect().await, unknown, &c.seats[1]).await;
    assert_eq!(code(r.map(|_| ())), ErrorCode::UnknownMailbox);
    relay.stop().await;
}

#[tokio::test]
async fn owner_policy_refuses_a_member_and_the_owner_closes_with_a_receipt() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let mut b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut b_push = b.conn.take_pushes().unwrap();
    b.subscribe().await;
    c.owner
        .put(EnvelopeKind::Chat, b"pending at close")
        .await
        .unwrap();
    assert_eq!(code(b.close(vec![]).await), ErrorCode::NotAllowed);
    // A close without a (padded) farewell is refused: members could not verify it.
    assert_eq!(code(c.owner.close_exact(vec![]).await), ErrorCode::TooLarge);
    assert_eq!(
        code(c.owner.close_exact(vec![0; 100]).await),
        ErrorCode::TooLarge
    );

    let farewell = nook_crypto::EnvelopeKey::from_talk_key(&[42; 32])
        .seal(
            &mut rand::rng(),
            &c.owner.mailbox,
            nook_crypto::Purpose::Farewell,
            b"bye",
        )
        .unwrap();
    let receipt = c.owner.close(farewell.clone()).await.unwrap();
    assert_eq!(receipt.mailbox, c.owner.mailbox);
    assert_eq!(receipt.envelopes_deleted, 1);
    assert_eq!(receipt.closed_at, T0);
    verify_receipt(&c.owner.conn.hello().relay_key, &receipt).unwrap();
    loop {
        match next_push(&mut b_push).await {
            Push::Closed {
                receipt: r,
                farewell: f,
                ..
            } => {
                assert_eq!(r, receipt);
                assert_eq!(f, farewell);
                break;
            }
            Push::Envelope { .. } => continue,
            p => panic!("unexpected {p:?}"),
        }
    }
    // Everything after close says "closed", on any connection.
    assert_eq!(code(b.fetch(0).await), ErrorCode::MailboxClosed);
    let fresh = relay.connect().await;
    assert_eq!(code(b.auth_on(&fresh).await), ErrorCode::MailboxClosed);
    relay.stop().await;
}

#[tokio::test]
async fn every_padding_bucket_is_stored_and_no_length_between() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    for &len in nook_proto::limits::PADDING_BUCKETS.iter() {
        if let Err(e) = c.owner.put_raw(EnvelopeKind::Chat, vec![7; len]).await {
            panic!("a {len}-byte envelope was refused: {e}");
        }
    }
    let lens: Vec<usize> = b
        .fetch(0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.body.len())
        .collect();
    assert_eq!(lens, nook_proto::limits::PADDING_BUCKETS);
    for len in [511, 513, 1000, 1023, 1025, 3000, 131_071] {
        assert_eq!(
            code(c.owner.put_raw(EnvelopeKind::Chat, vec![7; len]).await),
            ErrorCode::TooLarge,
            "{len} bytes"
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn any_policy_lets_a_member_close() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Any).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    b.close(vec![]).await.unwrap();
    assert_eq!(code(c.owner.fetch(0).await), ErrorCode::MailboxClosed);
    relay.stop().await;
}

#[tokio::test]
async fn leave_unblocks_retention_and_tells_the_others() {
    let relay = TestRelay::start();
    let mut c = create(&relay, 3, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let d = join(&relay, c.owner.mailbox, &c.seats[1]).await;
    let mut owner_push = c.owner.conn.take_pushes().unwrap();
    c.owner.subscribe().await;
    let seq = c
        .owner
        .put(EnvelopeKind::Chat, b"to b and d")
        .await
        .unwrap();
    b.ack(seq.0).await.unwrap();
    assert_eq!(d.fetch(0).await.unwrap().len(), 1);
    d.leave().await.unwrap();
    match next_push(&mut owner_push).await {
        Push::MemberLeft { status, .. } => {
            assert_eq!(status.members, 2);
            assert_eq!(
                status.left,
                1 << d.seat,
                "the status names the seat that left"
            );
        }
        p => panic!("unexpected {p:?}"),
    }
    // d's missing ack no longer holds the envelope.
    assert!(b.fetch(0).await.unwrap().is_empty());
    assert_eq!(
        relay
            .engine
            .stats
            .envelopes_deleted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(code(d.fetch(0).await), ErrorCode::NotAuthenticated);
    // Its key is no longer a member: re-authenticating is refused.
    assert_eq!(code(d.auth_on(&d.conn).await), ErrorCode::NotAllowed);
    relay.stop().await;
}

#[tokio::test]
async fn ttl_expiry_deletes_the_mailbox_and_tells_subscribers() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let mut c = c;
    let mut push = c.owner.conn.take_pushes().unwrap();
    c.owner.subscribe().await;
    assert_eq!(relay.engine.sweep(), 0);
    relay.clock.advance(3599);
    assert_eq!(relay.engine.sweep(), 0);
    relay.clock.advance(1);
    assert_eq!(relay.engine.sweep(), 1);
    assert!(matches!(next_push(&mut push).await, Push::Expired { .. }));
    assert_eq!(code(c.owner.fetch(0).await), ErrorCode::MailboxClosed);
    assert_eq!(
        code(
            join_with(relay.connect().await, c.owner.mailbox, &c.seats[0])
                .await
                .map(|_| ())
        ),
        ErrorCode::MailboxClosed
    );
    // The tombstone itself expires later, then the mailbox is simply unknown.
    relay
        .clock
        .advance(nook_relay::engine::TOMBSTONE_GRACE_SECS);
    relay.engine.purge_tombstones();
    let fresh = relay.connect().await;
    assert_eq!(
        code(c.owner.auth_on(&fresh).await),
        ErrorCode::UnknownMailbox
    );
    relay.stop().await;
}

#[tokio::test]
async fn bad_requests_get_their_error_codes() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    // Not a bucket size.
    assert_eq!(
        code(c.owner.put_raw(EnvelopeKind::Chat, vec![0; 100]).await),
        ErrorCode::TooLarge
    );
    // Not authenticated on a fresh connection.
    let other = relay.connect().await;
    let r = other
        .request(Request::Fetch {
            mailbox: c.owner.mailbox,
            after: Seq(0),
            limit: 10,
        })
        .await;
    assert_eq!(code(r), ErrorCode::NotAuthenticated);
    // A signature made for another connection's challenge: replayed auth.
    let sig = nook_crypto::auth::sign_relay_auth(
        &c.owner.id,
        nook_crypto::auth::AuthOp::Auth,
        &c.owner.conn.hello().challenge,
        &c.owner.mailbox,
        &[],
    );
    let r = other
        .request(Request::Auth(Auth {
            mailbox: c.owner.mailbox,
            member: c.owner.id.member_key(),
            signature: sig,
        }))
        .await;
    assert_eq!(code(r), ErrorCode::BadSignature);
    // Bad create parameters.
    let mut p = params(
        2,
        3,
        ClosePolicy::Owner,
        &[nook_crypto::SeatSecret::random(&mut rand::rng())],
    );
    p.quorum = 3;
    let id = nook_crypto::TalkIdentity::generate(&mut rand::rng());
    let sig = nook_crypto::auth::sign_relay_auth(
        &id,
        nook_crypto::auth::AuthOp::Create,
        &other.hello().challenge,
        &MailboxId([0; 16]),
        &nook_crypto::auth::params_digest(&p).unwrap(),
    );
    let r = other
        .request(Request::Create(Create {
            params: p,
            owner: id.member_key(),
            signature: sig,
        }))
        .await;
    assert_eq!(code(r), ErrorCode::BadRequest);
    // Ping still works on the same connection after all these refusals.
    assert_eq!(
        other.request(Request::Ping { nonce: 5 }).await.unwrap(),
        Response::Pong { nonce: 5 }
    );
    relay.stop().await;
}

#[tokio::test]
async fn malformed_and_oversize_frames_end_only_that_connection() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    let bad = relay.connect().await;
    // A frame whose body is not a valid request.
    bad.dangerous_write_raw(&[0, 0, 0, 2, 1, 200])
        .await
        .unwrap();
    let r = bad.request(Request::Ping { nonce: 1 }).await;
    assert!(
        matches!(
            r,
            Err(RequestError::Lost(_)) | Err(RequestError::Refused { .. })
        ),
        "{r:?}"
    );
    let huge = relay.connect().await;
    huge.dangerous_write_raw(&u32::MAX.to_be_bytes())
        .await
        .unwrap();
    assert!(huge.request(Request::Ping { nonce: 1 }).await.is_err());
    // The relay and other clients carry on.
    c.owner
        .put(EnvelopeKind::Chat, b"still here")
        .await
        .unwrap();
    assert_eq!(
        c.owner
            .conn
            .request(Request::Ping { nonce: 2 })
            .await
            .unwrap(),
        Response::Pong { nonce: 2 }
    );
    relay.stop().await;
}

#[tokio::test]
async fn wrong_alpn_and_wrong_fingerprint_are_refused() {
    let relay = TestRelay::start();
    let r = RelayConnection::connect_with_alpn(&relay.addr, b"nook/0").await;
    assert!(
        matches!(r, Err(nook_client::ConnectError::Version { .. })),
        "{r:?}"
    );
    let mut wrong = relay.addr.clone();
    wrong.fingerprint = nook_crypto::Fingerprint([7; 32]);
    let r = RelayConnection::connect(&wrong).await;
    match r {
        Err(nook_client::ConnectError::WrongFingerprint { got, .. }) => {
            assert_eq!(got, relay.addr.fingerprint)
        }
        r => panic!("expected a fingerprint refusal, got {r:?}"),
    }
    relay.stop().await;
}

#[tokio::test]
async fn restart_recovers_mailboxes_members_and_envelopes() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let s1 = c.owner.put(EnvelopeKind::Chat, b"one").await.unwrap();
    let s2 = c.owner.put(EnvelopeKind::Chat, b"two").await.unwrap();
    b.ack(s1.0).await.unwrap();
    let (owner_id, b_id, mailbox) = (c.owner.id, b.id, c.owner.mailbox);
    drop(c.owner.conn);
    drop(b.conn);
    let dir = relay.stop().await;
    let relay = TestRelay::start_in(dir);
    let b = reconnect(&relay, b_id, mailbox, 1).await;
    assert_eq!(waiting_seqs(&b).await, vec![s2]);
    let owner = reconnect(&relay, owner_id, mailbox, 0).await;
    // Seqs continue after the recovered head.
    let s3 = owner.put(EnvelopeKind::Chat, b"three").await.unwrap();
    assert_eq!(s3.0, s2.0 + 1);
    relay.stop().await;
}

#[tokio::test]
async fn after_close_no_trace_of_the_talk_is_readable_on_disk() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut bodies = Vec::new();
    for i in 0..50u32 {
        let body = nook_crypto::EnvelopeKey::from_talk_key(&[42; 32])
            .seal(
                &mut rand::rng(),
                &c.owner.mailbox,
                nook_crypto::Purpose::Chat,
                &i.to_le_bytes(),
            )
            .unwrap();
        c.owner
            .put_raw(EnvelopeKind::Chat, body.clone())
            .await
            .unwrap();
        bodies.push(body);
    }
    b.ack(25).await.unwrap();
    let before = all_bytes(&relay.data_dir());
    // Sanity of the scan: the mailbox id is not stored in clear even while open
    // (values are sealed), so look at what a closed talk must also not leave: bodies.
    assert!(!contains(&before, &c.owner.mailbox.0));
    c.owner.close(vec![]).await.unwrap();
    let mailbox = c.owner.mailbox;
    let keys = [c.owner.id.member_key().0, b.id.member_key().0];
    let dir = relay.stop().await;
    let after = all_bytes(dir.path());
    assert!(!contains(&after, &mailbox.0), "mailbox id on disk");
    for k in keys {
        assert!(!contains(&after, &k), "member key on disk");
    }
    for body in &bodies {
        // Any 32-byte run of an envelope body would do; the ciphertext after the nonce.
        assert!(!contains(&after, &body[24..56]), "envelope bytes on disk");
    }
    // And after a restart the mailbox answers "closed".
    let relay = TestRelay::start_in(dir);
    let fresh = relay.connect().await;
    assert_eq!(code(b.auth_on(&fresh).await), ErrorCode::MailboxClosed);
    relay.stop().await;
}

#[tokio::test]
async fn envelope_quota_and_request_rate_are_enforced() {
    let limits = nook_relay::engine::Limits {
        max_envelopes_per_mailbox: 3,
        requests_per_second: 5,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    // Envelope quota: the fourth unacknowledged envelope is refused until acks free room.
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    for _ in 0..3 {
        c.owner.put(EnvelopeKind::Chat, b"q").await.unwrap();
    }
    assert_eq!(
        code(c.owner.put(EnvelopeKind::Chat, b"q").await),
        ErrorCode::MailboxFull
    );
    b.ack(3).await.unwrap();
    c.owner.put(EnvelopeKind::Chat, b"q").await.unwrap();

    // Rate: a burst far above 4× the rate meets RateLimited, and the connection survives.
    let fast = relay.connect().await;
    let mut limited = 0;
    for n in 0..60u64 {
        if let Err(e) = fast.request(Request::Ping { nonce: n }).await {
            assert_eq!(e.code(), Some(ErrorCode::RateLimited));
            limited += 1;
        }
    }
    assert!(limited > 0, "no request was rate-limited");
    relay.stop().await;
}

#[tokio::test]
async fn an_envelope_addressed_to_nobody_takes_no_place_in_the_quota() {
    let limits = nook_relay::engine::Limits {
        max_envelopes_per_mailbox: 2,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    // A pending talk's lone owner announcing itself: nobody will ever receive these
    // (later members are not their recipients), so they are stored and gone at once.
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(c.owner.put(EnvelopeKind::Handshake, b"hi").await.unwrap());
    }
    assert_eq!(seqs, [Seq(1), Seq(2), Seq(3)]);
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    assert!(waiting_seqs(&b).await.is_empty());
    // The whole quota is left for what the joiner has to receive.
    put_numbered(&c.owner, 2).await;
    assert_eq!(
        code(c.owner.put(EnvelopeKind::Chat, b"q").await),
        ErrorCode::MailboxFull
    );
    assert_eq!(waiting_seqs(&b).await, [Seq(4), Seq(5)]);
    relay.stop().await;
}

#[tokio::test]
async fn too_many_mailboxes_on_one_connection_is_refused() {
    let limits = nook_relay::engine::Limits {
        max_mailboxes_per_connection: 1,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let other = create(&relay, 2, 2, ClosePolicy::Owner).await;
    // c's connection already holds one mailbox: joining another is refused.
    let r = join_with(c.owner.conn, other.owner.mailbox, &other.seats[0]).await;
    assert_eq!(code(r.map(|_| ())), ErrorCode::TooManyMailboxes);
    // The refused invite was not spent: it still works on a fresh connection.
    join(&relay, other.owner.mailbox, &other.seats[0]).await;
    relay.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_served_ones_carry_on() {
    let relay = TestRelay::start_config(tempfile::tempdir().unwrap(), |c| c.max_connections = 1);
    let first = relay.connect().await;
    let second = RelayConnection::connect(&relay.addr).await;
    assert!(
        matches!(second, Err(nook_client::ConnectError::Unreachable { .. })),
        "{second:?}"
    );
    assert_eq!(
        first.request(Request::Ping { nonce: 1 }).await.unwrap(),
        Response::Pong { nonce: 1 }
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_join_whose_answer_was_lost_can_be_retried_by_the_same_key_only() {
    let relay = TestRelay::start();
    let c = create(&relay, 3, 2, ClosePolicy::Owner).await;
    let id = nook_crypto::TalkIdentity::generate(&mut rand::rng());
    let join_as = |conn: &RelayConnection, id: &nook_crypto::TalkIdentity| {
        let token = *c.seats[0].join_token();
        let signature = nook_crypto::auth::sign_relay_auth(
            id,
            nook_crypto::auth::AuthOp::Join,
            &conn.hello().challenge,
            &c.owner.mailbox,
            &token,
        );
        Request::Join(Join {
            mailbox: c.owner.mailbox,
            token,
            member: id.member_key(),
            signature,
        })
    };
    let first = relay.connect().await;
    let r1 = first.request(join_as(&first, &id)).await.unwrap();
    // The answer is "lost": the same key asks again on a new connection.
    let second = relay.connect().await;
    let r2 = second.request(join_as(&second, &id)).await.unwrap();
    match (&r1, &r2) {
        (
            Response::Joined {
                seat: s1,
                welcome: w1,
                status: st1,
            },
            Response::Joined {
                seat: s2,
                welcome: w2,
                status: st2,
            },
        ) => {
            assert_eq!((s1, w1), (s2, w2), "same seat, same welcome");
            assert_eq!(
                (st1.members, st2.members),
                (2, 2),
                "the retry took no second seat"
            );
        }
        r => panic!("unexpected {r:?}"),
    }
    // Another key with the same token gets nothing.
    let other = nook_crypto::TalkIdentity::generate(&mut rand::rng());
    let third = relay.connect().await;
    assert_eq!(
        code(third.request(join_as(&third, &other)).await),
        ErrorCode::InviteInvalid
    );
    // Once the member uses its seat, the welcome is gone and so is the retry.
    let m = Member {
        id,
        conn: second,
        mailbox: c.owner.mailbox,
        seat: 1,
    };
    m.put(EnvelopeKind::Handshake, b"announce").await.unwrap();
    let fourth = relay.connect().await;
    assert_eq!(
        code(fourth.request(join_as(&fourth, &m.id)).await),
        ErrorCode::InviteInvalid
    );
    relay.stop().await;
}

/// The envelope log's segment files in a relay data folder.
fn log_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("store").join("log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

fn small_segments() -> nook_relay::engine::Limits {
    nook_relay::engine::Limits {
        log_segment_bytes: 4096,
        ..Default::default()
    }
}

/// Stops the relay, starts it again on its data folder (small segments) and
/// reconnects `members` as themselves; their old connections are closed first.
async fn restart_small<const N: usize>(
    relay: TestRelay,
    members: [Member; N],
) -> (TestRelay, [Member; N]) {
    let who = members.map(|m| (m.id, m.mailbox, m.seat));
    let relay = TestRelay::start_with(relay.stop().await, small_segments());
    let mut back = Vec::with_capacity(N);
    for (id, mailbox, seat) in who {
        back.push(reconnect(&relay, id, mailbox, seat).await);
    }
    let Ok(back) = back.try_into() else {
        unreachable!("one member back for each member given")
    };
    (relay, back)
}

/// The seqs `member` would fetch from the start.
async fn waiting_seqs(member: &Member) -> Vec<Seq> {
    let got = member.fetch(0).await.unwrap();
    got.iter().map(|e| e.seq).collect()
}

/// Puts `n` small chat envelopes (their bodies number them); the seq of the last.
async fn put_numbered(member: &Member, n: u32) -> Seq {
    let mut last = Seq(0);
    for i in 0..n {
        last = member
            .put(EnvelopeKind::Chat, &i.to_le_bytes())
            .await
            .unwrap();
    }
    last
}

#[tokio::test]
async fn acked_segments_are_removed_and_seqs_never_repeat_after_restart() {
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), small_segments());
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let last = put_numbered(&c.owner, 40).await;
    let full = log_segments(&relay.data_dir());
    assert!(
        full >= 5,
        "40 envelopes of 512 bytes span several 4 KiB segments: {full}"
    );
    b.ack(last.0).await.unwrap();
    relay.engine.flush().unwrap();
    let after = log_segments(&relay.data_dir());
    assert!(after <= 2, "acked segments are unlinked: {full} -> {after}");
    assert_eq!(relay.engine.log_stats().live_records, 0);
    // Restart: nothing is left to deliver, and the next seq follows the last one.
    let (relay, [owner, b]) = restart_small(relay, [c.owner, b]).await;
    assert!(b.fetch(0).await.unwrap().is_empty());
    let next = owner
        .put(EnvelopeKind::Chat, b"after restart")
        .await
        .unwrap();
    assert_eq!(next.0, last.0 + 1);
    assert_eq!(waiting_seqs(&b).await, vec![next]);
    relay.stop().await;
}

#[tokio::test]
async fn acks_short_of_the_newest_envelope_leave_its_record_to_keep_the_seq_after_restart() {
    // Acks that stop short of the head write no `h`: the head's own record, which
    // stays on disk, is what a restart learns the seq from.
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), small_segments());
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let last = put_numbered(&c.owner, 40).await;
    let full = log_segments(&relay.data_dir());
    b.ack(last.0 - 1).await.unwrap();
    relay.engine.flush().unwrap();
    let after = log_segments(&relay.data_dir());
    assert!(
        after < full,
        "acked segments are unlinked: {full} -> {after}"
    );
    assert_eq!(relay.engine.log_stats().live_records, 1);
    let (relay, [owner, b]) = restart_small(relay, [c.owner, b]).await;
    assert_eq!(waiting_seqs(&b).await, vec![last]);
    // Now the head is acked too: from here on `h` alone remembers it.
    b.ack(last.0).await.unwrap();
    relay.engine.flush().unwrap();
    assert_eq!(relay.engine.log_stats().live_records, 0);
    let next = owner.put(EnvelopeKind::Chat, b"one").await.unwrap();
    assert_eq!(next.0, last.0 + 1);
    b.ack(next.0).await.unwrap();
    relay.engine.flush().unwrap();
    drop(b);
    let (relay, [owner]) = restart_small(relay, [owner]).await;
    let again = owner.put(EnvelopeKind::Chat, b"two").await.unwrap();
    assert_eq!(again.0, next.0 + 1);
    relay.stop().await;
}

#[tokio::test]
async fn ack_marks_wait_for_a_flush_or_a_sweep_and_hold_across_restarts() {
    // One 4 KiB segment holds several envelopes, so acked records stay on disk next
    // to unacked ones and only the mark keeps them from being delivered again.
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), small_segments());
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let last = put_numbered(&c.owner, 3).await;
    relay.engine.sweep();
    assert_eq!(relay.engine.pending_marks(), 0);
    b.ack(last.0 - 2).await.unwrap();
    b.ack(last.0 - 1).await.unwrap();
    assert_eq!(relay.engine.pending_marks(), 1, "one mark per seat waits");
    relay.engine.sweep();
    assert_eq!(relay.engine.pending_marks(), 0, "the sweep writes it");
    let (relay, [owner, b]) = restart_small(relay, [c.owner, b]).await;
    assert_eq!(waiting_seqs(&b).await, vec![last]);
    // A flush writes waiting marks too (shutdown flushes; so does the commit thread
    // before it unlinks a segment).
    b.ack(last.0).await.unwrap();
    assert_eq!(relay.engine.pending_marks(), 1);
    relay.engine.flush().unwrap();
    assert_eq!(relay.engine.pending_marks(), 0);
    let next = owner.put(EnvelopeKind::Chat, b"after").await.unwrap();
    let (relay, [_owner, b]) = restart_small(relay, [owner, b]).await;
    assert_eq!(waiting_seqs(&b).await, vec![next]);
    relay.stop().await;
}

#[tokio::test]
async fn an_unacked_envelope_is_moved_out_of_a_sparse_segment_and_survives_restart() {
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), small_segments());
    // Talk `stuck`: its recipient never acks.
    let stuck = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let stuck_b = join(&relay, stuck.owner.mailbox, &stuck.seats[0]).await;
    let kept = stuck.owner.put(EnvelopeKind::Chat, b"kept").await.unwrap();
    let original = stuck_b.fetch(0).await.unwrap();
    // Talk `busy`: everything it sends is acked.
    let busy = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let busy_b = join(&relay, busy.owner.mailbox, &busy.seats[0]).await;
    let last = put_numbered(&busy.owner, 40).await;
    busy_b.ack(last.0).await.unwrap();
    relay.engine.flush().unwrap();
    // The first segment holds `kept` and acked envelopes: too sparse to keep.
    assert_eq!(relay.engine.compact(), 1);
    relay.engine.flush().unwrap();
    assert!(log_segments(&relay.data_dir()) <= 2);
    assert_eq!(relay.engine.log_stats().live_records, 1);
    assert_eq!(stuck_b.fetch(0).await.unwrap(), original);
    let (relay, [b]) = restart_small(relay, [stuck_b]).await;
    let got = b.fetch(0).await.unwrap();
    assert_eq!(got, original);
    assert_eq!(got[0].seq, kept);
    relay.stop().await;
}

#[tokio::test]
async fn a_closed_connection_frees_its_place_at_once() {
    // With room for one connection, a second client gets in only once the relay has
    // seen the first one's close frame; without it the relay would hold the first
    // connection until its idle timeout.
    let relay = TestRelay::start_config(tempfile::tempdir().unwrap(), |c| c.max_connections = 1);
    let first = relay.connect().await;
    first.close().await;
    let mut second = None;
    for _ in 0..50 {
        match RelayConnection::connect(&relay.addr).await {
            Ok(c) => {
                second = Some(c);
                break;
            }
            Err(nook_client::ConnectError::Unreachable { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let second = second.expect("the relay still counts the closed connection after 50 tries");
    assert_eq!(
        second.request(Request::Ping { nonce: 2 }).await.unwrap(),
        Response::Pong { nonce: 2 }
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_head_lost_in_a_crash_is_rebuilt_from_the_log_before_acked_segments_go() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let b = join(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mut last = Seq(0);
    for i in 0..10u32 {
        last = c
            .owner
            .put(EnvelopeKind::Chat, &i.to_le_bytes())
            .await
            .unwrap();
    }
    b.ack(last.0).await.unwrap();
    let (owner_id, mailbox) = (c.owner.id, c.owner.mailbox);
    drop(c.owner.conn);
    drop(b.conn);
    let dir = relay.stop().await;
    // As if the crash had lost the last write of `h` (the acks made it to disk): the
    // log's segment still holds the acked records, which the next start finds dead.
    {
        let vault = nook_vault::Vault::open(&dir.path().join("store")).unwrap();
        let ns_id = [&b"mailbox/"[..], &mailbox.0].concat();
        let ns = vault.namespace(&ns_id).unwrap().unwrap();
        ns.put(b"h", &0u64.to_le_bytes()).unwrap();
        vault.durable_flush().unwrap();
    }
    let relay = TestRelay::start_in(dir);
    relay.engine.flush().unwrap();
    assert_eq!(relay.engine.log_stats().live_records, 0);
    // Another restart, now that the acked segment is gone: seqs still go on.
    let relay = TestRelay::start_in(relay.stop().await);
    let owner = reconnect(&relay, owner_id, mailbox, 0).await;
    let next = owner.put(EnvelopeKind::Chat, b"next").await.unwrap();
    assert_eq!(next.0, last.0 + 1);
    relay.stop().await;
}

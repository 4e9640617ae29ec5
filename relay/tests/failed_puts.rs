//! A put that is not stored has no effect: not when the disk fails under it (the
//! relay answers `Internal` and holds, serves, pushes and recovers nothing of it),
//! and not on the joiner's welcome when it is refused.
//!
//! The disk failure is the envelope log's own fault hook
//! (`Engine::dangerous_fail_log_syncs`): the sync writes, then fails as an
//! `fdatasync` reporting an I/O error does, so the bytes really are in the file and
//! the relay has to cut them off.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use nook_client::{RelayConnection, RequestError};
use nook_crypto::auth::{AuthOp, sign_relay_auth};
use nook_crypto::{SeatSecret, TalkIdentity};
use nook_proto::*;
use nook_relay::engine::Held;

fn code(r: Result<impl std::fmt::Debug, RequestError>) -> ErrorCode {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a relay refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

/// A body of the smallest bucket, all `i`.
fn body(i: u8) -> Vec<u8> {
    vec![i; 512]
}

/// Each envelope as (seq, the byte its body is made of); short in failure messages.
fn seqs_and_bodies(got: &[Envelope]) -> Vec<(Seq, u8)> {
    got.iter()
        .map(|e| {
            assert!(e.body.len() == 512 && e.body.iter().all(|b| *b == e.body[0]));
            (e.seq, e.body[0])
        })
        .collect()
}

fn stored_count(relay: &TestRelay) -> u64 {
    relay
        .engine
        .stats
        .envelopes_stored
        .load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn puts_whose_write_fails_have_no_effect_now_or_after_a_restart() {
    let relay = TestRelay::start();
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    let mailbox = c.owner.mailbox;
    let mut b = join(&relay, mailbox, &c.seats[0]).await;
    let mut b_push = b.conn.take_pushes().unwrap();
    b.subscribe().await;
    assert_eq!(
        c.owner.put_raw(EnvelopeKind::Chat, body(1)).await.unwrap(),
        Seq(1)
    );
    match next_push(&mut b_push).await {
        Push::Envelope { envelope, .. } => assert_eq!(envelope.seq, Seq(1)),
        p => panic!("unexpected {p:?}"),
    }
    let before = relay.engine.held(&mailbox).unwrap();
    assert_eq!(
        (before.head, before.durable, before.envelopes, before.bytes),
        (1, 1, 1, 512)
    );
    let live_before = relay.engine.log_stats().live_records;
    let stored_before = stored_count(&relay);

    // The disk fails: eight pipelined puts, each answered Internal.
    relay.engine.dangerous_fail_log_syncs(u64::MAX);
    let owner = Arc::new(c.owner);
    let mut puts = tokio::task::JoinSet::new();
    for i in 2..10u8 {
        let owner = owner.clone();
        puts.spawn(async move { owner.put_raw(EnvelopeKind::Chat, body(i)).await });
    }
    while let Some(r) = puts.join_next().await {
        assert_eq!(code(r.unwrap()), ErrorCode::Internal);
    }
    // Nothing of them is held: not the head, the quota, the index or the log.
    assert_eq!(relay.engine.held(&mailbox), Some(before));
    assert_eq!(relay.engine.log_stats().live_records, live_before);
    assert_eq!(stored_count(&relay), stored_before);
    // Nor served.
    assert_eq!(
        seqs_and_bodies(&b.fetch(0).await.unwrap()),
        vec![(Seq(1), 1)]
    );

    // The disk is back. The next put takes the next seq, and is the next push the
    // recipient gets: none went out for the refused ones.
    relay.engine.dangerous_fail_log_syncs(0);
    assert_eq!(
        owner.put_raw(EnvelopeKind::Chat, body(10)).await.unwrap(),
        Seq(2)
    );
    match next_push(&mut b_push).await {
        Push::Envelope { envelope, .. } => {
            assert_eq!((envelope.seq, envelope.body == body(10)), (Seq(2), true))
        }
        p => panic!("unexpected {p:?}"),
    }

    // A restart finds exactly what was stored.
    let (b_id, b_seat) = (b.id, b.seat);
    drop(b.conn);
    let relay = TestRelay::start_in(relay.stop().await);
    let b = reconnect(&relay, b_id, mailbox, b_seat).await;
    assert_eq!(
        seqs_and_bodies(&b.fetch(0).await.unwrap()),
        vec![(Seq(1), 1), (Seq(2), 10)]
    );
    let after = relay.engine.held(&mailbox).unwrap();
    assert_eq!(
        (after.head, after.durable, after.envelopes, after.bytes),
        (2, 2, 2, 1024)
    );
    assert_eq!(relay.engine.log_stats().live_records, 2);
    relay.stop().await;
}

#[tokio::test]
async fn whatever_a_failed_sync_catches_a_put_is_held_exactly_when_answered_stored() {
    // One sync fails while puts keep coming: some are in its batch, some are
    // appended while it runs (given up with it, though answered after the next,
    // good sync), the rest are stored. Whichever way each went, the relay holds,
    // serves and recovers exactly those answered `Stored`.
    let relay = TestRelay::start();
    let c = create(&relay, 2, 1, ClosePolicy::Owner).await;
    let mailbox = c.owner.mailbox;
    let b = join(&relay, mailbox, &c.seats[0]).await;
    relay.engine.dangerous_fail_log_syncs(1);
    let owner = Arc::new(c.owner);
    let mut puts = tokio::task::JoinSet::new();
    for i in 1..=32u8 {
        let owner = owner.clone();
        puts.spawn(async move { (i, owner.put_raw(EnvelopeKind::Chat, body(i)).await) });
    }
    let mut stored = BTreeMap::new();
    let mut refused = 0;
    while let Some(r) = puts.join_next().await {
        match r.unwrap() {
            (i, Ok(seq)) => assert!(stored.insert(seq, i).is_none(), "{seq:?} twice"),
            (_, Err(e)) => {
                assert_eq!(e.code(), Some(ErrorCode::Internal));
                refused += 1;
            }
        }
    }
    assert!(refused >= 1, "the first sync with anything to write fails");
    let expected: Vec<(Seq, u8)> = stored.into_iter().collect();
    let top = expected.last().map_or(0, |(s, _)| s.0);
    assert_eq!(seqs_and_bodies(&b.fetch(0).await.unwrap()), expected);
    let held = relay.engine.held(&mailbox).unwrap();
    assert_eq!(
        (held.head, held.durable, held.envelopes),
        (top, top, expected.len() as u64)
    );
    assert_eq!(stored_count(&relay), expected.len() as u64);

    let (b_id, b_seat) = (b.id, b.seat);
    drop(b.conn);
    let relay = TestRelay::start_in(relay.stop().await);
    let b = reconnect(&relay, b_id, mailbox, b_seat).await;
    assert_eq!(seqs_and_bodies(&b.fetch(0).await.unwrap()), expected);
    assert_eq!(relay.engine.held(&mailbox).unwrap().head, top);
    relay.stop().await;
}

#[tokio::test]
async fn a_compaction_whose_sync_fails_keeps_the_original() {
    // Compaction copies an unacked envelope out of a sparse segment; if the sync
    // that should keep the copy fails, the copy is given up and the original must
    // stay (it used to be released as soon as it was copied).
    let small = || nook_relay::engine::Limits {
        log_segment_bytes: 4096,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), small());
    let stuck = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let stuck_b = join(&relay, stuck.owner.mailbox, &stuck.seats[0]).await;
    stuck.owner.put(EnvelopeKind::Chat, b"kept").await.unwrap();
    let original = stuck_b.fetch(0).await.unwrap();
    let busy = create(&relay, 2, 2, ClosePolicy::Owner).await;
    let busy_b = join(&relay, busy.owner.mailbox, &busy.seats[0]).await;
    let mut last = Seq(0);
    for i in 0..40u32 {
        last = busy
            .owner
            .put(EnvelopeKind::Chat, &i.to_le_bytes())
            .await
            .unwrap();
    }
    busy_b.ack(last.0).await.unwrap();
    relay.engine.flush().unwrap();

    relay.engine.dangerous_fail_log_syncs(1);
    assert_eq!(relay.engine.compact(), 0, "the copy was given up");
    relay.engine.flush().unwrap();
    assert_eq!(relay.engine.log_stats().live_records, 1);
    assert_eq!(stuck_b.fetch(0).await.unwrap(), original);
    // With a good sync it moves, and survives a restart either way.
    assert_eq!(relay.engine.compact(), 1);
    relay.engine.flush().unwrap();
    let (b_id, b_seat, mailbox) = (stuck_b.id, stuck_b.seat, stuck_b.mailbox);
    drop(stuck_b.conn);
    let relay = TestRelay::start_with(relay.stop().await, small());
    let b = reconnect(&relay, b_id, mailbox, b_seat).await;
    assert_eq!(b.fetch(0).await.unwrap(), original);
    relay.stop().await;
}

/// `Join` for seat `seat` of `mailbox` as `id`, on `conn`.
fn join_as(
    conn: &RelayConnection,
    mailbox: MailboxId,
    seat: &SeatSecret,
    id: &TalkIdentity,
) -> Request {
    let token = *seat.join_token();
    let signature = sign_relay_auth(id, AuthOp::Join, &conn.hello().challenge, &mailbox, &token);
    Request::Join(Join {
        mailbox,
        token,
        member: id.member_key(),
        signature,
    })
}

/// The welcome a `Join` of `id` gets on a fresh connection, or the refusal.
async fn join_again(
    relay: &TestRelay,
    mailbox: MailboxId,
    seat: &SeatSecret,
    id: &TalkIdentity,
) -> Result<Vec<u8>, RequestError> {
    let conn = relay.connect().await;
    match conn.request(join_as(&conn, mailbox, seat, id)).await? {
        Response::Joined { welcome, .. } => Ok(welcome),
        r => panic!("unexpected {r:?}"),
    }
}

#[tokio::test]
async fn a_put_refused_or_failed_leaves_the_joiner_its_welcome_and_a_stored_one_takes_it() {
    let limits = nook_relay::engine::Limits {
        max_envelopes_per_mailbox: 1,
        ..Default::default()
    };
    let relay = TestRelay::start_with(tempfile::tempdir().unwrap(), limits);
    let c = create(&relay, 3, 1, ClosePolicy::Owner).await;
    let mailbox = c.owner.mailbox;
    // The mailbox is full: one envelope waits for the first joiner.
    let first = join(&relay, mailbox, &c.seats[0]).await;
    c.owner.put(EnvelopeKind::Chat, b"fills it").await.unwrap();

    // The second joiner's announcement is refused: its welcome stays.
    let id = TalkIdentity::generate(&mut rand::rng());
    let conn = relay.connect().await;
    let welcome = match conn
        .request(join_as(&conn, mailbox, &c.seats[1], &id))
        .await
    {
        Ok(Response::Joined { welcome, seat, .. }) => {
            assert_eq!(seat, 2);
            welcome
        }
        r => panic!("unexpected {r:?}"),
    };
    let joiner = Member {
        id,
        conn,
        mailbox,
        seat: 2,
    };
    let kept = |relay: &TestRelay| relay.engine.held(&mailbox).map(|h: Held| h.welcomes);
    assert_eq!(kept(&relay), Some(2), "both joiners' welcomes are kept");
    assert_eq!(
        code(joiner.put(EnvelopeKind::Handshake, b"announce").await),
        ErrorCode::MailboxFull
    );
    assert_eq!(kept(&relay), Some(2));
    assert_eq!(
        join_again(&relay, mailbox, &c.seats[1], &joiner.id)
            .await
            .unwrap(),
        welcome,
        "a refused put leaves the join retryable"
    );

    // Room again, but the disk fails: the put is answered Internal, the welcome stays.
    first.ack(1).await.unwrap();
    relay.engine.dangerous_fail_log_syncs(u64::MAX);
    assert_eq!(
        code(joiner.put(EnvelopeKind::Handshake, b"announce").await),
        ErrorCode::Internal
    );
    relay.engine.dangerous_fail_log_syncs(0);
    assert_eq!(kept(&relay), Some(2));
    assert_eq!(
        join_again(&relay, mailbox, &c.seats[1], &joiner.id)
            .await
            .unwrap(),
        welcome,
        "a failed put leaves the join retryable"
    );

    // Stored: now the welcome goes, and the retry with it.
    joiner
        .put(EnvelopeKind::Handshake, b"announce")
        .await
        .unwrap();
    assert_eq!(kept(&relay), Some(1));
    assert_eq!(
        code(join_again(&relay, mailbox, &c.seats[1], &joiner.id).await),
        ErrorCode::InviteInvalid
    );
    relay.stop().await;
}

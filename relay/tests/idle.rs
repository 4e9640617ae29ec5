//! Idle talks live in the store, not in memory: the engine holds a mailbox only while
//! an operation uses it, someone is subscribed to it, or it holds envelopes; and
//! every operation, a restart, expiry and retirement work on the others as loaded
//! back from the store.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nook_proto::*;

const TALKS: usize = 100;

/// A relay that lets one address create every talk of these tests at once.
fn relay() -> TestRelay {
    relay_in(tempfile::tempdir().unwrap())
}

fn relay_in(dir: tempfile::TempDir) -> TestRelay {
    TestRelay::start_config(dir, |c| {
        let wide = nook_relay::admission::Rate {
            count: 100_000,
            per: std::time::Duration::from_secs(1),
        };
        c.create_rate = wide;
        c.create_rate_per_address = wide;
    })
}

async fn idle_talks(relay: &TestRelay) -> Vec<Created> {
    let mut talks = Vec::with_capacity(TALKS);
    for _ in 0..TALKS {
        talks.push(create(relay, 2, 2, ClosePolicy::Owner).await);
    }
    talks
}

#[tokio::test]
async fn idle_talks_are_held_in_the_store_not_in_memory() {
    let relay = relay();
    let talks = idle_talks(&relay).await;
    assert_eq!(relay.engine.mailbox_count(), TALKS);
    // Nothing of them is held in memory, though every owner is still connected.
    relay.engine.evict_idle();
    assert_eq!(relay.engine.resident_count(), 0);
    // Reading one's state loads it, and lets it go again.
    assert_eq!(
        relay.engine.held(&talks[7].owner.mailbox).unwrap().welcomes,
        1
    );
    assert_eq!(relay.engine.resident_count(), 0);
    let stored = relay.engine.stored_bytes();
    assert!(stored > 0, "the welcomes count against the quota");

    // A subscriber keeps its mailbox in memory (pushes go to it), until it is gone.
    talks[3].owner.subscribe().await;
    relay.engine.evict_idle();
    assert_eq!(relay.engine.resident_count(), 1);
    // A put waiting for its recipient keeps its mailbox too.
    let joined = join(&relay, talks[5].owner.mailbox, &talks[5].seats[0]).await;
    joined.put(EnvelopeKind::Handshake, b"hello").await.unwrap();
    relay.engine.evict_idle();
    assert_eq!(relay.engine.resident_count(), 2);
    talks[5].owner.ack(1).await.unwrap();
    let engine = &relay.engine;
    until("the acked mailbox is evicted", || {
        engine.evict_idle();
        engine.resident_count() == 1
    })
    .await;

    // A restart loads none of them, and keeps every one and its welcome.
    let mut talks = talks;
    let owners: Vec<MailboxId> = talks.iter().map(|t| t.owner.mailbox).collect();
    let seats: Vec<_> = talks.iter_mut().map(|t| t.seats.remove(0)).collect();
    drop(talks);
    drop(joined);
    let relay = relay_in(relay.stop().await);
    assert_eq!(relay.engine.mailbox_count(), TALKS);
    assert_eq!(relay.engine.resident_count(), 0);
    // Talk 5's welcome went with its joiner's first put.
    assert_eq!(relay.engine.stored_bytes(), stored - stored / TALKS as u64);
    let m = join(&relay, owners[9], &seats[9]).await;
    assert_eq!(m.seat, 1);
    m.put(EnvelopeKind::Handshake, b"after a restart")
        .await
        .unwrap();
    relay.engine.evict_idle();
    assert_eq!(relay.engine.resident_count(), 1, "it holds an envelope");

    // Expiry finds them all, in memory or not.
    relay.clock.advance(3601);
    assert_eq!(relay.engine.sweep(), TALKS);
    assert_eq!(relay.engine.mailbox_count(), 0);
    assert_eq!(relay.engine.resident_count(), 0);
    assert_eq!(relay.engine.stored_bytes(), 0);
    relay.stop().await;
}

#[tokio::test]
async fn retirement_closes_talks_that_are_not_in_memory() {
    let relay = relay();
    let talks = idle_talks(&relay).await;
    relay.engine.evict_idle();
    assert_eq!(relay.engine.resident_count(), 0);
    let at = relay.engine.now() + 10;
    relay.engine.announce_retirement(at);
    relay.clock.advance(10);
    assert_eq!(relay.engine.sweep(), TALKS);
    assert_eq!(relay.engine.mailbox_count(), 0);
    let auth = talks[0].owner.auth_on(&talks[0].owner.conn).await;
    assert_eq!(
        auth.err().and_then(|e| e.code()),
        Some(ErrorCode::MailboxClosed)
    );
    relay.stop().await;
}

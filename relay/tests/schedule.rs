//! Scheduled talks against the in-process relay with a manual clock (protocol-spec.md
//! §20.1): the opening waits for its time even at quorum, the window's end closes the
//! talk with the relay's receipt, joins after it are refused, and both times survive a
//! restart. The sweeper runs only when a test calls it, so the clock drives everything.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use nook_client::{RelayConnection, RequestError};
use nook_crypto::auth::{AuthOp, params_digest, sign_relay_auth, verify_receipt};
use nook_crypto::{SeatSecret, TalkIdentity};
use nook_proto::*;

const OPENS_IN: u32 = 600;
const WINDOW: u32 = 300;

fn code(r: Result<impl std::fmt::Debug, RequestError>) -> ErrorCode {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a relay refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

fn detail(r: Result<impl std::fmt::Debug, RequestError>) -> ErrorDetail {
    match r {
        Err(RequestError::Refused { detail, .. }) => detail,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A scheduled talk of `seats` seats and quorum `quorum`, created at the clock's now.
async fn create_scheduled(relay: &TestRelay, seats: u8, quorum: u8) -> Created {
    let conn = relay.connect().await;
    create_adjusted(conn, seats, quorum, ClosePolicy::Owner, |p| {
        p.schedule = Some(Schedule {
            opens_in_secs: OPENS_IN,
            window_secs: WINDOW,
        });
    })
    .await
}

async fn join_on(relay: &TestRelay, mailbox: MailboxId, seat: &SeatSecret) -> Member {
    join_with(relay.connect().await, mailbox, seat)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn a_talk_at_quorum_opens_at_its_time_and_its_window_closes_it_with_a_receipt() {
    let relay = TestRelay::start();
    let mut c = create_scheduled(&relay, 3, 2).await;
    let schedule = TalkSchedule {
        opens_at: T0 + u64::from(OPENS_IN),
        closes_at: T0 + u64::from(OPENS_IN + WINDOW),
    };
    assert_eq!(c.status.schedule, Some(schedule));
    let mut pushes = c.owner.conn.take_pushes().unwrap();
    c.owner.subscribe().await;
    let b = join_on(&relay, c.owner.mailbox, &c.seats[0]).await;
    assert!(matches!(
        next_push(&mut pushes).await,
        Push::SeatTaken { .. }
    ));

    // At quorum before the time: still pending, chat refused with the opening time,
    // handshakes accepted.
    let status = b.subscribe().await;
    assert_eq!((status.state, status.members), (TalkPhase::Pending, 2));
    assert_eq!(
        detail(b.put(EnvelopeKind::Chat, b"too early").await),
        ErrorDetail::Opens {
            at: schedule.opens_at
        }
    );
    b.put(EnvelopeKind::Handshake, b"keys").await.unwrap();
    relay.clock.set(schedule.opens_at - 1);
    relay.engine.sweep();
    assert_eq!(
        code(b.put(EnvelopeKind::Chat, b"still early").await),
        ErrorCode::TalkNotOpen
    );

    // At the time the sweep opens it and tells the members.
    relay.clock.set(schedule.opens_at);
    relay.engine.sweep();
    loop {
        match next_push(&mut pushes).await {
            Push::Opened { status, .. } => {
                assert_eq!(status.state, TalkPhase::Open);
                break;
            }
            Push::Envelope { .. } => continue,
            p => panic!("unexpected {p:?}"),
        }
    }
    b.put(EnvelopeKind::Chat, b"now").await.unwrap();

    // A late joiner inside the window gets in.
    relay.clock.set(schedule.closes_at - 1);
    let late = join_on(&relay, c.owner.mailbox, &c.seats[1]).await;
    assert_eq!(late.seat, 2);

    // At the window's end: closed by the relay, with a receipt that verifies.
    relay.clock.set(schedule.closes_at);
    assert_eq!(relay.engine.sweep(), 1);
    let receipt = loop {
        match next_push(&mut pushes).await {
            Push::Closed {
                receipt, farewell, ..
            } => {
                assert!(farewell.is_empty(), "no member closed it");
                break receipt;
            }
            Push::Envelope { .. } | Push::SeatTaken { .. } => continue,
            p => panic!("unexpected {p:?}"),
        }
    };
    assert_eq!(receipt.closed_at, schedule.closes_at);
    verify_receipt(&relay.engine.identity().public(), &receipt).unwrap();
    assert!(relay.engine.held(&c.owner.mailbox).is_none(), "erased");

    // A member coming back gets the receipt; an invite is refused as the window's end.
    let fresh = relay.connect().await;
    assert_eq!(
        detail(b.auth_on(&fresh).await),
        ErrorDetail::Closed(Box::new(receipt))
    );
    relay.stop().await;
}

#[tokio::test]
async fn joins_after_the_window_are_refused_even_before_the_sweep() {
    let relay = TestRelay::start();
    let c = create_scheduled(&relay, 3, 3).await;
    relay.clock.set(T0 + u64::from(OPENS_IN + WINDOW));
    // Not swept yet: the talk itself refuses.
    let early = join_with(relay.connect().await, c.owner.mailbox, &c.seats[0]).await;
    assert_eq!(code(early.map(|_| ())), ErrorCode::WindowEnded);
    // Swept: a talk that never reached quorum is closed all the same, and the tombstone
    // answers joiners with the window's end.
    assert_eq!(relay.engine.sweep(), 1);
    let late = join_with(relay.connect().await, c.owner.mailbox, &c.seats[1]).await;
    assert_eq!(code(late.map(|_| ())), ErrorCode::WindowEnded);
    let fresh = relay.connect().await;
    assert_eq!(
        code(c.owner.auth_on(&fresh).await),
        ErrorCode::MailboxClosed
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_schedule_outside_the_ttl_is_refused() {
    let relay = TestRelay::start();
    let conn: RelayConnection = relay.connect().await;
    let id = TalkIdentity::generate(&mut rand::rng());
    let secrets = [SeatSecret::random(&mut rand::rng())];
    let mut p = params(2, 2, ClosePolicy::Owner, &secrets);
    p.schedule = Some(Schedule {
        opens_in_secs: p.ttl_secs,
        window_secs: 1,
    });
    let sig = sign_relay_auth(
        &id,
        AuthOp::Create,
        &conn.hello().challenge,
        &MailboxId([0; 16]),
        &params_digest(&p).unwrap(),
    );
    let r = conn
        .request(Request::Create(Create {
            params: p,
            owner: id.member_key(),
            signature: sig,
        }))
        .await;
    assert_eq!(code(r), ErrorCode::BadRequest);
    relay.stop().await;
}

#[tokio::test]
async fn both_times_survive_a_restart() {
    let relay = TestRelay::start();
    let c = create_scheduled(&relay, 2, 2).await;
    let b = join_on(&relay, c.owner.mailbox, &c.seats[0]).await;
    let mailbox = c.owner.mailbox;
    let (owner_id, b_id) = (c.owner.id, b.id);
    let dir = relay.stop().await;

    // Restarted after the opening time: the first sweep opens it.
    let relay = TestRelay::start_in(dir);
    relay.clock.set(T0 + u64::from(OPENS_IN) + 1);
    let owner = reconnect(&relay, owner_id, mailbox, 0).await;
    // (The relay's own first sweep may run before or after the clock is set.)
    relay.engine.sweep();
    assert_eq!(owner.subscribe().await.state, TalkPhase::Open);
    owner.put(EnvelopeKind::Chat, b"open").await.unwrap();
    let dir = relay.stop().await;

    // Restarted after the window's end: the first sweep closes it with a receipt.
    let relay = TestRelay::start_in(dir);
    relay.clock.set(T0 + u64::from(OPENS_IN + WINDOW) + 100);
    assert_eq!(relay.engine.sweep(), 1);
    let conn = relay.connect().await;
    let member = Member {
        id: b_id,
        conn,
        mailbox,
        seat: 1,
    };
    match detail(member.auth_on(&member.conn).await) {
        ErrorDetail::Closed(receipt) => {
            verify_receipt(&relay.engine.identity().public(), &receipt).unwrap();
            assert_eq!(receipt.closed_at, T0 + u64::from(OPENS_IN + WINDOW) + 100);
        }
        d => panic!("expected the receipt, got {d:?}"),
    }
    relay.stop().await;
}

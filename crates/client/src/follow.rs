//! Following a talk: stay connected, turn pushes into history, hand each new entry
//! to a sink, reconnect when the connection drops.
//!
//! The store is leased only while a batch of pushes is written, never while waiting
//! for the relay, so other `nook` processes (a `send` beside a `read --follow`) use
//! the same home meanwhile; each batch therefore loads the talk's state afresh.
//!
//! Ownership: the caller's task runs the whole loop; the only other task is the
//! connection's reader, owned by the [`crate::RelayConnection`].

use std::time::Duration;

use nook_crypto::auth::PortableReceipt;
use nook_proto::{Push, Request, Response, TalkStatus};

use crate::transport::RelayConnection;

use crate::dial::Dialer;
use crate::error::ClientError;
use crate::lease::Leases;
use crate::member::Event;
use crate::session::{Relay, TalkSession, Target, authenticate, ended};
use crate::store::{HistoryEntry, TalkId};

/// When `follow` stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until the talk closes or expires.
    Closed,
    /// Until the talk is open.
    Open,
}

/// Connection state, for a screen that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connected,
    /// The connection dropped; the next attempt starts after `delay`.
    Reconnecting {
        attempt: u32,
        reason: String,
        delay: Duration,
    },
}

/// What a `follow` sink is told.
#[derive(Debug, Clone)]
pub enum Update {
    Entry(HistoryEntry),
    Status(TalkStatus),
    Link(Link),
}

/// Pushes handled under one store lease, at most.
const BATCH: usize = 256;

/// How long a follower whose talk another process just deleted waits for the push that
/// says why (it is sent together with that process's answer).
const ENDING_GRACE: Duration = Duration::from_secs(2);

/// Follows `talk_id` from history index `from` on; see [`crate::Client::follow`].
pub(crate) async fn follow(
    leases: &Leases,
    dialer: &Dialer,
    talk_id: TalkId,
    from: u64,
    until: Until,
    patience: Duration,
    mut sink: impl FnMut(Update) -> bool,
) -> Result<(), ClientError> {
    let mut follower = Follower {
        talk_id,
        next: from,
        until,
        patience_ms: u64::try_from(patience.as_millis()).unwrap_or(u64::MAX),
        release_at: None,
    };
    let mut attempt: u32 = 0;
    loop {
        match follower.once(leases, dialer, &mut sink, &mut attempt).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                attempt = attempt.saturating_add(1);
                let delay = backoff(attempt);
                if !sink(Update::Link(Link::Reconnecting {
                    attempt,
                    reason: e.to_string(),
                    delay,
                })) {
                    return Ok(());
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Exponential, capped: a relay restart is usually brief.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(5)).min(Duration::from_secs(5))
}

/// The end a push announces, as far as it can be told without the talk's keys: who
/// closed it cannot be checked any more, but the relay's receipt still can, against
/// the key this connection pinned; and our own seat leaving (another process of this
/// member left).
fn ending(push: &Push, target: &Target, conn: &RelayConnection) -> Option<Event> {
    match push {
        Push::Closed { receipt, .. } => {
            let portable =
                PortableReceipt::new(target.addr().clone(), conn.hello().relay_key, receipt)
                    .with_rotations(conn.followed().to_vec());
            let valid = portable.mailbox == target.mailbox() && portable.verify().is_ok();
            Some(Event::Closed {
                by: None,
                verified: false,
                receipt: valid.then(|| Box::new(portable)),
            })
        }
        Push::Expired { .. } => Some(Event::Expired),
        Push::MemberLeft { status, .. }
            if status.left & 1u64.checked_shl(u32::from(target.seat())).unwrap_or(0) != 0 =>
        {
            Some(Event::MemberLeaving {
                seat: target.seat(),
                alias: target.alias().to_string(),
            })
        }
        _ => None,
    }
}

/// Where one follow is.
struct Follower {
    talk_id: TalkId,
    /// The first history index not yet handed to the sink.
    next: u64,
    until: Until,
    /// How long a message waits for those its author had seen (protocol-spec §13.3).
    patience_ms: u64,
    /// When the oldest message held back for causal order has waited enough.
    release_at: Option<u64>,
}

impl Follower {
    /// One connection's worth: connect, catch up, then handle pushes until the
    /// connection drops (an error) or the follow is done (`Ok`).
    async fn once(
        &mut self,
        leases: &Leases,
        dialer: &Dialer,
        sink: &mut impl FnMut(Update) -> bool,
        attempt: &mut u32,
    ) -> Result<(), ClientError> {
        // The store is let go while the relay is dialled: a retry loop against a dead
        // relay must never block another command on this home.
        let target = TalkSession::load(leases.take().await?, &self.talk_id)?.target()?;
        let answer = authenticate(dialer, &target).await;
        let (conn, mut pushes) = {
            let mut session = TalkSession::load(leases.take().await?, &self.talk_id)?;
            let mut conn = match session.settle(answer).await {
                Ok(authed) => authed.conn,
                Err(ClientError::TalkGone) => {
                    // Ended while we were away: the relay only says "closed".
                    sink(Update::Entry(ended(Event::Closed {
                        by: None,
                        verified: false,
                        receipt: None,
                    })));
                    return Ok(());
                }
                Err(ClientError::Closed { receipt }) => {
                    // Closed while we were away; the relay kept its receipt for us.
                    sink(Update::Entry(ended(Event::Closed {
                        by: None,
                        verified: false,
                        receipt,
                    })));
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let pushes = conn.take_pushes().ok_or(ClientError::Protocol)?;
            let mailbox = session.state().mailbox;
            let status = match conn.request(Request::Subscribe { mailbox }).await? {
                Response::Subscribed { status } => status,
                _ => return Err(ClientError::Protocol),
            };
            *attempt = 0;
            if !sink(Update::Link(Link::Connected)) || !sink(Update::Status(status)) {
                return Ok(());
            }
            session.apply_status(&conn, status).await?;
            session.sync_with(&conn, self.patience_ms).await?;
            self.release_at = session.state().waiting_until(self.patience_ms);
            if self.deliver(&session, sink)? {
                drop(session);
                conn.close().await;
                return Ok(());
            }
            (conn, pushes)
        };
        loop {
            // Messages held back for causal order are shown when their patience ends,
            // whether or not anything else arrives by then.
            let due = self.release_at.map(|at| {
                tokio::time::Instant::now()
                    + Duration::from_millis(at.saturating_sub(crate::now_ms()))
            });
            let next = match due {
                Some(due) => tokio::time::timeout_at(due, pushes.recv()).await.ok(),
                None => Some(pushes.recv().await),
            };
            let Some(next) = next else {
                let mut session = TalkSession::load(leases.take().await?, &self.talk_id)?;
                session.release_due(&conn, self.patience_ms).await?;
                self.release_at = session.state().waiting_until(self.patience_ms);
                if self.deliver(&session, sink)? {
                    drop(session);
                    conn.close().await;
                    return Ok(());
                }
                continue;
            };
            let Some(first) = next else {
                return Err(ClientError::Lost {
                    reason: conn.close_reason(),
                });
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match pushes.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let session = match TalkSession::load(leases.take().await?, &self.talk_id) {
                Ok(s) => s,
                Err(ClientError::TalkGone) => {
                    // Another process of this member ended it here first (its own close
                    // or leave). The push that says how is in this batch or right
                    // behind it (the relay sends it with its answer to that process):
                    // wait a moment for it, so this follower ends like every other.
                    let mut event = batch.iter().find_map(|p| ending(p, &target, &conn));
                    for _ in 0..BATCH {
                        if event.is_some() {
                            break;
                        }
                        match tokio::time::timeout(ENDING_GRACE, pushes.recv()).await {
                            Ok(Some(p)) => event = ending(&p, &target, &conn),
                            _ => break,
                        }
                    }
                    if let Some(event) = event {
                        sink(Update::Entry(ended(event)));
                    }
                    return Err(ClientError::TalkGone);
                }
                Err(e) => return Err(e),
            };
            let Some(session) = self.on_pushes(session, &conn, batch, sink).await? else {
                return Ok(());
            };
            self.release_at = session.state().waiting_until(self.patience_ms);
            if self.deliver(&session, sink)? {
                drop(session);
                conn.close().await;
                return Ok(());
            }
        }
    }

    /// Applies one batch of pushes in order. Returns the session, or `None` when the
    /// talk ended (it is deleted and its final entry handed to the sink).
    async fn on_pushes(
        &mut self,
        mut session: TalkSession,
        relay: &impl Relay,
        batch: Vec<Push>,
        sink: &mut impl FnMut(Update) -> bool,
    ) -> Result<Option<TalkSession>, ClientError> {
        let mut envelopes = Vec::new();
        for push in batch {
            // Envelopes are processed together (one fdatasync, one ack) up to the
            // next push that is not an envelope, which must see them first.
            if let Push::Envelope { envelope, .. } = push {
                envelopes.push(envelope);
                continue;
            }
            session
                .process(relay, std::mem::take(&mut envelopes), self.patience_ms)
                .await?;
            match push {
                Push::Envelope { .. } => {}
                Push::SeatTaken { status, .. }
                | Push::Opened { status, .. }
                | Push::MemberLeft { status, .. } => {
                    if session.has_left(&status) {
                        // Another process of this member left the talk: the final event
                        // is our own leaving, as every follower ends with one.
                        self.deliver(&session, sink)?;
                        let left = Event::MemberLeaving {
                            seat: session.state().seat,
                            alias: session.state().alias.clone(),
                        };
                        sink(Update::Entry(session.end(left)?));
                        return Err(ClientError::TalkGone);
                    }
                    session.apply_status(relay, status).await?;
                    sink(Update::Status(status));
                }
                Push::Closed {
                    receipt, farewell, ..
                } => {
                    // What arrived before the close is shown before the store goes,
                    // with what the closer's summary says never arrived.
                    session.note(session.state().close_summary(&farewell))?;
                    self.deliver(&session, sink)?;
                    let event =
                        session
                            .state()
                            .check_close(&receipt, &farewell, &relay.rotations());
                    sink(Update::Entry(session.end(event)?));
                    return Ok(None);
                }
                Push::Expired { .. } => {
                    self.deliver(&session, sink)?;
                    sink(Update::Entry(session.end(Event::Expired)?));
                    return Ok(None);
                }
                Push::Retiring { at } => {
                    if let Some(event) = session.note_retiring(at)? {
                        session.note(vec![event])?;
                    }
                }
                Push::SeatRequested { mailbox } => {
                    // Opened at once, so the history says who asks (new ones only).
                    let Response::Requests { items } =
                        relay.request(Request::Requests { mailbox }).await?
                    else {
                        return Err(ClientError::Protocol);
                    };
                    crate::board::take_requests(session.store(), &self.talk_id, items)?;
                }
            }
        }
        session.process(relay, envelopes, self.patience_ms).await?;
        Ok(Some(session))
    }

    /// Hands new history to `sink`; true when the follow should stop.
    fn deliver(
        &mut self,
        session: &TalkSession,
        sink: &mut impl FnMut(Update) -> bool,
    ) -> Result<bool, ClientError> {
        for e in session.store().history(&self.talk_id, self.next)? {
            self.next = e.index + 1;
            let closed = matches!(e.event, Event::Closed { .. } | Event::Expired);
            if !sink(Update::Entry(e)) || closed {
                return Ok(true);
            }
        }
        Ok(self.until == Until::Open && session.state().opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakeRelay, home, status, three};
    use nook_crypto::auth::RelayIdentity;
    use nook_proto::EnvelopeKind;

    fn follower(talk_id: TalkId) -> Follower {
        Follower {
            talk_id,
            next: 0,
            until: Until::Closed,
            patience_ms: 0,
            release_at: None,
        }
    }

    #[tokio::test]
    async fn what_came_before_a_close_is_shown_then_the_talk_is_deleted() {
        let (_dir, leases) = home();
        let (mut net, mut a, mut b, _) = three();
        let relay_id = RelayIdentity::generate(&mut rand::rng());
        b.relay_key = Some(relay_id.public().0);
        b.relay = format!(
            "nook://{}@127.0.0.1:4433",
            nook_crypto::Fingerprint::of_key(&relay_id.public().0)
        );
        let talk_id = b.talk_id;
        let receipt = relay_id.sign_receipt(b.mailbox, 10, 0);
        let (body, _) = a.seal_text("last words", 9).unwrap();
        net.put(a.seat, EnvelopeKind::Chat, body);
        let (_, envelope) = net.log.last().cloned().unwrap();
        let batch = vec![
            Push::Envelope {
                mailbox: b.mailbox,
                envelope: envelope.clone(),
            },
            Push::Closed {
                mailbox: b.mailbox,
                receipt,
                farewell: a.farewell().unwrap(),
            },
        ];
        let session = TalkSession::new(leases.take().await.unwrap(), b);
        let relay = FakeRelay::new(false);
        let mut seen = Vec::new();
        let mut f = follower(talk_id);
        let left = f
            .on_pushes(session, &relay, batch, &mut |u| {
                if let Update::Entry(e) = u {
                    seen.push(e.event);
                }
                true
            })
            .await
            .unwrap();
        assert!(left.is_none(), "the talk ended");
        assert!(
            matches!(&seen[..], [.., Event::Message { text, .. }, Event::Closed { by: Some(by), verified: true, receipt: Some(r) }]
                if text == "last words" && by == "owner-owl" && r.receipt() == receipt && r.verify().is_ok()),
            "{seen:?}"
        );
        // The envelope was acknowledged before the talk went; then nothing is left.
        assert!(
            matches!(&relay.requests()[..], [Request::Ack { upto, .. }] if *upto == envelope.seq)
        );
        assert!(
            leases
                .take()
                .await
                .unwrap()
                .load(&talk_id)
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn statuses_between_envelopes_see_the_envelopes_first() {
        let (_dir, leases) = home();
        let (mut net, mut a, b, _) = three();
        let talk_id = b.talk_id;
        let mut envelopes = Vec::new();
        for text in ["one", "two"] {
            let (body, _) = a.seal_text(text, 9).unwrap();
            net.put(a.seat, EnvelopeKind::Chat, body);
            envelopes.push(net.log.last().cloned().unwrap().1);
        }
        let mailbox = b.mailbox;
        let batch = vec![
            Push::Envelope {
                mailbox,
                envelope: envelopes[0].clone(),
            },
            Push::SeatTaken {
                mailbox,
                status: status(3, true),
            },
            Push::Envelope {
                mailbox,
                envelope: envelopes[1].clone(),
            },
        ];
        let session = TalkSession::new(leases.take().await.unwrap(), b);
        let relay = FakeRelay::new(false);
        let mut updates = Vec::new();
        let mut f = follower(talk_id);
        let session = f
            .on_pushes(session, &relay, batch, &mut |u| {
                updates.push(u);
                true
            })
            .await
            .unwrap()
            .expect("still open");
        // One ack per run of envelopes, in order.
        let acks: Vec<_> = relay
            .requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::Ack { upto, .. } => Some(upto),
                _ => None,
            })
            .collect();
        assert_eq!(acks, [envelopes[0].seq, envelopes[1].seq]);
        assert!(matches!(&updates[..], [Update::Status(_)]));
        assert!(
            !f.deliver(&session, &mut |_| true).unwrap(),
            "not until Open"
        );
        let texts: Vec<_> = session
            .store()
            .history(&talk_id, 0)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.event {
                Event::Message { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["one", "two"]);
    }
}

//! One talk, held for one operation.
//!
//! A [`TalkSession`] leases the home's store, loads the talk's state once, and is the
//! only way that state changes reach the disk and the relay: [`TalkSession::commit`]
//! makes the new state and its history durable (fdatasync), then sends what the
//! change calls for, then acknowledges what it consumed. The order is the point: a
//! crash after the relay stored a message must never make the next one reuse a chain
//! key, and the relay must never delete an envelope this device has not stored. It
//! is the client's twin of the relay's one path that makes an operation durable
//! before answering it.
//!
//! Another process may change the talk between two sessions (a `nook send` beside a
//! `read --follow`), so a session never outlives its lease: the next operation loads
//! the state again.

use std::future::Future;

use nook_crypto::auth::{AuthOp, PortableReceipt, sign_relay_auth};
use nook_crypto::{RelayAddr, TalkIdentity};
use nook_proto::{
    Auth, Envelope, EnvelopeKind, ErrorCode, ErrorDetail, MailboxId, Put, Request, Response, Seq,
    TalkPhase, TalkStatus,
};

use crate::dial::Dialer;
use crate::error::ClientError;
use crate::lease::StoreLease;
use crate::member::{Event, Handled, TalkState};
use crate::store::{HistoryEntry, Store, StoreError, TalkId};
use crate::transport::{RelayConnection, RequestError};

/// Where a session's requests go: the relay connection, or a stand-in in tests.
pub(crate) trait Relay {
    fn request(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// The rotation statements followed from the pinned key to the relay's key now.
    fn rotations(&self) -> Vec<nook_proto::RotationStatement> {
        Vec::new()
    }
}

impl Relay for RelayConnection {
    fn request(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        RelayConnection::request(self, request)
    }

    fn rotations(&self) -> Vec<nook_proto::RotationStatement> {
        self.followed().to_vec()
    }
}

/// Where and as whom to connect for one talk.
pub(crate) struct Target {
    addr: RelayAddr,
    identity: TalkIdentity,
    mailbox: MailboxId,
    /// This member's seat and alias, to say "you left" after another process deleted
    /// the talk.
    seat: u8,
    alias: String,
    /// The talk's forwarding relay, if it is routed.
    via: Option<RelayAddr>,
}

impl Target {
    pub(crate) fn addr(&self) -> &RelayAddr {
        &self.addr
    }

    pub(crate) fn mailbox(&self) -> MailboxId {
        self.mailbox
    }

    pub(crate) fn seat(&self) -> u8 {
        self.seat
    }

    pub(crate) fn alias(&self) -> &str {
        &self.alias
    }
}

/// Connects to the talk's relay and authenticates with the talk's relay-auth key.
/// A talk the relay no longer knows, or no longer counts us in, is
/// [`ClientError::TalkGone`]; [`TalkSession::settle`] then deletes it.
pub(crate) async fn authenticate(dialer: &Dialer, target: &Target) -> Result<Authed, ClientError> {
    let conn = dialer
        .connect_route(&target.addr, target.via.as_ref())
        .await?;
    let signature = sign_relay_auth(
        &target.identity,
        AuthOp::Auth,
        &conn.hello().challenge,
        &target.mailbox,
        &[],
    );
    let answer = conn
        .request(Request::Auth(Auth {
            mailbox: target.mailbox,
            member: target.identity.member_key(),
            signature,
        }))
        .await;
    match answer {
        Ok(Response::Authed { status, .. }) => Ok(Authed { conn, status }),
        Ok(_) => Err(ClientError::Protocol),
        // Closed while we were away; the relay kept the receipt for us.
        Err(RequestError::Refused {
            code: ErrorCode::MailboxClosed,
            detail: ErrorDetail::Closed(receipt),
            ..
        }) => {
            let portable =
                PortableReceipt::new(target.addr.clone(), conn.hello().relay_key, &receipt)
                    .with_rotations(conn.followed().to_vec());
            let valid = portable.mailbox == target.mailbox && portable.verify().is_ok();
            Err(ClientError::Closed {
                receipt: valid.then(|| Box::new(portable)),
            })
        }
        Err(e) => match ClientError::from(e) {
            // Closed, expired, or we are no longer a member.
            ClientError::Refused {
                code: ErrorCode::NotAllowed,
                ..
            } => Err(ClientError::TalkGone),
            e => Err(e),
        },
    }
}

/// A connection authenticated for one talk, and the talk's status at that moment.
pub(crate) struct Authed {
    pub(crate) conn: RelayConnection,
    pub(crate) status: TalkStatus,
}

/// One talk's state, loaded once under a store lease.
pub(crate) struct TalkSession {
    lease: StoreLease,
    state: TalkState,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl TalkSession {
    /// A session for a state this operation made (create, join).
    pub(crate) fn new(lease: StoreLease, state: TalkState) -> TalkSession {
        TalkSession { lease, state }
    }

    /// The talk `talk_id`; one the store no longer holds has ended meanwhile.
    pub(crate) fn load(lease: StoreLease, talk_id: &TalkId) -> Result<TalkSession, ClientError> {
        let state = lease.load(talk_id)?.ok_or(ClientError::TalkGone)?;
        Ok(TalkSession { lease, state })
    }

    /// The talk whose id starts with `prefix`.
    pub(crate) fn find(lease: StoreLease, prefix: &str) -> Result<TalkSession, ClientError> {
        let state = lease.find(prefix)?;
        Ok(TalkSession { lease, state })
    }

    pub(crate) fn state(&self) -> &TalkState {
        &self.state
    }

    pub(crate) fn state_mut(&mut self) -> &mut TalkState {
        &mut self.state
    }

    pub(crate) fn talk_id(&self) -> TalkId {
        self.state.talk_id
    }

    /// Makes `via` the talk's forwarding relay (a new or joined talk), saved with the
    /// talk's next commit.
    pub(crate) fn keep_route(&self, via: Option<&RelayAddr>) -> Result<(), ClientError> {
        if let Some(via) = via {
            self.lease
                .set_via(&self.state.talk_id, Some(&via.to_string()))?;
        }
        Ok(())
    }

    pub(crate) fn store(&self) -> &Store {
        &self.lease
    }

    fn mailbox(&self) -> MailboxId {
        self.state.mailbox
    }

    /// Makes the state and `change.events` durable, then puts `change.outgoing` in
    /// order; with `ack`, then acknowledges everything up to the state's cursor.
    /// Returns the history entries the events became.
    pub(crate) async fn commit(
        &mut self,
        relay: &impl Relay,
        change: Handled,
        ack: bool,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut change = change;
        crate::cards::apply(&self.lease, &self.state, &mut change)?;
        self.lease.save(&self.state)?;
        self.lease.keep_files(&self.state.talk_id, change.files)?;
        let entries = self
            .lease
            .append(&self.state.talk_id, change.events, now_ms())?;
        self.lease.flush()?;
        match self.send_and_ack(relay, change.outgoing, ack).await {
            // The talk ended between what we processed and our answer to it (a close
            // racing our ack): what we stored stands, and the end itself arrives as a
            // push or as the answer to the next request, which report it fully.
            Ok(()) | Err(ClientError::TalkGone) => Ok(entries),
            Err(e) => Err(e),
        }
    }

    async fn send_and_ack(
        &self,
        relay: &impl Relay,
        outgoing: Vec<(EnvelopeKind, Vec<u8>)>,
        ack: bool,
    ) -> Result<(), ClientError> {
        for (kind, body) in outgoing {
            put(relay, self.mailbox(), kind, body).await?;
        }
        if ack {
            let upto = Seq(self.state.cursor);
            match relay
                .request(Request::Ack {
                    mailbox: self.mailbox(),
                    upto,
                })
                .await?
            {
                Response::Acked => {}
                _ => return Err(ClientError::Protocol),
            }
        }
        Ok(())
    }

    /// Makes a change that sends nothing durable: the state and `events`.
    pub(crate) fn save(&mut self, events: Vec<Event>) -> Result<(), ClientError> {
        self.lease.save(&self.state)?;
        self.lease.append(&self.state.talk_id, events, now_ms())?;
        self.lease.flush()?;
        Ok(())
    }

    /// Records events that need no fdatasync of their own: the next durable write, or
    /// sled's flush when the store closes, carries them.
    pub(crate) fn note(&self, events: Vec<Event>) -> Result<(), ClientError> {
        self.lease
            .append(&self.state.talk_id, events, now_ms())
            .map(drop)
            .map_err(ClientError::from)
    }

    /// What connecting for this talk needs, so the lease can be let go meanwhile.
    pub(crate) fn target(&self) -> Result<Target, ClientError> {
        let addr = self
            .state
            .relay_addr()
            .ok_or_else(|| StoreError::Corrupt("the talk's relay address".into()))?;
        let via = match self.lease.via(&self.state.talk_id)? {
            Some(text) => Some(
                text.parse()
                    .map_err(|_| StoreError::Corrupt("the talk's forwarding relay".into()))?,
            ),
            None => None,
        };
        Ok(Target {
            via,
            addr,
            identity: self.state.identity(),
            mailbox: self.mailbox(),
            seat: self.state.seat,
            alias: self.state.alias.clone(),
        })
    }

    /// Takes in the outcome of [`authenticate`] (run without the lease): records the
    /// status, or deletes a talk the relay no longer counts us in.
    pub(crate) async fn settle(
        &mut self,
        answer: Result<Authed, ClientError>,
    ) -> Result<Authed, ClientError> {
        match answer {
            Ok(authed) => {
                self.note_relay(&authed.conn)?;
                self.apply_status(&authed.conn, authed.status).await?;
                if self.has_left(&authed.status) {
                    // Left from another process: the relay no longer counts this seat.
                    self.lease.delete(&self.state.talk_id)?;
                    return Err(ClientError::TalkGone);
                }
                Ok(authed)
            }
            Err(e @ (ClientError::TalkGone | ClientError::Closed { .. })) => {
                self.lease.delete(&self.state.talk_id)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Records what the relay's greeting says of the relay itself: a key rotation
    /// followed for the first time (the new key is remembered for the talk) and a
    /// retirement not noted before; each becomes one history entry.
    pub(crate) fn note_relay(&mut self, conn: &RelayConnection) -> Result<(), ClientError> {
        let hello = conn.hello();
        let mut events = Vec::new();
        if !conn.followed().is_empty() && self.state.relay_key != Some(hello.relay_key.0) {
            self.state.relay_key = Some(hello.relay_key.0);
            self.lease.save(&self.state)?;
            events.push(Event::RelayRotated {
                fingerprint: nook_crypto::Fingerprint::of_key(&hello.relay_key.0).to_text(),
                rotations: u32::try_from(conn.followed().len()).unwrap_or(u32::MAX),
            });
        }
        if let Some(at) = hello.retiring_at {
            events.extend(self.note_retiring(at)?);
        }
        if events.is_empty() {
            return Ok(());
        }
        self.note(events)
    }

    /// The entry for a retirement at `at`, unless this talk noted that one already.
    pub(crate) fn note_retiring(&self, at: u64) -> Result<Option<Event>, ClientError> {
        if self.lease.retiring_at(&self.state.talk_id)? == Some(at) {
            return Ok(None);
        }
        self.lease.set_retiring_at(&self.state.talk_id, at)?;
        Ok(Some(Event::RelayRetiring { at }))
    }

    /// True when `status` says this member's own seat has left (another process of
    /// this member ran `leave`).
    pub(crate) fn has_left(&self, status: &TalkStatus) -> bool {
        status.left & self.own_seat_bit() != 0
    }

    fn own_seat_bit(&self) -> u64 {
        1u64.checked_shl(u32::from(self.state.seat)).unwrap_or(0)
    }

    /// Records a status from the relay and sends the sender keys it calls for (when a
    /// seat was reported left).
    pub(crate) async fn apply_status(
        &mut self,
        relay: &impl Relay,
        status: TalkStatus,
    ) -> Result<(), ClientError> {
        if self.state.status == Some(status) {
            return Ok(());
        }
        let change = self.state.on_status(status);
        self.commit(relay, change, false).await.map(drop)
    }

    /// Fetches everything after the cursor, processes it, acknowledges it.
    pub(crate) async fn sync(
        &mut self,
        relay: &impl Relay,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        self.sync_with(relay, 0).await
    }

    /// [`TalkSession::sync`] for a live follower, which holds messages back for causal
    /// order up to `patience_ms` (a one-shot command passes 0: it holds nothing).
    pub(crate) async fn sync_with(
        &mut self,
        relay: &impl Relay,
        patience_ms: u64,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut all = Vec::new();
        // Bounded: each round moves the cursor forward by up to a fetch's worth.
        for _ in 0..100_000 {
            let answer = relay
                .request(Request::Fetch {
                    mailbox: self.mailbox(),
                    after: Seq(self.state.cursor),
                    limit: nook_proto::limits::MAX_FETCH_ENVELOPES,
                })
                .await?;
            let Response::Envelopes { items, more } = answer else {
                return Err(ClientError::Protocol);
            };
            // The rounds of one sync are one batch: only the last ends it.
            let end = (!more).then_some(patience_ms);
            all.extend(self.process_batch(relay, items, end).await?);
            if !more {
                break;
            }
        }
        Ok(all)
    }

    /// Stores what `envelopes` mean (durably), then sends whatever handshake answers
    /// they called for and acknowledges them.
    /// One batch: what waited `patience_ms` for messages that did not come is shown at
    /// its end (protocol-spec §13.3).
    pub(crate) async fn process(
        &mut self,
        relay: &impl Relay,
        envelopes: Vec<Envelope>,
        patience_ms: u64,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        self.process_batch(relay, envelopes, Some(patience_ms))
            .await
    }

    /// Shows the messages that have waited `patience_ms` (a live follower's timer,
    /// set from [`TalkState::waiting_until`]).
    pub(crate) async fn release_due(
        &mut self,
        relay: &impl Relay,
        patience_ms: u64,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        self.process_batch(relay, Vec::new(), Some(patience_ms))
            .await
    }

    /// Handles `envelopes`; with `end`, ends the batch with that patience.
    async fn process_batch(
        &mut self,
        relay: &impl Relay,
        envelopes: Vec<Envelope>,
        end: Option<u64>,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut change = Handled::default();
        for env in &envelopes {
            let h = self.state.handle_envelope(env);
            change.events.extend(h.events);
            change.outgoing.extend(h.outgoing);
            change.files.extend(h.files);
            change.cards.extend(h.cards);
        }
        if let Some(patience_ms) = end {
            let released = self.state.end_of_batch(now_ms(), patience_ms);
            change.events.extend(released.events);
        }
        if envelopes.is_empty() && change.events.is_empty() {
            return Ok(Vec::new());
        }
        let ack = !envelopes.is_empty();
        self.commit(relay, change, ack).await
    }

    /// Seals and sends a text message; returns the seq the relay stored it under and
    /// the message's id.
    pub(crate) async fn send_text(
        &mut self,
        relay: &impl Relay,
        status: TalkStatus,
        text: &str,
    ) -> Result<(Seq, [u8; 8]), ClientError> {
        if status.state == TalkPhase::Pending {
            return Err(ClientError::not_open(&status));
        }
        let now = now_ms();
        let (body, event) = self.state.seal_text(text, now)?;
        let id = match &event {
            Event::Message { id: Some(id), .. } => *id,
            _ => return Err(ClientError::Protocol),
        };
        // A market's owner writes to all: the offerers too, each on its own chain.
        let fanout = Handled {
            outgoing: self.state.seal_to_offerers(text, now)?,
            ..Handled::default()
        };
        // The chain moves (durably) before the put, inside commit.
        self.commit(relay, fanout, false).await?;
        let seq = put(relay, self.mailbox(), EnvelopeKind::Chat, body).await?;
        // Our own line is not worth a second fdatasync.
        self.note(vec![event])?;
        Ok((seq, id))
    }

    /// A market's owner writes to the offerer of `seat` alone (spec §20.2); saved
    /// before sent, as every message.
    pub(crate) async fn send_text_to(
        &mut self,
        relay: &impl Relay,
        status: TalkStatus,
        seat: u8,
        text: &str,
    ) -> Result<(Seq, [u8; 8]), ClientError> {
        if status.state == TalkPhase::Pending {
            return Err(ClientError::not_open(&status));
        }
        let (body, event) = self.state.seal_text_to(seat, text, now_ms())?;
        let Event::MessageTo { id, .. } = event else {
            return Err(ClientError::Protocol);
        };
        self.commit(relay, Handled::default(), false).await?;
        let seq = put(relay, self.mailbox(), EnvelopeKind::Chat, body).await?;
        self.note(vec![event])?;
        Ok((seq, id))
    }

    /// Tells the others this member leaves (so they rotate their chains), durably
    /// first like every message.
    pub(crate) async fn send_leaving(&mut self, relay: &impl Relay) -> Result<(), ClientError> {
        let notice = self.state.seal_leaving(now_ms())?;
        let change = Handled {
            events: Vec::new(),
            outgoing: vec![(EnvelopeKind::Chat, notice)],
            ..Handled::default()
        };
        self.commit(relay, change, false).await.map(drop)
    }

    /// Deletes everything this device holds for the talk.
    pub(crate) fn delete(self) -> Result<(), ClientError> {
        self.lease.delete(&self.state.talk_id)?;
        Ok(())
    }

    /// Deletes the talk after it ended, and gives the entry that says so.
    pub(crate) fn end(self, event: Event) -> Result<HistoryEntry, ClientError> {
        self.delete()?;
        Ok(ended(event))
    }
}

/// What one text of a group send came to: where the relay stored it and its id, or
/// why it was not sent.
pub(crate) type SentText = Result<(Seq, [u8; 8]), ClientError>;

/// A text sealed for a group send: its envelope body, the event to record once it is
/// stored, and its message id.
type Sealed = (Vec<u8>, Event, [u8; 8]);

impl TalkSession {
    /// [`TalkSession::send_text`] for many texts at once (group commit): every text is
    /// sealed in order, the moved chain is made durable with one fdatasync, then the
    /// puts go out pipelined in the same order on the one connection, so the relay
    /// stores them in that order. One result per text, in order; a text that cannot be
    /// sealed (too long) fails alone. The rule is send_text's: saved before sent.
    pub(crate) async fn send_texts(
        &mut self,
        relay: &impl Relay,
        status: TalkStatus,
        texts: &[String],
    ) -> Result<Vec<SentText>, ClientError> {
        if status.state == TalkPhase::Pending {
            return Err(ClientError::not_open(&status));
        }
        let now = now_ms();
        let seal = |state: &mut TalkState, text: &str| match state.seal_text(text, now) {
            Ok((body, event @ Event::Message { id: Some(id), .. })) => Ok((body, event, id)),
            Ok(_) => Err(ClientError::Protocol),
            Err(e) => Err(ClientError::from(e)),
        };
        // A text that cannot be sealed (too long) has moved the chain all the same; a
        // one-shot send drops that state, and so does a batch: back to this copy, and
        // the texts before it sealed again, so no key is spent on nothing (the others
        // would count it as a missed message).
        let before = zeroize::Zeroizing::new(
            nook_proto::codec::encode_value(&self.state).map_err(|_| ClientError::Protocol)?,
        );
        let mut sealed: Vec<Result<Sealed, ClientError>> = Vec::with_capacity(texts.len());
        for text in texts {
            let s = seal(&mut self.state, text);
            if let Err(e) = s {
                self.state = nook_proto::codec::decode_body(&before)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                for (slot, earlier) in sealed.iter_mut().zip(texts) {
                    if slot.is_ok() {
                        *slot = seal(&mut self.state, earlier);
                    }
                }
                sealed.push(Err(e));
                continue;
            }
            sealed.push(s);
        }
        // A market's owner writes to all: the offerers too, each on its own chain.
        let mut fanout = Handled::default();
        for (text, s) in texts.iter().zip(&sealed) {
            if s.is_ok() {
                fanout
                    .outgoing
                    .extend(self.state.seal_to_offerers(text, now)?);
            }
        }
        self.commit(relay, fanout, false).await?;
        let mailbox = self.mailbox();
        // Polled in order, each request takes its frame id and its place on the
        // stream before the next: the relay sees them in this order.
        let mut puts = futures::stream::FuturesOrdered::new();
        let mut results = Vec::with_capacity(sealed.len());
        let mut events = Vec::new();
        for s in sealed {
            match s {
                Ok((body, event, id)) => {
                    puts.push_back(put(relay, mailbox, EnvelopeKind::Chat, body));
                    results.push(Ok((Seq(0), id)));
                    events.push(Some(event));
                }
                Err(e) => {
                    results.push(Err(e));
                    events.push(None);
                }
            }
        }
        let stored: Vec<Result<Seq, ClientError>> = futures::StreamExt::collect(puts).await;
        let mut stored = stored.into_iter();
        let mut own = Vec::new();
        for (result, event) in results.iter_mut().zip(events) {
            let Some(event) = event else { continue };
            match (stored.next(), result.as_mut()) {
                (Some(Ok(seq)), Ok((at, _))) => {
                    *at = seq;
                    own.push(event);
                }
                (Some(Err(e)), _) => *result = Err(e),
                _ => *result = Err(ClientError::Protocol),
            }
        }
        // Our own lines are not worth a second fdatasync, as in send_text.
        self.note(own)?;
        Ok(results)
    }
}

/// The entry that tells a reader a talk ended, once it is deleted (so it has no place
/// in the stored history).
pub(crate) fn ended(event: Event) -> HistoryEntry {
    HistoryEntry {
        index: u64::MAX,
        at_ms: now_ms(),
        event,
    }
}

/// Puts one envelope; returns once the relay stored it durably.
pub(crate) async fn put(
    relay: &impl Relay,
    mailbox: MailboxId,
    kind: EnvelopeKind,
    body: Vec<u8>,
) -> Result<Seq, ClientError> {
    match relay
        .request(Request::Put(Put {
            mailbox,
            kind,
            body,
        }))
        .await?
    {
        Response::Stored { seq } => Ok(seq),
        _ => Err(ClientError::Protocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakeRelay, home, three};

    #[tokio::test]
    async fn a_send_whose_answer_is_lost_has_already_moved_the_chain_on_disk() {
        let (_dir, leases) = home();
        let (_, a, _, _) = three();
        let talk_id = a.talk_id;
        let before = a.sending_index();
        let status = crate::testkit::status(3, true);
        let mut session = TalkSession::new(leases.take().await.unwrap(), a);
        let relay = FakeRelay::new(true);
        let err = session
            .send_text(&relay, status, "hello")
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(matches!(relay.requests()[..], [Request::Put(_)]));
        drop(session);
        leases.close_idle();
        // Whatever the relay did with the put, the next message uses a new key.
        let stored = leases
            .take()
            .await
            .unwrap()
            .load(&talk_id)
            .unwrap()
            .unwrap();
        assert_eq!(stored.sending_index(), before + 1);
    }

    #[tokio::test]
    async fn envelopes_are_stored_before_they_are_acknowledged() {
        let (_dir, leases) = home();
        let (mut net, mut a, b, _) = three();
        let talk_id = b.talk_id;
        let (body, _) = a.seal_text("for b", 7).unwrap();
        net.put(a.seat, EnvelopeKind::Chat, body);
        let (_, envelope) = net.log.last().cloned().unwrap();
        let mut session = TalkSession::new(leases.take().await.unwrap(), b);
        let relay = FakeRelay::new(false);
        let entries = session
            .process(&relay, vec![envelope.clone()], 0)
            .await
            .unwrap();
        assert!(
            matches!(&entries[..], [HistoryEntry { event: Event::Message { text, .. }, .. }] if text == "for b")
        );
        // Exactly one ack, up to the envelope just handled, and only after it was saved.
        match &relay.requests()[..] {
            [Request::Ack { upto, .. }] => assert_eq!(*upto, envelope.seq),
            other => panic!("expected one ack, got {other:?}"),
        }
        drop(session);
        leases.close_idle();
        let store = leases.take().await.unwrap();
        assert_eq!(
            store.load(&talk_id).unwrap().unwrap().cursor,
            envelope.seq.0
        );
        assert_eq!(store.history(&talk_id, 0).unwrap().len(), entries.len());
    }

    #[tokio::test]
    async fn a_change_whose_put_fails_is_durable_and_unacknowledged() {
        let (_dir, leases) = home();
        let (_, _, b, _) = three();
        let talk_id = b.talk_id;
        let mut session = TalkSession::new(leases.take().await.unwrap(), b);
        let change = Handled {
            events: vec![Event::Opened],
            outgoing: vec![(EnvelopeKind::Handshake, vec![1, 2, 3])],
            ..Handled::default()
        };
        let relay = FakeRelay::new(true);
        assert!(session.commit(&relay, change, true).await.is_err());
        assert!(
            !relay
                .requests()
                .iter()
                .any(|r| matches!(r, Request::Ack { .. })),
            "nothing may be acknowledged after a failed put"
        );
        drop(session);
        leases.close_idle();
        let store = leases.take().await.unwrap();
        let history = store.history(&talk_id, 0).unwrap();
        assert!(matches!(
            history.last().map(|e| &e.event),
            Some(Event::Opened)
        ));
    }
}

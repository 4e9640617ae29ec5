//! The talk API: one method per thing a member does.
//!
//! Each command leases the store and loads its talk in a [`TalkSession`], connects
//! and authenticates when it needs the relay, and lets the session make every change
//! durable before it is sent or acknowledged. The follow loop lives in
//! [`crate::follow`]; turn-taking on the store in [`crate::lease`].

use nook_crypto::auth::{AuthOp, PortableReceipt, params_digest, sign_relay_auth};
use nook_crypto::kdf::sha256;
use nook_crypto::{Invite, RelayAddr, TalkIdentity};
use nook_proto::limits::create_token_text;
use nook_proto::{
    Close, Create, CreateToken, ErrorCode, Join, MailboxId, Request, Response, Seq, TalkPhase,
    TalkStatus,
};

use crate::dial::Dialer;
use crate::error::ClientError;
use crate::follow::{Until, Update};
use crate::lease::Leases;
use crate::member::{Event, Handled, MemberError, TalkOptions, TalkState, valid_alias};
use crate::session::{Authed, TalkSession, authenticate, now_ms};
use crate::store::{HistoryEntry, Home, PendingJoin, Store, StoreError, talk_id_text};

/// What `create` returns.
#[derive(Debug, Clone)]
pub struct CreatedTalk {
    pub talk: String,
    pub invites: Vec<String>,
    pub status: TalkStatus,
    pub alias: String,
    pub relay: String,
}

/// A relay's creation token as its operator wrote it (a file's text or an
/// environment variable), as a client presents it: `SHA-256` of the text without
/// surrounding whitespace (spec §6.3). `None` if no text is left or it is longer than
/// `nook_proto::limits::MAX_CREATE_TOKEN_TEXT`.
pub fn create_token(text: &str) -> Option<CreateToken> {
    let text = create_token_text(text)?;
    Some(CreateToken(sha256(&[text.as_bytes()])))
}

/// What `join` returns.
#[derive(Debug, Clone)]
pub struct JoinedTalk {
    pub talk: String,
    pub seat: u8,
    pub alias: String,
    pub status: TalkStatus,
}

/// What `history` returns.
#[derive(Debug, Clone)]
pub struct History {
    /// The talk's name.
    pub talk: String,
    pub entries: Vec<HistoryEntry>,
    /// The first history index not returned: where a follow goes on, so nothing is
    /// shown twice (also when nothing was new).
    pub next: u64,
}

/// What `send` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The talk's name.
    pub talk: String,
    /// Where the relay stored it (the relay's order; members do not see it).
    pub seq: Seq,
    /// The message's id: the same in every member's `read` (protocol-spec §12.4).
    pub id: [u8; 8],
}

/// One seat of a talk, as this device knows it (`nook members`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub seat: u8,
    pub alias: String,
    /// This device's own seat.
    pub own: bool,
    /// Seat 0: the member who created the talk.
    pub owner: bool,
    /// The member left the talk (its seat is not offered again).
    pub left: bool,
    /// When this device learned of the seat (unix ms): its own join or creation, or the
    /// member's announcement; `None` if that is no longer in the history.
    pub joined_at_ms: Option<u64>,
    /// `owner`, `member`, (a market's) `offerer`, (a panel's) `speaker` or
    /// `listener` (protocol-spec §20).
    pub role: &'static str,
}

/// One line of `nook list`.
#[derive(Debug, Clone)]
pub struct TalkSummary {
    pub talk: String,
    pub relay: String,
    pub alias: String,
    pub seat: u8,
    pub owner: bool,
    pub status: Option<TalkStatus>,
    pub open: bool,
    pub unread: u64,
    pub expires_at: u64,
    pub members: Vec<(u8, String)>,
    /// The owner's unused invites (empty on a member's device).
    pub invites: Vec<String>,
    /// Seats of the talk, the owner's included: the owner handed out `seats - 1`
    /// invites.
    pub seats: u8,
    /// Shown from what this device knew: the relay was not asked, or not reached.
    pub cached: bool,
    /// When the talk's relay retires (it then closes the talk), as last heard.
    pub retiring_at: Option<u64>,
    /// The forwarding relay (`nook://…`) the talk's traffic goes through by default
    /// (`--via`, protocol-spec.md §18); `None`: direct.
    pub via: Option<String>,
    /// This device's role: `owner`, `member` or `offerer` (protocol-spec §20.2).
    pub role: &'static str,
    /// `plain`, `market` or `panel` (protocol-spec §20).
    pub pattern: &'static str,
    /// A market's offer limit; `None` otherwise.
    pub offer_limit: Option<u8>,
    /// A panel's speakers besides its owner; `None` otherwise.
    pub speakers: Option<u8>,
}

/// A nook member's client, rooted at one home folder.
///
/// Clones share one turn on the store (see [`crate::lease`]): the chat screen's
/// follow and send tasks take turns without blocking a thread.
#[derive(Debug, Clone)]
pub struct Client {
    leases: Leases,
    dialer: Dialer,
    /// How long [`Client::follow`] holds a message back for causal order.
    causal_wait: std::time::Duration,
}

impl Client {
    pub fn new(home: &std::path::Path) -> Result<Client, ClientError> {
        Ok(Client {
            leases: Leases::new(Home::new(home)?),
            dialer: Dialer::default(),
            causal_wait: crate::member::CAUSAL_WAIT,
        })
    }

    /// How long [`Client::follow`] holds a message back until the messages its author
    /// had seen arrive (protocol-spec §13.3); [`crate::member::CAUSAL_WAIT`] unless set.
    pub fn set_causal_wait(&mut self, wait: std::time::Duration) {
        self.causal_wait = wait;
    }

    pub fn home(&self) -> &Home {
        self.leases.home()
    }

    /// Closes the store now if no operation is using it, so another process (or a
    /// direct `Home::open`) can take the home at once.
    pub fn close_store(&self) {
        self.leases.close_idle();
    }

    /// The turn-taking on this client's store (for [`crate::sender`]).
    pub(crate) fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Who is connecting where right now (for a "connecting…" line).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Routes this client's connections through the forwarding relay `via`
    /// (protocol-spec.md §18). A talk created or joined meanwhile keeps it as its
    /// default; other talks use it for this client's commands only.
    pub fn set_via(&mut self, via: Option<RelayAddr>) {
        self.dialer.set_via(via);
    }

    /// Gives up on a relay that has not answered a handshake after `limit`.
    pub fn set_connect_timeout(&mut self, limit: std::time::Duration) {
        self.dialer.set_limit(limit);
    }

    pub(crate) async fn session(&self, talk: &str) -> Result<TalkSession, ClientError> {
        TalkSession::find(self.leases.take().await?, talk)
    }

    /// The talk `talk`, connected and authenticated. The store is not held while
    /// the relay is dialled, so a slow or dead relay never blocks another command
    /// on this home; the state is loaded afresh once the answer is in.
    pub(crate) async fn connected(&self, talk: &str) -> Result<(TalkSession, Authed), ClientError> {
        let (talk_id, target) = {
            let session = self.session(talk).await?;
            (session.talk_id(), session.target()?)
        };
        let answer = authenticate(&self.dialer, &target).await;
        let mut session = TalkSession::load(self.leases.take().await?, &talk_id)?;
        let authed = session.settle(answer).await?;
        Ok((session, authed))
    }

    /// Creates a talk on `relay` and returns its invites.
    pub async fn create(&self, relay: &str, opts: TalkOptions) -> Result<CreatedTalk, ClientError> {
        self.create_with_token(relay, opts, None).await
    }

    /// [`Client::create`], presenting the relay's creation token when one is given
    /// (a relay whose operator asks for none ignores it). Made with [`create_token`].
    pub async fn create_with_token(
        &self,
        relay: &str,
        opts: TalkOptions,
        token: Option<&CreateToken>,
    ) -> Result<CreatedTalk, ClientError> {
        let addr: RelayAddr = relay.parse().map_err(ClientError::Address)?;
        let mut new = TalkState::create(&addr, &opts, now_ms() / 1000)?;
        let conn = self.dialer.connect(&addr).await?;
        let identity = new.state.identity();
        let digest = params_digest(&new.params).map_err(|_| ClientError::Protocol)?;
        let signature = sign_relay_auth(
            &identity,
            AuthOp::Create,
            &conn.hello().challenge,
            &MailboxId([0; 16]),
            &digest,
        );
        let create = Create {
            params: new.params.clone(),
            owner: identity.member_key(),
            signature,
        };
        let request = match token {
            Some(token) => Request::CreateWithToken {
                create,
                token: token.clone(),
            },
            None => Request::Create(create),
        };
        let response = conn.request(request).await?;
        let Response::Created { mailbox, status } = response else {
            return Err(ClientError::Protocol);
        };
        new.state.relay_key = Some(conn.hello().relay_key.0);
        let invites = new.state.created(&addr, mailbox, status, &new.seats);
        let talk = new.state.name();
        let mut session = TalkSession::new(self.leases.take().await?, new.state);
        session.keep_route(self.dialer.via())?;
        session.commit(&conn, arrival(status), false).await?;
        drop(session);
        conn.close().await;
        Ok(CreatedTalk {
            talk,
            invites,
            status,
            alias: opts.alias,
            relay: addr.to_string(),
        })
    }

    /// Takes a seat with an invite.
    pub async fn join(&self, invite: &str, alias: Option<&str>) -> Result<JoinedTalk, ClientError> {
        let invite: Invite = invite.parse().map_err(ClientError::Invite)?;
        if let Some(a) = alias
            && !valid_alias(a)
        {
            return Err(MemberError::BadAlias.into());
        }
        // The identity is stored before the relay sees it: if the answer to `Join` is
        // lost, running the same join again presents the same key, which the relay
        // recognises and answers again.
        let token_hash = invite.seat_secret.token_hash().0;
        let (identity, alias) = {
            let store = self.leases.take().await?;
            match store.pending_join(&token_hash)? {
                Some(p) => (TalkIdentity::from_bytes(&p.identity), p.alias.clone()),
                None => {
                    let alias = match alias {
                        Some(a) => a.to_string(),
                        None => fresh_alias_in(&store)?,
                    };
                    let identity = TalkIdentity::generate(&mut rand::rng());
                    store.save_pending_join(
                        &token_hash,
                        &PendingJoin {
                            identity: *identity.to_bytes(),
                            alias: alias.clone(),
                        },
                    )?;
                    store.flush()?;
                    (identity, alias)
                }
            }
        };
        let conn = self.dialer.connect(&invite.relay).await?;
        let token = invite.seat_secret.join_token();
        let signature = sign_relay_auth(
            &identity,
            AuthOp::Join,
            &conn.hello().challenge,
            &invite.mailbox,
            token.as_ref(),
        );
        let answer = conn
            .request(Request::Join(Join {
                mailbox: invite.mailbox,
                token: *token,
                member: identity.member_key(),
                signature,
            }))
            .await
            .map_err(ClientError::from);
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                if !e.is_transient() {
                    // Refused for good: there is nothing to retry.
                    let store = self.leases.take().await?;
                    store.remove_pending_join(&token_hash)?;
                    store.flush()?;
                }
                return Err(e);
            }
        };
        let Response::Joined {
            seat,
            welcome,
            status,
        } = response
        else {
            return Err(ClientError::Protocol);
        };
        let (mut state, outgoing) =
            TalkState::joined(&invite, identity, &alias, seat, &welcome, status)?;
        state.relay_key = Some(conn.hello().relay_key.0);
        let talk = state.name();
        let mut session = TalkSession::new(self.leases.take().await?, state);
        session.store().remove_pending_join(&token_hash)?;
        session.keep_route(self.dialer.via())?;
        let mut change = arrival(status);
        change.outgoing.extend(outgoing);
        session.commit(&conn, change, false).await?;
        drop(session);
        conn.close().await;
        Ok(JoinedTalk {
            talk,
            seat,
            alias,
            status,
        })
    }

    /// A random alias this person uses in no other talk, so aliases never link talks.
    pub async fn fresh_alias(&self) -> Result<String, ClientError> {
        fresh_alias_in(&*self.leases.take().await?)
    }

    /// Every talk this home holds. With `refresh`, each talk's relay is asked first
    /// (its status, and what waits there: announcements that use up invites, a close
    /// or expiry that ends the talk); a talk whose relay cannot be reached is shown
    /// from what this device knew, with `cached` set. Talks that ended are gone from
    /// the list.
    pub async fn list(&self, refresh: bool) -> Result<Vec<TalkSummary>, ClientError> {
        let talks: Vec<String> = {
            let store = self.leases.take().await?;
            store
                .talks()?
                .iter()
                .map(|t| talk_id_text(&t.talk_id))
                .collect()
        };
        let mut unreachable: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for talk in talks {
            let relay = self.session(&talk).await?.state().relay.clone();
            let mut cached = !refresh;
            if refresh {
                // One dead relay costs one timeout, not one per talk on it.
                if unreachable.contains(&relay) {
                    cached = true;
                } else {
                    match self.fetch(&talk).await {
                        Ok(_) => {}
                        Err(ClientError::TalkGone | ClientError::Closed { .. }) => continue,
                        Err(e) if e.is_transient() || matches!(e, ClientError::Connect(_)) => {
                            unreachable.push(relay);
                            cached = true;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            let mut summary = self.info(&talk).await?;
            summary.cached = cached;
            out.push(summary);
        }
        Ok(out)
    }

    /// One talk's summary (local knowledge).
    pub async fn info(&self, talk: &str) -> Result<TalkSummary, ClientError> {
        let session = self.session(talk).await?;
        let unread = session.store().unread(&session.talk_id())?;
        let mut summary = summary(session.state(), unread);
        summary.retiring_at = session.store().retiring_at(&session.talk_id())?;
        // Invites given to admitted seekers are theirs now, not the owner's to pass on.
        let given = crate::board::given_seats(session.store(), &session.talk_id())?;
        summary.invites = session
            .state()
            .invites
            .iter()
            .filter(|(seat, _)| !given.contains(seat))
            .map(|(_, invite)| invite.clone())
            .collect();
        // The route this client's commands take: its own --via, else the talk's.
        summary.via = match self.dialer.via() {
            Some(via) => Some(via.to_string()),
            None => session.store().via(&session.talk_id())?,
        };
        Ok(summary)
    }

    /// Sends a text message; returns once the relay stored it durably.
    ///
    /// One store lease covers the whole operation: opening the store is the costliest
    /// local step, and holding it keeps another `nook` process from interleaving with
    /// this send.
    pub async fn send(&self, talk: &str, text: &str) -> Result<Sent, ClientError> {
        let (mut session, authed) = self.connected(talk).await?;
        // Introductions and key changes that wait go out before the message.
        session.sync(&authed.conn).await?;
        let (seq, id) = session.send_text(&authed.conn, authed.status, text).await?;
        let talk = session.state().name();
        drop(session);
        authed.conn.close().await;
        Ok(Sent { talk, seq, id })
    }

    /// The owner of a market writes to the offerer called `alias` alone (protocol-spec
    /// §20.2); returns once the relay stored it.
    pub async fn send_to(&self, talk: &str, alias: &str, text: &str) -> Result<Sent, ClientError> {
        let (mut session, authed) = self.connected(talk).await?;
        session.sync(&authed.conn).await?;
        let seat = offerer_seat(session.state(), alias)?;
        let (seq, id) = session
            .send_text_to(&authed.conn, authed.status, seat, text)
            .await?;
        let talk = session.state().name();
        drop(session);
        authed.conn.close().await;
        Ok(Sent { talk, seq, id })
    }

    /// The owner of a market takes the offerer called `alias` into the group
    /// (protocol-spec §20.2): it gets the group's key and the owner's chain, then
    /// meets the other members as a newcomer does. Returns the talk and the seat.
    pub async fn promote(&self, talk: &str, alias: &str) -> Result<(String, u8), ClientError> {
        let (mut session, authed) = self.connected(talk).await?;
        session.sync(&authed.conn).await?;
        let change = session.state_mut().promote_offerer(alias)?;
        let seat = match change.events.first() {
            Some(Event::Promoted { seat, .. }) => *seat,
            _ => return Err(ClientError::Protocol),
        };
        session.commit(&authed.conn, change, false).await?;
        let talk = session.state().name();
        drop(session);
        authed.conn.close().await;
        Ok((talk, seat))
    }

    /// The owner of a market removes the offerer called `alias`: its keys are erased
    /// here and nothing it sends is read any more. The relay still counts its seat
    /// (version 1 cannot evict one). Works offline.
    pub async fn remove(&self, talk: &str, alias: &str) -> Result<(String, u8), ClientError> {
        let mut session = self.session(talk).await?;
        let event = session.state_mut().remove_offerer(alias)?;
        let seat = match event {
            Event::OffererRemoved { seat, .. } => seat,
            _ => return Err(ClientError::Protocol),
        };
        session.save(vec![event])?;
        Ok((session.state().name(), seat))
    }

    /// Fetches what waits on the relay, stores it, acknowledges it, answers
    /// handshakes. Returns the new history entries.
    pub async fn fetch(&self, talk: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        let (mut session, authed) = self.connected(talk).await?;
        let entries = session.sync(&authed.conn).await?;
        drop(session);
        authed.conn.close().await;
        Ok(entries)
    }

    /// The talk's history (with `new_only`, only what this call has not returned
    /// before), and where a follow goes on from.
    pub async fn history(&self, talk: &str, new_only: bool) -> Result<History, ClientError> {
        let session = self.session(talk).await?;
        let (store, talk_id) = (session.store(), session.talk_id());
        let from = if new_only { store.shown(&talk_id)? } else { 0 };
        let entries = store.history(&talk_id, from)?;
        let next = entries.last().map_or(from, |last| last.index + 1);
        if next > from {
            store.set_shown(&talk_id, next)?;
            store.flush()?;
        }
        Ok(History {
            talk: session.state().name(),
            entries,
            next,
        })
    }

    /// The talk's seats as this device knows them: its own and every member it has
    /// heard from, in seat order.
    pub async fn members(&self, talk: &str) -> Result<Vec<Member>, ClientError> {
        let session = self.session(talk).await?;
        let state = session.state();
        let history = session.store().history(&session.talk_id(), 0)?;
        let first_at = history.first().map(|e| e.at_ms);
        let joined_at = |seat: u8| {
            history.iter().find_map(|e| match &e.event {
                Event::MemberJoined { seat: s, .. } if *s == seat => Some(e.at_ms),
                _ => None,
            })
        };
        let mut out = vec![Member {
            seat: state.seat,
            alias: state.alias.clone(),
            own: true,
            owner: state.seat == 0,
            left: false,
            joined_at_ms: first_at,
            role: state.role().as_str(),
        }];
        for p in &state.roster {
            out.push(Member {
                seat: p.seat,
                alias: p.alias.clone(),
                own: false,
                owner: p.seat == 0,
                left: p.left,
                joined_at_ms: joined_at(p.seat),
                role: state.role_of(p.seat).as_str(),
            });
        }
        out.sort_by_key(|m| m.seat);
        Ok(out)
    }

    /// The first history index not yet recorded: where a follow that wants only what
    /// happens from now on starts. Marks nothing as shown.
    pub async fn history_end(&self, talk: &str) -> Result<u64, ClientError> {
        let session = self.session(talk).await?;
        Ok(session.store().history_end(&session.talk_id())?)
    }

    /// Records that history up to (not including) index `next` was shown, so `list`'s
    /// unread count and `read --new` agree with a screen that showed it live. Never
    /// moves the mark back.
    pub async fn mark_shown(&self, talk: &str, next: u64) -> Result<(), ClientError> {
        let session = self.session(talk).await?;
        let (store, talk_id) = (session.store(), session.talk_id());
        if next > store.shown(&talk_id)? {
            store.set_shown(&talk_id, next)?;
        }
        Ok(())
    }

    /// Stays connected, handing every new history entry and status to `sink`, until
    /// `until` is reached, the talk ends, or `sink` returns false. Reconnects with
    /// backoff when the connection drops. Entries from index `from` on are delivered.
    pub async fn follow(
        &self,
        talk: &str,
        from: u64,
        until: Until,
        sink: impl FnMut(Update) -> bool,
    ) -> Result<(), ClientError> {
        let talk_id = self.session(talk).await?.talk_id();
        crate::follow::follow(
            &self.leases,
            &self.dialer,
            talk_id,
            from,
            until,
            self.causal_wait,
            sink,
        )
        .await
    }

    /// Leaves the talk: tells the others (so they rotate keys), gives up the seat,
    /// deletes everything local.
    pub async fn leave(&self, talk: &str) -> Result<String, ClientError> {
        let (mut session, authed) = self.connected(talk).await?;
        session.sync(&authed.conn).await?;
        if authed.status.state == TalkPhase::Open {
            session.send_leaving(&authed.conn).await?;
        }
        let state = session.state();
        let signature = sign_relay_auth(
            &state.identity(),
            AuthOp::Leave,
            &authed.conn.hello().challenge,
            &state.mailbox,
            &[],
        );
        authed
            .conn
            .request(Request::Leave {
                mailbox: state.mailbox,
                signature,
            })
            .await?;
        let talk = session.state().name();
        session.delete()?;
        authed.conn.close().await;
        Ok(talk)
    }

    /// Closes the talk for everyone; returns the relay's verified deletion receipt,
    /// with the relay's address and key so anyone can check it later, after deleting
    /// everything local.
    pub async fn close(&self, talk: &str) -> Result<(String, PortableReceipt), ClientError> {
        if !self.session(talk).await?.state().may_close() {
            return Err(ClientError::NotAllowed);
        }
        let (session, authed) = self.connected(talk).await?;
        let state = session.state();
        let farewell = state.farewell().map_err(MemberError::from)?;
        let signature = sign_relay_auth(
            &state.identity(),
            AuthOp::Close,
            &authed.conn.hello().challenge,
            &state.mailbox,
            &sha256(&[&farewell]),
        );
        let mailbox = state.mailbox;
        let relay = state
            .relay_addr()
            .ok_or_else(|| StoreError::Corrupt("the talk's relay address".into()))?;
        let answer = authed
            .conn
            .request(Request::Close(Close {
                mailbox,
                farewell,
                signature,
            }))
            .await
            .map_err(|e| match ClientError::from(e) {
                ClientError::Refused {
                    code: ErrorCode::NotAllowed,
                    ..
                } => ClientError::NotAllowed,
                e => e,
            })?;
        let Response::Closed { receipt } = answer else {
            return Err(ClientError::Protocol);
        };
        // The key the connection proved is the one the address pins; `verify` checks
        // that again, so the receipt stands on its own wherever it is shown.
        let receipt = PortableReceipt::new(relay, authed.conn.hello().relay_key, &receipt)
            .with_rotations(authed.conn.followed().to_vec());
        if receipt.mailbox != mailbox || receipt.verify().is_err() {
            return Err(ClientError::BadReceipt);
        }
        let talk = session.state().name();
        session.delete()?;
        authed.conn.close().await;
        Ok((talk, receipt))
    }
}

/// The first history of a talk this device just entered: the seats, and "open" if
/// this seat opened it.
fn arrival(status: TalkStatus) -> Handled {
    let mut events = vec![Event::SeatsTaken {
        members: status.members,
        seats: status.seats,
        quorum: status.quorum,
    }];
    if status.state == TalkPhase::Open {
        events.push(Event::Opened);
    }
    Handled {
        events,
        ..Handled::default()
    }
}

pub(crate) fn fresh_alias_in(store: &Store) -> Result<String, ClientError> {
    let used: Vec<String> = store.talks()?.iter().map(|t| t.alias.clone()).collect();
    let mut alias = crate::alias::random_alias();
    for _ in 0..64 {
        if !used.contains(&alias) {
            break;
        }
        alias = crate::alias::random_alias();
    }
    Ok(alias)
}

fn summary(t: &TalkState, unread: u64) -> TalkSummary {
    TalkSummary {
        talk: t.name(),
        relay: t.relay.clone(),
        alias: t.alias.clone(),
        seat: t.seat,
        owner: t.is_owner(),
        status: t.status,
        open: t.opened,
        unread,
        expires_at: t.expires_at,
        members: std::iter::once((t.seat, t.alias.clone()))
            .chain(t.others().map(|p| (p.seat, p.alias.clone())))
            .collect(),
        invites: t.invites.iter().map(|(_, i)| i.clone()).collect(),
        seats: t.params.seats,
        cached: true,
        retiring_at: None,
        via: None,
        role: t.role().as_str(),
        pattern: t.roles.pattern_name(),
        offer_limit: t.roles.offer_limit(),
        speakers: t.roles.speakers(),
    }
}

/// The seat of the (current, not removed) offerer called `alias` in a market.
fn offerer_seat(state: &TalkState, alias: &str) -> Result<u8, ClientError> {
    state
        .others()
        .find(|p| p.alias == alias && state.role_of(p.seat) == crate::roles::Role::Offerer)
        .map(|p| p.seat)
        .ok_or(ClientError::Member(crate::member::MemberError::NoOfferer))
}

//! A member's side of one talk, as pure state and transitions (no IO, `now` given).
//!
//! [`TalkState`] holds everything a member knows of a talk: its per-talk identity,
//! the talk key, the roster of other members with their receiving chains, its own
//! sending chain, and the relay cursor. [`TalkState::handle_envelope`] turns one
//! envelope from the relay into [`Event`]s for the history and the envelopes to send
//! in answer (introductions and sender keys). The whole value is stored sealed in the
//! local vault and deleted when the talk ends.

use bincode::{Decode, Encode};
use nook_crypto::auth::PortableReceipt;
use nook_crypto::chain::{ChainState, Delivery};
use nook_crypto::message::{
    Announce, Content, Direct, DirectBody, Farewell, Inner, Welcome, WelcomeParams, open_group,
    seal_group,
};
use nook_crypto::seal::{open_pairwise, open_welcome, seal_pairwise, seal_welcome};
use nook_crypto::{
    CryptoError, EnvelopeKey, Invite, Purpose, ReceivingChain, RelayAddr, SeatSecret, SendingChain,
    TalkIdentity,
};
use nook_proto::{
    ClosePolicy, Envelope, EnvelopeKind, MailboxId, Receipt, RelayKey, SeatOffer, TalkParams,
    TalkPhase, TalkStatus,
};
use zeroize::Zeroize;

/// The mailbox id the creator's welcome announcement is signed over: the relay
/// names the mailbox only after the welcomes are sealed.
pub const WELCOME_MAILBOX: MailboxId = MailboxId([0; 16]);

/// Something for the talk's history (and the user's screen).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Event {
    Message {
        seat: u8,
        alias: String,
        sent_at_ms: u64,
        text: String,
        own: bool,
        /// Arrived after a later message from the same sender.
        late: bool,
        /// Messages of this sender that never arrived before this one.
        missed: u32,
        /// The message's id, the same on every member's device (protocol-spec
        /// §12.4); `None` for messages stored by versions that did not record it.
        /// Last, so such older records are told by their length (see the store).
        id: Option<[u8; 8]>,
    },
    MemberJoined {
        seat: u8,
        alias: String,
    },
    MemberLeaving {
        seat: u8,
        alias: String,
    },
    SeatsTaken {
        members: u8,
        seats: u8,
        quorum: u8,
    },
    Opened,
    Closed {
        by: Option<String>,
        verified: bool,
        /// The relay's deletion receipt with the relay's address and key, for the person
        /// to keep and anyone to check later; present only when it verified against the
        /// pinned relay key and names this talk's mailbox. (Boxed: it is large, and
        /// events are passed around by value.)
        receipt: Option<Box<PortableReceipt>>,
    },
    Expired,
    /// Something was wrong with what arrived; it was not shown as a message.
    Warning(String),
    /// The relay moved to a new identity key, proved by statements signed by the key
    /// the talk's address pins (protocol-spec.md §11.12); this device now knows the
    /// talk's relay by the new key. (Appended: older history records keep their
    /// variant numbers.)
    RelayRotated {
        /// The new key's fingerprint, as an address writes it.
        fingerprint: String,
        /// Rotation statements followed from the pinned key.
        rotations: u32,
    },
    /// The relay announced that it retires at `at` (unix seconds): it then closes
    /// every talk with a receipt (protocol-spec.md §6.14).
    RelayRetiring {
        at: u64,
    },
}

/// Another member as this member knows it.
#[derive(Clone, Debug, Encode, Decode)]
pub struct Peer {
    pub seat: u8,
    pub pseudonym: [u8; 32],
    pub agreement: [u8; 32],
    pub relay_auth: [u8; 32],
    pub alias: String,
    chain: Option<ReceivingChain>,
    prev_chain: Option<ReceivingChain>,
    pub left: bool,
}

/// Everything one member holds for one talk.
#[derive(Encode, Decode)]
pub struct TalkState {
    pub talk_id: [u8; 8],
    pub relay: String,
    pub relay_key: Option<[u8; 32]>,
    pub mailbox: MailboxId,
    pub seat: u8,
    identity: [u8; 96],
    talk_key: [u8; 32],
    /// Seed of this member's seat key (zeros for the creator). Secret.
    seat_seed: [u8; 32],
    pub params: WelcomeParams,
    pub alias: String,
    pub commitments: Vec<[u8; 32]>,
    pub roster: Vec<Peer>,
    sending: SendingChain,
    /// Highest relay seq fully processed and stored.
    pub cursor: u64,
    /// Highest seq acknowledged to the relay.
    pub acked: u64,
    pub status: Option<TalkStatus>,
    /// The owner's invites not yet used: (seat, invite text). Secret.
    pub invites: Vec<(u8, String)>,
    pub expires_at: u64,
    pub closed: bool,
    /// Whether the relay said the talk is open.
    pub opened: bool,
}

/// What the creator sends to the relay, and what it hands out.
pub struct NewTalk {
    pub state: TalkState,
    pub params: TalkParams,
    /// One seat secret per free seat, in seat order (seat 1 first).
    pub seats: Vec<SeatSecret>,
}

/// What handling one envelope produced.
#[derive(Debug, Default)]
pub struct Handled {
    pub events: Vec<Event>,
    /// Envelopes to put in answer: (kind, padded sealed body).
    pub outgoing: Vec<(EnvelopeKind, Vec<u8>)>,
}

/// Options of a new talk.
#[derive(Debug, Clone)]
pub struct TalkOptions {
    pub seats: u8,
    pub quorum: u8,
    pub ttl_secs: u32,
    pub close: ClosePolicy,
    pub alias: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(
        "the welcome for this invite could not be opened: the invite is wrong or the relay altered it"
    )]
    BadWelcome,
    #[error("the talk's creator could not be verified from the welcome")]
    BadCreator,
    #[error("alias must be 1 to 64 bytes without control characters")]
    BadAlias,
    #[error("the message is too long for one envelope ({0})")]
    TooLong(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Peer {
    /// A member as its (verified) announcement describes it.
    fn from_announce(b: &nook_crypto::message::AnnounceBody, chain: Option<ChainState>) -> Peer {
        Peer {
            seat: b.seat,
            pseudonym: b.pseudonym,
            agreement: b.agreement,
            relay_auth: b.relay_auth,
            alias: b.alias.clone(),
            chain: chain.map(ReceivingChain::new),
            prev_chain: None,
            left: false,
        }
    }
}

impl Drop for TalkState {
    fn drop(&mut self) {
        self.identity.zeroize();
        self.talk_key.zeroize();
        self.seat_seed.zeroize();
        for (_, inv) in &mut self.invites {
            inv.zeroize();
        }
    }
}

impl std::fmt::Debug for NewTalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTalk").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TalkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalkState")
            .field("seat", &self.seat)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// Checks an alias: 1..=64 bytes, no control characters.
pub fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= nook_crypto::message::MAX_ALIAS
        && !alias.chars().any(char::is_control)
}

impl TalkState {
    /// Prepares a new talk: identity, talk key, seat secrets, commitments, and one
    /// sealed welcome per free seat. The mailbox id is filled in by [`TalkState::created`].
    pub fn create(relay: &RelayAddr, opts: &TalkOptions, now: u64) -> Result<NewTalk, MemberError> {
        if !valid_alias(&opts.alias) {
            return Err(MemberError::BadAlias);
        }
        let mut rng = rand::rng();
        let identity = TalkIdentity::generate(&mut rng);
        let mut talk_key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rng, &mut talk_key);
        let seats: Vec<SeatSecret> = (1..opts.seats)
            .map(|_| SeatSecret::random(&mut rng))
            .collect();
        let commitments: Vec<[u8; 32]> = seats.iter().map(|s| s.commitment()).collect();
        let params = WelcomeParams {
            seats: opts.seats,
            quorum: opts.quorum,
            ttl_secs: opts.ttl_secs,
            close: opts.close,
            created_at: now,
        };
        let creator = Announce::new(&identity, &WELCOME_MAILBOX, 0, None, &opts.alias, None)?;
        let mut offers = Vec::with_capacity(seats.len());
        for (seat, secret) in (1u8..).zip(&seats) {
            let welcome = Welcome {
                talk_key,
                seat,
                params,
                creator: creator.clone(),
                commitments: commitments.clone(),
            };
            offers.push(SeatOffer {
                token_hash: secret.token_hash(),
                welcome: seal_welcome(secret, &welcome.encode()?)?,
            });
        }
        let mut talk_id = [0u8; 8];
        rand::Rng::fill_bytes(&mut rng, &mut talk_id);
        let state = TalkState {
            talk_id,
            relay: relay.to_string(),
            relay_key: None,
            mailbox: MailboxId([0; 16]),
            seat: 0,
            identity: *identity.to_bytes(),
            talk_key,
            seat_seed: [0; 32],
            params,
            alias: opts.alias.clone(),
            commitments,
            roster: Vec::new(),
            sending: SendingChain::new(&mut rng, 0),
            cursor: 0,
            acked: 0,
            status: None,
            invites: Vec::new(),
            expires_at: now + u64::from(opts.ttl_secs),
            closed: false,
            opened: false,
        };
        talk_key.zeroize();
        Ok(NewTalk {
            state,
            params: TalkParams {
                seats: opts.seats,
                quorum: opts.quorum,
                ttl_secs: opts.ttl_secs,
                close: opts.close,
                offers,
            },
            seats,
        })
    }

    /// Records the relay's answer to `Create` and makes the invites.
    pub fn created(
        &mut self,
        relay: &RelayAddr,
        mailbox: MailboxId,
        status: TalkStatus,
        seats: &[SeatSecret],
    ) -> Vec<String> {
        self.mailbox = mailbox;
        self.expires_at = status.expires_at;
        self.opened = status.state == TalkPhase::Open;
        self.status = Some(status);
        self.invites = (1u8..)
            .zip(seats)
            .map(|(seat, s)| {
                let inv = Invite {
                    relay: relay.clone(),
                    mailbox,
                    seat_secret: s.clone(),
                };
                (seat, inv.to_text())
            })
            .collect();
        self.invites.iter().map(|(_, t)| t.clone()).collect()
    }

    /// Builds the state of a member who just took `seat` with `invite`, from the
    /// welcome the relay handed over; returns it with the announcement to put.
    pub fn joined(
        invite: &Invite,
        identity: TalkIdentity,
        alias: &str,
        seat: u8,
        welcome: &[u8],
        status: TalkStatus,
    ) -> Result<(TalkState, Vec<u8>), MemberError> {
        if !valid_alias(alias) {
            return Err(MemberError::BadAlias);
        }
        let plain =
            open_welcome(&invite.seat_secret, welcome).map_err(|_| MemberError::BadWelcome)?;
        let w = Welcome::decode(&plain).map_err(|_| MemberError::BadWelcome)?;
        if w.seat != seat
            || w.creator.body.seat != 0
            || w.commitments.len() + 1 != usize::from(w.params.seats)
        {
            return Err(MemberError::BadCreator);
        }
        w.creator
            .verify(&WELCOME_MAILBOX, &w.commitments)
            .map_err(|_| MemberError::BadCreator)?;
        if w.commitments.get(usize::from(seat) - 1) != Some(&invite.seat_secret.commitment()) {
            return Err(MemberError::BadWelcome);
        }
        let mut rng = rand::rng();
        let mut talk_id = [0u8; 8];
        rand::Rng::fill_bytes(&mut rng, &mut talk_id);
        let state = TalkState {
            talk_id,
            relay: invite.relay.to_string(),
            relay_key: None,
            mailbox: invite.mailbox,
            seat,
            identity: *identity.to_bytes(),
            talk_key: w.talk_key,
            seat_seed: *invite.seat_secret.seat_seed(),
            params: w.params,
            alias: alias.to_string(),
            commitments: w.commitments.clone(),
            roster: vec![Peer::from_announce(&w.creator.body, None)],
            sending: SendingChain::new(&mut rng, 0),
            cursor: 0,
            acked: 0,
            status: Some(status),
            invites: Vec::new(),
            expires_at: status.expires_at,
            closed: false,
            opened: status.state == TalkPhase::Open,
        };
        let announce = state.announce(true)?;
        let body = state.seal(EnvelopeKind::Handshake, &Inner::Announce(announce))?;
        Ok((state, body))
    }

    /// The index the next message will be sent under (tests check it moved).
    #[cfg(test)]
    pub(crate) fn sending_index(&self) -> u32 {
        self.sending.state().index
    }

    /// The talk's name, the same for every member (protocol-spec §11.10).
    pub fn name(&self) -> String {
        nook_crypto::name::talk_name(&self.talk_key)
    }

    pub fn identity(&self) -> TalkIdentity {
        TalkIdentity::from_bytes(&self.identity)
    }

    pub fn relay_addr(&self) -> Option<RelayAddr> {
        self.relay.parse().ok()
    }

    pub fn is_owner(&self) -> bool {
        self.seat == 0
    }

    /// Current members other than this one.
    pub fn others(&self) -> impl Iterator<Item = &Peer> {
        self.roster.iter().filter(|p| !p.left)
    }

    pub fn alias_of(&self, seat: u8) -> String {
        if seat == self.seat {
            return self.alias.clone();
        }
        self.roster
            .iter()
            .find(|p| p.seat == seat)
            .map(|p| p.alias.clone())
            .unwrap_or_else(|| format!("seat-{seat}"))
    }

    /// Whether this member may close the talk under its close policy.
    pub fn may_close(&self) -> bool {
        self.params.close == ClosePolicy::Any || self.is_owner()
    }

    fn envelope_key(&self) -> EnvelopeKey {
        EnvelopeKey::from_talk_key(&self.talk_key)
    }

    fn announce(&self, with_chain: bool) -> Result<Announce, CryptoError> {
        let chain = with_chain.then(|| self.sending.state());
        Announce::new(
            &self.identity(),
            &self.mailbox,
            self.seat,
            (self.seat != 0).then_some(&self.seat_seed),
            &self.alias,
            chain,
        )
    }

    fn seal(&self, kind: EnvelopeKind, inner: &Inner) -> Result<Vec<u8>, CryptoError> {
        self.envelope_key().seal(
            &mut rand::rng(),
            &self.mailbox,
            Purpose::from(kind),
            &inner.encode()?,
        )
    }

    fn direct(&self, to: &Peer, body: &DirectBody) -> Result<Vec<u8>, CryptoError> {
        let identity = self.identity();
        let sealed = seal_pairwise(
            &mut rand::rng(),
            &identity,
            &to.agreement,
            &self.mailbox,
            &body.encode()?,
        )?;
        self.seal(
            EnvelopeKind::Handshake,
            &Inner::Direct(Direct {
                from: identity.public().agreement,
                to: to.agreement,
                sealed,
            }),
        )
    }

    /// Encrypts a chat message under this member's chain. Returns the envelope body
    /// and the event to record as sent.
    pub fn seal_text(&mut self, text: &str, now_ms: u64) -> Result<(Vec<u8>, Event), MemberError> {
        let content = Content::Text {
            sent_at_ms: now_ms,
            text: text.to_string(),
        };
        let (body, id) = self.seal_content(&content)?;
        Ok((
            body,
            Event::Message {
                seat: self.seat,
                alias: self.alias.clone(),
                sent_at_ms: now_ms,
                text: text.to_string(),
                own: true,
                late: false,
                missed: 0,
                id: Some(id),
            },
        ))
    }

    /// The "I am leaving" message, sent before `Leave` so the others know who left.
    pub fn seal_leaving(&mut self, now_ms: u64) -> Result<Vec<u8>, MemberError> {
        self.seal_content(&Content::Leaving { sent_at_ms: now_ms })
            .map(|(body, _)| body)
    }

    /// Seals `content` as this member's next group message; with its message id.
    fn seal_content(&mut self, content: &Content) -> Result<(Vec<u8>, [u8; 8]), MemberError> {
        let msg = seal_group(&self.identity(), &mut self.sending, &self.mailbox, content)?;
        let id = msg.header.message_id();
        let body = self
            .seal(EnvelopeKind::Chat, &Inner::Group(msg))
            .map_err(|e| match e {
                CryptoError::Padding(p) => MemberError::TooLong(p.to_string()),
                e => MemberError::Crypto(e),
            })?;
        Ok((body, id))
    }

    /// The end-to-end close signal, sealed for the relay to pass on.
    pub fn farewell(&self) -> Result<Vec<u8>, CryptoError> {
        let f = Farewell::new(&self.identity(), &self.mailbox);
        self.envelope_key().seal(
            &mut rand::rng(),
            &self.mailbox,
            Purpose::Farewell,
            &Inner::Farewell(f).encode()?,
        )
    }

    /// Checks a `Closed` push: the receipt against the pinned relay key, the farewell
    /// against the members' pseudonyms and the close policy.
    pub fn check_close(
        &self,
        receipt: &Receipt,
        farewell: &[u8],
        rotations: &[nook_proto::RotationStatement],
    ) -> Event {
        // The relay key was checked against the address's fingerprint when it was
        // stored; the portable receipt's own check repeats that.
        let kept = match (self.relay_key, self.relay_addr()) {
            (Some(key), Some(relay)) if receipt.mailbox == self.mailbox => {
                let kept = PortableReceipt::new(relay, RelayKey(key), receipt)
                    .with_rotations(rotations.to_vec());
                kept.verify().is_ok().then(|| Box::new(kept))
            }
            _ => None,
        };
        let closer = self
            .envelope_key()
            .open(&self.mailbox, Purpose::Farewell, farewell)
            .ok()
            .and_then(|p| Inner::decode(&p).ok())
            .and_then(|inner| match inner {
                Inner::Farewell(f) if f.verify(&self.mailbox).is_ok() => Some(f.sender),
                _ => None,
            })
            .and_then(|sender| self.roster.iter().find(|p| p.pseudonym == sender))
            .filter(|p| self.params.close == ClosePolicy::Any || p.seat == 0);
        Event::Closed {
            by: closer.map(|p| p.alias.clone()),
            verified: kept.is_some() && closer.is_some(),
            receipt: kept,
        }
    }

    /// Processes one envelope from the relay. Never fails: anything wrong becomes a
    /// warning event, so one bad envelope cannot break the session.
    pub fn handle_envelope(&mut self, env: &Envelope) -> Handled {
        let mut out = Handled::default();
        if env.seq.0 <= self.cursor {
            return out;
        }
        self.cursor = env.seq.0;
        let plain =
            match self
                .envelope_key()
                .open(&self.mailbox, Purpose::from(env.kind), &env.body)
            {
                Ok(p) => p,
                Err(_) => {
                    out.events.push(Event::Warning(format!(
                        "envelope {} could not be opened: altered in transit or not from a member",
                        env.seq.0
                    )));
                    return out;
                }
            };
        let inner = match Inner::decode(&plain) {
            Ok(i) => i,
            Err(_) => {
                out.events.push(Event::Warning(format!(
                    "envelope {} is malformed",
                    env.seq.0
                )));
                return out;
            }
        };
        match (env.kind, inner) {
            (EnvelopeKind::Handshake, Inner::Announce(a)) => self.on_announce(a, &mut out),
            (EnvelopeKind::Handshake, Inner::Direct(d)) => self.on_direct(d, &mut out),
            (EnvelopeKind::Chat, Inner::Group(g)) => self.on_group(&g, &mut out),
            _ => out.events.push(Event::Warning(format!(
                "envelope {} has an unexpected kind",
                env.seq.0
            ))),
        }
        out
    }

    fn on_announce(&mut self, a: Announce, out: &mut Handled) {
        if let Err(e) = a.verify(&self.mailbox, &self.commitments) {
            out.events.push(Event::Warning(format!(
                "a join announcement was rejected ({e}): someone without a genuine seat tried to join"
            )));
            return;
        }
        let b = &a.body;
        if b.seat == self.seat || b.seat == 0 || self.roster.iter().any(|p| p.seat == b.seat) {
            out.events.push(Event::Warning(format!(
                "a second announcement for seat {} was ignored",
                b.seat
            )));
            return;
        }
        let Some(chain) = b.chain.clone() else {
            out.events.push(Event::Warning(
                "an announcement without a chain was ignored".into(),
            ));
            return;
        };
        let peer = Peer::from_announce(b, Some(chain));
        // Introduce ourselves to the newcomer, with our chain as it stands now.
        match self.announce(true).and_then(|mine| {
            self.direct(
                &peer,
                &DirectBody::Intro {
                    announce: Box::new(mine),
                },
            )
        }) {
            Ok(body) => out.outgoing.push((EnvelopeKind::Handshake, body)),
            Err(e) => out.events.push(Event::Warning(format!(
                "could not introduce us to a newcomer: {e}"
            ))),
        }
        self.invites.retain(|(seat, _)| *seat != b.seat);
        out.events.push(Event::MemberJoined {
            seat: b.seat,
            alias: b.alias.clone(),
        });
        self.roster.push(peer);
    }

    fn on_direct(&mut self, d: Direct, out: &mut Handled) {
        let identity = self.identity();
        if d.to != identity.public().agreement {
            return; // Addressed to another member.
        }
        let plain = match open_pairwise(&identity, &d.from, &self.mailbox, &d.sealed) {
            Ok(p) => p,
            Err(_) => {
                out.events.push(Event::Warning(
                    "a direct message could not be opened".into(),
                ));
                return;
            }
        };
        let Ok(body) = DirectBody::decode(&plain) else {
            out.events
                .push(Event::Warning("a direct message is malformed".into()));
            return;
        };
        match body {
            DirectBody::Intro { announce } => {
                let b = &announce.body;
                let valid = announce.verify(&self.mailbox, &self.commitments).is_ok()
                    && b.agreement == d.from
                    && b.seat != self.seat;
                // The creator's keys came with the welcome: an intro claiming seat 0
                // must carry exactly those keys.
                let known = self.roster.iter().position(|p| p.seat == b.seat);
                let consistent = match known {
                    Some(i) => {
                        let p = &self.roster[i];
                        p.pseudonym == b.pseudonym
                            && p.agreement == b.agreement
                            && p.relay_auth == b.relay_auth
                    }
                    None => b.seat != 0,
                };
                let Some(chain) = b.chain.clone().filter(|_| valid && consistent) else {
                    out.events.push(Event::Warning(format!(
                        "an introduction claiming seat {} was rejected",
                        b.seat
                    )));
                    return;
                };
                match known {
                    Some(i) => {
                        let p = &mut self.roster[i];
                        if p.chain.is_none() {
                            p.chain = Some(ReceivingChain::new(chain));
                        }
                    }
                    None => {
                        self.roster.push(Peer::from_announce(b, Some(chain)));
                        out.events.push(Event::MemberJoined {
                            seat: b.seat,
                            alias: b.alias.clone(),
                        });
                    }
                }
            }
            DirectBody::SenderKey { chain } => {
                let Some(p) = self
                    .roster
                    .iter_mut()
                    .find(|p| p.agreement == d.from && !p.left)
                else {
                    out.events.push(Event::Warning(
                        "a sender key from an unknown member was ignored".into(),
                    ));
                    return;
                };
                let current = p.chain.as_ref().map(|c| c.epoch());
                if current.is_some_and(|e| chain.epoch <= e) {
                    out.events
                        .push(Event::Warning("a stale sender key was ignored".into()));
                    return;
                }
                p.prev_chain = p.chain.take();
                p.chain = Some(ReceivingChain::new(chain));
            }
        }
    }

    fn on_group(&mut self, g: &nook_crypto::message::GroupMessage, out: &mut Handled) {
        if g.header.sender == self.identity().public().pseudonym {
            // Our own message, echoed to this process by the relay: the process that
            // sent it recorded it in the history already.
            return;
        }
        let mailbox = self.mailbox;
        let Some(p) = self
            .roster
            .iter_mut()
            .find(|p| p.pseudonym == g.header.sender)
        else {
            out.events.push(Event::Warning(
                "a message from someone who is not a known member was rejected".into(),
            ));
            return;
        };
        let chain = match (&mut p.chain, &mut p.prev_chain) {
            (Some(c), _) if c.epoch() == g.header.epoch => c,
            (_, Some(c)) if c.epoch() == g.header.epoch => c,
            (Some(c), _) => c,
            (None, _) => {
                out.events.push(Event::Warning(format!(
                    "a message from {} could not be read: it was sent before they introduced themselves",
                    p.alias
                )));
                return;
            }
        };
        match open_group(&p.pseudonym, chain, &mailbox, g) {
            Ok((content, delivery)) => {
                let Delivery { late, missed, .. } = delivery;
                if missed > 0 {
                    out.events.push(Event::Warning(format!(
                        "{missed} message(s) from {} never arrived",
                        p.alias
                    )));
                }
                match content {
                    Content::Text {
                        sent_at_ms,
                        ref text,
                    } => out.events.push(Event::Message {
                        seat: p.seat,
                        alias: p.alias.clone(),
                        sent_at_ms,
                        text: text.clone(),
                        own: false,
                        late,
                        missed,
                        id: Some(g.header.message_id()),
                    }),
                    Content::Leaving { .. } => {
                        // Its goodbye is the last thing it sends: its chains are of
                        // no more use.
                        p.chain = None;
                        p.prev_chain = None;
                        let seat = p.seat;
                        self.mark_left(seat, out);
                    }
                }
            }
            Err(e) => out.events.push(Event::Warning(format!(
                "a message claiming to be from {} was rejected: {e}",
                p.alias
            ))),
        }
    }

    /// Records that the member of `seat` left (from its goodbye or from the relay's
    /// status, whichever comes first) and rotates our chain once. Its receiving chains
    /// stay until its goodbye arrives: a member that was away learns of the leave from
    /// the relay's status before it fetches the backlog that holds the goodbye
    /// (protocol-spec §13.4).
    fn mark_left(&mut self, seat: u8, out: &mut Handled) {
        let Some(p) = self.roster.iter_mut().find(|p| p.seat == seat && !p.left) else {
            return;
        };
        p.left = true;
        out.events.push(Event::MemberLeaving {
            seat,
            alias: p.alias.clone(),
        });
        self.rotate(out);
    }

    /// Starts a fresh sending chain after a member left and gives it, pairwise, to
    /// every remaining member: the one who left never learns it.
    fn rotate(&mut self, out: &mut Handled) {
        let epoch = self.sending.state().epoch.saturating_add(1);
        self.sending = SendingChain::new(&mut rand::rng(), epoch);
        let chain: ChainState = self.sending.state().clone();
        let body = DirectBody::SenderKey { chain };
        let peers: Vec<Peer> = self.others().cloned().collect();
        for p in &peers {
            match self.direct(p, &body) {
                Ok(b) => out.outgoing.push((EnvelopeKind::Handshake, b)),
                Err(e) => out.events.push(Event::Warning(format!(
                    "could not send a new sender key: {e}"
                ))),
            }
        }
    }

    /// Records a relay status (seats taken, opened, seats left). Returns the events and
    /// the sender keys to send if someone left.
    pub fn on_status(&mut self, status: TalkStatus) -> Handled {
        let mut out = Handled::default();
        let gone: Vec<u8> = self
            .roster
            .iter()
            .filter(|p| !p.left && status.left & (1u64 << p.seat) != 0)
            .map(|p| p.seat)
            .collect();
        for seat in gone {
            self.mark_left(seat, &mut out);
        }
        let events = &mut out.events;
        let changed = self.status.map(|s| s.members) != Some(status.members);
        self.status = Some(status);
        if changed && status.state == TalkPhase::Pending {
            events.push(Event::SeatsTaken {
                members: status.members,
                seats: status.seats,
                quorum: status.quorum,
            });
        }
        if status.state == TalkPhase::Open && !self.opened {
            self.opened = true;
            events.push(Event::Opened);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{status, three};
    use nook_proto::Seq;

    fn texts(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message { alias, text, .. } => Some(format!("{alias}: {text}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn three_members_learn_each_other_and_talk_in_every_direction() {
        let (mut net, mut a, mut b, mut c) = three();
        for m in [&a, &b, &c] {
            assert_eq!(m.roster.len(), 2, "seat {} knows {:?}", m.seat, m.roster);
            assert!(m.roster.iter().all(|p| p.chain.is_some()));
        }
        assert!(a.invites.is_empty(), "both invites used");
        for (sender, text) in [(0u8, "from a"), (1, "from b"), (2, "from c")] {
            let m = [&mut a, &mut b, &mut c]
                .into_iter()
                .find(|m| m.seat == sender)
                .unwrap();
            let (body, _) = m.seal_text(text, 1).unwrap();
            net.put(sender, EnvelopeKind::Chat, body);
        }
        assert_eq!(
            texts(&net.deliver(&mut a)),
            ["member-1: from b", "member-2: from c"]
        );
        assert_eq!(
            texts(&net.deliver(&mut b)),
            ["owner-owl: from a", "member-2: from c"]
        );
        assert_eq!(
            texts(&net.deliver(&mut c)),
            ["owner-owl: from a", "member-1: from b"]
        );
    }

    #[test]
    fn replayed_and_forged_envelopes_become_warnings() {
        let (mut net, mut a, mut b, _c) = three();
        let (body, _) = a.seal_text("once", 1).unwrap();
        net.put(0, EnvelopeKind::Chat, body.clone());
        assert_eq!(texts(&net.deliver(&mut b)), ["owner-owl: once"]);
        // The relay replays the same body under a new seq.
        net.put(0, EnvelopeKind::Chat, body.clone());
        let ev = net.deliver(&mut b);
        assert!(texts(&ev).is_empty());
        assert!(
            matches!(&ev[..], [Event::Warning(w)] if w.contains("rejected")),
            "{ev:?}"
        );
        // A flipped byte.
        let mut bad = body;
        bad[100] ^= 1;
        net.put(0, EnvelopeKind::Chat, bad);
        let ev = net.deliver(&mut b);
        assert!(
            matches!(&ev[..], [Event::Warning(w)] if w.contains("could not be opened")),
            "{ev:?}"
        );
        // The session goes on.
        let (body, _) = a.seal_text("after", 2).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        assert_eq!(texts(&net.deliver(&mut b)), ["owner-owl: after"]);
    }

    #[test]
    fn dropped_and_reordered_messages_are_reported() {
        let (_, mut a, mut b, _c) = three();
        let m: Vec<Vec<u8>> = (0..3)
            .map(|i| a.seal_text(&i.to_string(), 1).unwrap().0)
            .collect();
        let env = |seq: u64, body: &Vec<u8>| Envelope {
            seq: Seq(seq),
            kind: EnvelopeKind::Chat,
            stored_at: 0,
            body: body.clone(),
        };
        let base = b.cursor;
        let h = b.handle_envelope(&env(base + 1, &m[2]));
        assert!(
            h.events
                .iter()
                .any(|e| matches!(e, Event::Warning(w) if w.contains("2 message(s)")))
        );
        let h = b.handle_envelope(&env(base + 2, &m[0]));
        assert!(
            matches!(&h.events[..], [Event::Message { late: true, .. }]),
            "{:?}",
            h.events
        );
    }

    #[test]
    fn an_impostor_announcement_is_rejected() {
        let (mut net, mut a, _b, _c) = three();
        // Someone with the talk key but no seat secret claims seat 1 anew.
        let eve = TalkIdentity::generate(&mut rand::rng());
        let fake = Announce::new(
            &eve,
            &a.mailbox,
            1,
            Some(&[9; 32]),
            "eve",
            Some(&ChainState {
                epoch: 0,
                index: 0,
                chain_key: [0; 32],
            }),
        )
        .unwrap();
        let body = a
            .seal(EnvelopeKind::Handshake, &Inner::Announce(fake))
            .unwrap();
        net.put(1, EnvelopeKind::Handshake, body);
        let ev = net.deliver(&mut a);
        assert!(
            matches!(&ev[..], [Event::Warning(w)] if w.contains("genuine seat")),
            "{ev:?}"
        );
        assert_eq!(a.roster.len(), 2);
    }

    #[test]
    fn leaving_rotates_chains_so_the_leaver_cannot_read_on() {
        let (mut net, mut a, mut b, mut c) = three();
        let body = c.seal_leaving(1).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        let ev = net.deliver(&mut a);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::MemberLeaving { seat: 2, .. }))
        );
        net.deliver(&mut b);
        net.deliver(&mut a);
        net.deliver(&mut b);
        let (body, _) = a.seal_text("after c left", 1).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        assert_eq!(texts(&net.deliver(&mut b)), ["owner-owl: after c left"]);
        // c still holds a's old chain, not the new one: it cannot read the message.
        let ev = net.deliver(&mut c);
        assert!(texts(&ev).is_empty(), "{ev:?}");
    }

    #[test]
    fn a_seat_the_relay_reports_left_is_dropped_even_without_a_goodbye() {
        let (mut net, mut a, mut b, mut c) = three();
        let mut st = status(3, true);
        st.left = 1 << 2;
        let h = a.on_status(st);
        assert!(
            h.events
                .iter()
                .any(|e| matches!(e, Event::MemberLeaving { seat: 2, .. }))
        );
        // One sender key, for b only.
        assert_eq!(h.outgoing.len(), 1);
        for (k, body) in h.outgoing {
            net.put(0, k, body);
        }
        // The same status again changes nothing.
        assert!(a.on_status(st).outgoing.is_empty());
        net.deliver(&mut b);
        let (body, _) = a.seal_text("without c", 1).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        assert_eq!(texts(&net.deliver(&mut b)), ["owner-owl: without c"]);
        assert!(texts(&net.deliver(&mut c)).is_empty());
    }

    #[test]
    fn a_goodbye_fetched_after_the_status_that_reported_the_leave_still_opens() {
        let (mut net, mut a, mut b, mut c) = three();
        let (body, _) = c.seal_text("last words", 1).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        let body = c.seal_leaving(2).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        // b was away: its Authed status already has c's bit before it fetches.
        let mut st = status(3, true);
        st.left = 1 << 2;
        let h = b.on_status(st);
        assert!(
            h.events
                .iter()
                .any(|e| matches!(e, Event::MemberLeaving { seat: 2, .. }))
        );
        for (k, body) in h.outgoing {
            net.put(1, k, body);
        }
        let ev = net.deliver(&mut b);
        assert_eq!(texts(&ev), ["member-2: last words"]);
        assert!(
            !ev.iter().any(|e| matches!(e, Event::Warning(_))),
            "{ev:?}"
        );
        // The goodbye erased c's chains: nothing more from c opens.
        let p = b.roster.iter().find(|p| p.seat == 2).unwrap();
        assert!(p.chain.is_none() && p.prev_chain.is_none());
        let _ = net.deliver(&mut a);
    }

    #[test]
    fn farewell_is_verified_against_the_owner() {
        let (_, mut a, b, c) = three();
        let relay_id = nook_crypto::auth::RelayIdentity::generate(&mut rand::rng());
        let mut b = b;
        b.relay_key = Some(relay_id.public().0);
        b.relay = pinning(&relay_id).to_string();
        let receipt = relay_id.sign_receipt(b.mailbox, 5, 0);
        let kept = Box::new(PortableReceipt::new(
            pinning(&relay_id),
            relay_id.public(),
            &receipt,
        ));
        let ev = b.check_close(&receipt, &a.farewell().unwrap(), &[]);
        assert_eq!(
            ev,
            Event::Closed {
                by: Some("owner-owl".into()),
                verified: true,
                receipt: Some(kept.clone()),
            }
        );
        // A farewell signed by a non-owner under the owner policy is not verified; the
        // relay's receipt is good all the same.
        let ev = b.check_close(&receipt, &c.farewell().unwrap(), &[]);
        assert_eq!(
            ev,
            Event::Closed {
                by: None,
                verified: false,
                receipt: Some(kept),
            }
        );
        a.relay_key = Some([0; 32]);
        assert!(matches!(
            a.check_close(&receipt, &b.farewell().unwrap(), &[]),
            Event::Closed {
                verified: false,
                receipt: None,
                ..
            }
        ));
    }

    /// The address of `relay` (its fingerprint pins its key).
    fn pinning(relay: &nook_crypto::auth::RelayIdentity) -> RelayAddr {
        RelayAddr {
            fingerprint: nook_crypto::Fingerprint::of_key(&relay.public().0),
            host: "127.0.0.1".into(),
            port: 4433,
        }
    }

    #[test]
    fn only_a_receipt_that_verifies_for_this_talk_is_kept() {
        let (_, a, b, _) = three();
        let relay_id = nook_crypto::auth::RelayIdentity::generate(&mut rand::rng());
        let mut b = b;
        b.relay_key = Some(relay_id.public().0);
        b.relay = pinning(&relay_id).to_string();
        let farewell = a.farewell().unwrap();
        let kept = |receipt: &Receipt, b: &TalkState| match b.check_close(receipt, &farewell, &[]) {
            Event::Closed { receipt, .. } => receipt.map(|r| *r),
            e => panic!("{e:?}"),
        };
        let good = relay_id.sign_receipt(b.mailbox, 5, 2);
        let k = kept(&good, &b).expect("kept");
        assert_eq!(k.receipt(), good);
        assert_eq!(k.relay.to_string(), b.relay);
        let text = k.to_text();
        let back: PortableReceipt = text.parse().unwrap();
        back.verify().unwrap();
        // Another talk's receipt, an altered one, or one by another key: not kept.
        let other_talk = relay_id.sign_receipt(MailboxId([9; 16]), 5, 2);
        assert_eq!(kept(&other_talk, &b), None);
        let mut altered = good;
        altered.envelopes_deleted = 3;
        assert_eq!(kept(&altered, &b), None);
        let stranger = nook_crypto::auth::RelayIdentity::generate(&mut rand::rng());
        assert_eq!(kept(&stranger.sign_receipt(b.mailbox, 5, 2), &b), None);
        // A stored key that is not the one the address pins: not kept either.
        let mut c = b;
        c.relay_key = Some(stranger.public().0);
        assert_eq!(kept(&stranger.sign_receipt(c.mailbox, 5, 2), &c), None);
    }

    #[test]
    fn state_survives_encoding() {
        let (_, a, _, _) = three();
        let bytes = nook_proto::codec::encode_value(&a).unwrap();
        let back: TalkState = nook_proto::codec::decode_body(&bytes).unwrap();
        assert_eq!(back.roster.len(), 2);
        assert_eq!(back.identity().public(), a.identity().public());
    }
}

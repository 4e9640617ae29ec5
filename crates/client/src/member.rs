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
use nook_crypto::card::CardReveal;
use nook_crypto::chain::{ChainState, Delivery};
use nook_crypto::identity::{IDENTITY_LEN, KEM_PUBLIC_LEN};
use nook_crypto::message::{
    Announce, Content, Direct, DirectBody, Farewell, Inner, Seen, Welcome, WelcomeParams,
    open_group, seal_group,
};
use nook_crypto::seal::{KEY_ID_LEN, open_pairwise, open_welcome, seal_pairwise, seal_welcome};
use nook_crypto::{
    CryptoError, EnvelopeKey, Invite, Purpose, ReceivingChain, RelayAddr, SeatSecret, SendingChain,
    TalkIdentity,
};
use nook_proto::{
    ClosePolicy, Envelope, EnvelopeKind, MailboxId, Receipt, RelayKey, SeatOffer, TalkParams,
    TalkPhase, TalkStatus,
};
use zeroize::Zeroize;

use crate::roles::{Offerer, Pattern, Role, Roles};

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
    /// Messages of the member of `seat` that this device never received, known from
    /// the positions other members' messages, goodbyes and the farewell report
    /// (protocol-spec §13.3); for our own seat, messages of ours the closer never got.
    /// (Appended.)
    Missing {
        seat: u8,
        alias: String,
        count: u32,
    },
    /// A member offered a file (protocol-spec §12.5); its chunks are kept in the
    /// store (`crate::files`) until the talk ends. (Appended.)
    FileOffered {
        seat: u8,
        alias: String,
        sent_at_ms: u64,
        own: bool,
        offer: FileOffer,
    },
    /// Someone asked for a seat on one of the talk's board listings (owner only; noted
    /// the first time this device opened the request). `alias` and `note` are the
    /// seeker's: hostile text. (Appended.)
    SeatRequested {
        /// The request id (hex), as `nook requests`, `admit` and `decline` take it.
        request: String,
        alias: String,
        note: String,
    },
    /// The member of `seat` showed us chosen fields of its card (protocol-spec §19),
    /// to us alone. `contact`: its card key is one this home kept from an earlier
    /// talk, so it is that same person. (Appended.)
    CardRevealed {
        seat: u8,
        alias: String,
        /// `(kind, value)`, values as sent: hostile text.
        fields: Vec<(u8, String)>,
        keepable: bool,
        contact: bool,
    },
    /// We showed the member of `seat` these fields of our card. (Appended.)
    CardShown {
        seat: u8,
        alias: String,
        fields: Vec<u8>,
        keepable: bool,
    },
    /// An exchange of cards was offered (`own`: by us, to the member of `seat`; else
    /// by it, to us): the field kinds only, never their values. (Appended.)
    CardOffered {
        seat: u8,
        alias: String,
        fields: Vec<u8>,
        keepable: bool,
        own: bool,
    },
    /// An exchange was declined (`own`: by us); no card was shown. (Appended.)
    CardDeclined {
        seat: u8,
        alias: String,
        own: bool,
    },
    /// The owner of a market wrote to the offerer of `seat` alone (protocol-spec
    /// §20.2); recorded on the owner's device. (Appended.)
    MessageTo {
        seat: u8,
        alias: String,
        sent_at_ms: u64,
        text: String,
        /// The message's id, as the offerer's device records it (spec §12.4).
        id: [u8; 8],
    },
    /// A market's offerer sent more than the offer limit allows before the owner wrote
    /// to it (a modified client: a conforming one refuses to send): dropped unshown,
    /// on the owner's device. (Appended.)
    OverLimit {
        seat: u8,
        alias: String,
    },
    /// The owner removed the offerer of `seat`: its keys are erased, its envelopes
    /// skipped unread from now on. (Appended.)
    OffererRemoved {
        seat: u8,
        alias: String,
    },
    /// The owner took the offerer of `seat` into the group (on the owner's device and
    /// on that offerer's, where `seat` is its own). (Appended.)
    Promoted {
        seat: u8,
        alias: String,
    },
}

/// Card messages that arrived (protocol-spec §19), checked: from a current member,
/// reveals verified for this talk, this sender and us. What they change is kept
/// beside the talk (`crate::cards`), not in its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardNews {
    Revealed {
        seat: u8,
        reveal: CardReveal,
    },
    Offered {
        seat: u8,
        exchange: [u8; 16],
        fields: Vec<u8>,
        keepable: bool,
    },
    Accepted {
        seat: u8,
        exchange: [u8; 16],
        reveal: CardReveal,
    },
    Declined {
        seat: u8,
        exchange: [u8; 16],
    },
}

/// What an offer says about a file.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct FileOffer {
    pub file_id: [u8; 16],
    /// As the sender named it: hostile, never a path.
    pub name: String,
    pub size: u64,
    pub chunks: u32,
    pub sha256: [u8; 32],
}

/// File data that arrived from the member of `seat`, for the store: the offer (also
/// recorded here, since its history event may wait for causal order while the chunks
/// go on) and the chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileData {
    Offer {
        seat: u8,
        offer: FileOffer,
    },
    Chunk {
        seat: u8,
        file_id: [u8; 16],
        index: u32,
        bytes: zeroize::Zeroizing<Vec<u8>>,
    },
}

/// How many messages a member holds back for causal order.
pub const MAX_WAITING: usize = 64;

/// How long a live follower (`read --follow`, `chat`, `nook rpc`'s subscriptions) holds
/// a message back for the messages its author had seen (protocol-spec §13.3); a
/// one-shot read holds nothing past its own batch.
pub const CAUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A message held back for causal order, since `since_ms` (this device's clock).
#[derive(Clone, Debug, Encode, Decode)]
struct Waiting {
    events: Vec<Event>,
    seen: Vec<Seen>,
    since_ms: u64,
}

/// How many envelopes sealed under keys not yet known a member holds for later
/// (protocol-spec §13.3), and how many bytes; past either the oldest is dropped.
pub const MAX_HELD: usize = 64;
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// Another member as this member knows it.
#[derive(Clone, Debug, Encode, Decode)]
pub struct Peer {
    pub seat: u8,
    pub pseudonym: [u8; 32],
    pub agreement: [u8; 32],
    kem: [u8; KEM_PUBLIC_LEN],
    pub relay_auth: [u8; 32],
    /// `seat-N` until the member's alias arrives (in its `Reply` or `Intro`).
    pub alias: String,
    chain: Option<ReceivingChain>,
    prev_chain: Option<ReceivingChain>,
    pub left: bool,
    /// `(epoch, index)`: every message of this member's chain `epoch` below `index`
    /// was received or reported missing, so none is reported twice.
    accounted: (u32, u32),
    /// We gave this member our chain in an `Intro` (it announced after us), so its
    /// `Intro` to us, if it sends one (we joined at the same time), needs no `Reply`.
    introduced: bool,
}

/// Everything one member holds for one talk.
#[derive(Encode, Decode)]
pub struct TalkState {
    pub talk_id: [u8; 8],
    pub relay: String,
    pub relay_key: Option<[u8; 32]>,
    pub mailbox: MailboxId,
    pub seat: u8,
    identity: [u8; IDENTITY_LEN],
    /// This member's pseudonym and agreement public keys, kept so that telling our own
    /// echoes and others' `Direct`s apart needs no key expansion.
    own_pseudonym: [u8; 32],
    own_agreement: [u8; 32],
    talk_key: [u8; 32],
    /// Seed of this member's seat key (zeros for the creator). Secret.
    seat_seed: [u8; 32],
    pub params: WelcomeParams,
    pub alias: String,
    pub commitments: Vec<[u8; 32]>,
    pub roster: Vec<Peer>,
    sending: SendingChain,
    /// A newcomer's sending chain as it stood at its announcement: its `Reply` gives
    /// each member the chain from there, so messages it sent before that member's
    /// `Intro` arrived still open. Erased once every member has it, or at a rotation.
    intro_chain: Option<ChainState>,
    /// Envelopes sealed under a key this member does not hold yet (a newcomer's
    /// messages that came before its `Reply`), opened when the key arrives.
    held: Vec<Envelope>,
    /// Messages that came before messages their author had already seen (its `seen`
    /// summary names them): shown after those, in causal order, or once they waited
    /// their patience with what never came reported lost (protocol-spec §13.3).
    waiting: Vec<Waiting>,
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
    /// The talk's pattern and this member's part in it (protocol-spec §20.2). Last:
    /// a state stored before patterns ends before it and reads as a plain talk's.
    pub roles: Roles,
}

/// A talk's state as versions before scheduled talks (protocol-spec §20.1) stored it:
/// every field as [`TalkState`]'s, but the relay's status, which had no schedule then.
/// Read by the store, and rewritten in today's form.
#[derive(Decode)]
pub(crate) struct TalkStateBeforeSchedules {
    talk_id: [u8; 8],
    relay: String,
    relay_key: Option<[u8; 32]>,
    mailbox: MailboxId,
    seat: u8,
    identity: [u8; IDENTITY_LEN],
    own_pseudonym: [u8; 32],
    own_agreement: [u8; 32],
    talk_key: [u8; 32],
    seat_seed: [u8; 32],
    params: WelcomeParams,
    alias: String,
    commitments: Vec<[u8; 32]>,
    roster: Vec<Peer>,
    sending: SendingChain,
    intro_chain: Option<ChainState>,
    held: Vec<Envelope>,
    waiting: Vec<Waiting>,
    cursor: u64,
    acked: u64,
    status: Option<StatusBeforeSchedules>,
    invites: Vec<(u8, String)>,
    expires_at: u64,
    closed: bool,
    opened: bool,
}

/// A [`TalkStatus`] as it was before scheduled talks: no `schedule`.
#[derive(Clone, Copy, Decode)]
struct StatusBeforeSchedules {
    state: TalkPhase,
    members: u8,
    seats: u8,
    quorum: u8,
    close: ClosePolicy,
    expires_at: u64,
    left: u64,
}

impl From<TalkStateBeforeSchedules> for TalkState {
    fn from(old: TalkStateBeforeSchedules) -> TalkState {
        let TalkStateBeforeSchedules {
            talk_id,
            relay,
            relay_key,
            mailbox,
            seat,
            mut identity,
            own_pseudonym,
            own_agreement,
            mut talk_key,
            mut seat_seed,
            params,
            alias,
            commitments,
            roster,
            sending,
            intro_chain,
            held,
            waiting,
            cursor,
            acked,
            status,
            invites,
            expires_at,
            closed,
            opened,
        } = old;
        let state = TalkState {
            talk_id,
            relay,
            relay_key,
            mailbox,
            seat,
            identity,
            own_pseudonym,
            own_agreement,
            talk_key,
            seat_seed,
            params,
            alias,
            commitments,
            roster,
            sending,
            intro_chain,
            held,
            waiting,
            cursor,
            acked,
            status: status.map(|s| TalkStatus {
                state: s.state,
                members: s.members,
                seats: s.seats,
                quorum: s.quorum,
                close: s.close,
                expires_at: s.expires_at,
                left: s.left,
                schedule: None,
            }),
            invites,
            expires_at,
            closed,
            opened,
            roles: Roles::default(),
        };
        // The arrays were copied into `state`; these copies go.
        identity.zeroize();
        talk_key.zeroize();
        seat_seed.zeroize();
        state
    }
}

/// What the creator sends to the relay, and what it hands out.
pub struct NewTalk {
    pub state: TalkState,
    pub params: TalkParams,
    /// One seat secret per free seat, in seat order (seat 1 first).
    pub seats: Vec<SeatSecret>,
}

/// Which kind of key an envelope is sealed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyOf {
    /// The talk's base key (for a market's offerer: its seat's key).
    Base,
    /// A market's owner: the seat key of the offerer of that seat (spec §20.2).
    Seat(u8),
    /// A member's sending envelope key.
    Chain,
}

/// Envelopes to put: (kind, padded sealed body), in order.
pub type Outgoing = Vec<(EnvelopeKind, Vec<u8>)>;

/// What handling one envelope produced.
#[derive(Debug, Default)]
pub struct Handled {
    pub events: Vec<Event>,
    /// Envelopes to put in answer.
    pub outgoing: Outgoing,
    /// File offers and chunks that arrived, for the store (chunks are data, not
    /// history events).
    pub files: Vec<FileData>,
    /// Card messages that arrived, for `crate::cards`.
    pub cards: Vec<CardNews>,
}

/// Options of a new talk.
#[derive(Debug, Clone)]
pub struct TalkOptions {
    pub seats: u8,
    pub quorum: u8,
    pub ttl_secs: u32,
    pub close: ClosePolicy,
    pub alias: String,
    /// Open at a time and close when a window ends (spec §20.1); `ttl_secs` must
    /// cover `opens_in_secs + window_secs`.
    pub schedule: Option<nook_proto::Schedule>,
    /// Plain, or a market whose other seats are offerers (spec §20.2).
    pub pattern: Pattern,
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
    #[error("the offer limit is {limit}: wait until the owner writes to you")]
    OfferLimit { limit: u8 },
    #[error("the offer limit must be 1 to {max}")]
    BadOfferLimit { max: u8 },
    #[error("no offerer is called that in this talk")]
    NoOfferer,
    #[error("listeners of a panel read only: the speakers write")]
    ListenerOnly,
    #[error("a panel has 1 to {max} speakers besides you, fewer than its other seats")]
    BadSpeakers { max: u8 },
    #[error("the message is too long for one envelope ({0})")]
    TooLong(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Peer {
    /// Notes that the messages `[from, upto)` of chain `epoch` are known to exist;
    /// returns how many of them were not accounted for yet.
    fn account(&mut self, epoch: u32, from: u32, upto: u32) -> u32 {
        if self.accounted.0 != epoch {
            self.accounted = (epoch, 0);
        }
        let n = upto.saturating_sub(from.max(self.accounted.1));
        self.accounted.1 = self.accounted.1.max(upto);
        n
    }

    /// A member as its (verified) announcement describes it.
    fn from_announce(b: &nook_crypto::message::AnnounceBody, chain: Option<ChainState>) -> Peer {
        let alias = if chain.is_some() || b.seat == 0 {
            b.alias.clone()
        } else {
            format!("seat-{}", b.seat)
        };
        Peer {
            seat: b.seat,
            pseudonym: b.pseudonym,
            agreement: b.agreement,
            kem: *b.kem,
            relay_auth: b.relay_auth,
            alias,
            chain: chain.map(ReceivingChain::new),
            prev_chain: None,
            left: false,
            accounted: (0, 0),
            introduced: false,
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
        if let Pattern::Market { offer_limit } = opts.pattern
            && !(1..=crate::roles::MAX_OFFER_LIMIT).contains(&offer_limit)
        {
            return Err(MemberError::BadOfferLimit {
                max: crate::roles::MAX_OFFER_LIMIT,
            });
        }
        // A panel needs a speaker and a listener besides its owner.
        if let Pattern::Panel { speakers } = opts.pattern
            && (speakers == 0
                || speakers > crate::roles::MAX_SPEAKERS
                || speakers + 1 >= opts.seats)
        {
            return Err(MemberError::BadSpeakers {
                max: crate::roles::MAX_SPEAKERS,
            });
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
        let mut roles = Roles {
            pattern: opts.pattern,
            ..Roles::default()
        };
        for (seat, secret) in (1u8..).zip(&seats) {
            // In a market every other seat gets a talk key of its own, which only the
            // owner shares (spec §20.2): an offerer never holds the group's.
            let seat_key = if roles.shielded_seat(seat) {
                let mut key = [0u8; 32];
                rand::Rng::fill_bytes(&mut rng, &mut key);
                roles.offerers.push(Offerer {
                    seat,
                    key,
                    chain: SendingChain::new(&mut rng, crate::roles::OFFERER_EPOCH),
                    unanswered: 0,
                    removed: false,
                    dropped: Vec::new(),
                    promoted: false,
                });
                key
            } else {
                talk_key
            };
            let welcome = Welcome {
                talk_key: seat_key,
                seat,
                params,
                creator: creator.clone(),
                commitments: commitments.clone(),
                pattern: opts.pattern,
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
            own_pseudonym: identity.public().pseudonym,
            own_agreement: identity.public().agreement,
            talk_key,
            seat_seed: [0; 32],
            params,
            alias: opts.alias.clone(),
            commitments,
            roster: Vec::new(),
            sending: SendingChain::new(&mut rng, 0),
            intro_chain: None,
            held: Vec::new(),
            waiting: Vec::new(),
            cursor: 0,
            acked: 0,
            status: None,
            invites: Vec::new(),
            expires_at: now + u64::from(opts.ttl_secs),
            closed: false,
            opened: false,
            roles,
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
                schedule: opts.schedule,
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
    /// welcome the relay handed over; returns it with what to put: the public
    /// announcement, then (unless the relay says the creator left) a `Reply` to the
    /// creator, whose keys the welcome gave, so the creator can read us at once.
    pub fn joined(
        invite: &Invite,
        identity: TalkIdentity,
        alias: &str,
        seat: u8,
        welcome: &[u8],
        status: TalkStatus,
    ) -> Result<(TalkState, Outgoing), MemberError> {
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
            own_pseudonym: identity.public().pseudonym,
            own_agreement: identity.public().agreement,
            talk_key: w.talk_key,
            seat_seed: *invite.seat_secret.seat_seed(),
            params: w.params,
            alias: alias.to_string(),
            commitments: w.commitments.clone(),
            roster: vec![Peer::from_announce(&w.creator.body, None)],
            sending: SendingChain::new(&mut rng, 0),
            intro_chain: None,
            held: Vec::new(),
            waiting: Vec::new(),
            cursor: 0,
            acked: 0,
            status: Some(status),
            invites: Vec::new(),
            expires_at: status.expires_at,
            closed: false,
            opened: status.state == TalkPhase::Open,
            roles: Roles {
                pattern: w.pattern,
                ..Roles::default()
            },
        };
        let mut state = state;
        state.intro_chain = Some(state.sending.state().clone());
        // The public announcement: keys and seat only. The alias and the chain go to
        // each member pairwise, in the Reply to its Intro, so that a member who left
        // and kept the talk key learns neither (protocol-spec §13.2).
        let announce = Announce::new(
            &state.identity(),
            &state.mailbox,
            state.seat,
            Some(&state.seat_seed),
            "",
            None,
        )?;
        let mut outgoing = vec![(
            EnvelopeKind::Handshake,
            state.seal_base(&Inner::Announce(Box::new(announce)))?,
        )];
        if status.left & 1 == 0 {
            let chain = state.sending.state().clone();
            let reply = DirectBody::Reply {
                announce: Box::new(state.announce(Some(&chain))?),
            };
            outgoing.push((
                EnvelopeKind::Handshake,
                state.direct(&state.roster[0], &reply)?,
            ));
            // Its Intro then needs no Reply.
            state.roster[0].introduced = true;
        }
        Ok((state, outgoing))
    }

    /// The index the next message will be sent under (tests check it moved).
    #[cfg(test)]
    pub(crate) fn sending_index(&self) -> u32 {
        self.sending.state().index
    }

    /// The talk's name, the same for every member (protocol-spec §11.10).
    pub fn name(&self) -> String {
        match &self.roles.name {
            Some(name) => name.clone(),
            None => nook_crypto::name::talk_name(&self.talk_key),
        }
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

    /// The talk's base envelope key, from the welcome's talk key: it seals only what
    /// a newcomer must send or receive before it holds anyone's chain (protocol-spec
    /// §11.6): public announcements and `Direct`s, whose content is sealed pairwise.
    fn base_key(&self) -> EnvelopeKey {
        EnvelopeKey::from_talk_key(&self.talk_key)
    }

    /// The key of this member's own envelopes (chat, farewell): its current chain's.
    fn own_key(&self) -> EnvelopeKey {
        EnvelopeKey::from_bytes(&self.sending.state().envelope_key)
    }

    /// The key whose id starts `body`, among those this member holds, and which kind
    /// of key it is.
    fn key_for(&self, body: &[u8]) -> Option<(EnvelopeKey, KeyOf)> {
        let id: [u8; KEY_ID_LEN] = EnvelopeKey::id_of(body)?;
        let base = self.base_key();
        if base.id() == id {
            return Some((base, KeyOf::Base));
        }
        // A market's owner: each offerer seat's own base key (spec §20.2).
        if let Some((seat, key)) = self
            .roles
            .offerers
            .iter()
            .filter(|o| !o.removed)
            .map(|o| (o.seat, EnvelopeKey::from_talk_key(&o.key)))
            .find(|(_, k)| k.id() == id)
        {
            return Some((key, KeyOf::Seat(seat)));
        }
        std::iter::once(&self.sending.state().envelope_key)
            .chain(
                self.roles
                    .offerers
                    .iter()
                    .map(|o| &o.chain.state().envelope_key),
            )
            .chain(
                self.roster
                    .iter()
                    .flat_map(|p| p.chain.iter().chain(p.prev_chain.iter()))
                    .map(|c| c.envelope_key()),
            )
            .map(EnvelopeKey::from_bytes)
            .find(|k| k.id() == id)
            .map(|k| (k, KeyOf::Chain))
    }

    /// This member's role in its talk.
    pub fn role(&self) -> Role {
        self.role_of(self.seat)
    }

    /// The role of the member of `seat`, as this device knows it.
    pub fn role_of(&self, seat: u8) -> Role {
        if let Some(speakers) = self.roles.speakers() {
            return match seat {
                0 => Role::Owner,
                s if s <= speakers => Role::Speaker,
                _ => Role::Listener,
            };
        }
        let offerer = match (self.roles.is_market(), seat) {
            (_, 0) | (false, _) => false,
            (true, s) if s == self.seat => !self.roles.promoted,
            // The owner knows who is still an offerer; a promoted member knows only
            // members (the owner never names an offerer to it).
            (true, s) => self
                .roles
                .offerer(s)
                .is_some_and(|o| !o.promoted && !o.removed),
        };
        match (seat, offerer) {
            (0, _) => Role::Owner,
            (_, true) => Role::Offerer,
            (_, false) => Role::Member,
        }
    }

    /// Whether `seat` is an offerer this owner shields from the group (spec §20.2).
    fn shielded(&self, seat: u8) -> bool {
        self.roles.offerer(seat).is_some_and(|o| !o.promoted)
    }

    fn announce(&self, chain: Option<&ChainState>) -> Result<Announce, CryptoError> {
        Announce::new(
            &self.identity(),
            &self.mailbox,
            self.seat,
            (self.seat != 0).then_some(&self.seat_seed),
            &self.alias,
            chain,
        )
    }

    fn seal_base(&self, inner: &Inner) -> Result<Vec<u8>, CryptoError> {
        self.base_key().seal(
            &mut rand::rng(),
            &self.mailbox,
            Purpose::Handshake,
            &inner.encode()?,
        )
    }

    fn direct(&self, to: &Peer, body: &DirectBody) -> Result<Vec<u8>, CryptoError> {
        self.direct_under(&self.base_key(), to, body)
    }

    /// A `Direct` to `to` inside a handshake envelope under `key`: the talk's base
    /// key, or (a market's owner to an offerer) that offerer's seat key.
    fn direct_under(
        &self,
        key: &EnvelopeKey,
        to: &Peer,
        body: &DirectBody,
    ) -> Result<Vec<u8>, CryptoError> {
        self.direct_as(key, Purpose::Handshake, to, body)
    }

    /// A `Direct` to `to` sealed pairwise, inside an envelope under `key` for
    /// `purpose`: handshakes in handshake envelopes, card messages in chat ones.
    fn direct_as(
        &self,
        key: &EnvelopeKey,
        purpose: Purpose,
        to: &Peer,
        body: &DirectBody,
    ) -> Result<Vec<u8>, CryptoError> {
        let identity = self.identity();
        let sealed = seal_pairwise(
            &mut rand::rng(),
            &identity,
            &to.agreement,
            &to.kem,
            &self.mailbox,
            &body.encode()?,
        )?;
        let inner = Inner::Direct(Direct {
            from: identity.public().agreement,
            to: to.agreement,
            sealed,
        });
        key.seal(&mut rand::rng(), &self.mailbox, purpose, &inner.encode()?)
    }

    /// Encrypts a chat message under this member's chain. Returns the envelope body
    /// and the event to record as sent.
    pub fn seal_text(&mut self, text: &str, now_ms: u64) -> Result<(Vec<u8>, Event), MemberError> {
        self.take_offer()?;
        let content = Content::Text {
            sent_at_ms: now_ms,
            text: text.to_string(),
            seen: self.seen(),
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

    /// An offerer writes to the owner alone, and at most the offer limit (texts and
    /// file offers) until the owner writes back (spec §20.2): one more, or the refusal.
    fn take_offer(&mut self) -> Result<(), MemberError> {
        if self.role() == Role::Listener {
            return Err(MemberError::ListenerOnly);
        }
        if self.role() != Role::Offerer {
            return Ok(());
        }
        if let Some(limit) = self.roles.offer_limit()
            && self.roles.unanswered >= limit
        {
            return Err(MemberError::OfferLimit { limit });
        }
        self.roles.unanswered = self.roles.unanswered.saturating_add(1);
        Ok(())
    }

    /// The owner of a market writes `text` to the offerer of `seat` alone, on the chain
    /// it keeps for that offerer (spec §20.2). With the event to record as sent.
    pub fn seal_text_to(
        &mut self,
        seat: u8,
        text: &str,
        now_ms: u64,
    ) -> Result<(Vec<u8>, Event), MemberError> {
        let alias = self
            .others()
            .find(|p| p.seat == seat && self.shielded(p.seat) && self.roles.is_market())
            .map(|p| p.alias.clone())
            .ok_or(MemberError::NoOfferer)?;
        let (body, id) = self.seal_for_offerer(seat, text, now_ms)?;
        Ok((
            body,
            Event::MessageTo {
                seat,
                alias,
                sent_at_ms: now_ms,
                text: text.to_string(),
                id,
            },
        ))
    }

    /// The owner of a market's message to all: one envelope per offerer that has
    /// joined and is not removed, each on that offerer's own chain (spec §20.2). The
    /// group's envelope is [`TalkState::seal_text`]'s.
    pub fn seal_to_offerers(&mut self, text: &str, now_ms: u64) -> Result<Outgoing, MemberError> {
        // A panel's listeners read the owner's group chain itself.
        if !self.is_owner() || !self.roles.is_market() {
            return Ok(Vec::new());
        }
        let seats: Vec<u8> = self
            .others()
            .filter(|p| self.shielded(p.seat))
            .map(|p| p.seat)
            .collect();
        let mut out = Vec::with_capacity(seats.len());
        for seat in seats {
            out.push((
                EnvelopeKind::Chat,
                self.seal_for_offerer(seat, text, now_ms)?.0,
            ));
        }
        Ok(out)
    }

    fn seal_for_offerer(
        &mut self,
        seat: u8,
        text: &str,
        now_ms: u64,
    ) -> Result<(Vec<u8>, [u8; 8]), MemberError> {
        let identity = self.identity();
        let mailbox = self.mailbox;
        let o = self
            .roles
            .offerer_mut(seat)
            .filter(|o| !o.removed)
            .ok_or(MemberError::NoOfferer)?;
        // The offerer knows no one but the owner: an empty summary.
        let content = Content::Text {
            sent_at_ms: now_ms,
            text: text.to_string(),
            seen: Vec::new(),
        };
        let msg = seal_group(&identity, &mut o.chain, &mailbox, &content)?;
        let id = msg.header.message_id();
        o.unanswered = 0;
        let key = EnvelopeKey::from_bytes(&o.chain.state().envelope_key);
        key.seal(
            &mut rand::rng(),
            &mailbox,
            Purpose::Chat,
            &Inner::Group(msg).encode()?,
        )
        .map(|body| (body, id))
        .map_err(|e| match e {
            CryptoError::Padding(p) => MemberError::TooLong(p.to_string()),
            e => MemberError::Crypto(e),
        })
    }

    /// The owner removes the offerer called `alias`: its keys are erased and its
    /// envelopes skipped unread from now on (spec §20.2). The relay still counts its
    /// seat: version 1 cannot evict one.
    pub fn remove_offerer(&mut self, alias: &str) -> Result<Event, MemberError> {
        let seat = self
            .others()
            .find(|p| p.alias == alias && self.shielded(p.seat) && self.roles.is_market())
            .map(|p| p.seat)
            .ok_or(MemberError::NoOfferer)?;
        let mut dropped = Vec::new();
        if let Some(p) = self.roster.iter_mut().find(|p| p.seat == seat) {
            for c in p.chain.iter().chain(p.prev_chain.iter()) {
                dropped.push(EnvelopeKey::from_bytes(c.envelope_key()).id());
            }
            p.chain = None;
            p.prev_chain = None;
            p.left = true;
        }
        if let Some(o) = self.roles.offerer_mut(seat) {
            dropped.push(EnvelopeKey::from_talk_key(&o.key).id());
            o.key.zeroize();
            o.removed = true;
            o.dropped = dropped;
        }
        Ok(Event::OffererRemoved {
            seat,
            alias: alias.to_string(),
        })
    }

    /// The owner takes the offerer called `alias` into the group (spec §20.2): sends
    /// it, pairwise under its seat's key, the group's talk key and the owner's group
    /// chain. It then announces itself to the group like a newcomer.
    pub fn promote_offerer(&mut self, alias: &str) -> Result<Handled, MemberError> {
        let peer = self
            .others()
            .find(|p| p.alias == alias && self.shielded(p.seat) && self.roles.is_market())
            .cloned()
            .ok_or(MemberError::NoOfferer)?;
        let o = self
            .roles
            .offerer(peer.seat)
            .filter(|o| !o.removed)
            .ok_or(MemberError::NoOfferer)?;
        let key = EnvelopeKey::from_talk_key(&o.key);
        let body = DirectBody::Promote {
            talk_key: nook_crypto::secret::Secret32::from_bytes(self.talk_key),
            chain: self.sending.state().clone(),
        };
        let sealed = self.direct_under(&key, &peer, &body)?;
        if let Some(o) = self.roles.offerer_mut(peer.seat) {
            o.promoted = true;
        }
        Ok(Handled {
            events: vec![Event::Promoted {
                seat: peer.seat,
                alias: peer.alias,
            }],
            outgoing: vec![(EnvelopeKind::Handshake, sealed)],
            ..Handled::default()
        })
    }

    /// An offerer is taken into the group: the group's talk key replaces its seat's,
    /// the owner's group chain its chain towards us alone (kept for late messages),
    /// and it announces itself publicly under the group's key, as a newcomer does.
    fn on_promote(
        &mut self,
        talk_key: &nook_crypto::secret::Secret32,
        chain: ChainState,
        from: &[u8; 32],
        out: &mut Handled,
    ) {
        let from_owner = self
            .roster
            .iter()
            .any(|p| p.seat == 0 && p.agreement == *from && !p.left);
        if self.role() != Role::Offerer || !from_owner {
            out.events
                .push(Event::Warning("a promotion was ignored".into()));
            return;
        }
        self.roles.name = Some(self.name());
        self.talk_key = *talk_key.expose();
        if let Some(owner) = self.roster.iter_mut().find(|p| p.seat == 0) {
            owner.prev_chain = owner.chain.take();
            owner.chain = Some(ReceivingChain::new(chain));
            owner.accounted = (0, 0);
        }
        self.roles.promoted = true;
        self.roles.unanswered = 0;
        self.intro_chain = Some(self.sending.state().clone());
        match Announce::new(
            &self.identity(),
            &self.mailbox,
            self.seat,
            Some(&self.seat_seed),
            "",
            None,
        )
        .and_then(|a| self.seal_base(&Inner::Announce(Box::new(a))))
        {
            Ok(body) => out.outgoing.push((EnvelopeKind::Handshake, body)),
            Err(e) => out.events.push(Event::Warning(format!(
                "could not announce us to the group: {e}"
            ))),
        }
        out.events.push(Event::Promoted {
            seat: self.seat,
            alias: self.alias.clone(),
        });
    }

    /// The "I am leaving" message, sent before `Leave` so the others know who left.
    pub fn seal_leaving(&mut self, now_ms: u64) -> Result<Vec<u8>, MemberError> {
        self.seal_content(&Content::Leaving {
            sent_at_ms: now_ms,
            seen: self.seen(),
        })
        .map(|(body, _)| body)
    }

    /// Seals the offer of a file; with the event to record as sent.
    pub fn seal_file_offer(
        &mut self,
        offer: &FileOffer,
        now_ms: u64,
    ) -> Result<(Vec<u8>, Event), MemberError> {
        self.take_offer()?;
        let content = Content::FileOffer {
            sent_at_ms: now_ms,
            file_id: offer.file_id,
            name: offer.name.clone(),
            size: offer.size,
            chunks: offer.chunks,
            sha256: offer.sha256,
            seen: self.seen(),
        };
        let (body, _) = self.seal_content(&content)?;
        Ok((
            body,
            Event::FileOffered {
                seat: self.seat,
                alias: self.alias.clone(),
                sent_at_ms: now_ms,
                own: true,
                offer: offer.clone(),
            },
        ))
    }

    /// Seals chunk `index` of the file `file_id`.
    pub fn seal_file_chunk(
        &mut self,
        file_id: [u8; 16],
        index: u32,
        bytes: &[u8],
    ) -> Result<Vec<u8>, MemberError> {
        let content = Content::FileChunk {
            file_id,
            index,
            bytes: bytes.to_vec(),
            seen: self.seen(),
        };
        self.seal_content(&content).map(|(body, _)| body)
    }

    /// Seals `content` as this member's next group message; with its message id.
    fn seal_content(&mut self, content: &Content) -> Result<(Vec<u8>, [u8; 8]), MemberError> {
        let msg = seal_group(&self.identity(), &mut self.sending, &self.mailbox, content)?;
        let id = msg.header.message_id();
        let body = self
            .own_key()
            .seal(
                &mut rand::rng(),
                &self.mailbox,
                Purpose::Chat,
                &Inner::Group(msg).encode()?,
            )
            .map_err(|e| match e {
                CryptoError::Padding(p) => MemberError::TooLong(p.to_string()),
                e => MemberError::Crypto(e),
            })?;
        Ok((body, id))
    }

    /// The end-to-end close signal, sealed for the relay to pass on.
    pub fn farewell(&self) -> Result<Vec<u8>, CryptoError> {
        let mut seen = self.seen();
        seen.push(Seen {
            seat: self.seat,
            epoch: self.sending.state().epoch,
            next: self.sending.state().index,
        });
        let f = Farewell::new(&self.identity(), &self.mailbox, seen)?;
        // Under the base key: every member must be able to check it, including one
        // that has none of the closer's chains yet (the closer may never have been
        // online to introduce itself). It says only who closed.
        self.base_key().seal(
            &mut rand::rng(),
            &self.mailbox,
            Purpose::Farewell,
            &Inner::Farewell(f).encode()?,
        )
    }

    /// Whether this member holds every message that `seen` shows its author had (of the
    /// chains it holds; others cannot be compared).
    fn met(&self, seen: &[Seen]) -> bool {
        seen.iter().all(|s| {
            s.seat == self.seat
                || self
                    .roster
                    .iter()
                    .find(|p| p.seat == s.seat)
                    .and_then(|p| {
                        p.chain
                            .iter()
                            .chain(p.prev_chain.iter())
                            .find(|c| c.epoch() == s.epoch)
                    })
                    .is_none_or(|c| c.next_index() >= s.next)
        })
    }

    /// Shows the waiting messages whose dependencies arrived, and those held since
    /// `due_ms` or before (with what never came reported lost), oldest first; until
    /// none changes.
    fn release_waiting(&mut self, due_ms: Option<u64>, out: &mut Handled) {
        for _ in 0..=MAX_WAITING {
            let Some(i) = self
                .waiting
                .iter()
                .position(|w| due_ms.is_some_and(|due| w.since_ms <= due) || self.met(&w.seen))
            else {
                return;
            };
            let w = self.waiting.remove(i);
            self.claims(&w.seen, false, out);
            out.events.extend(w.events);
        }
    }

    /// The end of a batch of envelopes (one fetch, one run of pushes): what has waited
    /// `patience_ms` for messages that did not come is shown now, and those reported
    /// lost. A one-shot read passes 0: it shows everything before it ends.
    pub fn end_of_batch(&mut self, now_ms: u64, patience_ms: u64) -> Handled {
        let mut out = Handled::default();
        self.release_waiting(Some(now_ms.saturating_sub(patience_ms)), &mut out);
        out
    }

    /// When the oldest waiting message has had `patience_ms`: the time to call
    /// [`TalkState::end_of_batch`] again, if anything waits.
    pub fn waiting_until(&self, patience_ms: u64) -> Option<u64> {
        self.waiting
            .iter()
            .map(|w| w.since_ms.saturating_add(patience_ms))
            .min()
    }

    #[cfg(test)]
    pub(crate) fn base_key_id(&self) -> [u8; KEY_ID_LEN] {
        self.base_key().id()
    }

    #[cfg(test)]
    pub(crate) fn seen_for_test(&self) -> Vec<Seen> {
        self.seen()
    }

    /// What this member has received of every other member's current chain.
    fn seen(&self) -> Vec<Seen> {
        // The group learns nothing of a market's offerers, not even their counts.
        self.roster
            .iter()
            .filter(|p| !self.shielded(p.seat))
            .filter_map(|p| {
                let c = p.chain.as_ref()?;
                Some(Seen {
                    seat: p.seat,
                    epoch: c.epoch(),
                    next: c.next_index(),
                })
            })
            .collect()
    }

    /// Reports the messages that `seen` (someone else's summary) shows exist and this
    /// member never received. With `own`, also ours that the summary's author lacks.
    fn claims(&mut self, seen: &[Seen], own: bool, out: &mut Handled) {
        let mut roster = std::mem::take(&mut self.roster);
        self.claims_on(&mut roster, seen, own, out);
        self.roster = roster;
    }

    fn claims_on(&self, roster: &mut [Peer], seen: &[Seen], own: bool, out: &mut Handled) {
        for s in seen {
            if own && s.seat == self.seat {
                let mine = self.sending.state();
                if s.epoch == mine.epoch && s.next < mine.index {
                    out.events.push(Event::Missing {
                        seat: self.seat,
                        alias: self.alias.clone(),
                        count: mine.index - s.next,
                    });
                }
                continue;
            }
            let Some(p) = roster.iter_mut().find(|p| p.seat == s.seat) else {
                continue;
            };
            let Some(from) = p
                .chain
                .iter()
                .chain(p.prev_chain.iter())
                .find(|c| c.epoch() == s.epoch)
                .map(|c| c.next_index())
            else {
                continue; // A chain we do not hold (yet): nothing to compare.
            };
            let count = p.account(s.epoch, from, s.next);
            if count > 0 {
                out.events.push(Event::Missing {
                    seat: p.seat,
                    alias: p.alias.clone(),
                    count,
                });
            }
        }
    }

    /// What the closer's summary says this member never received (or, for our own
    /// seat, never reached the closer); shown before the talk's end.
    pub fn close_summary(&self, farewell: &[u8]) -> Vec<Event> {
        let mut out = Handled::default();
        let summary = self
            .base_key()
            .open(&self.mailbox, Purpose::Farewell, farewell)
            .ok()
            .and_then(|p| Inner::decode(&p).ok())
            .and_then(|inner| match inner {
                Inner::Farewell(f) if f.verify(&self.mailbox).is_ok() => Some(f),
                _ => None,
            })
            .filter(|f| self.roster.iter().any(|p| p.pseudonym == f.sender));
        if let Some(f) = summary {
            let mut roster = self.roster.clone();
            self.claims_on(&mut roster, &f.seen, true, &mut out);
        }
        out.events
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
            .base_key()
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
        if self.key_for(&env.body).is_none() {
            // A market's offerer (and its owner, for a removed offerer) sees every
            // envelope of the talk; those of others are under keys it will never hold,
            // so they are skipped unread, not held (spec §20.2).
            let skip = (self.roles.shields() && !self.is_owner())
                || EnvelopeKey::id_of(&env.body).is_some_and(|id| self.roles.dropped(&id));
            if !skip {
                self.hold(env.clone(), &mut out);
            }
            return out;
        }
        self.open_envelope(env, &mut out);
        self.release_held(&mut out);
        out
    }

    /// Keeps an envelope whose key has not arrived yet, within bounds.
    fn hold(&mut self, env: Envelope, out: &mut Handled) {
        self.held.push(env);
        while self.held.len() > MAX_HELD
            || self.held.iter().map(|e| e.body.len()).sum::<usize>() > MAX_HELD_BYTES
        {
            let dropped = self.held.remove(0);
            out.events.push(Event::Warning(format!(
                "envelope {} could not be opened: altered in transit, not from a member, or its key never came",
                dropped.seq.0
            )));
        }
    }

    /// Opens the held envelopes whose keys have arrived, in seq order, until none more
    /// opens (each pass opens one or stops, so at most `MAX_HELD` passes).
    fn release_held(&mut self, out: &mut Handled) {
        for _ in 0..=MAX_HELD {
            let Some(i) = self
                .held
                .iter()
                .position(|e| self.key_for(&e.body).is_some())
            else {
                return;
            };
            let env = self.held.remove(i);
            self.open_envelope(&env, out);
        }
    }

    fn open_envelope(&mut self, env: &Envelope, out: &mut Handled) {
        let Some((key, base)) = self.key_for(&env.body) else {
            return;
        };
        let plain = match key.open(&self.mailbox, Purpose::from(env.kind), &env.body) {
            Ok(p) => p,
            Err(_) => {
                out.events.push(Event::Warning(format!(
                    "envelope {} could not be opened: altered in transit or not from a member",
                    env.seq.0
                )));
                return;
            }
        };
        let inner = match Inner::decode(&plain) {
            Ok(i) => i,
            Err(_) => {
                out.events.push(Event::Warning(format!(
                    "envelope {} is malformed",
                    env.seq.0
                )));
                return;
            }
        };
        // Handshakes travel under the base key, chat only under a member's own key.
        match (env.kind, base, inner) {
            (EnvelopeKind::Handshake, KeyOf::Base, Inner::Announce(a)) => self.on_announce(*a, out),
            (EnvelopeKind::Handshake, KeyOf::Base, Inner::Direct(d)) => self.on_direct(d, out),
            // An offerer's handshakes, under its seat's key (spec §20.2).
            (EnvelopeKind::Handshake, KeyOf::Seat(seat), Inner::Announce(a)) => {
                self.on_offerer_announce(seat, *a, out)
            }
            (EnvelopeKind::Handshake, KeyOf::Seat(seat), Inner::Direct(d)) => {
                self.on_offerer_direct(seat, d, out)
            }
            (EnvelopeKind::Chat, KeyOf::Chain, Inner::Group(g)) => self.on_group(&g, out),
            // Card messages ride the sender's chat envelopes (spec §19.3).
            (EnvelopeKind::Chat, KeyOf::Chain, Inner::Direct(d)) => self.on_card_direct(d, out),
            _ => out.events.push(Event::Warning(format!(
                "envelope {} has an unexpected kind",
                env.seq.0
            ))),
        }
    }

    fn on_announce(&mut self, a: Announce, out: &mut Handled) {
        if let Err(e) = a.verify(&self.mailbox, &self.commitments) {
            out.events.push(Event::Warning(format!(
                "a join announcement was rejected ({e}): someone without a genuine seat tried to join"
            )));
            return;
        }
        let b = &a.body;
        if self.roles.offerer(b.seat).is_some_and(|o| o.promoted) {
            // The offerer we promoted, announcing itself to the group: it holds our
            // chain from the promotion, and we its.
            return;
        }
        if b.seat == self.seat || b.seat == 0 || self.roster.iter().any(|p| p.seat == b.seat) {
            out.events.push(Event::Warning(format!(
                "a second announcement for seat {} was ignored",
                b.seat
            )));
            return;
        }
        // Only the keys are taken from a public announcement: a chain or alias in it
        // would be readable by whoever kept the talk key, so a conforming newcomer
        // sends them in its Reply, and none here is used.
        let mut peer = Peer::from_announce(b, None);
        peer.introduced = true;
        // Introduce ourselves to the newcomer, with our chain as it stands now.
        match self.announce(Some(self.sending.state())).and_then(|mine| {
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
        self.roster.push(peer);
    }

    /// A market's owner hears an offerer announce itself under its seat's key: it
    /// records the offerer and introduces itself with the chain it keeps for that
    /// offerer alone, never the group's (spec §20.2).
    fn on_offerer_announce(&mut self, seat: u8, a: Announce, out: &mut Handled) {
        let b = &a.body;
        if a.verify(&self.mailbox, &self.commitments).is_err() || b.seat != seat {
            out.events.push(Event::Warning(format!(
                "an announcement for offerer seat {seat} was rejected"
            )));
            return;
        }
        if self.roster.iter().any(|p| p.seat == seat) {
            return; // Replayed: the first claim of a seat wins.
        }
        let mut peer = Peer::from_announce(b, None);
        peer.introduced = true;
        let Some(o) = self.roles.offerer(seat) else {
            return;
        };
        let key = EnvelopeKey::from_talk_key(&o.key);
        // A panel's listener reads the owner's group messages: it gets the group
        // chain. An offerer gets the chain made for it alone.
        let chain = if self.roles.is_panel() {
            self.sending.state().clone()
        } else {
            o.chain.state().clone()
        };
        match self.announce(Some(&chain)).and_then(|mine| {
            self.direct_under(
                &key,
                &peer,
                &DirectBody::Intro {
                    announce: Box::new(mine),
                },
            )
        }) {
            Ok(body) => out.outgoing.push((EnvelopeKind::Handshake, body)),
            Err(e) => out.events.push(Event::Warning(format!(
                "could not introduce us to an offerer: {e}"
            ))),
        }
        self.invites.retain(|(s, _)| *s != seat);
        self.roster.push(peer);
        if self.roles.is_panel() {
            let speakers: Vec<u8> = self
                .others()
                .filter(|p| !self.shielded(p.seat) && p.chain.is_some())
                .map(|p| p.seat)
                .collect();
            for speaker in speakers {
                self.tell_listeners(speaker, Some(seat), out);
            }
        }
    }

    /// A panel's owner tells its listeners (or only `only`) of the speaker of `seat`:
    /// its keys, alias and chain where the owner's copy stands (spec §20.3), each under
    /// that listener's seat key.
    fn tell_listeners(&self, seat: u8, only: Option<u8>, out: &mut Handled) {
        let Some(p) = self.roster.iter().find(|p| p.seat == seat && !p.left) else {
            return;
        };
        let Some(chain) = p.chain.as_ref().map(ReceivingChain::position) else {
            return;
        };
        let body = DirectBody::Speaker {
            seat,
            pseudonym: p.pseudonym,
            alias: p.alias.clone(),
            chain,
        };
        self.to_listeners(only, &body, "tell a listener of a speaker", out);
    }

    /// A panel's owner sends `body` to each of its listeners (or only `only`), each under
    /// that listener's seat key; `what` names it in the warning if one cannot be sealed.
    fn to_listeners(&self, only: Option<u8>, body: &DirectBody, what: &str, out: &mut Handled) {
        let listeners: Vec<Peer> = self
            .others()
            .filter(|l| self.shielded(l.seat) && only.is_none_or(|s| s == l.seat))
            .cloned()
            .collect();
        for l in &listeners {
            let Some(o) = self.roles.offerer(l.seat) else {
                continue;
            };
            let key = EnvelopeKey::from_talk_key(&o.key);
            match self.direct_under(&key, l, body) {
                Ok(b) => out.outgoing.push((EnvelopeKind::Handshake, b)),
                Err(e) => out
                    .events
                    .push(Event::Warning(format!("could not {what}: {e}"))),
            }
        }
    }

    /// A panel's listener hears of a speaker from the owner: records it, or takes its
    /// newer chain (keeping the one before for late messages).
    fn on_speaker(
        &mut self,
        seat: u8,
        pseudonym: [u8; 32],
        alias: String,
        chain: ChainState,
        from: &[u8; 32],
        out: &mut Handled,
    ) {
        let from_owner = self
            .roster
            .iter()
            .any(|p| p.seat == 0 && p.agreement == *from);
        let speaker = self
            .roles
            .speakers()
            .is_some_and(|n| (1..=n).contains(&seat));
        if self.role() != Role::Listener || !from_owner || !speaker || !valid_alias(&alias) {
            out.events
                .push(Event::Warning("news of a speaker was ignored".into()));
            return;
        }
        match self.roster.iter_mut().find(|p| p.seat == seat) {
            Some(p) => {
                if p.pseudonym != pseudonym {
                    out.events
                        .push(Event::Warning("news of a speaker was ignored".into()));
                    return;
                }
                let newer = p.chain.as_ref().is_none_or(|c| chain.epoch > c.epoch());
                if newer {
                    p.prev_chain = p.chain.take();
                    p.chain = Some(ReceivingChain::new(chain));
                }
            }
            None => {
                out.events.push(Event::MemberJoined {
                    seat,
                    alias: alias.clone(),
                });
                // A listener never writes to a speaker: it needs its pseudonym key
                // (to check its messages) and its chain, nothing else.
                self.roster.push(Peer {
                    seat,
                    pseudonym,
                    agreement: [0; 32],
                    kem: [0; KEM_PUBLIC_LEN],
                    relay_auth: [0; 32],
                    alias,
                    chain: Some(ReceivingChain::new(chain)),
                    prev_chain: None,
                    left: false,
                    accounted: (0, 0),
                    introduced: true,
                });
            }
        }
    }

    /// A market's owner takes only a `Reply` under an offerer's seat key, and only for
    /// that seat: nothing there may draw the group's chain out of the owner.
    fn on_offerer_direct(&mut self, seat: u8, d: Direct, out: &mut Handled) {
        if d.to != self.own_agreement {
            return;
        }
        let reply = open_pairwise(&self.identity(), &d.from, &self.mailbox, &d.sealed)
            .ok()
            .and_then(|plain| DirectBody::decode(&plain).ok());
        match reply {
            Some(DirectBody::Reply { announce }) if announce.body.seat == seat => {
                self.on_reply(&announce, &d.from, out)
            }
            _ => out.events.push(Event::Warning(format!(
                "a direct message under offerer seat {seat}'s key was ignored"
            ))),
        }
    }

    /// Checks an announcement that came pairwise from `from` (an `Intro` or a `Reply`):
    /// it verifies, names its sender's agreement key, is not for our seat, carries a
    /// chain and a valid alias, and matches the keys we already hold for that seat.
    /// Returns the roster index of a seat we know.
    fn check_pairwise_announce(&self, a: &Announce, from: &[u8; 32]) -> Result<Option<usize>, ()> {
        let b = &a.body;
        let valid = a.verify(&self.mailbox, &self.commitments).is_ok()
            && b.agreement == *from
            && b.seat != self.seat
            && b.chain.is_some()
            && valid_alias(&b.alias);
        if !valid {
            return Err(());
        }
        let known = self.roster.iter().position(|p| p.seat == b.seat);
        match known {
            Some(i) => {
                let p = &self.roster[i];
                let same = p.pseudonym == b.pseudonym
                    && p.agreement == b.agreement
                    && p.kem == *b.kem
                    && p.relay_auth == b.relay_auth;
                if same { Ok(Some(i)) } else { Err(()) }
            }
            None => Ok(None),
        }
    }

    fn on_direct(&mut self, d: Direct, out: &mut Handled) {
        if d.to != self.own_agreement {
            return; // Addressed to another member.
        }
        let identity = self.identity();
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
            DirectBody::Intro { announce } => self.on_intro(&announce, &d.from, out),
            DirectBody::Reply { announce } => self.on_reply(&announce, &d.from, out),
            DirectBody::Promote { talk_key, chain } => {
                self.on_promote(&talk_key, chain, &d.from, out)
            }
            DirectBody::CardReveal { .. }
            | DirectBody::CardOffer { .. }
            | DirectBody::CardAccept { .. }
            | DirectBody::CardDecline { .. } => out.events.push(Event::Warning(
                "a card message in a handshake envelope was ignored".into(),
            )),
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
                let seat = p.seat;
                if self.is_owner() && self.roles.is_panel() && !self.shielded(seat) {
                    self.tell_listeners(seat, None, out);
                }
            }
            DirectBody::Speaker {
                seat,
                pseudonym,
                alias,
                chain,
            } => self.on_speaker(seat, pseudonym, alias, chain, &d.from, out),
        }
    }

    /// A card message (protocol-spec §19.3): from a current member, to us; a reveal
    /// must verify for this talk, that member's pseudonym and ours.
    fn on_card_direct(&mut self, d: Direct, out: &mut Handled) {
        if d.to != self.own_agreement {
            return; // Addressed to another member.
        }
        let Some(p) = self
            .roster
            .iter()
            .find(|p| p.agreement == d.from && !p.left)
        else {
            out.events.push(Event::Warning(
                "a card message from someone who is not a member was ignored".into(),
            ));
            return;
        };
        let plain = match open_pairwise(&self.identity(), &d.from, &self.mailbox, &d.sealed) {
            Ok(p) => p,
            Err(_) => {
                out.events.push(Event::Warning(
                    "a direct message could not be opened".into(),
                ));
                return;
            }
        };
        let (seat, alias, pseudonym) = (p.seat, p.alias.clone(), p.pseudonym);
        let Ok(body) = DirectBody::decode(&plain) else {
            out.events.push(Event::Warning(format!(
                "a card message from {alias} is malformed or out of limits"
            )));
            return;
        };
        let check = |r: &CardReveal| r.verify(&self.mailbox, &pseudonym, &self.own_pseudonym);
        let news = match body {
            DirectBody::CardReveal { reveal } if check(&reveal).is_ok() => {
                CardNews::Revealed { seat, reveal }
            }
            DirectBody::CardAccept { exchange, reveal } if check(&reveal).is_ok() => {
                CardNews::Accepted {
                    seat,
                    exchange,
                    reveal,
                }
            }
            DirectBody::CardOffer {
                exchange,
                fields,
                keepable,
            } => CardNews::Offered {
                seat,
                exchange,
                fields,
                keepable,
            },
            DirectBody::CardDecline { exchange } => CardNews::Declined { seat, exchange },
            DirectBody::CardReveal { .. } | DirectBody::CardAccept { .. } => {
                out.events.push(Event::Warning(format!(
                    "a card from {alias} does not verify for this talk and was not shown"
                )));
                return;
            }
            _ => {
                out.events.push(Event::Warning(
                    "a handshake message in a chat envelope was ignored".into(),
                ));
                return;
            }
        };
        out.cards.push(news);
    }

    /// This member's pseudonym public key.
    pub fn own_pseudonym(&self) -> [u8; 32] {
        self.own_pseudonym
    }

    /// The current member (not us) called `alias`.
    pub fn member_by_alias(&self, alias: &str) -> Option<&Peer> {
        self.others().find(|p| p.alias == alias)
    }

    /// Seals a card message for the current member of `seat`: pairwise to it, inside
    /// a chat envelope under our own envelope key, like our messages (spec §19.3).
    pub fn seal_card(&self, seat: u8, body: &DirectBody) -> Result<Vec<u8>, MemberError> {
        let to = self
            .others()
            .find(|p| p.seat == seat)
            .ok_or(MemberError::Crypto(CryptoError::BadKey))?;
        Ok(self.direct_as(&self.own_key(), Purpose::Chat, to, body)?)
    }

    /// An existing member introduces itself to us, the newcomer: take its chain and
    /// answer with ours (from where it stood when we announced).
    fn on_intro(&mut self, announce: &Announce, from: &[u8; 32], out: &mut Handled) {
        let b = &announce.body;
        let known = match self.check_pairwise_announce(announce, from) {
            // The creator's keys came with the welcome: an intro claiming seat 0 must
            // carry exactly those keys; any other seat is new to us.
            Ok(None) if b.seat != 0 => None,
            Ok(Some(i)) => Some(i),
            _ => {
                out.events.push(Event::Warning(format!(
                    "an introduction claiming seat {} was rejected",
                    b.seat
                )));
                return;
            }
        };
        let Some(chain) = b.chain.clone() else {
            return;
        };
        let peer = match known {
            Some(i) => {
                let p = &mut self.roster[i];
                if p.chain.is_some() {
                    return; // A replayed intro changes nothing.
                }
                p.chain = Some(ReceivingChain::new(chain));
                if p.seat != 0 {
                    // It announced itself while we did: it is new to us too.
                    p.alias = b.alias.clone();
                    out.events.push(Event::MemberJoined {
                        seat: b.seat,
                        alias: b.alias.clone(),
                    });
                }
                if p.introduced {
                    return; // Our Intro gave it our chain already.
                }
                p.clone()
            }
            None => {
                let p = Peer::from_announce(b, Some(chain));
                out.events.push(Event::MemberJoined {
                    seat: b.seat,
                    alias: b.alias.clone(),
                });
                self.roster.push(p.clone());
                p
            }
        };
        let chain = self
            .intro_chain
            .clone()
            .unwrap_or_else(|| self.sending.state().clone());
        match self.announce(Some(&chain)).and_then(|mine| {
            self.direct(
                &peer,
                &DirectBody::Reply {
                    announce: Box::new(mine),
                },
            )
        }) {
            Ok(body) => out.outgoing.push((EnvelopeKind::Handshake, body)),
            Err(e) => out.events.push(Event::Warning(format!(
                "could not answer {}'s introduction: {e}",
                peer.alias
            ))),
        }
        // Once every member has our chain from the start, its start is erased
        // (forward secrecy for what we sent before).
        let members = self.status.map_or(0, |s| usize::from(s.members));
        // In a market or a panel a member knows only whom the owner let it know,
        // whatever the relay counts.
        let offerer = self.roles.shields();
        if self.others().all(|p| p.chain.is_some())
            && (offerer || self.others().count() + 1 >= members)
        {
            self.intro_chain = None;
        }
    }

    /// A newcomer answers our introduction with its alias and chain.
    fn on_reply(&mut self, announce: &Announce, from: &[u8; 32], out: &mut Handled) {
        let b = &announce.body;
        let i = match self.check_pairwise_announce(announce, from) {
            Ok(Some(i)) if self.roster[i].chain.is_none() && b.seat != 0 => i,
            // Its Intro (we joined at the same time) or an earlier Reply came first.
            Ok(Some(_)) => return,
            _ => {
                out.events.push(Event::Warning(format!(
                    "a reply claiming seat {} was rejected",
                    b.seat
                )));
                return;
            }
        };
        let Some(chain) = b.chain.clone() else {
            return;
        };
        let p = &mut self.roster[i];
        p.chain = Some(ReceivingChain::new(chain));
        p.alias = b.alias.clone();
        out.events.push(Event::MemberJoined {
            seat: b.seat,
            alias: b.alias.clone(),
        });
        if self.is_owner() && self.roles.is_panel() && !self.shielded(b.seat) {
            self.tell_listeners(b.seat, None, out);
        }
    }

    fn on_group(&mut self, g: &nook_crypto::message::GroupMessage, out: &mut Handled) {
        if g.header.sender == self.own_pseudonym {
            // Our own message, echoed to this process by the relay: the process that
            // sent it recorded it in the history already.
            return;
        }
        if self.is_owner()
            && self.roles.is_panel()
            && let Some(seat) = self
                .roster
                .iter()
                .find(|p| p.pseudonym == g.header.sender)
                .map(|p| p.seat)
            && self.shielded(seat)
        {
            // A conforming listener's client refuses to write (spec §20.3).
            out.events.push(Event::Warning(format!(
                "a message from listener seat {seat} was dropped: listeners read only"
            )));
            return;
        }
        let mailbox = self.mailbox;
        let owner = self.is_owner();
        let limit = self.roles.offer_limit();
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
                let Delivery {
                    late,
                    missed,
                    index,
                } = delivery;
                if !late {
                    let epoch = g.header.epoch;
                    let count = p.account(epoch, index - missed, index);
                    p.account(epoch, index, index.saturating_add(1));
                    if count > 0 {
                        out.events.push(Event::Missing {
                            seat: p.seat,
                            alias: p.alias.clone(),
                            count,
                        });
                    }
                }
                let offer = matches!(content, Content::Text { .. } | Content::FileOffer { .. });
                if let (true, true, Some(limit)) = (offer, owner, limit)
                    && let Some(o) = self.roles.offerer_mut(p.seat).filter(|o| !o.promoted)
                {
                    // A conforming offerer's client refuses past the limit; what a
                    // modified one sends past it is dropped unshown (spec §20.2).
                    o.unanswered = o.unanswered.saturating_add(1);
                    if o.unanswered > limit {
                        out.events.push(Event::OverLimit {
                            seat: p.seat,
                            alias: p.alias.clone(),
                        });
                        return;
                    }
                }
                if offer && !owner && p.seat == 0 {
                    // The owner wrote: an offerer may offer again.
                    self.roles.unanswered = 0;
                }
                let seen = content.seen().to_vec();
                let mut events = Vec::new();
                match content {
                    Content::Text {
                        sent_at_ms,
                        ref text,
                        ..
                    } => events.push(Event::Message {
                        seat: p.seat,
                        alias: p.alias.clone(),
                        sent_at_ms,
                        text: text.clone(),
                        own: false,
                        late,
                        missed,
                        id: Some(g.header.message_id()),
                    }),
                    Content::FileOffer {
                        sent_at_ms,
                        file_id,
                        ref name,
                        size,
                        chunks,
                        sha256,
                        ..
                    } => {
                        let offer = FileOffer {
                            file_id,
                            name: name.clone(),
                            size,
                            chunks,
                            sha256,
                        };
                        out.files.push(FileData::Offer {
                            seat: p.seat,
                            offer: offer.clone(),
                        });
                        events.push(Event::FileOffered {
                            seat: p.seat,
                            alias: p.alias.clone(),
                            sent_at_ms,
                            own: false,
                            offer,
                        });
                    }
                    Content::FileChunk {
                        file_id,
                        index,
                        ref bytes,
                        ..
                    } => out.files.push(FileData::Chunk {
                        seat: p.seat,
                        file_id,
                        index,
                        bytes: zeroize::Zeroizing::new(bytes.clone()),
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
                if !events.is_empty() && !self.met(&seen) && self.waiting.len() < MAX_WAITING {
                    self.waiting.push(Waiting {
                        events,
                        seen,
                        since_ms: crate::now_ms(),
                    });
                } else {
                    self.claims(&seen, false, out);
                    out.events.extend(events);
                }
                self.release_waiting(None, out);
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
        // An offerer never held the group's chain: nothing to rotate away from it. A
        // panel's listener held the speakers': they rotate.
        if !self.shielded(seat) || self.roles.is_panel() {
            self.rotate(out);
        }
    }

    /// Starts a fresh sending chain after a member left and gives it, pairwise, to
    /// every remaining member: the one who left never learns it.
    fn rotate(&mut self, out: &mut Handled) {
        // A listener's chain is the owner's alone to know, and it never writes.
        if self.role() == Role::Listener {
            return;
        }
        let epoch = self.sending.state().epoch.saturating_add(1);
        self.sending = SendingChain::new(&mut rand::rng(), epoch);
        // Members that have not had our Reply yet get the new chain from the rotation.
        self.intro_chain = None;
        let chain: ChainState = self.sending.state().clone();
        let body = DirectBody::SenderKey { chain };
        let peers: Vec<Peer> = self
            .others()
            .filter(|p| !self.shielded(p.seat))
            .cloned()
            .collect();
        for p in &peers {
            match self.direct(p, &body) {
                Ok(b) => out.outgoing.push((EnvelopeKind::Handshake, b)),
                Err(e) => out.events.push(Event::Warning(format!(
                    "could not send a new sender key: {e}"
                ))),
            }
        }
        // A panel's owner: its listeners read its new chain too.
        if self.is_owner() && self.roles.is_panel() {
            self.to_listeners(None, &body, "send a new sender key", out);
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
        // A panel's speaker does not know the listeners, which held its chain: when a
        // seat it does not know leaves, it rotates all the same (spec §20.3).
        let before = self.status.map_or(0, |s| s.left);
        let unknown_left = (1..64u8).any(|seat| {
            let bit = 1u64 << seat;
            status.left & bit != 0
                && before & bit == 0
                && !self.roster.iter().any(|p| p.seat == seat)
        });
        if self.role() == Role::Speaker && unknown_left {
            self.rotate(&mut out);
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
    use crate::testkit::{Net, status, three};
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
            h.events.iter().any(|e| matches!(
                e,
                Event::Missing {
                    seat: 0,
                    count: 2,
                    ..
                }
            )),
            "{:?}",
            h.events
        );
        let h = b.handle_envelope(&env(base + 2, &m[0]));
        assert!(
            matches!(&h.events[..], [Event::Message { late: true, .. }]),
            "{:?}",
            h.events
        );
    }

    /// Delivers to `m` everything pending except the envelopes of `skip` (the seqs a
    /// relay drops for it).
    fn deliver_dropping(net: &mut Net, m: &mut TalkState, skip: &[u64]) -> Vec<Event> {
        let pending: Vec<Envelope> = net
            .log
            .iter()
            .filter(|(from, e)| *from != m.seat && e.seq.0 > m.cursor && !skip.contains(&e.seq.0))
            .map(|(_, e)| e.clone())
            .collect();
        let mut events = Vec::new();
        for e in pending {
            let h = m.handle_envelope(&e);
            events.extend(h.events);
            for (k, b) in h.outgoing {
                net.put(m.seat, k, b);
            }
        }
        events.extend(m.end_of_batch(crate::now_ms(), 0).events);
        // Never delivered later either: `m` has moved past them.
        m.cursor = skip.iter().copied().fold(m.cursor, u64::max);
        events
    }

    fn missing(events: &[Event]) -> Vec<(u8, u32)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Missing { seat, count, .. } => Some((*seat, *count)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_senders_last_messages_dropped_for_one_member_are_reported_by_the_next_message() {
        let (mut net, mut a, mut b, mut c) = three();
        let mut dropped = Vec::new();
        for i in 0..3 {
            let (body, _) = b.seal_text(&format!("b{i}"), 1).unwrap();
            net.put(1, EnvelopeKind::Chat, body);
            if i > 0 {
                dropped.push(net.seq);
            }
        }
        // The relay hands c only b's first message; b then falls silent.
        let ev = deliver_dropping(&mut net, &mut c, &dropped);
        assert_eq!(texts(&ev), ["member-1: b0"]);
        assert!(missing(&ev).is_empty());
        // a got all three; its next message says so, and c learns of the two.
        net.deliver(&mut a);
        let (body, _) = a.seal_text("anyone?", 2).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        let ev = net.deliver(&mut c);
        assert_eq!(texts(&ev), ["owner-owl: anyone?"]);
        assert_eq!(missing(&ev), [(1, 2)]);
        // Reported once: b's next message, after the gap, adds nothing.
        let (body, _) = b.seal_text("b3", 3).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let ev = net.deliver(&mut c);
        assert_eq!(texts(&ev), ["member-1: b3"]);
        assert!(missing(&ev).is_empty(), "{ev:?}");
    }

    #[test]
    fn the_close_summary_tells_a_sender_its_last_messages_never_reached_the_closer() {
        let (mut net, mut a, mut b, mut c) = three();
        let (body, _) = b.seal_text("seen by all", 1).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let (body, _) = b.seal_text("dropped for everyone", 2).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let last = net.seq;
        deliver_dropping(&mut net, &mut a, &[last]);
        let ev = deliver_dropping(&mut net, &mut c, &[last]);
        assert!(missing(&ev).is_empty());
        let farewell = a.farewell().unwrap();
        // b learns its message never reached a; c learns nothing new (it has what a has).
        assert_eq!(missing(&b.close_summary(&farewell)), [(1, 1)]);
        assert!(c.close_summary(&farewell).is_empty());
        // A summary not signed by a member says nothing.
        let stranger = TalkIdentity::generate(&mut rand::rng());
        let f = Farewell::new(
            &stranger,
            &a.mailbox,
            vec![Seen {
                seat: 1,
                epoch: 0,
                next: 9,
            }],
        )
        .unwrap();
        let forged = a
            .base_key()
            .seal(
                &mut rand::rng(),
                &a.mailbox,
                Purpose::Farewell,
                &Inner::Farewell(f).encode().unwrap(),
            )
            .unwrap();
        assert!(c.close_summary(&forged).is_empty());
    }

    /// b asks, a answers having seen the question; the relay hands c the answer first
    /// and the question after, under new seqs: with `batch_between`, in two batches,
    /// the first ending that many ms after the answer was held back.
    fn reordered(batch_between: Option<u64>) -> Vec<Event> {
        let (mut net, mut a, mut b, mut c) = three();
        let (body, _) = b.seal_text("question", 1).unwrap();
        net.put(1, EnvelopeKind::Chat, body);
        let question = net.log.last().unwrap().1.clone();
        net.deliver(&mut a);
        let (body, _) = a.seal_text("answer", 2).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        let answer = net.log.last().unwrap().1.clone();
        let base = c.cursor;
        let env = |seq: u64, e: &Envelope| Envelope {
            seq: Seq(seq),
            ..e.clone()
        };
        let mut events = c.handle_envelope(&env(base + 1, &answer)).events;
        if let Some(waited_ms) = batch_between {
            let held = c.waiting_until(PATIENCE_MS).expect("the answer waits");
            events.extend(
                c.end_of_batch(held - PATIENCE_MS + waited_ms, PATIENCE_MS)
                    .events,
            );
        }
        events.extend(c.handle_envelope(&env(base + 2, &question)).events);
        // A one-shot read's end: nothing is held past it.
        events.extend(c.end_of_batch(crate::now_ms(), 0).events);
        assert_eq!(c.waiting_until(PATIENCE_MS), None);
        events
    }

    const PATIENCE_MS: u64 = 5_000;

    #[test]
    fn a_reordered_delivery_is_shown_in_causal_order() {
        let ev = reordered(None);
        assert_eq!(texts(&ev), ["member-1: question", "owner-owl: answer"]);
        assert!(missing(&ev).is_empty(), "{ev:?}");
    }

    #[test]
    fn a_reorder_across_batches_within_the_patience_is_shown_in_causal_order() {
        let ev = reordered(Some(PATIENCE_MS - 1));
        assert_eq!(texts(&ev), ["member-1: question", "owner-owl: answer"]);
        assert!(missing(&ev).is_empty(), "{ev:?}");
    }

    #[test]
    fn a_reorder_past_the_patience_is_reported() {
        let ev = reordered(Some(PATIENCE_MS));
        assert_eq!(texts(&ev), ["owner-owl: answer", "member-1: question"]);
        assert_eq!(
            missing(&ev),
            [(1, 1)],
            "the answer says b's question exists"
        );
    }

    #[test]
    fn a_goodbye_carries_the_leavers_summary() {
        let (mut net, mut a, mut b, mut c) = three();
        let (body, _) = a.seal_text("to b only", 1).unwrap();
        net.put(0, EnvelopeKind::Chat, body);
        let dropped = net.seq;
        net.deliver(&mut c);
        deliver_dropping(&mut net, &mut b, &[dropped]);
        let body = c.seal_leaving(2).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        let ev = net.deliver(&mut b);
        assert_eq!(missing(&ev), [(0, 1)]);
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
                envelope_key: [0; 32],
            }),
        )
        .unwrap();
        let body = a.seal_base(&Inner::Announce(Box::new(fake))).unwrap();
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
        assert!(!ev.iter().any(|e| matches!(e, Event::Warning(_))), "{ev:?}");
        // The goodbye erased c's chains: nothing more from c opens.
        let p = b.roster.iter().find(|p| p.seat == 2).unwrap();
        assert!(p.chain.is_none() && p.prev_chain.is_none());
        let _ = net.deliver(&mut a);
    }

    /// Every envelope key `m` holds: the base key, its own, and every chain's.
    fn keys_held(m: &TalkState) -> Vec<EnvelopeKey> {
        let mut keys = vec![m.base_key(), m.own_key()];
        for p in &m.roster {
            for c in p.chain.iter().chain(p.prev_chain.iter()) {
                keys.push(EnvelopeKey::from_bytes(c.envelope_key()));
            }
        }
        keys
    }

    #[test]
    fn a_member_who_left_and_kept_every_key_opens_nothing_sent_after() {
        use crate::testkit::{join, talk};
        let (mut net, mut m, free) = talk(4, 2);
        let sync = |net: &mut Net, m: &mut Vec<TalkState>| {
            for _ in 0..3 {
                for x in m.iter_mut() {
                    net.deliver(x);
                }
            }
        };
        let (body, _) = m[2].seal_text("before leaving", 1).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        sync(&mut net, &mut m);
        // The leaver keeps everything it ever held: a copy of its whole state at each
        // step, and so every key.
        let mut leaver = m.pop().unwrap();
        let mut kept: Vec<EnvelopeKey> = keys_held(&leaver);
        let body = leaver.seal_leaving(2).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        kept.extend(keys_held(&leaver));
        let left_at = net.seq;
        let mut st = status(2, true);
        st.left = 1 << 2;
        for x in m.iter_mut() {
            for (k, b) in x.on_status(st).outgoing {
                net.put(x.seat, k, b);
            }
        }
        sync(&mut net, &mut m);
        for (i, x) in m.iter_mut().enumerate() {
            let (body, _) = x.seal_text(&format!("after, from {i}"), 3).unwrap();
            net.put(x.seat, EnvelopeKind::Chat, body);
        }
        // A newcomer takes the free seat after the leave, and talks.
        let (inv, welcome) = &free[0];
        let newcomer = join(&mut net, inv, 3, welcome, "newcomer-dee");
        m.push(newcomer);
        sync(&mut net, &mut m);
        let (body, _) = m[2].seal_text("hello from the newcomer", 4).unwrap();
        net.put(3, EnvelopeKind::Chat, body);
        assert_eq!(
            texts(&net.deliver(&mut m[0])),
            ["newcomer-dee: hello from the newcomer"],
            "the remaining members and the newcomer met"
        );
        sync(&mut net, &mut m);
        let farewell = m[0].farewell().unwrap();

        // Every envelope stored after the leave, and the farewell, against every key.
        let later: Vec<(Purpose, Vec<u8>)> = net
            .log
            .iter()
            .filter(|(_, e)| e.seq.0 > left_at)
            .map(|(_, e)| (Purpose::from(e.kind), e.body.clone()))
            .chain(std::iter::once((Purpose::Farewell, farewell)))
            .collect();
        assert!(later.len() > 10, "{}", later.len());
        let me = leaver.identity();
        let mut opened = 0;
        for (purpose, body) in &later {
            for key in &kept {
                let Ok(plain) = key.open(&leaver.mailbox, *purpose, body) else {
                    continue;
                };
                opened += 1;
                // Only the base key opens anything: a newcomer's public announcement
                // (keys, no alias, no chain) and Directs it cannot open.
                match Inner::decode(&plain).unwrap() {
                    Inner::Announce(a) => {
                        assert!(a.body.chain.is_none() && a.body.alias.is_empty(), "{a:?}");
                    }
                    // The farewell, which every member must be able to check: who
                    // closed, and how many messages of each chain it had received.
                    Inner::Farewell(f) => assert_eq!(f.sender, m[0].own_pseudonym),
                    Inner::Direct(d) => {
                        assert!(open_pairwise(&me, &d.from, &leaver.mailbox, &d.sealed).is_err());
                    }
                    other => panic!("the leaver opened {other:?}"),
                }
                let plain: &[u8] = &plain;
                assert!(!plain.windows(12).any(|w| w == b"newcomer-dee"));
            }
        }
        assert!(
            opened > 0,
            "the newcomer's announcement is under the base key"
        );
        // And through the client itself: no message, no alias.
        for (_, e) in net.log.iter().filter(|(_, e)| e.seq.0 > left_at) {
            let h = leaver.handle_envelope(e);
            assert!(texts(&h.events).is_empty(), "{:?}", h.events);
            assert!(
                !h.events.iter().any(
                    |e| matches!(e, Event::MemberJoined { alias, .. } if alias == "newcomer-dee")
                ),
                "{:?}",
                h.events
            );
        }
    }

    #[test]
    fn a_newcomers_message_sent_before_its_reply_is_held_then_read() {
        use crate::testkit::{join, talk};
        let (mut net, mut m, free) = talk(3, 1);
        let (inv, welcome) = &free[0];
        let mut c = join(&mut net, inv, 2, welcome, "early-bird");
        let (body, _) = c.seal_text("said at once", 1).unwrap();
        net.put(2, EnvelopeKind::Chat, body);
        // The creator, whose keys the welcome gave, got the newcomer's Reply with its
        // announcement: it reads at once.
        let ev = net.deliver(&mut m[0]);
        assert_eq!(texts(&ev), ["early-bird: said at once"]);
        // b reads the announcement (and introduces itself) and the message it cannot
        // open yet: nothing is shown, nothing is lost.
        let ev = net.deliver(&mut m[1]);
        assert!(texts(&ev).is_empty(), "{ev:?}");
        assert!(!ev.iter().any(|e| matches!(e, Event::Warning(_))), "{ev:?}");
        assert_eq!(m[1].held.len(), 1);
        net.deliver(&mut c);
        let ev = net.deliver(&mut m[1]);
        assert_eq!(texts(&ev), ["early-bird: said at once"]);
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::MemberJoined { alias, .. } if alias == "early-bird"))
        );
        assert!(m[1].held.is_empty());
    }

    #[test]
    fn a_newcomer_sends_nothing_to_a_creator_the_relay_says_left() {
        use crate::testkit::talk;
        let (_, _, free) = talk(3, 1);
        let (inv, welcome) = &free[0];
        let mut st = status(2, true);
        st.left = 1;
        let joined = |st| {
            TalkState::joined(
                inv,
                TalkIdentity::generate(&mut rand::rng()),
                "late",
                2,
                welcome,
                st,
            )
            .unwrap()
            .1
        };
        assert_eq!(joined(st).len(), 1, "the public announcement only");
        assert_eq!(joined(status(2, true)).len(), 2);
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

    /// Delivers everything pending to `m`; the card news it produced.
    fn card_news(net: &mut Net, m: &mut TalkState) -> (Vec<CardNews>, Vec<Event>) {
        let pending: Vec<Envelope> = net
            .log
            .iter()
            .filter(|(from, e)| *from != m.seat && e.seq.0 > m.cursor)
            .map(|(_, e)| e.clone())
            .collect();
        let (mut news, mut events) = (Vec::new(), Vec::new());
        for e in pending {
            let h = m.handle_envelope(&e);
            news.extend(h.cards);
            events.extend(h.events);
        }
        (news, events)
    }

    #[test]
    fn a_card_reaches_its_addressee_alone_in_a_chat_envelope_and_verifies_only_there() {
        use nook_crypto::card::{Card, CardKey};
        let (mut net, a, mut b, mut c) = three();
        let key = CardKey::from_seed(&[9; 32]);
        let card = Card {
            fields: vec![(0, "Dana Reyes".into())],
        };
        let b_pseudonym = b.own_pseudonym();
        let reveal = CardReveal::new(
            &key,
            &a.mailbox,
            &a.own_pseudonym(),
            &b_pseudonym,
            card.clone(),
            false,
        )
        .unwrap();
        let body = DirectBody::CardReveal {
            reveal: reveal.clone(),
        };
        net.put(
            a.seat,
            EnvelopeKind::Chat,
            a.seal_card(b.seat, &body).unwrap(),
        );
        let (news, _) = card_news(&mut net, &mut b);
        assert_eq!(
            news,
            vec![CardNews::Revealed {
                seat: a.seat,
                reveal
            }]
        );
        let (news, events) = card_news(&mut net, &mut c);
        assert!(news.is_empty() && events.is_empty(), "{events:?}");
        // A reveal signed for c, passed on by b as its own to c, does not verify: it
        // names a, not b, as the revealer.
        let for_c = CardReveal::new(
            &key,
            &a.mailbox,
            &a.own_pseudonym(),
            &b_pseudonym,
            card.clone(),
            false,
        )
        .unwrap();
        net.put(
            b.seat,
            EnvelopeKind::Chat,
            b.seal_card(c.seat, &DirectBody::CardReveal { reveal: for_c })
                .unwrap(),
        );
        let (news, events) = card_news(&mut net, &mut c);
        assert!(news.is_empty(), "{news:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Warning(w) if w.contains("does not verify"))),
            "{events:?}"
        );
        // A card message in a handshake envelope is refused.
        let to_b = a.roster.iter().find(|p| p.seat == b.seat).unwrap();
        let d = a
            .direct(to_b, &DirectBody::CardDecline { exchange: [1; 16] })
            .unwrap();
        net.put(a.seat, EnvelopeKind::Handshake, d);
        let (news, events) = card_news(&mut net, &mut b);
        assert!(news.is_empty(), "{news:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Warning(w) if w.contains("handshake envelope"))),
            "{events:?}"
        );
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

//! Every frame of protocol version 1.
//!
//! A connection carries one bidirectional stream opened by the client. The client sends
//! [`ClientFrame`]s; the relay sends [`ServerFrame`]s: one [`ServerFrame::Response`] per
//! request (matched by `id`, possibly out of order) and [`ServerFrame::Push`]es at any
//! time for mailboxes this connection subscribed to. The byte layout of each type is
//! bincode 2 "standard" (see [`crate::codec`]); enum variants are numbered in
//! declaration order from 0, and that order is part of the protocol: append, never
//! reorder.

use bincode::{Decode, Encode};

use crate::ids::{
    BoardId, CreateToken, ListingId, MailboxId, MemberKey, RelayKey, RequestId, Seq, Signature,
    TokenHash,
};

/// A request from client to relay. `id` is chosen by the client and echoed in the
/// response; the relay does not interpret it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClientFrame {
    pub id: u64,
    pub request: Request,
}

/// Client → relay operations.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    /// Must be the first frame of a connection; answered by [`Response::Hello`].
    Hello { version: u16 },
    /// Create a mailbox. The connection becomes authenticated as `owner` for it.
    Create(Create),
    /// Take a seat with a one-time join token. The connection becomes authenticated as
    /// `member` for the mailbox.
    Join(Join),
    /// Prove the relay-auth key of an existing member on this connection.
    Auth(Auth),
    /// Start receiving pushes for an authenticated mailbox.
    Subscribe { mailbox: MailboxId },
    /// Store an envelope; answered with [`Response::Stored`] once it is durable.
    Put(Put),
    /// Envelopes with `seq > after` that this member must receive (never its own, never
    /// those stored before it joined), oldest first. `limit` is clamped to
    /// 1..=MAX_FETCH_ENVELOPES.
    Fetch {
        mailbox: MailboxId,
        after: Seq,
        limit: u16,
    },
    /// Cumulative acknowledgement: this member holds every envelope with `seq <= upto`
    /// (clamped to the mailbox's head).
    Ack { mailbox: MailboxId, upto: Seq },
    /// Give up this member's seat.
    Leave {
        mailbox: MailboxId,
        signature: Signature,
    },
    /// Close the talk: the relay deletes the mailbox and returns a signed receipt.
    Close(Close),
    /// Liveness check; answered by [`Response::Pong`] with the same nonce.
    Ping { nonce: u64 },
    /// [`Request::Create`] presenting the relay's creation token, for a relay whose
    /// operator lets only holders of it create talks (spec §6.3). A relay that asks
    /// for no token handles it exactly as `Create`.
    CreateWithToken { create: Create, token: CreateToken },
    /// Publish a listing of an authenticated mailbox on a board (owner only, spec
    /// §17.3). Posting the same listing id again replaces its body.
    Post(Post),
    /// Withdraw a listing (owner only); its requests go with it.
    Unpost {
        mailbox: MailboxId,
        listing: ListingId,
    },
    /// The live listings of a board, by listing id, from after `after`. A board nobody
    /// posted on answers an empty page, exactly like a wrong phrase. No auth.
    Browse {
        board: BoardId,
        after: Option<ListingId>,
    },
    /// Ask for a seat on a listing. No auth: the request is sealed to the owner.
    Ask(Ask),
    /// The requests waiting on the mailbox's listings (owner only).
    Requests { mailbox: MailboxId },
    /// The owner's sealed answer to a request (owner only); the request is kept, its
    /// answer waiting for the seeker, until the seeker withdraws it or the listing ends.
    Answer {
        mailbox: MailboxId,
        request: RequestId,
        body: Vec<u8>,
    },
    /// Whether a request was answered, and the sealed answer if so. No auth: the id
    /// is the seeker's capability.
    AskState { request: RequestId },
    /// The seeker drops its request (after reading the answer, or to give up).
    Withdraw { request: RequestId },
}

/// A listing as posted (spec §17.3).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Post {
    pub mailbox: MailboxId,
    pub board: BoardId,
    pub listing: ListingId,
    /// The sealed listing: a padding bucket ≤ MAX_LISTING.
    pub body: Vec<u8>,
    /// Unix seconds after which the relay drops the listing (`None`: when the talk
    /// ends); never later than the talk's expiry.
    pub until: Option<u64>,
    /// Keep the listing after the talk opens (until it is full).
    pub keep_open: bool,
}

/// A seat request (spec §17.4).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Ask {
    pub listing: ListingId,
    pub request: RequestId,
    /// Sealed to the listing's owner key: a padding bucket ≤ MAX_SEAT_REQUEST.
    pub body: Vec<u8>,
}

/// Who may close a talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ClosePolicy {
    /// Only the creator (the member in seat 0).
    Owner,
    /// Any current member.
    Any,
}

/// The parameters of a new mailbox; signed (through its hash) by the owner.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TalkParams {
    /// Members including the creator, 2..=MAX_SEATS.
    pub seats: u8,
    /// Members needed before the talk opens, 1..=seats.
    pub quorum: u8,
    /// Seconds from creation until the relay deletes the mailbox.
    pub ttl_secs: u32,
    pub close: ClosePolicy,
    /// One offer per seat other than the creator's: exactly `seats - 1` entries.
    pub offers: Vec<SeatOffer>,
    /// A talk scheduled around an event (spec §20.1): it opens at its time once
    /// quorum is met, and the relay closes it when its window ends. `None`: a talk
    /// that opens at quorum and lives until its TTL.
    pub schedule: Option<Schedule>,
}

/// When a scheduled talk opens and how long it stays open, relative to its creation
/// by the relay's clock (so a client's clock skew does not move the event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Schedule {
    /// Seconds from creation until the talk may open (0: as soon as quorum is met).
    pub opens_in_secs: u32,
    /// Seconds from the opening time until the relay closes the talk; at least
    /// MIN_WINDOW_SECS, and `opens_in_secs + window_secs ≤ ttl_secs`.
    pub window_secs: u32,
}

/// A scheduled talk's times, in unix seconds by the relay's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TalkSchedule {
    /// The talk opens at this time if quorum is met, else when it is met later.
    pub opens_at: u64,
    /// The relay closes the talk (with a receipt) at this time; from then on
    /// invites are refused with `WindowEnded`.
    pub closes_at: u64,
}

/// A free seat: the hash of its join token and the sealed welcome handed to whoever
/// presents the token.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SeatOffer {
    pub token_hash: TokenHash,
    /// A padded sealed blob (its length is a padding bucket ≤ MAX_WELCOME).
    pub welcome: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Create {
    pub params: TalkParams,
    pub owner: MemberKey,
    /// Over the `create` auth transcript (spec §"Relay authentication").
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Join {
    pub mailbox: MailboxId,
    /// The 32-byte join token derived from the seat secret; the relay hashes it.
    pub token: [u8; 32],
    pub member: MemberKey,
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Auth {
    pub mailbox: MailboxId,
    pub member: MemberKey,
    pub signature: Signature,
}

/// What the relay may do with an envelope before the talk opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EnvelopeKind {
    /// Key announcements and sender-key distribution: accepted while pending.
    Handshake,
    /// Chat messages: accepted only once the talk is open.
    Chat,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Put {
    pub mailbox: MailboxId,
    pub kind: EnvelopeKind,
    /// Padded sealed bytes; the length must be one of the padding buckets.
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Close {
    pub mailbox: MailboxId,
    /// The end-to-end close envelope (one padded bucket, ≤ MAX_FAREWELL; an empty
    /// farewell is refused), pushed to subscribed members with the `Closed` push. The
    /// relay cannot read it.
    pub farewell: Vec<u8>,
    pub signature: Signature,
}

/// Relay → client.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ServerFrame {
    Response { id: u64, result: Outcome },
    Push(Push),
}

/// The result of one request: either its response or an error.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Outcome {
    Ok(Response),
    Err(ErrorFrame),
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Response {
    Hello(HelloOk),
    Created {
        mailbox: MailboxId,
        status: TalkStatus,
    },
    Joined {
        /// The seat taken (1..seats).
        seat: u8,
        /// The welcome blob the creator left for this seat.
        welcome: Vec<u8>,
        status: TalkStatus,
    },
    Authed {
        status: TalkStatus,
        /// The highest seq stored in the mailbox so far (0 if none).
        head: Seq,
    },
    Subscribed {
        status: TalkStatus,
    },
    Stored {
        seq: Seq,
    },
    Envelopes {
        items: Vec<Envelope>,
        /// True when more envelopes follow the last one returned.
        more: bool,
    },
    Acked,
    Left,
    Closed {
        receipt: Receipt,
    },
    Pong {
        nonce: u64,
    },
    Posted,
    Unposted,
    Listings {
        items: Vec<ListingView>,
        /// True when more listings follow the last one returned.
        more: bool,
    },
    Asked,
    Requests {
        items: Vec<PendingRequest>,
    },
    Answered,
    AskState {
        /// The sealed answer, once the owner gave one.
        answer: Option<Vec<u8>>,
    },
    Withdrawn,
}

/// A live listing as a seeker sees it: the sealed body, and the seats as the relay
/// counts them (nothing about who holds them).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ListingView {
    pub listing: ListingId,
    pub body: Vec<u8>,
    /// Seats taken (the owner's included), seats, and the quorum that opens the talk.
    pub members: u8,
    pub seats: u8,
    pub quorum: u8,
    pub open: bool,
    /// Unix seconds when the listing goes: its `until` or the talk's expiry.
    pub closes_at: u64,
}

/// A request waiting for the owner's answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PendingRequest {
    pub listing: ListingId,
    pub request: RequestId,
    pub body: Vec<u8>,
    /// Unix seconds when the relay took it.
    pub asked_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HelloOk {
    pub version: u16,
    /// 32 random bytes, fresh for each connection: every auth transcript on this
    /// connection covers it, so a signature cannot be replayed on another connection.
    pub challenge: [u8; 32],
    /// The relay's identity key; its SHA-256 must equal the pinned fingerprint (it is
    /// also the key of the TLS certificate).
    pub relay_key: RelayKey,
    /// The relay's current time (unix seconds), so clients can show TTLs sensibly.
    pub now: u64,
    /// The relay's rotation history, oldest first (empty for a relay that never
    /// rotated its key): each statement signed by the key it retires, the last naming
    /// `relay_key`. A client that pins an older key follows it (protocol-spec.md §11.12).
    pub rotations: Vec<RotationStatement>,
    /// When the relay retires (unix seconds): from then on it holds no talk. `None`
    /// while no retirement is announced.
    pub retiring_at: Option<u64>,
}

/// A relay's statement, signed by its identity key `old`, that its identity moved to
/// `new` at `rotated_at` (protocol-spec.md §11.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RotationStatement {
    pub old: RelayKey,
    pub new: RelayKey,
    /// Unix seconds of the rotation, by the relay's clock.
    pub rotated_at: u64,
    /// Ed25519 by `old` over the rotation transcript.
    pub signature: Signature,
}

/// A stored envelope as delivered to members.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    pub seq: Seq,
    pub kind: EnvelopeKind,
    /// Unix seconds when the relay stored it.
    pub stored_at: u64,
    pub body: Vec<u8>,
}

/// The lifecycle state the relay reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum TalkPhase {
    Pending,
    Open,
}

/// A snapshot of a talk as the relay sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TalkStatus {
    pub state: TalkPhase,
    /// Seats currently taken (members), the creator's included.
    pub members: u8,
    pub seats: u8,
    pub quorum: u8,
    pub close: ClosePolicy,
    /// Unix seconds at which the relay deletes the mailbox.
    pub expires_at: u64,
    /// Bit `s` set: the member of seat `s` left the talk. Members use it to stop
    /// sharing keys with a seat that left, even if they missed its goodbye.
    pub left: u64,
    /// The talk's schedule, if it was created with one. A scheduled talk reports
    /// `Pending` until its opening time even at quorum.
    pub schedule: Option<TalkSchedule>,
}

/// The relay's signed statement that it deleted a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Receipt {
    pub mailbox: MailboxId,
    /// Unix seconds of the deletion.
    pub closed_at: u64,
    /// Envelopes that were still stored and were deleted with the mailbox.
    pub envelopes_deleted: u64,
    /// Ed25519 by the relay identity key over the receipt transcript.
    pub signature: Signature,
}

/// Unsolicited relay → client events for subscribed mailboxes.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Push {
    Envelope {
        mailbox: MailboxId,
        envelope: Envelope,
    },
    SeatTaken {
        mailbox: MailboxId,
        status: TalkStatus,
    },
    /// Quorum reached: chat envelopes are accepted from now on.
    Opened {
        mailbox: MailboxId,
        status: TalkStatus,
    },
    MemberLeft {
        mailbox: MailboxId,
        status: TalkStatus,
    },
    Closed {
        mailbox: MailboxId,
        receipt: Receipt,
        farewell: Vec<u8>,
    },
    /// The mailbox's TTL passed and the relay deleted it.
    Expired { mailbox: MailboxId },
    /// The relay announced that it retires at `at` (unix seconds): it then closes every
    /// talk with a receipt. Sent once to every subscribed connection when announced.
    Retiring { at: u64 },
    /// A seat request arrived on one of the mailbox's listings (sent to subscribed
    /// connections of the owner's seat; fetch it with `Requests`).
    SeatRequested { mailbox: MailboxId },
}

/// An error answer. `code` and `detail` are for programs; `message` (≤
/// MAX_ERROR_MESSAGE bytes of UTF-8) is for people and never contains ids or keys.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    /// What a program needs to act on the refusal, as fields, so nobody parses
    /// `message` back.
    pub detail: ErrorDetail,
}

/// Data an error carries besides its code.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ErrorDetail {
    /// Nothing beyond the code.
    None,
    /// With `TalkNotOpen`: how many seats are taken and how many open the talk.
    Seats { members: u8, quorum: u8 },
    /// With `MailboxClosed`, when the talk was closed (not expired): the relay's
    /// deletion receipt, so a member who was offline at the close still gets it.
    Closed(Box<Receipt>),
    /// With `TalkNotOpen`, for a scheduled talk at quorum: the time (unix seconds)
    /// it opens.
    Opens { at: u64 },
}

/// Typed error codes; numbered in declaration order from 0 on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ErrorCode {
    /// The frame could not be decoded or broke a limit; the relay closes the connection.
    Malformed,
    /// `Hello` missing, repeated, or with a version the relay does not speak.
    UnsupportedVersion,
    /// The request needs an `Auth`/`Join`/`Create` on this connection first.
    NotAuthenticated,
    /// A signature did not verify.
    BadSignature,
    /// No such mailbox (never existed, or its tombstone expired).
    UnknownMailbox,
    /// The mailbox was closed or expired.
    MailboxClosed,
    /// A chat envelope while the talk is pending; `ErrorDetail::Seats` says how far.
    TalkNotOpen,
    /// The join token is unknown or already used.
    InviteInvalid,
    /// The member may not do this (close policy, not a member).
    NotAllowed,
    /// An envelope, welcome or farewell of a size that is not allowed.
    TooLarge,
    /// The mailbox's envelope or byte quota is reached; ack or wait.
    MailboxFull,
    /// Too many requests; slow down.
    RateLimited,
    /// Too many mailboxes on this connection.
    TooManyMailboxes,
    /// Parameters out of range (seats, quorum, ttl, offers).
    BadRequest,
    /// The relay failed internally (storage); the request may be retried.
    Internal,
    /// This relay creates talks only for holders of its creation token, and none or
    /// a wrong one was given. Joining and everything after needs no token.
    CreateRefused,
    /// The relay is retiring: it takes no new talk.
    Retiring,
    /// The relay's storage is full or at its reserve: new talks and envelopes are
    /// refused; acks, leaves and closes still work; try later.
    StorageFull,
    /// No live listing with this id (never posted, withdrawn, full, or ended).
    UnknownListing,
    /// No request with this id (never asked, withdrawn, or its listing ended).
    UnknownRequest,
    /// The board holds as many listings as the relay allows, or the relay as many
    /// boards' listings.
    BoardFull,
    /// The listing holds as many waiting requests as the relay allows.
    TooManyRequests,
    /// A request with this id exists already (a replay, or a retry of one that was
    /// stored: its asker treats this as done).
    RequestExists,
    /// Private routing (§18): this relay does not forward (its operator turned
    /// forwarding off). Use another relay with `--via`, or none.
    ForwardRefused,
    /// Private routing (§18): the forwarder carries as many forwarded sessions as it
    /// allows, from this address or in all; try later or another forwarder.
    ForwardLimit,
    /// Private routing (§18): the forwarder could not reach the destination relay
    /// (no answer in time, refused, or not a nook relay).
    DestinationUnreachable,
    /// The scheduled talk's window ended: the relay closed it and takes no one in
    /// (a join with its invite, spec §20.1).
    WindowEnded,
}

impl ErrorFrame {
    /// Builds an error frame, cutting the message at a char boundary to the limit.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
        let mut message = message.into();
        if message.len() > crate::limits::MAX_ERROR_MESSAGE {
            let mut cut = crate::limits::MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        ErrorFrame {
            code,
            message,
            detail: ErrorDetail::None,
        }
    }

    /// The same frame carrying `detail`.
    pub fn with_detail(mut self, detail: ErrorDetail) -> ErrorFrame {
        self.detail = detail;
        self
    }
}

impl std::fmt::Display for ErrorFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

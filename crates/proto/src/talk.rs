//! The relay-side talk state machine: pure transitions, `now` passed in (unix seconds).
//!
//! ```text
//!            join (members < quorum)
//!           ┌──────┐
//!           ▼      │          join (members reach quorum)
//!  create ─► Pending ──────────────────────────────► Open
//!              │  │                                  │ │
//!              │  └──── close / all left ──► Closed ◄┘ │
//!              └──────── now ≥ expires_at ─► Expired ◄─┘
//! ```
//!
//! A talk never goes back from Open to Pending: members who leave an open talk do not
//! re-gate it. Closed and Expired are final; the relay then keeps only a tombstone.
//!
//! A scheduled talk (spec §20.1) has two more states, moved by the clock through
//! [`Talk::tick`] as well as by joins and leaves:
//!
//! ```text
//!            quorum before opens_at          now ≥ opens_at
//!  Pending ───────────────────────► Scheduled ─────────────► Open
//!     ▲  │                             │ (a leave below quorum: back to Pending)
//!     └──┼─────────────────────────────┘
//!        └─ quorum at or after opens_at ──────────────────► Open
//!  Pending / Scheduled / Open ── now ≥ closes_at ──► WindowEnded (final)
//! ```
//!
//! WindowEnded is a close by the relay: it signs a receipt, and a join after it is
//! refused with `WindowEnded`.

use bincode::{Decode, Encode};

use crate::frame::{
    ClosePolicy, EnvelopeKind, ErrorCode, ErrorDetail, ErrorFrame, TalkParams, TalkPhase,
    TalkSchedule, TalkStatus,
};
use crate::ids::{MemberKey, TokenHash};
use crate::limits::{
    MAX_SEATS, MAX_TTL_SECS, MAX_WELCOME, MIN_TTL_SECS, MIN_WINDOW_SECS, PADDING_BUCKETS,
};

/// Where a talk is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Lifecycle {
    Pending,
    Open,
    Closed {
        at: u64,
    },
    Expired,
    /// A scheduled talk at quorum before its opening time.
    Scheduled,
    /// A scheduled talk whose window ended at `at`: closed by the relay.
    WindowEnded {
        at: u64,
    },
}

/// What the clock did to a talk ([`Talk::tick`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// A scheduled talk at quorum reached its opening time: the relay pushes `Opened`.
    Opened,
    /// A scheduled talk's window ended: the relay closes it with a receipt.
    WindowEnded,
}

/// A taken seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Member {
    pub seat: u8,
    pub key: MemberKey,
}

/// A seat still waiting for its invite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct FreeSeat {
    pub seat: u8,
    pub token_hash: TokenHash,
}

/// One talk as the relay tracks it. The relay persists this value (bincode) sealed in
/// its store; welcome blobs are kept beside it, keyed by seat.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Talk {
    seats: u8,
    quorum: u8,
    close: ClosePolicy,
    created_at: u64,
    expires_at: u64,
    lifecycle: Lifecycle,
    owner: MemberKey,
    members: Vec<Member>,
    free: Vec<FreeSeat>,
    /// Seats whose member left (bit per seat).
    left: u64,
    /// Spent tokens and the seat each took, so a join whose answer was lost can be
    /// retried by the same key (and only by it).
    spent: Vec<FreeSeat>,
    /// The opening time and window of a scheduled talk.
    schedule: Option<TalkSchedule>,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalkError {
    #[error("seats must be between 2 and {max}, got {got}")]
    BadSeats { got: u8, max: u8 },
    #[error("quorum must be between 1 and the number of seats ({seats}), got {got}")]
    BadQuorum { got: u8, seats: u8 },
    #[error("ttl must be between {min} and {max} seconds, got {got}")]
    BadTtl { got: u32, min: u32, max: u32 },
    #[error("expected {expected} seat offers (seats - 1), got {got}")]
    BadOffers { expected: usize, got: usize },
    #[error("two seat offers share one join token")]
    DuplicateToken,
    #[error("welcome of {len} bytes is not a padding bucket of at most {max} bytes")]
    BadWelcome { len: usize, max: usize },
    #[error("the invite is unknown or was already used")]
    InviteInvalid,
    #[error("this key already holds a seat in the talk")]
    AlreadyMember,
    #[error("not a member of this talk")]
    NotMember,
    #[error("talk not open yet ({members}/{quorum} seats taken)")]
    NotOpen { members: u8, quorum: u8 },
    #[error("only the owner may close this talk")]
    OwnerOnly,
    #[error("the talk was closed")]
    Closed,
    #[error("the talk expired")]
    Expired,
    #[error(
        "a schedule must open within the talk's ttl and last at least {min_window} s: opens in {opens_in} s + window {window} s > ttl {ttl} s"
    )]
    BadSchedule {
        opens_in: u32,
        window: u32,
        ttl: u32,
        min_window: u32,
    },
    #[error("the talk is scheduled: it opens at its time")]
    NotYet { opens_at: u64 },
    #[error("the talk's window ended: it is closed and takes no one in")]
    WindowEnded,
}

impl TalkError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            TalkError::BadSeats { .. }
            | TalkError::BadQuorum { .. }
            | TalkError::BadTtl { .. }
            | TalkError::BadOffers { .. }
            | TalkError::DuplicateToken
            | TalkError::BadSchedule { .. }
            | TalkError::AlreadyMember => ErrorCode::BadRequest,
            TalkError::BadWelcome { .. } => ErrorCode::TooLarge,
            TalkError::InviteInvalid => ErrorCode::InviteInvalid,
            TalkError::NotMember | TalkError::OwnerOnly => ErrorCode::NotAllowed,
            TalkError::NotOpen { .. } | TalkError::NotYet { .. } => ErrorCode::TalkNotOpen,
            TalkError::Closed | TalkError::Expired => ErrorCode::MailboxClosed,
            TalkError::WindowEnded => ErrorCode::WindowEnded,
        }
    }

    /// The error frame that tells a client about this refusal.
    pub fn frame(&self) -> ErrorFrame {
        let frame = ErrorFrame::new(self.code(), self.to_string());
        match *self {
            TalkError::NotOpen { members, quorum } => {
                frame.with_detail(ErrorDetail::Seats { members, quorum })
            }
            TalkError::NotYet { opens_at } => {
                frame.with_detail(ErrorDetail::Opens { at: opens_at })
            }
            _ => frame,
        }
    }
}

/// The result of a successful join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    pub seat: u8,
    /// This join reached quorum: the relay pushes `Opened` to every member.
    pub opened: bool,
    /// The same key presented the same token again (its earlier answer was lost):
    /// nothing changed.
    pub retry: bool,
}

/// The result of a successful leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub seat: u8,
    /// No member remains: the relay deletes the mailbox as if closed.
    pub empty: bool,
}

impl Talk {
    /// Validates `params` and creates a pending talk with `owner` in seat 0. Seats
    /// 1..seats are offered in the order of `params.offers`.
    pub fn create(params: &TalkParams, owner: MemberKey, now: u64) -> Result<Talk, TalkError> {
        if !(2..=MAX_SEATS).contains(&params.seats) {
            return Err(TalkError::BadSeats {
                got: params.seats,
                max: MAX_SEATS,
            });
        }
        if params.quorum == 0 || params.quorum > params.seats {
            return Err(TalkError::BadQuorum {
                got: params.quorum,
                seats: params.seats,
            });
        }
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&params.ttl_secs) {
            return Err(TalkError::BadTtl {
                got: params.ttl_secs,
                min: MIN_TTL_SECS,
                max: MAX_TTL_SECS,
            });
        }
        let schedule = match params.schedule {
            None => None,
            Some(s) => {
                let fits = s
                    .opens_in_secs
                    .checked_add(s.window_secs)
                    .is_some_and(|end| end <= params.ttl_secs);
                if s.window_secs < MIN_WINDOW_SECS || !fits {
                    return Err(TalkError::BadSchedule {
                        opens_in: s.opens_in_secs,
                        window: s.window_secs,
                        ttl: params.ttl_secs,
                        min_window: MIN_WINDOW_SECS,
                    });
                }
                let opens_at = now.saturating_add(u64::from(s.opens_in_secs));
                Some(TalkSchedule {
                    opens_at,
                    closes_at: opens_at.saturating_add(u64::from(s.window_secs)),
                })
            }
        };
        let expected = usize::from(params.seats) - 1;
        if params.offers.len() != expected {
            return Err(TalkError::BadOffers {
                expected,
                got: params.offers.len(),
            });
        }
        for (i, offer) in params.offers.iter().enumerate() {
            let len = offer.welcome.len();
            if len > MAX_WELCOME || !PADDING_BUCKETS.contains(&len) {
                return Err(TalkError::BadWelcome {
                    len,
                    max: MAX_WELCOME,
                });
            }
            if params.offers[..i]
                .iter()
                .any(|o| o.token_hash == offer.token_hash)
            {
                return Err(TalkError::DuplicateToken);
            }
        }
        let free = params
            .offers
            .iter()
            .zip(1u8..)
            .map(|(o, seat)| FreeSeat {
                seat,
                token_hash: o.token_hash,
            })
            .collect();
        let mut talk = Talk {
            seats: params.seats,
            quorum: params.quorum,
            close: params.close,
            created_at: now,
            expires_at: now.saturating_add(u64::from(params.ttl_secs)),
            lifecycle: Lifecycle::Pending,
            owner,
            members: vec![Member {
                seat: 0,
                key: owner,
            }],
            free,
            left: 0,
            spent: Vec::new(),
            schedule,
        };
        // A quorum of one is met at once: the creator alone is enough.
        if talk.members.len() >= usize::from(talk.quorum) {
            talk.lifecycle = talk.at_quorum(now);
        }
        Ok(talk)
    }

    /// Takes the seat whose token hashes to `token_hash`. The token is spent even if
    /// a later step fails, so a used invite can never be retried.
    pub fn join(
        &mut self,
        token_hash: &TokenHash,
        member: MemberKey,
        now: u64,
    ) -> Result<Joined, TalkError> {
        self.check_live(now)?;
        let Some(idx) = self.free.iter().position(|f| f.token_hash == *token_hash) else {
            // A retry by the key that spent the token gets its seat again.
            let retry = self
                .spent
                .iter()
                .find(|s| s.token_hash == *token_hash)
                .filter(|s| self.seat_of(&member) == Some(s.seat));
            return match retry {
                Some(s) => Ok(Joined {
                    seat: s.seat,
                    opened: false,
                    retry: true,
                }),
                None => Err(TalkError::InviteInvalid),
            };
        };
        let spent = self.free.remove(idx);
        let seat = spent.seat;
        if self.is_member(&member) {
            return Err(TalkError::AlreadyMember);
        }
        self.spent.push(spent);
        self.members.push(Member { seat, key: member });
        let was = self.lifecycle;
        if was == Lifecycle::Pending && self.members.len() >= usize::from(self.quorum) {
            self.lifecycle = self.at_quorum(now);
        }
        let opened = was != Lifecycle::Open && self.lifecycle == Lifecycle::Open;
        Ok(Joined {
            seat,
            opened,
            retry: false,
        })
    }

    /// The seat of `member`, if the talk is live and it is a member.
    pub fn authorize(&self, member: &MemberKey, now: u64) -> Result<u8, TalkError> {
        self.check_live(now)?;
        self.seat_of(member).ok_or(TalkError::NotMember)
    }

    /// Whether `member` may store an envelope of `kind` now.
    pub fn check_put(
        &self,
        member: &MemberKey,
        kind: EnvelopeKind,
        now: u64,
    ) -> Result<(), TalkError> {
        self.authorize(member, now)?;
        if kind == EnvelopeKind::Handshake {
            return Ok(());
        }
        match (self.lifecycle, self.schedule) {
            (Lifecycle::Scheduled, Some(s)) => Err(TalkError::NotYet {
                opens_at: s.opens_at,
            }),
            (Lifecycle::Pending | Lifecycle::Scheduled, _) => Err(TalkError::NotOpen {
                members: self.member_count(),
                quorum: self.quorum,
            }),
            _ => Ok(()),
        }
    }

    /// Removes `member`'s seat. The seat is not offered again.
    pub fn leave(&mut self, member: &MemberKey, now: u64) -> Result<Left, TalkError> {
        self.check_live(now)?;
        let idx = self
            .members
            .iter()
            .position(|m| m.key == *member)
            .ok_or(TalkError::NotMember)?;
        let seat = self.members.remove(idx).seat;
        self.left |= 1u64 << seat;
        let empty = self.members.is_empty();
        if empty {
            self.lifecycle = Lifecycle::Closed { at: now };
        } else if self.lifecycle == Lifecycle::Scheduled
            && self.members.len() < usize::from(self.quorum)
        {
            // Not open yet: the talk opens at its time only if quorum is met then.
            self.lifecycle = Lifecycle::Pending;
        }
        Ok(Left { seat, empty })
    }

    /// Closes the talk on behalf of `member`, if the close policy allows it.
    pub fn close(&mut self, member: &MemberKey, now: u64) -> Result<(), TalkError> {
        self.authorize(member, now)?;
        if self.close == ClosePolicy::Owner && *member != self.owner {
            return Err(TalkError::OwnerOnly);
        }
        self.lifecycle = Lifecycle::Closed { at: now };
        Ok(())
    }

    /// Closes the talk on the relay's own behalf (its retirement, protocol-spec.md
    /// §6.14); returns whether it was live (pending or open) and is closed now.
    pub fn close_by_relay(&mut self, now: u64) -> bool {
        if self.is_live() {
            self.lifecycle = Lifecycle::Closed { at: now };
            return true;
        }
        false
    }

    /// Marks the talk expired if its TTL has passed; returns whether it is now expired.
    pub fn expire(&mut self, now: u64) -> bool {
        if now >= self.expires_at && self.is_live() {
            self.lifecycle = Lifecycle::Expired;
        }
        self.lifecycle == Lifecycle::Expired
    }

    /// Moves a scheduled talk by the clock: opens it at its time if quorum is met,
    /// ends it when its window does. The relay calls it at [`Talk::timers`].
    pub fn tick(&mut self, now: u64) -> Tick {
        let Some(s) = self.schedule else {
            return Tick::Nothing;
        };
        if now >= s.closes_at && self.is_live() {
            self.lifecycle = Lifecycle::WindowEnded { at: now };
            return Tick::WindowEnded;
        }
        if now >= s.opens_at && self.lifecycle == Lifecycle::Scheduled {
            self.lifecycle = Lifecycle::Open;
            return Tick::Opened;
        }
        Tick::Nothing
    }

    /// The times at which [`Talk::tick`] may change this talk: the opening time and
    /// the window's end of a scheduled talk, none for another.
    pub fn timers(&self) -> Vec<u64> {
        self.schedule
            .map(|s| vec![s.opens_at, s.closes_at])
            .unwrap_or_default()
    }

    pub fn schedule(&self) -> Option<TalkSchedule> {
        self.schedule
    }

    /// Pending, scheduled or open: not ended in any way.
    pub fn is_live(&self) -> bool {
        matches!(
            self.lifecycle,
            Lifecycle::Pending | Lifecycle::Scheduled | Lifecycle::Open
        )
    }

    /// The state a talk takes when quorum is met at `now`: open, unless its opening
    /// time is still ahead.
    fn at_quorum(&self, now: u64) -> Lifecycle {
        match self.schedule {
            Some(s) if now < s.opens_at => Lifecycle::Scheduled,
            _ => Lifecycle::Open,
        }
    }

    pub fn status(&self) -> TalkStatus {
        TalkStatus {
            state: if matches!(self.lifecycle, Lifecycle::Pending | Lifecycle::Scheduled) {
                TalkPhase::Pending
            } else {
                TalkPhase::Open
            },
            members: self.member_count(),
            seats: self.seats,
            quorum: self.quorum,
            close: self.close,
            expires_at: self.expires_at,
            left: self.left,
            schedule: self.schedule,
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    pub fn free_seats(&self) -> &[FreeSeat] {
        &self.free
    }
    pub fn owner(&self) -> &MemberKey {
        &self.owner
    }
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
    /// When the talk ends at the latest: its expiry, or a scheduled talk's window end.
    pub fn ends_at(&self) -> u64 {
        self.schedule
            .map_or(self.expires_at, |s| s.closes_at.min(self.expires_at))
    }
    pub fn created_at(&self) -> u64 {
        self.created_at
    }
    pub fn is_member(&self, member: &MemberKey) -> bool {
        self.seat_of(member).is_some()
    }
    pub fn seat_of(&self, member: &MemberKey) -> Option<u8> {
        self.members
            .iter()
            .find(|m| m.key == *member)
            .map(|m| m.seat)
    }
    pub fn member_count(&self) -> u8 {
        // At most MAX_SEATS (64) members exist, so this never saturates.
        u8::try_from(self.members.len()).unwrap_or(u8::MAX)
    }

    fn check_live(&self, now: u64) -> Result<(), TalkError> {
        match self.lifecycle {
            Lifecycle::Closed { .. } => Err(TalkError::Closed),
            Lifecycle::Expired => Err(TalkError::Expired),
            Lifecycle::WindowEnded { .. } => Err(TalkError::WindowEnded),
            _ if self.schedule.is_some_and(|s| now >= s.closes_at) => Err(TalkError::WindowEnded),
            _ if now >= self.expires_at => Err(TalkError::Expired),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::SeatOffer;

    const NOW: u64 = 1_000_000;

    fn key(n: u8) -> MemberKey {
        MemberKey([n; 32])
    }
    fn token(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }
    fn params(seats: u8, quorum: u8, close: ClosePolicy) -> TalkParams {
        TalkParams {
            seats,
            quorum,
            ttl_secs: 3600,
            close,
            offers: (1..seats)
                .map(|i| SeatOffer {
                    token_hash: token(100 + i),
                    welcome: vec![0; 512],
                })
                .collect(),
            schedule: None,
        }
    }
    fn talk(seats: u8, quorum: u8) -> Talk {
        Talk::create(&params(seats, quorum, ClosePolicy::Owner), key(0), NOW).unwrap()
    }

    #[test]
    fn create_is_pending_with_owner_in_seat_zero() {
        let t = talk(3, 3);
        assert_eq!(t.lifecycle(), Lifecycle::Pending);
        assert_eq!(t.seat_of(&key(0)), Some(0));
        assert_eq!(t.free_seats().len(), 2);
        assert_eq!(t.expires_at(), NOW + 3600);
        let s = t.status();
        assert_eq!((s.members, s.seats, s.quorum), (1, 3, 3));
        assert_eq!(s.state, TalkPhase::Pending);
    }

    #[test]
    fn quorum_of_one_opens_at_creation() {
        assert_eq!(talk(2, 1).lifecycle(), Lifecycle::Open);
    }

    #[test]
    fn create_rejects_bad_parameters() {
        let mut p = params(3, 3, ClosePolicy::Owner);
        p.seats = 1;
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadSeats { .. })
        ));
        p.seats = MAX_SEATS + 1;
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadSeats { .. })
        ));
        let mut p = params(3, 4, ClosePolicy::Owner);
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadQuorum { .. })
        ));
        p.quorum = 0;
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadQuorum { .. })
        ));
        let mut p = params(3, 3, ClosePolicy::Owner);
        p.ttl_secs = MIN_TTL_SECS - 1;
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadTtl { .. })
        ));
        p.ttl_secs = MAX_TTL_SECS + 1;
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadTtl { .. })
        ));
        let mut p = params(3, 3, ClosePolicy::Owner);
        p.offers.pop();
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadOffers {
                expected: 2,
                got: 1
            })
        ));
        let mut p = params(3, 3, ClosePolicy::Owner);
        p.offers[1].token_hash = p.offers[0].token_hash;
        assert_eq!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::DuplicateToken)
        );
        let mut p = params(3, 3, ClosePolicy::Owner);
        p.offers[0].welcome = vec![0; 513];
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadWelcome { .. })
        ));
        p.offers[0].welcome = vec![0; 32 * 1024];
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadWelcome { .. })
        ));
    }

    #[test]
    fn joins_fill_seats_and_the_quorum_join_opens() {
        let mut t = talk(3, 3);
        let j = t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(
            j,
            Joined {
                seat: 1,
                opened: false,
                retry: false
            }
        );
        assert_eq!(t.lifecycle(), Lifecycle::Pending);
        let j = t.join(&token(102), key(2), NOW).unwrap();
        assert_eq!(
            j,
            Joined {
                seat: 2,
                opened: true,
                retry: false
            }
        );
        assert_eq!(t.lifecycle(), Lifecycle::Open);
        assert_eq!(t.status().state, TalkPhase::Open);
        assert!(t.free_seats().is_empty());
    }

    #[test]
    fn join_beyond_quorum_does_not_reopen() {
        let mut t = talk(3, 2);
        assert!(t.join(&token(101), key(1), NOW).unwrap().opened);
        assert!(!t.join(&token(102), key(2), NOW).unwrap().opened);
    }

    #[test]
    fn used_or_unknown_invite_is_refused() {
        let mut t = talk(3, 3);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(
            t.join(&token(101), key(9), NOW),
            Err(TalkError::InviteInvalid)
        );
        assert_eq!(
            t.join(&token(77), key(9), NOW),
            Err(TalkError::InviteInvalid)
        );
    }

    #[test]
    fn a_retried_join_by_the_same_key_gets_the_same_seat_and_nobody_else_does() {
        let mut t = talk(3, 2);
        assert_eq!(t.join(&token(101), key(1), NOW).unwrap().seat, 1);
        let again = t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(
            again,
            Joined {
                seat: 1,
                opened: false,
                retry: true
            }
        );
        assert_eq!(t.member_count(), 2, "a retry adds no member");
        assert_eq!(
            t.join(&token(101), key(9), NOW),
            Err(TalkError::InviteInvalid)
        );
        // Once the member left, its token is dead for good.
        t.leave(&key(1), NOW).unwrap();
        assert_eq!(
            t.join(&token(101), key(1), NOW),
            Err(TalkError::InviteInvalid)
        );
    }

    #[test]
    fn a_member_cannot_take_a_second_seat_and_the_token_is_spent() {
        let mut t = talk(3, 3);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(
            t.join(&token(102), key(1), NOW),
            Err(TalkError::AlreadyMember)
        );
        assert_eq!(
            t.join(&token(102), key(2), NOW),
            Err(TalkError::InviteInvalid)
        );
    }

    #[test]
    fn chat_is_gated_until_open_but_handshake_is_not() {
        let mut t = talk(3, 3);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(
            t.check_put(&key(1), EnvelopeKind::Chat, NOW),
            Err(TalkError::NotOpen {
                members: 2,
                quorum: 3
            })
        );
        assert_eq!(
            TalkError::NotOpen {
                members: 2,
                quorum: 3
            }
            .to_string(),
            "talk not open yet (2/3 seats taken)"
        );
        assert_eq!(t.check_put(&key(1), EnvelopeKind::Handshake, NOW), Ok(()));
        t.join(&token(102), key(2), NOW).unwrap();
        assert_eq!(t.check_put(&key(1), EnvelopeKind::Chat, NOW), Ok(()));
    }

    #[test]
    fn non_members_may_not_put() {
        let t = talk(3, 3);
        assert_eq!(
            t.check_put(&key(5), EnvelopeKind::Handshake, NOW),
            Err(TalkError::NotMember)
        );
        assert_eq!(t.authorize(&key(5), NOW), Err(TalkError::NotMember));
    }

    #[test]
    fn leave_removes_the_seat_and_an_open_talk_stays_open() {
        let mut t = talk(3, 2);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(
            t.leave(&key(1), NOW),
            Ok(Left {
                seat: 1,
                empty: false
            })
        );
        assert_eq!(t.lifecycle(), Lifecycle::Open);
        assert_eq!(t.status().members, 1);
        assert_eq!(t.status().left, 0b10, "seat 1 is marked as left");
        assert_eq!(t.leave(&key(1), NOW), Err(TalkError::NotMember));
        // The seat is not offered again: only seat 2's token remains.
        assert_eq!(t.free_seats().len(), 1);
    }

    #[test]
    fn last_member_leaving_closes_the_talk() {
        let mut t = talk(2, 2);
        assert_eq!(
            t.leave(&key(0), NOW),
            Ok(Left {
                seat: 0,
                empty: true
            })
        );
        assert_eq!(t.lifecycle(), Lifecycle::Closed { at: NOW });
    }

    #[test]
    fn owner_policy_refuses_other_members_and_allows_the_owner() {
        let mut t = talk(3, 2);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(t.close(&key(1), NOW), Err(TalkError::OwnerOnly));
        assert_eq!(TalkError::OwnerOnly.code(), ErrorCode::NotAllowed);
        assert_eq!(t.close(&key(9), NOW), Err(TalkError::NotMember));
        assert_eq!(t.close(&key(0), NOW + 5), Ok(()));
        assert_eq!(t.lifecycle(), Lifecycle::Closed { at: NOW + 5 });
    }

    #[test]
    fn any_policy_lets_any_member_close() {
        let mut t = Talk::create(&params(3, 2, ClosePolicy::Any), key(0), NOW).unwrap();
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(t.close(&key(1), NOW), Ok(()));
    }

    #[test]
    fn closed_talk_refuses_everything() {
        let mut t = talk(3, 3);
        t.close(&key(0), NOW).unwrap();
        assert_eq!(t.join(&token(101), key(1), NOW), Err(TalkError::Closed));
        assert_eq!(
            t.check_put(&key(0), EnvelopeKind::Handshake, NOW),
            Err(TalkError::Closed)
        );
        assert_eq!(t.leave(&key(0), NOW), Err(TalkError::Closed));
        assert_eq!(t.close(&key(0), NOW), Err(TalkError::Closed));
        assert_eq!(TalkError::Closed.code(), ErrorCode::MailboxClosed);
    }

    #[test]
    fn ttl_expiry_refuses_and_marks_expired() {
        let mut t = talk(3, 3);
        let end = t.expires_at();
        assert!(!t.expire(end - 1));
        assert_eq!(t.join(&token(101), key(1), end), Err(TalkError::Expired));
        assert_eq!(
            t.check_put(&key(0), EnvelopeKind::Handshake, end),
            Err(TalkError::Expired)
        );
        assert!(t.expire(end));
        assert_eq!(t.lifecycle(), Lifecycle::Expired);
        // Expiry does not overwrite a close.
        let mut c = talk(3, 3);
        c.close(&key(0), NOW).unwrap();
        assert!(!c.expire(end));
    }

    #[test]
    fn every_refusal_has_a_wire_code() {
        let cases = [
            (
                TalkError::BadSeats { got: 1, max: 64 },
                ErrorCode::BadRequest,
            ),
            (
                TalkError::BadWelcome { len: 1, max: 2 },
                ErrorCode::TooLarge,
            ),
            (TalkError::InviteInvalid, ErrorCode::InviteInvalid),
            (TalkError::NotMember, ErrorCode::NotAllowed),
            (
                TalkError::NotOpen {
                    members: 1,
                    quorum: 2,
                },
                ErrorCode::TalkNotOpen,
            ),
            (TalkError::Expired, ErrorCode::MailboxClosed),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn talk_state_survives_encoding() {
        let mut t = talk(4, 3);
        t.join(&token(101), key(1), NOW).unwrap();
        let bytes = crate::codec::encode_value(&t).unwrap();
        let back: Talk = crate::codec::decode_body(&bytes).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn a_not_open_refusal_carries_its_seats_as_fields() {
        let frame = TalkError::NotOpen {
            members: 2,
            quorum: 3,
        }
        .frame();
        assert_eq!(frame.code, ErrorCode::TalkNotOpen);
        assert_eq!(
            frame.detail,
            ErrorDetail::Seats {
                members: 2,
                quorum: 3
            }
        );
        assert_eq!(TalkError::OwnerOnly.frame().detail, ErrorDetail::None);
    }

    fn scheduled(seats: u8, quorum: u8, opens_in: u32, window: u32) -> Talk {
        let mut p = params(seats, quorum, ClosePolicy::Owner);
        p.schedule = Some(crate::frame::Schedule {
            opens_in_secs: opens_in,
            window_secs: window,
        });
        Talk::create(&p, key(0), NOW).unwrap()
    }

    #[test]
    fn a_scheduled_talk_at_quorum_waits_for_its_time_then_opens() {
        let mut t = scheduled(2, 2, 100, 50);
        assert_eq!(
            t.schedule(),
            Some(TalkSchedule {
                opens_at: NOW + 100,
                closes_at: NOW + 150
            })
        );
        assert_eq!(t.timers(), vec![NOW + 100, NOW + 150]);
        assert_eq!(t.ends_at(), NOW + 150, "the window ends it before its ttl");
        assert_eq!(talk(2, 2).ends_at(), NOW + 3600);
        let j = t.join(&token(101), key(1), NOW + 10).unwrap();
        assert!(!j.opened, "quorum before the time does not open");
        assert_eq!(t.lifecycle(), Lifecycle::Scheduled);
        assert_eq!(t.status().state, TalkPhase::Pending);
        assert_eq!(t.status().schedule, t.schedule());
        // Chat waits, and the refusal says when it opens; handshakes go through.
        assert_eq!(
            t.check_put(&key(1), EnvelopeKind::Chat, NOW + 10),
            Err(TalkError::NotYet {
                opens_at: NOW + 100
            })
        );
        assert_eq!(
            TalkError::NotYet { opens_at: 7 }.frame().detail,
            ErrorDetail::Opens { at: 7 }
        );
        assert_eq!(
            t.check_put(&key(1), EnvelopeKind::Handshake, NOW + 10),
            Ok(())
        );
        assert_eq!(t.tick(NOW + 99), Tick::Nothing);
        assert_eq!(t.lifecycle(), Lifecycle::Scheduled);
        assert_eq!(t.tick(NOW + 100), Tick::Opened);
        assert_eq!(t.lifecycle(), Lifecycle::Open);
        assert_eq!(t.status().state, TalkPhase::Open);
        assert_eq!(t.check_put(&key(1), EnvelopeKind::Chat, NOW + 100), Ok(()));
        assert_eq!(t.tick(NOW + 101), Tick::Nothing, "opens once");
    }

    #[test]
    fn quorum_after_the_opening_time_opens_at_once() {
        let mut t = scheduled(3, 3, 100, 50);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(t.tick(NOW + 100), Tick::Nothing, "no quorum: stays pending");
        assert_eq!(t.lifecycle(), Lifecycle::Pending);
        let j = t.join(&token(102), key(2), NOW + 120).unwrap();
        assert!(
            j.opened,
            "a late joiner inside the window completes the quorum"
        );
        assert_eq!(t.lifecycle(), Lifecycle::Open);
    }

    #[test]
    fn a_scheduled_talk_with_quorum_one_waits_too() {
        let mut t = scheduled(2, 1, 30, 30);
        assert_eq!(t.lifecycle(), Lifecycle::Scheduled);
        assert_eq!(t.tick(NOW + 30), Tick::Opened);
        // Opening time already passed at creation: open at once.
        assert_eq!(scheduled(2, 1, 0, 30).lifecycle(), Lifecycle::Open);
    }

    #[test]
    fn a_leave_below_quorum_before_the_time_returns_to_pending() {
        let mut t = scheduled(3, 2, 100, 50);
        t.join(&token(101), key(1), NOW).unwrap();
        assert_eq!(t.lifecycle(), Lifecycle::Scheduled);
        t.leave(&key(1), NOW + 1).unwrap();
        assert_eq!(t.lifecycle(), Lifecycle::Pending);
        assert_eq!(t.tick(NOW + 100), Tick::Nothing, "no quorum at the time");
        let j = t.join(&token(102), key(2), NOW + 101).unwrap();
        assert!(j.opened);
    }

    #[test]
    fn the_window_end_closes_a_talk_in_any_live_state_and_refuses_joins() {
        for members in [1, 2] {
            let mut t = scheduled(3, 2, 100, 50);
            if members == 2 {
                t.join(&token(101), key(1), NOW).unwrap();
                assert_eq!(t.tick(NOW + 100), Tick::Opened);
            }
            // Until the sweep ticks it, the end is enforced all the same.
            assert_eq!(
                t.join(&token(102), key(2), NOW + 150),
                Err(TalkError::WindowEnded)
            );
            assert_eq!(t.authorize(&key(0), NOW + 150), Err(TalkError::WindowEnded));
            assert_eq!(t.tick(NOW + 150), Tick::WindowEnded);
            assert_eq!(t.lifecycle(), Lifecycle::WindowEnded { at: NOW + 150 });
            assert!(!t.is_live());
            assert_eq!(t.tick(NOW + 151), Tick::Nothing, "ends once");
            assert_eq!(
                t.join(&token(102), key(2), NOW + 151),
                Err(TalkError::WindowEnded)
            );
            assert_eq!(TalkError::WindowEnded.code(), ErrorCode::WindowEnded);
            assert!(
                !t.expire(NOW + 10_000),
                "an ended talk does not expire again"
            );
            assert!(!t.close_by_relay(NOW + 151));
        }
    }

    #[test]
    fn a_late_joiner_inside_the_window_gets_in() {
        let mut t = scheduled(3, 2, 100, 50);
        t.join(&token(101), key(1), NOW).unwrap();
        t.tick(NOW + 100);
        let j = t.join(&token(102), key(2), NOW + 149).unwrap();
        assert_eq!((j.seat, j.opened), (2, false));
        assert_eq!(t.check_put(&key(2), EnvelopeKind::Chat, NOW + 149), Ok(()));
    }

    #[test]
    fn a_schedule_must_fit_the_ttl_and_have_a_window() {
        let mut p = params(2, 2, ClosePolicy::Owner);
        p.schedule = Some(crate::frame::Schedule {
            opens_in_secs: 3000,
            window_secs: 601,
        });
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadSchedule { .. })
        ));
        p.schedule = Some(crate::frame::Schedule {
            opens_in_secs: u32::MAX,
            window_secs: u32::MAX,
        });
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadSchedule { .. })
        ));
        p.schedule = Some(crate::frame::Schedule {
            opens_in_secs: 10,
            window_secs: 0,
        });
        assert!(matches!(
            Talk::create(&p, key(0), NOW),
            Err(TalkError::BadSchedule { .. })
        ));
        assert_eq!(
            TalkError::BadSchedule {
                opens_in: 1,
                window: 1,
                ttl: 1,
                min_window: 1
            }
            .code(),
            ErrorCode::BadRequest
        );
        p.schedule = Some(crate::frame::Schedule {
            opens_in_secs: 3000,
            window_secs: 600,
        });
        assert!(
            Talk::create(&p, key(0), NOW).is_ok(),
            "the window may end at the ttl"
        );
    }

    #[test]
    fn an_unscheduled_talk_never_ticks() {
        let mut t = talk(2, 2);
        assert!(t.timers().is_empty());
        assert_eq!(t.tick(u64::MAX), Tick::Nothing);
    }

    #[test]
    fn a_scheduled_talk_survives_encoding() {
        let mut t = scheduled(3, 2, 100, 50);
        t.join(&token(101), key(1), NOW).unwrap();
        let bytes = crate::codec::encode_value(&t).unwrap();
        let back: Talk = crate::codec::decode_body(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.lifecycle(), Lifecycle::Scheduled);
    }
}

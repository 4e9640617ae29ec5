//! Why a client operation failed.
//!
//! One enum for the talk API, each variant carrying its data as fields so a caller
//! matches on it instead of reading text. Messages say what happened; what a person
//! should type next belongs to the program that knows its own commands (the `nook`
//! binary adds those hints), so none is written here.

use nook_crypto::AddressError;
use nook_proto::{ErrorCode, ErrorDetail};

use crate::member::MemberError;
use crate::store::StoreError;
use crate::transport::{ConnectError, RequestError};

/// Why an operation of [`crate::Client`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store could not be used, or holds no such talk.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The relay could not be reached, or is not the relay the address pins.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The invite text does not parse.
    #[error("invalid invite: {0}")]
    Invite(#[source] AddressError),
    /// The relay address text does not parse.
    #[error("invalid relay address: {0}")]
    Address(#[source] AddressError),
    /// The relay knows no unused seat for this invite.
    #[error("the invite is unknown or was already used; ask for a new one")]
    InviteUsed,
    /// Chat is refused until `quorum` seats are taken.
    #[error("the talk is not open yet ({members}/{quorum} seats taken)")]
    Pending { members: u8, quorum: u8 },
    /// A scheduled talk at quorum: chat is refused until it opens at `opens_at` (unix
    /// seconds, the relay's clock), spec §20.1.
    #[error("the talk is scheduled: it opens at {}", nook_crypto::auth::rfc3339_utc(*.opens_at))]
    NotYet { opens_at: u64 },
    /// The scheduled talk's window ended: the relay closed it and takes no one in.
    #[error("the talk's window has ended: the relay closed it and takes no one in any more")]
    WindowEnded,
    /// Closed, expired, or left (by any process of this member): the local copy has
    /// been deleted.
    #[error(
        "the talk has ended for this device (closed, expired or left); everything it held for the talk has been deleted"
    )]
    TalkGone,
    /// The relay says the talk was closed, and kept its deletion receipt for members
    /// who were away: here it is, checked against the pinned relay key (`None` if it
    /// did not verify). The local copy has been deleted.
    #[error("the talk was closed; everything this device held for it has been deleted")]
    Closed {
        receipt: Option<Box<nook_crypto::auth::PortableReceipt>>,
    },
    /// The close policy does not let this member close the talk.
    #[error("only the owner may close this talk")]
    NotAllowed,
    /// Any other refusal by the relay.
    #[error("the relay refused: {message}")]
    Refused { code: ErrorCode, message: String },
    /// The connection ended before the answer came.
    #[error("the connection to the relay was lost ({reason})")]
    Lost { reason: String },
    /// The deletion receipt is not signed by the pinned relay key, or names another
    /// mailbox.
    #[error("the relay's deletion receipt does not verify against its pinned key")]
    BadReceipt,
    /// The relay answered with a response of the wrong kind.
    #[error("the relay sent an unexpected answer")]
    Protocol,
    /// A member-side check failed (welcome, alias, message size, crypto).
    #[error(transparent)]
    Member(#[from] MemberError),
    /// A board command's own check failed (spec §17).
    #[error(transparent)]
    Board(#[from] crate::board::BoardError),
    /// A file could not be sent or saved (spec §12.5).
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error(transparent)]
    Card(#[from] crate::cards::CardError),
}

impl From<RequestError> for ClientError {
    fn from(e: RequestError) -> ClientError {
        match e {
            RequestError::Refused {
                code,
                message,
                detail,
            } => match (code, detail) {
                (ErrorCode::MailboxClosed | ErrorCode::UnknownMailbox, _) => ClientError::TalkGone,
                (ErrorCode::InviteInvalid, _) => ClientError::InviteUsed,
                (ErrorCode::TalkNotOpen, ErrorDetail::Seats { members, quorum }) => {
                    ClientError::Pending { members, quorum }
                }
                (ErrorCode::TalkNotOpen, ErrorDetail::Opens { at }) => {
                    ClientError::NotYet { opens_at: at }
                }
                (ErrorCode::WindowEnded, _) => ClientError::WindowEnded,
                _ => ClientError::Refused { code, message },
            },
            RequestError::Lost(reason) => ClientError::Lost { reason },
            RequestError::Unexpected => ClientError::Protocol,
        }
    }
}

impl ClientError {
    /// Why chat is refused in a talk whose status is pending: too few seats taken, or
    /// (a scheduled talk at quorum) its time has not come.
    pub fn not_open(status: &nook_proto::TalkStatus) -> ClientError {
        match status.schedule {
            Some(s) if status.members >= status.quorum => ClientError::NotYet {
                opens_at: s.opens_at,
            },
            _ => ClientError::Pending {
                members: status.members,
                quorum: status.quorum,
            },
        }
    }

    /// True when the relay could not be reached or the connection dropped: the same
    /// operation may succeed later, and nothing was refused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Lost { .. }
                | ClientError::Connect(
                    ConnectError::Unreachable { .. }
                        | ConnectError::ForwarderUnreachable { .. }
                        | ConnectError::DestinationUnreachable { .. }
                )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: ErrorCode, detail: ErrorDetail) -> ClientError {
        RequestError::Refused {
            code,
            message: "whatever the relay wrote".into(),
            detail,
        }
        .into()
    }

    #[test]
    fn a_not_open_refusal_is_read_from_its_fields_not_its_message() {
        let e = refused(
            ErrorCode::TalkNotOpen,
            ErrorDetail::Seats {
                members: 2,
                quorum: 5,
            },
        );
        assert!(matches!(
            e,
            ClientError::Pending {
                members: 2,
                quorum: 5
            }
        ));
        // Without the fields it stays a plain refusal: no numbers are made up.
        assert!(matches!(
            refused(ErrorCode::TalkNotOpen, ErrorDetail::None),
            ClientError::Refused {
                code: ErrorCode::TalkNotOpen,
                ..
            }
        ));
    }

    #[test]
    fn a_schedule_refusal_and_its_window_end_are_read_from_their_fields() {
        assert!(matches!(
            refused(ErrorCode::TalkNotOpen, ErrorDetail::Opens { at: 77 }),
            ClientError::NotYet { opens_at: 77 }
        ));
        assert!(matches!(
            refused(ErrorCode::WindowEnded, ErrorDetail::None),
            ClientError::WindowEnded
        ));
        let mut status = crate::testkit::status(2, false);
        status.quorum = 2;
        assert!(matches!(
            ClientError::not_open(&status),
            ClientError::Pending { .. }
        ));
        status.schedule = Some(nook_proto::TalkSchedule {
            opens_at: 50,
            closes_at: 90,
        });
        assert!(matches!(
            ClientError::not_open(&status),
            ClientError::NotYet { opens_at: 50 }
        ));
        status.members = 1;
        assert!(matches!(
            ClientError::not_open(&status),
            ClientError::Pending {
                members: 1,
                quorum: 2
            }
        ));
    }

    #[test]
    fn refusals_map_by_code() {
        assert!(matches!(
            refused(ErrorCode::MailboxClosed, ErrorDetail::None),
            ClientError::TalkGone
        ));
        assert!(matches!(
            refused(ErrorCode::UnknownMailbox, ErrorDetail::None),
            ClientError::TalkGone
        ));
        assert!(matches!(
            refused(ErrorCode::InviteInvalid, ErrorDetail::None),
            ClientError::InviteUsed
        ));
        assert!(matches!(
            refused(ErrorCode::RateLimited, ErrorDetail::None),
            ClientError::Refused {
                code: ErrorCode::RateLimited,
                ..
            }
        ));
        let lost: ClientError = RequestError::Lost("reset".into()).into();
        assert!(lost.is_transient());
        assert!(!ClientError::TalkGone.is_transient());
    }
}

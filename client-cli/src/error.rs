//! What `nook` tells a person (or a script) when something fails: the message, a hint
//! naming the command that helps, a stable `kind`, and the exit code.
//!
//! The library's errors say what happened; only the binary knows its own commands, so
//! every hint and every exit code is decided here, in one table.

use nook_client::cards::CardError;
use nook_client::store::StoreError;
use nook_client::{BoardError, ClientError, ConnectError};

/// Why a `nook` command failed, as scripts see it: the `kind` of a `--json` error
/// (stable: scripts match on it) and the exit code, which groups kinds.
/// [`EXIT_CODES`] (`nook --help`) and README.md list the same table, and a test holds
/// the help text to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 1: a bug, or the local store could not be used.
    Internal,
    /// 2: the command line is invalid (unknown flag, missing argument, bad value).
    Usage,
    /// 3: no talk matches the given name or prefix.
    TalkUnknown,
    /// 3: more than one talk matches the given prefix.
    AmbiguousTalk,
    /// 4: the relay could not be reached (down, wrong host or port, blocked).
    RelayUnreachable,
    /// 4: the connection to the relay was lost during the command.
    ConnectionLost,
    /// 4: the relay does not speak this protocol version.
    RelayVersion,
    /// 5: chat is refused until quorum is reached.
    TalkNotOpen,
    /// 5: the relay knows no unused seat for this invite.
    InviteUsed,
    /// 5: the invite does not parse, or its check does not match (a typo).
    InviteMalformed,
    /// 5: the invite is one of this device's own talks' invites.
    OwnInvite,
    /// 5: the relay address does not parse.
    AddressMalformed,
    /// 5: only the owner's device holds the talk's invites.
    NotOwner,
    /// 5: the talk's close policy does not let this member close it, or a panel's
    /// listener tried to write (listeners read only).
    NotAllowed,
    /// 5: the talk's mailbox is full until members acknowledge.
    MailboxFull,
    /// 5: too many requests; slow down.
    RateLimited,
    /// 5: the relay creates talks only for holders of its creation token, and none or
    /// a wrong one was given.
    CreateRefused,
    /// 5: the relay is retiring and takes no new talk.
    RelayRetiring,
    /// 5: the relay's storage is full (its quota or its disk): new talks and messages
    /// are refused for now; reading, leaving and closing still work.
    RelayStorageFull,
    /// 5: any other refusal by the relay.
    RelayRefused,
    /// 5: input given with the command cannot be used (empty message, alias, size,
    /// no terminal, an unreadable receipt file).
    BadInput,
    /// 6: the talk was closed; its local data was deleted.
    TalkClosed,
    /// 6: the talk expired or was left, or the relay no longer knows it; its local data
    /// was deleted.
    TalkGone,
    /// 7: the relay's key does not match its address.
    RelayKeyMismatch,
    /// 7: a deletion receipt does not verify.
    ReceiptInvalid,
    /// 8: `nook wait` gave up: what it waited for did not happen in time.
    Timeout,
    /// 5: the board listing is gone (withdrawn, full, open, closed, expired) or never was.
    ListingUnknown,
    /// 5: no such seat request (answered and taken, withdrawn, or its listing ended).
    RequestUnknown,
    /// 5: the board, the listing's requests, or the talk's seats are at their limit.
    BoardFull,
    NoCard,
    MemberUnknown,
    NoOffer,
    ContactUnknown,
    /// 4: the forwarding relay (`--via`) could not be reached.
    ForwarderUnreachable,
    /// 4: the forwarding relay is up, but the talk's relay behind it did not answer.
    DestinationUnreachable,
    /// 5: the forwarding relay refused to forward (turned off, at its limit, or too old).
    ForwardRefused,
    /// 5: the scheduled talk's window ended: the relay closed it and takes no one in.
    WindowEnded,
    /// 5: a market's offerer sent what its offer limit allows; the owner must write first.
    OfferLimit,
}

impl Kind {
    /// Every kind, in exit-code order.
    #[cfg(test)]
    pub const ALL: [Kind; 38] = [
        Kind::Internal,
        Kind::Usage,
        Kind::TalkUnknown,
        Kind::AmbiguousTalk,
        Kind::RelayUnreachable,
        Kind::ConnectionLost,
        Kind::RelayVersion,
        Kind::TalkNotOpen,
        Kind::InviteUsed,
        Kind::InviteMalformed,
        Kind::OwnInvite,
        Kind::AddressMalformed,
        Kind::NotOwner,
        Kind::NotAllowed,
        Kind::MailboxFull,
        Kind::RateLimited,
        Kind::CreateRefused,
        Kind::RelayRetiring,
        Kind::RelayStorageFull,
        Kind::RelayRefused,
        Kind::BadInput,
        Kind::TalkClosed,
        Kind::TalkGone,
        Kind::RelayKeyMismatch,
        Kind::ReceiptInvalid,
        Kind::Timeout,
        Kind::ListingUnknown,
        Kind::RequestUnknown,
        Kind::BoardFull,
        Kind::NoCard,
        Kind::MemberUnknown,
        Kind::NoOffer,
        Kind::ContactUnknown,
        Kind::ForwarderUnreachable,
        Kind::DestinationUnreachable,
        Kind::ForwardRefused,
        Kind::WindowEnded,
        Kind::OfferLimit,
    ];

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Internal => 1,
            Kind::Usage => 2,
            Kind::TalkUnknown | Kind::AmbiguousTalk => 3,
            Kind::RelayUnreachable
            | Kind::ConnectionLost
            | Kind::RelayVersion
            | Kind::ForwarderUnreachable
            | Kind::DestinationUnreachable => 4,
            Kind::TalkNotOpen
            | Kind::InviteUsed
            | Kind::InviteMalformed
            | Kind::OwnInvite
            | Kind::AddressMalformed
            | Kind::NotOwner
            | Kind::NotAllowed
            | Kind::MailboxFull
            | Kind::RateLimited
            | Kind::CreateRefused
            | Kind::RelayRetiring
            | Kind::RelayStorageFull
            | Kind::RelayRefused
            | Kind::BadInput
            | Kind::ListingUnknown
            | Kind::RequestUnknown
            | Kind::BoardFull
            | Kind::NoCard
            | Kind::MemberUnknown
            | Kind::NoOffer
            | Kind::ContactUnknown
            | Kind::ForwardRefused
            | Kind::WindowEnded
            | Kind::OfferLimit => 5,
            Kind::TalkClosed | Kind::TalkGone => 6,
            Kind::RelayKeyMismatch | Kind::ReceiptInvalid => 7,
            Kind::Timeout => 8,
        }
    }

    /// The `kind` field of a `--json` error.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Usage => "usage",
            Kind::TalkUnknown => "talk_unknown",
            Kind::AmbiguousTalk => "ambiguous_talk",
            Kind::RelayUnreachable => "relay_unreachable",
            Kind::ConnectionLost => "connection_lost",
            Kind::RelayVersion => "relay_version",
            Kind::TalkNotOpen => "talk_not_open",
            Kind::InviteUsed => "invite_used",
            Kind::InviteMalformed => "invite_malformed",
            Kind::OwnInvite => "own_invite",
            Kind::AddressMalformed => "address_malformed",
            Kind::NotOwner => "not_owner",
            Kind::NotAllowed => "not_allowed",
            Kind::MailboxFull => "mailbox_full",
            Kind::RateLimited => "rate_limited",
            Kind::CreateRefused => "create_refused",
            Kind::RelayRetiring => "relay_retiring",
            Kind::RelayStorageFull => "relay_storage_full",
            Kind::RelayRefused => "relay_refused",
            Kind::BadInput => "bad_input",
            Kind::TalkClosed => "talk_closed",
            Kind::TalkGone => "talk_gone",
            Kind::RelayKeyMismatch => "relay_key_mismatch",
            Kind::ReceiptInvalid => "receipt_invalid",
            Kind::Timeout => "timeout",
            Kind::ListingUnknown => "listing_unknown",
            Kind::RequestUnknown => "request_unknown",
            Kind::BoardFull => "board_full",
            Kind::NoCard => "no_card",
            Kind::MemberUnknown => "member_unknown",
            Kind::NoOffer => "no_offer",
            Kind::ContactUnknown => "contact_unknown",
            Kind::ForwarderUnreachable => "forwarder_unreachable",
            Kind::DestinationUnreachable => "destination_unreachable",
            Kind::ForwardRefused => "forward_refused",
            Kind::WindowEnded => "window_ended",
            Kind::OfferLimit => "offer_limit",
        }
    }
}

/// The exit codes and the `kind`s of `--json` errors under each, for `nook --help`
/// (README.md has the same table).
pub const EXIT_CODES: &str = "EXIT CODES (and the \"kind\" of a --json error):
  0  success
  1  internal or storage error: internal
  2  invalid command line: usage
  3  no talk matches (see `nook list`): talk_unknown, ambiguous_talk
  4  relay unreachable or connection lost (retry later): relay_unreachable,
     connection_lost, relay_version, forwarder_unreachable,
     destination_unreachable
  5  refused: talk_not_open, invite_used, invite_malformed, own_invite,
     address_malformed, not_owner, not_allowed, mailbox_full, rate_limited,
     create_refused, relay_retiring, relay_storage_full, relay_refused, bad_input,
     listing_unknown, request_unknown, board_full, no_card, member_unknown,
     no_offer, contact_unknown, forward_refused, window_ended, offer_limit
  6  the talk was closed, expired or left (local data deleted): talk_closed, talk_gone
  7  security: relay_key_mismatch, receipt_invalid
  8  `nook wait` timed out: timeout";

/// Why a `nook` command failed.
#[derive(Debug)]
pub enum CliError {
    /// The command line does not parse, or its values do not fit together (clap's
    /// error, exit code 2).
    Usage(clap::Error),
    /// Input given with the command cannot be used (an empty message, no terminal
    /// for `chat`, no home folder).
    Input(String),
    /// `nook invites` by a member who did not create the talk: only the owner's
    /// device holds its invites.
    NotOwner { talk: String },
    /// `nook join` with an invite to one of this device's own talks.
    OwnInvite { talk: String },
    /// `nook wait --timeout` ran out.
    Timeout { after: std::time::Duration },
    /// The operation failed.
    Client(ClientError),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        CliError::Client(e)
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        CliError::Client(e.into())
    }
}

impl From<clap::Error> for CliError {
    fn from(e: clap::Error) -> CliError {
        CliError::Usage(e)
    }
}

impl CliError {
    /// What kind of failure this is (see [`Kind`]).
    pub fn kind(&self) -> Kind {
        match self {
            CliError::Usage(_) => Kind::Usage,
            CliError::Input(_) => Kind::BadInput,
            CliError::NotOwner { .. } => Kind::NotOwner,
            CliError::OwnInvite { .. } => Kind::OwnInvite,
            CliError::Timeout { .. } => Kind::Timeout,
            CliError::Client(e) => client_kind(e),
        }
    }

    /// What to do next, naming the `nook` command that helps, when there is one.
    pub fn hint(&self) -> Option<&'static str> {
        if let CliError::Timeout { .. } = self {
            return Some("wait again, or give a longer --timeout");
        }
        let CliError::Client(e) = self else {
            return None;
        };
        match e {
            ClientError::Store(StoreError::NotFound(_)) => Some("`nook list` shows your talks"),
            ClientError::Store(StoreError::Ambiguous(_)) => {
                Some("`nook list` shows the full talk ids")
            }
            ClientError::Pending { .. } => Some("`nook read TALK --wait-open` waits for it"),
            ClientError::NotYet { .. } => {
                Some("`nook wait TALK --for open` waits for its time; `nook list` counts down")
            }
            ClientError::WindowEnded => {
                Some("the talk was scheduled and is over; ask its organiser for a new one")
            }
            ClientError::Board(BoardError::UnknownRequest(_))
            | ClientError::Refused {
                code: nook_proto::ErrorCode::UnknownRequest,
                ..
            } => Some("`nook requests TALK` shows the waiting requests"),
            ClientError::Refused {
                code: nook_proto::ErrorCode::UnknownListing,
                ..
            } => Some("`nook browse --relay ADDR --board PHRASE` shows the live listings"),
            ClientError::Lost { .. } => Some("run the command again"),
            ClientError::Card(CardError::NoCard) => Some("set one with `nook card set --name …`"),
            ClientError::Member(nook_client::member::MemberError::OfferLimit { .. }) => {
                Some("`nook read TALK --follow` shows the owner's answer when it comes")
            }
            ClientError::Member(nook_client::member::MemberError::NoOfferer) => {
                Some("`nook who TALK` shows the offerers by alias")
            }
            ClientError::Member(nook_client::member::MemberError::ListenerOnly) => {
                Some("`nook read TALK --follow` shows what the speakers say")
            }
            ClientError::Card(CardError::UnknownMember { .. }) => {
                Some("`nook who TALK` shows the members by alias")
            }
            ClientError::Card(CardError::NoOffer { .. }) => {
                Some("`nook read TALK` shows the exchanges offered to you")
            }
            ClientError::Card(CardError::UnknownContact { .. }) => {
                Some("`nook contacts` shows the ids")
            }
            ClientError::Refused {
                code: nook_proto::ErrorCode::CreateRefused,
                ..
            } => Some(
                "ask the relay's operator for its creation token and give it with \
                 `nook new --create-token-file FILE` or NOOK_CREATE_TOKEN",
            ),
            ClientError::Refused {
                code: nook_proto::ErrorCode::Retiring,
                ..
            } => Some("create the talk on another relay (nook new --relay ADDRESS)"),
            ClientError::Refused {
                code: nook_proto::ErrorCode::StorageFull,
                ..
            } => Some(
                "try again later (or ask the relay's operator); `nook read` and `nook leave` \
                 still work, and free space as members read",
            ),
            _ => None,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(e) => f.write_str(&usage_line(e))?,
            CliError::Input(m) => f.write_str(m)?,
            CliError::NotOwner { talk } => write!(
                f,
                "only the owner of talk {talk} holds its invites, and this device joined it \
                 with one; ask the owner for an invite"
            )?,
            CliError::OwnInvite { talk } => write!(
                f,
                "this is an invite to your own talk {talk}: give it to someone else \
                 (`nook invites {talk}` lists the unused ones)"
            )?,
            CliError::Timeout { after } => write!(
                f,
                "nothing of the kind happened within {} s",
                after.as_secs()
            )?,
            CliError::Client(e) => write!(f, "{e}")?,
        }
        match self.hint() {
            Some(h) => write!(f, "; {h}"),
            None => Ok(()),
        }
    }
}

/// A clap error on one line, for the `error` field of a `--json` error: the message,
/// clap's tips and the usage, in clap's words. People get clap's own layout instead.
fn usage_line(e: &clap::Error) -> String {
    // clap renders paragraphs: "error: MESSAGE", "  tip: …" (maybe), "Usage: …", and
    // "For more information, try '--help'." Plain text: no styling is rendered.
    let text = e.render().to_string();
    let flat = |p: &str| p.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut parts = Vec::new();
    let mut usage = None;
    for p in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(m) = p.strip_prefix("error:") {
            parts.push(flat(m));
        } else if let Some(u) = p.strip_prefix("Usage:") {
            usage = Some(flat(u));
        } else if p.starts_with("tip:") {
            parts.push(flat(p));
        }
    }
    if let Some(u) = usage {
        parts.push(format!("usage: {u}"));
    }
    parts.join("; ")
}

/// The kind of a library error; see [`Kind`].
pub fn client_kind(e: &ClientError) -> Kind {
    use nook_proto::ErrorCode;
    match e {
        ClientError::Store(StoreError::NotFound(_)) => Kind::TalkUnknown,
        ClientError::Store(StoreError::Ambiguous(_)) => Kind::AmbiguousTalk,
        ClientError::Connect(ConnectError::WrongFingerprint { .. }) => Kind::RelayKeyMismatch,
        ClientError::BadReceipt => Kind::ReceiptInvalid,
        ClientError::Connect(ConnectError::Version { .. }) => Kind::RelayVersion,
        ClientError::Connect(ConnectError::ForwarderUnreachable { .. }) => {
            Kind::ForwarderUnreachable
        }
        ClientError::Connect(ConnectError::DestinationUnreachable { .. }) => {
            Kind::DestinationUnreachable
        }
        ClientError::Connect(ConnectError::ForwardRefused { .. }) => Kind::ForwardRefused,
        ClientError::Connect(_) => Kind::RelayUnreachable,
        ClientError::Lost { .. } => Kind::ConnectionLost,
        ClientError::Invite(_) => Kind::InviteMalformed,
        ClientError::Address(_) => Kind::AddressMalformed,
        ClientError::InviteUsed => Kind::InviteUsed,
        ClientError::Pending { .. } | ClientError::NotYet { .. } => Kind::TalkNotOpen,
        ClientError::WindowEnded => Kind::WindowEnded,
        ClientError::NotAllowed => Kind::NotAllowed,
        ClientError::Refused {
            code: ErrorCode::MailboxFull,
            ..
        } => Kind::MailboxFull,
        ClientError::Refused {
            code: ErrorCode::RateLimited,
            ..
        } => Kind::RateLimited,
        ClientError::Refused {
            code: ErrorCode::CreateRefused,
            ..
        } => Kind::CreateRefused,
        ClientError::Refused {
            code: ErrorCode::Retiring,
            ..
        } => Kind::RelayRetiring,
        ClientError::Refused {
            code: ErrorCode::StorageFull,
            ..
        } => Kind::RelayStorageFull,
        ClientError::Refused {
            code: ErrorCode::UnknownListing,
            ..
        } => Kind::ListingUnknown,
        ClientError::Refused {
            code: ErrorCode::UnknownRequest,
            ..
        } => Kind::RequestUnknown,
        ClientError::Refused {
            code: ErrorCode::BoardFull | ErrorCode::TooManyRequests,
            ..
        } => Kind::BoardFull,
        ClientError::Refused { .. } => Kind::RelayRefused,
        ClientError::Member(nook_client::member::MemberError::OfferLimit { .. }) => {
            Kind::OfferLimit
        }
        ClientError::Member(nook_client::member::MemberError::NoOfferer) => Kind::MemberUnknown,
        ClientError::Member(nook_client::member::MemberError::ListenerOnly) => Kind::NotAllowed,
        ClientError::Member(_) => Kind::BadInput,
        ClientError::Board(b) => match b {
            BoardError::NotOwner => Kind::NotOwner,
            BoardError::UnknownRequest(_) | BoardError::AmbiguousRequest(_) => Kind::RequestUnknown,
            BoardError::NoFreeSeat => Kind::BoardFull,
            BoardError::NotPosted | BoardError::ListingGone => Kind::ListingUnknown,
            BoardError::NoAsk => Kind::RequestUnknown,
            BoardError::Declined => Kind::NotAllowed,
            _ => Kind::BadInput,
        },
        ClientError::File(nook_client::files::FileError::MailboxFull) => Kind::MailboxFull,
        ClientError::File(_) => Kind::BadInput,
        ClientError::Card(c) => match c {
            CardError::NoCard => Kind::NoCard,
            CardError::UnknownMember { .. } => Kind::MemberUnknown,
            CardError::NoOffer { .. } => Kind::NoOffer,
            CardError::UnknownContact { .. } => Kind::ContactUnknown,
            CardError::NoFields | CardError::BadField { .. } => Kind::BadInput,
        },
        ClientError::Closed { .. } => Kind::TalkClosed,
        ClientError::TalkGone => Kind::TalkGone,
        // Storage, protocol, and whatever a newer library adds: internal.
        _ => Kind::Internal,
    }
}

/// The exit code of a library error; the chat screen uses it too.
pub fn client_exit_code(e: &ClientError) -> u8 {
    client_kind(e).exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_commands_and_codes_follow_the_table() {
        let pending = CliError::from(ClientError::Pending {
            members: 1,
            quorum: 3,
        });
        assert_eq!(pending.kind().exit_code(), 5);
        assert_eq!(
            pending.to_string(),
            "the talk is not open yet (1/3 seats taken); `nook read TALK --wait-open` waits for it"
        );
        let missing = CliError::from(StoreError::NotFound("abc".into()));
        assert_eq!(missing.kind().exit_code(), 3);
        assert_eq!(
            missing.to_string(),
            "no talk matches \"abc\"; `nook list` shows your talks"
        );
        let lost = CliError::from(ClientError::Lost {
            reason: "timed out".into(),
        });
        assert_eq!(lost.kind().exit_code(), 4);
        assert!(lost.to_string().ends_with("; run the command again"));
        assert_eq!(CliError::from(ClientError::TalkGone).kind().exit_code(), 6);
        assert_eq!(
            CliError::from(ClientError::BadReceipt).kind().exit_code(),
            7
        );
        assert_eq!(CliError::Input("empty".into()).kind().exit_code(), 5);
        assert_eq!(CliError::Input("empty".into()).hint(), None);
        let refused = CliError::from(ClientError::Refused {
            code: nook_proto::ErrorCode::CreateRefused,
            message: "whatever the relay wrote".into(),
        });
        assert_eq!(
            (
                refused.kind(),
                refused.kind().exit_code(),
                refused.kind().name()
            ),
            (Kind::CreateRefused, 5, "create_refused")
        );
        assert!(
            refused.to_string().ends_with(
                "; ask the relay's operator for its creation token and give it with \
                 `nook new --create-token-file FILE` or NOOK_CREATE_TOKEN"
            ),
            "{refused}"
        );
        let not_owner = CliError::NotOwner { talk: "abc".into() };
        assert_eq!(
            (not_owner.kind().exit_code(), not_owner.kind()),
            (5, Kind::NotOwner)
        );
    }

    #[test]
    fn the_help_lists_every_kind_under_its_exit_code() {
        // The help's lines, continuation lines joined to the code they continue.
        let mut by_code: Vec<(u8, String)> = Vec::new();
        for line in EXIT_CODES.lines().skip(1) {
            let t = line.trim_start();
            match t
                .split_once("  ")
                .and_then(|(c, rest)| Some((c.parse::<u8>().ok()?, rest)))
            {
                Some((code, rest)) => by_code.push((code, rest.to_string())),
                None => {
                    if let Some((_, text)) = by_code.last_mut() {
                        text.push(' ');
                        text.push_str(t);
                    }
                }
            }
        }
        let mut names = Vec::new();
        for kind in Kind::ALL {
            let text = by_code
                .iter()
                .find(|(c, _)| *c == kind.exit_code())
                .map(|(_, t)| t.as_str())
                .unwrap_or_else(|| panic!("no line for exit code {}", kind.exit_code()));
            let listed = text
                .rsplit_once(": ")
                .map(|(_, list)| list)
                .unwrap_or(text)
                .split(", ")
                .any(|n| n.trim() == kind.name());
            assert!(
                listed,
                "{kind:?} ({}) is not under {}",
                kind.name(),
                kind.exit_code()
            );
            names.push(kind.name());
        }
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "kind names are unique");
    }

    #[test]
    fn a_usage_error_is_one_line_with_clap_s_message_tip_and_usage() {
        use clap::{Arg, ArgAction, Command};
        let cmd = || {
            Command::new("nook").subcommand(
                Command::new("list").arg(Arg::new("json").long("json").action(ArgAction::SetTrue)),
            )
        };
        let e = cmd()
            .try_get_matches_from(["nook", "list", "--jsn"])
            .unwrap_err();
        let err = CliError::from(e);
        assert_eq!(err.kind(), Kind::Usage);
        assert_eq!(err.kind().exit_code(), 2);
        let line = err.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("unexpected argument '--jsn' found; tip: "),
            "{line}"
        );
        assert!(line.contains("'--json'"), "{line}");
        assert!(line.contains("; usage: nook list"), "{line}");
    }
}

//! What `nook` tells a person (or a script) when something fails: the message, a hint
//! naming the command that helps, a stable `kind`, and the exit code.
//!
//! The library's errors say what happened; only the binary knows its own commands, so
//! every hint and every exit code is decided here, in one table.

use nook_client::store::StoreError;
use nook_client::{ClientError, ConnectError};

/// Why a `nook` command failed, as scripts see it: the `kind` of a `--json` error and
/// the exit code. One variant per exit code; [`EXIT_CODES`] (`nook --help`) and
/// README.md list the same pairs, and a test holds the help text to this table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 1: a bug, or the local store could not be used.
    Internal,
    /// 2: the command line is invalid (unknown flag, missing argument, bad value).
    Usage,
    /// 3: no talk matches the given id or prefix, or more than one does.
    NotFound,
    /// 4: the relay could not be reached, or the connection was lost.
    Unreachable,
    /// 5: refused: the talk is not open yet, the invite was used, not allowed, bad input.
    Refused,
    /// 6: the talk was closed, expired or left; its local data was deleted.
    TalkGone,
    /// 7: the relay's key does not match its address, or its receipt does not verify.
    Security,
}

impl Kind {
    /// Every kind, in exit-code order.
    #[cfg(test)]
    pub const ALL: [Kind; 7] = [
        Kind::Internal,
        Kind::Usage,
        Kind::NotFound,
        Kind::Unreachable,
        Kind::Refused,
        Kind::TalkGone,
        Kind::Security,
    ];

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Internal => 1,
            Kind::Usage => 2,
            Kind::NotFound => 3,
            Kind::Unreachable => 4,
            Kind::Refused => 5,
            Kind::TalkGone => 6,
            Kind::Security => 7,
        }
    }

    /// The `kind` field of a `--json` error. Stable: scripts match on it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Usage => "usage",
            Kind::NotFound => "not_found",
            Kind::Unreachable => "unreachable",
            Kind::Refused => "refused",
            Kind::TalkGone => "talk_gone",
            Kind::Security => "security",
        }
    }
}

/// The exit codes and `--json` error kinds, for `nook --help` (README.md has the same
/// table).
pub const EXIT_CODES: &str = "EXIT CODES (and the \"kind\" of a --json error):
  0               success
  1  internal     internal or storage error
  2  usage        invalid command line
  3  not_found    no talk matches the given name (see `nook list`)
  4  unreachable  relay unreachable or connection lost (retry later)
  5  refused      talk not open yet, invite used, not allowed, bad input
  6  talk_gone    the talk was closed, expired or left (local data deleted)
  7  security     the relay's key does not match its address, or its receipt is invalid";

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
            CliError::Input(_) | CliError::NotOwner { .. } => Kind::Refused,
            CliError::Client(e) => client_kind(e),
        }
    }

    /// What to do next, naming the `nook` command that helps, when there is one.
    pub fn hint(&self) -> Option<&'static str> {
        let CliError::Client(e) = self else {
            return None;
        };
        match e {
            ClientError::Store(StoreError::NotFound(_)) => Some("`nook list` shows your talks"),
            ClientError::Store(StoreError::Ambiguous(_)) => {
                Some("`nook list` shows the full talk ids")
            }
            ClientError::Pending { .. } => Some("`nook read TALK --wait-open` waits for it"),
            ClientError::Lost { .. } => Some("run the command again"),
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
    match e {
        ClientError::Store(StoreError::NotFound(_) | StoreError::Ambiguous(_)) => Kind::NotFound,
        ClientError::Connect(ConnectError::WrongFingerprint { .. }) | ClientError::BadReceipt => {
            Kind::Security
        }
        ClientError::Connect(_) | ClientError::Lost { .. } => Kind::Unreachable,
        ClientError::Invite(_)
        | ClientError::Address(_)
        | ClientError::InviteUsed
        | ClientError::Pending { .. }
        | ClientError::NotAllowed
        | ClientError::Refused { .. }
        | ClientError::Member(_) => Kind::Refused,
        ClientError::TalkGone | ClientError::Closed { .. } => Kind::TalkGone,
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
        let not_owner = CliError::NotOwner { talk: "abc".into() };
        assert_eq!(
            (not_owner.kind().exit_code(), not_owner.kind()),
            (5, Kind::Refused)
        );
    }

    #[test]
    fn the_help_lists_every_kind_with_its_exit_code() {
        for kind in Kind::ALL {
            let line = format!("\n  {}  {:<11}  ", kind.exit_code(), kind.name());
            assert!(EXIT_CODES.contains(&line), "{kind:?}: no line {line:?}");
        }
        // Exit codes 1..=7 in order, each once; names unique.
        let codes: Vec<u8> = Kind::ALL.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes, (1..=7).collect::<Vec<u8>>());
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
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

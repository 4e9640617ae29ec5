//! What `nook` tells a person (or a script) when something fails: the message, a hint
//! naming the command that helps, a stable `kind`, and the exit code.
//!
//! The library's errors say what happened; only the binary knows its own commands, so
//! every hint and every exit code is decided here, in one table.

use nook_client::store::StoreError;
use nook_client::{ClientError, ConnectError};

/// Why a `nook` command failed.
#[derive(Debug)]
pub enum CliError {
    /// Input given with the command cannot be used (an empty message, no terminal
    /// for `chat`, no home folder). clap reports a malformed command line itself,
    /// with exit code 2.
    Input(String),
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

/// The exit codes, for `nook --help` (README.md has the same table).
pub const EXIT_CODES: &str = "EXIT CODES:
  0  success
  1  internal or storage error
  2  invalid command line
  3  no talk matches the given id (see `nook list`)
  4  relay unreachable or connection lost (retry later)
  5  refused: talk not open yet, invite used, not allowed, bad input
  6  the talk was closed, expired or left (local data deleted)
  7  security: the relay's key does not match its address, or its receipt is invalid";

impl CliError {
    /// The process exit code (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 5,
            CliError::Client(e) => client_exit_code(e),
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
            CliError::Input(m) => f.write_str(m)?,
            CliError::Client(e) => write!(f, "{e}")?,
        }
        match self.hint() {
            Some(h) => write!(f, "; {h}"),
            None => Ok(()),
        }
    }
}

/// The exit code of a library error; the chat screen uses it too.
pub fn client_exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Store(StoreError::NotFound(_) | StoreError::Ambiguous(_)) => 3,
        ClientError::Connect(ConnectError::WrongFingerprint { .. }) | ClientError::BadReceipt => 7,
        ClientError::Connect(_) | ClientError::Lost { .. } => 4,
        ClientError::Invite(_)
        | ClientError::Address(_)
        | ClientError::InviteUsed
        | ClientError::Pending { .. }
        | ClientError::NotAllowed
        | ClientError::Refused { .. }
        | ClientError::Member(_) => 5,
        ClientError::TalkGone => 6,
        // Storage, protocol, and whatever a newer library adds: internal.
        _ => 1,
    }
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
        assert_eq!(pending.exit_code(), 5);
        assert_eq!(
            pending.to_string(),
            "the talk is not open yet (1/3 seats taken); `nook read TALK --wait-open` waits for it"
        );
        let missing = CliError::from(StoreError::NotFound("abc".into()));
        assert_eq!(missing.exit_code(), 3);
        assert_eq!(
            missing.to_string(),
            "no talk matches \"abc\"; `nook list` shows your talks"
        );
        let lost = CliError::from(ClientError::Lost {
            reason: "timed out".into(),
        });
        assert_eq!(lost.exit_code(), 4);
        assert!(lost.to_string().ends_with("; run the command again"));
        assert_eq!(CliError::from(ClientError::TalkGone).exit_code(), 6);
        assert_eq!(CliError::from(ClientError::BadReceipt).exit_code(), 7);
        assert_eq!(CliError::Input("empty".into()).exit_code(), 5);
        assert_eq!(CliError::Input("empty".into()).hint(), None);
    }
}

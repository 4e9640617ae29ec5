//! `nook chat`: the full-screen terminal chat (being built; see issue 5).

use std::process::ExitCode;

use nook_client::{Client, ClientError};

pub async fn run(_client: Client, _talk: &str) -> Result<ExitCode, ClientError> {
    Err(ClientError::Usage(
        "nook chat is not available in this build; use `nook read TALK --follow` and `nook send`"
            .into(),
    ))
}

//! The relay's creation token for `nook new`: from `--create-token-file`, else from
//! `NOOK_CREATE_TOKEN`. Never from a bare flag, which every user of the machine sees
//! in `ps`; never written to the home, an invite or the output.

use std::io::Read;
use std::path::Path;

use nook_proto::CreateToken;
use nook_proto::limits::MAX_CREATE_TOKEN_TEXT;
use zeroize::Zeroizing;

use crate::error::CliError;

/// The environment variable that holds a creation token's text.
pub const ENV: &str = "NOOK_CREATE_TOKEN";

/// The token to present, if one was given: the file wins over the environment.
pub fn given(file: Option<&Path>) -> Result<Option<CreateToken>, CliError> {
    let (text, from) = match file {
        Some(path) => (
            read(path)?,
            format!("the creation token file {}", path.display()),
        ),
        None => match std::env::var(ENV) {
            Ok(v) => (Zeroizing::new(v), ENV.to_string()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(CliError::Input(format!("{ENV} is not UTF-8 text")));
            }
        },
    };
    nook_client::create_token(&text).map(Some).ok_or_else(|| {
        CliError::Input(format!(
            "{from} holds no creation token (it is empty, or longer than \
             {MAX_CREATE_TOKEN_TEXT} bytes)"
        ))
    })
}

fn read(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let cannot = |e: std::io::Error| {
        CliError::Input(format!(
            "cannot read the creation token file {}: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = Zeroizing::new(String::new());
    // Bounded: a token is short, and the path may name anything.
    file.take(MAX_CREATE_TOKEN_TEXT as u64 + 4096)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    Ok(text)
}

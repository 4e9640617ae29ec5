//! The client's configuration file: `$XDG_CONFIG_HOME/nook/config.toml`, or
//! `~/.config/nook/config.toml`. Optional; today it holds the default relay:
//!
//! ```toml
//! relay = "nook://…@relay.example.org:4433"
//! via = "nook://…@forwarder.example.net:4433"   # new talks route through it (--via)
//! ```
//!
//! Where a relay comes from, first found wins: `--relay` (or the `relay` parameter of
//! `nook rpc`'s `new`), then `NOOK_RELAY`, then this file.

use std::io::Read;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::CliError;

/// What the file may hold. Unknown keys are refused, so a misspelt key is not
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The relay `nook new` uses when neither --relay nor NOOK_RELAY gives one.
    pub relay: Option<String>,
    /// The forwarding relay new talks (`nook new`, `nook join`) route through when
    /// neither --via nor NOOK_VIA gives one.
    pub via: Option<String>,
}

/// Read at most this much: a config file is a few lines.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Where the file is looked for; `None` without XDG_CONFIG_HOME and HOME.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("nook").join("config.toml"))
}

/// The file's settings; all unset if there is no file.
pub fn load() -> Result<Config, CliError> {
    let Some(path) = path() else {
        return Ok(Config::default());
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => {
            return Err(CliError::Input(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )));
        }
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| {
            CliError::Input(format!(
                "cannot read the config file {} (it must be UTF-8 text): {e}",
                path.display()
            ))
        })?;
    parse(&text).map_err(|e| {
        CliError::Input(format!(
            "the config file {} is not valid (fix or remove it): {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })
}

/// The file's text as settings; toml's message names the line and the unknown key.
fn parse(text: &str) -> Result<Config, toml::de::Error> {
    toml::from_str(text)
}

/// The relay to use when none was given on the command line: `NOOK_RELAY`, then the
/// config file's `relay`.
pub fn default_relay() -> Result<Option<String>, CliError> {
    if let Some(r) = std::env::var("NOOK_RELAY").ok().filter(|r| !r.is_empty()) {
        return Ok(Some(r));
    }
    Ok(load()?.relay.filter(|r| !r.is_empty()))
}

/// The forwarding relay a new talk routes through when --via gives none: `NOOK_VIA`,
/// then the config file's `via`.
pub fn default_via() -> Result<Option<String>, CliError> {
    if let Some(v) = std::env::var("NOOK_VIA").ok().filter(|v| !v.is_empty()) {
        return Ok(Some(v));
    }
    Ok(load()?.via.filter(|v| !v.is_empty()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_is_read_and_an_unknown_key_named() {
        let c = parse("relay = \"nook://x@h:1\"\n").unwrap();
        assert_eq!(c.relay.as_deref(), Some("nook://x@h:1"));
        assert!(parse("").unwrap().relay.is_none());
        let e = parse("relay = \"nook://x@h:1\"\nrelays = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `relays`"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let c = parse("via = \"nook://y@f:2\"\n").unwrap();
        assert_eq!(c.via.as_deref(), Some("nook://y@f:2"));
        let e = parse("relay = 4433\n").unwrap_err().to_string();
        assert!(e.contains("string"), "{e}");
    }
}

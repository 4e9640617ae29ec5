//! `nook-relay --config FILE`: every flag of the command line, also settable in a TOML
//! file, under the flag's long name without its dashes:
//!
//! ```toml
//! listen = "0.0.0.0:4433"
//! data = "/var/lib/nook-relay"
//! max-ttl = "7d"
//! max-connections = 20000
//! metrics = "127.0.0.1:9090"
//! ```
//!
//! Precedence, first found wins: the command line, then the flag's environment
//! variable (where it has one, e.g. NOOK_RELAY_DATA), then the file, then the default.
//! Each setting becomes the flag it names, placed before the command line's own
//! arguments, so the one parser and its checks serve both; a key that names no flag is
//! refused, naming the key and the file.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use clap::{ArgAction, Command};

/// A config file is a few dozen lines; anything far larger is not one.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Flags that are not settings: they choose the file, or print and exit.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// The arguments the file at `path` stands for, as `--key=value`, checked one by one
/// against `cmd` (so an error names the key and the file, not a flag never typed).
pub fn args(cmd: &Command, path: &Path) -> anyhow::Result<Vec<OsString>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES)
        .read_to_string(&mut text)
        .with_context(|| {
            format!(
                "cannot read the config file {} (it must be UTF-8 text)",
                path.display()
            )
        })?;
    args_of(cmd, &text, path, &|name| std::env::var_os(name).is_some())
}

/// [`args`] of the file's `text`; `env_set` says whether an environment variable is set.
pub fn args_of(
    cmd: &Command,
    text: &str,
    path: &Path,
    env_set: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<OsString>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        anyhow::anyhow!(
            "the config file {} is not valid TOML: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    let settings: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| !NOT_SETTINGS.contains(&l)))
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some(arg) = settings.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let known: Vec<&str> = settings.iter().filter_map(|a| a.get_long()).collect();
            anyhow::bail!(
                "unknown key `{key}` in the config file {}: the keys are the long flags of \
                 nook-relay without their dashes: {}",
                path.display(),
                known.join(", ")
            );
        };
        // The environment beats the file, as the command line beats both.
        if arg.get_env().and_then(|e| e.to_str()).is_some_and(env_set) {
            continue;
        }
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let given = match (value, is_switch) {
            (toml::Value::Boolean(true), true) => format!("--{key}"),
            (toml::Value::Boolean(false), true) => continue,
            (_, true) => anyhow::bail!(
                "`{key}` in the config file {} must be true or false",
                path.display()
            ),
            (toml::Value::String(s), false) => format!("--{key}={s}"),
            (toml::Value::Integer(n), false) => format!("--{key}={n}"),
            (_, false) => anyhow::bail!(
                "`{key}` in the config file {} must be a string or a whole number, e.g. \
                 {key} = \"{}\"",
                path.display(),
                arg.get_value_names()
                    .and_then(|v| v.first())
                    .map_or("…".to_string(), |v| v.to_string())
            ),
        };
        // Checked alone, so its error says where it came from.
        if let Err(e) = cmd
            .clone()
            .try_get_matches_from([cmd.get_name(), given.as_str()])
        {
            let rendered = e.render().to_string();
            let why = rendered
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            anyhow::bail!("`{key}` in the config file {}: {why}", path.display());
        }
        out.push(OsString::from(given));
    }
    Ok(out)
}

//! The relay's announced retirement: `<data>/retire`, written by `nook-relay retire`
//! and read by the relay at start and at every sweep, so a running relay picks it up
//! within a second or so, and one started later still knows (protocol-spec.md §6.14).
//!
//! ```text
//! nook-relay retirement, format 1
//! # ...
//! at 2026-12-06T12:00:00Z
//! ```
//!
//! The file is plain (not signed): whoever may write the data folder controls the
//! relay anyway, and what members get at the time is a signed receipt per talk.

use std::path::Path;

use nook_crypto::auth::{parse_rfc3339_utc, rfc3339_utc};

use crate::identity::{IdentityError, write_atomically};

/// The retirement record in the data folder.
pub const RETIRE_FILE: &str = "retire";

const HEADER: &str = "nook-relay retirement, format";
const FORMAT: u32 = 1;

/// A `--at` value: an RFC 3339 time in UTC (`2026-12-24T18:00:00Z`), or a duration
/// from `now` as `--ttl` takes it (`90s`, `7d`, `1h30m`).
pub fn parse_at(text: &str, now: u64) -> Result<u64, String> {
    if let Some(at) = parse_rfc3339_utc(text) {
        return Ok(at);
    }
    match nook_proto::limits::duration_secs(text) {
        Some(secs) => now
            .checked_add(secs)
            .ok_or_else(|| format!("{text} from now is too far away")),
        None => Err(format!(
            "\"{text}\" is neither a time like 2026-12-24T18:00:00Z (UTC) nor a duration like 7d or 1h30m"
        )),
    }
}

/// Records that the relay of `dir` retires at `at` (replacing an earlier record).
pub fn record(dir: &Path, at: u64) -> Result<(), IdentityError> {
    let text = format!(
        "{HEADER} {FORMAT}\n\
         # nook-relay closes every talk at this time, with a receipt for each member,\n\
         # and takes no new talk from now on. Written by `nook-relay retire`.\n\
         at {}\n",
        rfc3339_utc(at)
    );
    write_atomically(&dir.join(RETIRE_FILE), text.as_bytes())
}

/// The retirement recorded in `dir`, if any; `Err` names what is wrong with the file.
pub fn read(dir: &Path) -> Result<Option<u64>, String> {
    let text = match std::fs::read_to_string(dir.join(RETIRE_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    parse(&text).map(Some)
}

fn parse(text: &str) -> Result<u64, String> {
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    match lines
        .next()
        .unwrap_or_default()
        .strip_prefix(HEADER)
        .map(str::trim)
    {
        Some(v) if v == FORMAT.to_string() => {}
        Some(v) => return Err(format!("format {v}; this version reads format {FORMAT}")),
        None => return Err("no header".into()),
    }
    lines
        .find_map(|l| l.strip_prefix("at "))
        .and_then(|t| parse_rfc3339_utc(t.trim()))
        .ok_or_else(|| "no valid \"at\" line".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_are_taken_and_garbage_is_refused() {
        assert_eq!(parse_at("2023-11-14T22:13:20Z", 5), Ok(1_700_000_000));
        assert_eq!(parse_at("7d", 100), Ok(100 + 7 * 86_400));
        assert_eq!(parse_at("1h30m", 0), Ok(5400));
        assert!(parse_at("tomorrow", 0).unwrap_err().contains("neither"));
    }

    #[test]
    fn the_record_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        record(dir.path(), 1_700_000_000).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(1_700_000_000)));
        std::fs::write(dir.path().join(RETIRE_FILE), "at 5\n").unwrap();
        assert!(read(dir.path()).is_err());
    }
}

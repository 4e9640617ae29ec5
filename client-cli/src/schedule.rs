//! Scheduled talks on the command line (`nook new --opens-at TIME --window DURATION`,
//! protocol-spec.md §20.1): reading the time and the window, turning them into the
//! protocol's relative schedule and the TTL that covers it, and the countdowns that
//! `list` and `chat` show.

use nook_proto::limits::{MAX_TTL_SECS, MIN_TTL_SECS, MIN_WINDOW_SECS};
use nook_proto::{Schedule, TalkPhase, TalkSchedule, TalkStatus};

/// The window when `--opens-at` is given without `--window`.
pub const DEFAULT_WINDOW: &str = "3h";

/// An opening time: `+DURATION` from now (`+2h`, `+90s`), or an RFC 3339 time with a
/// `Z` or `±hh:mm` offset (`2026-12-24T18:00:00+01:00`; fractions of a second are
/// dropped). Returns unix seconds.
pub fn parse_opens_at(text: &str, now: u64) -> Result<u64, String> {
    let t = text.trim();
    if let Some(rel) = t.strip_prefix('+') {
        let secs = nook_proto::limits::duration_secs(rel).ok_or_else(|| {
            format!("\"{text}\" is not a time; use +DURATION (e.g. +2h, +90s) or RFC 3339")
        })?;
        return Ok(now.saturating_add(secs));
    }
    rfc3339(t).ok_or_else(|| {
        format!(
            "\"{text}\" is not a time; use RFC 3339 (e.g. 2026-12-24T18:00:00Z or \
             2026-12-24T18:00:00+01:00) or +DURATION (e.g. +2h)"
        )
    })
}

/// A window: a duration as `--ttl` writes it, from one second (`4s`) to 30 days.
pub fn parse_window(text: &str) -> Result<u32, String> {
    let secs = nook_proto::limits::duration_secs(text.trim())
        .ok_or_else(|| format!("\"{text}\" is not a duration; use e.g. 90s, 45m, 3h or 1d"))?;
    u32::try_from(secs)
        .ok()
        .filter(|s| (MIN_WINDOW_SECS..=MAX_TTL_SECS).contains(s))
        .ok_or_else(|| format!("the window must be between 1s and 30d, got {text}"))
}

/// The protocol's schedule for a talk created at `now` that opens at `opens_at`, and
/// its TTL: `ttl` if given (it must cover the window), else just what covers it (at
/// least the protocol's shortest TTL).
pub fn plan(
    opens_at: u64,
    window: u32,
    ttl: Option<u32>,
    now: u64,
) -> Result<(Schedule, u32), String> {
    // A time already past opens at quorum.
    let opens_in = u32::try_from(opens_at.saturating_sub(now))
        .ok()
        .filter(|s| *s <= MAX_TTL_SECS)
        .ok_or("the opening time is more than 30 days ahead")?;
    let needed = opens_in
        .checked_add(window)
        .filter(|n| *n <= MAX_TTL_SECS)
        .ok_or("the window must end within 30 days from now")?;
    let ttl = match ttl {
        Some(t) if t < needed => {
            return Err(format!(
                "--ttl must cover the schedule ({} from now to the window's end); leave \
                 --ttl out to get just that",
                countdown(u64::from(needed))
            ));
        }
        Some(t) => t,
        None => needed.max(MIN_TTL_SECS),
    };
    Ok((
        Schedule {
            opens_in_secs: opens_in,
            window_secs: window,
        },
        ttl,
    ))
}

/// When the talk of `status` ends for this device: its window's end, or its expiry.
pub fn ends_at(status: Option<&TalkStatus>, expires_at: u64) -> u64 {
    match status.and_then(|s| s.schedule) {
        Some(s) => s.closes_at.min(expires_at),
        None => expires_at,
    }
}

/// The schedule of a talk still waiting for its time, if it is one.
pub fn waiting(status: Option<&TalkStatus>, now: u64) -> Option<TalkSchedule> {
    let s = status?;
    s.schedule
        .filter(|sch| s.state == TalkPhase::Pending && now < sch.opens_at)
}

/// Seconds as a countdown: `42s`, `3m20s`, `1h02m`, `2d 3h`.
pub fn countdown(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m{s:02}s"),
        (0, h, m) => format!("{h}h{m:02}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Unix seconds of an RFC 3339 date-time with an offset, or `None`.
fn rfc3339(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = t.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if ob[0] == b'-' { -o } else { o }
        }
    };
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in[usize::try_from(month - 1).ok()?]
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    // Days from 1970-01-01 to the date (civil-from-days inverse).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn opening_times_read_relative_and_rfc3339() {
        assert_eq!(parse_opens_at("+2h", NOW), Ok(NOW + 7200));
        assert_eq!(parse_opens_at("+3s", NOW), Ok(NOW + 3));
        assert_eq!(parse_opens_at("1970-01-01T00:00:00Z", NOW), Ok(0));
        assert_eq!(
            parse_opens_at("2026-12-24T18:00:00Z", NOW),
            Ok(1_798_135_200)
        );
        assert_eq!(
            parse_opens_at("2026-12-24T19:00:00+01:00", NOW),
            Ok(1_798_135_200)
        );
        assert_eq!(
            parse_opens_at("2026-12-24T13:30:00.250-04:30", NOW),
            Ok(1_798_135_200)
        );
        // The same rule as the receipts' times.
        assert_eq!(
            parse_opens_at(&nook_crypto::auth::rfc3339_utc(NOW), 0),
            Ok(NOW)
        );
        for bad in [
            "tomorrow",
            "+",
            "+2x",
            "2026-12-24",
            "2026-12-24T18:00:00",
            "2026-02-30T18:00:00Z",
            "2026-12-24T24:00:00Z",
            "2026-12-24T18:00:00+1:00",
            "2026-12-24T18:00:00.Z",
        ] {
            assert!(parse_opens_at(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_go_down_to_a_second() {
        assert_eq!(parse_window("4s"), Ok(4));
        assert_eq!(parse_window("3h"), Ok(10_800));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("31d").is_err());
        assert!(parse_window("soon").is_err());
    }

    #[test]
    fn the_ttl_covers_the_schedule() {
        let (s, ttl) = plan(NOW + 3, 4, None, NOW).unwrap();
        assert_eq!((s.opens_in_secs, s.window_secs), (3, 4));
        assert_eq!(ttl, MIN_TTL_SECS, "never below the protocol's shortest ttl");
        let (s, ttl) = plan(NOW + 7200, 10_800, None, NOW).unwrap();
        assert_eq!((s.opens_in_secs, ttl), (7200, 18_000));
        assert_eq!(
            plan(NOW + 7200, 10_800, Some(86_400), NOW).unwrap().1,
            86_400
        );
        assert!(plan(NOW + 7200, 10_800, Some(3600), NOW).is_err());
        // A time already past: opens at quorum.
        assert_eq!(plan(NOW - 50, 60, None, NOW).unwrap().0.opens_in_secs, 0);
        assert!(plan(NOW + u64::from(MAX_TTL_SECS), 1, None, NOW).is_err());
    }

    #[test]
    fn countdowns_read_at_a_glance() {
        assert_eq!(countdown(42), "42s");
        assert_eq!(countdown(200), "3m20s");
        assert_eq!(countdown(3720), "1h02m");
        assert_eq!(countdown(2 * 86_400 + 3 * 3600 + 5), "2d 3h");
    }
}

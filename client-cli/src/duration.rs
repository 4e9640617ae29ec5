//! `--ttl` values: one or more `<number><unit>` parts, largest unit first (`90s`,
//! `45m`, `1h30m`, `2d12h`), or plain seconds (`120`).

use nook_proto::limits::{MAX_TTL_SECS, MIN_TTL_SECS};

/// Parses a duration into seconds within the protocol's TTL range (60s to 30d).
///
/// Units are `d`, `h`, `m` and `s`, each at most once and in that order, so `1h30m`
/// reads one way only; `30m1h`, `1h1h`, `1h30` and `1.5h` are refused rather than
/// guessed at.
pub fn parse(text: &str) -> Result<u32, String> {
    let secs =
        seconds(text.trim()).ok_or_else(|| format!("\"{text}\" is not a duration; {EXAMPLES}"))?;
    if !(u64::from(MIN_TTL_SECS)..=u64::from(MAX_TTL_SECS)).contains(&secs) {
        return Err(format!(
            "the time-to-live must be between 60s and 30d, got {text}"
        ));
    }
    // In range, so it fits: MAX_TTL_SECS is a u32.
    u32::try_from(secs).map_err(|_| format!("the time-to-live must be at most 30d, got {text}"))
}

/// Parses a wait (`--connect-timeout`, `wait --timeout`): 1 second to 1 hour.
pub fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    let secs =
        seconds(text.trim()).ok_or_else(|| format!("\"{text}\" is not a duration; {EXAMPLES}"))?;
    if !(1..=3600).contains(&secs) {
        return Err(format!("a wait must be between 1s and 1h, got {text}"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

const EXAMPLES: &str = "use e.g. 90s, 45m, 1h30m, 24h or 2d12h (units d, h, m, s)";

/// Seconds in `t` (the one rule both binaries follow), or `None`.
fn seconds(t: &str) -> Option<u64> {
    nook_proto::limits::duration_secs(t)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn waits_take_the_same_units_within_their_own_range() {
        use std::time::Duration;
        assert_eq!(super::parse_wait("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(super::parse_wait("1m30s"), Ok(Duration::from_secs(90)));
        assert!(super::parse_wait("0s").is_err());
        assert!(super::parse_wait("2h").is_err());
        assert!(super::parse_wait("soon").is_err());
    }

    #[test]
    fn units_and_limits() {
        assert_eq!(parse("90s"), Ok(90));
        assert_eq!(parse("30m"), Ok(1800));
        assert_eq!(parse("45m"), Ok(2700));
        assert_eq!(parse("24h"), Ok(86_400));
        assert_eq!(parse("7d"), Ok(604_800));
        assert_eq!(parse("120"), Ok(120));
        assert_eq!(parse("60s"), Ok(60));
        assert_eq!(parse("30d"), Ok(2_592_000));
        assert!(parse("59s").is_err());
        assert!(parse("31d").is_err());
        assert!(parse("x").is_err());
    }

    #[test]
    fn compound_durations_add_up() {
        assert_eq!(parse("1h30m"), Ok(5400));
        assert_eq!(parse("2d12h"), Ok(216_000));
        assert_eq!(parse("1d2h3m4s"), Ok(93_784));
        assert_eq!(parse("1m30s"), Ok(90));
        assert_eq!(parse("29d23h59m60s"), Ok(2_592_000));
        assert_eq!(parse(" 1h30m "), Ok(5400));
    }

    #[test]
    fn garbage_is_refused_with_examples() {
        for bad in [
            "", "h", "1x", "5w", "1h30", "30m1h", "1h1h", "1.5h", "-1h", "1 h", "1h 30m", "h1",
            "1H", "１h",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains("is not a duration") && e.contains("1h30m"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn out_of_range_names_the_range() {
        for bad in [
            "0",
            "59",
            "30d1s",
            "1d720h",
            "99999999999999999999999d",
            "18446744073709551615",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("between 60s and 30d"), "{bad:?}: {e}");
        }
    }
}

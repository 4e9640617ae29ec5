//! `--ttl` values: `90s`, `30m`, `24h`, `7d`, or plain seconds.

/// Parses a duration into seconds within the protocol's TTL range.
pub fn parse(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration; use e.g. 90s, 30m, 24h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit \"{unit}\"; use s, m, h or d")),
    };
    let secs = n.saturating_mul(mult);
    let (min, max) = (
        u64::from(nook_proto::limits::MIN_TTL_SECS),
        u64::from(nook_proto::limits::MAX_TTL_SECS),
    );
    if !(min..=max).contains(&secs) {
        return Err(format!(
            "the time-to-live must be between 60s and 30d, got {text}"
        ));
    }
    Ok(secs as u32)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units_and_limits() {
        assert_eq!(parse("90s"), Ok(90));
        assert_eq!(parse("30m"), Ok(1800));
        assert_eq!(parse("24h"), Ok(86_400));
        assert_eq!(parse("7d"), Ok(604_800));
        assert_eq!(parse("120"), Ok(120));
        assert!(parse("59s").is_err());
        assert!(parse("31d").is_err());
        assert!(parse("5w").unwrap_err().contains("unknown unit"));
        assert!(parse("x").is_err());
    }
}

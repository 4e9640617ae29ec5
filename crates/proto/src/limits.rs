//! Every hard limit of protocol version 1, as named constants.
//!
//! `protocol-spec.md` §"Limits" lists the same numbers; a relay or client that accepts
//! more than these is not conforming. Limits that an operator may lower (per-mailbox
//! quotas, rates) are given here as defaults and marked so.

/// The ALPN protocol name. The major version lives here so a mismatched peer fails
/// during the TLS handshake, before any frame is exchanged.
pub const ALPN: &[u8] = b"nook/1";

/// The protocol revision carried in `Hello`. A relay refuses any other value.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame body (after the 4-byte length prefix) either side accepts.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Envelope bodies must be exactly one of these sizes, so the relay (and the network)
/// learn only a coarse size class of what members send. Powers of two: padding never
/// more than doubles a message (spec §15 weighs this against fewer, wider classes).
pub const PADDING_BUCKETS: [usize; 9] = [
    512,
    1024,
    2048,
    4096,
    8192,
    16 * 1024,
    32 * 1024,
    64 * 1024,
    128 * 1024,
];

/// Largest envelope body: the largest padding bucket.
pub const MAX_ENVELOPE: usize = 128 * 1024;

/// Largest welcome blob stored with a seat (a padded, sealed envelope body as well).
pub const MAX_WELCOME: usize = 8192;

/// Largest farewell (end-to-end close envelope) carried by a `Close` request.
pub const MAX_FAREWELL: usize = 2048;

/// Most seats in one talk, the creator's included.
pub const MAX_SEATS: u8 = 64;

/// Shortest and longest time-to-live of a talk, in seconds.
pub const MIN_TTL_SECS: u32 = 60;
/// Thirty days: a talk is meant to be short-lived.
pub const MAX_TTL_SECS: u32 = 30 * 24 * 3600;

/// Shortest window of a scheduled talk (spec §20.1), in seconds. A window fits in
/// the talk's TTL, so the longest is `MAX_TTL_SECS`.
pub const MIN_WINDOW_SECS: u32 = 1;

/// Most envelopes one `Fetch` returns, and the byte budget of their bodies, so a
/// response always fits in [`MAX_FRAME`].
pub const MAX_FETCH_ENVELOPES: u16 = 256;
/// Body bytes per `Envelopes` response (the last envelope may not cross it).
pub const MAX_FETCH_BYTES: usize = 768 * 1024;

/// Longest human-readable message in an error frame.
pub const MAX_ERROR_MESSAGE: usize = 256;
/// Rotation statements a relay keeps and a client follows at most (§11.12): a relay
/// that rotated more often than this cannot be followed from its first key.
pub const MAX_ROTATIONS: usize = 32;

/// Largest sealed listing body (a padding bucket).
pub const MAX_LISTING: usize = 2048;
/// Largest sealed seat request and answer bodies (padding buckets).
pub const MAX_SEAT_REQUEST: usize = 1024;
pub const MAX_ANSWER: usize = 1024;
/// Most listings one `Listings` answer carries (≤ 2 KiB each: fits [`MAX_FRAME`]).
pub const MAX_BROWSE_LISTINGS: usize = 256;
/// Most requests one `Requests` answer carries.
pub const MAX_REQUESTS_ANSWERED: usize = 256;
/// Default: live listings on one board (operator may lower).
pub const DEFAULT_MAX_LISTINGS_PER_BOARD: usize = 4096;
/// Default: live listings on the whole relay (operator may lower).
pub const DEFAULT_MAX_LISTINGS: usize = 100_000;
/// Default: requests (waiting or answered) one listing holds (operator may lower).
pub const DEFAULT_MAX_REQUESTS_PER_LISTING: usize = 64;
/// Default: listings one mailbox may post (one per board).
pub const MAX_LISTINGS_PER_MAILBOX: usize = 8;
/// Default: `Ask`s one connection may send, as a token bucket holding this many and
/// refilled at this many per minute (operator may lower).
pub const DEFAULT_ASKS_PER_MINUTE: u32 = 30;

/// Default quota: envelopes waiting in one mailbox (operator may lower).
pub const DEFAULT_MAX_ENVELOPES_PER_MAILBOX: u64 = 100_000;
/// Default quota: body bytes waiting in one mailbox (operator may lower).
pub const DEFAULT_MAX_BYTES_PER_MAILBOX: u64 = 256 * 1024 * 1024;
/// Default: mailboxes one connection may be authenticated for at once.
pub const DEFAULT_MAX_MAILBOXES_PER_CONNECTION: usize = 64;
/// Default: requests per second one connection may sustain (token bucket, burst = 4×).
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 20_000;

/// Default: talks one client address may create, as a token bucket holding this many
/// and refilled at this many per [`DEFAULT_CREATE_RATE_PERIOD_SECS`] (operator may
/// change; IPv6 addresses count by their /64).
pub const DEFAULT_CREATES_PER_ADDRESS: u32 = 60;
/// Default: talks the whole relay creates, a token bucket like the one per address.
pub const DEFAULT_CREATES: u32 = 1200;
/// The period both default create rates refill over: one minute.
pub const DEFAULT_CREATE_RATE_PERIOD_SECS: u64 = 60;

/// Longest creation-token text, in bytes, after surrounding whitespace is removed.
pub const MAX_CREATE_TOKEN_TEXT: usize = 1024;

/// A relay's creation token as written in a file or an environment variable: the text
/// without surrounding ASCII whitespace (a file's final newline is not part of it).
/// `None` if nothing is left or it is longer than [`MAX_CREATE_TOKEN_TEXT`]. The relay
/// and the client both read a token this way; what travels is `SHA-256` of the
/// returned bytes ([`crate::CreateToken`], spec §6.3).
pub fn create_token_text(raw: &str) -> Option<&str> {
    let t = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    (!t.is_empty() && t.len() <= MAX_CREATE_TOKEN_TEXT).then_some(t)
}

/// Seconds in a duration as people write it to the `nook` and `nook-relay` command lines
/// (`--ttl`, `--max-ttl`, `--connect-timeout`, waits): `<number><unit>` parts, units `d`,
/// `h`, `m`, `s` each at most once and largest first (`90s`, `45m`, `1h30m`, `2d12h`), or
/// plain seconds (`120`). `None` if it is not one; `30m1h`, `1h1h`, `1h30` and `1.5h` are
/// refused rather than guessed at. Saturates instead of overflowing, so a huge value reads
/// as out of range, not as garbage. (Not a wire format: one rule for both binaries.)
pub fn duration_secs(text: &str) -> Option<u64> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)];
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Some(t.parse::<u64>().unwrap_or(u64::MAX));
    }
    let mut rest = t;
    let mut total: u64 = 0;
    // Units still allowed: only smaller ones may follow a part.
    let mut allowed = &UNITS[..];
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n = rest[..digits].parse::<u64>().unwrap_or(u64::MAX);
        let unit = rest[digits..].chars().next()?;
        let at = allowed.iter().position(|(u, _)| *u == unit)?;
        total = total.saturating_add(n.saturating_mul(allowed[at].1));
        allowed = &allowed[at + 1..];
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(total)
}

#[cfg(test)]
mod duration_tests {
    use super::{MAX_CREATE_TOKEN_TEXT, create_token_text, duration_secs};

    #[test]
    fn a_create_token_is_its_text_without_surrounding_whitespace() {
        assert_eq!(create_token_text("s3cret\n"), Some("s3cret"));
        assert_eq!(create_token_text(" \t s3 cret\r\n"), Some("s3 cret"));
        assert_eq!(create_token_text(" \n"), None);
        assert_eq!(
            create_token_text(&"x".repeat(MAX_CREATE_TOKEN_TEXT + 1)),
            None
        );
        assert!(create_token_text(&"x".repeat(MAX_CREATE_TOKEN_TEXT)).is_some());
    }

    #[test]
    fn durations_read_one_way_only() {
        assert_eq!(duration_secs("1h30m"), Some(5400));
        assert_eq!(duration_secs(" 120 "), Some(120));
        assert_eq!(duration_secs("2d12h"), Some(216_000));
        for bad in ["", "30m1h", "1h1h", "1h30", "1.5h", "h", "1 h"] {
            assert_eq!(duration_secs(bad), None, "{bad:?}");
        }
    }
}

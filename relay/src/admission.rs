//! Who may create talks on this relay: the operator's creation token, and how many
//! talks are created per client address and relay-wide.
//!
//! Everything else a member does (join, send, read, close) is governed by what the
//! talk's creator handed out, so only `Create` is gated here: a personal relay whose
//! operator sets a token serves the talks its owner creates, and anyone holding one
//! of their invites still joins and talks without it.
//!
//! The token is checked before the create rates are charged, so strangers without it
//! cannot use up the owner's share of creations. Neither the token nor any client
//! address is ever logged; the per-address table holds addresses only while their
//! bucket is not yet full again, and is bounded in entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nook_proto::limits::{
    DEFAULT_CREATE_RATE_PERIOD_SECS, DEFAULT_CREATES, DEFAULT_CREATES_PER_ADDRESS,
    create_token_text,
};
use nook_proto::{CreateToken, ErrorCode, ErrorFrame};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest creation token the relay accepts from its operator, in bytes: a token is
/// a password anyone on the internet may guess at.
pub const MIN_CREATE_TOKEN_TEXT: usize = 16;

/// Client addresses whose create bucket is tracked at once. An address is tracked only
/// after a create the relay-wide bucket allowed, and forgotten once its bucket is full
/// again, so at the default rates far fewer are ever held; past this bound creates
/// from addresses not yet tracked are refused until some bucket refills.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// What the relay keeps of its creation token: `SHA-256(SHA-256(text))`, the hash of
/// what clients present ([`CreateToken`]). Its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct CreateTokenHash([u8; 32]);

impl std::fmt::Debug for CreateTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreateTokenHash(…)")
    }
}

/// Why a creation token given to the relay cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the creation token is empty")]
    Empty,
    #[error(
        "the creation token is {len} bytes; use at least {MIN_CREATE_TOKEN_TEXT} (e.g. \
         `head -c 32 /dev/urandom | base64 > FILE`)"
    )]
    TooShort { len: usize },
    #[error("the creation token is longer than {max} bytes", max = nook_proto::limits::MAX_CREATE_TOKEN_TEXT)]
    TooLong,
}

impl CreateTokenHash {
    /// The token written as `text` (a file's content: surrounding whitespace is not
    /// part of it, `nook_proto::limits::create_token_text`).
    pub fn from_text(text: &str) -> Result<CreateTokenHash, TokenError> {
        let token = match create_token_text(text) {
            Some(t) => t,
            None if text.trim().is_empty() => return Err(TokenError::Empty),
            None => return Err(TokenError::TooLong),
        };
        if token.len() < MIN_CREATE_TOKEN_TEXT {
            return Err(TokenError::TooShort { len: token.len() });
        }
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        Ok(CreateTokenHash(Sha256::digest(presented).into()))
    }

    /// Whether `presented` is the token, compared in constant time (its hash against
    /// the kept hash).
    pub fn matches(&self, presented: &CreateToken) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented.0).into();
        hash.ct_eq(&self.0).into()
    }
}

/// At most `count` creates per `per`, as a token bucket holding `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The default for one client address.
    pub const PER_ADDRESS: Rate = Rate {
        count: DEFAULT_CREATES_PER_ADDRESS,
        per: Duration::from_secs(DEFAULT_CREATE_RATE_PERIOD_SECS),
    };
    /// The default for the whole relay.
    pub const RELAY: Rate = Rate {
        count: DEFAULT_CREATES,
        per: Duration::from_secs(DEFAULT_CREATE_RATE_PERIOD_SECS),
    };
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.count, self.per.as_secs())
    }
}

/// A token bucket with the time passed in.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let per_sec = f64::from(rate.count) / rate.per.as_secs_f64().max(1e-9);
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * per_sec).min(f64::from(rate.count));
        self.last = now;
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.count)
    }
}

/// How the relay admits creates; shared by every connection.
#[derive(Debug)]
pub struct Admission {
    token: Option<CreateTokenHash>,
    relay_rate: Rate,
    address_rate: Rate,
    relay: Mutex<Bucket>,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
    refused_token: AtomicU64,
    refused_rate: AtomicU64,
}

impl Admission {
    pub fn new(token: Option<CreateTokenHash>, relay_rate: Rate, address_rate: Rate) -> Admission {
        Admission {
            token,
            relay_rate,
            address_rate,
            relay: Mutex::new(Bucket::full(relay_rate, Instant::now())),
            addresses: Mutex::new(HashMap::new()),
            refused_token: AtomicU64::new(0),
            refused_rate: AtomicU64::new(0),
        }
    }

    /// Whether this relay asks for a creation token.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Creates refused for a missing or wrong token.
    pub fn refused_token(&self) -> u64 {
        self.refused_token.load(Ordering::Relaxed)
    }

    /// Creates refused by a create rate (per address or relay-wide).
    pub fn refused_rate(&self) -> u64 {
        self.refused_rate.load(Ordering::Relaxed)
    }

    /// Client addresses tracked now (tests).
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.lock().map_or(0, |a| a.len())
    }

    /// `CreateRefused` unless this relay asks for no token or `presented` is it.
    pub fn check_token(&self, presented: Option<&CreateToken>) -> Result<(), ErrorFrame> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let message = match presented {
            Some(p) if token.matches(p) => return Ok(()),
            Some(_) => {
                "wrong creation token: this relay creates talks only for holders of its token"
            }
            None => {
                "this relay creates talks only for holders of its creation token (ask its \
                 operator); joining with an invite needs none"
            }
        };
        self.refused_token.fetch_add(1, Ordering::Relaxed);
        Err(ErrorFrame::new(ErrorCode::CreateRefused, message))
    }

    /// Takes one create from `from`'s bucket and the relay's, or `RateLimited` (and
    /// neither is charged).
    pub fn take_create(&self, from: IpAddr, now: Instant) -> Result<(), ErrorFrame> {
        let r = self.take(address_key(from), now);
        if r.is_err() {
            self.refused_rate.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn take(&self, key: IpAddr, now: Instant) -> Result<(), ErrorFrame> {
        let busy = || {
            ErrorFrame::new(
                ErrorCode::RateLimited,
                "this relay is creating too many talks right now; try again in a minute",
            )
        };
        // A poisoned lock means a panic elsewhere already; refuse rather than guess.
        let mut addresses = self.addresses.lock().map_err(|_| busy())?;
        let address_rate = self.address_rate;
        if let Some(bucket) = addresses.get_mut(&key) {
            bucket.refill(address_rate, now);
            if bucket.tokens < 1.0 {
                let wait = (1.0 - bucket.tokens) * address_rate.per.as_secs_f64()
                    / f64::from(address_rate.count);
                return Err(ErrorFrame::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many talks created from your address; try again in {} s",
                        wait.ceil().max(1.0)
                    ),
                ));
            }
        } else if addresses.len() >= MAX_TRACKED_ADDRESSES {
            // Full buckets are as good as absent.
            addresses.retain(|_, b| {
                b.refill(address_rate, now);
                !b.is_full(address_rate)
            });
            if addresses.len() >= MAX_TRACKED_ADDRESSES {
                return Err(busy());
            }
        }
        {
            let mut relay = self.relay.lock().map_err(|_| busy())?;
            relay.refill(self.relay_rate, now);
            if relay.tokens < 1.0 {
                return Err(busy());
            }
            relay.tokens -= 1.0;
        }
        addresses
            .entry(key)
            .or_insert_with(|| Bucket::full(address_rate, now))
            .tokens -= 1.0;
        Ok(())
    }
}

/// The address a create counts against: an IPv4 address as it is (also when the
/// dual-stack socket reports it as `::ffff:a.b.c.d`), an IPv6 address by its /64,
/// the smallest block one host is usually given.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEXT: &str = "correct horse battery staple";

    fn presented(text: &str) -> CreateToken {
        CreateToken(Sha256::digest(create_token_text(text).unwrap().as_bytes()).into())
    }

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    #[test]
    fn only_the_token_itself_passes_and_every_refusal_is_create_refused() {
        let gate = Admission::new(
            Some(CreateTokenHash::from_text(&format!("{TEXT}\n")).unwrap()),
            Rate::RELAY,
            Rate::PER_ADDRESS,
        );
        assert!(gate.check_token(Some(&presented(TEXT))).is_ok());
        for wrong in [None, Some(presented("correct horse battery stapler"))] {
            let e = gate.check_token(wrong.as_ref()).unwrap_err();
            assert_eq!(e.code, ErrorCode::CreateRefused);
            assert!(!e.message.contains(TEXT));
        }
        assert_eq!(gate.refused_token(), 2);
        // No token set: anyone creates, with or without one.
        let open = Admission::new(None, Rate::RELAY, Rate::PER_ADDRESS);
        assert!(open.check_token(None).is_ok());
        assert!(open.check_token(Some(&presented(TEXT))).is_ok());
        assert_eq!(
            format!("{:?}", CreateTokenHash::from_text(TEXT).unwrap()),
            "CreateTokenHash(…)"
        );
    }

    #[test]
    fn a_short_or_empty_token_is_refused_at_start() {
        assert_eq!(
            CreateTokenHash::from_text(" \n").unwrap_err(),
            TokenError::Empty
        );
        assert_eq!(
            CreateTokenHash::from_text("hunter2\n").unwrap_err(),
            TokenError::TooShort { len: 7 }
        );
        assert!(CreateTokenHash::from_text(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn one_address_gets_its_share_then_waits_while_others_still_create() {
        let gate = Admission::new(None, rate(100, 60), rate(3, 60));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let ok = (0..5).filter(|_| gate.take_create(a, t0).is_ok()).count();
        assert_eq!(ok, 3);
        let e = gate.take_create(a, t0).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.message.contains("your address"), "{}", e.message);
        assert!(gate.take_create(b, t0).is_ok());
        // A third of the period later one more is allowed.
        assert!(gate.take_create(a, t0 + Duration::from_secs(20)).is_ok());
        assert!(gate.take_create(a, t0 + Duration::from_secs(20)).is_err());
        assert_eq!(gate.refused_rate(), 4);
    }

    #[test]
    fn the_relay_wide_rate_bounds_creates_from_many_addresses() {
        let gate = Admission::new(None, rate(10, 60), rate(3, 60));
        let t0 = Instant::now();
        let ok = (0u8..40)
            .filter(|i| {
                gate.take_create(IpAddr::from([198, 51, 100, *i]), t0)
                    .is_ok()
            })
            .count();
        assert_eq!(ok, 10);
        // A refused create charged no address: only those that created are tracked.
        assert_eq!(gate.tracked_addresses(), 10);
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let gate = Admission::new(None, rate(100, 60), rate(2, 60));
        let t0 = Instant::now();
        assert!(gate.take_create("2001:db8::1".parse().unwrap(), t0).is_ok());
        assert!(
            gate.take_create("2001:db8::ffff:2".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(
            gate.take_create("2001:db8::3".parse().unwrap(), t0)
                .is_err()
        );
        assert!(
            gate.take_create("2001:db8:0:1::1".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(gate.take_create("192.0.2.9".parse().unwrap(), t0).is_ok());
        assert!(
            gate.take_create("::ffff:192.0.2.9".parse().unwrap(), t0)
                .is_ok()
        );
        assert!(gate.take_create("192.0.2.9".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn addresses_whose_bucket_refilled_are_forgotten_when_the_table_is_full() {
        let gate = Admission::new(None, rate(u32::MAX, 1), rate(1, 60));
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(gate.take_create(IpAddr::from(i.to_be_bytes()), t0).is_ok());
        }
        let newcomer = IpAddr::from([203, 0, 113, 1]);
        // Every tracked bucket is still empty: the table stays bounded.
        assert!(gate.take_create(newcomer, t0).is_err());
        assert_eq!(gate.tracked_addresses(), MAX_TRACKED_ADDRESSES);
        // A period later they are full again, so forgotten, and room is made.
        assert!(
            gate.take_create(newcomer, t0 + Duration::from_secs(61))
                .is_ok()
        );
        assert_eq!(gate.tracked_addresses(), 1);
    }
}

//! Relay addresses and invites, and what a seat secret derives.
//!
//! ```text
//! relay address  nook://<fingerprint>@<host>:<port>
//! invite         nook://<fingerprint>@<host>:<port>/<mailbox>#<seat-secret>
//! ```
//! `fingerprint` (32 bytes), `mailbox` (16 bytes) and `seat-secret` (32 bytes) are
//! base64url without padding (RFC 4648 §5): 43, 22 and 43 characters. The fragment
//! (`#…`) is never sent to the relay: only the join token derived from it is.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nook_proto::{MailboxId, TokenHash};
use zeroize::Zeroizing;

use crate::kdf::{hkdf32, sha256};
use crate::labels;
use crate::secret::Secret32;

const SCHEME: &str = "nook://";
const MAX_HOST: usize = 253;

/// Why an address or invite did not parse. Each variant names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("it must start with \"nook://\"")]
    Scheme,
    #[error("the relay fingerprint (before '@') must be 43 base64url characters")]
    Fingerprint,
    #[error(
        "the host is missing or has characters other than letters, digits, '.', '-' or a [bracketed] IPv6 address"
    )]
    Host,
    #[error("the port must be a number from 1 to 65535 after the host, as host:port")]
    Port,
    #[error("an invite needs a mailbox after the port (\"/<mailbox>\"), 22 base64url characters")]
    Mailbox,
    #[error("an invite needs its seat secret after '#', 43 base64url characters")]
    SeatSecret,
    #[error("a relay address has nothing after the port; is this an invite?")]
    Trailing,
}

/// The SHA-256 of a relay's Ed25519 identity key: what clients pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// Where a relay is and which key it must prove it holds.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayAddr {
    pub fingerprint: Fingerprint,
    /// A DNS name, an IPv4 address or a bracketed IPv6 address (brackets kept).
    pub host: String,
    pub port: u16,
}

/// A one-time invite to one seat of one talk.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    pub relay: RelayAddr,
    pub mailbox: MailboxId,
    pub seat_secret: SeatSecret,
}

/// The 32-byte secret of one seat, from which the invitee derives everything else.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SeatSecret(Secret32);

impl Fingerprint {
    /// The fingerprint of a relay identity key.
    pub fn of_key(relay_key: &[u8; 32]) -> Fingerprint {
        Fingerprint(sha256(&[relay_key]))
    }
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_text())
    }
}

impl RelayAddr {
    /// `host:port` as a socket address string (brackets kept for IPv6).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    /// The host without IPv6 brackets, as TLS server name and for DNS lookup.
    pub fn host_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}@{}:{}",
            self.fingerprint, self.host, self.port
        )
    }
}
impl fmt::Debug for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayAddr({self})")
    }
}

impl FromStr for RelayAddr {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<RelayAddr, AddressError> {
        let (relay, rest) = parse_relay(s)?;
        if !rest.is_empty() {
            return Err(AddressError::Trailing);
        }
        Ok(relay)
    }
}

impl Invite {
    /// The invite as text. It holds a secret: show it only to its intended invitee.
    pub fn to_text(&self) -> String {
        format!(
            "{}/{}#{}",
            self.relay,
            URL_SAFE_NO_PAD.encode(self.mailbox.0),
            URL_SAFE_NO_PAD.encode(self.seat_secret.0.expose())
        )
    }
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl FromStr for Invite {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Invite, AddressError> {
        let (relay, rest) = parse_relay(s)?;
        let rest = rest.strip_prefix('/').ok_or(AddressError::Mailbox)?;
        let (mailbox, secret) = rest.split_once('#').ok_or(AddressError::SeatSecret)?;
        let mailbox = MailboxId(decode_fixed::<16>(mailbox).ok_or(AddressError::Mailbox)?);
        let secret = decode_fixed::<32>(secret).ok_or(AddressError::SeatSecret)?;
        Ok(Invite {
            relay,
            mailbox,
            seat_secret: SeatSecret(Secret32::from_bytes(secret)),
        })
    }
}

impl SeatSecret {
    pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> SeatSecret {
        SeatSecret(Secret32::random(rng))
    }
    pub fn from_bytes(bytes: [u8; 32]) -> SeatSecret {
        SeatSecret(Secret32::from_bytes(bytes))
    }
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }
    /// `join_token = HKDF(ikm = S, info = "nook/1 join")`: sent to the relay once.
    pub fn join_token(&self) -> Zeroizing<[u8; 32]> {
        hkdf32(None, self.0.expose(), labels::JOIN)
    }
    /// `SHA-256(join_token)`: all the relay stores of the seat.
    pub fn token_hash(&self) -> TokenHash {
        TokenHash(sha256(&[self.join_token().as_ref()]))
    }
    /// `HKDF(ikm = S, info = "nook/1 welcome")`: seals the welcome for this seat.
    pub fn welcome_key(&self) -> Zeroizing<[u8; 32]> {
        hkdf32(None, self.0.expose(), labels::WELCOME)
    }
    /// `HKDF(ikm = S, info = "nook/1 seat-key")`: the seed of the seat's Ed25519 key.
    /// Its holder co-signs its announcement with it, proving it holds the seat's
    /// secret without revealing anything another member could reuse.
    pub fn seat_seed(&self) -> Zeroizing<[u8; 32]> {
        hkdf32(None, self.0.expose(), labels::SEAT_KEY)
    }
    /// The public half of the seat key.
    pub fn seat_public(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.seat_seed())
            .verifying_key()
            .to_bytes()
    }
    /// `SHA-256("nook/1 seat-commit" || seat public key)`: listed in the creator's
    /// roster, one per seat.
    pub fn commitment(&self) -> [u8; 32] {
        commitment_of(&self.seat_public())
    }
}

/// The commitment a seat's public key must match.
pub fn commitment_of(seat_public: &[u8; 32]) -> [u8; 32] {
    sha256(&[labels::SEAT_COMMIT, seat_public])
}

fn parse_relay(s: &str) -> Result<(RelayAddr, &str), AddressError> {
    let s = s.trim();
    let rest = s.strip_prefix(SCHEME).ok_or(AddressError::Scheme)?;
    let (fp, rest) = rest.split_once('@').ok_or(AddressError::Fingerprint)?;
    let fingerprint = Fingerprint(decode_fixed::<32>(fp).ok_or(AddressError::Fingerprint)?);
    let (host, rest) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or(AddressError::Host)?;
        let host = &rest[..=end];
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(AddressError::Host);
        }
        (host, &rest[end + 1..])
    } else {
        let end = rest.find(':').ok_or(AddressError::Port)?;
        let host = &rest[..end];
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid {
            return Err(AddressError::Host);
        }
        (host, &rest[end..])
    };
    if host.len() > MAX_HOST {
        return Err(AddressError::Host);
    }
    let rest = rest.strip_prefix(':').ok_or(AddressError::Port)?;
    let port_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let port: u16 = rest[..port_end].parse().map_err(|_| AddressError::Port)?;
    if port == 0 {
        return Err(AddressError::Port);
    }
    Ok((
        RelayAddr {
            fingerprint,
            host: host.to_ascii_lowercase(),
            port,
        },
        &rest[port_end..],
    ))
}

/// Strict base64url-without-padding of exactly `N` bytes.
fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    bytes.try_into().ok()
}

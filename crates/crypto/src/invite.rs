//! Relay addresses and invites, and what a seat secret derives.
//!
//! ```text
//! relay address  nook://<fingerprint>@<host>:<port>
//! invite         nook://<fingerprint>@<host>:<port>/<mailbox>#<seat-secret ‖ check>
//! ```
//! `fingerprint` (32 bytes), `mailbox` (16 bytes) and the fragment (the 32-byte seat
//! secret followed by a 4-byte check) are base64url without padding (RFC 4648 §5): 43,
//! 22 and 48 characters. The check is a truncated SHA-256 of everything else in the
//! invite, so a person's typo in any part is refused here, before the relay is asked
//! (where it would look like a used invite, or a relay that does not answer). The
//! fragment (`#…`) is never sent to the relay: only the join token derived from it is.
//!
//! Parsing forgives what pasting from mail or chat adds: white space and line breaks
//! anywhere, invisible format characters, and enclosing `<…>`, quotes or backticks.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bincode::{Decode, Encode};
use nook_proto::{MailboxId, TokenHash};
use zeroize::{Zeroize, Zeroizing};

use crate::kdf::{hkdf32, sha256};
use crate::labels;
use crate::secret::Secret32;

const SCHEME: &str = "nook://";
const MAX_HOST: usize = 253;
/// Bytes of SHA-256 an invite carries after its seat secret: a random typo slips
/// through with probability 2^-32.
pub const INVITE_CHECK_LEN: usize = 4;
/// Characters that pasting can put inside an address without showing them: soft
/// hyphen, zero-width space / non-joiner / joiner, word joiner, byte-order mark. No
/// address contains them, so they are dropped like white space.
const INVISIBLE: [char; 6] = [
    '\u{ad}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}',
];
/// Pairs that mail and chat put around a link or a code span; none can be part of an
/// address, so any number of them, nested, are removed.
const WRAPPERS: [(char, char); 6] = [
    ('<', '>'),
    ('"', '"'),
    ('\'', '\''),
    ('\u{201c}', '\u{201d}'),
    ('\u{2018}', '\u{2019}'),
    ('`', '`'),
];

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
    #[error("an invite needs its seat secret and check after '#', 48 base64url characters")]
    SeatSecret,
    /// Every part is well-formed, but the check does not match: a typo, or a part
    /// of the invite lost on the way.
    #[error(
        "this invite is mistyped or incomplete: check it character by character against the one you were sent, or ask for it again"
    )]
    Checksum,
    #[error("a relay address has nothing after the port; is this an invite?")]
    Trailing,
}

/// The SHA-256 of a relay's Ed25519 identity key: what clients pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Fingerprint(pub [u8; 32]);

/// Where a relay is and which key it must prove it holds.
///
/// (`Encode`/`Decode` are for the client's own sealed store, which keeps the address
/// with a deletion receipt; text from anywhere else is parsed with `FromStr`.)
#[derive(Clone, PartialEq, Eq, Hash, Encode, Decode)]
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
        let s = unwrap_pasted(s);
        let (relay, rest) = parse_relay(&s)?;
        if !rest.is_empty() {
            return Err(AddressError::Trailing);
        }
        Ok(relay)
    }
}

impl Invite {
    /// The invite as text. It holds a secret: show it only to its intended invitee.
    pub fn to_text(&self) -> String {
        let mut fragment = Zeroizing::new([0u8; 32 + INVITE_CHECK_LEN]);
        fragment[..32].copy_from_slice(self.seat_secret.expose());
        fragment[32..].copy_from_slice(&self.check());
        format!(
            "{}/{}#{}",
            self.relay,
            URL_SAFE_NO_PAD.encode(self.mailbox.0),
            URL_SAFE_NO_PAD.encode(fragment.as_slice())
        )
    }

    /// The check written after the seat secret: the first [`INVITE_CHECK_LEN`] bytes of
    /// `SHA-256("nook/1 invite-check" ‖ fingerprint ‖ len(host) (1 byte) ‖ host ‖
    /// port (u16 BE) ‖ mailbox ‖ seat secret)`, the host in lowercase with its brackets.
    pub fn check(&self) -> [u8; INVITE_CHECK_LEN] {
        // A host is at most MAX_HOST (253) bytes, so its length fits the byte.
        let host_len = [u8::try_from(self.relay.host.len()).unwrap_or(u8::MAX)];
        let digest = sha256(&[
            labels::INVITE_CHECK,
            &self.relay.fingerprint.0,
            &host_len,
            self.relay.host.as_bytes(),
            &self.relay.port.to_be_bytes(),
            &self.mailbox.0,
            self.seat_secret.expose(),
        ]);
        let mut check = [0u8; INVITE_CHECK_LEN];
        check.copy_from_slice(&digest[..INVITE_CHECK_LEN]);
        check
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
        let s = Zeroizing::new(unwrap_pasted(s));
        let (relay, rest) = parse_relay(&s)?;
        let rest = rest.strip_prefix('/').ok_or(AddressError::Mailbox)?;
        let (mailbox, fragment) = rest.split_once('#').ok_or(AddressError::SeatSecret)?;
        let mailbox = MailboxId(decode_fixed::<16>(mailbox).ok_or(AddressError::Mailbox)?);
        let fragment = Zeroizing::new(
            decode_fixed::<{ 32 + INVITE_CHECK_LEN }>(fragment).ok_or(AddressError::SeatSecret)?,
        );
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&fragment[..32]);
        let invite = Invite {
            relay,
            mailbox,
            seat_secret: SeatSecret(Secret32::from_bytes(secret)),
        };
        secret.zeroize();
        // Not secret-dependent timing worth hiding: the invite is the holder's own.
        if invite.check()[..] != fragment[32..] {
            return Err(AddressError::Checksum);
        }
        Ok(invite)
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

/// The address as it was meant, from text as pasted: without any white space or
/// invisible character (line breaks that mail or chat inserted), then without the
/// pairs of `<>`, quotes or backticks around it.
fn unwrap_pasted(s: &str) -> String {
    let mut text: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && !INVISIBLE.contains(c))
        .collect();
    while let Some(inner) = WRAPPERS.iter().find_map(|&(open, close)| {
        text.strip_prefix(open)?
            .strip_suffix(close)
            .map(str::to_owned)
    }) {
        text.zeroize();
        text = inner;
    }
    text
}

fn parse_relay(s: &str) -> Result<(RelayAddr, &str), AddressError> {
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

//! What members sign for the relay, and what the relay signs for members.
//!
//! Relay-auth transcript (signed with the member's relay-auth key):
//! ```text
//! "nook/1 relay-auth" ‖ op (1 byte) ‖ challenge (32) ‖ mailbox (16) ‖ member key (32) ‖ extra
//! ```
//! The challenge is fresh per connection, so no signature works on another connection.
//! `extra` binds the request's payload: see [`AuthOp`].
//!
//! Deletion receipts are signed by the relay identity key; [`PortableReceipt`] is a
//! receipt together with that key and the relay's address, in a text form a person
//! can keep and anyone can check later, offline.

use std::fmt::Write as _;
use std::str::FromStr;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey};
use nook_proto::codec::encode_value;
use nook_proto::{
    MailboxId, MemberKey, Receipt, RelayKey, RotationStatement, Signature, TalkParams,
};
use zeroize::Zeroizing;

use crate::identity::{TalkIdentity, verify};
use crate::invite::RelayAddr;
use crate::kdf::sha256;
use crate::rotation::{FollowError, follow};
use crate::{CryptoError, labels};

/// Which request a relay-auth signature authorises, and what its `extra` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AuthOp {
    /// `extra = SHA-256(bincode(TalkParams))`; mailbox = 16 zero bytes (not yet chosen).
    Create = 0,
    /// `extra = join token (32)`.
    Join = 1,
    /// `extra` empty.
    Auth = 2,
    /// `extra` empty.
    Leave = 3,
    /// `extra = SHA-256(farewell)`.
    Close = 4,
}

/// The bytes a relay-auth signature covers.
pub fn relay_auth_transcript(
    op: AuthOp,
    challenge: &[u8; 32],
    mailbox: &MailboxId,
    member: &MemberKey,
    extra: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(labels::RELAY_AUTH.len() + 81 + extra.len());
    t.extend_from_slice(labels::RELAY_AUTH);
    t.push(op as u8);
    t.extend_from_slice(challenge);
    t.extend_from_slice(&mailbox.0);
    t.extend_from_slice(&member.0);
    t.extend_from_slice(extra);
    t
}

/// The `extra` of a create transcript.
pub fn params_digest(params: &TalkParams) -> Result<[u8; 32], CryptoError> {
    let bytes = encode_value(params).map_err(|_| CryptoError::Malformed)?;
    Ok(sha256(&[&bytes]))
}

/// Signs a relay-auth transcript with `identity`'s relay-auth key.
pub fn sign_relay_auth(
    identity: &TalkIdentity,
    op: AuthOp,
    challenge: &[u8; 32],
    mailbox: &MailboxId,
    extra: &[u8],
) -> Signature {
    let member = identity.member_key();
    identity.sign_relay(&relay_auth_transcript(
        op, challenge, mailbox, &member, extra,
    ))
}

/// What the relay checks: `signature` by `member` over the transcript.
pub fn verify_relay_auth(
    member: &MemberKey,
    op: AuthOp,
    challenge: &[u8; 32],
    mailbox: &MailboxId,
    extra: &[u8],
    signature: &Signature,
) -> Result<(), CryptoError> {
    verify(
        &member.0,
        &relay_auth_transcript(op, challenge, mailbox, member, extra),
        &signature.0,
    )
}

/// `"nook/1 receipt" ‖ mailbox ‖ closed_at (u64 LE) ‖ envelopes_deleted (u64 LE)`.
pub fn receipt_transcript(mailbox: &MailboxId, closed_at: u64, envelopes_deleted: u64) -> Vec<u8> {
    [
        labels::RECEIPT,
        &mailbox.0,
        &closed_at.to_le_bytes(),
        &envelopes_deleted.to_le_bytes(),
    ]
    .concat()
}

/// Checks a deletion receipt against the pinned relay key.
pub fn verify_receipt(relay: &RelayKey, receipt: &Receipt) -> Result<(), CryptoError> {
    verify(
        &relay.0,
        &receipt_transcript(
            &receipt.mailbox,
            receipt.closed_at,
            receipt.envelopes_deleted,
        ),
        &receipt.signature.0,
    )
}

/// The first line of a receipt's text form; the version is that of the text form.
pub const RECEIPT_HEADER: &str = "nook deletion receipt v1";

/// A deletion receipt with everything needed to check it later, anywhere: the relay's
/// address (whose fingerprint pins the relay key) and the relay key itself.
///
/// Its text form ([`PortableReceipt::to_text`], parsed by `FromStr`):
///
/// ```text
/// nook deletion receipt v1
/// relay: nook://<fingerprint>@<host>:<port>
/// relay-key: <64 hex>
/// mailbox: <32 hex>
/// closed-at: <RFC 3339, UTC, whole seconds: 2023-11-14T23:03:20Z>
/// envelopes-deleted: <decimal>
/// signature: <128 hex>
/// rotation: <old key, 64 hex> <new key, 64 hex> <rotated-at, RFC 3339> <128 hex>
/// ```
///
/// The `rotation` lines (zero or more, in order) are the relay's key rotations from
/// the key the address pins to `relay-key` (§11.12), so a receipt signed after a
/// rotation still checks against the address the member was given.
///
/// The host and port are where the relay was, for people; nothing signs them. What a
/// valid receipt proves is that the holder of the key the fingerprint pins said it
/// deleted that mailbox at that time.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PortableReceipt {
    pub relay: RelayAddr,
    pub relay_key: RelayKey,
    pub mailbox: MailboxId,
    /// Unix seconds of the deletion, by the relay's clock.
    pub closed_at: u64,
    pub envelopes_deleted: u64,
    pub signature: Signature,
    /// The rotation statements leading from the key `relay` pins to `relay_key`
    /// (empty when `relay_key` is the pinned key).
    pub rotations: Vec<RotationStatement>,
}

/// Why a [`PortableReceipt`] is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// SHA-256 of the relay key is not the fingerprint in the relay's address.
    #[error("its relay key is not the key its relay address pins (the fingerprint differs)")]
    WrongKey,
    /// The relay key is not the pinned one, and its rotation lines do not lead there.
    #[error(
        "its relay key is not the key its relay address pins, and its rotation lines do not prove the relay moved to it ({0})"
    )]
    BadRotation(FollowError),
    /// The signature does not verify over the receipt under the relay key.
    #[error(
        "its signature does not verify: the receipt was altered, or this relay never signed it"
    )]
    BadSignature,
}

/// Why a receipt's text form did not parse. Names the line or field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptTextError {
    #[error("no line \"nook deletion receipt v1\" starts a receipt")]
    NoHeader,
    #[error("\"{0}\" is a receipt of a version this nook does not read")]
    Version(String),
    #[error("it holds more than one receipt; give one at a time")]
    MoreThanOne,
    #[error("a line of the receipt is not \"key: value\": {0:?}")]
    Line(String),
    #[error("the receipt has an unknown field \"{0}\"")]
    UnknownField(String),
    #[error("the receipt has the field \"{0}\" twice")]
    Repeated(&'static str),
    #[error("the receipt lacks the field \"{0}\"")]
    Missing(&'static str),
    #[error("the receipt's field \"{0}\" is malformed")]
    Field(&'static str),
}

/// The fields of the text form, in the order it writes them.
const FIELDS: [&str; 6] = [
    "relay",
    "relay-key",
    "mailbox",
    "closed-at",
    "envelopes-deleted",
    "signature",
];

impl PortableReceipt {
    /// A receipt the relay at `relay`, with identity key `relay_key`, issued.
    pub fn new(relay: RelayAddr, relay_key: RelayKey, receipt: &Receipt) -> PortableReceipt {
        PortableReceipt {
            relay,
            relay_key,
            mailbox: receipt.mailbox,
            closed_at: receipt.closed_at,
            envelopes_deleted: receipt.envelopes_deleted,
            signature: receipt.signature,
            rotations: Vec::new(),
        }
    }

    /// The same receipt carrying the rotation statements from the pinned key to
    /// `relay_key` (see [`crate::rotation::follow`]).
    pub fn with_rotations(mut self, rotations: Vec<RotationStatement>) -> PortableReceipt {
        self.rotations = rotations;
        self
    }

    /// The receipt as the relay sent it.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            mailbox: self.mailbox,
            closed_at: self.closed_at,
            envelopes_deleted: self.envelopes_deleted,
            signature: self.signature,
        }
    }

    /// Checks that the relay key is the one the address pins, then the signature.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        match follow(&self.relay.fingerprint, &self.rotations, &self.relay_key) {
            Ok(_) => {}
            Err(FollowError::NotPinned) => return Err(ReceiptError::WrongKey),
            Err(e) => return Err(ReceiptError::BadRotation(e)),
        }
        verify_receipt(&self.relay_key, &self.receipt()).map_err(|_| ReceiptError::BadSignature)
    }

    /// The text form: seven lines, each ending with a line feed.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(400);
        let values = self.field_values();
        let _ = writeln!(out, "{RECEIPT_HEADER}");
        for (name, value) in FIELDS.iter().zip(values) {
            let _ = writeln!(out, "{name}: {value}");
        }
        for r in &self.rotations {
            let _ = writeln!(out, "{ROTATION_FIELD}: {}", rotation_value(r));
        }
        out
    }

    /// The value of each field of the text form, in the order of the text form
    /// (`relay`, `relay-key`, `mailbox`, `closed-at`, `envelopes-deleted`,
    /// `signature`); also what `--json` output shows.
    pub fn field_values(&self) -> [String; 6] {
        [
            self.relay.to_string(),
            to_hex(&self.relay_key.0),
            to_hex(&self.mailbox.0),
            rfc3339_utc(self.closed_at),
            self.envelopes_deleted.to_string(),
            to_hex(&self.signature.0),
        ]
    }

    /// Builds a receipt from the values of its six fields, as [`Self::field_values`]
    /// writes them (hex in either case is accepted).
    pub fn from_field_values(values: [&str; 6]) -> Result<PortableReceipt, ReceiptTextError> {
        let [
            relay,
            relay_key,
            mailbox,
            closed_at,
            envelopes_deleted,
            signature,
        ] = values;
        let field = |i: usize| ReceiptTextError::Field(FIELDS[i]);
        Ok(PortableReceipt {
            relay: RelayAddr::from_str(relay).map_err(|_| field(0))?,
            relay_key: RelayKey(from_hex(relay_key).ok_or(field(1))?),
            mailbox: MailboxId(from_hex(mailbox).ok_or(field(2))?),
            closed_at: parse_rfc3339_utc(closed_at).ok_or(field(3))?,
            envelopes_deleted: parse_decimal(envelopes_deleted).ok_or(field(4))?,
            signature: Signature(from_hex(signature).ok_or(field(5))?),
            rotations: Vec::new(),
        })
    }
}

/// The key of the text form's repeatable rotation line.
pub const ROTATION_FIELD: &str = "rotation";

/// A rotation line's value: `<old hex> <new hex> <rotated-at RFC 3339> <signature hex>`.
pub fn rotation_value(r: &RotationStatement) -> String {
    format!(
        "{} {} {} {}",
        to_hex(&r.old.0),
        to_hex(&r.new.0),
        rfc3339_utc(r.rotated_at),
        to_hex(&r.signature.0)
    )
}

/// The inverse of [`rotation_value`] (hex in either case).
pub fn parse_rotation_value(text: &str) -> Option<RotationStatement> {
    let mut parts = text.split(' ').filter(|p| !p.is_empty());
    let (old, new, at, sig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(RotationStatement {
        old: RelayKey(from_hex(old)?),
        new: RelayKey(from_hex(new)?),
        rotated_at: parse_rfc3339_utc(at)?,
        signature: Signature(from_hex(sig)?),
    })
}

impl FromStr for PortableReceipt {
    type Err = ReceiptTextError;

    /// Finds the receipt in `text`: lines before its header line are skipped, and it
    /// ends at the first empty line or the end (so the whole output of `nook close`,
    /// saved to a file, reads). Lines are trimmed, and `\r\n` ends a line as well.
    fn from_str(text: &str) -> Result<PortableReceipt, ReceiptTextError> {
        let mut lines = text.lines().map(str::trim);
        let mut header_found = false;
        for line in lines.by_ref() {
            if line == RECEIPT_HEADER {
                header_found = true;
                break;
            }
            if is_other_version(line) {
                return Err(ReceiptTextError::Version(line.to_owned()));
            }
        }
        if !header_found {
            return Err(ReceiptTextError::NoHeader);
        }
        let mut values: [Option<&str>; 6] = [None; 6];
        let mut rotations = Vec::new();
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            if line == RECEIPT_HEADER || is_other_version(line) {
                return Err(ReceiptTextError::MoreThanOne);
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| ReceiptTextError::Line(line.to_owned()))?;
            let name = name.trim();
            if name == ROTATION_FIELD {
                if rotations.len() >= nook_proto::limits::MAX_ROTATIONS {
                    return Err(ReceiptTextError::Field(ROTATION_FIELD));
                }
                rotations.push(
                    parse_rotation_value(value.trim())
                        .ok_or(ReceiptTextError::Field(ROTATION_FIELD))?,
                );
                continue;
            }
            let i = FIELDS
                .iter()
                .position(|f| *f == name)
                .ok_or_else(|| ReceiptTextError::UnknownField(name.to_owned()))?;
            if values[i].replace(value.trim()).is_some() {
                return Err(ReceiptTextError::Repeated(FIELDS[i]));
            }
        }
        if lines.any(|l| l == RECEIPT_HEADER || is_other_version(l)) {
            return Err(ReceiptTextError::MoreThanOne);
        }
        let mut present = [""; 6];
        for (i, v) in values.iter().enumerate() {
            present[i] = v.ok_or(ReceiptTextError::Missing(FIELDS[i]))?;
        }
        PortableReceipt::from_field_values(present).map(|r| r.with_rotations(rotations))
    }
}

/// `secs` (unix time) as RFC 3339 in UTC with whole seconds: `2023-11-14T23:03:20Z`.
/// (A year past 9999, which no sane relay clock gives, is written with more digits.)
pub fn rfc3339_utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The inverse of [`rfc3339_utc`]: exactly the form it writes, nothing else (no
/// offsets, fractions or lowercase; so each time has one text).
pub fn parse_rfc3339_utc(text: &str) -> Option<u64> {
    let (year, rest) = text.split_once('-')?;
    let b = rest.as_bytes();
    if year.len() < 4 || !year.bytes().all(|c| c.is_ascii_digit()) || b.len() != 15 {
        return None;
    }
    let two = |i: usize| -> Option<u64> {
        let (hi, lo) = (*b.get(i)?, *b.get(i + 1)?);
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| u64::from(hi - b'0') * 10 + u64::from(lo - b'0'))
    };
    if [b[2], b[5], b[8], b[11], b[14]] != [b'-', b'T', b':', b':', b'Z'] {
        return None;
    }
    let year: u64 = year.parse().ok()?;
    let (month, day) = (two(0)?, two(3)?);
    let (hour, minute, second) = (two(6)?, two(9)?, two(12)?);
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3600 + minute * 60 + second)?;
    // Rejects days past the end of their month (and leading zeros of long years).
    (rfc3339_utc(secs) == text).then_some(secs)
}

fn is_other_version(line: &str) -> bool {
    line.starts_with("nook deletion receipt ") && line != RECEIPT_HEADER
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`], for dates from 1970 on; `None` on overflow.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = year.checked_sub(u64::from(month <= 2))?;
    let era = y / 400;
    let yoe = y % 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Exactly `2 N` hex digits, either case.
fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        // Two hex digits are below 256.
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// A `u64` in decimal: ASCII digits only, no sign, no leading zero.
fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = text.bytes().all(|c| c.is_ascii_digit())
        && !text.is_empty()
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The relay's identity: one Ed25519 key for its TLS certificate and its receipts, so
/// the fingerprint clients pin vouches for both.
pub struct RelayIdentity {
    pub(crate) key: SigningKey,
}

impl RelayIdentity {
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> RelayIdentity {
        RelayIdentity {
            key: SigningKey::generate(rng),
        }
    }
    pub fn from_seed(seed: &[u8; 32]) -> RelayIdentity {
        RelayIdentity {
            key: SigningKey::from_bytes(seed),
        }
    }
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }
    pub fn public(&self) -> RelayKey {
        RelayKey(self.key.verifying_key().to_bytes())
    }
    /// The PKCS#8 v1 DER of the key, for building the TLS certificate.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        // RFC 8410 §7: a fixed 16-byte prefix, then the 32-byte seed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(self.key.as_bytes());
        der
    }
    pub fn sign_receipt(
        &self,
        mailbox: MailboxId,
        closed_at: u64,
        envelopes_deleted: u64,
    ) -> Receipt {
        let sig = self
            .key
            .sign(&receipt_transcript(&mailbox, closed_at, envelopes_deleted));
        Receipt {
            mailbox,
            closed_at,
            envelopes_deleted,
            signature: Signature(sig.to_bytes()),
        }
    }
}

impl std::fmt::Debug for RelayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayIdentity({:?})", self.public())
    }
}

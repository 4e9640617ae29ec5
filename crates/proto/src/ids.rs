//! Identifier newtypes. Each is a fixed number of bytes on the wire (no length prefix).

use std::fmt;

use bincode::{Decode, Encode};

/// A mailbox (the relay's name for a talk): 16 random bytes chosen by the relay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct MailboxId(pub [u8; 16]);

/// The position of an envelope in its mailbox: assigned by the relay, strictly increasing
/// from 1, never reused within a mailbox. Also the fetch cursor and the ack watermark.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Encode, Decode)]
pub struct Seq(pub u64);

/// A member's relay-auth public key (Ed25519, 32 bytes): the only member key the relay sees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct MemberKey(pub [u8; 32]);

/// `SHA-256(join_token)`: what the relay keeps of a seat's invite.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct TokenHash(pub [u8; 32]);

/// A raw Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Signature(pub [u8; 64]);

/// What a client presents of a relay's creation token: `SHA-256` of the token's text
/// (see [`crate::limits::create_token_text`]), so the text itself never travels. The
/// relay keeps only the hash of this value. Its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct CreateToken(pub [u8; 32]);

impl fmt::Debug for CreateToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CreateToken(…)")
    }
}

/// The relay's identity public key (Ed25519), whose SHA-256 is the pinned fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct RelayKey(pub [u8; 32]);

/// A board: `HKDF(Argon2id(phrase), "nook/1 board-id")` (spec §17.1). The relay
/// indexes listings by it and never learns the phrase.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct BoardId(pub [u8; 32]);

/// A listing on a board: 16 random bytes chosen by the owner's client.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct ListingId(pub [u8; 16]);

/// A seat request: 16 random bytes chosen by the seeker's client; who knows it can
/// read the (sealed) answer and withdraw the request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct RequestId(pub [u8; 16]);

impl ListingId {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl RequestId {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl MailboxId {
    /// Lower-case hex, as used in invites' path segment diagnostics and JSON output.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl Seq {
    /// The cursor that precedes every envelope.
    pub const START: Seq = Seq(0);
}

// Ids are printed truncated: enough to tell two apart in a test failure, not enough
// to be a useful identifier if a debug print ever reached a log.
macro_rules! short_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({}…)"), hex(&self.0[..4]))
            }
        }
    )*};
}
short_debug!(
    MailboxId, MemberKey, TokenHash, Signature, RelayKey, BoardId, ListingId, RequestId
);

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

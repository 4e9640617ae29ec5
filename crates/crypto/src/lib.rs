//! nook-crypto: every cryptographic construction of the nook protocol, without IO.
//!
//! It builds only on audited primitives — X25519 (`x25519-dalek`), Ed25519
//! (`ed25519-dalek`), ChaCha20-Poly1305 (`ring`) and HChaCha20 (`chacha20`), from which
//! [`cipher`] builds XChaCha20-Poly1305 as its draft specifies,
//! HKDF-SHA-256 and SHA-256 (`hkdf`, `sha2`) — and implements none itself. It never
//! touches a socket, a file or a clock; randomness comes from the caller's RNG, and
//! every randomised function has a `*_with` twin that takes the random bytes, which is
//! how `protocol-spec.md`'s test vectors are produced.
//!
//! Secrets live in types that zeroize on drop and whose `Debug` prints nothing secret.
//!
//! # Layout
//!
//! - [`identity`]: a member's three per-talk keys.
//! - [`invite`]: relay addresses, invites, and what a seat secret derives.
//! - [`cipher`]: the AEADs (ChaCha20-Poly1305, XChaCha20-Poly1305, AES-256-GCM for data at rest).
//! - [`seal`]: the sealing formats (welcome, pairwise, envelope); the AEADs themselves are in [`cipher`].
//! - [`chain`]: sender-key hash ratchets with a bounded out-of-order window.
//! - [`message`]: announcements, direct blobs, signed group messages, the farewell.
//! - [`auth`]: relay-auth transcripts, the relay identity and deletion receipts.
//! - [`rotation`]: a relay's key rotation statements, and how a client follows them.
//! - [`name`]: the talk's name, derived from the talk key.
//! - [`board`]: boards: phrases, listings, seat requests and their answers.
//! - [`card`]: cards, the long-term card key and signed reveals (§19).
//! - [`padding`]: size buckets.
//! - [`labels`]: every domain-separation label.

#![forbid(unsafe_code)]

pub mod auth;
pub mod board;
pub mod card;
pub mod chain;
pub mod cipher;
pub mod identity;
pub mod invite;
pub mod kdf;
pub mod labels;
pub mod message;
pub mod name;
pub mod padding;
pub mod rotation;
pub mod seal;
pub mod secret;

pub use chain::{ChainError, ReceivingChain, SendingChain};
pub use identity::{PublicIdentity, TalkIdentity};
pub use invite::{AddressError, Fingerprint, Invite, RelayAddr, SeatSecret};
pub use padding::PaddingError;
pub use seal::{EnvelopeKey, Purpose};
pub use secret::Secret32;

/// Why a cryptographic operation failed. Deliberately coarse where detail would help an
/// attacker (a failed open says only that it failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("a public key is invalid or of small order")]
    BadKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("sealing failed")]
    Seal,
    #[error("could not open: wrong key, or the data was altered")]
    Open,
    #[error("decoded plaintext is malformed")]
    Malformed,
    #[error("the seat key does not match the creator's commitment or did not sign")]
    NotASeat,
    #[error(transparent)]
    Padding(#[from] PaddingError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

//! What members sign for the relay, and what the relay signs for members.
//!
//! Relay-auth transcript (signed with the member's relay-auth key):
//! ```text
//! "nook/1 relay-auth" ‖ op (1 byte) ‖ challenge (32) ‖ mailbox (16) ‖ member key (32) ‖ extra
//! ```
//! The challenge is fresh per connection, so no signature works on another connection.
//! `extra` binds the request's payload: see [`AuthOp`].

use ed25519_dalek::{Signer, SigningKey};
use nook_proto::codec::encode_value;
use nook_proto::{MailboxId, MemberKey, Receipt, RelayKey, Signature, TalkParams};
use zeroize::Zeroizing;

use crate::identity::{TalkIdentity, verify};
use crate::kdf::sha256;
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

/// The relay's identity: one Ed25519 key for its TLS certificate and its receipts, so
/// the fingerprint clients pin vouches for both.
pub struct RelayIdentity {
    key: SigningKey,
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

//! Per-talk identities. A member makes a fresh [`TalkIdentity`] for every talk it
//! creates or joins, so nothing links two talks of one person.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use nook_proto::{MemberKey, Signature};
use x_wing::{DecapsulationKeyRejectNonContrib, Decapsulator, KeyExport};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Bytes of an identity's stored form: four 32-byte secrets.
pub const IDENTITY_LEN: usize = 128;
/// Bytes of an X-Wing encapsulation (public) key: ML-KEM-768's 1184, then X25519's 32.
pub const KEM_PUBLIC_LEN: usize = x_wing::ENCAPSULATION_KEY_SIZE;

/// The four secret keys of one member in one talk:
/// - `pseudonym` (Ed25519): signs announcements, group messages and the farewell; only
///   members see its public half.
/// - `agreement` (X25519): authenticates the sender of pairwise-sealed blobs.
/// - `relay_auth` (Ed25519): the only key the relay sees; proves seat ownership to it.
/// - `kem` (X-Wing: X25519 + ML-KEM-768): receives pairwise-sealed blobs, so that they
///   stay closed to a future quantum computer.
///
/// All zeroize on drop; `Debug` prints only public halves' prefixes.
pub struct TalkIdentity {
    pseudonym: SigningKey,
    agreement: StaticSecret,
    relay_auth: SigningKey,
    /// The X-Wing seed; expanded only when a pairwise blob is opened or the public key
    /// is needed (the expansion is an ML-KEM key generation, ~10 × an X25519 one).
    kem: Zeroizing<[u8; 32]>,
}

/// The public halves a member shows to other members.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity {
    pub pseudonym: [u8; 32],
    pub agreement: [u8; 32],
    pub relay_auth: [u8; 32],
}

impl TalkIdentity {
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> TalkIdentity {
        let mut seed = Zeroizing::new([0u8; IDENTITY_LEN]);
        rng.fill_bytes(seed.as_mut());
        TalkIdentity::from_bytes(&seed)
    }

    /// Rebuilds an identity from its 128-byte serialisation
    /// (`pseudonym seed || agreement secret || relay-auth seed || X-Wing seed`).
    pub fn from_bytes(bytes: &[u8; IDENTITY_LEN]) -> TalkIdentity {
        let part = |i: usize| {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(&bytes[32 * i..32 * (i + 1)]);
            k
        };
        TalkIdentity {
            pseudonym: SigningKey::from_bytes(&part(0)),
            agreement: StaticSecret::from(*part(1)),
            relay_auth: SigningKey::from_bytes(&part(2)),
            kem: part(3),
        }
    }

    /// The 128-byte serialisation, for the client's sealed store only.
    pub fn to_bytes(&self) -> Zeroizing<[u8; IDENTITY_LEN]> {
        let mut out = Zeroizing::new([0u8; IDENTITY_LEN]);
        out[..32].copy_from_slice(self.pseudonym.as_bytes());
        out[32..64].copy_from_slice(self.agreement.as_bytes());
        out[64..96].copy_from_slice(self.relay_auth.as_bytes());
        out[96..].copy_from_slice(self.kem.as_ref());
        out
    }

    /// The X-Wing encapsulation key other members seal pairwise blobs to.
    pub fn kem_public(&self) -> [u8; KEM_PUBLIC_LEN] {
        let mut out = [0u8; KEM_PUBLIC_LEN];
        out.copy_from_slice(self.kem_secret().encapsulation_key().to_bytes().as_slice());
        out
    }

    pub(crate) fn kem_secret(&self) -> DecapsulationKeyRejectNonContrib {
        DecapsulationKeyRejectNonContrib::from(*self.kem)
    }

    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            pseudonym: self.pseudonym.verifying_key().to_bytes(),
            agreement: XPublic::from(&self.agreement).to_bytes(),
            relay_auth: self.relay_auth.verifying_key().to_bytes(),
        }
    }

    pub fn member_key(&self) -> MemberKey {
        MemberKey(self.relay_auth.verifying_key().to_bytes())
    }

    /// Signs `message` with the pseudonym key.
    pub fn sign_pseudonym(&self, message: &[u8]) -> [u8; 64] {
        self.pseudonym.sign(message).to_bytes()
    }

    /// Signs `message` with the relay-auth key.
    pub fn sign_relay(&self, message: &[u8]) -> Signature {
        Signature(self.relay_auth.sign(message).to_bytes())
    }

    pub(crate) fn agreement_secret(&self) -> &StaticSecret {
        &self.agreement
    }
}

/// Verifies an Ed25519 signature strictly (rejects small-order keys and
/// non-canonical encodings, so a signature has exactly one valid form).
pub fn verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), CryptoError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| CryptoError::BadKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &sig)
        .map_err(|_| CryptoError::BadSignature)?;
    // verify_strict already implies verify; kept explicit for readers of the spec.
    debug_assert!(key.verify(message, &sig).is_ok());
    Ok(())
}

impl fmt::Debug for TalkIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TalkIdentity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicIdentity(pseudonym {:02x}{:02x}…)",
            self.pseudonym[0], self.pseudonym[1]
        )
    }
}

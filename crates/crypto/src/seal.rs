//! The three sealing formats: welcome, pairwise, envelope.
//!
//! | format   | key                                        | nonce        | AAD |
//! |----------|--------------------------------------------|--------------|-----|
//! | welcome  | `HKDF(S, "nook/1 welcome")`                | 12 zero bytes| `"nook/1 aad-welcome"` |
//! | pairwise | `HKDF(salt "nook/1 pairwise", DH(e,B)‖DH(a,B), E‖A‖B)` | 12 zero bytes | mailbox |
//! | envelope | `HKDF(T, "nook/1 envelope")`, XChaCha20-Poly1305 | 24 random bytes | `"nook/1 envelope"‖mailbox‖purpose` |
//!
//! A zero nonce is safe for the first two because every key seals exactly one
//! plaintext: the seat secret is fresh per seat, and the pairwise key mixes a fresh
//! ephemeral key. Envelope keys are long-lived, so they take a random 192-bit nonce.

use nook_proto::MailboxId;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::cipher;
use crate::identity::TalkIdentity;
use crate::invite::SeatSecret;
use crate::kdf::hkdf32;
use crate::padding::{bucket_for, pad, pad_in_place, unpad};
use crate::secret::Secret32;
use crate::{CryptoError, labels};

pub use crate::cipher::{TAG_LEN, XNONCE_LEN};

/// The zero nonce of keys that seal exactly one plaintext.
const ZERO_NONCE: [u8; cipher::NONCE_LEN] = [0; cipher::NONCE_LEN];
/// Bytes an envelope body adds around its padded plaintext.
pub const ENVELOPE_OVERHEAD: usize = XNONCE_LEN + TAG_LEN;

/// What an envelope-sealed blob is for; bound into the AAD so the relay cannot move a
/// blob from one role to another (for example relabel a handshake as chat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    Handshake = 0,
    Chat = 1,
    Farewell = 2,
}

impl From<nook_proto::EnvelopeKind> for Purpose {
    fn from(kind: nook_proto::EnvelopeKind) -> Purpose {
        match kind {
            nook_proto::EnvelopeKind::Handshake => Purpose::Handshake,
            nook_proto::EnvelopeKind::Chat => Purpose::Chat,
        }
    }
}

/// Seals a welcome for the holder of `seat`; the result has a bucket size.
pub fn seal_welcome(seat: &SeatSecret, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let padded = Zeroizing::new(pad(plaintext, TAG_LEN)?);
    let key = seat.welcome_key();
    cipher::seal(&key, &ZERO_NONCE, labels::WELCOME_AAD, &padded)
}

/// Opens a welcome with the seat secret from an invite.
pub fn open_welcome(seat: &SeatSecret, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = seat.welcome_key();
    let mut padded = cipher::open(&key, &ZERO_NONCE, labels::WELCOME_AAD, sealed)?;
    let len = unpad(&padded)?.len();
    padded.truncate(len);
    Ok(padded)
}

/// Seals `plaintext` from `sender` to the member whose agreement key is `recipient`.
/// Output: `E (32) ‖ ciphertext ‖ tag`.
pub fn seal_pairwise<R: rand::CryptoRng + ?Sized>(
    rng: &mut R,
    sender: &TalkIdentity,
    recipient: &[u8; 32],
    mailbox: &MailboxId,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral = Secret32::random(rng);
    seal_pairwise_with(ephemeral.expose(), sender, recipient, mailbox, plaintext)
}

/// [`seal_pairwise`] with the ephemeral secret given (test vectors).
pub fn seal_pairwise_with(
    ephemeral: &[u8; 32],
    sender: &TalkIdentity,
    recipient: &[u8; 32],
    mailbox: &MailboxId,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let e = StaticSecret::from(*ephemeral);
    let e_pub = XPublic::from(&e).to_bytes();
    let b = XPublic::from(*recipient);
    let dh1 = e.diffie_hellman(&b);
    let dh2 = sender.agreement_secret().diffie_hellman(&b);
    if !dh1.was_contributory() || !dh2.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let a_pub = sender.public().agreement;
    let key = pairwise_key(dh1.as_bytes(), dh2.as_bytes(), &e_pub, &a_pub, recipient);
    let mut out = Vec::with_capacity(32 + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&e_pub);
    out.extend_from_slice(plaintext);
    cipher::seal_in_place(&key, &ZERO_NONCE, &mailbox.0, &mut out, 32)?;
    Ok(out)
}

/// Opens a pairwise blob addressed to `recipient` from the member whose agreement key
/// is `sender`.
pub fn open_pairwise(
    recipient: &TalkIdentity,
    sender: &[u8; 32],
    mailbox: &MailboxId,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let Some((e_pub, ct)) = sealed.split_first_chunk::<32>() else {
        return Err(CryptoError::Open);
    };
    let e = XPublic::from(*e_pub);
    let dh1 = recipient.agreement_secret().diffie_hellman(&e);
    let dh2 = recipient
        .agreement_secret()
        .diffie_hellman(&XPublic::from(*sender));
    if !dh1.was_contributory() || !dh2.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let b_pub = recipient.public().agreement;
    let key = pairwise_key(dh1.as_bytes(), dh2.as_bytes(), e_pub, sender, &b_pub);
    cipher::open(&key, &ZERO_NONCE, &mailbox.0, ct)
}

/// The talk's envelope key: `HKDF(ikm = T, info = "nook/1 envelope")`.
#[derive(Clone, Debug)]
pub struct EnvelopeKey(Secret32);

impl EnvelopeKey {
    pub fn from_talk_key(talk_key: &[u8; 32]) -> EnvelopeKey {
        EnvelopeKey(Secret32::from_bytes(*hkdf32(
            None,
            talk_key,
            labels::ENVELOPE,
        )))
    }

    /// Pads and seals an inner payload; the result's length is a padding bucket.
    pub fn seal<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        mailbox: &MailboxId,
        purpose: Purpose,
        inner: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; XNONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.seal_with(&nonce, mailbox, purpose, inner)
    }

    /// [`EnvelopeKey::seal`] with the nonce given (test vectors).
    pub fn seal_with(
        &self,
        nonce: &[u8; XNONCE_LEN],
        mailbox: &MailboxId,
        purpose: Purpose,
        inner: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        // Padded in place in the output buffer and sealed there: one allocation, and
        // no copy of the plaintext left behind (a failed seal wipes the buffer).
        let mut out = Vec::with_capacity(bucket_for(inner.len(), ENVELOPE_OVERHEAD)?);
        out.extend_from_slice(nonce);
        out.extend_from_slice(inner);
        pad_in_place(&mut out, XNONCE_LEN, ENVELOPE_OVERHEAD)?;
        let aad = envelope_aad(mailbox, purpose);
        cipher::xseal_in_place(self.0.expose(), nonce, &aad, &mut out, XNONCE_LEN)?;
        Ok(out)
    }

    /// Opens an envelope body and removes its padding.
    pub fn open(
        &self,
        mailbox: &MailboxId,
        purpose: Purpose,
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let Some((nonce, ct)) = body.split_first_chunk::<XNONCE_LEN>() else {
            return Err(CryptoError::Open);
        };
        let aad = envelope_aad(mailbox, purpose);
        let mut plain = Zeroizing::new(ct.to_vec());
        let len = cipher::xopen_in_place(self.0.expose(), nonce, &aad, &mut plain)?.len();
        plain.truncate(len);
        let len = unpad(&plain)?.len();
        plain.truncate(len);
        Ok(plain)
    }
}

fn envelope_aad(mailbox: &MailboxId, purpose: Purpose) -> Vec<u8> {
    let mut aad = Vec::with_capacity(labels::ENVELOPE.len() + 17);
    aad.extend_from_slice(labels::ENVELOPE);
    aad.extend_from_slice(&mailbox.0);
    aad.push(purpose as u8);
    aad
}

fn pairwise_key(
    dh1: &[u8; 32],
    dh2: &[u8; 32],
    e: &[u8; 32],
    a: &[u8; 32],
    b: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(dh1);
    ikm[32..].copy_from_slice(dh2);
    let mut info = [0u8; 96];
    info[..32].copy_from_slice(e);
    info[32..64].copy_from_slice(a);
    info[64..].copy_from_slice(b);
    hkdf32(Some(labels::PAIRWISE), ikm.as_ref(), &info)
}

//! The three sealing formats: welcome, pairwise, envelope.
//!
//! | format   | key                                        | nonce        | AAD |
//! |----------|--------------------------------------------|--------------|-----|
//! | welcome  | `HKDF(S, "nook/1 welcome")`                | 12 zero bytes| `"nook/1 aad-welcome"` |
//! | pairwise | `HKDF(salt "nook/1 pairwise", ss‖DH(a,B), SHA-256(ct)‖A‖B)`, `(ct, ss)` = X-Wing to B | 12 zero bytes | mailbox |
//! | envelope | the talk's base key `HKDF(T, "nook/1 envelope")` or a sender's envelope key, XChaCha20-Poly1305 | 24 random bytes | `"nook/1 envelope"‖mailbox‖purpose` |
//!
//! A zero nonce is safe for the first two because every key seals exactly one
//! plaintext: the seat secret is fresh per seat, and the pairwise key mixes a fresh
//! encapsulation. Envelope keys are long-lived, so they take a random 192-bit nonce.

use nook_proto::MailboxId;
use x_wing::TryDecapsulate;
use x25519_dalek::PublicKey as XPublic;
use zeroize::Zeroizing;

use crate::cipher;
use crate::identity::{KEM_PUBLIC_LEN, TalkIdentity};
use crate::invite::SeatSecret;
use crate::kdf::hkdf32;
use crate::padding::{bucket_for, pad, pad_in_place, unpad};
use crate::secret::Secret32;
use crate::{CryptoError, labels};

pub use crate::cipher::{TAG_LEN, XNONCE_LEN};

/// The zero nonce of keys that seal exactly one plaintext.
const ZERO_NONCE: [u8; cipher::NONCE_LEN] = [0; cipher::NONCE_LEN];
/// Bytes an envelope body adds around its padded plaintext: key id, nonce, tag.
pub const ENVELOPE_OVERHEAD: usize = KEY_ID_LEN + XNONCE_LEN + TAG_LEN;

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

/// Bytes of an X-Wing ciphertext at the head of every pairwise blob.
pub const KEM_CIPHERTEXT_LEN: usize = x_wing::CIPHERTEXT_SIZE;
/// Random bytes one X-Wing encapsulation takes (ML-KEM's 32, then X25519's 32).
pub const KEM_RANDOMNESS_LEN: usize = x_wing::ENCAPSULATION_RANDOMNESS_SIZE;

/// Seals `plaintext` from `sender` to the member whose agreement key is `recipient`
/// and whose X-Wing encapsulation key is `recipient_kem`.
/// Output: `X-Wing ciphertext (1120) ‖ ciphertext ‖ tag`.
pub fn seal_pairwise<R: rand::CryptoRng + ?Sized>(
    rng: &mut R,
    sender: &TalkIdentity,
    recipient: &[u8; 32],
    recipient_kem: &[u8; KEM_PUBLIC_LEN],
    mailbox: &MailboxId,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut randomness = Zeroizing::new([0u8; KEM_RANDOMNESS_LEN]);
    rng.fill_bytes(randomness.as_mut());
    seal_pairwise_with(
        &randomness,
        sender,
        recipient,
        recipient_kem,
        mailbox,
        plaintext,
    )
}

/// [`seal_pairwise`] with the encapsulation randomness given (test vectors).
pub fn seal_pairwise_with(
    randomness: &[u8; KEM_RANDOMNESS_LEN],
    sender: &TalkIdentity,
    recipient: &[u8; 32],
    recipient_kem: &[u8; KEM_PUBLIC_LEN],
    mailbox: &MailboxId,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ek = x_wing::EncapsulationKey::try_from(recipient_kem.as_slice())
        .map_err(|_| CryptoError::BadKey)?;
    // The X25519 half of the recipient's X-Wing key must not be of small order either.
    if !sender
        .agreement_secret()
        .diffie_hellman(&XPublic::from(x25519_half(recipient_kem)))
        .was_contributory()
    {
        return Err(CryptoError::BadKey);
    }
    let (ct, ss) =
        ek.encapsulate_deterministic(&x_wing::kem::common::array::Array::from(*randomness));
    let ss = Zeroizing::new(<[u8; 32]>::from(ss));
    let dh = sender
        .agreement_secret()
        .diffie_hellman(&XPublic::from(*recipient));
    if !dh.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let a_pub = sender.public().agreement;
    let key = pairwise_key(&ss, dh.as_bytes(), ct.as_slice(), &a_pub, recipient);
    let mut out = Vec::with_capacity(KEM_CIPHERTEXT_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(ct.as_slice());
    out.extend_from_slice(plaintext);
    cipher::seal_in_place(&key, &ZERO_NONCE, &mailbox.0, &mut out, KEM_CIPHERTEXT_LEN)?;
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
    if sealed.len() < KEM_CIPHERTEXT_LEN {
        return Err(CryptoError::Open);
    }
    let (ct, body) = sealed.split_at(KEM_CIPHERTEXT_LEN);
    let ct_array = x_wing::Ciphertext::try_from(ct).map_err(|_| CryptoError::Open)?;
    let ss = recipient
        .kem_secret()
        .try_decapsulate(&ct_array)
        .map_err(|_| CryptoError::BadKey)?;
    let ss = Zeroizing::new(<[u8; 32]>::from(ss));
    let dh = recipient
        .agreement_secret()
        .diffie_hellman(&XPublic::from(*sender));
    if !dh.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let b_pub = recipient.public().agreement;
    let key = pairwise_key(&ss, dh.as_bytes(), ct, sender, &b_pub);
    cipher::open(&key, &ZERO_NONCE, &mailbox.0, body)
}

/// The X25519 public key inside an X-Wing encapsulation key (its last 32 bytes).
fn x25519_half(kem: &[u8; KEM_PUBLIC_LEN]) -> [u8; 32] {
    let mut x = [0u8; 32];
    x.copy_from_slice(&kem[KEM_PUBLIC_LEN - 32..]);
    x
}

/// Bytes of the key id at the head of every envelope body.
pub const KEY_ID_LEN: usize = 8;

/// A key that seals envelope bodies: the talk's base key, `HKDF(ikm = T, info =
/// "nook/1 envelope")`, or a member's sending envelope key (carried with its chain).
/// A body starts with the key's id, so a receiver finds the key without trying each.
#[derive(Clone, Debug)]
pub struct EnvelopeKey(Secret32);

impl EnvelopeKey {
    /// The talk's base envelope key, from the talk key of the welcome.
    pub fn from_talk_key(talk_key: &[u8; 32]) -> EnvelopeKey {
        EnvelopeKey(Secret32::from_bytes(*hkdf32(
            None,
            talk_key,
            labels::ENVELOPE,
        )))
    }

    /// A member's sending envelope key, as its chain carries it.
    pub fn from_bytes(key: &[u8; 32]) -> EnvelopeKey {
        EnvelopeKey(Secret32::from_bytes(*key))
    }

    /// `SHA-256("nook/1 envelope-id" ‖ key)`, first 8 bytes: names the key in a body.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        let digest = crate::kdf::sha256(&[labels::ENVELOPE_ID, self.0.expose()]);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// The id of the key that sealed `body`, if it is long enough to have one.
    pub fn id_of(body: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
        body.first_chunk::<KEY_ID_LEN>().copied()
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
        out.extend_from_slice(&self.id());
        out.extend_from_slice(nonce);
        out.extend_from_slice(inner);
        pad_in_place(&mut out, KEY_ID_LEN + XNONCE_LEN, ENVELOPE_OVERHEAD)?;
        let aad = envelope_aad(mailbox, purpose);
        cipher::xseal_in_place(
            self.0.expose(),
            nonce,
            &aad,
            &mut out,
            KEY_ID_LEN + XNONCE_LEN,
        )?;
        Ok(out)
    }

    /// Opens an envelope body sealed under this key and removes its padding.
    pub fn open(
        &self,
        mailbox: &MailboxId,
        purpose: Purpose,
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let Some((id, rest)) = body.split_first_chunk::<KEY_ID_LEN>() else {
            return Err(CryptoError::Open);
        };
        if *id != self.id() {
            return Err(CryptoError::Open);
        }
        let Some((nonce, ct)) = rest.split_first_chunk::<XNONCE_LEN>() else {
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

/// `HKDF(salt = "nook/1 pairwise", ikm = ss ‖ dh, info = SHA-256(ct) ‖ A ‖ B)`.
fn pairwise_key(
    ss: &[u8; 32],
    dh: &[u8; 32],
    ct: &[u8],
    a: &[u8; 32],
    b: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ss);
    ikm[32..].copy_from_slice(dh);
    let mut info = [0u8; 96];
    info[..32].copy_from_slice(&crate::kdf::sha256(&[ct]));
    info[32..64].copy_from_slice(a);
    info[64..].copy_from_slice(b);
    hkdf32(Some(labels::PAIRWISE), ikm.as_ref(), &info)
}

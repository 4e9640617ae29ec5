//! Boards: finding a talk by a phrase a community shares (protocol-spec.md §17).
//!
//! A phrase names a board. Argon2id turns it (with a salt bound to the relay's
//! fingerprint) into a board seed, from which HKDF derives the board id the relay
//! indexes by and the board key that seals listings. A listing carries the owner's
//! per-listing X25519 key; a seat request is sealed to that key and carries a one-time
//! reply key; the owner's answer (an invite, or a refusal) is sealed to the reply key.
//! The relay sees only ids, bucket sizes and timing.
//!
//! | blob     | key                                                         | nonce          | AAD |
//! |----------|-------------------------------------------------------------|----------------|-----|
//! | listing  | `HKDF(seed, "nook/1 board-key")`, XChaCha20-Poly1305          | 24 random bytes| `"nook/1 board-listing" ‖ board id ‖ listing id` |
//! | request  | `HKDF(salt "nook/1 board-request", DH(e, L), E ‖ L ‖ listing id)` | 12 zero bytes | `"nook/1 board-request" ‖ listing id ‖ request id` |
//! | answer   | `HKDF(salt "nook/1 board-answer", DH(e, R), E ‖ R ‖ request id)`  | 12 zero bytes | `"nook/1 board-answer" ‖ request id` |
//!
//! A zero nonce is safe for requests and answers because each key mixes a fresh
//! ephemeral secret and seals exactly one plaintext.

use bincode::{Decode, Encode};
use nook_proto::codec::{decode_body, encode_value};
use nook_proto::{BoardId, ListingId, RequestId};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::cipher::{self, TAG_LEN, XNONCE_LEN};
use crate::invite::Fingerprint;
use crate::kdf::{hkdf32, sha256};
use crate::padding::{pad, pad_in_place, unpad};
use crate::secret::Secret32;
use crate::{CryptoError, labels};

/// Argon2id memory in KiB (64 MiB): a guess costs a guesser that much memory for
/// [`ARGON2_T`] passes, while a member derives once per command.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes: one, so a guesser gains nothing from the lanes a phone lacks.
pub const ARGON2_P: u32 = 1;

/// Longest phrase, in bytes after normalisation.
pub const MAX_PHRASE: usize = 256;
/// Longest title, about text, note and tag (bytes of UTF-8).
pub const MAX_TITLE: usize = 120;
pub const MAX_ABOUT: usize = 1000;
pub const MAX_TAG: usize = 32;
pub const MAX_TAGS: usize = 8;
pub const MAX_NOTE: usize = 400;
/// Longest alias a seeker may propose in a request.
pub const MAX_ALIAS: usize = 64;

/// Bytes a listing body adds around its padded plaintext (nonce and tag).
pub const LISTING_OVERHEAD: usize = XNONCE_LEN + TAG_LEN;
/// Bytes a request or answer body adds around its padded plaintext (`E` and tag).
pub const BOX_OVERHEAD: usize = 32 + TAG_LEN;

const ZERO_NONCE: [u8; cipher::NONCE_LEN] = [0; cipher::NONCE_LEN];

/// Why a phrase cannot name a board.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhraseError {
    #[error("the board phrase is empty")]
    Empty,
    #[error("the board phrase is longer than {MAX_PHRASE} bytes")]
    TooLong,
}

/// A phrase as every member types it: surrounding whitespace removed, runs of
/// whitespace made one space, lowercase. (Not Unicode-normalised: a community agrees
/// on the characters it types.)
pub fn normalize_phrase(phrase: &str) -> Result<Zeroizing<String>, PhraseError> {
    let mut out = Zeroizing::new(String::with_capacity(phrase.len()));
    for word in phrase.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    if out.is_empty() {
        return Err(PhraseError::Empty);
    }
    if out.len() > MAX_PHRASE {
        return Err(PhraseError::TooLong);
    }
    Ok(out)
}

/// The Argon2id salt of boards on the relay whose fingerprint is `relay`: a guesser
/// must spend its work per relay, never once for all.
pub fn board_salt(relay: &Fingerprint) -> [u8; 32] {
    sha256(&[labels::BOARD_SALT, &relay.0])
}

/// What a phrase derives on one relay: the id the relay indexes by and the key that
/// seals listings.
#[derive(Debug)]
pub struct Board {
    pub id: BoardId,
    key: Secret32,
}

impl Board {
    /// Derives the board of `phrase` on `relay`: Argon2id (64 MiB, 3 passes, 1 lane)
    /// then HKDF. Costs a fraction of a second and 64 MiB: derive once per command.
    pub fn derive(phrase: &str, relay: &Fingerprint) -> Result<Board, PhraseError> {
        let phrase = normalize_phrase(phrase)?;
        let seed = argon2id(phrase.as_bytes(), &board_salt(relay));
        Ok(Board::from_seed(&seed))
    }

    /// The board of an Argon2id output (test vectors; `derive` is the way in).
    pub fn from_seed(seed: &[u8; 32]) -> Board {
        let id = BoardId(*hkdf32(None, seed, labels::BOARD_ID));
        let key = Secret32::from_bytes(*hkdf32(None, seed, labels::BOARD_KEY));
        Board { id, key }
    }

    /// Seals a listing for this board; the result's length is a padding bucket.
    pub fn seal_listing<R: rand::CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        listing: &ListingId,
        plain: &Listing,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; XNONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.seal_listing_with(&nonce, listing, plain)
    }

    /// [`Board::seal_listing`] with the nonce given (test vectors).
    pub fn seal_listing_with(
        &self,
        nonce: &[u8; XNONCE_LEN],
        listing: &ListingId,
        plain: &Listing,
    ) -> Result<Vec<u8>, CryptoError> {
        plain.check().map_err(|_| CryptoError::Malformed)?;
        let encoded = Zeroizing::new(encode_value(plain).map_err(|_| CryptoError::Malformed)?);
        let mut out = Vec::with_capacity(encoded.len() + 64);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&encoded);
        pad_in_place(&mut out, XNONCE_LEN, LISTING_OVERHEAD)?;
        let aad = listing_aad(&self.id, listing);
        cipher::xseal_in_place(self.key.expose(), nonce, &aad, &mut out, XNONCE_LEN)?;
        Ok(out)
    }

    /// Opens a listing of this board. Fails for a listing sealed under another phrase
    /// or moved to another id.
    pub fn open_listing(&self, listing: &ListingId, body: &[u8]) -> Result<Listing, CryptoError> {
        let Some((nonce, ct)) = body.split_first_chunk::<XNONCE_LEN>() else {
            return Err(CryptoError::Open);
        };
        let aad = listing_aad(&self.id, listing);
        let mut plain = Zeroizing::new(ct.to_vec());
        let len = cipher::xopen_in_place(self.key.expose(), nonce, &aad, &mut plain)?.len();
        plain.truncate(len);
        let listing: Listing = decode_body(unpad(&plain)?).map_err(|_| CryptoError::Malformed)?;
        listing.check().map_err(|_| CryptoError::Malformed)?;
        Ok(listing)
    }
}

/// What a listing says, sealed under the board key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Listing {
    pub title: String,
    pub about: String,
    pub tags: Vec<String>,
    /// The owner's X25519 key for this listing: requests are sealed to it.
    pub owner_key: [u8; 32],
}

/// Which field of a listing or request is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("the title is empty or longer than {MAX_TITLE} bytes")]
    Title,
    #[error("the about text is longer than {MAX_ABOUT} bytes")]
    About,
    #[error("at most {MAX_TAGS} tags, each 1..={MAX_TAG} bytes without spaces or commas")]
    Tags,
    #[error("the note is longer than {MAX_NOTE} bytes")]
    Note,
    #[error("the alias is empty or longer than {MAX_ALIAS} bytes")]
    Alias,
}

impl Listing {
    /// The bounds every listing keeps (checked when sealing and when opening).
    pub fn check(&self) -> Result<(), FieldError> {
        if self.title.trim().is_empty() || self.title.len() > MAX_TITLE {
            return Err(FieldError::Title);
        }
        if self.about.len() > MAX_ABOUT {
            return Err(FieldError::About);
        }
        let bad_tag = |t: &String| {
            t.is_empty() || t.len() > MAX_TAG || t.contains(|c: char| c.is_whitespace() || c == ',')
        };
        if self.tags.len() > MAX_TAGS || self.tags.iter().any(bad_tag) {
            return Err(FieldError::Tags);
        }
        Ok(())
    }
}

/// What a seat request says, sealed to the listing's owner key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct SeatRequest {
    /// The one-time X25519 key the answer is sealed to.
    pub reply_key: [u8; 32],
    /// The alias the seeker will take in the talk.
    pub alias: String,
    pub note: String,
}

impl SeatRequest {
    pub fn check(&self) -> Result<(), FieldError> {
        if self.alias.is_empty() || self.alias.len() > MAX_ALIAS {
            return Err(FieldError::Alias);
        }
        if self.note.len() > MAX_NOTE {
            return Err(FieldError::Note);
        }
        Ok(())
    }
}

/// The owner's answer to a seat request, sealed to its reply key. Both kinds pad to
/// the same bucket, so the relay cannot tell an admit from a decline.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub enum Answer {
    /// The seat: an invite of the talk (its text form, spec §10).
    Admit {
        invite: String,
    },
    Decline,
}

/// An X25519 key pair made for one listing or one request.
#[derive(Clone)]
pub struct BoxKey(Secret32);

impl std::fmt::Debug for BoxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxKey(<secret>)")
    }
}

impl BoxKey {
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> BoxKey {
        BoxKey(Secret32::random(rng))
    }
    pub fn from_bytes(bytes: [u8; 32]) -> BoxKey {
        BoxKey(Secret32::from_bytes(bytes))
    }
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0.expose())
    }
    pub fn public(&self) -> [u8; 32] {
        XPublic::from(&StaticSecret::from(*self.0.expose())).to_bytes()
    }
}

/// Seals a seat request to `owner_key` (a listing's key). Output: `E ‖ ct ‖ tag`, a
/// padding bucket.
pub fn seal_request<R: rand::CryptoRng + ?Sized>(
    rng: &mut R,
    owner_key: &[u8; 32],
    listing: &ListingId,
    request: &RequestId,
    plain: &SeatRequest,
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral = Secret32::random(rng);
    seal_request_with(ephemeral.expose(), owner_key, listing, request, plain)
}

/// [`seal_request`] with the ephemeral secret given (test vectors).
pub fn seal_request_with(
    ephemeral: &[u8; 32],
    owner_key: &[u8; 32],
    listing: &ListingId,
    request: &RequestId,
    plain: &SeatRequest,
) -> Result<Vec<u8>, CryptoError> {
    plain.check().map_err(|_| CryptoError::Malformed)?;
    let encoded = Zeroizing::new(encode_value(plain).map_err(|_| CryptoError::Malformed)?);
    let aad = request_aad(listing, request);
    seal_box(
        ephemeral,
        owner_key,
        labels::BOARD_REQUEST,
        &listing.0,
        &aad,
        &encoded,
    )
}

/// Opens a seat request with the listing's key; fails for a body forged, altered or
/// moved to another request id or listing.
pub fn open_request(
    listing_key: &BoxKey,
    listing: &ListingId,
    request: &RequestId,
    body: &[u8],
) -> Result<SeatRequest, CryptoError> {
    let aad = request_aad(listing, request);
    let plain = open_box(listing_key, labels::BOARD_REQUEST, &listing.0, &aad, body)?;
    let req: SeatRequest = decode_body(&plain).map_err(|_| CryptoError::Malformed)?;
    req.check().map_err(|_| CryptoError::Malformed)?;
    Ok(req)
}

/// Seals the owner's answer to a request's reply key.
pub fn seal_answer<R: rand::CryptoRng + ?Sized>(
    rng: &mut R,
    reply_key: &[u8; 32],
    request: &RequestId,
    answer: &Answer,
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral = Secret32::random(rng);
    seal_answer_with(ephemeral.expose(), reply_key, request, answer)
}

/// [`seal_answer`] with the ephemeral secret given (test vectors).
pub fn seal_answer_with(
    ephemeral: &[u8; 32],
    reply_key: &[u8; 32],
    request: &RequestId,
    answer: &Answer,
) -> Result<Vec<u8>, CryptoError> {
    let encoded = Zeroizing::new(encode_value(answer).map_err(|_| CryptoError::Malformed)?);
    let aad = answer_aad(request);
    seal_box(
        ephemeral,
        reply_key,
        labels::BOARD_ANSWER,
        &request.0,
        &aad,
        &encoded,
    )
}

/// Opens an answer with the request's reply secret.
pub fn open_answer(
    reply: &BoxKey,
    request: &RequestId,
    body: &[u8],
) -> Result<Answer, CryptoError> {
    let aad = answer_aad(request);
    let plain = open_box(reply, labels::BOARD_ANSWER, &request.0, &aad, body)?;
    decode_body(&plain).map_err(|_| CryptoError::Malformed)
}

fn seal_box(
    ephemeral: &[u8; 32],
    to: &[u8; 32],
    salt: &[u8],
    bound: &[u8],
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let e = StaticSecret::from(*ephemeral);
    let e_pub = XPublic::from(&e).to_bytes();
    let dh = e.diffie_hellman(&XPublic::from(*to));
    if !dh.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let key = box_key(salt, dh.as_bytes(), &e_pub, to, bound);
    let padded = Zeroizing::new(pad(plain, BOX_OVERHEAD)?);
    let mut out = Vec::with_capacity(32 + padded.len() + TAG_LEN);
    out.extend_from_slice(&e_pub);
    out.extend_from_slice(&padded);
    cipher::seal_in_place(&key, &ZERO_NONCE, aad, &mut out, 32)?;
    Ok(out)
}

fn open_box(
    own: &BoxKey,
    salt: &[u8],
    bound: &[u8],
    aad: &[u8],
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let Some((e_pub, ct)) = body.split_first_chunk::<32>() else {
        return Err(CryptoError::Open);
    };
    let secret = StaticSecret::from(*own.0.expose());
    let dh = secret.diffie_hellman(&XPublic::from(*e_pub));
    if !dh.was_contributory() {
        return Err(CryptoError::BadKey);
    }
    let key = box_key(salt, dh.as_bytes(), e_pub, &own.public(), bound);
    let mut padded = cipher::open(&key, &ZERO_NONCE, aad, ct)?;
    let len = unpad(&padded)?.len();
    padded.truncate(len);
    Ok(padded)
}

fn box_key(
    salt: &[u8],
    dh: &[u8; 32],
    e: &[u8; 32],
    to: &[u8; 32],
    bound: &[u8],
) -> Zeroizing<[u8; 32]> {
    let info = [e.as_slice(), to, bound].concat();
    hkdf32(Some(salt), dh, &info)
}

fn listing_aad(board: &BoardId, listing: &ListingId) -> Vec<u8> {
    [labels::BOARD_LISTING, &board.0, &listing.0].concat()
}

fn request_aad(listing: &ListingId, request: &RequestId) -> Vec<u8> {
    [labels::BOARD_REQUEST, &listing.0, &request.0].concat()
}

fn answer_aad(request: &RequestId) -> Vec<u8> {
    [labels::BOARD_ANSWER, &request.0].concat()
}

/// Argon2id with the board parameters, 32 bytes out.
pub fn argon2id(password: &[u8], salt: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    argon2id_with(password, salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)
}

/// Argon2id with explicit parameters (the RFC 9106 check of the primitive; boards use
/// [`argon2id`]).
pub fn argon2id_with(
    password: &[u8],
    salt: &[u8],
    m_kib: u32,
    t: u32,
    p: u32,
) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // The parameters are constants within Argon2's bounds and the salt is 32 bytes, so
    // neither construction nor hashing can fail.
    let Ok(params) = argon2::Params::new(m_kib, t, p, Some(32)) else {
        unreachable!("the board's Argon2id parameters are within bounds");
    };
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    if hasher
        .hash_password_into(password, salt, out.as_mut())
        .is_err()
    {
        unreachable!("Argon2id with valid parameters and a 32-byte salt cannot fail");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Board {
        Board::from_seed(&[7; 32])
    }

    fn listing() -> Listing {
        Listing {
            title: "Procurement".into(),
            about: "tenders".into(),
            tags: vec!["berlin".into()],
            owner_key: BoxKey::from_bytes([9; 32]).public(),
        }
    }

    #[test]
    fn phrases_normalise_and_refuse_empty_or_long() {
        assert_eq!(
            normalize_phrase("  Procurement \t BERLIN ")
                .unwrap()
                .as_str(),
            "procurement berlin"
        );
        assert_eq!(normalize_phrase(" \n"), Err(PhraseError::Empty));
        assert_eq!(
            normalize_phrase(&"a".repeat(MAX_PHRASE + 1)),
            Err(PhraseError::TooLong)
        );
    }

    #[test]
    fn a_listing_opens_only_on_its_board_and_id() {
        let b = board();
        let id = ListingId([1; 16]);
        let body = b.seal_listing(&mut rand::rng(), &id, &listing()).unwrap();
        assert!(nook_proto::limits::PADDING_BUCKETS.contains(&body.len()));
        assert_eq!(b.open_listing(&id, &body).unwrap(), listing());
        assert!(b.open_listing(&ListingId([2; 16]), &body).is_err());
        assert!(Board::from_seed(&[8; 32]).open_listing(&id, &body).is_err());
    }

    #[test]
    fn requests_and_answers_are_bound_to_their_ids() {
        let owner = BoxKey::from_bytes([9; 32]);
        let reply = BoxKey::from_bytes([3; 32]);
        let (l, r) = (ListingId([1; 16]), RequestId([2; 16]));
        let req = SeatRequest {
            reply_key: reply.public(),
            alias: "kim".into(),
            note: "why me".into(),
        };
        let body = seal_request(&mut rand::rng(), &owner.public(), &l, &r, &req).unwrap();
        assert_eq!(open_request(&owner, &l, &r, &body).unwrap(), req);
        assert!(open_request(&owner, &l, &RequestId([3; 16]), &body).is_err());
        assert!(open_request(&reply, &l, &r, &body).is_err());
        let admit = Answer::Admit {
            invite: "x".repeat(200),
        };
        let a = seal_answer(&mut rand::rng(), &reply.public(), &r, &admit).unwrap();
        let d = seal_answer(&mut rand::rng(), &reply.public(), &r, &Answer::Decline).unwrap();
        assert_eq!(a.len(), d.len(), "admit and decline look alike");
        assert_eq!(open_answer(&reply, &r, &a).unwrap(), admit);
        assert!(open_answer(&owner, &r, &a).is_err());
        assert!(open_answer(&reply, &RequestId([4; 16]), &a).is_err());
    }

    #[test]
    fn listings_with_fields_out_of_bounds_are_refused() {
        let b = board();
        let mut l = listing();
        l.title = String::new();
        assert!(
            b.seal_listing(&mut rand::rng(), &ListingId([1; 16]), &l)
                .is_err()
        );
        let mut l = listing();
        l.tags = vec!["a b".into()];
        assert_eq!(l.check(), Err(FieldError::Tags));
    }

    #[test]
    fn argon2id_depends_on_phrase_and_relay() {
        // Different phrases and different relays give different boards.
        let a = argon2id_with(b"procurement berlin", &[1; 32], 256, 1, 1);
        let b = argon2id_with(b"procurement berlin", &[2; 32], 256, 1, 1);
        let c = argon2id_with(b"procurement munich", &[1; 32], 256, 1, 1);
        assert_ne!(*a, *b);
        assert_ne!(*a, *c);
    }
}

#[cfg(test)]
mod proptests {
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_request_round_trips_and_any_flip_fails(
            alias in "[a-z]{1,20}", note in ".{0,100}", flip in 0usize..2048, bit in 0u8..8,
        ) {
            use super::*;
            let owner = BoxKey::from_bytes([9; 32]);
            let (l, r) = (ListingId([1; 16]), RequestId([2; 16]));
            let req = SeatRequest { reply_key: [5; 32], alias, note };
            proptest::prop_assume!(req.check().is_ok());
            let mut body = seal_request(&mut rand::rng(), &owner.public(), &l, &r, &req).unwrap();
            proptest::prop_assert_eq!(&open_request(&owner, &l, &r, &body).unwrap(), &req);
            let at = flip % body.len();
            body[at] ^= 1 << bit;
            proptest::prop_assert!(open_request(&owner, &l, &r, &body).is_err());
        }
    }
}

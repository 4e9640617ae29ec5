//! The protocol's two AEADs, ChaCha20-Poly1305 (RFC 8439) and XChaCha20-Poly1305
//! (draft-irtf-cfrg-xchacha-03), and AES-256-GCM (NIST SP 800-38D) for data at rest,
//! all computed by `ring`.
//!
//! Why `ring` and not the `chacha20poly1305` crate: ring runs BoringSSL's assembly,
//! 1.5 µs for a 2 KiB seal on the benchmark machine against 4.8 µs for
//! `chacha20poly1305` 0.11 (its AVX2 backends call their intrinsics out of line), and
//! every envelope is sealed and opened once by the members and once more by the relay
//! for storage. ring is already in the tree for TLS.
//!
//! XChaCha20-Poly1305 is the draft's construction from two library primitives: the
//! subkey `HChaCha20(key, nonce[0..16])` (the `chacha20` crate's `hchacha`), then
//! ChaCha20-Poly1305 under that subkey with the nonce `0x00000000 ‖ nonce[16..24]`.
//! `tests/vectors.rs` and this module's tests check both AEADs byte for byte against
//! the `chacha20poly1305` crate and the draft's test vector.
//!
//! [`Aes256GcmKey`] is for the vault (storage keys that seal many values): never on
//! the wire. Expanded once, ring's AES-256-GCM seals 1 KiB in about a quarter of the
//! time of its ChaCha20-Poly1305 on machines with AES instructions, and the relay
//! seals every envelope it stores. Its tests check it against the `aes-gcm` crate.
//!
//! ring copies a key into state of its own (for AES the round keys and the GHASH
//! table) and never wipes that state. Every ring key here lives in a `WipedKey`,
//! which overwrites that state when dropped.
//!
//! The in-place functions let callers seal straight into the buffer that goes on the
//! wire or to disk, with no intermediate copy of the plaintext.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;

/// Tag length of every AEAD here (Poly1305 and GHASH alike).
pub const TAG_LEN: usize = 16;
/// ChaCha20-Poly1305 (IETF) nonce length.
pub const NONCE_LEN: usize = 12;
/// XChaCha20-Poly1305 nonce length.
pub const XNONCE_LEN: usize = 24;
/// AES-256-GCM nonce length (the 96-bit IV of SP 800-38D §8.2).
pub const AES_NONCE_LEN: usize = 12;

/// A ring key whose copy of the key material is overwritten when it is dropped.
///
/// On drop it is re-keyed in place with the all-zero key of the same algorithm:
/// ring picks the same implementation for it, so every byte that depended on the
/// old key is overwritten by bytes that depend on nothing. This crate has no unsafe
/// code, so it cannot write volatile zeros; `black_box` makes the compiler treat the
/// overwritten state as read, so the overwrite is not dropped as a dead store
/// before the memory is freed.
struct WipedKey {
    algorithm: &'static Algorithm,
    key: LessSafeKey,
}

impl WipedKey {
    fn new(algorithm: &'static Algorithm, key: &[u8; 32]) -> Result<WipedKey, CryptoError> {
        let key = UnboundKey::new(algorithm, key).map_err(|_| CryptoError::BadKey)?;
        Ok(WipedKey {
            algorithm,
            key: LessSafeKey::new(key),
        })
    }

    /// Replaces the key state with that of the all-zero key.
    fn wipe(&mut self) {
        // Both algorithms here take 32-byte keys, so this cannot fail; if it ever
        // did there would be nothing to overwrite with.
        if let Ok(zero) = UnboundKey::new(self.algorithm, &[0u8; 32]) {
            self.key = LessSafeKey::new(zero);
        }
        std::hint::black_box(&self.key);
    }
}

impl Drop for WipedKey {
    fn drop(&mut self) {
        self.wipe();
    }
}

fn key(k: &[u8; 32]) -> Result<WipedKey, CryptoError> {
    WipedKey::new(&CHACHA20_POLY1305, k)
}

/// Seals `buf[from..]` in place and appends the tag; on failure wipes `buf`.
fn seal_with(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<(), CryptoError> {
    let Some(data) = buf.get_mut(from..) else {
        return Err(CryptoError::Seal);
    };
    let sealed = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
        .map_err(|_| CryptoError::Seal);
    match sealed {
        Ok(tag) => {
            buf.extend_from_slice(tag.as_ref());
            Ok(())
        }
        Err(e) => {
            // Never hand back a buffer that may still hold plaintext.
            buf.zeroize();
            Err(e)
        }
    }
}

fn open_with<'a>(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], CryptoError> {
    if buf.len() < TAG_LEN {
        return Err(CryptoError::Open);
    }
    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .map_err(|_| CryptoError::Open)
}

/// An AES-256-GCM key, expanded once for many messages and wiped on drop.
///
/// Nonces are the caller's to keep unique under one key (ring is told so with
/// `assume_unique_for_key`): a repeated nonce reveals the XOR of two plaintexts
/// and lets an attacker forge tags.
///
/// The key state is boxed so that it stays where it is while the key lives
/// (moving a value leaves a copy behind), and is wiped there when dropped.
pub struct Aes256GcmKey(Box<WipedKey>);

impl Aes256GcmKey {
    pub fn new(key: &[u8; 32]) -> Result<Aes256GcmKey, CryptoError> {
        WipedKey::new(&AES_256_GCM, key).map(|k| Aes256GcmKey(Box::new(k)))
    }

    /// Encrypts `buf[from..]` in place and appends the tag, like [`seal_in_place`].
    pub fn seal_in_place(
        &self,
        nonce: &[u8; AES_NONCE_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
        from: usize,
    ) -> Result<(), CryptoError> {
        seal_with(&self.0.key, *nonce, aad, buf, from)
    }

    /// Decrypts `buf` (ciphertext ‖ tag) in place; returns the plaintext, a prefix
    /// of `buf`.
    pub fn open_in_place<'a>(
        &self,
        nonce: &[u8; AES_NONCE_LEN],
        aad: &[u8],
        buf: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        open_with(&self.0.key, *nonce, aad, buf)
    }
}

impl fmt::Debug for Aes256GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aes256GcmKey(..)")
    }
}

/// Encrypts `buf[from..]` in place under ChaCha20-Poly1305 and appends the tag.
/// `buf[..from]` is left as it is (a header or nonce the caller put there).
pub fn seal_in_place(
    k: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<(), CryptoError> {
    match key(k) {
        Ok(k) => seal_with(&k.key, *nonce, aad, buf, from),
        Err(e) => {
            buf.zeroize();
            Err(e)
        }
    }
}

/// Decrypts `buf` (ciphertext ‖ tag) in place; returns the plaintext, a prefix of
/// `buf`. On failure `buf` holds nothing readable.
pub fn open_in_place<'a>(
    k: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], CryptoError> {
    open_with(&key(k)?.key, *nonce, aad, buf)
}

/// `ciphertext ‖ tag` of `plaintext` under ChaCha20-Poly1305.
pub fn seal(
    k: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    seal_in_place(k, nonce, aad, &mut buf, 0)?;
    Ok(buf)
}

/// The plaintext of `sealed` (ciphertext ‖ tag) under ChaCha20-Poly1305.
pub fn open(
    k: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = open_in_place(k, nonce, aad, &mut buf)?.len();
    buf.truncate(len);
    Ok(buf)
}

/// The XChaCha20 subkey and IETF nonce for `nonce`.
fn xsubkey(k: &[u8; 32], nonce: &[u8; XNONCE_LEN]) -> (Zeroizing<[u8; 32]>, [u8; NONCE_LEN]) {
    let (head, tail) = nonce.split_at(16);
    let mut input = [0u8; 16];
    input.copy_from_slice(head);
    let mut derived = chacha20::hchacha::<chacha20::R20>(&(*k).into(), &input.into());
    let mut sub = Zeroizing::new([0u8; 32]);
    sub.copy_from_slice(derived.as_slice());
    derived.as_mut_slice().zeroize();
    let mut ietf = [0u8; NONCE_LEN];
    ietf[4..].copy_from_slice(tail);
    (sub, ietf)
}

/// [`seal_in_place`] under XChaCha20-Poly1305.
pub fn xseal_in_place(
    k: &[u8; 32],
    nonce: &[u8; XNONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<(), CryptoError> {
    let (sub, ietf) = xsubkey(k, nonce);
    seal_in_place(&sub, &ietf, aad, buf, from)
}

/// [`open_in_place`] under XChaCha20-Poly1305.
pub fn xopen_in_place<'a>(
    k: &[u8; 32],
    nonce: &[u8; XNONCE_LEN],
    aad: &[u8],
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], CryptoError> {
    let (sub, ietf) = xsubkey(k, nonce);
    open_in_place(&sub, &ietf, aad, buf)
}

#[cfg(test)]
// In tests a failed unwrap is a failed test, with its location.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    #[test]
    fn xchacha_matches_the_drafts_vector() {
        let plaintext = unhex(
            "4c616469657320616e642047656e746c656d656e206f662074686520636c617373206f66202739393a204966204920636f756c64206f6666657220796f75206f6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73637265656e20776f756c642062652069742e",
        );
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] =
            unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .try_into()
                .unwrap();
        let nonce: [u8; 24] = unhex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let expected = unhex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e\
             c0875924c1c7987947deafd8780acf49",
        );
        let mut buf = plaintext.clone();
        xseal_in_place(&key, &nonce, &aad, &mut buf, 0).unwrap();
        assert_eq!(buf, expected);
        let opened = xopen_in_place(&key, &nonce, &aad, &mut buf).unwrap();
        assert_eq!(opened, &plaintext[..]);
    }

    #[test]
    fn a_flipped_bit_or_other_aad_does_not_open() {
        let k = [9u8; 32];
        let n = [3u8; 24];
        let mut buf = b"secret".to_vec();
        xseal_in_place(&k, &n, b"aad", &mut buf, 0).unwrap();
        let mut flipped = buf.clone();
        flipped[2] ^= 1;
        assert_eq!(
            xopen_in_place(&k, &n, b"aad", &mut flipped),
            Err(CryptoError::Open)
        );
        let mut other = buf.clone();
        assert_eq!(
            xopen_in_place(&k, &n, b"aae", &mut other),
            Err(CryptoError::Open)
        );
        assert_eq!(
            xopen_in_place(&k, &n, b"aad", &mut [0u8; 15]),
            Err(CryptoError::Open)
        );
    }

    #[test]
    fn the_prefix_before_from_is_left_alone() {
        let k = [1u8; 32];
        let n = [2u8; 12];
        let mut buf = b"headerbody".to_vec();
        seal_in_place(&k, &n, b"", &mut buf, 6).unwrap();
        assert_eq!(&buf[..6], b"header");
        assert_eq!(buf.len(), 10 + TAG_LEN);
        assert_eq!(open_in_place(&k, &n, b"", &mut buf[6..]).unwrap(), b"body");
        assert_eq!(
            seal_in_place(&k, &n, b"", &mut buf, 999),
            Err(CryptoError::Seal)
        );
    }

    /// The GCM specification's (McGrew and Viega) test cases 13 and 14: AES-256,
    /// all-zero key and IV, empty and one zero block of plaintext.
    #[test]
    fn aes_gcm_matches_the_gcm_specifications_vectors() {
        let k = Aes256GcmKey::new(&[0u8; 32]).unwrap();
        let mut empty = Vec::new();
        k.seal_in_place(&[0u8; 12], b"", &mut empty, 0).unwrap();
        assert_eq!(empty, unhex("530f8afbc74536b9a963b4f1c4cb738b"));
        let mut block = vec![0u8; 16];
        k.seal_in_place(&[0u8; 12], b"", &mut block, 0).unwrap();
        assert_eq!(
            block,
            unhex("cea7403d4d606b6e074ec5d3baf39d18 d0d1c8a799996bf0265b98b5d48ab919")
        );
        assert_eq!(
            k.open_in_place(&[0u8; 12], b"", &mut block).unwrap(),
            &[0u8; 16]
        );
    }

    #[test]
    fn aes_gcm_refuses_a_flipped_bit_other_aad_other_nonce_and_short_input() {
        let k = Aes256GcmKey::new(&[7u8; 32]).unwrap();
        let n = [5u8; 12];
        let mut buf = b"at rest".to_vec();
        k.seal_in_place(&n, b"aad", &mut buf, 0).unwrap();
        for (nonce, aad, flip) in [
            (n, &b"aad"[..], Some(3)),
            (n, b"aae", None),
            ([6u8; 12], b"aad", None),
        ] {
            let mut c = buf.clone();
            if let Some(i) = flip {
                c[i] ^= 0x10;
            }
            assert_eq!(k.open_in_place(&nonce, aad, &mut c), Err(CryptoError::Open));
        }
        assert_eq!(
            k.open_in_place(&n, b"aad", &mut [0u8; 15]),
            Err(CryptoError::Open)
        );
        let other = Aes256GcmKey::new(&[8u8; 32]).unwrap();
        assert_eq!(
            other.open_in_place(&n, b"aad", &mut buf.clone()),
            Err(CryptoError::Open)
        );
        assert_eq!(k.open_in_place(&n, b"aad", &mut buf).unwrap(), b"at rest");
    }

    /// What drop runs: afterwards the state is the all-zero key's, so nothing in
    /// it depends on the key that was there.
    #[test]
    fn a_wiped_key_holds_the_all_zero_keys_state() {
        for alg in [&AES_256_GCM, &CHACHA20_POLY1305] {
            let mut k = WipedKey::new(alg, &[0x5a; 32]).unwrap();
            let zero = WipedKey::new(alg, &[0u8; 32]).unwrap();
            let seal = |k: &WipedKey| {
                let mut b = b"probe".to_vec();
                seal_with(&k.key, [1u8; 12], b"", &mut b, 0).unwrap();
                b
            };
            assert_ne!(seal(&k), seal(&zero));
            k.wipe();
            assert_eq!(seal(&k), seal(&zero));
        }
    }

    proptest! {
        #[test]
        fn aes_gcm_equals_the_rustcrypto_implementation(
            key: [u8; 32],
            nonce: [u8; 12],
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            msg in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            use aes_gcm::aead::{Aead as _, KeyInit as _, Payload as AesPayload};
            let k = Aes256GcmKey::new(&key).unwrap();
            let mut ours = b"head".to_vec();
            ours.extend_from_slice(&msg);
            k.seal_in_place(&nonce, &aad, &mut ours, 4).unwrap();
            let theirs = aes_gcm::Aes256Gcm::new(&key.into())
                .encrypt(&nonce.into(), AesPayload { msg: &msg, aad: &aad })
                .unwrap();
            prop_assert_eq!(&ours[..4], b"head");
            prop_assert_eq!(&ours[4..], &theirs[..]);
            let opened = k.open_in_place(&nonce, &aad, &mut ours[4..]).unwrap();
            prop_assert_eq!(&opened[..], &msg[..]);
        }

        #[test]
        fn xchacha_equals_the_rustcrypto_implementation(
            key: [u8; 32],
            nonce: [u8; 24],
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            msg in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let mut ours = msg.clone();
            xseal_in_place(&key, &nonce, &aad, &mut ours, 0).unwrap();
            let theirs = XChaCha20Poly1305::new(&key.into())
                .encrypt(&nonce.into(), Payload { msg: &msg, aad: &aad })
                .unwrap();
            prop_assert_eq!(&ours, &theirs);
            let opened = xopen_in_place(&key, &nonce, &aad, &mut ours).unwrap();
            prop_assert_eq!(&opened[..], &msg[..]);
        }

        #[test]
        fn chacha_equals_the_rustcrypto_implementation(
            key: [u8; 32],
            nonce: [u8; 12],
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            msg in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let ours = seal(&key, &nonce, &aad, &msg).unwrap();
            let theirs = ChaCha20Poly1305::new(&key.into())
                .encrypt(&nonce.into(), Payload { msg: &msg, aad: &aad })
                .unwrap();
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(&open(&key, &nonce, &aad, &ours).unwrap()[..], &msg[..]);
        }
    }
}

//! Key derivation and the value seal.
//!
//! A stored value is `nonce (24 bytes) ‖ XChaCha20-Poly1305 ciphertext and tag`,
//! under `HKDF-SHA256(ikm = storage key, salt = none, info = "nook-vault/1 seal")`,
//! with the caller's associated data (the namespace binds the hashed namespace
//! id and the entry key, so a value moved to another key or namespace fails to
//! open). Nonces are random: 192 bits make collisions a non-issue without any
//! counter state on disk.

use hkdf::Hkdf;
use nook_crypto::cipher;
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{StorageKey, VaultError};

/// HKDF info of the value-sealing key.
pub(crate) const SEAL_INFO: &[u8] = b"nook-vault/1 seal";
/// HKDF info of the vault index (HMAC) key.
pub(crate) const INDEX_INFO: &[u8] = b"nook-vault/1 index";

pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;

/// Derives a 32-byte subkey of `key` for one purpose, named by `info`.
pub(crate) fn derive(key: &StorageKey, info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, key.dangerous_as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    // HKDF-SHA256 can expand up to 255 * 32 bytes; 32 always fits.
    // ok: a constant 32-byte output, which HKDF-SHA256 always produces.
    let ok = hk.expand(info, &mut out[..]).is_ok();
    debug_assert!(ok, "32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// Seals and opens values under one storage key (XChaCha20-Poly1305 from
/// `nook_crypto::cipher`). The subkey is wiped on drop.
pub(crate) struct Sealer {
    key: Zeroizing<[u8; 32]>,
}

impl Sealer {
    pub(crate) fn new(key: &StorageKey) -> Sealer {
        Sealer {
            key: derive(key, SEAL_INFO),
        }
    }

    /// `nonce ‖ ciphertext` of `plaintext`, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        self.seal_into(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Appends `nonce ‖ ciphertext` of `plaintext` to `out`.
    pub(crate) fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), VaultError> {
        self.seal_written(aad, out, |o| {
            o.extend_from_slice(plaintext);
            Ok(())
        })
    }

    /// Appends `nonce ‖ ciphertext` of whatever `write` appends to `out`: the
    /// plaintext is written where its ciphertext goes and sealed there.
    pub(crate) fn seal_written(
        &self,
        aad: &[u8],
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), VaultError>,
    ) -> Result<(), VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let start = out.len();
        out.extend_from_slice(&nonce);
        let sealed = write(out).and_then(|()| {
            cipher::xseal_in_place(&self.key, &nonce, aad, out, start + NONCE_LEN)
                .map_err(|_| VaultError::ValueTooLarge)
        });
        if sealed.is_err() {
            // No plaintext may stay behind in the caller's buffer.
            out[start..].fill(0);
            out.truncate(start);
        }
        sealed
    }

    /// Opens what [`Sealer::seal`] produced with the same `aad`.
    /// Anything else (short, altered, other key or aad) is
    /// [`VaultError::Corrupt`].
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(VaultError::corrupt(format!(
                "a sealed value is {} bytes, shorter than nonce and tag",
                sealed.len()
            )));
        }
        let Some((nonce, ct)) = sealed.split_first_chunk::<NONCE_LEN>() else {
            return Err(VaultError::corrupt("a sealed value has a malformed nonce"));
        };
        let mut plain = ct.to_vec();
        match cipher::xopen_in_place(&self.key, nonce, aad, &mut plain) {
            Ok(p) => {
                let len = p.len();
                plain.truncate(len);
                Ok(plain)
            }
            Err(_) => Err(VaultError::corrupt(
                "a sealed value failed authentication (altered on disk, or moved from \
                 another key or namespace)",
            )),
        }
    }
}

#[cfg(test)]
// In tests a failed unwrap is a failed test, with its location.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> StorageKey {
        StorageKey::random()
    }

    #[test]
    fn subkeys_are_domain_separated() {
        let k = key();
        assert_ne!(*derive(&k, SEAL_INFO), *derive(&k, INDEX_INFO));
        assert_ne!(*derive(&k, SEAL_INFO), *k.dangerous_as_bytes());
    }

    #[test]
    fn same_value_seals_differently_each_time() {
        let s = Sealer::new(&key());
        let a = s.seal(b"aad", b"same").unwrap();
        let b = s.seal(b"aad", b"same").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), NONCE_LEN + 4 + TAG_LEN);
    }

    #[test]
    fn wrong_aad_or_key_or_short_input_is_corrupt() {
        let k = key();
        let s = Sealer::new(&k);
        let sealed = s.seal(b"ns||k1", b"value").unwrap();
        assert_eq!(s.open(b"ns||k1", &sealed).unwrap(), b"value");
        assert!(matches!(
            s.open(b"ns||k2", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        let other = Sealer::new(&key());
        assert!(matches!(
            other.open(b"ns||k1", &sealed),
            Err(VaultError::Corrupt { .. })
        ));
        for n in 0..(NONCE_LEN + TAG_LEN) {
            assert!(matches!(
                s.open(b"ns||k1", &sealed[..n]),
                Err(VaultError::Corrupt { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(
            value in proptest::collection::vec(any::<u8>(), 0..4096),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = Sealer::new(&key());
            let sealed = s.seal(&aad, &value).unwrap();
            prop_assert_eq!(sealed.len(), NONCE_LEN + value.len() + TAG_LEN);
            prop_assert_eq!(s.open(&aad, &sealed).unwrap(), value);
        }

        #[test]
        fn any_flipped_bit_fails_to_open(
            value in proptest::collection::vec(any::<u8>(), 0..256),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let s = Sealer::new(&key());
            let mut sealed = s.seal(b"aad", &value).unwrap();
            let i = at.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(
                matches!(s.open(b"aad", &sealed), Err(VaultError::Corrupt { .. })),
                "flip at {} opened",
                i
            );
        }
    }
}

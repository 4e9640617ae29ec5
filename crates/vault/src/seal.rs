//! Key derivation and the value seal.
//!
//! A stored value is `nonce ‖ ciphertext ‖ tag (16 bytes)` under a subkey of the
//! storage key, with the caller's associated data (the namespace binds the hashed
//! namespace id and the entry key, so a value moved to another key or namespace
//! fails to open). Which AEAD depends on the vault's format:
//!
//! - format 3 (every vault created since): AES-256-GCM, 12-byte nonce, under
//!   `HKDF-SHA256(ikm = storage key, salt = none, info = "nook-vault/3 seal")`.
//!   A sealer draws a random 96-bit start `S` when it is made and seals its i-th
//!   value under nonce `S + i (mod 2^96)`: nonces never repeat within a sealer,
//!   and two sealers of one key (one per process that opened the namespace) would
//!   have to draw starts within a few billion of each other out of 2^96 to
//!   overlap. That is a far better bound than random 96-bit nonces, whose
//!   collisions become likely after 2^48 values and are already 2^-33 after 2^32
//!   (SP 800-38D §8.3 caps random IVs at 2^32 per key).
//! - format 2: XChaCha20-Poly1305, 24-byte random nonce, under
//!   `HKDF-SHA256(storage key, info = "nook-vault/1 seal")`. Vaults written before
//!   format 3 keep it, so nothing they hold is lost.
//!
//! Why AES-GCM: the relay seals every envelope it stores, and ring's AES-256-GCM,
//! whose key is expanded once per namespace, seals 1 KiB in about a quarter of the
//! time of its XChaCha20-Poly1305 on machines with AES instructions. The key never
//! leaves the vault, so the wire protocol is unchanged.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use hkdf::Hkdf;
use nook_crypto::CryptoError;
use nook_crypto::cipher::{self, AES_NONCE_LEN, Aes256GcmKey};
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{StorageKey, VaultError};

/// HKDF info of the value-sealing key in format 2 (XChaCha20-Poly1305).
pub(crate) const SEAL_INFO_XCHACHA: &[u8] = b"nook-vault/1 seal";
/// HKDF info of the value-sealing key in format 3 (AES-256-GCM).
pub(crate) const SEAL_INFO_AES: &[u8] = b"nook-vault/3 seal";
/// HKDF info of the vault index (HMAC) key.
pub(crate) const INDEX_INFO: &[u8] = b"nook-vault/1 index";

pub(crate) const XNONCE_LEN: usize = 24;
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

/// The AEAD a vault seals its values with, fixed by its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealKind {
    /// Format 2.
    XChaCha20Poly1305,
    /// Format 3.
    Aes256Gcm,
}

/// Seals and opens values under one storage key. Key material is wiped on drop.
pub(crate) enum Sealer {
    XChaCha {
        key: Zeroizing<[u8; 32]>,
    },
    Aes {
        key: Zeroizing<[u8; 32]>,
        /// The key expanded (round keys and GHASH table, ~0.5 KB), kept once
        /// this sealer has sealed [`KEEP_EXPANDED_AFTER`] values.
        expanded: OnceLock<Aes256GcmKey>,
        /// `S`, the random start of this sealer's nonces (only the low 96 bits).
        start: u128,
        /// `i`, how many values this sealer has sealed.
        sealed: AtomicU64,
    },
}

const NONCE_MASK: u128 = (1 << 96) - 1;

/// Until a namespace has sealed this many values, each seal or open expands the
/// key for itself (about 0.1 µs), so that the many idle mailboxes of a relay
/// (a few values each, read once at start) do not keep half a kilobyte of
/// expanded key apiece; a busy one keeps it from here on.
const KEEP_EXPANDED_AFTER: u64 = 8;

/// An expanded AES key: the sealer's own, or one made for a single use.
enum AesKey<'a> {
    Kept(&'a Aes256GcmKey),
    Once(Aes256GcmKey),
}

impl std::ops::Deref for AesKey<'_> {
    type Target = Aes256GcmKey;
    fn deref(&self) -> &Aes256GcmKey {
        match self {
            AesKey::Kept(k) => k,
            AesKey::Once(k) => k,
        }
    }
}

fn expand<'a>(
    key: &[u8; 32],
    expanded: &'a OnceLock<Aes256GcmKey>,
    keep: bool,
) -> Result<AesKey<'a>, CryptoError> {
    if let Some(k) = expanded.get() {
        return Ok(AesKey::Kept(k));
    }
    let k = Aes256GcmKey::new(key)?;
    if !keep {
        return Ok(AesKey::Once(k));
    }
    // Another thread may have kept one first: then this one is dropped (wiped).
    let _ = expanded.set(k);
    match expanded.get() {
        Some(k) => Ok(AesKey::Kept(k)),
        None => Err(CryptoError::BadKey),
    }
}

impl Sealer {
    pub(crate) fn new(key: &StorageKey, kind: SealKind) -> Sealer {
        match kind {
            SealKind::XChaCha20Poly1305 => Sealer::XChaCha {
                key: derive(key, SEAL_INFO_XCHACHA),
            },
            SealKind::Aes256Gcm => {
                let mut start = [0u8; 16];
                rand::rng().fill_bytes(&mut start[16 - AES_NONCE_LEN..]);
                Sealer::Aes {
                    key: derive(key, SEAL_INFO_AES),
                    expanded: OnceLock::new(),
                    start: u128::from_be_bytes(start),
                    sealed: AtomicU64::new(0),
                }
            }
        }
    }

    /// Whether this sealer keeps its key expanded now.
    #[cfg(test)]
    pub(crate) fn keeps_expanded_key(&self) -> bool {
        matches!(self, Sealer::Aes { expanded, .. } if expanded.get().is_some())
    }

    fn nonce_len(&self) -> usize {
        match self {
            Sealer::XChaCha { .. } => XNONCE_LEN,
            Sealer::Aes { .. } => AES_NONCE_LEN,
        }
    }

    /// Bytes a sealed value has beyond its plaintext.
    #[cfg(test)]
    pub(crate) fn overhead(&self) -> usize {
        self.nonce_len() + TAG_LEN
    }

    /// `nonce ‖ ciphertext` of `plaintext`, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut out = Vec::with_capacity(self.nonce_len() + plaintext.len() + TAG_LEN);
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
        let start = out.len();
        let sealed = match self {
            Sealer::XChaCha { key } => {
                let mut nonce = [0u8; XNONCE_LEN];
                rand::rng().fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                write(out).and_then(|()| {
                    cipher::xseal_in_place(key, &nonce, aad, out, start + XNONCE_LEN)
                        .map_err(|_| VaultError::ValueTooLarge)
                })
            }
            Sealer::Aes {
                key,
                expanded,
                start: s,
                sealed,
            } => {
                let i = sealed.fetch_add(1, Ordering::Relaxed);
                let n = s.wrapping_add(u128::from(i)) & NONCE_MASK;
                let mut nonce = [0u8; AES_NONCE_LEN];
                nonce.copy_from_slice(&n.to_be_bytes()[16 - AES_NONCE_LEN..]);
                out.extend_from_slice(&nonce);
                write(out).and_then(|()| {
                    let k = expand(key, expanded, i + 1 >= KEEP_EXPANDED_AFTER)
                        .map_err(|_| VaultError::corrupt("AES-256-GCM refused a 32-byte key"))?;
                    k.seal_in_place(&nonce, aad, out, start + AES_NONCE_LEN)
                        .map_err(|_| VaultError::ValueTooLarge)
                })
            }
        };
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
        let nonce_len = self.nonce_len();
        if sealed.len() < nonce_len + TAG_LEN {
            return Err(VaultError::corrupt(format!(
                "a sealed value is {} bytes, shorter than nonce and tag",
                sealed.len()
            )));
        }
        let (nonce, ct) = sealed.split_at(nonce_len);
        let mut plain = ct.to_vec();
        let opened = match self {
            Sealer::XChaCha { key } => <&[u8; XNONCE_LEN]>::try_from(nonce)
                .map_err(|_| CryptoError::Open)
                .and_then(|n| cipher::xopen_in_place(key, n, aad, &mut plain).map(|p| p.len())),
            Sealer::Aes { key, expanded, .. } => <&[u8; AES_NONCE_LEN]>::try_from(nonce)
                .map_err(|_| CryptoError::Open)
                .and_then(|n| {
                    let k = expand(key, expanded, false)?;
                    k.open_in_place(n, aad, &mut plain).map(|p| p.len())
                }),
        };
        match opened {
            Ok(len) => {
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

    const KINDS: [SealKind; 2] = [SealKind::XChaCha20Poly1305, SealKind::Aes256Gcm];

    fn key() -> StorageKey {
        StorageKey::random()
    }

    fn sealer(k: &StorageKey, kind: SealKind) -> Sealer {
        Sealer::new(k, kind)
    }

    #[test]
    fn subkeys_are_domain_separated() {
        let k = key();
        let subkeys = [
            *derive(&k, SEAL_INFO_XCHACHA),
            *derive(&k, SEAL_INFO_AES),
            *derive(&k, INDEX_INFO),
            *k.dangerous_as_bytes(),
        ];
        for (i, a) in subkeys.iter().enumerate() {
            for b in &subkeys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn same_value_seals_differently_each_time() {
        for (kind, nonce_len) in [(SealKind::XChaCha20Poly1305, 24), (SealKind::Aes256Gcm, 12)] {
            let s = sealer(&key(), kind);
            let a = s.seal(b"aad", b"same").unwrap();
            let b = s.seal(b"aad", b"same").unwrap();
            assert_ne!(a, b);
            assert_eq!(a.len(), nonce_len + 4 + TAG_LEN);
            assert_eq!(s.overhead(), nonce_len + TAG_LEN);
        }
    }

    #[test]
    fn aes_nonces_count_up_from_a_random_start_and_wrap_at_96_bits() {
        let s = sealer(&key(), SealKind::Aes256Gcm);
        let nonce = |v: &[u8]| {
            let mut n = [0u8; 16];
            n[4..].copy_from_slice(&v[..AES_NONCE_LEN]);
            u128::from_be_bytes(n)
        };
        let first = nonce(&s.seal(b"", b"a").unwrap());
        let second = nonce(&s.seal(b"", b"b").unwrap());
        assert_eq!(second, (first + 1) & NONCE_MASK);
        let other = nonce(&sealer(&key(), SealKind::Aes256Gcm).seal(b"", b"a").unwrap());
        assert_ne!(first, other, "each sealer draws its own start");

        let Sealer::Aes {
            key,
            expanded,
            sealed,
            ..
        } = sealer(&key(), SealKind::Aes256Gcm)
        else {
            unreachable!()
        };
        let near_end = Sealer::Aes {
            key,
            expanded,
            start: NONCE_MASK,
            sealed,
        };
        assert_eq!(nonce(&near_end.seal(b"", b"x").unwrap()), NONCE_MASK);
        let wrapped = near_end.seal(b"", b"y").unwrap();
        assert_eq!(nonce(&wrapped), 0);
        assert_eq!(near_end.open(b"", &wrapped).unwrap(), b"y");
    }

    #[test]
    fn the_expanded_key_is_kept_from_the_eighth_seal_and_opens_are_the_same_either_way() {
        let s = sealer(&key(), SealKind::Aes256Gcm);
        let mut sealed = Vec::new();
        for i in 0..KEEP_EXPANDED_AFTER {
            assert!(!s.keeps_expanded_key(), "kept after {i} seals");
            let v = s.seal(b"aad", &i.to_le_bytes()).unwrap();
            assert_eq!(s.open(b"aad", &v).unwrap(), i.to_le_bytes());
            sealed.push(v);
        }
        assert!(s.keeps_expanded_key());
        for (i, v) in sealed.iter().enumerate() {
            assert_eq!(s.open(b"aad", v).unwrap(), (i as u64).to_le_bytes());
        }
    }

    #[test]
    fn wrong_aad_or_key_or_kind_or_short_input_is_corrupt() {
        for kind in KINDS {
            let k = key();
            let s = sealer(&k, kind);
            let sealed = s.seal(b"ns||k1", b"value").unwrap();
            assert_eq!(s.open(b"ns||k1", &sealed).unwrap(), b"value");
            assert!(matches!(
                s.open(b"ns||k2", &sealed),
                Err(VaultError::Corrupt { .. })
            ));
            let other = sealer(&key(), kind);
            assert!(matches!(
                other.open(b"ns||k1", &sealed),
                Err(VaultError::Corrupt { .. })
            ));
            for other_kind in KINDS.into_iter().filter(|o| *o != kind) {
                assert!(matches!(
                    sealer(&k, other_kind).open(b"ns||k1", &sealed),
                    Err(VaultError::Corrupt { .. })
                ));
            }
            for n in 0..s.overhead() {
                assert!(matches!(
                    s.open(b"ns||k1", &sealed[..n]),
                    Err(VaultError::Corrupt { .. })
                ));
            }
        }
    }

    fn kind() -> impl Strategy<Value = SealKind> {
        prop_oneof![Just(SealKind::XChaCha20Poly1305), Just(SealKind::Aes256Gcm)]
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(
            kind in kind(),
            value in proptest::collection::vec(any::<u8>(), 0..4096),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = sealer(&key(), kind);
            let sealed = s.seal(&aad, &value).unwrap();
            prop_assert_eq!(sealed.len(), s.overhead() + value.len());
            prop_assert_eq!(s.open(&aad, &sealed).unwrap(), value);
        }

        #[test]
        fn any_flipped_bit_fails_to_open(
            kind in kind(),
            value in proptest::collection::vec(any::<u8>(), 0..256),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let s = sealer(&key(), kind);
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

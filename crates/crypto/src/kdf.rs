//! The two hash-based building blocks: HKDF-SHA-256 and SHA-256.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// `HKDF-SHA-256(salt, ikm, info)` truncated to 32 bytes. A 32-byte output is always
/// within HKDF's length limit (255 × 32), so expansion cannot fail.
pub fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    // 32 ≤ 255 × HashLen, the only failure condition of expand.
    if hk.expand(info, out.as_mut()).is_err() {
        unreachable!("HKDF-SHA-256 expand of 32 bytes cannot fail");
    }
    out
}

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

//! A 32-byte secret that erases itself and never prints.

use std::fmt;

use bincode::{Decode, Encode};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// 32 secret bytes: zeroized on drop, `Debug` prints no byte of it.
/// Encoded as its 32 bytes.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    pub fn from_bytes(bytes: [u8; 32]) -> Secret32 {
        Secret32(bytes)
    }
    pub fn random<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Secret32 {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Secret32(b)
    }
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

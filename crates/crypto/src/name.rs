//! The talk's name: a short code every member derives from the talk key, so all of them
//! see and can say the same name, while the relay (which never holds the talk key)
//! cannot compute it or link it to a mailbox.
//!
//! Eight symbols of Crockford's base32 (no I, L, O, U, so nothing reads as two
//! letters), lowercase, as two groups of four: `7kqm-2x9d`. That is 40 bits: enough
//! that two talks of one person never share a name in practice, short enough to read
//! out on a call.

use crate::kdf::hkdf32;
use crate::labels;

/// Crockford's base32 alphabet, lowercase.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The name of the talk whose talk key is `talk_key`.
pub fn talk_name(talk_key: &[u8; 32]) -> String {
    let digest = hkdf32(None, talk_key, labels::TALK_NAME);
    let bits = digest[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut name = String::with_capacity(9);
    for i in 0..8u32 {
        if i == 4 {
            name.push('-');
        }
        // Bits 39..0, five at a time from the top; the mask keeps the index < 32.
        let symbol = ((bits >> (35 - 5 * i)) & 31) as usize;
        name.push(char::from(ALPHABET[symbol]));
    }
    name
}

/// A name as someone typed it, in the form names are compared in: lowercase, without
/// dashes or spaces, with Crockford's look-alikes read as what they stand for
/// (`o` → `0`, `i` and `l` → `1`).
pub fn normalize(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '_'))
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_eight_symbols_in_two_groups() {
        let name = talk_name(&[0x54; 32]);
        assert_eq!(name.len(), 9);
        assert_eq!(name.as_bytes()[4], b'-');
        assert!(
            name.bytes()
                .filter(|b| *b != b'-')
                .all(|b| ALPHABET.contains(&b))
        );
        assert_ne!(name, talk_name(&[0x55; 32]));
    }

    #[test]
    fn typed_names_compare_equal() {
        assert_eq!(normalize("7KQM-2X9D"), "7kqm2x9d");
        assert_eq!(normalize("0Il1 o"), "01110");
    }
}

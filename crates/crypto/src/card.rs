//! Cards (protocol-spec §19): who a member is, shown field by field to chosen members.
//!
//! A [`Card`] is a set of text fields (name, organisation, role, contact, note). It is
//! kept in the member's home, outside every talk, with a long-term Ed25519 card key.
//! A member reveals chosen fields of it to one other member of a talk in a
//! [`CardReveal`]: the fields, the card key, whether the recipient may keep it after
//! the talk, and the card key's signature over a transcript that binds all of that to
//! the talk's mailbox, the revealer's pseudonym and the recipient's pseudonym. So the
//! same card key in two talks tells a recipient who kept the card that it is the same
//! person, while no reveal can be replayed into another talk, by another member, or to
//! another recipient as a reveal there.

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey};
use nook_proto::MailboxId;
use nook_proto::codec::encode_value;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::identity::verify;
use crate::{CryptoError, labels};

/// The kinds of field a card has, in their wire order (a field's number is its index).
pub const FIELD_NAMES: [&str; 5] = ["name", "org", "role", "contact", "note"];

/// Longest field value, in bytes of UTF-8.
pub const MAX_FIELD: usize = 256;

/// A card's fields, or the chosen part of them that one reveal shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Card {
    /// `(kind, value)`, kinds strictly ascending (so each at most once), each below
    /// `FIELD_NAMES.len()`, values 1..=`MAX_FIELD` bytes.
    pub fields: Vec<(u8, String)>,
}

/// The number of the field called `name` (`name`, `org`, `role`, `contact`, `note`).
pub fn field_kind(name: &str) -> Option<u8> {
    FIELD_NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// The name of field `kind`; `None` for a number no version knows.
pub fn field_name(kind: u8) -> Option<&'static str> {
    FIELD_NAMES.get(usize::from(kind)).copied()
}

/// Checks a list of field kinds: known kinds, strictly ascending.
pub fn valid_kinds(kinds: &[u8]) -> bool {
    kinds.iter().all(|k| field_name(*k).is_some()) && kinds.windows(2).all(|w| w[0] < w[1])
}

impl Card {
    /// Whether the card keeps the format's limits (kinds known and ascending, values
    /// not empty and at most `MAX_FIELD` bytes). Control characters are not refused
    /// here: a receiver shows every value escaped anyway (the sender's client refuses
    /// them when the card is set).
    pub fn is_valid(&self) -> bool {
        let kinds: Vec<u8> = self.fields.iter().map(|(k, _)| *k).collect();
        valid_kinds(&kinds)
            && self
                .fields
                .iter()
                .all(|(_, v)| !v.is_empty() && v.len() <= MAX_FIELD)
    }

    /// The value of field `kind`.
    pub fn get(&self, kind: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_str())
    }

    /// The part of this card with the fields `kinds` (those it has).
    pub fn only(&self, kinds: &[u8]) -> Card {
        Card {
            fields: self
                .fields
                .iter()
                .filter(|(k, _)| kinds.contains(k))
                .cloned()
                .collect(),
        }
    }

    /// The kinds this card has.
    pub fn kinds(&self) -> Vec<u8> {
        self.fields.iter().map(|(k, _)| *k).collect()
    }
}

/// The long-term key a home signs its card reveals with (Ed25519, from a 32-byte seed).
pub struct CardKey(SigningKey);

impl CardKey {
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> CardKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        CardKey::from_seed(&seed)
    }

    pub fn from_seed(seed: &[u8; 32]) -> CardKey {
        CardKey(SigningKey::from_bytes(seed))
    }

    /// The seed, for the home's store. Secret.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKey(<secret>)")
    }
}

/// Chosen fields of a card, shown to one member of one talk.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct CardReveal {
    /// The revealer's long-term card key (public half).
    pub card_key: [u8; 32],
    pub card: Card,
    /// The revealer lets the recipient keep the card after the talk ends.
    pub keepable: bool,
    /// By the card key over [`reveal_transcript`].
    pub signature: [u8; 64],
}

/// What a card key signs when it reveals `card` in the talk `mailbox`, from the member
/// of pseudonym `from` to the member of pseudonym `to`:
/// `"nook/1 card-reveal" ‖ mailbox ‖ from ‖ to ‖ keepable ‖ encode(card)`.
pub fn reveal_transcript(
    mailbox: &MailboxId,
    from: &[u8; 32],
    to: &[u8; 32],
    keepable: bool,
    card: &Card,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let card = Zeroizing::new(encode_value(card).map_err(|_| CryptoError::Malformed)?);
    Ok(Zeroizing::new(
        [
            labels::CARD_REVEAL,
            &mailbox.0,
            from,
            to,
            &[u8::from(keepable)],
            &card,
        ]
        .concat(),
    ))
}

impl CardReveal {
    /// Signs `card` (already cut to the fields to show) for the member of pseudonym
    /// `to`, from ours (`from`), in the talk `mailbox`.
    pub fn new(
        key: &CardKey,
        mailbox: &MailboxId,
        from: &[u8; 32],
        to: &[u8; 32],
        card: Card,
        keepable: bool,
    ) -> Result<CardReveal, CryptoError> {
        if !card.is_valid() || card.fields.is_empty() {
            return Err(CryptoError::Malformed);
        }
        let transcript = reveal_transcript(mailbox, from, to, keepable, &card)?;
        Ok(CardReveal {
            card_key: key.public(),
            signature: key.0.sign(&transcript).to_bytes(),
            card,
            keepable,
        })
    }

    /// Checks the limits and that the card key signed this reveal in `mailbox`, from
    /// `from` to `to` (the pseudonyms of the member it came from, pairwise
    /// authenticated, and of the member who opened it).
    pub fn verify(
        &self,
        mailbox: &MailboxId,
        from: &[u8; 32],
        to: &[u8; 32],
    ) -> Result<(), CryptoError> {
        if !self.card.is_valid() || self.card.fields.is_empty() {
            return Err(CryptoError::Malformed);
        }
        let transcript = reveal_transcript(mailbox, from, to, self.keepable, &self.card)?;
        verify(&self.card_key, &transcript, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> Card {
        Card {
            fields: vec![(0, "Dana Reyes".into()), (1, "Acme GmbH".into())],
        }
    }

    #[test]
    fn a_reveal_verifies_only_where_and_for_whom_it_was_made() {
        let key = CardKey::from_seed(&[7; 32]);
        let m = MailboxId([1; 16]);
        let (a, b, c) = ([0xaa; 32], [0xbb; 32], [0xcc; 32]);
        let r = CardReveal::new(&key, &m, &a, &b, card(), false).expect("signs");
        assert!(r.verify(&m, &a, &b).is_ok());
        assert!(
            r.verify(&MailboxId([2; 16]), &a, &b).is_err(),
            "another talk"
        );
        assert!(r.verify(&m, &a, &c).is_err(), "another recipient");
        assert!(r.verify(&m, &c, &b).is_err(), "another revealer");
        let mut kept = r.clone();
        kept.keepable = true;
        assert!(kept.verify(&m, &a, &b).is_err(), "keepable is signed");
        let mut more = r.clone();
        more.card.fields.push((2, "Head".into()));
        assert!(more.verify(&m, &a, &b).is_err(), "fields are signed");
        let other = CardReveal::new(&CardKey::from_seed(&[8; 32]), &m, &a, &b, card(), false)
            .expect("signs");
        assert_ne!(other.card_key, r.card_key);
        let mut swapped = r;
        swapped.card_key = other.card_key;
        assert!(swapped.verify(&m, &a, &b).is_err(), "the key is bound");
    }

    #[test]
    fn cards_out_of_limits_are_refused() {
        let long = Card {
            fields: vec![(0, "x".repeat(MAX_FIELD + 1))],
        };
        assert!(!long.is_valid());
        let unordered = Card {
            fields: vec![(1, "a".into()), (0, "b".into())],
        };
        assert!(!unordered.is_valid());
        let twice = Card {
            fields: vec![(0, "a".into()), (0, "b".into())],
        };
        assert!(!twice.is_valid());
        let unknown = Card {
            fields: vec![(5, "a".into())],
        };
        assert!(!unknown.is_valid());
        let empty_value = Card {
            fields: vec![(0, String::new())],
        };
        assert!(!empty_value.is_valid());
        let key = CardKey::from_seed(&[7; 32]);
        let m = MailboxId([1; 16]);
        assert!(CardReveal::new(&key, &m, &[1; 32], &[2; 32], long, false).is_err());
        assert!(CardReveal::new(&key, &m, &[1; 32], &[2; 32], Card::default(), false).is_err());
        assert_eq!(field_kind("org"), Some(1));
        assert_eq!(field_name(4), Some("note"));
        assert!(field_kind("ssn").is_none());
        assert_eq!(card().only(&[1]).fields, vec![(1, "Acme GmbH".to_owned())]);
    }
}

//! A relay's key rotation (protocol-spec.md §11.12): the statement the old identity key
//! signs to name its successor, and how a client that pins an older key follows a
//! chain of them to the key the relay presents now.
//!
//! Transcript (signed with the old identity key):
//! ```text
//! "nook/1 relay-rotation" ‖ old key (32) ‖ new key (32) ‖ rotated_at (u64 LE)
//! ```
//!
//! What it never does: trust a key because a relay says so. A key is accepted only if
//! the pinned fingerprint is its own, or a chain of statements, each signed by the key
//! before it, leads there from the pinned key.

use ed25519_dalek::Signer;
use nook_proto::limits::MAX_ROTATIONS;
use nook_proto::{RelayKey, RotationStatement, Signature};

use crate::auth::RelayIdentity;
use crate::identity::verify;
use crate::invite::Fingerprint;
use crate::labels;

/// Why a presented relay key could not be reached from the pinned fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// No statement starts at the pinned key: the relay never rotated away from it
    /// (or does not say so).
    #[error("no rotation statement starts at the pinned key")]
    NotPinned,
    /// A statement does not continue from the key the one before named, or the last
    /// does not name the presented key.
    #[error("the rotation statements do not form one chain to the presented key")]
    Broken,
    /// A statement's signature does not verify under the key it retires.
    #[error("a rotation statement's signature does not verify")]
    BadSignature,
    /// More statements than a client follows.
    #[error("more than {MAX_ROTATIONS} rotation statements")]
    TooLong,
}

/// The bytes a rotation statement's signature covers.
pub fn rotation_transcript(old: &RelayKey, new: &RelayKey, rotated_at: u64) -> Vec<u8> {
    [labels::ROTATION, &old.0, &new.0, &rotated_at.to_le_bytes()].concat()
}

impl RelayIdentity {
    /// This (old) identity's statement that the relay's identity is `new` from
    /// `rotated_at` on.
    pub fn sign_rotation(&self, new: &RelayKey, rotated_at: u64) -> RotationStatement {
        let old = self.public();
        let sig = self.key.sign(&rotation_transcript(&old, new, rotated_at));
        RotationStatement {
            old,
            new: *new,
            rotated_at,
            signature: Signature(sig.to_bytes()),
        }
    }
}

/// Checks one statement's signature, strictly, under the key it retires.
pub fn verify_statement(s: &RotationStatement) -> Result<(), FollowError> {
    verify(
        &s.old.0,
        &rotation_transcript(&s.old, &s.new, s.rotated_at),
        &s.signature.0,
    )
    .map_err(|_| FollowError::BadSignature)
}

/// The statements that lead from the key `pinned` names to `presented`: empty if
/// `presented` is the pinned key itself, else the tail of `history` from the first
/// statement that retires the pinned key, every one of which must verify and continue
/// from the one before, the last naming `presented`.
pub fn follow<'a>(
    pinned: &Fingerprint,
    history: &'a [RotationStatement],
    presented: &RelayKey,
) -> Result<&'a [RotationStatement], FollowError> {
    if Fingerprint::of_key(&presented.0) == *pinned {
        return Ok(&[]);
    }
    if history.len() > MAX_ROTATIONS {
        return Err(FollowError::TooLong);
    }
    let start = history
        .iter()
        .position(|s| Fingerprint::of_key(&s.old.0) == *pinned)
        .ok_or(FollowError::NotPinned)?;
    let chain = &history[start..];
    let mut expected_old = chain[0].old;
    for s in chain {
        if s.old != expected_old {
            return Err(FollowError::Broken);
        }
        verify_statement(s)?;
        expected_old = s.new;
    }
    if expected_old != *presented {
        return Err(FollowError::Broken);
    }
    Ok(chain)
}

/// Checks a relay's own whole history: it starts anywhere, chains, and ends at
/// `current` (what a relay checks before it serves, and after it rotates).
pub fn check_history(history: &[RotationStatement], current: &RelayKey) -> Result<(), FollowError> {
    match history.first() {
        None => Ok(()),
        Some(first) => {
            let chain = follow(&Fingerprint::of_key(&first.old.0), history, current)?;
            if chain.len() == history.len() {
                Ok(())
            } else {
                Err(FollowError::Broken)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ids() -> [RelayIdentity; 3] {
        [1u8, 2, 3].map(|b| RelayIdentity::from_seed(&[b; 32]))
    }

    #[test]
    fn a_chain_is_followed_from_any_key_in_it() {
        let [a, b, c] = ids();
        let history = [
            a.sign_rotation(&b.public(), 10),
            b.sign_rotation(&c.public(), 20),
        ];
        let fp = |id: &RelayIdentity| Fingerprint::of_key(&id.public().0);
        assert_eq!(follow(&fp(&a), &history, &c.public()).unwrap().len(), 2);
        assert_eq!(follow(&fp(&b), &history, &c.public()).unwrap().len(), 1);
        assert!(follow(&fp(&c), &history, &c.public()).unwrap().is_empty());
        assert!(follow(&fp(&c), &[], &c.public()).unwrap().is_empty());
        check_history(&history, &c.public()).unwrap();
        assert_eq!(
            check_history(&history, &b.public()),
            Err(FollowError::Broken)
        );
    }

    #[test]
    fn forged_broken_or_absent_statements_lead_nowhere() {
        let [a, b, c] = ids();
        let fp_a = Fingerprint::of_key(&a.public().0);
        // No statement at all.
        assert_eq!(follow(&fp_a, &[], &b.public()), Err(FollowError::NotPinned));
        // A statement "by a" that b signed itself.
        let mut forged = b.sign_rotation(&b.public(), 10);
        forged.old = a.public();
        assert_eq!(
            follow(&fp_a, &[forged], &b.public()),
            Err(FollowError::BadSignature)
        );
        // A valid statement to b does not vouch for c.
        let to_b = a.sign_rotation(&b.public(), 10);
        assert_eq!(
            follow(&fp_a, &[to_b], &c.public()),
            Err(FollowError::Broken)
        );
        // A gap: a → b, then c → a (c never named by anyone).
        let gap = [to_b, c.sign_rotation(&a.public(), 20)];
        assert_eq!(follow(&fp_a, &gap, &a.public()), Ok(&[][..]));
        let gap2 = [to_b, c.sign_rotation(&b.public(), 20)];
        assert_eq!(follow(&fp_a, &gap2, &b.public()), Err(FollowError::Broken));
        // The time is signed.
        let mut moved = a.sign_rotation(&b.public(), 10);
        moved.rotated_at = 11;
        assert_eq!(
            follow(&fp_a, &[moved], &b.public()),
            Err(FollowError::BadSignature)
        );
        let long = vec![to_b; MAX_ROTATIONS + 1];
        assert_eq!(follow(&fp_a, &long, &b.public()), Err(FollowError::TooLong));
    }
}

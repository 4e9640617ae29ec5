//! Sender-key chains (as in Signal's sender keys): each member encrypts its group
//! messages with keys from its own hash ratchet and gives the chain's current state to
//! every other member, sealed pairwise.
//!
//! ```text
//! MK_n   = HKDF(ikm = CK_n, info = "nook/1 msg")
//! CK_n+1 = HKDF(ikm = CK_n, info = "nook/1 chain")
//! ```
//! Each key is erased once used, so a device compromised later holds no key for an
//! earlier message (forward secrecy). Receivers keep the keys of skipped indexes for a
//! bounded window, so late messages still open, and refuse any index they already
//! consumed (replay).

use std::collections::BTreeMap;
use std::fmt;

use bincode::{Decode, Encode};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::kdf::hkdf32;
use crate::labels;

/// How far ahead of the next expected index a message may be.
pub const MAX_SKIP: u32 = 1000;
/// How many skipped message keys a receiver keeps per sender; older ones are erased
/// (and their messages then count as lost).
pub const MAX_SKIPPED_KEYS: usize = 256;

/// A chain's position: what a member sends to others so they can follow its messages.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct ChainState {
    /// Increases by one each time the member starts a fresh chain (after someone leaves).
    pub epoch: u32,
    /// The index of the next message this chain will send.
    pub index: u32,
    pub chain_key: [u8; 32],
    /// The key that seals the envelopes of the chain's sender while this chain is its
    /// current one (protocol-spec §11.6): a member that left never learns the next.
    pub envelope_key: [u8; 32],
}

/// The sending side: produces one message key per message, in order.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct SendingChain {
    state: ChainState,
}

/// The receiving side of another member's chain.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReceivingChain {
    state: ChainState,
    skipped: BTreeMap<u32, [u8; 32]>,
}

/// A message key: used for one message, then dropped (and zeroized).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MessageKey(pub(crate) [u8; 32]);

/// How a received message fits the sender's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub index: u32,
    /// Messages skipped just before this one (not yet received; a gap the relay or the
    /// network caused). Zero for an in-order message.
    pub missed: u32,
    /// This message arrived after a later one (it fills an earlier gap).
    pub late: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("message {index} was already received or is too old (replay)")]
    Replayed { index: u32 },
    #[error("message {index} is too far ahead (expected {next}, window {MAX_SKIP})")]
    TooFarAhead { index: u32, next: u32 },
    #[error("message is from chain epoch {got}, expected {expected}")]
    WrongEpoch { got: u32, expected: u32 },
    #[error("the chain is exhausted; start a new one")]
    Exhausted,
}

/// A receive in progress: computed without touching the chain, applied with
/// [`ReceivingChain::commit`] only after the message authenticated.
pub struct Pending {
    key: MessageKey,
    delivery: Delivery,
    advance: Option<Advance>,
}

struct Advance {
    next: u32,
    chain_key: [u8; 32],
    skipped: Vec<(u32, [u8; 32])>,
}

impl Drop for Advance {
    fn drop(&mut self) {
        self.chain_key.zeroize();
        for (_, k) in &mut self.skipped {
            k.zeroize();
        }
    }
}

impl SendingChain {
    pub fn new<R: rand::CryptoRng + ?Sized>(rng: &mut R, epoch: u32) -> SendingChain {
        let mut chain_key = [0u8; 32];
        rng.fill_bytes(&mut chain_key);
        let mut envelope_key = [0u8; 32];
        rng.fill_bytes(&mut envelope_key);
        SendingChain::from_state(ChainState {
            epoch,
            index: 0,
            chain_key,
            envelope_key,
        })
    }
    pub fn from_state(state: ChainState) -> SendingChain {
        SendingChain { state }
    }
    /// The current position, to hand to a member (pairwise sealed).
    pub fn state(&self) -> &ChainState {
        &self.state
    }
    /// The key for the next message and its index; the chain moves past it.
    pub fn next_key(&mut self) -> Result<(u32, MessageKey), ChainError> {
        let index = self.state.index;
        let next = index.checked_add(1).ok_or(ChainError::Exhausted)?;
        let (mk, ck) = step(&self.state.chain_key);
        self.state.chain_key = ck;
        self.state.index = next;
        Ok((index, MessageKey(mk)))
    }
}

impl ReceivingChain {
    pub fn new(state: ChainState) -> ReceivingChain {
        ReceivingChain {
            state,
            skipped: BTreeMap::new(),
        }
    }

    pub fn epoch(&self) -> u32 {
        self.state.epoch
    }

    /// The key of the sender's envelopes while this chain is current.
    /// Where this chain stands for the next message: what a member that must read on
    /// from here (a panel's listener, spec §20.3) is given. Keys skipped before it stay
    /// here.
    pub fn position(&self) -> ChainState {
        self.state.clone()
    }

    pub fn envelope_key(&self) -> &[u8; 32] {
        &self.state.envelope_key
    }

    /// The index this chain expects next.
    pub fn next_index(&self) -> u32 {
        self.state.index
    }

    /// Finds the key for message `index` of `epoch` without changing the chain.
    pub fn prepare(&self, epoch: u32, index: u32) -> Result<Pending, ChainError> {
        if epoch != self.state.epoch {
            return Err(ChainError::WrongEpoch {
                got: epoch,
                expected: self.state.epoch,
            });
        }
        let next = self.state.index;
        if index < next {
            let key = self
                .skipped
                .get(&index)
                .ok_or(ChainError::Replayed { index })?;
            return Ok(Pending {
                key: MessageKey(*key),
                delivery: Delivery {
                    index,
                    missed: 0,
                    late: true,
                },
                advance: None,
            });
        }
        if index - next > MAX_SKIP {
            return Err(ChainError::TooFarAhead { index, next });
        }
        let new_next = index.checked_add(1).ok_or(ChainError::Exhausted)?;
        let mut ck = self.state.chain_key;
        let mut skipped = Vec::new();
        for i in next..index {
            let (mk, next_ck) = step(&ck);
            ck.zeroize();
            ck = next_ck;
            skipped.push((i, mk));
        }
        let (mk, next_ck) = step(&ck);
        ck.zeroize();
        Ok(Pending {
            key: MessageKey(mk),
            delivery: Delivery {
                index,
                missed: index - next,
                late: false,
            },
            advance: Some(Advance {
                next: new_next,
                chain_key: next_ck,
                skipped,
            }),
        })
    }

    /// Applies a prepared receive: erases the used key and moves the chain.
    pub fn commit(&mut self, pending: Pending) -> Delivery {
        let Pending {
            key: _key,
            delivery,
            mut advance,
        } = pending;
        match advance.as_mut() {
            None => {
                if let Some(mut k) = self.skipped.remove(&delivery.index) {
                    k.zeroize();
                }
            }
            Some(adv) => {
                self.state.index = adv.next;
                self.state.chain_key = adv.chain_key;
                for (i, k) in adv.skipped.drain(..) {
                    self.skipped.insert(i, k);
                }
                while self.skipped.len() > MAX_SKIPPED_KEYS {
                    if let Some((_, mut k)) = self.skipped.pop_first() {
                        k.zeroize();
                    }
                }
            }
        }
        delivery
    }
}

impl Pending {
    pub(crate) fn key(&self) -> &MessageKey {
        &self.key
    }
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }
}

impl Drop for ReceivingChain {
    fn drop(&mut self) {
        for k in self.skipped.values_mut() {
            k.zeroize();
        }
    }
}

/// One ratchet step: `(MK_n, CK_n+1)` from `CK_n`.
pub fn step(chain_key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mk = hkdf32(None, chain_key, labels::MSG);
    let ck = hkdf32(None, chain_key, labels::CHAIN);
    (*mk, *ck)
}

impl fmt::Debug for ChainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainState(epoch {}, index {})", self.epoch, self.index)
    }
}
impl fmt::Debug for SendingChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendingChain({:?})", self.state)
    }
}
impl fmt::Debug for ReceivingChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ReceivingChain({:?}, {} skipped keys)",
            self.state,
            self.skipped.len()
        )
    }
}
impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey(<redacted>)")
    }
}
impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pending({:?})", self.delivery)
    }
}

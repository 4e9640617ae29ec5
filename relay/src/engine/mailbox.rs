//! One mailbox in memory (its talk, where each live envelope is in the log, who is
//! subscribed) and the records it keeps in the store (the table in the engine's doc).
//!
//! Every operation, recovery and the sweep work on this state under the mailbox's
//! lock, so what they share about it lives here: the store keys, the release of
//! envelopes every recipient has acked, and reading one back.

use std::collections::{BTreeMap, HashMap};

use bincode::{Decode, Encode};
use nook_proto::codec::{decode_body, encode_value};
use nook_proto::talk::Talk;
use nook_proto::{EnvelopeKind, MailboxId, Push, TalkStatus};
use nook_vault::{Loc, Log, Namespace, VaultError};

use crate::outbox::{Outbox, pushes_of};

pub(super) const K_META: &[u8] = b"m";
pub(super) const K_HEAD: &[u8] = b"h";
const MAILBOX_PREFIX: &[u8] = b"mailbox/";

#[derive(Encode, Decode)]
pub(super) struct MailboxMeta {
    pub(super) mailbox: MailboxId,
    pub(super) talk: Talk,
}

/// A stored `MailboxMeta`, also in the shape relays before scheduled talks wrote
/// (protocol-spec §20.1): the same bytes without the talk's last field, `schedule`,
/// which for them is `None` (one `00` byte). Nothing else moved, so an old record
/// never decodes as a new one (it is one byte short) nor the other way round.
pub(super) fn decode_meta(bytes: &[u8]) -> Result<MailboxMeta, nook_proto::DecodeError> {
    decode_body(bytes).or_else(|e| {
        let mut before_schedules = bytes.to_vec();
        before_schedules.push(0);
        decode_body(&before_schedules).map_err(|_| e)
    })
}

#[derive(Encode, Decode)]
pub(super) struct EnvRecord {
    pub(super) kind: EnvelopeKind,
    pub(super) stored_at: u64,
    /// Bit `s` set: seat `s` must ack before the envelope is deleted.
    pub(super) recipients: u64,
    pub(super) body: Vec<u8>,
}

pub(super) struct EnvMeta {
    pub(super) recipients: u64,
    pub(super) len: u64,
    pub(super) loc: Loc,
}

pub(super) struct Subscriber {
    pub(super) outbox: Outbox,
    pub(super) seat: u8,
}

pub(super) struct Mailbox {
    pub(super) id: MailboxId,
    pub(super) ns: Namespace,
    pub(super) talk: Talk,
    /// The highest seq handed out to a put that has not failed. Puts of one
    /// mailbox complete in seq order, so a failed put that is still the head gives
    /// its seq back (`head` falls to `durable`): a seq nobody was told of is reused.
    pub(super) head: u64,
    /// The highest seq whose put is durable and answered `Stored`. Only envelopes
    /// up to it are served, acked or released by acks: the ones above may still
    /// fail, and then they are undone as if never put.
    pub(super) durable: u64,
    /// The `h` last written to sled (what a restart finds there).
    pub(super) head_stored: u64,
    pub(super) envelopes: BTreeMap<u64, EnvMeta>,
    pub(super) acked: HashMap<u8, u64>,
    pub(super) bytes: u64,
    pub(super) subscribers: Vec<Subscriber>,
    /// Seats whose welcome is still stored: kept after the join until that member's
    /// first `Put`, so a join whose answer was lost can be retried.
    pub(super) welcomes: u64,
    /// The length of each stored welcome, by seat (what the storage quota counts);
    /// empty once none is kept.
    welcome_lens: Box<[u16]>,
}

impl Mailbox {
    /// A mailbox whose `h` in sled is `head`, with no envelope, ack, welcome or
    /// subscriber in memory yet.
    pub(super) fn new(id: MailboxId, ns: Namespace, talk: Talk, head: u64) -> Mailbox {
        Mailbox {
            id,
            ns,
            talk,
            head,
            durable: head,
            head_stored: head,
            envelopes: BTreeMap::new(),
            acked: HashMap::new(),
            bytes: 0,
            subscribers: Vec::new(),
            welcomes: 0,
            welcome_lens: Box::default(),
        }
    }

    /// Whether memory holds nothing of this mailbox that a load from its namespace
    /// would not give back (`recovery::load_mailbox`), and nobody waits on it: then
    /// it may be evicted. The talk and welcomes are written at every change; an
    /// envelope's place in the log is memory's alone, so a mailbox holding one stays;
    /// with none held, an ack mark not yet in sled (`PendingMarks`) is at most the
    /// head and covers nothing a later put gets, so the older mark that a load finds
    /// means the same.
    pub(super) fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.envelopes.is_empty()
            && self.durable == self.head
            && self.head_stored == self.head
    }

    /// Seat `seat`'s welcome of `len` bytes is stored.
    pub(super) fn keep_welcome(&mut self, seat: u8, len: usize) {
        // Seats beyond the talk's (none, from a store this relay wrote) are not
        // counted; their welcome is never handed out either.
        let seats = usize::from(self.talk.status().seats).min(64);
        if usize::from(seat) >= seats {
            return;
        }
        if self.welcome_lens.is_empty() {
            self.welcome_lens = vec![0; seats].into_boxed_slice();
        }
        self.welcomes |= 1u64 << seat;
        self.welcome_lens[usize::from(seat)] = u16::try_from(len).unwrap_or(u16::MAX);
    }

    /// Seat `seat`'s welcome is no longer stored; returns its length.
    pub(super) fn forget_welcome(&mut self, seat: u8) -> u64 {
        self.welcomes &= !(1u64.checked_shl(u32::from(seat)).unwrap_or(0));
        let len = self
            .welcome_lens
            .get_mut(usize::from(seat))
            .map_or(0, std::mem::take);
        if self.welcomes == 0 {
            self.welcome_lens = Box::default();
        }
        u64::from(len)
    }

    /// Bytes of the welcomes still stored.
    pub(super) fn welcome_bytes(&self) -> u64 {
        self.welcome_lens.iter().map(|l| u64::from(*l)).sum()
    }

    pub(super) fn status(&self) -> TalkStatus {
        self.talk.status()
    }

    pub(super) fn save_meta(&self) -> Result<(), VaultError> {
        let meta = MailboxMeta {
            mailbox: self.id,
            talk: self.talk.clone(),
        };
        let bytes = encode_value(&meta).map_err(|e| VaultError::Corrupt {
            what: format!("encoding mailbox: {e}"),
        })?;
        self.ns.put(K_META, &bytes)
    }

    pub(super) fn push_all(&self, push: Push, except: Option<u64>) {
        let to = self
            .subscribers
            .iter()
            .filter(|s| Some(s.outbox.id) != except);
        for (outbox, frame) in pushes_of(to.map(|s| s.outbox.clone()), push) {
            outbox.send_wire(frame);
        }
    }

    /// The seats of the current members, one bit each.
    pub(super) fn member_seats(&self) -> u64 {
        self.talk
            .members()
            .iter()
            .fold(0, |m, x| m | (1u64 << x.seat))
    }

    /// Whether every seat in `waiting` has acked `seq`: then nobody needs it any more.
    pub(super) fn acked_by(&self, waiting: u64, seq: u64) -> bool {
        (0..64u8)
            .filter(|s| waiting & (1u64 << s) != 0)
            .all(|s| self.acked.get(&s).copied().unwrap_or(0) >= seq)
    }

    /// Deletes every envelope in `(from, to]` that no remaining recipient still
    /// needs. Returns how many were deleted. Envelopes not durable yet are left to
    /// their put's completion.
    pub(super) fn collect(&mut self, log: &Log, from: u64, to: u64) -> Result<u64, VaultError> {
        let to = to.min(self.durable);
        if to <= from {
            return Ok(0);
        }
        let members = self.member_seats();
        let mut done = Vec::new();
        for (seq, meta) in self.envelopes.range(from.saturating_add(1)..=to) {
            if self.acked_by(meta.recipients & members, *seq) {
                done.push(*seq);
            }
        }
        if done.is_empty() {
            return Ok(0);
        }
        // A restart takes the highest seq of `h` and of every record still on disk.
        // While the head's own record is live its segment stays, so `h` must be
        // written (before the release: then the segment may be unlinked) only when
        // this collect releases the head's record. Under load the head is ahead of
        // the acks and most acks write nothing to sled here.
        if done.last() == Some(&self.head) && self.head_stored < self.head {
            self.ns.put(K_HEAD, &self.head.to_le_bytes())?;
            self.head_stored = self.head;
        }
        for seq in &done {
            if let Some(m) = self.envelopes.remove(seq) {
                self.bytes = self.bytes.saturating_sub(m.len);
                log.release(m.loc);
            }
        }
        Ok(done.len() as u64)
    }

    /// Undoes the put of envelope `seq`, whose record at `loc` did not become
    /// durable: it leaves the index and the quota, its record is released, and its
    /// seq is given back if nothing was put after it.
    pub(super) fn undo_put(&mut self, log: &Log, seq: u64, loc: Loc) {
        if self.envelopes.get(&seq).is_some_and(|m| m.loc == loc)
            && let Some(m) = self.envelopes.remove(&seq)
        {
            self.bytes = self.bytes.saturating_sub(m.len);
            log.release(m.loc);
        }
        if self.head == seq {
            self.head = self.durable;
        }
    }

    /// Reads envelope `seq` back from the log.
    pub(super) fn load(&self, log: &Log, seq: u64, loc: Loc) -> Result<EnvRecord, VaultError> {
        let record = log.read(loc)?;
        let key = env_key(seq);
        if record.namespace != self.ns.number() || record.key != key {
            return Err(VaultError::Corrupt {
                what: "a log record is not the envelope the mailbox expects".into(),
            });
        }
        let raw = self.ns.open(&key, &record.sealed)?;
        decode_body(&raw).map_err(|e| VaultError::Corrupt {
            what: format!("envelope record: {e}"),
        })
    }
}

pub(super) fn env_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn welcome_key(seat: u8) -> [u8; 2] {
    [b'w', seat]
}

pub(super) fn ns_id(mailbox: &MailboxId) -> Vec<u8> {
    [MAILBOX_PREFIX, &mailbox.0].concat()
}

pub(super) fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nook_proto::{ClosePolicy, MemberKey, Schedule, SeatOffer, TalkParams, TokenHash};

    fn meta(schedule: Option<Schedule>) -> MailboxMeta {
        let params = TalkParams {
            seats: 2,
            quorum: 2,
            ttl_secs: 3600,
            close: ClosePolicy::Owner,
            offers: vec![SeatOffer {
                token_hash: TokenHash([7; 32]),
                welcome: vec![0; 512],
            }],
            schedule,
        };
        MailboxMeta {
            mailbox: MailboxId([3; 16]),
            talk: Talk::create(&params, MemberKey([1; 32]), 1_000).unwrap(),
        }
    }

    #[test]
    fn a_meta_stored_before_scheduled_talks_still_reads() {
        let now = meta(None);
        let mut before = encode_value(&now).unwrap();
        // What a relay before schedules wrote: the same, without the final `None`.
        assert_eq!(before.pop(), Some(0));
        let read = decode_meta(&before).unwrap();
        assert_eq!(read.mailbox, now.mailbox);
        assert_eq!(read.talk, now.talk);
        let scheduled = meta(Some(Schedule {
            opens_in_secs: 60,
            window_secs: 60,
        }));
        let read = decode_meta(&encode_value(&scheduled).unwrap()).unwrap();
        assert_eq!(read.talk, scheduled.talk);
        assert!(decode_meta(&[1, 2, 3]).is_err());
    }
}

//! Housekeeping off the request path, run by the server's sweeper task: opening
//! scheduled talks at their time and closing them at their window's end, ending
//! expired talks, compacting the envelope log, forgetting old tombstones; and
//! `destroy`, the crypto-shredding that an expiry, a close and a last leave share.
//!
//! A sweep is meant to stay cheap on a relay with many idle talks: it visits only
//! the mailboxes whose expiry is due, compacts a few log segments at most, and scans
//! the tombstones only every `TOMBSTONE_PURGE_EVERY` sweeps.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use nook_proto::talk::{Lifecycle, Tick};
use nook_proto::{MailboxId, Push, Receipt, Signature};
use nook_vault::VaultError;

use super::mailbox::{Mailbox, ns_id, u64_of};
use super::{Engine, TOMBSTONE_GRACE_SECS, lock};

/// Sweeps between two purges of expired tombstones.
const TOMBSTONE_PURGE_EVERY: u64 = 60;
/// Segments compacted per sweep at most.
const COMPACT_PER_SWEEP: usize = 4;

impl Engine {
    /// Ends expired talks and forgets expired tombstones. Returns the number of
    /// mailboxes deleted. Called by the sweeper task, and directly by tests.
    pub fn sweep(&self) -> usize {
        // Before anything else writes: on a disk that just filled up, this gives the
        // reserve up so that the writes below (and acks) can be made.
        self.space.tend();
        let retired = self.retire_tick();
        let now = self.now();
        // Before expiry: a window that ends with the TTL closes with a receipt.
        let ended = self.tick_timers(now);
        self.sweep_boards(now);
        let due = take_due(&self.expiries, now);
        let mut n = 0;
        for id in due {
            // Loaded one at a time, and evicted again if it lives on.
            let arc = match self.resident(&id) {
                Ok(Some(arc)) => super::MailboxRef {
                    engine: self,
                    id,
                    arc,
                },
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("could not load an expired mailbox, will retry: {e}");
                    lock(&self.expiries).insert((now + 60, id));
                    continue;
                }
            };
            let mut mb = lock(&arc);
            if !mb.talk.expire(now) || matches!(mb.talk.lifecycle(), Lifecycle::Closed { .. }) {
                continue;
            }
            let push = Push::Expired { mailbox: mb.id };
            mb.push_all(push, None);
            mb.subscribers.clear();
            let expires = mb.talk.expires_at();
            if let Err(e) = self.destroy(&mut mb, expires, None) {
                tracing::error!("could not delete an expired mailbox, will retry: {e}");
                lock(&self.expiries).insert((now + 60, mb.id));
                continue;
            }
            n += 1;
        }
        let _ = self.vault.collect_garbage(10_000);
        self.compact();
        self.evict_idle();
        // So that a quiet relay's marks reach sled (and sled's own flusher) too.
        if let Err(e) = self.marks.write() {
            tracing::error!("writing ack marks failed: {e}");
        }
        // Segments whose every record was acked or deleted go now rather than with the
        // next write: on a full disk, there may be no next write until they do.
        if self.log.has_dead()
            && let Err(e) = self.flush()
        {
            tracing::error!("removing dead log segments failed: {e}");
        }
        if n > 0 {
            tracing::info!(count = n, "expired talks deleted");
        }
        // Tombstones only decide between "closed" and "unknown": purging them once a
        // minute or so is plenty, and keeps idle sweeps cheap.
        if self
            .sweeps
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(TOMBSTONE_PURGE_EVERY)
        {
            self.purge_tombstones();
        }
        n + retired + ended
    }

    /// Ticks the scheduled talks whose opening time or window end is due: an opening
    /// is pushed to the members online (`Opened`), a window's end closes the talk as
    /// a close does, with the relay's receipt. Returns the talks closed.
    fn tick_timers(&self, now: u64) -> usize {
        let due = take_due(&self.timers, now);
        let mut closed = Vec::new();
        for id in due {
            let arc = match self.resident(&id) {
                Ok(Some(arc)) => super::MailboxRef {
                    engine: self,
                    id,
                    arc,
                },
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("could not load a scheduled talk, will retry: {e}");
                    lock(&self.timers).insert((now + 1, id));
                    continue;
                }
            };
            let mut mb = lock(&arc);
            let before = mb.talk.clone();
            match mb.talk.tick(now) {
                Tick::Nothing => {}
                Tick::Opened => {
                    if let Err(e) = mb.save_meta() {
                        tracing::error!("could not open a scheduled talk, will retry: {e}");
                        mb.talk = before;
                        lock(&self.timers).insert((now + 1, id));
                        continue;
                    }
                    let status = mb.status();
                    mb.push_all(
                        Push::Opened {
                            mailbox: id,
                            status,
                        },
                        None,
                    );
                }
                Tick::WindowEnded => {
                    let deleted = mb.envelopes.len() as u64;
                    let expires = mb.talk.expires_at();
                    let receipt = self.identity.sign_receipt(id, now, deleted);
                    if let Err(e) = self.destroy(&mut mb, expires, Some(&receipt)) {
                        tracing::error!(
                            "could not close a talk at its window's end, will retry: {e}"
                        );
                        mb.talk = before;
                        lock(&self.timers).insert((now + 1, id));
                        continue;
                    }
                    let subscribers: Vec<_> = mb.subscribers.drain(..).map(|s| s.outbox).collect();
                    closed.push((subscribers, id, receipt));
                }
            }
        }
        if closed.is_empty() {
            return 0;
        }
        // The tombstones (with their receipts) are durable before anyone is told.
        if let Err(e) = self.flush() {
            tracing::error!("flushing the store at a window's end: {e}");
        }
        let n = closed.len();
        for (subscribers, mailbox, receipt) in closed {
            // An empty farewell: no member closed it.
            let push = Push::Closed {
                mailbox,
                receipt,
                farewell: Vec::new(),
            };
            for (outbox, frame) in crate::outbox::pushes_of(subscribers.into_iter(), push) {
                outbox.send_wire(frame);
            }
        }
        tracing::info!(count = n, "scheduled talks closed at their window's end");
        n
    }

    /// Copies the live envelopes out of sparse log segments, so that a few
    /// unacknowledged envelopes do not keep whole segments on disk. Returns how many
    /// envelopes moved.
    ///
    /// A copy replaces its original only once a log sync made it durable: until
    /// then reads use the original, and a copy that sync gave up is simply
    /// released (see `Log::sync`). Envelopes not durable yet are left alone.
    pub fn compact(&self) -> usize {
        let sparse: HashSet<u64> = self
            .log
            .sparse_segments(COMPACT_PER_SWEEP)
            .into_iter()
            .collect();
        if sparse.is_empty() {
            return 0;
        }
        let all: Vec<Arc<Mutex<Mailbox>>> = lock(&self.mailboxes).values().cloned().collect();
        // (mailbox, seq, original, copy)
        let mut copies = Vec::new();
        for arc in all {
            let mb = lock(&arc);
            for (seq, meta) in mb.envelopes.range(..=mb.durable) {
                if !sparse.contains(&meta.loc.segment) {
                    continue;
                }
                let copy = self
                    .log
                    .read(meta.loc)
                    .and_then(|r| self.log.append(r.namespace, &r.key, &r.sealed));
                match copy {
                    Ok(loc) => copies.push((arc.clone(), *seq, meta.loc, loc)),
                    Err(e) => tracing::error!("log compaction: {e}"),
                }
            }
        }
        if copies.is_empty() {
            return 0;
        }
        if let Err(e) = self.log.sync() {
            tracing::error!("log compaction: {e}");
        }
        let mut moved = 0;
        for (arc, seq, original, copy) in copies {
            let mut mb = lock(&arc);
            let durable = !self.log.is_lost(copy);
            match mb.envelopes.get_mut(&seq) {
                Some(meta) if meta.loc == original && durable => {
                    meta.loc = copy;
                    self.log.release(original);
                    moved += 1;
                }
                // Given up by the sync, or the envelope went meanwhile (whoever
                // removed it released the original).
                _ => self.log.release(copy),
            }
        }
        if moved > 0 {
            tracing::debug!(segments = sparse.len(), envelopes = moved, "log compacted");
        }
        moved
    }

    /// Forgets tombstones whose grace period is over: their mailboxes become unknown.
    pub fn purge_tombstones(&self) {
        let now = self.now();
        let mut stale = Vec::new();
        for item in self.tombstones.scan_prefix(b"") {
            match item {
                Ok((k, v)) if tombstone_until(&v).is_some_and(|exp| exp <= now) => stale.push(k),
                Ok(_) => {}
                Err(e) => tracing::error!("tombstone scan: {e}"),
            }
        }
        for k in stale {
            let _ = self.tombstones.remove(&k);
        }
    }

    /// Crypto-shreds a mailbox: efface its key (durable; from then on its data is
    /// unreadable), leave the data to the vault's garbage collection, write the
    /// tombstone — with the deletion receipt when the talk was closed, so members who
    /// were offline get it when they come back. The caller holds the mailbox lock.
    pub(super) fn destroy(
        &self,
        mb: &mut Mailbox,
        talk_end: u64,
        receipt: Option<&Receipt>,
    ) -> Result<(), VaultError> {
        self.vault.destroy_namespace(&ns_id(&mb.id))?;
        lock(&self.boards).forget_mailbox(&mb.id);
        let hashed = self.vault.index_hash(&mb.id.0);
        let until = talk_end.max(self.now()) + TOMBSTONE_GRACE_SECS;
        let window_ended = matches!(mb.talk.lifecycle(), Lifecycle::WindowEnded { .. });
        self.tombstones
            .put(&hashed, &tombstone_value(until, receipt, window_ended))?;
        let deleted = mb.envelopes.len() as u64;
        for meta in std::mem::take(&mut mb.envelopes).into_values() {
            self.log.release(meta.loc);
        }
        mb.bytes = 0;
        for seat in 0..64 {
            if mb.welcomes & (1u64 << seat) != 0 {
                self.space.sub_welcomes(mb.forget_welcome(seat));
            }
        }
        lock(&self.mailboxes).remove(&mb.id);
        lock(&self.expiries).remove(&(mb.talk.expires_at(), mb.id));
        {
            let mut timers = lock(&self.timers);
            for at in mb.talk.timers() {
                timers.remove(&(at, mb.id));
            }
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .envelopes_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        self.stats.mailboxes_deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A tombstone's value: `until` (u64 LE), then for a closed talk the receipt's
/// `closed_at` and `envelopes_deleted` (u64 LE each) and its signature (64 bytes),
/// then for a scheduled talk closed at its window's end one byte `1`.
/// The mailbox id is the tombstone's key (hashed), so it is not repeated.
fn tombstone_value(until: u64, receipt: Option<&Receipt>, window_ended: bool) -> Vec<u8> {
    let mut v = until.to_le_bytes().to_vec();
    if let Some(r) = receipt {
        v.extend_from_slice(&r.closed_at.to_le_bytes());
        v.extend_from_slice(&r.envelopes_deleted.to_le_bytes());
        v.extend_from_slice(&r.signature.0);
        if window_ended {
            v.push(1);
        }
    }
    v
}

/// A tombstone's length with a receipt, without the window's flag.
const TOMBSTONE_WITH_RECEIPT: usize = 8 + 8 + 8 + 64;

/// Whether a tombstone is of a scheduled talk closed at its window's end.
pub(super) fn tombstone_window_ended(value: &[u8]) -> bool {
    value.len() == TOMBSTONE_WITH_RECEIPT + 1 && value.last() == Some(&1)
}

/// When a tombstone may be forgotten.
pub(super) fn tombstone_until(value: &[u8]) -> Option<u64> {
    u64_of(value.get(..8)?)
}

/// The receipt a tombstone keeps for `mailbox`, if the talk was closed (not expired).
pub(super) fn tombstone_receipt(mailbox: MailboxId, value: &[u8]) -> Option<Receipt> {
    if value.len() != TOMBSTONE_WITH_RECEIPT && !tombstone_window_ended(value) {
        return None;
    }
    let signature: [u8; 64] = value.get(24..88)?.try_into().ok()?;
    Some(Receipt {
        mailbox,
        closed_at: u64_of(value.get(8..16)?)?,
        envelopes_deleted: u64_of(value.get(16..24)?)?,
        signature: Signature(signature),
    })
}

/// Takes out of a time index (expiries, schedule timers) every mailbox due by `now`.
fn take_due(index: &Mutex<BTreeSet<(u64, MailboxId)>>, now: u64) -> Vec<MailboxId> {
    let mut index = lock(index);
    let mut due = Vec::new();
    while let Some(&(at, id)) = index.first() {
        if at > now {
            break;
        }
        index.pop_first();
        due.push(id);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_keeps_a_receipt_and_its_expiry() {
        let receipt = Receipt {
            mailbox: MailboxId([3; 16]),
            closed_at: 1_700_000_000,
            envelopes_deleted: 9,
            signature: Signature([7; 64]),
        };
        let v = tombstone_value(1_700_090_000, Some(&receipt), false);
        assert_eq!(tombstone_until(&v), Some(1_700_090_000));
        assert_eq!(tombstone_receipt(MailboxId([3; 16]), &v), Some(receipt));
        assert!(!tombstone_window_ended(&v));
        let ended = tombstone_value(1_700_090_000, Some(&receipt), true);
        assert_eq!(tombstone_receipt(MailboxId([3; 16]), &ended), Some(receipt));
        assert!(tombstone_window_ended(&ended));
        let expired = tombstone_value(5, None, false);
        assert!(!tombstone_window_ended(&expired));
        assert_eq!(tombstone_until(&expired), Some(5));
        assert_eq!(tombstone_receipt(MailboxId([3; 16]), &expired), None);
        assert_eq!(tombstone_until(&[1, 2]), None);
    }
}

//! Group commit: one durable flush shared by every write queued while the previous
//! flush ran.
//!
//! Writers apply their change to the store, then queue a completion saying what it
//! needs: the envelope log ([`Durability::Log`], one `fdatasync`) or the sled store as
//! well ([`Durability::Store`]: sled flush + fdatasyncs). A dedicated thread (owned by
//! [`CommitQueue`], joined on drop) takes everything queued, makes it durable with at
//! most one of each, and then runs the completions in the order they were queued.
//!
//! The same thread unlinks dead log segments, after a sled flush: the records in them
//! were released by acks whose `h` (the mailbox's highest seq) must be on disk first,
//! or a restart could hand out their seqs again. Completions send the "stored" answers
//! and pushes ([`CommitQueue::answer`], straight to each connection's [`Outbox`]), so
//! nothing is acknowledged before it is on disk, and pushes of one mailbox leave in
//! the order their writes were queued.
//!
//! A flush that fails fails its completions: a sled failure those that needed sled,
//! a log failure all of them. A failed log sync also gives up every record appended
//! since the last good one, including records whose completion is only in the next
//! batch (`Log::sync`, `Log::is_lost`); a put's completion checks its own record and
//! undoes the put if it was given up (`engine::envelopes`). Such a writer takes a
//! [`Reservation`] before it writes, so its completion always runs here, after a
//! flush, even when shutdown begins in between — never inline under its locks.
//!
//! Acks are answered at once and their marks (each seat's highest acked seq) wait in
//! [`PendingMarks`]: they are written to sled just before a sled flush, and by the
//! sweeper once a second. A mark only has to be on disk before the records it
//! released disappear with their segment, which happens after a sled flush; a mark
//! lost in a crash before that costs nothing but a re-ack, since a member fetches
//! after its own cursor. Under load this replaces a sealed sled insert per ack with
//! one per seat per flush.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nook_proto::{ErrorCode, ErrorFrame, Outcome, Response};
use nook_vault::{Log, Namespace, Vault, VaultError};

use crate::outbox::{Outbox, Wire};

/// The sled key of a seat's ack mark in its mailbox's namespace: `a` ‖ seat.
pub fn ack_key(seat: u8) -> [u8; 2] {
    [b'a', seat]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ack marks not yet written to sled, the highest per (mailbox, seat).
#[derive(Default)]
pub struct PendingMarks {
    marks: Mutex<HashMap<(u64, u8), (Namespace, u64)>>,
    /// Held while marks are written, so that two writers (the commit thread and
    /// the sweeper) cannot put an older mark after a newer one.
    writing: Mutex<()>,
}

impl PendingMarks {
    /// Remembers that `seat` of `ns` has acked everything up to `mark`.
    pub fn note(&self, ns: &Namespace, seat: u8, mark: u64) {
        Self::merge(&mut lock(&self.marks), ns, seat, mark);
    }

    /// Keeps the higher of `mark` and what waits for (`ns`, `seat`).
    fn merge(
        marks: &mut HashMap<(u64, u8), (Namespace, u64)>,
        ns: &Namespace,
        seat: u8,
        mark: u64,
    ) {
        marks
            .entry((ns.number(), seat))
            .and_modify(|e| e.1 = e.1.max(mark))
            .or_insert_with(|| (ns.clone(), mark));
    }

    /// How many marks wait.
    pub fn len(&self) -> usize {
        lock(&self.marks).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every waiting mark to sled (not durably: a sled flush does that).
    /// Marks of mailboxes deleted meanwhile are dropped; on a storage error the
    /// marks not written wait for the next call.
    pub fn write(&self) -> Result<(), VaultError> {
        let _writing = lock(&self.writing);
        let taken = std::mem::take(&mut *lock(&self.marks));
        let mut failed = None;
        for ((_, seat), (ns, mark)) in taken {
            if failed.is_none() {
                match ns.put(&ack_key(seat), &mark.to_le_bytes()) {
                    Ok(()) | Err(VaultError::NamespaceDestroyed) => continue,
                    Err(e) => failed = Some(e),
                }
            }
            Self::merge(&mut lock(&self.marks), &ns, seat, mark);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for PendingMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingMarks")
            .field("waiting", &self.len())
            .finish_non_exhaustive()
    }
}

/// Runs after the flush that covers its write; gets whether the flush succeeded.
pub type Completion = Box<dyn FnOnce(bool) + Send>;

/// What a completion waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Appends to the envelope log.
    Log,
    /// Writes to the sled store (which may be queued before log appends of the same
    /// mailbox, so the log is synced too).
    Store,
}

struct State {
    queue: Vec<(Durability, Completion)>,
    stopping: bool,
    /// [`Reservation`]s taken and not yet queued: the thread does not stop while
    /// one is out, so that a write made under one is always answered by it.
    reserved: usize,
    flushes: u64,
    /// The commit thread waits for any write. `notify_one` is a futex syscall even
    /// with nobody waiting; under load the thread is mostly busy flushing, so writers
    /// wake it only when it actually sleeps (one syscall per batch, not per write).
    idle: bool,
    /// The commit thread lingers for a fuller batch: wake it once the batch is full.
    lingering: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The commit thread and its queue.
pub struct CommitQueue {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl CommitQueue {
    pub fn start(vault: Arc<Vault>, log: Arc<Log>, marks: Arc<PendingMarks>) -> CommitQueue {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                stopping: false,
                reserved: 0,
                flushes: 0,
                idle: false,
                lingering: false,
            }),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nook-commit".into())
            .spawn(move || run(s, vault, log, marks))
            .ok();
        CommitQueue {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// Queues `done` to run after the next durable flush. Once the queue is
    /// stopping, `done(false)` runs at once, on the caller's thread: a caller that
    /// holds a lock its completion takes uses a [`Reservation`] instead.
    pub fn after_durable(&self, durability: Durability, done: Completion) {
        let mut st = lock(&self.shared.state);
        if st.stopping {
            drop(st);
            done(false);
            return;
        }
        self.push(&mut st, durability, done);
    }

    /// A promise that a completion queued later will run on the commit thread,
    /// after a flush, even if shutdown begins meanwhile. `None` once the queue is
    /// stopping: the caller must then write nothing, since nothing would answer it.
    pub fn reserve(&self) -> Option<Reservation<'_>> {
        let mut st = lock(&self.shared.state);
        if st.stopping {
            return None;
        }
        st.reserved += 1;
        Some(Reservation {
            queue: self,
            used: false,
        })
    }

    fn push(&self, st: &mut State, durability: Durability, done: Completion) {
        st.queue.push((durability, done));
        if st.idle || (st.lingering && st.queue.len() >= LINGER_ENOUGH) {
            st.idle = false;
            st.lingering = false;
            self.shared.wake.notify_one();
        }
    }

    /// Answers request `id` on `to` with `response`, and sends `pushes`, once what was
    /// written so far is durable as `durability` says; if that flush fails, answers an
    /// error and sends no push. Until then the request counts as in flight on `to`.
    pub fn answer(
        &self,
        durability: Durability,
        to: &Outbox,
        id: u64,
        response: Response,
        pushes: Vec<(Outbox, Wire)>,
    ) {
        to.begin();
        let to = to.clone();
        self.after_durable(
            durability,
            Box::new(move |ok| {
                if ok {
                    to.reply(id, Outcome::Ok(response));
                    for (outbox, frame) in pushes {
                        outbox.send_wire(frame);
                    }
                } else {
                    tracing::debug!(code = ?ErrorCode::Internal, "refused after a failed flush");
                    to.reply(
                        id,
                        Outcome::Err(ErrorFrame::new(
                            ErrorCode::Internal,
                            "the relay could not store this; retry",
                        )),
                    );
                }
            }),
        );
    }

    /// [`CommitQueue::answer`] under a [`Reservation`], with the outcome and the
    /// pushes decided by `settle` on the commit thread from whether the flush
    /// succeeded (a put checks that its own record was not given up, and undoes
    /// itself if it was).
    pub fn answer_reserved(
        &self,
        reservation: Reservation<'_>,
        durability: Durability,
        to: &Outbox,
        id: u64,
        settle: impl FnOnce(bool) -> (Outcome, Vec<(Outbox, Wire)>) + Send + 'static,
    ) {
        to.begin();
        let to = to.clone();
        reservation.queue(
            durability,
            Box::new(move |ok| {
                let (outcome, pushes) = settle(ok);
                to.reply(id, outcome);
                for (outbox, frame) in pushes {
                    outbox.send_wire(frame);
                }
            }),
        );
    }

    /// Flushes performed so far (for statistics).
    pub fn flushes(&self) -> u64 {
        self.shared.state.lock().map(|s| s.flushes).unwrap_or(0)
    }

    /// Runs the remaining completions after a final flush and stops the thread.
    pub fn shutdown(&self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stopping = true;
        }
        self.shared.wake.notify_all();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// See [`CommitQueue::reserve`]. Dropped unused, it is given back.
pub struct Reservation<'a> {
    queue: &'a CommitQueue,
    /// Used by [`Reservation::queue`]: not to be given back on drop.
    used: bool,
}

impl Reservation<'_> {
    /// Queues `done`; it runs on the commit thread after the next flush.
    pub fn queue(mut self, durability: Durability, done: Completion) {
        self.used = true;
        let mut st = lock(&self.queue.shared.state);
        st.reserved -= 1;
        self.queue.push(&mut st, durability, done);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.used {
            return;
        }
        let mut st = lock(&self.queue.shared.state);
        st.reserved -= 1;
        if st.stopping {
            self.queue.shared.wake.notify_all();
        }
    }
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").finish_non_exhaustive()
    }
}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for CommitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitQueue").finish_non_exhaustive()
    }
}

/// Under load, how long the commit thread lingers for more writers before flushing.
const LINGER: Duration = Duration::from_micros(400);
/// A batch this large is flushed without lingering.
const LINGER_ENOUGH: usize = 256;
/// Lingering starts once the last flush covered this many writers: two or three at
/// once happen by chance at moderate load, and lingering for them only adds latency.
const LINGER_AFTER: usize = 8;

fn run(shared: Arc<Shared>, vault: Arc<Vault>, log: Arc<Log>, marks: Arc<PendingMarks>) {
    let mut last_batch = 0usize;
    loop {
        let batch = {
            let mut st = match shared.state.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            // Stopping, the thread still waits for every reservation to be queued.
            while st.queue.is_empty() && !(st.stopping && st.reserved == 0) {
                st.idle = true;
                st = match shared.wake.wait(st) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            st.idle = false;
            if st.queue.is_empty() {
                return;
            }
            // When the last flush covered several writers, more are on their way: a
            // short wait lets one flush (and its fdatasync) cover them all. A lone
            // writer (no load) is flushed at once, so idle latency does not grow.
            if last_batch >= LINGER_AFTER {
                let deadline = Instant::now() + LINGER;
                while st.queue.len() < LINGER_ENOUGH && !st.stopping {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st.lingering = true;
                    st = match shared.wake.wait_timeout(st, left) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                st.lingering = false;
            }
            std::mem::take(&mut st.queue)
        };
        last_batch = batch.len();
        let store = batch.iter().any(|(d, _)| *d == Durability::Store);
        let (store_result, log_result) = flush(&vault, &log, &marks, store);
        let (store_ok, log_ok) = (store_result.is_ok(), log_result.is_ok());
        if let Ok(mut st) = shared.state.lock() {
            st.flushes += 1;
        }
        // A log write does not wait for sled: a failed sled flush fails only the
        // writes that needed it.
        for (durability, done) in batch {
            done(match durability {
                Durability::Log => log_ok,
                Durability::Store => log_ok && store_ok,
            });
        }
    }
}

/// Syncs the log, and sled when `store` is asked for or a dead segment waits to be
/// unlinked; then unlinks the segments that were dead before the sled flush began.
pub fn make_durable(
    vault: &Vault,
    log: &Log,
    marks: &PendingMarks,
    store: bool,
) -> Result<(), VaultError> {
    let (store_result, log_result) = flush(vault, log, marks, store);
    store_result.and(log_result)
}

/// [`make_durable`], with the outcomes of the sled flush and of the log sync
/// apart. The log is synced even when sled fails; a failed log sync gives up
/// every record appended since the last good one (see [`Log::sync`]).
fn flush(
    vault: &Vault,
    log: &Log,
    marks: &PendingMarks,
    store: bool,
) -> (Result<(), VaultError>, Result<(), VaultError>) {
    // Dead segments first, marks after: every release that made a segment dead
    // noted its mark before it, so the flush below carries all of them.
    let dead = log.take_dead();
    let store_result = if store || !dead.is_empty() {
        marks.write().and_then(|()| vault.durable_flush())
    } else {
        Ok(())
    };
    if let Err(e) = &store_result {
        tracing::error!("durable flush failed: {e}");
    }
    let log_result = log.sync();
    if let Err(e) = &log_result {
        tracing::error!("log sync failed: {e}");
    }
    if store_result.is_err() || log_result.is_err() {
        log.keep_dead(dead);
    } else if !dead.is_empty()
        && let Err(e) = log.unlink_dead(dead)
    {
        // The records are released; only disk space waits for the next try.
        tracing::error!("removing a log segment failed: {e}");
    }
    (store_result, log_result)
}

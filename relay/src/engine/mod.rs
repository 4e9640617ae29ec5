//! The relay's mailbox engine: every operation of the protocol against the store,
//! with the talk state machine from `nook-proto` deciding what is allowed.
//!
//! Concurrency: a map of the mailboxes held in memory behind one short-held lock,
//! and one lock per mailbox. The map lock is never held while waiting for a mailbox
//! lock (eviction only tries one, see below), so the two cannot deadlock. Writes
//! happen under the mailbox lock and queue their answer on the [`CommitQueue`] while
//! still holding it, which keeps answers and pushes of one mailbox in seq order.
//!
//! Memory holds only the mailboxes in use: an idle talk lives in the store. A
//! mailbox is loaded from its namespace by the first operation that needs it
//! ([`Engine::mailbox`], under the map lock, so it is never loaded twice) and
//! evicted when that operation lets go of it, if it is idle: nobody else holds it
//! (no other operation, no put completion waiting for the disk: the map's `Arc` is
//! the only one), nobody is subscribed to it, and it holds no envelope (so its
//! seqs, acks and quota live in sled as memory had them: see `Mailbox::is_idle`).
//! What stays in memory for an idle talk is one entry of `expiries` for the
//! sweeper, its namespace's key slot in the vault, and its welcome bytes in the
//! storage quota's total.
//!
//! Storage (one vault namespace per mailbox, id `"mailbox/" ‖ mailbox id`; every value
//! sealed under that mailbox's key):
//!
//! | key               | value |
//! |-------------------|-------|
//! | `m`               | `MailboxMeta` (mailbox id and talk state) |
//! | `h`               | highest seq assigned (u64 LE) |
//! | `a` ‖ seat        | the seat's ack watermark (u64 LE; written before sled flushes, see `commit`) |
//! | `w` ‖ seat        | the welcome blob of a free seat (kept until its member's first stored put) |
//!
//! Envelopes are not in sled: each is an `EnvRecord`, sealed by the mailbox's namespace
//! under the entry key `e` ‖ seq (u64 BE), appended to the vault's [`Log`] (a copy into
//! memory; one `pwrite` and one `fdatasync` per group commit). sled's batches cost two
//! synchronous log writes each, which made it the relay's bottleneck. Memory holds where
//! each live envelope is; a record is released when every recipient has acked it or the
//! mailbox ends, and the log unlinks a segment once all its records are released.
//! Because a seq must never be reused, `h` is rewritten whenever envelopes are deleted
//! (and at recovery when the log knows a higher seq), and the commit thread makes sled
//! durable before it unlinks a segment. The one exception is a seq nobody was told
//! of: a put whose record a failed sync gave up is undone, and if it was the newest,
//! its seq is handed out again (`Mailbox::undo_put`). Until a put is durable its
//! envelope counts against the quota but is not served, acked or compacted.
//!
//! Tombstones live in their own namespace, keyed by the vault's keyed hash of the
//! mailbox id, valued by their expiry: nothing else of a closed talk remains.
//!
//! # Layout
//!
//! - this file: [`Engine`], [`Engine::open`], its accessors, the limits and the helpers
//!   every operation shares. Start here.
//! - `mailbox`: one mailbox in memory, and the records it keeps in the store.
//! - `membership`: who holds a seat, and a mailbox's life: create, join, auth,
//!   subscribe, leave, close.
//! - `envelopes`: put, fetch, ack.
//! - `recovery`: finding every mailbox's expiry and the envelope log at start-up
//!   (only the mailboxes holding envelopes are loaded).
//! - `sweep`: expiry, log compaction, tombstones, and destroying a mailbox.
//! - `retire`: the key rotation history and the relay's retirement.
//! - `space`: the storage quota and the disk reserve (what is refused when the relay
//!   holds too much or its disk fills, and why acks and closes never are).
//! - `boards`: listings, seat requests and answers (spec §17), in the listed mailbox's
//!   namespace.

mod boards;
mod envelopes;
mod mailbox;
mod membership;
mod recovery;
mod retire;
mod space;
mod sweep;

pub use space::{DEFAULT_DISK_RESERVE_BYTES, DEFAULT_MAX_STORED_BYTES, RESERVE_FILE};

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nook_crypto::auth::RelayIdentity;
use nook_proto::limits::{
    DEFAULT_MAX_BYTES_PER_MAILBOX, DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
    DEFAULT_MAX_MAILBOXES_PER_CONNECTION, DEFAULT_REQUESTS_PER_SECOND, MAX_TTL_SECS,
};
use nook_proto::{ErrorCode, ErrorDetail, ErrorFrame, MailboxId, Response, TalkError};
use nook_vault::{Log, Namespace, Vault, VaultError, log::DEFAULT_SEGMENT_BYTES};

use crate::clock::Clock;
use crate::commit::{CommitQueue, Durability, PendingMarks};
use crate::outbox::{Outbox, QueueBudget, Wire};
use mailbox::Mailbox;

pub use boards::AskBudget;

/// How long past a talk's end the relay still answers "closed" for it.
pub const TOMBSTONE_GRACE_SECS: u64 = 24 * 3600;
const TOMBSTONES: &[u8] = b"relay/tombstones";

/// Bytes queued for one slow connection before it is dropped: about twenty full
/// `Envelopes` answers, or 128 pushes of the largest envelope.
pub const DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION: usize = 16 << 20;
/// Bytes queued for all connections together.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 1 << 30;

/// Operator-tunable limits (defaults from `nook_proto::limits`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_envelopes_per_mailbox: u64,
    pub max_bytes_per_mailbox: u64,
    pub max_mailboxes_per_connection: usize,
    pub requests_per_second: u32,
    /// Longest time-to-live, in seconds, a new talk may ask for (at most the protocol's
    /// `MAX_TTL_SECS`); a `Create` asking more is refused with `BadRequest`.
    pub max_ttl_secs: u32,
    /// Requests of one connection awaiting a durable answer before it stops reading.
    pub max_in_flight: usize,
    /// Bytes of answers and pushes queued for one connection (not yet taken by
    /// quinn) before it is dropped as too slow.
    pub max_queued_bytes_per_connection: usize,
    /// Bytes queued for all connections together; past it the connections holding
    /// the most are dropped.
    pub max_queued_bytes: usize,
    /// Size at which the envelope log starts a new segment file.
    pub log_segment_bytes: u64,
    /// Envelope and welcome bytes held for all talks together; past it `Create` and
    /// `Put` are refused with `StorageFull`.
    pub max_stored_bytes: u64,
    /// Free disk kept for the writes that free space (acks, leaves, closes, expiry):
    /// below it `Create`, `Join` and `Put` are refused with `StorageFull`; also held
    /// in the store's `reserve` file while there is room. `0` turns it off.
    pub disk_reserve_bytes: u64,
    /// Live listings one board may hold, and the whole relay (spec §17.3).
    pub max_listings_per_board: usize,
    pub max_listings: usize,
    /// Requests (waiting or answered) one listing may hold.
    pub max_requests_per_listing: usize,
    /// `Ask`s one connection may send per minute (token bucket).
    pub asks_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_envelopes_per_mailbox: DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
            max_bytes_per_mailbox: DEFAULT_MAX_BYTES_PER_MAILBOX,
            max_mailboxes_per_connection: DEFAULT_MAX_MAILBOXES_PER_CONNECTION,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            max_ttl_secs: MAX_TTL_SECS,
            max_in_flight: 1024,
            max_queued_bytes_per_connection: DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            log_segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_stored_bytes: DEFAULT_MAX_STORED_BYTES,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            max_listings_per_board: nook_proto::limits::DEFAULT_MAX_LISTINGS_PER_BOARD,
            max_listings: nook_proto::limits::DEFAULT_MAX_LISTINGS,
            max_requests_per_listing: nook_proto::limits::DEFAULT_MAX_REQUESTS_PER_LISTING,
            asks_per_minute: nook_proto::limits::DEFAULT_ASKS_PER_MINUTE,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("stored mailbox data is corrupt: {0}")]
    Corrupt(String),
}

/// Running totals, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub envelopes_stored: AtomicU64,
    pub envelopes_deleted: AtomicU64,
    /// Envelopes handed to members: pushed to a subscribed connection, or in a
    /// `Fetch` answer (an envelope fetched again after a reconnect counts again).
    pub envelopes_delivered: AtomicU64,
    pub mailboxes_created: AtomicU64,
    pub mailboxes_deleted: AtomicU64,
}

/// What the relay holds for one mailbox: counts only (for tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The highest seq handed out (a put still in flight may give it back).
    pub head: u64,
    /// The highest seq stored durably and answered `Stored`.
    pub durable: u64,
    /// Envelopes held, and their body bytes (what the quotas count).
    pub envelopes: u64,
    pub bytes: u64,
    /// Free or just-taken seats whose welcome is still kept.
    pub welcomes: u32,
}

/// The mailbox engine.
pub struct Engine {
    vault: Arc<Vault>,
    log: Arc<Log>,
    identity: RelayIdentity,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// The mailboxes in memory (in use, or holding envelopes); the others are
    /// loaded from the store on demand (module docs).
    mailboxes: Mutex<HashMap<MailboxId, Arc<Mutex<Mailbox>>>>,
    /// (expiry, mailbox) of every live mailbox, so a sweep touches only what is due,
    /// and retirement finds every talk. A destroyed mailbox's entry goes with it.
    expiries: Mutex<BTreeSet<(u64, MailboxId)>>,
    /// (time, mailbox) of each scheduled talk's opening time and window end, for the
    /// sweep's `tick` (spec §20.1). A destroyed mailbox's entries go with it.
    timers: Mutex<BTreeSet<(u64, MailboxId)>>,
    /// Live mailboxes, in memory or not.
    live: AtomicUsize,
    /// Sweeps since tombstones were last purged.
    sweeps: AtomicU64,
    tombstones: Namespace,
    /// Ack marks waiting for the next sled flush or sweep (see `commit`).
    marks: Arc<PendingMarks>,
    commit: CommitQueue,
    /// Bytes queued for clients, shared by every connection's outbox.
    queues: Arc<QueueBudget>,
    /// The storage quota and the disk reserve.
    space: Arc<space::Space>,
    pub stats: Arc<Stats>,
    /// Key rotation history and retirement (`retire`).
    life: retire::RelayLife,
    /// Listings and seat requests (`boards`); locked after a mailbox, never before.
    boards: Mutex<boards::Boards>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mailboxes", &self.mailbox_count())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the store in `dir` and recovers every mailbox in it.
    pub fn open(
        dir: &Path,
        identity: RelayIdentity,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<Engine, EngineError> {
        let life = retire::RelayLife::load(dir, &identity)?;
        // First: on a nearly full disk it gives the reserve up, so that what follows
        // (and every ack after it) can write.
        let space = Arc::new(space::Space::open(
            dir,
            limits.disk_reserve_bytes,
            limits.max_stored_bytes,
        ));
        let vault = Arc::new(Vault::open(dir)?);
        let tombstones = match vault.namespace(TOMBSTONES)? {
            Some(ns) => ns,
            None => vault.create_namespace(TOMBSTONES)?,
        };
        let recovered = recovery::recover(dir, &vault, &tombstones, limits.log_segment_bytes)?;
        let log = Arc::new(recovered.log);
        let mailboxes: HashMap<MailboxId, Arc<Mutex<Mailbox>>> = recovered
            .resident
            .into_iter()
            .map(|(id, mb)| (id, Arc::new(Mutex::new(mb))))
            .collect();
        let boards = boards::Boards::load(recovered.boards)?;
        let live = recovered.expiries.len();
        tracing::info!(
            mailboxes = live,
            in_memory = mailboxes.len(),
            "store recovered"
        );
        space.set_welcomes(recovered.welcome_bytes);
        let expiries = recovered.expiries;
        let timers = recovered.timers;
        let marks = Arc::new(PendingMarks::default());
        let commit = CommitQueue::start(vault.clone(), log.clone(), marks.clone());
        let queues = Arc::new(QueueBudget::new(
            limits.max_queued_bytes_per_connection,
            limits.max_queued_bytes,
        ));
        Ok(Engine {
            vault,
            log,
            identity,
            clock,
            limits,
            mailboxes: Mutex::new(mailboxes),
            expiries: Mutex::new(expiries),
            timers: Mutex::new(timers),
            live: AtomicUsize::new(live),
            sweeps: AtomicU64::new(0),
            tombstones,
            marks,
            commit,
            queues,
            space,
            stats: Arc::default(),
            life,
            boards: Mutex::new(boards),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn identity(&self) -> &RelayIdentity {
        &self.identity
    }
    pub fn now(&self) -> u64 {
        self.clock.now()
    }
    /// Live mailboxes, in memory or not.
    pub fn mailbox_count(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
    /// Mailboxes held in memory now (in use, subscribed to, or holding envelopes);
    /// the others are in the store only.
    pub fn resident_count(&self) -> usize {
        lock(&self.mailboxes).len()
    }
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }
    pub fn size_on_disk(&self) -> u64 {
        self.vault.size_on_disk().unwrap_or(0) + self.log.stats().bytes
    }
    /// Bytes queued for clients, their bounds, and the connections dropped as
    /// too slow.
    pub fn queues(&self) -> &Arc<QueueBudget> {
        &self.queues
    }

    /// Envelope and welcome bytes held for all talks together (what the storage
    /// quota counts).
    pub fn stored_bytes(&self) -> u64 {
        self.log.stats().live_bytes + self.space.welcomes()
    }

    /// The storage quota, in bytes.
    pub fn max_stored_bytes(&self) -> u64 {
        self.space.quota()
    }

    /// Ack marks not yet written to sled.
    pub fn pending_marks(&self) -> usize {
        self.marks.len()
    }

    /// What the relay holds for `mailbox`, if it holds the mailbox (loading it from
    /// the store if it is not in memory).
    pub fn held(&self, mailbox: &MailboxId) -> Option<Held> {
        let arc = self.mailbox(mailbox).ok()?;
        let mb = lock(&arc);
        Some(Held {
            head: mb.head,
            durable: mb.durable,
            envelopes: mb.envelopes.len() as u64,
            bytes: mb.bytes,
            welcomes: mb.welcomes.count_ones(),
        })
    }

    /// Makes the next `n` envelope-log syncs fail after writing, as a full or
    /// failing disk would (`0` ends it): for tests of what a failed write undoes.
    /// Never call it on a relay that serves anyone.
    pub fn dangerous_fail_log_syncs(&self, n: u64) {
        self.log.dangerous_fail_syncs(n);
    }

    /// Segments, bytes and live records of the envelope log.
    pub fn log_stats(&self) -> nook_vault::LogStats {
        self.log.stats()
    }

    /// Makes everything written so far durable and removes dead log segments
    /// (shutdown; tests).
    pub fn flush(&self) -> Result<(), VaultError> {
        crate::commit::make_durable(&self.vault, &self.log, &self.marks, true)
    }

    /// Stops the commit thread after answering what is queued.
    pub fn shutdown(&self) {
        self.commit.shutdown();
    }

    /// Mailbox `id`, loaded from the store if it is not in memory; evicted again
    /// when the handle is dropped, if it is idle then. A closed or unknown
    /// mailbox's error is what the client is answered.
    fn mailbox(&self, id: &MailboxId) -> Result<MailboxRef<'_>, ErrorFrame> {
        match self.resident(id) {
            Ok(Some(arc)) => {
                return Ok(MailboxRef {
                    engine: self,
                    id: *id,
                    arc,
                });
            }
            Ok(None) => {}
            Err(e) => return Err(storage_err(e)),
        }
        let hashed = self.vault.index_hash(&id.0);
        match self.tombstones.get(&hashed) {
            Ok(Some(value)) => {
                let frame = err(ErrorCode::MailboxClosed, "the talk was closed or expired");
                Err(match sweep::tombstone_receipt(*id, &value) {
                    Some(receipt) => frame.with_detail(ErrorDetail::Closed(Box::new(receipt))),
                    None => frame,
                })
            }
            Ok(None) => Err(err(ErrorCode::UnknownMailbox, "no such talk on this relay")),
            Err(e) => Err(storage_err(e)),
        }
    }

    /// Whether `id` is a scheduled talk the relay closed at the end of its window
    /// (its tombstone says so).
    fn ended_by_window(&self, id: &MailboxId) -> bool {
        let hashed = self.vault.index_hash(&id.0);
        matches!(self.tombstones.get(&hashed), Ok(Some(v)) if sweep::tombstone_window_ended(&v))
    }

    /// Mailbox `id` in memory, loaded from its namespace first if need be; `None`
    /// if the store has no such live mailbox.
    fn resident(&self, id: &MailboxId) -> Result<Option<Arc<Mutex<Mailbox>>>, VaultError> {
        // Loaded under the map lock, so that two operations never load two copies.
        let mut map = lock(&self.mailboxes);
        if let Some(m) = map.get(id) {
            return Ok(Some(m.clone()));
        }
        let Some(ns) = self.vault.namespace(&mailbox::ns_id(id))? else {
            return Ok(None);
        };
        let mb = match recovery::load_mailbox(&ns) {
            Ok(Some(mb)) if mb.id == *id => mb,
            Ok(_) => return Ok(None),
            Err(e) => {
                return Err(VaultError::Corrupt {
                    what: e.to_string(),
                });
            }
        };
        let arc = Arc::new(Mutex::new(mb));
        map.insert(*id, arc.clone());
        Ok(Some(arc))
    }

    /// Drops mailbox `id` from memory if it is idle (module docs) and nobody but
    /// the map and `mine` (the caller's own handle, if any) holds it. Never waits
    /// for its lock: under the map lock nobody else can get the `Arc`, so nobody
    /// else can hold its lock, and the `try_lock` only guards against a bug.
    fn evict_if_idle(&self, id: &MailboxId, mine: Option<&Arc<Mutex<Mailbox>>>) {
        let mut map = lock(&self.mailboxes);
        let Some(arc) = map.get(id) else {
            return;
        };
        let holders = match mine {
            Some(m) if Arc::ptr_eq(m, arc) => 2,
            _ => 1,
        };
        if Arc::strong_count(arc) != holders {
            return;
        }
        let idle = match arc.try_lock() {
            Ok(mb) => mb.is_idle(),
            Err(_) => false,
        };
        if idle {
            map.remove(id);
        }
    }

    /// Drops every idle mailbox from memory (the sweeper's turn: a put completion
    /// lets go of its mailbox without evicting it).
    pub fn evict_idle(&self) -> usize {
        let ids: Vec<MailboxId> = lock(&self.mailboxes).keys().copied().collect();
        let before = self.resident_count();
        for id in ids {
            self.evict_if_idle(&id, None);
        }
        before.saturating_sub(self.resident_count())
    }

    /// Answers `response` (and sends `pushes`) once the store's writes so far are durable.
    fn later(&self, outbox: &Outbox, id: u64, response: Response, pushes: Vec<(Outbox, Wire)>) {
        self.commit
            .answer(Durability::Store, outbox, id, response, pushes);
    }
}

/// A mailbox in use by one operation: evicted from memory when dropped, if idle.
struct MailboxRef<'a> {
    engine: &'a Engine,
    id: MailboxId,
    arc: Arc<Mutex<Mailbox>>,
}

impl std::ops::Deref for MailboxRef<'_> {
    type Target = Arc<Mutex<Mailbox>>;
    fn deref(&self) -> &Arc<Mutex<Mailbox>> {
        &self.arc
    }
}

impl Drop for MailboxRef<'_> {
    fn drop(&mut self) {
        // Every guard of this handle's lock is gone by now (they borrow it).
        self.engine.evict_if_idle(&self.id, Some(&self.arc));
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(code, message)
}

fn talk_err(e: TalkError) -> ErrorFrame {
    e.frame()
}

fn storage_err(e: VaultError) -> ErrorFrame {
    if nook_vault::log::is_disk_full(&e) {
        tracing::warn!("storage error: {e}");
        return space::disk_full();
    }
    tracing::error!("storage error: {e}");
    err(
        ErrorCode::Internal,
        "the relay's storage failed; retry later",
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock would be a bug; the data under it is still
    // consistent at every await-free step, so keep serving rather than crash.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

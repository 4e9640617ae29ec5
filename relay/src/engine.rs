//! The relay's mailbox engine: every operation of the protocol against the store,
//! with the talk state machine from `nook-proto` deciding what is allowed.
//!
//! Concurrency: a map of mailboxes behind one short-held lock, and one lock per
//! mailbox. The map lock is never held while a mailbox lock is taken, so the two
//! cannot deadlock. Writes happen under the mailbox lock and queue their answer on the
//! [`CommitQueue`] while still holding it, which keeps answers and pushes of one
//! mailbox in seq order.
//!
//! Storage (one vault namespace per mailbox, id `"mailbox/" ‖ mailbox id`; every value
//! sealed under that mailbox's key):
//!
//! | key               | value |
//! |-------------------|-------|
//! | `m`               | `MailboxMeta` (mailbox id and talk state) |
//! | `h`               | highest seq assigned (u64 LE) |
//! | `a` ‖ seat        | the seat's ack watermark (u64 LE; written before sled flushes, see `commit`) |
//! | `w` ‖ seat        | the welcome blob of a free seat |
//!
//! Envelopes are not in sled: each is an `EnvRecord`, sealed by the mailbox's namespace
//! under the entry key `e` ‖ seq (u64 BE), appended to the vault's [`Log`] (a copy into
//! memory; one `pwrite` and one `fdatasync` per group commit). sled's batches cost two
//! synchronous log writes each, which made it the relay's bottleneck. Memory holds where
//! each live envelope is; a record is released when every recipient has acked it or the
//! mailbox ends, and the log unlinks a segment once all its records are released.
//! Because a seq must never be reused, `h` is rewritten whenever envelopes are deleted
//! (and at recovery when the log knows a higher seq), and the commit thread makes sled
//! durable before it unlinks a segment.
//!
//! Tombstones live in their own namespace, keyed by the vault's keyed hash of the
//! mailbox id, valued by their expiry: nothing else of a closed talk remains.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bincode::{Decode, Encode};
use bytes::Bytes;
use nook_crypto::auth::{AuthOp, RelayIdentity, params_digest, verify_relay_auth};
use nook_crypto::kdf::sha256;
use nook_proto::codec::{decode_body, encode_frame, encode_value, encode_value_into};
use nook_proto::limits::{
    DEFAULT_MAX_BYTES_PER_MAILBOX, DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
    DEFAULT_MAX_MAILBOXES_PER_CONNECTION, DEFAULT_REQUESTS_PER_SECOND, MAX_FAREWELL,
    MAX_FETCH_BYTES, MAX_FETCH_ENVELOPES, PADDING_BUCKETS,
};
use nook_proto::talk::{Lifecycle, Talk};
use nook_proto::{
    Close, Create, Envelope, EnvelopeKind, ErrorCode, ErrorFrame, Join, MailboxId, MemberKey,
    Outcome, Push, Put, Response, Seq, ServerFrame, Signature, TalkError, TalkStatus, TokenHash,
};
use nook_vault::{Loc, Log, Namespace, Vault, VaultError, log::DEFAULT_SEGMENT_BYTES};
use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::commit::{CommitQueue, Durability, PendingMarks};

const K_META: &[u8] = b"m";
const K_HEAD: &[u8] = b"h";
const TOMBSTONES: &[u8] = b"relay/tombstones";
const MAILBOX_PREFIX: &[u8] = b"mailbox/";
/// Sweeps between two purges of expired tombstones.
const TOMBSTONE_PURGE_EVERY: u64 = 60;
/// How long past a talk's end the relay still answers "closed" for it.
pub const TOMBSTONE_GRACE_SECS: u64 = 24 * 3600;

/// Operator-tunable limits (defaults from `nook_proto::limits`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_envelopes_per_mailbox: u64,
    pub max_bytes_per_mailbox: u64,
    pub max_mailboxes_per_connection: usize,
    pub requests_per_second: u32,
    /// Requests of one connection awaiting a durable answer before it stops reading.
    pub max_in_flight: usize,
    /// Size at which the envelope log starts a new segment file.
    pub log_segment_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_envelopes_per_mailbox: DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
            max_bytes_per_mailbox: DEFAULT_MAX_BYTES_PER_MAILBOX,
            max_mailboxes_per_connection: DEFAULT_MAX_MAILBOXES_PER_CONNECTION,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            max_in_flight: 1024,
            log_segment_bytes: DEFAULT_SEGMENT_BYTES,
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

/// One server frame as it goes on the wire (header and body). Frames are encoded
/// where they are made, so a push to several connections is encoded once and shared,
/// and an outbox slot is one `Bytes` rather than a whole `ServerFrame`.
pub type Wire = Bytes;

/// `frame` encoded for the wire, in a buffer of exactly its size. `None` only for a
/// frame past the codec's size limit, which the engine never builds.
pub fn wire(frame: &ServerFrame) -> Option<Wire> {
    match encode_frame(frame) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(e) => {
            tracing::error!("could not encode a frame for a client: {e}");
            None
        }
    }
}

/// The pushes of one operation: `push` encoded once, for each of `to`.
fn pushes_of(to: impl Iterator<Item = Peer>, push: Push) -> Vec<(Peer, Wire)> {
    let mut to = to.peekable();
    // Nobody to push to: not even encoded.
    if to.peek().is_none() {
        return Vec::new();
    }
    match wire(&ServerFrame::Push(push)) {
        Some(frame) => to.map(|p| (p, frame.clone())).collect(),
        None => Vec::new(),
    }
}

/// The way back to one connection: its outbox and a switch to drop it.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: u64,
    outbox: mpsc::Sender<Wire>,
    killed: Arc<(AtomicBool, Notify)>,
    in_flight: Arc<(AtomicU64, Notify)>,
}

impl Peer {
    pub fn new(id: u64, outbox: mpsc::Sender<Wire>) -> Peer {
        Peer {
            id,
            outbox,
            killed: Arc::new((AtomicBool::new(false), Notify::new())),
            in_flight: Arc::new((AtomicU64::new(0), Notify::new())),
        }
    }

    /// Queues a frame; a peer whose queue is full is too slow and is dropped rather
    /// than allowed to grow the relay's memory.
    pub fn send(&self, frame: &ServerFrame) {
        if let Some(frame) = wire(frame) {
            self.send_wire(frame);
        }
    }

    /// [`Peer::send`] of a frame already encoded.
    pub fn send_wire(&self, frame: Wire) {
        if self.outbox.try_send(frame).is_err() {
            self.kill();
        }
    }

    pub fn kill(&self) {
        self.killed.0.store(true, Ordering::SeqCst);
        self.killed.1.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.0.load(Ordering::SeqCst)
    }

    /// Resolves when [`Peer::kill`] was called.
    pub async fn killed(&self) {
        if self.is_killed() {
            return;
        }
        self.killed.1.notified().await;
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.0.load(Ordering::SeqCst)
    }

    /// Resolves when an in-flight request completed.
    pub async fn in_flight_changed(&self) {
        self.in_flight.1.notified().await;
    }

    fn begin(&self) {
        self.in_flight.0.fetch_add(1, Ordering::SeqCst);
    }

    fn reply(&self, id: u64, result: Outcome) {
        self.send(&ServerFrame::Response { id, result });
        self.in_flight.0.fetch_sub(1, Ordering::SeqCst);
        self.in_flight.1.notify_one();
    }
}

/// Running totals, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub envelopes_stored: AtomicU64,
    pub envelopes_deleted: AtomicU64,
    pub mailboxes_created: AtomicU64,
    pub mailboxes_deleted: AtomicU64,
}

#[derive(Encode, Decode)]
struct MailboxMeta {
    mailbox: MailboxId,
    talk: Talk,
}

#[derive(Encode, Decode)]
struct EnvRecord {
    kind: EnvelopeKind,
    stored_at: u64,
    /// Bit `s` set: seat `s` must ack before the envelope is deleted.
    recipients: u64,
    body: Vec<u8>,
}

struct EnvMeta {
    recipients: u64,
    len: u64,
    loc: Loc,
}

struct Subscriber {
    peer: Peer,
    seat: u8,
}

struct Mailbox {
    id: MailboxId,
    ns: Namespace,
    talk: Talk,
    head: u64,
    /// The `h` last written to sled (what a restart finds there).
    head_stored: u64,
    envelopes: BTreeMap<u64, EnvMeta>,
    acked: HashMap<u8, u64>,
    bytes: u64,
    subscribers: Vec<Subscriber>,
    /// Seats whose welcome is still stored: kept after the join until that member's
    /// first `Put`, so a join whose answer was lost can be retried.
    welcomes: u64,
}

/// Segments compacted per sweep at most.
const COMPACT_PER_SWEEP: usize = 4;

/// The mailbox engine.
pub struct Engine {
    vault: Arc<Vault>,
    log: Arc<Log>,
    identity: RelayIdentity,
    clock: Arc<dyn Clock>,
    limits: Limits,
    mailboxes: Mutex<HashMap<MailboxId, Arc<Mutex<Mailbox>>>>,
    /// (expiry, mailbox) of every live mailbox, so a sweep touches only what is due.
    /// Entries of mailboxes closed early are skipped when they come up.
    expiries: Mutex<BTreeSet<(u64, MailboxId)>>,
    /// Sweeps since tombstones were last purged.
    sweeps: AtomicU64,
    tombstones: Namespace,
    /// Ack marks waiting for the next sled flush or sweep (see `commit`).
    marks: Arc<PendingMarks>,
    commit: CommitQueue,
    pub stats: Stats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mailboxes", &self.mailbox_count())
            .finish_non_exhaustive()
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::new(code, message)
}

fn talk_err(e: TalkError) -> ErrorFrame {
    e.frame()
}

fn storage_err(e: VaultError) -> ErrorFrame {
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

fn env_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn welcome_key(seat: u8) -> [u8; 2] {
    [b'w', seat]
}

fn ns_id(mailbox: &MailboxId) -> Vec<u8> {
    [MAILBOX_PREFIX, &mailbox.0].concat()
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl Mailbox {
    fn status(&self) -> TalkStatus {
        self.talk.status()
    }

    fn save_meta(&self) -> Result<(), VaultError> {
        let meta = MailboxMeta {
            mailbox: self.id,
            talk: self.talk.clone(),
        };
        let bytes = encode_value(&meta).map_err(|e| VaultError::Corrupt {
            what: format!("encoding mailbox: {e}"),
        })?;
        self.ns.put(K_META, &bytes)
    }

    fn push_all(&self, push: Push, except: Option<u64>) {
        let to = self
            .subscribers
            .iter()
            .filter(|s| Some(s.peer.id) != except);
        for (p, frame) in pushes_of(to.map(|s| s.peer.clone()), push) {
            p.send_wire(frame);
        }
    }

    /// Deletes every envelope in `(from, to]` that no remaining recipient still
    /// needs. Returns how many were deleted.
    fn collect(&mut self, log: &Log, from: u64, to: u64) -> Result<u64, VaultError> {
        let members: u64 = self
            .talk
            .members()
            .iter()
            .fold(0, |m, x| m | (1u64 << x.seat));
        let mut done = Vec::new();
        for (seq, meta) in self.envelopes.range(from.saturating_add(1)..=to) {
            let waiting = meta.recipients & members;
            let all_acked = (0..64u8)
                .filter(|s| waiting & (1u64 << s) != 0)
                .all(|s| self.acked.get(&s).copied().unwrap_or(0) >= *seq);
            if all_acked {
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

    /// Reads envelope `seq` back from the log.
    fn load(&self, log: &Log, seq: u64, loc: Loc) -> Result<EnvRecord, VaultError> {
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

impl Engine {
    /// Opens the store in `dir` and recovers every mailbox in it.
    pub fn open(
        dir: &Path,
        identity: RelayIdentity,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<Engine, EngineError> {
        let vault = Arc::new(Vault::open(dir)?);
        let tombstones = match vault.namespace(TOMBSTONES)? {
            Some(ns) => ns,
            None => vault.create_namespace(TOMBSTONES)?,
        };
        let namespaces: Vec<Namespace> = vault
            .namespaces()?
            .into_iter()
            .filter(|ns| ns.hashed_id() != tombstones.hashed_id())
            .collect();
        // Loading is sled reads, one namespace at a time: spread over the cores, a
        // restart of a million mailboxes takes a fraction of the time.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let per_thread = namespaces.len().div_ceil(threads).max(1);
        let loaded: Vec<Result<Vec<Mailbox>, EngineError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = namespaces
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|ns| load_mailbox(ns).transpose())
                            .collect::<Result<Vec<Mailbox>, EngineError>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(EngineError::Corrupt(
                            "a thread loading the mailboxes panicked (the store was only \
                             read, nothing changed); start the relay again, and report it \
                             if it repeats"
                                .into(),
                        ))
                    })
                })
                .collect()
        });
        let mut mailboxes: HashMap<MailboxId, Mailbox> = HashMap::with_capacity(namespaces.len());
        let mut stored_heads: HashMap<MailboxId, u64> = HashMap::new();
        for part in loaded {
            for mb in part? {
                mailboxes.insert(mb.id, mb);
            }
        }
        for mb in mailboxes.values() {
            stored_heads.insert(mb.id, mb.head);
        }
        let log = Arc::new(recover_log(dir, limits.log_segment_bytes, &mut mailboxes)?);
        // The log can know a higher seq than `h` (an `h` write lost in a crash). Store it
        // before the first flush: that flush precedes the unlinking of the segments that
        // recovery found dead, after which only `h` remembers those seqs.
        for mb in mailboxes.values_mut() {
            if stored_heads.get(&mb.id).is_some_and(|h| mb.head > *h) {
                mb.ns.put(K_HEAD, &mb.head.to_le_bytes())?;
                mb.head_stored = mb.head;
            }
        }
        let mailboxes: HashMap<MailboxId, Arc<Mutex<Mailbox>>> = mailboxes
            .into_iter()
            .map(|(id, mb)| (id, Arc::new(Mutex::new(mb))))
            .collect();
        tracing::info!(mailboxes = mailboxes.len(), "store recovered");
        let expiries = mailboxes
            .iter()
            .map(|(id, mb)| (lock(mb).talk.expires_at(), *id))
            .collect();
        let marks = Arc::new(PendingMarks::default());
        let commit = CommitQueue::start(vault.clone(), log.clone(), marks.clone());
        Ok(Engine {
            vault,
            log,
            identity,
            clock,
            limits,
            mailboxes: Mutex::new(mailboxes),
            expiries: Mutex::new(expiries),
            sweeps: AtomicU64::new(0),
            tombstones,
            marks,
            commit,
            stats: Stats::default(),
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
    pub fn mailbox_count(&self) -> usize {
        lock(&self.mailboxes).len()
    }
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }
    pub fn size_on_disk(&self) -> u64 {
        self.vault.size_on_disk().unwrap_or(0) + self.log.stats().bytes
    }
    /// Ack marks not yet written to sled.
    pub fn pending_marks(&self) -> usize {
        self.marks.len()
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

    fn mailbox(&self, id: &MailboxId) -> Result<Arc<Mutex<Mailbox>>, ErrorFrame> {
        if let Some(m) = lock(&self.mailboxes).get(id) {
            return Ok(m.clone());
        }
        let hashed = self.vault.index_hash(&id.0);
        match self.tombstones.get(&hashed) {
            Ok(Some(_)) => Err(err(
                ErrorCode::MailboxClosed,
                "the talk was closed or expired",
            )),
            Ok(None) => Err(err(ErrorCode::UnknownMailbox, "no such talk on this relay")),
            Err(e) => Err(storage_err(e)),
        }
    }

    /// Answers `response` (and sends `pushes`) once the store's writes so far are durable.
    fn later(&self, peer: &Peer, id: u64, response: Response, pushes: Vec<(Peer, Wire)>) {
        self.later_as(Durability::Store, peer, id, response, pushes);
    }

    fn later_as(
        &self,
        durability: Durability,
        peer: &Peer,
        id: u64,
        response: Response,
        pushes: Vec<(Peer, Wire)>,
    ) {
        peer.begin();
        let peer = peer.clone();
        self.commit.after_durable(
            durability,
            Box::new(move |ok| {
                if ok {
                    peer.reply(id, Outcome::Ok(response));
                    for (p, frame) in pushes {
                        p.send_wire(frame);
                    }
                } else {
                    peer.reply(
                        id,
                        Outcome::Err(err(
                            ErrorCode::Internal,
                            "the relay could not store this; retry",
                        )),
                    );
                }
            }),
        );
    }

    /// `Create`: verifies the owner's signature, stores the mailbox and answers once
    /// it is durable. Returns the new mailbox for the connection's auth table.
    pub fn create(
        &self,
        peer: &Peer,
        id: u64,
        challenge: &[u8; 32],
        req: Create,
    ) -> Result<MailboxId, ErrorFrame> {
        let digest = params_digest(&req.params)
            .map_err(|_| err(ErrorCode::BadRequest, "parameters cannot be encoded"))?;
        verify_relay_auth(
            &req.owner,
            AuthOp::Create,
            challenge,
            &MailboxId([0; 16]),
            &digest,
            &req.signature,
        )
        .map_err(|_| err(ErrorCode::BadSignature, "create signature does not verify"))?;
        let now = self.now();
        let talk = Talk::create(&req.params, req.owner, now).map_err(talk_err)?;
        let mut mailbox_id = MailboxId([0; 16]);
        let ns = loop {
            rand::Rng::fill_bytes(&mut rand::rng(), &mut mailbox_id.0);
            match self.vault.create_namespace(&ns_id(&mailbox_id)) {
                Ok(ns) => break ns,
                Err(VaultError::AlreadyExists) => continue,
                Err(e) => return Err(storage_err(e)),
            }
        };
        let meta = encode_value(&MailboxMeta {
            mailbox: mailbox_id,
            talk: talk.clone(),
        })
        .map_err(|_| err(ErrorCode::Internal, "cannot encode mailbox"))?;
        let welcome_keys: Vec<[u8; 2]> = (1..req.params.seats).map(welcome_key).collect();
        let mut items: Vec<(&[u8], &[u8])> = vec![(K_META, &meta), (K_HEAD, &[0u8; 8])];
        for (k, offer) in welcome_keys.iter().zip(&req.params.offers) {
            items.push((k, &offer.welcome));
        }
        ns.put_batch(&items).map_err(storage_err)?;
        let mb = Mailbox {
            id: mailbox_id,
            ns,
            talk,
            head: 0,
            head_stored: 0,
            envelopes: BTreeMap::new(),
            acked: HashMap::new(),
            bytes: 0,
            subscribers: Vec::new(),
            welcomes: (1..req.params.seats).fold(0u64, |w, s| w | (1u64 << s)),
        };
        let status = mb.status();
        lock(&self.expiries).insert((mb.talk.expires_at(), mailbox_id));
        lock(&self.mailboxes).insert(mailbox_id, Arc::new(Mutex::new(mb)));
        self.stats.mailboxes_created.fetch_add(1, Ordering::Relaxed);
        self.later(
            peer,
            id,
            Response::Created {
                mailbox: mailbox_id,
                status,
            },
            vec![],
        );
        Ok(mailbox_id)
    }

    /// `Join`: spends the token, hands back the welcome, pushes "seat taken" (and
    /// "opened" when quorum is reached) once durable.
    pub fn join(
        &self,
        peer: &Peer,
        id: u64,
        challenge: &[u8; 32],
        req: Join,
    ) -> Result<u8, ErrorFrame> {
        verify_relay_auth(
            &req.member,
            AuthOp::Join,
            challenge,
            &req.mailbox,
            &req.token,
            &req.signature,
        )
        .map_err(|_| err(ErrorCode::BadSignature, "join signature does not verify"))?;
        let mb = self.mailbox(&req.mailbox)?;
        let mut mb = lock(&mb);
        let token_hash = TokenHash(sha256(&[&req.token]));
        let now = self.now();
        let joined = mb
            .talk
            .join(&token_hash, req.member, now)
            .map_err(talk_err)?;
        let welcome = if mb.welcomes & (1u64 << joined.seat) != 0 {
            mb.ns.get(&welcome_key(joined.seat)).map_err(storage_err)?
        } else {
            None
        };
        let status = mb.status();
        if joined.retry {
            // The same key retries: hand the welcome over again while it is kept.
            let Some(welcome) = welcome else {
                return Err(talk_err(TalkError::InviteInvalid));
            };
            self.later(
                peer,
                id,
                Response::Joined {
                    seat: joined.seat,
                    welcome,
                    status,
                },
                vec![],
            );
            return Ok(joined.seat);
        }
        let welcome = welcome.unwrap_or_default();
        mb.save_meta().map_err(storage_err)?;
        let subscribers = || mb.subscribers.iter().map(|s| s.peer.clone());
        let mut pushes = pushes_of(
            subscribers(),
            Push::SeatTaken {
                mailbox: req.mailbox,
                status,
            },
        );
        if joined.opened {
            pushes.extend(pushes_of(
                subscribers(),
                Push::Opened {
                    mailbox: req.mailbox,
                    status,
                },
            ));
        }
        self.later(
            peer,
            id,
            Response::Joined {
                seat: joined.seat,
                welcome,
                status,
            },
            pushes,
        );
        Ok(joined.seat)
    }

    /// `Auth`: proves an existing member's key on this connection.
    pub fn auth(
        &self,
        challenge: &[u8; 32],
        mailbox: &MailboxId,
        member: &MemberKey,
        signature: &Signature,
    ) -> Result<Response, ErrorFrame> {
        verify_relay_auth(member, AuthOp::Auth, challenge, mailbox, &[], signature)
            .map_err(|_| err(ErrorCode::BadSignature, "auth signature does not verify"))?;
        let mb = self.mailbox(mailbox)?;
        let mb = lock(&mb);
        mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        Ok(Response::Authed {
            status: mb.status(),
            head: Seq(mb.head),
        })
    }

    /// `Subscribe`: pushes for `mailbox` go to `peer` from now on.
    pub fn subscribe(
        &self,
        peer: &Peer,
        mailbox: &MailboxId,
        member: &MemberKey,
    ) -> Result<Response, ErrorFrame> {
        let mb = self.mailbox(mailbox)?;
        let mut mb = lock(&mb);
        let seat = mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        if !mb.subscribers.iter().any(|s| s.peer.id == peer.id) {
            mb.subscribers.push(Subscriber {
                peer: peer.clone(),
                seat,
            });
        }
        Ok(Response::Subscribed {
            status: mb.status(),
        })
    }

    /// Forgets `peer`'s subscriptions (its connection ended).
    pub fn unsubscribe(&self, peer_id: u64, mailboxes: &[MailboxId]) {
        for id in mailboxes {
            let Some(mb) = lock(&self.mailboxes).get(id).cloned() else {
                continue;
            };
            lock(&mb).subscribers.retain(|s| s.peer.id != peer_id);
        }
    }

    /// `Put`: stores the envelope, answers `Stored` and pushes it once durable.
    pub fn put(
        &self,
        peer: &Peer,
        id: u64,
        member: &MemberKey,
        req: Put,
    ) -> Result<(), ErrorFrame> {
        let len = req.body.len();
        if !PADDING_BUCKETS.contains(&len) {
            return Err(err(
                ErrorCode::TooLarge,
                format!("envelope of {len} bytes: bodies must be padded to a bucket size"),
            ));
        }
        let mb = self.mailbox(&req.mailbox)?;
        let mut mb = lock(&mb);
        let now = self.now();
        mb.talk.check_put(member, req.kind, now).map_err(talk_err)?;
        let sender = mb.talk.seat_of(member).unwrap_or(0);
        if mb.welcomes & (1u64 << sender) != 0 {
            // The member is using its seat: its welcome will not be asked for again.
            mb.ns.remove(&welcome_key(sender)).map_err(storage_err)?;
            mb.welcomes &= !(1u64 << sender);
        }
        if mb.envelopes.len() as u64 >= self.limits.max_envelopes_per_mailbox
            || mb.bytes + len as u64 > self.limits.max_bytes_per_mailbox
        {
            return Err(err(
                ErrorCode::MailboxFull,
                "this talk's mailbox is full until members acknowledge what they received",
            ));
        }
        let recipients = mb
            .talk
            .members()
            .iter()
            .filter(|m| m.seat != sender)
            .fold(0u64, |acc, m| acc | (1u64 << m.seat));
        let seq = mb.head + 1;
        let rec = EnvRecord {
            kind: req.kind,
            stored_at: now,
            recipients,
            body: req.body,
        };
        let key = env_key(seq);
        // Encoded and sealed in the log record's own buffer: the body is copied once.
        let loc = self
            .log
            .append_with(mb.ns.number(), &key, len + 64, |out| {
                mb.ns.seal_written(&key, out, |o| {
                    // Only a value past the codec's size limit fails to encode.
                    encode_value_into(&rec, o)
                        .map(|_| ())
                        .map_err(|_| VaultError::ValueTooLarge)
                })
            })
            .map_err(storage_err)?;
        mb.head = seq;
        mb.bytes += len as u64;
        mb.envelopes.insert(
            seq,
            EnvMeta {
                recipients,
                len: len as u64,
                loc,
            },
        );
        self.stats.envelopes_stored.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope {
            seq: Seq(seq),
            kind: rec.kind,
            stored_at: now,
            body: rec.body,
        };
        let to = mb
            .subscribers
            .iter()
            .filter(|s| recipients & (1u64 << s.seat) != 0)
            .map(|s| s.peer.clone());
        let pushes = pushes_of(
            to,
            Push::Envelope {
                mailbox: req.mailbox,
                envelope,
            },
        );
        if recipients == 0 {
            // Addressed to nobody (the only member, or a pending talk's lone owner):
            // done at once, as a restart would find it, instead of holding a place
            // in the quota until some later ack happens to cover its seq.
            match mb.collect(&self.log, seq - 1, seq) {
                Ok(n) => {
                    self.stats.envelopes_deleted.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::error!("storage error releasing an unaddressed envelope: {e}"),
            }
        }
        self.later_as(
            Durability::Log,
            peer,
            id,
            Response::Stored { seq: Seq(seq) },
            pushes,
        );
        Ok(())
    }

    /// `Fetch`: the envelopes after `after` that `member` has to receive.
    pub fn fetch(
        &self,
        mailbox: &MailboxId,
        member: &MemberKey,
        after: Seq,
        limit: u16,
    ) -> Result<Response, ErrorFrame> {
        let mb = self.mailbox(mailbox)?;
        let mb = lock(&mb);
        let seat = mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        let limit = usize::from(limit.clamp(1, MAX_FETCH_ENVELOPES));
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for (seq, meta) in mb.envelopes.range(after.0.saturating_add(1)..) {
            if meta.recipients & (1u64 << seat) == 0 {
                continue;
            }
            if items.len() == limit || bytes + meta.len as usize > MAX_FETCH_BYTES {
                more = true;
                break;
            }
            let rec = mb.load(&self.log, *seq, meta.loc).map_err(|e| {
                tracing::error!("unreadable envelope record: {e}");
                err(ErrorCode::Internal, "stored envelope is damaged")
            })?;
            bytes += rec.body.len();
            items.push(Envelope {
                seq: Seq(*seq),
                kind: rec.kind,
                stored_at: rec.stored_at,
                body: rec.body,
            });
        }
        Ok(Response::Envelopes { items, more })
    }

    /// `Ack`: `member` holds everything up to `upto`; delete what nobody needs.
    pub fn ack(
        &self,
        mailbox: &MailboxId,
        member: &MemberKey,
        upto: Seq,
    ) -> Result<Response, ErrorFrame> {
        let mb = self.mailbox(mailbox)?;
        let mut mb = lock(&mb);
        let seat = mb.talk.authorize(member, self.now()).map_err(talk_err)?;
        let upto = upto.0.min(mb.head);
        let old = mb.acked.get(&seat).copied().unwrap_or(0);
        if upto > old {
            mb.acked.insert(seat, upto);
            // Noted before the release below: see `make_durable`.
            self.marks.note(&mb.ns, seat, upto);
            let n = mb.collect(&self.log, old, upto).map_err(storage_err)?;
            self.stats.envelopes_deleted.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Response::Acked)
    }

    /// `Leave`: removes the member's seat; the others are told once durable.
    pub fn leave(
        &self,
        peer: &Peer,
        id: u64,
        challenge: &[u8; 32],
        mailbox: &MailboxId,
        member: &MemberKey,
        signature: &Signature,
    ) -> Result<(), ErrorFrame> {
        verify_relay_auth(member, AuthOp::Leave, challenge, mailbox, &[], signature)
            .map_err(|_| err(ErrorCode::BadSignature, "leave signature does not verify"))?;
        let arc = self.mailbox(mailbox)?;
        let mut mb = lock(&arc);
        let now = self.now();
        let left = mb.talk.leave(member, now).map_err(talk_err)?;
        mb.subscribers.retain(|s| s.seat != left.seat);
        if left.empty {
            let expires = mb.talk.expires_at();
            self.destroy(&mut mb, expires).map_err(storage_err)?;
            self.later(peer, id, Response::Left, vec![]);
            return Ok(());
        }
        mb.save_meta().map_err(storage_err)?;
        let head = mb.head;
        let n = mb.collect(&self.log, 0, head).map_err(storage_err)?;
        self.stats.envelopes_deleted.fetch_add(n, Ordering::Relaxed);
        let status = mb.status();
        let pushes = pushes_of(
            mb.subscribers.iter().map(|s| s.peer.clone()),
            Push::MemberLeft {
                mailbox: *mailbox,
                status,
            },
        );
        self.later(peer, id, Response::Left, pushes);
        Ok(())
    }

    /// `Close`: checks the close policy, deletes the mailbox (crypto-shredding its
    /// key first), keeps a tombstone, and answers with a signed receipt.
    pub fn close(
        &self,
        peer: &Peer,
        id: u64,
        challenge: &[u8; 32],
        member: &MemberKey,
        req: Close,
    ) -> Result<(), ErrorFrame> {
        if req.farewell.len() > MAX_FAREWELL || !PADDING_BUCKETS.contains(&req.farewell.len()) {
            return Err(err(
                ErrorCode::TooLarge,
                "the farewell must be one padded bucket of at most 2048 bytes",
            ));
        }
        let digest = sha256(&[&req.farewell]);
        verify_relay_auth(
            member,
            AuthOp::Close,
            challenge,
            &req.mailbox,
            &digest,
            &req.signature,
        )
        .map_err(|_| err(ErrorCode::BadSignature, "close signature does not verify"))?;
        let arc = self.mailbox(&req.mailbox)?;
        let mut mb = lock(&arc);
        let now = self.now();
        mb.talk.close(member, now).map_err(talk_err)?;
        let deleted = mb.envelopes.len() as u64;
        let expires = mb.talk.expires_at();
        self.destroy(&mut mb, expires).map_err(storage_err)?;
        let receipt = self.identity.sign_receipt(req.mailbox, now, deleted);
        let push = Push::Closed {
            mailbox: req.mailbox,
            receipt,
            farewell: req.farewell,
        };
        let pushes = pushes_of(
            mb.subscribers
                .drain(..)
                .filter(|s| s.peer.id != peer.id)
                .map(|s| s.peer),
            push,
        );
        self.later(peer, id, Response::Closed { receipt }, pushes);
        Ok(())
    }

    /// Ends expired talks and forgets expired tombstones. Returns the number of
    /// mailboxes deleted. Called by the sweeper task, and directly by tests.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        let due: Vec<MailboxId> = {
            let mut expiries = lock(&self.expiries);
            let mut due = Vec::new();
            while let Some(&(at, id)) = expiries.first() {
                if at > now {
                    break;
                }
                expiries.pop_first();
                due.push(id);
            }
            due
        };
        let all: Vec<Arc<Mutex<Mailbox>>> = {
            let map = lock(&self.mailboxes);
            due.iter().filter_map(|id| map.get(id).cloned()).collect()
        };
        let mut n = 0;
        for arc in all {
            let mut mb = lock(&arc);
            if !mb.talk.expire(now) || matches!(mb.talk.lifecycle(), Lifecycle::Closed { .. }) {
                continue;
            }
            let push = Push::Expired { mailbox: mb.id };
            mb.push_all(push, None);
            mb.subscribers.clear();
            let expires = mb.talk.expires_at();
            if let Err(e) = self.destroy(&mut mb, expires) {
                tracing::error!("could not delete an expired mailbox, will retry: {e}");
                lock(&self.expiries).insert((now + 60, mb.id));
                continue;
            }
            n += 1;
        }
        let _ = self.vault.collect_garbage(10_000);
        self.compact();
        // So that a quiet relay's marks reach sled (and sled's own flusher) too.
        if let Err(e) = self.marks.write() {
            tracing::error!("writing ack marks failed: {e}");
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
        n
    }

    /// Copies the live envelopes out of sparse log segments, so that a few
    /// unacknowledged envelopes do not keep whole segments on disk. Returns how many
    /// envelopes moved.
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
        let mut moved = 0;
        for arc in all {
            let mut mb = lock(&arc);
            for meta in mb.envelopes.values_mut() {
                if !sparse.contains(&meta.loc.segment) {
                    continue;
                }
                match self.log.copy(meta.loc) {
                    Ok(loc) => {
                        meta.loc = loc;
                        moved += 1;
                    }
                    Err(e) => tracing::error!("log compaction: {e}"),
                }
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
                Ok((k, v)) if u64_of(&v).is_some_and(|exp| exp <= now) => stale.push(k),
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
    /// tombstone. The caller holds the mailbox lock.
    fn destroy(&self, mb: &mut Mailbox, talk_end: u64) -> Result<(), VaultError> {
        self.vault.destroy_namespace(&ns_id(&mb.id))?;
        let hashed = self.vault.index_hash(&mb.id.0);
        let until = talk_end.max(self.now()) + TOMBSTONE_GRACE_SECS;
        self.tombstones.put(&hashed, &until.to_le_bytes())?;
        let deleted = mb.envelopes.len() as u64;
        for meta in std::mem::take(&mut mb.envelopes).into_values() {
            self.log.release(meta.loc);
        }
        mb.bytes = 0;
        lock(&self.mailboxes).remove(&mb.id);
        self.stats
            .envelopes_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        self.stats.mailboxes_deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The seat of `member` in `mailbox` (used when a connection authenticates).
    pub fn is_member(&self, mailbox: &MailboxId, member: &MemberKey) -> bool {
        self.mailbox(mailbox)
            .map(|m| lock(&m).talk.is_member(member))
            .unwrap_or(false)
    }
}

/// Reads the envelope log back into the recovered mailboxes: every record of a live
/// mailbox that some current recipient has not acked is kept; everything else (acked,
/// of a destroyed mailbox, a duplicate left by compaction) is released.
/// A mailbox's state from its namespace (`None`: no metadata, an interrupted create).
fn load_mailbox(ns: &Namespace) -> Result<Option<Mailbox>, EngineError> {
    let Some(meta) = ns.get(K_META)? else {
        tracing::warn!("skipping a mailbox namespace without metadata (interrupted create)");
        return Ok(None);
    };
    let meta: MailboxMeta = decode_body(&meta).map_err(|e| EngineError::Corrupt(e.to_string()))?;
    let head = ns.get(K_HEAD)?.as_deref().and_then(u64_of).unwrap_or(0);
    let mut mb = Mailbox {
        id: meta.mailbox,
        ns: ns.clone(),
        talk: meta.talk,
        head,
        head_stored: head,
        envelopes: BTreeMap::new(),
        acked: HashMap::new(),
        bytes: 0,
        subscribers: Vec::new(),
        welcomes: 0,
    };
    for item in ns.scan_prefix(b"w") {
        let (k, _) = item?;
        if let Some(seat) = k.get(1).filter(|s| **s < 64) {
            mb.welcomes |= 1u64 << seat;
        }
    }
    for item in ns.scan_prefix(b"a") {
        let (k, v) = item?;
        if let (Some(seat), Some(mark)) = (k.get(1), u64_of(&v)) {
            mb.acked.insert(*seat, mark);
        }
    }
    Ok(Some(mb))
}

fn recover_log(
    dir: &Path,
    segment_bytes: u64,
    mailboxes: &mut HashMap<MailboxId, Mailbox>,
) -> Result<Log, EngineError> {
    let by_number: HashMap<u64, MailboxId> = mailboxes
        .iter()
        .map(|(id, mb)| (mb.ns.number(), *id))
        .collect();
    let mut unreadable = 0usize;
    let (log, recovery) = Log::open(&dir.join("log"), segment_bytes, |record| {
        let Some(mb) = by_number
            .get(&record.namespace)
            .and_then(|id| mailboxes.get_mut(id))
        else {
            return false;
        };
        let seq = match record.key.as_slice() {
            [b'e', rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
            _ => None,
        };
        let Some(seq) = seq else {
            unreadable += 1;
            return false;
        };
        mb.head = mb.head.max(seq);
        let rec: Option<EnvRecord> = mb
            .ns
            .open(&record.key, &record.sealed)
            .ok()
            .and_then(|raw| decode_body(&raw).ok());
        let Some(rec) = rec else {
            unreadable += 1;
            return false;
        };
        let members = mb
            .talk
            .members()
            .iter()
            .fold(0u64, |m, x| m | (1u64 << x.seat));
        let waiting = rec.recipients & members;
        let done = (0..64u8)
            .filter(|s| waiting & (1u64 << s) != 0)
            .all(|s| mb.acked.get(&s).copied().unwrap_or(0) >= seq);
        if done || mb.envelopes.contains_key(&seq) {
            return false;
        }
        mb.bytes += rec.body.len() as u64;
        mb.envelopes.insert(
            seq,
            EnvMeta {
                recipients: rec.recipients,
                len: rec.body.len() as u64,
                loc: record.loc,
            },
        );
        true
    })?;
    if recovery.torn_segments > 0 {
        tracing::warn!(
            segments = recovery.torn_segments,
            "log segments end in an interrupted append (never acknowledged); ignored"
        );
    }
    if unreadable > 0 {
        tracing::error!(
            records = unreadable,
            "envelope records that do not open under their mailbox's key were dropped"
        );
    }
    tracing::info!(
        envelopes = recovery.kept,
        released = recovery.dropped,
        "envelope log recovered"
    );
    Ok(log)
}

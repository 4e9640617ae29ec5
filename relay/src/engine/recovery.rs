//! Start-up: every mailbox's expiry and welcome bytes read from its namespace, then
//! the envelope log read back into the mailboxes it holds envelopes of. Only those
//! stay in memory; the others are loaded when first used (module docs of `engine`).
//!
//! Its one write to sled: an `h` that the log proves too low (its write was lost in
//! a crash) is raised before the commit thread starts, because once the segments
//! recovery found dead are unlinked, `h` is all that remembers those seqs, and a seq
//! must never be handed out twice.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use nook_proto::MailboxId;
use nook_proto::codec::decode_body;
use nook_vault::{Log, Namespace, Vault};

use super::EngineError;
use super::mailbox::{
    EnvMeta, EnvRecord, K_HEAD, K_META, Mailbox, MailboxMeta, decode_meta, ns_id, u64_of,
};

/// Namespaces read per page at start-up.
const PAGE: usize = 4096;

/// What start-up finds in the store.
pub(super) struct Recovered {
    /// The mailboxes holding envelopes, loaded.
    pub(super) resident: HashMap<MailboxId, Mailbox>,
    /// (expiry, mailbox) of every live mailbox.
    pub(super) expiries: BTreeSet<(u64, MailboxId)>,
    /// (time, mailbox) of every scheduled talk's opening and window end.
    pub(super) timers: BTreeSet<(u64, MailboxId)>,
    /// Bytes of every welcome still kept.
    pub(super) welcome_bytes: u64,
    /// The board records of every live mailbox.
    pub(super) boards: Vec<super::boards::StoredBoards>,
    pub(super) log: Log,
}

/// What start-up keeps of one mailbox it does not load.
struct Found {
    id: MailboxId,
    expires_at: u64,
    timers: Vec<u64>,
    number: u64,
    welcome_bytes: u64,
    /// Its board listings and requests, if any (the boards index is in memory).
    boards: Option<super::boards::StoredBoards>,
}

/// Reads every mailbox's expiry in `vault` (all namespaces but `tombstones`), and
/// the envelope log in `dir` that holds their envelopes.
pub(super) fn recover(
    dir: &Path,
    vault: &Vault,
    tombstones: &Namespace,
    segment_bytes: u64,
) -> Result<Recovered, EngineError> {
    // Reading is sled reads, one namespace at a time: spread over the cores, a
    // restart of a million mailboxes takes a fraction of the time. A page of
    // namespaces at a time, so that only one page of handles is ever held.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut found: Vec<Found> = Vec::new();
    let mut after = None;
    loop {
        let page = vault.namespaces_after(after, PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.hashed_id());
        let namespaces: Vec<&Namespace> = page
            .iter()
            .filter(|ns| ns.hashed_id() != tombstones.hashed_id())
            .collect();
        let per_thread = namespaces.len().div_ceil(threads).max(1);
        let parts: Vec<Result<Vec<Found>, EngineError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = namespaces
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|ns| find_mailbox(ns).transpose())
                            .collect::<Result<Vec<Found>, EngineError>>()
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
        for part in parts {
            found.extend(part?);
        }
    }
    let mut expiries = BTreeSet::new();
    let mut timers = BTreeSet::new();
    let mut welcome_bytes = 0u64;
    let mut by_number: HashMap<u64, MailboxId> = HashMap::new();
    let mut boards = Vec::new();
    for f in found {
        expiries.insert((f.expires_at, f.id));
        // Times that passed while the relay was down are due at the first sweep.
        timers.extend(f.timers.iter().map(|&at| (at, f.id)));
        welcome_bytes += f.welcome_bytes;
        by_number.insert(f.number, f.id);
        boards.extend(f.boards);
    }
    let mut loaded: HashMap<MailboxId, Mailbox> = HashMap::new();
    let log = recover_log(dir, segment_bytes, vault, &by_number, &mut loaded)?;
    drop(by_number);
    // The log can know a higher seq than `h` (an `h` write lost in a crash). Store it
    // before the first flush: that flush precedes the unlinking of the segments that
    // recovery found dead, after which only `h` remembers those seqs.
    for mb in loaded.values_mut() {
        if mb.head > mb.head_stored {
            mb.ns.put(K_HEAD, &mb.head.to_le_bytes())?;
            mb.head_stored = mb.head;
        }
        // Everything a restart finds is durable.
        mb.durable = mb.head;
    }
    // A mailbox whose every record was acked is loaded no longer than this.
    loaded.retain(|_, mb| !mb.is_idle());
    Ok(Recovered {
        resident: loaded,
        expiries,
        timers,
        welcome_bytes,
        boards,
        log,
    })
}

/// A mailbox's expiry and welcome bytes (`None`: no metadata, an interrupted create).
fn find_mailbox(ns: &Namespace) -> Result<Option<Found>, EngineError> {
    let Some(meta) = ns.get(K_META)? else {
        tracing::warn!("skipping a mailbox namespace without metadata (interrupted create)");
        return Ok(None);
    };
    let meta: MailboxMeta = decode_meta(&meta).map_err(|e| EngineError::Corrupt(e.to_string()))?;
    let mut welcome_bytes = 0u64;
    for item in ns.scan_prefix(b"w") {
        let (_, v) = item?;
        // As `Mailbox::keep_welcome` counts it.
        welcome_bytes += v.len().min(usize::from(u16::MAX)) as u64;
    }
    Ok(Some(Found {
        id: meta.mailbox,
        expires_at: meta.talk.expires_at(),
        timers: meta.talk.timers(),
        number: ns.number(),
        welcome_bytes,
        boards: super::boards::read_stored(meta.mailbox, ns)?,
    }))
}

/// A mailbox's state from its namespace (`None`: no metadata, an interrupted create).
pub(super) fn load_mailbox(ns: &Namespace) -> Result<Option<Mailbox>, EngineError> {
    let Some(meta) = ns.get(K_META)? else {
        tracing::warn!("skipping a mailbox namespace without metadata (interrupted create)");
        return Ok(None);
    };
    let meta: MailboxMeta = decode_meta(&meta).map_err(|e| EngineError::Corrupt(e.to_string()))?;
    let head = ns.get(K_HEAD)?.as_deref().and_then(u64_of).unwrap_or(0);
    let mut mb = Mailbox::new(meta.mailbox, ns.clone(), meta.talk, head);
    for item in ns.scan_prefix(b"w") {
        let (k, v) = item?;
        if let Some(seat) = k.get(1) {
            mb.keep_welcome(*seat, v.len());
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

/// Reads the envelope log back into the mailboxes it has records of, loading each
/// into `loaded` at its first record: every record of a live mailbox that some
/// current recipient has not acked is kept; everything else (acked, of a destroyed
/// mailbox, a duplicate left by compaction) is released.
fn recover_log(
    dir: &Path,
    segment_bytes: u64,
    vault: &Vault,
    by_number: &HashMap<u64, MailboxId>,
    loaded: &mut HashMap<MailboxId, Mailbox>,
) -> Result<Log, EngineError> {
    let mut unreadable = 0usize;
    let mut failed: Option<EngineError> = None;
    let (log, recovery) = Log::open(&dir.join("log"), segment_bytes, |record| {
        let Some(id) = by_number.get(&record.namespace) else {
            return false;
        };
        if !loaded.contains_key(id) {
            let mb = vault
                .namespace(&ns_id(id))
                .map_err(EngineError::from)
                .and_then(|ns| match ns {
                    Some(ns) => load_mailbox(&ns),
                    None => Ok(None),
                });
            match mb {
                Ok(Some(mb)) => {
                    loaded.insert(*id, mb);
                }
                Ok(None) => return false,
                Err(e) => {
                    failed.get_or_insert(e);
                    return false;
                }
            }
        }
        let Some(mb) = loaded.get_mut(id) else {
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
        let done = mb.acked_by(rec.recipients & mb.member_seats(), seq);
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
    // A mailbox that could not be read must not have its records released by the
    // first flush: stop before anything is written, as a full load did.
    if let Some(e) = failed {
        return Err(e);
    }
    if recovery.torn_segments > 0 {
        tracing::warn!(
            segments = recovery.torn_segments,
            "log segments end in an interrupted append (never acknowledged); ignored"
        );
    }
    if recovery.damaged_records > 0 {
        tracing::error!(
            records = recovery.damaged_records,
            "envelope log records damaged on disk were skipped: their envelopes are lost \
             (every intact one was recovered); check the disk, and restore the data folder \
             from a backup if the lost envelopes matter"
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

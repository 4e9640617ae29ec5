//! [`Vault`]: a sled database whose namespaces are sealed under per-namespace
//! keys held in the effaceable [`KeyStore`].
//!
//! # On disk
//!
//! ```text
//! <dir>/keys.slots          key store (see the keystore module)
//! <dir>/db.sled/            sled, with these trees:
//!   "meta"                  "format" -> 1u32 LE, "index_slot" -> u32 LE
//!   "catalog"               hashed id (32 bytes) -> key slot (u32 LE)
//!   "ns/<64 hex digits>"    one per namespace, named by its hashed id:
//!                           entry key (as given) -> nonce ‖ sealed value
//! ```
//!
//! The hashed id of a namespace is `HMAC-SHA256(index key, clear id)`, where
//! the index key is derived from the key in slot `index_slot`. Neither the
//! clear id nor any value is written in clear.
//!
//! # Crash safety
//!
//! Keys are created and effaced durably (the key store fsyncs), sled's trees
//! are only as durable as the last [`Vault::durable_flush`]. Two orders make
//! that safe, and [`Vault::open`] finishes whatever a crash interrupted:
//!
//! - create: allocate the key slot, then add the catalog entry. A crash in
//!   between leaves a live slot that no catalog entry names; open effaces it.
//! - destroy: efface the slot first (the shred is what matters and is durable
//!   at once), then drop the tree and remove the catalog entry, then flush
//!   durably. A crash after the efface leaves a catalog entry naming an empty
//!   slot; open drops that tree and entry. The final flush matters: without
//!   it a later namespace could reuse the slot while the stale catalog entry
//!   is still what a crash would bring back, and two names would share a key.
//! - A namespace tree with no catalog entry (created just before a crash) is
//!   dropped at open.
//!
//! # What a destroyed namespace leaves behind
//!
//! sled's log may keep, readable, the sealed values (useless without the
//! effaced key), the namespace's tree name and catalog key (its hashed id)
//! and the entry keys callers chose. The hashed id is keyed by the index key,
//! which is never effaced while the vault lives, so someone holding both the
//! disk and a candidate clear id can confirm that the namespace existed here,
//! but not read anything it held. Callers that must not leave even that
//! should hash entry keys with [`Vault::index_hash`] and keep tombstones
//! minimal.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::VaultError;
use crate::error::from_sled;
use crate::keystore::{KeyStore, SlotId, StorageKey, sync_parent_dir};
use crate::seal::{INDEX_INFO, Sealer, derive};

const KEYS_FILE: &str = "keys.slots";
const DB_DIR: &str = "db.sled";
const META_TREE: &[u8] = b"meta";
const CATALOG_TREE: &[u8] = b"catalog";
const NS_PREFIX: &[u8] = b"ns/";
const META_FORMAT: &[u8] = b"format";
const META_INDEX_SLOT: &[u8] = b"index_slot";
const FORMAT: u32 = 1;

/// A sled database whose namespaces are sealed under per-namespace keys.
///
/// `Send + Sync`; every method takes `&self`. Creating, looking up and
/// destroying namespaces is serialised by one lock around the key store;
/// reads and writes inside a [`Namespace`] take no vault lock.
pub struct Vault {
    dir: PathBuf,
    db: sled::Db,
    catalog: sled::Tree,
    keys: Mutex<KeyStore>,
    /// HMAC-SHA256 keyed with the index key, cloned per hash (the clone
    /// carries the precomputed pads). Wiped on drop (hmac's `zeroize`).
    index: Hmac<Sha256>,
    commit: GroupCommit,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens (or creates) the vault in `dir`.
    ///
    /// `dir` is created with mode 0700, or set to 0700 if it exists. sled lives
    /// in `dir/db.sled`, the key store in `dir/keys.slots` (0600). On first
    /// open a key slot is allocated for the vault's index key. Every open also
    /// finishes any create or destroy that a crash interrupted (see the module
    /// docs).
    ///
    /// Only one `Vault` may use a directory at a time: sled locks its files,
    /// so a second open fails until the first `Vault` and all its
    /// [`Namespace`] handles are dropped.
    pub fn open(dir: &Path) -> Result<Vault, VaultError> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        fs::set_permissions(dir, Permissions::from_mode(0o700))?;

        // sled first: its exclusive lock on `db` is what keeps a second
        // process (or a second Vault) away from the key store.
        let sled_dir = dir.join(DB_DIR);
        let db = sled::Config::new()
            .path(&sled_dir)
            .open()
            .map_err(from_sled)?;
        let mut keys = KeyStore::open(&dir.join(KEYS_FILE))?;
        let meta = db.open_tree(META_TREE).map_err(from_sled)?;
        let catalog = db.open_tree(CATALOG_TREE).map_err(from_sled)?;
        let commit = GroupCommit::new(&sled_dir)?;
        // Make the directory entries of keys.slots, db.sled and sled's own
        // files durable once; from here on only file contents change.
        File::open(&sled_dir)?.sync_all()?;
        sync_parent_dir(&sled_dir)?;

        let recovered = recover(&db, &meta, &catalog, &mut keys)?;
        if recovered.changed {
            commit.flush(&db)?;
        }
        let index_slot = match recovered.index_slot {
            Some(slot) => slot,
            None => {
                let (slot, _) = keys.allocate()?;
                let mut batch = sled::Batch::default();
                batch.insert(META_FORMAT, &FORMAT.to_le_bytes());
                batch.insert(META_INDEX_SLOT, &slot.0.to_le_bytes());
                meta.apply_batch(batch).map_err(from_sled)?;
                // Durable before any namespace is hashed with this key.
                commit.flush(&db)?;
                slot
            }
        };
        let index_key = derive(&keys.get(index_slot)?, INDEX_INFO);
        // HMAC takes keys of any length; a 32-byte key cannot be rejected.
        let index = <Hmac<Sha256> as KeyInit>::new_from_slice(&index_key[..])
            .expect("HMAC accepts 32-byte keys");

        Ok(Vault {
            dir: dir.to_path_buf(),
            db,
            catalog,
            keys: Mutex::new(keys),
            index,
            commit,
        })
    }

    /// `HMAC-SHA256(vault index key, id)`: a stable, keyed stand-in for an id
    /// that must not be stored in clear. Stable across reopen; different in
    /// every vault; useless to anyone without this vault's key store.
    pub fn index_hash(&self, id: &[u8]) -> [u8; 32] {
        let mut mac = self.index.clone();
        mac.update(id);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag);
        out
    }

    /// Creates the namespace `id` under a fresh storage key.
    ///
    /// [`VaultError::AlreadyExists`] if it exists. The key slot is durable on
    /// return; the catalog entry is as durable as the next
    /// [`Vault::durable_flush`] (if lost in a crash, the next open effaces the
    /// key).
    pub fn create_namespace(&self, id: &[u8]) -> Result<Namespace, VaultError> {
        let hashed = self.index_hash(id);
        let mut keys = self.lock_keys();
        if self.catalog.contains_key(hashed).map_err(from_sled)? {
            return Err(VaultError::AlreadyExists);
        }
        let (slot, key) = keys.allocate()?;
        let registered = self
            .db
            .open_tree(tree_name(&hashed))
            .and_then(|tree| {
                self.catalog.insert(hashed, &slot.0.to_le_bytes())?;
                Ok(tree)
            })
            .map_err(from_sled);
        match registered {
            Ok(tree) => Ok(Namespace::new(hashed, tree, &key)),
            Err(e) => {
                // Do not leave a key nobody can find; open would efface it
                // anyway, this only does it sooner.
                let _ = keys.efface(slot);
                Err(e)
            }
        }
    }

    /// Opens the namespace `id`, or `None` if it does not exist (never
    /// created, or destroyed).
    pub fn namespace(&self, id: &[u8]) -> Result<Option<Namespace>, VaultError> {
        let hashed = self.index_hash(id);
        let keys = self.lock_keys();
        match self.catalog.get(hashed).map_err(from_sled)? {
            Some(slot) => self.load(&keys, hashed, &slot).map(Some),
            None => Ok(None),
        }
    }

    /// Destroys the namespace `id`: effaces its key slot (durably, first),
    /// then drops its tree and catalog entry and flushes durably. Returns
    /// `false` if it did not exist.
    ///
    /// When this returns `true`, every value the namespace ever held, in
    /// whatever stale copy sled keeps, is ciphertext under a key that exists
    /// nowhere. Handles to the namespace that are still open fail with
    /// [`VaultError::NamespaceDestroyed`].
    pub fn destroy_namespace(&self, id: &[u8]) -> Result<bool, VaultError> {
        let hashed = self.index_hash(id);
        let mut keys = self.lock_keys();
        let Some(value) = self.catalog.get(hashed).map_err(from_sled)? else {
            return Ok(false);
        };
        let slot = parse_slot(&value)?;
        keys.efface(slot)?;
        self.db.drop_tree(tree_name(&hashed)).map_err(from_sled)?;
        self.catalog.remove(hashed).map_err(from_sled)?;
        // Still holding the key store lock: the slot must not be reused
        // before the catalog no longer names it on disk.
        self.commit.flush(&self.db)?;
        Ok(true)
    }

    /// Every live namespace, ordered by hashed id (used by the relay at
    /// restart to find its mailboxes). Namespaces expose their hashed id only.
    pub fn namespaces(&self) -> Result<Vec<Namespace>, VaultError> {
        let keys = self.lock_keys();
        self.catalog
            .iter()
            .map(|item| {
                let (hashed, slot) = item.map_err(from_sled)?;
                self.load(&keys, parse_hashed(&hashed)?, &slot)
            })
            .collect()
    }

    /// Makes every write that returned before this call durable: sled's
    /// `flush` (which only uses `sync_file_range`), then `fdatasync` of any
    /// new sled blob files and of sled's `db` file. Acknowledge nothing to a
    /// peer before this returns.
    ///
    /// Concurrent callers share the work (group commit): a caller whose
    /// writes were covered by a flush that started after its call returns
    /// without flushing again.
    pub fn durable_flush(&self) -> Result<(), VaultError> {
        self.commit.flush(&self.db)
    }

    /// Bytes used on disk by sled and the key store.
    pub fn size_on_disk(&self) -> Result<u64, VaultError> {
        let sled = self.db.size_on_disk().map_err(from_sled)?;
        Ok(sled + self.lock_keys().file_len())
    }

    fn lock_keys(&self) -> MutexGuard<'_, KeyStore> {
        // The key store keeps memory and file consistent at every return
        // point, so a panic elsewhere while holding the lock leaves it usable.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds a handle from a catalog entry. Called with the key store locked
    /// so that the entry and the slot belong together.
    fn load(
        &self,
        keys: &KeyStore,
        hashed: [u8; 32],
        slot: &[u8],
    ) -> Result<Namespace, VaultError> {
        let key = keys.get(parse_slot(slot)?)?;
        let tree = self.db.open_tree(tree_name(&hashed)).map_err(from_sled)?;
        Ok(Namespace::new(hashed, tree, &key))
    }
}

/// One namespace: a talk on the client, a mailbox on the relay.
///
/// Cheap to clone (an `Arc` inside). Entry keys are stored as given, values
/// are sealed, bound to this namespace and to their entry key.
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<NsInner>,
}

struct NsInner {
    hashed_id: [u8; 32],
    tree: sled::Tree,
    sealer: Sealer,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not even the hashed id: Debug output ends up in logs.
        f.debug_struct("Namespace").finish_non_exhaustive()
    }
}

impl Namespace {
    fn new(hashed_id: [u8; 32], tree: sled::Tree, key: &StorageKey) -> Namespace {
        Namespace {
            inner: Arc::new(NsInner {
                hashed_id,
                tree,
                sealer: Sealer::new(key),
            }),
        }
    }

    /// The namespace's hashed id, [`Vault::index_hash`] of its clear id.
    pub fn hashed_id(&self) -> [u8; 32] {
        self.inner.hashed_id
    }

    /// Seals `value` and stores it under `key`, replacing any previous value.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        let sealed = self.inner.seal(key, value)?;
        self.inner.tree.insert(key, sealed).map_err(from_sled)?;
        Ok(())
    }

    /// Stores all `items` atomically (one sled batch): after a crash either
    /// all or none are there.
    pub fn put_batch(&self, items: &[(&[u8], &[u8])]) -> Result<(), VaultError> {
        let mut batch = sled::Batch::default();
        for (key, value) in items {
            batch.insert(*key, self.inner.seal(key, value)?);
        }
        self.inner.tree.apply_batch(batch).map_err(from_sled)
    }

    /// The value under `key`, opened. [`VaultError::Corrupt`] if the stored
    /// bytes fail authentication.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        match self.inner.tree.get(key).map_err(from_sled)? {
            Some(sealed) => self.inner.open(key, &sealed).map(Some),
            None => Ok(None),
        }
    }

    /// Removes `key`; `true` if it was there. (The sealed bytes may stay in
    /// sled's files until the namespace is destroyed.)
    pub fn remove(&self, key: &[u8]) -> Result<bool, VaultError> {
        Ok(self.inner.tree.remove(key).map_err(from_sled)?.is_some())
    }

    /// Entries whose key starts with `prefix`, in key order, values opened.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Entries {
        Entries::new(&self.inner, self.inner.tree.scan_prefix(prefix))
    }

    /// Entries with key `>= start`, in key order, values opened.
    pub fn range_from(&self, start: &[u8]) -> Entries {
        Entries::new(&self.inner, self.inner.tree.range(start..))
    }

    /// Number of entries. Walks the tree (sled keeps no count).
    pub fn len(&self) -> usize {
        self.inner.tree.len()
    }

    /// True if the namespace holds no entry.
    pub fn is_empty(&self) -> bool {
        self.inner.tree.is_empty()
    }
}

impl NsInner {
    /// Associated data of the value under `key`: hashed namespace id ‖ key.
    /// The id has a fixed length, so the split is unambiguous.
    fn aad(&self, key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + key.len());
        aad.extend_from_slice(&self.hashed_id);
        aad.extend_from_slice(key);
        aad
    }

    fn seal(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.sealer.seal(&self.aad(key), value)
    }

    fn open(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.sealer.open(&self.aad(key), sealed)
    }
}

/// Iterator over a namespace's entries in key order, as `(key, value)` with
/// the value opened.
///
/// A value that fails to open yields [`VaultError::Corrupt`] and iteration
/// carries on with the next entry. A storage error (sled, or the namespace
/// was destroyed) is yielded once and ends the iteration: sled would repeat
/// it forever, and a caller filtering errors out would never finish.
pub struct Entries {
    ns: Arc<NsInner>,
    iter: sled::Iter,
    ended: bool,
}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entries").finish_non_exhaustive()
    }
}

impl Entries {
    fn new(ns: &Arc<NsInner>, iter: sled::Iter) -> Entries {
        Entries {
            ns: Arc::clone(ns),
            iter,
            ended: false,
        }
    }

    fn open(
        &mut self,
        item: Option<sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Option<<Self as Iterator>::Item> {
        if self.ended {
            return None;
        }
        let Some(item) = item else {
            // Stay ended even if entries are added later (FusedIterator).
            self.ended = true;
            return None;
        };
        match item {
            Ok((key, sealed)) => Some(
                self.ns
                    .open(&key, &sealed)
                    .map(|value| (key.to_vec(), value)),
            ),
            Err(e) => {
                self.ended = true;
                Some(Err(from_sled(e)))
            }
        }
    }
}

impl Iterator for Entries {
    type Item = Result<(Vec<u8>, Vec<u8>), VaultError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let item = self.iter.next();
        self.open(item)
    }
}

impl DoubleEndedIterator for Entries {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let item = self.iter.next_back();
        self.open(item)
    }
}

impl std::iter::FusedIterator for Entries {}

/// The shared durable flush (see [`Vault::durable_flush`]).
///
/// Tickets: each caller takes a number from `requested`, after its writes.
/// A flusher reads `requested` before it starts and records it in `done`
/// when finished; a caller whose ticket is `<= done` was covered by a flush
/// that started after its writes, so it has nothing to do.
struct GroupCommit {
    /// sled's log file; fdatasync on any descriptor of it syncs the file.
    db_file: File,
    blob_dir: PathBuf,
    requested: AtomicU64,
    state: Mutex<CommitState>,
}

struct CommitState {
    done: u64,
    /// sled blob files already fsynced. Blobs are written once and never
    /// changed (sled creates each with `create_new`), so once is enough.
    synced_blobs: HashSet<OsString>,
}

impl GroupCommit {
    fn new(sled_dir: &Path) -> Result<GroupCommit, VaultError> {
        Ok(GroupCommit {
            db_file: File::open(sled_dir.join("db"))?,
            blob_dir: sled_dir.join("blobs"),
            requested: AtomicU64::new(0),
            state: Mutex::new(CommitState {
                done: 0,
                synced_blobs: HashSet::new(),
            }),
        })
    }

    fn flush(&self, db: &sled::Db) -> Result<(), VaultError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.done >= ticket {
            return Ok(());
        }
        let target = self.requested.load(Ordering::SeqCst);
        db.flush().map_err(from_sled)?;
        // Blobs first: the log records written by the flush point at them.
        self.sync_new_blobs(&mut state.synced_blobs)?;
        self.db_file.sync_data()?;
        state.done = target;
        Ok(())
    }

    /// sled writes large values to `blobs/<lsn>` with no sync at all; fsync
    /// the ones not yet synced, and the directory if there were any.
    fn sync_new_blobs(&self, synced: &mut HashSet<OsString>) -> Result<(), VaultError> {
        let listing = match fs::read_dir(&self.blob_dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut present = HashSet::new();
        let mut new = false;
        for entry in listing {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data()?,
                    // Garbage-collected by sled since the listing: fine.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blob_dir)?.sync_all()?;
        }
        // Forget blobs sled has removed, so the set stays bounded.
        *synced = present;
        Ok(())
    }
}

/// What [`recover`] found.
struct Recovered {
    index_slot: Option<SlotId>,
    /// sled was changed and must be flushed before any slot is reused.
    changed: bool,
}

/// Checks the vault's metadata against the key store and finishes any create
/// or destroy a crash interrupted (module docs, "Crash safety").
fn recover(
    db: &sled::Db,
    meta: &sled::Tree,
    catalog: &sled::Tree,
    keys: &mut KeyStore,
) -> Result<Recovered, VaultError> {
    let index_slot = match meta.get(META_INDEX_SLOT).map_err(from_sled)? {
        Some(v) => Some(parse_slot(&v)?),
        None => None,
    };
    match meta.get(META_FORMAT).map_err(from_sled)? {
        Some(v) if *v == FORMAT.to_le_bytes() => {}
        Some(_) => {
            return Err(VaultError::corrupt(
                "the vault's format is not 1: written by an incompatible version of nook",
            ));
        }
        None if index_slot.is_some() => {
            return Err(VaultError::corrupt("the vault's meta tree has no format"));
        }
        None => {}
    }

    let mut referenced = HashSet::new();
    match index_slot {
        Some(slot) if keys.is_live(slot) => {
            referenced.insert(slot);
        }
        Some(slot) => {
            return Err(VaultError::corrupt(format!(
                "the vault index key (key slot {}) is missing from keys.slots, so no namespace \
                 can be found; keys.slots was replaced or damaged: move the data folder aside \
                 and start afresh",
                slot.0
            )));
        }
        None if !catalog.is_empty() => {
            return Err(VaultError::corrupt(
                "the catalog lists namespaces but the vault has no index key",
            ));
        }
        None => {}
    }

    let mut live_trees = HashSet::new();
    let mut interrupted = Vec::new();
    for item in catalog.iter() {
        let (hashed, slot) = item.map_err(from_sled)?;
        let hashed = parse_hashed(&hashed)?;
        let slot = parse_slot(&slot)?;
        if keys.is_live(slot) {
            if !referenced.insert(slot) {
                return Err(VaultError::corrupt(format!(
                    "key slot {} is named twice (by two namespaces, or by a namespace and the \
                     vault index)",
                    slot.0
                )));
            }
            live_trees.insert(tree_name(&hashed));
        } else {
            // Destroy effaced the key, then crashed: finish it.
            interrupted.push(hashed);
        }
    }

    let mut changed = false;
    for hashed in interrupted {
        db.drop_tree(tree_name(&hashed)).map_err(from_sled)?;
        catalog.remove(hashed).map_err(from_sled)?;
        changed = true;
    }
    // Trees created just before a crash that lost their catalog entry.
    for name in db.tree_names() {
        if name.starts_with(NS_PREFIX) && !live_trees.contains(&name[..]) {
            db.drop_tree(&name).map_err(from_sled)?;
            changed = true;
        }
    }
    // Keys allocated just before a crash that lost their catalog entry.
    for slot in keys.live_slot_ids() {
        if !referenced.contains(&slot) {
            keys.efface(slot)?;
        }
    }
    Ok(Recovered {
        index_slot,
        changed,
    })
}

/// `b"ns/"` followed by the lowercase hex of the hashed id.
fn tree_name(hashed: &[u8; 32]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = Vec::with_capacity(NS_PREFIX.len() + 64);
    name.extend_from_slice(NS_PREFIX);
    for b in hashed {
        name.push(HEX[usize::from(b >> 4)]);
        name.push(HEX[usize::from(b & 0x0f)]);
    }
    name
}

fn parse_slot(bytes: &[u8]) -> Result<SlotId, VaultError> {
    let raw: [u8; 4] = bytes.try_into().map_err(|_| {
        VaultError::corrupt(format!(
            "a key slot number is {} bytes long, not 4",
            bytes.len()
        ))
    })?;
    Ok(SlotId(u32::from_le_bytes(raw)))
}

fn parse_hashed(bytes: &[u8]) -> Result<[u8; 32], VaultError> {
    bytes.try_into().map_err(|_| {
        VaultError::corrupt(format!(
            "a catalog key is {} bytes long, not 32",
            bytes.len()
        ))
    })
}

#[cfg(test)]
// In tests a failed unwrap is a failed test, with its location.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Every file under `dir`, recursively, whose bytes contain `needle`.
    fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        let mut hits = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    todo.push(path);
                } else if contains(&fs::read(&path).unwrap(), needle) {
                    hits.push(path);
                }
            }
        }
        hits
    }

    /// A 64-byte value that appears nowhere by accident.
    fn marker(tag: u8) -> Vec<u8> {
        (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(tag) ^ 0xa5)
            .collect()
    }

    fn storage_key_of(vault: &Vault, id: &[u8]) -> [u8; 32] {
        let slot = vault.catalog.get(vault.index_hash(id)).unwrap().unwrap();
        let slot = parse_slot(&slot).unwrap();
        *vault.lock_keys().get(slot).unwrap().dangerous_as_bytes()
    }

    #[test]
    fn vault_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Vault>();
        check::<Namespace>();
    }

    #[test]
    fn put_get_remove_scan_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let vault = Vault::open(dir.path()).unwrap();
            let ns = vault.create_namespace(b"talk-1").unwrap();
            ns.put(b"msg/0002", b"two").unwrap();
            ns.put(b"msg/0001", b"one").unwrap();
            ns.put(b"msg/0003", b"three").unwrap();
            ns.put(b"other", b"x").unwrap();
            assert!(ns.remove(b"msg/0003").unwrap());
            assert!(!ns.remove(b"msg/0003").unwrap());
            vault.durable_flush().unwrap();
        }
        let vault = Vault::open(dir.path()).unwrap();
        let ns = vault.namespace(b"talk-1").unwrap().unwrap();
        assert_eq!(ns.get(b"msg/0001").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(ns.get(b"msg/0003").unwrap(), None);
        assert_eq!(ns.len(), 3);
        let scanned: Vec<_> = ns.scan_prefix(b"msg/").map(Result::unwrap).collect();
        assert_eq!(
            scanned,
            vec![
                (b"msg/0001".to_vec(), b"one".to_vec()),
                (b"msg/0002".to_vec(), b"two".to_vec()),
            ]
        );
        let from: Vec<_> = ns.range_from(b"msg/0002").map(|r| r.unwrap().0).collect();
        assert_eq!(from, vec![b"msg/0002".to_vec(), b"other".to_vec()]);
        let last = ns.scan_prefix(b"msg/").next_back().unwrap().unwrap();
        assert_eq!(last.1, b"two");
    }

    #[test]
    fn put_batch_writes_all_items() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let ns = vault.create_namespace(b"mailbox").unwrap();
        assert!(ns.is_empty());
        ns.put_batch(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
            .unwrap();
        assert!(!ns.is_empty());
        let all: Vec<_> = ns.range_from(b"").map(Result::unwrap).collect();
        assert_eq!(
            all,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec()),
            ]
        );
    }

    #[test]
    fn values_and_clear_ids_never_reach_disk() {
        let dir = tempfile::tempdir().unwrap();
        let clear_id = b"clear-talk-id-that-must-never-be-on-disk";
        let value = marker(1);
        let vault = Vault::open(dir.path()).unwrap();
        let ns = vault.create_namespace(clear_id).unwrap();
        ns.put(b"k", &value).unwrap();
        ns.put_batch(&[(b"k2", &value)]).unwrap();
        vault.durable_flush().unwrap();
        assert_eq!(ns.get(b"k").unwrap().unwrap(), value);

        // Control: the same bytes stored by sled without sealing *are* found
        // by this scan, so an empty result below means something.
        let control = marker(2);
        vault
            .db
            .open_tree(b"control")
            .unwrap()
            .insert(b"k", &control[..])
            .unwrap();
        vault.durable_flush().unwrap();
        assert!(!files_containing(dir.path(), &control).is_empty());

        assert_eq!(files_containing(dir.path(), &value), Vec::<PathBuf>::new());
        assert_eq!(
            files_containing(dir.path(), clear_id),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn tree_names_hide_the_ids() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let id = b"talk-with-a-recognisable-id";
        let ns = vault.create_namespace(id).unwrap();
        let hashed = ns.hashed_id();
        assert_eq!(hashed, vault.index_hash(id));
        let names: Vec<Vec<u8>> = vault
            .db
            .tree_names()
            .iter()
            .filter(|n| n.starts_with(NS_PREFIX))
            .map(|n| n.to_vec())
            .collect();
        assert_eq!(names.len(), 1);
        let name = &names[0];
        assert!(!contains(name, id));
        assert!(!contains(name, &hashed));
        let expected: String = hashed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(name, &[NS_PREFIX, expected.as_bytes()].concat());
    }

    #[test]
    fn destroy_then_reopen_leaves_nothing_readable() {
        let dir = tempfile::tempdir().unwrap();
        let keys_path = dir.path().join(KEYS_FILE);
        let key = {
            let vault = Vault::open(dir.path()).unwrap();
            let ns = vault.create_namespace(b"doomed").unwrap();
            let keep = vault.create_namespace(b"kept").unwrap();
            ns.put(b"secret", &marker(3)).unwrap();
            keep.put(b"k", b"still here").unwrap();
            vault.durable_flush().unwrap();
            let key = storage_key_of(&vault, b"doomed");
            // Present before: otherwise "absent after" proves nothing.
            assert!(contains(&fs::read(&keys_path).unwrap(), &key));

            assert!(vault.destroy_namespace(b"doomed").unwrap());
            assert!(!contains(&fs::read(&keys_path).unwrap(), &key));
            assert!(vault.namespace(b"doomed").unwrap().is_none());
            assert!(!vault.destroy_namespace(b"doomed").unwrap());
            // An open handle cannot read on.
            assert!(matches!(
                ns.get(b"secret"),
                Err(VaultError::NamespaceDestroyed)
            ));
            key
        };

        let vault = Vault::open(dir.path()).unwrap();
        assert!(vault.namespace(b"doomed").unwrap().is_none());
        assert!(!contains(&fs::read(&keys_path).unwrap(), &key));
        for frag in key.windows(8) {
            assert!(files_containing(dir.path(), frag).is_empty());
        }
        let kept = vault.namespace(b"kept").unwrap().unwrap();
        assert_eq!(kept.get(b"k").unwrap().unwrap(), b"still here");
        assert_eq!(vault.namespaces().unwrap().len(), 1);
        assert_eq!(vault.lock_keys().live_slots(), 2, "index + kept");

        // The id can be used again, and starts empty under a new key.
        let again = vault.create_namespace(b"doomed").unwrap();
        assert_eq!(again.get(b"secret").unwrap(), None);
        assert!(again.is_empty());
        assert_ne!(storage_key_of(&vault, b"doomed"), key);
    }

    #[test]
    fn stale_handle_cannot_touch_a_recreated_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let old = vault.create_namespace(b"id").unwrap();
        old.put(b"k", b"old").unwrap();
        vault.destroy_namespace(b"id").unwrap();
        let new = vault.create_namespace(b"id").unwrap();
        assert!(matches!(
            old.put(b"k2", b"stale"),
            Err(VaultError::NamespaceDestroyed)
        ));
        assert!(matches!(old.get(b"k"), Err(VaultError::NamespaceDestroyed)));
        // One error, then the end (sled alone would repeat the error forever).
        let items: Vec<_> = old.range_from(b"").take(5).collect();
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0], Err(VaultError::NamespaceDestroyed)));
        assert!(new.is_empty());
        new.put(b"k", b"new").unwrap();
        assert_eq!(new.get(b"k").unwrap().unwrap(), b"new");
    }

    #[test]
    fn create_twice_is_already_exists() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        vault.create_namespace(b"x").unwrap();
        assert!(matches!(
            vault.create_namespace(b"x"),
            Err(VaultError::AlreadyExists)
        ));
        assert_eq!(vault.lock_keys().live_slots(), 2, "no slot leaked");
        assert!(vault.namespace(b"y").unwrap().is_none());
    }

    #[test]
    fn namespaces_lists_hashed_ids_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids: [&[u8]; 3] = [b"a", b"b", b"c"];
        {
            let vault = Vault::open(dir.path()).unwrap();
            for id in ids {
                vault.create_namespace(id).unwrap().put(b"k", id).unwrap();
            }
            vault.destroy_namespace(b"b").unwrap();
            vault.durable_flush().unwrap();
        }
        let vault = Vault::open(dir.path()).unwrap();
        let mut listed: Vec<[u8; 32]> = vault
            .namespaces()
            .unwrap()
            .iter()
            .map(|ns| {
                // Each listed handle opens its own values.
                assert!(ns.get(b"k").unwrap().is_some());
                ns.hashed_id()
            })
            .collect();
        listed.sort();
        let mut expected = vec![vault.index_hash(b"a"), vault.index_hash(b"c")];
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn index_hash_is_stable_per_vault_and_keyed() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let h1 = Vault::open(one.path()).unwrap().index_hash(b"id");
        let h1_again = Vault::open(one.path()).unwrap().index_hash(b"id");
        let h2 = Vault::open(two.path()).unwrap().index_hash(b"id");
        assert_eq!(h1, h1_again);
        assert_ne!(h1, h2);
        assert_ne!(&h1[..], &<Sha256 as sha2::Digest>::digest(b"id")[..]);
    }

    #[test]
    fn tampered_or_moved_values_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let ns = vault.create_namespace(b"n1").unwrap();
        let other = vault.create_namespace(b"n2").unwrap();
        ns.put(b"a", b"value a").unwrap();
        ns.put(b"b", b"value b").unwrap();
        let tree = &ns.inner.tree;

        // A flipped ciphertext byte.
        let mut sealed = tree.get(b"a").unwrap().unwrap().to_vec();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        tree.insert(b"a", sealed).unwrap();
        assert!(matches!(ns.get(b"a"), Err(VaultError::Corrupt { .. })));
        let scanned: Vec<_> = ns.range_from(b"").collect();
        assert!(matches!(scanned[0], Err(VaultError::Corrupt { .. })));
        assert_eq!(scanned[1].as_ref().unwrap().1, b"value b");

        // A valid value moved to another key, or to another namespace.
        let b = tree.get(b"b").unwrap().unwrap();
        tree.insert(b"c", b.clone()).unwrap();
        assert!(matches!(ns.get(b"c"), Err(VaultError::Corrupt { .. })));
        other.inner.tree.insert(b"b", b).unwrap();
        assert!(matches!(other.get(b"b"), Err(VaultError::Corrupt { .. })));

        // Too short to hold a nonce and a tag.
        tree.insert(b"d", &b"short"[..]).unwrap();
        assert!(matches!(ns.get(b"d"), Err(VaultError::Corrupt { .. })));
    }

    #[test]
    fn directory_and_key_file_modes() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let vault = Vault::open(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEYS_FILE)), 0o600);
        drop(vault);

        let fresh = parent.path().join("new").join("nested");
        let _vault = Vault::open(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn open_finishes_an_interrupted_destroy() {
        let dir = tempfile::tempdir().unwrap();
        {
            let vault = Vault::open(dir.path()).unwrap();
            let ns = vault.create_namespace(b"half-closed").unwrap();
            ns.put(b"k", b"v").unwrap();
            vault.create_namespace(b"alive").unwrap();
            vault.durable_flush().unwrap();
            // A crash right after destroy's first step: key effaced, tree
            // and catalog entry still on disk.
            let slot = parse_slot(
                &vault
                    .catalog
                    .get(vault.index_hash(b"half-closed"))
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
            vault.lock_keys().efface(slot).unwrap();
        }
        let vault = Vault::open(dir.path()).unwrap();
        assert!(vault.namespace(b"half-closed").unwrap().is_none());
        assert_eq!(vault.namespaces().unwrap().len(), 1);
        let trees = vault
            .db
            .tree_names()
            .iter()
            .filter(|n| n.starts_with(NS_PREFIX))
            .count();
        assert_eq!(trees, 1);
        // The slot is free again and can serve a new namespace.
        let ns = vault.create_namespace(b"next").unwrap();
        ns.put(b"k", b"fresh").unwrap();
        assert_eq!(ns.get(b"k").unwrap().unwrap(), b"fresh");
    }

    #[test]
    fn open_effaces_orphan_keys_and_drops_orphan_trees() {
        let dir = tempfile::tempdir().unwrap();
        let orphan_key = {
            let vault = Vault::open(dir.path()).unwrap();
            vault.create_namespace(b"alive").unwrap();
            // A crash inside create: slot and tree made, catalog entry lost.
            let (_, key) = vault.lock_keys().allocate().unwrap();
            vault
                .db
                .open_tree(tree_name(&[7; 32]))
                .unwrap()
                .insert(b"k", &b"v"[..])
                .unwrap();
            vault.durable_flush().unwrap();
            *key.dangerous_as_bytes()
        };
        let keys_path = dir.path().join(KEYS_FILE);
        assert!(contains(&fs::read(&keys_path).unwrap(), &orphan_key));

        let vault = Vault::open(dir.path()).unwrap();
        assert_eq!(vault.lock_keys().live_slots(), 2, "index + alive");
        assert!(!contains(&fs::read(&keys_path).unwrap(), &orphan_key));
        assert!(
            !vault
                .db
                .tree_names()
                .iter()
                .any(|n| **n == tree_name(&[7; 32])[..])
        );
        assert!(vault.namespace(b"alive").unwrap().is_some());
    }

    #[test]
    fn lost_key_store_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let vault = Vault::open(dir.path()).unwrap();
            vault
                .create_namespace(b"n")
                .unwrap()
                .put(b"k", b"v")
                .unwrap();
            vault.durable_flush().unwrap();
        }
        fs::remove_file(dir.path().join(KEYS_FILE)).unwrap();
        assert!(matches!(
            Vault::open(dir.path()),
            Err(VaultError::Corrupt { .. })
        ));
    }

    #[test]
    fn corrupt_key_slot_fails_open_with_the_slot_named() {
        let dir = tempfile::tempdir().unwrap();
        {
            let vault = Vault::open(dir.path()).unwrap();
            vault.create_namespace(b"n").unwrap();
        }
        let path = dir.path().join(KEYS_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[64 * 2 + 10] ^= 0xff; // slot 1, a key byte
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            Vault::open(dir.path()),
            Err(VaultError::CorruptSlot { slot: 1, .. })
        ));
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _vault = Vault::open(dir.path()).unwrap();
        assert!(Vault::open(dir.path()).is_err());
    }

    #[test]
    fn durable_flush_covers_blobs_and_concurrent_callers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let vault = Vault::open(dir.path()).unwrap();
            let ns = vault.create_namespace(b"big").unwrap();
            // Large enough for sled to write a blob file.
            let big = vec![0x5a; 600 * 1024];
            ns.put(b"big", &big).unwrap();
            std::thread::scope(|s| {
                for t in 0..4u8 {
                    let (vault, ns) = (&vault, ns.clone());
                    s.spawn(move || {
                        for i in 0..20u8 {
                            ns.put(&[t, i], &[i; 100]).unwrap();
                            vault.durable_flush().unwrap();
                        }
                    });
                }
            });
            let blobs = fs::read_dir(dir.path().join(DB_DIR).join("blobs"))
                .unwrap()
                .count();
            assert!(blobs > 0, "the big value should live in a blob");
            assert!(vault.size_on_disk().unwrap() > 600 * 1024);
        }
        let vault = Vault::open(dir.path()).unwrap();
        let ns = vault.namespace(b"big").unwrap().unwrap();
        assert_eq!(ns.len(), 81);
        assert_eq!(ns.get(b"big").unwrap().unwrap().len(), 600 * 1024);
    }
}

//! The effaceable key store: one file, `keys.slots`, of fixed-size slots, each
//! holding at most one 32-byte [`StorageKey`].
//!
//! Deleting a key means overwriting its slot *in place* (same file, same
//! offset) with zeros and then `fdatasync`ing the file. The key bytes are
//! never written anywhere else: not to a temporary file, not by a rename, not
//! by compaction. That is what makes the store "effaceable", unlike sled,
//! whose log keeps removed values readable.
//!
//! # File format (version 1)
//!
//! All integers are little-endian. The file is a header followed by slots,
//! and every slot starts at a multiple of 64 bytes.
//!
//! Header, 64 bytes:
//!
//! | offset | size | content                         |
//! |-------:|-----:|---------------------------------|
//! | 0      | 8    | magic `b"NOOKKEYS"`             |
//! | 8      | 4    | format version, `1u32`          |
//! | 12     | 4    | slot size in bytes, `64u32`     |
//! | 16     | 48   | zero                            |
//!
//! The header's 16 meaningful bytes are padded to a whole slot so that slot
//! `i` sits at offset `64 * (i + 1)`: a 64-byte slot aligned to 64 never
//! straddles a 512-byte disk sector, so an overwrite of one slot is a single
//! sector write and cannot be torn across two.
//!
//! Slot, 64 bytes:
//!
//! | offset | size | content                                              |
//! |-------:|-----:|------------------------------------------------------|
//! | 0      | 1    | state: `0` = free, `1` = live                        |
//! | 1      | 32   | key (zero when free)                                 |
//! | 33     | 4    | check: first 4 bytes of SHA-256(state ‖ key)         |
//! | 37     | 27   | zero                                                 |
//!
//! A free slot is 64 zero bytes, exactly. [`KeyStore::open`] checks every
//! byte: a free slot with any non-zero byte, a live slot whose check does not
//! match or whose padding is not zero, an unknown state, a bad header, or a
//! length that is not a header plus whole slots are all errors
//! ([`VaultError::CorruptSlot`], [`VaultError::BadHeader`],
//! [`VaultError::Truncated`]), never a panic and never a silent repair. A
//! header naming another version (one an older or newer nook wrote) is
//! [`VaultError::UnsupportedFormat`], and the file is left exactly as it is:
//! the version that wrote it can still read it. [`format_version`] reads the
//! version without opening the store.
//!
//! The file grows one slot at a time: `set_len` extends it with a zero (free)
//! slot and the key is written into that slot.
//!
//! # Durability
//!
//! [`KeyStore::allocate`] writes its slot but does not `fdatasync`: a new key
//! is durable after the next [`KeyStore::sync`] (which
//! [`Vault::durable_flush`](crate::Vault::durable_flush) calls) or the next
//! efface (which syncs the whole file). A crash before that leaves the old
//! length, a free slot or the live slot, all valid; the vault's repair at open
//! handles a key that was lost while sled kept the namespace naming it.
//! Skipping that sync is what makes creating a namespace cheap: one
//! `fdatasync` per durable flush instead of one per key.
//!
//! [`KeyStore::efface`] and [`KeyStore::efface_and_hold`] are the shred: they
//! overwrite in place and `fdatasync` before they return, always.
//!
//! # Held slots
//!
//! [`KeyStore::efface_and_hold`] effaces a slot but keeps it out of reuse until
//! [`KeyStore::release`]. The vault uses it so that a slot freed by a destroy
//! is not handed to a new namespace while the destroyed namespace's catalog
//! entry, which names the slot, could still come back after a crash. Holding
//! is in memory only: a reopened store has no held slots.
//!
//! # Concurrency
//!
//! The key store takes no file lock (std's `File::lock` is newer than this
//! workspace's minimum Rust). [`Vault`](crate::Vault) opens sled first, and
//! sled holds an exclusive lock on its own `db` file, so two vaults never
//! share a key store. Anyone else using a bare `KeyStore` must ensure a
//! single opener.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use rand::Rng;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::VaultError;
use crate::error::FormatOf;

/// Size of one slot, and of the header.
pub const SLOT_SIZE: usize = 64;
/// Size of a [`StorageKey`] in bytes.
pub const KEY_LEN: usize = 32;

const MAGIC: &[u8; 8] = b"NOOKKEYS";
const VERSION: u32 = 1;
const HEADER_LEN: usize = SLOT_SIZE;
const STATE_FREE: u8 = 0;
const STATE_LIVE: u8 = 1;
const CHECK_LEN: usize = 4;
const KEY_AT: usize = 1;
const CHECK_AT: usize = KEY_AT + KEY_LEN;
const PAD_AT: usize = CHECK_AT + CHECK_LEN;

/// A 32-byte symmetric key guarding one namespace (or the vault index).
///
/// Wiped from memory on drop; its `Debug` output never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StorageKey([u8; KEY_LEN]);

impl StorageKey {
    /// A fresh key from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub(crate) fn random() -> StorageKey {
        let mut key = StorageKey([0; KEY_LEN]);
        rand::rng().fill_bytes(&mut key.0);
        key
    }

    /// The raw key bytes. Named so that every use stands out in review: these
    /// bytes must never be logged, stored or sent.
    pub fn dangerous_as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(..)")
    }
}

/// The index of a slot in the key store. Slot ids are reused once effaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u32);

/// Effaceable key store: one file `keys.slots` of fixed-size slots.
///
/// Live keys are cached in memory (wiped on drop), so [`KeyStore::get`] does
/// no IO. [`KeyStore::allocate`] writes without syncing (see "Durability" in
/// the module docs); [`KeyStore::efface`] writes and `fdatasync`s before it
/// returns.
pub struct KeyStore {
    file: File,
    /// One entry per slot in the file.
    slots: Vec<Slot>,
    /// Indices of the [`Slot::Free`] slots, so that allocation finds the
    /// lowest one without walking a million slots.
    free: BTreeSet<u32>,
    live: usize,
    /// A slot was written since the file was last synced.
    unsynced: bool,
}

/// The in-memory state of one slot. Free and held slots are both zero on disk.
enum Slot {
    Free,
    /// Effaced, but not to be reused before [`KeyStore::release`].
    Held,
    Live(StorageKey),
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("slots", &self.slots.len())
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the key store at `path`, creating it (mode 0600) if it does not
    /// exist or is empty, and validates every slot.
    ///
    /// An existing file is also set to mode 0600.
    pub fn open(path: &Path) -> Result<KeyStore, VaultError> {
        let mut file = crate::vault::open_private(path)?;
        // `mode` only applies on creation (and under the umask); tighten an
        // existing file too.
        file.set_permissions(Permissions::from_mode(0o600))?;

        // Sized up front: a growing Vec would leave unwiped copies of keys in
        // the memory it frees.
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
        let mut bytes = Zeroizing::new(Vec::with_capacity(len));
        file.read_to_end(&mut bytes)?;

        if bytes.is_empty() {
            // New, or created by a run that crashed before writing the
            // header: either way it holds no key, so initialising is safe.
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header())?;
            file.sync_data()?;
            sync_parent_dir(path)?;
            return Ok(KeyStore {
                file,
                slots: Vec::new(),
                free: BTreeSet::new(),
                live: 0,
                unsynced: false,
            });
        }

        let slots = parse(&bytes).map_err(|e| with_path(e, path))?;
        let mut free = BTreeSet::new();
        let mut live = 0;
        for (i, slot) in slots.iter().enumerate() {
            match slot {
                // `parse` checked that every index fits in a u32.
                Slot::Free | Slot::Held => {
                    free.insert(slot_id(i)?.0);
                }
                Slot::Live(_) => live += 1,
            }
        }
        Ok(KeyStore {
            file,
            slots,
            free,
            live,
            unsynced: false,
        })
    }

    /// Writes a fresh random key into a free slot. Effaced slots are reused
    /// first (lowest id first, held slots never); the file grows by one slot
    /// only when none is free.
    ///
    /// Not synced: the key is durable after the next [`KeyStore::sync`] or
    /// efface (module docs, "Durability").
    pub fn allocate(&mut self) -> Result<(SlotId, StorageKey), VaultError> {
        let key = StorageKey::random();

        let index = match self.free.first() {
            Some(&i) => i as usize,
            None => {
                let next = self.slots.len();
                let id = slot_id(next)?;
                // Extend with a zero (free) slot first: a crash leaves either
                // the old length or a valid free slot.
                self.unsynced = true;
                self.file.set_len(offset_of(next + 1))?;
                self.push_free_slot();
                self.free.insert(id.0);
                next
            }
        };
        let id = slot_id(index)?;

        let record = live_slot(&key);
        if let Err(e) = self.write_slot(index, &record[..], false) {
            // The slot may hold part of the key on disk; it stays free in
            // memory, so try to leave it zeroed on disk too.
            let _ = self.write_slot(index, &[0; SLOT_SIZE], true);
            return Err(e);
        }
        self.free.remove(&id.0);
        self.slots[index] = Slot::Live(key.clone());
        self.live += 1;
        Ok((id, key))
    }

    /// `fdatasync`s the file: every slot [`KeyStore::allocate`] wrote before
    /// this call is durable when it returns.
    pub fn sync(&mut self) -> Result<(), VaultError> {
        self.file.sync_data()?;
        self.unsynced = false;
        Ok(())
    }

    /// True if a slot was written since the file was last synced; clears the
    /// flag. A durable flush that takes it must sync the file, or call
    /// [`KeyStore::mark_unsynced`] if it fails to.
    pub(crate) fn take_unsynced(&mut self) -> bool {
        std::mem::take(&mut self.unsynced)
    }

    /// Sets the flag [`KeyStore::take_unsynced`] reads.
    pub(crate) fn mark_unsynced(&mut self) {
        self.unsynced = true;
    }

    /// Returns the key in `slot` from memory.
    ///
    /// [`VaultError::NoSuchSlot`] if the slot is free or out of range.
    pub fn get(&self, slot: SlotId) -> Result<StorageKey, VaultError> {
        self.slot(slot)
            .cloned()
            .ok_or(VaultError::NoSuchSlot(slot.0))
    }

    /// Overwrites `slot` in place with zeros and `fdatasync`s the file, then
    /// forgets the key in memory. Afterwards the key's bytes appear nowhere in
    /// the file.
    ///
    /// Effacing a slot that is already free is a no-op (so an interrupted
    /// deletion can simply be retried), and a held slot stays held;
    /// [`VaultError::NoSuchSlot`] if `slot` is beyond the end of the store.
    pub fn efface(&mut self, slot: SlotId) -> Result<(), VaultError> {
        self.efface_in_place(slot).map(|_held| ())
    }

    /// Like [`KeyStore::efface`] (same in-place overwrite and `fdatasync`),
    /// but the slot is then *held*: [`KeyStore::allocate`] does not reuse it
    /// until [`KeyStore::release`] names it. A free slot becomes held too;
    /// holding a held slot is a no-op.
    pub fn efface_and_hold(&mut self, slot: SlotId) -> Result<(), VaultError> {
        if !self.efface_in_place(slot)? {
            self.slots[slot.0 as usize] = Slot::Held;
            self.free.remove(&slot.0);
        }
        Ok(())
    }

    /// The held slots, in ascending order.
    pub fn held_slot_ids(&self) -> Vec<SlotId> {
        self.ids_where(|s| matches!(s, Slot::Held))
    }

    /// Makes the held slots among `slots` free, so that allocation may reuse
    /// them. Slots that are not held are left alone.
    pub fn release(&mut self, slots: &[SlotId]) {
        for &slot in slots {
            if let Some(s @ Slot::Held) = self.slots.get_mut(slot.0 as usize) {
                *s = Slot::Free;
                self.free.insert(slot.0);
            }
        }
    }

    /// Number of slots holding a key.
    pub fn live_slots(&self) -> usize {
        self.live
    }

    /// Number of slots in the file: live, free and held.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// True if `slot` holds a key.
    pub fn is_live(&self, slot: SlotId) -> bool {
        self.slot(slot).is_some()
    }

    /// The ids of all slots holding a key, in ascending order.
    pub fn live_slot_ids(&self) -> Vec<SlotId> {
        self.ids_where(|s| matches!(s, Slot::Live(_)))
    }

    /// Length of the file in bytes (header plus slots).
    pub fn file_len(&self) -> u64 {
        offset_of(self.slots.len())
    }

    /// A second descriptor of `keys.slots`, so that a durable flush can
    /// `fdatasync` it without holding the lock around the key store.
    pub(crate) fn sync_handle(&self) -> Result<File, VaultError> {
        Ok(self.file.try_clone()?)
    }

    fn slot(&self, slot: SlotId) -> Option<&StorageKey> {
        match self.slots.get(slot.0 as usize) {
            Some(Slot::Live(key)) => Some(key),
            _ => None,
        }
    }

    fn ids_where(&self, want: impl Fn(&Slot) -> bool) -> Vec<SlotId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| want(s))
            .filter_map(|(i, _)| u32::try_from(i).ok().map(SlotId))
            .collect()
    }

    /// The shred itself: zeros over a live slot, `fdatasync`, key forgotten
    /// (dropping it wipes it from memory) and the slot marked free. Free and
    /// held slots are left as they are. Returns whether the slot is held.
    fn efface_in_place(&mut self, slot: SlotId) -> Result<bool, VaultError> {
        let index = slot.0 as usize;
        match self.slots.get(index) {
            None => Err(VaultError::NoSuchSlot(slot.0)),
            Some(Slot::Held) => Ok(true),
            Some(Slot::Free) => Ok(false),
            Some(Slot::Live(_)) => {
                self.write_slot(index, &[0; SLOT_SIZE], true)?;
                self.slots[index] = Slot::Free;
                self.free.insert(slot.0);
                self.live -= 1;
                Ok(false)
            }
        }
    }

    /// Appends a free slot in memory. When the vector is full it is copied
    /// into a larger one by hand and the old copies of the keys are wiped:
    /// a plain `push` would reallocate and leave them in freed memory.
    fn push_free_slot(&mut self) {
        if self.slots.len() == self.slots.capacity() {
            let mut grown = Vec::with_capacity((self.slots.len() * 2).max(64));
            for slot in &mut self.slots {
                grown.push(match slot {
                    Slot::Live(key) => {
                        let copy = key.clone();
                        key.zeroize();
                        Slot::Live(copy)
                    }
                    Slot::Free => Slot::Free,
                    Slot::Held => Slot::Held,
                });
            }
            self.slots = grown;
        }
        self.slots.push(Slot::Free);
    }

    /// Writes one whole slot at its own offset, and `fdatasync`s if `sync`.
    /// This is the only place slot bytes reach the file after creation.
    fn write_slot(&mut self, index: usize, record: &[u8], sync: bool) -> Result<(), VaultError> {
        debug_assert_eq!(record.len(), SLOT_SIZE);
        // Set first: even a failed write may have reached the page cache.
        self.unsynced = true;
        self.file.write_all_at(record, offset_of(index))?;
        if sync {
            self.sync()?;
        }
        Ok(())
    }
}

/// The format version in the header of the key store at `path`, read
/// without opening it for writing: `None` if there is no file or it is
/// empty (a new store), an error if it is not a nook key store at all.
///
/// For callers that must refuse a store of another version before they touch
/// anything else in its folder, and for `nook-relay status`.
pub fn format_version(path: &Path) -> Result<Option<u32>, VaultError> {
    let mut head = Vec::with_capacity(12);
    match File::open(path) {
        Ok(f) => {
            f.take(12).read_to_end(&mut head)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if head.is_empty() {
        return Ok(None);
    }
    match head.get(..8) {
        Some(magic) if magic == MAGIC => {}
        // Shorter than magic and version: a cut-off header of ours.
        _ if header().starts_with(&head) => {
            return Err(VaultError::Truncated {
                len: head.len() as u64,
            });
        }
        _ => {
            return Err(VaultError::BadHeader {
                reason: "wrong magic",
            });
        }
    }
    match head.get(8..12) {
        Some(v) => Ok(Some(u32::from_le_bytes([v[0], v[1], v[2], v[3]]))),
        None => Err(VaultError::Truncated {
            len: head.len() as u64,
        }),
    }
}

/// The key store versions this version reads.
pub const SUPPORTED: &[u32] = &[VERSION];

/// Puts the store's path into an [`VaultError::UnsupportedFormat`] from `parse`.
fn with_path(e: VaultError, path: &Path) -> VaultError {
    match e {
        VaultError::UnsupportedFormat {
            what,
            found,
            supported,
            ..
        } => VaultError::UnsupportedFormat {
            file: path.to_path_buf(),
            what,
            found,
            supported,
        },
        e => e,
    }
}

/// The header bytes of a version-1 store.
fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
    h
}

/// Validates a whole (non-empty) file and returns its slots.
fn parse(bytes: &[u8]) -> Result<Vec<Slot>, VaultError> {
    let len = bytes.len() as u64;
    let Some((head, body)) = bytes.split_at_checked(HEADER_LEN) else {
        // Shorter than a header: a cut-off header of ours, or something else.
        return Err(if header().starts_with(bytes) {
            VaultError::Truncated { len }
        } else {
            VaultError::BadHeader {
                reason: "too short, and not the start of a key store header",
            }
        });
    };
    if head[..8] != *MAGIC {
        return Err(VaultError::BadHeader {
            reason: "wrong magic",
        });
    }
    if head[8..12] != VERSION.to_le_bytes() {
        // Named with its path by `with_path`: a store of another version is
        // never repaired or replaced, only refused.
        return Err(VaultError::UnsupportedFormat {
            file: std::path::PathBuf::new(),
            what: FormatOf::KeyStore,
            found: u32::from_le_bytes([head[8], head[9], head[10], head[11]]),
            supported: SUPPORTED,
        });
    }
    if head[12..16] != (SLOT_SIZE as u32).to_le_bytes() {
        return Err(VaultError::BadHeader {
            reason: "unexpected slot size",
        });
    }
    if head[16..].iter().any(|&b| b != 0) {
        return Err(VaultError::BadHeader {
            reason: "non-zero padding",
        });
    }
    if body.len() % SLOT_SIZE != 0 {
        return Err(VaultError::Truncated { len });
    }

    // Sized up front, like the file buffer: no reallocation copies keys.
    let mut slots = Vec::with_capacity(body.len() / SLOT_SIZE);
    for (i, raw) in body.chunks_exact(SLOT_SIZE).enumerate() {
        let slot = u32::try_from(i).map_err(|_| VaultError::KeyStoreFull)?;
        let parsed = parse_slot(raw).map_err(|reason| VaultError::CorruptSlot { slot, reason })?;
        slots.push(match parsed {
            Some(key) => Slot::Live(key),
            None => Slot::Free,
        });
    }
    Ok(slots)
}

/// Validates one 64-byte slot.
fn parse_slot(raw: &[u8]) -> Result<Option<StorageKey>, &'static str> {
    match raw[0] {
        STATE_FREE if raw.iter().all(|&b| b == 0) => Ok(None),
        STATE_FREE => Err("free slot is not all zeros"),
        STATE_LIVE => {
            let mut key = StorageKey([0; KEY_LEN]);
            key.0.copy_from_slice(&raw[KEY_AT..CHECK_AT]);
            if raw[CHECK_AT..PAD_AT] != check(STATE_LIVE, &key) {
                return Err("checksum mismatch");
            }
            if raw[PAD_AT..].iter().any(|&b| b != 0) {
                return Err("non-zero padding");
            }
            Ok(Some(key))
        }
        _ => Err("unknown slot state"),
    }
}

/// The on-disk record of a live slot. Zeroizing: it holds the key.
fn live_slot(key: &StorageKey) -> Zeroizing<[u8; SLOT_SIZE]> {
    let mut record = Zeroizing::new([0u8; SLOT_SIZE]);
    record[0] = STATE_LIVE;
    record[KEY_AT..CHECK_AT].copy_from_slice(&key.0);
    record[CHECK_AT..PAD_AT].copy_from_slice(&check(STATE_LIVE, key));
    record
}

/// First 4 bytes of SHA-256(state ‖ key): catches bit rot and stray writes.
/// Not a MAC: anyone who can write the file can also delete keys.
fn check(state: u8, key: &StorageKey) -> [u8; CHECK_LEN] {
    let mut h = Sha256::new();
    h.update([state]);
    h.update(key.0);
    let digest = h.finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&digest[..CHECK_LEN]);
    out
}

fn offset_of(index: usize) -> u64 {
    (HEADER_LEN + index * SLOT_SIZE) as u64
}

fn slot_id(index: usize) -> Result<SlotId, VaultError> {
    u32::try_from(index)
        .map(SlotId)
        .map_err(|_| VaultError::KeyStoreFull)
}

/// fsyncs the directory holding `path`, so that a newly created file's
/// directory entry survives a power cut.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), VaultError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
// In tests a failed unwrap is a failed test, with its location.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.slots");
        (dir, path)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn allocate_get_efface_survive_reopen() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        let (a, ka) = ks.allocate().unwrap();
        let (b, kb) = ks.allocate().unwrap();
        assert_eq!((a, b), (SlotId(0), SlotId(1)));
        assert_ne!(ka.0, kb.0);
        assert_eq!(ks.get(a).unwrap().0, ka.0);
        assert_eq!(ks.live_slots(), 2);
        drop(ks);

        let mut ks = KeyStore::open(&path).unwrap();
        assert_eq!(ks.live_slots(), 2);
        assert_eq!(ks.get(a).unwrap().0, ka.0);
        assert_eq!(ks.get(b).unwrap().0, kb.0);
        ks.efface(a).unwrap();
        assert!(matches!(ks.get(a), Err(VaultError::NoSuchSlot(0))));
        assert_eq!(ks.live_slots(), 1);
        drop(ks);

        let ks = KeyStore::open(&path).unwrap();
        assert!(matches!(ks.get(a), Err(VaultError::NoSuchSlot(0))));
        assert_eq!(ks.get(b).unwrap().0, kb.0);
        assert_eq!(ks.live_slots(), 1);
        assert_eq!(ks.live_slot_ids(), vec![b]);
    }

    #[test]
    fn file_layout_matches_the_documented_format() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        let (_, key) = ks.allocate().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 128);
        assert_eq!(&bytes[..8], b"NOOKKEYS");
        assert_eq!(&bytes[8..16], &[1, 0, 0, 0, 64, 0, 0, 0]);
        assert!(bytes[16..64].iter().all(|&b| b == 0));
        let slot = &bytes[64..];
        assert_eq!(slot[0], 1);
        assert_eq!(&slot[1..33], key.dangerous_as_bytes());
        let mut pre = vec![1u8];
        pre.extend_from_slice(key.dangerous_as_bytes());
        assert_eq!(&slot[33..37], &Sha256::digest(&pre)[..4]);
        assert!(slot[37..].iter().all(|&b| b == 0));
    }

    #[test]
    fn effaced_slot_is_reused_before_growing() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        for _ in 0..3 {
            ks.allocate().unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        ks.efface(SlotId(1)).unwrap();
        let (again, _) = ks.allocate().unwrap();
        assert_eq!(again, SlotId(1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let (next, _) = ks.allocate().unwrap();
        assert_eq!(next, SlotId(3));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len + 64);
    }

    #[test]
    fn held_slot_is_not_reused_until_released() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        let (a, key) = ks.allocate().unwrap();
        let (b, _) = ks.allocate().unwrap();
        ks.efface_and_hold(a).unwrap();
        // Effaced on disk at once, like `efface`.
        assert!(!contains(
            &std::fs::read(&path).unwrap(),
            key.dangerous_as_bytes()
        ));
        assert!(!ks.is_live(a));
        assert!(matches!(ks.get(a), Err(VaultError::NoSuchSlot(0))));
        assert_eq!(ks.held_slot_ids(), vec![a]);
        // Neither efface nor a second hold frees it.
        ks.efface(a).unwrap();
        ks.efface_and_hold(a).unwrap();
        let (c, _) = ks.allocate().unwrap();
        assert_eq!(c, SlotId(2), "grows rather than reuse the held slot");

        ks.release(&[a, b]); // b is live: left alone
        assert!(ks.held_slot_ids().is_empty());
        assert!(ks.is_live(b));
        let (again, _) = ks.allocate().unwrap();
        assert_eq!(again, a);
        assert_eq!(ks.live_slots(), 3);
        drop(ks);
        // Holding is in memory only.
        let ks = KeyStore::open(&path).unwrap();
        assert!(ks.held_slot_ids().is_empty());
        assert_eq!(ks.live_slots(), 3);
    }

    #[test]
    fn allocations_are_flagged_until_a_sync() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        assert!(!ks.take_unsynced(), "a fresh store has nothing to sync");
        let (a, _) = ks.allocate().unwrap();
        assert!(ks.take_unsynced());
        assert!(!ks.take_unsynced(), "taking clears the flag");
        ks.allocate().unwrap();
        ks.sync().unwrap();
        assert!(!ks.take_unsynced(), "sync clears it");
        ks.allocate().unwrap();
        ks.efface(a).unwrap();
        assert!(!ks.take_unsynced(), "an efface syncs the whole file");
        ks.mark_unsynced();
        assert!(ks.take_unsynced());
    }

    #[test]
    fn many_slots_grow_and_reuse_the_lowest_first() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        // Past several reallocations of the in-memory slot vector.
        let keys: Vec<_> = (0..300).map(|_| ks.allocate().unwrap()).collect();
        assert_eq!(ks.slot_count(), 300);
        for i in [150, 3, 77] {
            ks.efface(SlotId(i)).unwrap();
        }
        for want in [3, 77, 150, 300] {
            assert_eq!(ks.allocate().unwrap().0, SlotId(want));
        }
        // Unsynced allocations are in the file (the page cache) and every
        // untouched key survived the growth.
        ks.sync().unwrap();
        drop(ks);
        let ks = KeyStore::open(&path).unwrap();
        assert_eq!(ks.live_slots(), 301);
        for (id, key) in keys.iter().filter(|(id, _)| ![3, 77, 150].contains(&id.0)) {
            assert_eq!(ks.get(*id).unwrap().0, key.0);
        }
    }

    #[test]
    fn efface_leaves_no_copy_of_the_key_in_the_file() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        let (keep, kept) = ks.allocate().unwrap();
        let (gone, key) = ks.allocate().unwrap();
        let before = std::fs::read(&path).unwrap();
        // The key is on disk before, otherwise the check below proves nothing.
        assert!(contains(&before, key.dangerous_as_bytes()));

        ks.efface(gone).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(
            after.len(),
            before.len(),
            "overwritten in place, not truncated"
        );
        assert!(!contains(&after, key.dangerous_as_bytes()));
        // No 8-byte fragment of it either.
        for frag in key.dangerous_as_bytes().windows(8) {
            assert!(!contains(&after, frag));
        }
        assert!(after[offset_of(1) as usize..].iter().all(|&b| b == 0));
        assert!(contains(&after, kept.dangerous_as_bytes()));
        assert!(ks.is_live(keep));
    }

    #[test]
    fn efface_is_idempotent_and_rejects_out_of_range() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        let (a, _) = ks.allocate().unwrap();
        ks.efface(a).unwrap();
        ks.efface(a).unwrap();
        assert_eq!(ks.live_slots(), 0);
        assert!(matches!(
            ks.efface(SlotId(7)),
            Err(VaultError::NoSuchSlot(7))
        ));
        assert!(matches!(ks.get(SlotId(7)), Err(VaultError::NoSuchSlot(7))));
    }

    #[test]
    fn flipped_byte_in_a_slot_is_an_error_naming_the_slot() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        ks.allocate().unwrap();
        ks.allocate().unwrap();
        ks.allocate().unwrap();
        ks.efface(SlotId(2)).unwrap();
        drop(ks);
        let good = std::fs::read(&path).unwrap();

        // Key byte, check byte and padding of live slot 1; any byte of free slot 2.
        for (at, slot) in [
            (64 * 2 + 5, 1),
            (64 * 2 + 34, 1),
            (64 * 2 + 50, 1),
            (64 * 3 + 9, 2),
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            match KeyStore::open(&path) {
                Err(VaultError::CorruptSlot { slot: s, .. }) => assert_eq!(s, slot),
                other => panic!("byte {at}: expected CorruptSlot, got {other:?}"),
            }
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(KeyStore::open(&path).unwrap().live_slots(), 2);
    }

    #[test]
    fn truncated_or_foreign_file_is_an_error() {
        let (_dir, path) = store();
        let mut ks = KeyStore::open(&path).unwrap();
        ks.allocate().unwrap();
        drop(ks);
        let good = std::fs::read(&path).unwrap();

        for cut in [good.len() - 1, good.len() - 40, 70, 20, 3] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                matches!(KeyStore::open(&path), Err(VaultError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut foreign = good.clone();
        foreign[..8].copy_from_slice(b"SQLite f");
        std::fs::write(&path, &foreign).unwrap();
        assert!(matches!(
            KeyStore::open(&path),
            Err(VaultError::BadHeader { .. })
        ));
        let mut newer = good.clone();
        newer[8] = 2;
        std::fs::write(&path, &newer).unwrap();
        let err = KeyStore::open(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                VaultError::UnsupportedFormat { file, what: FormatOf::KeyStore, found: 2, supported: [1] }
                    if *file == path
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("format 2") && text.contains("only format 1"),
            "{text}"
        );
        assert!(text.contains("a newer version"), "{text}");
        // Refused, never rewritten.
        assert_eq!(std::fs::read(&path).unwrap(), newer);
        assert_eq!(format_version(&path).unwrap(), Some(2));
    }

    #[test]
    fn format_version_reads_the_header_only() {
        let (dir, path) = store();
        assert_eq!(format_version(&path).unwrap(), None);
        KeyStore::open(&path).unwrap().allocate().unwrap();
        assert_eq!(format_version(&path).unwrap(), Some(VERSION));
        std::fs::write(&path, b"NOOKK").unwrap();
        assert!(matches!(
            format_version(&path),
            Err(VaultError::Truncated { len: 5 })
        ));
        std::fs::write(&path, b"SQLite format 3\0").unwrap();
        assert!(matches!(
            format_version(&path),
            Err(VaultError::BadHeader { .. })
        ));
        drop(dir);
    }

    #[test]
    fn empty_file_is_initialised() {
        let (_dir, path) = store();
        std::fs::write(&path, b"").unwrap();
        let mut ks = KeyStore::open(&path).unwrap();
        assert_eq!(ks.live_slots(), 0);
        ks.allocate().unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 128);
    }

    #[test]
    fn file_mode_is_0600_even_if_it_existed() {
        let (_dir, path) = store();
        let ks = KeyStore::open(&path).unwrap();
        drop(ks);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        KeyStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = StorageKey([0xab; KEY_LEN]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "StorageKey(..)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any single damaged byte anywhere in the file is reported as an
        /// error at open, never a panic and never silently accepted.
        #[test]
        fn any_flipped_byte_is_detected(at in 0usize..(64 * 4), flip in 1u8..=255) {
            let (_dir, path) = store();
            let mut ks = KeyStore::open(&path).unwrap();
            ks.allocate().unwrap();
            ks.allocate().unwrap();
            ks.efface(SlotId(0)).unwrap();
            ks.allocate().unwrap();
            ks.allocate().unwrap();
            ks.efface(SlotId(2)).unwrap();
            drop(ks);
            let mut bytes = std::fs::read(&path).unwrap();
            prop_assert_eq!(bytes.len(), 64 * 4);
            bytes[at] ^= flip;
            std::fs::write(&path, &bytes).unwrap();
            prop_assert!(KeyStore::open(&path).is_err());
        }
    }
}

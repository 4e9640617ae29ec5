//! How much the relay may store, and the disk it keeps for freeing space.
//!
//! Two bounds, both refusing only what would make the store grow — `Create`, `Put`
//! and, at the disk reserve, `Join` — with `StorageFull`; acks, leaves, closes and
//! expiry are never refused by them, since they are how space comes back:
//!
//! - **The storage quota** (`Limits::max_stored_bytes`): the envelope bodies and
//!   welcomes the relay holds for everyone together, counted as the log's live
//!   records and the welcomes' bytes. It keeps strangers from taking a whole disk
//!   with talks nobody reads.
//! - **The disk reserve** (`Limits::disk_reserve_bytes`): new talks, joins and
//!   envelopes are refused while the filesystem has less than that free, so what is
//!   left is there for the writes that free space (ack marks, tombstones, sled's own
//!   log). The reserve is also *held* in a file, `reserve` in the store's folder, made
//!   when there is room for it. Once the disk is nearly full anyway (something else
//!   filled it, or the relay stopped on a full disk) that file is removed, first
//!   thing at start-up and by the sweeper, which gives sled room to write: sled stops
//!   for good at its first failed write (and its open writes too: it fills the rest
//!   of its last 512 KiB segment), and a relay whose sled cannot write can neither
//!   start, ack nor close. The file comes back when the disk has room for it again.
//!
//! Free space is measured (`statvfs`) by the sweeper, every `CHECK_EVERY` bytes
//! admitted, and at every request while the disk is low, so a write admitted between
//! two measurements can take at most that much of the reserve.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nook_proto::{ErrorCode, ErrorFrame};

use super::{err, lock};

/// Default bound on envelope and welcome bytes held for all talks together.
pub const DEFAULT_MAX_STORED_BYTES: u64 = 8 << 30;
/// Default free disk kept for the writes that free space, and held in `reserve`:
/// room for sled to open (it fills out its last 512 KiB segment) and to write ack
/// marks, tombstones and its own cleaning many times over, and little on any disk.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 16 << 20;
/// The file that holds the reserve, in the store's folder.
pub const RESERVE_FILE: &str = "reserve";
/// Bytes admitted between two measurements of free space, at most.
const CHECK_EVERY: u64 = 1 << 20;
/// Free space under which a disk counts as full even with no reserve configured.
const FULL_BELOW: u64 = 1 << 20;

/// The storage bounds of one relay (see the module docs).
#[derive(Debug)]
pub(super) struct Space {
    dir: PathBuf,
    reserve: u64,
    quota: u64,
    /// Welcome bytes held (the log counts the envelopes).
    welcomes: AtomicU64,
    /// Free space was below the reserve when last measured.
    low: AtomicBool,
    /// Bytes admitted since free space was last measured.
    unmeasured: AtomicU64,
    /// Serialises the reserve file's removal and making.
    file: Mutex<()>,
}

impl Space {
    /// The bounds for the store in `dir`. Writes nothing; removes the reserve file
    /// if the disk is nearly full, so that opening the store and serving acks can
    /// write.
    pub(super) fn open(dir: &Path, reserve: u64, quota: u64) -> Space {
        let space = Space {
            dir: dir.to_path_buf(),
            reserve,
            quota,
            welcomes: AtomicU64::new(0),
            low: AtomicBool::new(false),
            unmeasured: AtomicU64::new(0),
            file: Mutex::new(()),
        };
        space.give_up_reserve_if_short();
        space
    }

    /// Bytes of welcomes now held, from recovery.
    pub(super) fn set_welcomes(&self, bytes: u64) {
        self.welcomes.store(bytes, Ordering::Relaxed);
    }
    pub(super) fn add_welcomes(&self, bytes: u64) {
        self.welcomes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(super) fn sub_welcomes(&self, bytes: u64) {
        let _ = self
            .welcomes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(bytes))
            });
    }
    pub(super) fn welcomes(&self) -> u64 {
        self.welcomes.load(Ordering::Relaxed)
    }
    pub(super) fn quota(&self) -> u64 {
        self.quota
    }

    /// Whether `adding` more bytes may be stored on top of `stored`: refused past
    /// the quota, or while the disk is at its reserve.
    pub(super) fn admit(&self, stored: u64, adding: u64) -> Result<(), ErrorFrame> {
        if stored.saturating_add(adding) > self.quota {
            return Err(err(
                ErrorCode::StorageFull,
                "this relay holds as much as its operator lets it store: new talks and \
                 envelopes are refused until members acknowledge, leave or close; try later",
            ));
        }
        self.admit_disk(adding)
    }

    /// Whether a write of about `adding` bytes may go to disk: refused while the
    /// disk's free space is below the reserve.
    pub(super) fn admit_disk(&self, adding: u64) -> Result<(), ErrorFrame> {
        if self.reserve == 0 {
            return Ok(());
        }
        let unmeasured = self.unmeasured.fetch_add(adding, Ordering::Relaxed) + adding;
        if self.low.load(Ordering::Relaxed) || unmeasured >= CHECK_EVERY.min(self.reserve / 8) {
            self.measure();
        }
        if self.low.load(Ordering::Relaxed) {
            return Err(disk_full());
        }
        Ok(())
    }

    /// Whether the disk is full or at its reserve now (measured): why a write that
    /// failed most likely did.
    pub(super) fn disk_full_now(&self) -> bool {
        self.measure();
        self.low.load(Ordering::Relaxed)
            || free_bytes(&self.dir).is_some_and(|free| free < FULL_BELOW)
    }

    /// The sweeper's turn: gives the reserve file up if the disk is nearly full,
    /// makes it again once there is room for it, and measures free space.
    pub(super) fn tend(&self) {
        if self.reserve == 0 {
            // Turned off: a reserve file an earlier run made is not kept either.
            let _ = fs::remove_file(self.dir.join(RESERVE_FILE));
            return;
        }
        self.give_up_reserve_if_short();
        let _one = lock(&self.file);
        let path = self.dir.join(RESERVE_FILE);
        let held = fs::metadata(&path).map_or(0, |m| m.len());
        if held < self.reserve && free_bytes(&self.dir).is_some_and(|free| free >= 2 * self.reserve)
        {
            match make_reserve(&path, self.reserve) {
                Ok(()) => tracing::info!(bytes = self.reserve, "disk reserve held again"),
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    tracing::warn!("could not make the disk reserve file: {e}");
                }
            }
        }
        self.measure();
    }

    /// Free space now, and whether it is below the reserve.
    fn measure(&self) {
        self.unmeasured.store(0, Ordering::Relaxed);
        if self.reserve == 0 {
            return;
        }
        if let Some(free) = free_bytes(&self.dir) {
            let low = free < self.reserve;
            if low != self.low.swap(low, Ordering::Relaxed) {
                if low {
                    tracing::warn!(
                        free,
                        reserve = self.reserve,
                        "disk at its reserve: new talks, joins and envelopes are refused until space is freed"
                    );
                } else {
                    tracing::info!(
                        free,
                        "disk has room again: new talks and envelopes are accepted"
                    );
                }
            }
        }
    }

    /// Removes the reserve file once free space is under half the reserve.
    fn give_up_reserve_if_short(&self) {
        if self.reserve == 0 {
            return;
        }
        let _one = lock(&self.file);
        let path = self.dir.join(RESERVE_FILE);
        if !path.exists() || free_bytes(&self.dir).is_none_or(|free| free >= self.reserve / 2) {
            return;
        }
        match fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                bytes = self.reserve,
                "disk nearly full: gave up the disk reserve so that acks, leaves and closes \
                 can still be written; free space on the data folder's disk"
            ),
            Err(e) => {
                tracing::error!("disk nearly full, and the reserve file cannot be removed: {e}")
            }
        }
    }
}

/// The refusal of a write that the disk has no room for.
pub(super) fn disk_full() -> ErrorFrame {
    err(
        ErrorCode::StorageFull,
        "the relay's disk is full (at its reserve): new talks and envelopes are refused; \
         acks, leaves and closes still work; try later",
    )
}

/// Bytes an unprivileged process may still write on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Makes the reserve file `len` bytes long, with its blocks allocated.
fn make_reserve(path: &Path, len: u64) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)?;
    file.sync_all()
}

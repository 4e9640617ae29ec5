//! [`Log`]: an append-only file of sealed records, for data that is written
//! once, read rarely and deleted soon (the relay's envelopes).
//!
//! Why not sled: sled 0.34 writes its log synchronously (`sync_file_range`)
//! twice for every batch and serialises batches on a global lock, which made
//! sled, not the network, the relay's bottleneck (BENCHMARKS.md: ~6k durable
//! envelopes/s, 70 % of the relay's CPU in sled). Here an append is a copy into
//! memory; [`Log::sync`] writes everything appended since the last one with one
//! `pwrite` and makes it durable with one `fdatasync`. Records not yet written
//! are read back from memory.
//!
//! The log does not seal: callers append values sealed by
//! [`Namespace::seal`](crate::Namespace::seal), so everything in it is
//! crypto-shredded with its namespace, exactly as values in sled are. It
//! never erases in place either: a dead record stays on disk until its whole
//! segment is unlinked, and is unreadable from the moment its namespace's key
//! is effaced.
//!
//! # On disk
//!
//! ```text
//! <dir>/<id>.seg      id: 16 lowercase hex digits, increasing; mode 0600
//!   magic            8 bytes  "nooklog" and the format version as one ASCII
//!                             digit: "nooklog1" (format 1, the only one so far)
//!   record*
//! record:
//!   len              u32 LE   length of `body`
//!   crc              u32 LE   CRC-32 (IEEE) of `body`
//!   body:
//!     namespace      u64 BE   the namespace number
//!     key_len        u8       at most MAX_KEY
//!     key            key_len bytes (the caller's entry key, as given)
//!     sealed         the rest: nonce ‖ ciphertext ‖ tag, as sealed by the namespace
//! ```
//!
//! A segment is only ever appended to by the process that created it: every
//! open starts a fresh segment (on a full disk, the first append does), so a torn
//! tail left by a crash is never
//! followed by new records. A record that is short, oversized or fails its CRC
//! with nothing intact after it is that torn tail: only records appended after
//! the last completed [`Log::sync`] can be there, and none of those was
//! acknowledged. One that intact records follow is damage (a flipped byte on
//! disk), not a crash: it is skipped to the next intact record and counted in
//! [`Recovery::damaged_records`], so it costs that record and no other.
//!
//! # What is never dropped
//!
//! A segment whose header names another format version (what an older or a
//! newer nook wrote), or that is not a log segment at all, is not a torn tail:
//! [`Log::open`] refuses the whole log ([`VaultError::UnsupportedFormat`],
//! [`VaultError::Corrupt`]) before it changes anything, and never releases or
//! unlinks such a file. The only headers taken for a crash are an *unborn*
//! segment's: empty, a cut-off `nooklog1`, or all zero bytes (its creation was
//! interrupted before any sync, so nothing in it was acknowledged).
//!
//! # Liveness and reclaiming space
//!
//! Every record starts live. Callers [`Log::release`] a record when it is no
//! longer needed (acknowledged by everyone, or its namespace destroyed). A
//! segment other than the one being appended to whose records are all
//! released is *dead*; its file is unlinked by the next [`Log::unlink_dead`],
//! which callers run only after whatever made those records dead is durable.
//! A segment whose live bytes fall below a quarter of its size is *sparse*
//! ([`Log::sparse_segments`]): callers copy its live records forward with
//! [`Log::copy`] so that one stuck record cannot pin a whole segment's disk.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::VaultError;
use crate::error::FormatOf;
use crate::keystore::sync_parent_dir;

const MAGIC: &[u8; 8] = b"nooklog1";
/// The segment format [`MAGIC`] names (its last byte, as an ASCII digit).
const FORMAT: u32 = 1;
/// The segment formats this version reads.
pub const SUPPORTED: &[u32] = &[FORMAT];
const SUFFIX: &str = ".seg";
/// `len` and `crc`.
const HEADER: usize = 8;
/// Longest entry key a record may carry.
pub const MAX_KEY: usize = 64;
/// Longest record body; anything longer in a file is damage, not data.
pub const MAX_BODY: usize = 4 << 20;
/// Size after which the segment being appended to is closed and a new one
/// started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 32 << 20;
/// Appended bytes held in memory before an append writes them out itself
/// rather than leaving them to the next sync.
const MAX_PENDING: usize = 1 << 20;

/// Where a record is: its segment, the offset of its header, the length of
/// header and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// A record as read back.
#[derive(Debug)]
pub struct Record {
    pub namespace: u64,
    pub key: Vec<u8>,
    pub sealed: Vec<u8>,
    pub loc: Loc,
}

/// What [`Log::open`] read back.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Intact records the caller kept (live until released).
    pub kept: u64,
    /// Intact records the caller did not want (released at once).
    pub dropped: u64,
    /// Segments that ended in an incomplete or damaged record (an append a
    /// crash interrupted; never acknowledged, since it followed the last sync).
    pub torn_segments: usize,
    /// Damaged records that intact ones followed, skipped: acknowledged data lost
    /// to damage on disk (a crash cannot cause it), which callers must report.
    pub damaged_records: u64,
}

/// Figures for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: usize,
    pub bytes: u64,
    pub live_bytes: u64,
    pub live_records: u64,
}

struct Segment {
    file: Arc<File>,
    bytes: u64,
    live_bytes: u64,
    live_records: u64,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to; in `segments` unless the log was opened on a
    /// full disk and has not been appended to since (then `undo.abandoned`).
    active: u64,
    /// Rotated segments whose tail has not been synced yet.
    unsynced: Vec<Arc<File>>,
    /// An append since the last sync.
    dirty: bool,
    /// Records appended to the active segment and not written yet: its bytes
    /// from file offset `written` on.
    pending: Vec<u8>,
    written: u64,
    /// Segments whose records are all released, not yet unlinked.
    dead: Vec<u64>,
    /// What a failed sync gives up (see [`Log::sync`]).
    undo: Undo,
}

/// The records a failed [`Log::sync`] gives up, and where they were.
#[derive(Default)]
struct Undo {
    /// Where the last successful sync ended, as (segment, offset): every record at
    /// or after it was appended since, and a failed sync gives them all up.
    synced_to: (u64, u64),
    /// Segments a failed sync cut back, and where: a record at or past the offset
    /// is lost. Forgotten when the segment is unlinked.
    cuts: BTreeMap<u64, u64>,
    /// Cut segments whose file is not truncated yet: every sync retries them
    /// first, and fails while it cannot.
    untruncated: Vec<u64>,
    /// The active segment was cut back: the next append starts a new segment, so
    /// that no record takes the place of a lost one.
    abandoned: bool,
    /// Syncs that will fail on purpose ([`Log::dangerous_fail_syncs`]).
    fail_syncs: u64,
}

/// The log: a folder of segments. `Send + Sync`; appends are serialised by
/// one short lock (a copy into memory); a sync holds it for its one `pwrite`
/// and not for its `fdatasync`.
pub struct Log {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Serialises [`Log::sync`] so that two syncs do not race on `unsynced`.
    syncing: Mutex<()>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{SUFFIX}"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Encodes one record (header and body).
fn encode(namespace: u64, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    encode_with(namespace, key, sealed.len(), |out| {
        out.extend_from_slice(sealed);
        Ok(())
    })
}

/// A record whose sealed part `write` appends to the buffer (about `hint` bytes).
fn encode_with(
    namespace: u64,
    key: &[u8],
    hint: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), VaultError>,
) -> Result<Vec<u8>, VaultError> {
    if key.len() > MAX_KEY {
        return Err(VaultError::corrupt(format!(
            "a log entry key of {} bytes is longer than {MAX_KEY}",
            key.len()
        )));
    }
    let mut out = Vec::with_capacity(HEADER + 9 + key.len() + hint);
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&namespace.to_be_bytes());
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    write(&mut out)?;
    let body_len = out.len() - HEADER;
    if body_len > MAX_BODY {
        return Err(VaultError::ValueTooLarge);
    }
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Parses the body of a record whose CRC matched.
fn parse_body(body: &[u8], loc: Loc) -> Option<Record> {
    let namespace = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let key_len = usize::from(*body.get(8)?);
    if key_len > MAX_KEY {
        return None;
    }
    let key = body.get(9..9 + key_len)?.to_vec();
    let sealed = body.get(9 + key_len..)?.to_vec();
    Some(Record {
        namespace,
        key,
        sealed,
        loc,
    })
}

/// What a segment file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// `nooklog1`: ours.
    Ours,
    /// Created by a run that crashed before anything in it was synced: empty,
    /// a cut-off magic, or nothing but zero bytes. Holds nothing acknowledged.
    Unborn,
    /// `nooklog` and another version digit: another nook's segment.
    Version(u32),
    /// Anything else: not a segment of ours, or damaged where no crash can
    /// damage it.
    Foreign,
}

fn head_of(bytes: &[u8]) -> Head {
    match bytes.get(..MAGIC.len()) {
        Some(m) if m == MAGIC => Head::Ours,
        Some([b'n', b'o', b'o', b'k', b'l', b'o', b'g', d]) if d.is_ascii_digit() => {
            Head::Version(u32::from(d - b'0'))
        }
        None if MAGIC.starts_with(bytes) => Head::Unborn,
        _ if bytes.iter().all(|b| *b == 0) => Head::Unborn,
        _ => Head::Foreign,
    }
}

/// Refuses a segment file that is neither ours nor unborn, naming it.
fn check_head(path: &Path, bytes: &[u8]) -> Result<Head, VaultError> {
    match head_of(bytes) {
        Head::Version(found) => Err(VaultError::UnsupportedFormat {
            file: path.to_path_buf(),
            what: FormatOf::LogSegment,
            found,
            supported: SUPPORTED,
        }),
        Head::Foreign => Err(VaultError::corrupt(format!(
            "{} is not a nook log segment of any version (its first bytes are not \
             \"nooklog\" and a version); nothing was changed or removed: move it out of \
             this folder if it does not belong there",
            path.display()
        ))),
        head => Ok(head),
    }
}

/// What [`read_segment`] found in one segment file.
struct Scan {
    /// Every intact record, in order.
    records: Vec<Record>,
    /// Where the segment ends in an incomplete or damaged tail: nothing intact
    /// follows it (an append a crash interrupted).
    torn: Option<u64>,
    /// Damaged stretches that intact records follow: not a crash's torn tail (an
    /// append only ever follows synced records) but damage to acknowledged data,
    /// each skipped to the next intact record.
    damaged: u64,
}

/// The intact record at `at`, if one is there: a whole header and body, a length
/// within bounds, a matching CRC and a body that parses.
fn record_at(id: u64, bytes: &[u8], at: usize) -> Option<Record> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_BODY {
        return None;
    }
    let body = bytes.get(at + HEADER..at + HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let loc = Loc {
        segment: id,
        offset: at as u64,
        len: (HEADER + len) as u32,
    };
    parse_body(body, loc)
}

/// Every intact record of one segment file, in order. A damaged record followed
/// by intact ones is skipped (and counted) rather than taken for the end, so a
/// flipped byte costs one record, not the rest of the segment; a damaged stretch
/// that nothing intact follows is a torn tail. Call it only for [`Head::Ours`] and
/// [`Head::Unborn`].
fn read_segment(id: u64, bytes: &[u8]) -> Scan {
    let mut scan = Scan {
        records: Vec::new(),
        torn: None,
        damaged: 0,
    };
    if bytes.get(..MAGIC.len()) != Some(MAGIC) {
        scan.torn = Some(0);
        return scan;
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        if let Some(record) = record_at(id, bytes, at) {
            at += record.loc.len as usize;
            scan.records.push(record);
            continue;
        }
        // The smallest body is a namespace and a key length.
        match (at + 1..bytes.len().saturating_sub(HEADER + 9))
            .find(|&next| record_at(id, bytes, next).is_some())
        {
            Some(next) => {
                scan.damaged += 1;
                at = next;
            }
            None => {
                scan.torn = Some(at as u64);
                break;
            }
        }
    }
    scan
}

/// Creates segment `id` with its header and makes its name durable. A failure
/// (most often a full disk) removes what it made, so that the same id can be
/// created again once there is room.
fn create_segment(dir: &Path, id: u64) -> Result<File, VaultError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let started = file
        .write_all_at(MAGIC, 0)
        // The new name must survive a crash before any record in it is
        // acknowledged; segments are large, so this is rare.
        .and_then(|()| File::open(dir)?.sync_all());
    if let Err(e) = started {
        let _ = fs::remove_file(&path);
        return Err(e.into());
    }
    Ok(file)
}

/// Whether `e` says the disk (or the user's quota on it) is full.
pub fn is_disk_full(e: &VaultError) -> bool {
    matches!(e, VaultError::Io(io) if matches!(
        io.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    ))
}

/// Refuses the log in `dir` if a segment in it is of another format version
/// ([`VaultError::UnsupportedFormat`]) or no segment at all
/// ([`VaultError::Corrupt`]), reading only headers and changing nothing; a
/// missing folder is an empty log. [`Log::open`] runs the same check first;
/// this is for callers that must refuse before they open anything else.
pub fn check_formats(dir: &Path) -> Result<(), VaultError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut ids = Vec::new();
    for entry in entries {
        if let Some(id) = entry?.file_name().to_str().and_then(parse_segment_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    check_heads(dir, &ids)
}

/// The header check of [`check_formats`] for the segments `ids`.
fn check_heads(dir: &Path, ids: &[u64]) -> Result<(), VaultError> {
    for &id in ids {
        let path = segment_path(dir, id);
        let mut head = Vec::with_capacity(MAGIC.len());
        File::open(&path)?
            .take(MAGIC.len() as u64)
            .read_to_end(&mut head)?;
        if check_head(&path, &head)? == Head::Unborn
            && fs::metadata(&path)?.len() > MAGIC.len() as u64
        {
            // Zeros in the header: unborn only if zeros throughout.
            check_head(&path, &fs::read(&path)?)?;
        }
    }
    Ok(())
}

/// What [`Log::inspect`] found in a log's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Segment files, of every format.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// How many segments name each format version (unborn ones, whose
    /// creation a crash interrupted, are left out).
    pub formats: BTreeMap<u32, usize>,
    /// Intact records per namespace number, in segments of a format this
    /// version reads. Released records count until their segment is unlinked.
    pub records: BTreeMap<u64, u64>,
    /// Files named like segments that are not a segment of any version.
    pub foreign: usize,
}

impl Log {
    /// Reads the log in `dir` without changing anything (a missing folder is
    /// an empty log), for an operator's view (`nook-relay status`): segments
    /// of every format are counted and named by version, never refused.
    pub fn inspect(dir: &Path) -> Result<LogSummary, VaultError> {
        let mut summary = LogSummary::default();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(summary),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) else {
                continue;
            };
            let bytes = fs::read(entry.path())?;
            summary.segments += 1;
            summary.bytes += bytes.len() as u64;
            match head_of(&bytes) {
                Head::Ours => {
                    *summary.formats.entry(FORMAT).or_default() += 1;
                    for record in read_segment(id, &bytes).records {
                        *summary.records.entry(record.namespace).or_default() += 1;
                    }
                }
                Head::Version(v) => *summary.formats.entry(v).or_default() += 1,
                Head::Unborn => {}
                Head::Foreign => summary.foreign += 1,
            }
        }
        Ok(summary)
    }

    /// Opens (or creates) the log in `dir` (mode 0700), hands every intact
    /// record to `keep`, oldest first, and starts a new segment for appends.
    /// A record for which `keep` returns true is live until released; the
    /// others are released at once. One segment is in memory at a time.
    ///
    /// A segment of another format version, or a file named like a segment
    /// that is none, is an error before any record reaches `keep` and before
    /// anything is written (module docs, "What is never dropped").
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        mut keep: impl FnMut(Record) -> bool,
    ) -> Result<(Log, Recovery), VaultError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        // Every header first: a segment of another format (or none) refuses
        // the whole log before anything is read into the caller, released or
        // written. Such a file is not a torn tail and is never dropped.
        check_heads(dir, &ids)?;
        let mut segments = BTreeMap::new();
        let mut recovery = Recovery::default();
        for &id in &ids {
            let path = segment_path(dir, id);
            let bytes = fs::read(&path)?;
            // Checked above; checked again in case the file changed since.
            check_head(&path, &bytes)?;
            let Scan {
                records: found,
                torn,
                damaged,
            } = read_segment(id, &bytes);
            if torn.is_some() {
                recovery.torn_segments += 1;
            }
            recovery.damaged_records += damaged;
            let (mut live_bytes, mut live_records) = (0, 0);
            for record in found {
                let len = u64::from(record.loc.len);
                if keep(record) {
                    live_bytes += len;
                    live_records += 1;
                    recovery.kept += 1;
                } else {
                    recovery.dropped += 1;
                }
            }
            let file = OpenOptions::new().read(true).open(segment_path(dir, id))?;
            segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    bytes: bytes.len() as u64,
                    live_bytes,
                    live_records,
                },
            );
        }
        let active = ids.last().map_or(1, |last| last + 1);
        // On a full disk the log still opens, to be read and released from: the
        // segment for appends is then made by the first append (as after a failed
        // sync, `abandoned`), which fails until there is room again.
        let deferred = match create_segment(dir, active).and_then(|file| {
            file.sync_all()?;
            sync_parent_dir(dir)?;
            Ok(file)
        }) {
            Ok(file) => {
                segments.insert(
                    active,
                    Segment {
                        file: Arc::new(file),
                        bytes: MAGIC.len() as u64,
                        live_bytes: 0,
                        live_records: 0,
                    },
                );
                false
            }
            Err(e) if is_disk_full(&e) => {
                let _ = fs::remove_file(segment_path(dir, active));
                true
            }
            Err(e) => return Err(e),
        };
        let log = Log {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(4096),
            state: Mutex::new(State {
                segments,
                active,
                unsynced: Vec::new(),
                dirty: false,
                pending: Vec::new(),
                written: MAGIC.len() as u64,
                dead: Vec::new(),
                undo: Undo {
                    synced_to: (active, MAGIC.len() as u64),
                    abandoned: deferred,
                    ..Undo::default()
                },
            }),
            syncing: Mutex::new(()),
        };
        // Segments that held nothing intact are dead at once.
        {
            let mut st = lock(&log.state);
            let empty: Vec<u64> = st
                .segments
                .iter()
                .filter(|(id, s)| **id != active && s.live_records == 0)
                .map(|(id, _)| *id)
                .collect();
            st.dead.extend(empty);
        }
        Ok((log, recovery))
    }

    /// Appends a record: readable at once, written and durable with the next
    /// [`Log::sync`].
    pub fn append(&self, namespace: u64, key: &[u8], sealed: &[u8]) -> Result<Loc, VaultError> {
        let record = encode(namespace, key, sealed)?;
        self.append_raw(&record)
    }

    /// [`Log::append`] of a sealed value that `seal` appends to the record buffer
    /// itself (about `hint` bytes), so the value is not copied in between.
    pub fn append_with(
        &self,
        namespace: u64,
        key: &[u8],
        hint: usize,
        seal: impl FnOnce(&mut Vec<u8>) -> Result<(), VaultError>,
    ) -> Result<Loc, VaultError> {
        let record = encode_with(namespace, key, hint, seal)?;
        self.append_raw(&record)
    }

    fn append_raw(&self, record: &[u8]) -> Result<Loc, VaultError> {
        let mut st = lock(&self.state);
        if st.undo.abandoned
            || st.segments.get(&st.active).map_or(0, |s| s.bytes) >= self.segment_bytes
        {
            self.rotate(&mut st)?;
            st.undo.abandoned = false;
        } else if st.pending.len() >= MAX_PENDING {
            write_pending(&mut st)?;
        }
        let active = st.active;
        let seg = st
            .segments
            .get_mut(&active)
            .ok_or_else(|| VaultError::corrupt("the log lost its active segment"))?;
        let offset = seg.bytes;
        seg.bytes += record.len() as u64;
        seg.live_bytes += record.len() as u64;
        seg.live_records += 1;
        st.pending.extend_from_slice(record);
        st.dirty = true;
        Ok(Loc {
            segment: active,
            offset,
            len: record.len() as u32,
        })
    }

    /// Closes the active segment and starts the next one.
    fn rotate(&self, st: &mut State) -> Result<(), VaultError> {
        write_pending(st)?;
        let next = st.active + 1;
        let file = create_segment(&self.dir, next)?;
        if let Some(old) = st.segments.get(&st.active) {
            st.unsynced.push(old.file.clone());
            if old.live_records == 0 {
                st.dead.push(st.active);
            }
        }
        st.segments.insert(
            next,
            Segment {
                file: Arc::new(file),
                bytes: MAGIC.len() as u64,
                live_bytes: 0,
                live_records: 0,
            },
        );
        st.active = next;
        st.written = MAGIC.len() as u64;
        Ok(())
    }

    /// The bytes of the record at `loc`, from memory if not written yet.
    fn read_raw(&self, loc: Loc) -> Result<Vec<u8>, VaultError> {
        let len = loc.len as usize;
        let file = {
            let st = lock(&self.state);
            if loc.segment == st.active && loc.offset >= st.written {
                let start = usize::try_from(loc.offset - st.written).unwrap_or(usize::MAX);
                return start
                    .checked_add(len)
                    .and_then(|end| st.pending.get(start..end))
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| VaultError::corrupt("a log location past its end"));
            }
            st.segments
                .get(&loc.segment)
                .map(|s| s.file.clone())
                .ok_or_else(|| VaultError::corrupt("a log record's segment is gone"))?
        };
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, loc.offset)?;
        Ok(buf)
    }

    /// Reads the record at `loc` back (CRC checked).
    pub fn read(&self, loc: Loc) -> Result<Record, VaultError> {
        let buf = self.read_raw(loc)?;
        read_framed(loc, &buf)
            .ok_or_else(|| VaultError::corrupt("a log record failed its checksum"))
    }

    /// Appends a copy of the record at `loc` and releases the original; for
    /// moving live records out of a sparse segment. The original's segment is
    /// unlinked only by an [`Log::unlink_dead`] after a sync, so the copy is
    /// durable by then — unless that sync fails and gives the copy up
    /// ([`Log::is_lost`]) with the original already released. A caller that must
    /// not lose the record appends the copy itself and releases the original once
    /// a sync kept the copy (the relay's compaction does).
    pub fn copy(&self, loc: Loc) -> Result<Loc, VaultError> {
        let buf = self.read_raw(loc)?;
        if read_framed(loc, &buf).is_none() {
            return Err(VaultError::corrupt("a log record failed its checksum"));
        }
        let new = self.append_raw(&buf)?;
        self.release(loc);
        Ok(new)
    }

    /// The record at `loc` is no longer needed.
    pub fn release(&self, loc: Loc) {
        let mut st = lock(&self.state);
        let active = st.active;
        let Some(seg) = st.segments.get_mut(&loc.segment) else {
            return;
        };
        seg.live_records = seg.live_records.saturating_sub(1);
        seg.live_bytes = seg.live_bytes.saturating_sub(u64::from(loc.len));
        if seg.live_records == 0 && loc.segment != active && !st.dead.contains(&loc.segment) {
            st.dead.push(loc.segment);
        }
    }

    /// Makes every append that returned before this call durable: one
    /// `pwrite` of what is pending, then one `fdatasync` of the active segment
    /// (and of segments rotated since the last sync). Cheap when nothing was
    /// appended.
    ///
    /// A sync that fails gives up every record appended since the last one that
    /// succeeded, so that a write reported as failed can never turn up later:
    /// they are dropped from memory, cut off the files (truncated and synced; a
    /// truncation that fails is retried by every later sync, which fails until it
    /// succeeds), and [`Log::is_lost`] says so for each of them. Appends go on in
    /// a new segment, so no later record takes a lost one's place. The caller
    /// forgets what it kept of the lost records and [`Log::release`]s them.
    pub fn sync(&self) -> Result<(), VaultError> {
        let _one = lock(&self.syncing);
        let (files, active, point) = {
            let mut st = lock(&self.state);
            if let Err(e) = truncate_cuts(&mut st) {
                give_up_unsynced(&mut st);
                return Err(e);
            }
            if !st.dirty && st.unsynced.is_empty() {
                return Ok(());
            }
            if let Err(e) = write_pending(&mut st) {
                give_up_unsynced(&mut st);
                return Err(e);
            }
            st.dirty = false;
            let active = st.segments.get(&st.active).map(|s| s.file.clone());
            (
                std::mem::take(&mut st.unsynced),
                active,
                (st.active, st.written),
            )
        };
        let mut result = files
            .iter()
            .chain(active.iter())
            .try_for_each(|f| f.sync_data())
            .map_err(VaultError::from);
        let mut st = lock(&self.state);
        if result.is_ok() && st.undo.fail_syncs > 0 {
            st.undo.fail_syncs -= 1;
            result = Err(VaultError::Io(std::io::Error::other(
                "a sync made to fail by Log::dangerous_fail_syncs",
            )));
        }
        match result {
            Ok(()) => st.undo.synced_to = point,
            // The files taken above are cut back to what was synced before.
            Err(_) => give_up_unsynced(&mut st),
        }
        result
    }

    /// Whether the record at `loc` was given up by a failed [`Log::sync`]: it is
    /// not on disk and never will be.
    pub fn is_lost(&self, loc: Loc) -> bool {
        lock(&self.state)
            .undo
            .cuts
            .get(&loc.segment)
            .is_some_and(|cut| loc.offset >= *cut)
    }

    /// Makes the next `n` syncs that have something to write fail once they have
    /// written it, as an `fdatasync` that reports an I/O error does (the bytes may
    /// be in the file). For tests of what a failed sync undoes; `0` ends it.
    pub fn dangerous_fail_syncs(&self, n: u64) {
        lock(&self.state).undo.fail_syncs = n;
    }

    /// True if some segment is dead and waits for [`Log::unlink_dead`].
    pub fn has_dead(&self) -> bool {
        !lock(&self.state).dead.is_empty()
    }

    /// Takes the dead segments, to unlink after what killed them is durable.
    pub fn take_dead(&self) -> Vec<u64> {
        std::mem::take(&mut lock(&self.state).dead)
    }

    /// Gives back segments taken with [`Log::take_dead`] that could not be
    /// unlinked yet.
    pub fn keep_dead(&self, dead: Vec<u64>) {
        lock(&self.state).dead.extend(dead);
    }

    /// Unlinks segments taken with [`Log::take_dead`]. Call it after a
    /// [`Log::sync`] (copies out of them must be durable) and after the
    /// caller's own state that released them is durable. Returns how many
    /// files were removed; a failure puts the rest back for the next call.
    pub fn unlink_dead(&self, dead: Vec<u64>) -> Result<usize, VaultError> {
        let mut removed = 0;
        for (i, id) in dead.iter().enumerate() {
            {
                let st = lock(&self.state);
                // Revived? (Only the active segment gains records, and it is
                // never dead; this guards against caller mistakes.)
                if st.segments.get(id).is_some_and(|s| s.live_records > 0) {
                    continue;
                }
            }
            match fs::remove_file(segment_path(&self.dir, *id)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    lock(&self.state).dead.extend_from_slice(&dead[i..]);
                    return Err(e.into());
                }
            }
            let mut st = lock(&self.state);
            st.segments.remove(id);
            st.undo.cuts.remove(id);
            st.undo.untruncated.retain(|u| u != id);
            drop(st);
            removed += 1;
        }
        if removed > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }

    /// Closed segments whose live bytes are under a quarter of their size,
    /// oldest first, at most `max`.
    pub fn sparse_segments(&self, max: usize) -> Vec<u64> {
        let st = lock(&self.state);
        st.segments
            .iter()
            .filter(|(id, s)| {
                **id != st.active
                    && s.live_records > 0
                    && s.live_bytes.saturating_mul(4) < s.bytes
                    && s.bytes >= self.segment_bytes / 2
            })
            .map(|(id, _)| *id)
            .take(max)
            .collect()
    }

    pub fn stats(&self) -> LogStats {
        let st = lock(&self.state);
        st.segments.values().fold(
            LogStats {
                segments: st.segments.len(),
                ..LogStats::default()
            },
            |mut acc, s| {
                acc.bytes += s.bytes;
                acc.live_bytes += s.live_bytes;
                acc.live_records += s.live_records;
                acc
            },
        )
    }
}

/// Writes the active segment's pending bytes at their offset. On failure they
/// stay pending (a partial write is simply written again), so nothing after a
/// hole can be acknowledged.
fn write_pending(st: &mut State) -> Result<(), VaultError> {
    if st.pending.is_empty() {
        return Ok(());
    }
    let file = st
        .segments
        .get(&st.active)
        .map(|s| s.file.clone())
        .ok_or_else(|| VaultError::corrupt("the log lost its active segment"))?;
    file.write_all_at(&st.pending, st.written)?;
    st.written += st.pending.len() as u64;
    st.pending.clear();
    if st.pending.capacity() > 4 * MAX_PENDING {
        st.pending = Vec::new();
    }
    Ok(())
}

/// A sync failed: gives up every record appended since the last successful one
/// (see [`Log::sync`]). Truncation errors are left for the next sync to retry.
fn give_up_unsynced(st: &mut State) {
    let (from, at) = st.undo.synced_to;
    st.pending.clear();
    st.dirty = false;
    let active = st.active;
    let mut cut_active = false;
    for (&id, seg) in st.segments.range_mut(from..) {
        let cut = if id == from { at } else { MAGIC.len() as u64 };
        if seg.bytes <= cut {
            continue;
        }
        seg.bytes = cut;
        cut_active |= id == active;
        st.undo.cuts.insert(id, cut);
        if !st.undo.untruncated.contains(&id) {
            st.undo.untruncated.push(id);
        }
    }
    if cut_active {
        // Nothing of it is pending any more: it ends at the cut.
        st.written = st.segments.get(&active).map_or(at, |s| s.bytes);
        st.undo.abandoned = true;
    }
    let _ = truncate_cuts(st);
}

/// Truncates the segments a failed sync cut back and whose files still hold more.
fn truncate_cuts(st: &mut State) -> Result<(), VaultError> {
    while let Some(&id) = st.undo.untruncated.last() {
        let cut = st.undo.cuts.get(&id).copied();
        if let (Some(seg), Some(cut)) = (st.segments.get(&id), cut) {
            seg.file.set_len(cut)?;
            seg.file.sync_all()?;
        }
        st.undo.untruncated.pop();
    }
    Ok(())
}

/// The one record framed at the start of `buf`, if intact.
fn read_framed(loc: Loc, buf: &[u8]) -> Option<Record> {
    let header = buf.get(..HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    match buf.get(HEADER..HEADER + len) {
        Some(body) if HEADER + len == buf.len() && crc32fast::hash(body) == crc => {
            parse_body(body, loc)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Log, Vec<Record>) {
        let mut found = Vec::new();
        let (log, _) = Log::open(dir, 4096, |r| {
            found.push(Record {
                namespace: r.namespace,
                key: r.key.clone(),
                sealed: r.sealed.clone(),
                loc: r.loc,
            });
            true
        })
        .unwrap();
        (log, found)
    }

    fn files(dir: &Path) -> Vec<u64> {
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_segment_name))
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn appended_records_read_back_and_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, found) = open(tmp.path());
        assert!(found.is_empty());
        let a = log.append(7, b"e1", b"sealed one").unwrap();
        let b = log.append(9, b"e2", &[0xAB; 300]).unwrap();
        assert_eq!(log.read(a).unwrap().sealed, b"sealed one");
        let rb = log.read(b).unwrap();
        assert_eq!((rb.namespace, rb.key.as_slice()), (9, &b"e2"[..]));
        log.sync().unwrap();
        drop(log);
        let (_log, found) = open(tmp.path());
        let got: Vec<(u64, Vec<u8>, Loc)> = found
            .into_iter()
            .map(|r| (r.namespace, r.key, r.loc))
            .collect();
        assert_eq!(got, vec![(7, b"e1".to_vec(), a), (9, b"e2".to_vec(), b)]);
    }

    #[test]
    fn append_with_frames_what_the_closure_writes_and_a_failure_appends_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log
            .append_with(3, b"e7", 16, |out| {
                out.extend_from_slice(b"written in place");
                Ok(())
            })
            .unwrap();
        let same = log.append(3, b"e7", b"written in place").unwrap();
        assert_eq!(a.len, same.len, "the same record as `append`");
        let failed = log.append_with(3, b"e8", 16, |out| {
            out.extend_from_slice(b"partial");
            Err(VaultError::ValueTooLarge)
        });
        assert!(matches!(failed, Err(VaultError::ValueTooLarge)));
        let too_big = log.append_with(3, b"e9", 0, |out| {
            out.resize(out.len() + MAX_BODY, 0);
            Ok(())
        });
        assert!(matches!(too_big, Err(VaultError::ValueTooLarge)));
        log.sync().unwrap();
        drop(log);
        let (_log, found) = open(tmp.path());
        let got: Vec<(u64, Vec<u8>, Vec<u8>)> = found
            .into_iter()
            .map(|r| (r.namespace, r.key, r.sealed))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, b"e7".to_vec(), b"written in place".to_vec()),
                (3, b"e7".to_vec(), b"written in place".to_vec()),
            ]
        );
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_segment_and_keeps_what_precedes() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log.append(1, b"k", b"first").unwrap();
        let b = log.append(1, b"k2", b"second").unwrap();
        log.sync().unwrap();
        drop(log);
        let path = segment_path(tmp.path(), a.segment);
        let full = fs::read(&path).unwrap();
        for cut in [
            b.offset as usize + 3,
            b.offset as usize + 12,
            full.len() - 1,
        ] {
            fs::write(&path, &full[..cut]).unwrap();
            let (_, rec) = Log::open(tmp.path(), 4096, |_| true).unwrap();
            assert_eq!((rec.kept, rec.torn_segments), (1, 1), "cut at {cut}");
            let (_log, found) = open(tmp.path());
            let locs: Vec<Loc> = found.iter().map(|r| r.loc).collect();
            assert_eq!(locs, vec![a], "cut at {cut}");
        }
        // A flipped bit in the second record's body fails its CRC.
        let mut bad = full.clone();
        bad[b.offset as usize + HEADER + 3] ^= 1;
        fs::write(&path, &bad).unwrap();
        let (_log, found) = open(tmp.path());
        assert_eq!(found.len(), 1);
        // Garbage after the last record is ignored too.
        let mut junk = full.clone();
        junk.extend_from_slice(&[0xFF; 40]);
        fs::write(&path, &junk).unwrap();
        let (_log, found) = open(tmp.path());
        assert_eq!(found.len(), 2);
    }

    /// Every file in `dir` with its bytes.
    fn snapshot(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut out: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), fs::read(e.path()).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    /// The bug of issue 27: a segment that another format version wrote was
    /// read as a torn tail, counted dead and unlinked with its acknowledged
    /// records. It must refuse the log, name both versions and change nothing.
    #[test]
    fn a_segment_of_another_format_refuses_the_log_and_is_never_dropped() {
        for version in [b'2', b'0'] {
            let tmp = tempfile::tempdir().unwrap();
            let (log, _) = open(tmp.path());
            let a = log.append(1, b"k", b"acknowledged").unwrap();
            log.append(1, b"k2", b"acknowledged too").unwrap();
            log.sync().unwrap();
            drop(log);
            let path = segment_path(tmp.path(), a.segment);
            let mut bytes = fs::read(&path).unwrap();
            bytes[7] = version;
            fs::write(&path, &bytes).unwrap();
            let before = snapshot(tmp.path());

            let mut offered = 0;
            let err = Log::open(tmp.path(), 4096, |_| {
                offered += 1;
                true
            })
            .unwrap_err();
            let found = u32::from(version - b'0');
            match &err {
                VaultError::UnsupportedFormat {
                    file,
                    what: FormatOf::LogSegment,
                    found: f,
                    supported: [1],
                } => assert_eq!((file, *f), (&path, found)),
                other => panic!("expected a format error, got {other:?}"),
            }
            let text = err.to_string();
            assert!(
                text.contains(&format!("log segment format {found}"))
                    && text.contains("only format 1"),
                "{text}"
            );
            assert_eq!(offered, 0, "no record reached the caller");
            assert!(matches!(
                check_formats(tmp.path()),
                Err(VaultError::UnsupportedFormat { .. })
            ));
            assert_eq!(snapshot(tmp.path()), before, "nothing written or removed");
            // An operator's view still tells what is there.
            let summary = Log::inspect(tmp.path()).unwrap();
            assert_eq!(summary.formats.get(&found), Some(&1));
            assert_eq!(summary.segments, 1);
            assert!(
                summary.records.is_empty(),
                "another format's records are not read"
            );
        }
    }

    #[test]
    fn a_file_that_is_no_segment_refuses_the_log_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        log.append(1, b"k", b"x").unwrap();
        log.sync().unwrap();
        drop(log);
        let stray = segment_path(tmp.path(), 0x10);
        fs::write(&stray, b"SQLite format 3\0 and more").unwrap();
        // Zeros where the header was, but data after it: damage, not a crash.
        let zeroed = segment_path(tmp.path(), 0x11);
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&zeroed, &bytes).unwrap();
        for bad in [&stray, &zeroed] {
            let before = snapshot(tmp.path());
            let err = Log::open(tmp.path(), 4096, |_| true).unwrap_err();
            assert!(
                matches!(&err, VaultError::Corrupt { what } if what.contains("is not a nook log segment")),
                "{err:?}"
            );
            assert_eq!(snapshot(tmp.path()), before);
            fs::remove_file(bad).unwrap();
        }
        assert_eq!(Log::inspect(tmp.path()).unwrap().formats.get(&1), Some(&1));
    }

    /// Only a segment whose creation a crash interrupted (nothing in it was
    /// ever synced) is taken for torn and dropped.
    #[test]
    fn an_unborn_segment_is_torn_and_dies() {
        for unborn in [&b""[..], b"nook", &[0u8; 8], &[0u8; 300]] {
            let tmp = tempfile::tempdir().unwrap();
            let (log, _) = open(tmp.path());
            let a = log.append(1, b"k", b"x").unwrap();
            log.sync().unwrap();
            drop(log);
            fs::write(segment_path(tmp.path(), a.segment + 5), unborn).unwrap();
            let (log, rec) = Log::open(tmp.path(), 4096, |_| true).unwrap();
            assert_eq!((rec.kept, rec.torn_segments), (1, 1), "{unborn:?}");
            assert_eq!(log.take_dead(), vec![a.segment + 5]);
        }
    }

    #[test]
    fn every_open_appends_to_a_new_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log.append(1, b"k", b"x").unwrap();
        log.sync().unwrap();
        drop(log);
        let (log, found) = open(tmp.path());
        let b = log.append(1, b"k", b"y").unwrap();
        assert_eq!(found.len(), 1);
        assert!(b.segment > a.segment);
    }

    #[test]
    fn appends_are_readable_at_once_and_on_disk_only_after_a_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log.append(4, b"k", b"kept in memory").unwrap();
        assert_eq!(log.read(a).unwrap().sealed, b"kept in memory");
        let on_disk = || fs::read(segment_path(tmp.path(), a.segment)).unwrap().len() as u64;
        assert_eq!(on_disk(), MAGIC.len() as u64);
        log.sync().unwrap();
        assert_eq!(on_disk(), a.offset + u64::from(a.len));
        assert_eq!(log.read(a).unwrap().sealed, b"kept in memory");
        // Unsynced appends are lost with the process, and only they are.
        let b = log.append(4, b"k2", b"never synced").unwrap();
        drop(log);
        let (_log, found) = open(tmp.path());
        assert_eq!(found.iter().map(|r| r.loc).collect::<Vec<_>>(), vec![a]);
        assert!(b.offset >= a.offset + u64::from(a.len));
    }

    #[test]
    fn a_large_backlog_is_written_before_the_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(tmp.path(), 64 << 20, |_| true).unwrap();
        let mut locs = Vec::new();
        for i in 0..600u32 {
            locs.push(log.append(1, &i.to_be_bytes(), &[7; 2048]).unwrap());
        }
        let written = fs::read(segment_path(tmp.path(), locs[0].segment)).unwrap();
        assert!(
            written.len() >= MAX_PENDING,
            "appends past MAX_PENDING were written"
        );
        for l in [locs[0], locs[300], locs[599]] {
            assert_eq!(log.read(l).unwrap().sealed, vec![7; 2048]);
        }
        log.sync().unwrap();
        drop(log);
        let (_log, found) = open(tmp.path());
        assert_eq!(found.len(), 600);
    }

    #[test]
    fn a_segment_is_unlinked_only_when_all_its_records_are_released() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let mut locs = Vec::new();
        for i in 0..40u8 {
            locs.push(log.append(1, &[i], &[i; 500]).unwrap());
        }
        let first = locs[0].segment;
        assert!(log.stats().segments > 2, "4 KiB segments rotate");
        let in_first: Vec<Loc> = locs
            .iter()
            .copied()
            .filter(|l| l.segment == first)
            .collect();
        for l in &in_first[1..] {
            log.release(*l);
        }
        assert!(!log.has_dead());
        log.release(in_first[0]);
        assert!(log.has_dead());
        log.sync().unwrap();
        let dead = log.take_dead();
        assert_eq!(dead, vec![first]);
        assert!(files(tmp.path()).contains(&first));
        assert_eq!(log.unlink_dead(dead).unwrap(), 1);
        assert!(!files(tmp.path()).contains(&first));
        assert!(log.read(in_first[0]).is_err());
        // The rest is still there after reopen.
        drop(log);
        let (_log, found) = open(tmp.path());
        assert_eq!(found.len(), locs.len() - in_first.len());
    }

    #[test]
    fn records_not_kept_at_open_are_released_and_their_segment_dies() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log.append(1, b"drop", b"x").unwrap();
        let b = log.append(2, b"keep", b"y").unwrap();
        log.sync().unwrap();
        drop(log);
        let (log, rec) = Log::open(tmp.path(), 4096, |r| r.namespace == 2).unwrap();
        assert_eq!((rec.kept, rec.dropped, rec.torn_segments), (1, 1, 0));
        assert_eq!(log.stats().live_records, 1);
        assert!(!log.has_dead());
        log.release(b);
        assert_eq!(log.take_dead(), vec![a.segment]);
    }

    #[test]
    fn the_active_segment_is_never_dead() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log.append(1, b"k", b"x").unwrap();
        log.release(a);
        assert!(!log.has_dead());
        assert_eq!(log.read(a).unwrap().sealed, b"x");
    }

    #[test]
    fn sparse_segments_are_found_and_copies_move_their_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let mut locs = Vec::new();
        for i in 0..30u8 {
            locs.push(log.append(3, &[i], &[i; 400]).unwrap());
        }
        let first = locs[0].segment;
        let keep = locs[0];
        for l in locs.iter().filter(|l| l.segment == first).skip(1) {
            log.release(*l);
        }
        assert_eq!(log.sparse_segments(8), vec![first]);
        let moved = log.copy(keep).unwrap();
        assert_ne!(moved.segment, first);
        let r = log.read(moved).unwrap();
        assert_eq!(
            (r.key.as_slice(), r.sealed.as_slice()),
            (&[0u8][..], &[0u8; 400][..])
        );
        assert!(log.sparse_segments(8).is_empty());
        log.sync().unwrap();
        let dead = log.take_dead();
        assert_eq!(log.unlink_dead(dead).unwrap(), 1);
        drop(log);
        let (_log, found) = open(tmp.path());
        assert!(found.iter().any(|r| r.loc == moved));
        assert!(!found.iter().any(|r| r.loc.segment == first));
    }

    #[test]
    fn a_failed_sync_gives_up_everything_since_the_last_good_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        let a = log.append(1, b"a", b"durable").unwrap();
        log.sync().unwrap();
        let b = log.append(1, b"b", b"refused one").unwrap();
        let c = log.append(2, b"c", b"refused two").unwrap();
        log.dangerous_fail_syncs(1);
        assert!(log.sync().is_err());
        assert!(!log.is_lost(a));
        assert!(log.is_lost(b) && log.is_lost(c));
        assert!(log.read(b).is_err(), "a lost record is not read back");
        // Written before the failure, yet cut off the file.
        let path = segment_path(tmp.path(), a.segment);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            a.offset + u64::from(a.len)
        );
        // Appends go on in a new segment; nothing takes a lost record's place.
        let d = log.append(1, b"d", b"after").unwrap();
        assert!(d.segment > a.segment && !log.is_lost(d));
        log.sync().unwrap();
        assert!(!log.is_lost(d));
        // The caller releases what was lost: the cut segment dies and goes.
        log.release(a);
        log.release(b);
        log.release(c);
        let dead = log.take_dead();
        assert_eq!(dead, vec![a.segment]);
        log.unlink_dead(dead).unwrap();
        drop(log);
        let (_log, found) = open(tmp.path());
        let keys: Vec<Vec<u8>> = found.into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec![b"d".to_vec()]);
    }

    #[test]
    fn a_backlog_written_before_a_failed_sync_is_cut_off_too() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(tmp.path(), 64 << 20, |_| true).unwrap();
        let first = log.append(1, b"kept", &[1; 100]).unwrap();
        log.sync().unwrap();
        let mut locs = Vec::new();
        for i in 0..600u32 {
            locs.push(log.append(1, &i.to_be_bytes(), &[7; 2048]).unwrap());
        }
        let path = segment_path(tmp.path(), first.segment);
        assert!(fs::metadata(&path).unwrap().len() >= MAX_PENDING as u64);
        log.dangerous_fail_syncs(1);
        assert!(log.sync().is_err());
        assert!(locs.iter().all(|l| log.is_lost(*l)));
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            first.offset + u64::from(first.len)
        );
        // The next sync has nothing of them to write.
        log.sync().unwrap();
        drop(log);
        let (_log, found) = open(tmp.path());
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn oversized_keys_are_refused_and_files_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, _) = open(tmp.path());
        assert!(log.append(1, &[0; MAX_KEY + 1], b"x").is_err());
        use std::os::unix::fs::PermissionsExt;
        for id in files(tmp.path()) {
            let mode = fs::metadata(segment_path(tmp.path(), id))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn arbitrary_segment_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..600))| {
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&bytes);
            let _ = read_segment(1, &file);
            let _ = read_segment(1, &bytes);
            let _ = check_head(Path::new("x"), &bytes);
        });
    }
}

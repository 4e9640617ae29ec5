//! The member's local store: one nook-vault under `<home>/vault`, one sealed
//! namespace per talk.
//!
//! Several `nook` processes may work on one home at once (a `read --follow` beside a
//! `send`), and sled lets only one process open a database. So the store is opened
//! for short sessions under an exclusive lock on `<home>/lock`, and every session
//! reloads the talk state it works on: whoever holds the lock sees the latest state.
//!
//! Keys inside a talk's namespace (`"talk/" ‖ talk id`):
//!
//! | key          | value |
//! |--------------|-------|
//! | `s`          | the [`TalkState`] |
//! | `n`          | next history index (u64 LE) |
//! | `r`          | history index shown so far by `read --new` (u64 LE) |
//! | `t`          | when the talk's relay retires, as last noted (u64 LE; absent: not retiring) |
//! | `h` ‖ index  | one [`HistoryEntry`] (index u64 BE) |
//! | `b`          | the owner's board listings and answers (`crate::board`) |
//! | `o` ‖ seat ‖ file id | a file offer received ([`FileOffer`]) |
//! | `c` ‖ seat ‖ file id ‖ index | one chunk of it (index u32 BE) |
//! | `u` ‖ keyed hash | a file this member is sending ([`Outbound`]), for resuming |
//! | `k`          | what the talk knows of cards ([`TalkCards`], spec §19) |
//!
//! Outside every talk: this home's card and card key in the namespace `card`, and the
//! cards kept after their talks (contacts) in `contacts` (see `crate::cards`).
//!
//! A seeker's pending asks (`crate::board`) live in the namespace `asks`, keyed by the
//! vault's keyed hash of the request id; the namespace is destroyed with the last one.

use std::fs::File;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use nook_proto::codec::{decode_body, encode_value};
use nook_vault::{Namespace, Vault, VaultError};
use zeroize::Zeroizing;

use crate::cards::{Contact, HomeCard, TalkCards};
use crate::member::{Event, FileData, FileOffer, TalkState};

/// A talk's state since scheduled talks (its relay status carries the schedule).
/// `K_STATE_BEFORE_SCHEDULES` held the form before them (read, and rewritten here on
/// the next save); `K_STATE_BEFORE_KEYS` the form before end-to-end keys followed the
/// members (per-talk X-Wing keys, per-sender envelope keys), which this version cannot
/// use (see [`StoreError::Outdated`]).
const K_STATE: &[u8] = b"s2";
const K_STATE_BEFORE_SCHEDULES: &[u8] = b"s1";
const K_STATE_BEFORE_KEYS: &[u8] = b"s";
const K_NEXT: &[u8] = b"n";
const K_SHOWN: &[u8] = b"r";
const K_RETIRING: &[u8] = b"t";
/// The forwarding relay the talk's traffic goes through (`--via`), as its address text.
const K_VIA: &[u8] = b"v";
const TALK_PREFIX: &[u8] = b"talk/";
/// Joins prepared with an identity of today's form (the earlier ones, under
/// `pending-joins`, are of a form this version does not read, and are not used).
const PENDING_JOINS: &[u8] = b"pending-joins-1";
const K_BOARD: &[u8] = b"b";
const ASKS: &[u8] = b"asks";

const K_CARDS: &[u8] = b"k";
const CARD: &[u8] = b"card";
const CONTACTS: &[u8] = b"contacts";
const K_VALUE: &[u8] = b"v";

const K_OFFER: u8 = b'o';
const K_CHUNK: u8 = b'c';
const K_OUTBOUND: u8 = b'u';

/// A file this member is sending: what a rerun of the same send checks (the path,
/// size, modification time and digest must all match) before it goes on at `next`.
#[derive(Clone, Debug, Encode, Decode)]
pub struct Outbound {
    pub path: String,
    pub mtime_ns: u128,
    pub offer: FileOffer,
    /// The offer went out.
    pub offered: bool,
    /// Chunks below this index went out.
    pub next: u32,
}

fn offer_key(seat: u8, file_id: &[u8; 16]) -> Vec<u8> {
    [&[K_OFFER, seat][..], file_id].concat()
}

fn chunk_key(seat: u8, file_id: &[u8; 16], index: u32) -> Vec<u8> {
    [&[K_CHUNK, seat][..], file_id, &index.to_be_bytes()].concat()
}

/// A join prepared but not yet answered by the relay.
#[derive(Encode, Decode, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct PendingJoin {
    pub identity: [u8; nook_crypto::identity::IDENTITY_LEN],
    pub alias: String,
}

impl std::fmt::Debug for PendingJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingJoin(<redacted>)")
    }
}

/// Reads one history record, also in the shape versions before message ids wrote.
fn decode_entry(bytes: &[u8]) -> Result<HistoryEntry, StoreError> {
    match decode_body::<HistoryEntry>(bytes) {
        Ok(entry) => Ok(entry),
        // Only an older `Message` (one field shorter) fails here; anything else that
        // fails both ways is damage, reported as such and never dropped.
        Err(e) => decode_body::<LegacyMessage>(bytes)
            .ok()
            .and_then(upgrade)
            .ok_or_else(|| StoreError::Corrupt(e.to_string())),
    }
}

/// A `Message` record as versions before message ids wrote it: index, at_ms, the
/// variant number (0), then seat, alias, sent_at_ms, text, own, late, missed — the
/// fields of today's `Event::Message` without its last one, `id`. Read, never written.
type LegacyMessage = (u64, u64, u32, u8, String, u64, String, bool, bool, u32);

fn upgrade(old: LegacyMessage) -> Option<HistoryEntry> {
    let (index, at_ms, variant, seat, alias, sent_at_ms, text, own, late, missed) = old;
    (variant == 0).then_some(HistoryEntry {
        index,
        at_ms,
        event: Event::Message {
            id: None,
            text,
            alias,
            seat,
            sent_at_ms,
            own,
            late,
            missed,
        },
    })
}

/// One line of a talk's history.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HistoryEntry {
    pub index: u64,
    /// When this client recorded it (unix ms).
    pub at_ms: u64,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the nook home folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the local store failed: {0}")]
    Vault(#[from] VaultError),
    #[error("no talk matches \"{0}\"")]
    NotFound(String),
    #[error("\"{0}\" matches several talks; give more characters of the talk id")]
    Ambiguous(String),
    #[error("stored talk data is damaged: {0}")]
    Corrupt(String),
    #[error(
        "this nook home holds a talk stored by an earlier nook, whose end-to-end keys this version cannot use; leave or close it with that version, or use another home (--home)"
    )]
    Outdated,
}

/// A nook home folder.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

/// An open session on the store; the lock is released when it is dropped.
pub struct Store {
    vault: Vault,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// A talk's local handle: 8 random bytes each member picks for itself.
pub type TalkId = [u8; 8];

/// The text form of a talk id.
pub fn talk_id_text(id: &[u8; 8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Home {
    /// Uses `dir` as the home folder, creating it (0700) if needed.
    pub fn new(dir: &Path) -> Result<Home, StoreError> {
        nook_vault::private_dir(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Home {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the store, waiting for any other nook process that holds it.
    pub fn open(&self) -> Result<Store, StoreError> {
        let path = self.dir.join("lock");
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let lock = nook_vault::open_private(&path).map_err(io)?;
        lock.lock().map_err(io)?;
        let vault = Vault::open(&self.dir.join("vault"))?;
        let _ = vault.collect_garbage(5_000);
        Ok(Store { vault, _lock: lock })
    }
}

fn ns_id(talk_id: &[u8; 8]) -> Vec<u8> {
    [TALK_PREFIX, talk_id].concat()
}

fn u64_of(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn encode_state(state: &TalkState) -> Result<Vec<u8>, StoreError> {
    encode_value(state).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_state(bytes: &[u8]) -> Result<TalkState, StoreError> {
    decode_body(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The talk state a namespace holds, in whichever readable form it was stored.
fn read_state(ns: &Namespace) -> Result<Option<TalkState>, StoreError> {
    if let Some(bytes) = ns.get(K_STATE)? {
        return decode_state(&Zeroizing::new(bytes)).map(Some);
    }
    if let Some(bytes) = ns.get(K_STATE_BEFORE_SCHEDULES)? {
        let old: crate::member::TalkStateBeforeSchedules =
            decode_body(&Zeroizing::new(bytes)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let state: TalkState = old.into();
        // Rewritten in today's form at once, so the old copy (keys included) goes.
        ns.put(K_STATE, &Zeroizing::new(encode_state(&state)?))?;
        ns.remove(K_STATE_BEFORE_SCHEDULES)?;
        return Ok(Some(state));
    }
    if ns.get(K_STATE_BEFORE_KEYS)?.is_some() {
        return Err(StoreError::Outdated);
    }
    Ok(None)
}

impl Store {
    /// Every talk in this home.
    pub fn talks(&self) -> Result<Vec<TalkState>, StoreError> {
        let mut out = Vec::new();
        for ns in self.vault.namespaces()? {
            if let Some(state) = read_state(&ns)? {
                out.push(state);
            }
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.params.created_at));
        Ok(out)
    }

    /// The talk whose name starts with `prefix` (as people type names: see
    /// [`nook_crypto::name::normalize`]), if exactly one does. This device's own hex
    /// handle of a talk is accepted too; it is never shown, but older scripts kept it.
    pub fn find(&self, prefix: &str) -> Result<TalkState, StoreError> {
        let typed = nook_crypto::name::normalize(prefix.trim());
        let hex = prefix.trim().to_ascii_lowercase();
        if typed.is_empty() {
            return Err(StoreError::NotFound(prefix.to_string()));
        }
        let mut matches: Vec<TalkState> = self
            .talks()?
            .into_iter()
            .filter(|t| {
                nook_crypto::name::normalize(&t.name()).starts_with(&typed)
                    || (hex.len() == 16 && talk_id_text(&t.talk_id) == hex)
            })
            .collect();
        match matches.len() {
            0 => Err(StoreError::NotFound(prefix.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::Ambiguous(prefix.to_string())),
        }
    }

    pub fn load(&self, talk_id: &[u8; 8]) -> Result<Option<TalkState>, StoreError> {
        let Some(ns) = self.vault.namespace(&ns_id(talk_id))? else {
            return Ok(None);
        };
        read_state(&ns)
    }

    fn ns(&self, talk_id: &[u8; 8]) -> Result<Namespace, StoreError> {
        let id = ns_id(talk_id);
        match self.vault.namespace(&id)? {
            Some(ns) => Ok(ns),
            None => Ok(self.vault.create_namespace(&id)?),
        }
    }

    pub fn save(&self, state: &TalkState) -> Result<(), StoreError> {
        let bytes =
            Zeroizing::new(encode_value(state).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        self.ns(&state.talk_id)?.put(K_STATE, &bytes)?;
        Ok(())
    }

    /// Appends events to the talk's history.
    pub fn append(
        &self,
        talk_id: &[u8; 8],
        events: Vec<Event>,
        at_ms: u64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ns = self.ns(talk_id)?;
        let mut next = u64_of(ns.get(K_NEXT)?);
        let mut entries = Vec::with_capacity(events.len());
        for event in events {
            let entry = HistoryEntry {
                index: next,
                at_ms,
                event,
            };
            let mut key = [0u8; 9];
            key[0] = b'h';
            key[1..].copy_from_slice(&next.to_be_bytes());
            let bytes = Zeroizing::new(
                encode_value(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
            ns.put(&key, &bytes)?;
            entries.push(entry);
            next += 1;
        }
        ns.put(K_NEXT, &next.to_le_bytes())?;
        Ok(entries)
    }

    /// History entries with index ≥ `from`.
    pub fn history(&self, talk_id: &[u8; 8], from: u64) -> Result<Vec<HistoryEntry>, StoreError> {
        let ns = self.ns(talk_id)?;
        let mut start = [0u8; 9];
        start[0] = b'h';
        start[1..].copy_from_slice(&from.to_be_bytes());
        let mut out = Vec::new();
        for item in ns.range_from(&start) {
            let (k, v) = item?;
            if k.first() != Some(&b'h') {
                break;
            }
            out.push(decode_entry(&Zeroizing::new(v))?);
        }
        Ok(out)
    }

    /// When the talk's relay retires, as this device last heard.
    pub fn retiring_at(&self, talk_id: &[u8; 8]) -> Result<Option<u64>, StoreError> {
        Ok(self.ns(talk_id)?.get(K_RETIRING)?.map(|v| u64_of(Some(v))))
    }

    pub fn set_retiring_at(&self, talk_id: &[u8; 8], at: u64) -> Result<(), StoreError> {
        self.ns(talk_id)?.put(K_RETIRING, &at.to_le_bytes())?;
        Ok(())
    }

    /// The forwarding relay (`nook://…`) this talk's traffic goes through by default
    /// (protocol-spec.md §18), if it is routed.
    pub fn via(&self, talk_id: &[u8; 8]) -> Result<Option<String>, StoreError> {
        match self.ns(talk_id)?.get(K_VIA)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("the talk's forwarding relay".into())),
        }
    }

    /// Routes the talk through `via` by default, or directly with `None`.
    pub fn set_via(&self, talk_id: &[u8; 8], via: Option<&str>) -> Result<(), StoreError> {
        let ns = self.ns(talk_id)?;
        match via {
            Some(v) => ns.put(K_VIA, v.as_bytes())?,
            None => {
                ns.remove(K_VIA)?;
            }
        }
        Ok(())
    }

    /// The first history index `read --new` has not shown yet.
    pub fn shown(&self, talk_id: &[u8; 8]) -> Result<u64, StoreError> {
        Ok(u64_of(self.ns(talk_id)?.get(K_SHOWN)?))
    }

    pub fn set_shown(&self, talk_id: &[u8; 8], next: u64) -> Result<(), StoreError> {
        self.ns(talk_id)?.put(K_SHOWN, &next.to_le_bytes())?;
        Ok(())
    }

    /// The index the next history entry will get.
    pub fn history_end(&self, talk_id: &[u8; 8]) -> Result<u64, StoreError> {
        Ok(u64_of(self.ns(talk_id)?.get(K_NEXT)?))
    }

    /// Messages recorded but not yet shown by `read`.
    pub fn unread(&self, talk_id: &[u8; 8]) -> Result<u64, StoreError> {
        let shown = self.shown(talk_id)?;
        Ok(self
            .history(talk_id, shown)?
            .iter()
            .filter(|e| matches!(e.event, Event::Message { own: false, .. }))
            .count() as u64)
    }

    /// The identity and alias prepared for a join that has not completed, keyed by
    /// the invite's token hash (hashed again with the vault's key, since sled keeps
    /// entry keys readable). A retry of the same invite reuses them, so a join whose
    /// answer was lost can be recovered from the relay.
    pub fn pending_join(&self, token_hash: &[u8; 32]) -> Result<Option<PendingJoin>, StoreError> {
        let Some(ns) = self.vault.namespace(PENDING_JOINS)? else {
            return Ok(None);
        };
        match ns.get(&self.vault.index_hash(token_hash))? {
            Some(v) => Ok(Some(
                decode_body(&Zeroizing::new(v)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub fn save_pending_join(
        &self,
        token_hash: &[u8; 32],
        pending: &PendingJoin,
    ) -> Result<(), StoreError> {
        let ns = match self.vault.namespace(PENDING_JOINS)? {
            Some(ns) => ns,
            None => self.vault.create_namespace(PENDING_JOINS)?,
        };
        let bytes =
            Zeroizing::new(encode_value(pending).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        ns.put(&self.vault.index_hash(token_hash), &bytes)?;
        Ok(())
    }

    pub fn remove_pending_join(&self, token_hash: &[u8; 32]) -> Result<(), StoreError> {
        if let Some(ns) = self.vault.namespace(PENDING_JOINS)? {
            ns.remove(&self.vault.index_hash(token_hash))?;
        }
        Ok(())
    }

    /// The owner's board record of a talk (`crate::board`), if it has one.
    pub fn board(&self, talk_id: &[u8; 8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.vault.namespace(&ns_id(talk_id))? {
            Some(ns) => Ok(ns.get(K_BOARD)?.map(Zeroizing::new)),
            None => Ok(None),
        }
    }

    pub fn set_board(&self, talk_id: &[u8; 8], bytes: &[u8]) -> Result<(), StoreError> {
        let ns = self
            .vault
            .namespace(&ns_id(talk_id))?
            .ok_or_else(|| StoreError::NotFound(talk_id_text(talk_id)))?;
        Ok(ns.put(K_BOARD, bytes)?)
    }

    /// Every pending ask of this home, encoded (`crate::board`).
    pub fn asks(&self) -> Result<Vec<Zeroizing<Vec<u8>>>, StoreError> {
        let Some(ns) = self.vault.namespace(ASKS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in ns.scan_prefix(&[]) {
            out.push(Zeroizing::new(entry?.1));
        }
        Ok(out)
    }

    pub fn save_ask(&self, request: &[u8; 16], bytes: &[u8]) -> Result<(), StoreError> {
        let ns = match self.vault.namespace(ASKS)? {
            Some(ns) => ns,
            None => self.vault.create_namespace(ASKS)?,
        };
        Ok(ns.put(&self.vault.index_hash(request), bytes)?)
    }

    /// Forgets an ask; with the last one the namespace's key is effaced, so nothing of
    /// any ask stays readable on disk.
    pub fn remove_ask(&self, request: &[u8; 16]) -> Result<(), StoreError> {
        if let Some(ns) = self.vault.namespace(ASKS)? {
            ns.remove(&self.vault.index_hash(request))?;
            if ns.is_empty() {
                self.vault.destroy_namespace(ASKS)?;
            }
        }
        Ok(())
    }

    /// Keeps file offers and chunks that arrived. A chunk is kept only for an offer
    /// it fits (index below the count, exactly the length the offer implies); a chunk
    /// that arrives twice is written once (same key).
    pub fn keep_files(&self, talk_id: &[u8; 8], files: Vec<FileData>) -> Result<(), StoreError> {
        if files.is_empty() {
            return Ok(());
        }
        let ns = self.ns(talk_id)?;
        for data in files {
            match data {
                FileData::Offer { seat, offer } => {
                    let bytes =
                        encode_value(&offer).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    ns.put(&offer_key(seat, &offer.file_id), &bytes)?;
                }
                FileData::Chunk {
                    seat,
                    file_id,
                    index,
                    bytes,
                } => {
                    let Some(offer) = self.offer(talk_id, seat, &file_id)? else {
                        continue;
                    };
                    if crate::files::chunk_len(&offer, index) != Some(bytes.len()) {
                        continue;
                    }
                    ns.put(&chunk_key(seat, &file_id, index), &bytes)?;
                }
            }
        }
        Ok(())
    }

    /// The offer `file_id` of the member of `seat`.
    pub fn offer(
        &self,
        talk_id: &[u8; 8],
        seat: u8,
        file_id: &[u8; 16],
    ) -> Result<Option<FileOffer>, StoreError> {
        match self.ns(talk_id)?.get(&offer_key(seat, file_id))? {
            Some(v) => Ok(Some(
                decode_body(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    /// Every file offer received in the talk, with the offering seat.
    pub fn offers(&self, talk_id: &[u8; 8]) -> Result<Vec<(u8, FileOffer)>, StoreError> {
        let mut out = Vec::new();
        for item in self.ns(talk_id)?.scan_prefix(&[K_OFFER]) {
            let (k, v) = item?;
            let offer: FileOffer =
                decode_body(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((k.get(1).copied().unwrap_or(0), offer));
        }
        Ok(out)
    }

    /// Chunk `index` of a received file, if it arrived.
    pub fn chunk(
        &self,
        talk_id: &[u8; 8],
        seat: u8,
        file_id: &[u8; 16],
        index: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self
            .ns(talk_id)?
            .get(&chunk_key(seat, file_id, index))?
            .map(Zeroizing::new))
    }

    /// How many chunks of a received file arrived.
    pub fn chunks_held(
        &self,
        talk_id: &[u8; 8],
        seat: u8,
        file_id: &[u8; 16],
    ) -> Result<u32, StoreError> {
        let prefix = [&[K_CHUNK, seat][..], file_id].concat();
        let mut n = 0u32;
        for item in self.ns(talk_id)?.scan_prefix(&prefix) {
            item?;
            n = n.saturating_add(1);
        }
        Ok(n)
    }

    fn outbound_key(&self, path: &str) -> Vec<u8> {
        [&[K_OUTBOUND][..], &self.vault.index_hash(path.as_bytes())].concat()
    }

    /// The record of a file being sent from `path`.
    pub fn outbound(&self, talk_id: &[u8; 8], path: &str) -> Result<Option<Outbound>, StoreError> {
        match self.ns(talk_id)?.get(&self.outbound_key(path))? {
            Some(v) => Ok(Some(
                decode_body(&Zeroizing::new(v)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub fn set_outbound(&self, talk_id: &[u8; 8], record: &Outbound) -> Result<(), StoreError> {
        let bytes =
            Zeroizing::new(encode_value(record).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        Ok(self
            .ns(talk_id)?
            .put(&self.outbound_key(&record.path), &bytes)?)
    }

    pub fn remove_outbound(&self, talk_id: &[u8; 8], path: &str) -> Result<(), StoreError> {
        self.ns(talk_id)?.remove(&self.outbound_key(path))?;
        Ok(())
    }

    /// Deletes everything held for a talk: its storage key is effaced first, so what
    /// sled still keeps of it on disk is unreadable.
    pub fn delete(&self, talk_id: &[u8; 8]) -> Result<bool, StoreError> {
        // Cards their owners let us keep outlive the talk (spec §19.5); nothing else.
        crate::cards::keep_contacts(self, &self.talk_cards(talk_id)?)?;
        let gone = self.vault.destroy_namespace(&ns_id(talk_id))?;
        self.vault.durable_flush()?;
        Ok(gone)
    }

    /// What the talk knows of cards (empty if nothing yet).
    pub fn talk_cards(&self, talk_id: &[u8; 8]) -> Result<TalkCards, StoreError> {
        let Some(ns) = self.vault.namespace(&ns_id(talk_id))? else {
            return Ok(TalkCards::default());
        };
        match ns.get(K_CARDS)? {
            Some(bytes) => {
                decode_body(&Zeroizing::new(bytes)).map_err(|e| StoreError::Corrupt(e.to_string()))
            }
            None => Ok(TalkCards::default()),
        }
    }

    pub fn set_talk_cards(&self, talk_id: &[u8; 8], cards: &TalkCards) -> Result<(), StoreError> {
        let bytes =
            Zeroizing::new(encode_value(cards).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        Ok(self.ns(talk_id)?.put(K_CARDS, &bytes)?)
    }

    /// One value in a namespace of the home (outside every talk).
    fn home_value<T: bincode::Decode<()>>(&self, ns: &[u8]) -> Result<Option<T>, StoreError> {
        let Some(ns) = self.vault.namespace(ns)? else {
            return Ok(None);
        };
        match ns.get(K_VALUE)? {
            Some(bytes) => decode_body(&Zeroizing::new(bytes))
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    fn set_home_value<T: bincode::Encode>(&self, ns: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes =
            Zeroizing::new(encode_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        let ns = match self.vault.namespace(ns)? {
            Some(ns) => ns,
            None => self.vault.create_namespace(ns)?,
        };
        Ok(ns.put(K_VALUE, &bytes)?)
    }

    /// This home's card and card key.
    pub fn home_card(&self) -> Result<Option<HomeCard>, StoreError> {
        self.home_value(CARD)
    }

    pub fn set_home_card(&self, card: &HomeCard) -> Result<(), StoreError> {
        self.set_home_value(CARD, card)
    }

    /// Erases the card and its key (the namespace's key is effaced).
    pub fn clear_home_card(&self) -> Result<bool, StoreError> {
        Ok(self.vault.destroy_namespace(CARD)?)
    }

    /// The cards kept after their talks.
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        Ok(self.home_value(CONTACTS)?.unwrap_or_default())
    }

    /// Replaces the contacts; with none left the namespace's key is effaced, so no
    /// forgotten card stays readable on disk.
    pub fn set_contacts(&self, contacts: &[Contact]) -> Result<(), StoreError> {
        if contacts.is_empty() {
            self.vault.destroy_namespace(CONTACTS)?;
            return Ok(());
        }
        self.set_home_value(CONTACTS, &contacts.to_vec())
    }

    /// Makes every write so far durable (before acknowledging to the relay).
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.vault.durable_flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_talk_stored_before_scheduled_talks_still_reads_and_is_rewritten() {
        let (_net, mut states, _) = crate::testkit::talk(2, 1);
        let mut state = states.remove(1);
        state.status = Some(crate::testkit::status(2, true));
        state.cursor = 41;
        // Before schedules the status ended with `left`: today's bytes without the
        // schedule's `None` (one 0 byte) between the status and the fields after it.
        let today = encode_value(&state).unwrap();
        let tail = encode_value(&(
            state.invites.clone(),
            state.expires_at,
            state.closed,
            state.opened,
        ))
        .unwrap();
        // Nor had it the roles (patterns, spec §20.2) at its end.
        let roles = encode_value(&state.roles).unwrap().len();
        let cut = today.len() - roles - tail.len() - 1;
        assert_eq!(today[cut], 0, "the schedule's None");
        let before: Vec<u8> = [&today[..cut], &today[cut + 1..today.len() - roles]].concat();

        let dir = tempfile::tempdir().unwrap();
        let store = Home::new(dir.path()).unwrap().open().unwrap();
        let ns = store.ns(&state.talk_id).unwrap();
        ns.put(K_STATE_BEFORE_SCHEDULES, &before).unwrap();
        let read = store
            .load(&state.talk_id)
            .unwrap()
            .expect("the talk is there");
        assert_eq!(read.cursor, 41);
        assert_eq!(read.alias, state.alias);
        let status = read.status.expect("its status");
        assert_eq!((status.members, status.schedule), (2, None));
        assert_eq!(encode_value(&read).unwrap(), today, "nothing else moved");
        // Rewritten in today's form; the old copy is gone.
        assert!(ns.get(K_STATE_BEFORE_SCHEDULES).unwrap().is_none());
        assert!(ns.get(K_STATE).unwrap().is_some());
        assert_eq!(store.talks().unwrap().len(), 1);
    }

    #[test]
    fn history_written_before_message_ids_still_reads() {
        // An older record is today's `Message` without its last field: encode one
        // with `id: None` (one byte, 0) and cut that byte off.
        let today = HistoryEntry {
            index: 4,
            at_ms: 99,
            event: Event::Message {
                seat: 1,
                alias: "bob".into(),
                sent_at_ms: 98,
                text: "from an older nook".into(),
                own: false,
                late: false,
                missed: 0,
                id: None,
            },
        };
        let mut bytes = encode_value(&today).unwrap();
        assert_eq!(bytes.pop(), Some(0));
        let entry = decode_entry(&bytes).unwrap();
        assert_eq!(entry.index, 4);
        assert!(matches!(
            entry.event,
            Event::Message { ref text, id: None, .. } if text == "from an older nook"
        ));
        // Today's records read as themselves.
        let new = HistoryEntry {
            index: 5,
            at_ms: 100,
            event: Event::Message {
                seat: 1,
                alias: "bob".into(),
                sent_at_ms: 99,
                text: "now".into(),
                own: false,
                late: false,
                missed: 0,
                id: Some([7; 8]),
            },
        };
        assert_eq!(decode_entry(&encode_value(&new).unwrap()).unwrap(), new);
        // Damage is reported, not guessed at.
        assert!(matches!(
            decode_entry(&[0xff; 5]),
            Err(StoreError::Corrupt(_))
        ));
    }
}

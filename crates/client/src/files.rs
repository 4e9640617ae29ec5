//! Files in a talk (protocol-spec §12.5): sending one as an offer and chunks under
//! the sender's chain, resuming a send that was cut off, and saving a received file
//! into a folder without ever writing outside it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nook_crypto::message::{FILE_CHUNK_LEN, file_chunks};
use nook_proto::{EnvelopeKind, ErrorCode, TalkPhase};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api::Client;
use crate::error::ClientError;
use crate::member::{FileOffer, Handled};
use crate::session::{TalkSession, now_ms, put};
use crate::store::Outbound;

/// The default cap on the size of a file sent (`--max-file`).
pub const DEFAULT_MAX_FILE: u64 = 256 * 1024 * 1024;

/// Chunks sealed, made durable and put per round: one fdatasync per round.
const CHUNKS_PER_ROUND: u32 = 8;

/// How long a send waits, in all, for a full mailbox to drain before giving up.
const FULL_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "the file is {size} bytes, more than the limit of {max} bytes; raise it with --max-file"
    )]
    TooLarge { size: u64, max: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write into {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no file offered in this talk matches \"{0}\"; `nook read` lists the offers")]
    NotFound(String),
    #[error("\"{0}\" matches several offered files; give more characters of the file id")]
    Ambiguous(String),
    #[error(
        "the file is not complete yet: {have} of {chunks} chunks arrived; run `nook read` to fetch the rest, then save again"
    )]
    Incomplete { have: u32, chunks: u32 },
    #[error("the file's bytes do not match the digest its sender announced; it was not saved")]
    Mismatch,
    #[error("{path} exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("the relay's mailbox stayed full; try again once members have read")]
    MailboxFull,
}

/// Where a send stands, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub sent_bytes: u64,
    pub size: u64,
    pub chunk: u32,
    pub chunks: u32,
    /// This send went on from an earlier one that was cut off.
    pub resumed: bool,
}

/// What `send_file` sent.
#[derive(Clone, Debug)]
pub struct SentFile {
    pub talk: String,
    pub offer: FileOffer,
    pub resumed: bool,
}

/// A saved file.
#[derive(Clone, Debug)]
pub struct SavedFile {
    pub path: PathBuf,
    pub offer: FileOffer,
}

/// The source of a file to send.
#[derive(Debug)]
pub enum Source {
    /// A file on disk: its send can be resumed.
    Path(PathBuf),
    /// Bytes read already (stdin), with the name to offer them under.
    Bytes {
        name: String,
        bytes: Zeroizing<Vec<u8>>,
    },
}

/// The length chunk `index` of `offer` must have, if it is one of its chunks.
pub fn chunk_len(offer: &FileOffer, index: u32) -> Option<usize> {
    if index >= offer.chunks {
        return None;
    }
    let start = u64::from(index) * FILE_CHUNK_LEN as u64;
    let len = offer.size.saturating_sub(start).min(FILE_CHUNK_LEN as u64);
    usize::try_from(len).ok().filter(|l| *l > 0)
}

/// The text a file id is shown as (and `nook save` takes a prefix of).
pub fn file_id_text(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name the sender gave, made safe to create in a folder: only its last path
/// component, without control or format characters, without leading dots, dashes
/// or spaces (no hidden files, nothing read as an option), never a name Windows
/// reserves, at most 255 bytes; "file" if nothing is left.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_format(*c) && *c != ':')
        .collect();
    let trimmed = cleaned
        .trim_start_matches(['.', '-', ' '])
        .trim_end_matches(['.', ' ']);
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    let stem = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out.insert(0, '_');
        out.truncate(255);
    }
    if out.is_empty() {
        "file".to_string()
    } else {
        out
    }
}

/// Unicode format characters (bidi overrides, zero-width joiners…): they make a
/// name read differently from what it is.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// Digest and size of a file on disk.
fn digest_file(path: &Path) -> Result<([u8; 32], u64), FileError> {
    let read = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

fn mtime_ns(path: &Path) -> Result<u128, FileError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos()))
}

/// Reads chunk `index` of the source.
fn read_chunk(source: &Source, index: u32, len: usize) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let start = u64::from(index) * FILE_CHUNK_LEN as u64;
    match source {
        Source::Bytes { bytes, .. } => {
            let s = usize::try_from(start).unwrap_or(usize::MAX);
            bytes
                .get(s..s.saturating_add(len))
                .map(|b| Zeroizing::new(b.to_vec()))
                .ok_or(FileError::Read {
                    path: PathBuf::from("-"),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
        }
        Source::Path(path) => {
            use std::io::Seek;
            let read = |source| FileError::Read {
                path: path.clone(),
                source,
            };
            let mut f = std::fs::File::open(path).map_err(read)?;
            f.seek(std::io::SeekFrom::Start(start)).map_err(read)?;
            let mut buf = Zeroizing::new(vec![0u8; len]);
            f.read_exact(&mut buf).map_err(read)?;
            Ok(buf)
        }
    }
}

impl Client {
    /// Sends a file into `talk`: an offer, then its chunks, each a group message
    /// (protocol-spec §12.5). Where a send of the same path stopped (a dropped
    /// connection, a relay restart, the process killed), a rerun goes on from the
    /// first chunk not known to be stored, if the file is unchanged (path, size,
    /// modification time and digest). A full mailbox makes the send wait and retry.
    pub async fn send_file(
        &self,
        talk: &str,
        source: Source,
        max: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<SentFile, ClientError> {
        let (sha256, size, name, path_key, mtime) = match &source {
            Source::Path(path) => {
                let (sha, size) = digest_file(path)?;
                let abs = std::fs::canonicalize(path).map_err(|source| FileError::Read {
                    path: path.clone(),
                    source,
                })?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".into());
                (
                    sha,
                    size,
                    name,
                    Some(abs.to_string_lossy().into_owned()),
                    mtime_ns(path)?,
                )
            }
            Source::Bytes { name, bytes } => (
                Sha256::digest(bytes.as_slice()).into(),
                bytes.len() as u64,
                name.clone(),
                None,
                0,
            ),
        };
        if size > max {
            return Err(FileError::TooLarge { size, max }.into());
        }
        let chunks = file_chunks(size).ok_or(FileError::TooLarge {
            size,
            max: FILE_CHUNK_LEN as u64 * u64::from(nook_crypto::message::MAX_FILE_CHUNKS),
        })?;
        let mut name = name;
        truncate_name(&mut name);
        let (mut session, authed) = self.connected(talk).await?;
        if authed.status.state == TalkPhase::Pending {
            return Err(ClientError::not_open(&authed.status));
        }
        session.sync(&authed.conn).await?;
        let talk_id = session.talk_id();
        let earlier = match &path_key {
            Some(p) => session.store().outbound(&talk_id, p)?,
            None => None,
        };
        let mut record = match earlier {
            Some(r)
                if r.mtime_ns == mtime
                    && r.offer.size == size
                    && r.offer.sha256 == sha256
                    && r.offer.chunks == chunks =>
            {
                r
            }
            _ => {
                let mut file_id = [0u8; 16];
                rand::Rng::fill_bytes(&mut rand::rng(), &mut file_id);
                Outbound {
                    path: path_key.clone().unwrap_or_default(),
                    mtime_ns: mtime,
                    offer: FileOffer {
                        file_id,
                        name,
                        size,
                        chunks,
                        sha256,
                    },
                    offered: false,
                    next: 0,
                }
            }
        };
        let resumed = record.offered;
        let keep = |session: &TalkSession, record: &Outbound| -> Result<(), ClientError> {
            if path_key.is_some() {
                session.store().set_outbound(&talk_id, record)?;
            }
            Ok(())
        };
        if !record.offered {
            let (body, event) = session
                .state_mut()
                .seal_file_offer(&record.offer, now_ms())?;
            session
                .commit(&authed.conn, Handled::default(), false)
                .await?;
            put_waiting(&authed.conn, &session, body).await?;
            session.note(vec![event])?;
            record.offered = true;
            keep(&session, &record)?;
        }
        let report = |record: &Outbound| Progress {
            sent_bytes: (u64::from(record.next) * FILE_CHUNK_LEN as u64).min(size),
            size,
            chunk: record.next,
            chunks,
            resumed,
        };
        progress(report(&record));
        while record.next < chunks {
            let end = record.next.saturating_add(CHUNKS_PER_ROUND).min(chunks);
            let mut bodies = Vec::new();
            for index in record.next..end {
                let len = chunk_len(&record.offer, index).ok_or(ClientError::Protocol)?;
                let bytes = read_chunk(&source, index, len)?;
                bodies.push(session.state_mut().seal_file_chunk(
                    record.offer.file_id,
                    index,
                    &bytes,
                )?);
            }
            // The chain moves durably before the puts, as for every message.
            session
                .commit(&authed.conn, Handled::default(), false)
                .await?;
            for body in bodies {
                put_waiting(&authed.conn, &session, body).await?;
            }
            record.next = end;
            keep(&session, &record)?;
            progress(report(&record));
        }
        if let Some(p) = &path_key {
            session.store().remove_outbound(&talk_id, p)?;
        }
        session.store().flush()?;
        let talk = session.state().name();
        drop(session);
        authed.conn.close().await;
        Ok(SentFile {
            talk,
            offer: record.offer,
            resumed,
        })
    }

    /// Every file offered in `talk` by others: the offering seat, the offer and how
    /// many of its chunks arrived.
    pub async fn files(&self, talk: &str) -> Result<Vec<(u8, FileOffer, u32)>, ClientError> {
        let session = self.session(talk).await?;
        let talk_id = session.talk_id();
        let mut out = Vec::new();
        for (seat, offer) in session.store().offers(&talk_id)? {
            let have = session
                .store()
                .chunks_held(&talk_id, seat, &offer.file_id)?;
            out.push((seat, offer, have));
        }
        Ok(out)
    }

    /// Writes the offered file `file` (a prefix of its id, or its exact name) into
    /// the folder `dir`, under its sanitised name, atomically: all of it with the
    /// announced digest, or nothing. An existing file is replaced only with `force`.
    pub async fn save_file(
        &self,
        talk: &str,
        file: &str,
        dir: &Path,
        force: bool,
    ) -> Result<SavedFile, ClientError> {
        let session = self.session(talk).await?;
        let talk_id = session.talk_id();
        let store = session.store();
        let wanted = file.to_ascii_lowercase();
        let offers = store.offers(&talk_id)?;
        let by_id: Vec<_> = offers
            .iter()
            .filter(|(_, o)| !wanted.is_empty() && file_id_text(&o.file_id).starts_with(&wanted))
            .collect();
        let matches = if by_id.is_empty() {
            offers.iter().filter(|(_, o)| o.name == file).collect()
        } else {
            by_id
        };
        let (seat, offer) = match matches.as_slice() {
            [] => return Err(FileError::NotFound(file.to_string()).into()),
            [one] => (one.0, one.1.clone()),
            _ => return Err(FileError::Ambiguous(file.to_string()).into()),
        };
        let have = store.chunks_held(&talk_id, seat, &offer.file_id)?;
        if have < offer.chunks {
            return Err(FileError::Incomplete {
                have,
                chunks: offer.chunks,
            }
            .into());
        }
        let write = |source| FileError::Write {
            path: dir.to_owned(),
            source,
        };
        let dest = dir.join(safe_file_name(&offer.name));
        if !force && std::fs::symlink_metadata(&dest).is_ok() {
            return Err(FileError::Exists { path: dest }.into());
        }
        // A fresh temporary name in the folder itself (create_new never follows or
        // reuses anything there), renamed into place once whole and checked.
        let mut suffix = [0u8; 8];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut suffix);
        let tmp = dir.join(format!(
            ".nook-{}.part",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(write)?;
        let result = (|| -> Result<(), ClientError> {
            let mut hasher = Sha256::new();
            for index in 0..offer.chunks {
                let bytes = store.chunk(&talk_id, seat, &offer.file_id, index)?.ok_or(
                    FileError::Incomplete {
                        have,
                        chunks: offer.chunks,
                    },
                )?;
                hasher.update(bytes.as_slice());
                out.write_all(&bytes).map_err(write)?;
            }
            if <[u8; 32]>::from(hasher.finalize()) != offer.sha256 {
                return Err(FileError::Mismatch.into());
            }
            out.sync_all().map_err(write)?;
            if force {
                std::fs::rename(&tmp, &dest).map_err(write)?;
            } else {
                // A hard link fails if anything (a symlink included) took the name
                // meanwhile: never replaced without --force.
                std::fs::hard_link(&tmp, &dest).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => FileError::Exists { path: dest.clone() },
                    _ => write(e),
                })?;
                let _ = std::fs::remove_file(&tmp);
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        Ok(SavedFile { path: dest, offer })
    }
}

fn truncate_name(name: &mut String) {
    while name.len() > nook_crypto::message::MAX_FILE_NAME {
        name.pop();
    }
}

/// Puts a sealed envelope; a full mailbox is waited out (bounded by [`FULL_WAIT`])
/// and the same envelope put again, so the file goes on once members have read.
async fn put_waiting(
    relay: &impl crate::session::Relay,
    session: &TalkSession,
    body: Vec<u8>,
) -> Result<(), ClientError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match put(
            relay,
            session.state().mailbox,
            EnvelopeKind::Chat,
            body.clone(),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(ClientError::Refused {
                code: ErrorCode::MailboxFull,
                ..
            }) if started.elapsed() < FULL_WAIT => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(ClientError::Refused {
                code: ErrorCode::MailboxFull,
                ..
            }) => return Err(FileError::MailboxFull.into()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_one_plain_component() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("/etc/shadow"), "shadow");
        assert_eq!(safe_file_name("..\\..\\win.ini"), "win.ini");
        assert_eq!(safe_file_name("a\nb\x1b[31mc"), "ab[31mc");
        assert_eq!(safe_file_name(".bashrc"), "bashrc");
        assert_eq!(safe_file_name("--rf"), "rf");
        assert_eq!(safe_file_name(".."), "file");
        assert_eq!(safe_file_name(""), "file");
        assert_eq!(safe_file_name("CON.txt"), "_CON.txt");
        assert_eq!(safe_file_name("x\u{202e}gpj.exe"), "xgpj.exe");
        assert!(safe_file_name(&"é".repeat(300)).len() <= 255);
    }

    /// A home holding bob's copy of a talk and `offer` from seat 0 with `chunks`.
    async fn received(
        offer: &FileOffer,
        chunks: Vec<Vec<u8>>,
    ) -> (tempfile::TempDir, Client, String) {
        use crate::member::FileData;
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path()).unwrap();
        let (_, _, b, _) = crate::testkit::three();
        let name = b.name();
        let store = client.leases().take().await.unwrap();
        store.save(&b).unwrap();
        let mut files = vec![FileData::Offer {
            seat: 0,
            offer: offer.clone(),
        }];
        for (index, bytes) in chunks.into_iter().enumerate() {
            files.push(FileData::Chunk {
                seat: 0,
                file_id: offer.file_id,
                index: index as u32,
                bytes: Zeroizing::new(bytes),
            });
        }
        store.keep_files(&b.talk_id, files).unwrap();
        drop(store);
        (dir, client, name)
    }

    fn offer_of(bytes: &[u8], sha256: [u8; 32]) -> FileOffer {
        FileOffer {
            file_id: [7; 16],
            name: "../x.txt".into(),
            size: bytes.len() as u64,
            chunks: file_chunks(bytes.len() as u64).unwrap(),
            sha256,
        }
    }

    #[tokio::test]
    async fn a_file_whose_bytes_do_not_match_its_digest_is_not_saved() {
        let bytes = vec![1u8; FILE_CHUNK_LEN + 10];
        let mut sha: [u8; 32] = Sha256::digest(&bytes).into();
        sha[0] ^= 1;
        let offer = offer_of(&bytes, sha);
        let chunks = bytes.chunks(FILE_CHUNK_LEN).map(<[u8]>::to_vec).collect();
        let (_home, client, talk) = received(&offer, chunks).await;
        let out = tempfile::tempdir().unwrap();
        let err = client.save_file(&talk, "0707", out.path(), false).await;
        assert!(
            matches!(err, Err(ClientError::File(FileError::Mismatch))),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_chunk_that_does_not_fit_its_offer_is_not_kept() {
        let bytes = vec![2u8; FILE_CHUNK_LEN + 10];
        let offer = offer_of(&bytes, Sha256::digest(&bytes).into());
        // The last chunk one byte short: dropped, so the file stays incomplete.
        let chunks = vec![
            bytes[..FILE_CHUNK_LEN].to_vec(),
            bytes[FILE_CHUNK_LEN + 1..].to_vec(),
        ];
        let (_home, client, talk) = received(&offer, chunks).await;
        let out = tempfile::tempdir().unwrap();
        let err = client.save_file(&talk, "0707", out.path(), false).await;
        assert!(
            matches!(
                err,
                Err(ClientError::File(FileError::Incomplete {
                    have: 1,
                    chunks: 2
                }))
            ),
            "{err:?}"
        );
        // Whole: saved, under the cleaned name, inside the folder.
        let chunks = bytes.chunks(FILE_CHUNK_LEN).map(<[u8]>::to_vec).collect();
        let (_home, client, talk) = received(&offer, chunks).await;
        let saved = client
            .save_file(&talk, "0707", out.path(), false)
            .await
            .unwrap();
        assert_eq!(saved.path, out.path().join("x.txt"));
        assert_eq!(std::fs::read(&saved.path).unwrap(), bytes);
    }

    #[test]
    fn chunk_lengths_follow_the_offer() {
        let offer = FileOffer {
            file_id: [0; 16],
            name: String::new(),
            size: FILE_CHUNK_LEN as u64 + 5,
            chunks: 2,
            sha256: [0; 32],
        };
        assert_eq!(chunk_len(&offer, 0), Some(FILE_CHUNK_LEN));
        assert_eq!(chunk_len(&offer, 1), Some(5));
        assert_eq!(chunk_len(&offer, 2), None);
    }
}

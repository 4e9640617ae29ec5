//! The relay's identity and the data folder around it.
//!
//! One Ed25519 key, kept in `<data>/identity.key` (0600), is used both for the
//! self-signed TLS certificate and for deletion receipts, so the fingerprint in the
//! relay's address vouches for both. Everything else here exists so that the address
//! never changes by accident and every start says who is where:
//!
//! ```text
//! <data>/            0700, owned by the user the relay runs as
//!   relay.lock       the pid of the relay using the folder, locked (flock) while it runs
//!   identity.key     the 32-byte Ed25519 seed, 0600
//!   identity.key.new the next seed while `nook-relay rotate-key` runs (see [`rotate`])
//!   rotations        the relay's key rotation history (protocol-spec.md §11.12)
//!   retire           the announced retirement, if any (crate::retire)
//!   address          the address the last start printed, for `nook-relay address`
//!   store/           the vault and the envelope log (nook-vault)
//!     owner          the fingerprint of the identity the store belongs to
//! ```
//!
//! What it never does: make an identity beside an existing store (a missing or
//! damaged `identity.key` there is restored from a backup, never replaced), start on
//! a store that belongs to another identity, or rebuild an address from defaults.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nook_crypto::auth::{RelayIdentity, parse_rotation_value, rotation_value};
use nook_crypto::rotation::check_history;
use nook_crypto::{Fingerprint, RelayAddr};
use nook_proto::{RelayKey, RotationStatement};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// File holding the 32-byte Ed25519 seed.
pub const KEY_FILE: &str = "identity.key";
/// The data folder's lock file (holds the pid of the relay using the folder).
pub const LOCK_FILE: &str = "relay.lock";
/// The address the last start printed.
pub const ADDRESS_FILE: &str = "address";
/// The store's folder inside the data folder.
pub const STORE_DIR: &str = "store";
/// The store's record of the identity it belongs to, inside [`STORE_DIR`].
pub const OWNER_FILE: &str = "owner";
/// The next identity while a rotation is under way (see [`rotate`]).
pub const NEXT_KEY_FILE: &str = "identity.key.new";
/// The relay's rotation history, one statement a line, oldest first.
pub const ROTATIONS_FILE: &str = "rotations";

/// The first line of [`ROTATIONS_FILE`]; the format number is its last word.
const ROTATIONS_HEADER: &str = "nook-relay key rotations, format";
const ROTATIONS_FORMAT: u32 = 1;

/// The first line of [`OWNER_FILE`]; the format number is its last word.
const OWNER_HEADER: &str = "nook-relay store owner, format";
const OWNER_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create or read {path}: {source}{}", permission_hint(source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a relay identity (expected 32 bytes, found {len}): restore identity.key \
         from your backup (a new identity would change the relay's address; only for a relay \
         nobody uses yet, move it and the store folder away to start afresh)"
    )]
    Corrupt { path: PathBuf, len: usize },
    /// `identity.key` is gone but a store is there: making a new key would change the
    /// address under every talk in the store.
    #[error(
        "{path} is missing, but {store} holds this relay's talks{}: restore identity.key from \
         your backup. A new identity would change the relay's address, and every member would \
         be told this is not the relay they were given (only for a relay nobody uses any more, \
         move {store} away to start afresh)",
        owner_note(owner.as_ref())
    )]
    Missing {
        path: PathBuf,
        store: PathBuf,
        /// The fingerprint the store records, if it records one.
        owner: Option<Fingerprint>,
    },
    /// The store belongs to another identity than `identity.key`.
    #[error(
        "{key} is relay {found}, but {store} belongs to relay {owner}: put back the \
         identity.key of {owner} from your backup (or the store that belongs to this key)"
    )]
    Mismatch {
        key: PathBuf,
        store: PathBuf,
        found: Fingerprint,
        owner: Fingerprint,
    },
    /// The store's owner record is not one this version reads.
    #[error(
        "{path} is not a store owner record this version reads ({reason}); if you are sure \
         identity.key belongs to this store, remove {path} and the relay records it again"
    )]
    BadOwner { path: PathBuf, reason: String },
    /// The data folder belongs to another user.
    #[error(
        "{path} belongs to user {owner}, but nook-relay runs as user {uid}: run it as that \
         user, or give it a folder of its own with --data DIR"
    )]
    NotOwner { path: PathBuf, owner: u32, uid: u32 },
    /// Another process holds the data folder's lock.
    #[error("another nook-relay{} uses this folder ({path}); stop it first, or give this one its own --data DIR", pid_note(*pid))]
    InUse { path: PathBuf, pid: Option<u32> },
    /// `nook-relay address` on a folder where no relay recorded one.
    #[error(
        "{path} holds no recorded address: start nook-relay once with this data folder (it \
         records the address it prints)"
    )]
    NoAddress { path: PathBuf },
    #[error("cannot build the TLS certificate: {0}")]
    Certificate(String),
    /// The rotation history is damaged or does not end at `identity.key`.
    #[error(
        "{path} is not a rotation history of this relay ({reason}): restore it and identity.key \
         from the same backup"
    )]
    BadRotations { path: PathBuf, reason: String },
    /// `rotate-key` on a folder without an identity.
    #[error("{path} holds no relay identity to rotate: start nook-relay once with it first")]
    NothingToRotate { path: PathBuf },
    /// The relay rotated as often as clients follow.
    #[error(
        "this relay rotated its key {max} times already, as many as clients follow; give members a new address instead"
    )]
    TooManyRotations { max: usize },
}

/// A `--public-host` (or a host in `--listen`) that clients could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host:?} is not a host name or IP address ({reason}); give the name or IP address \
     clients reach this relay at, e.g. relay.example.org or 203.0.113.7"
)]
pub struct HostError {
    pub host: String,
    pub reason: &'static str,
}

/// Creates `dir` (0700) if needed and makes sure it is private.
pub fn ensure_private_dir(dir: &Path) -> Result<(), IdentityError> {
    nook_vault::private_dir(dir).map_err(|source| IdentityError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Refuses a data folder that exists and belongs to another user: files the relay
/// made in it would belong to the wrong user, or it could not make them at all.
/// A folder that does not exist passes (nothing is created here).
pub fn check_folder_owner(dir: &Path) -> Result<(), IdentityError> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(IdentityError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(IdentityError::NotOwner {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(())
}

/// The data folder's lock: while it is held, no other relay (nor `nook-relay
/// status`) uses the folder. Released when dropped or when the process ends, however
/// it ends (it is an `flock`, not the file's existence).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock of the existing folder `dir` and writes this process's pid
    /// into it; [`IdentityError::InUse`] (with the holder's pid) if it is taken.
    pub fn acquire(dir: &Path) -> Result<DataLock, IdentityError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated before it is locked: the holder's pid stays readable.
        let mut file = nook_vault::open_private(&path).map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(IdentityError::InUse {
                    path: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(DataLock { _file: file })
    }

    /// [`IdentityError::InUse`] if some process holds the lock of `dir`; creates
    /// and changes nothing (a folder or lock file that does not exist is not in use).
    pub fn check_free(dir: &Path) -> Result<(), IdentityError> {
        let Ok(mut file) = File::open(dir.join(LOCK_FILE)) else {
            return Ok(());
        };
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Err(rustix::io::Errno::WOULDBLOCK) => Err(IdentityError::InUse {
                path: dir.to_path_buf(),
                pid: read_pid(&mut file),
            }),
            // Free (the shared lock goes with `file`), or no answer: not in use as
            // far as can be told.
            _ => Ok(()),
        }
    }
}

/// True if `dir` holds a relay's store (anything in `<dir>/store`).
pub fn store_exists(dir: &Path) -> bool {
    fs::read_dir(dir.join(STORE_DIR)).is_ok_and(|mut entries| entries.next().is_some())
}

/// Loads the relay identity from `dir`, creating it on first start, when there is
/// no store yet. Beside an existing store a missing key is
/// [`IdentityError::Missing`]: restore it, never replace it. A key file that others
/// may read is set to 0600 with a warning.
pub fn load_or_create(dir: &Path) -> Result<RelayIdentity, IdentityError> {
    ensure_private_dir(dir)?;
    finish_rotation(dir)?;
    let path = dir.join(KEY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::Corrupt {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
            let seed = Zeroizing::new(seed);
            tighten_key_mode(&path)?;
            Ok(RelayIdentity::from_seed(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store_exists(dir) {
                let store = dir.join(STORE_DIR);
                return Err(IdentityError::Missing {
                    path,
                    owner: read_owner(&store).ok().flatten(),
                    store,
                });
            }
            let identity = RelayIdentity::generate(&mut rand::rng());
            write_atomically(&path, identity.seed().as_ref())?;
            tracing::info!(
                fingerprint = %fingerprint(&identity),
                "made a new relay identity (identity.key): back it up, the relay's address depends on it"
            );
            Ok(identity)
        }
        Err(e) => Err(io(e)),
    }
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub old: Fingerprint,
    pub new: Fingerprint,
    /// The recorded address with the new fingerprint, if an address was recorded.
    pub address: Option<String>,
}

/// Rotates the relay identity of `dir` (protocol-spec.md §11.12): makes a new key, has
/// the old one sign the statement naming it, and switches. The caller holds the data
/// folder's lock, so no relay runs on it meanwhile.
///
/// Crash-safe, in this order, each step durable before the next: the new seed goes to
/// `identity.key.new`; the history with the new statement replaces `rotations` (the
/// commit point); the store's owner record names the new key; `identity.key.new`
/// replaces `identity.key`. A crash before the commit point leaves the old identity
/// (the next start removes `identity.key.new`); after it, the next start (or
/// `rotate-key`) finishes the last two steps ([`finish_rotation`]).
pub fn rotate(dir: &Path, now: u64) -> Result<Rotated, IdentityError> {
    finish_rotation(dir)?;
    let old = match read_seed(&dir.join(KEY_FILE))? {
        Some(seed) => RelayIdentity::from_seed(&seed),
        None => {
            return Err(IdentityError::NothingToRotate {
                path: dir.to_path_buf(),
            });
        }
    };
    let mut history = load_rotations(dir, &old.public())?;
    if history.len() >= nook_proto::limits::MAX_ROTATIONS {
        return Err(IdentityError::TooManyRotations {
            max: nook_proto::limits::MAX_ROTATIONS,
        });
    }
    let new = RelayIdentity::generate(&mut rand::rng());
    write_atomically(&dir.join(NEXT_KEY_FILE), new.seed().as_ref())?;
    history.push(old.sign_rotation(&new.public(), now));
    write_atomically(
        &dir.join(ROTATIONS_FILE),
        rotations_text(&history).as_bytes(),
    )?;
    finish_rotation(dir)?;
    let address = recorded_address(dir).ok().and_then(|a| {
        let mut addr: RelayAddr = a.parse().ok()?;
        addr.fingerprint = fingerprint(&new);
        Some(addr.to_string())
    });
    if let Some(a) = &address {
        record_address(dir, a)?;
    }
    Ok(Rotated {
        old: fingerprint(&old),
        new: fingerprint(&new),
        address,
    })
}

/// Completes or undoes a rotation a crash interrupted (see [`rotate`]); nothing to do
/// when there is no `identity.key.new`.
pub fn finish_rotation(dir: &Path) -> Result<(), IdentityError> {
    let next_path = dir.join(NEXT_KEY_FILE);
    let Some(seed) = read_seed(&next_path)? else {
        return Ok(());
    };
    let next = RelayIdentity::from_seed(&seed);
    let history = read_rotations(dir)?;
    let committed = history.last().is_some_and(|s| s.new == next.public());
    let io = |source| IdentityError::Io {
        path: next_path.clone(),
        source,
    };
    if !committed {
        fs::remove_file(&next_path).map_err(io)?;
        tracing::info!("an interrupted key rotation was undone: the identity is unchanged");
        return Ok(());
    }
    let store = dir.join(STORE_DIR);
    if store_exists(dir) {
        write_atomically(
            &store.join(OWNER_FILE),
            owner_record(&fingerprint(&next)).as_bytes(),
        )?;
    }
    fs::rename(&next_path, dir.join(KEY_FILE)).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// The rotation history of `dir`, checked to end at `current` (empty: never rotated).
pub fn load_rotations(
    dir: &Path,
    current: &RelayKey,
) -> Result<Vec<RotationStatement>, IdentityError> {
    let history = read_rotations(dir)?;
    check_history(&history, current).map_err(|e| IdentityError::BadRotations {
        path: dir.join(ROTATIONS_FILE),
        reason: e.to_string(),
    })?;
    Ok(history)
}

/// The fingerprint of `identity.key` in `dir`, read without changing anything
/// (`None`: there is none).
pub fn peek_fingerprint(dir: &Path) -> Result<Option<Fingerprint>, IdentityError> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: Zeroizing<[u8; 32]> =
                Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                    IdentityError::Corrupt {
                        path: path.clone(),
                        len: bytes.len(),
                    }
                })?);
            Ok(Some(fingerprint(&RelayIdentity::from_seed(&seed))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// How [`claim_store`] found the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A new store: its owner record was written.
    New,
    /// A store of an older relay, without an owner record: it now records this
    /// identity (once; logged).
    Adopted,
    /// The store records this identity.
    Owned,
}

/// Makes sure the store in `store` belongs to `identity`: a new (empty or missing)
/// store gets its owner record, a store without one adopts `identity` once, a store
/// of another identity is [`IdentityError::Mismatch`].
pub fn claim_store(store: &Path, identity: &RelayIdentity) -> Result<Claim, IdentityError> {
    let mine = fingerprint(identity);
    let new = fs::read_dir(store).map_or(true, |mut e| e.next().is_none());
    match read_owner(store)? {
        Some(owner) if owner == mine => Ok(Claim::Owned),
        Some(owner) => Err(IdentityError::Mismatch {
            key: store.parent().unwrap_or(Path::new(".")).join(KEY_FILE),
            store: store.to_path_buf(),
            found: mine,
            owner,
        }),
        None => {
            ensure_private_dir(store)?;
            write_atomically(&store.join(OWNER_FILE), owner_record(&mine).as_bytes())?;
            if new {
                Ok(Claim::New)
            } else {
                tracing::info!(
                    fingerprint = %mine,
                    "the store had no record of its relay identity (made by an older nook-relay); it now records this one, and will refuse any other"
                );
                Ok(Claim::Adopted)
            }
        }
    }
}

/// The fingerprint the store in `store` records (`None`: no record).
pub fn read_owner(store: &Path) -> Result<Option<Fingerprint>, IdentityError> {
    let path = store.join(OWNER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(IdentityError::BadOwner {
                path,
                reason: "not text".into(),
            });
        }
        Err(source) => return Err(IdentityError::Io { path, source }),
    };
    parse_owner(&text)
        .map(Some)
        .map_err(|reason| IdentityError::BadOwner { path, reason })
}

/// Writes `address` as the one this data folder's relay is reached at.
pub fn record_address(dir: &Path, address: &str) -> Result<(), IdentityError> {
    write_atomically(&dir.join(ADDRESS_FILE), format!("{address}\n").as_bytes())
}

/// The address the relay using `dir` printed when it last started.
pub fn recorded_address(dir: &Path) -> Result<String, IdentityError> {
    let path = dir.join(ADDRESS_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let line = text.trim();
            // Written by `record_address`; anything else is not ours to print.
            line.parse::<RelayAddr>()
                .map(|_| line.to_string())
                .map_err(|_| IdentityError::NoAddress { path })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(IdentityError::NoAddress { path })
        }
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// `address` with its host replaced by `host` (already checked by [`check_host`]).
pub fn with_host(address: &str, host: &str) -> Option<String> {
    let mut addr: RelayAddr = address.parse().ok()?;
    addr.host = host.to_string();
    Some(addr.to_string())
}

/// A host clients can be given, as an address writes it: a DNS name (lowercase), an
/// IPv4 address, or an IPv6 address in brackets. Refuses anything a client's parser
/// would refuse (protocol-spec.md §10), and the unspecified addresses.
pub fn check_host(host: &str) -> Result<String, HostError> {
    let bad = |reason| HostError {
        host: host.to_string(),
        reason,
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let written = if let Ok(ip) = bare.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err(bad(
                "an address to listen on, not one clients can reach (that is the machine's own name or IP)",
            ));
        }
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    } else if bare != host {
        return Err(bad("not an IPv6 address inside the brackets"));
    } else {
        check_dns_name(host).map_err(bad)?
    };
    // What a client will parse must be what we print.
    let probe = format!("nook://{}@{written}:1", Fingerprint([0; 32]));
    match probe.parse::<RelayAddr>() {
        Ok(addr) if addr.host == written => Ok(written),
        _ => Err(bad("clients would not accept it")),
    }
}

/// A fresh self-signed certificate for the identity key (made at every start; only
/// the key is pinned, so the certificate itself need not persist).
pub fn certificate(
    identity: &RelayIdentity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), IdentityError> {
    let pkcs8 = identity.pkcs8_der();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let key_pair = rcgen::KeyPair::try_from(&key_der)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec!["nook-relay".to_string()])
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    // The subject names the relay too (protocol-spec §2.2), not rcgen's placeholder.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nook-relay");
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok((cert.der().clone(), key_der))
}

/// The fingerprint of the identity, as its address shows it.
pub fn fingerprint(identity: &RelayIdentity) -> Fingerprint {
    Fingerprint::of_key(&identity.public().0)
}

/// `nook://<fingerprint>@<host>:<port>`.
pub fn address(identity: &RelayIdentity, host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("nook://{}@{}:{}", fingerprint(identity), host, port)
}

// ---- private helpers ----

/// A 32-byte seed file (`None`: there is none).
fn read_seed(path: &Path) -> Result<Option<Zeroizing<[u8; 32]>>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let seed: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::Corrupt {
                        path: path.to_path_buf(),
                        len: bytes.len(),
                    })?;
            Ok(Some(Zeroizing::new(seed)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_rotations(dir: &Path) -> Result<Vec<RotationStatement>, IdentityError> {
    let path = dir.join(ROTATIONS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(IdentityError::Io { path, source }),
    };
    parse_rotations(&text).map_err(|reason| IdentityError::BadRotations { path, reason })
}

fn rotations_text(history: &[RotationStatement]) -> String {
    let mut out = format!(
        "{ROTATIONS_HEADER} {ROTATIONS_FORMAT}\n\
         # Each line: old key, new key, time, the old key's signature (protocol-spec.md §11.12).\n\
         # Clients pinning an older key follow these to the current one: keep this file.\n"
    );
    for s in history {
        out.push_str(&format!("rotation {}\n", rotation_value(s)));
    }
    out
}

fn parse_rotations(text: &str) -> Result<Vec<RotationStatement>, String> {
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    match lines
        .next()
        .unwrap_or_default()
        .strip_prefix(ROTATIONS_HEADER)
        .map(str::trim)
    {
        Some(v) if v == ROTATIONS_FORMAT.to_string() => {}
        Some(v) => {
            return Err(format!(
                "format {v}; this version reads format {ROTATIONS_FORMAT}"
            ));
        }
        None => return Err("no header".into()),
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.strip_prefix("rotation ")
                .and_then(parse_rotation_value)
                .ok_or_else(|| "a damaged line".to_string())
        })
        .collect()
}

fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (this user may not use it: run nook-relay as the user the folder belongs to, or pass --data DIR)"
    } else {
        ""
    }
}

fn owner_note(owner: Option<&Fingerprint>) -> String {
    owner.map_or(String::new(), |fp| format!(" (relay {fp})"))
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map_or(String::new(), |p| format!(" (pid {p})"))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Sets `identity.key` to 0600 if group or others may use it, with a warning.
///
/// Fixed rather than refused: the data folder is made 0700 at every start, so a key
/// restored with a loose mode (a copy from a backup) was not readable through it,
/// and refusing would only keep the relay down. If the folder was open before, the
/// warning says what that means.
fn tighten_key_mode(path: &Path) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
        tracing::warn!(
            "identity.key had mode {mode:o} (others could read it); it is 0600 now. If anyone else could read it through the data folder, they can pose as this relay"
        );
    }
    Ok(())
}

fn owner_record(fp: &Fingerprint) -> String {
    format!(
        "{OWNER_HEADER} {OWNER_FORMAT}\n\
         # The relay identity this store belongs to (the fingerprint in its address).\n\
         # nook-relay refuses to start with another identity.key beside this store.\n\
         fingerprint {fp}\n"
    )
}

fn parse_owner(text: &str) -> Result<Fingerprint, String> {
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let first = lines.next().unwrap_or_default();
    match first.strip_prefix(OWNER_HEADER).map(str::trim) {
        Some(v) if v == OWNER_FORMAT.to_string() => {}
        Some(v) => {
            return Err(format!(
                "format {v}; this version reads format {OWNER_FORMAT}"
            ));
        }
        None => return Err("no header".into()),
    }
    let fp = lines
        .find_map(|l| l.strip_prefix("fingerprint "))
        .ok_or("no fingerprint")?;
    // A fingerprint has one text form, the one an address carries.
    let probe = format!("nook://{}@h:1", fp.trim());
    probe
        .parse::<RelayAddr>()
        .map(|a| a.fingerprint)
        .map_err(|_| "a damaged fingerprint".into())
}

fn check_dns_name(host: &str) -> Result<String, &'static str> {
    if host.is_empty() {
        return Err("empty");
    }
    if host.len() > 253 {
        return Err("longer than 253 characters");
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err("not a valid IPv4 address");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("an empty label (two dots in a row, or a dot at either end)");
        }
        if label.len() > 63 {
            return Err("a label longer than 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("only letters, digits, '-' and '.' may be in a host name");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
    }
    Ok(host.to_ascii_lowercase())
}

/// Writes `bytes` to `path` (0600) through a temporary file and a rename, durably.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_subject_names_the_relay() {
        let identity = RelayIdentity::generate(&mut rand::rng());
        let (cert, _) = certificate(&identity).unwrap();
        let der = cert.as_ref();
        // commonName (2.5.4.3) as a UTF8String "nook-relay", and no placeholder name.
        let cn = [
            &[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x0a][..],
            b"nook-relay",
        ]
        .concat();
        assert!(der.windows(cn.len()).any(|w| w == cn.as_slice()));
        let placeholder = b"rcgen self signed cert";
        assert!(!der.windows(placeholder.len()).any(|w| w == placeholder));
    }

    #[test]
    fn hosts_clients_can_use_are_taken_in_the_form_an_address_writes() {
        for (given, written) in [
            ("relay.example.org", "relay.example.org"),
            ("Relay.Example.ORG", "relay.example.org"),
            ("localhost", "localhost"),
            ("203.0.113.7", "203.0.113.7"),
            ("::1", "[::1]"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(check_host(given).as_deref(), Ok(written), "{given}");
        }
    }

    #[test]
    fn garbage_hosts_are_refused_with_the_reason() {
        for (given, reason) in [
            ("", "empty"),
            ("relay example.org", "only letters"),
            ("relay.example.org:4433", "only letters"),
            ("nook://x@y:1", "only letters"),
            ("999.1.1.1", "IPv4"),
            ("1.2.3", "IPv4"),
            ("-relay.org", "starts or ends"),
            ("relay..org", "empty label"),
            ("relay.org.", "empty label"),
            ("[relay.org]", "IPv6"),
            ("0.0.0.0", "listen on"),
            ("::", "listen on"),
            ("bücher.example", "only letters"),
        ] {
            let err = check_host(given).unwrap_err();
            assert!(err.reason.contains(reason), "{given:?}: {err}");
            assert!(err.to_string().contains("e.g. relay.example.org"), "{err}");
        }
        let long = format!("{}.org", "a".repeat(250));
        assert!(check_host(&long).is_err());
        let label = format!("{}.org", "a".repeat(64));
        assert!(check_host(&label).is_err());
    }

    #[test]
    fn the_owner_record_reads_back_and_other_formats_are_refused() {
        let fp = Fingerprint::of_key(&[7; 32]);
        assert_eq!(parse_owner(&owner_record(&fp)), Ok(fp));
        let newer = owner_record(&fp).replace("format 1", "format 2");
        assert!(parse_owner(&newer).unwrap_err().contains("format 2"));
        assert!(parse_owner("fingerprint x\n").is_err());
        let damaged = owner_record(&fp).replace(&fp.to_string()[..4], "!!!!");
        assert!(parse_owner(&damaged).is_err());
    }

    #[test]
    fn a_store_records_its_identity_adopts_once_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(STORE_DIR);
        let (a, b) = (
            RelayIdentity::from_seed(&[1; 32]),
            RelayIdentity::from_seed(&[2; 32]),
        );
        assert_eq!(claim_store(&store, &a).unwrap(), Claim::New);
        assert_eq!(claim_store(&store, &a).unwrap(), Claim::Owned);
        let err = claim_store(&store, &b).unwrap_err();
        assert!(
            matches!(&err, IdentityError::Mismatch { found, owner, .. }
                if *found == fingerprint(&b) && *owner == fingerprint(&a)),
            "{err:?}"
        );
        assert!(err.to_string().contains("from your backup"), "{err}");
        // A store an older relay made has data and no record: adopted once.
        fs::remove_file(store.join(OWNER_FILE)).unwrap();
        fs::write(store.join("keys.slots"), b"").unwrap();
        assert_eq!(claim_store(&store, &b).unwrap(), Claim::Adopted);
        assert_eq!(claim_store(&store, &b).unwrap(), Claim::Owned);
        assert!(claim_store(&store, &a).is_err());
    }

    #[test]
    fn a_missing_identity_beside_a_store_is_refused_and_nothing_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        claim_store(&dir.path().join(STORE_DIR), &id).unwrap();
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(&err, IdentityError::Missing { owner: Some(fp), .. } if *fp == fingerprint(&id)),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("restore identity.key from your backup"),
            "{text}"
        );
        assert!(text.contains(&fingerprint(&id).to_string()), "{text}");
        assert!(!dir.path().join(KEY_FILE).exists());
        assert!(!dir.path().join(format!("{KEY_FILE}.tmp")).exists());
    }

    #[test]
    fn a_rotation_switches_the_key_the_store_and_the_address_together() {
        let dir = tempfile::tempdir().unwrap();
        let old = load_or_create(dir.path()).unwrap();
        let store = dir.path().join(STORE_DIR);
        claim_store(&store, &old).unwrap();
        fs::write(store.join("keys.slots"), b"").unwrap();
        record_address(dir.path(), &address(&old, "127.0.0.1", 4433)).unwrap();
        let done = rotate(dir.path(), 1000).unwrap();
        assert_eq!(done.old, fingerprint(&old));
        let new = load_or_create(dir.path()).unwrap();
        assert_eq!(done.new, fingerprint(&new));
        assert_ne!(done.old, done.new);
        assert_eq!(claim_store(&store, &new).unwrap(), Claim::Owned);
        assert_eq!(
            recorded_address(dir.path()).unwrap(),
            address(&new, "127.0.0.1", 4433)
        );
        let history = load_rotations(dir.path(), &new.public()).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].old, old.public());
        // A second rotation extends the history; it is followed from the first key.
        rotate(dir.path(), 2000).unwrap();
        let third = load_or_create(dir.path()).unwrap();
        let history = load_rotations(dir.path(), &third.public()).unwrap();
        assert_eq!(history.len(), 2);
        assert!(load_rotations(dir.path(), &new.public()).is_err());
    }

    #[test]
    fn an_interrupted_rotation_is_undone_before_its_commit_and_finished_after() {
        let dir = tempfile::tempdir().unwrap();
        let old = load_or_create(dir.path()).unwrap();
        claim_store(&dir.path().join(STORE_DIR), &old).unwrap();
        // Crashed after writing the next key, before the history named it.
        let next = RelayIdentity::from_seed(&[9; 32]);
        fs::write(dir.path().join(NEXT_KEY_FILE), next.seed().as_ref()).unwrap();
        assert_eq!(
            fingerprint(&load_or_create(dir.path()).unwrap()),
            fingerprint(&old)
        );
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());
        // Crashed after the history named it: the rotation is finished at start.
        fs::write(dir.path().join(NEXT_KEY_FILE), next.seed().as_ref()).unwrap();
        let history = vec![old.sign_rotation(&next.public(), 5)];
        write_atomically(
            &dir.path().join(ROTATIONS_FILE),
            rotations_text(&history).as_bytes(),
        )
        .unwrap();
        let now = load_or_create(dir.path()).unwrap();
        assert_eq!(fingerprint(&now), fingerprint(&next));
        assert_eq!(
            claim_store(&dir.path().join(STORE_DIR), &now).unwrap(),
            Claim::Owned
        );
    }

    #[test]
    fn a_loose_key_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let key = dir.path().join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_lock_names_its_holder_and_is_free_again_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        DataLock::check_free(dir.path()).unwrap();
        let held = DataLock::acquire(dir.path()).unwrap();
        let err = DataLock::acquire(dir.path()).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, IdentityError::InUse { pid: Some(p), .. } if p == pid),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("another nook-relay (pid {pid}) uses this folder")),
            "{err}"
        );
        assert!(DataLock::check_free(dir.path()).is_err());
        drop(held);
        DataLock::check_free(dir.path()).unwrap();
        DataLock::acquire(dir.path()).unwrap();
    }
}

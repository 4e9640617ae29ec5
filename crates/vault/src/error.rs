//! The one error type of the vault.
//!
//! Messages say what happened and what to do about it. They never carry a
//! key, a value, a namespace id or an entry key: errors end up in logs.

/// Everything that can go wrong in the key store or the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The operating system refused a file operation.
    #[error("vault file i/o failed: {0} (check the data folder's disk space and permissions)")]
    Io(#[from] std::io::Error),

    /// sled reported an error (its type is kept out of this API).
    #[error("the sled database failed: {0}")]
    Sled(String),

    /// Stored data does not have the shape the vault wrote, or a sealed value
    /// failed authentication.
    #[error("vault data is corrupt: {what}")]
    Corrupt {
        /// What was found damaged (never includes stored bytes).
        what: String,
    },

    /// `create_namespace` was called for an id that already has a namespace.
    #[error("a namespace with this id already exists (open it with Vault::namespace)")]
    AlreadyExists,

    /// A key slot was asked for that is free (effaced or never allocated) or
    /// beyond the end of the key store.
    #[error("key slot {0} holds no key: it was effaced, or never allocated")]
    NoSuchSlot(u32),

    /// One slot of `keys.slots` failed validation at open.
    #[error(
        "key slot {slot} in keys.slots is corrupt ({reason}); the keys in this data folder \
         cannot be trusted: move the folder aside and start afresh"
    )]
    CorruptSlot {
        /// The damaged slot.
        slot: u32,
        /// Which check failed.
        reason: &'static str,
    },

    /// The header of `keys.slots` is not a nook key store header this version
    /// understands.
    #[error(
        "keys.slots has a bad header ({reason}): it is not a nook key store, or one written \
         by an incompatible version"
    )]
    BadHeader {
        /// Which check failed.
        reason: &'static str,
    },

    /// A file of the data folder names a format version this version of nook
    /// does not read (written by an older or a newer version). Nothing in the
    /// folder was changed: the version that wrote it still reads it.
    #[error(
        "{file} is in {what} format {found}, but this version of nook reads only {}; it was \
         written by {} version of nook, so run that version on this folder (nothing in it was \
         changed or removed)",
        versions(supported),
        if supported.iter().all(|v| found > v) { "a newer" } else { "an older" }
    )]
    UnsupportedFormat {
        /// The file (or folder) whose format was read.
        file: std::path::PathBuf,
        /// What kind of file it is.
        what: FormatOf,
        /// The version it names.
        found: u32,
        /// The versions this version of nook reads, oldest first.
        supported: &'static [u32],
    },

    /// `keys.slots` does not end on a slot boundary.
    #[error(
        "keys.slots is truncated ({len} bytes is not a header plus whole slots); keys may be \
         lost: move the data folder aside and start afresh"
    )]
    Truncated {
        /// The file's length in bytes.
        len: u64,
    },

    /// The key store cannot grow past `u32::MAX` slots.
    #[error("the key store is full (u32::MAX slots); destroy namespaces to free slots")]
    KeyStoreFull,

    /// A value is too large to be sealed (the AEAD limit is far beyond what
    /// sled can store, so this means a caller bug).
    #[error("value too large to seal")]
    ValueTooLarge,

    /// A [`Namespace`](crate::Namespace) handle was used after its namespace
    /// was destroyed.
    #[error("this namespace was destroyed; drop the handle")]
    NamespaceDestroyed,
}

/// What a [`VaultError::UnsupportedFormat`] was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatOf {
    /// `keys.slots`.
    KeyStore,
    /// The vault's sled database (its `meta/format`).
    Vault,
    /// A segment of a [`Log`](crate::Log).
    LogSegment,
}

impl std::fmt::Display for FormatOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FormatOf::KeyStore => "key store",
            FormatOf::Vault => "vault",
            FormatOf::LogSegment => "log segment",
        })
    }
}

/// "format 3", "formats 2 and 3".
fn versions(list: &[u32]) -> String {
    match list {
        [one] => format!("format {one}"),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().map(u32::to_string).collect();
            format!("formats {} and {last}", rest.join(", "))
        }
        [] => "no format".into(),
    }
}

impl VaultError {
    /// Builds [`VaultError::Corrupt`].
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        VaultError::Corrupt { what: what.into() }
    }
}

/// Maps a sled error into ours. A function rather than a `From` impl, so that
/// no sled type appears in this crate's public API (trait impls are public).
pub(crate) fn from_sled(e: sled::Error) -> VaultError {
    match e {
        // sled answers this for any operation on a tree that `drop_tree`
        // removed. The vault drops no tree any more (namespaces share one),
        // but if it ever happens it is the closest match.
        sled::Error::CollectionNotFound(_) => VaultError::NamespaceDestroyed,
        sled::Error::Io(io) => VaultError::Io(io),
        sled::Error::Corruption { .. } => {
            VaultError::corrupt(format!("sled found damage in its files ({e})"))
        }
        other => VaultError::Sled(other.to_string()),
    }
}

//! nook-vault: encrypted, shreddable storage for the nook relay and client.
//!
//! A [`Vault`] is a sled database split into [`Namespace`]s (a talk on the
//! client, a mailbox on the relay). Every value in a namespace is sealed with
//! AES-256-GCM (XChaCha20-Poly1305 in vaults made before format 3) under a
//! subkey of that namespace's own storage key, and the storage
//! keys live outside sled in an effaceable [`KeyStore`]: a small file of
//! fixed-size slots that are overwritten in place with zeros and fsynced when a
//! namespace is destroyed.
//!
//! Namespaces are cheap, so that a relay can hold a million idle mailboxes:
//! all of them share one sled tree, each under its own never-reused 8-byte
//! namespace number, and a [`Namespace`] handle is an `Arc` of about a
//! hundred bytes (measured with sled 0.34.7: about 0.9 KB of memory and 1.2 KB
//! of disk per idle namespace holding one 200-byte value, at a million), and sled's
//! page cache is bounded to 8 MiB, so what namespaces hold stays on disk (sled's
//! default of 1 GiB kept everything written). [`Vault::destroy_namespace`] is O(1) in the namespace's size: it
//! effaces the key (which is what makes the data unreadable) and leaves the
//! sealed entries to [`Vault::collect_garbage`], which callers run in the
//! background with a bound on each call: the relay from its sweeper, the
//! client at the start of each store session.
//!
//! Why: sled does not erase. Values removed from sled, flushed, and reopened
//! were measured still readable in the raw `db` file, some across several
//! reopen cycles. So deleting a namespace here is *crypto-shredding*: once its
//! key slot is effaced, every stale byte the namespace left in sled's log is
//! ciphertext under a key that no longer exists anywhere.
//!
//! What this crate never does:
//!
//! - It never writes a namespace value to disk in clear, and never stores the
//!   clear id of a namespace: namespaces are found by a keyed hash of their id
//!   ([`Vault::index_hash`]).
//! - It never hashes or encrypts the *keys* callers pass to [`Namespace::put`]:
//!   they are stored as given, so callers index by [`Vault::index_hash`] of
//!   anything sensitive, or by ordered counters.
//! - It never panics on bytes read from disk: a damaged key slot, catalog entry
//!   or sealed value is a [`VaultError`].
//! - It does not make a write durable by itself, not even the creation of a
//!   namespace: call [`Vault::durable_flush`] before acknowledging anything
//!   (the exception is [`Vault::destroy_namespace`]: its key is effaced
//!   durably before it returns, and a crash cannot bring the namespace back).
//! - It does not delete a destroyed namespace's entries synchronously, and
//!   never walks the data at open: repair at open reads the catalog, the
//!   garbage list and the key store.
//! - It cannot reach blocks that a copy-on-write filesystem (btrfs, ZFS) or an
//!   SSD's flash translation layer moved aside: an in-place overwrite is the
//!   strongest erasure an ordinary process can ask for.
//!
//! # Layout
//!
//! - [`keystore`] — the effaceable key store (`keys.slots`), its exact byte
//!   format and the [`StorageKey`] secret type. Start here to see what
//!   "deleted" means.
//! - `seal` (private) — key derivation and the value seal
//!   (nonce ‖ ciphertext, bound to the namespace and the entry key).
//! - [`vault`] — [`Vault`] and [`Namespace`], the exact on-disk layout of the
//!   data folder, destroy and garbage collection, crash recovery at open and
//!   the durable flush.
//! - [`log`] — [`Log`], an append-only file of records sealed by a
//!   namespace ([`Namespace::seal`]), for short-lived bulk data that sled
//!   writes too slowly (the relay's envelopes).
//! - [`error`] — [`VaultError`].
//!
//! A data folder looks like this:
//!
//! ```text
//! <dir>/            mode 0700
//!   keys.slots      mode 0600, the effaceable key store
//!   db.sled/        sled: trees "meta", "catalog", "data" (every namespace's
//!                   entries, keyed by namespace number ‖ entry key) and "garbage"
//!                   (destroyed namespaces whose entries are not yet collected)
//! ```

#![forbid(unsafe_code)]

pub mod error;
pub mod keystore;
pub mod log;
mod seal;
pub mod vault;

pub use error::{FormatOf, VaultError};
pub use keystore::{KeyStore, SlotId, StorageKey};
pub use log::{Loc, Log, LogStats, LogSummary, Record, Recovery};
pub use vault::{Entries, Namespace, Vault, VaultSummary, open_private, private_dir};

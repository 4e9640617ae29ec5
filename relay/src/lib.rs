//! nook-relay: the QUIC mailbox relay.
//!
//! It stores sealed envelopes for talks it cannot read, gates chat until a talk's
//! quorum is seated, deletes each envelope once every recipient acknowledged it, and
//! forgets a talk completely when it is closed or expires (crypto-shredding: the
//! mailbox's storage key is effaced first, so stale bytes in sled's log are useless).
//! It never logs mailbox ids, keys, envelope bytes or client addresses by default.
//!
//! # Layout
//!
//! - [`server`]: endpoint, TLS, accept loop, sweeper, graceful shutdown. Start here.
//! - [`conn`]: one connection: hello, auth table, rate limit, dispatch.
//! - [`admission`]: who may create talks (the creation token, the create rates).
//! - [`engine`]: every protocol operation against the store.
//! - [`commit`]: group commit, so "stored" means fdatasync'd without one fsync each.
//! - [`outbox`]: the way back to one connection, which the engine, the commit thread
//!   and `conn` share.
//! - [`identity`]: the relay key, its certificate and its address, and the data folder
//!   around them: its lock, the store's owner record, the recorded address.
//! - [`metrics`]: the counts, for the status line and the `--metrics` endpoint.
//! - [`retire`]: the announced retirement in the data folder.
//! - [`clock`]: injectable time.

#![forbid(unsafe_code)]

pub mod admission;
pub mod clock;
pub mod commit;
pub mod conn;
pub mod engine;
pub mod forward;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod retire;
pub mod server;

pub use server::{Config, Relay, Shutdown};

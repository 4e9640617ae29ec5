//! nook-client: everything a nook member does, as a library.
//!
//! It holds every key of its member: per-talk identities, talk keys, chains. None of
//! them leaves the device except sealed for other members; the relay sees only the
//! relay-auth key of each talk. Everything at rest is sealed in a nook-vault whose
//! per-talk keys are effaced when the talk ends.
//!
//! # Layout
//!
//! - [`api`]: [`Client`], the operations (create, join, send, fetch, follow, leave,
//!   close). Start here.
//! - [`member`]: one member's talk state and its pure transitions.
//! - [`store`]: the local sealed store and the talk history.
//! - [`transport`]: the pinned QUIC connection to a relay.
//! - [`alias`]: random per-talk aliases.

#![forbid(unsafe_code)]

pub mod alias;
pub mod api;
pub mod member;
pub mod store;
pub mod transport;

pub use api::{Client, ClientError, Link, TalkSummary, Until, Update};
pub use member::{Event, TalkOptions};
pub use store::HistoryEntry;
pub use transport::{ConnectError, RelayConnection, RequestError};

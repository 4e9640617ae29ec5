//! nook-client: everything a nook member does, as a library.
//!
//! It holds every key of its member: per-talk identities, talk keys, chains. None of
//! them leaves the device except sealed for other members; the relay sees only the
//! relay-auth key of each talk. Everything at rest is sealed in a nook-vault whose
//! per-talk keys are effaced when the talk ends. It never prints, prompts, or knows
//! the names of the `nook` commands: that is the binary's part.
//!
//! # Layout
//!
//! - [`api`]: [`Client`], one method per operation (create, join, send, fetch, follow,
//!   leave, close). Start here.
//! - [`session`]: one talk under one store lease; the one path by which a change is
//!   made durable, then sent, then acknowledged.
//! - [`follow`]: staying connected: pushes into history, reconnects.
//! - [`sender`]: many sends to one talk over a kept connection, group-committed.
//! - [`lease`]: taking turns on the home's store, inside and across processes.
//! - [`error`]: why an operation failed ([`ClientError`]).
//! - [`member`]: one member's talk state and its pure transitions.
//! - [`store`]: the local sealed store and the talk history.
//! - [`transport`]: the pinned QUIC connection to a relay.
//! - [`alias`]: random per-talk aliases.

#![forbid(unsafe_code)]

pub mod alias;
pub mod api;
pub mod board;
pub mod cards;
pub mod dial;
pub mod error;
pub mod files;
pub mod follow;
pub mod lease;
pub mod member;
pub mod roles;
pub mod sender;
pub mod session;
pub mod store;
pub mod transport;

#[cfg(test)]
mod testkit;

pub use api::{Client, CreatedTalk, History, JoinedTalk, Member, Sent, TalkSummary, create_token};
pub use board::{AskPhase, AskStatus, BoardError, FoundListing, Posted, Requests};
pub use error::ClientError;
pub use follow::{Link, Until, Update};
pub use member::{Event, TalkOptions};
pub use sender::TalkSender;
pub use session::now_ms;
pub use store::HistoryEntry;
pub use transport::{ConnectError, RelayConnection, RequestError};

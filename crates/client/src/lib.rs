//! nook-client: everything a nook member does, as a library.
//!
//! # Layout
//!
//! - [`transport`]: the pinned QUIC connection to a relay, request/response and pushes.

#![forbid(unsafe_code)]

pub mod member;
pub mod transport;

pub use transport::{ConnectError, RelayConnection, RequestError};

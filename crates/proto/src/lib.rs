//! nook-proto: the nook wire protocol, version 1, as pure types and transitions.
//!
//! This crate defines every frame that crosses a nook connection, the codec that turns
//! them into bytes, the protocol's limits and error codes, and the relay-side talk
//! state machine. It performs no IO: it never touches a socket, a file, a clock or an
//! async runtime; time is an argument. The relay and the client are drivers around it.
//!
//! It does no cryptography either: envelope bodies, welcomes and farewells are opaque
//! bytes here (see `nook-crypto`), and signatures are carried, not checked.
//!
//! # Layout
//!
//! - [`frame`]: requests, responses, pushes, error codes: start here.
//! - [`codec`]: length-prefixed bincode framing and the incremental [`FrameDecoder`].
//! - [`talk`]: the talk lifecycle (pending → open → closed/expired) as a state machine.
//! - [`ids`]: fixed-size identifier newtypes.
//! - [`limits`]: every size, count and rate limit, as listed in `protocol-spec.md`.

#![forbid(unsafe_code)]

pub mod codec;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod route;
pub mod talk;

pub use codec::{DecodeError, EncodeError, FrameDecoder, decode_body, encode_frame};
pub use frame::*;
pub use ids::{
    BoardId, CreateToken, ListingId, MailboxId, MemberKey, RelayKey, RequestId, Seq, Signature,
    TokenHash,
};
pub use talk::{Lifecycle, Talk, TalkError, Tick};

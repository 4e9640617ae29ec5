//! Connection attempts, made observable.
//!
//! The library never prints; a program that wants to say "connecting to HOST:PORT…"
//! when a relay is slow to answer watches [`Dialer::watch`]: it holds the relay's
//! `host:port` while an attempt is under way and `None` otherwise.

use std::sync::Arc;

use nook_crypto::RelayAddr;
use tokio::sync::watch;

use std::time::Duration;

use crate::transport::{CONNECT_TIMEOUT, ConnectError, RelayConnection};

/// Makes the connections of one [`crate::Client`] and its clones.
#[derive(Debug, Clone)]
pub struct Dialer {
    attempt: Arc<watch::Sender<Option<String>>>,
    /// How long a handshake may take before the relay counts as unreachable.
    limit: Duration,
    /// The forwarding relay this command routes through (`--via`), whatever the
    /// talk's default.
    via: Option<RelayAddr>,
}

impl Default for Dialer {
    fn default() -> Dialer {
        Dialer {
            attempt: Arc::new(watch::channel(None).0),
            limit: CONNECT_TIMEOUT,
            via: None,
        }
    }
}

/// Clears the attempt however the connect ends, cancellation included.
struct Attempt<'a>(&'a watch::Sender<Option<String>>);

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

impl Dialer {
    /// The relay being connected to right now, if any.
    pub fn watch(&self) -> watch::Receiver<Option<String>> {
        self.attempt.subscribe()
    }

    /// Gives up on a relay that has not answered after `limit` (default
    /// [`CONNECT_TIMEOUT`]).
    pub fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// Routes every connection of this command through `via` (protocol-spec.md §18),
    /// or, with `None`, each talk as it is stored.
    pub fn set_via(&mut self, via: Option<RelayAddr>) {
        self.via = via;
    }

    /// The forwarding relay set for this command, if any.
    pub fn via(&self) -> Option<&RelayAddr> {
        self.via.as_ref()
    }

    /// Connects to `addr` (see [`RelayConnection::connect`]), through the command's
    /// forwarding relay if it has one.
    pub async fn connect(&self, addr: &RelayAddr) -> Result<RelayConnection, ConnectError> {
        self.connect_route(addr, None).await
    }

    /// Connects to `addr` through the command's forwarding relay, else `default` (the
    /// talk's), else directly.
    pub(crate) async fn connect_route(
        &self,
        addr: &RelayAddr,
        default: Option<&RelayAddr>,
    ) -> Result<RelayConnection, ConnectError> {
        match self.via.as_ref().or(default) {
            None => {
                self.attempt.send_replace(Some(addr.host_port()));
                let _attempt = Attempt(&self.attempt);
                RelayConnection::connect_within(addr, self.limit).await
            }
            Some(via) => {
                self.attempt.send_replace(Some(format!(
                    "{} via {}",
                    addr.host_port(),
                    via.host_port()
                )));
                let _attempt = Attempt(&self.attempt);
                RelayConnection::connect_via(addr, via, self.limit).await
            }
        }
    }
}

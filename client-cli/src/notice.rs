//! "connecting to HOST:PORT…" on a terminal, when a relay is slow to answer.
//!
//! Most connections take milliseconds, so nothing is printed unless an attempt is
//! still under way after [`DELAY`]; scripts (stderr not a terminal, or `--json`) and
//! the chat screen never see the line.

use std::io::IsTerminal;
use std::time::Duration;

use nook_client::dial::Dialer;

/// How long a connection attempt runs before the person is told about it.
const DELAY: Duration = Duration::from_millis(400);

/// Watches `dialer` until the returned task is aborted (its owner, `run`, does so
/// before it returns).
pub fn connecting(dialer: &Dialer, quiet: bool) -> Option<tokio::task::JoinHandle<()>> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let mut attempts = dialer.watch();
    Some(tokio::spawn(async move {
        loop {
            let current = attempts.borrow_and_update().clone();
            if let Some(addr) = current {
                // Either the attempt ends (the value changes) or the delay passes.
                if tokio::time::timeout(DELAY, attempts.changed())
                    .await
                    .is_err()
                {
                    eprintln!("connecting to {addr}…");
                }
            }
            if attempts.changed().await.is_err() {
                return;
            }
        }
    }))
}

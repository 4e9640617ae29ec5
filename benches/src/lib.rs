//! Shared pieces of nook's benchmarks (`src/bin/*`): process accounting from `/proc`,
//! statistics, the relay as a child process, talk setup over the real client
//! transport, and QUIC client plumbing for many connections on one endpoint.
//!
//! Nothing here is run by `cargo test`: benchmarks are binaries, run by `run.sh`.

#![forbid(unsafe_code)]

pub mod proc;
pub mod quic;
pub mod relay;
pub mod report;
pub mod stats;
pub mod talk;

use std::sync::OnceLock;
use std::time::Instant;

/// Messages a load generator's sender seals and hands to quinn in one write at most,
/// when its window has room for that many: a pipelining client, as the peers' load
/// generators are. relaybench and echo use the same, so the ratio compares alike.
pub const PUT_BATCH: u64 = 32;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on a monotonic clock shared by every task of this process (the
/// sender stamps it into the plaintext, the receiver subtracts it on receipt).
pub fn mono_ns() -> u64 {
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs [`proc::quiet_gate`] off the async workers; `None` when `max_wait_s` is 0.
pub async fn quiet_gate(cores: f64, max_wait_s: u64) -> Option<f64> {
    if max_wait_s == 0 {
        return None;
    }
    let wait = std::time::Duration::from_secs(max_wait_s);
    tokio::task::spawn_blocking(move || proc::quiet_gate(cores, wait))
        .await
        .ok()
        .flatten()
}

/// Appends one JSON line to `path` (results in the same shape as the peers' scripts
/// write, so `../shared/peers/summarize.py` can read them too).
pub fn append_jsonl(
    path: Option<&std::path::Path>,
    value: &serde_json::Value,
) -> anyhow::Result<()> {
    use std::io::Write;
    let Some(path) = path else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{value}")?;
    Ok(())
}

//! The relay under test as a child process (so its own CPU seconds and memory can be
//! read from `/proc/<pid>`), with a fresh data folder per start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nook_crypto::RelayAddr;

/// The default relay binary: `nook-relay` next to the running benchmark binary (both
/// live in `target/release/` after `cargo build --release`).
pub fn default_relay_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("nook-relay")))
        .unwrap_or_else(|| PathBuf::from("target/release/nook-relay"))
}

/// A binary built beside the running benchmark (`nook-relay`, `nook`: all of them live
/// in `target/release/` after `cargo build --release`).
pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("the benchmark's folder")?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: cargo build --release -p nook-relay -p nook-cli -p nook-bench",
            path.display()
        );
    }
    Ok(path)
}

/// Runs the `nook` built beside the benchmark on `home` with `args`: how long it took
/// and its stdout; its stderr in the error when it fails.
pub fn run_nook(home: &Path, args: &[&str]) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let out = Command::new(sibling_bin("nook")?)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("nook {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Relay flags every benchmark passes: a benchmark creates talks from one address far
/// faster than the default create rates (60 a minute per address, 1200 relay-wide)
/// allow, and measures the relay, not its refusals.
pub const BENCH_RELAY_ARGS: [&str; 4] = [
    "--create-rate",
    "4000000000/1s",
    "--create-rate-per-address",
    "4000000000/1s",
];

/// A running `nook-relay` process and its scratch folder (deleted on drop).
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    pub pid: u32,
    pub addr: RelayAddr,
    /// Time from spawn to the address line (includes recovering the store).
    pub startup: Duration,
    root: PathBuf,
    scratch: Option<tempfile::TempDir>,
}

impl RelayProcess {
    /// Starts `bin --listen 127.0.0.1:0 --data <fresh dir>` and reads its address.
    pub fn start(bin: &Path) -> anyhow::Result<RelayProcess> {
        RelayProcess::start_with(bin, &[])
    }

    /// [`RelayProcess::start`] with more arguments for the relay (its limit flags).
    pub fn start_with(bin: &Path, extra: &[String]) -> anyhow::Result<RelayProcess> {
        let scratch = tempfile::Builder::new().prefix("nook-bench-").tempdir()?;
        RelayProcess::start_in_with(bin, scratch, extra)
    }

    /// Starts the relay on the data folder inside `scratch` (which may hold a store
    /// from an earlier start: a restart).
    pub fn start_in(bin: &Path, scratch: tempfile::TempDir) -> anyhow::Result<RelayProcess> {
        RelayProcess::start_in_with(bin, scratch, &[])
    }

    fn start_in_with(
        bin: &Path,
        scratch: tempfile::TempDir,
        extra: &[String],
    ) -> anyhow::Result<RelayProcess> {
        let data = scratch.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(scratch.path().join("relay.log"))?;
        let started = Instant::now();
        let mut child = crate::proc::server_command(bin)
            .args(BENCH_RELAY_ARGS)
            .args(extra)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(&data)
            .env("RUST_LOG", "nook_relay=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (build it: cargo build --release -p nook-relay)",
                    bin.display()
                )
            })?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout of the relay")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the relay never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(scratch.path().join("relay.log")).unwrap_or_default();
                bail!("the relay printed no address ({other:?}); its log:\n{log}");
            }
        };
        let startup = started.elapsed();
        let addr: RelayAddr = line
            .trim()
            .parse()
            .with_context(|| format!("relay printed {line:?}, not an address"))?;
        Ok(RelayProcess {
            child,
            pid,
            addr,
            startup,
            root: scratch.path().to_path_buf(),
            scratch: Some(scratch),
        })
    }

    /// The relay's data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The relay's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("relay.log")).unwrap_or_default()
    }

    /// Stops the relay with SIGTERM (SIGKILL after 20 s) and returns the scratch
    /// folder, for a restart on the same store.
    pub fn stop_keep(mut self) -> anyhow::Result<tempfile::TempDir> {
        self.terminate();
        self.scratch.take().context("scratch folder already taken")
    }

    /// Stops the relay with SIGTERM (SIGKILL after 20 s).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

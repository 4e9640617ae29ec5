//! The `nook-relay` binary.

// Every envelope allocates a few 2 KiB buffers; glibc malloc/free were ~8 % of the
// relay under load. Without transparent huge pages (the `no_thp` feature) mimalloc
// keeps an idle relay at ~8 MB RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nook_proto::limits::{
    DEFAULT_MAX_BYTES_PER_MAILBOX, DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
    DEFAULT_MAX_MAILBOXES_PER_CONNECTION, DEFAULT_REQUESTS_PER_SECOND, MAX_ENVELOPE,
};
use nook_relay::server::StartError;
use nook_relay::server::{DEFAULT_MAX_CONNECTIONS, UDP_RECV_BUFFER};
use nook_relay::{Config, Relay, Shutdown, identity};

/// A nook relay: stores sealed envelopes of private, ephemeral talks and forgets them
/// when a talk closes. Prints its address (to give to clients) as the first line.
#[derive(Parser, Debug)]
#[command(name = "nook-relay", version, about)]
struct Cli {
    /// UDP address to listen on; use 0.0.0.0:4433 for a public relay.
    #[arg(long, default_value = "127.0.0.1:4433", global = true)]
    listen: SocketAddr,
    /// Data folder (identity and store). Default: $XDG_DATA_HOME/nook-relay or
    /// ~/.local/share/nook-relay.
    #[arg(long, env = "NOOK_RELAY_DATA", global = true)]
    data: Option<PathBuf>,
    /// Host name or IP to print in the address (default: the listen IP).
    #[arg(long, global = true)]
    public_host: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What one relay allows (protocol-spec.md §9, "operator defaults"). Clients handle
/// the matching error at any value, so an operator may lower or raise each.
#[derive(clap::Args, Debug)]
struct LimitArgs {
    /// Envelopes waiting in one mailbox (unacknowledged by a recipient) before puts get
    /// "mailbox full".
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
          value_parser = at_least_one::<u64>)]
    max_envelopes_per_mailbox: u64,
    /// Envelope bytes waiting in one mailbox before puts get "mailbox full".
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES_PER_MAILBOX,
          value_parser = mailbox_bytes)]
    max_bytes_per_mailbox: u64,
    /// Mailboxes (talks) one connection may be authenticated for at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_MAILBOXES_PER_CONNECTION as u32,
          value_parser = at_least_one::<u32>)]
    max_mailboxes_per_connection: u32,
    /// Sustained requests per second of one connection (a token bucket holding 4x this);
    /// past it a request gets "rate limited".
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REQUESTS_PER_SECOND,
          value_parser = at_least_one::<u32>)]
    requests_per_second: u32,
    /// Connections served at once; further handshakes are refused.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = at_least_one::<u32>)]
    max_connections: u32,
}

/// A limit of at least 1: zero would refuse everything.
fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1 (0 would refuse everything)".into()),
        Err(_) => Err("must be a whole number, at least 1".into()),
    }
}

/// Bytes per mailbox: at least one envelope of the largest size.
fn mailbox_bytes(v: &str) -> Result<u64, String> {
    let min = MAX_ENVELOPE as u64;
    match v.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!(
            "must be a number of bytes, at least {min} (one envelope of the largest size, \
             128 KiB)"
        )),
    }
}

impl LimitArgs {
    fn apply(&self, config: &mut Config) {
        let limits = &mut config.limits;
        limits.max_envelopes_per_mailbox = self.max_envelopes_per_mailbox;
        limits.max_bytes_per_mailbox = self.max_bytes_per_mailbox;
        limits.max_mailboxes_per_connection = self.max_mailboxes_per_connection as usize;
        limits.requests_per_second = self.requests_per_second;
        config.max_connections = self.max_connections as usize;
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print this relay's address again and exit.
    Address,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("nook-relay"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no HOME set: pass --data DIR")?;
    Ok(PathBuf::from(home).join(".local/share/nook-relay"))
}

/// Runs the relay; a failure is one `error: …` line on stderr and exit code 1.
///
/// `main` does not return the `anyhow::Error` itself: its `Debug` form, which Rust
/// prints for an error returned from `main`, adds a stack backtrace whenever
/// `RUST_BACKTRACE` is set, which tells an operator nothing about a taken port.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole chain of causes on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // The identity and the store are private to this user (files 0600, folders 0700),
    // also for the files sled creates itself.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "nook_relay=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in a log file or a journal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let data = match cli.data {
        Some(d) => d,
        None => default_data_dir()?,
    };
    if let Some(Command::Address) = cli.command {
        let id = identity::load_existing(&data)?;
        let host = cli
            .public_host
            .unwrap_or_else(|| cli.listen.ip().to_string());
        println!("{}", identity::address(&id, &host, cli.listen.port()));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut config = Config::new(cli.listen, data.clone());
        config.public_host = cli.public_host;
        cli.limits.apply(&mut config);
        let relay = Relay::start(config).map_err(|e| start_error(e, &data))?;
        println!("{}", relay.address());
        if relay.local_addr().is_some_and(|a| a.ip().is_unspecified()) {
            eprintln!("note: replace the host in the address with this machine's public name or IP (or pass --public-host)");
        }
        // Linux reports double the usable size; compare against what was asked.
        if relay.recv_buffer() < UDP_RECV_BUFFER {
            tracing::warn!(
                granted = relay.recv_buffer(),
                asked = UDP_RECV_BUFFER,
                "the OS granted a smaller UDP receive buffer than asked; bursts of handshakes may be dropped (raise net.core.rmem_max)"
            );
        }
        tracing::info!(data = %data.display(), "relay listening");
        let (shutdown, stop) = Shutdown::new();
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            shutdown.trigger();
        });
        relay.run(stop).await;
        signals.abort();
        Ok::<(), anyhow::Error>(())
    })
}

/// Why the relay did not start, with what to do about it.
fn start_error(e: StartError, data: &std::path::Path) -> anyhow::Error {
    match e {
        // The flag is the binary's to name; the library only says what happened.
        StartError::AddrInUse { .. } => {
            anyhow::anyhow!("{e}; pick another with --listen ADDR:PORT")
        }
        StartError::Listen { .. } => anyhow::anyhow!("{e}; check --listen ADDR:PORT"),
        e => anyhow::Error::new(e).context(format!(
            "cannot start the relay with data folder {}",
            data.display()
        )),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the relay still serves; it just cannot stop cleanly.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config_of(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(args).unwrap();
        let mut config = Config::new(cli.listen, PathBuf::from("/unused"));
        cli.limits.apply(&mut config);
        config
    }

    #[test]
    fn no_limit_flags_keep_the_spec_defaults() {
        let config = config_of(&["nook-relay"]);
        let defaults = Config::new(config.listen, PathBuf::from("/unused"));
        assert_eq!(
            format!("{:?}", config.limits),
            format!("{:?}", defaults.limits)
        );
        assert_eq!(config.max_connections, defaults.max_connections);
    }

    #[test]
    fn limit_flags_reach_the_relay_config() {
        let config = config_of(&[
            "nook-relay",
            "--max-envelopes-per-mailbox",
            "7",
            "--max-bytes-per-mailbox",
            "1000000",
            "--max-mailboxes-per-connection",
            "3",
            "--requests-per-second",
            "50",
            "--max-connections",
            "9",
        ]);
        assert_eq!(config.limits.max_envelopes_per_mailbox, 7);
        assert_eq!(config.limits.max_bytes_per_mailbox, 1_000_000);
        assert_eq!(config.limits.max_mailboxes_per_connection, 3);
        assert_eq!(config.limits.requests_per_second, 50);
        assert_eq!(config.max_connections, 9);
    }

    #[test]
    fn limits_that_would_refuse_everything_are_refused_at_start() {
        for bad in [
            ["--max-envelopes-per-mailbox", "0"],
            ["--requests-per-second", "0"],
            ["--max-mailboxes-per-connection", "0"],
            ["--max-connections", "0"],
            // Smaller than one largest envelope: that envelope could never be stored.
            ["--max-bytes-per-mailbox", "1000"],
        ] {
            let err = Cli::try_parse_from(["nook-relay", bad[0], bad[1]]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
            // The message names the smallest value taken, not a range up to u64::MAX.
            let text = err.to_string();
            let least = if bad[0] == "--max-bytes-per-mailbox" {
                "at least 131072"
            } else {
                "at least 1"
            };
            assert!(text.contains(least), "{bad:?}: {text}");
        }
        let err = Cli::try_parse_from(["nook-relay", "--max-connections", "many"]).unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
    }
}

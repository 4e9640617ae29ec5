//! The `nook-relay` binary.

// Every envelope allocates a few 2 KiB buffers; glibc malloc/free were ~8 % of the
// relay under load. Without transparent huge pages (the `no_thp` feature) mimalloc
// keeps an idle relay at ~8 MB RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use nook_proto::limits::{
    DEFAULT_MAX_BYTES_PER_MAILBOX, DEFAULT_MAX_ENVELOPES_PER_MAILBOX,
    DEFAULT_MAX_MAILBOXES_PER_CONNECTION, DEFAULT_REQUESTS_PER_SECOND, MAX_ENVELOPE, MAX_FRAME,
    MAX_TTL_SECS, MIN_TTL_SECS,
};
use nook_relay::admission::{CreateTokenHash, Rate};
use nook_relay::conn::{DEFAULT_FRAME_DEADLINE, DEFAULT_MAX_PARTIAL_FRAME_BYTES, FrameLimits};
use nook_relay::engine::{
    DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION, EngineError,
};
use nook_relay::identity::IdentityError;
use nook_relay::server::StartError;
use nook_relay::server::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_RETRY_FROM_HANDSHAKES, UDP_RECV_BUFFER,
};
use nook_relay::{Config, Relay, Shutdown, identity};
use nook_vault::{Log, Vault, VaultError};

mod config_file;
// The same generator as `nook`'s: one file, so both binaries' pages look alike.
#[path = "../../client-cli/src/manual.rs"]
mod manual;

/// Where a relay listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

/// `--version`: the program's version and the protocol version it speaks.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        nook_proto::limits::PROTOCOL_VERSION
    )
});

const EXAMPLES: &str = "EXAMPLES:
  nook-relay --listen 0.0.0.0:4433 --public-host relay.example.org
  nook-relay --config /etc/nook-relay.toml --max-ttl 1d    # the flag beats the file
  nook-relay --metrics 127.0.0.1:9090    # Prometheus counts at http://127.0.0.1:9090/metrics
  nook-relay address --data /var/lib/nook-relay";

/// A nook relay: stores sealed envelopes of private, ephemeral talks and forgets them
/// when a talk closes. Prints its address (to give to clients) as the first line.
#[derive(Parser, Debug)]
#[command(name = "nook-relay", version = VERSION.as_str(), about, after_help = EXAMPLES)]
// A flag given twice counts once, the last time: settings from --config come first.
#[command(args_override_self = true)]
struct Cli {
    /// Read settings from this TOML file: each key is a flag's long name without its
    /// dashes (max-ttl = "7d"). The command line and the flags' environment variables
    /// beat the file; an unknown key is refused.
    #[arg(long, env = "NOOK_RELAY_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to listen on: IP:PORT, or HOST:PORT (the name is resolved and the
    /// relay listens on its first address; the name is then the address's host unless
    /// --public-host is given). Default 127.0.0.1:4433; 0.0.0.0:4433 for a public relay.
    #[arg(long, global = true, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: Option<Listen>,
    /// Data folder (identity and store). Default: $XDG_DATA_HOME/nook-relay or
    /// ~/.local/share/nook-relay.
    #[arg(long, env = "NOOK_RELAY_DATA", global = true)]
    data: Option<PathBuf>,
    /// Host name or IP address to print in the address, as clients reach this relay
    /// (default: the listen IP).
    #[arg(long, global = true, value_name = "HOST", value_parser = public_host)]
    public_host: Option<String>,
    /// Create talks only for clients that present the token in this file (its text,
    /// at least 16 bytes; surrounding whitespace is not part of it). Joining, sending,
    /// reading and closing need no token. Give a copy to `nook new --create-token-file`.
    /// A file, never the token itself, so it does not show in `ps`.
    #[arg(
        long,
        env = "NOOK_RELAY_CREATE_TOKEN_FILE",
        global = true,
        value_name = "PATH"
    )]
    create_token_file: Option<PathBuf>,
    /// Serve the counts (connections, mailboxes, envelopes, bytes, refusals; never an
    /// id, key or address) as Prometheus metrics at http://ADDR:PORT/metrics. A
    /// loopback address unless --metrics-allow-remote.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Let --metrics listen on an address other machines can reach (put a firewall
    /// or an authenticating proxy in front of it).
    #[arg(long, requires = "metrics")]
    metrics_allow_remote: bool,
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
    /// Longest time-to-live a new talk may ask for (e.g. 1h, 7d, 1h30m; 1m to 30d,
    /// default 30d); creating a longer one is refused, naming this maximum.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = max_ttl)]
    max_ttl: u32,
    /// Envelope and welcome bytes the relay holds for all talks together; past it new
    /// talks and envelopes get "storage full" (acks, leaves and closes still work).
    #[arg(long, value_name = "BYTES", default_value_t = nook_relay::engine::DEFAULT_MAX_STORED_BYTES,
          value_parser = mailbox_bytes)]
    max_stored_bytes: u64,
    /// Free disk kept for acks, leaves, closes and expiry: below it new talks, joins and
    /// envelopes get "storage full". Also held in the store's `reserve` file, given up
    /// when the disk fills anyway. 0 turns it off.
    #[arg(long, value_name = "BYTES", default_value_t = nook_relay::engine::DEFAULT_DISK_RESERVE_BYTES)]
    disk_reserve: u64,
    /// How often the status line (counts only) is logged, e.g. 60s or 5m; 0 turns it off.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = status_every)]
    status_every: u64,
    /// Talks created at most, relay-wide: N per DURATION, at most N at once (a token
    /// bucket), e.g. 1200/1m; past it a create gets "rate limited".
    #[arg(long, value_name = "N/DURATION", default_value_t = Rate::RELAY.into(),
          value_parser = create_rate)]
    create_rate: CreateRate,
    /// Talks created at most from one client address (an IPv6 address counts by its
    /// /64), as --create-rate.
    #[arg(long, value_name = "N/DURATION", default_value_t = Rate::PER_ADDRESS.into(),
          value_parser = create_rate)]
    create_rate_per_address: CreateRate,
    /// Do not forward for members (private routing, `nook --via` through this relay):
    /// a member asking is refused with "this relay does not forward". Forwarded
    /// sessions to talks on this relay are still served.
    #[arg(long)]
    no_forward: bool,
    /// Forwarded sessions one client address carries through this relay at once (an
    /// IPv6 address counts by its /64); past it a member is refused until one ends.
    #[arg(long, value_name = "N", default_value_t = nook_relay::forward::DEFAULT_FORWARD_PER_ADDRESS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    forward_per_address: usize,
    /// Forwarded sessions this relay carries at once, from all addresses together.
    #[arg(long, value_name = "N", default_value_t = nook_relay::forward::DEFAULT_FORWARD_MAX,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    forward_max: usize,
    /// Time a client may take to send one frame, from its first byte to its last (1s
    /// to 1h); past it the connection is closed.
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_FRAME_DEADLINE.as_secs(),
          value_parser = frame_deadline)]
    frame_deadline: u64,
    /// Bytes of frames still being received, all connections together; the connection
    /// whose frame would pass it is closed. At least one largest frame.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_PARTIAL_FRAME_BYTES,
          value_parser = at_least_a_frame)]
    max_partial_frame_bytes: usize,
    /// Handshakes in progress from which a new client must first pass a QUIC Retry
    /// (proving its address; one more round trip). 0: always.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRY_FROM_HANDSHAKES,
          value_parser = whole_number)]
    retry_from_handshakes: usize,
    /// Handshakes in progress at once; further connection attempts are refused.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_HANDSHAKES,
          value_parser = at_least_one::<usize>)]
    max_handshakes: usize,
    /// Time a handshake may take before it is abandoned (1s to 60s).
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
          value_parser = handshake_timeout)]
    handshake_timeout: u64,
    /// Bytes of answers and pushes queued for one connection that does not read them;
    /// past it the connection is dropped as too slow. At least one largest frame.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
          value_parser = at_least_a_frame)]
    max_queued_bytes_per_connection: usize,
    /// Bytes queued for all connections together (at least
    /// --max-queued-bytes-per-connection); past it the connections holding the most
    /// are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_QUEUED_BYTES,
          value_parser = at_least_a_frame)]
    max_queued_bytes: usize,
    /// Live listings one board may hold; past it a post gets "board full" (spec §17.3).
    #[arg(long, value_name = "N",
          default_value_t = nook_proto::limits::DEFAULT_MAX_LISTINGS_PER_BOARD,
          value_parser = at_least_one::<usize>)]
    max_listings_per_board: usize,
    /// Live listings on the whole relay, all boards together; past it a post gets
    /// "board full".
    #[arg(long, value_name = "N", default_value_t = nook_proto::limits::DEFAULT_MAX_LISTINGS,
          value_parser = at_least_one::<usize>)]
    max_listings: usize,
    /// Seat requests (waiting or answered) one listing holds; past it an ask gets
    /// "board full".
    #[arg(long, value_name = "N",
          default_value_t = nook_proto::limits::DEFAULT_MAX_REQUESTS_PER_LISTING,
          value_parser = at_least_one::<usize>)]
    max_requests_per_listing: usize,
    /// Asks one connection may send per minute (a token bucket holding as many); past
    /// it an ask gets "rate limited".
    #[arg(long, value_name = "N", default_value_t = nook_proto::limits::DEFAULT_ASKS_PER_MINUTE,
          value_parser = at_least_one::<u32>)]
    asks_per_minute: u32,
}

/// A `--create-rate`: `N/DURATION`, as the operator wrote it and as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CreateRate(Rate);

impl From<Rate> for CreateRate {
    fn from(r: Rate) -> CreateRate {
        CreateRate(r)
    }
}

impl std::fmt::Display for CreateRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.per.as_secs();
        match secs {
            s if s % 86_400 == 0 => write!(f, "{}/{}d", self.0.count, s / 86_400),
            s if s % 3600 == 0 => write!(f, "{}/{}h", self.0.count, s / 3600),
            s if s % 60 == 0 => write!(f, "{}/{}m", self.0.count, s / 60),
            s => write!(f, "{}/{s}s", self.0.count),
        }
    }
}

/// `N/DURATION`: N at least 1, DURATION from 1s to 30d.
fn create_rate(v: &str) -> Result<CreateRate, String> {
    let shape = || format!("give N/DURATION, e.g. 60/1m or 500/1d, not \"{v}\"");
    let (n, per) = v.split_once('/').ok_or_else(shape)?;
    let count: u32 = match n.trim().parse() {
        Ok(c) if c >= 1 => c,
        Ok(_) => return Err("N must be at least 1 (0 would refuse every create)".into()),
        Err(_) => return Err(shape()),
    };
    let secs = nook_proto::limits::duration_secs(per).ok_or_else(shape)?;
    if !(1..=30 * 86_400).contains(&secs) {
        return Err(format!("the DURATION must be from 1s to 30d, got {per}"));
    }
    Ok(CreateRate(Rate {
        count,
        per: std::time::Duration::from_secs(secs),
    }))
}

/// A duration in seconds within `min..=max`, named in the error as written.
fn duration_within(v: &str, min: u64, max: u64, range: &str) -> Result<u64, String> {
    let secs = duration_secs(v)?;
    if (min..=max).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be from {range}, got {v}"))
    }
}

/// A `--frame-deadline`.
fn frame_deadline(v: &str) -> Result<u64, String> {
    duration_within(v, 1, 3600, "1s to 1h")
}

/// A `--handshake-timeout`: past the idle timeout (60 s) quinn gives up anyway.
fn handshake_timeout(v: &str) -> Result<u64, String> {
    duration_within(v, 1, 60, "1s to 60s")
}

/// Bytes that hold at least one frame of the largest size (header included): a
/// smaller bound would refuse every large frame.
fn at_least_a_frame(v: &str) -> Result<usize, String> {
    let min = MAX_FRAME + nook_proto::codec::HEADER_LEN;
    match v.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!(
            "must be a number of bytes, at least {min} (one frame of the largest size, \
             1 MiB and its 4-byte header)"
        )),
    }
}

/// A count that may be 0.
fn whole_number(v: &str) -> Result<usize, String> {
    v.parse()
        .map_err(|_| "must be a whole number (0 or more)".to_string())
}

/// A `--status-every`: any duration up to a day, or 0 for never.
fn status_every(v: &str) -> Result<u64, String> {
    let secs = duration_secs(v)?;
    if secs > 86_400 {
        return Err(format!("must be at most 1d (or 0 to turn it off), got {v}"));
    }
    Ok(secs)
}

/// A `--max-ttl`: within the protocol's TTL range, in seconds.
fn max_ttl(v: &str) -> Result<u32, String> {
    let secs = duration_secs(v)?;
    u32::try_from(secs)
        .ok()
        .filter(|s| (MIN_TTL_SECS..=MAX_TTL_SECS).contains(s))
        .ok_or_else(|| format!("must be between 1m and 30d (the protocol's range), got {v}"))
}

/// Seconds in a duration written as the client's `--ttl` is (one rule for both binaries:
/// `nook_proto::limits::duration_secs`).
fn duration_secs(v: &str) -> Result<u64, String> {
    nook_proto::limits::duration_secs(v)
        .ok_or_else(|| format!("\"{v}\" is not a duration; use e.g. 90s, 45m, 1h30m or 7d"))
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
    /// Sets `config` from the flags; an error names flags that do not fit together.
    fn apply(&self, config: &mut Config) -> Result<(), String> {
        if self.max_queued_bytes < self.max_queued_bytes_per_connection {
            return Err(format!(
                "--max-queued-bytes ({}) must be at least --max-queued-bytes-per-connection ({})",
                self.max_queued_bytes, self.max_queued_bytes_per_connection
            ));
        }
        let limits = &mut config.limits;
        limits.max_envelopes_per_mailbox = self.max_envelopes_per_mailbox;
        limits.max_bytes_per_mailbox = self.max_bytes_per_mailbox;
        limits.max_mailboxes_per_connection = self.max_mailboxes_per_connection as usize;
        limits.requests_per_second = self.requests_per_second;
        limits.max_ttl_secs = self.max_ttl;
        limits.max_queued_bytes_per_connection = self.max_queued_bytes_per_connection;
        limits.max_queued_bytes = self.max_queued_bytes;
        limits.max_stored_bytes = self.max_stored_bytes;
        limits.disk_reserve_bytes = self.disk_reserve;
        limits.max_listings_per_board = self.max_listings_per_board;
        limits.max_listings = self.max_listings;
        limits.max_requests_per_listing = self.max_requests_per_listing;
        limits.asks_per_minute = self.asks_per_minute;
        config.max_connections = self.max_connections as usize;
        config.status_every = std::time::Duration::from_secs(self.status_every);
        config.create_rate = self.create_rate.0;
        config.create_rate_per_address = self.create_rate_per_address.0;
        config.frames = FrameLimits {
            deadline: std::time::Duration::from_secs(self.frame_deadline),
            max_partial_bytes: self.max_partial_frame_bytes,
        };
        config.retry_from_handshakes = self.retry_from_handshakes;
        config.max_handshakes = self.max_handshakes;
        config.handshake_timeout = std::time::Duration::from_secs(self.handshake_timeout);
        config.forward = nook_relay::forward::ForwardLimits {
            enabled: !self.no_forward,
            per_address: self.forward_per_address,
            total: self.forward_max,
        };
        Ok(())
    }
}

/// The relay's creation token from `path`, kept only as a hash. The file is read once,
/// at start; a token readable by other users of the machine is warned about.
fn read_create_token(path: &Path) -> anyhow::Result<CreateTokenHash> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the creation token file {}", path.display()))?;
    let mode = file.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
    if mode & 0o077 != 0 {
        eprintln!(
            "warning: the creation token file {} can be read by other users of this machine \
             (chmod 600 it)",
            path.display()
        );
    }
    // Bounded: a token is short, and the path may name anything.
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(nook_proto::limits::MAX_CREATE_TOKEN_TEXT as u64 + 4096)
        .read_to_string(&mut text)
        .with_context(|| {
            format!(
                "cannot read the creation token file {} (it must be UTF-8 text)",
                path.display()
            )
        })?;
    CreateTokenHash::from_text(&text)
        .with_context(|| format!("cannot use the creation token in {}", path.display()))
}

/// What the operator needs to create talks on a relay with a creation token.
fn create_token_note(path: &Path) {
    eprintln!(
        "note: creating talks here needs the creation token in {}: give a copy of the file \
         to `nook new --create-token-file FILE` (or its text in NOOK_CREATE_TOKEN); \
         invitees need no token, and invites never carry it",
        path.display()
    );
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the address the relay using the data folder printed when it last
    /// started, and exit (--public-host replaces its host).
    Address,
    /// Show what the data folder holds (formats, talks, envelopes, bytes) while the
    /// relay is stopped, and exit. Reads the store without changing it.
    Status,
    /// Move the relay to a new identity key (stop the relay first). The old key signs
    /// a statement naming the new one; members who hold the old address follow it.
    /// Prints the new address.
    RotateKey,
    /// Retire the relay at TIME: new talks are refused from now on, members are told,
    /// and at TIME every talk is closed with a signed receipt. Works on a running relay
    /// (it picks the record up within a second) or a stopped one.
    Retire {
        /// When: a UTC time like 2026-12-24T18:00:00Z, or a duration from now (7d, 1h30m).
        #[arg(long, value_name = "TIME")]
        at: String,
    },
    /// Print a shell completion script on stdout, e.g. `nook-relay completions bash`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (nook-relay.1 and one per command) into DIR.
    Man {
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// The command line, with the settings of its --config file (if any) before it.
fn parse_cli() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&args);
    let Some(path) = cli.config.clone() else {
        return cli;
    };
    let mut cmd = Cli::command();
    let settings = match config_file::args(&cmd, &path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let mut full = args;
    let rest = full.split_off(1.min(full.len()));
    full.extend(settings);
    full.extend(rest);
    match cmd
        .try_get_matches_from_mut(full)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.format(&mut cmd).exit(),
    }
}

/// Whether log lines may be coloured: for a person at a terminal that did not ask
/// for none (https://no-color.org: NO_COLOR set and not empty).
fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A `--listen` value: the socket address, and the host name it was given as.
#[derive(Debug, Clone)]
struct Listen {
    addr: SocketAddr,
    name: Option<String>,
}

/// `IP:PORT`, or `HOST:PORT` resolved now.
fn parse_listen(v: &str) -> Result<Listen, String> {
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok(Listen { addr, name: None });
    }
    let example = "e.g. 127.0.0.1:4433, 0.0.0.0:4433 or [::]:4433";
    let Some((host, port)) = v.rsplit_once(':').filter(|_| v.parse::<IpAddr>().is_err()) else {
        return Err(format!(
            "give an address and a port, ADDR:PORT ({example}; an IPv6 address in brackets)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number ({example})"))?;
    let name = identity::check_host(host).map_err(|e| e.to_string())?;
    let resolved = (name.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {name}: {e}; give an IP address instead ({example})"))?
        .next()
        .ok_or_else(|| {
            format!("{name} resolves to no address; give an IP address instead ({example})")
        })?;
    Ok(Listen {
        addr: resolved,
        name: Some(name),
    })
}

/// A `--public-host`: a host clients can be given.
fn public_host(v: &str) -> Result<String, String> {
    identity::check_host(v).map_err(|e| e.to_string())
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
    let cli = parse_cli();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in a log file or a journal.
        .with_ansi(colour_wanted(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    let data = match cli.data.clone() {
        Some(d) => d,
        None => default_data_dir()?,
    };
    match cli.command {
        Some(Command::Address) => {
            print_address(&cli, &data)?;
            if let Some(path) = &cli.create_token_file {
                create_token_note(path);
            }
            return Ok(());
        }
        Some(Command::Status) => return status(&data),
        Some(Command::RotateKey) => return rotate_key(&data),
        Some(Command::Retire { ref at }) => return retire(&data, at),
        Some(Command::Completions { shell }) => {
            manual::completions(Cli::command(), shell);
            return Ok(());
        }
        Some(Command::Man { ref out }) => {
            let written = manual::man_pages(Cli::command(), out)
                .with_context(|| format!("cannot write man pages to {}", out.display()))?;
            for path in written {
                println!("{}", path.display());
            }
            return Ok(());
        }
        None => {}
    }
    if let Some(addr) = cli.metrics
        && !addr.ip().is_loopback()
        && !cli.metrics_allow_remote
    {
        anyhow::bail!(
            "--metrics {addr} is not a loopback address: the metrics would be open to other \
             machines. Use 127.0.0.1:PORT (a scraper on this machine), or add \
             --metrics-allow-remote if a firewall or proxy guards the port"
        );
    }
    let listen = match cli.listen.clone() {
        Some(l) => l,
        None => parse_listen(DEFAULT_LISTEN).map_err(anyhow::Error::msg)?,
    };
    if let Some(name) = &listen.name {
        tracing::info!(listen = %listen.addr, "{name} resolved");
    }
    let create_token = cli
        .create_token_file
        .as_deref()
        .map(read_create_token)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut config = Config::new(listen.addr, data.clone());
        config.public_host = cli.public_host.clone().or(listen.name);
        cli.limits.apply(&mut config).map_err(anyhow::Error::msg)?;
        config.create_token = create_token;
        config.metrics = cli.metrics;
        let relay = Relay::start(config).map_err(|e| start_error(e, &data))?;
        println!("{}", relay.address());
        if let Some(addr) = relay.metrics_addr() {
            tracing::info!("metrics at http://{addr}/metrics");
        }
        if let Some(path) = &cli.create_token_file {
            create_token_note(path);
        }
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

/// Crates below the relay whose debug and trace output names client addresses (quinn
/// logs every packet's source) or is only noise to an operator: held at `warn` unless
/// `RUST_LOG` names them, so `RUST_LOG=debug` shows the relay's own lines only.
const QUIET_CRATES: &[(&str, &[&str])] = &[
    ("quinn", &["quinn", "quinn_proto", "quinn_udp"]),
    ("rustls", &["rustls"]),
    ("sled", &["sled"]),
    // The relay's own line naming each peer (server::PEERS_TARGET).
    ("nook_peers", &["nook_peers"]),
];

/// The log filter: `RUST_LOG` (default `nook_relay=info`), with every crate of
/// [`QUIET_CRATES`] it does not name held at `warn`. A target directive beats a bare
/// level whatever their order, so `debug` stays `debug` for everything else.
fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let asked = rust_log.map(str::trim).filter(|v| !v.is_empty());
    let mut directives = asked.unwrap_or("nook_relay=info").to_string();
    for (name, targets) in QUIET_CRATES {
        if !directives.contains(name) {
            for target in *targets {
                directives.push_str(&format!(",{target}=warn"));
            }
        }
    }
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG={directives:?} is not a log filter ({e}); using the default");
        tracing_subscriber::EnvFilter::new("nook_relay=info,quinn=warn,rustls=warn,sled=warn")
    })
}

/// Why the relay did not start, with what to do about it.
fn start_error(e: StartError, data: &Path) -> anyhow::Error {
    match e {
        // The flag is the binary's to name; the library only says what happened.
        StartError::AddrInUse { .. } => {
            anyhow::anyhow!("{e}; pick another with --listen ADDR:PORT")
        }
        StartError::Listen { .. } => anyhow::anyhow!("{e}; check --listen ADDR:PORT"),
        StartError::Metrics { .. } => anyhow::anyhow!("{e}; pick another with --metrics ADDR:PORT"),
        StartError::PrivilegedPort { .. } => {
            anyhow::anyhow!("{e}, or pick a port of 1024 or more with --listen ADDR:PORT")
        }
        // These name the folder and what to do already.
        StartError::Identity(IdentityError::InUse { .. } | IdentityError::NotOwner { .. })
        | StartError::PublicHost(_) => anyhow::Error::new(e),
        StartError::Store(EngineError::Vault(VaultError::UnsupportedFormat { .. })) => {
            anyhow::anyhow!(
                "cannot start the relay with data folder {}: {e}. `nook-relay status --data \
                 {}` shows the formats it holds (README: \"Upgrading and downgrading\")",
                data.display(),
                data.display()
            )
        }
        e => anyhow::Error::new(e).context(format!(
            "cannot start the relay with data folder {}",
            data.display()
        )),
    }
}

/// `nook-relay address`: what the relay using `data` recorded, never an address
/// rebuilt from this command's own defaults.
fn print_address(cli: &Cli, data: &Path) -> anyhow::Result<()> {
    let recorded = identity::recorded_address(data)?;
    let port = recorded
        .parse::<nook_crypto::RelayAddr>()
        .ok()
        .map(|a| a.port);
    if let Some(listen) = &cli.listen
        && Some(listen.addr.port()) != port
    {
        eprintln!(
            "note: --listen does not change what `address` prints: the address the relay using \
             {} recorded when it last started",
            data.display()
        );
    }
    let address = match &cli.public_host {
        Some(host) => identity::with_host(&recorded, host)
            .with_context(|| format!("the address recorded in {} is damaged", data.display()))?,
        None => recorded,
    };
    println!("{address}");
    Ok(())
}

/// `nook-relay rotate-key`: the data folder's lock is taken for the rotation, so a
/// running relay is refused ("stop it first"), and none starts meanwhile.
fn rotate_key(data: &Path) -> anyhow::Result<()> {
    identity::check_folder_owner(data)?;
    if !data.join(identity::KEY_FILE).exists() {
        anyhow::bail!(
            "{} holds no relay identity to rotate: start nook-relay once with this data folder first",
            data.display()
        );
    }
    let _lock = identity::DataLock::acquire(data).map_err(|e| match e {
        IdentityError::InUse { .. } => anyhow::anyhow!(
            "{e}\nstop the relay first: rotate-key works on a stopped relay (start it again afterwards)"
        ),
        e => e.into(),
    })?;
    let rotated = identity::rotate(data, unix_now())?;
    eprintln!(
        "rotated the relay key: {} -> {}; members holding the old address follow the signed statement (keep {} with the key in your backups)",
        rotated.old,
        rotated.new,
        identity::ROTATIONS_FILE
    );
    match rotated.address {
        Some(address) => println!("{address}"),
        None => eprintln!("note: no address recorded yet; the relay prints it when it starts"),
    }
    Ok(())
}

/// `nook-relay retire --at TIME`: writes the retirement record the relay reads.
fn retire(data: &Path, at: &str) -> anyhow::Result<()> {
    identity::check_folder_owner(data)?;
    if !data.join(identity::KEY_FILE).exists() {
        anyhow::bail!(
            "{} holds no relay: give the --data DIR of the relay to retire",
            data.display()
        );
    }
    let now = unix_now();
    let at = nook_relay::retire::parse_at(at, now).map_err(anyhow::Error::msg)?;
    nook_relay::retire::record(data, at)?;
    let running = identity::DataLock::check_free(data).is_err();
    println!(
        "retiring at {}: new talks are refused{}; members are told, and every talk is closed with a receipt then",
        nook_crypto::auth::rfc3339_utc(at),
        if running {
            " from now on (the running relay picks this up within a second)"
        } else {
            " once the relay starts"
        }
    );
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `nook-relay status`: the store's formats and size, read while the relay is stopped.
fn status(data: &Path) -> anyhow::Result<()> {
    if !data.is_dir() {
        anyhow::bail!(
            "{} is not a relay data folder (it does not exist); pass --data DIR",
            data.display()
        );
    }
    // Held while reading, so no relay starts meanwhile.
    let _lock = match identity::DataLock::acquire(data) {
        Ok(lock) => lock,
        Err(IdentityError::InUse { pid, .. }) => anyhow::bail!(
            "nook-relay{} is running on {}; status reads the store only while the relay is \
             stopped (a running relay logs its counts every 5 minutes)",
            pid.map_or(String::new(), |p| format!(" (pid {p})")),
            data.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let store = data.join(identity::STORE_DIR);
    let vault = Vault::inspect(&store).context("cannot read the store's key store or database")?;
    let log = Log::inspect(&store.join("log")).context("cannot read the store's envelope log")?;
    let live: HashSet<u64> = vault.namespaces.iter().copied().collect();
    let envelopes: u64 = log
        .records
        .iter()
        .filter(|(ns, _)| live.contains(ns))
        .map(|(_, n)| n)
        .sum();
    let or_none = |v: Option<u32>| v.map_or("none yet".to_string(), |v| v.to_string());
    let segments = if log.formats.is_empty() {
        "none yet".to_string()
    } else {
        log.formats
            .iter()
            .map(|(v, n)| format!("{v} ({n} file{})", if *n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let reads = |list: &[u32]| {
        list.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    println!("data folder  {}", data.display());
    match identity::recorded_address(data) {
        Ok(a) => println!("address      {a} (recorded by the last start)"),
        Err(_) => println!("address      none recorded (start the relay once)"),
    }
    let key = identity::peek_fingerprint(data);
    let owner = identity::read_owner(&store);
    println!(
        "identity     identity.key: {}; the store belongs to: {}",
        match &key {
            Ok(Some(fp)) => fp.to_string(),
            Ok(None) => "missing".into(),
            Err(_) => "damaged".into(),
        },
        match &owner {
            Ok(Some(fp)) => fp.to_string(),
            Ok(None) => "not recorded".into(),
            Err(_) => "unreadable record".into(),
        }
    );
    println!(
        "formats      key store {}, vault {}, log segments {segments}",
        or_none(vault.key_store_format),
        or_none(vault.format)
    );
    println!(
        "             this nook-relay reads key store {}, vault {}, log segments {}",
        reads(nook_vault::keystore::SUPPORTED),
        reads(nook_vault::vault::SUPPORTED),
        reads(nook_vault::log::SUPPORTED)
    );
    let foreign_format = vault
        .key_store_format
        .is_some_and(|v| !nook_vault::keystore::SUPPORTED.contains(&v))
        || vault
            .format
            .is_some_and(|v| !nook_vault::vault::SUPPORTED.contains(&v))
        || log
            .formats
            .keys()
            .any(|v| !nook_vault::log::SUPPORTED.contains(v));
    if foreign_format || log.foreign > 0 {
        println!(
            "             not all of it: this version refuses to start here; run the version \
             that wrote it (README: \"Upgrading and downgrading\")"
        );
    }
    // Every namespace but the relay's own list of tombstones is a talk.
    println!("talks        {}", vault.namespaces.len().saturating_sub(1));
    println!(
        "envelopes    {envelopes} (in the log; acknowledged ones count until their segment is \
         reclaimed)"
    );
    println!("bytes        {} (the store on disk)", disk_bytes(&store));
    Ok(())
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
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
        let listen = cli
            .listen
            .map_or_else(|| DEFAULT_LISTEN.parse().unwrap(), |l| l.addr);
        let mut config = Config::new(listen, PathBuf::from("/unused"));
        cli.limits.apply(&mut config).unwrap();
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
        assert_eq!(config.frames, defaults.frames);
        assert_eq!(config.retry_from_handshakes, defaults.retry_from_handshakes);
        assert_eq!(config.max_handshakes, defaults.max_handshakes);
        assert_eq!(config.handshake_timeout, defaults.handshake_timeout);
        assert_eq!(config.create_rate, defaults.create_rate);
        assert_eq!(
            config.create_rate_per_address,
            defaults.create_rate_per_address
        );
        assert!(config.create_token.is_none());
        assert_eq!(config.forward, defaults.forward);
        assert!(config.forward.enabled, "relays forward by default");
    }

    #[test]
    fn forwarding_flags_and_their_config_keys_set_the_limits() {
        let config = config_of(&[
            "nook-relay",
            "--no-forward",
            "--forward-per-address",
            "3",
            "--forward-max",
            "9",
        ]);
        let want = nook_relay::forward::ForwardLimits {
            enabled: false,
            per_address: 3,
            total: 9,
        };
        assert_eq!(config.forward, want);
        assert!(Cli::try_parse_from(["nook-relay", "--forward-max", "0"]).is_err());
        let cmd = Cli::command();
        let set = config_file::args_of(
            &cmd,
            "no-forward = true\nforward-per-address = 3\nforward-max = 9\n",
            std::path::Path::new("relay.toml"),
            &|_| false,
        )
        .unwrap();
        let mut args = vec![std::ffi::OsString::from("nook-relay")];
        args.extend(set);
        let cli = Cli::try_parse_from(args).unwrap();
        let mut from_file = Config::new(DEFAULT_LISTEN.parse().unwrap(), PathBuf::from("/unused"));
        cli.limits.apply(&mut from_file).unwrap();
        assert_eq!(from_file.forward, want);
    }

    #[test]
    fn defence_flags_reach_the_relay_config() {
        let config = config_of(&[
            "nook-relay",
            "--frame-deadline",
            "3s",
            "--max-partial-frame-bytes",
            "2000000",
            "--retry-from-handshakes",
            "0",
            "--max-handshakes",
            "12",
            "--handshake-timeout",
            "5s",
            "--max-queued-bytes-per-connection",
            "3000000",
            "--max-queued-bytes",
            "9000000",
            "--create-rate",
            "500/1d",
            "--create-rate-per-address",
            "3/90s",
        ]);
        let secs = std::time::Duration::from_secs;
        assert_eq!(config.frames.deadline, secs(3));
        assert_eq!(config.frames.max_partial_bytes, 2_000_000);
        assert_eq!(config.retry_from_handshakes, 0);
        assert_eq!(config.max_handshakes, 12);
        assert_eq!(config.handshake_timeout, secs(5));
        assert_eq!(config.limits.max_queued_bytes_per_connection, 3_000_000);
        assert_eq!(config.limits.max_queued_bytes, 9_000_000);
        let rate = |count, s| Rate {
            count,
            per: secs(s),
        };
        assert_eq!(config.create_rate, rate(500, 86_400));
        assert_eq!(config.create_rate_per_address, rate(3, 90));
    }

    #[test]
    fn defence_flags_out_of_range_are_refused_naming_what_is_taken() {
        for (flag, bad, says) in [
            ("--frame-deadline", "0", "1s to 1h"),
            ("--frame-deadline", "2h", "1s to 1h"),
            ("--handshake-timeout", "90s", "1s to 60s"),
            ("--max-handshakes", "0", "at least 1"),
            ("--retry-from-handshakes", "some", "whole number"),
            ("--max-partial-frame-bytes", "1000", "at least 1048580"),
            (
                "--max-queued-bytes-per-connection",
                "65536",
                "at least 1048580",
            ),
            ("--max-queued-bytes", "lots", "at least 1048580"),
            ("--create-rate", "60", "N/DURATION"),
            ("--create-rate", "0/1m", "at least 1"),
            ("--create-rate-per-address", "5/0s", "1s to 30d"),
            ("--create-rate-per-address", "5/soon", "N/DURATION"),
        ] {
            let err = Cli::try_parse_from(["nook-relay", flag, bad]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag} {bad}"
            );
            assert!(err.to_string().contains(says), "{flag} {bad}: {err}");
        }
        // Flags that parse alone but not together.
        let cli = Cli::try_parse_from([
            "nook-relay",
            "--max-queued-bytes-per-connection",
            "4000000",
            "--max-queued-bytes",
            "2000000",
        ])
        .unwrap();
        let mut config = Config::new(DEFAULT_LISTEN.parse().unwrap(), PathBuf::from("/unused"));
        let err = cli.limits.apply(&mut config).unwrap_err();
        assert!(
            err.contains("--max-queued-bytes (2000000) must be at least"),
            "{err}"
        );
    }

    #[test]
    fn the_create_rate_defaults_read_back_as_written() {
        assert_eq!(CreateRate(Rate::RELAY).to_string(), "1200/1m");
        assert_eq!(CreateRate(Rate::PER_ADDRESS).to_string(), "60/1m");
        assert_eq!(create_rate("60/1m").unwrap(), CreateRate(Rate::PER_ADDRESS));
    }

    #[test]
    fn a_create_token_file_is_read_as_its_text_and_a_short_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("token");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        let hash = read_create_token(&good).unwrap();
        let presented =
            nook_proto::CreateToken(nook_crypto::kdf::sha256(&[b"0123456789abcdef0123"]));
        assert!(hash.matches(&presented));
        let short = dir.path().join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        let err = format!("{:#}", read_create_token(&short).unwrap_err());
        assert!(err.contains("at least 16"), "{err}");
        let missing = format!(
            "{:#}",
            read_create_token(&dir.path().join("nope")).unwrap_err()
        );
        assert!(
            missing.contains("cannot read the creation token file"),
            "{missing}"
        );
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
            "--max-ttl",
            "1h30m",
        ]);
        assert_eq!(config.limits.max_envelopes_per_mailbox, 7);
        assert_eq!(config.limits.max_bytes_per_mailbox, 1_000_000);
        assert_eq!(config.limits.max_mailboxes_per_connection, 3);
        assert_eq!(config.limits.requests_per_second, 50);
        assert_eq!(config.max_connections, 9);
        assert_eq!(config.limits.max_ttl_secs, 5400);
    }

    #[test]
    fn the_status_line_interval_is_set_or_turned_off() {
        assert_eq!(
            config_of(&["nook-relay", "--status-every", "90s"]).status_every,
            std::time::Duration::from_secs(90)
        );
        assert!(
            config_of(&["nook-relay", "--status-every", "0"])
                .status_every
                .is_zero()
        );
        assert_eq!(
            config_of(&["nook-relay"]).status_every,
            std::time::Duration::from_secs(300)
        );
        assert!(Cli::try_parse_from(["nook-relay", "--status-every", "2d"]).is_err());
    }

    #[test]
    fn a_max_ttl_outside_the_protocols_range_is_refused() {
        for bad in ["0", "30s", "31d", "1h1h", "1.5h", "soon", ""] {
            let err = Cli::try_parse_from(["nook-relay", "--max-ttl", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        assert_eq!(
            config_of(&["nook-relay", "--max-ttl", "3600"])
                .limits
                .max_ttl_secs,
            3600
        );
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

    #[test]
    fn debug_for_all_leaves_quinn_and_rustls_at_warn_unless_named() {
        let text = |v: Option<&str>| log_filter(v).to_string();
        let all = text(Some("debug"));
        for quiet in ["quinn=warn", "quinn_proto=warn", "rustls=warn", "sled=warn"] {
            assert!(all.contains(quiet), "{all}");
        }
        assert!(text(None).contains("nook_relay=info"), "{}", text(None));
        let named = text(Some("debug,quinn_proto=trace"));
        assert!(
            named.contains("quinn_proto=trace") && !named.contains("quinn=warn"),
            "{named}"
        );
        assert!(named.contains("rustls=warn"), "{named}");
    }

    #[test]
    fn listen_takes_addresses_and_resolves_host_names() {
        let cli = Cli::try_parse_from(["nook-relay", "--listen", "127.0.0.1:34433"]).unwrap();
        let l = cli.listen.unwrap();
        assert_eq!((l.addr, l.name), ("127.0.0.1:34433".parse().unwrap(), None));
        let cli = Cli::try_parse_from(["nook-relay", "--listen", "localhost:34433"]).unwrap();
        let l = cli.listen.unwrap();
        assert!(l.addr.ip().is_loopback() && l.addr.port() == 34433, "{l:?}");
        assert_eq!(l.name.as_deref(), Some("localhost"));
        for (bad, says) in [
            ("127.0.0.1", "give an address and a port"),
            ("::1", "give an address and a port"),
            ("localhost", "give an address and a port"),
            ("localhost:http", "is not a port number"),
            ("no such host!:4433", "not a host name or IP address"),
            ("nonexistent.invalid:4433", "give an IP address instead"),
        ] {
            let err = Cli::try_parse_from(["nook-relay", "--listen", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_public_host_must_be_a_host_name_or_ip_address() {
        let cli =
            Cli::try_parse_from(["nook-relay", "--public-host", "Relay.Example.org"]).unwrap();
        assert_eq!(cli.public_host.as_deref(), Some("relay.example.org"));
        for bad in [
            "relay example.org",
            "relay.org:4433",
            "nook://x",
            "0.0.0.0",
            "",
        ] {
            let err = Cli::try_parse_from(["nook-relay", "--public-host", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(
                err.to_string().contains("is not a host name or IP address"),
                "{bad}: {err}"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tool_tests {
    use super::*;

    #[test]
    fn every_flag_is_a_key_of_the_config_file() {
        let cmd = Cli::command();
        let path = Path::new("relay.toml");
        let never = |_: &str| false;
        let mut keys = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help", "version"].contains(&long) {
                continue;
            }
            keys += 1;
            // The value may not fit the flag; the key must be known.
            if let Err(e) = config_file::args_of(&cmd, &format!("{long} = \"1\"\n"), path, &never) {
                assert!(!e.to_string().contains("unknown key"), "{long}: {e}");
            }
        }
        assert!(keys >= 20, "{keys}");
        let e = config_file::args_of(&cmd, "config = \"x\"\n", path, &never).unwrap_err();
        assert!(e.to_string().contains("unknown key `config`"), "{e}");
    }

    #[test]
    fn the_file_comes_before_the_command_line() {
        let cmd = Cli::command();
        let set = config_file::args_of(
            &cmd,
            "max-ttl = \"1h\"\nmax-connections = 7\n",
            Path::new("f"),
            &|_| false,
        )
        .unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["nook-relay".into()];
        args.extend(set);
        args.extend(["--max-ttl".into(), "2h".into()]);
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.limits.max_ttl, 7200);
        assert_eq!(cli.limits.max_connections, 7);
    }

    #[test]
    fn board_limits_come_from_flags_and_the_file() {
        let cmd = Cli::command();
        let set = config_file::args_of(
            &cmd,
            "max-listings-per-board = 5000\nasks-per-minute = 3\n",
            Path::new("f"),
            &|_| false,
        )
        .unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["nook-relay".into()];
        args.extend(set);
        args.extend([
            "--max-listings".into(),
            "9".into(),
            "--max-requests-per-listing".into(),
            "2".into(),
        ]);
        let cli = Cli::try_parse_from(args).unwrap();
        let mut config = Config::new(DEFAULT_LISTEN.parse().unwrap(), PathBuf::from("/unused"));
        cli.limits.apply(&mut config).unwrap();
        let l = &config.limits;
        assert_eq!((l.max_listings_per_board, l.max_listings), (5000, 9));
        assert_eq!((l.max_requests_per_listing, l.asks_per_minute), (2, 3));
        let zero = Cli::try_parse_from(["nook-relay", "--max-listings-per-board", "0"]);
        assert!(zero.is_err(), "0 would refuse every post");
    }

    #[test]
    fn no_color_turns_log_colour_off() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}

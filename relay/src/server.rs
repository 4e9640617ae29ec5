//! The QUIC endpoint: socket, TLS and transport from nook-quic's profile, the accept
//! loop, the sweeper and shutdown.
//!
//! Ownership: [`Relay::run`] owns every task it starts (connections in a `JoinSet`,
//! the sweeper) and ends them before it returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admission::{Admission, CreateTokenHash, Rate};
use crate::clock::{Clock, SystemClock};
use crate::conn::{ConnStats, FrameLimits, close_code, serve};
use crate::engine::{Engine, Limits};
use crate::forward::{ForwardLimits, Router, Serving};
use crate::identity;
use crate::metrics::{self, Counts};

/// UDP receive buffer the relay asks for (the rule lives in nook-quic, shared with the
/// benchmarks).
pub use nook_quic::UDP_RECV_BUFFER;

/// Memory the relay's connections may hold in QUIC buffers, unless the operator sets
/// `--max-connections` otherwise: the default limit follows from it.
pub const DEFAULT_CONNECTION_MEMORY_BUDGET: u64 = 16 << 30;

/// Connections one relay serves at once unless configured otherwise: the budget over
/// what one connection can hold at most ([`nook_quic::SERVER_CONNECTION_BYTES`]: its
/// receive and send windows of 1 MiB each and the measured idle cost), 8,050.
pub const DEFAULT_MAX_CONNECTIONS: u32 =
    (DEFAULT_CONNECTION_MEMORY_BUDGET / nook_quic::SERVER_CONNECTION_BYTES) as u32;

/// Handshakes in progress from which clients must first pass a QUIC Retry (one more
/// round trip; a spoofed source address cannot answer it, so a flood of Initials from
/// forged addresses costs the relay one stateless packet each, no connection state).
pub const DEFAULT_RETRY_FROM_HANDSHAKES: usize = 256;

/// Handshakes in progress at once, unless configured otherwise. A half-open handshake
/// held about 38 KB (15,000 Initials never continued grew a relay by 569 MB), so this
/// bounds them near 160 MB; past it attempts are refused with one packet each.
pub const DEFAULT_MAX_HANDSHAKES: usize = 4096;

/// Time a handshake may take before the relay abandons it (rather than the idle
/// timeout, 60 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a relay is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Host printed in the address (defaults to the listen IP).
    pub public_host: Option<String>,
    pub limits: Limits,
    /// How often expired talks are swept.
    pub sweep_every: Duration,
    pub idle_timeout: Duration,
    /// Connections served at once; further handshakes are refused.
    pub max_connections: usize,
    /// Deadline of a frame and the relay's budget for frames still arriving.
    pub frames: FrameLimits,
    /// Handshakes in progress at or above which a client must first prove its
    /// address with a QUIC Retry (0: always).
    pub retry_from_handshakes: usize,
    /// Handshakes in progress at once; further connection attempts are refused.
    pub max_handshakes: usize,
    /// Time a handshake may take before it is abandoned.
    pub handshake_timeout: Duration,
    /// How often the status line is logged; zero: never.
    pub status_every: Duration,
    /// The creation token clients must present to create a talk; `None`: anyone may.
    pub create_token: Option<CreateTokenHash>,
    /// Talks the whole relay creates at most.
    pub create_rate: Rate,
    /// Talks one client address (an IPv6 address by its /64) creates at most.
    pub create_rate_per_address: Rate,
    /// Where to serve the counts as Prometheus metrics over HTTP; `None`: nowhere.
    /// Any address is taken here: the binary refuses non-loopback ones unless told.
    pub metrics: Option<SocketAddr>,
    /// Private routing: whether this relay forwards for members, and its limits.
    pub forward: ForwardLimits,
}

impl Config {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            listen,
            data_dir,
            public_host: None,
            limits: Limits::default(),
            sweep_every: Duration::from_secs(1),
            idle_timeout: nook_quic::IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            frames: FrameLimits::default(),
            retry_from_handshakes: DEFAULT_RETRY_FROM_HANDSHAKES,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            status_every: Duration::from_secs(300),
            create_token: None,
            create_rate: Rate::RELAY,
            create_rate_per_address: Rate::PER_ADDRESS,
            metrics: None,
            forward: ForwardLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("cannot open the relay's store: {0}")]
    Store(#[from] crate::engine::EngineError),
    /// The configured public host is not one clients could use.
    #[error("bad public host: {0}")]
    PublicHost(#[from] identity::HostError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    /// Another socket holds the address: most often a relay already running.
    #[error("{addr} is already in use (another nook-relay?)")]
    AddrInUse { addr: SocketAddr },
    /// A port below 1024 without the privilege to bind it.
    #[error(
        "cannot listen on {addr}: ports below 1024 need root or the CAP_NET_BIND_SERVICE \
         capability (sudo setcap cap_net_bind_service=+ep \"$(command -v nook-relay)\")"
    )]
    PrivilegedPort { addr: SocketAddr },
    #[error("QUIC/TLS setup failed: {0}")]
    Quic(#[from] nook_quic::ProfileError),
    /// The metrics endpoint's TCP address cannot be listened on.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics { addr: SocketAddr, reason: String },
}

/// A started relay: bound, not yet serving until [`Relay::run`].
pub struct Relay {
    endpoint: quinn::Endpoint,
    engine: Arc<Engine>,
    stats: Arc<ConnStats>,
    admission: Arc<Admission>,
    address: String,
    config: Config,
    recv_buffer: usize,
    /// The metrics endpoint's socket, bound at start, served by `run`.
    metrics: Option<std::net::TcpListener>,
    /// Route connections: forwarding for members, and forwarded sessions for us.
    router: Arc<Router>,
    /// Ids of connections and inner sessions (the outbox's subscriptions use them).
    next_conn: Arc<AtomicU64>,
    /// Keeps other relays off the data folder until [`Relay::run`] returns.
    _lock: identity::DataLock,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Why a bind failed, in the operator's terms.
fn bind_error(addr: SocketAddr, io: std::io::Error) -> StartError {
    match io.kind() {
        std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
        std::io::ErrorKind::PermissionDenied if addr.port() != 0 && addr.port() < 1024 => {
            StartError::PrivilegedPort { addr }
        }
        _ => StartError::Listen {
            addr,
            reason: io.to_string(),
        },
    }
}

/// Refuses a store whose key store or log segments are in a format this version
/// does not read, before anything in it is opened for writing (the vault's own
/// format is checked by `Vault::open` before it writes). Nothing is created.
fn check_store_formats(store: &std::path::Path) -> Result<(), StartError> {
    let refuse = |e: nook_vault::VaultError| StartError::Store(e.into());
    let keys = store.join("keys.slots");
    if let Some(found) = nook_vault::keystore::format_version(&keys).map_err(refuse)?
        && !nook_vault::keystore::SUPPORTED.contains(&found)
    {
        return Err(refuse(nook_vault::VaultError::UnsupportedFormat {
            file: keys,
            what: nook_vault::FormatOf::KeyStore,
            found,
            supported: nook_vault::keystore::SUPPORTED,
        }));
    }
    nook_vault::log::check_formats(&store.join("log")).map_err(refuse)
}

/// Stops a running relay.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (Shutdown, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Shutdown(tx), rx)
    }
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Relay {
    /// Binds the socket, takes the data folder's lock, checks the store's formats,
    /// then loads (or makes) the identity and opens the store.
    ///
    /// The socket comes first so that a start that cannot listen (the port is taken)
    /// fails before anything is written: it leaves no data folder, identity or store
    /// behind. The lock comes before anything in the folder is opened, so a second
    /// relay on the folder is refused with the first one's pid. A store in a format
    /// this version does not read is refused before anything in it is opened for
    /// writing; a store of another identity (or beside a missing `identity.key`)
    /// before the store is opened at all.
    pub fn start(config: Config) -> Result<Relay, StartError> {
        Relay::start_with_clock(config, Arc::new(SystemClock))
    }

    /// [`Relay::start`] with an injected clock (tests).
    pub fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Relay, StartError> {
        let listen_err = |reason: String| StartError::Listen {
            addr: config.listen,
            reason,
        };
        let data = &config.data_dir;
        // As an address writes it (lowercase, IPv6 in brackets).
        let public_host = config
            .public_host
            .as_deref()
            .map(identity::check_host)
            .transpose()?;
        // Read-only checks first: they create nothing, wherever they fail.
        identity::check_folder_owner(data)?;
        let bound = nook_quic::udp_socket(config.listen).map_err(|e| match e {
            nook_quic::SocketError::Bind(io) => bind_error(config.listen, io),
            e => listen_err(e.to_string()),
        });
        let bound = match bound {
            // A relay on this folder holds the port: say which one.
            Err(StartError::AddrInUse { .. }) => {
                identity::DataLock::check_free(data)?;
                bound?
            }
            other => other?,
        };
        let metrics = config
            .metrics
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| StartError::Metrics {
                        addr,
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        identity::ensure_private_dir(data)?;
        let lock = identity::DataLock::acquire(data)?;
        let store = data.join(identity::STORE_DIR);
        check_store_formats(&store)?;
        let identity = identity::load_or_create(data)?;
        identity::claim_store(&store, &identity)?;
        let (cert, key) = identity::certificate(&identity)?;
        let engine = Arc::new(Engine::open(
            &store,
            identity,
            clock,
            config.limits.clone(),
        )?);
        let inner = nook_quic::inner_server_config(vec![cert.clone()], key.clone_key())?;
        let server = nook_quic::server_config(
            vec![cert],
            key,
            nook_quic::RELAY_ALPN_PROTOCOLS,
            config.idle_timeout,
        )?;
        let runtime =
            quinn::default_runtime().ok_or_else(|| listen_err("no async runtime".into()))?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            bound.socket,
            runtime,
        )
        .map_err(|e| listen_err(e.to_string()))?;
        let local = endpoint
            .local_addr()
            .map_err(|e| listen_err(e.to_string()))?;
        let host = public_host.unwrap_or_else(|| local.ip().to_string());
        let address = identity::address(engine.identity(), &host, local.port());
        // What `nook-relay address` prints: this relay's, never one rebuilt from
        // defaults.
        // On a full disk the relay still starts, to serve reads and free space (the
        // address is printed all the same; `nook-relay address` shows the last one).
        match identity::record_address(&config.data_dir, &address) {
            Err(identity::IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                tracing::warn!("disk full: the address was not recorded in the data folder");
            }
            other => other?,
        }
        let stats = Arc::new(ConnStats::default());
        let admission = Arc::new(Admission::new(
            config.create_token.clone(),
            config.create_rate,
            config.create_rate_per_address,
        ));
        let next_conn = Arc::new(AtomicU64::new(1));
        let router = Arc::new(Router::new(
            config.forward,
            endpoint.clone(),
            inner,
            Serving {
                max_sessions: config.max_connections,
                engine: engine.clone(),
                frames: config.frames,
                stats: stats.clone(),
                admission: admission.clone(),
            },
            next_conn.clone(),
        )?);
        Ok(Relay {
            endpoint,
            engine,
            stats,
            admission,
            router,
            next_conn,
            address,
            config,
            recv_buffer: bound.recv_buffer,
            metrics,
            _lock: lock,
        })
    }

    /// `nook://<fingerprint>@<host>:<port>`.
    pub fn address(&self) -> &str {
        &self.address
    }
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
    /// Counts of partial frames, handshakes, retries and refusals.
    pub fn conn_stats(&self) -> &Arc<ConnStats> {
        &self.stats
    }
    /// The creation token and the create rates, with their refusal counts.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
    /// The route service (private routing), with its counts.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }
    /// The UDP receive buffer the OS granted (bytes as reported by the OS).
    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }
    /// Everything counted, now: what the status line logs and `--metrics` serves.
    pub fn counts(&self) -> Counts {
        self.metrics_source().counts()
    }
    fn metrics_source(&self) -> metrics::Source {
        metrics::Source {
            engine: self.engine.clone(),
            conns: self.stats.clone(),
            admission: self.admission.clone(),
            router: self.router.clone(),
        }
    }
    pub fn recv_buffer(&self) -> usize {
        self.recv_buffer
    }

    /// Serves until `stop` turns true, then stops accepting, lets connections finish
    /// their in-flight writes, makes the store durable and returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut conns = JoinSet::new();
        let metrics = match self.metrics.take().map(tokio::net::TcpListener::from_std) {
            Some(Ok(listener)) => Some(tokio::spawn(metrics::serve(
                listener,
                self.metrics_source(),
                stop.clone(),
            ))),
            Some(Err(e)) => {
                tracing::error!("cannot serve metrics: {e}");
                None
            }
            None => None,
        };
        let mut sweep = tokio::time::interval(self.config.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Counts only: no ids, keys or addresses (see the README). Never, if zero.
        let status_on = !self.config.status_every.is_zero();
        let mut status = tokio::time::interval(if status_on {
            self.config.status_every
        } else {
            Duration::from_secs(86_400)
        });
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the start-up lines say all there is then.
        status.tick().await;
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if conns.len() >= self.config.max_connections {
                        // Refusing costs one packet; accepting would cost memory.
                        incoming.refuse();
                        let refused =
                            self.stats.refused_at_limit.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::debug!(
                            connections = conns.len(),
                            refused,
                            "connection limit reached: refused a new connection"
                        );
                        continue;
                    }
                    let handshaking = self.stats.handshaking();
                    if handshaking >= self.config.retry_from_handshakes
                        && !incoming.remote_address_validated()
                        && incoming.may_retry()
                    {
                        // Stateless: the relay keeps nothing until the client comes
                        // back with the token, from the address it claimed.
                        match incoming.retry() {
                            Ok(()) => {
                                self.stats.retries_sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => e.into_incoming().ignore(),
                        }
                        continue;
                    }
                    if handshaking >= self.config.max_handshakes {
                        self.stats.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(handshaking, "handshake limit reached: refused a new connection");
                        incoming.refuse();
                        continue;
                    }
                    let engine = self.engine.clone();
                    let stats = self.stats.clone();
                    let admission = self.admission.clone();
                    let frames = self.config.frames;
                    let handshake_timeout = self.config.handshake_timeout;
                    let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
                    let router = self.router.clone();
                    let pending = Handshaking::new(stats.clone());
                    let held = Held::new(stats.clone());
                    conns.spawn(async move {
                        let _held = held;
                        // Dropping the unfinished handshake closes it.
                        let done = tokio::time::timeout(handshake_timeout, incoming).await;
                        drop(pending);
                        match done {
                            Ok(Ok(conn)) => {
                                // The one line that names a peer, for checking what a
                                // relay learns (protocol-spec.md §14.1): its own target,
                                // off unless RUST_LOG names it (main.rs QUIET_CRATES).
                                tracing::trace!(target: PEERS_TARGET, peer = %conn.remote_address(), route = is_route(&conn), "connection accepted");
                                if is_route(&conn) {
                                    router.serve(conn).await;
                                } else {
                                    serve(engine, conn, id, frames, stats, admission).await;
                                }
                            }
                            Ok(Err(e)) => tracing::debug!("handshake failed: {e}"),
                            Err(_) => {
                                stats.handshakes_timed_out.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = status.tick(), if status_on => {
                    // The same counts as --metrics serves (metrics::Counts).
                    let c = self.counts();
                    let r = &c.refused;
                    tracing::info!(
                        connections = c.connections,
                        mailboxes = c.mailboxes,
                        envelopes_stored = c.envelopes_stored,
                        envelopes_deleted = c.envelopes_deleted,
                        flushes = c.flushes,
                        refused_at_limit = r.connection_limit,
                        retries_sent = c.retries_sent,
                        handshakes_refused = r.handshake_limit,
                        frames_timed_out = r.frame_deadline,
                        partial_budget_closed = r.partial_frame_budget,
                        creates_refused_token = r.create_token,
                        creates_refused_rate = r.create_rate,
                        "status"
                    );
                }
                _ = sweep.tick() => {
                    let engine = self.engine.clone();
                    // Sweeping touches the disk: keep it off the async workers.
                    let _ = tokio::task::spawn_blocking(move || engine.sweep()).await;
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!("shutting down: no new connections");
        if let Some(task) = metrics {
            task.abort();
        }
        self.endpoint.set_server_config(None);
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"relay shutting down");
        // Connections end now; their queued durable answers run on the commit thread.
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            conns.abort_all();
        }
        self.engine.shutdown();
        if let Err(e) = self.engine.flush() {
            tracing::error!("final flush failed: {e}");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        tracing::info!("stopped");
    }
}

/// The log target of the only line that names a peer's address: off even at
/// `RUST_LOG=trace` unless named (`RUST_LOG=nook_relay=info,nook_peers=trace`).
pub const PEERS_TARGET: &str = "nook_peers";

/// Whether a connection negotiated the route ALPN (protocol-spec.md §18).
fn is_route(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == nook_quic::ROUTE_ALPN)
}

/// One connection (from its first packet to its end) counted in
/// [`ConnStats::connections`] until dropped.
struct Held(Arc<ConnStats>);

impl Held {
    fn new(stats: Arc<ConnStats>) -> Held {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        Held(stats)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One handshake counted in [`ConnStats::handshaking`] until dropped.
struct Handshaking(Arc<ConnStats>);

impl Handshaking {
    fn new(stats: Arc<ConnStats>) -> Handshaking {
        stats.handshaking.fetch_add(1, Ordering::Relaxed);
        Handshaking(stats)
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_connection_limit_follows_from_the_memory_budget() {
        let per = nook_quic::SERVER_CONNECTION_BYTES;
        assert_eq!(DEFAULT_MAX_CONNECTIONS, 8050);
        assert!(u64::from(DEFAULT_MAX_CONNECTIONS) * per <= DEFAULT_CONNECTION_MEMORY_BUDGET);
        assert!(u64::from(DEFAULT_MAX_CONNECTIONS + 1) * per > DEFAULT_CONNECTION_MEMORY_BUDGET);
    }

    #[test]
    fn a_refused_bind_says_why_in_the_operators_terms() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let low: SocketAddr = ([0, 0, 0, 0], 443).into();
        let high: SocketAddr = ([0, 0, 0, 0], 4433).into();
        let e = bind_error(low, denied());
        assert!(matches!(e, StartError::PrivilegedPort { .. }), "{e:?}");
        assert!(e.to_string().contains("CAP_NET_BIND_SERVICE"), "{e}");
        // Above 1024 a refusal is something else (a firewall, a policy): as the OS said.
        assert!(matches!(
            bind_error(high, denied()),
            StartError::Listen { .. }
        ));
        assert!(matches!(
            bind_error(high, std::io::ErrorKind::AddrInUse.into()),
            StartError::AddrInUse { .. }
        ));
    }
}

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

use crate::clock::{Clock, SystemClock};
use crate::conn::{close_code, serve};
use crate::engine::{Engine, Limits};
use crate::identity;

/// UDP receive buffer the relay asks for (the rule lives in nook-quic, shared with the
/// benchmarks).
pub use nook_quic::UDP_RECV_BUFFER;

/// Connections one relay serves at once unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 100_000;

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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("cannot open the relay's store: {0}")]
    Store(#[from] crate::engine::EngineError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    /// Another socket holds the address: most often a relay already running.
    #[error("{addr} is already in use (another nook-relay?)")]
    AddrInUse { addr: SocketAddr },
    #[error("QUIC/TLS setup failed: {0}")]
    Quic(#[from] nook_quic::ProfileError),
}

/// A started relay: bound, not yet serving until [`Relay::run`].
pub struct Relay {
    endpoint: quinn::Endpoint,
    engine: Arc<Engine>,
    address: String,
    config: Config,
    recv_buffer: usize,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
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
    /// Binds the socket, then loads (or makes) the identity and opens the store.
    ///
    /// The socket comes first so that a start that cannot listen (the port is taken)
    /// fails before anything is written: it leaves no data folder, identity or store
    /// behind.
    pub fn start(config: Config) -> Result<Relay, StartError> {
        Relay::start_with_clock(config, Arc::new(SystemClock))
    }

    /// [`Relay::start`] with an injected clock (tests).
    pub fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Relay, StartError> {
        let listen_err = |reason: String| StartError::Listen {
            addr: config.listen,
            reason,
        };
        let bound = nook_quic::udp_socket(config.listen).map_err(|e| match e {
            nook_quic::SocketError::Bind(io) if io.kind() == std::io::ErrorKind::AddrInUse => {
                StartError::AddrInUse {
                    addr: config.listen,
                }
            }
            e => listen_err(e.to_string()),
        })?;
        let identity = identity::load_or_create(&config.data_dir)?;
        let (cert, key) = identity::certificate(&identity)?;
        let engine = Arc::new(Engine::open(
            &config.data_dir.join("store"),
            identity,
            clock,
            config.limits.clone(),
        )?);
        let server = nook_quic::server_config(
            vec![cert],
            key,
            nook_quic::ALPN_PROTOCOLS,
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
        let host = config
            .public_host
            .clone()
            .unwrap_or_else(|| local.ip().to_string());
        let address = identity::address(engine.identity(), &host, local.port());
        Ok(Relay {
            endpoint,
            engine,
            address,
            config,
            recv_buffer: bound.recv_buffer,
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
    /// The UDP receive buffer the OS granted (bytes as reported by the OS).
    pub fn recv_buffer(&self) -> usize {
        self.recv_buffer
    }

    /// Serves until `stop` turns true, then stops accepting, lets connections finish
    /// their in-flight writes, makes the store durable and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut conns = JoinSet::new();
        let next_conn = AtomicU64::new(1);
        let mut sweep = tokio::time::interval(self.config.sweep_every);
        // Counts only, every few minutes: no ids, keys or addresses (see the README).
        let mut ticks: u64 = 0;
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if conns.len() >= self.config.max_connections {
                        // Refusing costs one packet; accepting would cost memory.
                        incoming.refuse();
                        continue;
                    }
                    let engine = self.engine.clone();
                    let id = next_conn.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(async move {
                        match incoming.await {
                            Ok(conn) => serve(engine, conn, id).await,
                            Err(e) => tracing::debug!("handshake failed: {e}"),
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = sweep.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(300) {
                        let s = &self.engine.stats;
                        tracing::info!(
                            connections = conns.len(),
                            mailboxes = self.engine.mailbox_count(),
                            envelopes_stored = s.envelopes_stored.load(Ordering::Relaxed),
                            envelopes_deleted = s.envelopes_deleted.load(Ordering::Relaxed),
                            flushes = self.engine.flushes(),
                            "status"
                        );
                    }
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

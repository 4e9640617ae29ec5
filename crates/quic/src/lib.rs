//! nook-quic: nook's one QUIC and TLS profile, written once for the relay, the client
//! and the benchmarks.
//!
//! Everything the two ends of a nook connection agree on lives here: TLS 1.3 only, with
//! ring; the ALPN of the protocol version ([`ALPN`]); the relay's Ed25519 certificate key
//! pinned by the fingerprint in its address ([`PinnedVerifier`]: no CA, no name check);
//! the transport parameters of each side; and the UDP receive buffer a busy socket asks
//! for. A benchmark that builds its endpoints from here measures what nook ships.
//!
//! What it never does: it sends and receives nothing, starts no tokio task and builds no
//! quinn endpoint (quinn starts a driver task for each, so endpoints belong to callers).
//! Its functions build configurations; the only system calls are in [`udp_socket`], which
//! creates, sizes and binds a socket for the caller to build an endpoint on.
//!
//! # Layout
//!
//! - [`server_config`] and [`client_config`]: what the relay and a client hand to quinn.
//!   Start here.
//! - [`server_transport`] and [`client_transport`]: the transport parameters each side
//!   sets, and why the two differ.
//! - [`PinnedVerifier`]: the client's whole trust decision, and the fingerprint a refused
//!   relay presented.
//! - [`alpn_refused`]: tells a relay that does not speak the offered version from other
//!   handshake failures, by the QUIC error code rather than by its text.
//! - [`udp_socket`]: the socket rule (dual-stack, 4 MiB receive buffer).

#![forbid(unsafe_code)]

mod pin;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use nook_crypto::Fingerprint;
use nook_proto::limits::MAX_FRAME;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use nook_proto::limits::ALPN;
pub use nook_proto::route::ROUTE_ALPN;
pub use pin::PinnedVerifier;
pub use socket::{BoundSocket, SocketError, UDP_RECV_BUFFER, udp_socket};

/// The ALPN protocols a relay accepts: only the current protocol version. A client that
/// offers another is refused during the TLS handshake, before any frame is exchanged.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[ALPN];

/// The ALPN protocols a relay serves: nook itself, and route connections (a member
/// to its forwarder, a forwarder to the destination; protocol-spec.md §18).
pub const RELAY_ALPN_PROTOCOLS: &[&[u8]] = &[ALPN, ROUTE_ALPN];

/// Forwarded sessions one route connection may carry at once: a forwarder pools one
/// connection per destination and opens a stream for each member's session.
pub const ROUTE_STREAMS: u32 = 1024;

/// How long a connection may stay silent before either end drops it, unless the relay's
/// operator sets another value. QUIC uses the smaller of the two ends' values.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(IDLE_TIMEOUT_MS as u64);

/// How often a client sends a keep-alive on a quiet connection: well inside
/// [`IDLE_TIMEOUT`] and inside the UDP timeouts of common NATs (30 s and more).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Bidirectional streams a relay lets one client open at once: a member carries
/// everything on one stream. A client that opens a second waits for the first to end;
/// nothing fails.
pub const SERVER_BIDI_STREAMS: u32 = 1;

/// A relay's per-stream and per-connection receive window: one maximal frame, rather
/// than quinn's defaults (1.25 MB per stream, unbounded per connection). The relay reads
/// as soon as bytes arrive, so a frame larger than what is in flight still passes; the
/// window only bounds what a client can make the relay buffer out of order (bytes past
/// a gap it never fills).
pub const SERVER_RECEIVE_WINDOW: u32 = MAX_FRAME as u32;

/// A relay's send window per connection: one maximal frame (a whole `Fetch` answer,
/// 768 KiB, is in flight at once). It bounds what quinn keeps of a connection's
/// unacknowledged sends.
pub const SERVER_SEND_WINDOW: u64 = MAX_FRAME as u64;

/// What a relay's idle connection costs, measured (BENCHMARKS.md: 10,000 idle
/// connections at 34.6 KiB each), rounded up.
pub const SERVER_IDLE_CONNECTION_BYTES: u64 = 36 * 1024;

/// The most one relay connection can hold in QUIC buffers whatever its client does:
/// its receive window (one for the connection, whatever its streams) plus its send
/// window plus the idle cost. Queued answers and partial frames are not in it: the relay
/// bounds those for all connections together.
pub const SERVER_CONNECTION_BYTES: u64 =
    SERVER_RECEIVE_WINDOW as u64 + SERVER_SEND_WINDOW + SERVER_IDLE_CONNECTION_BYTES;

const IDLE_TIMEOUT_MS: u32 = 60_000;

/// Why a QUIC configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The crypto provider has no TLS 1.3 cipher suite QUIC can use. ring's default
    /// provider has them, so this means a broken build rather than bad input.
    #[error("the TLS provider offers no TLS 1.3 cipher suite usable by QUIC")]
    NoQuicCipherSuite,
    /// rustls refused the server's certificate chain or private key.
    #[error("the TLS certificate or key was refused: {reason}")]
    BadCertificate { reason: String },
    /// The idle timeout does not fit in QUIC's transport parameter (2^62 ms).
    #[error("an idle timeout of {0:?} is longer than QUIC can carry")]
    IdleTimeoutTooLong(Duration),
}

/// The relay's QUIC server configuration: TLS 1.3 with `cert_chain` and `key`, the
/// protocols in `alpn` (the relay passes [`ALPN_PROTOCOLS`]), no 0-RTT, and
/// [`server_transport`] with `idle_timeout`.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
    idle_timeout: Duration,
) -> Result<quinn::ServerConfig, ProfileError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ProfileError::NoQuicCipherSuite)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|e| ProfileError::BadCertificate {
            reason: e.to_string(),
        })?;
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No 0-RTT: early data can be replayed by anyone who saw it, and every nook request
    // must be answered once.
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|_| ProfileError::NoQuicCipherSuite)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(server_transport(idle_timeout)?));
    Ok(server)
}

/// A client configuration that accepts only the relay whose Ed25519 certificate key
/// hashes to `fingerprint`, offering `alpn` (normally [`ALPN`]), with
/// [`client_transport`].
///
/// To learn which fingerprint a refused relay presented, build the verifier yourself and
/// use [`client_config_with`].
pub fn client_config(
    fingerprint: Fingerprint,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, ProfileError> {
    client_config_with(Arc::new(PinnedVerifier::new(fingerprint)), alpn)
}

/// [`client_config`] with a verifier the caller keeps, to ask it after a failed
/// handshake for the fingerprint it refused ([`PinnedVerifier::mismatch`]).
pub fn client_config_with(
    verifier: Arc<PinnedVerifier>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, ProfileError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ProfileError::NoQuicCipherSuite)?
        // "dangerous" only in rustls's terms: the pin replaces the CA check entirely.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|_| ProfileError::NoQuicCipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(client_transport()));
    Ok(config)
}

/// The inner channel of private routing, the member's end (protocol-spec.md §18.3):
/// TLS 1.3 with ring, the same [`PinnedVerifier`] as a direct connection, ALPN [`ALPN`],
/// no early data, no client certificate. It runs over a forwarded stream, so only the
/// destination relay can read what it carries.
pub fn inner_client_config(
    verifier: Arc<PinnedVerifier>,
) -> Result<Arc<rustls::ClientConfig>, ProfileError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ProfileError::NoQuicCipherSuite)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    Ok(Arc::new(tls))
}

/// The inner channel, the destination relay's end: its own certificate (the one its
/// QUIC endpoint presents), TLS 1.3 only, ALPN [`ALPN`], no 0-RTT.
pub fn inner_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ProfileError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ProfileError::NoQuicCipherSuite)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|e| ProfileError::BadCertificate {
            reason: e.to_string(),
        })?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    // No resumption: a ticket would let the destination link a member's sessions.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    Ok(Arc::new(tls))
}

/// A forwarder's QUIC configuration towards a destination relay: [`ROUTE_ALPN`] and a
/// verifier that takes any Ed25519 certificate. The forwarder holds no pin for the
/// destination (the member keeps it, and checks it itself inside the inner channel,
/// end to end); this hop's TLS only hides the route's bytes from the network, which
/// sees nothing the forwarder could not.
pub fn forward_client_config() -> Result<quinn::ClientConfig, ProfileError> {
    client_config_with(Arc::new(PinnedVerifier::any_key()), ROUTE_ALPN)
}

/// The relay's transport parameters.
///
/// They differ from [`client_transport`] because the two ends carry different loads:
/// a relay holds thousands of connections, so each gets one stream
/// ([`SERVER_BIDI_STREAMS`] bidirectional, no unidirectional) and windows of one frame
/// ([`SERVER_RECEIVE_WINDOW`], [`SERVER_SEND_WINDOW`]) to keep its memory per
/// connection bounded ([`SERVER_CONNECTION_BYTES`]); it sends no keep-alives (on that many connections each one is a
/// packet, and it is the client that wants the connection kept); its idle timeout is
/// the operator's to choose.
pub fn server_transport(idle_timeout: Duration) -> Result<quinn::TransportConfig, ProfileError> {
    let idle = quinn::IdleTimeout::try_from(idle_timeout)
        .map_err(|_| ProfileError::IdleTimeoutTooLong(idle_timeout))?;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(SERVER_BIDI_STREAMS.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(SERVER_RECEIVE_WINDOW.into());
    t.receive_window(SERVER_RECEIVE_WINDOW.into());
    t.send_window(SERVER_SEND_WINDOW);
    t.max_idle_timeout(Some(idle));
    Ok(t)
}

/// A client's transport parameters: quinn's default windows and stream limits (a client
/// has one connection, and larger windows let it take fetch answers and bursts of
/// pushes at full speed), a keep-alive every [`KEEP_ALIVE`] so that a client waiting for
/// pushes is not dropped by the relay's idle timeout or a NAT, and [`IDLE_TIMEOUT`].
pub fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS).into()));
    t
}

/// Whether a handshake failed because the peer accepted none of the offered ALPN
/// protocols, i.e. does not speak this protocol version.
///
/// TLS reports that with the alert `no_application_protocol` (120), which QUIC carries
/// as the crypto error code 0x100 + 120 = 0x178 (RFC 9001 §4.8). Refused by the relay,
/// it arrives in the relay's CONNECTION_CLOSE ([`quinn::ConnectionError::ConnectionClosed`]);
/// raised by the local TLS stack it is a [`quinn::ConnectionError::TransportError`].
/// Every other failure, a wrong fingerprint included, is not an ALPN refusal.
pub fn alpn_refused(error: &quinn::ConnectionError) -> bool {
    let no_alpn =
        quinn::TransportErrorCode::crypto(rustls::AlertDescription::NoApplicationProtocol.into());
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code == no_alpn,
        quinn::ConnectionError::TransportError(e) => e.code == no_alpn,
        _ => false,
    }
}

/// ring, the one crypto provider nook uses (the stack notes compare it with aws-lc-rs).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;

    use rustls::pki_types::PrivatePkcs8KeyDer;

    use super::*;

    /// A self-signed Ed25519 certificate, its key and the fingerprint that pins it.
    fn identity() -> (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Fingerprint,
    ) {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let public: [u8; 32] = key_pair.public_key_raw().try_into().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["nook-relay".to_string()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        (vec![cert.der().clone()], key, Fingerprint::of_key(&public))
    }

    /// One handshake on loopback between real quinn endpoints; both sides' results.
    async fn handshake(
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
    ) -> (
        Result<quinn::Connection, quinn::ConnectionError>,
        Result<quinn::Connection, quinn::ConnectionError>,
    ) {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bound = udp_socket(loopback).unwrap();
        assert!(bound.recv_buffer > 0);
        let server = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            bound.socket,
            quinn::default_runtime().unwrap(),
        )
        .unwrap();
        let target = server.local_addr().unwrap();
        let client_endpoint = quinn::Endpoint::client(loopback).unwrap();
        let accept = async { server.accept().await.unwrap().await };
        let connect = async {
            client_endpoint
                .connect_with(client, target, "nook-relay")
                .unwrap()
                .await
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(accept, connect)
        })
        .await
        .expect("the handshake neither finished nor failed within 10 s")
    }

    fn negotiated(conn: &quinn::Connection) -> Option<Vec<u8>> {
        conn.handshake_data()?
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()?
            .protocol
    }

    #[tokio::test]
    async fn pinned_client_accepts_its_relay_and_both_configs_carry_the_alpn() {
        let (chain, key, fingerprint) = identity();
        let server = server_config(chain, key, ALPN_PROTOCOLS, IDLE_TIMEOUT).unwrap();
        let client = client_config(fingerprint, ALPN).unwrap();
        let (s, c) = handshake(server, client).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        // Were either config without the ALPN, no protocol would be negotiated.
        assert_eq!(negotiated(&s).as_deref(), Some(ALPN));
        assert_eq!(negotiated(&c).as_deref(), Some(ALPN));
    }

    #[tokio::test]
    async fn pinned_client_refuses_another_key_and_reports_it() {
        let (chain, key, presented) = identity();
        let (_, _, pinned) = identity();
        let server = server_config(chain, key, ALPN_PROTOCOLS, IDLE_TIMEOUT).unwrap();
        let verifier = Arc::new(PinnedVerifier::new(pinned));
        let client = client_config_with(verifier.clone(), ALPN).unwrap();
        let (_, c) = handshake(server, client).await;
        let err = c.unwrap_err();
        assert_eq!(verifier.mismatch(), Some(presented));
        assert!(
            !alpn_refused(&err),
            "a wrong key is not an ALPN refusal: {err}"
        );
    }

    #[tokio::test]
    async fn another_alpn_is_refused_and_recognised_as_such() {
        let (chain, key, fingerprint) = identity();
        let server = server_config(chain, key, ALPN_PROTOCOLS, IDLE_TIMEOUT).unwrap();
        let verifier = Arc::new(PinnedVerifier::new(fingerprint));
        let client = client_config_with(verifier.clone(), b"nook/0").unwrap();
        let (s, c) = handshake(server, client).await;
        assert!(s.is_err());
        let err = c.unwrap_err();
        assert!(
            alpn_refused(&err),
            "not recognised as an ALPN refusal: {err:?}"
        );
        assert_eq!(verifier.mismatch(), None);
    }

    #[test]
    fn alpn_refusal_is_matched_by_code_not_by_text() {
        let close = |code: u8, reason: &'static [u8]| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::crypto(code),
                frame_type: None,
                reason: reason.to_vec().into(),
            })
        };
        assert!(alpn_refused(&close(120, b"")));
        // The old text match took any "120" for a version refusal.
        assert!(!alpn_refused(&close(42, b"peer sent 120 bytes")));
        assert!(!alpn_refused(&quinn::ConnectionError::TimedOut));
    }

    #[test]
    fn server_transport_refuses_an_idle_timeout_quic_cannot_carry() {
        assert!(server_transport(IDLE_TIMEOUT).is_ok());
        assert!(matches!(
            server_transport(Duration::MAX),
            Err(ProfileError::IdleTimeoutTooLong(_))
        ));
    }

    #[test]
    fn server_config_refuses_a_key_that_does_not_parse() {
        let (chain, _, _) = identity();
        let junk = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0u8; 48]));
        assert!(matches!(
            server_config(chain, junk, ALPN_PROTOCOLS, IDLE_TIMEOUT),
            Err(ProfileError::BadCertificate { .. })
        ));
    }
}

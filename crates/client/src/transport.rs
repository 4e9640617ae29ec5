//! The connection to one relay: QUIC with the relay's key pinned (TLS and transport
//! settings from nook-quic's profile), one long-lived bidirectional stream, pipelined
//! requests matched to responses by id, and pushes.
//!
//! Ownership: [`RelayConnection`] owns the reader task (aborted on drop); requests are
//! written under a lock by whoever calls [`RelayConnection::request`]; pushes flow
//! through a bounded channel, so a consumer that stops reading stalls the reader
//! (back-pressure) instead of growing memory.
//!
//! Routed (`--via`, protocol-spec.md §18): QUIC to the forwarder (pinned by its own
//! fingerprint), one route stream asking it to forward to the talk's relay, and inside
//! it a TLS 1.3 channel to that relay checked by the same [`PinnedVerifier`]; the
//! frames that follow are the same as on a direct stream.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nook_crypto::rotation::follow;
use nook_crypto::{Fingerprint, RelayAddr};
use nook_proto::codec::encode_frame;
use nook_proto::limits::{ALPN, PROTOCOL_VERSION};
use nook_proto::{
    ClientFrame, ErrorCode, ErrorDetail, ErrorFrame, FrameDecoder, HelloOk, Outcome, Push, Request,
    Response, RotationStatement, ServerFrame,
};
use nook_quic::PinnedVerifier;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Pushes buffered before the reader waits for the consumer.
const PUSH_QUEUE: usize = 1024;
/// Turns of the runtime `close` gives the connection's driver to send the close
/// frame. One is enough (the driver writes to the socket itself); waiting for the
/// endpoint to go idle instead would sit out QUIC's whole draining period (3 PTO),
/// which cost every one-shot operation 5 ms.
const CLOSE_TURNS: usize = 4;
/// How long a QUIC handshake may take before we give up.
///
/// A relay on loopback or a LAN answers in milliseconds and one across the world in
/// well under a second; one that has not answered in 4 s is down, unreachable, or on
/// another port, and the person waiting should be told so.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Why connecting to a relay failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve relay host {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error(
        "the relay at {addr} presented key fingerprint {got}, but the address pins {expected}: this is not the relay you were given (or it was reset); check the address"
    )]
    WrongFingerprint {
        addr: String,
        expected: Fingerprint,
        got: Fingerprint,
    },
    #[error(
        "could not reach the relay at {addr}: {reason}; check that nook-relay is running there, that the host and port are right, and that UDP to that port is not blocked"
    )]
    Unreachable { addr: String, reason: String },
    #[error("the relay at {addr} does not speak this protocol version: {reason}")]
    Version { addr: String, reason: String },
    #[error("local network setup failed: {0}")]
    Local(String),
    /// Routed: the forwarder itself could not be reached.
    #[error(
        "could not reach the forwarding relay (--via) at {forwarder}: {reason}; check that address, or run the command without --via"
    )]
    ForwarderUnreachable { forwarder: String, reason: String },
    /// Routed: the forwarder answered but will not forward (turned off, at its limit,
    /// or too old to know routes).
    #[error("the forwarding relay (--via) at {forwarder} refused to forward: {message}")]
    ForwardRefused {
        forwarder: String,
        code: Option<ErrorCode>,
        message: String,
    },
    /// Routed: the forwarder is up, but the talk's relay behind it did not answer.
    #[error(
        "the forwarding relay (--via) at {forwarder} is up, but the talk's relay at {addr} could not be reached through it: {reason}; check that the talk's relay runs, or try without --via"
    )]
    DestinationUnreachable {
        forwarder: String,
        addr: String,
        reason: String,
    },
}

/// The client end of a routed session's inner channel.
type InnerClient =
    tokio_rustls::client::TlsStream<tokio::io::Join<quinn::RecvStream, quinn::SendStream>>;

/// Where requests go: the QUIC stream itself, or the inner channel inside it.
enum Sender {
    Quic(quinn::SendStream),
    Inner(tokio::io::WriteHalf<InnerClient>),
}

impl Sender {
    async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        match self {
            // Handed to quinn as it is: `write_all` would copy it once more.
            Sender::Quic(s) => s
                .write_chunk(bytes::Bytes::from(bytes))
                .await
                .map_err(|_| ()),
            Sender::Inner(s) => {
                use tokio::io::AsyncWriteExt;
                s.write_all(&bytes).await.map_err(|_| ())?;
                s.flush().await.map_err(|_| ())
            }
        }
    }

    async fn finish(&mut self) {
        match self {
            Sender::Quic(s) => {
                let _ = s.finish();
            }
            Sender::Inner(s) => {
                use tokio::io::AsyncWriteExt;
                let _ = s.shutdown().await;
            }
        }
    }
}

/// Where answers and pushes come from.
enum Receiver {
    Quic(quinn::RecvStream),
    Inner(tokio::io::ReadHalf<InnerClient>),
}

/// An established stream, before `Hello`.
struct Opened {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    send: Sender,
    recv: Receiver,
}

/// Why one request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The relay answered with an error frame.
    #[error("relay refused: {message} ({code:?})")]
    Refused {
        code: ErrorCode,
        message: String,
        detail: ErrorDetail,
    },
    #[error("connection to the relay lost: {0}")]
    Lost(String),
    #[error("the relay sent a response of the wrong kind")]
    Unexpected,
}

impl RequestError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<ErrorFrame> for RequestError {
    fn from(e: ErrorFrame) -> RequestError {
        RequestError::Refused {
            code: e.code,
            message: e.message,
            detail: e.detail,
        }
    }
}

type PendingMap = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Outcome>>>>>;

/// An open, greeted connection to a relay.
pub struct RelayConnection {
    conn: quinn::Connection,
    /// Kept so the socket outlives the connection while its close frame is sent.
    _endpoint: quinn::Endpoint,
    send: tokio::sync::Mutex<Sender>,
    pending: PendingMap,
    pushes: Option<mpsc::Receiver<Push>>,
    next_id: AtomicU64,
    hello: HelloOk,
    /// The rotation statements followed from the pinned key to the relay's key
    /// (empty: the relay presented the pinned key).
    followed: Vec<RotationStatement>,
    reader: JoinHandle<()>,
}

impl RelayConnection {
    /// Connects, pins the relay key by `addr`'s fingerprint, opens the stream and
    /// exchanges `Hello`.
    pub async fn connect(addr: &RelayAddr) -> Result<RelayConnection, ConnectError> {
        RelayConnection::connect_within(addr, CONNECT_TIMEOUT).await
    }

    /// [`RelayConnection::connect`], giving up on the handshake after `limit`.
    pub async fn connect_within(
        addr: &RelayAddr,
        limit: Duration,
    ) -> Result<RelayConnection, ConnectError> {
        RelayConnection::connect_with(addr, ALPN, limit).await
    }

    /// [`RelayConnection::connect`] offering another ALPN (tests of refusal).
    pub async fn connect_with_alpn(
        addr: &RelayAddr,
        alpn: &[u8],
    ) -> Result<RelayConnection, ConnectError> {
        RelayConnection::connect_with(addr, alpn, CONNECT_TIMEOUT).await
    }

    /// [`RelayConnection::connect`] through the forwarding relay `via` (protocol-spec.md
    /// §18): each hop that fails says so ([`ConnectError::ForwarderUnreachable`],
    /// [`ConnectError::ForwardRefused`], [`ConnectError::DestinationUnreachable`]),
    /// each within `limit`.
    pub async fn connect_via(
        addr: &RelayAddr,
        via: &RelayAddr,
        limit: Duration,
    ) -> Result<RelayConnection, ConnectError> {
        let verifier = Arc::new(PinnedVerifier::following(addr.fingerprint));
        let opened = open_routed(addr, via, &verifier, limit).await?;
        RelayConnection::greet(addr, opened, &verifier).await
    }

    async fn connect_with(
        addr: &RelayAddr,
        alpn: &[u8],
        limit: Duration,
    ) -> Result<RelayConnection, ConnectError> {
        let verifier = Arc::new(PinnedVerifier::following(addr.fingerprint));
        let (conn, endpoint) = dial(addr, alpn, &verifier, limit, |reason| {
            ConnectError::Unreachable {
                addr: addr.host_port(),
                reason,
            }
        })
        .await?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ConnectError::Unreachable {
                addr: addr.host_port(),
                reason: e.to_string(),
            })?;
        let opened = Opened {
            conn,
            endpoint,
            send: Sender::Quic(send),
            recv: Receiver::Quic(recv),
        };
        RelayConnection::greet(addr, opened, &verifier).await
    }

    /// `Hello` on an established stream, and the relay key's check against the pin.
    async fn greet(
        addr: &RelayAddr,
        opened: Opened,
        verifier: &PinnedVerifier,
    ) -> Result<RelayConnection, ConnectError> {
        let unreachable = |reason: String| ConnectError::Unreachable {
            addr: addr.host_port(),
            reason,
        };
        let Opened {
            conn,
            endpoint,
            send,
            recv,
        } = opened;
        let pending: PendingMap = Arc::new(Mutex::new(Some(HashMap::new())));
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        let reader = tokio::spawn(read_loop(recv, pending.clone(), push_tx));
        let mut this = RelayConnection {
            conn,
            _endpoint: endpoint,
            send: tokio::sync::Mutex::new(send),
            pending,
            pushes: Some(push_rx),
            next_id: AtomicU64::new(1),
            hello: HelloOk {
                version: 0,
                challenge: [0; 32],
                relay_key: nook_proto::RelayKey([0; 32]),
                now: 0,
                rotations: Vec::new(),
                retiring_at: None,
            },
            followed: Vec::new(),
            reader,
        };
        match this
            .request(Request::Hello {
                version: PROTOCOL_VERSION,
            })
            .await
        {
            Ok(Response::Hello(h)) => {
                // The TLS handshake proved the certificate key; the relay must name the
                // same key here, since receipts are checked against it. A key other
                // than the pinned one is taken only at the end of a chain of rotation
                // statements from the pinned key (protocol-spec.md §11.12).
                let wrong = || ConnectError::WrongFingerprint {
                    addr: addr.host_port(),
                    expected: addr.fingerprint,
                    got: Fingerprint::of_key(&h.relay_key.0),
                };
                let certified = verifier
                    .deferred()
                    .map_or(addr.fingerprint, |k| Fingerprint::of_key(&k));
                if Fingerprint::of_key(&h.relay_key.0) != certified {
                    return Err(wrong());
                }
                let followed = follow(&addr.fingerprint, &h.rotations, &h.relay_key)
                    .map_err(|_| wrong())?
                    .to_vec();
                this.followed = followed;
                this.hello = h;
                Ok(this)
            }
            Ok(_) => Err(unreachable("unexpected answer to hello".into())),
            Err(RequestError::Refused { message, .. }) => Err(ConnectError::Version {
                addr: addr.host_port(),
                reason: message,
            }),
            Err(e) => Err(unreachable(e.to_string())),
        }
    }

    /// The relay's greeting: its key, the connection's auth challenge and its clock.
    pub fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// The rotation statements followed from the key the address pins to the relay's
    /// key now (empty when the relay presented the pinned key), for receipts.
    pub fn followed(&self) -> &[RotationStatement] {
        &self.followed
    }

    /// Sends one request and waits for its response. Many may be in flight at once.
    pub async fn request(&self, request: Request) -> Result<Response, RequestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rx = self.send_frame(ClientFrame { id, request }).await?;
        match rx.await {
            Ok(Outcome::Ok(r)) => Ok(r),
            Ok(Outcome::Err(e)) => Err(e.into()),
            Err(_) => Err(RequestError::Lost(self.close_reason())),
        }
    }

    /// Sends a raw frame and returns the receiver of its outcome (for pipelining).
    pub async fn send_frame(
        &self,
        frame: ClientFrame,
    ) -> Result<oneshot::Receiver<Outcome>, RequestError> {
        let bytes = encode_frame(&frame).map_err(|e| RequestError::Lost(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| RequestError::Lost("poisoned".into()))?;
            let map = pending
                .as_mut()
                .ok_or_else(|| RequestError::Lost(self.close_reason()))?;
            map.insert(frame.id, tx);
        }
        let mut send = self.send.lock().await;
        send.write(bytes)
            .await
            .map_err(|_| RequestError::Lost(self.close_reason()))?;
        Ok(rx)
    }

    /// Writes raw bytes on the stream (adversarial tests only).
    pub async fn dangerous_write_raw(&self, bytes: &[u8]) -> Result<(), RequestError> {
        let mut send = self.send.lock().await;
        send.write(bytes.to_vec())
            .await
            .map_err(|_| RequestError::Lost(self.close_reason()))
    }

    /// The pushes of subscribed mailboxes. Can be taken once.
    pub fn take_pushes(&mut self) -> Option<mpsc::Receiver<Push>> {
        self.pushes.take()
    }

    /// Why the connection ended, if it did.
    pub fn close_reason(&self) -> String {
        match self.conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c)) => {
                String::from_utf8_lossy(&c.reason).into_owned()
            }
            Some(e) => e.to_string(),
            None => "stream closed".into(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Closes the connection politely. The CONNECTION_CLOSE frame leaves on the
    /// connection driver's next poll; waiting out the draining period (three probe
    /// timeouts) would only slow one-shot commands down, so this gives the driver a
    /// few turns of the runtime to send it and returns.
    pub async fn close(self) {
        if let Ok(mut s) = self.send.try_lock() {
            s.finish().await;
        }
        self.conn.close(0u32.into(), b"bye");
        let_closes_go_out().await;
    }
}

/// Gives the runtime the turns that send the close frames of connections just closed
/// or dropped. A program calls it before its runtime ends, so a command that returned
/// early (an error) still frees its slot on the relay at once.
pub async fn let_closes_go_out() {
    for _ in 0..CLOSE_TURNS {
        tokio::task::yield_now().await;
    }
}

impl Drop for RelayConnection {
    fn drop(&mut self) {
        // Said now, not when the last handle goes: the reader task holds one until the
        // runtime drops it, and a command that returns an error never calls `close`.
        // A connection nobody closes holds its slot on the relay until the idle timeout.
        self.conn.close(0u32.into(), b"bye");
        self.reader.abort();
    }
}

impl fmt::Debug for RelayConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConnection")
            .field("remote", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

async fn read_loop(mut recv: Receiver, pending: PendingMap, pushes: mpsc::Sender<Push>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = match recv {
        Receiver::Quic(_) => Vec::new(),
        Receiver::Inner(_) => vec![0u8; INNER_READ],
    };
    'outer: loop {
        match &mut recv {
            // Chunks straight from quinn's receive buffer: no read buffer to copy through.
            Receiver::Quic(r) => match r.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => decoder.push(&chunk.bytes),
                _ => break,
            },
            Receiver::Inner(r) => match tokio::io::AsyncReadExt::read(r, &mut buf).await {
                Ok(n) if n > 0 => decoder.push(&buf[..n]),
                _ => break,
            },
        }
        loop {
            match decoder.next_frame::<ServerFrame>() {
                Ok(Some(ServerFrame::Response { id, result })) => {
                    let tx = pending
                        .lock()
                        .ok()
                        .and_then(|mut p| p.as_mut().and_then(|m| m.remove(&id)));
                    if let Some(tx) = tx {
                        let _ = tx.send(result);
                    }
                }
                Ok(Some(ServerFrame::Push(p))) => {
                    if pushes.send(p).await.is_err() {
                        // Nobody listens for pushes; keep serving responses.
                    }
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    // Fail every waiter: dropping their senders wakes them with an error.
    if let Ok(mut p) = pending.lock() {
        p.take();
    }
}

/// Bytes read from an inner channel at once: a whole TLS record or more.
const INNER_READ: usize = 64 * 1024;

/// A QUIC connection to `addr` offering `alpn`, its key checked by `verifier`; a
/// failure that is neither a wrong key nor a version refusal is `unreachable(reason)`.
async fn dial(
    addr: &RelayAddr,
    alpn: &[u8],
    verifier: &Arc<PinnedVerifier>,
    limit: Duration,
    unreachable: impl Fn(String) -> ConnectError,
) -> Result<(quinn::Connection, quinn::Endpoint), ConnectError> {
    let target = resolve(addr).await?;
    let config = nook_quic::client_config_with(verifier.clone(), alpn)
        .map_err(|e| ConnectError::Local(e.to_string()))?;
    let bind: SocketAddr = if target.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| ConnectError::Local(e.to_string()))?;
    endpoint.set_default_client_config(config);
    let connecting = endpoint
        .connect(target, addr.host_name())
        .map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(limit, connecting).await {
        Err(_) => Err(unreachable("timed out".into())),
        Ok(Err(e)) => {
            if let Some(got) = verifier
                .mismatch()
                .filter(|_| verifier.deferred().is_none())
            {
                return Err(ConnectError::WrongFingerprint {
                    addr: addr.host_port(),
                    expected: addr.fingerprint,
                    got,
                });
            }
            // By the QUIC error code (TLS alert no_application_protocol), not the
            // text: a reason that merely mentions "120" is no version refusal.
            if nook_quic::alpn_refused(&e) {
                return Err(ConnectError::Version {
                    addr: addr.host_port(),
                    reason: e.to_string(),
                });
            }
            Err(unreachable(e.to_string()))
        }
        Ok(Ok(c)) => Ok((c, endpoint)),
    }
}

/// The routed stream: QUIC to `via`, `Forward` to `addr`, the forwarder's answer, then
/// the inner TLS handshake with the talk's relay (its key checked by `verifier`).
async fn open_routed(
    addr: &RelayAddr,
    via: &RelayAddr,
    verifier: &Arc<PinnedVerifier>,
    limit: Duration,
) -> Result<Opened, ConnectError> {
    use nook_proto::route::{
        RouteReply, RouteRequest, decode_route_reply, encode_route, route_header_len,
    };
    let forwarder = via.host_port();
    let via_unreachable = |reason: String| ConnectError::ForwarderUnreachable {
        forwarder: forwarder.clone(),
        reason,
    };
    let dest_unreachable = |reason: String| ConnectError::DestinationUnreachable {
        forwarder: forwarder.clone(),
        addr: addr.host_port(),
        reason,
    };
    // The forwarder is pinned strictly by its own fingerprint.
    let via_verifier = Arc::new(PinnedVerifier::new(via.fingerprint));
    let (conn, endpoint) = match dial(
        via,
        nook_quic::ROUTE_ALPN,
        &via_verifier,
        limit,
        &via_unreachable,
    )
    .await
    {
        Err(ConnectError::Version { .. }) => {
            return Err(ConnectError::ForwardRefused {
                    forwarder,
                    code: None,
                    message: "it does not forward (a relay older than private routing);                               route through another relay, or without --via"
                        .into(),
                });
        }
        other => other?,
    };
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| via_unreachable(e.to_string()))?;
    let header = encode_route(&RouteRequest::Forward {
        host: addr.host_name().to_string(),
        port: addr.port,
    })
    .map_err(|e| ConnectError::Local(e.to_string()))?;
    let exchange = async {
        send.write_all(&header).await.map_err(|e| e.to_string())?;
        let mut prefix = [0u8; 4];
        recv.read_exact(&mut prefix)
            .await
            .map_err(|e| e.to_string())?;
        let len = route_header_len(prefix).map_err(|e| e.to_string())?;
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        decode_route_reply(&body).map_err(|e| e.to_string())
    };
    // The forwarder gives the destination less than this, so a dead destination is
    // reported by the forwarder, not by this timeout.
    match tokio::time::timeout(limit, exchange).await {
        Err(_) => {
            return Err(dest_unreachable(
                "no answer from the forwarder in time".into(),
            ));
        }
        Ok(Err(reason)) => return Err(via_unreachable(reason)),
        Ok(Ok(RouteReply::Ready)) => {}
        Ok(Ok(RouteReply::Refused(e))) if e.code == ErrorCode::DestinationUnreachable => {
            return Err(dest_unreachable(e.message));
        }
        Ok(Ok(RouteReply::Refused(e))) => {
            return Err(ConnectError::ForwardRefused {
                forwarder,
                code: Some(e.code),
                message: e.message,
            });
        }
    }
    let config = nook_quic::inner_client_config(verifier.clone())
        .map_err(|e| ConnectError::Local(e.to_string()))?;
    let name = rustls_name(addr.host_name());
    let handshake =
        tokio_rustls::TlsConnector::from(config).connect(name, tokio::io::join(recv, send));
    let inner = match tokio::time::timeout(limit, handshake).await {
        Err(_) => return Err(dest_unreachable("the inner handshake timed out".into())),
        Ok(Err(e)) => {
            if let Some(got) = verifier
                .mismatch()
                .filter(|_| verifier.deferred().is_none())
            {
                return Err(ConnectError::WrongFingerprint {
                    addr: addr.host_port(),
                    expected: addr.fingerprint,
                    got,
                });
            }
            return Err(dest_unreachable(format!("inner handshake: {e}")));
        }
        Ok(Ok(inner)) => inner,
    };
    let (r, w) = tokio::io::split(inner);
    Ok(Opened {
        conn,
        endpoint,
        send: Sender::Inner(w),
        recv: Receiver::Inner(r),
    })
}

/// The inner channel's SNI: the relay's DNS name as on a direct connection, a
/// placeholder for an IP address (none is sent for those; the relay ignores it).
fn rustls_name(host: &str) -> tokio_rustls::rustls::pki_types::ServerName<'static> {
    use tokio_rustls::rustls::pki_types::ServerName;
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::IpAddr::from([0u8, 0, 0, 0]).into()))
}

async fn resolve(addr: &RelayAddr) -> Result<SocketAddr, ConnectError> {
    let host_port = format!("{}:{}", addr.host_name(), addr.port);
    let target = if let Ok(sa) = host_port.parse::<SocketAddr>() {
        Some(sa)
    } else if let Ok(ip) = addr.host_name().parse::<std::net::IpAddr>() {
        Some(SocketAddr::new(ip, addr.port))
    } else {
        tokio::net::lookup_host((addr.host_name(), addr.port))
            .await
            .map_err(|e| ConnectError::Resolve {
                host: addr.host.clone(),
                reason: e.to_string(),
            })?
            .next()
    };
    target.ok_or_else(|| ConnectError::Resolve {
        host: addr.host.clone(),
        reason: "no address found".into(),
    })
}

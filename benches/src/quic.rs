//! QUIC client plumbing for benchmarks that open thousands of connections: one client
//! endpoint (one UDP socket, so no file-descriptor limit) shared by all of them, the
//! same TLS setup as `nook_client` (TLS 1.3, ring, the relay key pinned with
//! [`PinnedVerifier`]), and a minimal framed connection speaking the nook protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nook_client::transport::PinnedVerifier;
use nook_crypto::{Fingerprint, RelayAddr};
use nook_proto::codec::encode_frame_into;
use nook_proto::limits::{ALPN, PROTOCOL_VERSION};
use nook_proto::{ClientFrame, FrameDecoder, HelloOk, Outcome, Request, Response, ServerFrame};

/// UDP buffers asked for on benchmark sockets (the OS may cap them at
/// `net.core.rmem_max` / `wmem_max`).
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A client endpoint on 127.0.0.1 with large socket buffers, to be shared by many
/// connections.
pub fn shared_client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let bind: SocketAddr = "127.0.0.1:0".parse()?;
    socket.bind(&bind.into())?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )?;
    Ok(endpoint)
}

/// The nook client's TLS and transport settings with the relay pinned by
/// `fingerprint` (mirrors `nook_client::transport`, whose builder is private).
pub fn client_config(fingerprint: Fingerprint, alpn: &[u8]) -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(fingerprint)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::try_from(Duration::from_secs(60))?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A nook connection without the client library's reader task: frames are written
/// and read by the caller, so thousands of them cost only what quinn costs.
#[derive(Debug)]
pub struct RawConn {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub hello: HelloOk,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects on `endpoint`, opens the stream and exchanges Hello.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        config: quinn::ClientConfig,
        addr: &RelayAddr,
    ) -> anyhow::Result<RawConn> {
        let ip: std::net::IpAddr = addr
            .host_name()
            .parse()
            .context("benchmarks need an IP address")?;
        let target = SocketAddr::new(ip, addr.port);
        let conn = tokio::time::timeout(
            Duration::from_secs(30),
            endpoint.connect_with(config, target, addr.host_name())?,
        )
        .await
        .context("handshake timed out")??;
        let (send, recv) = conn.open_bi().await?;
        let mut raw = RawConn {
            conn,
            send,
            recv,
            hello: HelloOk {
                version: 0,
                challenge: [0; 32],
                relay_key: nook_proto::RelayKey([0; 32]),
                now: 0,
            },
            decoder: FrameDecoder::new(),
            buf: vec![0; 16 * 1024],
        };
        raw.write(&[ClientFrame {
            id: 0,
            request: Request::Hello {
                version: PROTOCOL_VERSION,
            },
        }])
        .await?;
        match raw.read().await? {
            ServerFrame::Response {
                result: Outcome::Ok(Response::Hello(h)),
                ..
            } => raw.hello = h,
            other => bail!("unexpected answer to Hello: {other:?}"),
        }
        Ok(raw)
    }

    /// Writes frames in one stream write.
    pub async fn write(&mut self, frames: &[ClientFrame]) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        for f in frames {
            encode_frame_into(f, &mut bytes)?;
        }
        self.send.write_all(&bytes).await?;
        Ok(())
    }

    /// Reads the next frame from the relay.
    pub async fn read(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            if let Some(frame) = self.decoder.next_frame::<ServerFrame>()? {
                return Ok(frame);
            }
            match self.recv.read(&mut self.buf).await? {
                Some(n) => self.decoder.push(&self.buf[..n]),
                None => bail!("the relay ended the stream"),
            }
        }
    }

    /// Sends `request` and waits for its answer, skipping pushes; an error answer is
    /// an error.
    pub async fn request(&mut self, id: u64, request: Request) -> anyhow::Result<Response> {
        self.write(&[ClientFrame { id, request }]).await?;
        // Bounded: a relay that never answers is an error, not a hang.
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match self.read().await? {
                    ServerFrame::Response { id: got, result } if got == id => {
                        return match result {
                            Outcome::Ok(r) => Ok(r),
                            Outcome::Err(e) => bail!("the relay refused request {id}: {e}"),
                        };
                    }
                    ServerFrame::Response { id: got, .. } => {
                        bail!("answer to request {got} while waiting for {id}")
                    }
                    ServerFrame::Push(_) => {}
                }
            }
        })
        .await
        .context("no answer within 30 s")?
    }

    /// The connection and its stream halves, for callers that read and write them
    /// from separate tasks. Fails if frames are buffered that the caller would lose.
    pub fn into_parts(
        self,
    ) -> anyhow::Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
        if self.decoder.buffered() > 0 {
            bail!("unread bytes buffered on the connection");
        }
        Ok((self.conn, self.send, self.recv))
    }

    /// Closes the connection (without waiting).
    pub fn close(self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// The ALPN of protocol version 1.
pub fn nook_alpn() -> &'static [u8] {
    ALPN
}

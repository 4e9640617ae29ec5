//! QUIC client plumbing for benchmarks that open thousands of connections: one client
//! endpoint (one UDP socket, so no file-descriptor limit) shared by all of them, the
//! TLS and transport settings nook ships (nook-quic's [`client_config`], as
//! `nook_client` uses it), and a minimal framed connection speaking the nook protocol.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use nook_crypto::RelayAddr;
use nook_proto::codec::encode_frame_into;
use nook_proto::limits::{ALPN, PROTOCOL_VERSION};
use nook_proto::{ClientFrame, FrameDecoder, HelloOk, Outcome, Request, Response, ServerFrame};

/// The nook client's TLS and transport settings with the relay pinned by `fingerprint`:
/// nook-quic's, the same builder `nook_client` uses.
pub use nook_quic::client_config;

/// UDP send buffer asked for on the shared client socket (its receive buffer follows
/// nook-quic's rule); the OS may cap it at `net.core.wmem_max`.
const SEND_BUFFER: usize = 4 * 1024 * 1024;

/// A client endpoint on 127.0.0.1 with large socket buffers, to be shared by many
/// connections.
pub fn shared_client_endpoint() -> anyhow::Result<quinn::Endpoint> {
    let bound = nook_quic::udp_socket("127.0.0.1:0".parse()?)?;
    let _ = socket2::SockRef::from(&bound.socket).set_send_buffer_size(SEND_BUFFER);
    let runtime = quinn::default_runtime().context("no async runtime")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        bound.socket,
        runtime,
    )?;
    Ok(endpoint)
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
                rotations: Vec::new(),
                retiring_at: None,
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

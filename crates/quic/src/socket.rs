//! The UDP socket rule for endpoints that take many handshakes at once.

use std::net::SocketAddr;

/// UDP receive buffer a busy endpoint asks for: bursts of handshakes overflowed the
/// usual ~208 KiB default in measurements, and quinn does not raise it itself. The OS
/// may grant less (Linux caps it at `net.core.rmem_max`).
pub const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// A bound UDP socket, ready for `quinn::Endpoint::new`.
#[derive(Debug)]
pub struct BoundSocket {
    pub socket: std::net::UdpSocket,
    /// The receive buffer the OS granted, as it reports it (Linux reports twice the
    /// usable size); less than [`UDP_RECV_BUFFER`] is worth a word to the operator.
    pub recv_buffer: usize,
}

/// Why [`udp_socket`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create a UDP socket: {0}")]
    Create(#[source] std::io::Error),
    #[error("cannot bind the UDP socket: {0}")]
    Bind(#[source] std::io::Error),
}

/// A UDP socket bound to `addr` that asks for [`UDP_RECV_BUFFER`]. An IPv6 address
/// also takes IPv4 where the OS allows it (`[::]` listens on both).
pub fn udp_socket(addr: SocketAddr) -> Result<BoundSocket, SocketError> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(SocketError::Create)?;
    if addr.is_ipv6() {
        // Best effort: where dual-stack is refused, the socket still serves IPv6.
        let _ = socket.set_only_v6(false);
    }
    // Best effort as well: a smaller buffer is reported through `recv_buffer`.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    let recv_buffer = socket.recv_buffer_size().unwrap_or(0);
    socket.bind(&addr.into()).map_err(SocketError::Bind)?;
    Ok(BoundSocket {
        socket: socket.into(),
        recv_buffer,
    })
}

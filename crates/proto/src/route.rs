//! Private routing (protocol-spec.md §18): the one header a route stream starts with,
//! and the forwarder's answer.
//!
//! A route stream is a bidirectional QUIC stream on a connection that negotiated
//! [`ROUTE_ALPN`]. Its first bytes are one [`RouteRequest`] framed like a frame
//! (u32 BE length, bincode body) but capped at [`MAX_ROUTE_HEADER`]; the relay answers
//! with one [`RouteReply`] the same way. After `Ready` the stream carries the inner
//! TLS 1.3 channel's bytes, which the forwarder passes on unread.

use bincode::{Decode, Encode};

use crate::codec::{DecodeError, EncodeError, decode_body, encode_frame};
use crate::frame::ErrorFrame;

/// The ALPN of route connections: a member to its forwarder, a forwarder to the
/// destination relay. A relay serves both this and [`crate::limits::ALPN`].
pub const ROUTE_ALPN: &[u8] = b"nook-route/1";

/// The largest route header or reply body, in bytes. A `Forward` naming the longest
/// host (253 bytes) takes 259; a refusal's message is at most 256.
pub const MAX_ROUTE_HEADER: usize = 512;

/// The longest destination host a `Forward` may name (a DNS name's limit).
pub const MAX_ROUTE_HOST: usize = 253;

/// What a route stream asks of the relay it arrives at.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RouteRequest {
    /// To a forwarder: open a stream to the relay at `host:port` (a route stream with
    /// [`RouteRequest::Deliver`]) and pass bytes both ways until either side ends.
    Forward { host: String, port: u16 },
    /// To the destination: this stream carries an inner session for you (TLS 1.3,
    /// then ordinary nook frames).
    Deliver,
}

/// The relay's answer to a [`RouteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RouteReply {
    /// The route is up: the inner channel's bytes follow.
    Ready,
    /// Refused (the relay then finishes the stream): `ForwardRefused`,
    /// `ForwardLimit`, `DestinationUnreachable` or `Malformed`.
    Refused(ErrorFrame),
}

/// Why a route header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteHeaderError {
    #[error("route header of {len} bytes, more than {MAX_ROUTE_HEADER}")]
    TooLarge { len: usize },
    #[error("empty route header")]
    Empty,
    #[error("a Forward names a host of {len} bytes, more than {MAX_ROUTE_HOST}")]
    HostTooLong { len: usize },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The length a route header announces in its first 4 bytes, checked against
/// [`MAX_ROUTE_HEADER`] before anything more is read.
pub fn route_header_len(prefix: [u8; 4]) -> Result<usize, RouteHeaderError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(RouteHeaderError::Empty);
    }
    if len > MAX_ROUTE_HEADER {
        return Err(RouteHeaderError::TooLarge { len });
    }
    Ok(len)
}

/// Decodes a route request body (after its length prefix) and checks its host.
pub fn decode_route_request(body: &[u8]) -> Result<RouteRequest, RouteHeaderError> {
    let request: RouteRequest = decode_body(body)?;
    if let RouteRequest::Forward { host, .. } = &request
        && (host.is_empty() || host.len() > MAX_ROUTE_HOST)
    {
        return Err(RouteHeaderError::HostTooLong { len: host.len() });
    }
    Ok(request)
}

/// Decodes a route reply body (after its length prefix).
pub fn decode_route_reply(body: &[u8]) -> Result<RouteReply, RouteHeaderError> {
    Ok(decode_body(body)?)
}

/// A route request or reply with its length prefix, as it goes on the stream.
pub fn encode_route<T: Encode>(value: &T) -> Result<Vec<u8>, EncodeError> {
    encode_frame(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::frame::ErrorCode;

    #[test]
    fn a_forward_round_trips_and_its_bytes_are_the_spec_s() {
        let request = RouteRequest::Forward {
            host: "127.0.0.3".into(),
            port: 4433,
        };
        let wire = encode_route(&request).unwrap();
        assert_eq!(
            hex(&wire),
            "0000000e00093132372e302e302e33fb5111",
            "the layout of protocol-spec.md §18.2"
        );
        let len = route_header_len(wire[..4].try_into().unwrap()).unwrap();
        assert_eq!(decode_route_request(&wire[4..4 + len]).unwrap(), request);
        assert_eq!(
            hex(&encode_route(&RouteRequest::Deliver).unwrap()),
            "0000000101"
        );
        assert_eq!(
            hex(&encode_route(&RouteReply::Ready).unwrap()),
            "0000000100"
        );
    }

    #[test]
    fn oversized_or_empty_headers_are_refused_from_the_prefix() {
        assert_eq!(
            route_header_len(513u32.to_be_bytes()),
            Err(RouteHeaderError::TooLarge { len: 513 })
        );
        assert_eq!(route_header_len([0; 4]), Err(RouteHeaderError::Empty));
        assert_eq!(route_header_len(512u32.to_be_bytes()), Ok(512));
    }

    #[test]
    fn a_forward_without_host_or_with_a_too_long_one_is_refused() {
        for host in [String::new(), "a".repeat(MAX_ROUTE_HOST + 1)] {
            let len = host.len();
            let wire = encode_route(&RouteRequest::Forward { host, port: 1 }).unwrap();
            assert_eq!(
                decode_route_request(&wire[4..]),
                Err(RouteHeaderError::HostTooLong { len })
            );
        }
    }

    #[test]
    fn a_refusal_carries_its_code() {
        let reply = RouteReply::Refused(ErrorFrame::new(ErrorCode::ForwardRefused, "no"));
        let wire = encode_route(&reply).unwrap();
        assert_eq!(decode_route_reply(&wire[4..]).unwrap(), reply);
        assert_eq!(wire[4], 1, "Refused is variant 1");
        assert_eq!(wire[5], 23, "ForwardRefused is error code 23");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

//! The start of a route stream (protocol-spec §18.2), as a forwarder reads a member's
//! header and a member reads the forwarder's answer: a 4-byte length checked against
//! the limit before anything more is read, then the body. A header that decodes must
//! encode back to the same bytes' meaning, within the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_proto::route::{
    decode_route_reply, decode_route_request, encode_route, route_header_len,
};

fuzz_target!(|bytes: &[u8]| {
    let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = route_header_len(*prefix) else {
        return;
    };
    let Some(body) = rest.get(..len) else {
        return;
    };
    if let Ok(request) = decode_route_request(body) {
        let again = encode_route(&request).expect("a decoded request encodes");
        let len = route_header_len(again[..4].try_into().expect("a prefix"))
            .expect("within the limit");
        assert_eq!(decode_route_request(&again[4..4 + len]).ok(), Some(request));
    }
    if let Ok(reply) = decode_route_reply(body) {
        let again = encode_route(&reply).expect("a decoded reply encodes");
        assert_eq!(decode_route_reply(&again[4..]).ok(), Some(reply));
    }
});

//! Every client → relay frame body, as the relay decodes it. A body that decodes must
//! encode back to a body that decodes to the same frame, within the frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_proto::codec::{decode_body, encode_frame};
use nook_proto::{ClientFrame, FrameDecoder};

fuzz_target!(|body: &[u8]| {
    let Ok(frame) = decode_body::<ClientFrame>(body) else {
        return;
    };
    let bytes = encode_frame(&frame).expect("a decoded frame encodes within the limit");
    let mut dec = FrameDecoder::new();
    dec.push(&bytes);
    let again = dec
        .next_frame::<ClientFrame>()
        .expect("re-encoded frame decodes");
    assert_eq!(again, Some(frame));
    assert_eq!(dec.buffered(), 0);
});

//! `FrameDecoder::feed` at arbitrary cuts, for both directions.
//!
//! Input: one byte picks the direction, two bytes seed the cut positions, the rest is
//! the stream. The stream is decoded three ways — in one `feed`, in chunks cut where
//! the seed says, and with `push` + `next_frame` — and all three must hand out the
//! same frames and fail (or not) alike. None may panic, and the decoder never holds
//! more than one frame's worth of bytes.
#![no_main]

use std::ops::ControlFlow;

use bincode::Decode;
use libfuzzer_sys::fuzz_target;
use nook_proto::codec::HEADER_LEN;
use nook_proto::limits::MAX_FRAME;
use nook_proto::{ClientFrame, FrameDecoder, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let [dir, a, b, stream @ ..] = data else {
        return;
    };
    let seed = u16::from_le_bytes([*a, *b]);
    if dir & 1 == 0 {
        check::<ClientFrame>(stream, seed);
    } else {
        check::<ServerFrame>(stream, seed);
    }
});

/// What a decoding produced: the frames, and whether it stopped on an error.
type Outcome<T> = (Vec<T>, bool);

fn check<T: Decode<()> + PartialEq + std::fmt::Debug>(stream: &[u8], seed: u16) {
    let whole = whole::<T>(stream);
    let cut = chunked::<T>(stream, seed);
    let pushed = pushed::<T>(stream, seed);
    assert_eq!(whole, cut, "feed in one piece and feed in chunks disagree");
    assert_eq!(whole, pushed, "feed and push/next_frame disagree");
}

fn whole<T: Decode<()>>(stream: &[u8]) -> Outcome<T> {
    let mut frames = Vec::new();
    let mut dec = FrameDecoder::new();
    let failed = dec
        .feed(stream, |f: T| {
            frames.push(f);
            ControlFlow::<()>::Continue(())
        })
        .is_err();
    (frames, failed)
}

/// Cut lengths from a tiny xorshift seeded by the input: 1..=64 bytes, sometimes a
/// whole frame's worth.
fn cuts(seed: u16) -> impl FnMut() -> usize {
    let mut s = u32::from(seed) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        if s % 7 == 0 {
            (s as usize) % 4096 + 1
        } else {
            (s as usize) % 64 + 1
        }
    }
}

fn chunked<T: Decode<()>>(stream: &[u8], seed: u16) -> Outcome<T> {
    let mut frames = Vec::new();
    let mut dec = FrameDecoder::new();
    let mut next = cuts(seed);
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(next().min(rest.len()));
        rest = tail;
        let r = dec.feed(chunk, |f: T| {
            frames.push(f);
            ControlFlow::<()>::Continue(())
        });
        if r.is_err() {
            return (frames, true);
        }
        assert!(
            dec.buffered() <= HEADER_LEN + MAX_FRAME,
            "decoder holds more than a frame"
        );
    }
    (frames, false)
}

fn pushed<T: Decode<()>>(stream: &[u8], seed: u16) -> Outcome<T> {
    let mut frames = Vec::new();
    let mut dec = FrameDecoder::new();
    let mut next = cuts(seed.rotate_left(7));
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(next().min(rest.len()));
        rest = tail;
        dec.push(chunk);
        loop {
            match dec.next_frame::<T>() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

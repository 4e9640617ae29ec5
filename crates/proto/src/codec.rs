//! Framing: `u32` big-endian body length, then the body in bincode 2 "standard"
//! configuration (little-endian, variable-length integers), with a hard size cap.
//!
//! [`FrameDecoder`] is incremental: feed it bytes split anywhere, take whole frames out.
//! It never allocates more than [`MAX_FRAME`] for one frame and never panics on input.

use std::ops::ControlFlow;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::{Decode, Encode};

use crate::limits::MAX_FRAME;

/// The single bincode configuration of the protocol. The limit bounds what a decoder
/// may allocate for any one frame, whatever lengths the frame claims inside.
pub const CONFIG: Configuration<LittleEndian, Varint, Limit<MAX_FRAME>> =
    bincode::config::standard().with_limit::<MAX_FRAME>();

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Why bytes from the peer could not become a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("malformed frame: {reason}")]
    Malformed { reason: String },
    #[error("frame has {extra} bytes after its last field")]
    TrailingBytes { extra: usize },
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Why a frame could not be encoded (only a value that breaks a limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("could not encode frame: {reason}")]
    Other { reason: String },
}

/// Encodes `value` as one frame (header and body), in a buffer of exactly its size.
pub fn encode_frame<T: Encode>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + encoded_len(value)?);
    encode_frame_into(value, &mut out)?;
    Ok(out)
}

/// The length of `value`'s encoding (its frame body), without encoding it: byte
/// strings are counted, not copied.
pub fn encoded_len<T: Encode>(value: &T) -> Result<usize, EncodeError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(value, &mut size, CONFIG).map_err(|e| EncodeError::Other {
        reason: e.to_string(),
    })?;
    Ok(size.bytes_written)
}

/// Appends one frame to `out`, which may already hold earlier frames (for batching
/// several frames into one stream write).
pub fn encode_frame_into<T: Encode>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    // An encode error can only come from the writer; a Vec writer does not fail, but
    // the limit is checked below so an oversize value never leaves this function.
    let body_len =
        bincode::encode_into_std_write(value, out, CONFIG).map_err(|e| EncodeError::Other {
            reason: e.to_string(),
        });
    let body_len = match body_len {
        Ok(n) => n,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    if body_len > MAX_FRAME {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            len: body_len,
            max: MAX_FRAME,
        });
    }
    let len = u32::try_from(body_len).map_err(|_| EncodeError::TooLarge {
        len: body_len,
        max: MAX_FRAME,
    })?;
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes one frame body (without header). The body must be consumed exactly.
pub fn decode_body<T: Decode<()>>(body: &[u8]) -> Result<T, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    if body.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    let (value, used) =
        bincode::decode_from_slice(body, CONFIG).map_err(|e| DecodeError::Malformed {
            reason: e.to_string(),
        })?;
    if used != body.len() {
        return Err(DecodeError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(value)
}

/// Encodes a value with the protocol's bincode configuration and no frame header
/// (used for transcripts and for values nested inside sealed envelopes).
pub fn encode_value<T: Encode>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::encode_to_vec(value, CONFIG).map_err(|e| EncodeError::Other {
        reason: e.to_string(),
    })
}

/// [`encode_value`] appended to `out`.
pub fn encode_value_into<T: Encode>(value: &T, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    bincode::encode_into_std_write(value, out, CONFIG).map_err(|e| EncodeError::Other {
        reason: e.to_string(),
    })
}

/// Incremental frame decoder. Owns a buffer that never grows past one frame plus
/// whatever partial bytes of the next frame the last read carried.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames; compacted lazily so a burst of
    /// small frames is not quadratic.
    consumed: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed == self.buf.len() {
            // Everything was handed out: drop a buffer a burst left large, so an idle
            // connection does not keep it.
            if self.buf.capacity() > 16 * 1024 {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.consumed = 0;
        } else if self.consumed > 64 * 1024 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed. After an error the
    /// stream is unusable: the caller must drop the connection.
    pub fn next_frame<T: Decode<()>>(&mut self) -> Result<Option<T>, DecodeError> {
        let Some(body) = self.next_body()? else {
            return Ok(None);
        };
        let (start, end) = body;
        decode_body(&self.buf[start..end]).map(Some)
    }

    /// Decodes the frames of `chunk` (the next bytes from the peer), handing each to
    /// `f` until it breaks. A frame lying wholly inside `chunk` is decoded from it in
    /// place; only a frame split across chunks is copied, so the common case costs no
    /// copy into the decoder. Returns `Some` with what `f` broke with (the rest of
    /// `chunk` is then dropped: the caller is ending the stream). After an error the
    /// stream is unusable, as with [`FrameDecoder::next_frame`].
    ///
    /// Do not mix with [`FrameDecoder::push`] on one stream without draining
    /// [`FrameDecoder::next_frame`] first.
    pub fn feed<T: Decode<()>, B>(
        &mut self,
        mut chunk: &[u8],
        mut f: impl FnMut(T) -> ControlFlow<B>,
    ) -> Result<Option<B>, DecodeError> {
        if self.buffered() == 0 && !self.buf.is_empty() {
            self.reset();
        }
        if self.buffered() > 0 {
            // Complete the frame an earlier chunk began, copying only its missing bytes.
            let have = self.buffered();
            let want = if have < HEADER_LEN {
                HEADER_LEN
            } else {
                HEADER_LEN + self.pending_len()?
            };
            let take = (want.saturating_sub(have)).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if have < HEADER_LEN && self.buffered() == HEADER_LEN {
                let take = self.pending_len()?.min(chunk.len());
                self.buf.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
            }
            match self.next_frame::<T>()? {
                None => return Ok(None),
                Some(frame) => {
                    self.reset();
                    if let ControlFlow::Break(b) = f(frame) {
                        return Ok(Some(b));
                    }
                }
            }
        }
        while let Some(header) = chunk.first_chunk::<HEADER_LEN>() {
            let len = frame_len(header)?;
            let Some(body) = chunk.get(HEADER_LEN..HEADER_LEN + len) else {
                break;
            };
            let frame = decode_body(body)?;
            chunk = &chunk[HEADER_LEN + len..];
            if let ControlFlow::Break(b) = f(frame) {
                return Ok(Some(b));
            }
        }
        // The beginning of a frame the next chunk continues.
        self.buf.extend_from_slice(chunk);
        Ok(None)
    }

    /// The body length the buffered header announces (`buffered() >= HEADER_LEN`).
    fn pending_len(&self) -> Result<usize, DecodeError> {
        match self.buf[self.consumed..].first_chunk::<HEADER_LEN>() {
            Some(header) => frame_len(header),
            None => Ok(0),
        }
    }

    /// Forgets what was handed out, dropping a buffer a large frame left behind.
    fn reset(&mut self) {
        if self.buf.capacity() > 16 * 1024 {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.consumed = 0;
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// Call when the stream ends: an incomplete frame is an error.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(DecodeError::Truncated { buffered }),
        }
    }

    fn next_body(&mut self) -> Result<Option<(usize, usize)>, DecodeError> {
        let pending = &self.buf[self.consumed..];
        let Some(header) = pending.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = frame_len(header)?;
        if pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let start = self.consumed + HEADER_LEN;
        self.consumed = start + len;
        Ok(Some((start, start + len)))
    }
}

/// The body length a frame header announces, refused past the limit or when empty.
fn frame_len(header: &[u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(*header) as usize;
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ClientFrame, Request};

    fn ping(n: u64) -> ClientFrame {
        ClientFrame {
            id: n,
            request: Request::Ping { nonce: n * 7 },
        }
    }

    #[test]
    fn frames_split_at_every_byte_decode_whole() {
        let mut wire = Vec::new();
        for i in 0..3 {
            encode_frame_into(&ping(i), &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &wire {
            dec.push(std::slice::from_ref(b));
            while let Some(f) = dec.next_frame::<ClientFrame>().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![ping(0), ping(1), ping(2)]);
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.finish(), Ok(()));
    }

    /// Frames of `wire` fed in chunks cut at `cuts`, as `feed` decodes them.
    fn fed(wire: &[u8], cuts: &[usize]) -> Result<(Vec<ClientFrame>, usize), DecodeError> {
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for &p in cuts.iter().chain([&wire.len()]) {
            let none: Option<()> = dec.feed(&wire[prev..p], |f| {
                got.push(f);
                ControlFlow::Continue(())
            })?;
            assert_eq!(none, None);
            prev = p;
        }
        Ok((got, dec.buffered()))
    }

    #[test]
    fn feed_decodes_frames_cut_at_every_pair_of_points() {
        let mut wire = Vec::new();
        let frames: Vec<ClientFrame> = (0..3).map(ping).collect();
        for f in &frames {
            encode_frame_into(f, &mut wire).unwrap();
        }
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let (got, left) = fed(&wire, &[a, b]).unwrap();
                assert_eq!(got, frames, "cut at {a} and {b}");
                assert_eq!(left, 0);
            }
        }
        let every: Vec<usize> = (0..wire.len()).collect();
        assert_eq!(fed(&wire, &every).unwrap().0, frames);
    }

    #[test]
    fn feed_keeps_a_partial_frame_and_stops_when_told() {
        let mut wire = Vec::new();
        for i in 0..4 {
            encode_frame_into(&ping(i), &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut seen = 0;
        let stopped = dec
            .feed::<ClientFrame, u64>(&wire, |f| {
                seen += 1;
                if f.id == 1 {
                    ControlFlow::Break(f.id)
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!((stopped, seen), (Some(1), 2));

        let mut dec = FrameDecoder::new();
        let none: Option<()> = dec
            .feed::<ClientFrame, ()>(&wire[..wire.len() - 1], |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(none, None);
        // The three whole frames were handed out; the last, less its final byte, waits.
        let last = wire.len() / 4;
        assert_eq!(
            dec.finish(),
            Err(DecodeError::Truncated { buffered: last - 1 })
        );
    }

    #[test]
    fn feed_refuses_oversize_and_empty_headers_split_or_whole() {
        let big = ((MAX_FRAME as u32) + 1).to_be_bytes();
        for cut in 0..=4 {
            let mut dec = FrameDecoder::new();
            let first = dec.feed::<ClientFrame, ()>(&big[..cut], |_| ControlFlow::Continue(()));
            let r = first.and_then(|_| {
                dec.feed::<ClientFrame, ()>(&big[cut..], |_| ControlFlow::Continue(()))
            });
            assert_eq!(
                r,
                Err(DecodeError::TooLarge {
                    len: MAX_FRAME + 1,
                    max: MAX_FRAME
                }),
                "cut at {cut}"
            );
        }
        let mut dec = FrameDecoder::new();
        assert_eq!(
            dec.feed::<ClientFrame, ()>(&[0, 0, 0, 0], |_| ControlFlow::Continue(())),
            Err(DecodeError::Empty)
        );
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        use crate::frame::{EnvelopeKind, Put};
        use crate::ids::MailboxId;
        for body_len in [0usize, 1, 127, 128, 2048, 70_000] {
            let frame = ClientFrame {
                id: 300,
                request: Request::Put(Put {
                    mailbox: MailboxId([7; 16]),
                    kind: EnvelopeKind::Chat,
                    body: vec![0xAB; body_len],
                }),
            };
            let framed = encode_frame(&frame).unwrap();
            assert_eq!(encoded_len(&frame).unwrap() + HEADER_LEN, framed.len());
            assert_eq!(framed.capacity(), framed.len(), "allocated exactly once");
        }
    }

    #[test]
    fn header_claiming_more_than_the_limit_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new();
        dec.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert_eq!(
            dec.next_frame::<ClientFrame>(),
            Err(DecodeError::TooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
    }

    #[test]
    fn empty_frame_is_an_error() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, 0]);
        assert_eq!(dec.next_frame::<ClientFrame>(), Err(DecodeError::Empty));
    }

    #[test]
    fn trailing_bytes_in_a_frame_are_an_error() {
        let mut body = encode_value(&ping(1)).unwrap();
        body.push(0);
        assert_eq!(
            decode_body::<ClientFrame>(&body),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn unknown_variant_is_malformed() {
        // id = 1, request variant 200 (no such request).
        let body = [1u8, 200];
        assert!(matches!(
            decode_body::<ClientFrame>(&body),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn a_length_inside_the_frame_larger_than_the_limit_is_refused() {
        // Put { mailbox, kind, body } whose body claims 2^40 bytes.
        let mut body = vec![1u8, 5];
        body.extend_from_slice(&[0u8; 16]);
        body.push(1);
        body.push(253);
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode_body::<ClientFrame>(&body),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn stream_ending_mid_frame_is_truncated() {
        let wire = encode_frame(&ping(3)).unwrap();
        let mut dec = FrameDecoder::new();
        dec.push(&wire[..wire.len() - 1]);
        assert_eq!(dec.next_frame::<ClientFrame>(), Ok(None));
        assert_eq!(
            dec.finish(),
            Err(DecodeError::Truncated {
                buffered: wire.len() - 1
            })
        );
    }

    #[test]
    fn oversize_value_is_not_encoded() {
        let frame = ClientFrame {
            id: 1,
            request: Request::Put(crate::frame::Put {
                mailbox: crate::MailboxId([0; 16]),
                kind: crate::EnvelopeKind::Chat,
                body: vec![0; MAX_FRAME],
            }),
        };
        assert!(matches!(
            encode_frame(&frame),
            Err(EncodeError::TooLarge { .. })
        ));
        let mut out = vec![9u8];
        assert!(encode_frame_into(&frame, &mut out).is_err());
        assert_eq!(
            out,
            vec![9u8],
            "a failed encode leaves the buffer as it was"
        );
    }

    #[test]
    fn header_is_big_endian_length_of_the_body() {
        let wire = encode_frame(&ping(1)).unwrap();
        let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
        assert_eq!(len, wire.len() - HEADER_LEN);
        // id 1, variant Ping (10), nonce 7: all single-byte varints.
        assert_eq!(&wire[4..], &[1, 10, 7]);
    }
}

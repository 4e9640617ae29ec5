//! Padding to the protocol's size buckets (ISO/IEC 7816-4: a 0x80 byte, then zeros).

use nook_proto::limits::PADDING_BUCKETS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaddingError {
    #[error(
        "{len} bytes do not fit the largest bucket ({max} bytes with {overhead} bytes of overhead); split the payload"
    )]
    TooLarge {
        len: usize,
        max: usize,
        overhead: usize,
    },
    #[error("padding is malformed")]
    Malformed,
}

/// The smallest bucket that holds `len` payload bytes plus the 0x80 marker plus
/// `overhead` bytes the caller adds after padding (nonce and tag).
pub fn bucket_for(len: usize, overhead: usize) -> Result<usize, PaddingError> {
    PADDING_BUCKETS
        .iter()
        .copied()
        .find(|b| len + 1 + overhead <= *b)
        .ok_or(PaddingError::TooLarge {
            len,
            max: PADDING_BUCKETS[PADDING_BUCKETS.len() - 1],
            overhead,
        })
}

/// Pads `data` so that `data.len() + overhead` becomes a bucket size.
pub fn pad(data: &[u8], overhead: usize) -> Result<Vec<u8>, PaddingError> {
    let bucket = bucket_for(data.len(), overhead)?;
    let mut out = Vec::with_capacity(bucket - overhead);
    out.extend_from_slice(data);
    pad_in_place(&mut out, 0, overhead)?;
    Ok(out)
}

/// Pads the data in `buf[from..]` in place, as [`pad`] would: afterwards
/// `buf.len() - from + overhead` is a bucket size.
pub fn pad_in_place(buf: &mut Vec<u8>, from: usize, overhead: usize) -> Result<(), PaddingError> {
    let bucket = bucket_for(buf.len().saturating_sub(from), overhead)?;
    buf.push(0x80);
    buf.resize(from + bucket - overhead, 0);
    Ok(())
}

/// Removes padding: the last non-zero byte must be 0x80.
pub fn unpad(padded: &[u8]) -> Result<&[u8], PaddingError> {
    // Skip the zero run 16 bytes at a time (a 1 KiB message in a 2 KiB bucket ends in
    // ~1,000 zeros; byte by byte that scan cost as much as decrypting).
    let mut zeros = padded.len();
    while zeros >= 16 && padded[zeros - 16..zeros] == [0u8; 16] {
        zeros -= 16;
    }
    let end = padded[..zeros]
        .iter()
        .rposition(|b| *b != 0)
        .ok_or(PaddingError::Malformed)?;
    if padded[end] != 0x80 {
        return Err(PaddingError::Malformed);
    }
    Ok(&padded[..end])
}

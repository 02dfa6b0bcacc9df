//! A batch of deltas as one zstd frame: what `Deltas.zstd` carries to a
//! peer that announced the "zstd" feature.
//!
//! Only the transport compresses: the deltas that come out are the exact
//! bytes their authors signed, and are then admitted as any others.
//!
//! The frame decompresses to entries, one per delta, in batch order:
//!
//! | field | bytes | notes |
//! |-------|-------|-------|
//! | kind  | 1     | `0`: the delta whole; `1`: its `prev` left out |
//! | len   | 4     | big-endian, bytes that follow |
//! | bytes | len   | the delta, without `prev` (`delta::PREV_RANGE`) for kind `1` |
//!
//! A delta's `prev` is the hash of its author's previous delta. When that
//! delta is the entry just before it, the receiver computes the hash
//! itself, so the 32 bytes that compress least need not travel: with the
//! signature, they are most of what a small record costs on the wire.
//! A wrong `prev` put back (a lying sender) fails the signature check.

use crate::core::delta::{hash_of, PREV_RANGE};
use crate::core::SignedDelta;

/// The feature a node announces in its digests when it reads these.
pub const FEATURE: &str = "zstd";

const WHOLE: u8 = 0;
const NO_PREV: u8 = 1;
const ENTRY_HEAD: usize = 5;
const PREV_LEN: usize = PREV_RANGE.end - PREV_RANGE.start;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("a compressed batch of {got} bytes exceeds the limit of {max}")]
    TooLarge { got: usize, max: usize },
    #[error("a compressed batch of more than {max} deltas")]
    TooMany { max: usize },
    #[error("compressed batch does not decompress to its {expected} bytes: {why}")]
    Frame { expected: usize, why: String },
    #[error("compressed batch entry {index} is malformed: {why}")]
    Entry { index: usize, why: &'static str },
}

/// `deltas` as one frame, and its decompressed length. Small batches
/// (a slow line's) get a stronger level: there the bytes cost more than
/// the CPU; large ones (a fast link's) the quick one.
pub fn pack(deltas: &[SignedDelta]) -> (Vec<u8>, u32) {
    let mut raw = Vec::with_capacity(deltas.iter().map(|d| d.as_bytes().len() + 5).sum());
    let mut before: Option<&SignedDelta> = None;
    for d in deltas {
        let bytes = d.as_bytes();
        let follows = before.is_some_and(|b| {
            b.author() == d.author() && b.seq() + 1 == d.seq() && b.hash() == d.prev()
        });
        if follows {
            raw.push(NO_PREV);
            raw.extend_from_slice(&((bytes.len() - PREV_LEN) as u32).to_be_bytes());
            raw.extend_from_slice(&bytes[..PREV_RANGE.start]);
            raw.extend_from_slice(&bytes[PREV_RANGE.end..]);
        } else {
            raw.push(WHOLE);
            raw.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            raw.extend_from_slice(bytes);
        }
        before = Some(d);
    }
    let level = if raw.len() <= 256 * 1024 { 6 } else { 1 };
    let frame = zstd::bulk::compress(&raw, level).expect("compressing into memory");
    (frame, raw.len() as u32)
}

/// `frame` decompressed, which must come to exactly `len` bytes; nothing
/// is allocated for a `len` over `bytes_max`, nor beyond `len`. Batches
/// and pieces of a delta (`fragment.rs`) are both unpacked by this.
pub fn decompress_exact(frame: &[u8], len: usize, bytes_max: usize) -> Result<Vec<u8>, PackError> {
    if len > bytes_max {
        return Err(PackError::TooLarge {
            got: len,
            max: bytes_max,
        });
    }
    let frame_error = |why: String| PackError::Frame { expected: len, why };
    // `bulk` refuses output beyond the capacity it was given.
    let raw = zstd::bulk::decompress(frame, len).map_err(|e| frame_error(e.to_string()))?;
    if raw.len() != len {
        return Err(frame_error(format!("got {}", raw.len())));
    }
    Ok(raw)
}

/// The deltas in `frame`, which must decompress to exactly `raw_len`
/// bytes. Nothing larger than `bytes_max` (before or after `prev` is put
/// back) is allocated, nor more than `count_max` deltas accepted.
pub fn unpack(
    frame: &[u8],
    raw_len: usize,
    bytes_max: usize,
    count_max: usize,
) -> Result<Vec<Vec<u8>>, PackError> {
    let raw = decompress_exact(frame, raw_len, bytes_max)?;
    let mut out: Vec<Vec<u8>> = Vec::new();
    let (mut at, mut total) = (0usize, 0usize);
    while at < raw.len() {
        let index = out.len();
        if index == count_max {
            return Err(PackError::TooMany { max: count_max });
        }
        let bad = |why| PackError::Entry { index, why };
        let head = raw
            .get(at..at + ENTRY_HEAD)
            .ok_or(bad("truncated header"))?;
        let len = u32::from_be_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        let body = raw
            .get(at + ENTRY_HEAD..at + ENTRY_HEAD + len)
            .ok_or(bad("truncated"))?;
        at += ENTRY_HEAD + len;
        let delta = match head[0] {
            WHOLE => body.to_vec(),
            NO_PREV => {
                let prev = out.last().and_then(|p| hash_of(p));
                let prev = prev.ok_or(bad("no delta before it to take prev from"))?;
                if body.len() < PREV_RANGE.start {
                    return Err(bad("shorter than a delta header"));
                }
                let mut d = Vec::with_capacity(len + PREV_LEN);
                d.extend_from_slice(&body[..PREV_RANGE.start]);
                d.extend_from_slice(&prev.0);
                d.extend_from_slice(&body[PREV_RANGE.start..]);
                d
            }
            _ => return Err(bad("unknown kind")),
        };
        total += delta.len();
        if total > bytes_max {
            return Err(PackError::TooLarge {
                got: total,
                max: bytes_max,
            });
        }
        out.push(delta);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Author;

    fn batch() -> Vec<SignedDelta> {
        let (mut a, mut b) = (Author::region(1, "fr"), Author::region(2, "ke"));
        let mut out = Vec::new();
        for i in 0..20 {
            let value = format!("{{\"office\":\"fr\",\"count\":{i},\"note\":\"monthly\"}}");
            out.push(a.put(&format!("r/{i}"), value.as_bytes(), 1_000 + i));
            if i % 7 == 0 {
                // Another author in between: the next of `a` goes whole.
                out.push(b.put(&format!("s/{i}"), b"x", 1_000 + i));
            }
        }
        out
    }

    fn bytes_of(ds: &[SignedDelta]) -> Vec<Vec<u8>> {
        ds.iter().map(|d| d.as_bytes().to_vec()).collect()
    }

    #[test]
    fn unpacks_the_exact_signed_bytes_and_saves_on_records() {
        let ds = batch();
        let (frame, raw_len) = pack(&ds);
        let back = unpack(&frame, raw_len as usize, 1 << 20, 1000).unwrap();
        assert_eq!(back, bytes_of(&ds));
        let plain: usize = ds.iter().map(|d| d.as_bytes().len()).sum();
        assert!(frame.len() * 2 < plain, "{} of {plain}", frame.len());
        assert!((raw_len as usize) < plain, "prev left out where it follows");
    }

    #[test]
    fn a_lying_frame_is_refused_or_its_deltas_fail_their_signature() {
        let ds = batch();
        let (frame, raw_len) = pack(&ds);
        let raw_len = raw_len as usize;
        let refused = |r: Result<Vec<Vec<u8>>, PackError>| r.unwrap_err();
        // Declared length wrong either way, or over the limits.
        refused(unpack(&frame, raw_len - 1, 1 << 20, 1000));
        refused(unpack(&frame, raw_len + 1, 1 << 20, 1000));
        refused(unpack(&frame, raw_len, raw_len - 1, 1000));
        refused(unpack(&frame, raw_len, 1 << 20, ds.len() - 1));
        // Every flipped byte of the frame: refused, the same deltas (a bit
        // zstd does not read), or deltas that fail decoding or their
        // signature, as admission will find. Never a panic.
        let mut keys = crate::core::verify::KeyCache::default();
        let original = bytes_of(&ds);
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x20;
            let Ok(out) = unpack(&bad, raw_len, 1 << 20, 1000) else {
                continue;
            };
            let changed = out.iter().filter(|d| !original.contains(d));
            for d in changed {
                let honest = SignedDelta::decode(d).is_ok_and(|d| keys.verify_deltas(&[&d])[0]);
                assert!(!honest, "flipping byte {i} made another valid delta");
            }
        }
    }

    #[test]
    fn entries_that_cannot_be_put_back_are_refused() {
        let d = batch().remove(0);
        let mut raw = vec![NO_PREV];
        raw.extend_from_slice(&((d.as_bytes().len() - PREV_LEN) as u32).to_be_bytes());
        raw.extend_from_slice(&d.as_bytes()[PREV_LEN..]);
        let frame = zstd::bulk::compress(&raw, 1).unwrap();
        let got = unpack(&frame, raw.len(), 1 << 20, 10).unwrap_err();
        assert!(matches!(got, PackError::Entry { index: 0, .. }), "{got}");
        let raw = [WHOLE, 0, 0, 0, 9, 1];
        let frame = zstd::bulk::compress(&raw, 1).unwrap();
        let got = unpack(&frame, raw.len(), 1 << 20, 10).unwrap_err();
        assert!(matches!(got, PackError::Entry { index: 0, .. }), "{got}");
    }
}

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
//!
//! To a peer that also announced "zstd-context", a frame may refer to the
//! tail of the batch before it on the link (`Context`), as zstd's prefix:
//! a slow line's batch holds a few dozen records, and the fields and
//! phrases they share with the records just sent are then not paid for
//! again. Both ends keep that tail by the same rule, in stream order, and
//! the frame says how many bytes of it it used, so a mismatch is refused
//! rather than decoded into other bytes.

use crate::core::delta::{hash_of, PREV_RANGE};
use crate::core::SignedDelta;

/// The feature a node announces in its digests when it reads these.
pub const FEATURE: &str = "zstd";
/// The feature a node announces in its first digest when it reads frames
/// that refer to the batch before them.
pub const CONTEXT_FEATURE: &str = "zstd-context";

/// A raw batch this large or smaller is a slow line's (the pace sizes a
/// batch by what the line moves): it gets the stronger level, and its tail
/// becomes the context of the next frame. A fast link's batches are large
/// enough to compress on their own, and keep nothing.
const SMALL_RAW: usize = 256 * 1024;
/// Bytes of the previous small batch a frame may refer to: with these
/// rows, 32 KiB saves what 64 KiB does, and it is what each end of a link
/// holds for it.
const CONTEXT_BYTES: usize = 32 * 1024;

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
    #[error("compressed batch refers to {claimed} bytes of context; {held} are held")]
    Context { claimed: usize, held: usize },
}

/// One direction of a link's compression context: the tail of the last
/// batch packed (sender) or unpacked (receiver) on it, if that batch was
/// small. Each end updates it after every frame, so the two agree.
#[derive(Debug, Default)]
pub struct Context {
    tail: Vec<u8>,
}

impl Context {
    fn keep(&mut self, raw: &[u8]) {
        self.tail.clear();
        if raw.len() <= SMALL_RAW {
            let from = raw.len().saturating_sub(CONTEXT_BYTES);
            self.tail.extend_from_slice(&raw[from..]);
        }
    }
}

/// Whether `deltas` make a small batch, a slow line's (or a live write's):
/// packed at the stronger level, and kept as the next frame's context.
pub fn is_small(deltas: &[SignedDelta]) -> bool {
    let raw: usize = deltas.iter().map(|d| d.as_bytes().len() + ENTRY_HEAD).sum();
    raw <= SMALL_RAW
}

/// A batch packed: the frame, its length unpacked, and how many bytes of
/// the link's context it refers to (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub frame: Vec<u8>,
    pub raw_len: u32,
    pub context_len: u32,
}

/// `deltas` as one frame, referring to `context` if the peer reads that
/// (and updating it). Small batches (a slow line's) get a stronger level:
/// there the bytes cost more than the CPU; large ones (a fast link's) the
/// quick one.
pub fn pack(deltas: &[SignedDelta], context: Option<&mut Context>) -> Packed {
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
    let level = if raw.len() <= SMALL_RAW { 9 } else { 1 };
    let (frame, context_len) = match context {
        None => (compress_after(&raw, &[], level), 0),
        Some(c) => {
            let frame = compress_after(&raw, &c.tail, level);
            let used = c.tail.len() as u32;
            c.keep(&raw);
            (frame, used)
        }
    };
    Packed {
        frame,
        raw_len: raw.len() as u32,
        context_len,
    }
}

/// `raw` as a frame that may refer to `prefix` (empty for none), zstd's
/// single-use raw dictionary (never parsed as a trained one, whatever its
/// bytes).
fn compress_after(raw: &[u8], prefix: &[u8], level: i32) -> Vec<u8> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut cctx = CCtx::create();
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    let done = (cctx.set_parameter(CParameter::CompressionLevel(level)))
        .and_then(|_| cctx.ref_prefix(prefix))
        .and_then(|_| cctx.compress2(&mut out, raw));
    done.expect("compressing into memory within its bound");
    out
}

/// `frame` decompressed after `prefix` (empty for none), which must come
/// to exactly `len` bytes; nothing is allocated for a `len` over
/// `bytes_max`, nor beyond `len`. Batches and pieces of a delta
/// (`fragment.rs`) are both unpacked by this.
pub fn decompress_exact(
    frame: &[u8],
    len: usize,
    bytes_max: usize,
    prefix: &[u8],
) -> Result<Vec<u8>, PackError> {
    use zstd::zstd_safe::DCtx;
    if len > bytes_max {
        return Err(PackError::TooLarge {
            got: len,
            max: bytes_max,
        });
    }
    let frame_error = |why: String| PackError::Frame { expected: len, why };
    let zstd_error = |code| frame_error(zstd::zstd_safe::get_error_name(code).to_string());
    // One-shot decompression writes into `raw` and refuses to go beyond
    // its capacity; it allocates no window of the size a frame claims.
    let mut raw = Vec::with_capacity(len);
    let mut dctx = DCtx::create();
    (dctx.ref_prefix(prefix))
        .and_then(|_| dctx.decompress(&mut raw, frame))
        .map_err(zstd_error)?;
    if raw.len() != len {
        return Err(frame_error(format!("got {}", raw.len())));
    }
    Ok(raw)
}

/// The deltas in `frame`, which must decompress to exactly `raw_len`
/// bytes after the `context_len` bytes of `context` it refers to (all of
/// it, or none). Nothing larger than `bytes_max` (before or after `prev`
/// is put back) is allocated, nor more than `count_max` deltas accepted.
/// `context` is updated only by a frame that unpacked.
pub fn unpack(
    frame: &[u8],
    (raw_len, context_len): (usize, usize),
    context: &mut Context,
    bytes_max: usize,
    count_max: usize,
) -> Result<Vec<Vec<u8>>, PackError> {
    let held = context.tail.len();
    let prefix = match context_len {
        0 => &[][..],
        n if n == held => &context.tail[..],
        claimed => return Err(PackError::Context { claimed, held }),
    };
    let raw = decompress_exact(frame, raw_len, bytes_max, prefix)?;
    let out = entries(&raw, bytes_max, count_max)?;
    context.keep(&raw);
    Ok(out)
}

/// The deltas in `raw`, a frame's bytes unpacked.
fn entries(raw: &[u8], bytes_max: usize, count_max: usize) -> Result<Vec<Vec<u8>>, PackError> {
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

    /// `p` unpacked by a receiver holding `context`.
    fn unpack_with(p: &Packed, context: &mut Context) -> Result<Vec<Vec<u8>>, PackError> {
        let lens = (p.raw_len as usize, p.context_len as usize);
        unpack(&p.frame, lens, context, 1 << 20, 1000)
    }

    #[test]
    fn unpacks_the_exact_signed_bytes_and_saves_on_records() {
        let ds = batch();
        let p = pack(&ds, None);
        assert_eq!(p.context_len, 0);
        let back = unpack_with(&p, &mut Context::default()).unwrap();
        assert_eq!(back, bytes_of(&ds));
        let plain: usize = ds.iter().map(|d| d.as_bytes().len()).sum();
        assert!(p.frame.len() * 2 < plain, "{} of {plain}", p.frame.len());
        assert!(
            (p.raw_len as usize) < plain,
            "prev left out where it follows"
        );
    }

    /// Two batches of one author's rows, one after the other.
    fn two_batches() -> (Vec<SignedDelta>, Vec<SignedDelta>) {
        let mut a = Author::region(1, "fr");
        let mut rows: Vec<_> = (0..40)
            .map(|i| {
                let value = format!("{{\"office\":\"fr\",\"count\":{i},\"note\":\"monthly\"}}");
                a.put(&format!("r/{i}"), value.as_bytes(), 1_000 + i)
            })
            .collect();
        let second = rows.split_off(20);
        (rows, second)
    }

    #[test]
    fn a_frame_after_its_context_is_smaller_and_needs_that_context() {
        let (first, second) = two_batches();
        let (mut sent, mut received) = (Context::default(), Context::default());
        let p1 = pack(&first, Some(&mut sent));
        assert_eq!(p1.context_len, 0, "nothing before the first");
        assert_eq!(unpack_with(&p1, &mut received).unwrap(), bytes_of(&first));
        let alone = pack(&second, None);
        let p2 = pack(&second, Some(&mut sent));
        assert!(p2.context_len > 0);
        assert!(
            p2.frame.len() < alone.frame.len(),
            "{} vs {}",
            p2.frame.len(),
            alone.frame.len()
        );
        assert_eq!(unpack_with(&p2, &mut received).unwrap(), bytes_of(&second));
        // A receiver without that context refuses the frame: it claims
        // bytes that are not held, or held bytes of another length.
        let got = unpack_with(&p2, &mut Context::default()).unwrap_err();
        assert!(matches!(got, PackError::Context { held: 0, .. }), "{got}");
        let mut other = Context::default();
        other.keep(b"some other batch");
        assert!(unpack_with(&p2, &mut other).is_err());
    }

    #[test]
    fn a_large_batch_leaves_no_context() {
        let mut c = Context::default();
        c.keep(&vec![7; SMALL_RAW]);
        assert_eq!(c.tail.len(), CONTEXT_BYTES);
        c.keep(&vec![7; SMALL_RAW + 1]);
        assert!(c.tail.is_empty(), "a fast link's batch is not kept");
    }

    #[test]
    fn a_lying_frame_is_refused_or_its_deltas_fail_their_signature() {
        let ds = batch();
        let Packed { frame, raw_len, .. } = pack(&ds, None);
        let raw_len = raw_len as usize;
        let refused = |r: Result<Vec<Vec<u8>>, PackError>| r.unwrap_err();
        let none = &mut Context::default();
        // Declared length wrong either way, or over the limits.
        refused(unpack(&frame, (raw_len - 1, 0), none, 1 << 20, 1000));
        refused(unpack(&frame, (raw_len + 1, 0), none, 1 << 20, 1000));
        refused(unpack(&frame, (raw_len, 0), none, raw_len - 1, 1000));
        refused(unpack(&frame, (raw_len, 0), none, 1 << 20, ds.len() - 1));
        // Every flipped byte of the frame: refused, the same deltas (a bit
        // zstd does not read), or deltas that fail decoding or their
        // signature, as admission will find. Never a panic.
        let mut keys = crate::core::verify::KeyCache::default();
        let original = bytes_of(&ds);
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x20;
            let Ok(out) = unpack(&bad, (raw_len, 0), none, 1 << 20, 1000) else {
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
        let got = unpack(&frame, (raw.len(), 0), &mut Context::default(), 1 << 20, 10);
        let got = got.unwrap_err();
        assert!(matches!(got, PackError::Entry { index: 0, .. }), "{got}");
        let raw = [WHOLE, 0, 0, 0, 9, 1];
        let frame = zstd::bulk::compress(&raw, 1).unwrap();
        let got = unpack(&frame, (raw.len(), 0), &mut Context::default(), 1 << 20, 10);
        let got = got.unwrap_err();
        assert!(matches!(got, PackError::Entry { index: 0, .. }), "{got}");
    }
}

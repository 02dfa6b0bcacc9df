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
//! | kind  | 1     | `0`: the delta whole; `1`: its `prev` left out; `2`: it follows |
//! | len   | 4     | big-endian, bytes that follow |
//! | bytes | len   | the delta, without `prev` (`delta::PREV_RANGE`) for kind `1` |
//!
//! A delta's `prev` is the hash of its author's previous delta. When that
//! delta is the entry just before it, the receiver computes the hash
//! itself, so the 32 bytes that compress least need not travel: with the
//! signature, they are most of what a small record costs on the wire.
//! A wrong `prev` put back (a lying sender) fails the signature check.
//!
//! To a peer that announced "zstd-follows", such an entry is kind `2`:
//! it takes its version and author from the entry before it, its seq is
//! that one's plus one, and its `wall_ms` goes as the difference from
//! that one's (zigzag, LEB128): its bytes are that varint and then the
//! delta from `logical` on (`delta::WALL_RANGE.end..`). A slow line's rows are one author's run,
//! written moments apart: the 48 bytes put back are 4 % of what each
//! costs after compression.
//!
//! To a peer that also announced "zstd-context", a frame may refer to the
//! tail of the batch before it on the link (`Context`), as zstd's prefix:
//! a slow line's batch holds a few dozen records, and the fields and
//! phrases they share with the records just sent are then not paid for
//! again. Both ends keep that tail by the same rule, in stream order, and
//! the frame says how many bytes of it it used, so a mismatch is refused
//! rather than decoded into other bytes.

use crate::core::delta::{hash_of, AUTHOR_RANGE, PREV_RANGE, SEQ_RANGE, WALL_RANGE};
use crate::core::SignedDelta;

/// The feature a node announces in its digests when it reads these.
pub const FEATURE: &str = "zstd";
/// The feature a node announces in its first digest when it reads frames
/// that refer to the batch before them.
pub const CONTEXT_FEATURE: &str = "zstd-context";
/// The feature a node announces in its first digest when it reads entries
/// of kind `2` (a delta that follows the entry before it).
pub const FOLLOWS_FEATURE: &str = "zstd-follows";

/// A raw batch this large or smaller is a slow line's (the pace sizes a
/// batch by what the line moves): it gets level 9, and its tail
/// becomes the context of the next frame. A fast link's batches are large
/// enough to compress on their own, and keep nothing.
const SMALL_RAW: usize = 256 * 1024;
/// Bytes of the previous small batch a frame may refer to: with these
/// rows, 32 KiB saves what 64 KiB does, and it is what each end of a link
/// holds for it.
const CONTEXT_BYTES: usize = 32 * 1024;

const WHOLE: u8 = 0;
const NO_PREV: u8 = 1;
const FOLLOWS: u8 = 2;
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
/// packed at level 9, and kept as the next frame's context.
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

/// What the peer reads beyond plain frames.
#[derive(Debug, Default)]
pub struct Terms<'a> {
    /// Frames after their context ("zstd-context"): the link's.
    pub context: Option<&'a mut Context>,
    /// Entries of kind `2` ("zstd-follows").
    pub follows: bool,
}

/// `deltas` as one frame, in the terms the peer reads, updating the
/// link's context. Small batches (a slow line's) get level 9: there the
/// bytes cost more than the CPU; large ones (a fast link's) the quick one.
/// Not 19: on 40 KiB batches of JSON rows it took 17x the CPU of 9 (12.6
/// against 0.75 ms) and a larger context for 2 % fewer bytes, and a hub
/// packs for every slow office it serves.
pub fn pack(deltas: &[SignedDelta], terms: Terms<'_>) -> Packed {
    let mut raw = Vec::with_capacity(deltas.iter().map(|d| d.as_bytes().len() + 5).sum());
    let mut before: Option<&SignedDelta> = None;
    for d in deltas {
        entry(&mut raw, before, d, terms.follows);
        before = Some(d);
    }
    let level = if raw.len() <= SMALL_RAW { 9 } else { 1 };
    let (frame, context_len) = match terms.context {
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

/// `d` as the entry after `before`'s, appended to `raw`.
fn entry(raw: &mut Vec<u8>, before: Option<&SignedDelta>, d: &SignedDelta, follows: bool) {
    let bytes = d.as_bytes();
    let Some(b) = before
        .filter(|b| b.author() == d.author() && b.seq() + 1 == d.seq() && b.hash() == d.prev())
    else {
        raw.push(WHOLE);
        raw.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        raw.extend_from_slice(bytes);
        return;
    };
    if follows && b.as_bytes()[0] == bytes[0] {
        let mut body = Vec::with_capacity(10 + bytes.len() - WALL_RANGE.end);
        let step = d.hlc().wall_ms.wrapping_sub(b.hlc().wall_ms) as i64;
        leb128(&mut body, ((step << 1) ^ (step >> 63)) as u64);
        body.extend_from_slice(&bytes[WALL_RANGE.end..]);
        raw.push(FOLLOWS);
        raw.extend_from_slice(&(body.len() as u32).to_be_bytes());
        raw.extend_from_slice(&body);
    } else {
        raw.push(NO_PREV);
        raw.extend_from_slice(&((bytes.len() - PREV_LEN) as u32).to_be_bytes());
        raw.extend_from_slice(&bytes[..PREV_RANGE.start]);
        raw.extend_from_slice(&bytes[PREV_RANGE.end..]);
    }
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A LEB128 number at the start of `bytes`, and how many bytes it took;
/// `None` if it is cut short or longer than a `u64`.
fn read_leb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        n |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// The delta that `body`, an entry of kind `2`, makes after `before`.
fn follower(before: &[u8], body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let prev = hash_of(before).ok_or("no delta before it to follow")?;
    let (zigzag, used) = read_leb128(body).ok_or("a malformed wall_ms step")?;
    let step = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
    let field = |r: std::ops::Range<usize>| u64::from_be_bytes(before[r].try_into().expect("8"));
    let seq = field(SEQ_RANGE)
        .checked_add(1)
        .ok_or("a seq past the last")?;
    let wall = field(WALL_RANGE).wrapping_add(step as u64);
    let rest = &body[used..];
    let mut d = Vec::with_capacity(WALL_RANGE.end + rest.len());
    d.push(before[0]);
    d.extend_from_slice(&before[AUTHOR_RANGE]);
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&prev.0);
    d.extend_from_slice(&wall.to_be_bytes());
    d.extend_from_slice(rest);
    Ok(d)
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
            FOLLOWS => {
                let before = out.last().ok_or(bad("no delta before it to follow"))?;
                follower(before, body).map_err(bad)?
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

    fn chained(c: &mut Context) -> Terms<'_> {
        Terms {
            context: Some(c),
            follows: false,
        }
    }

    const FOLLOWING: Terms<'static> = Terms {
        context: None,
        follows: true,
    };

    /// The kinds of a frame's entries (one packed without context).
    fn kinds(p: &Packed) -> Vec<u8> {
        let raw = zstd::bulk::decompress(&p.frame, p.raw_len as usize).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            out.push(raw[at]);
            let len = u32::from_be_bytes(raw[at + 1..at + 5].try_into().unwrap());
            at += ENTRY_HEAD + len as usize;
        }
        out
    }

    /// `p` unpacked by a receiver holding `context`.
    fn unpack_with(p: &Packed, context: &mut Context) -> Result<Vec<Vec<u8>>, PackError> {
        let lens = (p.raw_len as usize, p.context_len as usize);
        unpack(&p.frame, lens, context, 1 << 20, 1000)
    }

    #[test]
    fn unpacks_the_exact_signed_bytes_and_saves_on_records() {
        let ds = batch();
        let p = pack(&ds, Terms::default());
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

    #[test]
    fn entries_that_follow_leave_out_author_seq_and_time_and_come_back_exact() {
        let ds = batch();
        let (plain, following) = (pack(&ds, Terms::default()), pack(&ds, FOLLOWING));
        assert_eq!(
            unpack_with(&following, &mut Context::default()).unwrap(),
            bytes_of(&ds)
        );
        // 20 rows of one author, another's three times between: 16 follow.
        let count = |p: &Packed, k| kinds(p).iter().filter(|&&x| x == k).count();
        assert_eq!((count(&plain, NO_PREV), count(&plain, FOLLOWS)), (16, 0));
        assert_eq!(
            (count(&following, NO_PREV), count(&following, FOLLOWS)),
            (0, 16)
        );
        assert!(following.raw_len + 16 * 40 < plain.raw_len);
        assert!(following.frame.len() < plain.frame.len());
        // A step back in time, and one of the largest either way.
        let mut a = Author::region(3, "ml");
        let odd: Vec<_> = [5_000, 4_000, u64::MAX / 2, 1]
            .iter()
            .enumerate()
            .map(|(i, &ms)| a.put(&format!("t/{i}"), b"v", ms))
            .collect();
        let p = pack(&odd, FOLLOWING);
        assert_eq!(kinds(&p), [WHOLE, FOLLOWS, FOLLOWS, FOLLOWS]);
        assert_eq!(
            unpack_with(&p, &mut Context::default()).unwrap(),
            bytes_of(&odd)
        );
    }

    #[test]
    fn entries_that_cannot_follow_are_refused() {
        let d = batch().remove(0);
        let frame_of = |entries: &[(u8, &[u8])]| {
            let mut raw = Vec::new();
            for (kind, body) in entries {
                raw.push(*kind);
                raw.extend_from_slice(&(body.len() as u32).to_be_bytes());
                raw.extend_from_slice(body);
            }
            (zstd::bulk::compress(&raw, 1).unwrap(), raw.len())
        };
        let refused_at = |entries: &[(u8, &[u8])], index| {
            let (frame, len) = frame_of(entries);
            let got = unpack(&frame, (len, 0), &mut Context::default(), 1 << 20, 10);
            let got = got.unwrap_err();
            assert!(
                matches!(got, PackError::Entry { index: i, .. } if i == index),
                "{got}"
            );
        };
        let rest = &d.as_bytes()[WALL_RANGE.end..];
        let mut step = vec![0x02];
        step.extend_from_slice(rest);
        // Nothing before it; a varint cut short or too long.
        refused_at(&[(FOLLOWS, &step)], 0);
        refused_at(&[(WHOLE, d.as_bytes()), (FOLLOWS, &[0x80])], 1);
        refused_at(&[(WHOLE, d.as_bytes()), (FOLLOWS, &[0xff; 11])], 1);
        refused_at(
            &[
                (WHOLE, d.as_bytes()),
                (
                    FOLLOWS,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                ),
            ],
            1,
        );
        // After the last seq there is none.
        let mut last = d.as_bytes().to_vec();
        last[SEQ_RANGE].fill(0xff);
        refused_at(&[(WHOLE, &last), (FOLLOWS, &step)], 1);
        // The same entries after an honest one unpack (to a delta whose
        // signature, with its wall_ms moved, admission will refuse).
        let (frame, len) = frame_of(&[(WHOLE, d.as_bytes()), (FOLLOWS, &step)]);
        let out = unpack(&frame, (len, 0), &mut Context::default(), 1 << 20, 10).unwrap();
        assert_eq!(out[1].len(), d.as_bytes().len());
        assert_eq!(&out[1][SEQ_RANGE], &(d.seq() + 1).to_be_bytes());
        assert_eq!(&out[1][PREV_RANGE], &d.hash().0);
        assert_eq!(&out[1][WALL_RANGE], &(d.hlc().wall_ms + 1).to_be_bytes());
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
        let p1 = pack(&first, chained(&mut sent));
        assert_eq!(p1.context_len, 0, "nothing before the first");
        assert_eq!(unpack_with(&p1, &mut received).unwrap(), bytes_of(&first));
        let alone = pack(&second, Terms::default());
        let p2 = pack(&second, chained(&mut sent));
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
        a_lying_frame_in(Terms::default());
        a_lying_frame_in(FOLLOWING);
    }

    fn a_lying_frame_in(terms: Terms<'_>) {
        let ds = batch();
        let Packed { frame, raw_len, .. } = pack(&ds, terms);
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

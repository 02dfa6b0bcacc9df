//! The record index: each record's winning delta, kept in *buckets* of
//! up to [`BUCKET_MAX`] records in key order, one entry per bucket.
//!
//! Why buckets: sled keeps about 190 bytes of memory for every page it
//! knows, and a leaf page holds at most 16 entries. One entry per record
//! made a store's resident memory grow by about 20 bytes per record (290
//! MiB at 10,000,000 records, nearly all of it record-index pages). A
//! bucket of 32 records is one entry, so the index's pages are about 30
//! times fewer.
//!
//! A bucket's key is its *separator*: `b` ‖ a record key at or below every
//! key in it. A record lives in the bucket with the greatest separator at
//! or below its key. Separators never move: a bucket that grows past
//! [`BUCKET_MAX`] is cut into even pieces, each new piece keyed by its
//! first record, and a bucket left empty is removed (its range falls to the
//! bucket before it, which holds no record of that range).
//!
//! A bucket's value (framed like every value): its authors once each,
//! then its records, each key stored as what it shares with the key before
//! it and the rest, the numbers as varints.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::codec::{frame, unframe, CodecError};
use super::error::corrupt;
use super::kv::{prefix_bounds, Batch, Kv};
use super::StoreError;
use crate::core::{Hlc, NodeId, RecordRef};

/// The key prefix of a bucket.
pub(super) const BUCKET: u8 = b'b';
/// Most records in one bucket once a commit is written. Small enough that
/// rewriting a bucket for one changed record stays cheap (about 0.8 KB),
/// large enough that sled's per-page cost is spread over many records.
pub(super) const BUCKET_MAX: usize = 32;

pub(super) type Records = Vec<(String, RecordRef)>;

/// A run of the key space with the records in it: a bucket and where the
/// next one starts, or, below every bucket, no separator and no records.
#[derive(Debug, Clone)]
pub(super) struct Span {
    /// The bucket's separator; `None` below every bucket.
    sep: Option<Vec<u8>>,
    /// The next bucket's separator (exclusive); `None`: none after.
    end: Option<Vec<u8>>,
    records: Records,
}

impl Span {
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.sep.as_deref().is_none_or(|s| key >= s) && self.end.as_deref().is_none_or(|e| key < e)
    }

    pub(super) fn get(&self, key: &str) -> Option<RecordRef> {
        (self.records.binary_search_by(|(k, _)| k.as_str().cmp(key)))
            .ok()
            .map(|i| self.records[i].1)
    }
}

fn bucket_key(sep: &[u8]) -> Vec<u8> {
    super::key(BUCKET, sep)
}

/// The span that holds `key`: one seek back for its bucket, one forward
/// for where the next begins.
pub(super) fn locate(kv: &dyn Kv, key: &[u8]) -> Result<Span, StoreError> {
    let (all_from, all_to) = prefix_bounds(&[BUCKET]);
    let at = bucket_key(key);
    let below = kv.scan(all_from, Bound::Included(at.clone()), true).next();
    let (sep, records) = match below.transpose()? {
        Some((k, v)) => {
            let sep = k[1..].to_vec();
            let records = decode(&k, &v, &sep)?;
            (Some(sep), records)
        }
        None => (None, Vec::new()),
    };
    let above = kv.scan(Bound::Excluded(at), all_to, false).next();
    let end = above.transpose()?.map(|(k, _)| k[1..].to_vec());
    Ok(Span { sep, end, records })
}

/// Up to `limit` records whose keys start with `prefix`, from `start` on.
pub(super) fn page(
    kv: &dyn Kv,
    prefix: &str,
    start: &[u8],
    limit: usize,
) -> Result<Records, StoreError> {
    let first = locate(kv, start)?;
    let from = first.sep.unwrap_or_else(|| start.to_vec());
    let (_, to) = prefix_bounds(&[BUCKET]);
    let mut out = Vec::new();
    for item in kv.scan(Bound::Included(bucket_key(&from)), to, false) {
        let (k, v) = item?;
        for (name, r) in decode(&k, &v, &k[1..])? {
            if name.as_bytes() < start {
                continue;
            }
            if !name.starts_with(prefix) || out.len() >= limit {
                return Ok(out);
            }
            out.push((name, r));
        }
    }
    Ok(out)
}

/// Writes a commit's record changes into `batch`: each bucket they touch
/// is read once and written once. A key both removed and set ends set.
pub(super) fn write(
    kv: &dyn Kv,
    batch: &mut Batch,
    set: &[(String, RecordRef)],
    removed: &[String],
) -> Result<(), StoreError> {
    let mut ops: BTreeMap<&str, Option<RecordRef>> = BTreeMap::new();
    for k in removed {
        ops.insert(k, None);
    }
    for (k, r) in set {
        ops.insert(k, Some(*r));
    }
    let mut span: Option<Span> = None;
    for (k, op) in ops {
        if !span.as_ref().is_some_and(|s| s.contains(k.as_bytes())) {
            if let Some(done) = span.take() {
                put_span(batch, done);
            }
            span = Some(locate(kv, k.as_bytes())?);
        }
        let s = span.as_mut().expect("located above");
        let at = s.records.binary_search_by(|(n, _)| n.as_str().cmp(k));
        match (at, op) {
            (Ok(i), Some(r)) => s.records[i].1 = r,
            (Err(i), Some(r)) => s.records.insert(i, (k.to_owned(), r)),
            (Ok(i), None) => {
                s.records.remove(i);
            }
            (Err(_), None) => {}
        }
    }
    if let Some(done) = span {
        put_span(batch, done);
    }
    Ok(())
}

/// A span's bucket as the commit leaves it: removed if empty, cut into
/// even pieces if over [`BUCKET_MAX`].
fn put_span(batch: &mut Batch, span: Span) {
    let Span { sep, records, .. } = span;
    if records.is_empty() {
        if let Some(sep) = sep {
            batch.remove(bucket_key(&sep));
        }
        return;
    }
    let sep = sep.unwrap_or_else(|| records[0].0.as_bytes().to_vec());
    for (i, piece) in pieces(&records).into_iter().enumerate() {
        let key = if i == 0 {
            bucket_key(&sep)
        } else {
            bucket_key(piece[0].0.as_bytes())
        };
        batch.insert(key, frame(&encode(piece)));
    }
}

/// Writes `records` (in key order, every key above every bucket's) as new
/// buckets after the last.
pub(super) fn append(batch: &mut Batch, records: Records) {
    put_span(
        batch,
        Span {
            sep: None,
            end: None,
            records,
        },
    );
}

/// `records` cut into the fewest even pieces of at most [`BUCKET_MAX`].
fn pieces(records: &[(String, RecordRef)]) -> Vec<&[(String, RecordRef)]> {
    let n = records.len().div_ceil(BUCKET_MAX).max(1);
    let (size, extra) = (records.len() / n, records.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut rest = records;
    for i in 0..n {
        let (piece, tail) = rest.split_at(size + usize::from(i < extra));
        out.push(piece);
        rest = tail;
    }
    out
}

/// Every record, bucket by bucket, for counting.
pub(super) fn count(kv: &dyn Kv) -> Result<u64, StoreError> {
    let (from, to) = prefix_bounds(&[BUCKET]);
    let mut n = 0u64;
    for item in kv.scan(from, to, false) {
        let (k, v) = item?;
        n += decode(&k, &v, &k[1..])?.len() as u64;
    }
    Ok(n)
}

fn encode(records: &[(String, RecordRef)]) -> Vec<u8> {
    let mut authors: Vec<NodeId> = Vec::new();
    let mut body = Vec::with_capacity(records.len() * 24);
    put_varint(&mut body, records.len() as u64);
    let mut prev: &[u8] = &[];
    for (k, r) in records {
        let k = k.as_bytes();
        let shared = prev.iter().zip(k).take_while(|(a, b)| a == b).count();
        put_varint(&mut body, shared as u64);
        put_varint(&mut body, (k.len() - shared) as u64);
        body.extend_from_slice(&k[shared..]);
        put_varint(&mut body, r.hlc.wall_ms);
        put_varint(&mut body, u64::from(r.hlc.logical));
        let a = match authors.iter().position(|a| *a == r.author) {
            Some(i) => i,
            None => {
                authors.push(r.author);
                authors.len() - 1
            }
        };
        put_varint(&mut body, a as u64);
        put_varint(&mut body, r.seq);
        body.push(u8::from(r.deleted));
        prev = k;
    }
    let mut out = Vec::with_capacity(9 + authors.len() * 32 + body.len());
    put_varint(&mut out, authors.len() as u64);
    for a in &authors {
        out.extend_from_slice(&a.0);
    }
    out.extend_from_slice(&body);
    out
}

/// A bucket's records, checked: keys UTF-8, strictly increasing, none
/// below the separator. `key` names the entry in an error.
fn decode(key: &[u8], stored: &[u8], sep: &[u8]) -> Result<Records, StoreError> {
    let payload = unframe(stored).map_err(|e| corrupt(key, e))?;
    decode_payload(payload, sep).map_err(|e| corrupt(key, e))
}

fn decode_payload(payload: &[u8], sep: &[u8]) -> Result<Records, CodecError> {
    let mut c = Reader(payload);
    let n_authors = c.len()?;
    let authors: Vec<NodeId> = (0..n_authors)
        .map(|_| Ok(NodeId(c.take(32)?.try_into().expect("32 bytes"))))
        .collect::<Result<_, CodecError>>()?;
    let n = c.len()?;
    let mut out: Records = Vec::with_capacity(n);
    let mut key: Vec<u8> = Vec::new();
    for _ in 0..n {
        let shared = usize::try_from(c.varint()?).map_err(|_| CodecError::Shape)?;
        let rest = c.len()?;
        if shared > key.len() {
            return Err(CodecError::Shape);
        }
        key.truncate(shared);
        key.extend_from_slice(c.take(rest)?);
        let wall_ms = c.varint()?;
        let logical = u32::try_from(c.varint()?).map_err(|_| CodecError::Shape)?;
        let a = usize::try_from(c.varint()?).map_err(|_| CodecError::Shape)?;
        let author = *authors.get(a).ok_or(CodecError::Shape)?;
        let seq = c.varint()?;
        let deleted = match c.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(CodecError::Shape),
        };
        let ordered = match out.last() {
            Some((p, _)) => p.as_bytes() < key.as_slice(),
            None => key.as_slice() >= sep,
        };
        if !ordered {
            return Err(CodecError::Shape);
        }
        let name = String::from_utf8(key.clone()).map_err(|_| CodecError::Shape)?;
        let hlc = Hlc::new(wall_ms, logical);
        out.push((
            name,
            RecordRef {
                hlc,
                author,
                seq,
                deleted,
            },
        ));
    }
    if !c.0.is_empty() {
        return Err(CodecError::Shape);
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let (a, b) = self.0.split_at_checked(n).ok_or(CodecError::Shape)?;
        self.0 = b;
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Shape)
    }

    /// A count or length, which cannot exceed the bytes left.
    fn len(&mut self) -> Result<usize, CodecError> {
        let v = self.varint()?;
        (v <= self.0.len() as u64)
            .then_some(v as usize)
            .ok_or(CodecError::Shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;
    use proptest::prelude::*;

    fn rec(n: u64, author: u8) -> RecordRef {
        RecordRef {
            hlc: Hlc::new(1_700_000_000_000 + n, (n % 3) as u32),
            author: NodeId([author; 32]),
            seq: n,
            deleted: n % 5 == 0,
        }
    }

    fn commit(kv: &MemKv, set: &[(String, RecordRef)], removed: &[String]) {
        let mut batch = Batch::default();
        write(kv, &mut batch, set, removed).unwrap();
        kv.apply(batch).unwrap();
    }

    /// Every bucket, as (separator, records).
    fn buckets(kv: &MemKv) -> Vec<(Vec<u8>, Records)> {
        let (from, to) = prefix_bounds(&[BUCKET]);
        kv.scan(from, to, false)
            .map(|e| {
                let (k, v) = e.unwrap();
                let records = decode(&k, &v, &k[1..]).unwrap();
                (k[1..].to_vec(), records)
            })
            .collect()
    }

    #[test]
    fn a_bucket_round_trips_and_damage_is_an_error() {
        let records: Records = ["fr/a", "fr/ab", "fr/b", "hq/x"]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), rec(i as u64 * 1000, i as u8 % 2)))
            .collect();
        let bytes = encode(&records);
        assert_eq!(decode_payload(&bytes, b"fr/").unwrap(), records);
        assert!(
            decode_payload(&bytes, b"fr/b").is_err(),
            "a key below the separator"
        );
        for cut in 0..bytes.len() {
            assert!(decode_payload(&bytes[..cut], b"").is_err(), "cut at {cut}");
        }
        let framed = frame(&bytes);
        for i in 0..framed.len() {
            let mut bad = framed.clone();
            bad[i] ^= 0x10;
            assert!(decode(b"bfr/", &bad, b"fr/").is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_growing_bucket_is_cut_into_even_pieces_and_an_empty_one_goes() {
        let kv = MemKv::new();
        let set: Records = (0..100u64)
            .map(|i| (format!("k{i:03}"), rec(i, 1)))
            .collect();
        commit(&kv, &set, &[]);
        let sizes: Vec<usize> = buckets(&kv).iter().map(|(_, r)| r.len()).collect();
        assert_eq!(sizes, vec![25, 25, 25, 25]);
        let removed: Vec<String> = (0..25u64).map(|i| format!("k{i:03}")).collect();
        commit(&kv, &[], &removed);
        assert_eq!(buckets(&kv).len(), 3);
        assert_eq!(count(&kv).unwrap(), 75);
        // Below every bucket now: a new bucket, keyed by its record.
        commit(&kv, &[("a".into(), rec(7, 2))], &[]);
        assert_eq!(buckets(&kv)[0].0, b"a".to_vec());
        assert_eq!(locate(&kv, b"a").unwrap().get("a"), Some(rec(7, 2)));
        assert_eq!(locate(&kv, b"k000").unwrap().get("k000"), None);
    }

    proptest! {
        /// Against a map: after any run of commits every key reads as the
        /// map says, a page lists the map in order, and no bucket is empty
        /// or over the bound.
        #[test]
        fn the_index_reads_as_a_map_would(
            commits in prop::collection::vec(
                prop::collection::vec(("[a-c]{0,4}", prop::option::of(0u64..1000)), 0..80),
                1..12,
            )
        ) {
            let kv = MemKv::new();
            let mut model: BTreeMap<String, RecordRef> = BTreeMap::new();
            for ops in commits {
                let mut set = BTreeMap::new();
                let mut removed = Vec::new();
                for (k, op) in ops {
                    match op {
                        Some(n) => {
                            set.insert(k, rec(n, (n % 4) as u8));
                        }
                        None => {
                            set.remove(&k);
                            removed.push(k);
                        }
                    }
                }
                for k in &removed {
                    model.remove(k);
                }
                model.extend(set.clone());
                let set: Records = set.into_iter().collect();
                commit(&kv, &set, &removed);

                let all = buckets(&kv);
                for (_, r) in &all {
                    prop_assert!(!r.is_empty() && r.len() <= BUCKET_MAX, "{}", r.len());
                }
                let listed: Records = all.into_iter().flat_map(|(_, r)| r).collect();
                let want: Records = model.clone().into_iter().collect();
                prop_assert_eq!(&listed, &want);
                prop_assert_eq!(page(&kv, "", b"", usize::MAX).unwrap(), want);
                prop_assert_eq!(count(&kv).unwrap(), model.len() as u64);
                let b: Records = model.range("b".to_string().."c".to_string())
                    .take(5).map(|(k, r)| (k.clone(), *r)).collect();
                prop_assert_eq!(page(&kv, "b", b"b", 5).unwrap(), b);
                for k in ["", "a", "ab", "abc", "b", "bb", "c", "cccc", "d"] {
                    prop_assert_eq!(locate(&kv, k.as_bytes()).unwrap().get(k), model.get(k).copied());
                }
            }
        }
    }
}

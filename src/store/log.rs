//! The delta log: every author's deltas by seq, exactly as signed.
//!
//! An author's newest deltas (its *tail*) are entries of their own. Every
//! [`CHUNK`] of them, once complete (seqs `n·CHUNK+1 ..= n·CHUNK+CHUNK`),
//! are *sealed* into one entry in the same atomic batch as the delta that
//! completes them: the deltas one after another (each u32 length ‖ bytes),
//! compressed with zstd. A chunk of large deltas (over [`SEAL_BYTES_MAX`]
//! together) stays in the tail: sled keeps large values well enough, and
//! reading one delta must not mean decompressing megabytes. A retraction
//! that moves a head back into a sealed chunk unseals it. Reads look in
//! the tail first, then in the chunk.
//!
//! Sealing is what keeps the store near the deltas' own size on disk:
//! sled stores small entries at more than twice their size, and the
//! deltas of one author compress well together (one author, similar keys,
//! values with a shared structure) though not one by one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::codec::{frame, unframe, CodecError};
use super::kv::{Batch, Kv};
use super::{corrupt, StoreError};
use crate::core::{NodeId, SignedDelta};

/// Deltas per sealed chunk. Part of the layout: changing it is a new
/// layout version. Small enough that a sled leaf (it splits past 16
/// entries) of sealed chunks stays under the 128 KiB beyond which sled
/// writes a page as a file of its own.
pub(super) const CHUNK: u64 = 16;
/// zstd level: the fastest, which loses little at this size.
const LEVEL: i32 = 1;
/// Decoded chunks kept for reads (a `List` of one region's records reads
/// the same chunk again and again): at most this many, 16 KiB at most each.
const CACHED_MAX: usize = 64;
/// A complete chunk is sealed only if its deltas take at most this many
/// bytes together: small deltas, which is what compresses and what sled
/// stores badly one by one. Sealed, such a chunk takes well under 8 KiB.
pub(super) const SEAL_BYTES_MAX: usize = 16 * 1024;
/// The largest chunk body accepted when decompressing.
const CHUNK_BYTES_MAX: usize = SEAL_BYTES_MAX + CHUNK as usize * 4;

pub(super) const TAIL: u8 = b'l';
pub(super) const SEALED: u8 = b'c';

/// `l` ‖ author ‖ seq: one delta of an author's tail.
pub(super) fn tail_key(author: &NodeId, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(TAIL);
    k.extend_from_slice(&author.0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `c` ‖ author ‖ chunk number: the sealed deltas `n·CHUNK+1 ..= n·CHUNK+CHUNK`.
pub(super) fn chunk_key(author: &NodeId, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(SEALED);
    k.extend_from_slice(&author.0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The chunk that holds `seq` (from 1).
pub(super) fn chunk_of(seq: u64) -> u64 {
    (seq - 1) / CHUNK
}

/// The last seq of the last complete chunk when an author's head is `head`.
pub(super) fn complete_through(head: u64) -> u64 {
    head / CHUNK * CHUNK
}

/// A sealed chunk, decoded.
pub(super) type Chunk = Arc<Vec<SignedDelta>>;

/// Compression, decompression and the cache of decoded chunks (most
/// recently used first).
pub(super) struct Chunks {
    compressor: Mutex<zstd::bulk::Compressor<'static>>,
    decompressor: Mutex<zstd::bulk::Decompressor<'static>>,
    cache: Mutex<VecDeque<((NodeId, u64), Chunk)>>,
}

impl Chunks {
    pub(super) fn new() -> Chunks {
        Chunks {
            compressor: Mutex::new(zstd::bulk::Compressor::new(LEVEL).expect("zstd level 1")),
            decompressor: Mutex::new(zstd::bulk::Decompressor::new().expect("a zstd context")),
            cache: Mutex::new(VecDeque::new()),
        }
    }

    /// The stored form of a chunk: framed, compressed.
    pub(super) fn encode(&self, deltas: &[&[u8]]) -> Result<Vec<u8>, StoreError> {
        let mut body = Vec::with_capacity(deltas.iter().map(|d| d.len() + 4).sum());
        for d in deltas {
            body.extend_from_slice(&(d.len() as u32).to_be_bytes());
            body.extend_from_slice(d);
        }
        let packed = (self.compressor.lock().expect("compressor poisoned"))
            .compress(&body)
            .map_err(|e| StoreError::Disk(format!("compressing a chunk: {e}")))?;
        let mut payload = Vec::with_capacity(4 + packed.len());
        payload.extend_from_slice(&(body.len() as u32).to_be_bytes());
        payload.extend_from_slice(&packed);
        Ok(frame(&payload))
    }

    fn decode(&self, key: &[u8], stored: &[u8]) -> Result<Vec<SignedDelta>, StoreError> {
        let payload = unframe(stored).map_err(|e| corrupt(key, e))?;
        let (len, packed) = payload
            .split_at_checked(4)
            .ok_or_else(|| corrupt(key, CodecError::Shape))?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > CHUNK_BYTES_MAX {
            return Err(corrupt(key, CodecError::Shape));
        }
        let body = (self.decompressor.lock().expect("decompressor poisoned"))
            .decompress(packed, len)
            .map_err(|_| corrupt(key, CodecError::Shape))?;
        let mut rest = body.as_slice();
        let mut out = Vec::with_capacity(CHUNK as usize);
        while !rest.is_empty() {
            let (n, after) = rest
                .split_at_checked(4)
                .ok_or_else(|| corrupt(key, CodecError::Shape))?;
            let n = u32::from_be_bytes(n.try_into().expect("4 bytes")) as usize;
            let (d, after) = after
                .split_at_checked(n)
                .ok_or_else(|| corrupt(key, CodecError::Shape))?;
            // The checksum passed, so a malformed delta means a bug or a
            // hand-edited store: reported, never served.
            out.push(SignedDelta::decode(d).map_err(|_| corrupt(key, CodecError::Shape))?);
            rest = after;
        }
        if out.len() != CHUNK as usize {
            return Err(corrupt(key, CodecError::Shape));
        }
        Ok(out)
    }

    /// Chunk `n` of `author`, decoded, if it is sealed.
    pub(super) fn get(
        &self,
        kv: &dyn Kv,
        author: &NodeId,
        n: u64,
    ) -> Result<Option<Chunk>, StoreError> {
        let id = (*author, n);
        {
            let mut cache = self.cache.lock().expect("chunk cache poisoned");
            if let Some(i) = cache.iter().position(|(k, _)| *k == id) {
                let hit = cache.remove(i).expect("found");
                let chunk = hit.1.clone();
                cache.push_front(hit);
                return Ok(Some(chunk));
            }
        }
        let key = chunk_key(author, n);
        let Some(stored) = kv.get(&key)? else {
            return Ok(None);
        };
        let chunk = Arc::new(self.decode(&key, &stored)?);
        let first = n * CHUNK + 1;
        if chunk
            .iter()
            .enumerate()
            .any(|(i, d)| d.author() != *author || d.seq() != first + i as u64)
        {
            return Err(corrupt(&key, CodecError::Shape));
        }
        let mut cache = self.cache.lock().expect("chunk cache poisoned");
        cache.push_front((id, chunk.clone()));
        cache.truncate(CACHED_MAX);
        Ok(Some(chunk))
    }

    /// Forgets every decoded chunk: after a commit removed some.
    pub(super) fn forget(&self) {
        self.cache.lock().expect("chunk cache poisoned").clear();
    }
}

/// Adds to `batch` what appending `deltas` (one author's, contiguous from
/// its old head + 1) changes: a sealed chunk for each chunk they complete
/// (replacing that chunk's tail entries), tail entries for the rest.
pub(super) fn append(
    kv: &dyn Kv,
    chunks: &Chunks,
    batch: &mut Batch,
    deltas: &[&SignedDelta],
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (deltas.first(), deltas.last()) else {
        return Ok(());
    };
    let author = first.author();
    let open_from = complete_through(first.seq() - 1) + 1;
    // The chunk `first` falls in, if the append completes it, takes its
    // earlier deltas from the tail.
    let mut held: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if complete_through(last.seq()) >= open_from && first.seq() > open_from {
        let (from, to) = (
            tail_key(&author, open_from),
            tail_key(&author, first.seq() - 1),
        );
        for item in kv.scan(
            std::ops::Bound::Included(from),
            std::ops::Bound::Included(to),
            false,
        ) {
            held.push(item?);
        }
        if held.len() as u64 != first.seq() - open_from {
            return Err(StoreError::Disk(format!(
                "{}'s tail before seq {} is incomplete: {} of {} entries",
                author.short(),
                first.seq(),
                held.len(),
                first.seq() - open_from
            )));
        }
    }
    let mut chunk: Vec<&[u8]> = Vec::with_capacity(CHUNK as usize);
    let mut new_in_chunk: Vec<&SignedDelta> = Vec::new();
    for (k, v) in &held {
        chunk.push(unframe(v).map_err(|e| corrupt(k, e))?);
    }
    for d in deltas {
        chunk.push(d.as_bytes());
        new_in_chunk.push(d);
        if d.seq() % CHUNK != 0 {
            continue;
        }
        let bytes: usize = chunk.iter().map(|c| c.len()).sum();
        if bytes <= SEAL_BYTES_MAX {
            batch.insert(
                chunk_key(&author, chunk_of(d.seq())),
                chunks.encode(&chunk)?,
            );
            if chunk.len() > new_in_chunk.len() {
                for (k, _) in &held {
                    batch.remove(k.clone());
                }
            }
        } else {
            for n in &new_in_chunk {
                batch.insert(tail_key(&author, n.seq()), frame(n.as_bytes()));
            }
        }
        chunk.clear();
        new_in_chunk.clear();
    }
    for n in new_in_chunk {
        batch.insert(tail_key(&author, n.seq()), frame(n.as_bytes()));
    }
    Ok(())
}

/// Up to `max_count` of `author`'s deltas from `first` to `last`, in seq
/// order, stopping once `max_bytes` is reached (always at least one if
/// any): from sealed chunks where they are sealed, from the tail where not.
pub(super) fn read(
    kv: &dyn Kv,
    chunks: &Chunks,
    author: &NodeId,
    (first, last): (u64, u64),
    (max_count, max_bytes): (usize, usize),
) -> Result<Vec<SignedDelta>, StoreError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut seq = first;
    let full = |out: &Vec<SignedDelta>, bytes: usize| out.len() >= max_count || bytes >= max_bytes;
    while seq <= last && max_count > 0 {
        let n = chunk_of(seq);
        let end = ((n + 1) * CHUNK).min(last);
        match chunks.get(kv, author, n)? {
            Some(chunk) => {
                for d in &chunk[(seq - n * CHUNK - 1) as usize..(end - n * CHUNK) as usize] {
                    bytes += d.as_bytes().len();
                    out.push(d.clone());
                    if full(&out, bytes) {
                        return Ok(out);
                    }
                }
            }
            None => {
                let (from, to) = (tail_key(author, seq), tail_key(author, end));
                for item in kv.scan(
                    std::ops::Bound::Included(from),
                    std::ops::Bound::Included(to),
                    false,
                ) {
                    let (k, v) = item?;
                    let d = decode_tail(&k, &v)?;
                    bytes += d.as_bytes().len();
                    out.push(d);
                    if full(&out, bytes) {
                        return Ok(out);
                    }
                }
            }
        }
        seq = end + 1;
    }
    Ok(out)
}

/// One tail entry, checked.
pub(super) fn decode_tail(key: &[u8], stored: &[u8]) -> Result<SignedDelta, StoreError> {
    let payload = unframe(stored).map_err(|e| corrupt(key, e))?;
    // The checksum passed, so a decode failure means a bug or a
    // hand-edited store: report it, never serve it.
    SignedDelta::decode(payload).map_err(|_| corrupt(key, CodecError::Shape))
}

/// One delta of `author`'s log.
pub(super) fn get(
    kv: &dyn Kv,
    chunks: &Chunks,
    author: &NodeId,
    seq: u64,
) -> Result<Option<SignedDelta>, StoreError> {
    if seq == 0 {
        return Ok(None);
    }
    let key = tail_key(author, seq);
    if let Some(v) = kv.get(&key)? {
        return decode_tail(&key, &v).map(Some);
    }
    let Some(chunk) = chunks.get(kv, author, chunk_of(seq))? else {
        return Ok(None);
    };
    Ok(Some(chunk[((seq - 1) % CHUNK) as usize].clone()))
}

/// Adds to `batch` what retracting `author`'s deltas from `first` on
/// changes: their tail entries and chunks go, and the chunk holding
/// `first - 1`, the new head, is unsealed back into tail entries.
pub(super) fn retract(
    kv: &dyn Kv,
    chunks: &Chunks,
    batch: &mut Batch,
    author: &NodeId,
    first: u64,
) -> Result<(), StoreError> {
    use std::ops::Bound;
    let (from, to) = (tail_key(author, first), tail_key(author, u64::MAX));
    for item in kv.scan(Bound::Included(from), Bound::Included(to), false) {
        batch.remove(item?.0);
    }
    let keep = first - 1;
    let (from, to) = (
        chunk_key(author, chunk_of(first)),
        chunk_key(author, u64::MAX),
    );
    for item in kv.scan(Bound::Included(from), Bound::Included(to), false) {
        let (k, _) = item?;
        batch.remove(k);
    }
    if keep > complete_through(keep) {
        // The new head falls inside a sealed chunk: its kept part returns
        // to the tail.
        if let Some(chunk) = chunks.get(kv, author, chunk_of(keep))? {
            for d in chunk.iter().filter(|d| d.seq() <= keep) {
                batch.insert(tail_key(author, d.seq()), frame(d.as_bytes()));
            }
        }
    }
    chunks.forget();
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::core::{Commit, Head, SeqRange, Store};
    use crate::store::{KvStore, MemKv};
    use crate::testkit::Author;

    /// Appends `ds` to `store` as one commit would, moving the head.
    fn append_commit(store: &mut KvStore, ds: &[SignedDelta]) {
        let last = ds.last().unwrap();
        let head = Head {
            seq: last.seq(),
            hash: last.hash(),
        };
        let c = Commit {
            deltas: ds.to_vec(),
            heads: vec![(last.author(), head)],
            ..Commit::default()
        };
        store.commit(&c).unwrap();
    }

    fn retract_commit(store: &mut KvStore, all: &[SignedDelta], keep: u64) {
        let author = all[0].author();
        let head = match keep {
            0 => Head::default(),
            k => Head {
                seq: k,
                hash: all[k as usize - 1].hash(),
            },
        };
        let c = Commit {
            retract: vec![SeqRange {
                author,
                first: keep + 1,
                last: all.len() as u64,
            }],
            heads: vec![(author, head)],
            ..Commit::default()
        };
        store.commit(&c).unwrap();
    }

    /// Everything of `log` readable, one by one and in ranges, nothing
    /// past it, and every complete chunk of small deltas sealed.
    fn holds_exactly(store: &KvStore, kv: &MemKv, log: &[SignedDelta]) {
        let author = log[0].author();
        for d in log {
            assert_eq!(store.delta(&author, d.seq()).unwrap().as_ref(), Some(d));
        }
        let head = log.len() as u64;
        assert_eq!(store.delta(&author, head + 1).unwrap(), None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(head);
        for _ in 0..20 {
            let first = rng.gen_range(1..=head);
            let last = rng.gen_range(first..=head + 3);
            let count = rng.gen_range(1..200);
            let got = store
                .deltas(
                    SeqRange {
                        author,
                        first,
                        last,
                    },
                    count,
                    usize::MAX,
                )
                .unwrap();
            let want: Vec<_> = (log.iter())
                .filter(|d| d.seq() >= first && d.seq() <= last)
                .take(count)
                .cloned()
                .collect();
            assert_eq!(got, want, "range {first}..={last}, {count} at most");
        }
        let (from, to) = crate::store::kv::prefix_bounds(&[SEALED]);
        let sealed = kv.scan(from, to, false).count();
        let complete = complete_through(head) / CHUNK;
        let big = (0..complete).filter(|n| {
            let bytes: usize = log[(n * CHUNK) as usize..((n + 1) * CHUNK) as usize]
                .iter()
                .map(|d| d.as_bytes().len())
                .sum();
            bytes > SEAL_BYTES_MAX
        });
        assert_eq!(
            sealed as u64,
            complete - big.count() as u64,
            "sealed chunks at head {head}"
        );
    }

    #[test]
    fn appends_and_retractions_of_any_size_keep_every_delta_readable() {
        for seed in 0..6u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let kv = MemKv::new();
            let mut store = KvStore::on(Arc::new(kv.clone()), 10).unwrap();
            let mut a = Author::region(1, "fr");
            let mut log: Vec<SignedDelta> = Vec::new();
            for round in 0..40 {
                if round % 9 == 8 && !log.is_empty() {
                    let keep = rng.gen_range(0..log.len() as u64);
                    retract_commit(&mut store, &log, keep);
                    log.truncate(keep as usize);
                    // The author's chain continues from the kept head.
                    a.rewind(log.last().map_or(Head::default(), |d| Head {
                        seq: d.seq(),
                        hash: d.hash(),
                    }));
                    if !log.is_empty() {
                        holds_exactly(&store, &kv, &log);
                    }
                    continue;
                }
                let n = rng.gen_range(1..150);
                // Now and then deltas too large to seal.
                let big = rng.gen_bool(0.15);
                let ds: Vec<_> = (0..n)
                    .map(|i| {
                        let len = if big { 8_000 } else { rng.gen_range(10..300) };
                        a.put(&format!("k{round}-{i}"), &vec![b'v'; len], 1_000 + round)
                    })
                    .collect();
                append_commit(&mut store, &ds);
                log.extend(ds);
                holds_exactly(&store, &kv, &log);
            }
            // What a restart finds is the same.
            let store = KvStore::on(Arc::new(kv.clone()), 10).unwrap();
            if !log.is_empty() {
                holds_exactly(&store, &kv, &log);
            }
        }
    }
}

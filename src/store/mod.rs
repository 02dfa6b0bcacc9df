//! The node's store: its layout on an ordered key-value disk, sled for
//! nodes ([`kv::SledKv`]) and memory for the simulation ([`MemKv`]). The only
//! module that names sled.
//!
//! # On-disk layout, version 2
//!
//! One sled tree, `fedsync/v2`, with a one-byte prefix per kind of entry.
//! One tree because sled applies a batch atomically within a tree, which is
//! the cheapest way to make a commit all-or-nothing (a cross-tree
//! transaction measured at half the ingest rate).
//!
//! | prefix | key after the prefix        | value (each framed: crc32 ‖ payload)      |
//! |--------|-----------------------------|-------------------------------------------|
//! | `m`    | `layout`                    | u32 layout version (`2`)                  |
//! | `m`    | `roster`                    | the adopted signed roster, as signed      |
//! | `m`    | `rebuilding`                | present while a rebuild from peers is unfinished |
//! | `m`    | `quarantine.first` / `.next` / `.dropped` | u64 counters                 |
//! | `l`    | author (32) ‖ seq (u64 BE)  | the signed delta, exactly as received     |
//! | `r`    | record key (UTF-8)          | winning delta: hlc, author, seq, deleted  |
//! | `h`    | author (32)                 | frontier head: seq, hash                  |
//! | `q`    | u64 BE, increasing          | refused delta: time, origin, code, reason, bytes, evidence |
//!
//! A layout change gets a new tree name and version; opening a store with
//! an unknown version is refused rather than guessed at.
//!
//! Every commit is one `apply_batch` followed by a flush: a batch is
//! acknowledged only once durable, and a crash leaves all of it or none.

mod codec;
pub mod kv;
mod mem;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use crate::core::store::take_bounded;
use crate::core::{Commit, Frontier, NodeId, Quarantined, RecordRef, SeqRange, SignedDelta, Store};
pub use codec::CodecError;
use codec::{frame, unframe};
use kv::prefix_bounds;
pub use kv::{Batch, Kv, SledKv};
pub use mem::MemKv;

pub const LAYOUT_VERSION: u32 = 2;
pub const TREE: &str = "fedsync/v2";

/// Entry kinds, by key prefix.
mod prefix {
    pub const META: u8 = b'm';
    pub const LOG: u8 = b'l';
    pub const RECORD: u8 = b'r';
    pub const HEAD: u8 = b'h';
    pub const QUARANTINE: u8 = b'q';
}

const LAYOUT: &str = "layout";
const Q_FIRST: &str = "quarantine.first";
const Q_NEXT: &str = "quarantine.next";
const Q_DROPPED: &str = "quarantine.dropped";
const ROSTER: &str = "roster";
const REBUILDING: &str = "rebuilding";

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn log_key(author: &NodeId, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(prefix::LOG);
    k.extend_from_slice(&author.0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store corrupt: entry {key}: {why} (stop the node, move its data directory aside and start it with `fedsync run --rebuild`: it recovers everything from its peers)")]
    Corrupt { key: String, why: CodecError },
    #[error("store layout version {found} is not supported (this build reads {LAYOUT_VERSION})")]
    Layout { found: u32 },
    #[error("disk: {0}")]
    Disk(String),
}

/// The newest quarantine entries, newest first, and how many were dropped
/// to bound it.
#[derive(Debug, Clone, Default)]
pub struct QuarantineView {
    pub entries: Vec<Quarantined>,
    /// Entries in the quarantine now (`entries` may be fewer).
    pub kept: u64,
    /// Entries dropped, oldest first, to stay within the bound.
    pub dropped: u64,
}

/// Measures a store from any thread (sled allows concurrent readers), so
/// the status call's O(records) count never holds up the node's actor.
#[derive(Clone)]
pub struct StoreSizes {
    kv: Arc<dyn Kv>,
}

impl StoreSizes {
    /// Current records, tombstones included (O(records)).
    pub fn record_count(&self) -> usize {
        let (from, to) = prefix_bounds(&[prefix::RECORD]);
        self.kv.scan(from, to, false).count()
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.kv.size_on_disk()
    }
}

/// Quarantine bookkeeping, kept in memory and written with each commit.
#[derive(Debug, Clone, Copy)]
struct QuarantineCounters {
    first: u64,
    next: u64,
    dropped: u64,
}

/// The node's store: the layout above, on sled ([`KvStore::open`]) or on
/// any other [`Kv`] ([`KvStore::on`], the simulation's [`MemKv`]).
pub struct KvStore {
    kv: Arc<dyn Kv>,
    quarantine_max: u64,
    q: QuarantineCounters,
}

fn corrupt(key: &[u8], why: CodecError) -> StoreError {
    let shown = match key.split_first() {
        Some((p, rest)) => match std::str::from_utf8(rest) {
            Ok(text) => format!("{}/{text}", *p as char),
            Err(_) => format!("{}/{}", *p as char, hex::encode(rest)),
        },
        None => String::new(),
    };
    StoreError::Corrupt { key: shown, why }
}

/// How long to wait for a just-closed store's file lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled in `dir`. sled releases its directory lock only when its
/// background flusher lets go of the database, a moment after the last
/// handle is dropped; so a store reopened at once (a node restarted in the
/// same process) retries briefly on a held lock. A lock held by another
/// live process is still refused once the wait is over.
pub fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).open() {
            // sled reports it as `Other` with this message (sled 0.34).
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(StoreError::from),
        }
    }
}

impl KvStore {
    /// Opens (or creates) the sled store in `dir`, keeping at most
    /// `quarantine_max` refused deltas.
    pub fn open(dir: &Path, quarantine_max: u64) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        let tree = db.open_tree(TREE)?;
        KvStore::on(Arc::new(SledKv { db, tree }), quarantine_max)
    }

    /// Opens (or creates) the store on `kv`.
    pub fn on(kv: Arc<dyn Kv>, quarantine_max: u64) -> Result<Self, StoreError> {
        let layout_key = key(prefix::META, LAYOUT.as_bytes());
        match kv.get(&layout_key)? {
            None => {
                let mut b = Batch::default();
                b.insert(layout_key, frame(&LAYOUT_VERSION.to_be_bytes()));
                kv.apply(b)?;
                kv.flush()?;
            }
            Some(v) => {
                let payload = unframe(&v).map_err(|e| corrupt(&layout_key, e))?;
                let bytes: [u8; 4] = payload
                    .try_into()
                    .map_err(|_| corrupt(&layout_key, CodecError::Shape))?;
                let found = u32::from_be_bytes(bytes);
                if found != LAYOUT_VERSION {
                    return Err(StoreError::Layout { found });
                }
            }
        }
        let mut store = KvStore {
            kv,
            quarantine_max: quarantine_max.max(1),
            q: QuarantineCounters {
                first: 0,
                next: 0,
                dropped: 0,
            },
        };
        store.q = QuarantineCounters {
            first: store.meta_u64(Q_FIRST)?,
            next: store.meta_u64(Q_NEXT)?,
            dropped: store.meta_u64(Q_DROPPED)?,
        };
        Ok(store)
    }

    /// Flushes anything the disk still buffers. Commits flush already;
    /// this is for a clean close.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.kv.size_on_disk()
    }

    /// Current records, tombstones included (O(records)).
    pub fn record_count(&self) -> usize {
        self.sizes().record_count()
    }

    /// A handle that measures the store from another thread.
    pub fn sizes(&self) -> StoreSizes {
        StoreSizes {
            kv: self.kv.clone(),
        }
    }

    /// Whether a rebuild from peers is unfinished: set by `run --rebuild`,
    /// cleared once the node has synced with the peers it waits for, and
    /// kept across restarts in between.
    pub fn rebuilding(&self) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .get(&key(prefix::META, REBUILDING.as_bytes()))?
            .is_some())
    }

    /// Sets or clears the rebuild marker, durably.
    pub fn set_rebuilding(&self, on: bool) -> Result<(), StoreError> {
        let k = key(prefix::META, REBUILDING.as_bytes());
        let mut b = Batch::default();
        if on {
            b.insert(k, frame(&[1]));
        } else {
            b.remove(k);
        }
        self.kv.apply(b)?;
        self.kv.flush()
    }

    /// The newest `limit` quarantine entries, newest first.
    pub fn quarantine(&self, limit: usize) -> Result<QuarantineView, StoreError> {
        let mut entries = Vec::new();
        let (from, to) = prefix_bounds(&[prefix::QUARANTINE]);
        for item in self.kv.scan(from, to, true).take(limit) {
            let (k, v) = item?;
            let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
            entries.push(codec::decode_quarantined(payload).map_err(|e| corrupt(&k, e))?);
        }
        Ok(QuarantineView {
            entries,
            kept: self.q.next - self.q.first,
            dropped: self.q.dropped,
        })
    }

    fn meta_u64(&self, name: &str) -> Result<u64, StoreError> {
        let k = key(prefix::META, name.as_bytes());
        match self.kv.get(&k)? {
            None => Ok(0),
            Some(v) => {
                let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
                let bytes: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| corrupt(&k, CodecError::Shape))?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    fn read_delta(&self, key: &[u8], stored: &[u8]) -> Result<SignedDelta, StoreError> {
        let payload = unframe(stored).map_err(|e| corrupt(key, e))?;
        // The checksum passed, so a decode failure means a bug or a
        // hand-edited store: report it, never serve it.
        SignedDelta::decode(payload).map_err(|_| corrupt(key, CodecError::Shape))
    }

    /// Adds quarantine entries to `batch`, dropping the oldest beyond the
    /// bound. Returns the counters to adopt once the batch is durable.
    fn quarantine_into(&self, batch: &mut Batch, entries: &[Quarantined]) -> QuarantineCounters {
        let mut q = self.q;
        if entries.is_empty() {
            return q;
        }
        for e in entries {
            batch.insert(
                key(prefix::QUARANTINE, &q.next.to_be_bytes()),
                frame(&codec::encode_quarantined(e)),
            );
            q.next += 1;
        }
        while q.next - q.first > self.quarantine_max {
            batch.remove(key(prefix::QUARANTINE, &q.first.to_be_bytes()));
            q.first += 1;
            q.dropped += 1;
        }
        for (name, v) in [(Q_FIRST, q.first), (Q_NEXT, q.next), (Q_DROPPED, q.dropped)] {
            batch.insert(key(prefix::META, name.as_bytes()), frame(&v.to_be_bytes()));
        }
        q
    }
}

impl Store for KvStore {
    type Error = StoreError;

    fn load_frontier(&self) -> Result<Frontier, StoreError> {
        let mut f = Frontier::new();
        let (from, to) = prefix_bounds(&[prefix::HEAD]);
        for item in self.kv.scan(from, to, false) {
            let (k, v) = item?;
            let author: [u8; 32] = k[1..]
                .try_into()
                .map_err(|_| corrupt(&k, CodecError::Shape))?;
            let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
            let head = codec::decode_head(payload).map_err(|e| corrupt(&k, e))?;
            f.set(NodeId(author), head);
        }
        Ok(f)
    }

    fn delta(&self, author: &NodeId, seq: u64) -> Result<Option<SignedDelta>, StoreError> {
        let key = log_key(author, seq);
        self.kv
            .get(&key)?
            .map(|v| self.read_delta(&key, &v))
            .transpose()
    }

    fn deltas(
        &self,
        range: SeqRange,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedDelta>, StoreError> {
        let from = log_key(&range.author, range.first);
        let to = log_key(&range.author, range.last);
        let run = (self
            .kv
            .scan(Bound::Included(from), Bound::Included(to), false))
        .map(|item| {
            let (k, v) = item?;
            self.read_delta(&k, &v)
        });
        take_bounded(run, max_count, max_bytes)
    }

    fn record(&self, record_key: &str) -> Result<Option<RecordRef>, StoreError> {
        let k = key(prefix::RECORD, record_key.as_bytes());
        let Some(v) = self.kv.get(&k)? else {
            return Ok(None);
        };
        let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
        codec::decode_record(payload)
            .map(Some)
            .map_err(|e| corrupt(&k, e))
    }

    fn records(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RecordRef)>, StoreError> {
        let start = match after {
            Some(a) if a >= prefix => {
                // The smallest key greater than `a`: `a` followed by a 0 byte.
                let mut k = key(prefix::RECORD, a.as_bytes());
                k.push(0);
                k
            }
            _ => key(prefix::RECORD, prefix.as_bytes()),
        };
        let wanted = key(prefix::RECORD, prefix.as_bytes());
        let mut out = Vec::new();
        for item in self
            .kv
            .scan(Bound::Included(start), Bound::Unbounded, false)
        {
            let (k, v) = item?;
            if !k.starts_with(&wanted) || out.len() >= limit {
                break;
            }
            let name = std::str::from_utf8(&k[1..])
                .map_err(|_| corrupt(&k, CodecError::Shape))?
                .to_owned();
            let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
            let r = codec::decode_record(payload).map_err(|e| corrupt(&k, e))?;
            out.push((name, r));
        }
        Ok(out)
    }

    fn deltas_for_keys(
        &self,
        keys: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<SignedDelta>, StoreError> {
        let mut out = Vec::new();
        let (from, to) = prefix_bounds(&[prefix::LOG]);
        for item in self.kv.scan(from, to, false) {
            let (k, v) = item?;
            let d = self.read_delta(&k, &v)?;
            if keys.contains(d.key()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn roster(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(prefix::META, ROSTER.as_bytes());
        let Some(v) = self.kv.get(&k)? else {
            return Ok(None);
        };
        let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
        Ok(Some(payload.to_vec()))
    }

    fn commit(&mut self, c: &Commit) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for r in &c.retract {
            let (from, to) = (log_key(&r.author, r.first), log_key(&r.author, r.last));
            for item in self
                .kv
                .scan(Bound::Included(from), Bound::Included(to), false)
            {
                batch.remove(item?.0);
            }
        }
        for k in &c.records_removed {
            batch.remove(key(prefix::RECORD, k.as_bytes()));
        }
        if let Some(r) = &c.roster {
            batch.insert(key(prefix::META, ROSTER.as_bytes()), frame(r));
        }
        for d in &c.deltas {
            batch.insert(log_key(&d.author(), d.seq()), frame(d.as_bytes()));
        }
        for (k, r) in &c.records {
            batch.insert(
                key(prefix::RECORD, k.as_bytes()),
                frame(&codec::encode_record(r)),
            );
        }
        for (a, h) in &c.heads {
            if h.seq == 0 {
                batch.remove(key(prefix::HEAD, &a.0));
            } else {
                batch.insert(key(prefix::HEAD, &a.0), frame(&codec::encode_head(h)));
            }
        }
        let q = self.quarantine_into(&mut batch, &c.quarantine);
        self.kv.apply(batch)?;
        self.kv.flush()?;
        self.q = q;
        Ok(())
    }
}

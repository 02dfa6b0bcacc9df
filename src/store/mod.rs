//! The node's store: its layout on an ordered key-value disk, sled for
//! nodes ([`kv::SledKv`]) and memory for the simulation ([`MemKv`]). The only
//! module that names sled.
//!
//! # On-disk layout, version 4
//!
//! One sled tree, `fedsync/v3` (named when layout 3 began), with a
//! one-byte prefix per kind of entry.
//! One tree because sled applies a batch atomically within a tree, which is
//! the cheapest way to make a commit all-or-nothing (a cross-tree
//! transaction measured at half the ingest rate).
//!
//! | prefix | key after the prefix        | value (each framed: crc32 ‖ payload)      |
//! |--------|-----------------------------|-------------------------------------------|
//! | `m`    | `layout`                    | u32 layout version (`4`)                  |
//! | `m`    | `roster`                    | the adopted signed roster, as signed      |
//! | `m`    | `rebuilding`                | present while a rebuild from peers is unfinished |
//! | `m`    | `quarantine.first` / `.next` / `.dropped` | u64 counters                 |
//! | `m`    | `records`                   | u64: records held (tombstones included), kept by every commit |
//! | `l`    | author (32) ‖ seq (u64 BE)  | a delta of the author's tail, exactly as received |
//! | `c`    | author (32) ‖ n (u64 BE)    | sealed chunk n: the author's deltas `16n+1 ..= 16n+16`, zstd (see `log.rs`) |
//! | `b`    | a record key (UTF-8): the bucket's separator | up to 32 records, in key order: key, winning delta's hlc, author, seq, deleted (see `records.rs`) |
//! | `h`    | author (32)                 | frontier head: seq, hash                  |
//! | `q`    | u64 BE, increasing          | refused delta: time, origin, code, reason, bytes, evidence |
//! | `a`    | author (32) ‖ seq (u64 BE)  | u64 ms: when this store first held that delta; reports' deltas only |
//!
//! The `a` entries came later within layout 4: a store without them reads
//! as one that never noted an arrival, and an older binary ignores them.
//!
//! A layout change gets a new version; opening a store with an unknown
//! version is refused rather than guessed at. Stores of earlier layouts are
//! migrated once, on open (`migrate.rs`): layout 3 (one `r` entry per
//! record) in place, layout 2 (tree `fedsync/v2`: one `l` entry per delta,
//! no chunks, no record count) by a copy into this tree.
//!
//! Every commit is one `apply_batch`, all or nothing. A durable commit (a
//! local write) then flushes; a lazy one (a batch from a peer) is made
//! durable by the node's next sync, which groups the batches that arrive
//! together into one flush. A crash leaves each batch whole or not at all.

mod codec;
mod error;
pub mod kv;
mod log;
mod mark;
mod mem;
mod migrate;
mod open;
mod port;
mod quarantine;
mod records;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::{DeltaHash, Head, NodeId};
pub use codec::CodecError;
use codec::{frame, unframe};
use error::corrupt;
pub use error::StoreError;
pub use kv::{Batch, Kv, SledKv};
pub use mem::MemKv;
pub use open::{open_db, StoreOptions};
pub use quarantine::QuarantineView;
use quarantine::{QuarantineCounters, Q_DROPPED, Q_FIRST, Q_NEXT};

pub const LAYOUT_VERSION: u32 = 4;
pub const TREE: &str = "fedsync/v3";

/// Entry kinds, by key prefix.
mod prefix {
    pub const META: u8 = b'm';
    pub const LOG: u8 = super::log::TAIL;
    pub const SEALED: u8 = super::log::SEALED;
    // b'b': a bucket of records, `records::BUCKET`.
    pub const HEAD: u8 = b'h';
    pub const QUARANTINE: u8 = b'q';
    pub const ARRIVAL: u8 = b'a';
}

const LAYOUT: &str = "layout";
const ROSTER: &str = "roster";
const REBUILDING: &str = "rebuilding";
const RECORDS: &str = "records";

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// Measures a store from any thread, without holding up the node's
/// actor.
#[derive(Clone)]
pub struct StoreSizes {
    kv: Arc<dyn Kv>,
    records: Arc<AtomicU64>,
}

impl StoreSizes {
    /// Current records, tombstones included: kept by every commit, so
    /// reading it costs nothing however many there are.
    pub fn record_count(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.kv.size_on_disk()
    }
}

/// The node's store: the layout above, on sled ([`KvStore::open`]) or on
/// any other [`Kv`] ([`KvStore::on`], the simulation's [`MemKv`]).
pub struct KvStore {
    kv: Arc<dyn Kv>,
    chunks: log::Chunks,
    quarantine_max: u64,
    q: QuarantineCounters,
    /// Records held, as last committed (shared with [`StoreSizes`]).
    records: Arc<AtomicU64>,
    /// The node whose own log the mark follows, and its head as marked.
    owner: Option<(NodeId, Head)>,
    /// The owner's head as committed, durable or not yet.
    own_head: Option<Head>,
    /// Lazy commits applied since the last flush.
    unsynced: bool,
    /// The record bucket read last, so that a run of lookups in one
    /// bucket (a catch-up's keys, mostly in order) decodes it once.
    /// Dropped by every commit.
    last_span: std::sync::Mutex<Option<records::Span>>,
}

impl KvStore {
    fn flush_commits(&mut self) -> Result<(), StoreError> {
        self.kv.flush()?;
        self.unsynced = false;
        self.follow_own_head();
        Ok(())
    }
}

/// The mark: the owner's id, and its head as last committed.
fn encode_mark(me: &NodeId, head: &Head) -> Vec<u8> {
    [&me.0[..], &head.seq.to_be_bytes(), &head.hash.0].concat()
}

fn decode_mark(bytes: &[u8]) -> Result<(NodeId, Head), StoreError> {
    let bad = || StoreError::Damaged(format!("{}: not a mark", mark::FILE));
    let author: [u8; 32] = bytes
        .get(..32)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let seq: [u8; 8] = bytes
        .get(32..40)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let hash: [u8; 32] = bytes
        .get(40..72)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let head = Head {
        seq: u64::from_be_bytes(seq),
        hash: DeltaHash(hash),
    };
    Ok((NodeId(author), head))
}

impl KvStore {
    /// Opens (or creates) the sled store in `dir`.
    pub fn open(dir: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        let kv = kv::contain("opening the store", || {
            let db = open_db(dir, opts)?;
            migrate::from_v2(&db)?;
            let tree = db.open_tree(TREE)?;
            let mark = Some(mark::MarkFile::open(dir)?);
            Ok(SledKv { db, tree, mark })
        })?;
        kv::contain("opening the store", || {
            KvStore::on(Arc::new(kv), opts.quarantine_max)
        })
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
                match u32::from_be_bytes(bytes) {
                    LAYOUT_VERSION => {}
                    3 => {
                        let mut b = Batch::default();
                        b.insert(layout_key, frame(&LAYOUT_VERSION.to_be_bytes()));
                        kv.apply(b)?;
                        kv.flush()?;
                    }
                    found => return Err(StoreError::Layout { found }),
                }
            }
        }
        migrate::records_into_buckets(&*kv)?;
        let mut store = KvStore {
            kv,
            quarantine_max: quarantine_max.max(1),
            q: QuarantineCounters {
                first: 0,
                next: 0,
                dropped: 0,
            },
            records: Arc::default(),
            chunks: log::Chunks::new(),
            owner: None,
            own_head: None,
            unsynced: false,
            last_span: Default::default(),
        };
        store.q = QuarantineCounters {
            first: store.meta_u64(Q_FIRST)?,
            next: store.meta_u64(Q_NEXT)?,
            dropped: store.meta_u64(Q_DROPPED)?,
        };
        let records = match store.meta(RECORDS)? {
            Some(n) => n,
            None => store.count_records_once()?,
        };
        store.records.store(records, Ordering::Relaxed);
        Ok(store)
    }

    /// A store written by an earlier release keeps no record count: count
    /// once, and keep it from then on.
    fn count_records_once(&self) -> Result<u64, StoreError> {
        let n = records::count(&*self.kv)?;
        let mut b = Batch::default();
        b.insert(
            key(prefix::META, RECORDS.as_bytes()),
            frame(&n.to_be_bytes()),
        );
        self.kv.apply(b)?;
        self.kv.flush()?;
        if n > 0 {
            tracing::info!(records = n, "counted the store's records once (written by an earlier release); kept by every commit from now on");
        }
        Ok(n)
    }

    /// From now on the mark follows `me`'s own log, which must not be
    /// shorter than the mark says it was: a log that came back shorter
    /// (sled recovering to an earlier point past a damaged byte) would
    /// have this node sign again seqs it already used. Call at start,
    /// before the node signs anything.
    pub fn own_log(&mut self, me: NodeId) -> Result<(), StoreError> {
        let head = self.head(&me)?;
        if let Some(bytes) = self.kv.read_mark()? {
            let (author, marked) = decode_mark(&bytes)?;
            let shorter = head.seq < marked.seq;
            let forked = head.seq == marked.seq && head.hash != marked.hash;
            if author == me && (shorter || forked) {
                return Err(StoreError::Truncated {
                    held: head.seq,
                    written: marked.seq,
                });
            }
            if author == me && head == marked {
                self.owner = Some((me, head));
                self.own_head = Some(head);
                return Ok(());
            }
        }
        self.kv.write_mark(&encode_mark(&me, &head))?;
        self.owner = Some((me, head));
        self.own_head = Some(head);
        Ok(())
    }

    fn head(&self, author: &NodeId) -> Result<Head, StoreError> {
        let k = key(prefix::HEAD, &author.0);
        match self.kv.get(&k)? {
            None => Ok(Head::default()),
            Some(v) => {
                let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
                codec::decode_head(payload).map_err(|e| corrupt(&k, e))
            }
        }
    }

    /// After a flush: the mark follows the owner's head, now durable. A
    /// mark that fails to be written leaves the commits durable (and an
    /// older mark is never a false alarm), so it is logged, not returned.
    fn follow_own_head(&mut self) {
        let (Some((me, marked)), Some(head)) = (self.owner, self.own_head) else {
            return;
        };
        if head == marked {
            return;
        }
        match self.kv.write_mark(&encode_mark(&me, &head)) {
            Ok(()) => self.owner = Some((me, head)),
            Err(e) => {
                tracing::error!(error = %e, "the mark of this node's own log could not be written")
            }
        }
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

    /// Current records, tombstones included.
    pub fn record_count(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// A handle that measures the store from another thread.
    pub fn sizes(&self) -> StoreSizes {
        StoreSizes {
            kv: self.kv.clone(),
            records: self.records.clone(),
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

    fn meta_u64(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.meta(name)?.unwrap_or(0))
    }

    /// A u64 kept under `m/<name>`, if there is one.
    fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let k = key(prefix::META, name.as_bytes());
        let Some(v) = self.kv.get(&k)? else {
            return Ok(None);
        };
        let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
        let bytes: [u8; 8] = payload
            .try_into()
            .map_err(|_| corrupt(&k, CodecError::Shape))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }
}

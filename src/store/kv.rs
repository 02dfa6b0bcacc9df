//! The ordered key-value disk the store's layout is written on: sled for
//! nodes, [`super::MemKv`] for the simulation. The store's layout, framing
//! and commit discipline sit above this line and are the same for both, so
//! the simulation exercises the real store code.

use std::ops::Bound;

use super::StoreError;

/// One entry as read.
pub type Entry = (Vec<u8>, Vec<u8>);
/// A run of entries in key order (or reverse order).
pub type Entries<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

/// Insertions (`Some`) and removals (`None`), applied all or nothing.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn remove(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
}

/// What the store needs of a disk. `apply` may leave the batch only in
/// memory; only `flush` makes it durable, so a crash between the two
/// loses the batch whole (never part of it).
pub trait Kv: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries between the bounds, in key order, or reversed when `rev`.
    fn scan(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, rev: bool) -> Entries<'_>;
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    fn flush(&self) -> Result<(), StoreError>;
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// The bounds of every key starting with `prefix`.
pub fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let from = Bound::Included(prefix.to_vec());
    // The first key after every key with this prefix: the prefix with its
    // last byte below 0xff incremented and what follows dropped.
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (from, Bound::Excluded(end));
        }
    }
    (from, Bound::Unbounded)
}

/// sled, one tree: a batch is atomic within a tree.
pub struct SledKv {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, rev: bool) -> Entries<'_> {
        let run = self.tree.range::<Vec<u8>, _>((from, to));
        let pair = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        };
        if rev {
            Box::new(run.rev().map(pair))
        } else {
            Box::new(run.map(pair))
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        Ok(self.tree.apply_batch(b)?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

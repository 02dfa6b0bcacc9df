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
///
/// Beside the entries a disk keeps one small *mark*, apart from them (a
/// file of its own, not in sled's log): written durably at once, so that
/// when sled's log comes back shorter than it was, the mark still says
/// how far it had gone.
pub trait Kv: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries between the bounds, in key order, or reversed when `rev`.
    fn scan(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, rev: bool) -> Entries<'_>;
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    fn flush(&self) -> Result<(), StoreError>;
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// The mark last written, `Ok(None)` if none ever was; an error if
    /// there is one but it cannot be read back.
    fn read_mark(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the mark, durably, before returning. A crash while it is
    /// written leaves the old mark or the new one.
    fn write_mark(&self, mark: &[u8]) -> Result<(), StoreError>;
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

/// sled, one tree: a batch is atomic within a tree. The mark is a file of
/// its own beside sled's.
///
/// sled can panic on a damaged file rather than return an error. Every
/// call into it is contained here: a panic becomes [`StoreError::Damaged`]
/// (its message suppressed by the binary's panic hook), so a corrupt store
/// ends in the one-line error, not a crash.
pub struct SledKv {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) mark: Option<super::mark::MarkFile>,
}

/// Runs a call into sled, turning a panic into an error.
pub(super) fn contain<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(StoreError::Damaged(format!("sled failed {what}: {msg}")))
        }
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        contain("reading an entry", || {
            Ok(self.tree.get(key)?.map(|v| v.to_vec()))
        })
    }

    fn scan(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, rev: bool) -> Entries<'_> {
        let run = match contain("scanning", || Ok(self.tree.range::<Vec<u8>, _>((from, to)))) {
            Ok(run) => run,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(Contained {
            run,
            rev,
            done: false,
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        contain("writing", || Ok(self.tree.apply_batch(b)?))
    }

    fn flush(&self) -> Result<(), StoreError> {
        contain("flushing", || {
            self.db.flush()?;
            Ok(())
        })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        contain("measuring", || Ok(self.db.size_on_disk()?))
    }

    fn read_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.mark {
            Some(m) => m.read(),
            None => Ok(None),
        }
    }

    fn write_mark(&self, mark: &[u8]) -> Result<(), StoreError> {
        match &self.mark {
            Some(m) => m.write(mark),
            None => Err(StoreError::Disk("this store keeps no mark".into())),
        }
    }
}

/// A sled range whose every step is contained; it ends after an error.
struct Contained {
    run: sled::Iter,
    rev: bool,
    done: bool,
}

impl Iterator for Contained {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (run, rev) = (&mut self.run, self.rev);
        let step = contain("scanning", || {
            let item = if rev { run.next_back() } else { run.next() };
            Ok(item.transpose()?)
        });
        match step {
            Ok(Some((k, v))) => Some(Ok((k.to_vec(), v.to_vec()))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

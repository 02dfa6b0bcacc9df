//! An in-memory disk that keeps what was flushed apart from what was only
//! written, for the seeded simulation of whole nodes: [`MemKv::crash`]
//! drops everything written since the last flush, as losing power does,
//! and faults can be armed to make the disk fail or to corrupt an entry.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::kv::{Batch, Entries, Kv};
use super::StoreError;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct Disk {
    /// What survives a crash.
    durable: Map,
    /// What readers see: `durable` plus the batches not yet flushed.
    live: Map,
    pending: Vec<Batch>,
    /// Set by an injected fault: every operation fails until the crash.
    failed: Option<String>,
    /// An armed fault: the flush after this many more fails.
    flushes_before_failure: Option<u64>,
    /// The mark, durable as soon as it is written.
    mark: Option<Vec<u8>>,
}

/// A shared handle: the simulation keeps one per node across restarts.
#[derive(Clone, Default)]
pub struct MemKv {
    disk: Arc<Mutex<Disk>>,
}

impl MemKv {
    pub fn new() -> MemKv {
        MemKv::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock leaves a consistent map (every
        // change is a whole-value assignment), so poisoning is ignored.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rolls the durable entries back to what they were, keeping the mark:
    /// what a store whose log came back shorter looks like.
    pub fn roll_back_to(&self, earlier: &MemKv) {
        let then = earlier.lock();
        let mut d = self.lock();
        d.durable = then.durable.clone();
        d.live = then.durable.clone();
        d.pending.clear();
    }

    /// A copy of this disk as it is now.
    pub fn snapshot(&self) -> MemKv {
        let d = self.lock();
        let copy = MemKv::new();
        {
            let mut c = copy.lock();
            c.durable = d.durable.clone();
            c.live = d.durable.clone();
            c.mark = d.mark.clone();
        }
        copy
    }

    /// Power is lost: what was not flushed is gone, and the disk works
    /// again for the next start.
    pub fn crash(&self) {
        let mut d = self.lock();
        d.live = d.durable.clone();
        d.pending.clear();
        d.failed = None;
        d.flushes_before_failure = None;
    }

    /// The disk is replaced by an empty one (lost, or found corrupt and
    /// moved aside).
    pub fn wipe(&self) {
        *self.lock() = Disk::default();
    }

    /// Makes the flush after `n` more succeed fail, and the disk with it,
    /// until [`MemKv::crash`]: the write it carried was applied but never
    /// made durable, and is lost in the crash that follows.
    pub fn fail_flush_after(&self, n: u64) {
        self.lock().flushes_before_failure = Some(n);
    }

    /// Cancels an armed [`MemKv::fail_flush_after`] not yet hit.
    pub fn disarm(&self) {
        self.lock().flushes_before_failure = None;
    }

    /// Whether an injected fault has stopped the disk.
    pub fn has_failed(&self) -> bool {
        self.lock().failed.is_some()
    }

    /// Flips one byte of the `nth` durable entry whose key starts with
    /// `prefix` (wrapping around). Returns the key, if any matched.
    pub fn corrupt(&self, prefix: &[u8], nth: usize) -> Option<Vec<u8>> {
        let mut d = self.lock();
        let keys: Vec<Vec<u8>> = (d.durable.keys())
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let key = keys.get(nth % keys.len().max(1))?.clone();
        let Disk { durable, live, .. } = &mut *d;
        for map in [durable, live] {
            if let Some(v) = map.get_mut(&key) {
                if let Some(b) = v.last_mut() {
                    *b ^= 0x5a;
                }
            }
        }
        Some(key)
    }

    /// Durable entries: what a restart would find.
    pub fn durable_len(&self) -> usize {
        self.lock().durable.len()
    }

    fn check(d: &Disk) -> Result<(), StoreError> {
        match &d.failed {
            Some(why) => Err(StoreError::Disk(why.clone())),
            None => Ok(()),
        }
    }
}

fn apply_to(map: &mut Map, batch: &Batch) {
    for (k, v) in &batch.ops {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let d = self.lock();
        MemKv::check(&d)?;
        Ok(d.live.get(key).cloned())
    }

    fn scan(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, rev: bool) -> Entries<'_> {
        let d = self.lock();
        if let Err(e) = MemKv::check(&d) {
            return Box::new(std::iter::once(Err(e)));
        }
        // A snapshot: the lock is not held while the caller iterates.
        let run: Vec<_> = (d.live.range((from, to)))
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        if rev {
            Box::new(run.into_iter().rev())
        } else {
            Box::new(run.into_iter())
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut d = self.lock();
        MemKv::check(&d)?;
        apply_to(&mut d.live, &batch);
        d.pending.push(batch);
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut d = self.lock();
        MemKv::check(&d)?;
        if let Some(n) = d.flushes_before_failure {
            if n == 0 {
                let why = "injected fault: the disk stopped before this flush".to_string();
                d.failed = Some(why.clone());
                return Err(StoreError::Disk(why));
            }
            d.flushes_before_failure = Some(n - 1);
        }
        let Disk {
            durable, pending, ..
        } = &mut *d;
        for b in pending.drain(..) {
            apply_to(durable, &b);
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let d = self.lock();
        Ok(d.durable
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }

    fn read_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let d = self.lock();
        MemKv::check(&d)?;
        Ok(d.mark.clone())
    }

    fn write_mark(&self, mark: &[u8]) -> Result<(), StoreError> {
        let mut d = self.lock();
        MemKv::check(&d)?;
        d.mark = Some(mark.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(kv: &MemKv, k: &[u8], v: &[u8]) {
        let mut b = Batch::default();
        b.insert(k.to_vec(), v.to_vec());
        kv.apply(b).unwrap();
    }

    #[test]
    fn a_crash_keeps_what_was_flushed_and_drops_the_rest() {
        let kv = MemKv::new();
        put(&kv, b"a", b"1");
        kv.flush().unwrap();
        put(&kv, b"b", b"2");
        assert_eq!(kv.get(b"b").unwrap(), Some(b"2".to_vec()));
        kv.crash();
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"b").unwrap(), None);
    }

    #[test]
    fn a_failed_flush_stops_the_disk_and_loses_its_batch() {
        let kv = MemKv::new();
        kv.fail_flush_after(1);
        put(&kv, b"a", b"1");
        kv.flush().unwrap();
        put(&kv, b"b", b"2");
        assert!(matches!(kv.flush(), Err(StoreError::Disk(_))));
        assert!(kv.has_failed());
        assert!(kv.get(b"a").is_err());
        kv.crash();
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"b").unwrap(), None);
    }

    #[test]
    fn scans_respect_bounds_and_direction() {
        let kv = MemKv::new();
        for k in [&b"p1"[..], b"p2", b"q1"] {
            put(&kv, k, b"v");
        }
        let (from, to) = super::super::kv::prefix_bounds(b"p");
        let keys: Vec<_> = kv
            .scan(from.clone(), to.clone(), false)
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(keys, vec![b"p1".to_vec(), b"p2".to_vec()]);
        let rev: Vec<_> = kv.scan(from, to, true).map(|e| e.unwrap().0).collect();
        assert_eq!(rev, vec![b"p2".to_vec(), b"p1".to_vec()]);
    }
}

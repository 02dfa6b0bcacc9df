//! The quarantine: refused deltas with their reasons, numbered in
//! arrival order and bounded (the oldest dropped first), its counters
//! written with the commit that changes them.

use super::codec::{self, frame, unframe};
use super::kv::prefix_bounds;
use super::{corrupt, key, prefix, Batch, KvStore, StoreError};
use crate::core::Quarantined;

pub(super) const Q_FIRST: &str = "quarantine.first";
pub(super) const Q_NEXT: &str = "quarantine.next";
pub(super) const Q_DROPPED: &str = "quarantine.dropped";

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

/// Quarantine bookkeeping, kept in memory and written with each commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct QuarantineCounters {
    pub(super) first: u64,
    pub(super) next: u64,
    pub(super) dropped: u64,
}

impl KvStore {
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

    /// Adds quarantine entries to `batch`, dropping the oldest beyond the
    /// bound. Returns the counters to adopt once the batch is durable.
    pub(super) fn quarantine_into(
        &self,
        batch: &mut Batch,
        entries: &[Quarantined],
    ) -> QuarantineCounters {
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

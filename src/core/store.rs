//! The storage the core needs, as a trait the core defines. The sled store
//! implements it for nodes; [`MemStore`] implements it for tests and the
//! simulation.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use super::delta::SignedDelta;
use super::frontier::{Frontier, Head, SeqRange};
use super::ids::NodeId;
use super::merge::RecordRef;

/// A refused delta kept for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub at_ms: u64,
    /// Who handed us the delta (a peer name, or `local`).
    pub origin: String,
    /// [`super::validate::Refusal::code`].
    pub code: String,
    /// The refusal, in words.
    pub reason: String,
    /// The bytes as received (possibly not a delta at all).
    pub bytes: Vec<u8>,
}

/// Everything one ingest changes, written atomically and durably.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub deltas: Vec<SignedDelta>,
    pub records: Vec<(String, RecordRef)>,
    pub heads: Vec<(NodeId, Head)>,
    pub quarantine: Vec<Quarantined>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.quarantine.is_empty()
    }
}

/// Collects deltas until `max_count` of them, or until `max_bytes` is
/// reached (always at least one if any): the batch bound every store's
/// `deltas` applies.
pub fn take_bounded<E>(
    deltas: impl Iterator<Item = Result<SignedDelta, E>>,
    max_count: usize,
    max_bytes: usize,
) -> Result<Vec<SignedDelta>, E> {
    let mut out = Vec::new();
    let mut bytes = 0;
    if max_count == 0 {
        return Ok(out);
    }
    // Checking after each push, not before, never reads a delta it drops.
    for d in deltas {
        let d = d?;
        bytes += d.as_bytes().len();
        out.push(d);
        if out.len() >= max_count || bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

pub trait Store {
    type Error: std::error::Error + Send + Sync + 'static;

    fn load_frontier(&self) -> Result<Frontier, Self::Error>;

    /// One delta of an author's log.
    fn delta(&self, author: &NodeId, seq: u64) -> Result<Option<SignedDelta>, Self::Error>;

    /// Deltas of `range` in sequence order, stopping after `max_count`
    /// deltas or once `max_bytes` is reached (always at least one if any).
    fn deltas(
        &self,
        range: SeqRange,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedDelta>, Self::Error>;

    fn record(&self, key: &str) -> Result<Option<RecordRef>, Self::Error>;

    /// Records whose key starts with `prefix`, in key order, starting after
    /// `after` (exclusive) when given, at most `limit` of them. Tombstones
    /// included: the caller decides what a delete hides.
    fn records(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RecordRef)>, Self::Error>;

    /// Applies `commit` all or nothing, and returns only once it is durable.
    fn commit(&mut self, commit: &Commit) -> Result<(), Self::Error>;
}

/// An in-memory store with the same semantics (minus durability).
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    pub logs: BTreeMap<(NodeId, u64), SignedDelta>,
    pub records: BTreeMap<String, RecordRef>,
    pub heads: BTreeMap<NodeId, Head>,
    pub quarantine: VecDeque<Quarantined>,
}

impl Store for MemStore {
    type Error = Infallible;

    fn load_frontier(&self) -> Result<Frontier, Infallible> {
        let mut f = Frontier::new();
        for (author, head) in &self.heads {
            f.set(*author, *head);
        }
        Ok(f)
    }

    fn delta(&self, author: &NodeId, seq: u64) -> Result<Option<SignedDelta>, Infallible> {
        Ok(self.logs.get(&(*author, seq)).cloned())
    }

    fn deltas(
        &self,
        range: SeqRange,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedDelta>, Infallible> {
        let run = self
            .logs
            .range((range.author, range.first)..=(range.author, range.last))
            .map(|(_, d)| Ok(d.clone()));
        take_bounded(run, max_count, max_bytes)
    }

    fn record(&self, key: &str) -> Result<Option<RecordRef>, Infallible> {
        Ok(self.records.get(key).copied())
    }

    fn records(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RecordRef)>, Infallible> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(self
            .records
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, r)| (k.clone(), *r))
            .collect())
    }

    fn commit(&mut self, c: &Commit) -> Result<(), Infallible> {
        for d in &c.deltas {
            self.logs.insert((d.author(), d.seq()), d.clone());
        }
        for (k, r) in &c.records {
            self.records.insert(k.clone(), *r);
        }
        for (a, h) in &c.heads {
            self.heads.insert(*a, *h);
        }
        self.quarantine.extend(c.quarantine.iter().cloned());
        Ok(())
    }
}

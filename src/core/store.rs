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
    /// For equivocation: the other signed delta with the same author and
    /// seq, so the pair proves the fork. Empty otherwise.
    pub evidence: Vec<u8>,
}

/// Everything one ingest (or roster change) changes, written atomically
/// and durably. Removals are applied before insertions.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub deltas: Vec<SignedDelta>,
    pub records: Vec<(String, RecordRef)>,
    /// A head with seq 0 removes the author from the frontier.
    pub heads: Vec<(NodeId, Head)>,
    pub quarantine: Vec<Quarantined>,
    /// Runs of logs to delete: deltas a roster change no longer allows.
    pub retract: Vec<SeqRange>,
    /// Keys that no remaining delta writes.
    pub records_removed: Vec<String>,
    /// How many of `records` are keys the store did not hold yet: with
    /// `records_removed`, what keeps the store's record count without
    /// counting.
    pub records_created: u64,
    /// A newly adopted signed roster, replacing the stored one.
    pub roster: Option<Vec<u8>>,
    /// Deltas among `deltas` whose arrival is kept (reports': see
    /// [`super::keyspace::is_report`]), each first held at `arrived_ms`.
    pub arrivals: Vec<(NodeId, u64)>,
    pub arrived_ms: u64,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
            && self.quarantine.is_empty()
            && self.retract.is_empty()
            && self.roster.is_none()
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

    /// Every stored delta that writes one of `keys`, in no particular
    /// order. A full scan: only a roster change that retracts deltas needs
    /// it, to find each affected key's new winner.
    fn deltas_for_keys(
        &self,
        keys: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<SignedDelta>, Self::Error>;

    /// When this store first held the delta `author`/`seq`, for the deltas
    /// a commit listed in [`Commit::arrivals`]; `None` for any other.
    fn arrived(&self, author: &NodeId, seq: u64) -> Result<Option<u64>, Self::Error>;

    /// The signed roster last committed, as committed.
    fn roster(&self) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Applies `commit` all or nothing, and returns only once it is durable
    /// (with every lazy commit before it).
    fn commit(&mut self, commit: &Commit) -> Result<(), Self::Error>;

    /// Applies `commit` all or nothing; it is durable after the next
    /// [`Store::sync`] or durable commit. A crash before then loses it
    /// whole, with every lazy commit after it, never part of one: what
    /// peers sent, which they still hold.
    fn commit_lazy(&mut self, commit: &Commit) -> Result<(), Self::Error> {
        self.commit(commit)
    }

    /// Makes every lazy commit durable.
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// An in-memory store with the same semantics (minus durability).
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    pub logs: BTreeMap<(NodeId, u64), SignedDelta>,
    pub records: BTreeMap<String, RecordRef>,
    pub heads: BTreeMap<NodeId, Head>,
    pub quarantine: VecDeque<Quarantined>,
    pub roster: Option<Vec<u8>>,
    pub arrivals: BTreeMap<(NodeId, u64), u64>,
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

    fn deltas_for_keys(
        &self,
        keys: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<SignedDelta>, Infallible> {
        Ok(self
            .logs
            .values()
            .filter(|d| keys.contains(d.key()))
            .cloned()
            .collect())
    }

    fn arrived(&self, author: &NodeId, seq: u64) -> Result<Option<u64>, Infallible> {
        Ok(self.arrivals.get(&(*author, seq)).copied())
    }

    fn roster(&self) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.roster.clone())
    }

    fn commit(&mut self, c: &Commit) -> Result<(), Infallible> {
        for r in &c.retract {
            let doomed: Vec<_> = self
                .logs
                .range((r.author, r.first)..=(r.author, r.last))
                .map(|(k, _)| *k)
                .collect();
            for k in doomed {
                self.logs.remove(&k);
                self.arrivals.remove(&k);
            }
        }
        for k in &c.records_removed {
            self.records.remove(k);
        }
        for d in &c.deltas {
            self.logs.insert((d.author(), d.seq()), d.clone());
        }
        for (k, r) in &c.records {
            self.records.insert(k.clone(), *r);
        }
        for a in &c.arrivals {
            self.arrivals.entry(*a).or_insert(c.arrived_ms);
        }
        for (a, h) in &c.heads {
            if h.seq == 0 {
                self.heads.remove(a);
            } else {
                self.heads.insert(*a, *h);
            }
        }
        self.quarantine.extend(c.quarantine.iter().cloned());
        if let Some(r) = &c.roster {
            self.roster = Some(r.clone());
        }
        Ok(())
    }
}

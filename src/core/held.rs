//! Deltas that arrived ahead of a gap in their author's chain, held
//! (bounded) until the gap fills. Anything dropped here is fetched again by
//! the next frontier exchange, so the bound costs time, never data.

use std::collections::BTreeMap;

use super::delta::SignedDelta;
use super::ids::NodeId;

pub enum HoldOutcome {
    Held,
    /// The same delta is already held.
    Duplicate,
    /// A different delta with the same author and seq is already held.
    Conflict(SignedDelta),
    /// The buffer is full; the delta was not kept.
    Full,
}

#[derive(Default)]
pub struct Held {
    deltas: BTreeMap<(NodeId, u64), SignedDelta>,
    max: usize,
}

impl Held {
    pub fn new(max: usize) -> Self {
        Held {
            deltas: BTreeMap::new(),
            max,
        }
    }

    /// Holds `d`. `next_in_chain` deltas are about to be applied, so the
    /// bound (which is for deltas stuck behind a gap) does not apply.
    pub fn hold(&mut self, d: SignedDelta, next_in_chain: bool) -> HoldOutcome {
        let slot = (d.author(), d.seq());
        if let Some(existing) = self.deltas.get(&slot) {
            return if existing.hash() == d.hash() {
                HoldOutcome::Duplicate
            } else {
                HoldOutcome::Conflict(existing.clone())
            };
        }
        if !next_in_chain && self.deltas.len() >= self.max {
            return HoldOutcome::Full;
        }
        self.deltas.insert(slot, d);
        HoldOutcome::Held
    }

    pub fn contains(&self, d: &SignedDelta) -> bool {
        self.deltas
            .get(&(d.author(), d.seq()))
            .is_some_and(|h| h.hash() == d.hash())
    }

    pub fn take(&mut self, author: NodeId, seq: u64) -> Option<SignedDelta> {
        self.deltas.remove(&(author, seq))
    }

    /// Keeps only the deltas `keep` accepts (a roster change revoked some).
    pub fn retain(&mut self, mut keep: impl FnMut(&SignedDelta) -> bool) {
        self.deltas.retain(|_, d| keep(d));
    }

    pub fn contains_slot(&self, author: NodeId, seq: u64) -> bool {
        self.deltas.contains_key(&(author, seq))
    }

    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }
}

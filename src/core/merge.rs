//! The conflict rule. Per key the current value is that of the delta with
//! the highest `(HLC timestamp, author id, seq)`; a delete is a tombstone
//! that wins or loses by the same rule. The winner is a maximum over a set,
//! so it does not depend on the order deltas arrive in or on duplicates.
//!
//! `seq` only breaks ties between two deltas of one author with one
//! timestamp, which an honest clock never issues.

use super::delta::{Op, SignedDelta};
use super::hlc::Hlc;
use super::ids::NodeId;

/// The current state of a key: a reference to its winning delta (whose
/// value lives in the author's log, so values are stored once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef {
    pub hlc: Hlc,
    pub author: NodeId,
    pub seq: u64,
    pub deleted: bool,
}

impl RecordRef {
    pub fn of(delta: &SignedDelta) -> Self {
        RecordRef {
            hlc: delta.hlc(),
            author: delta.author(),
            seq: delta.seq(),
            deleted: delta.op() == Op::Delete,
        }
    }

    pub fn rank(&self) -> (Hlc, NodeId, u64) {
        (self.hlc, self.author, self.seq)
    }
}

/// The record after `incoming` meets `current`: `Some` when it changes.
pub fn resolve(current: Option<&RecordRef>, incoming: &RecordRef) -> Option<RecordRef> {
    match current {
        Some(cur) if cur.rank() >= incoming.rank() => None,
        _ => Some(*incoming),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(wall: u64, author: u8, deleted: bool) -> RecordRef {
        RecordRef {
            hlc: Hlc::new(wall, 0),
            author: NodeId([author; 32]),
            seq: 1,
            deleted,
        }
    }

    #[test]
    fn later_timestamp_wins_then_higher_author() {
        assert_eq!(
            resolve(Some(&r(5, 1, false)), &r(6, 0, false)),
            Some(r(6, 0, false))
        );
        assert_eq!(resolve(Some(&r(6, 0, false)), &r(5, 1, false)), None);
        assert_eq!(
            resolve(Some(&r(5, 1, false)), &r(5, 2, true)),
            Some(r(5, 2, true))
        );
        assert_eq!(resolve(Some(&r(5, 2, true)), &r(5, 1, false)), None);
        assert_eq!(resolve(None, &r(1, 1, false)), Some(r(1, 1, false)));
        assert_eq!(resolve(Some(&r(1, 1, false)), &r(1, 1, false)), None);
    }
}

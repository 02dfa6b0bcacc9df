//! Rebuilding a lost store from peers without forking the node's own log.
//!
//! A node that lost its store no longer knows how far its own log went,
//! but its peers do: every delta it wrote was pushed to the peers it links
//! with, and relayed on from there. So before it signs again it must hold
//! what each of them holds. That is only proof if the peer's own data is
//! whole: a peer that is itself rebuilding may not hold yet what it used
//! to, and a rebuild completed against it could fork the log.
//!
//! So a rebuilding node says so in every digest, naming the peers it still
//! waits for, and an exchange with a peer counts towards a rebuild only if
//! the peer is not rebuilding, or waits for nobody but this node. In the
//! second case the peer already holds what every one of its other peers
//! holds: whatever copies of this node's deltas passed through it are back
//! with it, so it vouches for them as well as an intact peer would. Two
//! nodes that lost their disks at once each finish against the other that
//! way; three or more waiting for each other in a ring wait for an
//! operator, which is safe (no write is signed).
//!
//! An exchange that counts records what the peer showed it holds; the peer
//! is witnessed once this node holds all of that.

use std::collections::BTreeMap;

use super::frontier::Frontier;
use super::ids::NodeId;

/// What a node says of its own store in its digests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Announce {
    /// Its store is whole.
    #[default]
    Intact,
    /// It is rebuilding, and still waits for these peers.
    Rebuilding { waiting_for: Vec<NodeId> },
}

impl Announce {
    /// Whether an exchange with a peer that announced this counts towards
    /// `me`'s rebuild.
    pub fn vouches_for(&self, me: &NodeId) -> bool {
        match self {
            Announce::Intact => true,
            Announce::Rebuilding { waiting_for } => waiting_for.iter().all(|p| p == me),
        }
    }
}

/// An unfinished rebuild: the peers still to witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuild {
    me: NodeId,
    /// `None` until an exchange with the peer counted; then what it showed
    /// it holds (seq per author), until this node holds as much.
    waiting: BTreeMap<NodeId, Option<BTreeMap<NodeId, u64>>>,
}

impl Rebuild {
    pub fn new(me: NodeId, waiting_for: impl IntoIterator<Item = NodeId>) -> Rebuild {
        let waiting = (waiting_for.into_iter())
            .filter(|p| *p != me)
            .map(|p| (p, None))
            .collect();
        Rebuild { me, waiting }
    }

    /// The peers still waited for, in id order.
    pub fn waiting_for(&self) -> impl Iterator<Item = &NodeId> {
        self.waiting.keys()
    }

    pub fn is_done(&self) -> bool {
        self.waiting.is_empty()
    }

    /// What this node says of itself in its digests.
    pub fn announce(&self) -> Announce {
        Announce::Rebuilding {
            waiting_for: self.waiting.keys().copied().collect(),
        }
    }

    /// A whole frontier exchange with `peer`, which last announced
    /// `theirs` (`None`: nothing yet on this link) and showed it holds
    /// `shown` (seq per author, as far as our roster accepts them).
    /// Returns whether it counted.
    pub fn exchanged(
        &mut self,
        peer: &NodeId,
        theirs: Option<&Announce>,
        shown: &[(NodeId, u64)],
    ) -> bool {
        let Some(slot) = self.waiting.get_mut(peer) else {
            return false;
        };
        if !theirs.is_some_and(|a| a.vouches_for(&self.me)) {
            return false;
        }
        let seqs = slot.get_or_insert_with(BTreeMap::new);
        for (author, seq) in shown {
            let s = seqs.entry(*author).or_default();
            *s = (*s).max(*seq);
        }
        true
    }

    /// This node's frontier moved (or an exchange counted): peers whose
    /// data it now holds are witnessed. Returns whether any was.
    pub fn settle(&mut self, mine: &Frontier) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|_, shown| match shown {
            None => true,
            Some(seqs) => seqs.iter().any(|(a, s)| mine.head(a).seq < *s),
        });
        self.waiting.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frontier::Head;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn holding(seqs: &[(u8, u64)]) -> Frontier {
        let mut f = Frontier::new();
        for (a, s) in seqs {
            f.set(
                id(*a),
                Head {
                    seq: *s,
                    hash: Default::default(),
                },
            );
        }
        f
    }

    #[test]
    fn a_peer_is_witnessed_once_its_data_is_held_not_when_its_frontier_is_seen() {
        let (me, hq) = (id(1), id(2));
        let mut r = Rebuild::new(me, [hq, me]);
        assert_eq!(
            r.announce(),
            Announce::Rebuilding {
                waiting_for: vec![hq]
            }
        );
        assert!(r.exchanged(&hq, Some(&Announce::Intact), &[(me, 20), (id(3), 5)]));
        assert!(!r.settle(&holding(&[(1, 19), (3, 5)])));
        assert!(!r.is_done(), "its own log is not back yet");
        assert!(r.settle(&holding(&[(1, 20), (3, 5)])));
        assert!(r.is_done());
    }

    #[test]
    fn a_rebuilding_peer_vouches_only_once_it_waits_for_nobody_else() {
        let (me, hq, ke) = (id(1), id(2), id(3));
        let mut r = Rebuild::new(me, [hq]);
        let waiting = |w: &[NodeId]| Announce::Rebuilding {
            waiting_for: w.to_vec(),
        };
        assert!(!r.exchanged(&hq, None, &[]), "nothing announced yet");
        assert!(!r.exchanged(&hq, Some(&waiting(&[me, ke])), &[]));
        r.settle(&Frontier::new());
        assert!(!r.is_done());
        assert!(r.exchanged(&hq, Some(&waiting(&[me])), &[(ke, 3)]));
        r.settle(&holding(&[(3, 3)]));
        assert!(r.is_done());
        // Not a peer it waits for: nothing changes.
        let mut r = Rebuild::new(me, [hq]);
        assert!(!r.exchanged(&ke, Some(&Announce::Intact), &[]));
    }

    #[test]
    fn two_nodes_rebuilding_at_once_finish_against_each_other() {
        // hq waits for every node; fr for hq and ke. Both lost their disks.
        let (hq, fr, ke) = (id(1), id(2), id(3));
        let mut at_hq = Rebuild::new(hq, [fr, ke]);
        let mut at_fr = Rebuild::new(fr, [hq, ke]);
        let held = holding(&[(3, 4)]);
        assert!(at_hq.exchanged(&ke, Some(&Announce::Intact), &[(ke, 4)]));
        assert!(at_fr.exchanged(&ke, Some(&Announce::Intact), &[(ke, 4)]));
        at_hq.settle(&held);
        at_fr.settle(&held);
        // Each now waits only for the other, so each vouches for the other.
        assert!(at_fr.exchanged(&hq, Some(&at_hq.announce()), &[(ke, 4)]));
        assert!(at_hq.exchanged(&fr, Some(&at_fr.announce()), &[(ke, 4)]));
        at_hq.settle(&held);
        at_fr.settle(&held);
        assert!(at_hq.is_done() && at_fr.is_done());
    }
}

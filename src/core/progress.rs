//! What a node knows of one peer's progress, and the lag and stall that
//! follow from it. The status call, the metrics and the status page all
//! read this, so they cannot disagree.
//!
//! Lag is measured from frontiers, never inferred from traffic: the peer's
//! side is what the peer itself last confirmed (its `Frontier`, an equal
//! digest, an `Ack`, or the deltas it sent), never what we merely sent it.
//! So a peer that silently stopped reading shows as behind, not in sync.
//! The "since" times are this node's clock, taken when the gap was first
//! seen, so author clock skew cannot distort them.

use std::collections::BTreeMap;

use super::frontier::Frontier;
use super::holds::Scope;
use super::ids::NodeId;

/// Seqs the peer confirmed holding, per author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's whole frontier (replaces what we knew: a peer that lost
    /// data, or retracted some, really holds less now); otherwise only
    /// some authors, merged upwards.
    pub whole: bool,
    pub seqs: Vec<(NodeId, u64)>,
}

/// One direction of a link's lag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    pub deltas: u64,
    /// When this node first saw the gap (0 deltas: `None`).
    pub since_ms: Option<u64>,
}

/// Both directions, as known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lags {
    /// Deltas we hold that the peer lacks.
    pub they_lack: Lag,
    /// Deltas the peer holds that we lack.
    pub we_lack: Lag,
}

impl Lags {
    pub fn in_sync(&self) -> bool {
        self.they_lack.deltas == 0 && self.we_lack.deltas == 0
    }
}

/// What this node knows of one peer, kept across links.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// `None` until the peer first tells us anything.
    known: Option<BTreeMap<NodeId, u64>>,
    lags: Lags,
    /// Last message of any kind from the peer.
    pub last_contact_ms: Option<u64>,
    /// Last time both sides were known to hold the same deltas.
    pub last_sync_ms: Option<u64>,
    /// Last time the gap shrank: the peer confirmed more, or sent us some.
    last_progress_ms: Option<u64>,
    /// The authors the link exchanges (both ends hold them): what one end
    /// does not hold is no lag.
    scope: Scope,
}

impl Progress {
    /// Lag counts only the authors in `scope` from now on.
    pub fn set_scope(&mut self, scope: &Scope) {
        if self.scope != *scope {
            self.scope = scope.clone();
        }
    }

    /// The peer confirmed holding `view`.
    pub fn observe(&mut self, view: &PeerView, mine: &Frontier, now_ms: u64) {
        self.last_contact_ms = Some(now_ms);
        let known = self.known.get_or_insert_with(BTreeMap::new);
        let mut advanced = false;
        if view.whole {
            let fresh: BTreeMap<NodeId, u64> = view.seqs.iter().copied().collect();
            advanced = fresh
                .iter()
                .any(|(a, s)| known.get(a).is_none_or(|old| s > old));
            *known = fresh;
        } else {
            for &(a, s) in &view.seqs {
                let held = known.entry(a).or_default();
                if s > *held {
                    *held = s;
                    advanced = true;
                }
            }
        }
        if advanced {
            self.last_progress_ms = Some(now_ms);
        }
        self.settle(mine, now_ms);
    }

    /// Our frontier moved: by a local write or by deltas from anyone.
    /// `from_peer`: this peer sent them, which is progress on its link.
    pub fn local_change(&mut self, mine: &Frontier, from_peer: bool, now_ms: u64) {
        if from_peer {
            self.last_progress_ms = Some(now_ms);
        }
        self.settle(mine, now_ms);
    }

    fn settle(&mut self, mine: &Frontier, now_ms: u64) {
        let Some(known) = &self.known else {
            return;
        };
        let (they, we) = gaps(known, mine, &self.scope);
        let track = |deltas: u64, old: Lag| Lag {
            deltas,
            since_ms: (deltas > 0).then(|| old.since_ms.unwrap_or(now_ms)),
        };
        self.lags = Lags {
            they_lack: track(they, self.lags.they_lack),
            we_lack: track(we, self.lags.we_lack),
        };
        if self.lags.in_sync() {
            self.last_sync_ms = Some(now_ms);
        }
    }

    /// Lag both ways, or `None` while the peer has told us nothing.
    pub fn lags(&self) -> Option<Lags> {
        self.known.as_ref().map(|_| self.lags)
    }

    /// The peer's confirmed seq for `author` (0 if unknown).
    pub fn known_seq(&self, author: &NodeId) -> u64 {
        self.confirmed(author).unwrap_or(0)
    }

    /// The peer's confirmed seq for `author`: `None` until the peer has
    /// told us what it holds, 0 if it holds none of the author's log.
    pub fn confirmed(&self, author: &NodeId) -> Option<u64> {
        (self.known.as_ref()).map(|k| k.get(author).copied().unwrap_or(0))
    }

    /// Since when the link has been behind without progress, if that has
    /// lasted at least `stall_after_ms`. A link that is behind and moving,
    /// however slowly, is lagging, not stalled.
    pub fn stalled_since(&self, now_ms: u64, stall_after_ms: u64) -> Option<u64> {
        let behind = [self.lags.they_lack.since_ms, self.lags.we_lack.since_ms]
            .into_iter()
            .flatten()
            .min()?;
        let quiet = behind.max(self.last_progress_ms.unwrap_or(0));
        (now_ms.saturating_sub(quiet) >= stall_after_ms).then_some(quiet)
    }
}

/// (deltas we hold that they lack, deltas they hold that we lack).
fn gaps(known: &BTreeMap<NodeId, u64>, mine: &Frontier, scope: &Scope) -> (u64, u64) {
    let they = mine
        .iter()
        .filter(|(a, _)| scope.contains(a))
        .map(|(a, h)| h.seq.saturating_sub(known.get(a).copied().unwrap_or(0)))
        .sum();
    let we = known
        .iter()
        .filter(|(a, _)| scope.contains(a))
        .map(|(a, &s)| s.saturating_sub(mine.head(a).seq))
        .sum();
    (they, we)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DeltaHash, Head};

    fn author(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn frontier(heads: &[(u8, u64)]) -> Frontier {
        let mut f = Frontier::new();
        for &(a, seq) in heads {
            f.set(
                author(a),
                Head {
                    seq,
                    hash: DeltaHash([a; 32]),
                },
            );
        }
        f
    }

    fn view(whole: bool, seqs: &[(u8, u64)]) -> PeerView {
        PeerView {
            whole,
            seqs: seqs.iter().map(|&(a, s)| (author(a), s)).collect(),
        }
    }

    #[test]
    fn unknown_until_the_peer_says_something() {
        let mut p = Progress::default();
        p.local_change(&frontier(&[(1, 5)]), false, 10);
        assert_eq!(p.lags(), None);
        assert_eq!(p.stalled_since(1_000_000, 1), None);
        assert_eq!(p.last_sync_ms, None);
    }

    #[test]
    fn lag_both_ways_from_the_frontiers() {
        let mine = frontier(&[(1, 10), (2, 3)]);
        let mut p = Progress::default();
        p.observe(&view(true, &[(1, 4), (2, 5), (3, 2)]), &mine, 100);
        let lags = p.lags().unwrap();
        assert_eq!(
            lags.they_lack,
            Lag {
                deltas: 6,
                since_ms: Some(100)
            }
        );
        assert_eq!(
            lags.we_lack,
            Lag {
                deltas: 4,
                since_ms: Some(100)
            }
        );
        assert!(!lags.in_sync());
        assert_eq!(p.last_sync_ms, None);
    }

    #[test]
    fn the_gap_keeps_its_first_seen_time_until_closed() {
        let mut mine = frontier(&[(1, 1)]);
        let mut p = Progress::default();
        p.observe(&view(true, &[(1, 1)]), &mine, 100);
        assert!(p.lags().unwrap().in_sync());
        assert_eq!(p.last_sync_ms, Some(100));

        mine = frontier(&[(1, 3)]);
        p.local_change(&mine, false, 200);
        mine = frontier(&[(1, 4)]);
        p.local_change(&mine, false, 300);
        let they = p.lags().unwrap().they_lack;
        assert_eq!(
            they,
            Lag {
                deltas: 3,
                since_ms: Some(200)
            }
        );

        p.observe(&view(false, &[(1, 4)]), &mine, 400);
        assert!(p.lags().unwrap().in_sync());
        assert_eq!(p.last_sync_ms, Some(400));
        assert_eq!(p.lags().unwrap().they_lack.since_ms, None);
    }

    #[test]
    fn partial_views_only_raise_a_whole_one_replaces() {
        let mine = frontier(&[(1, 9)]);
        let mut p = Progress::default();
        p.observe(&view(true, &[(1, 9)]), &mine, 1);
        p.observe(&view(false, &[(1, 3)]), &mine, 2);
        assert_eq!(p.known_seq(&author(1)), 9, "an older ack does not lower it");
        // The peer was rebuilt and really holds less now.
        p.observe(&view(true, &[(1, 3)]), &mine, 3);
        assert_eq!(p.known_seq(&author(1)), 3);
        assert_eq!(p.lags().unwrap().they_lack.deltas, 6);
    }

    #[test]
    fn stalled_only_when_behind_without_progress_for_the_whole_time() {
        let mut mine = frontier(&[(1, 1)]);
        let mut p = Progress::default();
        p.observe(&view(true, &[(1, 1)]), &mine, 0);
        // In sync: never stalled, however long it is quiet.
        assert_eq!(p.stalled_since(1_000_000, 10), None);

        mine = frontier(&[(1, 5)]);
        p.local_change(&mine, false, 1_000);
        assert_eq!(p.stalled_since(1_009, 10), None, "behind for 9 ms");
        assert_eq!(p.stalled_since(1_010, 10), Some(1_000));

        // Progress (the peer confirms 3 of the 4) restarts the clock.
        p.observe(&view(false, &[(1, 4)]), &mine, 1_050);
        assert_eq!(p.stalled_since(1_055, 10), None);
        assert_eq!(p.stalled_since(1_060, 10), Some(1_050));

        // Deltas from the peer are progress too.
        p.local_change(&mine, true, 1_070);
        assert_eq!(p.stalled_since(1_075, 10), None);

        p.observe(&view(false, &[(1, 5)]), &mine, 1_080);
        assert_eq!(p.stalled_since(9_999_999, 10), None);
    }
}

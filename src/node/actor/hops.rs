//! The tree from this node: the hop towards each member it does not link
//! with, the hops its subtree reported (`node::hops`), and the report it
//! sends up itself.

use std::collections::{BTreeMap, BTreeSet};

use super::Actor;
use super::LinkId;
use crate::core::{Member, NodeId, Roster};
use crate::node::hops::HOPS_MAX;
use crate::node::status::{Hop, PeerState, PeerStatus, Via};

impl Actor {
    /// Names, for each member held here that this node does not link
    /// with, the member next on the tree's path to it (from `path`, ours),
    /// and what that one confirmed holding of its log.
    pub(super) fn route(&self, peers: &mut [PeerStatus], path: &[&str]) {
        let linked: Vec<(Vec<String>, String, bool)> = (peers.iter())
            .filter(|p| !matches!(p.state, PeerState::NoLink | PeerState::Inactive))
            .filter(|p| p.state != PeerState::Operator)
            .map(|p| (p.path.clone(), p.name.clone(), p.links > 0))
            .collect();
        let path: Vec<String> = path.iter().map(|p| p.to_string()).collect();
        for p in peers.iter_mut() {
            if p.state != PeerState::NoLink || !p.held {
                continue;
            }
            let Some(hop) = crate::core::units::next_hop(&path, &p.path) else {
                continue;
            };
            // The linked member at that place, one with a link open first.
            let Some((_, name, _)) = (linked.iter())
                .filter(|(at, _, _)| at[..] == *hop)
                .max_by_key(|(_, name, open)| (*open, std::cmp::Reverse(name.clone())))
            else {
                continue;
            };
            let hop_seq = (self.peers.get(name)).and_then(|e| e.progress.confirmed(&p.id));
            p.via = Some(Via {
                hop: name.clone(),
                hop_seq,
            });
        }
        let board = self.board(peers);
        let paths: BTreeMap<String, Vec<String>> = (peers.iter())
            .map(|p| (p.name.clone(), p.path.clone()))
            .collect();
        for p in peers.iter_mut().filter(|p| p.via.is_some()) {
            if p.path.len() > path.len() + 1 && p.path.starts_with(&path) {
                p.reported = reported(&board, &paths, path.len() + 2, p);
            }
        }
    }

    /// Refreshes the report for the node above, and if a hop in it came,
    /// went or changed state, sends a digest (which carries it) to each
    /// node above now, rather than at the next anti-entropy round: a chain
    /// that breaks shows at HQ within a round trip a level.
    pub(super) fn tell_hops(&mut self) {
        if !self.report_hops(self.wiring.clock.now_ms()) {
            return;
        }
        let roster = self.replica.roster();
        let mine = roster.member(&self.me());
        let above: Vec<LinkId> = (self.links.iter())
            .filter(|(_, l)| {
                let peer = roster.member(&l.peer.id);
                mine.zip(peer).is_some_and(|(m, p)| roster.is_below(m, p))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in above {
            let link = self.links.get_mut(&id).expect("listed");
            let digest = link.session.digest(&self.replica);
            link.pending.push_back(digest);
            self.pump(id);
        }
    }

    /// Whether the member `id` sits directly below this node.
    pub(super) fn is_below_me(&self, id: &NodeId) -> bool {
        let roster = self.replica.roster();
        let (m, mine) = (roster.member(id), roster.member(&self.me()));
        m.zip(mine)
            .is_some_and(|(m, mine)| roster.is_below(m, mine))
    }

    /// Refreshes the report for the node above: this node's links to each
    /// node below it, and what each of those that is linked now reported
    /// of its own branch. Returns whether a hop came, went or changed state.
    pub(super) fn report_hops(&self, now_ms: u64) -> bool {
        let roster = self.replica.roster();
        let Some(mine) = roster.member(&self.me()) else {
            return false;
        };
        let above: BTreeSet<String> = (roster.members())
            .filter(|m| roster.is_below(mine, m))
            .map(|m| m.name.clone())
            .collect();
        let mut hops = Vec::new();
        for m in roster.members().filter(|m| roster.is_below(m, mine)) {
            let p = self.peer_status(m, true, now_ms);
            let lags = p.lags.unwrap_or_default();
            hops.push(Hop {
                from: self.wiring.name.clone(),
                to: p.name.clone(),
                state: p.state,
                they_lack: lags.they_lack.deltas,
                we_lack: lags.we_lack.deltas,
                contact_ms: p.last_contact_ms,
            });
            if p.links > 0 {
                hops.extend(self.hops_within(m));
            }
        }
        hops.truncate(HOPS_MAX);
        self.wiring.hops.set_report(above, hops)
    }

    /// What the members below this node that are linked now reported.
    fn board(&self, peers: &[PeerStatus]) -> Vec<Hop> {
        let roster = self.replica.roster();
        (peers.iter())
            .filter(|p| p.below && p.links > 0)
            .filter_map(|p| roster.by_name(&p.name))
            .flat_map(|m| self.hops_within(m))
            .collect()
    }

    fn hops_within(&self, m: &Member) -> Vec<Hop> {
        within(self.replica.roster(), m, self.wiring.hops.from(&m.name))
    }
}

/// Of what `m` reported, the hops inside its own branch: a node may
/// misreport its subtree, never another's.
fn within(roster: &Roster, m: &Member, hops: Vec<Hop>) -> Vec<Hop> {
    let branch = roster.path_of(m);
    let inside =
        |name: &str| (roster.by_name(name)).is_some_and(|n| roster.path_of(n).starts_with(&branch));
    (hops.into_iter())
        .filter(|h| h.from != h.to && inside(&h.from) && inside(&h.to))
        .collect()
}

/// For `p`, below a node below this one: walking down from the first
/// place this node does not link with (at depth `first`), the first
/// reported hop that is down, else the hop into `p`, else the deepest one
/// reported.
fn reported(
    board: &[Hop],
    paths: &BTreeMap<String, Vec<String>>,
    first: usize,
    p: &PeerStatus,
) -> Option<Hop> {
    let mut last = None;
    for depth in first..=p.path.len() {
        let place = &p.path[..depth];
        let into: Vec<&Hop> = (board.iter())
            .filter(|h| paths.get(&h.to).is_some_and(|at| at[..] == *place))
            .filter(|h| depth < p.path.len() || h.to == p.name)
            .collect();
        match into.iter().find(|h| !h.is_down()).or(into.first()) {
            None => break,
            Some(h) if h.is_down() => return Some((*h).clone()),
            Some(h) => last = Some((*h).clone()),
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Above;
    use crate::testkit::{roster, Author};

    fn hop(from: &str, to: &str, state: PeerState) -> Hop {
        Hop {
            from: from.into(),
            to: to.into(),
            state,
            they_lack: 0,
            we_lack: 0,
            contact_ms: None,
        }
    }

    /// HQ; office-a (region a) and office-b; unit-u under a, unit-w
    /// under unit-u, unit-v under b.
    fn tree() -> Roster {
        let authors = [
            Author::hq(1),
            Author::region(2, "a"),
            Author::region(3, "b"),
            Author::unit(4, "u"),
            Author::unit(5, "w"),
            Author::unit(6, "v"),
        ];
        let mut r = roster(authors.iter());
        r.units.insert("u", Above::Region("a".into()));
        r.units.insert("w", Above::Unit("u".into()));
        r.units.insert("v", Above::Region("b".into()));
        r
    }

    #[test]
    fn a_report_is_kept_only_inside_its_reporters_branch() {
        let r = tree();
        let a = r.by_name("office-a").unwrap();
        let kept = within(
            &r,
            a,
            vec![
                hop("office-a", "unit-u", PeerState::InSync),
                hop("unit-u", "unit-w", PeerState::Unreachable),
                // About another region's branch, or about HQ: dropped.
                hop("office-b", "unit-v", PeerState::Unreachable),
                hop("office-a", "hq", PeerState::Stalled),
                hop("office-a", "nobody", PeerState::InSync),
            ],
        );
        let names: Vec<_> = kept.iter().map(|h| h.to.as_str()).collect();
        assert_eq!(names, ["unit-u", "unit-w"]);
    }

    #[test]
    fn the_first_hop_down_on_the_way_is_the_one_reported() {
        let r = tree();
        let peers: Vec<(String, Vec<String>)> = (r.members())
            .map(|m| {
                let path = r.path_of(m).iter().map(|p| p.to_string()).collect();
                (m.name.clone(), path)
            })
            .collect();
        let paths: BTreeMap<String, Vec<String>> = peers.iter().cloned().collect();
        let w = PeerStatus {
            path: paths["unit-w"].clone(),
            ..PeerStatus::blank("unit-w")
        };
        // From HQ (depth 0), the first hop not its own is into depth 2.
        let up = [
            hop("office-a", "unit-u", PeerState::InSync),
            hop("unit-u", "unit-w", PeerState::Lagging),
        ];
        assert_eq!(reported(&up, &paths, 2, &w), Some(up[1].clone()));
        let broken = [
            hop("office-a", "unit-u", PeerState::Unreachable),
            hop("unit-u", "unit-w", PeerState::InSync),
        ];
        assert_eq!(reported(&broken, &paths, 2, &w), Some(broken[0].clone()));
        // Nothing reported into unit-w: the deepest hop that was.
        assert_eq!(reported(&up[..1], &paths, 2, &w), Some(up[0].clone()));
        assert_eq!(reported(&[], &paths, 2, &w), None);
    }
}

//! Partial replication through the core: over generated trees, with any
//! node configured to hold only its branch (`[sync] holds = "tree"`), and
//! writes at every node before and after the links open, every node ends
//! holding exactly what its place and the nodes between it and each
//! author let reach it: an author's whole log if every node on the tree
//! path from the author holds that author, nothing of it otherwise. No
//! honest delta is refused, and afterwards every link's idle check is one
//! round trip, and no node was sent a delta it does not hold.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use fedsync::core::{
    Above, Holds, Limits, MemStore, Op, PeerMsg, Replica, Roster, Scope, Session, SignedDelta,
};
use fedsync::testkit::Author;

const NOW: u64 = 1_800_000_000_000;

/// Per region: per unit, whether it hangs from the unit before it.
fn tree() -> impl Strategy<Value = Vec<Vec<bool>>> {
    let units = prop::collection::vec(prop::bool::weighted(0.4), 0..4);
    prop::collection::vec(units, 1..4)
}

struct Node {
    author: Author,
    /// The node it dials: `None` for HQ.
    parent: Option<usize>,
    replica: Replica<MemStore>,
    sessions: BTreeMap<usize, Session>,
}

struct Net {
    nodes: Vec<Node>,
    queue: VecDeque<(usize, usize, PeerMsg)>,
    written: Vec<usize>,
}

/// An author, the node it dials, and its unit with what that hangs from.
type Placed = (Author, Option<usize>, Option<(String, Above)>);

/// HQ is node 0; then each region, followed by its units.
fn build(t: &[Vec<bool>], partial: &[bool]) -> (Net, Roster) {
    let mut authors: Vec<Placed> = vec![(Author::hq(1), None, None)];
    for (i, units) in t.iter().enumerate() {
        let region = format!("r{i}");
        let at = authors.len();
        authors.push((
            Author::region(authors.len() as u64 + 1, &region),
            Some(0),
            None,
        ));
        for (j, nested) in units.iter().enumerate() {
            let unit = format!("u{i}-{j}");
            let seed = authors.len() as u64 + 1;
            let (parent, above) = match (*nested, j) {
                (true, j) if j > 0 => (authors.len() - 1, Above::Unit(format!("u{i}-{}", j - 1))),
                _ => (at, Above::Region(region.clone())),
            };
            authors.push((Author::unit(seed, &unit), Some(parent), Some((unit, above))));
        }
    }
    let mut roster = Roster::new(1, authors.iter().map(|(a, _, _)| a.member()));
    for (_, _, unit) in &authors {
        if let Some((u, above)) = unit {
            roster.units.insert(u.clone(), above.clone());
        }
    }
    let nodes = (authors.into_iter().enumerate())
        .map(|(i, (author, parent, _))| {
            let mut replica =
                Replica::open(MemStore::default(), roster.clone(), Limits::default()).unwrap();
            let holds = if partial[i % partial.len()] {
                Holds::Tree
            } else {
                Holds::All
            };
            replica.set_holds(author.id(), holds);
            Node {
                author,
                parent,
                replica,
                sessions: BTreeMap::new(),
            }
        })
        .collect();
    let net = Net {
        nodes,
        queue: VecDeque::new(),
        written: Vec::new(),
    };
    (net, roster)
}

impl Net {
    fn write(&mut self, i: usize, n: usize) {
        for k in 0..n {
            let node = &mut self.nodes[i];
            let key = format!("{}k{k}", node.author.space());
            let d = (node.replica)
                .write(&node.author.key, &key, Op::Put, vec![k as u8], NOW)
                .unwrap();
            self.written[i] += 1;
            self.relay(i, &[d], None);
        }
    }

    /// Every node dials its parent, one link after another from `first`
    /// on (so some open to a parent that already holds others' logs), each
    /// settling before the next opens; both ends open with a digest.
    fn connect(&mut self, first: usize) {
        let n = self.nodes.len();
        for c in (0..n).map(|k| (first + k) % n) {
            let Some(p) = self.nodes[c].parent else {
                continue;
            };
            for (x, y) in [(c, p), (p, c)] {
                let session = Session::with_peer(self.nodes[y].author.id());
                let opening = session.opening(&self.nodes[x].replica, x == c);
                self.nodes[x].sessions.insert(y, session);
                self.queue.push_back((x, y, opening));
            }
            self.run();
        }
    }

    fn drain(&mut self, i: usize, to: usize, mut out: Vec<PeerMsg>) {
        let node = &mut self.nodes[i];
        let session = node.sessions.get_mut(&to).unwrap();
        while let Some(batch) = session.next_batch(&node.replica, 5, 1 << 20).unwrap() {
            out.push(PeerMsg::Deltas(batch));
        }
        for m in out {
            self.queue.push_back((i, to, m));
        }
    }

    fn relay(&mut self, i: usize, deltas: &[SignedDelta], except: Option<usize>) {
        let peers: Vec<usize> = self.nodes[i].sessions.keys().copied().collect();
        for p in peers.into_iter().filter(|p| Some(*p) != except) {
            let pushed = self.nodes[i].sessions.get_mut(&p).unwrap().push(deltas);
            self.drain(i, p, pushed.into_iter().collect());
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((from, to, msg)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the exchange does not settle");
            let node = &mut self.nodes[to];
            let session = node.sessions.get_mut(&from).unwrap();
            let r = session.handle(msg, &mut node.replica, "peer", NOW).unwrap();
            if let Some(report) = &r.ingest {
                assert!(report.refused.is_empty(), "{:?}", report.refused);
            }
            self.drain(to, from, r.send);
            if let Some(report) = r.ingest {
                self.relay(to, &report.applied, Some(from));
            }
        }
    }

    /// The nodes from `a` (excluded) to `x` (included) along the tree.
    fn path(&self, a: usize, x: usize) -> Vec<usize> {
        let up = |mut n: usize| {
            let mut v = vec![n];
            while let Some(p) = self.nodes[n].parent {
                v.push(p);
                n = p;
            }
            v
        };
        let (from_a, from_x) = (up(a), up(x));
        let meet = *from_a.iter().find(|n| from_x.contains(n)).unwrap();
        let mut path: Vec<usize> = from_a.into_iter().take_while(|n| *n != meet).collect();
        path.push(meet);
        path.extend(
            from_x
                .into_iter()
                .take_while(|n| *n != meet)
                .collect::<Vec<_>>()
                .into_iter()
                .rev(),
        );
        path.retain(|n| *n != a);
        path
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_node_holds_exactly_what_its_branch_and_the_path_allow(
        t in tree(),
        partial in prop::collection::vec(any::<bool>(), 1..12),
        before in prop::collection::vec(0usize..3, 1..12),
        after in prop::collection::vec(0usize..3, 1..12),
        first in 0usize..16,
    ) {
        let (mut net, roster) = build(&t, &partial);
        let n = net.nodes.len();
        net.written = vec![0; n];
        for i in 0..n {
            net.write(i, before[i % before.len()]);
        }
        net.connect(first);
        for i in 0..n {
            net.write(i, after[i % after.len()]);
        }
        net.run();

        let scopes: Vec<Scope> = (net.nodes.iter())
            .map(|m| Scope::of(&roster, &m.author.id(), m.replica.holds()))
            .collect();
        for x in 0..n {
            for a in 0..n {
                let author = net.nodes[a].author.id();
                let reaches = net.path(a, x).iter().all(|y| scopes[*y].contains(&author));
                let want = if reaches { net.written[a] as u64 } else { 0 };
                let got = net.nodes[x].replica.frontier().head(&author).seq;
                prop_assert_eq!(got, want, "node {} holding author {}", x, a);
            }
        }
        // Nothing was sent that its receiver does not hold.
        for (i, m) in net.nodes.iter().enumerate() {
            prop_assert_eq!(m.replica.counters().unheld, 0, "node {} was sent what it drops", i);
        }
        // Idle: each link's check is one round trip, answered InSync.
        for c in 0..n {
            let Some(p) = net.nodes[c].parent else { continue };
            for (x, y) in [(c, p), (p, c)] {
                let digest = net.nodes[x].sessions[&y].digest(&net.nodes[x].replica);
                let node = &mut net.nodes[y];
                let r = node.sessions.get_mut(&x).unwrap().handle(digest, &mut node.replica, "x", NOW).unwrap();
                prop_assert!(matches!(r.send.as_slice(), [PeerMsg::InSync(_)]), "{:?}", r.send);
                prop_assert!(node.sessions[&x].in_sync(&node.replica));
                let node = &mut net.nodes[x];
                let back = node.sessions.get_mut(&y).unwrap().handle(r.send[0].clone(), &mut node.replica, "y", NOW).unwrap();
                prop_assert!(back.send.is_empty());
                prop_assert!(node.sessions[&y].in_sync(&node.replica));
            }
        }
    }
}

#[test]
fn a_partial_node_drops_what_it_does_not_hold_and_keeps_its_frontier() {
    let (mut net, _) = build(&[vec![false, false]], &[false, false, false, true]);
    // Node 3 is unit u0-1, partial; node 0 (HQ) and a sibling's writes are
    // held, but a stranger region's are not: add one.
    let mut stranger = Author::region(99, "r9");
    let mut roster = net.nodes[3].replica.roster().clone();
    roster.insert(stranger.member());
    roster.version += 1;
    let node = &net.nodes[3];
    let mut replica = Replica::open(MemStore::default(), roster, Limits::default()).unwrap();
    replica.set_holds(node.author.id(), Holds::Tree);
    let before = replica.digest();
    let foreign: Vec<SignedDelta> = (0..3).map(|i| stranger.put("k", &[i], NOW)).collect();
    let report = replica.ingest(foreign, "hq", NOW).unwrap();
    assert_eq!((report.unheld, report.applied.len()), (3, 0));
    assert!(report.refused.is_empty());
    assert_eq!(replica.digest(), before);
    assert_eq!(replica.counters().unheld, 3);
    // Its own sibling's deltas it takes.
    let sibling = &mut net.nodes[2].author;
    let report = replica
        .ingest(vec![sibling.put("k", b"v", NOW)], "r0", NOW)
        .unwrap();
    assert_eq!(report.applied.len(), 1);
}

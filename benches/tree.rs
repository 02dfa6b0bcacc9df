//! The organisation's tree through the sync core, in one process: 1 HQ, 20
//! regions and 10 municipal units under each (221 nodes), each dialling the
//! node above it, messages delivered in order over an in-memory network.
//! Every region and unit submits its quarter's report and writes report
//! rows of about 420 bytes. Measured, in one run:
//!
//! - the peer-message bytes (protobuf, uncompressed batches) a unit
//!   holding only its branch (`holds = "tree"`) receives, against a unit
//!   in the same place holding everything;
//! - write-to-visible in hops, from a unit to HQ and to a sibling;
//! - HQ's aggregate over all 220 parts (`--by unit`): median of 11.
//!
//! Time on a line is not simulated here; `benches/links.rs` measures the
//! field's lines on real processes.
//!
//! Run: `cargo bench --bench tree`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use prost::Message;

use fedsync::core::report::aggregate::{compute, Context};
use fedsync::core::report::{submit, Schema, Submission, Submitter};
use fedsync::core::{Above, Holds, Limits, MemStore, Op, PeerMsg, Replica, Roster, Session};
use fedsync::rpc::pb;
use fedsync::testkit::Author;

const NOW: u64 = 1_800_000_000_000;
const REGIONS: usize = 20;
const UNITS: usize = 10;
const ROWS: usize = 20;

struct Node {
    author: Author,
    parent: Option<usize>,
    replica: Replica<MemStore>,
    sessions: BTreeMap<usize, Session>,
    bytes_in: u64,
}

struct Net {
    nodes: Vec<Node>,
    queue: VecDeque<(usize, usize, PeerMsg)>,
}

/// Node 0 is HQ; region `i` is node `1 + i * (UNITS + 1)`, its units follow.
fn build(partial: &[usize]) -> Net {
    let mut specs: Vec<(Author, Option<usize>)> = vec![(Author::hq(1), None)];
    let mut units = Vec::new();
    for i in 0..REGIONS {
        let region = format!("r{i:02}");
        let at = specs.len();
        specs.push((Author::region(specs.len() as u64 + 1, &region), Some(0)));
        for j in 0..UNITS {
            let unit = format!("u{i:02}-{j}");
            units.push((unit.clone(), Above::Region(region.clone())));
            specs.push((Author::unit(specs.len() as u64 + 1, &unit), Some(at)));
        }
    }
    let mut roster = Roster::new(1, specs.iter().map(|(a, _)| a.member()));
    for (u, above) in units {
        roster.units.insert(u, above);
    }
    let nodes = (specs.into_iter().enumerate())
        .map(|(i, (author, parent))| {
            let mut replica =
                Replica::open(MemStore::default(), roster.clone(), Limits::default()).unwrap();
            if partial.contains(&i) {
                replica.set_holds(author.id(), Holds::Tree);
            }
            Node {
                author,
                parent,
                replica,
                sessions: BTreeMap::new(),
                bytes_in: 0,
            }
        })
        .collect();
    Net {
        nodes,
        queue: VecDeque::new(),
    }
}

fn row(i: usize, j: usize) -> Vec<u8> {
    format!(
        r#"{{"date":"2026-09-{:02}","activity":"first-aid training for volunteers","squad":"squad-{j}","participants":{},"hours":{},"notes":"held at the municipal centre with the regional trainer; materials from the national office; follow-up session planned for next month"}}"#,
        1 + j % 28,
        10 + i % 30,
        2 + j % 6
    )
    .into_bytes()
}

impl Net {
    fn send(&mut self, from: usize, to: usize, msg: PeerMsg) {
        self.nodes[to].bytes_in += pb::PeerMessage::from(&msg).encoded_len() as u64;
        self.queue.push_back((from, to, msg));
    }

    fn drain(&mut self, i: usize, to: usize, mut out: Vec<PeerMsg>) {
        let node = &mut self.nodes[i];
        let session = node.sessions.get_mut(&to).unwrap();
        while let Some(b) = session.next_batch(&node.replica, 1000, 256 << 10).unwrap() {
            out.push(PeerMsg::Deltas(b));
        }
        for m in out {
            self.send(i, to, m);
        }
    }

    fn relay(&mut self, i: usize, deltas: &[fedsync::core::SignedDelta], except: Option<usize>) {
        let peers: Vec<usize> = self.nodes[i].sessions.keys().copied().collect();
        for p in peers.into_iter().filter(|p| Some(*p) != except) {
            let pushed = self.nodes[i].sessions.get_mut(&p).unwrap().push(deltas);
            self.drain(i, p, pushed.into_iter().collect());
        }
    }

    fn connect(&mut self) {
        for c in 0..self.nodes.len() {
            let Some(p) = self.nodes[c].parent else {
                continue;
            };
            for (x, y) in [(c, p), (p, c)] {
                let s = Session::with_peer(self.nodes[y].author.id());
                let opening = s.opening(&self.nodes[x].replica, x == c);
                self.nodes[x].sessions.insert(y, s);
                self.send(x, y, opening);
            }
        }
    }

    /// Delivers until quiet; returns how many hops (delivery generations)
    /// it took for `watch` to hold `seq` of `author` at each watched node.
    fn run(&mut self, watch: Option<(fedsync::core::NodeId, u64, &[usize])>) -> Vec<usize> {
        let mut hops = vec![usize::MAX; watch.map_or(0, |w| w.2.len())];
        let mut generation = 0;
        while !self.queue.is_empty() {
            generation += 1;
            for _ in 0..self.queue.len() {
                let (from, to, msg) = self.queue.pop_front().unwrap();
                let node = &mut self.nodes[to];
                let session = node.sessions.get_mut(&from).unwrap();
                let r = session.handle(msg, &mut node.replica, "peer", NOW).unwrap();
                self.drain(to, from, r.send);
                if let Some(report) = r.ingest {
                    assert!(report.refused.is_empty(), "{:?}", report.refused);
                    self.relay(to, &report.applied, Some(from));
                }
            }
            if let Some((author, seq, at)) = watch {
                for (k, n) in at.iter().enumerate() {
                    let held = self.nodes[*n].replica.frontier().head(&author).seq >= seq;
                    if held && hops[k] == usize::MAX {
                        hops[k] = generation;
                    }
                }
            }
        }
        hops
    }
}

fn main() {
    // Unit 0 of region 0 holds its branch; unit 0 of region 1, the same
    // place, holds everything.
    let region = |i: usize| 1 + i * (UNITS + 1);
    let (partial, full) = (region(0) + 1, region(1) + 1);
    let mut net = build(&[partial]);
    let schema = Schema::default_set();
    let started = Instant::now();
    for i in 1..net.nodes.len() {
        let node = &mut net.nodes[i];
        let roster = node.replica.roster().clone();
        let member = node.author.member();
        let who = Submitter::of(&roster, &member, "operator");
        let sub = Submission {
            period: "2026-Q3".into(),
            metrics: [("volunteers".to_string(), 10 + (i % 7) as i64)].into(),
            ..Submission::default()
        };
        submit(
            &mut node.replica,
            &node.author.key,
            &schema,
            &who,
            &sub,
            NOW,
        )
        .unwrap();
        for j in 0..ROWS {
            let key = format!("{}rows/{j}", node.author.space());
            (node.replica)
                .write(&node.author.key, &key, Op::Put, row(i, j), NOW)
                .unwrap();
        }
    }
    net.connect();
    net.run(None);
    let converged = started.elapsed();
    let held = |n: usize| net.nodes[n].replica.frontier().total_deltas();
    println!(
        "221 nodes converged in {:.2} s (one process, {} deltas at HQ)",
        converged.as_secs_f64(),
        held(0)
    );
    let (p, f) = (&net.nodes[partial], &net.nodes[full]);
    println!(
        "unit holding its branch: {} deltas, {} bytes received; unit holding all: {} deltas, {} bytes; ratio {:.3}",
        held(partial),
        p.bytes_in,
        held(full),
        f.bytes_in,
        p.bytes_in as f64 / f.bytes_in as f64
    );

    // One more write at a unit: hops until HQ, a sibling and the partial
    // unit's sibling in another region hold it.
    let writer = region(0) + 2;
    let node = &mut net.nodes[writer];
    let key = format!("{}rows/late", node.author.space());
    let d = (node.replica)
        .write(&node.author.key, &key, Op::Put, row(0, 0), NOW)
        .unwrap();
    net.relay(writer, std::slice::from_ref(&d), None);
    let at = [0, partial, full];
    let hops = net.run(Some((d.author(), d.seq(), &at)));
    println!(
        "write-to-visible from a unit: HQ {} hops, a sibling {} hops, a unit in another region {} hops",
        hops[0], hops[1], hops[2]
    );

    let hq = &net.nodes[0];
    let mut times = Vec::new();
    let mut parts = 0;
    let mut last = None;
    for _ in 0..11 {
        let cx = Context {
            period: "2026-Q3".parse().unwrap(),
            schema: &schema,
            me: hq.author.id(),
            my_name: "hq",
            now_ms: NOW,
            stale_after_ms: 86_400_000,
            last_contact: &|_| Some(NOW),
            scope: None,
            approved_only: false,
        };
        let t = Instant::now();
        let agg = compute(&hq.replica, &cx).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        parts = agg.regions.len();
        last = Some(agg);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "HQ aggregate over {parts} parts: median {:.2} ms (of 11)",
        times[5]
    );
    // What publishing it costs every link: the signed document, as sent
    // (zstd, as links compress JSON), and its tidy export.
    let agg = last.expect("an aggregate");
    let doc = fedsync::core::report::document::sign(&agg, &hq.author.key);
    let packed = zstd::bulk::compress(doc.as_bytes(), 3).unwrap();
    let rows = fedsync::core::report::tidy::rows(&agg);
    println!(
        "HQ's signed aggregate: {} bytes, {} zstd ({:.2}x); {:.1} s at 64 kbit/s; export: {} tidy rows",
        doc.len(),
        packed.len(),
        packed.len() as f64 / doc.len() as f64,
        packed.len() as f64 * 8.0 / 64_000.0,
        rows.len()
    );
}

//! Write-to-visible along the organisation's tree, as real `fedsync run`
//! processes over a shaped line at every hop (`tests/common/shaper.rs`).
//!
//! `chain`: HQ; office-altai dialling HQ over 128 kbit/s, 150 ms one way; and the
//! municipal centres aleysk and biysk, which hold only their branch
//! (`holds = "tree"`), each dialling office-altai over 64 kbit/s, 400 ms
//! one way (an 800 ms round trip).
//!
//! Report rows of about 420 bytes, written one at a time, each once the
//! one before is visible everywhere it is measured:
//! - at centre-aleysk: until HQ can read it (2 hops up) and until its
//!   sibling centre-biysk can (up and down again through the region);
//! - at HQ: until centre-aleysk can read it (2 hops down);
//! - at centre-aleysk again, with the region's uplink to HQ cut as each
//!   tenth row is acknowledged: until HQ can read it, the cut rows
//!   waiting for office-altai to redial and resume.
//!
//! Reports p50, p99 and max of each against the sum of its hops' one-way
//! delays, and every process's peak RSS.
//!
//! `whole`: the organisation's tree of the issue, 1 HQ, 20 offices and 10
//! centres under each (221 processes, 220 shaped lines), with rows written
//! at a centre in each region in turn: at HQ, at the centre beside it, and
//! HQ's row back at the writer; HQ's, the offices' and the centres' RSS.
//!
//! `cargo bench --bench hops`; `FEDSYNC_BENCH_HOPS` picks scenarios
//! (`chain,whole`, the default), `FEDSYNC_BENCH_WRITES` rows each way
//! (default 100), `FEDSYNC_BENCH_REGIONS` and `FEDSYNC_BENCH_UNITS` (20 and
//! 10) the whole tree's size. `FEDSYNC_BENCH_KEEP=1` keeps the directory
//! (configs, stores, logs) and prints where.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/common/records.rs"]
mod records;
#[allow(dead_code)]
#[path = "../tests/common/shaper.rs"]
mod shaper;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::Node;
use fedsync::client::{Client, ClientConfig};
use fedsync::core::Above;
use fedsync::local::{LocalFederation, NodeSpec};
use records::report_row;
use shaper::{route_through, LinkSpec, Shaper};

/// The region's line to HQ: kbit/s, ms one way.
const UPLINK: (u64, u64) = (128, 150);
/// Each centre's line to its region.
const CENTRE: (u64, u64) = (64, 400);
/// A row is given this long to arrive before the run is called failed.
const WITHIN: Duration = Duration::from_secs(60);

/// One node of a tree to start: its spec, the node it dials and over
/// which line, and whether it holds only its branch.
struct Place {
    spec: NodeSpec,
    /// The node it dials and the line to it: kbit/s, ms one way.
    line: Option<(String, (u64, u64))>,
    partial: bool,
}

fn hq() -> (String, Place) {
    let spec = NodeSpec::hq("hq");
    (
        "hq".into(),
        Place {
            spec,
            line: None,
            partial: false,
        },
    )
}

/// A region's office, dialling HQ over [`UPLINK`].
fn office(region: &str) -> (String, Place) {
    let name = format!("office-{region}");
    let spec = NodeSpec::region(&name, region, &["hq"]);
    let line = Some(("hq".into(), UPLINK));
    (
        name,
        Place {
            spec,
            line,
            partial: false,
        },
    )
}

/// A unit's centre below `region`, dialling its office over [`CENTRE`]
/// and holding only its branch.
fn centre(unit: &str, region: &str) -> (String, Place) {
    let (name, office) = (format!("centre-{unit}"), format!("office-{region}"));
    let above = Above::Region(region.into());
    let spec = NodeSpec::unit(&name, unit, above, &[office.as_str()]);
    let line = Some((office, CENTRE));
    (
        name,
        Place {
            spec,
            line,
            partial: true,
        },
    )
}

struct Tree {
    dir: tempfile::TempDir,
    fed: LocalFederation,
    names: Vec<String>,
    /// In `names` order.
    nodes: Vec<Node>,
    lines: Vec<Shaper>,
}

impl Tree {
    /// Every node as a process, each dialling its parent through a line
    /// of its own.
    /// Every node as a process, each dialling its parent through a line
    /// of its own. Parents come first in `places`: each node listens on a
    /// port of its own choosing, and its children's lines lead to where it
    /// said it listens (a port chosen ahead could be taken by then, by one
    /// of the connections of the nodes already running).
    fn start(places: Vec<(String, Place)>) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let specs: Vec<NodeSpec> = places.iter().map(|(_, p)| p.spec.clone()).collect();
        let mut fed = LocalFederation::create(dir.path(), &specs, "[sync]\n").unwrap();
        fed.release_ports();
        let planned: HashMap<String, SocketAddr> = fed.nodes.iter().cloned().collect();
        let mut listening: HashMap<String, SocketAddr> = HashMap::new();
        let (mut lines, mut nodes) = (Vec::new(), Vec::new());
        for (name, place) in &places {
            let path = fed.config_path(name);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut text = text.replacen(
                &format!("listen = \"{}\"", planned[name]),
                "listen = \"127.0.0.1:0\"",
                1,
            );
            if place.partial {
                text = text.replacen("[sync]\n", "[sync]\nholds = \"tree\"\n", 1);
            }
            std::fs::write(&path, text).unwrap();
            if let Some((above, (kbit, ms))) = &place.line {
                let line = Shaper::start(listening[above], LinkSpec::kbit(*kbit, *ms));
                route_through(&path, planned[above], line.addr());
                lines.push(line);
            }
            let node = Node::start(&path).0;
            listening.insert(name.clone(), node.addr.parse().unwrap());
            nodes.push(node);
        }
        Tree {
            dir,
            fed,
            names: places.into_iter().map(|(n, _)| n).collect(),
            nodes,
            lines,
        }
    }

    fn node(&self, name: &str) -> &Node {
        &self.nodes[self.names.iter().position(|n| n == name).unwrap()]
    }

    fn client(&self, name: &str) -> Client {
        let mut c = ClientConfig::load(&self.fed.client_config()).unwrap();
        c.connect = self.node(name).addr.clone();
        Client::from_config(&c).unwrap()
    }

    /// Peak RSS of the named nodes, MiB: (least, median, most).
    fn rss<'a>(&self, names: impl Iterator<Item = &'a String>) -> (u64, u64, u64) {
        let mut mib: Vec<u64> = names.map(|n| self.node(n).rss().1).collect();
        mib.sort_unstable();
        (mib[0], mib[mib.len() / 2], mib[mib.len() - 1])
    }

    fn stop(self) {
        if std::env::var_os("FEDSYNC_BENCH_KEEP").is_some() {
            println!("  kept: {}", self.dir.keep().display());
        }
        for n in self.nodes {
            n.stop();
        }
        for l in self.lines {
            l.stop();
        }
    }
}

/// Milliseconds from `since` until `key` is readable through `c`.
async fn visible(c: &mut Client, key: &str, since: Instant) -> f64 {
    tokio::time::timeout(WITHIN, c.get_wait(key))
        .await
        .unwrap_or_else(|_| panic!("{key} not visible within {WITHIN:?}"))
        .unwrap();
    since.elapsed().as_secs_f64() * 1e3
}

fn line(what: &str, mut ms: Vec<f64>, one_way_ms: u64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} rows; the hops' one-way delays sum to {one_way_ms} ms)",
        at(0.5),
        at(0.99),
        at(1.0),
        ms.len()
    );
}

/// HQ, office-altai, and centres aleysk and biysk under it.
async fn chain(writes: u64) {
    let t = Tree::start(vec![
        hq(),
        office("ru-altai"),
        centre("aleysk", "ru-altai"),
        centre("biysk", "ru-altai"),
    ]);
    let (mut hq, mut aleysk, mut biysk) = (
        t.client("hq"),
        t.client("centre-aleysk"),
        t.client("centre-biysk"),
    );
    // Every link up and through its opening exchange.
    aleysk.put("units/aleysk/hello", b"{}").await.unwrap();
    visible(&mut biysk, "units/aleysk/hello", Instant::now()).await;
    visible(&mut hq, "units/aleysk/hello", Instant::now()).await;

    let (mut to_hq, mut to_sibling, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..writes {
        let key = format!("units/aleysk/rows/{i}");
        let row = report_row("centre-aleysk", i);
        let since = Instant::now();
        aleysk.put(&key, row.as_bytes()).await.unwrap();
        let (h, s) = tokio::join!(
            visible(&mut hq, &key, since),
            visible(&mut biysk, &key, since)
        );
        to_hq.push(h);
        to_sibling.push(s);
    }
    for i in 0..writes {
        let key = format!("hq/notices/{i}");
        let since = Instant::now();
        hq.put(&key, report_row("hq", i).as_bytes()).await.unwrap();
        down.push(visible(&mut aleysk, &key, since).await);
    }
    let mut flapping = Vec::new();
    let redials = t.lines[0].connections();
    for i in 0..writes {
        let key = format!("units/aleysk/flaps/{i}");
        let since = Instant::now();
        aleysk.put(&key, b"{\"flap\":true}").await.unwrap();
        if i % 10 == 9 {
            t.lines[0].cut();
        }
        flapping.push(visible(&mut hq, &key, since).await);
    }
    let redials = t.lines[0].connections() - redials;
    let (up, centre) = (UPLINK.1, CENTRE.1);
    println!(
        "chain over shaped lines: HQ <- {} kbit/s, {up} ms -> office-altai <- {} kbit/s, \
         {centre} ms -> centre-aleysk and centre-biysk (both holding their branch)",
        UPLINK.0, CENTRE.0
    );
    line("centre-aleysk to HQ (2 hops up)", to_hq, centre + up);
    line(
        "centre-aleysk to centre-biysk (up and down)",
        to_sibling,
        2 * centre,
    );
    line("HQ to centre-aleysk (2 hops down)", down, up + centre);
    line(
        &format!("centre-aleysk to HQ, the uplink cut at every tenth row ({redials} redials)"),
        flapping,
        centre + up,
    );
    for (name, node) in t.names.iter().zip(&t.nodes) {
        println!("  {name}: peak RSS {} MiB", node.rss().1);
    }
    t.stop();
}

/// The organisation's whole tree as processes: HQ, `regions` offices and
/// `units` centres under each, every line shaped; rows written one at a
/// time at centres across the tree.
async fn whole(regions: usize, units: usize, writes: u64) {
    let region = |r: usize| format!("r{r:02}");
    let unit = |r: usize, u: usize| format!("r{r:02}-u{u}");
    let mut places = vec![hq()];
    for r in 0..regions {
        places.push(office(&region(r)));
        for u in 0..units {
            places.push(centre(&unit(r, u), &region(r)));
        }
    }
    let nodes = places.len();
    let started = Instant::now();
    let t = Tree::start(places);
    let up_secs = started.elapsed().as_secs_f64();
    // Every centre holds HQ's first row: every line up, every link open.
    let mut hq = t.client("hq");
    hq.put("hq/hello", b"{}").await.unwrap();
    let since = Instant::now();
    for r in 0..regions {
        for u in 0..units {
            let name = format!("centre-{}", unit(r, u));
            visible(&mut t.client(&name), "hq/hello", since).await;
        }
    }
    let all_secs = since.elapsed().as_secs_f64();
    let (mut to_hq, mut to_sibling, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..writes as usize {
        // A centre in each region in turn, and the one beside it.
        let (r, u) = (i % regions, (i / regions) % units);
        let (writer, sibling) = (unit(r, u), unit(r, (u + 1) % units));
        let key = format!("units/{writer}/rows/{i}");
        let mut at = t.client(&format!("centre-{writer}"));
        let mut beside = t.client(&format!("centre-{sibling}"));
        // Connected before the clock starts: the time is the tree's.
        at.get("hq/hello").await.unwrap();
        beside.get("hq/hello").await.unwrap();
        let since = Instant::now();
        at.put(&key, report_row(&writer, i as u64).as_bytes())
            .await
            .unwrap();
        let (h, s) = tokio::join!(
            visible(&mut hq, &key, since),
            visible(&mut beside, &key, since)
        );
        to_hq.push(h);
        to_sibling.push(s);
        let key = format!("hq/notices/{i}");
        let since = Instant::now();
        hq.put(&key, report_row("hq", i as u64).as_bytes())
            .await
            .unwrap();
        down.push(visible(&mut at, &key, since).await);
    }
    // HQ's status names each centre's hop as its office reported it.
    let since = Instant::now();
    let (reported, status_ms) = loop {
        let t0 = Instant::now();
        let s = hq.status().await.unwrap();
        let status_ms = t0.elapsed().as_secs_f64() * 1e3;
        let reported = (s.peers.iter())
            .filter(|p| p.reported.as_ref().is_some_and(|r| r.to == p.name))
            .count();
        if reported == regions * units || since.elapsed() > WITHIN {
            break (reported, status_ms);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (up, centre) = (UPLINK.1, CENTRE.1);
    println!(
        "the whole tree, {nodes} processes ({regions} offices under HQ, {units} centres under \
         each, holding their branch), every line shaped as the chain's: all running in \
         {up_secs:.0} s, HQ's first row at every centre {all_secs:.1} s later"
    );
    line("a centre's row at HQ (2 hops up)", to_hq, centre + up);
    line("a centre's row at its sibling", to_sibling, 2 * centre);
    line("HQ's row at the centre that wrote", down, up + centre);
    let offices: Vec<String> = (0..regions)
        .map(|r| format!("office-{}", region(r)))
        .collect();
    let centres: Vec<String> = (0..regions)
        .flat_map(|r| (0..units).map(move |u| (r, u)))
        .map(|(r, u)| format!("centre-{}", unit(r, u)))
        .collect();
    println!(
        "  HQ's status names the hop into {reported} of {} centres as their offices \
         reported it ({:.0} s after the last row); one Status call took {status_ms:.1} ms",
        regions * units,
        since.elapsed().as_secs_f64()
    );
    let hq_rss = t.node("hq").rss().1;
    let (lo, mid, hi) = t.rss(offices.iter());
    let (clo, cmid, chi) = t.rss(centres.iter());
    println!(
        "  peak RSS: HQ {hq_rss} MiB; offices {lo}/{mid}/{hi} MiB and centres \
         {clo}/{cmid}/{chi} MiB (least/median/most)"
    );
    t.stop();
}

fn main() {
    let writes = common::env("FEDSYNC_BENCH_WRITES", 100u64);
    let picked = std::env::var("FEDSYNC_BENCH_HOPS").unwrap_or_else(|_| "chain,whole".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for name in picked.split(',').map(str::trim) {
        rt.block_on(async {
            match name {
                "chain" => chain(writes).await,
                "whole" => {
                    let regions = common::env("FEDSYNC_BENCH_REGIONS", 20usize);
                    let units = common::env("FEDSYNC_BENCH_UNITS", 10usize);
                    whole(regions, units, writes).await
                }
                other => panic!("no scenario {other:?}"),
            }
        });
    }
}

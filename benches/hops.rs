//! Write-to-visible along the organisation's tree, as real `fedsync run`
//! processes over a shaped line at every hop (`tests/common/shaper.rs`):
//! HQ; office-altai dialling HQ over 128 kbit/s, 150 ms one way; and the
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
//! `cargo bench --bench hops`; `FEDSYNC_BENCH_WRITES` rows each way
//! (default 100). `FEDSYNC_BENCH_KEEP=1` keeps the directory (configs,
//! stores, logs) and prints where.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/common/records.rs"]
mod records;
#[allow(dead_code)]
#[path = "../tests/common/shaper.rs"]
mod shaper;

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

const NAMES: [&str; 4] = ["hq", "office-altai", "centre-aleysk", "centre-biysk"];

struct Tree {
    dir: tempfile::TempDir,
    fed: LocalFederation,
    /// In [`NAMES`] order.
    nodes: Vec<Node>,
    lines: Vec<Shaper>,
}

impl Tree {
    fn start() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let altai = || Above::Region("ru-altai".into());
        let specs = [
            NodeSpec::hq("hq"),
            NodeSpec::region("office-altai", "ru-altai", &["hq"]),
            NodeSpec::unit("centre-aleysk", "aleysk", altai(), &["office-altai"]),
            NodeSpec::unit("centre-biysk", "biysk", altai(), &["office-altai"]),
        ];
        let mut fed = LocalFederation::create(dir.path(), &specs, "[sync]\n").unwrap();
        fed.release_ports();
        let addr = |name: &str| fed.nodes.iter().find(|(n, _)| n == name).unwrap().1;
        let mut lines = Vec::new();
        for (node, above, spec) in [
            ("office-altai", "hq", UPLINK),
            ("centre-aleysk", "office-altai", CENTRE),
            ("centre-biysk", "office-altai", CENTRE),
        ] {
            let line = Shaper::start(addr(above), LinkSpec::kbit(spec.0, spec.1));
            route_through(&fed.config_path(node), addr(above), line.addr());
            lines.push(line);
        }
        for centre in ["centre-aleysk", "centre-biysk"] {
            let path = fed.config_path(centre);
            let text = std::fs::read_to_string(&path).unwrap();
            let partial = text.replacen("[sync]\n", "[sync]\nholds = \"tree\"\n", 1);
            assert_ne!(text, partial, "{} has a [sync] table", path.display());
            std::fs::write(&path, partial).unwrap();
        }
        let nodes = NAMES
            .iter()
            .map(|n| Node::start(&fed.config_path(n)).0)
            .collect();
        Tree {
            dir,
            fed,
            nodes,
            lines,
        }
    }

    fn client(&self, name: &str) -> Client {
        let mut c = ClientConfig::load(&self.fed.client_config()).unwrap();
        let i = NAMES.iter().position(|n| *n == name).unwrap();
        c.connect = self.nodes[i].addr.clone();
        Client::from_config(&c).unwrap()
    }

    fn stop(self) {
        for (name, node) in NAMES.iter().zip(&self.nodes) {
            println!("  {name}: peak RSS {} MiB", node.rss().1);
        }
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

async fn run(writes: u64) {
    let t = Tree::start();
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
        "the tree over shaped lines: HQ <- {} kbit/s, {up} ms -> office-altai <- {} kbit/s, \
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
    t.stop();
}

fn main() {
    let writes = common::env("FEDSYNC_BENCH_WRITES", 100u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(writes));
}

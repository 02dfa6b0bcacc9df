//! The field's links, with real `fedsync run` processes: HQ and office-fr,
//! the office dialling HQ through the shaped line of `tests/common/
//! shaper.rs` (a rate cap out of a two-second buffer, a one-way delay,
//! cuts and blackouts).
//!
//! Per scenario: the time to completion against the ideal (payload bytes
//! over the line's rate, and the bytes that actually crossed over it),
//! link drops (connections beyond the first), deltas the office received
//! twice, and the bytes on the line against the payload.
//!
//! - `large`: 6 values of 900 KB that do not compress, 64 kbit/s, 300 ms
//!   one way, default config (about 12 minutes).
//! - `rows`: 2,000 JSON report rows of about 420 bytes, 128 kbit/s, 150 ms.
//! - `flaps`: 10,000 rows at 256 kbit/s, 200 ms, once on a steady line and
//!   once cut every 20 s; bytes on the flapping line against the steady.
//! - `blackout`: the line down 90 s while HQ writes 100 rows; time from
//!   the line's return until the office holds them.
//! - `idle`: bytes per idle check over the line, and write-to-visible
//!   over 200 ms one way (20 writes).
//! - `backlog`: 5 MB that does not compress over 24 kbit/s, 300 ms: about
//!   30 minutes of a slow but live link.
//! - `pieces`: 2 values of 300 KB that do not compress, 64 kbit/s, 300 ms,
//!   the line cut every 20 s: each value takes longer than the line stays
//!   up, so it arrives only because each connection resumes inside it.
//! - `cap`: a 1 Mbit/s line with the office's `rate_kbit = 128`: 500 kB
//!   each way at once; the rate each way against the cap.
//!
//! `cargo bench --bench links`; `FEDSYNC_BENCH_LINKS` picks scenarios
//! (comma-separated; default all). Each runs on its own line, so two
//! invocations can run side by side: the lines, not the CPU, set the pace.
//! `FEDSYNC_BENCH_KEEP=1` keeps each scenario's directory (configs, stores
//! and the nodes' logs) and prints where.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/common/records.rs"]
mod records;
#[allow(dead_code)]
#[path = "../tests/common/shaper.rs"]
mod shaper;

use std::time::{Duration, Instant};

use common::frontier;
use common::process::Node;
use fedsync::client::{Client, ClientConfig};
use fedsync::core::Frontier;
use fedsync::local::{LocalFederation, NodeSpec};
use records::{incompressible, report_row};
use shaper::{route_through, LinkSpec, Shaper};

/// HQ running, the office routed through the line (started later).
struct Line {
    _dir: tempfile::TempDir,
    fed: LocalFederation,
    hq: Node,
    office: Option<Node>,
    shaper: Shaper,
    spec: LinkSpec,
}

impl Line {
    fn new(spec: LinkSpec, extra: &str) -> Line {
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            NodeSpec::hq("hq"),
            NodeSpec::region("office-fr", "fr", &["hq"]),
        ];
        let mut fed = LocalFederation::create(dir.path(), &specs, extra).unwrap();
        // The nodes are processes of their own: they bind their ports.
        fed.release_ports();
        let hq_addr = fed.nodes[0].1;
        let shaper = Shaper::start(hq_addr, spec);
        // The office dials HQ through the line.
        route_through(&fed.config_path("office-fr"), hq_addr, shaper.addr());
        let (hq, _) = Node::start(&fed.config_path("hq"));
        Line {
            _dir: dir,
            fed,
            hq,
            office: None,
            shaper,
            spec,
        }
    }

    fn start_office(&mut self) {
        self.office = Some(Node::start(&self.fed.config_path("office-fr")).0);
    }

    fn client(&self, node: &Node) -> Client {
        let mut c = ClientConfig::load(&self.fed.client_config()).unwrap();
        c.connect = node.addr.clone();
        Client::from_config(&c).unwrap()
    }

    fn hq_client(&self) -> Client {
        self.client(&self.hq)
    }

    fn office_client(&self) -> Client {
        self.client(self.office.as_ref().unwrap())
    }

    fn drops(&self) -> u64 {
        self.shaper.connections().saturating_sub(1)
    }

    fn stop(self) {
        if std::env::var_os("FEDSYNC_BENCH_KEEP").is_some() {
            println!("  kept: {}", self._dir.keep().display());
        }
        if let Some(o) = self.office {
            o.stop();
        }
        self.hq.stop();
        self.shaper.stop();
    }
}

fn covers(f: &Frontier, target: &Frontier) -> bool {
    target.iter().all(|(a, h)| f.head(a).seq >= h.seq)
}

/// Polls until `c`'s node holds `target`; the time it took.
async fn wait_covers(c: &mut Client, target: &Frontier, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if covers(&frontier(c).await, target) {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn put_rows(c: &mut Client, prefix: &str, n: u64) -> u64 {
    let mut payload = 0;
    for i in 0..n {
        let row = report_row("hq", i);
        payload += row.len() as u64;
        c.put(&format!("hq/{prefix}/{i}"), row.as_bytes())
            .await
            .unwrap();
    }
    payload
}

/// Values of `len` bytes that do not compress at `hq/{prefix}/{seed}`,
/// one per seed; returns their bytes.
async fn put_incompressible(
    c: &mut Client,
    prefix: &str,
    seeds: std::ops::Range<u64>,
    len: usize,
) -> u64 {
    let mut payload = 0;
    for seed in seeds {
        let v = incompressible(len, seed);
        payload += v.len() as u64;
        c.put(&format!("hq/{prefix}/{seed}"), &v).await.unwrap();
    }
    payload
}

async fn duplicates(c: &mut Client) -> u64 {
    c.status().await.unwrap().totals.duplicates
}

/// Catch-up of what HQ holds by a newly started office: one report line.
async fn catch_up(name: &str, mut l: Line, payload: u64, within: Duration) -> (f64, u64) {
    let target = frontier(&mut l.hq_client()).await;
    l.start_office();
    let mut office = l.office_client();
    let took = wait_covers(&mut office, &target, within).await;
    let wire = l.shaper.bytes();
    let down = l.shaper.bytes_down();
    let secs = took.map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "{name}: {} in {secs:.1} s; ideal {:.1} s for the payload, {:.1} s for the bytes sent \
         ({:.2}x); {} drops; {} received twice; {wire} bytes on the line = {:.3}x the payload, \
         {down} of them towards the office ({:.1} s of the line)",
        if took.is_some() {
            "complete"
        } else {
            "NOT complete"
        },
        l.spec.secs_for(payload),
        l.spec.secs_for(wire),
        secs / l.spec.secs_for(wire),
        l.drops(),
        duplicates(&mut office).await,
        wire as f64 / payload as f64,
        l.spec.secs_for(down),
    );
    l.stop();
    (secs, wire)
}

async fn large() {
    let l = Line::new(LinkSpec::kbit(64, 300), "");
    let payload = put_incompressible(&mut l.hq_client(), "files", 0..6, 900_000).await;
    catch_up(
        "large (6 x 900 KB, 64 kbit/s, 300 ms)",
        l,
        payload,
        mins(40),
    )
    .await;
}

async fn rows() {
    let l = Line::new(LinkSpec::kbit(128, 150), "");
    let payload = put_rows(&mut l.hq_client(), "rows", 2000).await;
    let name = "rows (2,000 JSON rows, 128 kbit/s, 150 ms)";
    let (secs, _) = catch_up(name, l, payload, mins(10)).await;
    let uncompressed = LinkSpec::kbit(128, 150).secs_for(payload);
    println!(
        "  rows: {:.2}x the time the uncompressed payload needs",
        secs / uncompressed
    );
}

async fn backlog() {
    let spec = LinkSpec::kbit(24, 300);
    let l = Line::new(spec, "");
    // `FEDSYNC_BENCH_BACKLOG_VALUES` values of 100 KB (default 50: 5 MB).
    let n = common::env("FEDSYNC_BENCH_BACKLOG_VALUES", 50u64);
    let payload = put_incompressible(&mut l.hq_client(), "scans", 100..100 + n, 100_000).await;
    let name = format!("backlog ({} kB, 24 kbit/s, 300 ms)", payload / 1000);
    catch_up(&name, l, payload, mins(60)).await;
}

async fn flaps() {
    let spec = LinkSpec::kbit(256, 200);
    let n = 10_000;
    let steady = Line::new(spec, "");
    let payload = put_rows(&mut steady.hq_client(), "rows", n).await;
    let (_, steady_wire) = catch_up("flaps, steady line first", steady, payload, mins(15)).await;

    let mut l = Line::new(spec, "");
    put_rows(&mut l.hq_client(), "rows", n).await;
    let target = frontier(&mut l.hq_client()).await;
    l.start_office();
    let mut office = l.office_client();
    let t = Instant::now();
    let mut next_cut = Duration::from_secs(20);
    let done = loop {
        if covers(&frontier(&mut office).await, &target) {
            break Some(t.elapsed());
        }
        if t.elapsed() > mins(15) {
            break None;
        }
        if t.elapsed() >= next_cut {
            l.shaper.cut();
            next_cut += Duration::from_secs(20);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wire = l.shaper.bytes();
    println!(
        "flaps (cut every 20 s, 256 kbit/s, 200 ms): {} in {:.1} s, {} cuts; {} received twice; \
         {wire} bytes on the line = {:.3}x the steady line's {steady_wire}",
        if done.is_some() {
            "complete"
        } else {
            "NOT complete"
        },
        done.map_or(f64::NAN, |d| d.as_secs_f64()),
        l.drops(),
        duplicates(&mut office).await,
        wire as f64 / steady_wire as f64,
    );
    l.stop();
}

async fn pieces() {
    let spec = LinkSpec::kbit(64, 300);
    let mut l = Line::new(spec, "");
    let payload = put_incompressible(&mut l.hq_client(), "files", 0..2, 300_000).await;
    let target = frontier(&mut l.hq_client()).await;
    l.start_office();
    let mut office = l.office_client();
    let done = with_cuts(&mut l, &mut office, &target, mins(15)).await;
    let wire = l.shaper.bytes();
    println!(
        "pieces (2 x 300 KB, cut every 20 s, 64 kbit/s, 300 ms): {} in {:.1} s (ideal {:.1} s for \
         the payload), {} cuts; {} received twice; {wire} bytes on the line = {:.3}x the payload",
        if done.is_some() {
            "complete"
        } else {
            "NOT complete"
        },
        done.map_or(f64::NAN, |d| d.as_secs_f64()),
        spec.secs_for(payload),
        l.drops(),
        duplicates(&mut office).await,
        wire as f64 / payload as f64,
    );
    l.stop();
}

/// Cuts the line every 20 s until `office` holds `target`: the time it took.
async fn with_cuts(
    l: &mut Line,
    office: &mut Client,
    target: &Frontier,
    within: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    let mut next_cut = Duration::from_secs(20);
    loop {
        if covers(&frontier(office).await, target) {
            return Some(t.elapsed());
        }
        if t.elapsed() > within {
            return None;
        }
        if t.elapsed() >= next_cut {
            l.shaper.cut();
            next_cut += Duration::from_secs(20);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cap() {
    let (cap_kbit, each) = (128u64, 500_000);
    let mut l = Line::new(LinkSpec::kbit(1000, 50), "");
    let config = l.fed.config_path("office-fr");
    let text = std::fs::read_to_string(&config).unwrap();
    let capped = text.replace(
        "name = \"hq\"\n",
        &format!("name = \"hq\"\nrate_kbit = {cap_kbit}\n"),
    );
    std::fs::write(&config, capped).unwrap();
    put_incompressible(&mut l.hq_client(), "files", 0..5, each / 5).await;
    let down = frontier(&mut l.hq_client()).await;
    let t = Instant::now();
    l.start_office();
    let mut office = l.office_client();
    for seed in 10..15 {
        let v = incompressible(each / 5, seed);
        office
            .put(&format!("regions/fr/files/{seed}"), &v)
            .await
            .unwrap();
    }
    let up = frontier(&mut office).await;
    let hq = l.hq_client();
    let (down_s, up_s) = tokio::join!(secs_from(t, office, down), secs_from(t, hq, up));
    let kbit = |s: Option<f64>| s.map_or(f64::NAN, |s| each as f64 * 8.0 / 1000.0 / s);
    println!(
        "cap ({cap_kbit} kbit/s on a 1 Mbit/s line, {} kB each way): down {:.0} kbit/s, up {:.0} \
         kbit/s (delta bytes over the time from the office's start; TLS and HTTP/2 add ~3 %)",
        each / 1000,
        kbit(down_s),
        kbit(up_s),
    );
    l.stop();
}

/// Seconds from `t` until `c`'s node holds `f`.
async fn secs_from(t: Instant, mut c: Client, f: Frontier) -> Option<f64> {
    wait_covers(&mut c, &f, mins(5)).await?;
    Some(t.elapsed().as_secs_f64())
}

async fn blackout() {
    let mut l = Line::new(LinkSpec::kbit(128, 150), "");
    let mut hq = l.hq_client();
    put_rows(&mut hq, "before", 10).await;
    let target = frontier(&mut hq).await;
    l.start_office();
    let mut office = l.office_client();
    wait_covers(&mut office, &target, mins(2)).await.unwrap();
    l.shaper.set_up(false);
    put_rows(&mut hq, "during", 100).await;
    tokio::time::sleep(Duration::from_secs(90)).await;
    let target = frontier(&mut hq).await;
    l.shaper.set_up(true);
    let took = wait_covers(&mut office, &target, mins(5)).await;
    println!(
        "blackout (90 s, 128 kbit/s, 150 ms): in sync {:.1} s after the line returned; {} connections",
        took.map_or(f64::NAN, |d| d.as_secs_f64()),
        l.shaper.connections()
    );
    l.stop();
}

async fn idle() {
    let one_way = 200;
    let mut l = Line::new(
        LinkSpec::kbit(256, one_way),
        "[sync]\nanti_entropy_secs = 2\n",
    );
    let mut hq = l.hq_client();
    put_rows(&mut hq, "seed", 1).await;
    let target = frontier(&mut hq).await;
    l.start_office();
    let mut office = l.office_client();
    wait_covers(&mut office, &target, mins(2)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rounds_before = office.status().await.unwrap();
    let before = l.shaper.bytes();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let wire = l.shaper.bytes() - before;
    let rounds_after = office.status().await.unwrap();
    let rounds = |s: &fedsync::node::status::NodeStatus| {
        s.peers
            .iter()
            .find(|p| p.name == "hq")
            .map_or(0, |p| p.traffic.sync_rounds)
    };
    let n = rounds(&rounds_after) - rounds(&rounds_before);
    println!(
        "idle (256 kbit/s, 200 ms): {n} idle checks by the office in 60 s (HQ's too on the same \
         link), {wire} bytes on the line both ways incl. TLS, HTTP/2 and keepalive pings"
    );
    let mut ms = Vec::new();
    for i in 0..20 {
        let key = format!("hq/live/{i}");
        let t = Instant::now();
        hq.put(&key, b"{\"live\":true}").await.unwrap();
        office.get_wait(&key).await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let bound = 1.2 * one_way as f64 + 10.0;
    println!(
        "write-to-visible over {one_way} ms one way: p50 {:.0} ms, max {:.0} ms (bound {bound:.0} ms)",
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
    l.stop();
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn main() {
    let picked = std::env::var("FEDSYNC_BENCH_LINKS")
        .unwrap_or_else(|_| "rows,flaps,blackout,idle,cap,pieces,large,backlog".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for name in picked.split(',').map(str::trim) {
        rt.block_on(async {
            match name {
                "large" => large().await,
                "rows" => rows().await,
                "flaps" => flaps().await,
                "blackout" => blackout().await,
                "idle" => idle().await,
                "backlog" => backlog().await,
                "pieces" => pieces().await,
                "cap" => cap().await,
                other => panic!("no scenario {other:?}"),
            }
        });
    }
}

//! A node on a full store, as real `fedsync run` processes: office-fr
//! preloaded with N deltas (about 420 bytes each, as the field's records),
//! and an empty HQ that pulls all of them.
//!
//! Reports, for each process: RSS after start, peak (VmHWM) and steady
//! after the catch-up, and after a restart; store bytes on disk against
//! the deltas' encoded bytes; the catch-up rate between the two processes;
//! HQ's restart time; and `Status` latency at N records.
//!
//! `cargo bench --bench node`. N is `FEDSYNC_BENCH_RECORDS` (default
//! 1,000,000); `FEDSYNC_BENCH_VALUE_BYTES` (default 300) sizes each value;
//! `FEDSYNC_BENCH_CONFIG` is TOML added to both nodes' configs (e.g.
//! `[store]` settings to compare).

#[allow(dead_code)]
mod common;

use common::{env, frontier};

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::Node;

use fedsync::client::{Client, ClientConfig};
use fedsync::local::{LocalFederation, NodeSpec};

const QUIET: &str = "[sync]\nanti_entropy_secs = 3600\n";

/// Bytes the files under `dir` take on disk (allocated blocks, as `du`).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

fn client(config: &ClientConfig, node: &Node) -> Client {
    let mut c = config.clone();
    c.connect = node.addr.clone();
    Client::from_config(&c).unwrap()
}

/// Median and largest of `n` Status calls on one connection, ms.
async fn status_latency(c: &mut Client, n: usize) -> (f64, f64) {
    c.status().await.unwrap();
    let mut ms: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.status().await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ms[n / 2], ms[n - 1])
}

fn main() {
    let n = env("FEDSYNC_BENCH_RECORDS", 1_000_000);
    let value_bytes = env("FEDSYNC_BENCH_VALUE_BYTES", 300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n, value_bytes));
}

async fn run(n: usize, value_bytes: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let extra = std::env::var("FEDSYNC_BENCH_CONFIG").unwrap_or_default();
    let mut fed =
        LocalFederation::create(tmp.path(), &specs, &format!("{QUIET}{extra}\n")).unwrap();
    fed.release_ports();
    let t = Instant::now();
    let encoded = common::preload(&fed, "office-fr", n, value_bytes);
    println!(
        "node: {n} deltas, {encoded} bytes encoded ({} per delta), preloaded in {:.0} s",
        encoded / n as u64,
        t.elapsed().as_secs_f64()
    );
    let config = ClientConfig::load(&fed.client_config()).unwrap();
    let fr_disk = dir_bytes(&fed.dir.join("office-fr/data"));

    let (fr, fr_start) = Node::start(&fed.config_path("office-fr"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fr_started = fr.rss();
    let target = frontier(&mut client(&config, &fr)).await;

    let t = Instant::now();
    let (hq, _) = Node::start(&fed.config_path("hq"));
    let mut at_hq = client(&config, &hq);
    let mut peak = (0, 0);
    while frontier(&mut at_hq).await != target {
        peak = (peak.0.max(fr.rss().0), peak.1.max(hq.rss().0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (fr_steady, fr_hwm) = fr.rss();
    let (hq_steady, hq_hwm) = hq.rss();
    let calls = env("FEDSYNC_BENCH_STATUS_CALLS", 50);
    let (p50, max) = status_latency(&mut at_hq, calls).await;
    let hq_disk = dir_bytes(&fed.dir.join("hq/data"));
    hq.stop();
    let (hq, restart) = Node::start(&fed.config_path("hq"));
    let mut at_hq = client(&config, &hq);
    let (p50_restarted, _) = status_latency(&mut at_hq, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hq_restarted = hq.rss();
    let hq_disk_restarted = dir_bytes(&fed.dir.join("hq/data"));
    println!(
        "  catch-up between two processes: {:.0} deltas/s ({secs:.1} s)",
        n as f64 / secs
    );
    println!(
        "  office-fr (sender): started in {:.2} s at {} MiB; peak {} MiB; steady after {} MiB",
        fr_start.as_secs_f64(),
        fr_started.0,
        fr_hwm.max(peak.0),
        fr_steady
    );
    println!(
        "  hq (receiver): peak {} MiB; steady after {} MiB; restarted in {:.2} s at {} MiB",
        hq_hwm.max(peak.1),
        hq_steady,
        restart.as_secs_f64(),
        hq_restarted.0
    );
    let ratio = |bytes: u64| bytes as f64 / encoded as f64;
    println!(
        "  disk: office-fr {} MiB = {:.2}x, hq {} MiB = {:.2}x the encoded deltas ({:.2}x after its restart)",
        fr_disk >> 20,
        ratio(fr_disk),
        hq_disk >> 20,
        ratio(hq_disk),
        ratio(hq_disk_restarted)
    );
    println!("  Status at hq with {n} records: p50 {p50:.2} ms, max {max:.2} ms; after restart p50 {p50_restarted:.2} ms");
    hq.stop();
    fr.stop();
}

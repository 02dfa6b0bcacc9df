//! HQ as the federation's relay, as real `fedsync run` processes: HQ and
//! N offices on loopback, each office dialling HQ. W offices write at
//! once, each as fast as its writes are acknowledged; HQ takes every
//! write in and relays it to the N - 1 other offices.
//!
//! Reports HQ's CPU time (user + system, from `/proc`) per delta it took
//! in, and per delta and peer it relayed to; the writes' rate; the time
//! until every office holds every write; HQ's RSS.
//!
//! `cargo bench --bench relay`. `FEDSYNC_BENCH_PEERS` (default 100)
//! offices, `FEDSYNC_BENCH_WRITERS` (default 10) of them writing,
//! `FEDSYNC_BENCH_WRITES` (default 3000) in all. `FEDSYNC_BENCH_HQ_BIN`
//! runs HQ from another `fedsync` binary (an earlier release, to compare;
//! the offices stay on this build's); `FEDSYNC_BENCH_CONFIG` is TOML added
//! to every node's config (an earlier release needs `[limits] links_max`
//! raised to let 100 offices in).

#[allow(dead_code)]
mod common;

use common::env;

use std::time::{Duration, Instant};

use common::process::{Node, BIN};
use fedsync::client::{Client, ClientConfig};
use fedsync::local::{LocalFederation, NodeSpec};

const QUIET: &str = "[sync]\nanti_entropy_secs = 3600\n";
/// About the size of a field record's value.
const VALUE: [u8; 300] = [b'v'; 300];

fn main() {
    let peers = env("FEDSYNC_BENCH_PEERS", 100);
    let writers = env("FEDSYNC_BENCH_WRITERS", 10).clamp(1, peers);
    let writes = env("FEDSYNC_BENCH_WRITES", 3000);
    let hq_bin = std::env::var("FEDSYNC_BENCH_HQ_BIN").unwrap_or_else(|_| BIN.to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(peers, writers, writes, &hq_bin));
}

fn office(i: usize) -> String {
    format!("office-{i:03}")
}

fn client_of(config: &ClientConfig, node: &Node) -> Client {
    let mut c = config.clone();
    c.connect = node.addr.clone();
    Client::from_config(&c).unwrap()
}

/// Deltas `node` holds.
async fn held(config: &ClientConfig, node: &Node) -> u64 {
    match client_of(config, node).frontier().await {
        Ok(f) => f.3.total_deltas(),
        Err(_) => 0,
    }
}

/// Waits until `node` holds `n` deltas, polling.
async fn until_held(config: &ClientConfig, node: &Node, n: u64) {
    while held(config, node).await < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(peers: usize, writers: usize, writes: usize, hq_bin: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..peers).map(office).collect();
    let mut specs = vec![NodeSpec::hq("hq")];
    specs.extend((names.iter()).map(|n| NodeSpec::region(n, &n.replace("office-", "r"), &["hq"])));
    let extra = std::env::var("FEDSYNC_BENCH_CONFIG").unwrap_or_default();
    let mut fed =
        LocalFederation::create(tmp.path(), &specs, &format!("{QUIET}{extra}\n")).unwrap();
    fed.release_ports();
    let config = ClientConfig::load(&fed.client_config()).unwrap();
    let hq_config = fed.config_path("hq");
    let (hq, _) = Node::spawn(
        hq_bin,
        &hq_config,
        &hq_config.with_file_name("node.log"),
        &[],
    );
    // Nobody dials an office here: each takes any free port, so the
    // hundreds of connections opened meanwhile cannot take its own.
    let offices: Vec<Node> = (names.iter())
        .map(|n| {
            let path = fed.config_path(n);
            let text = std::fs::read_to_string(&path).unwrap();
            let listen = text.lines().find(|l| l.starts_with("listen =")).unwrap();
            std::fs::write(&path, text.replacen(listen, "listen = \"127.0.0.1:0\"", 1)).unwrap();
            Node::start(&path).0
        })
        .collect();
    // Every office linked: one write each reaches HQ and, relayed, them all.
    for (i, o) in offices.iter().enumerate() {
        let key = format!("regions/r{i:03}/hello");
        client_of(&config, o).put(&key, b"1").await.unwrap();
    }
    for o in &offices {
        until_held(&config, o, peers as u64).await;
    }

    let (cpu, t) = (hq.cpu_secs(), Instant::now());
    let each = writes / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let mut c = client_of(&config, &offices[w]);
            tokio::spawn(async move {
                for j in 0..each {
                    let key = format!("regions/r{w:03}/records/{j:06}");
                    c.put(&key, &VALUE).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let written = t.elapsed().as_secs_f64();
    let total = (peers + each * writers) as u64;
    for o in &offices {
        until_held(&config, o, total).await;
    }
    let everywhere = t.elapsed().as_secs_f64();
    let hq_cpu = hq.cpu_secs() - cpu;
    let deltas = (each * writers) as f64;
    let relayed = deltas * (peers - 1) as f64;
    println!(
        "relay: HQ and {peers} offices as processes, {writers} writing {} deltas of {} B values",
        each * writers,
        VALUE.len()
    );
    println!(
        "  writes: {:.0}/s acknowledged at the writers; every office held all of them after {everywhere:.1} s",
        deltas / written
    );
    println!(
        "  HQ's CPU: {:.2} s, {:.3} ms per delta taken in, {:.1} us per delta and peer relayed to",
        hq_cpu,
        hq_cpu * 1e3 / deltas,
        hq_cpu * 1e6 / relayed
    );
    println!("  HQ's RSS: {} MiB (peak {} MiB)", hq.rss().0, hq.rss().1);
    hq.stop();
    for o in offices {
        o.stop();
    }
}

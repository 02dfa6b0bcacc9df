//! The internet-facing door, measured the way an operator meets it: HQ and
//! an office as real `fedsync run` processes on loopback, and a flood of
//! connections that never finish a TLS handshake (half silent, half stalled
//! mid-ClientHello, each re-opened as soon as it closes) for the whole run.
//! During the flood the office is restarted, and an operator calls
//! `Status` once a second on a fresh connection each time.
//!
//! Reports: connections the flood opened and their rate, how long the
//! restarted office took to be back in sync at HQ, operator calls that
//! succeeded, the bytes HQ logged, and HQ's RSS.
//!
//! `cargo bench --bench door`. `FEDSYNC_BENCH_FLOOD_SECS` (default 30) is
//! how long the flood runs; `FEDSYNC_BENCH_FLOOD_CONNS` (default 200) how
//! many connections it keeps open.

#[allow(dead_code)]
mod common;
#[path = "../tests/common/flood.rs"]
#[allow(dead_code)]
mod flood;

use std::path::Path;
use std::time::{Duration, Instant};

use common::env;
use common::process::{Node, BIN};

use fedsync::client::{Client, ClientConfig};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::status::PeerState;

async fn office_state(client: &ClientConfig, hq: &str) -> Result<PeerState, String> {
    let mut c = ClientConfig::clone(client);
    c.connect = hq.to_owned();
    let s = Client::from_config(&c)?.status().await?;
    let p = s.peers.iter().find(|p| p.name == "office-fr");
    Ok(p.map_or(PeerState::NoLink, |p| p.state))
}

fn main() {
    let flood_secs = env("FEDSYNC_BENCH_FLOOD_SECS", 30);
    let conns = env::<usize>("FEDSYNC_BENCH_FLOOD_CONNS", 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(flood_secs, conns));
}

async fn run(flood_secs: u64, conns: usize) {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let mut fed = LocalFederation::create(dir.path(), &specs, "").unwrap();
    fed.release_ports();
    let client = ClientConfig::load(&fed.client_config()).unwrap();
    let hq_log = dir.path().join("hq.log");
    let fr_log = dir.path().join("fr.log");
    let hq = start(&fed.config_path("hq"), &hq_log);
    let mut fr = start(&fed.config_path("office-fr"), &fr_log);
    let in_sync = |deadline: Duration| {
        let (client, hq) = (&client, hq.addr.clone());
        async move {
            let started = Instant::now();
            while started.elapsed() < deadline {
                if office_state(client, &hq).await == Ok(PeerState::InSync) {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
    };
    in_sync(Duration::from_secs(60))
        .await
        .expect("office-fr never synced");
    let log_before = std::fs::metadata(&hq_log).unwrap().len();

    let flood = flood::Flood::start(hq.addr.parse().unwrap(), conns);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(flood_secs / 3)).await;
    // The office restarts in the middle of the flood.
    fr.stop();
    fr = start(&fed.config_path("office-fr"), &fr_log);
    let back = in_sync(Duration::from_secs(flood_secs)).await;
    // The operator calls once a second until the flood ends.
    let (mut ok, mut calls) = (0, 0);
    while started.elapsed() < Duration::from_secs(flood_secs) {
        calls += 1;
        match tokio::time::timeout(Duration::from_secs(5), office_state(&client, &hq.addr)).await {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => eprintln!("operator call failed: {e}"),
            Err(_) => eprintln!("operator call timed out"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss = hq.rss().0;
    let opened = flood.stop();
    let elapsed = started.elapsed().as_secs_f64();
    let logged = std::fs::metadata(&hq_log).unwrap().len() - log_before;
    let s = {
        let mut c = client.clone();
        c.connect = hq.addr.clone();
        Client::from_config(&c).unwrap().status().await.unwrap()
    };
    println!(
        "door: HQ and office-fr as processes, a flood of {conns} connections for {elapsed:.0} s"
    );
    println!(
        "  flood: {opened} connections, {:.0}/s",
        opened as f64 / elapsed
    );
    match back {
        Some(t) => println!(
            "  office-fr restarted during the flood: in sync at HQ after {:.2} s",
            t.as_secs_f64()
        ),
        None => println!("  office-fr restarted during the flood: NOT back in sync"),
    }
    println!("  operator Status calls during the flood: {ok} of {calls} succeeded");
    println!("  HQ's log during the flood: {logged} bytes");
    println!("  HQ's RSS at the end of the flood: {rss} MiB");
    println!("  HQ counted: {:?}", s.totals.connections_refused);
    fr.stop();
    hq.stop();
}

/// Starts a node logging at info to `log`.
fn start(config: &Path, log: &Path) -> Node {
    Node::spawn(BIN, config, log, &["--log", "info"]).0
}

//! The federation over real tonic, mutual TLS and sled on loopback:
//!
//! - catch-up: a fresh HQ node pulls N deltas from a region (deltas/s,
//!   and bytes on the link against the deltas' own encoded size);
//! - idle check: the same two nodes, N records each, one anti-entropy
//!   round (round trips, bytes);
//! - write-to-visible: five nodes hub-and-spoke, a write at one region
//!   until the other three regions have applied it (p50/p99).
//!
//! `cargo bench --bench federation`. N is `FEDSYNC_BENCH_DELTAS`
//! (default 1,000,000); writes for the latency run `FEDSYNC_BENCH_WRITES`
//! (default 500); `FEDSYNC_BENCH_CONFIG` is TOML added to the catch-up
//! nodes' configs (e.g. `[store]` settings to compare). Not a criterion bench: one run of each takes tens of
//! seconds, so it reports the one run's figures and per-write percentiles.

#[allow(dead_code)]
mod common;

use common::env;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fedsync::core::{Frontier, Head, Op};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::NodeHandle;

const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
const QUIET: &str = "[sync]\nanti_entropy_secs = 3600\n";

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let deltas = env("FEDSYNC_BENCH_DELTAS", 1_000_000);
    let writes = env("FEDSYNC_BENCH_WRITES", 500);
    // Node logs on stderr when asked, e.g. FEDSYNC_LOG=info.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("FEDSYNC_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(catch_up_and_idle(deltas));
    rt.block_on(write_to_visible(writes));
}

async fn catch_up_and_idle(n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let extra = std::env::var("FEDSYNC_BENCH_CONFIG").unwrap_or_default();
    let config = format!("{QUIET}{extra}\n");
    let mut fed = LocalFederation::create(tmp.path(), &specs, &config).unwrap();
    let t = Instant::now();
    // Values of about 50 bytes: deltas of about 235.
    let encoded = common::preload(&fed, "office-fr", n, 50);
    println!(
        "preloaded {n} deltas ({encoded} bytes) into office-fr in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let fr = fed.start("office-fr").await.unwrap();
    let target = fr.stats().await.unwrap().frontier;
    let t = Instant::now();
    let hq = fed.start("hq").await.unwrap();
    assert!(
        hq.wait_for(&target, SYNC_TIMEOUT).await,
        "hq did not catch up"
    );
    let secs = t.elapsed().as_secs_f64();
    let link = &hq.stats().await.unwrap().links[0].stats;
    let received = link.bytes_received.load(Ordering::Relaxed);
    println!(
        "catch-up: {n} deltas in {secs:.2} s = {:.0} deltas/s verified and stored; \
         {received} bytes received = {:.3}x the deltas' encoded size",
        n as f64 / secs,
        received as f64 / encoded as f64
    );

    idle_check(&fr, &hq).await;
    hq.shutdown().await.unwrap();
    fr.shutdown().await.unwrap();
}

/// One anti-entropy round started by `from`, between two nodes that hold
/// the same deltas.
async fn idle_check(from: &NodeHandle, to: &NodeHandle) {
    let before_from = totals(from).await;
    let before_to = totals(to).await;
    let link = from.stats().await.unwrap().links[0].stats.clone();
    let in_sync = link.in_sync_received.load(Ordering::Relaxed);
    let t = Instant::now();
    from.anti_entropy().await.unwrap();
    while link.in_sync_received.load(Ordering::Relaxed) == in_sync {
        // The reply lands on a link counter, not on a watch; spinning on
        // a yield keeps the measured time to the round trip itself.
        tokio::task::yield_now().await;
        assert!(t.elapsed() < SYNC_TIMEOUT, "no InSync reply");
    }
    let rtt = t.elapsed();
    let after_from = totals(from).await;
    let after_to = totals(to).await;
    println!(
        "idle check: {} message(s) out, {} back, {} bytes out + {} bytes back (protobuf), {:.2} ms",
        after_from.0 - before_from.0,
        after_to.0 - before_to.0,
        after_from.1 - before_from.1,
        after_to.1 - before_to.1,
        rtt.as_secs_f64() * 1e3
    );
}

/// Messages and bytes a node has sent over all its links.
async fn totals(n: &NodeHandle) -> (u64, u64) {
    let s = n.stats().await.unwrap();
    s.links.iter().fold((0, 0), |(m, b), l| {
        (
            m + l.stats.messages_sent.load(Ordering::Relaxed),
            b + l.stats.bytes_sent.load(Ordering::Relaxed),
        )
    })
}

async fn write_to_visible(writes: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut specs = vec![NodeSpec::hq("hq")];
    for r in ["fr", "ke", "br", "in"] {
        specs.push(NodeSpec::region(&format!("office-{r}"), r, &["hq"]));
    }
    let mut fed = LocalFederation::create(tmp.path(), &specs, QUIET).unwrap();
    let mut nodes = Vec::new();
    for s in &specs {
        nodes.push(fed.start(&s.name).await.unwrap());
    }
    let (writer, readers) = (&nodes[1], &nodes[2..]);
    // Let every link finish its opening exchange before measuring.
    let warm = writer
        .write("regions/fr/warm", Op::Put, b"0")
        .await
        .unwrap();
    let mut f = Frontier::new();
    f.set(
        warm.author(),
        Head {
            seq: warm.seq(),
            hash: warm.hash(),
        },
    );
    for r in readers {
        assert!(r.wait_for(&f, SYNC_TIMEOUT).await);
    }
    let mut latencies = Vec::with_capacity(writes * readers.len());
    for i in 0..writes {
        let t = Instant::now();
        let d = writer
            .write(
                &format!("regions/fr/live/{i}"),
                Op::Put,
                b"{\"volunteers\":1}",
            )
            .await
            .unwrap();
        // Each region's frontier is watched on its own task, so one
        // region's wait does not add to another's figure.
        let waits: Vec<_> = readers
            .iter()
            .map(|r| {
                let (mut rx, author, seq) = (r.frontier(), d.author(), d.seq());
                tokio::spawn(async move {
                    rx.wait_for(|f| f.head(&author).seq >= seq).await.unwrap();
                    t.elapsed()
                })
            })
            .collect();
        for w in waits {
            latencies.push(
                tokio::time::timeout(SYNC_TIMEOUT, w)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "write-to-visible, 5 nodes hub-and-spoke, {writes} writes x {} regions: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        readers.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

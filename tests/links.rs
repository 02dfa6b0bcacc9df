//! Real nodes over a shaped line (`tests/common/shaper.rs`): slow, delayed,
//! cut and blacked out. Short versions of the field scenarios; the full
//! ones, with their figures, are `cargo bench --bench links`.

use std::time::{Duration, Instant};

use fedsync::core::Op;
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::NodeHandle;

mod common;
use common::frontier_of;
use common::shaper::{LinkSpec, Shaper};

/// HQ and one office that dials it through a shaped line.
struct Line {
    _dir: tempfile::TempDir,
    hq: NodeHandle,
    office: NodeHandle,
    shaper: Shaper,
}

async fn line(spec: LinkSpec, extra: &str) -> Line {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let mut fed = LocalFederation::create(dir.path(), &specs, extra).unwrap();
    let hq_addr = fed.nodes[0].1;
    let shaper = Shaper::start(hq_addr, spec);
    // The office dials HQ through the line.
    let path = fed.config_path("office-fr");
    let config = std::fs::read_to_string(&path).unwrap();
    let routed = config.replace(&format!("\"{hq_addr}\""), &format!("\"{}\"", shaper.addr()));
    assert_ne!(config, routed, "the office's config names HQ's address");
    std::fs::write(&path, routed).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let office = fed.start("office-fr").await.unwrap();
    Line {
        _dir: dir,
        hq,
        office,
        shaper,
    }
}

/// Values that take many keepalive intervals to cross: with a keepalive
/// of 2 s and a timeout of 8 s, a ping stuck behind the queued data would
/// end the link again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_cross_a_slow_line_without_a_drop() {
    let extra =
        "[sync]\nanti_entropy_secs = 3600\nkeepalive_secs = 2\nkeepalive_timeout_secs = 8\n";
    let spec = LinkSpec::kbit(128, 150);
    let l = line(spec, extra).await;
    let value = vec![b'x'; 120_000];
    let mut written = Vec::new();
    for i in 0..3 {
        let d =
            l.hq.write(&format!("hq/files/{i}"), Op::Put, &value)
                .await
                .unwrap();
        written.push(d);
    }
    let started = Instant::now();
    let target = frontier_of(&written);
    let payload = (value.len() * written.len()) as u64;
    let ideal = spec.secs_for(payload);
    let within = Duration::from_secs_f64(ideal * 3.0 + 30.0);
    assert!(
        l.office.wait_for(&target, within).await,
        "not delivered in {within:?}; {} connections",
        l.shaper.connections()
    );
    eprintln!(
        "delivered in {:.1} s (ideal {ideal:.1} s), {} bytes on the line, {} connections",
        started.elapsed().as_secs_f64(),
        l.shaper.bytes(),
        l.shaper.connections()
    );
    assert_eq!(l.shaper.connections(), 1, "the link never dropped");
    l.office.shutdown().await.unwrap();
    l.hq.shutdown().await.unwrap();
    l.shaper.stop();
}

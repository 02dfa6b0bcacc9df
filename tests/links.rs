//! Real nodes over a shaped line (`tests/common/shaper.rs`): slow, delayed,
//! cut and blacked out. Short versions of the field scenarios; the full
//! ones, with their figures, are `cargo bench --bench links`.

use std::time::{Duration, Instant};

use fedsync::core::Op;
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::NodeHandle;

mod common;
use common::frontier_of;
use common::records::{incompressible, report_row};
use common::shaper::{route_through, LinkSpec, Shaper};

/// HQ and one office that dials it through a shaped line.
struct Line {
    _dir: tempfile::TempDir,
    fed: LocalFederation,
    hq: NodeHandle,
    office: Option<NodeHandle>,
    shaper: Shaper,
}

/// The line with both nodes running.
async fn line(spec: LinkSpec, extra: &str) -> Line {
    let mut l = hq_behind_line(spec, extra).await;
    l.start_office().await;
    l
}

/// HQ running, the office's config routed through the line, the office
/// not started yet.
async fn hq_behind_line(spec: LinkSpec, extra: &str) -> Line {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let mut fed = LocalFederation::create(dir.path(), &specs, extra).unwrap();
    let hq_addr = fed.nodes[0].1;
    let shaper = Shaper::start(hq_addr, spec);
    // The office dials HQ through the line.
    route_through(&fed.config_path("office-fr"), hq_addr, shaper.addr());
    let hq = fed.start("hq").await.unwrap();
    Line {
        _dir: dir,
        fed,
        hq,
        office: None,
        shaper,
    }
}

impl Line {
    async fn start_office(&mut self) {
        self.office = Some(self.fed.start("office-fr").await.unwrap());
    }

    fn office(&self) -> &NodeHandle {
        self.office.as_ref().expect("the office is running")
    }

    async fn stop(self) {
        if let Some(office) = self.office {
            office.shutdown().await.unwrap();
        }
        self.hq.shutdown().await.unwrap();
        self.shaper.stop();
    }
}

/// Values that take many keepalive intervals to cross a 32 kbit/s line.
/// What is queued below HTTP/2 (TLS, the socket, the line's two seconds)
/// holds a PING back for about 12 s, three times the 4 s timeout: judged
/// by the PING alone, the link would end again and again. Judged by the
/// bytes that arrive and what is left to drain, it never drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_cross_a_slow_line_without_a_drop() {
    let extra =
        "[sync]\nanti_entropy_secs = 3600\nkeepalive_secs = 2\nkeepalive_timeout_secs = 4\n";
    let spec = LinkSpec::kbit(32, 150);
    let l = line(spec, extra).await;
    let mut written = Vec::new();
    let mut payload = 0;
    for i in 0..2 {
        let value = incompressible(60_000, i);
        payload += value.len() as u64;
        let key = format!("hq/files/{i}");
        written.push(l.hq.write(&key, Op::Put, &value).await.unwrap());
    }
    let started = Instant::now();
    let target = frontier_of(&written);
    let ideal = spec.secs_for(payload);
    let within = Duration::from_secs_f64(ideal * 3.0 + 30.0);
    assert!(
        l.office().wait_for(&target, within).await,
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
    l.stop().await;
}

/// A blackout long enough for the redial backoff to reach its last
/// steps: when the line returns, the link follows within seconds, since
/// a dial that found nobody there probes again instead of backing off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_blackout_the_link_follows_the_line_back_within_seconds() {
    // The frozen connection ends ~6 s into the blackout; the default
    // backoff (250 ms doubling to 30 s) would sleep 8 to 30 s by the end.
    let extra = "[sync]\nkeepalive_secs = 2\nkeepalive_timeout_secs = 4\n";
    let l = line(LinkSpec::kbit(256, 100), extra).await;
    let first = l.hq.write("hq/notes/before", Op::Put, b"up").await.unwrap();
    let up = Duration::from_secs(30);
    assert!(l.office().wait_for(&frontier_of(&[first]), up).await);

    l.shaper.set_up(false);
    let during =
        l.hq.write("hq/notes/during", Op::Put, b"dark")
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let target = frontier_of(&[during]);
    let early = l.office().wait_for(&target, Duration::ZERO).await;
    assert!(!early, "nothing crosses a line that is down");
    // HQ's watchdog ended the silent link, and says so; the office's
    // redials since have overwritten its own note.
    let hq_status = l.hq.status().await.unwrap();
    let office = hq_status.peers.iter().find(|p| p.name == "office-fr");
    let why = office
        .and_then(|p| p.last_error.as_ref())
        .map(|e| e.text.clone());
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("keepalive: ended by this node")),
        "HQ's note on the office: {why:?}"
    );
    l.shaper.set_up(true);
    let back = Instant::now();
    // The target is 3 s; the bound leaves room for a busy test machine,
    // and the old backoff misses it by several seconds.
    let within = Duration::from_secs(5);
    let synced = l.office().wait_for(&target, within).await;
    eprintln!(
        "in sync {:.1} s after the line returned, {} connections",
        back.elapsed().as_secs_f64(),
        l.shaper.connections()
    );
    assert!(synced, "not in sync {within:?} after the line returned");
    l.stop().await;
}

/// An office catching up on report rows of JSON over a slow line: the
/// bytes on the line (both ways, TLS and HTTP/2 included) are well under
/// the rows' own size, since each batch travels as one zstd frame and a
/// record's `prev` is left for the office to compute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_rows_catch_up_over_a_slow_line_compressed() {
    let mut l = hq_behind_line(LinkSpec::kbit(128, 150), "").await;
    let mut written = Vec::new();
    let mut payload = 0;
    for i in 0..400 {
        let row = report_row("hq", i);
        payload += row.len() as u64;
        let key = format!("hq/rows/{i}");
        written.push(l.hq.write(&key, Op::Put, row.as_bytes()).await.unwrap());
    }
    l.start_office().await;
    let within = Duration::from_secs(60);
    let delivered = l.office().wait_for(&frontier_of(&written), within).await;
    assert!(delivered, "rows not delivered in {within:?}");
    let wire = l.shaper.bytes();
    eprintln!("{payload} bytes of rows took {wire} bytes on the line");
    assert!(
        (wire as f64) < 0.5 * payload as f64,
        "{wire} bytes on the line for {payload} bytes of rows"
    );
    // HQ's operator sees the link: its pace, and the bytes as delivered
    // (acknowledged) against those sent, compressed.
    let mut acked = None;
    for _ in 0..50 {
        let st = l.hq.status().await.unwrap();
        let p = st
            .peers
            .into_iter()
            .find(|p| p.name == "office-fr")
            .unwrap();
        let t = p.traffic;
        if t.delta_bytes_sent > 0 && t.delta_bytes_acked == t.delta_bytes_sent {
            acked = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = acked.expect("every batch sent was acknowledged");
    let pace = p.pace.expect("an open link has a pace");
    assert!(
        pace.compressed && pace.rtt_ms.is_some_and(|r| r >= 300),
        "{pace:?}"
    );
    assert!(pace.rate_bytes_per_sec.is_some(), "{pace:?}");
    assert!(
        p.traffic.bytes_sent * 2 < p.traffic.delta_bytes_sent,
        "{:?}",
        p.traffic
    );
    l.stop().await;
}

/// An office's only line, with sync capped to a share of it: the office
/// keeps to its `[[peers]] rate_kbit` and asks HQ, which has no cap of
/// its own for the office, to keep to it too. Both ways, the values
/// take the time the cap allows, not the line's, and both ends show the
/// cap in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_cap_holds_both_ways_on_a_faster_line() {
    let mut l = hq_behind_line(LinkSpec::kbit(1000, 20), "").await;
    let config = l.fed.config_path("office-fr");
    let text = std::fs::read_to_string(&config).unwrap();
    let capped = text.replace("name = \"hq\"\n", "name = \"hq\"\nrate_kbit = 64\n");
    assert_ne!(text, capped, "the office's config names its peer hq");
    std::fs::write(&config, capped).unwrap();
    let cap_bytes = 64_000 / 8;

    let each = 48_000;
    let value = incompressible(each, 1);
    let down = vec![l.hq.write("hq/files/0", Op::Put, &value).await.unwrap()];
    let started = Instant::now();
    l.start_office().await;
    let value = incompressible(each, 2);
    let up = vec![l
        .office()
        .write("regions/fr/files/0", Op::Put, &value)
        .await
        .unwrap()];
    let (down, up) = (frontier_of(&down), frontier_of(&up));
    let (took_down, took_up) = tokio::join!(
        secs_until(l.office(), &down, started),
        secs_until(&l.hq, &up, started)
    );
    let at_cap = each as f64 / cap_bytes as f64;
    eprintln!(
        "{each} bytes down in {took_down:.1} s, up in {took_up:.1} s: {at_cap:.1} s at the cap, \
         {:.1} s at the line's rate",
        LinkSpec::kbit(1000, 20).secs_for(each as u64)
    );
    for (way, took) in [("down", took_down), ("up", took_up)] {
        assert!(
            took > at_cap * 0.8,
            "{way} in {took:.1} s: faster than the cap"
        );
    }

    for (node, peer) in [(&l.hq, "office-fr"), (l.office(), "hq")] {
        let st = node.status().await.unwrap();
        let p = st.peers.into_iter().find(|p| p.name == peer).unwrap();
        let cap = p.pace.and_then(|pace| pace.rate_cap_bytes_per_sec);
        assert_eq!(cap, Some(cap_bytes), "the cap on the link to {peer}");
    }
    l.stop().await;
}

/// Seconds from `started` until `node` holds `target`.
async fn secs_until(node: &NodeHandle, target: &fedsync::core::Frontier, started: Instant) -> f64 {
    let within = Duration::from_secs(60);
    assert!(
        node.wait_for(target, within).await,
        "not there in {within:?}"
    );
    started.elapsed().as_secs_f64()
}

/// A value that takes longer to cross than the line stays up: cut every
/// 8 s at 32 kbit/s, each connection moves about 25 kB of a 100 kB
/// value. Sent whole, it would start again after every cut and never
/// arrive; in pieces, each connection starts after what the office
/// already holds, and the line carries the value about once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_longer_than_the_line_stays_up_arrives_in_pieces() {
    let spec = LinkSpec::kbit(32, 100);
    let l = line(spec, "[sync]\nanti_entropy_secs = 3600\n").await;
    let value = incompressible(100_000, 3);
    let written = vec![l.hq.write("hq/files/big", Op::Put, &value).await.unwrap()];
    let target = frontier_of(&written);
    let deadline = Instant::now() + Duration::from_secs(150);
    while !l.office().wait_for(&target, Duration::from_secs(8)).await {
        assert!(
            Instant::now() < deadline,
            "not delivered; {} connections, {} bytes on the line",
            l.shaper.connections(),
            l.shaper.bytes()
        );
        l.shaper.cut();
    }
    let (wire, conns) = (l.shaper.bytes(), l.shaper.connections());
    eprintln!(
        "{} bytes delivered over {conns} connections, {wire} bytes on the line",
        value.len()
    );
    assert!(
        conns >= 4,
        "the line was cut on the way ({conns} connections)"
    );
    assert!(
        (wire as f64) < 1.4 * value.len() as f64,
        "{wire} bytes on the line for a {} byte value",
        value.len()
    );
    l.stop().await;
}

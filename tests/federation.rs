//! Real nodes on 127.0.0.1: gRPC over mutual TLS, sled stores, config files
//! written by `fedsync::local`. Synchronisation is awaited on each node's
//! frontier watch, never on a sleep.

use fedsync::client::Client;
use fedsync::core::Op;
use fedsync::identity::tls::TlsIdentity;
use fedsync::local::LocalFederation;
use fedsync::node::trust_from;

mod common;
use common::{all_hold, frontier_of, hub_and_spoke, NO_ANTI_ENTROPY, SYNC_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke_converges_and_relays_region_to_region() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();

    let a = fr
        .write("regions/fr/notes/2026-Q3", Op::Put, b"{\"volunteers\":12}")
        .await
        .unwrap();
    let b = ke
        .write("regions/ke/notes/2026-Q3", Op::Put, b"{\"volunteers\":7}")
        .await
        .unwrap();
    let c = hq.write("hq/notice", Op::Put, b"hello").await.unwrap();
    let target = frontier_of([&a, &b, &c]);
    all_hold(&[&hq, &fr, &ke], &target).await;

    // Kenya never talks to France directly: this came through HQ.
    let seen = ke.get("regions/fr/notes/2026-Q3").await.unwrap().unwrap();
    assert_eq!(seen.value(), b"{\"volunteers\":12}");
    assert_eq!(seen, a);
    let (s_hq, s_fr, s_ke) = (
        hq.stats().await.unwrap(),
        fr.stats().await.unwrap(),
        ke.stats().await.unwrap(),
    );
    assert_eq!(s_hq.digest, s_fr.digest);
    assert_eq!(s_hq.digest, s_ke.digest);
    assert_eq!(s_hq.links.len(), 2, "both regions linked to HQ");
    assert_eq!(s_fr.counters.refused, Default::default());

    // The operator's client service, over mTLS, reads the relayed record.
    let op = fed.tls_identity("operator").unwrap();
    let roster = fed.signed_roster();
    let ke_addr = ke.local_addr().to_string();
    let mut client = Client::connect(&ke_addr, &op, trust_from(roster.roster())).unwrap();
    let rec = client
        .get("regions/fr/notes/2026-Q3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.value, b"{\"volunteers\":12}");
    // And Kenya's node may not write France's space on the operator's behalf.
    let refused = client.put("regions/fr/x", b"1").await.unwrap_err();
    assert!(refused.contains("PermissionDenied"), "{refused}");

    for n in [hq, fr, ke] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_from_its_frontier_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    // Quick redials so the restarted node's link comes back at once.
    let extra = "[sync]\nanti_entropy_secs = 3600\nreconnect_min_ms = 20\nreconnect_max_ms = 200\n";
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), extra).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();

    for i in 0..20 {
        ke.write(&format!("regions/ke/a/{i}"), Op::Put, b"before")
            .await
            .unwrap();
    }
    let before = ke.stats().await.unwrap().frontier;
    all_hold(&[&fr], &before).await;
    fr.shutdown().await.unwrap();

    let mut last = None;
    for i in 0..200 {
        last = Some(
            ke.write(&format!("regions/ke/b/{i}"), Op::Put, b"while away")
                .await
                .unwrap(),
        );
    }
    ke.write("regions/ke/a/0", Op::Delete, b"").await.unwrap();
    let target = ke.stats().await.unwrap().frontier;
    assert!(target.total_deltas() > before.total_deltas());

    let fr = fed.start("office-fr").await.unwrap();
    all_hold(&[&fr], &target).await;
    let s = fr.stats().await.unwrap();
    // It asked for exactly what it lacked: nothing it already had came again.
    assert_eq!(s.counters.duplicates, 0, "{:?}", s.counters);
    assert_eq!(s.counters.applied, 201);
    assert_eq!(
        fr.get("regions/ke/a/0").await.unwrap(),
        None,
        "delete applied"
    );
    assert_eq!(fr.get("regions/ke/b/199").await.unwrap(), last);

    for n in [hq, fr, ke] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_the_roster_are_refused_at_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke()[..1], "").unwrap();
    let hq = fed.start("hq").await.unwrap();
    let roster = fed.signed_roster();
    let addr = hq.local_addr().to_string();

    // A stranger with a well-formed P-256 certificate the roster does not pin.
    let stranger = TlsIdentity::generate("stranger").unwrap();
    let mut client = Client::connect(&addr, &stranger, trust_from(roster.roster())).unwrap();
    let mut refused = hq.handshakes_refused();
    let err = client.get("hq/x").await.unwrap_err();
    // With TLS 1.3 the client may finish its side before the server has
    // judged the certificate, so it sees either the alert or a closed
    // connection; the server's count says which side refused.
    assert!(err.contains("connection failed"), "{err}");
    let counted = tokio::time::timeout(SYNC_TIMEOUT, refused.wait_for(|n| *n == 1)).await;
    assert!(counted.is_ok(), "the server did not refuse the handshake");

    // The operator the roster lists gets in, so the refusal above was about
    // the key, not the setup.
    let op = fed.tls_identity("operator").unwrap();
    let mut client = Client::connect(&addr, &op, trust_from(roster.roster())).unwrap();
    assert_eq!(client.get("hq/x").await.unwrap(), None);
    let stats = hq.stats().await.unwrap();
    assert!(stats.links.is_empty(), "no peer link was opened");
    assert_eq!(*hq.handshakes_refused().borrow(), 1);

    // A node certificate may not use the operator API, and an operator may
    // not open a sync link.
    let node_tls = fed.tls_identity("hq").unwrap();
    let mut as_node = Client::connect(&addr, &node_tls, trust_from(roster.roster())).unwrap();
    let err = as_node.get("hq/x").await.unwrap_err();
    assert!(err.contains("PermissionDenied"), "{err}");
    hq.shutdown().await.unwrap();
}

/// The rebuild procedure: a region's store is lost; restarted empty with
/// `--rebuild`, it refuses writes until it has synced with HQ, then holds
/// its own past writes again (relayed back), and its next write continues
/// its log rather than forking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_store_rebuilds_from_its_peers() {
    use fedsync::node::{self, ApiError, Setup};

    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("regions/fr/notes/{i:02}");
        written.push(fr.write(&key, Op::Put, b"v").await.unwrap());
    }
    let target = frontier_of(&written);
    all_hold(&[&hq, &fr], &target).await;
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();

    // The disk is gone. HQ is down too, so nothing can be recovered yet.
    let config = fedsync::config::NodeConfig::load(&fed.config_path("office-fr")).unwrap();
    std::fs::remove_dir_all(&config.data_dir).unwrap();
    let mut setup = Setup::load(config).unwrap();
    setup.rebuild = true;
    let fr = node::start(setup).await.unwrap();
    let refused = fr.write("regions/fr/notes/new", Op::Put, b"v").await;
    match refused {
        Err(ApiError::Unavailable(why)) => assert!(why.contains("rebuilding from peers"), "{why}"),
        other => panic!("a write before the rebuild must wait, got {other:?}"),
    }

    let hq = fed.start("hq").await.unwrap();
    all_hold(&[&fr], &target).await;
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    let next = loop {
        match fr.write("regions/fr/notes/new", Op::Put, b"v").await {
            Ok(d) => break d,
            Err(ApiError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("the write after the rebuild failed: {e}"),
        }
    };
    assert_eq!(next.seq(), 21, "the log continues where it was");
    all_hold(&[&hq], &frontier_of([&next])).await;
    assert_eq!(hq.quarantine(10).await.unwrap().kept, 0, "nothing forked");
    let seen = fr.get("regions/fr/notes/07").await.unwrap().unwrap();
    assert_eq!(seen, written[7]);
}

/// Two stores lost at once, HQ's and an office's: each rebuilds, but
/// neither counts the other while the other still waits for someone else.
/// So the office's rebuild completes only once HQ holds again what the
/// intact office holds of the office's own log, and its next write
/// continues that log instead of forking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_lost_their_stores_at_once_rebuild_without_forking() {
    use fedsync::node::{self, ApiError, NodeHandle, Setup};

    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("regions/fr/notes/{i:02}");
        written.push(fr.write(&key, Op::Put, b"v").await.unwrap());
    }
    let target = frontier_of(&written);
    all_hold(&[&hq, &fr, &ke], &target).await;
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();

    // Both disks are gone; only office-ke still holds France's log.
    let rebuilt = |name: &str| {
        let config = fedsync::config::NodeConfig::load(&fed.config_path(name)).unwrap();
        std::fs::remove_dir_all(&config.data_dir).unwrap();
        let mut setup = Setup::load(config).unwrap();
        setup.rebuild = true;
        setup
    };
    let (hq_setup, fr_setup) = (rebuilt("hq"), rebuilt("office-fr"));
    let fr = node::start(fr_setup).await.unwrap();
    let hq = node::start(hq_setup).await.unwrap();

    /// Retries a write while the node is still rebuilding.
    async fn write_once_rebuilt(n: &NodeHandle, key: &str) -> fedsync::core::SignedDelta {
        let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
        loop {
            match n.write(key, Op::Put, b"v").await {
                Ok(d) => return d,
                Err(ApiError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                    assert!(
                        why.contains("rebuilding") || why.contains("catching up"),
                        "{why}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => panic!("{} could not write after its rebuild: {e}", n.name()),
            }
        }
    }
    let next = write_once_rebuilt(&fr, "regions/fr/notes/new").await;
    assert_eq!(next.seq(), 21, "the log continues where it was");
    let at_hq = write_once_rebuilt(&hq, "hq/notes/after").await;
    assert_eq!(at_hq.seq(), 1);
    let all = frontier_of(written.iter().chain([&next, &at_hq]));
    all_hold(&[&hq, &fr, &ke], &all).await;
    for n in [&hq, &fr, &ke] {
        assert_eq!(
            n.quarantine(10).await.unwrap().kept,
            0,
            "{} saw a fork",
            n.name()
        );
    }
}

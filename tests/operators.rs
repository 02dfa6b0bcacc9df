//! What operators see, on real nodes over gRPC + mTLS and HTTP: the
//! standard health service and reflection, the status call (lag, stall,
//! recovery), the status page and the metrics.

mod common;

use std::time::Duration;

use fedsync::client::{Client, ClientConfig};
use fedsync::core::Op;
use fedsync::local::{LocalFederation, NodeSpec, OPERATOR};
use fedsync::node::status::{NodeStatus, PeerState, PeerStatus};
use fedsync::node::NodeHandle;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use common::{http_get, sample, scrape, status_until, SYNC_TIMEOUT};

/// Quick redials and a one-second stall threshold, so a test sees a stall
/// and a recovery in seconds.
const FAST: &str = "[sync]\nanti_entropy_secs = 1\nstall_after_secs = 1\n\
                    reconnect_min_ms = 50\nreconnect_max_ms = 200\n";

fn specs() -> Vec<NodeSpec> {
    vec![
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        // In the roster, never started: HQ has no link to it.
        NodeSpec::region("office-ke", "ke", &["hq"]),
    ]
}

fn peer<'a>(s: &'a NodeStatus, name: &str) -> &'a PeerStatus {
    s.peers.iter().find(|p| p.name == name).unwrap()
}

/// HQ and office-fr running (office-ke only in the roster).
async fn hq_and_office() -> (tempfile::TempDir, LocalFederation, NodeHandle, NodeHandle) {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &specs(), FAST).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    (dir, fed, hq, fr)
}

/// The operator's client, connected to HQ.
fn operator(fed: &LocalFederation) -> Client {
    let config = ClientConfig::load(&fed.client_config()).unwrap();
    Client::from_config(&config).unwrap()
}

fn in_sync_with(s: &NodeStatus, name: &str) -> bool {
    let p = peer(s, name);
    p.state == PeerState::InSync && p.lags.is_some_and(|l| l.in_sync())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_after_start_and_not_serving_during_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &specs(), FAST).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let channel = fed.channel_as(OPERATOR, hq.local_addr()).unwrap();
    let mut health = HealthClient::new(channel);

    for service in ["", "fedsync.v1.Client", "fedsync.v1.Peer"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    assert!(hq.status().await.unwrap().serving);

    let stopping = tokio::spawn(hq.shutdown());
    let next = tokio::time::timeout(SYNC_TIMEOUT, watch.next())
        .await
        .expect("a health update during shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    stopping.await.unwrap().unwrap();
}

/// One reflection test per protocol version: v1, and v1alpha, which the
/// tools most people have (grpcurl 1.8, Python's grpcio-reflection) speak.
macro_rules! reflection_lists_every_service {
    ($test:ident, $version:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::ServerReflectionRequest;

            let dir = tempfile::tempdir().unwrap();
            let mut fed = LocalFederation::create(dir.path(), &specs(), FAST).unwrap();
            let hq = fed.start("hq").await.unwrap();
            let channel = fed.channel_as(OPERATOR, hq.local_addr()).unwrap();
            let mut client = ServerReflectionClient::new(channel);
            let ask = |m: MessageRequest| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            };
            let requests = tokio_stream::iter([
                ask(MessageRequest::ListServices(String::new())),
                ask(MessageRequest::FileContainingSymbol(
                    "fedsync.v1.Client".into(),
                )),
            ]);
            let mut replies = client
                .server_reflection_info(requests)
                .await
                .unwrap()
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(list)) =
                replies.next().await.unwrap().unwrap().message_response
            else {
                panic!("expected a service list");
            };
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            for want in [
                "fedsync.v1.Client",
                "fedsync.v1.Peer",
                "grpc.health.v1.Health",
            ] {
                assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
            }
            let Some(MessageResponse::FileDescriptorResponse(files)) =
                replies.next().await.unwrap().unwrap().message_response
            else {
                panic!("expected the file describing fedsync.v1.Client");
            };
            assert!(!files.file_descriptor_proto.is_empty());
            drop(replies);
            hq.shutdown().await.unwrap();
        }
    };
}

reflection_lists_every_service!(reflection_v1_lists_every_service, v1);
reflection_lists_every_service!(reflection_v1alpha_lists_every_service, v1alpha);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_lags_then_stalls_and_recovers_on_restart() {
    let (_dir, mut fed, hq, fr) = hq_and_office().await;
    fr.write("regions/fr/a", Op::Put, b"1").await.unwrap();

    // In sync alone may be seen before the write's push arrives (HQ and
    // the office both held nothing when the link opened): wait for both.
    let s = status_until(&hq, "hq in sync with office-fr, holding its write", |s| {
        in_sync_with(s, "office-fr") && s.totals.deltas > 0
    })
    .await;
    let p = peer(&s, "office-fr");
    assert_eq!(p.links, 1);
    assert!(p.last_sync_ms.is_some() && p.last_contact_ms.is_some());
    assert_eq!(p.stalled_since_ms, None);
    // HQ is the hub: an office that never dialled it is unreachable, not
    // an office whose data comes through others.
    let ke = peer(&s, "office-ke");
    assert_eq!(ke.state, PeerState::Unreachable);
    assert_eq!((ke.links, ke.last_contact_ms), (0, None));
    assert_eq!(peer(&s, OPERATOR).state, PeerState::Operator);
    // Seen from France, Kenya is another office: its data comes through HQ.
    let at_fr = fr.status().await.unwrap();
    assert_eq!(peer(&at_fr, "office-ke").state, PeerState::NoLink);
    assert_eq!(s.totals.deltas, 1);
    assert_eq!(s.totals.records, 1);
    assert!(s.totals.store_bytes > 0);
    let fr_author = s.authors.iter().find(|a| a.id == fr.id()).unwrap();
    assert_eq!(fr_author.name.as_deref(), Some("office-fr"));
    assert_eq!(fr_author.seq, 1);
    status_until(&fr, "office-fr in sync with hq", |s| in_sync_with(s, "hq")).await;

    // The peer stops; HQ goes on writing.
    fr.shutdown().await.unwrap();
    for i in 0..3 {
        hq.write(&format!("hq/k{i}"), Op::Put, b"v").await.unwrap();
    }
    let s1 = status_until(&hq, "office-fr stalled", |s| {
        peer(s, "office-fr").state == PeerState::Stalled
    })
    .await;
    let p1 = peer(&s1, "office-fr").clone();
    let lags = p1.lags.unwrap();
    assert_eq!(lags.they_lack.deltas, 3, "HQ's three writes");
    assert_eq!(lags.we_lack.deltas, 0);
    let since = lags.they_lack.since_ms.unwrap();
    assert!(p1.stalled_since_ms.unwrap() >= since);
    assert!(s1.now_ms - p1.stalled_since_ms.unwrap() >= s1.stall_after_ms);
    assert_eq!(p1.links, 0);
    let error = p1.last_error.as_ref().expect("why the link went");
    assert!(error.text.contains("link ended"), "{error:?}");

    // The lag in time grows while the peer is away.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let s2 = hq.status().await.unwrap();
    let p2 = peer(&s2, "office-fr");
    assert_eq!(p2.lags.unwrap().they_lack.since_ms, Some(since));
    assert!(s2.now_ms - since > s1.now_ms - since);
    assert_eq!(p2.state, PeerState::Stalled);

    // The page and the metrics say the same.
    let (code, page) = http_get(hq.admin_addr().unwrap(), "/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains(r#"id="member-office-fr" data-state="stalled""#),
        "{page}"
    );
    let m = scrape(&hq).await;
    let fr_labels = [("peer", "office-fr"), ("state", "stalled")];
    assert_eq!(sample(&m, "fedsync_peer_state", &fr_labels), 1.0);
    let they = [("peer", "office-fr"), ("direction", "they_lack")];
    assert_eq!(sample(&m, "fedsync_peer_lag_deltas", &they), 3.0);
    assert!(sample(&m, "fedsync_peer_lag_seconds", &they) >= 1.0);
    assert_eq!(
        sample(&m, "fedsync_peer_connected", &[("peer", "office-fr")]),
        0.0
    );

    // Back again: the lag returns to zero both ways, seen from both ends.
    let fr = fed.start("office-fr").await.unwrap();
    let s3 = status_until(&hq, "hq in sync with office-fr again", |s| {
        in_sync_with(s, "office-fr")
    })
    .await;
    assert_eq!(peer(&s3, "office-fr").stalled_since_ms, None);
    assert_eq!(s3.totals.deltas, 4);
    let fs = status_until(&fr, "office-fr in sync with hq again", |s| {
        in_sync_with(s, "hq")
    })
    .await;
    assert_eq!(fs.totals.deltas, 4);
    let m = scrape(&hq).await;
    assert_eq!(sample(&m, "fedsync_peer_lag_deltas", &they), 0.0);
    let in_sync = [("peer", "office-fr"), ("state", "in_sync")];
    assert_eq!(sample(&m, "fedsync_peer_state", &in_sync), 1.0);

    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_call_page_and_json_agree_with_the_node() {
    let (_dir, fed, hq, fr) = hq_and_office().await;
    fr.write("regions/fr/a", Op::Put, b"1").await.unwrap();
    status_until(&hq, "in sync", |s| in_sync_with(s, "office-fr")).await;

    let mut client = operator(&fed);
    let remote = client.status().await.unwrap();
    let local = hq.status().await.unwrap();
    assert_eq!(remote.id, hq.id());
    assert_eq!(remote.name, "hq");
    assert_eq!(remote.version, env!("CARGO_PKG_VERSION"));
    assert!(remote.serving);
    assert_eq!(remote.authors, local.authors);
    assert_eq!(remote.totals.deltas, local.totals.deltas);
    assert_eq!(remote.totals.records, 1);
    let states = |s: &NodeStatus| -> Vec<(String, PeerState)> {
        s.peers.iter().map(|p| (p.name.clone(), p.state)).collect()
    };
    assert_eq!(states(&remote), states(&local));
    assert_eq!(
        states(&remote),
        vec![
            ("office-ke".to_owned(), PeerState::Unreachable),
            ("office-fr".to_owned(), PeerState::InSync),
            (OPERATOR.to_owned(), PeerState::Operator),
        ],
        "every roster member, worst first"
    );
    let p = peer(&remote, "office-fr");
    assert!(p.traffic.bytes_received > 0 && p.traffic.bytes_sent > 0);
    assert!(p.traffic.sync_rounds >= 1);
    assert!(p
        .address
        .as_deref()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));

    // Every roster member on the page, each with its state.
    let admin = hq.admin_addr().unwrap();
    let (code, page) = http_get(admin, "/").await;
    assert_eq!(code, 200);
    for (name, state) in [
        ("hq", "self"),
        ("office-fr", "in_sync"),
        ("office-ke", "unreachable"),
        (OPERATOR, "operator"),
    ] {
        let row = format!(r#"id="member-{name}" data-state="{state}""#);
        assert!(page.contains(&row), "{row} in {page}");
    }
    assert!(page.contains(r#"http-equiv="refresh""#));
    assert!(page.contains("viewport"));

    let (code, json) = http_get(admin, "/status.json").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["name"], "hq");
    assert_eq!(json["peers"][0]["name"], "office-ke");
    assert_eq!(json["peers"][0]["state"], "unreachable");
    assert_eq!(json["peers"][1]["name"], "office-fr");
    assert_eq!(json["peers"][1]["state"], "in_sync");
    assert_eq!(json["peers"][1]["lag"]["they_lack"]["deltas"], 0);
    assert_eq!(json["totals"]["deltas"], 1);

    // The admin port only reads.
    let (code, _) = http_get(admin, "/nothing-here").await;
    assert_eq!(code, 404);
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_applied_deltas_rpcs_and_traffic() {
    let (_dir, fed, hq, fr) = hq_and_office().await;
    status_until(&hq, "in sync", |s| in_sync_with(s, "office-fr")).await;

    let before = scrape(&hq).await;
    assert_eq!(sample(&before, "fedsync_up", &[]), 1.0);
    let applied = sample(&before, "fedsync_deltas_applied_total", &[]);
    let d = fr.write("regions/fr/x", Op::Put, b"1").await.unwrap();
    assert!(hq.wait_for(&common::frontier_of([&d]), SYNC_TIMEOUT).await);
    let mut client = operator(&fed);
    client.status().await.unwrap();

    let after = scrape(&hq).await;
    assert_eq!(
        sample(&after, "fedsync_deltas_applied_total", &[]),
        applied + 1.0
    );
    assert_eq!(sample(&after, "fedsync_deltas_held", &[]), 1.0);
    let received = [("peer", "office-fr")];
    assert!(
        sample(&after, "fedsync_peer_received_bytes_total", &received)
            > sample(&before, "fedsync_peer_received_bytes_total", &received)
    );
    let status_rpc = [("method", "fedsync.v1.Client/Status")];
    assert!(sample(&after, "fedsync_rpc_duration_seconds_count", &status_rpc) >= 1.0);
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();
}

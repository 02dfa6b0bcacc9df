//! The organisation's tree on real nodes: HQ, two regions, and units below
//! one of them, each dialling the node above it. Authority holds at every
//! hop for every pair of levels, writes relay up and down the tree, a
//! restarted unit catches up through its region, a revoked unit key is
//! shut out everywhere, a unit moved to another region keeps its
//! history valid, and a centre that holds only its branch gets exactly
//! that, is sent nothing else, and says what it does not hold.

use ed25519_dalek::SigningKey;

use fedsync::client::{Client, ClientConfig};
use fedsync::core::{Above, NodeId, Op, SignedDelta, Standing};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::status::{tree, NodeStatus, PeerState, PeerStatus};
use fedsync::node::NodeHandle;

mod common;
use common::inject::{self, send_as};
use common::{all_hold, frontier_of, http_get, status_until, NO_ANTI_ENTROPY, SYNC_TIMEOUT};

/// HQ; regions ru-altai and ru-kem dialling it; units aleysk and biysk
/// dialling ru-altai's office.
fn tree() -> Vec<NodeSpec> {
    let altai = || Above::Region("ru-altai".into());
    vec![
        NodeSpec::hq("hq"),
        NodeSpec::region("office-altai", "ru-altai", &["hq"]),
        NodeSpec::region("office-kem", "ru-kem", &["hq"]),
        NodeSpec::unit("centre-aleysk", "aleysk", altai(), &["office-altai"]),
        NodeSpec::unit("centre-biysk", "biysk", altai(), &["office-altai"]),
    ]
}

/// The nodes of [`tree`], in its order.
const NAMES: [&str; 5] = [
    "hq",
    "office-altai",
    "office-kem",
    "centre-aleysk",
    "centre-biysk",
];

/// `signer`'s first delta, at `key`.
fn crafted(signer: &SigningKey, key: &str) -> SignedDelta {
    inject::crafted(NodeId(signer.verifying_key().to_bytes()), signer, 1, key)
}

async fn start_all(fed: &mut LocalFederation, names: &[&str]) -> Vec<NodeHandle> {
    let mut nodes = Vec::new();
    for n in names {
        nodes.push(fed.start(n).await.unwrap());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_is_refused_outside_its_space_at_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &tree(), NO_ANTI_ENTROPY).unwrap();
    let names = ["hq", "office-altai", "centre-aleysk", "centre-biysk"];
    let nodes = start_all(&mut fed, &names).await;
    let key = |n: &str| fed.node_key(n).unwrap().signing_key().clone();
    // (signer, key it has no authority over): a unit into its region, a
    // region into its unit, one sibling into another, a unit into HQ, HQ
    // into a unit.
    let cases = [
        ("centre-aleysk", "regions/ru-altai/x"),
        ("office-altai", "units/aleysk/x"),
        ("centre-aleysk", "units/biysk/x"),
        ("centre-aleysk", "hq/x"),
        ("hq", "units/aleysk/x"),
    ];
    for (signer, target) in cases {
        let hostile = [crafted(&key(signer), target)];
        for node in &nodes {
            let before = node.stats().await.unwrap();
            let codes = send_as(&fed, signer, node.local_addr(), &hostile).await;
            assert_eq!(
                codes,
                ["no_authority"],
                "{signer} -> {target} at {}",
                node.name()
            );
            let after = node.stats().await.unwrap();
            assert_eq!(after.digest, before.digest, "{} changed", node.name());
            assert_eq!(node.get(target).await.unwrap(), None);
            let refused = |s: &fedsync::node::Stats| {
                s.counters.refused.get("no_authority").copied().unwrap_or(0)
            };
            assert_eq!(refused(&after), refused(&before) + 1);
        }
    }
    // Each refusal is kept in the quarantine an operator lists.
    for node in &nodes {
        let q = node.quarantine(100).await.unwrap();
        assert_eq!(q.kept, cases.len() as u64, "{}", node.name());
    }
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_relay_up_and_down_the_tree_and_a_unit_catches_up_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &tree(), NO_ANTI_ENTROPY).unwrap();
    let names = NAMES;
    let mut nodes = start_all(&mut fed, &names).await;
    let aleysk_write = nodes[3]
        .write("units/aleysk/reports-draft", Op::Put, b"12 volunteers")
        .await
        .unwrap();
    let hq_write = nodes[0]
        .write("hq/notice", Op::Put, b"Q3 due")
        .await
        .unwrap();
    let kem_write = nodes[2]
        .write("regions/ru-kem/a", Op::Put, b"1")
        .await
        .unwrap();
    let target = frontier_of([&aleysk_write, &hq_write, &kem_write]);
    all_hold(&nodes.iter().collect::<Vec<_>>(), &target).await;

    // A unit down for a while catches up through its region on restart.
    let biysk = nodes.pop().unwrap();
    biysk.shutdown().await.unwrap();
    let later = nodes[3]
        .write("units/aleysk/b", Op::Put, b"while biysk was down")
        .await
        .unwrap();
    let notice = nodes[0]
        .write("hq/notice", Op::Put, b"Q3 due on the 15th")
        .await
        .unwrap();
    let target = frontier_of([&later, &notice, &kem_write]);
    all_hold(&nodes.iter().collect::<Vec<_>>(), &target).await;
    let biysk = fed.start("centre-biysk").await.unwrap();
    all_hold(&[&biysk], &target).await;
    assert_eq!(
        biysk
            .get("hq/notice")
            .await
            .unwrap()
            .map(|d| d.value().to_vec()),
        Some(b"Q3 due on the 15th".to_vec())
    );
    // Its region's node shows it below, linked.
    let s = nodes[1].status().await.unwrap();
    let peer = s.peers.iter().find(|p| p.name == "centre-biysk").unwrap();
    assert!(peer.below, "{peer:?}");
    assert_eq!(peer.unit.as_deref(), Some("biysk"));
    assert_eq!(peer.region.as_deref(), Some("ru-altai"));
    nodes.push(biysk);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_unit_key_is_shut_out_and_a_moved_unit_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &tree(), NO_ANTI_ENTROPY).unwrap();
    let names = NAMES;
    let nodes = start_all(&mut fed, &names).await;
    let a = nodes[3]
        .write("units/aleysk/a", Op::Put, b"1")
        .await
        .unwrap();
    let b = nodes[4]
        .write("units/biysk/a", Op::Put, b"1")
        .await
        .unwrap();
    all_hold(&nodes.iter().collect::<Vec<_>>(), &frontier_of([&a, &b])).await;

    // Aleysk moves to ru-kem; biysk's key is revoked. HQ publishes, and the
    // roster reaches the units through the regions.
    let biysk_id = nodes[4].id();
    let signed = fed
        .change_roster(|r| {
            r.units.insert("aleysk", Above::Region("ru-kem".into()));
            let mut m = r.member(&biysk_id).unwrap().clone();
            m.standing = Standing::Revoked { valid_through: 0 };
            r.insert(m);
        })
        .unwrap();
    nodes[0].publish_roster(signed.as_bytes()).await.unwrap();
    for node in &nodes[..4] {
        let mut rx = node.roster();
        let got =
            tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|r| r.version >= signed.version()));
        assert!(
            got.await.is_ok(),
            "{} never adopted the roster",
            node.name()
        );
    }
    for node in &nodes[..4] {
        // The moved unit's write stays; the revoked one's is retracted.
        assert!(node.get("units/aleysk/a").await.unwrap().is_some());
        assert_eq!(
            node.get("units/biysk/a").await.unwrap(),
            None,
            "{}",
            node.name()
        );
    }
    let s = nodes[2].status().await.unwrap();
    let aleysk = s.peers.iter().find(|p| p.name == "centre-aleysk").unwrap();
    assert_eq!(aleysk.region.as_deref(), Some("ru-kem"));
    // Aleysk still writes its own space after the move.
    let c = nodes[3]
        .write("units/aleysk/c", Op::Put, b"2")
        .await
        .unwrap();
    all_hold(&nodes[..4].iter().collect::<Vec<_>>(), &frontier_of([&c])).await;
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_centre_holding_its_branch_gets_it_and_says_what_it_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &tree(), NO_ANTI_ENTROPY).unwrap();
    let path = fed.config_path("centre-aleysk");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("[sync]\n"), "{config}");
    let config = config.replacen("[sync]\n", "[sync]\nholds = \"tree\"\n", 1);
    std::fs::write(&path, config).unwrap();
    let names = NAMES;
    let nodes = start_all(&mut fed, &names).await;
    let keys = [
        "hq/notice",
        "regions/ru-altai/a",
        "regions/ru-kem/a",
        "units/aleysk/a",
        "units/biysk/a",
    ];
    let mut written = Vec::new();
    for (node, key) in nodes.iter().zip(keys) {
        written.push(node.write(key, Op::Put, b"1").await.unwrap());
    }
    let [hq, altai, kem, aleysk, biysk] = &written[..] else {
        unreachable!("one write per node")
    };
    let everything = frontier_of([hq, altai, kem, aleysk, biysk]);
    let full: Vec<&NodeHandle> = [0, 1, 2, 4].iter().map(|i| &nodes[*i]).collect();
    all_hold(&full, &everything).await;
    let branch = frontier_of([hq, altai, aleysk, biysk]);
    all_hold(&[&nodes[3]], &branch).await;

    // Its region's office holds ru-kem's write, so a link that did not
    // respect the branch would have sent it by now.
    let s = nodes[3].status().await.unwrap();
    assert_eq!(s.holds, "tree");
    assert_eq!(s.not_held(), vec!["office-kem"]);
    assert!(
        s.authors.iter().all(|a| a.id != kem.author()),
        "{:?}",
        s.authors
    );
    assert_eq!(s.totals.unheld, 0, "nothing it does not hold was sent");
    assert_eq!(nodes[3].get("regions/ru-kem/a").await.unwrap(), None);
    // Lag both ways is over what both ends hold: none.
    for (at, peer) in [(3, "office-altai"), (1, "centre-aleysk")] {
        let what = format!("{} in sync with {peer}", names[at]);
        status_until(&nodes[at], &what, |s| {
            let p = s.peers.iter().find(|p| p.name == peer).unwrap();
            p.lags.is_some_and(|l| l.in_sync())
        })
        .await;
    }
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

fn peer<'a>(s: &'a NodeStatus, name: &str) -> &'a PeerStatus {
    s.peers.iter().find(|p| p.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_node_under_its_parent_and_where_a_chain_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &tree(), NO_ANTI_ENTROPY).unwrap();
    let nodes = start_all(&mut fed, &NAMES).await;
    let d = nodes[3].write("units/aleysk/a", Op::Put, b"1").await;
    all_hold(&[&nodes[0], &nodes[4]], &frontier_of([&d.unwrap()])).await;

    // HQ links with the regions only: a centre's data comes through its
    // region's office, whose copy of the centre's log HQ compares with its own.
    let s = status_until(&nodes[0], "HQ sees aleysk via its region", |s| {
        let p = peer(s, "centre-aleysk");
        p.seq == 1 && p.via.as_ref().is_some_and(|v| v.hop_seq == Some(1))
    })
    .await;
    let aleysk = peer(&s, "centre-aleysk");
    assert_eq!(aleysk.path, ["ru-altai", "aleysk"]);
    assert_eq!(aleysk.via.as_ref().unwrap().hop, "office-altai");
    let text = tree::describe(&s, aleysk);
    assert!(
        text.starts_with("via office-altai: in step (seq 1)"),
        "{text}"
    );
    assert!(peer(&s, "office-altai").via.is_none(), "a direct link");
    let order: Vec<&str> = (tree::rows(&s).iter())
        .map(|r| r.peer.map_or("hq", |p| p.name.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            "hq",
            "office-altai",
            "centre-aleysk",
            "centre-biysk",
            "office-kem"
        ]
    );
    // A centre reaches HQ and its sibling through the same office.
    let s = nodes[4].status().await.unwrap();
    assert_eq!(s.path, ["ru-altai", "biysk"]);
    for far in ["hq", "centre-aleysk", "office-kem"] {
        let v = peer(&s, far).via.as_ref();
        assert_eq!(v.map(|v| v.hop.as_str()), Some("office-altai"), "{far}");
    }

    // The region's office goes down: at HQ the chain to each of its
    // centres is broken there, on the page too.
    let mut nodes = nodes;
    nodes.remove(1).shutdown().await.unwrap();
    let s = status_until(&nodes[0], "HQ loses office-altai", |s| {
        peer(s, "office-altai").state == PeerState::Unreachable
    })
    .await;
    for centre in ["centre-aleysk", "centre-biysk"] {
        let p = peer(&s, centre);
        assert!(tree::broken(&s, p), "{p:?}");
        let text = tree::describe(&s, p);
        assert!(
            text.starts_with("chain broken at office-altai: unreachable"),
            "{text}"
        );
    }
    assert!(!tree::broken(&s, peer(&s, "office-kem")));
    let (code, page) = http_get(nodes[0].admin_addr().unwrap(), "/").await;
    assert_eq!(code, 200);
    let row = r#"id="tree-centre-aleysk" data-broken="true""#;
    assert!(page.contains(row), "{row} in {page}");
    assert!(page.contains("chain broken at office-altai"), "{page}");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_sees_the_hops_below_its_regions_as_they_report_them() {
    let dir = tempfile::tempdir().unwrap();
    let quick = "[sync]\nanti_entropy_secs = 1\n";
    let mut fed = LocalFederation::create(dir.path(), &tree(), quick).unwrap();
    let mut nodes = start_all(&mut fed, &NAMES).await;
    let d = nodes[3].write("units/aleysk/a", Op::Put, b"1").await;
    all_hold(&[&nodes[0]], &frontier_of([&d.unwrap()])).await;
    let reported = |s: &NodeStatus, centre: &str| peer(s, centre).reported.clone();
    let s = status_until(&nodes[0], "office-altai reports its centres", |s| {
        ["centre-aleysk", "centre-biysk"].iter().all(|c| {
            reported(s, c).is_some_and(|r| {
                r.from == "office-altai" && r.to == *c && r.state == PeerState::InSync
            })
        })
    })
    .await;
    let text = tree::describe(&s, peer(&s, "centre-aleysk"));
    assert!(text.ends_with("; office-altai in sync with it"), "{text}");

    // A centre goes down: HQ's own link to the office is fine, and the
    // office's report says where the chain breaks.
    nodes.remove(4).shutdown().await.unwrap();
    let s = status_until(&nodes[0], "HQ hears centre-biysk is down", |s| {
        reported(s, "centre-biysk").is_some_and(|r| r.state == PeerState::Unreachable)
    })
    .await;
    assert_eq!(peer(&s, "office-altai").state, PeerState::InSync);
    assert!(tree::broken(&s, peer(&s, "centre-biysk")));
    assert!(!tree::broken(&s, peer(&s, "centre-aleysk")));
    let text = tree::describe(&s, peer(&s, "centre-biysk"));
    assert!(
        text.starts_with("chain broken at office-altai -> centre-biysk: unreachable, last contact"),
        "{text}"
    );
    let (_, json) = http_get(nodes[0].admin_addr().unwrap(), "/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let biysk = (json["peers"].as_array().unwrap().iter())
        .find(|p| p["name"] == "centre-biysk")
        .unwrap();
    assert_eq!(biysk["reported"]["state"], "unreachable", "{biysk}");
    assert_eq!(biysk["via"]["hop"], "office-altai", "{biysk}");
    // And to an operator over the Status call.
    let config = ClientConfig::load(&fed.client_config()).unwrap();
    let wire = Client::from_config(&config)
        .unwrap()
        .status()
        .await
        .unwrap();
    let (ours, theirs) = (peer(&s, "centre-biysk"), peer(&wire, "centre-biysk"));
    assert_eq!(theirs.via, ours.via);
    assert_eq!(theirs.path, ["ru-altai", "biysk"]);
    let r = theirs.reported.as_ref().unwrap();
    assert_eq!(
        (r.from.as_str(), r.state),
        ("office-altai", PeerState::Unreachable)
    );
    assert!(r.contact_ms.is_some());
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_that_goes_down_reaches_hq_without_waiting_for_a_round() {
    let dir = tempfile::tempdir().unwrap();
    // No anti-entropy round within the test: only the news itself moves.
    let mut fed = LocalFederation::create(dir.path(), &tree(), NO_ANTI_ENTROPY).unwrap();
    let mut nodes = start_all(&mut fed, &NAMES).await;
    status_until(&nodes[0], "office-altai reports centre-biysk", |s| {
        peer(s, "centre-biysk").reported.is_some()
    })
    .await;
    nodes.remove(4).shutdown().await.unwrap();
    let s = status_until(&nodes[0], "HQ hears centre-biysk is down", |s| {
        (peer(s, "centre-biysk").reported.as_ref()).is_some_and(|r| r.is_down())
    })
    .await;
    assert!(tree::broken(&s, peer(&s, "centre-biysk")));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

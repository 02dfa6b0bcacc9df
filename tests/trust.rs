//! Federation trust on real nodes: roster changes made at HQ reach every
//! node by sync alone and take effect for TLS and validation at once; a
//! compromised region's valid key gains nothing outside its own space;
//! revocation and rotation keep every node's state identical.

use ed25519_dalek::SigningKey;

use fedsync::core::{NodeId, Op, SignedDelta, Standing};
use fedsync::local::{write_identity, LocalFederation};
use fedsync::node::NodeHandle;

mod common;
use common::inject::{crafted, send_as};
use common::{all_hold, frontier_of, hub_and_spoke, NO_ANTI_ENTROPY, SYNC_TIMEOUT};

async fn wait_roster(node: &NodeHandle, version: u64) {
    let mut rx = node.roster();
    let got = tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|r| r.version >= version)).await;
    assert!(
        got.is_ok(),
        "{} never adopted roster {version}",
        node.name()
    );
}

/// `signer`'s valid delta with its author field rewritten to `claimed`: a
/// forged signature, as a relay would try to pass one off.
fn forged(claimed: NodeId, signer: &SigningKey, key: &str) -> SignedDelta {
    let real = crafted(NodeId(signer.verifying_key().to_bytes()), signer, 1, key);
    let mut bytes = real.as_bytes().to_vec();
    bytes[1..33].copy_from_slice(&claimed.0);
    SignedDelta::decode(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_region_gains_nothing_at_any_honest_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();
    let fr_key = fed.node_key("office-fr").unwrap();
    let ke_id = fed.node_key("office-ke").unwrap().id();
    let (fr_id, signer) = (fr_key.id(), fr_key.signing_key().clone());
    let hostile = [
        crafted(fr_id, &signer, 1, "regions/ke/reports/2026-Q3"),
        crafted(fr_id, &signer, 1, "hq/notice"),
        // Claims to be Kenya's write; signed with France's key.
        forged(ke_id, &signer, "regions/ke/reports/2026-Q3"),
    ];
    for node in [&hq, &ke] {
        let before = node.stats().await.unwrap();
        let mut codes = send_as(&fed, "office-fr", node.local_addr(), &hostile).await;
        codes.sort();
        assert_eq!(codes, ["bad_signature", "no_authority", "no_authority"]);
        let after = node.stats().await.unwrap();
        assert_eq!(after.digest, before.digest, "{} changed", node.name());
        assert_eq!(after.counters.refused.get("no_authority"), Some(&2));
        assert_eq!(after.counters.refused.get("bad_signature"), Some(&1));
        let q = node.quarantine(10).await.unwrap();
        assert_eq!(q.kept, 3);
        assert!(q.entries.iter().all(|e| e.origin == "office-fr"));
        assert!(node
            .get("regions/ke/reports/2026-Q3")
            .await
            .unwrap()
            .is_none());
        assert!(node.get("hq/notice").await.unwrap().is_none());
    }
    hq.shutdown().await.unwrap();
    ke.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_published_at_hq_reaches_every_node_and_shuts_the_key_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();
    let written = ke.write("regions/ke/a", Op::Put, b"1").await.unwrap();
    all_hold(&[&hq, &fr], &frontier_of([&written])).await;
    let refused_before = *hq.handshakes_refused().borrow();

    let ke_id = ke.id();
    let signed = fed
        .change_roster(|r| {
            let mut m = r.member(&ke_id).unwrap().clone();
            m.standing = Standing::Revoked { valid_through: 0 };
            r.insert(m);
        })
        .unwrap();
    let offer = hq.publish_roster(signed.as_bytes()).await.unwrap();
    assert!(format!("{offer:?}").contains("retracted: 1"), "{offer:?}");

    // France hears of it by sync alone, and retracts Kenya's write too.
    wait_roster(&fr, signed.version()).await;
    for node in [&hq, &fr] {
        assert_eq!(node.get("regions/ke/a").await.unwrap(), None);
        let s = node.stats().await.unwrap();
        assert_eq!(s.frontier.head(&ke_id).seq, 0);
        assert_eq!(s.counters.retracted, 1);
    }
    assert_eq!(
        hq.stats().await.unwrap().digest,
        fr.stats().await.unwrap().digest
    );
    // Kenya's link was closed, and its redial is refused at the handshake.
    let links = hq.stats().await.unwrap().links;
    assert!(links.iter().all(|l| l.peer != "office-ke"), "{links:?}");
    let mut refused = hq.handshakes_refused();
    let redial = tokio::time::timeout(SYNC_TIMEOUT, refused.wait_for(|n| *n > refused_before));
    assert!(redial.await.is_ok(), "Kenya's redial was not refused");
    for n in [hq, fr, ke] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_after_a_compromise_are_retracted_everywhere_and_nodes_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();
    let first = fr.write("regions/fr/x", Op::Put, b"good").await.unwrap();
    fr.write("regions/fr/x", Op::Put, b"after").await.unwrap();
    let last = fr.write("regions/fr/y", Op::Put, b"after").await.unwrap();
    all_hold(&[&hq, &ke], &frontier_of([&last])).await;

    let fr_id = fr.id();
    let signed = fed
        .change_roster(|r| {
            let mut m = r.member(&fr_id).unwrap().clone();
            m.standing = Standing::Revoked { valid_through: 1 };
            r.insert(m);
        })
        .unwrap();
    hq.publish_roster(signed.as_bytes()).await.unwrap();
    wait_roster(&ke, signed.version()).await;
    for node in [&hq, &ke] {
        let got = node.get("regions/fr/x").await.unwrap();
        assert_eq!(got, Some(first.clone()), "{}", node.name());
        assert_eq!(node.get("regions/fr/y").await.unwrap(), None);
        let q = node.quarantine(10).await.unwrap();
        let retracted = q.entries.iter().filter(|e| e.code == "retracted").count();
        assert_eq!(retracted, 2, "{}", node.name());
    }
    let (a, b) = (hq.stats().await.unwrap(), ke.stats().await.unwrap());
    assert_eq!(a.frontier.head(&fr_id).seq, 1);
    assert_eq!(a.digest, b.digest);
    for n in [hq, fr, ke] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_node_continues_under_its_name_and_its_history_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut fed = LocalFederation::create(dir.path(), &hub_and_spoke(), NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();
    let old = fr
        .write("regions/fr/old", Op::Put, b"by the old key")
        .await
        .unwrap();
    all_hold(&[&hq, &ke], &frontier_of([&old])).await;
    let old_id = fr.id();
    fr.shutdown().await.unwrap();

    // The office makes a new key in place; HQ rotates the roster entry.
    let fr_dir = dir.path().join("office-fr");
    for f in ["node.key", "tls.crt", "tls.key"] {
        std::fs::rename(fr_dir.join(f), fr_dir.join(format!("{f}.old"))).unwrap();
    }
    let successor = write_identity(&fr_dir, "office-fr").unwrap();
    let new_id = successor.id;
    let signed = fed
        .change_roster(|r| {
            let mut m = r.member(&old_id).unwrap().clone();
            r.insert(fedsync::core::Member {
                id: successor.id,
                tls: successor.tls,
                ..m.clone()
            });
            m.standing = Standing::Retired {
                successor: Some(successor.id),
            };
            r.insert(m);
        })
        .unwrap();
    hq.publish_roster(signed.as_bytes()).await.unwrap();
    wait_roster(&ke, signed.version()).await;

    let fr = fed.start("office-fr").await.unwrap();
    assert_eq!(fr.id(), new_id);
    let new = fr
        .write("regions/fr/new", Op::Put, b"by the successor")
        .await
        .unwrap();
    assert_eq!(new.author(), new_id);
    all_hold(&[&hq, &ke], &frontier_of([&new])).await;
    // The old key's history is still valid and served everywhere.
    for node in [&hq, &ke, &fr] {
        let got = node.get("regions/fr/old").await.unwrap();
        assert_eq!(got.map(|d| d.author()), Some(old_id), "{}", node.name());
    }
    let (a, b) = (hq.stats().await.unwrap(), ke.stats().await.unwrap());
    assert_eq!(a.digest, b.digest);
    for n in [hq, fr, ke] {
        n.shutdown().await.unwrap();
    }
}

//! Room for a whole organisation: HQ takes every office in its roster at
//! once, however many there are, with operators beside them; and an office
//! refused for its connection limit learns why, shows as refused at both
//! ends, and is let in once it has room.

mod common;

use std::sync::Arc;

use fedsync::client::Client;
use fedsync::core::Frontier;
use fedsync::local::{LocalFederation, NodeSpec, OPERATOR};
use fedsync::node::status::PeerState;
use fedsync::node::trust_from;
use fedsync::rpc::pb::{self, peer_client::PeerClient, peer_message::Body};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;

use common::{status_until, NO_ANTI_ENTROPY, SYNC_TIMEOUT};

/// More offices than the old fixed limit of 64 connections, and than any
/// fixed default: capacity must come from the roster.
const OFFICES: usize = 120;

fn office(i: usize) -> String {
    format!("office-{i:03}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_takes_every_office_in_its_roster_at_once_with_operators_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = vec![NodeSpec::hq("hq")];
    for i in 0..OFFICES {
        specs.push(NodeSpec::region(&office(i), &format!("r{i:03}"), &["hq"]));
    }
    let mut fed = LocalFederation::create(dir.path(), &specs, NO_ANTI_ENTROPY).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let addr = hq.local_addr();
    let roster = fed.signed_roster().roster().version;
    // Each office opens its sync stream as its dialer would, with the
    // digest of what it holds (nothing, as HQ): one round trip to in sync.
    let mut links = Vec::new();
    for i in 0..OFFICES {
        let channel = fed.channel_as(&office(i), addr).unwrap();
        let (out, rx) = mpsc::channel(4);
        let digest = pb::Digest {
            digest: Frontier::new().digest().0.to_vec(),
            roster_version: roster,
            ..Default::default()
        };
        let opening = pb::PeerMessage {
            body: Some(Body::Digest(digest)),
        };
        out.send(opening).await.unwrap();
        let call = async move { PeerClient::new(channel).sync(ReceiverStream::new(rx)).await };
        links.push((out, tokio::spawn(call)));
    }
    let mut replies = Vec::new();
    for (out, call) in links {
        let stream = tokio::time::timeout(SYNC_TIMEOUT, call)
            .await
            .expect("an office's Sync call hung")
            .unwrap()
            .expect("HQ refused an office in its roster")
            .into_inner();
        replies.push((out, stream));
    }
    for (_, stream) in replies.iter_mut() {
        let first = tokio::time::timeout(SYNC_TIMEOUT, stream.message())
            .await
            .expect("no answer to an office's digest")
            .unwrap()
            .expect("HQ ended an office's stream");
        assert!(
            matches!(first.body, Some(Body::Digest(_)) | Some(Body::InSync(_))),
            "{first:?}"
        );
    }
    let s = status_until(&hq, "every office linked and in sync", |s| {
        (s.peers.iter())
            .filter(|p| p.name.starts_with("office-"))
            .all(|p| p.links == 1 && p.state == PeerState::InSync)
    })
    .await;
    assert_eq!(s.peers.iter().filter(|p| p.links == 1).count(), OFFICES);
    // The operator's calls are served beside them.
    let operator = fed.tls_identity(OPERATOR).unwrap();
    let trust = trust_from(fed.signed_roster().roster());
    for _ in 0..5 {
        let mut op = Client::connect(&addr.to_string(), &operator, trust.clone()).unwrap();
        let st = op.status().await.expect("an operator's call was refused");
        assert_eq!(st.peers.iter().filter(|p| p.links == 1).count(), OFFICES);
    }
    assert_eq!(s.totals.connections_refused["member_limit"], 0);
    drop(replies);
    hq.shutdown().await.unwrap();
}

/// A TLS connection to `addr` as member `name`, past the handshake and the
/// HTTP/2 preface, held open without a call on it: a stale connection.
async fn held_connection(
    fed: &LocalFederation,
    name: &str,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fedsync::identity::tls::install_crypto_provider();
    let identity = fed.tls_identity(name).unwrap();
    let trust = trust_from(fed.signed_roster().roster());
    let tls = fedsync::identity::tls::client_config(&identity, &trust).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server = ServerName::try_from("fedsync").unwrap();
    let mut io = TlsConnector::from(Arc::new(tls))
        .connect(server, tcp)
        .await
        .unwrap();
    io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    io
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_over_its_connection_limit_is_told_shown_refused_and_let_in_with_room() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let extra = "[limits]\nconns_per_peer_max = 1\n[sync]\nreconnect_min_ms = 50\n\
                 reconnect_max_ms = 2000\nstall_after_secs = 1\n";
    let mut fed = LocalFederation::create(dir.path(), &specs, extra).unwrap();
    let hq = fed.start("hq").await.unwrap();
    // A connection of office-fr's that HQ still holds (as after a network
    // failure the office has not noticed yet) takes its one place.
    let stale = held_connection(&fed, "office-fr", hq.local_addr()).await;
    let fr = fed.start("office-fr").await.unwrap();

    let s = status_until(&hq, "HQ shows office-fr refused", |s| {
        s.peers
            .iter()
            .any(|p| p.name == "office-fr" && p.state == PeerState::Refused)
    })
    .await;
    let p = s.peers.iter().find(|p| p.name == "office-fr").unwrap();
    let why = &p.last_error.as_ref().unwrap().text;
    assert!(why.contains("already has 1 connections open"), "{why}");
    assert!(p.refused_since_ms.is_some());
    assert!(s.totals.connections_refused["member_limit"] >= 1);
    // The office heard why, in a status, and shows HQ as refusing it.
    let at_fr = status_until(&fr, "office-fr shows hq refusing it", |s| {
        s.peers
            .iter()
            .any(|p| p.name == "hq" && p.state == PeerState::Refused)
    })
    .await;
    let p = at_fr.peers.iter().find(|p| p.name == "hq").unwrap();
    let why = &p.last_error.as_ref().unwrap().text;
    assert!(why.contains("limit 1"), "{why}");
    // Refused for longer than a stall takes, it is stalled.
    let s = status_until(&hq, "office-fr refused long enough to stall", |s| {
        s.peers
            .iter()
            .any(|p| p.name == "office-fr" && p.state == PeerState::Stalled)
    })
    .await;
    assert!(s.peers.iter().any(|p| p.stalled_since_ms.is_some()));

    // With room again, it is let in at its next dial and syncs.
    drop(stale);
    fr.write("regions/fr/x", fedsync::core::Op::Put, b"1")
        .await
        .unwrap();
    let mut want = Frontier::new();
    want.set(fr.id(), fr.frontier().borrow().head(&fr.id()));
    assert!(
        hq.wait_for(&want, SYNC_TIMEOUT).await,
        "office-fr never got in"
    );
    status_until(&hq, "office-fr in sync, no longer refused", |s| {
        s.peers.iter().any(|p| {
            p.name == "office-fr" && p.state == PeerState::InSync && p.refused_since_ms.is_none()
        })
    })
    .await;
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();
}

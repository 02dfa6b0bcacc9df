//! Hostile connections: clients refused at the TLS handshake (no
//! certificate, a key the roster does not pin, a revoked key), a flood of
//! connections that never finish a handshake while a member connects and
//! an operator calls, and a peer that stops reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use fedsync::client::Client;
use fedsync::core::Standing;
use fedsync::identity::tls::{client_config, install_crypto_provider, TlsIdentity};
use fedsync::local::OPERATOR;
use fedsync::node::{trust_from, NodeHandle};
use fedsync::rpc::pb::peer_client::PeerClient;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::common::flood::Flood;
use crate::common::SYNC_TIMEOUT as WAIT;
use crate::harness::*;

// ---------------------------------------------------------------------------
// Refused at the handshake
// ---------------------------------------------------------------------------

/// Connects over TLS with `tls`, sends the HTTP/2 preface and reads one
/// byte. `Ok` only if the server accepted the client: a refused client sees
/// the handshake, its write or its read fail.
async fn handshake_and_read(tls: rustls::ClientConfig, addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("fedsync").unwrap();
        let mut io = TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut byte = [0u8; 1];
        match io.read(&mut byte).await {
            Ok(0) => Err("read: connection closed".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .expect("the server neither accepted nor refused the connection")
}

/// A gRPC channel whose TLS is `tls`, with no check of its own on the
/// server: the node's side alone decides.
fn channel_with(tls: rustls::ClientConfig, addr: SocketAddr) -> Channel {
    let tls = Arc::new(tls);
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("fedsync").unwrap();
            let io = TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(connector)
}

/// A `Sync` call over `channel`: must fail. Returns the error.
async fn sync_fails(channel: Channel) -> Status {
    let (out, rx) = mpsc::channel(1);
    out.send(digest_msg(1)).await.unwrap();
    let mut client = PeerClient::new(channel);
    let call = async {
        let mut replies = client.sync(ReceiverStream::new(rx)).await?.into_inner();
        // With TLS 1.3 a client may finish its handshake before the server
        // judges its certificate: the refusal then shows on the first read.
        loop {
            if replies.message().await?.is_none() {
                return Ok(());
            }
        }
    };
    let result: Result<(), Status> = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call neither failed nor succeeded");
    result.expect_err("a Sync call over a refused connection succeeded")
}

/// Waits until HQ has refused `n` handshakes in all.
async fn refused_handshakes_reach(hq: &NodeHandle, n: u64) {
    let mut refused = hq.handshakes_refused();
    let reached = tokio::time::timeout(WAIT, refused.wait_for(|c| *c >= n))
        .await
        .is_ok();
    let counted = *refused.borrow();
    assert!(
        reached,
        "HQ counted {counted} refused handshakes, expected {n}"
    );
}

/// A client that accepts any server certificate and presents none.
fn anonymous_client() -> rustls::ClientConfig {
    install_crypto_provider();
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::common::AcceptAnyServer))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

/// `name`'s TLS identity in a client that trusts the roster file's members.
fn member_client(t: &Target, identity: &TlsIdentity) -> rustls::ClientConfig {
    client_config(identity, &trust_from(t.fed.signed_roster().roster())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let t = Target::start().await;
    let addr = t.hq.local_addr();
    // The same probe with office-fr's certificate gets in, and is not
    // counted: what follows is refused for the missing certificate alone.
    let fr = t.fed.tls_identity("office-fr").unwrap();
    assert_eq!(
        handshake_and_read(member_client(&t, &fr), addr).await,
        Ok(())
    );
    assert_eq!(*t.hq.handshakes_refused().borrow(), 0);

    let err = handshake_and_read(anonymous_client(), addr)
        .await
        .expect_err("a client without a certificate got in");
    refused_handshakes_reach(&t.hq, 1).await;
    let status = sync_fails(channel_with(anonymous_client(), addr)).await;
    refused_handshakes_reach(&t.hq, 2).await;
    assert!(t.stats().await.links.is_empty(), "no link was opened");
    eprintln!("no certificate: {err}; gRPC: {status:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_not_in_the_roster_is_refused_at_the_handshake() {
    let t = Target::start().await;
    let addr = t.hq.local_addr();
    let stranger = TlsIdentity::generate("office-fr").unwrap();
    let err = handshake_and_read(member_client(&t, &stranger), addr)
        .await
        .expect_err("a certificate the roster does not pin got in");
    refused_handshakes_reach(&t.hq, 1).await;
    let status = sync_fails(channel_with(member_client(&t, &stranger), addr)).await;
    refused_handshakes_reach(&t.hq, 2).await;
    assert!(t.stats().await.links.is_empty(), "no link was opened");
    eprintln!("stranger: {err}; gRPC: {status:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_the_handshake() {
    let t = Target::start().await;
    let addr = t.hq.local_addr();
    let ke = t.fed.tls_identity("office-ke").unwrap();
    // Before the revocation office-ke gets in and syncs.
    assert_eq!(
        handshake_and_read(member_client(&t, &ke), addr).await,
        Ok(())
    );
    let mut open = t.link_as("office-ke").await;
    assert_eq!(*t.hq.handshakes_refused().borrow(), 0);

    t.set_standing("office-ke", Standing::Revoked { valid_through: 0 })
        .await;
    // Its open stream ends at once, not at its next handshake.
    let ended = async {
        loop {
            match open.replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "closed".to_owned(),
                Err(s) => return format!("{s:?}"),
            }
        }
    };
    let how = tokio::time::timeout(WAIT, ended)
        .await
        .expect("the revoked peer's open stream stayed open");
    eprintln!("revoked peer's open stream ended: {how}");

    let err = handshake_and_read(member_client(&t, &ke), addr)
        .await
        .expect_err("a revoked certificate got in");
    refused_handshakes_reach(&t.hq, 1).await;
    let channel = t.fed.channel_as("office-ke", addr).unwrap();
    let status = sync_fails(channel).await;
    refused_handshakes_reach(&t.hq, 2).await;
    eprintln!("revoked: {err}; gRPC: {status:?}");
    t.stop().await;
}

// ---------------------------------------------------------------------------
// A flood of connections that never finish a handshake
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_and_an_operator_get_in_during_a_pre_authentication_flood() {
    let t = Target::start().await;
    let addr = t.hq.local_addr();
    // More silent and stalled connections than a source may hold (256 by
    // default), all from the address the member and the operator use too.
    let flood = Flood::start(addr, 300);
    let started = Instant::now();
    while flood.opened() < 500 {
        assert!(started.elapsed() < WAIT, "the flood never got going");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The member connects and syncs: its digest is answered.
    let joined = Instant::now();
    let mut link = t.link_as("office-fr").await;
    link.still_open().await;
    let member_in = joined.elapsed();
    // The operator's calls succeed, each on a connection of its own.
    let operator = t.fed.tls_identity(OPERATOR).unwrap();
    let trust = trust_from(t.fed.signed_roster().roster());
    for _ in 0..10 {
        let mut op = Client::connect(&addr.to_string(), &operator, trust.clone()).unwrap();
        tokio::time::timeout(WAIT, op.status())
            .await
            .expect("the operator's status call hung")
            .expect("the operator's status call failed during the flood");
    }
    let opened = flood.stop();
    let refused = t.hq.connections_refused();
    eprintln!("flood: {opened} connections; member in after {member_in:?}; refused {refused:?}");
    // The flood's connections gave way or were turned away, every one
    // counted, and none of it was mistaken for a bad certificate.
    let turned_away = refused["evicted"] + refused["source_full"];
    assert!(turned_away > opened / 2, "{opened} opened, {refused:?}");
    assert_eq!(refused["tls_refused"], 0, "{refused:?}");
    let status = t.hq.status().await.unwrap();
    assert!(status.totals.handshakes_pending <= 512);
    assert_eq!(
        status.totals.connections_refused["evicted"],
        refused["evicted"]
    );
    drop(link);
    t.stop().await;
}

// ---------------------------------------------------------------------------
// A peer that stops reading
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_closed_for_not_reading_ends_with_a_status_that_says_so() {
    let t = Target::start().await;
    let mut link = t.link_as("office-fr").await;
    // Every digest is answered with HQ's frontier. Sent without reading a
    // reply, they fill the link's queue and then the pending queue behind
    // it, until HQ gives up on the peer.
    let mut sent = 0;
    let closed = async {
        loop {
            link.send(digest_msg(0)).await;
            sent += 1;
            if sent % 1000 == 0 && t.stats().await.links.is_empty() {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("HQ kept a link whose peer does not read");
    // Reading everything queued, the peer then learns why it was closed.
    let status = link.ending().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("hq closed this link"),
        "{status:?}"
    );
    assert!(status.message().contains("not reading"), "{status:?}");
    t.stop().await;
}

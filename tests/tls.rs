//! Mutual TLS pinned to the roster: real handshakes on 127.0.0.1.

mod common;

use std::sync::Arc;

use fedsync::identity::tls::{
    client_config, peer_of, server_config, Peer, TlsIdentity, TrustStore,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn peer(name: &str) -> Peer {
    Peer {
        name: name.into(),
        node: None,
    }
}

/// Runs one handshake; returns what the server saw (or its error) and the
/// client's result.
async fn handshake(
    server: &TlsIdentity,
    server_trust: &TrustStore,
    client: rustls::ClientConfig,
) -> (Result<Option<Peer>, String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(server, server_trust).unwrap()));
    let trust = server_trust.clone();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let who = peer_of(&trust, tls.get_ref().1.peer_certificates()).map(|(p, _)| p);
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
                Ok(who)
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cli = async {
        let mut tls = connector
            .connect(ServerName::try_from("fedsync").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    (srv.await.unwrap(), cli)
}

#[tokio::test]
async fn pinned_members_connect_and_are_identified() {
    let hq = TlsIdentity::generate("hq").unwrap();
    let fr = TlsIdentity::generate("office-fr").unwrap();
    let trust = TrustStore::new([
        (hq.fingerprint(), peer("hq")),
        (fr.fingerprint(), peer("office-fr")),
    ]);
    let (server_saw, client) = handshake(&hq, &trust, client_config(&fr, &trust).unwrap()).await;
    assert_eq!(client, Ok(()));
    assert_eq!(server_saw, Ok(Some(peer("office-fr"))));
}

#[tokio::test]
async fn a_client_key_not_in_the_roster_is_refused_at_the_handshake() {
    let hq = TlsIdentity::generate("hq").unwrap();
    let stranger = TlsIdentity::generate("stranger").unwrap();
    let server_trust = TrustStore::new([(hq.fingerprint(), peer("hq"))]);
    // The stranger trusts the server, but the server does not know it.
    let stranger_trust = TrustStore::new([(hq.fingerprint(), peer("hq"))]);
    let (server_saw, client) = handshake(
        &hq,
        &server_trust,
        client_config(&stranger, &stranger_trust).unwrap(),
    )
    .await;
    let err = server_saw.unwrap_err();
    assert!(err.contains("ApplicationVerificationFailure"), "{err}");
    assert!(client.is_err());
}

#[tokio::test]
async fn a_server_not_in_the_roster_is_refused_by_the_client() {
    let impostor = TlsIdentity::generate("hq").unwrap();
    let fr = TlsIdentity::generate("office-fr").unwrap();
    let impostor_trust = TrustStore::new([(fr.fingerprint(), peer("office-fr"))]);
    let fr_trust = TrustStore::new([(fr.fingerprint(), peer("office-fr"))]);
    let (_, client) = handshake(
        &impostor,
        &impostor_trust,
        client_config(&fr, &fr_trust).unwrap(),
    )
    .await;
    let err = client.unwrap_err();
    assert!(err.contains("ApplicationVerificationFailure"), "{err}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let hq = TlsIdentity::generate("hq").unwrap();
    let trust = TrustStore::new([(hq.fingerprint(), peer("hq"))]);
    fedsync::identity::tls::install_crypto_provider();
    let anonymous = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::AcceptAnyServer))
        .with_no_client_auth();
    let (server_saw, _) = handshake(&hq, &trust, anonymous).await;
    let err = server_saw.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn revoking_from_the_trust_store_refuses_the_next_handshake() {
    let hq = TlsIdentity::generate("hq").unwrap();
    let fr = TlsIdentity::generate("office-fr").unwrap();
    let trust = TrustStore::new([
        (hq.fingerprint(), peer("hq")),
        (fr.fingerprint(), peer("office-fr")),
    ]);
    let client = client_config(&fr, &trust).unwrap();
    assert!(handshake(&hq, &trust, client.clone()).await.0.is_ok());
    trust.replace([(hq.fingerprint(), peer("hq"))]);
    assert!(handshake(&hq, &trust, client).await.0.is_err());
}

#[test]
fn pem_files_round_trip_and_a_readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("op.crt"), dir.path().join("op.key"));
    let id = TlsIdentity::generate("operator").unwrap();
    id.save(&cert, &key).unwrap();
    let again = TlsIdentity::load(&cert, &key).unwrap();
    assert_eq!(again.fingerprint(), id.fingerprint());
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = TlsIdentity::load(&cert, &key).unwrap_err().to_string();
    assert!(err.contains("readable by others"), "{err}");
}

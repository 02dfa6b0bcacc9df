//! Fixtures shared by the integration tests (each test binary includes
//! this module and uses part of it).
#![allow(dead_code)]

use std::time::Duration;

use fedsync::core::{Frontier, Head, SignedDelta};
use fedsync::local::NodeSpec;
use fedsync::node::NodeHandle;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Generous: a loaded CI machine, not the expected time (milliseconds).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Anti-entropy far beyond the timeout: convergence in these tests must
/// come from the opening exchange and live pushes, not the periodic repair.
pub const NO_ANTI_ENTROPY: &str = "[sync]\nanti_entropy_secs = 3600\n";

/// Wall-clock milliseconds, as a node's clock reads them.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// HQ and two regions that dial it.
pub fn hub_and_spoke() -> Vec<NodeSpec> {
    vec![
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        NodeSpec::region("office-ke", "ke", &["hq"]),
    ]
}

/// The frontier that holds everything up to `deltas` (each its author's
/// latest).
pub fn frontier_of<'a>(deltas: impl IntoIterator<Item = &'a SignedDelta>) -> Frontier {
    let mut f = Frontier::new();
    for d in deltas {
        let head = Head {
            seq: d.seq(),
            hash: d.hash(),
        };
        f.set(d.author(), head);
    }
    f
}

/// Waits until every node holds `target`, failing after [`SYNC_TIMEOUT`].
pub async fn all_hold(nodes: &[&NodeHandle], target: &Frontier) {
    for n in nodes {
        assert!(
            n.wait_for(target, SYNC_TIMEOUT).await,
            "{} did not reach the frontier",
            n.name()
        );
    }
}

/// A TLS client verifier that accepts any server, so a test can probe the
/// server side alone.
#[derive(Debug)]
pub struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

//! Fixtures shared by the integration tests (each test binary includes
//! this module and uses part of it).
#![allow(dead_code)]

pub mod flood;
pub mod inject;
pub mod records;
pub mod shaper;

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

/// Polls `node`'s status until `ok` holds of it, or fails with the last
/// status.
pub async fn status_until(
    node: &NodeHandle,
    what: &str,
    ok: impl Fn(&fedsync::node::status::NodeStatus) -> bool,
) -> fedsync::node::status::NodeStatus {
    let deadline = std::time::Instant::now() + SYNC_TIMEOUT;
    loop {
        let s = node.status().await.unwrap();
        if ok(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never happened; last {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET over TCP: (status code, body). For the admin port,
/// which needs no client library to read.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// Scrapes `/metrics` and parses it with a Prometheus text-format parser.
pub async fn scrape(node: &NodeHandle) -> prometheus_parse::Scrape {
    let (code, body) = http_get(node.admin_addr().unwrap(), "/metrics").await;
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("metrics parse")
}

/// The value of sample `name` whose labels include `labels` (0 if absent:
/// a counter family has no sample until something is counted).
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(prometheus_parse::Value::Counter(v))
        | Some(prometheus_parse::Value::Gauge(v))
        | Some(prometheus_parse::Value::Untyped(v)) => *v,
        Some(other) => panic!("{name}: unexpected value {other:?}"),
        None => 0.0,
    }
}

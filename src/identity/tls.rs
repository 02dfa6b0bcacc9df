//! Mutual TLS bound to the federation's identities.
//!
//! TLS keys are ECDSA P-256: gRPC C-core clients (Python grpcio, C++, Ruby)
//! fail the handshake with Ed25519 certificates. Each member's TLS
//! certificate is self-signed (made by rcgen) and *pinned*: the roster,
//! which the federation key signs, carries the SHA-256 fingerprint of each
//! member's certificate DER, and custom rustls verifiers on both ends accept
//! exactly the certificates the current [`TrustStore`] lists. One identity,
//! no separate CA, as Syncthing pins device certificates.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock, Weak};
use std::task::Waker;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        Fingerprint(Sha256::digest(cert.as_ref()).into())
    }

    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Fingerprint(out))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..6]))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs the one rustls crypto provider this process uses (ring). Two
/// providers compiled in make rustls refuse to guess, so this runs before
/// any TLS configuration is built. Idempotent.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only means one is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .expect("crypto provider installed above")
}

/// A member's TLS key pair and self-signed certificate.
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsIdentity({:?})", self.fingerprint())
    }
}

impl TlsIdentity {
    /// A fresh P-256 key and a self-signed certificate naming `name`.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_owned(), "fedsync".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(TlsIdentity {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// The certificate as PEM (what gRPC tools are given).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `cert` (0644) and `key` (0600, never overwritten) as PEM, the
    /// form standard gRPC tools take.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Io { path, source }
        };
        let mut key = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_path)
            .map_err(io(key_path))?;
        key.write_all(self.key_pem.as_bytes())
            .map_err(io(key_path))?;
        key.sync_all().map_err(io(key_path))?;
        fs::write(cert_path, &self.cert_pem).map_err(io(cert_path))
    }

    /// Reads a PEM certificate and key, refusing a key others can read.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        match super::shared_mode(key_path) {
            Err(source) => {
                return Err(TlsError::Io {
                    path: key_path.to_owned(),
                    source,
                })
            }
            Ok(Some(mode)) => {
                return Err(TlsError::Permissions {
                    path: key_path.to_owned(),
                    mode,
                })
            }
            Ok(None) => {}
        }
        let pem = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: path.to_owned(),
            why: e.to_string(),
        };
        let cert = CertificateDer::from_pem_file(cert_path).map_err(|e| pem(cert_path, e))?;
        // Parse once now so a bad key fails at load, not at first connection.
        PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem(key_path, e))?;
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| TlsError::Io {
                path: path.to_owned(),
                source,
            })
        };
        Ok(TlsIdentity {
            cert,
            cert_pem: read(cert_path)?,
            key_pem: read(key_path)?,
        })
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("checked when loaded or made")
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }
}

/// Who a pinned certificate belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Roster name (a node) or operator name.
    pub name: String,
    /// Set for nodes: the Ed25519 identity the certificate is bound to.
    pub node: Option<crate::core::NodeId>,
}

/// The certificates currently trusted, shared by every TLS config built from
/// it: replacing the map (on a roster change) takes effect at the next
/// handshake, and wakes every open connection registered with
/// [`TrustStore::watch`] so it can check whether it is still trusted.
#[derive(Clone, Default)]
pub struct TrustStore {
    inner: Arc<RwLock<HashMap<Fingerprint, Peer>>>,
    /// Bumped by every `replace`.
    epoch: Arc<AtomicU64>,
    /// One slot per open connection, holding the waker of its last poll.
    watchers: Arc<Mutex<Vec<Weak<WakerSlot>>>>,
}

/// Where an open connection leaves the waker of its last poll.
pub type WakerSlot = Mutex<Option<Waker>>;

/// Leaves `waker` in `slot`, unless the one there already wakes the same
/// task (a clone on every poll would cost more than the poll).
pub fn leave_waker(slot: &WakerSlot, waker: &Waker) {
    let mut slot = slot.lock().expect("waker slot poisoned");
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

impl TrustStore {
    pub fn new(entries: impl IntoIterator<Item = (Fingerprint, Peer)>) -> Self {
        let s = TrustStore::default();
        s.replace(entries);
        s
    }

    pub fn replace(&self, entries: impl IntoIterator<Item = (Fingerprint, Peer)>) {
        let map = entries.into_iter().collect();
        *self.inner.write().expect("trust store lock poisoned") = map;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut watchers = self.watchers.lock().expect("trust watchers lock poisoned");
        watchers.retain(|w| match w.upgrade() {
            Some(slot) => {
                if let Some(waker) = slot.lock().expect("waker slot poisoned").take() {
                    waker.wake();
                }
                true
            }
            None => false,
        });
    }

    pub fn lookup(&self, cert: &CertificateDer<'_>) -> Option<Peer> {
        self.get(&Fingerprint::of(cert))
    }

    /// The peer a fingerprint belongs to, if it is trusted now.
    pub fn get(&self, fp: &Fingerprint) -> Option<Peer> {
        self.inner
            .read()
            .expect("trust store lock poisoned")
            .get(fp)
            .cloned()
    }

    /// The number of `replace` calls so far: a connection compares it with
    /// the value it last saw to know when to check itself again.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Registers a connection: `replace` wakes whatever waker the
    /// connection last left in the returned slot.
    pub fn watch(&self) -> Arc<WakerSlot> {
        let slot = Arc::new(Mutex::new(None));
        let mut watchers = self.watchers.lock().expect("trust watchers lock poisoned");
        watchers.retain(|w| w.strong_count() > 0);
        watchers.push(Arc::downgrade(&slot));
        slot
    }
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.read().map(|m| m.len()).unwrap_or(0);
        write!(f, "TrustStore({n} certificates)")
    }
}

/// Accepts exactly the pinned certificates, then checks the handshake
/// signature with the certificate's key as usual.
#[derive(Debug)]
struct PinnedVerifier {
    trust: TrustStore,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match self.trust.lookup(cert) {
            Some(_) => Ok(()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }
}

// The handshake signature is checked the ordinary way, with the pinned
// certificate's own key; only *which* certificates are acceptable differs.
impl PinnedVerifier {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

fn verifier(trust: &TrustStore) -> Arc<PinnedVerifier> {
    Arc::new(PinnedVerifier {
        trust: trust.clone(),
        provider: provider(),
    })
}

/// The largest TLS record either end sends. A record is read only once
/// all of it has arrived: at TLS's own 16 KiB, a bulk transfer's every
/// record takes four seconds of a 32 kbit/s line to cross, which delays
/// each message in it by as much, and a drop loses the record whole.
/// Records of 4 KiB add about 0.5 % of framing.
pub const TLS_RECORD_MAX: usize = 4096;

/// A server config that demands a pinned client certificate.
pub fn server_config(
    me: &TlsIdentity,
    trust: &TrustStore,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier(trust))
        .with_single_cert(me.chain(), me.key_der())?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.max_fragment_size = Some(TLS_RECORD_MAX);
    // No resumption: a resumed session skips the verifier, so a key the
    // roster revoked since could get back in on an old ticket.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// A client config that presents `me` and accepts only pinned servers.
pub fn client_config(
    me: &TlsIdentity,
    trust: &TrustStore,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier(trust))
        .with_client_auth_cert(me.chain(), me.key_der())?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.max_fragment_size = Some(TLS_RECORD_MAX);
    // Every connection verifies the server against the roster afresh.
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

/// The pinned peer behind an established connection's certificate chain,
/// with the certificate's fingerprint.
pub fn peer_of(
    trust: &TrustStore,
    certs: Option<&[CertificateDer<'static>]>,
) -> Option<(Peer, Fingerprint)> {
    let fp = Fingerprint::of(certs?.first()?);
    trust.get(&fp).map(|p| (p, fp))
}

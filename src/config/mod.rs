//! A node's configuration: one TOML file, read once at start-up.
//!
//! The design follows two rules. First, a mistake is refused at start-up
//! rather than discovered in production: unknown keys are errors (a typo
//! silently falling back to a default is worse than a refusal), and
//! [`NodeConfig::validate`] checks every value and every relation between
//! values (a delta must fit in a batch, a batch in a gRPC message) with one
//! message per rule that names the key and its value. Second, a node needs
//! very little to start: only `name` and `federation.key` are required,
//! everything else has a default, and the example files in `config/` spell
//! every key out with its default so an operator can see what exists.
//!
//! Units are the last part of a key's name (`anti_entropy_secs`,
//! `batch_bytes_max`), so a value is never ambiguous in the file. Relative
//! paths are resolved against the config file's directory, not the working
//! directory, so a node's directory can be moved or started from anywhere.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::{Limits, NodeId};

mod ops;
mod rules;

pub use ops::{AdminConfig, LogConfig, LogFormat, ReportsConfig};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Everything a node reads from its config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name in the roster (required).
    pub name: String,
    /// Directory for the sled store.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address the node's gRPC server binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub identity: IdentityConfig,
    pub federation: FederationConfig,
    /// Nodes this node dials. Inbound links need no entry here.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub reports: ReportsConfig,
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[store]`: the node's sled store.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled's page cache: most of the memory the store uses, whatever
    /// the number of records.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let d = crate::store::StoreOptions::default();
        StoreConfig {
            cache_bytes: d.cache_bytes,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7100))
}

/// `[identity]`: this node's key files.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The node's Ed25519 signing key.
    pub node_key: PathBuf,
    /// The node's TLS certificate (PEM).
    pub tls_cert: PathBuf,
    /// The TLS certificate's private key (PEM).
    pub tls_key: PathBuf,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            node_key: "node.key".into(),
            tls_cert: "tls.crt".into(),
            tls_key: "tls.key".into(),
        }
    }
}

/// `[federation]`: which federation this node belongs to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The federation public key, 64 hex digits (required).
    pub key: String,
    /// The signed roster file.
    #[serde(default = "default_roster")]
    pub roster: PathBuf,
}

fn default_roster() -> PathBuf {
    PathBuf::from("roster.bin")
}

/// `[[peers]]`: one node this node dials.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's name in the roster.
    pub name: String,
    /// Where to dial it, `host:port`.
    pub address: String,
    /// The most this link may use of the line, each way, in kbit/s
    /// (1000 bits): an office's only line keeps room for its other
    /// traffic. This node sends no faster, and asks the peer to send no
    /// faster (a peer of an older release does not hear it). Unset: the
    /// line's own rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u64>,
}

/// The lowest `[[peers]] rate_kbit`, and the lowest cap a peer may ask
/// this node to keep to: 8 kbit/s, 1000 bytes a second.
pub const RATE_KBIT_MIN: u64 = 8;

/// `kbit` kbit/s (1000 bits) in bytes per second.
pub fn kbit_bytes_per_sec(kbit: u64) -> u64 {
    kbit * 1000 / 8
}

impl PeerConfig {
    /// `rate_kbit` in bytes per second, 0 for none.
    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate_kbit.map_or(0, kbit_bytes_per_sec)
    }
}

/// `[sync]`: timing and batching of peer links.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub anti_entropy_secs: u64,
    pub batch_deltas_max: usize,
    pub batch_bytes_max: usize,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub connect_timeout_secs: u64,
    /// HTTP/2 ping interval: an idle link still hears from its peer
    /// this often.
    pub keepalive_secs: u64,
    /// Silence allowed on a link beyond the ping interval, before the
    /// time to drain what the peer has not yet acknowledged (at the rate
    /// its acks show) is added: a slow link that is alive is not ended.
    pub keepalive_timeout_secs: u64,
    /// A peer behind (either way) with no progress this long is stalled.
    pub stall_after_secs: u64,
    /// Send batches zstd-compressed to peers that announce they read them.
    pub compress: bool,
    /// A link whose shortest round trip is below this many ms is a LAN's:
    /// its small batches (a live write, a relayed one) go uncompressed,
    /// since there the bytes cost less than the CPU that saves them, and
    /// a hub pays that once per link. 0: every link compresses.
    pub lan_rtt_ms: u64,
    /// Which authors' logs the node keeps: `all`, or `tree` (its branch:
    /// the nodes above it, itself and below, its siblings), for a centre
    /// on a poor line that needs the rest of the world's data no more
    /// than its line can carry it.
    pub holds: crate::core::Holds,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            anti_entropy_secs: 30,
            batch_deltas_max: 1000,
            // 2 MiB: a default delta (1 MiB value, 1 KiB key) must fit.
            batch_bytes_max: 2 * MIB,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            connect_timeout_secs: 10,
            keepalive_secs: 10,
            keepalive_timeout_secs: 20,
            stall_after_secs: 120,
            compress: true,
            lan_rtt_ms: 10,
            holds: crate::core::Holds::All,
        }
    }
}

impl SyncConfig {
    pub fn anti_entropy(&self) -> Duration {
        Duration::from_secs(self.anti_entropy_secs)
    }
    pub fn reconnect_min(&self) -> Duration {
        Duration::from_millis(self.reconnect_min_ms)
    }
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }
}

/// `[limits]`: bounds on everything a peer controls.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub key_len_max: usize,
    pub value_bytes_max: usize,
    pub future_skew_secs: u64,
    pub held_deltas_max: usize,
    pub quarantine_max: u64,
    /// gRPC message size, both directions.
    pub message_bytes_max: usize,
    /// Messages queued per peer link.
    pub link_queue_max: usize,
    /// No longer used, and accepted so that an older config file still
    /// loads: connections of members are bounded per member
    /// (`conns_per_peer_max`, so capacity follows the roster), and
    /// handshakes in progress by `handshakes_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links_max: Option<usize>,
    /// Open inbound connections per member certificate (node or
    /// operator); calls on one more are refused (RESOURCE_EXHAUSTED),
    /// and a connection beyond that is closed at once.
    pub conns_per_peer_max: usize,
    /// TLS handshakes in progress at once, from anyone: the only places a
    /// connection holds before it is known to be a member. When they are
    /// full, a newcomer takes the place of one that has not sent its
    /// ClientHello yet.
    pub handshakes_max: usize,
    /// TLS handshakes in progress at once from one IPv4 address or IPv6 /64.
    pub handshakes_per_source_max: usize,
    /// From accepting a connection to its complete ClientHello.
    pub hello_timeout_ms: u64,
    /// From accepting a connection to the end of its TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Client API requests in flight per operator (a watch counts while
    /// it is open); more are refused (RESOURCE_EXHAUSTED).
    pub requests_in_flight_max: usize,
    /// Deltas in one received batch message; a larger batch ends the link
    /// with RESOURCE_EXHAUSTED. Peers send `sync.batch_deltas_max`.
    pub batch_deltas_max: usize,
    /// Bytes of received deltas being verified or waiting to be stored, on
    /// all links together; a link waits for its share before it reads on.
    pub ingest_bytes_max: usize,
}

impl LimitsConfig {
    /// The largest a delta may be encoded: its value and key, and 1 KiB
    /// for its header and signature. A batch must hold one.
    pub fn delta_bytes_max(&self) -> usize {
        self.value_bytes_max + self.key_len_max + 1024
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            key_len_max: 1024,
            value_bytes_max: MIB,
            future_skew_secs: 3600,
            held_deltas_max: 100_000,
            quarantine_max: 100_000,
            message_bytes_max: 4 * MIB,
            link_queue_max: 4,
            links_max: None,
            conns_per_peer_max: 4,
            handshakes_max: 512,
            handshakes_per_source_max: 256,
            hello_timeout_ms: 5000,
            handshake_timeout_secs: 10,
            ingest_bytes_max: 8 * MIB,
            requests_in_flight_max: 32,
            batch_deltas_max: 10_000,
        }
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Not TOML, or not this schema (unknown key, wrong type, missing key).
    #[error("config {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// Well-formed but breaks a rule; the message names the key.
    #[error("{0}")]
    Invalid(String),
}

/// A TOML error as one line, `line L, column C: message`: the default
/// rendering draws the offending line over several.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl NodeConfig {
    /// Reads, parses and validates the file at `path`; relative paths in it
    /// are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_named(&text, base_dir, path)
    }

    /// Parses and validates `text`, resolving relative paths against
    /// `base_dir`. Errors name the source as `<inline>`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<NodeConfig, ConfigError> {
        Self::parse_named(text, base_dir, Path::new("<inline>"))
    }

    fn parse_named(text: &str, base_dir: &Path, origin: &Path) -> Result<Self, ConfigError> {
        let mut cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: one_line(text, &e),
        })?;
        for p in [
            &mut cfg.data_dir,
            &mut cfg.identity.node_key,
            &mut cfg.identity.tls_cert,
            &mut cfg.identity.tls_key,
            &mut cfg.federation.roster,
        ] {
            // `join` keeps an absolute path as it is.
            *p = base_dir.join(&*p);
        }
        cfg.check()
            .map_err(|m| ConfigError::Invalid(format!("config {}: {m}", origin.display())))?;
        Ok(cfg)
    }

    /// Checks every rule; the first broken one is reported, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(ConfigError::Invalid)
    }

    /// The federation public key. Call only on a validated config.
    pub fn federation_id(&self) -> NodeId {
        NodeId::from_hex(&self.federation.key).expect("validated")
    }

    /// How the node's store is opened.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            quarantine_max: self.limits.quarantine_max,
            cache_bytes: self.store.cache_bytes,
        }
    }

    /// The limits the sync core enforces on every delta.
    pub fn core_limits(&self) -> Limits {
        Limits {
            key_len_max: self.limits.key_len_max,
            value_len_max: self.limits.value_bytes_max,
            future_skew_ms_max: self.limits.future_skew_secs.saturating_mul(1000),
            held_deltas_max: self.limits.held_deltas_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HQ: &str = include_str!("../../config/hq.toml");
    const REGION: &str = include_str!("../../config/region.toml");
    const KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn doc(name: &str, rest: &str) -> String {
        format!("name = \"{name}\"\n[federation]\nkey = \"{KEY}\"\n{rest}\n")
    }

    #[test]
    fn examples_validate_and_keep_defaults() {
        let base = Path::new("/etc/fedsync");
        let hq_peer = PeerConfig {
            name: "hq".into(),
            address: "127.0.0.1:7100".into(),
            rate_kbit: None,
        };
        for (text, name, listen, admin, dir, peers) in [
            (HQ, "hq", "127.0.0.1:7100", "127.0.0.1:7180", "hq", vec![]),
            (
                REGION,
                "office-fr",
                "127.0.0.1:7101",
                "127.0.0.1:7181",
                "fr",
                vec![hq_peer],
            ),
        ] {
            let cfg = NodeConfig::parse(text, base).unwrap();
            assert_eq!(cfg.sync, SyncConfig::default());
            assert_eq!(cfg.limits, LimitsConfig::default());
            // Everything else is the default too, but for what is set on purpose.
            let zeros = doc(name, "").replace(KEY, &"0".repeat(64));
            let mut want = NodeConfig::parse(&zeros, base).unwrap();
            want.listen = listen.parse().unwrap();
            want.data_dir = base.join(format!("{dir}-data"));
            want.identity = IdentityConfig {
                node_key: base.join(dir).join("node.key"),
                tls_cert: base.join(dir).join("tls.crt"),
                tls_key: base.join(dir).join("tls.key"),
            };
            want.peers = peers;
            want.admin.listen = admin.parse().unwrap();
            assert_eq!(cfg, want);
            // Every key is written out: each section of the file holds
            // exactly the keys of the schema.
            let file: toml::Table = toml::from_str(text).unwrap();
            let full = toml::Table::try_from(&cfg).unwrap();
            for section in [
                "identity",
                "federation",
                "sync",
                "limits",
                "admin",
                "log",
                "reports",
                "store",
            ] {
                let keys = |t: &toml::Table| -> Vec<String> {
                    t[section].as_table().unwrap().keys().cloned().collect()
                };
                assert_eq!(keys(&file), keys(&full), "[{section}]");
            }
            for key in ["name", "data_dir", "listen"] {
                assert!(file.contains_key(key), "{key}");
            }
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let base = Path::new("/srv/node");
        let cfg = NodeConfig::parse(&doc("n", ""), base).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(cfg.data_dir, Path::new("/srv/node/data"));
        assert_eq!(cfg.identity.node_key, Path::new("/srv/node/node.key"));
        assert_eq!(cfg.identity.tls_cert, Path::new("/srv/node/tls.crt"));
        assert_eq!(cfg.identity.tls_key, Path::new("/srv/node/tls.key"));
        assert_eq!(cfg.federation.roster, Path::new("/srv/node/roster.bin"));
        assert!(cfg.peers.is_empty());
        assert_eq!(cfg.sync, SyncConfig::default());
        assert_eq!(cfg.limits, LimitsConfig::default());
        assert_eq!(cfg.core_limits(), Limits::default());
        assert_eq!(cfg.federation_id(), NodeId([0xaa; 32]));
        assert_eq!(cfg.sync.anti_entropy(), Duration::from_secs(30));
        assert_eq!(cfg.sync.reconnect_min(), Duration::from_millis(250));

        let text = format!("data_dir = \"/var/lib/fs\"\n{}", doc("n", ""));
        let cfg = NodeConfig::parse(&text, base).unwrap();
        assert_eq!(cfg.data_dir, Path::new("/var/lib/fs"));
    }

    #[test]
    fn load_resolves_against_the_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, doc("n", "")).unwrap();
        let cfg = NodeConfig::load(&path).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("data"));

        std::fs::write(&path, doc("", "")).unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("config {}: name must not be empty", path.display())
        );
        let missing = dir.path().join("absent.toml");
        let err = NodeConfig::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    #[test]
    fn an_older_file_with_links_max_still_loads() {
        let cfg = NodeConfig::parse(&doc("n", "[limits]\nlinks_max = 64"), Path::new("/")).unwrap();
        assert_eq!(cfg.limits.links_max, Some(64));
        assert_eq!(
            cfg.limits.handshakes_max,
            LimitsConfig::default().handshakes_max
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        for (text, needle) in [
            (format!("colour = 1\n{}", doc("n", "")), "colour"),
            (doc("n", "[sync]\nanti_entropy_sec = 5"), "anti_entropy_sec"),
            (doc("n", "[limits]\nlinks = 5"), "links"),
            (format!("[federation]\nkey = \"{KEY}\""), "name"),
            ("name = \"n\"".to_string(), "federation"),
            ("name = \"n\"\n[federation]\n".to_string(), "key"),
        ] {
            let err = NodeConfig::parse(&text, Path::new("/")).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}

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

impl PeerConfig {
    /// `rate_kbit` in bytes per second, 0 for none.
    pub fn rate_bytes_per_sec(&self) -> u64 {
        self.rate_kbit.map_or(0, |k| k * 1000 / 8)
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
            ingest_bytes_max: 16 * MIB,
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

    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if let Err(e) = NodeId::from_hex(&self.federation.key) {
            return Err(format!(
                "federation.key ({} characters) must be 64 hex digits, \
                 the output of `fedsync federation create`: {e}",
                self.federation.key.len()
            ));
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let (name, address) = (&peer.name, &peer.address);
            if name.is_empty() {
                return Err(format!("peers[{i}].name must not be empty"));
            }
            if *name == self.name {
                return Err(format!("peers[{i}].name ({name}) is this node's own name"));
            }
            if let Some(j) = self.peers[..i].iter().position(|p| p.name == *name) {
                return Err(format!(
                    "peers[{i}].name ({name}) is already used by peers[{j}]"
                ));
            }
            if !is_host_port(address) {
                let rule = "must be host:port with a numeric port";
                return Err(format!("peers[{i}].address ({address:?}) {rule}"));
            }
            if let Some(k) = peer.rate_kbit {
                if !(RATE_KBIT_MIN..=100_000_000).contains(&k) {
                    return Err(format!(
                        "peers[{i}].rate_kbit ({k}) must be between {RATE_KBIT_MIN} and 100000000"
                    ));
                }
            }
        }
        let (s, l) = (&self.sync, &self.limits);
        let (any, mib64) = (u64::MAX, 64 * MIB as u64);
        #[rustfmt::skip]
        let ranges = [
            ("sync.anti_entropy_secs", s.anti_entropy_secs, 1, any),
            ("sync.batch_deltas_max", s.batch_deltas_max as u64, 1, 100_000),
            ("sync.batch_bytes_max", s.batch_bytes_max as u64, 1024, any),
            ("sync.reconnect_min_ms", s.reconnect_min_ms, 1, any),
            ("sync.reconnect_max_ms", s.reconnect_max_ms, 1, any),
            ("sync.connect_timeout_secs", s.connect_timeout_secs, 1, any),
            ("sync.keepalive_secs", s.keepalive_secs, 1, any),
            ("sync.keepalive_timeout_secs", s.keepalive_timeout_secs, 1, any),
            ("sync.stall_after_secs", s.stall_after_secs, 1, any),
            ("reports.stale_after_secs", self.reports.stale_after_secs, 1, 3650 * 86_400),
            ("limits.key_len_max", l.key_len_max as u64, 1, 65_535),
            ("limits.value_bytes_max", l.value_bytes_max as u64, 1, mib64),
            ("limits.held_deltas_max", l.held_deltas_max as u64, 1, any),
            ("limits.quarantine_max", l.quarantine_max, 1, any),
            ("limits.link_queue_max", l.link_queue_max as u64, 2, any),
            ("limits.conns_per_peer_max", l.conns_per_peer_max as u64, 1, 1024),
            ("limits.handshakes_max", l.handshakes_max as u64, 1, 1_000_000),
            ("limits.handshakes_per_source_max", l.handshakes_per_source_max as u64, 1, 1_000_000),
            ("limits.hello_timeout_ms", l.hello_timeout_ms, 100, any),
            ("limits.handshake_timeout_secs", l.handshake_timeout_secs, 1, 3600),
            ("limits.ingest_bytes_max", l.ingest_bytes_max as u64, MIB as u64, u32::MAX as u64),
            ("limits.requests_in_flight_max", l.requests_in_flight_max as u64, 1, any),
            ("limits.batch_deltas_max", l.batch_deltas_max as u64, 1, 1_000_000),
            ("limits.message_bytes_max", l.message_bytes_max as u64, 64 * KIB as u64, mib64),
            ("store.cache_bytes", self.store.cache_bytes, MIB as u64, any),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                return Err(if max == any {
                    format!("{key} ({value}) must be at least {min}")
                } else {
                    format!("{key} ({value}) must be between {min} and {max}")
                });
            }
        }
        self.log.validate()?;
        if s.reconnect_min_ms > s.reconnect_max_ms {
            return Err(format!(
                "sync.reconnect_min_ms ({}) must not exceed sync.reconnect_max_ms ({})",
                s.reconnect_min_ms, s.reconnect_max_ms
            ));
        }
        if l.hello_timeout_ms > l.handshake_timeout_secs.saturating_mul(1000) {
            return Err(format!(
                "limits.hello_timeout_ms ({}) must not exceed limits.handshake_timeout_secs ({}) \
                 in milliseconds: the ClientHello is part of the handshake",
                l.hello_timeout_ms, l.handshake_timeout_secs
            ));
        }
        if s.batch_deltas_max > l.batch_deltas_max {
            return Err(format!(
                "sync.batch_deltas_max ({}) must not exceed limits.batch_deltas_max ({}): \
                 peers configured alike would refuse this node's batches",
                s.batch_deltas_max, l.batch_deltas_max
            ));
        }
        if s.batch_bytes_max.saturating_add(64 * KIB) > l.message_bytes_max {
            return Err(format!(
                "sync.batch_bytes_max ({}) plus 65536 bytes of framing must not exceed \
                 limits.message_bytes_max ({}): a batch must fit in a message",
                s.batch_bytes_max, l.message_bytes_max
            ));
        }
        if l.value_bytes_max + l.key_len_max + 1024 > s.batch_bytes_max {
            return Err(format!(
                "limits.value_bytes_max ({}) plus limits.key_len_max ({}) plus 1024 must not \
                 exceed sync.batch_bytes_max ({}): one delta must fit in a batch",
                l.value_bytes_max, l.key_len_max, s.batch_bytes_max
            ));
        }
        Ok(())
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

/// `host:port` with a non-empty host, a port of digits in 1..=65535, and an
/// IPv6 host in brackets.
fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    !host.is_empty()
        && !host.contains(char::is_whitespace)
        && (!host.contains(':') || bracketed)
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0)
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

    #[test]
    fn each_rule_names_its_key() {
        let peer = |n: &str, a: &str| format!("[[peers]]\nname = \"{n}\"\naddress = \"{a}\"\n");
        let min_max = "[sync]\nreconnect_min_ms = 5000\nreconnect_max_ms = 1000";
        #[rustfmt::skip]
        let cases = [
            (doc("", ""), "name must not be empty"),
            (doc("n", "").replace(KEY, "abc"), "federation.key (3 characters)"),
            (doc("n", "").replace(KEY, &"zz".repeat(32)), "federation.key (64"),
            (doc("n", &peer("n", "h:1")), "peers[0].name (n) is this node's own"),
            (doc("n", &peer("", "h:1")), "peers[0].name must not"),
            (doc("n", &(peer("a", "h:1") + &peer("a", "h:2"))), "peers[1].name (a)"),
            (doc("n", &peer("a", "nohost")), "peers[0].address"),
            (doc("n", &peer("a", "h:port")), "peers[0].address"),
            (doc("n", &peer("a", ":7100")), "peers[0].address"),
            (doc("n", &peer("a", "::1:7100")), "peers[0].address"),
            (doc("n", &(peer("a", "h:1") + "rate_kbit = 7\n")), "peers[0].rate_kbit (7) must be between 8"),
            (doc("n", min_max), "sync.reconnect_min_ms (5000) must not exceed sync.reconnect_max_ms (1000)"),
            (doc("n", "[limits]\nhello_timeout_ms = 6000\nhandshake_timeout_secs = 5"), "limits.hello_timeout_ms (6000) must not exceed"),
        ];
        for (text, needle) in cases {
            let err = NodeConfig::parse(&text, Path::new("/")).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{needle}: {err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        // Numeric rules: the message names the key and the bad value.
        for (section, key, value) in [
            ("sync", "anti_entropy_secs", 0),
            ("sync", "batch_deltas_max", 0),
            ("sync", "batch_deltas_max", 100_001),
            ("sync", "batch_bytes_max", 1000),
            ("sync", "batch_bytes_max", 4 * MIB), // no room for framing
            ("sync", "reconnect_min_ms", 0),
            ("sync", "connect_timeout_secs", 0),
            ("sync", "keepalive_secs", 0),
            ("sync", "keepalive_timeout_secs", 0),
            ("limits", "key_len_max", 0),
            ("limits", "key_len_max", 65_536),
            ("limits", "value_bytes_max", 0),
            ("limits", "value_bytes_max", 64 * MIB + 1),
            ("limits", "value_bytes_max", 2 * MIB), // does not fit in a batch
            ("limits", "held_deltas_max", 0),
            ("limits", "quarantine_max", 0),
            ("limits", "link_queue_max", 1),
            ("limits", "conns_per_peer_max", 0),
            ("limits", "handshakes_max", 0),
            ("limits", "handshakes_per_source_max", 0),
            ("limits", "hello_timeout_ms", 99),
            ("limits", "handshake_timeout_secs", 0),
            ("limits", "message_bytes_max", 64 * KIB - 1),
            ("limits", "message_bytes_max", 64 * MIB + 1),
        ] {
            let text = doc("n", &format!("[{section}]\n{key} = {value}"));
            let err = NodeConfig::parse(&text, Path::new("/")).unwrap_err();
            let needle = format!("{section}.{key} ({value})");
            assert!(matches!(err, ConfigError::Invalid(_)), "{needle}: {err}");
            assert!(err.to_string().contains(&needle), "{needle}: {err}");
        }
        // IPv6 in brackets and names are fine.
        let ok = doc(
            "n",
            &(peer("a", "[::1]:7100") + &peer("b", "hq.example:7100") + "rate_kbit = 64\n"),
        );
        let cfg = NodeConfig::parse(&ok, Path::new("/")).unwrap();
        assert_eq!(cfg.peers[0].rate_bytes_per_sec(), 0);
        assert_eq!(cfg.peers[1].rate_bytes_per_sec(), 8000);
    }
}

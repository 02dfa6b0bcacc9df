//! The operator-facing sections: `[admin]` (the read-only HTTP port with
//! metrics and the status page), `[log]` and `[reports]`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[admin]`: metrics (`/metrics`) and the status page (`/`), read-only.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// Loopback by default: put a proxy or an SSH tunnel in front rather
    /// than opening it to the network.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7180)),
        }
    }
}

/// `[log]`: how `fedsync run` logs (to stderr).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,fedsync::node=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    /// One JSON object per line, with the span fields (peer, method).
    Json,
}

impl LogConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map(|_| ())
            .map_err(|e| format!("log.filter ({:?}) is not a valid filter: {e}", self.filter))
    }
}

/// `[reports]`: how this node aggregates the regions' reports.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// An aggregate marks a region stale when this node has not heard from
    /// any of the region's nodes for longer than this. `fedsync report
    /// aggregate --stale-after` overrides it per call.
    pub stale_after_secs: u64,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            stale_after_secs: 7 * 24 * 3600,
        }
    }
}

//! The rules a config must keep, each refused with one message that
//! names its key and value: ranges of numbers, and the relations between
//! values (a delta must fit in a batch, a batch in a message).

use super::{NodeConfig, KIB, MIB, RATE_KBIT_MIN};
use crate::core::NodeId;

impl NodeConfig {
    /// The rules in order: the first one broken is the message.
    pub(super) fn check(&self) -> Result<(), String> {
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
        if l.delta_bytes_max() > s.batch_bytes_max {
            return Err(format!(
                "limits.value_bytes_max ({}) plus limits.key_len_max ({}) plus 1024 must not \
                 exceed sync.batch_bytes_max ({}): one delta must fit in a batch",
                l.value_bytes_max, l.key_len_max, s.batch_bytes_max
            ));
        }
        Ok(())
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
    use std::path::Path;

    use super::super::{ConfigError, NodeConfig};
    use super::{KIB, MIB};

    const KEY: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn doc(name: &str, rest: &str) -> String {
        format!("name = \"{name}\"\n[federation]\nkey = \"{KEY}\"\n{rest}\n")
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

//! What the actor remembers of each peer across its links: the progress
//! the peer confirmed (lag, stall), where it is, its last error, and the
//! traffic of links already closed. Keyed by roster name, so it is bounded
//! by the roster, and a node that rotates its key keeps its history.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::core::{Frontier, NodeId, PeerView, Progress, Scope};
use crate::node::link_info::LinkStats;
use crate::node::status::{TimedText, Traffic};

#[derive(Debug, Default)]
pub(super) struct PeerEntry {
    pub progress: Progress,
    pub address: Option<String>,
    pub last_error: Option<TimedText>,
    /// What the links already closed carried.
    pub closed: LinkTally,
    /// Whole-frontier exchanges completed (a digest found equal, or a
    /// frontier received), on every link.
    pub sync_rounds: u64,
    /// Since when its connections are refused, with no link open since.
    pub refused_since_ms: Option<u64>,
    /// Each step by which it confirmed holding more of this node's own
    /// log (author, seq, first seen), newest last, bounded: when a report
    /// revision reached it, for receipts. Kept in memory: after a restart
    /// the steps start again.
    pub confirmations: std::collections::VecDeque<(NodeId, u64, u64)>,
}

/// Confirmation steps kept per peer.
const CONFIRMATIONS_MAX: usize = 512;

#[derive(Debug, Default)]
pub(super) struct Peers {
    by_name: BTreeMap<String, PeerEntry>,
}

impl Peers {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PeerEntry)> {
        self.by_name.iter()
    }

    pub fn get(&self, name: &str) -> Option<&PeerEntry> {
        self.by_name.get(name)
    }

    fn entry(&mut self, name: &str) -> &mut PeerEntry {
        self.by_name.entry(name.to_owned()).or_default()
    }

    pub fn link_opened(&mut self, name: &str, address: &str) {
        let e = self.entry(name);
        e.address = Some(address.to_owned());
        e.refused_since_ms = None;
    }

    /// The peer showed it holds `view`, on a link that exchanges `scope`.
    pub fn observed(
        &mut self,
        name: &str,
        view: &PeerView,
        mine: &Frontier,
        scope: &Scope,
        watched: &[NodeId],
        now_ms: u64,
    ) {
        let e = self.entry(name);
        e.progress.set_scope(scope);
        if view.whole {
            e.sync_rounds += 1;
        }
        e.progress.observe(view, mine, now_ms);
        for a in watched {
            let Some(seq) = e.progress.confirmed(a) else {
                continue;
            };
            let last = (e.confirmations.iter().rev())
                .find(|(x, _, _)| x == a)
                .map_or(0, |(_, s, _)| *s);
            if seq > last {
                if e.confirmations.len() >= CONFIRMATIONS_MAX {
                    e.confirmations.pop_front();
                }
                e.confirmations.push_back((*a, seq, now_ms));
            }
        }
    }

    /// Our frontier moved; `from` names the peers whose deltas moved it.
    pub fn local_change(&mut self, mine: &Frontier, from: &[String], now_ms: u64) {
        for (name, e) in &mut self.by_name {
            e.progress.local_change(mine, from.contains(name), now_ms);
        }
    }

    pub fn error(&mut self, name: &str, text: String, now_ms: u64) {
        self.entry(name).last_error = Some(TimedText {
            at_ms: now_ms,
            text,
        });
    }

    /// A connection with the peer was refused, by either end: `text` says
    /// why, and the peer shows as refused until a link opens.
    pub fn refused(&mut self, name: &str, text: String, now_ms: u64) {
        let e = self.entry(name);
        e.refused_since_ms.get_or_insert(now_ms);
        e.last_error = Some(TimedText {
            at_ms: now_ms,
            text: format!("refused: {text}"),
        });
    }

    /// A link ended: keep what it carried.
    pub fn link_closed(&mut self, name: &str, stats: &LinkStats) {
        self.entry(name).closed.add(stats);
    }
}

/// What one or more links with a peer carried: traffic, and the deltas the
/// peer reported refusing with the latest reason.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkTally {
    pub traffic: Traffic,
    pub refused_by_peer: u64,
    pub last_refusal_by_peer: Option<String>,
}

impl LinkTally {
    pub fn add(&mut self, stats: &LinkStats) {
        let t = &mut self.traffic;
        t.bytes_sent += stats.bytes_sent.load(Ordering::Relaxed);
        t.bytes_received += stats.bytes_received.load(Ordering::Relaxed);
        t.messages_sent += stats.messages_sent.load(Ordering::Relaxed);
        t.messages_received += stats.messages_received.load(Ordering::Relaxed);
        t.delta_bytes_sent += stats.delta_bytes_sent.load(Ordering::Relaxed);
        t.delta_bytes_received += stats.delta_bytes_received.load(Ordering::Relaxed);
        t.delta_bytes_acked += stats.delta_bytes_acked.load(Ordering::Relaxed);
        self.refused_by_peer += stats.refused_by_peer.load(Ordering::Relaxed);
        let last = stats
            .last_refusal_by_peer
            .lock()
            .expect("link stats lock poisoned");
        if let Some(text) = last.clone() {
            self.last_refusal_by_peer = Some(text);
        }
    }
}

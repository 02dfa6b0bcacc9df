//! The status snapshot, built from the actor's state in one pass, with
//! totals the store keeps in each commit. The bytes on disk are left for
//! the caller to fill off this thread.

use super::peers::PeerEntry;
use super::Actor;
use crate::core::{Member, Standing};
use std::sync::atomic::Ordering;

use crate::node::status::{AuthorStatus, LinkPace, NodeStatus, PeerState, PeerStatus, Totals};

impl Actor {
    pub(super) fn status(&self, now_ms: u64) -> NodeStatus {
        let roster = self.replica.roster();
        let me = self.wiring.signer.verifying_key().to_bytes();
        // A node is the hub of the nodes below it in the tree (HQ of the
        // regions, a region of its units): it expects a link with each, as
        // a node expects one with each peer it dials.
        let mine = roster.member(&crate::core::NodeId(me));
        let path = mine.map(|m| roster.path_of(m)).unwrap_or_default();
        let mut peers: Vec<PeerStatus> = roster
            .members()
            .filter(|m| m.id.0 != me)
            .map(|m| {
                let below = mine.is_some_and(|me| roster.is_below(m, me));
                self.peer_status(m, below, now_ms)
            })
            .collect();
        self.route(&mut peers, &path);
        peers.sort_by(|a, b| a.state.cmp(&b.state).then_with(|| a.name.cmp(&b.name)));
        let authors = self
            .replica
            .frontier()
            .iter()
            .map(|(id, head)| AuthorStatus {
                id: *id,
                name: roster.member(id).map(|m| m.name.clone()),
                seq: head.seq,
                hash: head.hash,
            })
            .collect();
        let quarantined = self
            .replica
            .store()
            .quarantine(0)
            .map(|q| q.kept)
            .unwrap_or(0);
        let mut totals = Totals {
            records: self.replica.store().record_count(),
            deltas: self.replica.frontier().total_deltas(),
            quarantined,
            held: self.replica.held_len() as u64,
            refused_messages: (self.wiring.refusals.snapshot().into_iter())
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            connections_refused: (self.wiring.conn_refusals.counts().into_iter())
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            handshakes_pending: self.wiring.conn_refusals.pending() as u64,
            ..Totals::default()
        };
        totals.count(self.replica.counters());
        NodeStatus {
            id: crate::core::NodeId(me),
            name: self.wiring.name.clone(),
            region: mine.and_then(|m| roster.region_of(m)).map(str::to_owned),
            unit: mine.and_then(|m| m.unit.clone()),
            path: path.iter().map(|p| p.to_string()).collect(),
            holds: self.replica.holds().as_str().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            now_ms,
            started_ms: self.wiring.started_ms,
            roster_version: roster.version,
            serving: *self.health.borrow(),
            stall_after_ms: self.wiring.stall_after_ms,
            peers,
            authors,
            totals,
        }
    }

    pub(super) fn peer_status(&self, m: &Member, below: bool, now_ms: u64) -> PeerStatus {
        let entry = self.peers.get(&m.name);
        let live: Vec<_> = self
            .links
            .values()
            .filter(|l| l.peer.name == m.name)
            .collect();
        let mut tally = entry.map(|e| e.closed.clone()).unwrap_or_default();
        for l in &live {
            tally.add(&l.stats);
        }
        let mut t = tally.traffic;
        t.sync_rounds = entry.map_or(0, |e| e.sync_rounds);
        let configured = self.wiring.dialed.get(&m.name);
        let expected = configured.is_some() || below;
        let stall_after = self.wiring.stall_after_ms;
        let refused_since = entry
            .and_then(|e| e.refused_since_ms)
            .filter(|_| live.is_empty());
        // Refused for as long as a stall takes is a stall too: no progress
        // is possible.
        let refused_stall = refused_since
            .map(|t| t.saturating_add(stall_after))
            .filter(|t| *t <= now_ms);
        let stalled_since = entry
            .and_then(|e| e.progress.stalled_since(now_ms, stall_after))
            .or(refused_stall);
        let lags = entry.and_then(|e| e.progress.lags());
        // The link carrying most (a peer has one, or two for a moment).
        let pace = live
            .iter()
            .max_by_key(|l| l.pace.in_flight_bytes())
            .map(|l| {
                let v = l.pace.view(now_ms);
                LinkPace {
                    rtt_ms: v.rtt_ms,
                    rate_bytes_per_sec: v.rate_bytes_per_sec,
                    rate_cap_bytes_per_sec: match l
                        .stats
                        .rate_cap_bytes_per_sec
                        .load(Ordering::Relaxed)
                    {
                        0 => None,
                        c => Some(c),
                    },
                    in_flight_bytes: v.in_flight_bytes,
                    compressed: l.stats.packing.load(Ordering::Relaxed),
                    catch_up_eta_secs: lags.and_then(|g| v.eta_secs(g.they_lack.deltas)),
                }
            });
        let links = Links {
            open: live.len(),
            expected,
            refused: refused_since.is_some(),
        };
        PeerStatus {
            name: m.name.clone(),
            id: m.id,
            region: self.replica.roster().region_of(m).map(str::to_owned),
            unit: m.unit.clone(),
            below,
            held: self.replica.scope().contains(&m.id),
            path: (self.replica.roster().path_of(m).iter())
                .map(|p| p.to_string())
                .collect(),
            seq: self.replica.frontier().head(&m.id).seq,
            via: None,
            reported: None,
            standing: m.standing.describe(),
            state: state(m, entry, links, stalled_since),
            links: live.len() as u32,
            address: configured
                .cloned()
                .or_else(|| entry.and_then(|e| e.address.clone())),
            last_contact_ms: entry.and_then(|e| e.progress.last_contact_ms),
            last_sync_ms: entry.and_then(|e| e.progress.last_sync_ms),
            lags,
            stalled_since_ms: stalled_since,
            refused_since_ms: refused_since,
            last_error: entry.and_then(|e| e.last_error.clone()),
            traffic: t,
            pace,
            refused_by_peer: tally.refused_by_peer,
            last_refusal_by_peer: tally.last_refusal_by_peer,
        }
    }
}

/// A member's links as the state needs them.
#[derive(Clone, Copy)]
struct Links {
    open: usize,
    /// We dial it, or it is an office that dials this hub.
    expected: bool,
    /// Its connections are refused, and none is open.
    refused: bool,
}

fn state(
    m: &Member,
    entry: Option<&PeerEntry>,
    links: Links,
    stalled_since: Option<u64>,
) -> PeerState {
    if !m.is_node() {
        return PeerState::Operator;
    }
    if !matches!(m.standing, Standing::Active) {
        return PeerState::Inactive;
    }
    if stalled_since.is_some() {
        return PeerState::Stalled;
    }
    if links.refused {
        return PeerState::Refused;
    }
    if links.open == 0 {
        return match (entry, links.expected) {
            (None, false) => PeerState::NoLink,
            _ => PeerState::Unreachable,
        };
    }
    match entry.and_then(|e| e.progress.lags()) {
        None => PeerState::Connecting,
        Some(l) if l.in_sync() => PeerState::InSync,
        Some(_) => PeerState::Lagging,
    }
}

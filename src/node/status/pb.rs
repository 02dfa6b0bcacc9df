//! The status snapshot on the wire, both ways: the node's service encodes
//! it, the operator's client decodes it (checking every field it relies on).

use super::{
    AuthorStatus, Hop, LinkPace, NodeStatus, PeerState, PeerStatus, TimedText, Totals, Traffic, Via,
};
use crate::core::{DeltaHash, Lag, Lags, NodeId};
use crate::rpc::pb;

pub fn encode(s: &NodeStatus) -> pb::StatusReply {
    pb::StatusReply {
        node: s.id.0.to_vec(),
        name: s.name.clone(),
        region: s.region.clone().unwrap_or_default(),
        unit: s.unit.clone().unwrap_or_default(),
        holds: s.holds.clone(),
        path: s.path.clone(),
        version: s.version.clone(),
        now_ms: s.now_ms,
        started_ms: s.started_ms,
        roster_version: s.roster_version,
        serving: s.serving,
        stall_after_ms: s.stall_after_ms,
        peers: s.peers.iter().map(encode_peer).collect(),
        authors: s
            .authors
            .iter()
            .map(|a| pb::AuthorStatus {
                author: a.id.0.to_vec(),
                name: a.name.clone().unwrap_or_default(),
                seq: a.seq,
                hash: a.hash.0.to_vec(),
            })
            .collect(),
        totals: Some(encode_totals(&s.totals)),
    }
}

fn encode_peer(p: &PeerStatus) -> pb::PeerStatus {
    let pace = p.pace.unwrap_or_default();
    let lags = p.lags.unwrap_or_default();
    pb::PeerStatus {
        name: p.name.clone(),
        id: p.id.0.to_vec(),
        region: p.region.clone().unwrap_or_default(),
        unit: p.unit.clone().unwrap_or_default(),
        below: p.below,
        not_held: !p.held,
        path: p.path.clone(),
        seq: p.seq,
        via_hop: p.via.as_ref().map(|v| v.hop.clone()).unwrap_or_default(),
        via_hop_seq: p.via.as_ref().and_then(|v| v.hop_seq),
        reported: p.reported.as_ref().map(|h| pb::Hop {
            from: h.from.clone(),
            to: h.to.clone(),
            state: h.state.as_str().to_owned(),
            they_lack: h.they_lack,
            we_lack: h.we_lack,
            contact_age_ms: None,
        }),
        reported_contact_ms: p.reported.as_ref().and_then(|h| h.contact_ms),
        standing: p.standing.clone(),
        state: p.state.as_str().to_owned(),
        links: p.links,
        address: p.address.clone().unwrap_or_default(),
        last_contact_ms: p.last_contact_ms,
        last_sync_ms: p.last_sync_ms,
        lag_known: p.lags.is_some(),
        they_lack: lags.they_lack.deltas,
        they_lack_since_ms: lags.they_lack.since_ms,
        we_lack: lags.we_lack.deltas,
        we_lack_since_ms: lags.we_lack.since_ms,
        stalled_since_ms: p.stalled_since_ms,
        refused_since_ms: p.refused_since_ms,
        last_error: p
            .last_error
            .as_ref()
            .map(|e| e.text.clone())
            .unwrap_or_default(),
        last_error_ms: p.last_error.as_ref().map(|e| e.at_ms),
        bytes_sent: p.traffic.bytes_sent,
        bytes_received: p.traffic.bytes_received,
        messages_sent: p.traffic.messages_sent,
        messages_received: p.traffic.messages_received,
        sync_rounds: p.traffic.sync_rounds,
        refused_by_peer: p.refused_by_peer,
        last_refusal_by_peer: p.last_refusal_by_peer.clone().unwrap_or_default(),
        delta_bytes_sent: p.traffic.delta_bytes_sent,
        delta_bytes_received: p.traffic.delta_bytes_received,
        delta_bytes_acked: p.traffic.delta_bytes_acked,
        pace_known: p.pace.is_some(),
        rtt_ms: pace.rtt_ms,
        rate_bytes_per_sec: pace.rate_bytes_per_sec,
        rate_cap_bytes_per_sec: pace.rate_cap_bytes_per_sec,
        in_flight_bytes: pace.in_flight_bytes,
        compressed: pace.compressed,
        catch_up_eta_secs: pace.catch_up_eta_secs,
    }
}

fn encode_totals(t: &Totals) -> pb::Totals {
    pb::Totals {
        records: t.records,
        deltas: t.deltas,
        quarantined: t.quarantined,
        store_bytes: t.store_bytes,
        held: t.held,
        applied: t.applied,
        duplicates: t.duplicates,
        conflicts: t.conflicts,
        retracted: t.retracted,
        unheld: t.unheld,
        refused: t.refused.clone().into_iter().collect(),
        refused_messages: t.refused_messages.clone().into_iter().collect(),
        connections_refused: t.connections_refused.clone().into_iter().collect(),
        handshakes_pending: t.handshakes_pending,
    }
}

fn id(field: &str, b: &[u8]) -> Result<[u8; 32], String> {
    b.try_into()
        .map_err(|_| format!("{field}: expected 32 bytes, got {}", b.len()))
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub fn decode(r: pb::StatusReply) -> Result<NodeStatus, String> {
    let peers = r
        .peers
        .into_iter()
        .map(decode_peer)
        .collect::<Result<_, _>>()?;
    let authors = r
        .authors
        .into_iter()
        .map(|a| {
            Ok(AuthorStatus {
                id: NodeId(id("author", &a.author)?),
                name: some(a.name),
                seq: a.seq,
                hash: DeltaHash(id("hash", &a.hash)?),
            })
        })
        .collect::<Result<_, String>>()?;
    let t = r.totals.ok_or("status reply has no totals")?;
    Ok(NodeStatus {
        id: NodeId(id("node", &r.node)?),
        name: r.name,
        region: some(r.region),
        unit: some(r.unit),
        path: r.path,
        holds: if r.holds.is_empty() {
            "all".into()
        } else {
            r.holds
        },
        version: r.version,
        now_ms: r.now_ms,
        started_ms: r.started_ms,
        roster_version: r.roster_version,
        serving: r.serving,
        stall_after_ms: r.stall_after_ms,
        peers,
        authors,
        totals: Totals {
            records: t.records,
            deltas: t.deltas,
            quarantined: t.quarantined,
            store_bytes: t.store_bytes,
            held: t.held,
            applied: t.applied,
            duplicates: t.duplicates,
            conflicts: t.conflicts,
            retracted: t.retracted,
            unheld: t.unheld,
            refused: t.refused.into_iter().collect(),
            refused_messages: t.refused_messages.into_iter().collect(),
            connections_refused: t.connections_refused.into_iter().collect(),
            handshakes_pending: t.handshakes_pending,
        },
    })
}

fn decode_peer(p: pb::PeerStatus) -> Result<PeerStatus, String> {
    let state = PeerState::parse(&p.state)
        .ok_or_else(|| format!("peer {}: unknown state {:?}", p.name, p.state))?;
    let lags = p.lag_known.then_some(Lags {
        they_lack: Lag {
            deltas: p.they_lack,
            since_ms: p.they_lack_since_ms,
        },
        we_lack: Lag {
            deltas: p.we_lack,
            since_ms: p.we_lack_since_ms,
        },
    });
    let last_error = match (some(p.last_error), p.last_error_ms) {
        (Some(text), Some(at_ms)) => Some(TimedText { at_ms, text }),
        _ => None,
    };
    Ok(PeerStatus {
        id: NodeId(id("peer id", &p.id)?),
        name: p.name,
        region: some(p.region),
        unit: some(p.unit),
        below: p.below,
        held: !p.not_held,
        path: p.path,
        seq: p.seq,
        via: some(p.via_hop).map(|hop| Via {
            hop,
            hop_seq: p.via_hop_seq,
        }),
        reported: match p.reported {
            None => None,
            Some(h) => Some(Hop {
                state: PeerState::parse(&h.state)
                    .ok_or_else(|| format!("reported hop state {:?}", h.state))?,
                from: h.from,
                to: h.to,
                they_lack: h.they_lack,
                we_lack: h.we_lack,
                contact_ms: p.reported_contact_ms,
            }),
        },
        standing: p.standing,
        state,
        links: p.links,
        address: some(p.address),
        last_contact_ms: p.last_contact_ms,
        last_sync_ms: p.last_sync_ms,
        lags,
        stalled_since_ms: p.stalled_since_ms,
        refused_since_ms: p.refused_since_ms,
        last_error,
        traffic: Traffic {
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            messages_sent: p.messages_sent,
            messages_received: p.messages_received,
            sync_rounds: p.sync_rounds,
            delta_bytes_sent: p.delta_bytes_sent,
            delta_bytes_received: p.delta_bytes_received,
            delta_bytes_acked: p.delta_bytes_acked,
        },
        pace: p.pace_known.then_some(LinkPace {
            rtt_ms: p.rtt_ms,
            rate_bytes_per_sec: p.rate_bytes_per_sec,
            rate_cap_bytes_per_sec: p.rate_cap_bytes_per_sec,
            in_flight_bytes: p.in_flight_bytes,
            compressed: p.compressed,
            catch_up_eta_secs: p.catch_up_eta_secs,
        }),
        refused_by_peer: p.refused_by_peer,
        last_refusal_by_peer: some(p.last_refusal_by_peer),
    })
}

//! The status snapshot as JSON: what `fedsync status --json` prints and
//! the admin port serves at `/status.json`. Times are Unix milliseconds;
//! lag is given in deltas and in seconds (how long the gap has been open).

use serde_json::{json, Value};

use super::{NodeStatus, PeerStatus};
use crate::core::Lag;

pub fn to_json(s: &NodeStatus) -> Value {
    json!({
        "node": hex::encode(s.id.0),
        "name": s.name,
        "region": s.region,
        "unit": s.unit,
        "path": s.path,
        "holds": s.holds,
        "not_held": s.not_held(),
        "version": s.version,
        "now_ms": s.now_ms,
        "started_ms": s.started_ms,
        "uptime_secs": s.uptime_ms() / 1000,
        "roster_version": s.roster_version,
        "serving": s.serving,
        "stall_after_secs": s.stall_after_ms / 1000,
        "peers": s.peers.iter().map(|p| peer(p, s.now_ms)).collect::<Vec<_>>(),
        "authors": s.authors.iter().map(|a| json!({
            "author": hex::encode(a.id.0),
            "name": a.name,
            "seq": a.seq,
            "hash": hex::encode(a.hash.0),
        })).collect::<Vec<_>>(),
        "totals": {
            "records": s.totals.records,
            "deltas": s.totals.deltas,
            "quarantined": s.totals.quarantined,
            "store_bytes": s.totals.store_bytes,
            "held": s.totals.held,
            "applied": s.totals.applied,
            "duplicates": s.totals.duplicates,
            "conflicts": s.totals.conflicts,
            "retracted": s.totals.retracted,
            "unheld": s.totals.unheld,
            "refused": s.totals.refused,
            "refused_messages": s.totals.refused_messages,
            "connections_refused": s.totals.connections_refused,
            "handshakes_pending": s.totals.handshakes_pending,
        },
    })
}

fn lag(l: Lag, now_ms: u64) -> Value {
    json!({
        "deltas": l.deltas,
        "seconds": l.since_ms.map_or(0, |t| now_ms.saturating_sub(t) / 1000),
        "since_ms": l.since_ms,
    })
}

fn peer(p: &PeerStatus, now_ms: u64) -> Value {
    json!({
        "name": p.name,
        "id": hex::encode(p.id.0),
        "region": p.region,
        "unit": p.unit,
        "below": p.below,
        "held": p.held,
        "path": p.path,
        "seq": p.seq,
        "via": p.via.as_ref().map(|v| json!({"hop": v.hop, "hop_seq": v.hop_seq})),
        "reported": p.reported.as_ref().map(|h| json!({
            "from": h.from,
            "to": h.to,
            "state": h.state.as_str(),
            "they_lack": h.they_lack,
            "we_lack": h.we_lack,
            "contact_ms": h.contact_ms,
        })),
        "standing": p.standing,
        "state": p.state.as_str(),
        "connected": p.links > 0,
        "links": p.links,
        "address": p.address,
        "last_contact_ms": p.last_contact_ms,
        "last_sync_ms": p.last_sync_ms,
        "lag": p.lags.map(|l| json!({
            "they_lack": lag(l.they_lack, now_ms),
            "we_lack": lag(l.we_lack, now_ms),
        })),
        "stalled_since_ms": p.stalled_since_ms,
        "refused_since_ms": p.refused_since_ms,
        "last_error": p.last_error.as_ref().map(|e| json!({"at_ms": e.at_ms, "text": e.text})),
        "bytes_sent": p.traffic.bytes_sent,
        "bytes_received": p.traffic.bytes_received,
        "messages_sent": p.traffic.messages_sent,
        "messages_received": p.traffic.messages_received,
        "sync_rounds": p.traffic.sync_rounds,
        "delta_bytes_sent": p.traffic.delta_bytes_sent,
        "delta_bytes_received": p.traffic.delta_bytes_received,
        "delta_bytes_acked": p.traffic.delta_bytes_acked,
        "pace": p.pace.map(|l| json!({
            "rtt_ms": l.rtt_ms,
            "rate_bytes_per_sec": l.rate_bytes_per_sec,
            "rate_cap_bytes_per_sec": l.rate_cap_bytes_per_sec,
            "in_flight_bytes": l.in_flight_bytes,
            "compressed": l.compressed,
            "catch_up_eta_secs": l.catch_up_eta_secs,
        })),
        "refused_by_peer": p.refused_by_peer,
        "last_refusal_by_peer": p.last_refusal_by_peer,
    })
}

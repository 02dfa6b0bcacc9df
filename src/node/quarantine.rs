//! The quarantine as operators see it: each refused entry with what can be
//! read from its bytes (author, seq, key, hash), bounded to fit a message.

use crate::core::SignedDelta;
use crate::rpc::pb;
use crate::store::QuarantineView;

/// Raw bytes carried in one reply, at most: well inside the default
/// message limit, whatever the entries hold.
const RAW_BYTES_MAX: usize = 2 << 20;

pub(crate) fn reply(view: QuarantineView, raw: bool) -> pb::QuarantineReply {
    let mut budget = RAW_BYTES_MAX;
    let entries = view
        .entries
        .into_iter()
        .map(|q| {
            let mut e = pb::QuarantineEntry {
                at_ms: q.at_ms,
                origin: q.origin,
                code: q.code,
                reason: q.reason,
                size: q.bytes.len().try_into().unwrap_or(u32::MAX),
                ..Default::default()
            };
            if let Ok(d) = SignedDelta::decode(&q.bytes) {
                e.author = d.author().0.to_vec();
                e.seq = d.seq();
                e.key = d.key().to_owned();
                e.hash = d.hash().0.to_vec();
            }
            if let Ok(other) = SignedDelta::decode(&q.evidence) {
                e.evidence_hash = other.hash().0.to_vec();
            }
            let cost = q.bytes.len() + q.evidence.len();
            if raw && cost <= budget {
                budget -= cost;
                e.delta = q.bytes;
                e.evidence = q.evidence;
            }
            e
        })
        .collect();
    pb::QuarantineReply {
        entries,
        kept: view.kept,
        dropped: view.dropped,
    }
}

//! What the actor and a link's tasks share about one link: who it is
//! with, its traffic counters, and the status it ends with. Both sides
//! import these from here, so neither imports the other for them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tonic::Status;

use crate::core::NodeId;

/// Traffic on one link, counted at the protobuf layer (encoded message
/// sizes; TLS and HTTP/2 framing add a little).
#[derive(Debug, Default)]
pub struct LinkStats {
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Encoded bytes of the deltas in batches sent and received, before
    /// compression: beside `bytes_*`, the compression ratio.
    pub delta_bytes_sent: AtomicU64,
    pub delta_bytes_received: AtomicU64,
    /// Of those sent, what the peer acknowledged: delivered, unlike
    /// bytes merely queued on a connection that then dropped.
    pub delta_bytes_acked: AtomicU64,
    /// The delivery rate the peer's acks last measured, in delta bytes
    /// per second (0 until one has): the watchdog allows for draining
    /// what is unacknowledged at this rate.
    pub rate_bytes_per_sec: AtomicU64,
    /// The peer announced it reads compressed batches, and we send them.
    pub packing: AtomicBool,
    /// The shortest round trip measured on this link, in ms, at least 1
    /// (0 until one is): whether the link is a LAN's (`sync.lan_rtt_ms`).
    pub rtt_min_ms: AtomicU64,
    /// The cap this link's connection sends under, in bytes per second
    /// (0: none): the lower of ours for the peer and the one it asked for.
    pub rate_cap_bytes_per_sec: AtomicU64,
    /// `InSync` replies received: completed idle checks.
    pub in_sync_received: AtomicU64,
    /// Deltas the peer reported it did not apply (its `Refused` notes,
    /// duplicates aside), and the latest reason.
    pub refused_by_peer: AtomicU64,
    pub last_refusal_by_peer: Mutex<Option<String>>,
}

/// Whole messages refused on any link, by code (the per-delta refusals
/// are the replica's counters): `message_too_large`, `malformed_message`,
/// `protocol_violation`, `batch_too_large`, `bad_roster`.
#[derive(Debug, Default)]
pub struct MessageRefusals(Mutex<BTreeMap<&'static str, u64>>);

impl MessageRefusals {
    pub fn count(&self, code: &'static str) {
        *self
            .0
            .lock()
            .expect("refusals lock poisoned")
            .entry(code)
            .or_default() += 1;
    }
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().expect("refusals lock poisoned").clone()
    }
}

impl LinkStats {
    pub(crate) fn sent(&self, len: usize) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
    }
    pub(crate) fn received(&self, len: usize) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// Who a link is with.
#[derive(Clone, Debug)]
pub(crate) struct LinkPeer {
    pub name: String,
    pub id: NodeId,
    /// The peer dialled us: a newer inbound link from the same peer
    /// replaces this one.
    pub inbound: bool,
    /// Where we dialled, or where it dialled from.
    pub address: String,
}

/// The status a link's outbound stream ends with, if it was ended for a
/// reason the peer should hear: the first to set it (the reader refusing a
/// message, or the actor closing the link) decides.
#[derive(Clone, Default)]
pub(crate) struct EndSlot(Arc<Mutex<Option<Status>>>);

impl EndSlot {
    pub fn set(&self, status: Status) {
        let mut slot = self.0.lock().expect("end slot poisoned");
        slot.get_or_insert(status);
    }
    pub(crate) fn take(&self) -> Option<Status> {
        self.0.lock().expect("end slot poisoned").take()
    }
}

//! The actor's side of each peer link: the session, the queue of control
//! messages that did not fit yet, and the rule that fills the link's
//! channel (control first, then catch-up batches) only while it has room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::core::{Note, PeerMsg, Replica, Session};
use crate::node::link::{EndSlot, LinkPeer, LinkStats};
use crate::store::KvStore;

/// Messages queued per link beyond its channel before the link is judged
/// stuck (its peer stopped reading) and closed.
const PENDING_MAX: usize = 256;

/// The actor's side of one peer link.
pub(super) struct Link {
    pub(super) peer: LinkPeer,
    pub(super) session: Session,
    pub(super) out: mpsc::Sender<PeerMsg>,
    /// Control messages that did not fit in `out` yet, in order.
    pub(super) pending: VecDeque<PeerMsg>,
    /// Set when `out` was full; the writer clears it and sends `LinkRoom`.
    pub(super) room: Arc<AtomicBool>,
    pub(super) stats: Arc<LinkStats>,
    /// The status the outbound stream ends with when the actor closes it.
    pub(super) end: EndSlot,
}

/// Records what a peer said it refused of ours. Duplicates are routine
/// (two paths deliver one delta); anything else means the peer judges our
/// data bad, which an operator must see.
pub(super) fn peer_refused(link: &Link, notes: &[Note]) {
    let serious: Vec<&Note> = notes.iter().filter(|n| n.code != "duplicate").collect();
    let Some(first) = serious.first() else {
        tracing::debug!(peer = %link.peer.name, "peer already held some deltas we sent");
        return;
    };
    link.stats
        .refused_by_peer
        .fetch_add(serious.len() as u64, Ordering::Relaxed);
    let text = format!("{}: {}", first.code, first.reason);
    tracing::warn!(peer = %link.peer.name, reason = %text, notes = serious.len(), "peer refused deltas we sent");
    *link
        .stats
        .last_refusal_by_peer
        .lock()
        .expect("link stats lock poisoned") = Some(text);
}

impl Link {
    pub(super) fn fill(
        &mut self,
        replica: &Replica<KvStore>,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<(), String> {
        use mpsc::error::TrySendError;
        while let Some(msg) = self.pending.pop_front() {
            match self.out.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.pending.push_front(msg);
                    self.room.store(true, Ordering::Release);
                    if self.pending.len() > PENDING_MAX {
                        return Err(format!(
                            "peer is not reading ({PENDING_MAX} messages queued)"
                        ));
                    }
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => return Err("link closed".into()),
            }
        }
        while self.session.has_outbox() {
            let permit = match self.out.try_reserve() {
                Ok(p) => p,
                Err(TrySendError::Full(())) => {
                    self.room.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(TrySendError::Closed(())) => return Err("link closed".into()),
            };
            match self.session.next_batch(replica, max_count, max_bytes) {
                Ok(Some(batch)) => permit.send(PeerMsg::Deltas(batch)),
                Ok(None) => break,
                Err(e) => return Err(format!("store read failed: {e}")),
            }
        }
        Ok(())
    }
}

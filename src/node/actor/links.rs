//! The actor's side of each peer link: the session, the queue of control
//! messages that did not fit yet, and the rule that fills the link's
//! channel (control first, then catch-up batches) only while it has room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::core::pace::Pace;
use crate::core::{Note, PeerMsg, Replica, Session};
use crate::node::link_info::{EndSlot, LinkPeer, LinkStats};
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
    /// What may be in flight, from what the peer's acks show.
    pub(super) pace: Pace,
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
    /// Moves queued control messages (and live pushes), then catch-up
    /// batches, into the channel: the first while it has room, the second
    /// also only while the pace allows, in batches the pace sizes.
    pub(super) fn fill(
        &mut self,
        replica: &Replica<KvStore>,
        max_count: usize,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<(), String> {
        use mpsc::error::TrySendError;
        while !self.pending.is_empty() {
            let permit = match self.out.try_reserve() {
                Ok(p) => p,
                Err(TrySendError::Full(())) => {
                    self.room.store(true, Ordering::Release);
                    if self.pending.len() > PENDING_MAX {
                        return Err(format!(
                            "peer is not reading ({PENDING_MAX} messages queued)"
                        ));
                    }
                    return Ok(());
                }
                Err(TrySendError::Closed(())) => return Err("link closed".into()),
            };
            let msg = self.pending.pop_front().expect("not empty");
            leaving(&mut self.pace, &mut self.session, &msg, now_ms);
            permit.send(msg);
        }
        while self.session.has_outbox() && self.pace.may_send(now_ms) {
            let permit = match self.out.try_reserve() {
                Ok(p) => p,
                Err(TrySendError::Full(())) => {
                    self.room.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(TrySendError::Closed(())) => return Err("link closed".into()),
            };
            let bytes = self.pace.batch_bytes(max_bytes, now_ms);
            match self.session.next_batch(replica, max_count, bytes) {
                Ok(Some(batch)) => {
                    let msg = PeerMsg::Deltas(batch);
                    leaving(&mut self.pace, &mut self.session, &msg, now_ms);
                    permit.send(msg);
                }
                Ok(None) => break,
                Err(e) => return Err(format!("store read failed: {e}")),
            }
        }
        Ok(())
    }

    /// Notes what a message from the peer says of our side of the link.
    pub(super) fn arrived(&mut self, msg: &PeerMsg, now_ms: u64) {
        match msg {
            PeerMsg::Ack(_) => {
                self.pace.acked(now_ms);
                let view = self.pace.view(now_ms);
                (self.stats.delta_bytes_acked).store(view.acked_bytes, Ordering::Relaxed);
                if let Some(rate) = view.rate_bytes_per_sec {
                    (self.stats.rate_bytes_per_sec).store(rate.max(1), Ordering::Relaxed);
                }
            }
            PeerMsg::InSync(_) | PeerMsg::Frontier(_) => self.pace.digest_answered(now_ms),
            _ => {}
        }
    }
}

/// Notes a message entering the link's stream, in stream order (a free
/// function: the channel permit borrows the link meanwhile).
fn leaving(pace: &mut Pace, session: &mut Session, msg: &PeerMsg, now_ms: u64) {
    match msg {
        PeerMsg::Deltas(batch) => {
            let bytes = batch.iter().map(|d| d.as_bytes().len() as u64).sum();
            pace.sent(bytes, batch.len() as u64, now_ms);
        }
        PeerMsg::Digest { .. } => {
            pace.digest_sent(now_ms);
            session.digest_sent();
        }
        _ => {}
    }
}

//! The actor's side of each peer link: the session, the queue of control
//! messages that did not fit yet, and the rule that fills the link's
//! channel (control first, then catch-up batches) only while it has room;
//! and the actor's handling of what happens on links (one opened, a
//! message or a batch from its peer, anti-entropy, one ended).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Actor, LinkId, LinkIo, Reply};
use crate::core::pace::Pace;
use crate::core::{Admitted, Note, PeerMsg, Reaction, Replica, RosterOffer, Session};
use crate::node::link_info::{EndSlot, LinkPeer, LinkStats};
use crate::node::ApiError;
use crate::store::{KvStore, StoreError};

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
            _ => return,
        }
        if let Some(rtt) = self.pace.rtt_min_ms() {
            (self.stats.rtt_min_ms).store(rtt.max(1), Ordering::Relaxed);
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

/// The actor's handling of link events: a link opened, a message or a
/// batch from its peer, anti-entropy, filling its channel, its end.
impl Actor {
    pub(super) fn handle_link_open(&mut self, peer: LinkPeer, io: LinkIo, reply: Reply<LinkId>) {
        // The handshake checked the certificate; the roster may have
        // changed since.
        if !self.is_active_node(&peer.id) {
            let why = format!(
                "{} is not an active node in roster version {}",
                peer.name,
                self.replica.roster().version
            );
            let _ = reply.send(Err(ApiError::NotAllowed(why)));
            return;
        }
        if peer.inbound {
            // A peer that redials after a network failure may find its old
            // stream still open here: the newer one replaces it, so each
            // peer holds at most one inbound link.
            let old: Vec<LinkId> = self
                .links
                .iter()
                .filter(|(_, l)| l.peer.inbound && l.peer.id == peer.id)
                .map(|(id, _)| *id)
                .collect();
            for id in old {
                tracing::info!(peer = %peer.name, "newer inbound link replaces an older one");
                self.remove_link(id);
            }
        }
        let id = self.next_link;
        self.next_link += 1;
        self.peers.link_opened(&peer.name, &peer.address);
        let mut session = Session::with_peer(peer.id);
        session.set_announce(self.announce());
        let opening = session.opening(&self.replica, !peer.inbound);
        let mut link = Link {
            peer,
            session,
            out: io.out,
            pending: VecDeque::new(),
            room: io.room,
            stats: io.stats,
            end: io.end,
            pace: Pace::new(self.wiring.window_bytes_max as u64),
        };
        link.pending.push_back(opening);
        tracing::info!(peer = %link.peer.name, inbound = link.peer.inbound, "link open");
        let below = self.is_below_me(&link.peer.id);
        self.links.insert(id, link);
        self.pump(id);
        let _ = reply.send(Ok(id));
        if below {
            self.tell_hops();
        }
    }

    pub(super) fn handle_link_msg(&mut self, id: LinkId, msg: PeerMsg) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let now = self.wiring.clock.now_ms();
        let digest = matches!(msg, PeerMsg::Digest { .. });
        link.arrived(&msg, now);
        let result = link
            .session
            .handle(msg, &mut self.replica, &link.peer.name, now);
        let Some(reaction) = self.reacted(id, result, now) else {
            return;
        };
        if digest {
            self.rebuild_on_digest(id);
        }
        let link = self.links.get(&id).expect("reacted checked it");
        if !reaction.peer_refused.is_empty() {
            peer_refused(link, &reaction.peer_refused);
        }
        match reaction.roster {
            Some(RosterOffer::Adopted(change)) => self.roster_adopted(&change, Some(id)),
            Some(RosterOffer::Invalid(e)) => {
                self.wiring.refusals.count("bad_roster");
                tracing::warn!(peer = %link.peer.name, error = %e, "roster from peer refused");
            }
            _ => {}
        }
        self.pump(id);
    }

    pub(super) fn handle_link_deltas(&mut self, id: LinkId, admitted: Admitted) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let now = self.wiring.clock.now_ms();
        let result =
            link.session
                .handle_admitted(admitted, &mut self.replica, &link.peer.name, now);
        let Some(reaction) = self.reacted(id, result, now) else {
            return;
        };
        let link = self.links.get(&id).expect("reacted checked it");
        if let Some(report) = reaction.ingest {
            if let Some(first) = report.refused.first() {
                // One line per batch, not per delta: a bad batch must not
                // flood the log. The quarantine holds each one.
                tracing::warn!(
                    peer = %link.peer.name,
                    refused = report.refused.len(),
                    code = first.code(),
                    reason = %first,
                    "deltas refused (first reason shown)"
                );
            }
            self.applied(&report.applied, Some(id));
        }
        // The batch's Ack says the deltas are held: it leaves after the
        // group's flush has made them durable, with the rest of the reply.
        self.group.replies.push(id);
    }

    /// What every handled peer message shares: a store failure is logged
    /// and marks the node unhealthy (nothing else happens); otherwise the
    /// replies are queued and what the peer showed it holds is noted.
    fn reacted(
        &mut self,
        id: LinkId,
        result: Result<Reaction, StoreError>,
        now: u64,
    ) -> Option<Reaction> {
        let link = self.links.get_mut(&id)?;
        let mut reaction = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(peer = %link.peer.name, error = %e, "store failed; message not applied");
                self.store_health(false);
                return None;
            }
        };
        link.pending.extend(std::mem::take(&mut reaction.send));
        if reaction.ingest.is_some() {
            self.group.lazy = true;
        }
        if let Some(view) = &reaction.peer_view {
            let scope = link.session.scope(&self.replica);
            // This node's own log is the one its receipts are about.
            let me = [crate::core::NodeId(
                self.wiring.signer.verifying_key().to_bytes(),
            )];
            let mine = self.replica.frontier();
            (self.peers).observed(&link.peer.name, view, mine, &scope, &me, now);
            if view.whole {
                self.rebuild_exchanged(id, view);
            }
        }
        Some(reaction)
    }

    pub(super) fn handle_anti_entropy(&mut self) {
        self.report_hops(self.wiring.clock.now_ms());
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            let link = self.links.get_mut(&id).expect("listed");
            let digest = link.session.digest(&self.replica);
            link.pending.push_back(digest);
            self.pump(id);
        }
    }

    /// Moves queued control messages, then catch-up batches, into the
    /// link's channel while it has room.
    pub(super) fn pump(&mut self, id: LinkId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let (count, bytes) = (self.wiring.batch_deltas_max, self.wiring.batch_bytes_max);
        match link.fill(&self.replica, count, bytes, self.wiring.clock.now_ms()) {
            Ok(()) => {}
            Err(why) => {
                tracing::warn!(peer = %link.peer.name, %why, "closing link");
                // The peer hears why, once it reads to the end.
                let text = format!("{} closed this link: {why}", self.wiring.name);
                link.end.set(tonic::Status::resource_exhausted(text));
                let name = link.peer.name.clone();
                self.peers.error(
                    &name,
                    format!("link closed: {why}"),
                    self.wiring.clock.now_ms(),
                );
                self.remove_link(id);
            }
        }
    }

    /// Ends a link (dropping its channel ends the stream), keeping its
    /// traffic in the peer's totals.
    pub(super) fn remove_link(&mut self, id: LinkId) -> Option<Link> {
        let link = self.links.remove(&id)?;
        self.peers.link_closed(&link.peer.name, &link.stats);
        Some(link)
    }
}

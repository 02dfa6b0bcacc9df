//! Keeping a node from forking its own log. A node that lost its store
//! (deleted, replaced, or found corrupt and moved aside) no longer knows
//! how far its own log went, but its peers do: every write was pushed to
//! them. Writing before it has its own log back would sign a second delta
//! for a seq it already used, which every peer refuses as equivocation.
//!
//! So local writes wait while any peer has confirmed more of this node's
//! own log than the node holds, and, after `run --rebuild`, until the
//! rebuild ([`crate::core::Rebuild`]) has witnessed each peer it waits for.

use std::collections::BTreeSet;

use super::{Actor, LinkId};
use crate::config::NodeConfig;
use crate::core::{Announce, NodeId, PeerView, Rebuild, Roster};
use crate::node::ApiError;

/// The peers a rebuild waits for: those this node dials and those named
/// as dialling it; or, for a node that dials none (the hub every office
/// dials), every other active node.
pub(crate) fn rebuild_from(
    config: &NodeConfig,
    dialling: &[String],
    roster: &Roster,
    me: NodeId,
) -> Rebuild {
    let named: BTreeSet<&String> = (config.peers.iter().map(|p| &p.name))
        .chain(dialling)
        .collect();
    let nodes = roster.members().filter(|m| m.is_node() && m.is_active());
    let waiting: Vec<NodeId> = if named.is_empty() {
        nodes.filter(|m| m.id != me).map(|m| m.id).collect()
    } else {
        nodes
            .filter(|m| named.contains(&m.name))
            .map(|m| m.id)
            .collect()
    };
    Rebuild::new(me, waiting)
}

impl Actor {
    pub(super) fn me(&self) -> NodeId {
        NodeId(self.wiring.signer.verifying_key().to_bytes())
    }

    /// `Ok` when a local write may be signed now; otherwise why not.
    pub(super) fn write_guard(&mut self) -> Result<(), ApiError> {
        let me = self.me();
        let mine = self.replica.frontier().head(&me).seq;
        for (name, e) in self.peers.iter() {
            let theirs = e.progress.known_seq(&me);
            if theirs > mine {
                return Err(ApiError::Unavailable(format!(
                    "this node's own log is at seq {mine} but {name} holds it up to seq {theirs}: \
                     catching up from peers first, since a write now would fork the log"
                )));
            }
        }
        let Some(rebuild) = &self.wiring.rebuild else {
            return Ok(());
        };
        let roster = self.replica.roster();
        let waiting: Vec<String> = (rebuild.waiting_for())
            .map(|id| roster.member(id).map_or(id.short(), |m| m.name.clone()))
            .collect();
        Err(ApiError::Unavailable(format!(
            "rebuilding from peers: local writes wait until this node has synced with {}",
            waiting.join(", ")
        )))
    }

    /// A whole frontier exchange on `link`: it counts towards a rebuild if
    /// the peer vouches for its data.
    pub(super) fn rebuild_exchanged(&mut self, link: LinkId, view: &PeerView) {
        let (Some(rebuild), Some(l)) = (&mut self.wiring.rebuild, self.links.get(&link)) else {
            return;
        };
        if rebuild.exchanged(&l.peer.id, l.session.peer_announce(), &view.seqs) {
            tracing::info!(peer = %l.peer.name, "rebuild: exchange counted; waiting to hold what it showed");
        }
        self.rebuild_settle();
    }

    /// The peer on `link` sent a digest. If this node's rebuild waits for
    /// it and it now vouches for this node (it finished waiting for its
    /// other peers), ask for its frontier afresh: the exchange that counts
    /// is one made from now on.
    pub(super) fn rebuild_on_digest(&mut self, link: LinkId) {
        let me = self.me();
        let (Some(rebuild), Some(l)) = (&self.wiring.rebuild, self.links.get_mut(&link)) else {
            return;
        };
        let waited_for = rebuild.waiting_for().any(|p| *p == l.peer.id);
        let vouches = l
            .session
            .peer_announce()
            .is_some_and(|a| a.vouches_for(&me));
        if waited_for && vouches {
            let digest = l.session.digest(&self.replica);
            l.pending.push_back(digest);
        }
    }

    /// After the frontier moved or an exchange counted: peers whose data
    /// this node now holds are witnessed; once none is left, the rebuild
    /// is done and its marker cleared. Either way every peer is sent a
    /// fresh digest saying so: a peer that waits for this one learns at
    /// once that it may now vouch for it.
    pub(super) fn rebuild_settle(&mut self) {
        let Some(rebuild) = &mut self.wiring.rebuild else {
            return;
        };
        if !rebuild.settle(self.replica.frontier()) {
            return;
        }
        let announce = if rebuild.is_done() {
            if let Err(e) = self.replica.store().set_rebuilding(false) {
                // Still rebuilding as far as a restart will know; writes
                // wait until the marker is gone.
                tracing::error!(error = %e, "rebuild complete, but its marker could not be cleared");
                self.store_health(false);
                return;
            }
            self.wiring.rebuild = None;
            tracing::info!("rebuild from peers complete: local writes resume");
            Announce::Intact
        } else {
            let roster = self.replica.roster();
            let left: Vec<String> = (rebuild.waiting_for())
                .map(|id| roster.member(id).map_or(id.short(), |m| m.name.clone()))
                .collect();
            tracing::info!(waiting_for = ?left, "rebuild: peer witnessed");
            rebuild.announce()
        };
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            let l = self.links.get_mut(&id).expect("listed");
            l.session.set_announce(announce.clone());
            let digest = l.session.digest(&self.replica);
            l.pending.push_back(digest);
            self.pump(id);
        }
    }

    /// What a new link's digests say of this node's store.
    pub(super) fn announce(&self) -> Announce {
        self.wiring
            .rebuild
            .as_ref()
            .map_or(Announce::Intact, Rebuild::announce)
    }
}

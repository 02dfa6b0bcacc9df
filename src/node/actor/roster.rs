//! Roster changes as the running node applies them: who is still trusted,
//! which links end, and passing the roster on.

use std::sync::Arc;

use super::{Actor, LinkId};
use crate::core::{NodeId, PeerMsg, RosterChange};

impl Actor {
    pub(super) fn is_active_node(&self, id: &NodeId) -> bool {
        self.replica
            .roster()
            .member(id)
            .is_some_and(|m| m.is_node() && m.is_active())
    }

    /// A newer roster is in force: trust follows it at once (revoked peers'
    /// handshakes fail and their open connections close), links to peers
    /// that are no longer active nodes end, and every other link hears of
    /// the roster and compares digests again under it.
    pub(super) fn roster_adopted(&mut self, change: &RosterChange, from: Option<LinkId>) {
        let roster = self.replica.roster().clone();
        tracing::info!(
            version = change.version,
            retracted = change.retracted,
            "roster adopted"
        );
        self.wiring
            .trust
            .replace(crate::node::trust_entries(&roster));
        self.roster.send_replace(Arc::new(roster));
        self.frontier
            .send_replace(Arc::new(self.replica.frontier().clone()));
        let gone: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| !self.is_active_node(&l.peer.id))
            .map(|(id, _)| *id)
            .collect();
        self.peers
            .local_change(self.replica.frontier(), &[], self.wiring.clock.now_ms());
        for id in gone {
            if let Some(l) = self.remove_link(id) {
                tracing::warn!(peer = %l.peer.name, "link closed: peer no longer trusted by the roster");
            }
        }
        let signed = self.replica.signed_roster().map(|s| s.as_bytes().to_vec());
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            let link = self.links.get_mut(&id).expect("listed");
            if Some(id) != from {
                if let Some(bytes) = &signed {
                    link.pending.push_back(PeerMsg::Roster(bytes.clone()));
                }
                let digest = link.session.digest(&self.replica);
                link.pending.push_back(digest);
            }
            self.pump(id);
        }
    }
}

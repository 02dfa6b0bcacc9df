//! Keeping a node from forking its own log. A node that lost its store
//! (deleted, replaced, or found corrupt and moved aside) no longer knows
//! how far its own log went, but its peers do: every write was pushed to
//! them. Writing before it has its own log back would sign a second delta
//! for a seq it already used, which every peer refuses as equivocation.
//!
//! So local writes wait while any peer has confirmed more of this node's
//! own log than the node holds, and, after `run --rebuild`, until the node
//! has exchanged frontiers with each peer it waits for.

use std::collections::BTreeSet;

use super::Actor;
use crate::config::NodeConfig;
use crate::core::{NodeId, Roster};
use crate::node::ApiError;

/// An unfinished rebuild from peers.
#[derive(Debug, Clone)]
pub(crate) struct Rebuild {
    /// The peers this node dials and those named as dialling it; or, for a
    /// node that dials none (the hub every office dials), every other
    /// active node.
    pub waiting_for: BTreeSet<String>,
}

impl Rebuild {
    pub(crate) fn from_peers(config: &NodeConfig, dialling: &[String], roster: &Roster) -> Rebuild {
        let dialled: BTreeSet<String> = (config.peers.iter().map(|p| &p.name))
            .chain(dialling)
            .cloned()
            .collect();
        let waiting_for = if dialled.is_empty() {
            (roster.members())
                .filter(|m| m.is_node() && m.is_active() && m.name != config.name)
                .map(|m| m.name.clone())
                .collect()
        } else {
            dialled
        };
        Rebuild { waiting_for }
    }
}

impl Actor {
    /// `Ok` when a local write may be signed now; otherwise why not.
    pub(super) fn write_guard(&mut self) -> Result<(), ApiError> {
        let me = NodeId(self.wiring.signer.verifying_key().to_bytes());
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
        let waiting: Vec<&str> = (rebuild.waiting_for.iter())
            .filter(|p| self.peers.get(p).is_none_or(|e| e.sync_rounds == 0))
            .map(String::as_str)
            .collect();
        if !waiting.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "rebuilding from peers: local writes wait until this node has synced with {}",
                waiting.join(", ")
            )));
        }
        self.replica.store().set_rebuilding(false)?;
        self.wiring.rebuild = None;
        tracing::info!("rebuild from peers complete: local writes resume");
        Ok(())
    }
}

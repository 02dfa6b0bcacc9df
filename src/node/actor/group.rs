//! Group commit. The commands waiting when the actor takes one are handled
//! together as a group: the batches peers sent are committed lazily as they
//! come, and the group ends with one flush, then one push per link of
//! everything the group applied. So a hub that many offices push to at
//! once pays for one flush and one message per link per group, not per
//! delta, while a lone write is still flushed and pushed at once.
//!
//! A local write is durable before its reply, whatever the group: its own
//! commit flushes. What the group delays is only the durability of what
//! peers sent (which they still hold), the Ack that tells them it is held,
//! and the relay of it onwards; all happen before the actor waits for its
//! next command.

use std::sync::Arc;

use super::{Actor, LinkId};
use crate::core::SignedDelta;

/// Commands in one group, at most: a bound on the time its first waits.
pub(super) const GROUP_COMMANDS_MAX: usize = 64;
/// Deltas applied in one group, at most, before it ends: a bound on what
/// a crash can take back (from a node whose peers hold it anyway).
pub(super) const GROUP_DELTAS_MAX: usize = 8_000;

/// What the group in progress applied, each with the link it came from.
#[derive(Default)]
pub(super) struct Group {
    applied: Vec<(SignedDelta, Option<LinkId>)>,
    /// A batch from a peer was committed lazily in this group.
    pub(super) lazy: bool,
    /// Links whose replies to a batch (its Ack first) wait for the flush.
    pub(super) replies: Vec<LinkId>,
}

impl Group {
    pub(super) fn is_full(&self) -> bool {
        self.applied.len() >= GROUP_DELTAS_MAX
    }
}

impl Actor {
    /// Deltas just applied (committed, lazily for a peer's): they reach
    /// peers and watchers when the group ends.
    pub(super) fn applied(&mut self, deltas: &[SignedDelta], from: Option<LinkId>) {
        (self.group.applied).extend(deltas.iter().map(|d| (d.clone(), from)));
    }

    /// Ends the group: one flush, then the frontier published, what it
    /// applied relayed to every link but the one it came from (one message
    /// per link), and the watchers told.
    pub(super) fn end_group(&mut self) {
        if std::mem::take(&mut self.group.lazy) {
            match self.replica.sync() {
                Ok(()) => self.store_health(true),
                Err(e) => {
                    tracing::error!(error = %e, "store failed to flush what peers sent");
                    self.store_health(false);
                }
            }
        }
        let mut replies = std::mem::take(&mut self.group.replies);
        replies.sort_unstable();
        replies.dedup();
        for id in replies {
            self.pump(id);
        }
        let applied = std::mem::take(&mut self.group.applied);
        if applied.is_empty() {
            return;
        }
        self.frontier
            .send_replace(Arc::new(self.replica.frontier().clone()));
        self.rebuild_settle();
        let mut senders: Vec<String> = (applied.iter())
            .filter_map(|(_, from)| from.and_then(|id| self.links.get(&id)))
            .map(|l| l.peer.name.clone())
            .collect();
        senders.sort();
        senders.dedup();
        let now = self.wiring.clock.now_ms();
        self.peers
            .local_change(self.replica.frontier(), &senders, now);
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            // The sender holds what it sent; its session noted so.
            let onward: Vec<SignedDelta> = (applied.iter())
                .filter(|(_, from)| *from != Some(id))
                .map(|(d, _)| d.clone())
                .collect();
            if onward.is_empty() {
                continue;
            }
            let link = self.links.get_mut(&id).expect("listed");
            if link.pending.is_empty() && link.out.capacity() > 0 {
                if let Some(msg) = link.session.push(&onward) {
                    link.pending.push_back(msg);
                }
            } else {
                link.session.defer(&onward);
            }
            self.pump(id);
        }
        self.watchers.retain(|(prefix, tx)| {
            for (d, _) in applied
                .iter()
                .filter(|(d, _)| d.key().starts_with(prefix.as_str()))
            {
                if tx.try_send(d.clone()).is_err() {
                    // Closed, or too slow to keep up: dropping it ends the
                    // watch stream, and the client can resume with a list.
                    return false;
                }
            }
            true
        });
    }
}

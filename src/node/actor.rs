//! The one owner of a node's mutable state: the replica, the per-link
//! sessions and the watchers. Everything else talks to it through a bounded
//! channel of [`Command`]s, one `handle_*` method each.
//!
//! The actor never awaits a peer: it hands messages to each link's bounded
//! queue with `try_send`, and when a queue is full it stops producing for
//! that link until the link's writer reports room ([`Command::LinkRoom`]).
//! So one slow peer cannot stall the node, and no queue grows without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot, watch};

use super::clock::now_ms;
use super::link::LinkStats;
use super::ApiError;
use crate::core::{
    Admitted, Counters, Frontier, FrontierDigest, NodeId, Op, PeerMsg, Replica, Session,
    SignedDelta,
};
use crate::store::SledStore;

pub(crate) type LinkId = u64;

/// Messages queued per link beyond its channel before the link is judged
/// stuck (its peer stopped reading) and closed.
const PENDING_MAX: usize = 256;
/// Changes buffered per watcher before it is judged too slow and dropped.
pub(crate) const WATCH_QUEUE_MAX: usize = 1024;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

pub(crate) enum Command {
    Write {
        key: String,
        op: Op,
        value: Vec<u8>,
        reply: Reply<SignedDelta>,
    },
    Get {
        key: String,
        reply: Reply<Option<SignedDelta>>,
    },
    List {
        prefix: String,
        after: Option<String>,
        limit: usize,
        reply: Reply<Vec<SignedDelta>>,
    },
    Watch {
        prefix: String,
        tx: mpsc::Sender<SignedDelta>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    LinkOpen {
        peer: String,
        out: mpsc::Sender<PeerMsg>,
        room: Arc<AtomicBool>,
        stats: Arc<LinkStats>,
        reply: oneshot::Sender<LinkId>,
    },
    LinkMsg {
        link: LinkId,
        msg: PeerMsg,
    },
    LinkDeltas {
        link: LinkId,
        admitted: Admitted,
    },
    LinkRoom {
        link: LinkId,
    },
    LinkClosed {
        link: LinkId,
    },
    AntiEntropy,
    /// Stop: drop every link (ending their streams) and return the replica.
    Shutdown,
}

/// A snapshot for callers outside the actor (tests, the demo, later the
/// status call).
#[derive(Clone, Debug)]
pub struct Stats {
    pub node: NodeId,
    pub name: String,
    pub digest: FrontierDigest,
    pub frontier: Frontier,
    pub counters: Counters,
    pub held: usize,
    pub links: Vec<LinkSnapshot>,
}

#[derive(Clone, Debug)]
pub struct LinkSnapshot {
    pub peer: String,
    pub in_sync: bool,
    pub stats: Arc<LinkStats>,
}

/// The actor's side of one peer link.
struct Link {
    peer: String,
    session: Session,
    out: mpsc::Sender<PeerMsg>,
    /// Control messages that did not fit in `out` yet, in order.
    pending: VecDeque<PeerMsg>,
    /// Set when `out` was full; the writer clears it and sends `LinkRoom`.
    room: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
}

pub(crate) struct Actor {
    replica: Replica<SledStore>,
    signer: SigningKey,
    name: String,
    links: HashMap<LinkId, Link>,
    next_link: LinkId,
    watchers: Vec<(String, mpsc::Sender<SignedDelta>)>,
    /// Published after every change, for links' admission and for waiters.
    frontier: watch::Sender<Arc<Frontier>>,
    batch_deltas_max: usize,
    batch_bytes_max: usize,
}

impl Actor {
    pub(crate) fn new(
        replica: Replica<SledStore>,
        signer: SigningKey,
        name: String,
        batch_deltas_max: usize,
        batch_bytes_max: usize,
    ) -> (Actor, watch::Receiver<Arc<Frontier>>) {
        let (frontier, rx) = watch::channel(Arc::new(replica.frontier().clone()));
        let actor = Actor {
            replica,
            signer,
            name,
            links: HashMap::new(),
            next_link: 1,
            watchers: Vec::new(),
            frontier,
            batch_deltas_max,
            batch_bytes_max,
        };
        (actor, rx)
    }

    /// Runs until told to stop (or every sender is gone), then returns the
    /// replica so the caller can close the store. Every acknowledged write
    /// was already flushed before its reply was sent.
    ///
    /// Blocking: call it on a thread of its own (`spawn_blocking`). A commit
    /// waits for sled's flush; on an async worker that wait would stall the
    /// network tasks sharing the worker, on its own thread it overlaps with
    /// them (and with admission on the blocking pool).
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<Command>) -> Replica<SledStore> {
        while let Some(cmd) = commands.blocking_recv() {
            if let Command::Shutdown = cmd {
                break;
            }
            self.handle(cmd);
        }
        self.links.clear();
        self.watchers.clear();
        self.replica
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Write {
                key,
                op,
                value,
                reply,
            } => self.handle_write(key, op, value, reply),
            Command::Get { key, reply } => {
                let _ = reply.send(self.replica.get(&key).map_err(ApiError::from));
            }
            Command::List {
                prefix,
                after,
                limit,
                reply,
            } => {
                let page = self.replica.list(&prefix, after.as_deref(), limit);
                let _ = reply.send(page.map_err(ApiError::from));
            }
            Command::Watch { prefix, tx } => self.watchers.push((prefix, tx)),
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::LinkOpen {
                peer,
                out,
                room,
                stats,
                reply,
            } => self.handle_link_open(peer, out, room, stats, reply),
            Command::LinkMsg { link, msg } => self.handle_link_msg(link, msg),
            Command::LinkDeltas { link, admitted } => self.handle_link_deltas(link, admitted),
            Command::LinkRoom { link } => self.pump(link),
            Command::LinkClosed { link } => {
                if let Some(l) = self.links.remove(&link) {
                    tracing::info!(peer = %l.peer, "link closed");
                }
            }
            Command::AntiEntropy => self.handle_anti_entropy(),
            Command::Shutdown => unreachable!("handled by run"),
        }
    }

    fn handle_write(&mut self, key: String, op: Op, value: Vec<u8>, reply: Reply<SignedDelta>) {
        let result = self
            .replica
            .write(&self.signer, &key, op, value, now_ms())
            .map_err(ApiError::from);
        if let Ok(d) = &result {
            // Durable before anyone hears of it: the reply, the peers and
            // the watchers all come after the commit.
            self.applied(std::slice::from_ref(d), None);
        }
        let _ = reply.send(result);
    }

    fn handle_link_open(
        &mut self,
        peer: String,
        out: mpsc::Sender<PeerMsg>,
        room: Arc<AtomicBool>,
        stats: Arc<LinkStats>,
        reply: oneshot::Sender<LinkId>,
    ) {
        let id = self.next_link;
        self.next_link += 1;
        let session = Session::new();
        let opening = session.digest(&self.replica);
        let mut link = Link {
            peer,
            session,
            out,
            pending: VecDeque::new(),
            room,
            stats,
        };
        link.pending.push_back(opening);
        tracing::info!(peer = %link.peer, "link open");
        self.links.insert(id, link);
        self.pump(id);
        let _ = reply.send(id);
    }

    fn handle_link_msg(&mut self, id: LinkId, msg: PeerMsg) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        match link
            .session
            .handle(msg, &mut self.replica, &link.peer, now_ms())
        {
            Ok(reaction) => link.pending.extend(reaction.send),
            Err(e) => tracing::error!(peer = %link.peer, error = %e, "store failed"),
        }
        self.pump(id);
    }

    fn handle_link_deltas(&mut self, id: LinkId, admitted: Admitted) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let result =
            link.session
                .handle_admitted(admitted, &mut self.replica, &link.peer, now_ms());
        let reaction = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(peer = %link.peer, error = %e, "store failed; batch not applied");
                return;
            }
        };
        link.pending.extend(reaction.send);
        if let Some(report) = reaction.ingest {
            if let Some(first) = report.refused.first() {
                // One line per batch, not per delta: a bad batch must not
                // flood the log. The quarantine holds each one.
                tracing::warn!(
                    peer = %link.peer,
                    refused = report.refused.len(),
                    code = first.code(),
                    reason = %first,
                    "deltas refused (first reason shown)"
                );
            }
            self.applied(&report.applied, Some(id));
        }
        self.pump(id);
    }

    fn handle_anti_entropy(&mut self) {
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            let link = self.links.get_mut(&id).expect("listed");
            let digest = link.session.digest(&self.replica);
            link.pending.push_back(digest);
            self.pump(id);
        }
    }

    /// After a commit: publish the frontier, relay to every other link and
    /// tell the watchers.
    fn applied(&mut self, deltas: &[SignedDelta], from: Option<LinkId>) {
        if deltas.is_empty() {
            return;
        }
        self.frontier
            .send_replace(Arc::new(self.replica.frontier().clone()));
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            let link = self.links.get_mut(&id).expect("listed");
            if Some(id) == from {
                // The sender holds these; its session noted so.
                continue;
            }
            if link.pending.is_empty() && link.out.capacity() > 0 {
                if let Some(msg) = link.session.push(deltas) {
                    link.pending.push_back(msg);
                }
            } else {
                link.session.defer(deltas);
            }
            self.pump(id);
        }
        self.watchers.retain(|(prefix, tx)| {
            for d in deltas
                .iter()
                .filter(|d| d.key().starts_with(prefix.as_str()))
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

    /// Moves queued control messages, then catch-up batches, into the
    /// link's channel while it has room.
    fn pump(&mut self, id: LinkId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        match link.fill(&self.replica, self.batch_deltas_max, self.batch_bytes_max) {
            Ok(()) => {}
            Err(why) => {
                tracing::warn!(peer = %link.peer, %why, "closing link");
                self.links.remove(&id);
            }
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            node: NodeId(self.signer.verifying_key().to_bytes()),
            name: self.name.clone(),
            digest: self.replica.digest(),
            frontier: self.replica.frontier().clone(),
            counters: self.replica.counters().clone(),
            held: self.replica.held_len(),
            links: self
                .links
                .values()
                .map(|l| LinkSnapshot {
                    peer: l.peer.clone(),
                    in_sync: l.session.in_sync(&self.replica),
                    stats: l.stats.clone(),
                })
                .collect(),
        }
    }
}

impl Link {
    fn fill(
        &mut self,
        replica: &Replica<SledStore>,
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

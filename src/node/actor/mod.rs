//! The one owner of a node's mutable state: the replica, the per-link
//! sessions and the watchers. Everything else talks to it through a bounded
//! channel of [`Command`]s, one `handle_*` method each.
//!
//! The actor never awaits a peer: it hands messages to each link's bounded
//! queue with `try_send`, and when a queue is full it stops producing for
//! that link until the link's writer reports room ([`Command::LinkRoom`]).
//! So one slow peer cannot stall the node, and no queue grows without bound.

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, watch};

use super::link_info::{LinkStats, MessageRefusals};
use super::ApiError;
use crate::core::{
    Counters, Frontier, FrontierDigest, NodeId, Op, Replica, Roster, RosterOffer, SignedDelta,
};
use crate::identity::tls::TrustStore;
use crate::store::KvStore;

mod command;
mod group;
mod hops;
mod links;
mod peers;
mod rebuild;
mod reports;
mod roster;
mod status;

pub(crate) use command::{Command, LinkId, LinkIo, Reply, WATCH_QUEUE_MAX};
use links::Link;
use peers::Peers;
pub(crate) use rebuild::rebuild_from;
pub(crate) use reports::{Dashboard, ReportCmd, Scope};

/// A snapshot for callers outside the actor (tests, the demo, later the
/// status call).
#[derive(Clone, Debug)]
pub struct Stats {
    pub node: NodeId,
    pub name: String,
    pub roster_version: u64,
    pub digest: FrontierDigest,
    pub frontier: Frontier,
    pub counters: Counters,
    /// Whole messages refused, by code.
    pub refused_messages: std::collections::BTreeMap<&'static str, u64>,
    pub held: usize,
    pub links: Vec<LinkSnapshot>,
}

#[derive(Clone, Debug)]
pub struct LinkSnapshot {
    pub peer: String,
    pub in_sync: bool,
    pub stats: Arc<LinkStats>,
}

/// What the actor shares with the rest of the node, and the channels it
/// publishes on.
pub(crate) struct Wiring {
    pub name: String,
    pub signer: SigningKey,
    pub batch_deltas_max: usize,
    pub batch_bytes_max: usize,
    /// Delta bytes in flight per link, at most (`core::pace`).
    pub window_bytes_max: usize,
    /// The TLS trust the listener and dialers use; replaced on adoption.
    pub trust: TrustStore,
    pub refusals: Arc<MessageRefusals>,
    /// Connections refused before or at authentication.
    pub conn_refusals: crate::node::net::ConnRefusals,
    /// The peers this node dials: name -> address.
    pub dialed: std::collections::BTreeMap<String, String>,
    pub stall_after_ms: u64,
    pub started_ms: u64,
    /// `reports.stale_after_secs`, in milliseconds.
    pub report_stale_after_ms: u64,
    pub clock: std::sync::Arc<dyn crate::node::Clock>,
    /// Set while a rebuild from peers is unfinished.
    pub rebuild: Option<crate::core::Rebuild>,
    /// The hop reports this node sends up and was sent (`node::hops`).
    pub hops: Arc<crate::node::hops::Board>,
}

pub(crate) struct Actor {
    replica: Replica<KvStore>,
    wiring: Wiring,
    links: BTreeMap<LinkId, Link>,
    next_link: LinkId,
    watchers: Vec<(String, mpsc::Sender<SignedDelta>)>,
    /// Published after every change, for links' admission and for waiters.
    frontier: watch::Sender<Arc<Frontier>>,
    /// Published on every roster adoption, for links' admission.
    roster: watch::Sender<Arc<Roster>>,
    /// What each peer confirmed, and its errors, across links.
    peers: Peers,
    /// False while the store fails: the health service says NOT_SERVING.
    health: watch::Sender<bool>,
    /// What the group of commands in progress applied.
    group: group::Group,
}

impl Actor {
    pub(crate) fn new(
        replica: Replica<KvStore>,
        wiring: Wiring,
        health: watch::Sender<bool>,
    ) -> (
        Actor,
        watch::Receiver<Arc<Frontier>>,
        watch::Receiver<Arc<Roster>>,
    ) {
        let (frontier, frontier_rx) = watch::channel(Arc::new(replica.frontier().clone()));
        let (roster, roster_rx) = watch::channel(Arc::new(replica.roster().clone()));
        let actor = Actor {
            replica,
            wiring,
            links: BTreeMap::new(),
            next_link: 1,
            watchers: Vec::new(),
            frontier,
            roster,
            peers: Peers::default(),
            health,
            group: group::Group::default(),
        };
        (actor, frontier_rx, roster_rx)
    }

    /// Runs until told to stop (or every sender is gone), then returns the
    /// replica so the caller can close the store. Every acknowledged write
    /// was already flushed before its reply was sent.
    ///
    /// Blocking: call it on a thread of its own (`spawn_blocking`). A commit
    /// waits for sled's flush; on an async worker that wait would stall the
    /// network tasks sharing the worker, on its own thread it overlaps with
    /// them (and with admission on the blocking pool).
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<Command>) -> Replica<KvStore> {
        while let Some(cmd) = commands.blocking_recv() {
            if !self.group_from(cmd, &mut commands) {
                break;
            }
        }
        self.finish()
    }

    /// Handles `first` and the commands already waiting behind it as one
    /// group (see `group.rs`); false once told to stop.
    fn group_from(&mut self, first: Command, commands: &mut mpsc::Receiver<Command>) -> bool {
        let mut going = self.step(first);
        for _ in 1..group::GROUP_COMMANDS_MAX {
            if !going || self.group.is_full() {
                break;
            }
            match commands.try_recv() {
                Ok(cmd) => going = self.step(cmd),
                Err(_) => break,
            }
        }
        self.end_group();
        going
    }

    /// [`Actor::run`] as a task on the runtime's own thread: for
    /// [`super::Blocking::Inline`], where commits are instant.
    pub(crate) async fn run_async(
        mut self,
        mut commands: mpsc::Receiver<Command>,
    ) -> Replica<KvStore> {
        while let Some(cmd) = commands.recv().await {
            if !self.group_from(cmd, &mut commands) {
                break;
            }
        }
        self.finish()
    }

    /// Handles one command; false once told to stop.
    fn step(&mut self, cmd: Command) -> bool {
        if let Command::Shutdown = cmd {
            return false;
        }
        self.handle(cmd);
        true
    }

    fn finish(mut self) -> Replica<KvStore> {
        self.end_group();
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
                bytes_max,
                reply,
            } => {
                let page = self
                    .replica
                    .list(&prefix, after.as_deref(), limit, bytes_max);
                let _ = reply.send(page.map_err(ApiError::from));
            }
            Command::Watch { prefix, tx } => self.watchers.push((prefix, tx)),
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status(self.wiring.clock.now_ms()));
            }
            Command::PeerError { name, text } => {
                self.peers.error(&name, text, self.wiring.clock.now_ms())
            }
            Command::PeerRefused { name, text } => {
                self.peers.refused(&name, text, self.wiring.clock.now_ms())
            }
            Command::Quarantine { limit, reply } => {
                let view = self.replica.store().quarantine(limit);
                let _ = reply.send(view.map_err(ApiError::from));
            }
            Command::PublishRoster { bytes, reply } => {
                let offer = self
                    .replica
                    .offer_roster(&bytes, self.wiring.clock.now_ms());
                if let Ok(RosterOffer::Adopted(change)) = &offer {
                    self.roster_adopted(change, None);
                }
                let _ = reply.send(offer.map_err(ApiError::from));
            }
            Command::LinkOpen {
                peer,
                out,
                room,
                stats,
                end,
                reply,
            } => self.handle_link_open(
                peer,
                LinkIo {
                    out,
                    room,
                    stats,
                    end,
                },
                reply,
            ),
            Command::LinkMsg { link, msg } => self.handle_link_msg(link, msg),
            Command::LinkDeltas {
                link,
                admitted,
                budget,
            } => {
                self.handle_link_deltas(link, admitted);
                drop(budget);
            }
            Command::LinkRoom { link } => self.pump(link),
            Command::LinkClosed { link } => {
                if let Some(l) = self.remove_link(link) {
                    tracing::info!(peer = %l.peer.name, "link closed");
                    if self.is_below_me(&l.peer.id) {
                        self.tell_hops();
                    }
                }
            }
            Command::AntiEntropy => self.handle_anti_entropy(),
            Command::HopsHeard => self.tell_hops(),
            Command::Report(cmd) => self.handle_report(cmd),
            Command::Shutdown => unreachable!("handled by run"),
        }
    }

    fn handle_write(&mut self, key: String, op: Op, value: Vec<u8>, reply: Reply<SignedDelta>) {
        // Report keys are written only by the report commands, after the
        // schema checks and with the supersede link.
        if crate::core::report::is_reserved(&key) {
            let why = format!(
                "{key} is a report key: reports are written with `fedsync report submit`, \
                 the schema with `fedsync report schema --publish`"
            );
            let _ = reply.send(Err(ApiError::BadRequest(why)));
            return;
        }
        if let Err(e) = self.write_guard() {
            let _ = reply.send(Err(e));
            return;
        }
        let result = self
            .replica
            .write(
                &self.wiring.signer,
                &key,
                op,
                value,
                self.wiring.clock.now_ms(),
            )
            .map_err(ApiError::from);
        self.after_write(result.as_ref());
        let _ = reply.send(result);
    }

    /// After a local write, before its reply: health follows the store, and
    /// an applied write goes to peers and watchers. Durable before anyone
    /// hears of it: the reply, the peers and the watchers all come after
    /// the commit.
    fn after_write(&mut self, outcome: Result<&SignedDelta, &ApiError>) {
        self.store_health(!matches!(outcome, Err(ApiError::Store(_))));
        if let Ok(d) = outcome {
            self.applied(std::slice::from_ref(d), None);
        }
    }

    /// Health follows the store: NOT_SERVING after a failed commit, back
    /// to SERVING after one succeeds.
    fn store_health(&self, ok: bool) {
        self.health
            .send_if_modified(|h| std::mem::replace(h, ok) != ok);
    }

    fn stats(&self) -> Stats {
        Stats {
            node: NodeId(self.wiring.signer.verifying_key().to_bytes()),
            name: self.wiring.name.clone(),
            roster_version: self.replica.roster().version,
            digest: self.replica.digest(),
            frontier: self.replica.frontier().clone(),
            counters: self.replica.counters().clone(),
            refused_messages: self.wiring.refusals.snapshot(),
            held: self.replica.held_len(),
            links: self
                .links
                .values()
                .map(|l| LinkSnapshot {
                    peer: l.peer.name.clone(),
                    in_sync: l.session.in_sync(&self.replica),
                    stats: l.stats.clone(),
                })
                .collect(),
        }
    }
}

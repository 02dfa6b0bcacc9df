//! The node runtime: wires the replica (core + sled store), the identity
//! and TLS configs, the gRPC services and the peer links together.
//!
//! ```text
//!   tonic Peer/Client services ─┐          ┌─ dialers (one per configured peer)
//!   link readers (admission) ───┼─ Command ─┤
//!   anti-entropy ticker ────────┘  (bounded)└─> Actor: Replica<KvStore>, sessions, watchers
//! ```
//!
//! One actor owns all mutable state; everything else sends it commands
//! over a bounded channel. A write is acknowledged only after the actor's
//! commit is flushed, so shutdown (which stops the actor between commands)
//! can lose nothing that was acknowledged.

mod actor;
pub mod admin;
mod dial;
pub mod env;
mod health;
mod link;
pub mod net;
mod quarantine;
pub mod service;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use actor::{LinkSnapshot, Stats};
pub use env::{Blocking, Clock, Env, Listener, Network};
pub use link::LinkStats;

use crate::config::NodeConfig;
use crate::core::{
    Frontier, Limits, NodeId, Op, Refusal, Replica, RosterOffer, SignedDelta, SignedRoster,
    WriteError,
};
use crate::identity::tls::{self, TlsIdentity, TrustStore};
use crate::identity::{read_roster, NodeKey};
use crate::rpc::pb;
use crate::store::{KvStore, QuarantineView, StoreError, StoreSizes};
use actor::{Actor, Command};
use link::LinkContext;

/// Commands queued to the actor before senders wait.
const ACTOR_QUEUE_MAX: usize = 256;
/// How long shutdown waits for open streams to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one request failed. Mapped to a gRPC status in one place
/// ([`service::status`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadRequest(String),
    #[error("no record {0:?}")]
    NotFound(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Unavailable(String),
    #[error("no authenticated peer on this connection")]
    Unauthenticated,
    #[error("{0}: certificate no longer trusted (revoked or rotated by a roster change)")]
    Revoked(String),
    #[error("{0}")]
    Exhausted(String),
}

impl From<WriteError<StoreError>> for ApiError {
    fn from(e: WriteError<StoreError>) -> Self {
        match e {
            WriteError::Refused(r) => ApiError::Refused(r),
            WriteError::Store(s) => ApiError::Store(s),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("node key: {0}")]
    Key(#[from] crate::identity::KeyFileError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Roster(#[from] crate::identity::RosterFileError),
    #[error("{0}")]
    Identity(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything a node runs from, loaded and cross-checked.
pub struct Setup {
    pub config: NodeConfig,
    pub key: NodeKey,
    pub tls: TlsIdentity,
    pub roster: SignedRoster,
    pub store: KvStore,
    /// Start a rebuild from peers (`run --rebuild`): the store was lost or
    /// found corrupt and starts empty. See [`actor::Rebuild`].
    pub rebuild: bool,
    /// Nodes that dial this one (it does not dial them) and so may hold
    /// its latest writes: a rebuild waits for them too.
    pub rebuild_from: Vec<String>,
}

impl Setup {
    /// Loads the key files, roster and store named by `config`. The roster
    /// file must be signed by the configured federation key; [`start_on`]
    /// checks that the roster in force (this file's or a newer one the
    /// store adopted) lists this node under its name, with this node key
    /// and this TLS certificate.
    pub fn load(config: NodeConfig) -> Result<Setup, StartError> {
        let store = KvStore::open(&config.data_dir, config.limits.quarantine_max)?;
        Setup::load_with(config, store)
    }

    /// [`Setup::load`] with a store the caller opened (the simulation's,
    /// on its own disk).
    pub fn load_with(config: NodeConfig, store: KvStore) -> Result<Setup, StartError> {
        let key = NodeKey::load(&config.identity.node_key)?;
        let tls = TlsIdentity::load(&config.identity.tls_cert, &config.identity.tls_key)?;
        let roster = read_roster(&config.federation.roster, &config.federation_id())?;
        Ok(Setup {
            config,
            key,
            tls,
            roster,
            store,
            rebuild: false,
            rebuild_from: Vec::new(),
        })
    }
}

fn check_identity(
    name: &str,
    key: &NodeKey,
    tls: &TlsIdentity,
    roster: &SignedRoster,
) -> Result<(), StartError> {
    let fail = |why: String| Err(StartError::Identity(why));
    let Some(me) = roster.roster().by_name(name) else {
        return fail(format!(
            "roster version {} has no member named {name:?}",
            roster.roster().version
        ));
    };
    if me.id != key.id() {
        return fail(format!(
            "the roster lists {name:?} with key {}, but the node key file holds {}",
            me.id.short(),
            key.id().short()
        ));
    }
    if !me.is_node() {
        return fail(format!("{name:?} is an operator in the roster, not a node"));
    }
    if me.tls != Some(tls.fingerprint().0) {
        return fail(format!(
            "the roster pins a different TLS certificate for {name:?} than the one configured (fingerprint {})",
            tls.fingerprint()
        ));
    }
    Ok(())
}

/// Who may connect, from the roster: each active member's pinned
/// certificate. Retired and revoked keys are refused at the handshake.
pub fn trust_from(roster: &crate::core::Roster) -> TrustStore {
    TrustStore::new(trust_entries(roster))
}

pub(crate) fn trust_entries(roster: &crate::core::Roster) -> Vec<(tls::Fingerprint, tls::Peer)> {
    roster
        .members()
        .filter(|m| m.is_active())
        .filter_map(|m| {
            let fp = tls::Fingerprint(m.tls?);
            let peer = tls::Peer {
                name: m.name.clone(),
                node: m.is_node().then_some(m.id),
            };
            Some((fp, peer))
        })
        .collect()
}

/// A running node.
pub struct NodeHandle {
    name: String,
    id: NodeId,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    actor: mpsc::Sender<Command>,
    frontier: watch::Receiver<Arc<Frontier>>,
    roster: watch::Receiver<Arc<crate::core::Roster>>,
    refused: Arc<net::RefusedCount>,
    sizes: StoreSizes,
    blocking: Blocking,
    shutdown: watch::Sender<bool>,
    health: tonic_health::server::HealthReporter,
    background: Vec<JoinHandle<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    actor_task: JoinHandle<Replica<KvStore>>,
}

/// Binds the configured address and starts the node.
pub async fn start(setup: Setup) -> Result<NodeHandle, StartError> {
    let addr = setup.config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    start_on(setup, listener)
}

/// Starts the node on a listener the caller bound (tests bind port 0).
pub fn start_on(setup: Setup, listener: TcpListener) -> Result<NodeHandle, StartError> {
    start_in(setup, Box::new(listener), Env::real())
}

/// Starts the node in `env`, accepting on `listener`: a process's machine,
/// or the simulation's.
pub fn start_in(
    setup: Setup,
    listener: Box<dyn Listener>,
    env: Env,
) -> Result<NodeHandle, StartError> {
    tls::install_crypto_provider();
    let now_ms = || env.clock.now_ms();
    let Setup {
        config,
        key,
        tls: identity,
        roster,
        store,
        rebuild,
        rebuild_from,
    } = setup;
    if rebuild {
        store.set_rebuilding(true)?;
    }
    let rebuilding = store.rebuilding()?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let limits: Limits = config.core_limits();
    let sizes = store.sizes();
    let (replica, stored_problem) = Replica::open_signed(store, roster, limits.clone(), now_ms())?;
    if let Some(e) = stored_problem {
        tracing::error!(error = %e, "the roster in the store does not verify; using the roster file");
    }
    let in_force = replica
        .signed_roster()
        .expect("opened with a signed roster");
    check_identity(&config.name, &key, &identity, in_force)?;
    let trust = trust_from(replica.roster());
    let server_tls = Arc::new(tls::server_config(&identity, &trust)?);
    let client_tls = Arc::new(tls::client_config(&identity, &trust)?);

    let refusals = Arc::new(link::MessageRefusals::default());
    let wiring = actor::Wiring {
        name: config.name.clone(),
        signer: key.signing_key().clone(),
        batch_deltas_max: config.sync.batch_deltas_max,
        batch_bytes_max: config.sync.batch_bytes_max,
        trust: trust.clone(),
        refusals: refusals.clone(),
        dialed: (config.peers.iter())
            .map(|p| (p.name.clone(), p.address.clone()))
            .collect(),
        stall_after_ms: config.sync.stall_after_secs.saturating_mul(1000),
        report_stale_after_ms: config.reports.stale_after_secs.saturating_mul(1000),
        started_ms: now_ms(),
        clock: env.clock.clone(),
        rebuild: rebuilding
            .then(|| actor::Rebuild::from_peers(&config, &rebuild_from, replica.roster())),
    };
    if let Some(r) = &wiring.rebuild {
        tracing::warn!(waiting_for = ?r.waiting_for, "rebuilding from peers: local writes wait until this node has synced with each");
    }
    let (store_ok, store_ok_rx) = watch::channel(true);
    let (actor, frontier, roster_rx) = Actor::new(replica, wiring, store_ok);
    let (actor_tx, actor_rx) = mpsc::channel(ACTOR_QUEUE_MAX);
    let actor_task = match env.blocking {
        Blocking::Threads => tokio::task::spawn_blocking(move || actor.run(actor_rx)),
        Blocking::Inline => tokio::spawn(actor.run_async(actor_rx)),
    };
    let (shutdown, _) = watch::channel(false);
    let ctx = LinkContext {
        actor: actor_tx.clone(),
        frontier: frontier.clone(),
        roster: roster_rx,
        limits: limits.clone(),
        queue_max: config.limits.link_queue_max,
        batch_deltas_max: config.limits.batch_deltas_max,
        refusals,
        clock: env.clock.clone(),
        blocking: env.blocking,
    };
    let message_max = config.limits.message_bytes_max;

    let refused = Arc::new(watch::channel(0).0);
    let conn_limits = net::ConnLimits {
        total: config.limits.links_max,
        per_peer: config.limits.conns_per_peer_max,
    };
    let (conns, accept_task) = net::incoming(
        listener,
        tokio_rustls::TlsAcceptor::from(server_tls),
        trust.clone(),
        conn_limits,
        refused.clone(),
    );
    let peer_svc = pb::peer_server::PeerServer::new(service::PeerService {
        ctx: ctx.clone(),
        trust: trust.clone(),
    })
    .max_decoding_message_size(message_max)
    .max_encoding_message_size(message_max);
    let client_svc = pb::client_server::ClientServer::new(service::ClientService {
        actor: actor_tx.clone(),
        key_len_max: limits.key_len_max,
        trust: trust.clone(),
        in_flight: service::InFlight::new(config.limits.requests_in_flight_max),
        sizes: sizes.clone(),
        blocking: env.blocking,
    })
    .max_decoding_message_size(message_max)
    .max_encoding_message_size(message_max);
    let (health, health_svc) = tonic_health::server::health_reporter();
    let health_task = health::follow(health.clone(), store_ok_rx, shutdown.subscribe());
    let reflection_svc = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::rpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the built-in descriptor sets are valid");
    let rpc_metrics = admin::RpcMetrics::default();
    let mut stop = shutdown.subscribe();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(admin::metrics::RpcTiming(rpc_metrics.clone()))
            .initial_stream_window_size(Some(window(message_max)))
            .initial_connection_window_size(Some(window(message_max)))
            .http2_keepalive_interval(Some(config.sync.keepalive()))
            .http2_keepalive_timeout(Some(config.sync.keepalive_timeout()))
            .trace_fn(|req| tracing::info_span!("rpc", method = %req.uri().path()))
            .add_service(peer_svc)
            .add_service(client_svc)
            .add_service(service::trusted(health_svc, trust.clone()))
            .add_service(service::trusted(reflection_svc, trust.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(conns),
                async move {
                    let _ = stop.changed().await;
                },
            ),
    );

    let mut background = vec![accept_task, health_task];
    let admin_addr = if config.admin.enabled {
        let listener = bind_now(config.admin.listen)?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.admin.listen,
            source,
        })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "admin port (metrics, status page) is open beyond loopback; it has no authentication");
        }
        let state = admin::Admin {
            actor: actor_tx.clone(),
            sizes: sizes.clone(),
            rpc: rpc_metrics,
            handshakes_refused: refused.clone(),
            blocking: env.blocking,
        };
        background.push(admin::serve(listener, state, shutdown.subscribe()));
        Some(addr)
    } else {
        None
    };
    background.push(tokio::spawn(anti_entropy(
        actor_tx.clone(),
        config.sync.anti_entropy(),
        shutdown.subscribe(),
    )));
    for peer in &config.peers {
        let dialer = dial::Dialer {
            ctx: ctx.clone(),
            peer: peer.clone(),
            tls: client_tls.clone(),
            trust: trust.clone(),
            sync: config.sync.clone(),
            message_bytes_max: message_max,
            net: env.net.clone(),
            seed: env.seed.map(|s| s ^ fnv(&peer.name)),
        };
        background.push(tokio::spawn(dialer.run(shutdown.subscribe())));
    }
    tracing::info!(name = %config.name, %addr, admin = ?admin_addr, peers = config.peers.len(), "node started");
    Ok(NodeHandle {
        name: config.name.clone(),
        id: key.id(),
        addr,
        admin_addr,
        actor: actor_tx,
        frontier,
        roster: ctx.roster.clone(),
        refused,
        sizes,
        blocking: env.blocking,
        shutdown,
        health,
        background,
        server,
        actor_task,
    })
}

/// Binds from synchronous code inside the runtime (`start_on` is not async).
fn bind_now(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = |source| StartError::Listen { addr, source };
    let std = std::net::TcpListener::bind(addr).map_err(listen)?;
    std.set_nonblocking(true).map_err(listen)?;
    TcpListener::from_std(std).map_err(listen)
}

/// The full status snapshot: the actor's part, then the store's sizes,
/// measured on a blocking thread so a large store never holds up the actor.
pub(crate) async fn status_snapshot(
    actor: &mpsc::Sender<Command>,
    sizes: &StoreSizes,
    blocking: Blocking,
) -> Result<status::NodeStatus, ApiError> {
    let (reply, rx) = oneshot::channel();
    actor
        .send(Command::Status { reply })
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    let mut s = rx.await.map_err(|_| ApiError::ShuttingDown)?;
    let sizes = sizes.clone();
    let (records, bytes) = blocking
        .run(move || (sizes.record_count(), sizes.size_on_disk()))
        .await
        .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
    s.totals.records = records as u64;
    s.totals.store_bytes = bytes?;
    Ok(s)
}

/// A stable hash of a name (FNV-1a), to give each of a node's dialers its
/// own jitter from one seed.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// HTTP/2 flow-control window: room for about two of the largest messages,
/// so a batch streams without waiting for window updates (h2's default of
/// 64 KiB would stall every batch several times), while a slow reader
/// still holds back a fast sender.
pub(crate) fn window(message_bytes_max: usize) -> u32 {
    (2 * message_bytes_max).min(i32::MAX as usize) as u32
}

async fn anti_entropy(
    actor: mpsc::Sender<Command>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; links open with a digest anyway
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if actor.send(Command::AntiEntropy).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

impl NodeHandle {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Where the admin HTTP port (metrics, status page) listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    async fn ask<T>(&self, make: impl FnOnce(actor::Reply<T>) -> Command) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.actor
            .send(make(reply))
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)?
    }

    /// Writes through the same path as the client service: durable on `Ok`.
    pub async fn write(&self, key: &str, op: Op, value: &[u8]) -> Result<SignedDelta, ApiError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.ask(|reply| Command::Write {
            key,
            op,
            value,
            reply,
        })
        .await
    }

    pub async fn get(&self, key: &str) -> Result<Option<SignedDelta>, ApiError> {
        let key = key.to_owned();
        self.ask(|reply| Command::Get { key, reply }).await
    }

    /// Live records under `prefix` (tombstones hidden), in key order after
    /// `after`, at most `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SignedDelta>, ApiError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.ask(|reply| Command::List {
            prefix,
            after,
            limit,
            reply,
        })
        .await
    }

    pub async fn stats(&self) -> Result<Stats, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.actor
            .send(Command::Stats { reply })
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)
    }

    /// The operator's view: peers, lag, stall, authors, totals.
    pub async fn status(&self) -> Result<status::NodeStatus, ApiError> {
        status_snapshot(&self.actor, &self.sizes, self.blocking).await
    }

    /// Offers a signed roster, as an operator's `roster publish` does.
    pub async fn publish_roster(&self, bytes: &[u8]) -> Result<RosterOffer, ApiError> {
        let bytes = bytes.to_vec();
        self.ask(|reply| Command::PublishRoster { bytes, reply })
            .await
    }

    /// The newest `limit` quarantine entries.
    pub async fn quarantine(&self, limit: usize) -> Result<QuarantineView, ApiError> {
        self.ask(|reply| Command::Quarantine { limit, reply }).await
    }

    /// Starts an anti-entropy round on every link now.
    pub async fn anti_entropy(&self) -> Result<(), ApiError> {
        self.actor
            .send(Command::AntiEntropy)
            .await
            .map_err(|_| ApiError::ShuttingDown)
    }

    /// The frontier, updated after every commit: await changes on it
    /// instead of polling.
    pub fn frontier(&self) -> watch::Receiver<Arc<Frontier>> {
        self.frontier.clone()
    }

    /// The roster in force, updated on every adoption.
    pub fn roster(&self) -> watch::Receiver<Arc<crate::core::Roster>> {
        self.roster.clone()
    }

    /// TLS handshakes this node refused (unknown or bad certificates).
    pub fn handshakes_refused(&self) -> watch::Receiver<u64> {
        self.refused.subscribe()
    }

    /// Waits until this node holds everything in `target` (every author at
    /// least up to `target`'s head), or `timeout` passes. Returns whether it
    /// got there.
    pub async fn wait_for(&self, target: &Frontier, timeout: Duration) -> bool {
        let mut rx = self.frontier.clone();
        let covered = |f: &Frontier| target.iter().all(|(a, h)| f.head(a).seq >= h.seq);
        tokio::time::timeout(timeout, rx.wait_for(|f| covered(f)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops dialling and accepting, ends every link, and closes the store.
    /// Acknowledged writes were durable when acknowledged; this only makes
    /// sure the store is closed cleanly and its lock released.
    pub async fn shutdown(self) -> Result<(), StartError> {
        // Health checkers hear first, while the server still answers.
        health::set(&self.health, false).await;
        let _ = self.shutdown.send(true);
        for task in &self.background {
            task.abort();
        }
        // Services and link tasks hold senders too, so the actor is told to
        // stop rather than left to notice every sender gone. Commands
        // queued before this one are handled first.
        let _ = self.actor.send(Command::Shutdown).await;
        let replica = self.actor_task.await.ok();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.server).await;
        if let Some(replica) = replica {
            replica.store().flush()?;
        }
        tracing::info!(name = %self.name, "node stopped");
        Ok(())
    }
}

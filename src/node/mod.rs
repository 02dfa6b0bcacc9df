//! The node runtime: the replica (core + sled store), the identity and TLS
//! configs, the gRPC services and the peer links, wired together in
//! `wiring.rs` from what `setup.rs` loads; [`NodeHandle`] is a running node.
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
pub mod hops;
mod link;
mod link_info;
pub mod net;
mod quarantine;
pub mod service;
mod setup;
pub mod status;
mod wiring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use actor::{LinkSnapshot, Stats};
pub use env::{Blocking, Clock, Env, Listener, Network};
pub use link_info::LinkStats;
pub(crate) use setup::trust_entries;
pub use setup::{trust_from, Setup};
pub use wiring::start_in;
pub(crate) use wiring::window;

use crate::core::{Frontier, NodeId, Op, Refusal, Replica, RosterOffer, SignedDelta, WriteError};
use crate::identity::tls;
use crate::store::{KvStore, QuarantineView, StoreError, StoreSizes};
use actor::Command;

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

/// A running node.
pub struct NodeHandle {
    name: String,
    id: NodeId,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    actor: mpsc::Sender<Command>,
    frontier: watch::Receiver<Arc<Frontier>>,
    roster: watch::Receiver<Arc<crate::core::Roster>>,
    conn_refusals: net::ConnRefusals,
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

/// The full status snapshot: the actor's part (counts kept by every
/// commit, so it costs the same at any size), then the store's bytes on
/// disk, measured on a blocking thread since that reads the file system.
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
    let bytes = blocking
        .run(move || sizes.size_on_disk())
        .await
        .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?;
    s.totals.store_bytes = bytes?;
    Ok(s)
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
        let page = self
            .ask(|reply| Command::List {
                prefix,
                after,
                limit,
                bytes_max: usize::MAX,
                reply,
            })
            .await?;
        Ok(page.records)
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
        self.conn_refusals.tls_refused()
    }

    /// Connections refused before or at authentication, by reason.
    pub fn connections_refused(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.conn_refusals.counts()
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

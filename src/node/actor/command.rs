//! The actor's mailbox: the commands the rest of the node sends it, each
//! handled by one `handle_*` method, and what a link hands it on opening.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{ReportCmd, Stats};
use crate::core::{Admitted, Op, Page, PeerMsg, RosterOffer, SignedDelta};
use crate::node::link_info::{EndSlot, LinkPeer, LinkStats};
use crate::node::ApiError;
use crate::store::QuarantineView;

pub(crate) type LinkId = u64;

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
        bytes_max: usize,
        reply: Reply<Page>,
    },
    Watch {
        prefix: String,
        tx: mpsc::Sender<SignedDelta>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    /// The operator's view; the bytes on disk are left at 0 for the caller.
    Status {
        reply: oneshot::Sender<crate::node::status::NodeStatus>,
    },
    /// A peer link failed to open or ended: the operator sees why.
    PeerError {
        name: String,
        text: String,
    },
    /// A member's connection was refused (by this node for its connection
    /// limit, or by the member when we dialled it): it shows as refused
    /// until a link with it opens.
    PeerRefused {
        name: String,
        text: String,
    },
    Quarantine {
        limit: usize,
        reply: Reply<QuarantineView>,
    },
    /// A signed roster an operator hands in: adopted if valid and newer.
    PublishRoster {
        bytes: Vec<u8>,
        reply: Reply<RosterOffer>,
    },
    LinkOpen {
        peer: LinkPeer,
        out: mpsc::Sender<PeerMsg>,
        room: Arc<AtomicBool>,
        stats: Arc<LinkStats>,
        end: EndSlot,
        reply: Reply<LinkId>,
    },
    LinkMsg {
        link: LinkId,
        msg: PeerMsg,
    },
    LinkDeltas {
        link: LinkId,
        admitted: Admitted,
        /// Its share of the node's ingest budget, given back once handled.
        budget: tokio::sync::OwnedSemaphorePermit,
    },
    LinkRoom {
        link: LinkId,
    },
    LinkClosed {
        link: LinkId,
    },
    AntiEntropy,
    /// A node below reported a hop that came, went or changed state.
    HopsHeard,
    /// HQ reports: submit, history, schema, aggregate, verify.
    Report(ReportCmd),
    /// Stop: drop every link (ending their streams) and return the replica.
    Shutdown,
}

/// What a link's tasks share with the actor's side of it.
pub(crate) struct LinkIo {
    pub out: mpsc::Sender<PeerMsg>,
    pub room: Arc<AtomicBool>,
    pub stats: Arc<LinkStats>,
    pub end: EndSlot,
}

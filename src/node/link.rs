//! The task side of one peer link, the same whichever end dialled: a
//! reader that turns the inbound stream into actor commands, and an
//! outbound stream that tonic drains as HTTP/2 flow control allows.
//!
//! Deltas are admitted (decoded, checked, batch-verified) here, on a
//! blocking thread, before the actor sees them: while the actor commits one
//! batch, the next is being verified. The actor still decides everything;
//! admission only saves it the CPU work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::{Stream, StreamExt};

use super::actor::{Command, LinkId};
use super::clock::now_ms;
use super::ApiError;
use crate::core::{Admission, Frontier, Limits, PeerMsg, Roster};
use crate::rpc::convert::Incoming;
use crate::rpc::pb;

/// Traffic on one link, counted at the protobuf layer (encoded message
/// sizes; TLS and HTTP/2 framing add a little).
#[derive(Debug, Default)]
pub struct LinkStats {
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// `InSync` replies received: completed idle checks.
    pub in_sync_received: AtomicU64,
}

impl LinkStats {
    fn sent(&self, len: usize) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
    }
    fn received(&self, len: usize) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// What every link task needs from its node.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub actor: mpsc::Sender<Command>,
    pub frontier: watch::Receiver<Arc<Frontier>>,
    pub roster: Roster,
    pub limits: Limits,
    /// Capacity of each link's outbound queue, in messages.
    pub queue_max: usize,
}

/// A link registered with the actor, ready to run.
pub(crate) struct OpenLink {
    pub id: LinkId,
    pub stats: Arc<LinkStats>,
}

/// What tonic sends on a link: drained as HTTP/2 flow control allows.
pub(crate) struct Outbound {
    id: LinkId,
    rx: mpsc::Receiver<PeerMsg>,
    room: Arc<AtomicBool>,
    actor: mpsc::Sender<Command>,
    stats: Arc<LinkStats>,
}

impl Stream for Outbound {
    type Item = pb::PeerMessage;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::PeerMessage>> {
        let msg = match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(m)) => m,
            std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        };
        if self.room.swap(false, Ordering::AcqRel) {
            // The actor found the queue full; there is room again now.
            let (actor, link) = (self.actor.clone(), self.id);
            tokio::spawn(async move { actor.send(Command::LinkRoom { link }).await });
        }
        let m = pb::PeerMessage::from(&msg);
        self.stats.sent(m.encoded_len());
        std::task::Poll::Ready(Some(m))
    }
}

/// Registers a link to `peer` with the actor. The actor queues the opening
/// digest at once, so sync starts as soon as tonic polls `outbound`.
pub(crate) async fn open(ctx: LinkContext, peer: String) -> Result<(OpenLink, Outbound), ApiError> {
    let (out, rx) = mpsc::channel(ctx.queue_max);
    let room = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LinkStats::default());
    let (reply, id) = oneshot::channel();
    let actor = ctx.actor.clone();
    actor
        .send(Command::LinkOpen {
            peer,
            out,
            room: room.clone(),
            stats: stats.clone(),
            reply,
        })
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    let id = id.await.map_err(|_| ApiError::ShuttingDown)?;
    let outbound = Outbound {
        id,
        rx,
        room,
        actor,
        stats: stats.clone(),
    };
    Ok((OpenLink { id, stats }, outbound))
}

/// Reads the peer's messages until the stream ends or breaks the protocol,
/// then tells the actor the link is gone.
pub(crate) async fn read<S, E>(ctx: LinkContext, link: OpenLink, peer: String, inbound: S) -> String
where
    S: Stream<Item = Result<pb::PeerMessage, E>> + Unpin,
    E: std::fmt::Display,
{
    let why = read_until_end(&ctx, &link, &peer, inbound).await;
    let _ = ctx.actor.send(Command::LinkClosed { link: link.id }).await;
    why
}

async fn read_until_end<S, E>(
    ctx: &LinkContext,
    link: &OpenLink,
    peer: &str,
    mut inbound: S,
) -> String
where
    S: Stream<Item = Result<pb::PeerMessage, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut admission = Some(Admission::new(ctx.roster.clone(), ctx.limits.clone()));
    loop {
        let msg = match inbound.next().await {
            None => return "peer closed the stream".into(),
            Some(Err(e)) => return format!("stream failed: {e}"),
            Some(Ok(m)) => m,
        };
        link.stats.received(msg.encoded_len());
        let cmd = match Incoming::try_from(msg) {
            Err(e) => return format!("protocol violation: {e}"),
            Ok(Incoming::Msg(m)) => {
                if matches!(m, PeerMsg::InSync(_)) {
                    link.stats.in_sync_received.fetch_add(1, Ordering::Relaxed);
                }
                Command::LinkMsg {
                    link: link.id,
                    msg: m,
                }
            }
            Ok(Incoming::Deltas(raw)) => {
                let known = ctx.frontier.borrow().clone();
                let mut a = admission.take().expect("returned after every batch");
                let job = tokio::task::spawn_blocking(move || {
                    let admitted = a.admit(raw.iter().map(Vec::as_slice), &known, now_ms());
                    (a, admitted)
                });
                let (a, admitted) = match job.await {
                    Ok(done) => done,
                    Err(e) => return format!("admission failed: {e}"),
                };
                admission = Some(a);
                Command::LinkDeltas {
                    link: link.id,
                    admitted,
                }
            }
        };
        if ctx.actor.send(cmd).await.is_err() {
            return format!("node shutting down (link to {peer})");
        }
    }
}

//! The task side of one peer link, the same whichever end dialled: a
//! reader that turns the inbound stream into actor commands, and an
//! outbound stream that tonic drains as HTTP/2 flow control allows.
//!
//! Deltas are admitted (decoded, checked, batch-verified) here, on a
//! blocking thread, before the actor sees them: while the actor commits one
//! batch, the next is being verified. The actor still decides everything;
//! admission only saves it the CPU work.
//!
//! - `outbound.rs`: the stream tonic sends, encoded for this peer;
//! - `admit.rs`: a received batch checked, unpacked and admitted;
//! - `pieces.rs`: large deltas cut into pieces and joined again;
//! - `ending.rs`: how a link ends (its watchdog, and which end ended it
//!   and why, in an operator's words).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::actor::{Command, LinkId};
use super::link_info::{EndSlot, LinkPeer, LinkStats, MessageRefusals};
use super::net::Line;
use super::ApiError;
use crate::core::staging::Staging;
use crate::core::{Frontier, Limits, PeerMsg, Roster};
use crate::rpc::convert::{self, Incoming};
use crate::rpc::{pack, pb};

mod admit;
mod ending;
mod outbound;
mod pieces;
use admit::{gather, Admitter, Batch, Stash};
use ending::{stream_failure, watch, Ending};
pub(crate) use outbound::Outbound;
use pieces::Announced;

/// What every link task needs from its node.
#[derive(Clone)]
pub(crate) struct LinkContext {
    pub actor: mpsc::Sender<Command>,
    pub frontier: watch::Receiver<Arc<Frontier>>,
    /// The roster in force: admission follows it as it changes.
    pub roster: watch::Receiver<Arc<Roster>>,
    pub limits: Limits,
    pub clock: Arc<dyn super::Clock>,
    pub blocking: super::Blocking,
    /// Capacity of each link's outbound queue, in messages.
    pub queue_max: usize,
    /// Deltas accepted in one received batch.
    pub batch_deltas_max: usize,
    pub refusals: Arc<MessageRefusals>,
    /// Bytes of received deltas being admitted or waiting for the actor,
    /// on every link together: what bounds the memory a catch-up (or many
    /// peers pushing at once) holds when the store is the slower part.
    pub ingest_budget: Arc<tokio::sync::Semaphore>,
    pub ingest_bytes_max: usize,
    /// What a received message may hold: a compressed batch unpacks to
    /// no more than an uncompressed one could carry.
    pub message_bytes_max: usize,
    /// Send compressed batches to peers that read them (`sync.compress`).
    pub compress: bool,
    /// `sync.lan_rtt_ms`: a link whose shortest round trip is below this
    /// is a LAN's, and its small batches go plain (`Outbound`).
    pub lan_rtt_ms: u64,
    /// `sync.keepalive_secs` and `sync.keepalive_timeout_secs`: the
    /// silence a link's watchdog allows before it allows for draining.
    pub keepalive: Duration,
    pub keepalive_timeout: Duration,
    /// `[[peers]] rate_kbit` in bytes per second, by peer name.
    pub rate_caps: Arc<BTreeMap<String, u64>>,
    /// Deltas received in part, from any link (`pieces.rs`).
    pub staging: Arc<Mutex<Staging>>,
    /// The hop reports this node sends up and was sent (`node::hops`).
    pub hops: Arc<crate::node::hops::Board>,
}

impl LinkContext {
    /// The cap this node keeps to, and asks for, on a link to `peer`
    /// (0: none).
    fn rate_cap(&self, peer: &str) -> u64 {
        self.rate_caps.get(peer).copied().unwrap_or(0)
    }
}

/// A link registered with the actor, ready to run.
pub(crate) struct OpenLink {
    pub id: LinkId,
    pub stats: Arc<LinkStats>,
    end: EndSlot,
    announced: Arc<Announced>,
}

/// Registers a link to `peer` with the actor. The actor queues the opening
/// digest at once, so sync starts as soon as tonic polls `outbound`.
pub(crate) async fn open(
    ctx: LinkContext,
    peer: LinkPeer,
) -> Result<(OpenLink, Outbound), ApiError> {
    let (out, rx) = mpsc::channel(ctx.queue_max);
    let room = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(LinkStats::default());
    let (reply, id) = oneshot::channel();
    let actor = ctx.actor.clone();
    let end = EndSlot::default();
    let name = peer.name.clone();
    actor
        .send(Command::LinkOpen {
            peer,
            out,
            room: room.clone(),
            stats: stats.clone(),
            end: end.clone(),
            reply,
        })
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    let id = id.await.map_err(|_| ApiError::ShuttingDown)??;
    let announced = Arc::new(Announced::default());
    let outbound = Outbound {
        asks: ctx.rate_cap(&name),
        lan_rtt_ms: ctx.lan_rtt_ms,
        announced: announced.clone(),
        staging: ctx.staging.clone(),
        hops: (name.clone(), ctx.hops.clone(), ctx.clock.clone()),
        hops_sent: None,
        pending: VecDeque::new(),
        context: pack::Context::default(),
        flush_first: false,
        opened: false,
        id,
        rx,
        room,
        actor,
        stats: stats.clone(),
        end: end.clone(),
    };
    let open = OpenLink {
        id,
        stats,
        end,
        announced,
    };
    Ok((open, outbound))
}

/// Waits for the peer's answer to the request that opens a link, under
/// the link's watchdog: a connection that goes silent between its TLS
/// handshake and the answer is cut (`Err` says why) as a silent link
/// would be. Without it, the attempt would wait for HTTP/2's backstop,
/// minutes in which the peer is neither linked nor probed again.
pub(crate) async fn answered<F: std::future::Future>(
    ctx: &LinkContext,
    link: &OpenLink,
    line: &Line,
    answer: F,
) -> Result<F::Output, String> {
    tokio::select! {
        answer = answer => Ok(answer),
        ending = watch(ctx, &link.stats, &line.alive) => Err(match ending {
            Ending::Closed(why) => why,
            Ending::Refused(_, status) => status.message().to_string(),
        }),
    }
}

/// Reads the peer's messages until the stream ends, breaks the protocol,
/// or the connection under it (`line`) stays silent too long; then tells
/// the actor the link is gone. A refused stream ends with a status saying
/// why, counted by code.
pub(crate) async fn read<S>(
    ctx: LinkContext,
    link: OpenLink,
    peer: String,
    inbound: S,
    line: Line,
) -> String
where
    S: Stream<Item = Result<pb::PeerMessage, Status>> + Unpin,
{
    let OpenLink {
        id,
        stats,
        end,
        announced,
    } = link;
    let cap = RateCap {
        ours: ctx.rate_cap(&peer),
        line: &line,
        stats: &stats,
    };
    cap.apply(0);
    let ending = tokio::select! {
        ending = read_until_end(&ctx, id, &stats, &peer, inbound, (&cap, &announced)) => ending,
        ending = watch(&ctx, &stats, &line.alive) => ending,
    };
    let why = match ending {
        Ending::Closed(why) => why,
        Ending::Refused(code, status) => {
            ctx.refusals.count(code);
            tracing::warn!(%peer, code, reason = status.message(), "peer stream refused");
            let why = format!("ended by this node, refused: {}", status.message());
            end.set(status);
            why
        }
    };
    let _ = ctx.actor.send(Command::LinkClosed { link: id }).await;
    why
}

async fn read_until_end<S>(
    ctx: &LinkContext,
    id: LinkId,
    stats: &LinkStats,
    peer: &str,
    mut inbound: S,
    (cap, announced): (&RateCap<'_>, &Announced),
) -> Ending
where
    S: Stream<Item = Result<pb::PeerMessage, Status>> + Unpin,
{
    let mut admitter = Admitter::new(ctx);
    let mut first_digest = true;
    // A message read while gathering batches that was not one.
    let mut stash: Stash = None;
    loop {
        let next = match stash.take() {
            Some(item) => item,
            None => inbound.next().await,
        };
        let msg = match next {
            None => return Ending::Closed("ended by the peer: it closed the stream".into()),
            Some(Err(e)) => return stream_failure(e),
            Some(Ok(m)) => m,
        };
        stats.received(msg.encoded_len());
        if let Some(pb::peer_message::Body::Digest(d)) = &msg.body {
            let packing = ctx.compress && convert::reads_packed(d);
            stats.packing.store(packing, Ordering::Relaxed);
            if std::mem::take(&mut first_digest) {
                // The link's terms: its first digest says them.
                cap.apply(d.rate_bytes_per_sec_max);
                announced.terms(d);
            }
            if let Err(ending) = announced.heard(d) {
                return ending;
            }
            if let Some(report) = &d.hops {
                match crate::node::hops::decode(report, ctx.clock.now_ms()) {
                    Ok(hops) => {
                        if ctx.hops.heard(peer, hops) {
                            // News for the node above: a full queue only
                            // leaves it to the next anti-entropy round.
                            let _ = ctx.actor.try_send(Command::HopsHeard);
                        }
                    }
                    Err(e) => {
                        let status = Status::invalid_argument(format!("protocol violation: {e}"));
                        return Ending::Refused("protocol_violation", status);
                    }
                }
            }
        }
        let batch = match Incoming::try_from(msg) {
            Err(e) => {
                let status = Status::invalid_argument(format!("protocol violation: {e}"));
                return Ending::Refused("protocol_violation", status);
            }
            Ok(Incoming::Msg(m)) => {
                if matches!(m, PeerMsg::InSync(_)) {
                    stats.in_sync_received.fetch_add(1, Ordering::Relaxed);
                }
                if ctx
                    .actor
                    .send(Command::LinkMsg { link: id, msg: m })
                    .await
                    .is_err()
                {
                    return Ending::Closed(format!("node shutting down (link to {peer})"));
                }
                continue;
            }
            Ok(Incoming::Deltas(raw)) => Batch::Plain(raw),
            Ok(Incoming::Packed {
                frame,
                raw_len,
                context_len,
            }) => Batch::Packed {
                frame,
                lens: (raw_len, context_len),
            },
            Ok(Incoming::Fragment(f)) => match pieces::join(ctx, f) {
                Ok(Some(delta)) => Batch::Plain(vec![delta]),
                Ok(None) => continue,
                Err(ending) => return ending,
            },
        };
        let mut batches = vec![batch];
        stash = gather(&mut inbound, stats, &mut batches, ctx.ingest_bytes_max);
        let (admitted, budget) = match admitter.admit(ctx, stats, batches).await {
            Ok(done) => done,
            Err(ending) => return ending,
        };
        let cmd = Command::LinkDeltas {
            link: id,
            admitted,
            budget,
        };
        if ctx.actor.send(cmd).await.is_err() {
            return Ending::Closed(format!("node shutting down (link to {peer})"));
        }
    }
}

/// The send cap of one link's connection.
struct RateCap<'a> {
    /// Ours for this peer (`[[peers]] rate_kbit`), 0 for none.
    ours: u64,
    line: &'a Line,
    stats: &'a LinkStats,
}

impl RateCap<'_> {
    /// Sends under the lower of our cap and `asked`, the one the peer's
    /// digest asked for (0: none). A peer may slow its own link, but not
    /// below [`RATE_KBIT_MIN`](crate::config::RATE_KBIT_MIN).
    fn apply(&self, asked: u64) {
        let floor = crate::config::kbit_bytes_per_sec(crate::config::RATE_KBIT_MIN);
        let asked = if asked == 0 { 0 } else { asked.max(floor) };
        let cap = match (self.ours, asked) {
            (0, c) | (c, 0) => c,
            (a, b) => a.min(b),
        };
        self.line.cap.set(cap);
        (self.stats.rate_cap_bytes_per_sec).store(cap, Ordering::Relaxed);
    }
}

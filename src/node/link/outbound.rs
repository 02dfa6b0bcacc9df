//! What tonic sends on a link: the actor's messages encoded for this peer
//! (batches compressed, large deltas in pieces, our digest with our rate
//! cap and what we hold in part), drained as HTTP/2 flow control allows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use super::pieces::Announced;
use super::{EndSlot, LinkStats};
use crate::core::staging::Staging;
use crate::core::PeerMsg;
use crate::node::actor::{Command, LinkId};
use crate::node::hops::{self, Board};
use crate::node::status::Hop;
use crate::node::Clock;
use crate::rpc::{convert, pack, pb};

/// What tonic sends on a link: drained as HTTP/2 flow control allows, and
/// ended with the reader's status when it refused the peer's stream.
pub(crate) struct Outbound {
    pub(super) id: LinkId,
    pub(super) rx: mpsc::Receiver<PeerMsg>,
    pub(super) room: Arc<AtomicBool>,
    pub(super) actor: mpsc::Sender<Command>,
    pub(super) stats: Arc<LinkStats>,
    pub(super) end: EndSlot,
    /// The cap asked of the peer in the link's first digest: the most
    /// this node wants to receive (`[[peers]] rate_kbit`, 0 for none).
    pub(super) asks: u64,
    /// `sync.lan_rtt_ms`.
    pub(super) lan_rtt_ms: u64,
    pub(super) announced: Arc<Announced>,
    pub(super) staging: Arc<Mutex<Staging>>,
    /// The peer's name, the node's hop reports and its clock: a digest to
    /// the node above carries the report when it changed.
    pub(super) hops: (String, Arc<Board>, Arc<dyn Clock>),
    /// The report this link last carried.
    pub(super) hops_sent: Option<Arc<Vec<Hop>>>,
    /// Messages of one batch cut into pieces, still to go, and whether
    /// tonic is to flush what it holds before the next.
    pub(super) pending: VecDeque<pb::PeerMessage>,
    /// What our frames on this link may refer to (`rpc::pack`).
    pub(super) context: pack::Context,
    pub(super) flush_first: bool,
    /// The first digest, with the link's terms, has gone.
    pub(super) opened: bool,
}

impl Outbound {
    /// `msg` on the wire, queued in `pending`: a batch compressed once the
    /// peer said it reads that (its digest comes first on every link, so
    /// all but the first batch or two are), unless the batch is small and
    /// the link a LAN's; its large deltas in pieces.
    fn encode(&mut self, msg: &PeerMsg) {
        let m = match msg {
            PeerMsg::Deltas(ds) => {
                let bytes: usize = ds.iter().map(|d| d.as_bytes().len()).sum();
                (self.stats.delta_bytes_sent).fetch_add(bytes as u64, Ordering::Relaxed);
                let zstd = self.stats.packing.load(Ordering::Relaxed);
                let chained = self.announced.reads_context();
                let follows = self.announced.reads_follows();
                let lan = self.lan();
                let context = &mut self.context;
                let batch = |ds: &[_]| match zstd && !(lan && pack::is_small(ds)) {
                    false => convert::pb_plain(ds),
                    true => convert::pb_packed(
                        ds,
                        pack::Terms {
                            context: chained.then_some(&mut *context),
                            follows,
                        },
                    ),
                };
                self.pending.extend(self.announced.encode(ds, zstd, batch));
                return;
            }
            PeerMsg::Digest { .. } => {
                let mut m = pb::PeerMessage::from(msg);
                if let Some(pb::peer_message::Body::Digest(d)) = &mut m.body {
                    if std::mem::replace(&mut self.opened, true) {
                        // The link's terms go in its first digest only:
                        // an idle check costs its bytes on every line. A
                        // release before "fragments" reads "zstd" from
                        // every digest, so that one stays.
                        d.features.retain(|f| f == pack::FEATURE);
                    } else {
                        d.rate_bytes_per_sec_max = self.asks;
                    }
                    let held = self
                        .staging
                        .lock()
                        .expect("staging lock poisoned")
                        .prefixes();
                    convert::set_staged(d, &held);
                    self.report_hops(d);
                }
                m
            }
            _ => pb::PeerMessage::from(msg),
        };
        self.pending.push_back(m);
    }

    /// Our hop report in `d`, a digest to the node above us, if it is
    /// new to this link.
    fn report_hops(&mut self, d: &mut pb::Digest) {
        let (peer, board, clock) = &self.hops;
        let Some(report) = board.report_for(peer) else {
            return;
        };
        if (self.hops_sent.as_ref()).is_some_and(|sent| Arc::ptr_eq(sent, &report)) {
            return;
        }
        d.hops = Some(hops::encode(&report, clock.now_ms()));
        self.hops_sent = Some(report);
    }

    /// Whether the link's round trip is a LAN's (`sync.lan_rtt_ms`).
    fn lan(&self) -> bool {
        let rtt = self.stats.rtt_min_ms.load(Ordering::Relaxed);
        rtt > 0 && rtt < self.lan_rtt_ms
    }

    /// `m` handed to tonic; after a batch or a piece, unless the link is a
    /// LAN's, whatever comes next goes in a chunk of its own.
    fn ready(
        &mut self,
        m: pb::PeerMessage,
    ) -> std::task::Poll<Option<Result<pb::PeerMessage, Status>>> {
        use pb::peer_message::Body;
        let batch = matches!(m.body, Some(Body::Deltas(_) | Body::Fragment(_)));
        self.flush_first = batch && !self.lan();
        self.stats.sent(m.encoded_len());
        std::task::Poll::Ready(Some(Ok(m)))
    }
}

impl Stream for Outbound {
    type Item = Result<pb::PeerMessage, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if std::mem::take(&mut self.flush_first) {
            // Pending, and polled again at once: tonic hands what it has
            // encoded so far to HTTP/2 as one chunk, and so each batch or
            // piece travels in frames of its own. Frames are read whole:
            // two batches in one 16 KiB frame would keep the first, and
            // its ack, until a 128 kbit/s line had carried the second
            // (a second with the line idle behind it, while the window
            // waits for that ack).
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        if let Some(m) = self.pending.pop_front() {
            return self.ready(m);
        }
        let msg = match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(m)) => m,
            std::task::Poll::Ready(None) => {
                // Whoever ended the link set its status before the actor
                // dropped the channel, so it is there now if there is one.
                return std::task::Poll::Ready(self.end.take().map(Err));
            }
            std::task::Poll::Pending => return std::task::Poll::Pending,
        };
        if self.room.swap(false, Ordering::AcqRel) {
            // The actor found the queue full; there is room again now.
            let (actor, link) = (self.actor.clone(), self.id);
            tokio::spawn(async move { actor.send(Command::LinkRoom { link }).await });
        }
        self.encode(&msg);
        let m = self
            .pending
            .pop_front()
            .expect("every message encodes to one or more");
        self.ready(m)
    }
}

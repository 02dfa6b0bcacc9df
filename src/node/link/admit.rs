//! A received batch on its way to the actor: checked against the limits,
//! unpacked if compressed, and admitted (decoded, checked, batch-verified)
//! on a blocking thread, within the node's ingest budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::Status;

use prost::Message;
use tokio_stream::Stream;

use super::ending::Ending;
use super::{LinkContext, LinkStats};
use crate::core::{Admission, Admitted, Roster};
use crate::rpc::convert::Incoming;
use crate::rpc::pack::{self, PackError};
use crate::rpc::pb;

/// A received batch, still as it came: plain deltas or one frame.
pub(super) enum Batch {
    Plain(Vec<Vec<u8>>),
    /// Its length unpacked, and the bytes of the link's context it refers
    /// to.
    Packed {
        frame: Vec<u8>,
        lens: (usize, usize),
    },
}

impl Batch {
    /// Refused before any work if it claims more than a batch may hold.
    fn check(&self, ctx: &LinkContext) -> Result<(), Ending> {
        let why = match self {
            Batch::Plain(raw) if raw.len() > ctx.batch_deltas_max => format!(
                "batch of {} deltas exceeds the limit of {}",
                raw.len(),
                ctx.batch_deltas_max
            ),
            Batch::Packed {
                lens: (raw_len, _), ..
            } if *raw_len > ctx.message_bytes_max => format!(
                "a compressed batch of {raw_len} bytes exceeds the message limit of {}",
                ctx.message_bytes_max
            ),
            _ => return Ok(()),
        };
        Err(Ending::Refused(
            "batch_too_large",
            Status::resource_exhausted(why),
        ))
    }

    /// What it will hold in memory once unpacked, at most.
    fn bytes(&self) -> usize {
        match self {
            Batch::Plain(raw) => raw.iter().map(Vec::len).sum(),
            Batch::Packed { lens, .. } => lens.0,
        }
    }

    fn unpack(
        self,
        context: &mut pack::Context,
        bytes_max: usize,
        count_max: usize,
    ) -> Result<Vec<Vec<u8>>, PackError> {
        match self {
            Batch::Plain(raw) => Ok(raw),
            Batch::Packed { frame, lens } => {
                pack::unpack(&frame, lens, context, bytes_max, count_max)
            }
        }
    }
}

/// Admission for one link, following the roster in force, and the link's
/// compression context as received. Both move to a blocking thread for
/// each batch and come back with the result, so batches unpack in order.
pub(super) struct Admitter {
    roster: watch::Receiver<Arc<Roster>>,
    admission: Option<(Admission, pack::Context)>,
}

impl Admitter {
    pub(super) fn new(ctx: &LinkContext) -> Admitter {
        let mut roster = ctx.roster.clone();
        let current = roster.borrow_and_update().as_ref().clone();
        Admitter {
            roster,
            admission: Some((
                Admission::new(current, ctx.limits.clone()),
                pack::Context::default(),
            )),
        }
    }

    /// Unpacks (if compressed) and admits `batches`, received in this
    /// order, as one, once the ingest budget has room for them; the
    /// budget's permit travels with the result.
    pub(super) async fn admit(
        &mut self,
        ctx: &LinkContext,
        stats: &LinkStats,
        batches: Vec<Batch>,
    ) -> Result<(Admitted, OwnedSemaphorePermit), Ending> {
        for b in &batches {
            b.check(ctx)?;
        }
        let bytes: usize = batches.iter().map(Batch::bytes).sum();
        let share = bytes.clamp(1, ctx.ingest_bytes_max) as u32;
        let Ok(budget) = ctx.ingest_budget.clone().acquire_many_owned(share).await else {
            return Err(Ending::Closed("node shutting down".into()));
        };
        let known = ctx.frontier.borrow().clone();
        let (mut a, mut context) = self.admission.take().expect("returned after every batch");
        if self.roster.has_changed().unwrap_or(false) {
            a.roster = self.roster.borrow_and_update().as_ref().clone();
        }
        let clock = ctx.clock.clone();
        let (bytes_max, count_max) = (ctx.message_bytes_max, ctx.batch_deltas_max);
        let job = ctx.blocking.run(move || {
            let count = batches.len();
            let mut raw = Vec::new();
            for batch in batches {
                match batch.unpack(&mut context, bytes_max, count_max) {
                    Ok(r) => raw.extend(r),
                    Err(e) => return ((a, context), Err(e)),
                }
            }
            let bytes = raw.iter().map(Vec::len).sum::<usize>();
            let mut admitted = a.admit(raw.iter().map(Vec::as_slice), &known, clock.now_ms());
            admitted.batches = count;
            ((a, context), Ok((admitted, bytes)))
        });
        let (state, admitted) = job
            .await
            .map_err(|e| Ending::Closed(format!("admission failed: {e}")))?;
        self.admission = Some(state);
        match admitted {
            Ok((admitted, bytes)) => {
                (stats.delta_bytes_received).fetch_add(bytes as u64, Ordering::Relaxed);
                Ok((admitted, budget))
            }
            Err(e) => {
                let status = Status::invalid_argument(format!("malformed batch: {e}"));
                Err(Ending::Refused("malformed_message", status))
            }
        }
    }
}

/// Raw bytes of batches admitted as one, at most: about 4,000 of the field's
/// deltas, so HQ's store writes a catch-up in commits of that size.
const GATHER_BYTES_MAX: usize = 2 << 20;
/// Batches admitted as one, at most. Each is acked on its own, so this also
/// bounds the acks one admission queues for the link (far below what the
/// link lets wait for a peer that reads), and with the limits of one batch
/// it bounds what a peer's batches of empty deltas make the node hold.
const GATHER_BATCHES_MAX: usize = 8;

/// Adds to `batches` the delta batches the connection has already
/// received, without waiting, while they stay within [`GATHER_BATCHES_MAX`]
/// and `bytes_max` (at most [`GATHER_BYTES_MAX`]). Each commit costs the
/// store its own log writes, and sled keeps more of a store written in
/// small commits as garbage (1.55x the deltas in commits of 1,000 against
/// 1.3x in commits of 10,000), so what a busy link queued goes to the
/// store as one commit. It never waits: a lone push is admitted at once.
/// Returns the first message read that it did not take (not a batch, a
/// malformed one, or one over the bound), to be handled next as it came.
pub(super) fn gather<S>(
    inbound: &mut S,
    stats: &LinkStats,
    batches: &mut Vec<Batch>,
    bytes_max: usize,
) -> Stash
where
    S: Stream<Item = Result<pb::PeerMessage, Status>> + Unpin,
{
    let bytes_max = bytes_max.min(GATHER_BYTES_MAX);
    let mut bytes: usize = batches.iter().map(Batch::bytes).sum();
    while batches.len() < GATHER_BATCHES_MAX {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let item = match std::pin::Pin::new(&mut *inbound).poll_next(&mut cx) {
            std::task::Poll::Pending => return None,
            std::task::Poll::Ready(item) => item,
        };
        let more = match &item {
            Some(Ok(pb::PeerMessage {
                body: Some(pb::peer_message::Body::Deltas(d)),
            })) => unpacked_len(d).filter(|n| bytes + n <= bytes_max),
            _ => None,
        };
        let Some(more) = more else {
            return Some(item);
        };
        let Some(Ok(msg)) = item else {
            return None; // matched above as a batch
        };
        stats.received(msg.encoded_len());
        let batch = match Incoming::try_from(msg) {
            Ok(Incoming::Deltas(raw)) => Batch::Plain(raw),
            Ok(Incoming::Packed {
                frame,
                raw_len,
                context_len,
            }) => Batch::Packed {
                frame,
                lens: (raw_len, context_len),
            },
            _ => return None, // a well-formed batch, checked above
        };
        bytes += more;
        batches.push(batch);
    }
    None
}

/// What a well-formed batch holds once unpacked (as [`Batch::bytes`]);
/// `None` for one that mixes plain deltas and a frame.
fn unpacked_len(d: &pb::Deltas) -> Option<usize> {
    match (d.deltas.is_empty(), d.zstd.is_empty()) {
        (_, true) => Some(d.deltas.iter().map(Vec::len).sum()),
        (true, false) => Some(d.zstd_len as usize),
        (false, false) => None,
    }
}

/// A message read ahead (the stream's next item, `None` its end), or none.
pub(super) type Stash = Option<Option<Result<pb::PeerMessage, Status>>>;

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn deltas(n: usize, len: usize) -> Result<pb::PeerMessage, Status> {
        let body = pb::peer_message::Body::Deltas(pb::Deltas {
            deltas: vec![vec![7; len]; n],
            ..Default::default()
        });
        Ok(pb::PeerMessage { body: Some(body) })
    }

    fn first() -> Vec<Batch> {
        vec![Batch::Plain(vec![vec![1; 100]])]
    }

    fn bytes(batches: &[Batch]) -> Vec<usize> {
        batches.iter().map(Batch::bytes).collect()
    }

    #[test]
    fn the_batches_already_received_are_gathered_up_to_anything_else() {
        let digest = pb::PeerMessage {
            body: Some(pb::peer_message::Body::InSync(Default::default())),
        };
        let mut inbound = tokio_stream::iter(vec![
            deltas(2, 100),
            deltas(3, 100),
            Ok(digest.clone()),
            deltas(1, 100),
        ]);
        let stats = LinkStats::default();
        let mut batches = first();
        let stash = gather(&mut inbound, &stats, &mut batches, MIB);
        assert_eq!(bytes(&batches), vec![100, 200, 300]);
        assert!(
            matches!(stash, Some(Some(Ok(m))) if m == digest),
            "the digest comes next"
        );
        assert_eq!(stats.messages_received.load(Ordering::Relaxed), 2);
        // The end of the stream is kept for the reader too.
        let mut ended = tokio_stream::iter(vec![deltas(1, 10)]);
        assert!(matches!(
            gather(&mut ended, &stats, &mut batches, MIB),
            Some(None)
        ));
    }

    #[test]
    fn gathering_never_waits_and_stops_at_its_bounds() {
        let stats = LinkStats::default();
        let mut quiet = tokio_stream::pending::<Result<pb::PeerMessage, Status>>();
        let mut batches = first();
        assert!(gather(&mut quiet, &stats, &mut batches, MIB).is_none());
        assert_eq!(batches.len(), 1);

        // Bytes: 2 MiB at most, and never past the ingest budget.
        let mut inbound = tokio_stream::iter((0..3).map(|_| deltas(1, MIB - 100)));
        let mut batches = first();
        let stash = gather(&mut inbound, &stats, &mut batches, usize::MAX);
        assert_eq!(batches.len(), 3, "two of almost 1 MiB after the first");
        assert!(
            matches!(stash, Some(Some(Ok(_)))),
            "the third waits for the next"
        );
        let mut inbound = tokio_stream::iter((0..3).map(|_| deltas(1, 1000)));
        let mut batches = first();
        gather(&mut inbound, &stats, &mut batches, 2100);
        assert_eq!(
            bytes(&batches),
            vec![100, 1000, 1000],
            "within a budget of 2,100"
        );

        // Batches: each is acked on its own, so a few at most, empty or not.
        let mut inbound = tokio_stream::iter((0..100).map(|_| deltas(0, 0)));
        let mut batches = first();
        assert!(gather(&mut inbound, &stats, &mut batches, MIB).is_none());
        assert_eq!(batches.len(), GATHER_BATCHES_MAX);
    }

    #[test]
    fn a_malformed_batch_is_left_for_the_reader_to_refuse_after_the_good_ones() {
        let mixed = pb::PeerMessage {
            body: Some(pb::peer_message::Body::Deltas(pb::Deltas {
                deltas: vec![vec![1]],
                zstd: vec![2],
                zstd_len: 1,
                ..Default::default()
            })),
        };
        let mut inbound = tokio_stream::iter(vec![deltas(1, 10), Ok(mixed.clone())]);
        let mut batches = first();
        let stash = gather(&mut inbound, &LinkStats::default(), &mut batches, MIB);
        assert_eq!(bytes(&batches), vec![100, 10]);
        assert!(matches!(stash, Some(Some(Ok(m))) if m == mixed));
    }
}

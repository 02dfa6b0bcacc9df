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
use super::violation;
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

/// Adds to `batches` the delta batches the connection has already
/// received, without waiting, up to [`GATHER_BYTES_MAX`]. Each commit costs
/// the store its own log writes, and sled keeps more of a store written in
/// small commits as garbage (1.55x the deltas in commits of 1,000 against
/// 1.3x in commits of 10,000), so what a busy link queued goes to the
/// store as one commit. It never waits: a lone push is admitted at once.
/// Returns the first message read that is not a delta batch, to be handled
/// next as it came.
pub(super) fn gather<S>(
    inbound: &mut S,
    stats: &LinkStats,
    batches: &mut Vec<Batch>,
) -> Result<Stash, Ending>
where
    S: Stream<Item = Result<pb::PeerMessage, Status>> + Unpin,
{
    let mut bytes: usize = batches.iter().map(Batch::bytes).sum();
    while bytes < GATHER_BYTES_MAX {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let msg = match std::pin::Pin::new(&mut *inbound).poll_next(&mut cx) {
            std::task::Poll::Pending => return Ok(None),
            std::task::Poll::Ready(Some(Ok(msg)))
                if matches!(msg.body, Some(pb::peer_message::Body::Deltas(_))) =>
            {
                msg
            }
            std::task::Poll::Ready(item) => return Ok(Some(item)),
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
            Ok(_) => return Err(violation("a batch that holds no deltas")),
            Err(e) => return Err(violation(e)),
        };
        bytes += batch.bytes();
        batches.push(batch);
    }
    Ok(None)
}

/// A message read ahead (the stream's next item, `None` its end), or none.
pub(super) type Stash = Option<Option<Result<pb::PeerMessage, Status>>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn deltas(n: usize, len: usize) -> Result<pb::PeerMessage, Status> {
        let body = pb::peer_message::Body::Deltas(pb::Deltas {
            deltas: vec![vec![7; len]; n],
            ..Default::default()
        });
        Ok(pb::PeerMessage { body: Some(body) })
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
        let mut batches = vec![Batch::Plain(vec![vec![1; 100]])];
        let stash = gather(&mut inbound, &stats, &mut batches).unwrap();
        assert_eq!(bytes(&batches), vec![100, 200, 300]);
        assert!(
            matches!(stash, Some(Some(Ok(m))) if m == digest),
            "the digest comes next"
        );
        assert_eq!(stats.messages_received.load(Ordering::Relaxed), 2);
        // The end of the stream is kept for the reader too.
        let mut ended = tokio_stream::iter(vec![deltas(1, 10)]);
        let stash = gather(&mut ended, &stats, &mut batches).unwrap();
        assert!(matches!(stash, Some(None)));
    }

    #[test]
    fn gathering_never_waits_and_stops_at_its_bytes() {
        let stats = LinkStats::default();
        let mut quiet = tokio_stream::pending::<Result<pb::PeerMessage, Status>>();
        let mut batches = vec![Batch::Plain(vec![vec![1; 10]])];
        assert!(gather(&mut quiet, &stats, &mut batches).unwrap().is_none());
        assert_eq!(batches.len(), 1);

        let mut inbound = tokio_stream::iter(vec![deltas(1, 1 << 20), deltas(1, 1 << 20)]);
        let mut batches = vec![Batch::Plain(vec![vec![1; 1 << 20]])];
        assert!(gather(&mut inbound, &stats, &mut batches)
            .unwrap()
            .is_none());
        assert_eq!(
            bytes(&batches),
            vec![1 << 20, 1 << 20],
            "2 MiB, and no more"
        );
        assert!(
            std::pin::Pin::new(&mut inbound).size_hint().0 == 1,
            "one left"
        );
    }

    #[test]
    fn a_malformed_batch_met_while_gathering_ends_the_link() {
        let mixed = pb::peer_message::Body::Deltas(pb::Deltas {
            deltas: vec![vec![1]],
            zstd: vec![2],
            zstd_len: 1,
            ..Default::default()
        });
        let mut inbound = tokio_stream::iter(vec![Ok(pb::PeerMessage { body: Some(mixed) })]);
        let mut batches = vec![Batch::Plain(vec![vec![1; 10]])];
        let ending = gather(&mut inbound, &LinkStats::default(), &mut batches);
        assert!(matches!(
            ending,
            Err(Ending::Refused("protocol_violation", _))
        ));
    }
}

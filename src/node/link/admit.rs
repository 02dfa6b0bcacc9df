//! A received batch on its way to the actor: checked against the limits,
//! unpacked if compressed, and admitted (decoded, checked, batch-verified)
//! on a blocking thread, within the node's ingest budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::Status;

use super::ending::Ending;
use super::{LinkContext, LinkStats};
use crate::core::{Admission, Admitted, Roster};
use crate::rpc::pack::{self, PackError};

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

    /// Unpacks (if compressed) and admits `batch` once the ingest budget
    /// has room for it; the budget's permit travels with the result.
    pub(super) async fn admit(
        &mut self,
        ctx: &LinkContext,
        stats: &LinkStats,
        batch: Batch,
    ) -> Result<(Admitted, OwnedSemaphorePermit), Ending> {
        batch.check(ctx)?;
        let share = batch.bytes().clamp(1, ctx.ingest_bytes_max) as u32;
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
            let raw = match batch.unpack(&mut context, bytes_max, count_max) {
                Ok(raw) => raw,
                Err(e) => return ((a, context), Err(e)),
            };
            let bytes = raw.iter().map(Vec::len).sum::<usize>();
            let admitted = a.admit(raw.iter().map(Vec::as_slice), &known, clock.now_ms());
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

//! Import: a bundle's deltas admitted into a replica exactly as a peer's
//! batches are, in durable batches.
//!
//! Two threads, as a node ingests from a link: one reads and verifies
//! chunks and runs admission (decode, roster, authority and limit checks,
//! batch signature verification) on each batch; the caller's thread
//! applies the previous batch through [`Replica::ingest_admitted`] and
//! flushes it. So every delta meets the checks a peer's would, refusals
//! are quarantined with origin `bundle:<exporter>`, and each batch is
//! durable before the next is applied: a run killed at any point has
//! stored whole batches only, and a second run counts them as duplicates.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;

use super::reader::{BundleError, BundleReader, Chunk, Verified};
use crate::core::{Admission, Admitted, NodeId, Replica, RosterOffer, Store};

#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// A batch closes at this many deltas, or at `batch_bytes`: each is
    /// one atomic commit and one flush.
    pub batch_deltas: usize,
    pub batch_bytes: usize,
    pub now_ms: u64,
}

impl ImportOptions {
    pub fn at(now_ms: u64) -> Self {
        ImportOptions {
            batch_deltas: 10_000,
            batch_bytes: 16 << 20,
            now_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError<E: std::error::Error> {
    #[error("store: {0}")]
    Store(E),
    /// The bundle was refused as a whole, before any of it was applied.
    #[error("bundle refused: {0}")]
    Refused(String),
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// The bundle's roster, offered before its deltas.
    pub roster: Option<RosterOffer>,
    pub applied: u64,
    /// Deltas this node already held.
    pub duplicates: u64,
    /// Refused deltas by reason code; each is in the quarantine.
    pub refused: BTreeMap<&'static str, u64>,
    /// Valid deltas left behind a gap (this node lacks earlier ones the
    /// bundle assumed it held): not stored.
    pub waiting: u64,
    pub batches: u64,
    /// What of the bundle verified.
    pub verified: Verified,
    /// Where reading stopped early, if it did: everything before it was
    /// imported.
    pub error: Option<BundleError>,
    /// Authors whose deltas the bundle starts after this node's head:
    /// (author, this node's seq, the bundle's base seq).
    pub gaps: Vec<(NodeId, u64, u64)>,
    /// The node now holds at least the bundle's resulting frontier.
    pub reached: bool,
}

impl Imported {
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

enum Step {
    Batch(Admitted),
    End(Option<BundleError>, Verified),
}

/// Imports what `reader` verifies into `replica`. A damaged or truncated
/// bundle imports its verified prefix and reports where it stopped in
/// [`Imported::error`]; only the store failing is an `Err` once deltas
/// are flowing.
pub fn import<S: Store, R: Read + Send>(
    replica: &mut Replica<S>,
    reader: BundleReader<R>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError<S::Error>> {
    let header = reader.header().clone();
    let mut out = Imported::default();
    let now_ms = opts.now_ms;
    if let Some(roster) = &header.roster {
        let offer = replica
            .offer_roster(roster, now_ms)
            .map_err(ImportError::Store)?;
        out.roster = Some(offer);
    }
    // A bundle comes from a member as a link does: one the roster in
    // force (the bundle's own, if it was newer) lets connect.
    match replica.roster().member(&header.exporter) {
        Some(m) if m.is_node() && m.is_active() => {}
        Some(m) => {
            return Err(ImportError::Refused(format!(
                "its exporter {:?} ({}) is {} in the roster in force",
                m.name,
                header.exporter.short(),
                m.standing.describe()
            )))
        }
        None => {
            return Err(ImportError::Refused(format!(
                "its exporter {:?} ({}) is not in the roster in force",
                header.exporter_name,
                header.exporter.short()
            )))
        }
    }
    for (author, head) in header.base.iter() {
        let ours = replica.frontier().head(author).seq;
        if ours < head.seq && header.result.head(author).seq > head.seq {
            out.gaps.push((*author, ours, head.seq));
        }
    }
    let origin = format!("bundle:{}", header.exporter_name);
    let mut admission = Admission::new(replica.roster().clone(), replica.limits().clone());
    let known = replica.frontier().clone();
    let (tx, rx) = mpsc::sync_channel::<Step>(2);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut reader = reader;
            let mut pending: Vec<Chunk> = Vec::new();
            let (mut n, mut bytes) = (0usize, 0u64);
            let end = loop {
                let (chunk, end) = match reader.next_chunk() {
                    Ok(Some(c)) => (Some(c), None),
                    Ok(None) => (None, Some(None)),
                    Err(e) => (None, Some(Some(e))),
                };
                if let Some(c) = chunk {
                    n += c.len();
                    bytes += c.delta_bytes();
                    pending.push(c);
                }
                let full = n >= opts.batch_deltas || bytes >= opts.batch_bytes as u64;
                if (full || end.is_some()) && !pending.is_empty() {
                    let raw = pending.iter().flat_map(Chunk::deltas);
                    let admitted = admission.admit(raw, &known, now_ms);
                    if tx.send(Step::Batch(admitted)).is_err() {
                        return;
                    }
                    pending.clear();
                    (n, bytes) = (0, 0);
                }
                if let Some(end) = end {
                    break end;
                }
            };
            let _ = tx.send(Step::End(end, reader.verified()));
        });
        for step in rx {
            match step {
                Step::Batch(admitted) => {
                    let report = replica
                        .ingest_admitted(admitted, &origin, now_ms)
                        .map_err(ImportError::Store)?;
                    replica.sync().map_err(ImportError::Store)?;
                    out.batches += 1;
                    out.applied += report.applied.len() as u64;
                    out.duplicates += report.duplicates as u64;
                    // Logged once durable: what a run killed now keeps.
                    tracing::info!(
                        batch = out.batches,
                        applied = out.applied,
                        duplicates = out.duplicates,
                        "bundle batch committed"
                    );
                    for r in &report.refused {
                        *out.refused.entry(r.code()).or_default() += 1;
                    }
                }
                Step::End(error, verified) => {
                    out.error = error;
                    out.verified = verified;
                }
            }
        }
        Ok::<(), ImportError<S::Error>>(())
    })?;
    out.waiting = replica.held_len() as u64;
    out.reached = (header.result.iter()).all(|(a, h)| replica.frontier().head(a).seq >= h.seq);
    Ok(out)
}

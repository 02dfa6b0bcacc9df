//! Import: a bundle's deltas admitted into a replica exactly as a peer's
//! batches are, in durable batches.
//!
//! Two threads, as a node ingests from a link: one reads and verifies
//! chunks and runs admission (decode, roster, authority and limit checks,
//! batch signature verification) on each batch; the caller's thread
//! applies the previous piece through [`Replica::ingest_admitted`], a
//! lazy commit, and flushes once per group of pieces (group commit, as a
//! node does with its peers' batches). So every delta meets the checks a
//! peer's would, refusals are quarantined with origin `bundle:<exporter>`,
//! and a run killed at any point has lost at most the pieces after its
//! last flush, each whole (the store loses lazy commits whole, never part
//! of one); a second run counts what was stored as duplicates.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;

use super::reader::{BundleError, BundleReader, Verified};
use crate::core::{Admission, Admitted, NodeId, Replica, RosterOffer, Store};

#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Deltas admitted and applied at a time, at most: the size of a
    /// peer's batch, which keeps both threads busy (a few large pieces
    /// leave one thread idle while the pipeline fills and drains).
    pub piece_deltas: usize,
    /// A flush follows once this many deltas, or `flush_bytes` of them,
    /// were applied since the last: the pieces in between are one group
    /// commit, durable together.
    pub flush_deltas: usize,
    pub flush_bytes: usize,
    pub now_ms: u64,
}

impl ImportOptions {
    pub fn at(now_ms: u64) -> Self {
        ImportOptions {
            piece_deltas: 1_000,
            flush_deltas: 10_000,
            flush_bytes: 16 << 20,
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
    /// What of the bundle verified.
    pub verified: Verified,
    /// Flushes: each made everything applied before it durable.
    pub flushes: u64,
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
    Piece(Admitted, u64),
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
            let end = loop {
                let chunk = match reader.next_chunk() {
                    Ok(Some(c)) => c,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                };
                let step = opts.piece_deltas.max(1);
                for first in (0..chunk.len()).step_by(step) {
                    let range = first..chunk.len().min(first + step);
                    let bytes = chunk.deltas_in(range.clone()).map(|d| d.len() as u64).sum();
                    let admitted = admission.admit(chunk.deltas_in(range), &known, now_ms);
                    if tx.send(Step::Piece(admitted, bytes)).is_err() {
                        return;
                    }
                }
            };
            let _ = tx.send(Step::End(end, reader.verified()));
        });
        let (mut unflushed, mut unflushed_bytes) = (0usize, 0u64);
        for step in rx {
            match step {
                Step::Piece(admitted, bytes) => {
                    unflushed += admitted.len();
                    unflushed_bytes += bytes;
                    let report = replica
                        .ingest_admitted(admitted, &origin, now_ms)
                        .map_err(ImportError::Store)?;
                    out.applied += report.applied.len() as u64;
                    out.duplicates += report.duplicates as u64;
                    for r in &report.refused {
                        *out.refused.entry(r.code()).or_default() += 1;
                    }
                    if unflushed >= opts.flush_deltas || unflushed_bytes >= opts.flush_bytes as u64
                    {
                        flush(replica, &mut out)?;
                        (unflushed, unflushed_bytes) = (0, 0);
                    }
                }
                Step::End(error, verified) => {
                    out.error = error;
                    out.verified = verified;
                }
            }
        }
        flush(replica, &mut out)?;
        Ok::<(), ImportError<S::Error>>(())
    })?;
    out.waiting = replica.held_len() as u64;
    out.reached = (header.result.iter()).all(|(a, h)| replica.frontier().head(a).seq >= h.seq);
    Ok(out)
}

/// Makes every piece applied so far durable.
fn flush<S: Store>(
    replica: &mut Replica<S>,
    out: &mut Imported,
) -> Result<(), ImportError<S::Error>> {
    replica.sync().map_err(ImportError::Store)?;
    out.flushes += 1;
    // Logged once durable: what a run killed now keeps.
    tracing::info!(
        flushes = out.flushes,
        applied = out.applied,
        duplicates = out.duplicates,
        "bundle batch committed"
    );
    Ok(())
}

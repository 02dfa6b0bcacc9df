//! Export: the deltas a store holds beyond a base frontier, read in
//! bounded batches and written as one bundle.

use std::io::Write;
use std::sync::mpsc;

use ed25519_dalek::SigningKey;

use super::format::Header;
use super::writer::{BundleWriter, WriteError, Written};
use crate::core::{Frontier, NodeId, SeqRange, SignedDelta, Store};

/// Deltas and bytes read from the store per step: what the export holds
/// in memory besides the chunk being filled.
const READ_DELTAS_MAX: usize = 4_096;
const READ_BYTES_MAX: usize = 8 << 20;

/// What to export, and as whom.
pub struct ExportRequest<'a> {
    /// The exporting node's key: it signs header, chunks and trailer.
    pub key: &'a SigningKey,
    pub name: &'a str,
    /// What the importer is taken to hold already (empty: everything).
    pub base: Frontier,
    /// The signed roster in force at the exporter, to carry along.
    pub roster: Option<Vec<u8>>,
    pub created_ms: u64,
    pub part_bytes: u64,
    /// Uncompressed bytes at which a chunk closes.
    pub chunk_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError<E: std::error::Error> {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Store(E),
    #[error("the store's log of {author} ends before seq {seq}, which its frontier says it holds")]
    Missing { author: String, seq: u64 },
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    pub header: Header,
    pub written: Written,
    /// Authors with deltas in the bundle.
    pub authors: usize,
}

/// Writes to `out` every delta `store` holds beyond `req.base`, per
/// author in id order and each author's in sequence order: the order an
/// importer can apply without holding anything back.
///
/// Two threads: one reads the store (sealed chunks decompressed, deltas
/// decoded), the caller's compresses, hashes, signs and writes, so the
/// two zstd passes run side by side.
pub fn export<S, W>(
    store: &S,
    req: ExportRequest<'_>,
    out: W,
) -> Result<(W, Exported), ExportError<S::Error>>
where
    S: Store + Sync,
    S::Error: Send,
    W: Write,
{
    let result = store.load_frontier().map_err(ExportError::Store)?;
    let ranges = result.missing_in(&req.base);
    let header = Header {
        exporter: NodeId(req.key.verifying_key().to_bytes()),
        exporter_name: req.name.to_owned(),
        created_ms: req.created_ms,
        part_bytes: req.part_bytes,
        delta_count: ranges.iter().map(SeqRange::len).sum(),
        base: req.base,
        result,
        roster: req.roster,
    };
    let mut w = BundleWriter::new(out, &header, req.key, req.chunk_bytes)?;
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<SignedDelta>, ExportError<S::Error>>>(4);
    let ranges_ref = &ranges;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for range in ranges_ref {
                if let Err(e) = read_range(store, range, &tx) {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        for batch in rx {
            for d in batch? {
                w.push(d.as_bytes())?;
            }
        }
        Ok::<(), ExportError<S::Error>>(())
    })?;
    let (out, written) = w.finish()?;
    Ok((
        out,
        Exported {
            header,
            written,
            authors: ranges.len(),
        },
    ))
}

type Batches<E> = mpsc::SyncSender<Result<Vec<SignedDelta>, ExportError<E>>>;

/// Sends `range` in bounded batches; stops quietly if the writer is gone.
fn read_range<S: Store>(
    store: &S,
    range: &SeqRange,
    tx: &Batches<S::Error>,
) -> Result<(), ExportError<S::Error>> {
    let mut next = range.first;
    while next <= range.last {
        let step = SeqRange {
            first: next,
            ..*range
        };
        let mut batch = store
            .deltas(step, READ_DELTAS_MAX, READ_BYTES_MAX)
            .map_err(ExportError::Store)?;
        // The store hands back its log in order from `next`: anything
        // else would make a bundle whose header lies.
        let run = batch
            .iter()
            .zip(next..=range.last)
            .take_while(|(d, seq)| d.seq() == *seq)
            .count();
        if run == 0 {
            return Err(ExportError::Missing {
                author: range.author.short(),
                seq: next,
            });
        }
        batch.truncate(run);
        next += run as u64;
        if tx.send(Ok(batch)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

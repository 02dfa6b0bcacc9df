//! Export: the deltas a store holds beyond a base frontier, read in
//! bounded batches and written as one bundle.

use std::io::Write;

use ed25519_dalek::SigningKey;

use super::format::Header;
use super::writer::{BundleWriter, WriteError, Written};
use crate::core::{Frontier, NodeId, SeqRange, Store};

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
pub fn export<S: Store, W: Write>(
    store: &S,
    req: ExportRequest<'_>,
    out: W,
) -> Result<(W, Exported), ExportError<S::Error>> {
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
    for range in &ranges {
        let mut next = range.first;
        while next <= range.last {
            let step = SeqRange {
                first: next,
                ..*range
            };
            let batch = store
                .deltas(step, READ_DELTAS_MAX, READ_BYTES_MAX)
                .map_err(ExportError::Store)?;
            // The store hands back its log in order from `next`: anything
            // else would make a bundle whose header lies.
            if batch.first().map(|d| d.seq()) != Some(next) {
                return Err(ExportError::Missing {
                    author: range.author.short(),
                    seq: next,
                });
            }
            for d in batch {
                if d.seq() != next || d.seq() > range.last {
                    break;
                }
                w.push(d.as_bytes())?;
                next += 1;
            }
        }
    }
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

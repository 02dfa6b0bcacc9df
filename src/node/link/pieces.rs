//! Large deltas in pieces on one link (`rpc::fragment`): the outbound side
//! cuts them, starting after what the peer said it holds, and the reader
//! joins what arrives in the node's staging (`core::staging`), shared by
//! every link, so a delta resumes where the last connection left it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tonic::Status;

use super::ending::Ending;
use super::LinkContext;
use crate::core::delta::hash_of;
use crate::core::staging::{Offer, Piece};
use crate::core::{DeltaHash, SignedDelta};
use crate::rpc::fragment::{self, FragmentIn};
use crate::rpc::{convert, pb};

/// What the peer's latest digest announced, for the outbound stream.
#[derive(Debug, Default)]
pub(super) struct Announced {
    /// It reads pieces.
    fragments: AtomicBool,
    /// It reads frames after their context (`rpc::pack`).
    context: AtomicBool,
    /// It reads entries that follow the one before them (`rpc::pack`).
    follows: AtomicBool,
    /// The deltas it holds in part, and how many bytes of each.
    staged: Mutex<HashMap<DeltaHash, u64>>,
}

impl Announced {
    /// What the peer reads (pieces, frames after their context), from its
    /// first digest.
    pub(super) fn terms(&self, d: &pb::Digest) {
        (self.fragments).store(convert::reads_fragments(d), Ordering::Relaxed);
        (self.context).store(convert::reads_context(d), Ordering::Relaxed);
        (self.follows).store(convert::reads_follows(d), Ordering::Relaxed);
    }

    pub(super) fn reads_context(&self) -> bool {
        self.context.load(Ordering::Relaxed)
    }

    pub(super) fn reads_follows(&self) -> bool {
        self.follows.load(Ordering::Relaxed)
    }

    /// Takes in what `d`, the peer's digest, says it holds in part.
    pub(super) fn heard(&self, d: &pb::Digest) -> Result<(), Ending> {
        let staged = convert::staged(d).map_err(|e| {
            let status = Status::invalid_argument(format!("protocol violation: {e}"));
            Ending::Refused("protocol_violation", status)
        })?;
        *self.staged.lock().expect("staged lock poisoned") = staged.into_iter().collect();
        Ok(())
    }

    /// `ds` as messages: runs of deltas as batches (`batch` encodes one),
    /// and each large delta in pieces to a peer that reads them.
    pub(super) fn encode(
        &self,
        ds: &[SignedDelta],
        zstd: bool,
        mut batch: impl FnMut(&[SignedDelta]) -> pb::PeerMessage,
    ) -> Vec<pb::PeerMessage> {
        if !self.fragments.load(Ordering::Relaxed) {
            return vec![batch(ds)];
        }
        let mut out = Vec::new();
        let mut run = 0;
        for (i, d) in ds.iter().enumerate() {
            if d.as_bytes().len() <= fragment::FRAGMENT_ABOVE {
                continue;
            }
            if run < i {
                out.push(batch(&ds[run..i]));
            }
            run = i + 1;
            // A prefix is used once: if these pieces are lost too, the
            // peer's next digest says what it holds then.
            let held = self
                .staged
                .lock()
                .expect("staged lock poisoned")
                .remove(&d.hash());
            if let Some(from) = held {
                let len = d.as_bytes().len();
                tracing::debug!(hash = %d.hash(), from, len, "resuming a delta the peer holds in part");
            }
            out.extend(fragment::pieces(d, held.unwrap_or(0), zstd));
        }
        if run < ds.len() {
            out.push(batch(&ds[run..]));
        }
        out
    }
}

/// Adds a received piece to the node's staging: `Some` with the delta's
/// bytes once it is whole and hashes to what its pieces said.
pub(super) fn join(ctx: &LinkContext, f: FragmentIn) -> Result<Option<Vec<u8>>, Ending> {
    let refuse = |why: String| {
        let status = Status::invalid_argument(format!("malformed fragment: {why}"));
        Ending::Refused("malformed_message", status)
    };
    let (hash, total_len, offset) = (f.hash, f.total_len, f.offset);
    let data = f
        .data(ctx.message_bytes_max)
        .map_err(|e| refuse(e.to_string()))?;
    let piece = Piece {
        hash,
        total_len,
        offset,
        data: &data,
    };
    let offer = ctx
        .staging
        .lock()
        .expect("staging lock poisoned")
        .offer(piece);
    match offer {
        Offer::Partial => Ok(None),
        Offer::Gap => {
            tracing::debug!(%hash, offset, "a piece past what is held: the delta comes again");
            Ok(None)
        }
        Offer::Refused(why) => Err(refuse(why)),
        Offer::Whole(bytes) if hash_of(&bytes) == Some(hash) => Ok(Some(bytes)),
        Offer::Whole(_) => Err(refuse(format!(
            "the pieces of delta {hash} do not hash to it"
        ))),
    }
}

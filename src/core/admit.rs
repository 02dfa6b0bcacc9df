//! Admission: the stateless half of ingest. Decoding, the limit, roster and
//! authority checks, and batch signature verification need no store and no
//! replica state, so a node can run them on another core while the
//! replica commits the previous batch (see `benches/ingest.rs`).

use super::delta::SignedDelta;
use super::frontier::Frontier;
use super::roster::Roster;
use super::validate::{check_admissible, Limits, Refusal};
use super::verify::KeyCache;

/// A batch after admission: deltas in arrival order, each with whether its
/// signature was verified, and what was refused outright.
#[derive(Debug, Default)]
pub struct Admitted {
    pub(crate) deltas: Vec<(SignedDelta, Verdict)>,
    pub(crate) refused: Vec<(Refusal, Vec<u8>)>,
    /// The batches it came in, each of which the peer expects an `Ack`
    /// for (a link admits batches that arrived together as one).
    pub(crate) batches: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The signature verifies.
    Valid,
    /// Looked like a duplicate, so verification was skipped; the replica
    /// verifies it if it turns out not to be one.
    Unchecked,
}

impl Admitted {
    /// Deltas not yet known to be valid or refused.
    pub fn unverified(deltas: Vec<SignedDelta>) -> Self {
        Admitted {
            deltas: deltas
                .into_iter()
                .map(|d| (d, Verdict::Unchecked))
                .collect(),
            refused: Vec::new(),
            batches: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.deltas.len() + self.refused.len()
    }

    /// Author and sequence number of every delta that decoded and passed
    /// admission (not the refused ones).
    pub fn positions(&self) -> impl Iterator<Item = (crate::core::NodeId, u64)> + '_ {
        self.deltas.iter().map(|(d, _)| (d.author(), d.seq()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What admission needs: the replica's roster and limits (cloned for another
/// thread) and a cache of parsed author keys.
pub struct Admission {
    pub roster: Roster,
    pub limits: Limits,
    pub keys: KeyCache,
}

impl Admission {
    pub fn new(roster: Roster, limits: Limits) -> Self {
        Admission {
            roster,
            limits,
            keys: KeyCache::default(),
        }
    }

    /// Decodes, checks and batch-verifies `raw`. `known` (the receiver's
    /// frontier, possibly slightly stale) only lets likely duplicates skip
    /// verification; the replica decides for certain.
    pub fn admit<'a>(
        &mut self,
        raw: impl IntoIterator<Item = &'a [u8]>,
        known: &Frontier,
        now_ms: u64,
    ) -> Admitted {
        let mut out = Admitted {
            batches: 1,
            ..Admitted::default()
        };
        let mut candidates = Vec::new();
        for bytes in raw {
            let d = match SignedDelta::decode(bytes) {
                Ok(d) => d,
                Err(e) => {
                    out.refused.push((e.into(), bytes.to_vec()));
                    continue;
                }
            };
            if d.seq() <= known.head(&d.author()).seq {
                out.deltas.push((d, Verdict::Unchecked));
                continue;
            }
            match check_admissible(&d, &self.roster, &self.limits, now_ms) {
                Ok(()) => candidates.push(d),
                Err(r) => out.refused.push((r, bytes.to_vec())),
            }
        }
        let refs: Vec<&SignedDelta> = candidates.iter().collect();
        let verdicts = self.keys.verify_deltas(&refs);
        for (d, valid) in candidates.into_iter().zip(verdicts) {
            if valid {
                out.deltas.push((d, Verdict::Valid));
            } else {
                out.refused
                    .push((self.signature_refusal(&d), d.as_bytes().to_vec()));
            }
        }
        out
    }

    /// Why a delta's signature failed: a bad key, or a bad signature.
    pub fn signature_refusal(&mut self, d: &SignedDelta) -> Refusal {
        match self.keys.key(d.author()) {
            Err(e) => Refusal::BadAuthorKey(e.to_string()),
            Ok(_) => Refusal::BadSignature,
        }
    }
}

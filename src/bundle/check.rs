//! Verifying a bundle without importing it: every chunk (the reader's
//! checks), every delta's decoding and signature, that the deltas are the
//! ones the header's frontiers announce (per author, contiguous, chained
//! by hash, ending at the resulting frontier), and, given a roster, what
//! admission would refuse.

use std::collections::BTreeMap;
use std::io::Read;

use super::format::Header;
use super::reader::{BundleError, BundleReader, Verified};
use crate::core::verify::KeyCache;
use crate::core::{Admission, DeltaHash, Frontier, Limits, NodeId, Roster, SignedDelta};

/// What a check found.
#[derive(Debug, Default)]
pub struct Checked {
    pub verified: Verified,
    /// Where reading stopped early, if it did.
    pub error: Option<BundleError>,
    pub undecodable: u64,
    pub bad_signatures: u64,
    /// Given a roster: deltas admission would refuse, by reason code
    /// (signature failures included).
    pub refused: BTreeMap<&'static str, u64>,
    /// The first place the deltas differ from what the header announces.
    pub mismatch: Option<String>,
}

impl Checked {
    /// Whole, and every delta as announced and validly signed.
    pub fn sound(&self) -> bool {
        self.error.is_none()
            && self.verified.complete
            && self.undecodable == 0
            && self.bad_signatures == 0
            && self.mismatch.is_none()
    }
}

/// Reads `reader` to its end (or first damage) and checks every delta.
/// `roster` adds the roster, authority and limit checks import would make.
pub fn check<R: Read>(
    mut reader: BundleReader<R>,
    roster: Option<(&Roster, &Limits)>,
    now_ms: u64,
) -> Checked {
    let mut out = Checked::default();
    let mut coverage = Coverage::new(reader.header());
    let mut keys = KeyCache::default();
    let mut admission = roster.map(|(r, l)| Admission::new(r.clone(), l.clone()));
    loop {
        let chunk = match reader.next_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        };
        let mut decoded = Vec::with_capacity(chunk.len());
        for bytes in chunk.deltas() {
            match SignedDelta::decode(bytes) {
                Ok(d) => {
                    coverage.see(&d);
                    decoded.push(d);
                }
                Err(e) => {
                    out.undecodable += 1;
                    coverage.fail(format!("a delta does not decode ({e})"));
                }
            }
        }
        let refs: Vec<&SignedDelta> = decoded.iter().collect();
        out.bad_signatures += (keys.verify_deltas(&refs).iter())
            .filter(|ok| !**ok)
            .count() as u64;
        if let Some(a) = admission.as_mut() {
            let admitted = a.admit(chunk.deltas(), &Frontier::new(), now_ms);
            for (refusal, _) in admitted.refused {
                *out.refused.entry(refusal.code()).or_default() += 1;
            }
        }
    }
    out.verified = reader.verified();
    if out.verified.complete {
        coverage.finish();
    }
    out.mismatch = coverage.mismatch;
    out
}

/// Follows the runs the header announces: per author of the resulting
/// frontier (in id order, as exported), the seqs after the base.
struct Coverage {
    runs: Vec<Run>,
    at: usize,
    mismatch: Option<String>,
}

struct Run {
    author: NodeId,
    next: u64,
    last: u64,
    prev: DeltaHash,
    end: DeltaHash,
}

impl Coverage {
    fn new(h: &Header) -> Coverage {
        let runs = (h.result.iter())
            .filter_map(|(author, head)| {
                let base = h.base.head(author);
                (head.seq > base.seq).then_some(Run {
                    author: *author,
                    next: base.seq + 1,
                    last: head.seq,
                    prev: base.hash,
                    end: head.hash,
                })
            })
            .collect();
        Coverage {
            runs,
            at: 0,
            mismatch: None,
        }
    }

    fn fail(&mut self, why: String) {
        self.mismatch.get_or_insert(why);
    }

    fn see(&mut self, d: &SignedDelta) {
        if self.mismatch.is_some() {
            return;
        }
        while self.runs.get(self.at).is_some_and(|r| r.next > r.last) {
            self.at += 1;
        }
        let Some(run) = self.runs.get_mut(self.at) else {
            return self.fail(format!(
                "{}#{} is beyond what the header announces",
                d.author().short(),
                d.seq()
            ));
        };
        if d.author() != run.author || d.seq() != run.next {
            let why = format!(
                "{}#{} where {}#{} was announced",
                d.author().short(),
                d.seq(),
                run.author.short(),
                run.next
            );
            return self.fail(why);
        }
        if d.prev() != run.prev {
            let why = format!(
                "{}#{} does not follow the delta before it",
                d.author().short(),
                d.seq()
            );
            return self.fail(why);
        }
        if d.seq() == run.last && d.hash() != run.end {
            let why = format!(
                "{}#{} is not the head the resulting frontier names",
                d.author().short(),
                d.seq()
            );
            return self.fail(why);
        }
        run.prev = d.hash();
        run.next += 1;
    }

    /// The bundle is whole: every announced run must be complete (the
    /// counts already match, so this catches only an exporter's bug).
    fn finish(&mut self) {
        if let Some(r) = self.runs.iter().find(|r| r.next <= r.last) {
            let why = format!(
                "{}#{}..={} announced but absent",
                r.author.short(),
                r.next,
                r.last
            );
            self.fail(why);
        }
    }
}

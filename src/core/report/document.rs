//! The signed aggregate document, and checking one against a region's log.
//!
//! The document is JSON: `{"format", "signer", "signature", "aggregate"}`.
//! The signature covers `DOMAIN || the exact bytes of "aggregate"`, as the
//! signer wrote them: nothing is re-serialised before verifying, so any
//! change to the figures, even one a lenient JSON reader would not see
//! (a duplicated key), breaks the signature.
//!
//! A region checks a document against its own log ([`check`]): the heads
//! the aggregate claims for the region must be in its log with those
//! hashes, and the report counted must be the one its log held as current
//! at that point, figure for figure.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::aggregate::{totals, Aggregate, RegionCoverage, FORMAT};
use super::{previous, report_key, Back, DeltaRef, Period, Report};
use crate::core::delta::{Op, SignedDelta};
use crate::core::ids::NodeId;
use crate::core::replica::Replica;
use crate::core::store::Store;

/// The `format` of the document around an aggregate.
pub const DOC_FORMAT: &str = "fedsync.signed-aggregate.v1";
/// Domain separation: this signature can never pass as a delta's.
const DOMAIN: &[u8] = b"fedsync signed aggregate v1\0";
/// Revisions followed back through a report's history before giving up.
const CHAIN_MAX: usize = 10_000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    format: String,
    signer: NodeId,
    signature: String,
    #[serde(borrow)]
    aggregate: &'a RawValue,
}

/// Signs `agg` with the node's key: the document, as pretty JSON.
pub fn sign(agg: &Aggregate, key: &SigningKey) -> String {
    let raw = serde_json::value::to_raw_value(agg).expect("an aggregate serialises");
    let signature = key.sign(&signed_message(raw.get()));
    let env = Envelope {
        format: DOC_FORMAT.into(),
        signer: NodeId(key.verifying_key().to_bytes()),
        signature: hex::encode(signature.to_bytes()),
        aggregate: &raw,
    };
    serde_json::to_string_pretty(&env).expect("a document serialises")
}

fn signed_message(aggregate: &str) -> Vec<u8> {
    [DOMAIN, aggregate.as_bytes()].concat()
}

/// Why a document is not a valid signed aggregate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("not a signed aggregate document: {0}")]
    Malformed(String),
    #[error("the signature does not match: the document was altered after it was signed, or not signed by {0}")]
    BadSignature(String),
}

/// A document whose signature verified.
#[derive(Clone, Debug)]
pub struct Opened {
    pub signer: NodeId,
    pub aggregate: Aggregate,
}

/// Parses `doc` and verifies its signature; nothing else is trusted before.
pub fn open(doc: &[u8]) -> Result<Opened, DocError> {
    let bad = |e: String| DocError::Malformed(e);
    let env: Envelope<'_> = serde_json::from_slice(doc).map_err(|e| bad(e.to_string()))?;
    if env.format != DOC_FORMAT {
        return Err(bad(format!(
            "format {:?}, expected {DOC_FORMAT}",
            env.format
        )));
    }
    let sig: [u8; 64] = hex::decode(&env.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the signature is not 128 hex digits".into()))?;
    let key = VerifyingKey::from_bytes(&env.signer.0)
        .map_err(|_| bad("the signer is not an Ed25519 key".into()))?;
    key.verify_strict(
        &signed_message(env.aggregate.get()),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| DocError::BadSignature(env.signer.short()))?;
    let aggregate: Aggregate =
        serde_json::from_str(env.aggregate.get()).map_err(|e| bad(e.to_string()))?;
    if aggregate.format != FORMAT {
        return Err(bad(format!("aggregate format {:?}", aggregate.format)));
    }
    if aggregate.computed_by_id != env.signer {
        return Err(bad("signed by a node other than the one it names".into()));
    }
    Ok(Opened {
        signer: env.signer,
        aggregate,
    })
}

/// One finding of a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub ok: bool,
    pub text: String,
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The region checked against this log; `None` if only the signature
    /// and the arithmetic could be checked.
    pub region: Option<String>,
    pub period: Option<String>,
    pub signer: Option<String>,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn pass(&mut self, text: String) {
        self.checks.push(Check { ok: true, text });
    }

    fn fail(&mut self, text: String) {
        self.checks.push(Check { ok: false, text });
    }
}

/// Verifies `doc` and checks `region`'s part of it against the log this
/// replica holds. Every problem is a failed check in words; only a store
/// failure is an error.
pub fn check<S: Store>(
    replica: &Replica<S>,
    doc: &[u8],
    region: Option<&str>,
) -> Result<Verdict, S::Error> {
    let mut v = Verdict {
        region: region.map(str::to_owned),
        period: None,
        signer: None,
        checks: Vec::new(),
    };
    let opened = match open(doc) {
        Ok(o) => o,
        Err(e) => {
            v.fail(e.to_string());
            return Ok(v);
        }
    };
    let agg = &opened.aggregate;
    v.period = Some(agg.period.clone());
    v.signer = Some(agg.computed_by.clone());
    let roster = replica.roster();
    match roster.member(&opened.signer) {
        Some(m) if m.is_node() && m.standing.valid_through() == u64::MAX => v.pass(format!(
            "signed by {} ({}), a node in this roster",
            m.name,
            opened.signer.short()
        )),
        Some(m) => v.fail(format!(
            "signed by {}, whose key is {} in this roster",
            m.name,
            m.standing.describe()
        )),
        None => v.fail(format!(
            "signed by {}, which is not in this node's roster (version {})",
            opened.signer.short(),
            roster.version
        )),
    }
    if totals(&agg.metrics, &agg.regions) == agg.totals {
        let counted = agg.regions.iter().filter(|r| r.figures.is_some()).count();
        v.pass(format!(
            "the totals are the sums of the {counted} reports listed"
        ));
    } else {
        v.fail("the totals are not the sums of the reports listed".into());
    }
    if let Some(region) = region {
        match agg.regions.iter().find(|r| r.region == region) {
            Some(entry) => check_region(replica, agg, entry, &mut v)?,
            None => v.fail(format!("the aggregate has no entry for region {region}")),
        }
    }
    Ok(v)
}

fn check_region<S: Store>(
    replica: &Replica<S>,
    agg: &Aggregate,
    entry: &RegionCoverage,
    v: &mut Verdict,
) -> Result<(), S::Error> {
    let store = replica.store();
    let region = &entry.region;
    // The claimed heads must be points of this log: same seq, same hash.
    let mut covered = BTreeMap::new();
    for h in &entry.frontier {
        covered.insert(h.author, h.seq);
        if h.seq == 0 {
            continue;
        }
        match store.delta(&h.author, h.seq)? {
            Some(d) if d.hash() == h.hash => v.pass(format!(
                "{}'s log up to seq {} is this log (hash {})",
                h.name,
                h.seq,
                h.hash.short()
            )),
            Some(d) => v.fail(format!(
                "{}'s seq {} has hash {} here but {} in the aggregate: not this region's log",
                h.name,
                h.seq,
                d.hash().short(),
                h.hash.short()
            )),
            None => v.fail(format!(
                "the aggregate covers {} up to seq {}, but this node holds its log only to seq {}",
                h.name,
                h.seq,
                replica.frontier().head(&h.author).seq
            )),
        }
    }
    if entry.missing != entry.report.is_none() {
        v.fail("the entry's missing flag contradicts its report".into());
    }
    let key = match agg.period.parse::<Period>() {
        Ok(p) => report_key(region, p),
        Err(e) => {
            v.fail(e.to_string());
            return Ok(());
        }
    };
    let expected = match report_as_of(store, &key, &covered)? {
        Ok(d) => d,
        Err(why) => {
            v.fail(why);
            return Ok(());
        }
    };
    match (expected, &entry.report) {
        (None, None) => v.pass(format!(
            "no report for {} up to the covered point: rightly listed as missing",
            agg.period
        )),
        (Some(d), None) => v.fail(format!(
            "listed as missing, but this log has a report (seq {}) within the covered range",
            d.seq()
        )),
        (None, Some(r)) => v.fail(format!(
            "the aggregate counts a report (seq {}) this log did not hold as current at the covered point",
            r.seq
        )),
        (Some(d), Some(r)) if DeltaRef::of(&d) != *r => v.fail(format!(
            "the aggregate counts seq {} ({}) but this log's report at that point is seq {} ({})",
            r.seq,
            r.hash.short(),
            d.seq(),
            d.hash().short()
        )),
        (Some(d), Some(_)) => compare_figures(&d, entry, v),
    }
    Ok(())
}

fn compare_figures(d: &SignedDelta, entry: &RegionCoverage, v: &mut Verdict) {
    let mine = Report::decode(d);
    match (mine, &entry.figures) {
        (Ok(r), Some(f)) if r.metrics == f.values && r.revision == f.revision => v.pass(format!(
            "the report counted is this log's (seq {}, revision {}), figure for figure",
            d.seq(),
            r.revision
        )),
        (Ok(r), Some(f)) => {
            let diff: Vec<String> = r
                .metrics
                .keys()
                .chain(f.values.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| r.metrics.get(*k) != f.values.get(*k))
                .map(|k| {
                    let show = |x: Option<&i64>| x.map_or("absent".into(), |n| n.to_string());
                    format!(
                        "{k} is {} here, {} in the aggregate",
                        show(r.metrics.get(k)),
                        show(f.values.get(k))
                    )
                })
                .collect();
            let revision = if r.revision == f.revision {
                String::new()
            } else {
                format!("revision {} here, {} there; ", r.revision, f.revision)
            };
            v.fail(format!(
                "the figures were altered: {revision}{}",
                diff.join("; ")
            ))
        }
        (Err(_), None) if entry.invalid.is_some() => {
            v.pass("the report is unreadable here too, and was not counted".into())
        }
        (Err(e), _) => v.fail(format!("this log's report is unreadable ({e})")),
        (Ok(_), None) => v.fail("the aggregate did not count this log's readable report".into()),
    }
}

/// The report `key` held as current when the log stood at `covered` (per
/// author, the last seq included): found by walking back the supersede
/// chain from the current report. `Err` says why it cannot be known.
fn report_as_of<S: Store>(
    store: &S,
    key: &str,
    covered: &BTreeMap<NodeId, u64>,
) -> Result<Result<Option<SignedDelta>, String>, S::Error> {
    let upto = |a: &NodeId| covered.get(a).copied().unwrap_or(0);
    let Some(rec) = store.record(key)? else {
        return Ok(Ok(None));
    };
    let Some(mut cur) = store.delta(&rec.author, rec.seq)? else {
        return Ok(Err(format!("this node's record {key} has no delta")));
    };
    for _ in 0..CHAIN_MAX {
        if cur.seq() <= upto(&cur.author()) {
            return Ok(Ok((cur.op() == Op::Put).then_some(cur)));
        }
        cur = match previous(store, &cur)? {
            Back::Revision(d) => d,
            Back::First => return Ok(Ok(None)),
            Back::Broken(why) => return Ok(Err(why)),
        };
    }
    Ok(Err(format!(
        "the report's history is longer than {CHAIN_MAX} revisions"
    )))
}

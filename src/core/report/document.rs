//! The signed aggregate document, and checking one against a region's log.
//!
//! The document is JSON: `{"format", "signer", "signature", "aggregate"}`.
//! The signature covers `DOMAIN || the exact bytes of "aggregate"`, as the
//! signer wrote them: nothing is re-serialised before verifying, so any
//! change to the figures, even one a lenient JSON reader would not see
//! (a duplicated key), breaks the signature.
//!
//! A region or a unit checks a document against its own log ([`check`]):
//! the heads the aggregate claims for it must be in its log with those
//! hashes, and the report counted must be the one its log held as current
//! at that point, figure for figure. A unit checks its region's aggregate
//! and HQ's alike.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::aggregate::{totals, Aggregate, Figures, RegionCoverage, FORMAT, FORMAT_V1};
use super::{approval, timeliness};
use super::{previous, read, Back, DeltaRef, Part, Period, ReportError, METRICS_MAX};
use crate::core::delta::{Op, SignedDelta};
use crate::core::ids::NodeId;
use crate::core::replica::Replica;
use crate::core::report;
use crate::core::store::Store;

/// The `format` of the document around an aggregate.
pub const DOC_FORMAT: &str = "fedsync.signed-aggregate.v1";
/// Domain separation: this signature can never pass as a delta's.
const DOMAIN: &[u8] = b"fedsync signed aggregate v1\0";
/// Regions a document may list: far beyond any roster, and checked
/// before any work is done on them.
const REGIONS_MAX: usize = 10_000;
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
    if aggregate.format != FORMAT && aggregate.format != FORMAT_V1 {
        return Err(bad(format!("aggregate format {:?}", aggregate.format)));
    }
    if aggregate.metrics.len() > METRICS_MAX || aggregate.regions.len() > REGIONS_MAX {
        return Err(bad(format!(
            "more than {METRICS_MAX} metrics or {REGIONS_MAX} regions"
        )));
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
    /// The region checked against this log (a unit's: the one it sits in);
    /// `None` if only the signature and the arithmetic could be checked.
    pub region: Option<String>,
    /// The unit checked, if a unit's part was.
    pub unit: Option<String>,
    pub period: Option<String>,
    pub signer: Option<String>,
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The verdict on a document that did not open: its one failed check.
    pub fn unopened(part: Option<&Part>, e: &DocError) -> Verdict {
        let (region, unit) = names(part);
        Verdict {
            region,
            unit,
            period: None,
            signer: None,
            checks: vec![Check {
                ok: false,
                text: e.to_string(),
            }],
        }
    }

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

fn names(part: Option<&Part>) -> (Option<String>, Option<String>) {
    match part {
        Some(Part::Region(r)) => (Some(r.clone()), None),
        Some(Part::Unit(u)) => (None, Some(u.clone())),
        None => (None, None),
    }
}

/// Verifies `doc` and checks `part`'s entry in it against the log this
/// replica holds. Every problem is a failed check in words; only a store
/// failure is an error.
pub fn check<S: Store>(
    replica: &Replica<S>,
    doc: &[u8],
    part: Option<&Part>,
) -> Result<Verdict, S::Error> {
    match open(doc) {
        Ok(opened) => check_opened(replica, &opened, part),
        Err(e) => Ok(Verdict::unopened(part, &e)),
    }
}

/// [`check`] for a document whose signature [`open`] already verified
/// (a node does that off its actor thread).
pub fn check_opened<S: Store>(
    replica: &Replica<S>,
    opened: &Opened,
    part: Option<&Part>,
) -> Result<Verdict, S::Error> {
    let agg = &opened.aggregate;
    let (region, unit) = names(part);
    let mut v = Verdict {
        region,
        unit,
        period: Some(agg.period.clone()),
        signer: Some(agg.computed_by.clone()),
        checks: Vec::new(),
    };
    let roster = replica.roster();
    match roster.member(&opened.signer) {
        Some(m) if m.is_node() && m.standing.valid_through() == u64::MAX => {
            let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
            v.pass(format!(
                "signed by {} ({}, role {}), a node in this roster",
                m.name,
                opened.signer.short(),
                roles.join(", ")
            ))
        }
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
    if !v.ok() {
        // Nothing an unknown signer says is worth more work.
        return Ok(v);
    }
    if let Err(why) = well_formed(agg) {
        v.fail(why);
        return Ok(v);
    }
    if totals(agg, &agg.regions) == agg.totals {
        let counted = agg.regions.iter().filter(|r| r.figures.is_some()).count();
        v.pass(format!(
            "the totals are the sums of the {counted} reports listed"
        ));
    } else {
        v.fail("the totals are not the sums of the reports listed".into());
    }
    match approval::check_entries(agg) {
        Ok(Some(text)) => v.pass(text),
        Ok(None) => {}
        Err(text) => v.fail(text),
    }
    match (agg.format.as_str(), timeliness::check_rates(agg)) {
        (FORMAT_V1, _) => {
            v.pass("a v1 aggregate, made before deadlines: it states no reporting rates".into())
        }
        (_, Ok(text)) => v.pass(text),
        (_, Err(text)) => v.fail(text),
    }
    if let Some(part) = part {
        match agg.regions.iter().find(|r| r.part() == *part) {
            Some(entry) => {
                v.region = Some(entry.region.clone());
                check_place(replica, agg, entry, &mut v);
                check_region(replica, agg, entry, &mut v)?
            }
            None => v.fail(format!(
                "the aggregate has no entry for {}",
                part.describe()
            )),
        }
    }
    Ok(v)
}

/// A unit's entry places it where this roster does; if not, the two
/// rosters differ, and the check says which one the aggregate used.
fn check_place<S: Store>(
    replica: &Replica<S>,
    agg: &Aggregate,
    entry: &RegionCoverage,
    v: &mut Verdict,
) {
    let Some(unit) = &entry.unit else {
        return;
    };
    let roster = replica.roster();
    match roster.units.region_of(unit) {
        Some(r) if r == entry.region => v.pass(format!(
            "unit {unit} is counted in region {r}, where this roster (version {}) places it",
            roster.version
        )),
        here => v.fail(format!(
            "unit {unit} is counted in region {} (roster version {}), but this roster (version {}) places it in {}",
            entry.region,
            agg.roster_version,
            roster.version,
            here.unwrap_or("no region")
        )),
    }
}

/// Each region and unit once, and each entry saying one thing: no report
/// means missing with no figures; a report has figures or a reason it has
/// none.
fn well_formed(agg: &Aggregate) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for r in &agg.regions {
        if !seen.insert(r.part()) {
            return Err(format!("{} is listed twice", r.part().describe()));
        }
        let consistent = match &r.report {
            None => r.missing && r.figures.is_none() && r.invalid.is_none(),
            Some(_) => {
                let why_not = [r.invalid.is_some(), r.unapproved];
                !r.missing
                    && why_not.iter().filter(|w| **w).count() == usize::from(r.figures.is_none())
            }
        };
        if !consistent {
            return Err(format!(
                "the entry for {} contradicts itself (missing, report, figures)",
                r.part().describe()
            ));
        }
    }
    Ok(())
}

fn check_region<S: Store>(
    replica: &Replica<S>,
    agg: &Aggregate,
    entry: &RegionCoverage,
    v: &mut Verdict,
) -> Result<(), S::Error> {
    let store = replica.store();
    let Some(covered) = covered_authors(replica, entry, v) else {
        return Ok(());
    };
    // The claimed heads must be points of this log: same seq, same hash.
    for h in entry.frontier.iter().filter(|h| h.seq > 0) {
        let held = replica.frontier().head(&h.author).seq;
        match store.delta(&h.author, h.seq)? {
            Some(d) if d.hash() == h.hash => v.pass(format!(
                "{}'s log up to seq {} is this log (hash {}){}",
                h.name,
                h.seq,
                h.hash.short(),
                match held.saturating_sub(h.seq) {
                    0 => String::new(),
                    n => format!("; the {n} later deltas held here are not in this aggregate"),
                }
            )),
            Some(d) => v.fail(format!(
                "{}'s seq {} has hash {} here but {} in the aggregate: not this log",
                h.name,
                h.seq,
                d.hash().short(),
                h.hash.short()
            )),
            None => v.fail(format!(
                "the aggregate covers {} up to seq {}, but this node holds its log only to seq {held}",
                h.name, h.seq,
            )),
        }
    }
    let key = match agg.period.parse::<Period>() {
        Ok(p) => entry.part().key(p),
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
        (Some(d), Some(_)) => {
            if let (Some(note), Ok(p)) = (&entry.approval, agg.period.parse()) {
                match approval::check_note(replica, &entry.part(), p, note)? {
                    Ok(text) => v.pass(text),
                    Err(text) => v.fail(text),
                }
            }
            match approval::held_out(agg, entry, &DeltaRef::of(&d)) {
                Some(text) => v.pass(text),
                None => compare_figures(replica, &d, entry, v),
            }
            if agg.format != FORMAT_V1 && entry.first_submitted_ms.is_some() {
                match timeliness::check_first(store, &d, entry)? {
                    Ok(text) => v.pass(text),
                    Err(text) => v.fail(text),
                }
            }
        }
    }
    Ok(())
}

/// The part's authors the aggregate lists, checked against this roster:
/// each listed once and writing the part's space, and none left out whose
/// log holds anything here. `None` (with a failed check) otherwise.
fn covered_authors<S: Store>(
    replica: &Replica<S>,
    entry: &RegionCoverage,
    v: &mut Verdict,
) -> Option<BTreeMap<NodeId, u64>> {
    let roster = replica.roster();
    let part = entry.part();
    let mut covered = BTreeMap::new();
    for h in &entry.frontier {
        if !roster.member(&h.author).is_some_and(|m| part.is_author(m)) {
            v.fail(format!(
                "the aggregate lists {} ({}) among {}'s authors; this roster does not",
                h.name,
                h.author.short(),
                part.describe()
            ));
            return None;
        }
        if covered.insert(h.author, h.seq).is_some() {
            v.fail(format!("the aggregate lists author {} twice", h.name));
            return None;
        }
    }
    let left_out: Vec<String> = (roster.members())
        .filter(|m| part.is_author(m))
        .filter(|m| !covered.contains_key(&m.id))
        .filter(|m| replica.frontier().head(&m.id).seq > 0)
        .map(|m| m.name.clone())
        .collect();
    if !left_out.is_empty() {
        v.fail(format!(
            "the aggregate leaves out the log of {} (held here); was it computed with an older roster?",
            left_out.join(", ")
        ));
        return None;
    }
    Some(covered)
}

fn compare_figures<S: Store>(
    replica: &Replica<S>,
    d: &SignedDelta,
    entry: &RegionCoverage,
    v: &mut Verdict,
) {
    let mine = match report::schema(replica) {
        Ok(Ok(schema)) => read(d, &schema),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(ReportError::BadReport(format!("store failed: {e}"))),
    };
    match (mine, &entry.figures) {
        (Ok(r), Some(f)) => {
            let revision = r.revision;
            let mine = Figures::of(r);
            if mine == *f {
                return v.pass(format!(
                    "the report counted is this log's (seq {}, revision {revision}), figure for figure",
                    d.seq()
                ));
            }
            v.fail(format!("the report was altered: {}", differences(&mine, f)))
        }
        (Err(_), None) => v.pass(format!(
            "this log's report is not countable here either ({}), and was not counted",
            entry.invalid.as_deref().unwrap_or("")
        )),
        (Err(e), Some(_)) => v.fail(format!(
            "the aggregate counts a report this node does not accept: {e}"
        )),
        (Ok(_), None) => v.fail(format!(
            "the aggregate did not count this log's report, saying: {}",
            entry.invalid.as_deref().unwrap_or("nothing")
        )),
    }
}

/// What differs between this log's figures and the aggregate's, in words.
fn differences(mine: &Figures, theirs: &Figures) -> String {
    let show = |x: Option<&i64>| x.map_or("absent".into(), |n| n.to_string());
    let mut out: Vec<String> = mine
        .values
        .keys()
        .chain(theirs.values.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| mine.values.get(*k) != theirs.values.get(*k))
        .map(|k| {
            format!(
                "{k} is {} here, {} in the aggregate",
                show(mine.values.get(k)),
                show(theirs.values.get(k))
            )
        })
        .collect();
    if mine.revision != theirs.revision {
        out.push(format!(
            "revision {} here, {} there",
            mine.revision, theirs.revision
        ));
    }
    if mine.notes != theirs.notes {
        out.push("the notes differ".into());
    }
    if (&mine.submitted_by, mine.submitted_ms) != (&theirs.submitted_by, theirs.submitted_ms) {
        out.push("the submitter or submission time differs".into());
    }
    out.join("; ")
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

//! HQ reports: a region's figures for a period, stored as an ordinary
//! signed record in the region's own key space, so authority, signatures
//! and sync apply to reports exactly as to any delta.
//!
//! - A report for region `r` and period `p` lives at `regions/<r>/reports/<p>`
//!   (see [`report_key`]) as the JSON of [`Report`]. Submitting again writes
//!   the same key: the newer delta wins, and it names the one it supersedes
//!   (author, seq, hash), so the history is a hash-linked chain of signed
//!   deltas that every node holds.
//! - The metric names come from the federation's [`Schema`]: HQ may publish
//!   one at [`SCHEMA_KEY`]; until it does, [`Schema::default_set`] applies.
//! - [`aggregate`] computes one period's totals with their coverage, and
//!   [`document`] signs them and checks a signed aggregate against a log.
//!
//! Everything read here came from a peer's signed bytes: it is parsed
//! strictly, bounded, and a bad report is reported, never a panic.

pub mod aggregate;
pub mod document;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use ed25519_dalek::SigningKey;

use super::delta::{Op, SignedDelta};
use super::ids::{DeltaHash, NodeId};
use super::replica::{Replica, WriteError};
use super::store::Store;

/// Where HQ publishes the federation's report schema.
pub const SCHEMA_KEY: &str = "hq/reports/schema";
/// Metrics a schema may define, and a report may carry.
pub const METRICS_MAX: usize = 64;
/// A metric's name: 1 to 40 of `a-z 0-9 _`, starting with a letter.
pub const METRIC_NAME_MAX: usize = 40;
/// The magnitude of one figure. Sums over any roster stay far inside i64.
pub const VALUE_MAX: i64 = 1_000_000_000_000;
/// Free text on a report, in bytes.
pub const NOTES_MAX: usize = 4_000;
/// Names (regions, submitters) in a report, in bytes.
const NAME_MAX: usize = 128;

/// Why a report, schema or period was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("period {0:?} is neither a month (2026-09) nor a quarter (2026-Q3)")]
    BadPeriod(String),
    #[error("unknown metric {name:?}; the schema has: {known}")]
    UnknownMetric { name: String, known: String },
    #[error("metric {metric} is {value}, but it may not be negative")]
    Negative { metric: String, value: i64 },
    #[error("metric {metric} is {value}, beyond the limit of ±{VALUE_MAX}")]
    TooLarge { metric: String, value: i64 },
    #[error("a report needs at least one metric")]
    NoMetrics,
    #[error("notes of {0} bytes exceed the limit of {NOTES_MAX}")]
    NotesTooLong(usize),
    #[error("this node writes region {mine:?}'s reports, not {asked:?}")]
    WrongRegion { asked: String, mine: String },
    #[error("{0} is not a regional office: only regions submit reports")]
    NotARegion(String),
    #[error("{0} is not an HQ node: only HQ publishes the report schema")]
    NotHq(String),
    #[error("bad report schema: {0}")]
    BadSchema(String),
    #[error("unreadable report: {0}")]
    BadReport(String),
}

/// A reporting period: a calendar month or quarter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Month { year: u16, month: u8 },
    Quarter { year: u16, quarter: u8 },
}

impl FromStr for Period {
    type Err = ReportError;

    /// Exactly `YYYY-MM` (01–12) or `YYYY-Qn` (1–4), years 1970–9999: one
    /// spelling per period, so one key per region and period.
    fn from_str(s: &str) -> Result<Period, ReportError> {
        let bad = || ReportError::BadPeriod(s.chars().take(40).collect());
        let (y, rest) = s.split_once('-').ok_or_else(bad)?;
        let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) {
            return Err(bad());
        }
        let year: u16 = y.parse().map_err(|_| bad())?;
        if year < 1970 {
            return Err(bad());
        }
        if let Some(q) = rest.strip_prefix('Q') {
            if !digits(q, 1) {
                return Err(bad());
            }
            let quarter: u8 = q.parse().map_err(|_| bad())?;
            return match quarter {
                1..=4 => Ok(Period::Quarter { year, quarter }),
                _ => Err(bad()),
            };
        }
        if !digits(rest, 2) {
            return Err(bad());
        }
        let month: u8 = rest.parse().map_err(|_| bad())?;
        match month {
            1..=12 => Ok(Period::Month { year, month }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Period::Quarter { year, quarter } => write!(f, "{year:04}-Q{quarter}"),
        }
    }
}

/// The record key of `region`'s report for `period`.
pub fn report_key(region: &str, period: Period) -> String {
    format!("regions/{region}/reports/{period}")
}

/// Keys only the report calls write: a plain put there would bypass the
/// schema and the supersede chain.
pub fn is_reserved(key: &str) -> bool {
    if key.starts_with("hq/reports/") {
        return true;
    }
    key.strip_prefix("regions/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, tail)| tail.starts_with("reports/"))
}

/// One metric a report may carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Counts are never negative; a balance or a change may be.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_negative: bool,
}

/// The metrics reports may carry, in display order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub metrics: Vec<MetricDef>,
}

impl Schema {
    /// What applies until HQ publishes a schema: four counts, none
    /// negative.
    pub fn default_set() -> Schema {
        let m = |name: &str, description: &str| MetricDef {
            name: name.into(),
            description: description.into(),
            allow_negative: false,
        };
        Schema {
            metrics: vec![
                m("volunteers", "people who volunteered in the period"),
                m("events", "events held"),
                m("participants", "people who took part in events"),
                m("hours", "volunteer hours, rounded to whole hours"),
            ],
        }
    }

    /// Parses and checks a schema (JSON, as stored or submitted).
    pub fn decode(bytes: &[u8]) -> Result<Schema, ReportError> {
        let s: Schema =
            serde_json::from_slice(bytes).map_err(|e| ReportError::BadSchema(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a schema serialises")
    }

    pub fn check(&self) -> Result<(), ReportError> {
        let bad = |why: String| Err(ReportError::BadSchema(why));
        if self.metrics.is_empty() || self.metrics.len() > METRICS_MAX {
            return bad(format!("it needs 1 to {METRICS_MAX} metrics"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.metrics {
            check_metric_name(&m.name).map_err(ReportError::BadSchema)?;
            if m.description.len() > NOTES_MAX {
                return bad(format!("the description of {} is too long", m.name));
            }
            if !seen.insert(m.name.as_str()) {
                return bad(format!("metric {} is listed twice", m.name));
            }
        }
        Ok(())
    }

    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.metrics.iter().find(|m| m.name == name)
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.metrics.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= METRIC_NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        return Ok(());
    }
    Err(format!(
        "metric name {:?} must be 1 to {METRIC_NAME_MAX} of a-z, 0-9 and _, starting with a letter",
        name.chars().take(60).collect::<String>()
    ))
}

/// A delta a report names: the revision it supersedes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaRef {
    pub author: NodeId,
    pub seq: u64,
    pub hash: DeltaHash,
}

impl DeltaRef {
    pub fn of(d: &SignedDelta) -> DeltaRef {
        DeltaRef {
            author: d.author(),
            seq: d.seq(),
            hash: d.hash(),
        }
    }
}

/// A report as stored: the value of its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub region: String,
    pub period: String,
    /// 1 for the first report of this region and period; otherwise one
    /// more than the revision it supersedes.
    pub revision: u32,
    pub metrics: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// The operator (roster name) whose call submitted it.
    pub submitted_by: String,
    pub submitted_ms: u64,
    /// The revision this one replaces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<DeltaRef>,
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises")
    }

    /// Reads a stored report strictly: it must parse, be bounded, and name
    /// the region and period its key does.
    pub fn decode(delta: &SignedDelta) -> Result<Report, ReportError> {
        let bad = |why: String| ReportError::BadReport(why);
        let r: Report = serde_json::from_slice(delta.value()).map_err(|e| bad(e.to_string()))?;
        let period: Period = r.period.parse()?;
        if delta.key() != report_key(&r.region, period) {
            return Err(bad(format!(
                "it says region {:?}, period {} but is stored at {}",
                r.region.chars().take(NAME_MAX).collect::<String>(),
                period,
                delta.key()
            )));
        }
        if r.metrics.len() > METRICS_MAX {
            return Err(bad(format!("more than {METRICS_MAX} metrics")));
        }
        for (name, &value) in &r.metrics {
            check_metric_name(name).map_err(bad)?;
            check_magnitude(name, value)?;
        }
        if r.notes.len() > NOTES_MAX {
            return Err(ReportError::NotesTooLong(r.notes.len()));
        }
        if r.submitted_by.len() > NAME_MAX {
            return Err(bad("submitter name too long".into()));
        }
        Ok(r)
    }
}

/// Reads a stored report and checks it against `schema` as a submission
/// would be: what a patched node signed anyway is not counted.
pub fn read(delta: &SignedDelta, schema: &Schema) -> Result<Report, ReportError> {
    let r = Report::decode(delta)?;
    if r.metrics.is_empty() {
        return Err(ReportError::NoMetrics);
    }
    for (name, &value) in &r.metrics {
        if value < 0 && schema.metric(name).is_some_and(|m| !m.allow_negative) {
            return Err(ReportError::Negative {
                metric: name.clone(),
                value,
            });
        }
    }
    Ok(r)
}

fn check_magnitude(metric: &str, value: i64) -> Result<(), ReportError> {
    if value.unsigned_abs() > VALUE_MAX as u64 {
        return Err(ReportError::TooLarge {
            metric: metric.to_owned(),
            value,
        });
    }
    Ok(())
}

/// What an operator submits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// Checked against the node's region when given.
    #[serde(default)]
    pub region: Option<String>,
    pub period: String,
    pub metrics: BTreeMap<String, i64>,
    #[serde(default)]
    pub notes: String,
}

/// Who submits: the node's roster entry and the calling operator.
pub struct Submitter<'a> {
    pub node_name: &'a str,
    /// The node's region, if it is a regional office.
    pub region: Option<&'a str>,
    pub operator: &'a str,
}

/// Checks a submission against the schema and the submitter: `Ok` is the
/// key the report goes to.
pub fn validate(
    sub: &Submission,
    schema: &Schema,
    who: &Submitter<'_>,
) -> Result<String, ReportError> {
    let mine = who
        .region
        .ok_or_else(|| ReportError::NotARegion(who.node_name.to_owned()))?;
    if let Some(asked) = &sub.region {
        if asked != mine {
            return Err(ReportError::WrongRegion {
                asked: asked.chars().take(NAME_MAX).collect(),
                mine: mine.to_owned(),
            });
        }
    }
    let period: Period = sub.period.parse()?;
    if sub.metrics.is_empty() {
        return Err(ReportError::NoMetrics);
    }
    for (name, &value) in &sub.metrics {
        let def = schema
            .metric(name)
            .ok_or_else(|| ReportError::UnknownMetric {
                name: name.chars().take(60).collect(),
                known: schema.names(),
            })?;
        if value < 0 && !def.allow_negative {
            return Err(ReportError::Negative {
                metric: name.clone(),
                value,
            });
        }
        check_magnitude(name, value)?;
    }
    if sub.notes.len() > NOTES_MAX {
        return Err(ReportError::NotesTooLong(sub.notes.len()));
    }
    Ok(report_key(mine, period))
}

/// Why a submission was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError<E: std::error::Error> {
    #[error("{0}")]
    Report(#[from] ReportError),
    #[error("{0}")]
    Write(#[from] WriteError<E>),
}

/// Validates `sub` and writes it as the node's report, superseding the
/// report the key holds now. Nothing is written on an error; on `Ok` the
/// report is durable.
pub fn submit<S: Store>(
    replica: &mut Replica<S>,
    signer: &SigningKey,
    schema: &Schema,
    who: &Submitter<'_>,
    sub: &Submission,
    now_ms: u64,
) -> Result<(SignedDelta, Report), SubmitError<S::Error>> {
    let key = validate(sub, schema, who)?;
    let current = replica.get(&key).map_err(WriteError::Store)?;
    // The chain continues from whatever the key holds now; a current value
    // that is not a readable report is still superseded, by reference.
    let revision = current
        .as_ref()
        .and_then(|d| Report::decode(d).ok())
        .map_or(1, |r| r.revision.saturating_add(1));
    let period: Period = sub.period.parse()?;
    let report = Report {
        region: who.region.unwrap_or_default().to_owned(),
        period: period.to_string(),
        revision,
        metrics: sub.metrics.clone(),
        notes: sub.notes.clone(),
        submitted_by: who.operator.chars().take(NAME_MAX).collect(),
        submitted_ms: now_ms,
        supersedes: current.as_ref().map(DeltaRef::of),
    };
    let delta = replica.write(signer, &key, Op::Put, report.encode(), now_ms)?;
    Ok((delta, report))
}

/// Publishes `schema` as the federation's, from an HQ node.
pub fn publish_schema<S: Store>(
    replica: &mut Replica<S>,
    signer: &SigningKey,
    schema: &Schema,
    node_name: &str,
    now_ms: u64,
) -> Result<SignedDelta, SubmitError<S::Error>> {
    schema.check()?;
    let me = NodeId(signer.verifying_key().to_bytes());
    let is_hq = replica
        .roster()
        .member(&me)
        .is_some_and(|m| m.roles.contains(&super::roster::Role::Hq));
    if !is_hq {
        return Err(ReportError::NotHq(node_name.to_owned()).into());
    }
    Ok(replica.write(signer, SCHEMA_KEY, Op::Put, schema.encode(), now_ms)?)
}

/// The federation's report schema as this replica holds it: HQ's, or the
/// default set until HQ publishes one.
pub fn schema<S: Store>(replica: &Replica<S>) -> Result<Result<Schema, ReportError>, S::Error> {
    Ok(match replica.get(SCHEMA_KEY)? {
        Some(d) => Schema::decode(d.value()),
        None => Ok(Schema::default_set()),
    })
}

/// One step back along a report's supersede chain.
pub enum Back {
    /// The revision `cur` superseded.
    Revision(SignedDelta),
    /// `cur` is the first revision.
    First,
    /// The chain cannot be followed: why.
    Broken(String),
}

/// The revision `cur` names as superseded, checked: it must be held, with
/// the hash named, at the same key.
pub fn previous<S: Store>(store: &S, cur: &SignedDelta) -> Result<Back, S::Error> {
    let prev = match Report::decode(cur) {
        Ok(r) => r.supersedes,
        Err(e) => {
            return Ok(Back::Broken(format!(
                "cannot follow the report history past seq {}: {e}",
                cur.seq()
            )))
        }
    };
    let Some(prev) = prev else {
        return Ok(Back::First);
    };
    Ok(match store.delta(&prev.author, prev.seq)? {
        Some(d) if d.hash() == prev.hash && d.key() == cur.key() => Back::Revision(d),
        Some(_) => Back::Broken(format!(
            "the report history is broken at seq {}: a different delta is held there",
            prev.seq
        )),
        None => Back::Broken(format!(
            "revision seq {} of {} is not held here",
            prev.seq,
            prev.author.short()
        )),
    })
}

/// A report's revisions, newest first: at most `limit` of them and
/// `max_bytes` of reports; and why the history stops early, if it does.
pub fn history<S: Store>(
    store: &S,
    key: &str,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<SignedDelta>, Option<String>), S::Error> {
    let mut out = Vec::new();
    let Some(rec) = store.record(key)? else {
        return Ok((out, None));
    };
    let Some(mut cur) = store.delta(&rec.author, rec.seq)? else {
        return Ok((out, Some(format!("record {key} has no delta"))));
    };
    let mut bytes = 0;
    while out.len() < limit && bytes + cur.value().len() <= max_bytes {
        let back = previous(store, &cur)?;
        bytes += cur.value().len();
        out.push(cur);
        cur = match back {
            Back::Revision(d) => d,
            Back::First => return Ok((out, None)),
            Back::Broken(why) => return Ok((out, Some(why))),
        };
    }
    Ok((
        out,
        Some(format!("only the newest {limit} revisions shown")),
    ))
}

#[cfg(test)]
mod tests;

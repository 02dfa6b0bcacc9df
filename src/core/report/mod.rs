//! HQ reports: a region's or a unit's figures for a period, stored as an
//! ordinary signed record in its own key space, so authority, signatures
//! and sync apply to reports exactly as to any delta.
//!
//! - A report for region `r` and period `p` lives at `regions/<r>/reports/<p>`
//!   (see [`report_key`]), a unit `u`'s at `units/<u>/reports/<p>`, as the
//!   JSON of [`Report`]. A region's report holds its own work; each of its
//!   units reports its own, and aggregates add them up the tree
//!   ([`Part`]), so every figure is counted once. Submitting again writes
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
mod history;
pub mod period;
mod schema;
pub mod timeliness;

pub use history::{history, previous, Back};
pub use period::Period;
use schema::check_metric_name;
pub use schema::{publish_schema, published, schema, Due, MetricDef, Schema, DUE_DAYS_MAX};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use ed25519_dalek::SigningKey;

use super::delta::{Op, SignedDelta};
use super::ids::{DeltaHash, NodeId};
use super::replica::{Replica, WriteError};
use super::roster::{Member, Role, Roster};
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
    #[error("{0} is neither a region's nor a unit's node: only they submit reports")]
    NotARegion(String),
    #[error("this node writes unit {mine:?}'s reports, not {asked:?}")]
    WrongUnit { asked: String, mine: String },
    #[error("{0} is not an HQ node: only HQ publishes the report schema")]
    NotHq(String),
    #[error("bad report schema: {0}")]
    BadSchema(String),
    #[error("unreadable report: {0}")]
    BadReport(String),
}

/// The record key of `region`'s report for `period`.
pub fn report_key(region: &str, period: Period) -> String {
    format!("regions/{region}/reports/{period}")
}

/// Whose report: a region's own, or a unit's. Each part of the tree
/// reports its own work once, in its own space.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Region(String),
    Unit(String),
}

impl Part {
    /// The part `m` writes reports for, if it writes any.
    pub fn of(m: &Member) -> Option<Part> {
        if m.roles.contains(&Role::Unit) {
            return m.unit.clone().map(Part::Unit);
        }
        (m.roles.contains(&Role::Region))
            .then(|| m.region.clone().map(Part::Region))
            .flatten()
    }

    pub fn key(&self, period: Period) -> String {
        match self {
            Part::Region(r) => report_key(r, period),
            Part::Unit(u) => format!("units/{u}/reports/{period}"),
        }
    }

    /// Whether `m`'s log is this part's: it writes this part's space.
    pub fn is_author(&self, m: &Member) -> bool {
        Part::of(m).as_ref() == Some(self)
    }

    /// `region fr`, `unit aleysk`.
    pub fn describe(&self) -> String {
        match self {
            Part::Region(r) => format!("region {r}"),
            Part::Unit(u) => format!("unit {u}"),
        }
    }
}

/// Keys only the report calls write: a plain put there would bypass the
/// schema and the supersede chain.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("hq/reports/") || crate::core::keyspace::is_report(key)
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
    /// The region: a region's own, or the one its unit sat in when it
    /// submitted (aggregates place a unit by the roster in force).
    pub region: String,
    /// A unit's report: the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
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
    /// Whose report this says it is.
    pub fn part(&self) -> Part {
        match &self.unit {
            Some(u) => Part::Unit(u.clone()),
            None => Part::Region(self.region.clone()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises")
    }

    /// Reads a stored report strictly: it must parse, be bounded, and name
    /// the region and period its key does.
    pub fn decode(delta: &SignedDelta) -> Result<Report, ReportError> {
        let bad = |why: String| ReportError::BadReport(why);
        let r: Report = serde_json::from_slice(delta.value()).map_err(|e| bad(e.to_string()))?;
        let period: Period = r.period.parse()?;
        if delta.key() != r.part().key(period) {
            return Err(bad(format!(
                "it says {}, period {} but is stored at {}",
                r.part()
                    .describe()
                    .chars()
                    .take(NAME_MAX)
                    .collect::<String>(),
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
    /// Checked against the node's unit when given.
    #[serde(default)]
    pub unit: Option<String>,
    pub period: String,
    pub metrics: BTreeMap<String, i64>,
    #[serde(default)]
    pub notes: String,
}

/// Who submits: the node's roster entry and the calling operator.
pub struct Submitter<'a> {
    pub node_name: &'a str,
    /// The part it reports for, if it is a region's or a unit's node.
    pub part: Option<Part>,
    /// Its region: its own, or where the tree places its unit now.
    pub region: Option<&'a str>,
    pub operator: &'a str,
}

impl<'a> Submitter<'a> {
    /// `m` submitting through an operator's call.
    pub fn of(roster: &'a Roster, m: &'a Member, operator: &'a str) -> Submitter<'a> {
        Submitter {
            node_name: &m.name,
            part: Part::of(m),
            region: roster.region_of(m),
            operator,
        }
    }
}

/// Checks a submission against the schema and the submitter: `Ok` is the
/// key the report goes to.
pub fn validate(
    sub: &Submission,
    schema: &Schema,
    who: &Submitter<'_>,
) -> Result<String, ReportError> {
    let part =
        (who.part.as_ref()).ok_or_else(|| ReportError::NotARegion(who.node_name.to_owned()))?;
    if let Some(asked) = sub.region.as_deref().filter(|a| Some(*a) != who.region) {
        return Err(ReportError::WrongRegion {
            asked: asked.chars().take(NAME_MAX).collect(),
            mine: who.region.unwrap_or("-").to_owned(),
        });
    }
    let unit = match part {
        Part::Unit(u) => Some(u.as_str()),
        Part::Region(_) => None,
    };
    if let Some(asked) = sub.unit.as_deref().filter(|a| Some(*a) != unit) {
        return Err(ReportError::WrongUnit {
            asked: asked.chars().take(NAME_MAX).collect(),
            mine: unit.unwrap_or("-").to_owned(),
        });
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
    Ok(part.key(period))
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
        unit: match &who.part {
            Some(Part::Unit(u)) => Some(u.clone()),
            _ => None,
        },
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

#[cfg(test)]
mod tests;

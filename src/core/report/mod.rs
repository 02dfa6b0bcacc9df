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
pub mod approval;
mod coverage;
pub mod document;
mod history;
pub mod period;
pub mod receipt;
pub mod rules;
mod schema;
pub mod tidy;
pub mod timeliness;

pub use history::{history, previous, Back};
pub use period::Period;
use schema::check_metric_name;
pub use schema::{
    publish_schema, published, schema, CategoryDef, Due, MetricDef, Rule, Schema, COMBOS_MAX,
    DUE_DAYS_MAX,
};

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
    #[error("{0}")]
    NotApprover(String),
    #[error("{part}'s report for {period} is locked: {approver} approved revision {revision}; it must withdraw its approval before a new submission")]
    Locked {
        part: String,
        period: String,
        approver: String,
        revision: u32,
    },
    #[error("metric {metric} has no categories in the schema")]
    NoCategories { metric: String },
    #[error("{metric} has no category {combo:?}; its categories are: {known}")]
    UnknownCategory {
        metric: String,
        combo: String,
        known: String,
    },
    #[error("{metric} is stated as {stated}, but the {rule} of its categories is {derived}")]
    TotalDisagrees {
        metric: String,
        stated: i64,
        rule: &'static str,
        derived: i64,
    },
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

/// Per metric, its figures by combination of category options.
pub type Categories = BTreeMap<String, BTreeMap<String, i64>>;

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A combination's spelling, in bytes: three categories of 40-byte names
/// and options fit.
const COMBO_MAX: usize = 250;

/// The figure `rule` makes of a metric's categories, if it makes one.
fn derive(rule: Rule, figures: &BTreeMap<String, i64>) -> Option<i64> {
    let v = figures.values().copied();
    match rule {
        // Figures are bounded, so a sum of 64 fits in i64.
        Rule::Sum => Some(v.fold(0i64, i64::saturating_add)),
        Rule::Min => v.min(),
        Rule::Max => v.max(),
        Rule::Avg | Rule::Last => None,
    }
}

/// Each categorised metric's total against its categories, by its rule:
/// what a submission must state, and what a patched node may not sign.
fn check_totals(
    metrics: &BTreeMap<String, i64>,
    categories: &Categories,
    schema: &Schema,
) -> Result<(), ReportError> {
    for (name, figures) in categories {
        // A metric this schema does not define has no rule to hold it to,
        // and is not totalled here either.
        let Some(rule) = schema.resolve(name).map(|m| m.aggregate) else {
            continue;
        };
        let (Some(derived), Some(&stated)) = (derive(rule, figures), metrics.get(name)) else {
            continue;
        };
        if stated != derived {
            return Err(ReportError::TotalDisagrees {
                metric: name.clone(),
                stated,
                rule: rule.as_str(),
                derived,
            });
        }
    }
    Ok(())
}

/// Keys only the report calls write: a plain put there would bypass the
/// schema and the supersede chain.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("hq/reports/")
        || key.starts_with("hq/approvals/")
        || crate::core::keyspace::is_report(key)
        || crate::core::keyspace::is_approval(key)
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
    /// Figures by category, per metric that has a breakdown: combination
    /// (`age=under_18,sex=female`) to figure. Its total is in `metrics`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: Categories,
    /// The schema version it was submitted under (0: the default set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u32,
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
        if r.categories.len() > METRICS_MAX {
            return Err(bad(format!(
                "categories for more than {METRICS_MAX} metrics"
            )));
        }
        for (name, figures) in &r.categories {
            check_metric_name(name).map_err(bad)?;
            if !r.metrics.contains_key(name) {
                return Err(bad(format!("{name} has categories but no total")));
            }
            if figures.len() > COMBOS_MAX || figures.keys().any(|c| c.len() > COMBO_MAX) {
                return Err(bad(format!(
                    "{name} has more than {COMBOS_MAX} categories, or one too long"
                )));
            }
            for &value in figures.values() {
                check_magnitude(name, value)?;
            }
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
    let category_figures = (r.categories.iter()).flat_map(|(n, f)| f.values().map(move |v| (n, v)));
    for (name, &value) in r.metrics.iter().chain(category_figures) {
        if value < 0 && schema.resolve(name).is_some_and(|m| !m.allow_negative) {
            return Err(ReportError::Negative {
                metric: name.clone(),
                value,
            });
        }
    }
    check_totals(&r.metrics, &r.categories, schema)?;
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
    /// Totals. A metric given by category may leave its total out: it is
    /// then the categories' sum (or minimum, or maximum, by its rule).
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
    /// Figures by category: metric, then combination, as in [`Report`].
    #[serde(default)]
    pub categories: Categories,
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
/// key the report goes to, and its totals, with those the categories
/// imply filled in.
pub fn validate(
    sub: &Submission,
    schema: &Schema,
    who: &Submitter<'_>,
) -> Result<(String, BTreeMap<String, i64>), ReportError> {
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
    if sub.metrics.is_empty() && sub.categories.is_empty() {
        return Err(ReportError::NoMetrics);
    }
    let def = |name: &str| {
        schema
            .metric(name)
            .ok_or_else(|| ReportError::UnknownMetric {
                name: name.chars().take(60).collect(),
                known: schema.names(),
            })
    };
    let figure = |name: &str, value: i64, def: &MetricDef| {
        if value < 0 && !def.allow_negative {
            return Err(ReportError::Negative {
                metric: name.to_owned(),
                value,
            });
        }
        check_magnitude(name, value)
    };
    for (name, &value) in &sub.metrics {
        figure(name, value, def(name)?)?;
    }
    let mut metrics = sub.metrics.clone();
    for (name, figures) in &sub.categories {
        let d = def(name)?;
        if d.categories.is_empty() {
            return Err(ReportError::NoCategories {
                metric: name.clone(),
            });
        }
        for (combo, &value) in figures {
            if !d.is_combo(combo) {
                return Err(ReportError::UnknownCategory {
                    metric: name.clone(),
                    combo: combo.chars().take(COMBO_MAX).collect(),
                    known: d.combos().join(" "),
                });
            }
            figure(name, value, d)?;
        }
        if let Some(total) = derive(d.aggregate, figures) {
            metrics.entry(name.clone()).or_insert(total);
        }
    }
    check_totals(&metrics, &sub.categories, schema)?;
    if sub.notes.len() > NOTES_MAX {
        return Err(ReportError::NotesTooLong(sub.notes.len()));
    }
    Ok((part.key(period), metrics))
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
    let (key, metrics) = validate(sub, schema, who)?;
    let period: Period = sub.period.parse()?;
    if let Some(part) = &who.part {
        let standing = approval::standing(replica, part, period).map_err(WriteError::Store)?;
        if let approval::Standing::Approved { approval, .. } = standing {
            return Err(ReportError::Locked {
                part: part.describe(),
                period: period.to_string(),
                approver: approval.approver,
                revision: approval.value.map_or(0, |a| a.revision),
            }
            .into());
        }
    }
    let current = replica.get(&key).map_err(WriteError::Store)?;
    // The chain continues from whatever the key holds now; a current value
    // that is not a readable report is still superseded, by reference.
    let revision = current
        .as_ref()
        .and_then(|d| Report::decode(d).ok())
        .map_or(1, |r| r.revision.saturating_add(1));
    let report = Report {
        region: who.region.unwrap_or_default().to_owned(),
        unit: match &who.part {
            Some(Part::Unit(u)) => Some(u.clone()),
            _ => None,
        },
        period: period.to_string(),
        revision,
        metrics,
        categories: (sub.categories.iter())
            .filter(|(_, f)| !f.is_empty())
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect(),
        schema_version: schema.version,
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

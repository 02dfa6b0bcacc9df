//! What a signed aggregate says: the document's types, and nothing that
//! computes them. Computing (`aggregate.rs`, `rules.rs`, `timeliness.rs`,
//! `approval.rs`) and checking (`document.rs`) sit above these, so the
//! document's shape is one file every layer reads and none of them owns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Categories, DeltaRef, Part, Report, Rule};
use crate::core::ids::{DeltaHash, NodeId};

/// The `format` of every aggregate this version writes: v2 added
/// deadlines and reporting rates.
pub const FORMAT: &str = "fedsync.aggregate.v2";

/// The format before deadlines: still read and verified, without them.
pub const FORMAT_V1: &str = "fedsync.aggregate.v1";

/// An aggregate: what the signed document carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    pub format: String,
    pub period: String,
    /// The node that computed (and signs) it.
    pub computed_by: String,
    pub computed_by_id: NodeId,
    pub computed_ms: u64,
    pub roster_version: u64,
    /// Only reports approved by the level above are counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved_only: bool,
    /// What it covers when not the whole federation: `region r` or
    /// `unit u`, with everything below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A region not heard from for longer than this is stale.
    pub stale_after_ms: u64,
    /// When the period's reports were due, if the schema sets a deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    /// Expected, received, on time, late and missing, in total and per
    /// region (absent from v1 aggregates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting: Option<Reporting>,
    /// The schema's metrics, in its order: the ones totalled.
    pub metrics: Vec<String>,
    /// The schema version in force here (0: the default set).
    #[serde(default)]
    pub schema_version: u32,
    /// Each metric's rule where it is not `sum`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, Rule>,
    /// Former metric names, each counted as the metric it is now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub renamed: BTreeMap<String, String>,
    pub totals: Vec<MetricTotal>,
    /// Every region in the roster (in scope), by name, each followed by
    /// its units, by name.
    pub regions: Vec<RegionCoverage>,
    /// What was left out of the totals, and why.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One region's or unit's part: what was counted, and from which point of
/// its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionCoverage {
    /// The region, or for a unit the region the roster in force puts it in.
    pub region: String,
    /// A unit's entry: the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The region's authors as this node held them: the totals include
    /// their logs up to these heads and nothing after.
    pub frontier: Vec<CoveredHead>,
    /// No report for the period up to that point.
    pub missing: bool,
    /// The report's delta, when there is one.
    pub report: Option<DeltaRef>,
    /// Its figures, when it could be read; else why not (`invalid`).
    pub figures: Option<Figures>,
    pub invalid: Option<String>,
    pub stale: bool,
    /// When this node last heard from one of the region's nodes directly.
    pub last_contact_ms: Option<u64>,
    /// A counted report's first revision: its signed submission time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_submitted_ms: Option<u64>,
    /// When the aggregating node first held a revision of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_held_ms: Option<u64>,
    /// Against the deadline, by the signed time (v2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeliness: Option<Timeliness>,
    /// Against the deadline, by when this node first held it: on time or
    /// late, when both a deadline and that time are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived: Option<Timeliness>,
    /// The approval of its report by the level above, as held here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Note>,
    /// Readable but not counted: the aggregate counts approved reports
    /// only, and this one is not approved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unapproved: bool,
}

impl RegionCoverage {
    pub fn part(&self) -> Part {
        match &self.unit {
            Some(u) => Part::Unit(u.clone()),
            None => Part::Region(self.region.clone()),
        }
    }

    /// `fr`, `ru-altai/aleysk`: the entry's name in tables.
    pub fn label(&self) -> String {
        match &self.unit {
            Some(u) => format!("{}/{u}", self.region),
            None => self.region.clone(),
        }
    }

    /// `included`, `missing`, `unapproved` or `invalid`.
    pub fn status(&self) -> &'static str {
        match (&self.report, &self.figures) {
            (None, _) => "missing",
            (Some(_), Some(_)) => "included",
            (Some(_), None) if self.unapproved => "unapproved",
            (Some(_), None) => "invalid",
        }
    }

    /// Whether the level above approved the report counted.
    pub fn is_approved(&self) -> bool {
        self.approval
            .as_ref()
            .is_some_and(|a| a.state == State::Approved)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoveredHead {
    pub author: NodeId,
    pub name: String,
    pub seq: u64,
    pub hash: DeltaHash,
}

/// The counted report's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub revision: u32,
    pub submitted_by: String,
    pub submitted_ms: u64,
    /// As the report names them: a former name stays as it was signed.
    pub values: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: Categories,
    /// The schema version the report was submitted under.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

impl Figures {
    pub fn of(r: Report) -> Figures {
        Figures {
            revision: r.revision,
            submitted_by: r.submitted_by,
            submitted_ms: r.submitted_ms,
            values: r.metrics,
            categories: r.categories,
            schema_version: r.schema_version,
            notes: r.notes,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A metric over the reports that carry it: count, sum, min and max, and
/// the figure its rule makes of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTotal {
    pub metric: String,
    #[serde(default, skip_serializing_if = "is_sum")]
    pub rule: Rule,
    pub count: u64,
    pub sum: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// The figure the rule makes (absent from v1 aggregates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Figure>,
    /// For `last`: whose report the figure is (region or region/unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<CategoryTotal>,
}

/// One combination of a breakdown, over the reports that give it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryTotal {
    pub category: String,
    pub count: u64,
    pub sum: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub value: Option<Figure>,
}

fn is_sum(r: &Rule) -> bool {
    *r == Rule::Sum
}

/// A figure: a whole number, or a mean kept in thousandths so that the
/// document and its recomputation compare exactly. JSON has it as `42`
/// or `3.5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    Whole(i64),
    Thousandths(i64),
}

impl Figure {
    /// `sum / count`, rounded to the nearest thousandth.
    pub(super) fn mean(sum: i64, count: u64) -> Option<Figure> {
        let (sum, count) = (i128::from(sum) * 1000, i128::from(count));
        (count > 0).then(|| {
            let half = if sum < 0 { -count / 2 } else { count / 2 };
            Figure::Thousandths(((sum + half) / count) as i64)
        })
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Figure::Whole(n) => write!(f, "{n}"),
            Figure::Thousandths(t) => {
                let sign = if t < 0 { "-" } else { "" };
                let t = t.unsigned_abs();
                let frac = format!("{:03}", t % 1000);
                write!(
                    f,
                    "{sign}{}.{}",
                    t / 1000,
                    frac.trim_end_matches('0').max("0")
                )
            }
        }
    }
}

impl Serialize for Figure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Figure::Whole(n) => s.serialize_i64(n),
            Figure::Thousandths(t) => s.serialize_f64(t as f64 / 1000.0),
        }
    }
}

impl<'de> Deserialize<'de> for Figure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Figure, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(Figure::Whole(i));
        }
        match n.as_f64() {
            Some(v) if v.is_finite() && v.abs() < 1e15 => {
                Ok(Figure::Thousandths((v * 1000.0).round() as i64))
            }
            _ => Err(serde::de::Error::custom(format!("{n} is not a figure"))),
        }
    }
}

/// How a part's report stands against the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeliness {
    /// Submitted (its first revision) by the deadline.
    OnTime,
    /// Submitted after it.
    Late,
    /// Counted, and no deadline applies.
    Received,
    /// None counted yet, and not due yet.
    Pending,
    /// None counted, and the deadline has passed.
    Overdue,
    /// None counted, and no deadline applies.
    Missing,
}

impl Timeliness {
    /// Judges a part: `counted`, the first revision's time if its report is
    /// counted; `due`, the deadline if one applies; `now`, the aggregate's.
    pub fn judge(counted: Option<u64>, due: Option<u64>, now: u64) -> Timeliness {
        match (counted, due) {
            (Some(t), Some(due)) if t <= due => Timeliness::OnTime,
            (Some(_), Some(_)) => Timeliness::Late,
            (Some(_), None) => Timeliness::Received,
            (None, Some(due)) if now <= due => Timeliness::Pending,
            (None, Some(_)) => Timeliness::Overdue,
            (None, None) => Timeliness::Missing,
        }
    }

    /// `on time`, `overdue`: as tables print it.
    pub fn describe(self) -> &'static str {
        match self {
            Timeliness::OnTime => "on time",
            Timeliness::Late => "late",
            Timeliness::Received => "received",
            Timeliness::Pending => "pending",
            Timeliness::Overdue => "overdue",
            Timeliness::Missing => "missing",
        }
    }

    /// Late or overdue: what `report overdue` lists.
    pub fn is_behind(self) -> bool {
        matches!(self, Timeliness::Late | Timeliness::Overdue)
    }
}

/// Reporting rates over the entries of an aggregate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// Every region and unit in scope.
    pub expected: u64,
    /// Reports counted (on time, late, or with no deadline).
    pub received: u64,
    /// Submitted by the deadline.
    pub on_time: u64,
    pub late: u64,
    /// Held by the aggregating node only after the deadline, whatever
    /// their signed time says.
    pub arrived_late: u64,
    pub pending: u64,
    pub overdue: u64,
    /// Reports held that could not be counted.
    pub invalid: u64,
    /// Reports counted that the level above approved.
    #[serde(default)]
    pub approved: u64,
    /// Received over expected, in percent; absent when none is expected.
    pub reporting_rate: Option<Pct>,
    /// On time over expected, as DHIS2 states it.
    pub on_time_rate: Option<Pct>,
}

/// A percentage to one decimal, kept in tenths so that the document and
/// its recomputation compare exactly; it reads and writes as `87.5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pct(pub u16);

impl Pct {
    pub fn of(n: u64, of: u64) -> Option<Pct> {
        (of > 0).then(|| Pct(((n.min(of) * 1000 + of / 2) / of) as u16))
    }
}

impl std::fmt::Display for Pct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}%", self.0 / 10, self.0 % 10)
    }
}

impl Serialize for Pct {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 10.0)
    }
}

impl<'de> Deserialize<'de> for Pct {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pct, D::Error> {
        let v = f64::deserialize(d)?;
        if !(0.0..=100.0).contains(&v) {
            return Err(serde::de::Error::custom(format!("{v} is not a percentage")));
        }
        Ok(Pct((v * 10.0).round() as u16))
    }
}

/// Rates in total and per region (a region's own report with its units').
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporting {
    pub total: Rates,
    pub regions: Vec<RegionRates>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRates {
    pub region: String,
    #[serde(flatten)]
    pub rates: Rates,
}

/// An aggregate entry's approval, as the aggregating node held it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    pub state: State,
    pub approver: String,
    /// The approval record's delta.
    pub approval: DeltaRef,
    /// The report delta it names, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<DeltaRef>,
    /// For a refused record: why it is not an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// In force for the report counted.
    Approved,
    /// In force for an earlier revision: the later one broke the lock.
    LockBroken,
    Withdrawn,
    /// Of a report delta the aggregating node did not hold yet: not
    /// honoured until it does.
    Waiting,
    /// Not an approval of this part: never honoured.
    Refused,
}

impl State {
    pub fn describe(self) -> &'static str {
        match self {
            State::Approved => "approved",
            State::LockBroken => "lock broken",
            State::Withdrawn => "withdrawn",
            State::Waiting => "approval of a report not held yet",
            State::Refused => "forged approval refused",
        }
    }
}

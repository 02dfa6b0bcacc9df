//! One period's reports, totalled, with the coverage that says what the
//! totals include: for every region and unit in scope, the log positions
//! (author, seq, head hash) they were computed from, the report counted (or
//! that none was), and whether this node's view of it is stale.
//!
//! Each part of the tree reports its own work, so a total counts every
//! region's and unit's last report once. A unit counts in the region the
//! roster in force places it in (the aggregate names that roster's
//! version), wherever it sat when it submitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::rules::{totals, CategoryTotal, Figure, MetricTotal};
use super::timeliness::{first_revision, Reporting, Timeliness};
use super::{read, Categories, DeltaRef, Part, Period, Report, Rule, Schema};
use crate::core::ids::{DeltaHash, NodeId};
use crate::core::replica::Replica;
use crate::core::roster::{Member, Roster};
use crate::core::store::Store;

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

    /// `included`, `missing` or `invalid`.
    pub fn status(&self) -> &'static str {
        match (&self.report, &self.figures) {
            (None, _) => "missing",
            (Some(_), Some(_)) => "included",
            (Some(_), None) => "invalid",
        }
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

/// What the aggregating node knows besides its store.
pub struct Context<'a> {
    pub period: Period,
    pub schema: &'a Schema,
    pub me: NodeId,
    pub my_name: &'a str,
    pub now_ms: u64,
    pub stale_after_ms: u64,
    /// When this node last heard directly from the named member (now, while
    /// a link to it is open), if ever.
    pub last_contact: &'a dyn Fn(&str) -> Option<u64>,
    /// `None`: the whole federation; else a part and everything below it.
    pub scope: Option<Part>,
}

/// Where an entry sits: its region, and its unit if it is a unit's.
type Slot = (String, Option<String>);

/// The slot `part` fills in the tree in force; `None` for a unit outside
/// it (a signed roster holds none).
fn slot(roster: &Roster, part: &Part) -> Option<Slot> {
    match part {
        Part::Region(r) => Some((r.clone(), None)),
        Part::Unit(u) => Some((roster.units.region_of(u)?.to_owned(), Some(u.clone()))),
    }
}

fn in_scope(roster: &Roster, scope: &Option<Part>, (region, unit): &Slot) -> bool {
    match (scope, unit) {
        (None, _) => true,
        (Some(Part::Region(r)), _) => r == region,
        (Some(Part::Unit(s)), Some(u)) => roster.units.is_within(u, s),
        (Some(Part::Unit(_)), None) => false,
    }
}

/// The nodes above a unit, nearest first: its parent units', then its
/// region's. A unit's reports reach this node through them.
fn above<'r>(roster: &'r Roster, (region, unit): &Slot) -> Vec<&'r Member> {
    let Some(place) = unit.as_deref().and_then(|u| roster.units.place(u)) else {
        return Vec::new();
    };
    let mut parts: Vec<Part> = (place.units.iter().rev().skip(1))
        .map(|u| Part::Unit((*u).to_owned()))
        .collect();
    parts.push(Part::Region(region.clone()));
    parts
        .iter()
        .flat_map(|p| roster.members().filter(move |m| p.is_author(m)))
        .collect()
}

/// Aggregates `cx.period` from what `replica` holds now.
pub fn compute<S: Store>(replica: &Replica<S>, cx: &Context<'_>) -> Result<Aggregate, S::Error> {
    let roster = replica.roster();
    let me = roster.member(&cx.me);
    let my_part = me.and_then(Part::of);
    // Parts are the roster's: a region or unit with no report is listed
    // missing. A region sorts before its units.
    let mut parts: BTreeMap<Slot, Vec<&Member>> = BTreeMap::new();
    for m in roster.members() {
        let Some(slot) = Part::of(m).and_then(|p| slot(roster, &p)) else {
            continue;
        };
        if in_scope(roster, &cx.scope, &slot) {
            parts.entry(slot).or_default().push(m);
        }
    }
    let mut out = Vec::with_capacity(parts.len());
    let mut warnings = Vec::new();
    let due_ms = cx.period.due_ms(&cx.schema.due);
    let renamed = cx.schema.renames();
    for (slot, members) in parts {
        let (region, unit) = (slot.0.as_str(), slot.1.as_deref());
        let part = match unit {
            Some(u) => Part::Unit(u.to_owned()),
            None => Part::Region(region.to_owned()),
        };
        let frontier = members
            .iter()
            .map(|m| {
                let head = replica.frontier().head(&m.id);
                CoveredHead {
                    author: m.id,
                    name: m.name.clone(),
                    seq: head.seq,
                    hash: head.hash,
                }
            })
            .collect();
        // A node is never stale to itself. A unit this node does not
        // hear from directly is as fresh as the nodes above it that it
        // does hear from: its reports come through them.
        let contact = |ms: &[&Member]| ms.iter().filter_map(|m| (cx.last_contact)(&m.name)).max();
        let last_contact = if my_part.as_ref() == Some(&part) {
            Some(cx.now_ms)
        } else {
            contact(&members).or_else(|| contact(&above(roster, &slot)))
        };
        let stale = last_contact.is_none_or(|t| cx.now_ms.saturating_sub(t) > cx.stale_after_ms);
        let key = part.key(cx.period);
        let delta = match replica.store().record(&key)? {
            Some(r) if !r.deleted => replica.store().delta(&r.author, r.seq)?,
            _ => None,
        };
        let mut first = None;
        let (figures, invalid) = match delta.as_ref().map(|d| (d, read(d, cx.schema))) {
            None => (None, None),
            Some((d, Ok(r))) => {
                first = Some(first_revision(replica.store(), d, &r)?);
                (Some(Figures::of(r)), None)
            }
            Some((_, Err(e))) => (None, Some(e.to_string())),
        };
        if let Some(why) = first.as_ref().and_then(|f| f.broken.as_ref()) {
            warnings.push(format!(
                "{}: timeliness from the oldest revision held: {why}",
                part.describe()
            ));
        }
        let submitted = first.as_ref().map(|f| f.submitted_ms);
        let held = first.as_ref().and_then(|f| f.held_ms);
        if let Some(f) = &figures {
            let unknown = (f.values.keys())
                .filter(|n| cx.schema.metric(n).is_none() && !renamed.contains_key(*n));
            for name in unknown {
                warnings.push(format!(
                    "{}: metric {name} (schema v{}) is not in schema v{}; not in the totals",
                    part.describe(),
                    f.schema_version,
                    cx.schema.version
                ));
            }
        }
        if let Some(why) = &invalid {
            warnings.push(format!("{}: report not counted: {why}", part.describe()));
        }
        out.push(RegionCoverage {
            region: region.to_owned(),
            unit: unit.map(str::to_owned),
            frontier,
            missing: delta.is_none(),
            report: delta.as_ref().map(DeltaRef::of),
            figures,
            invalid,
            stale,
            last_contact_ms: last_contact,
            first_submitted_ms: submitted,
            first_held_ms: held,
            timeliness: Some(Timeliness::judge(submitted, due_ms, cx.now_ms)),
            arrived: (held.zip(due_ms))
                .map(|(h, d)| Timeliness::judge(Some(h), Some(d), cx.now_ms)),
        });
    }
    let metrics: Vec<String> = cx.schema.metrics.iter().map(|m| m.name.clone()).collect();
    for (part, f) in out
        .iter()
        .filter_map(|e| Some((e.part(), e.figures.as_ref()?)))
    {
        for (old, new) in f.values.keys().filter_map(|k| Some((k, renamed.get(k)?))) {
            warnings.push(format!(
                "{}: metric {old}, as reported under schema v{}, counted as {new} (renamed by v{})",
                part.describe(),
                f.schema_version,
                cx.schema.version
            ));
        }
    }
    let mut agg = Aggregate {
        format: FORMAT.into(),
        period: cx.period.to_string(),
        computed_by: cx.my_name.to_owned(),
        computed_by_id: cx.me,
        computed_ms: cx.now_ms,
        roster_version: roster.version,
        scope: cx.scope.as_ref().map(Part::describe),
        stale_after_ms: cx.stale_after_ms,
        due_ms,
        reporting: Some(Reporting::of(&out)),
        totals: Vec::new(),
        metrics,
        schema_version: cx.schema.version,
        rules: (cx.schema.metrics.iter())
            .filter(|m| m.aggregate != Rule::Sum)
            .map(|m| (m.name.clone(), m.aggregate))
            .collect(),
        renamed,
        regions: out,
        warnings,
    };
    agg.totals = totals(&agg, &agg.regions);
    Ok(agg)
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

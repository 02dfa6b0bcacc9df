//! One period's reports, totalled, with the coverage that says what the
//! totals include: for every region in the roster, the log positions (author,
//! seq, head hash) they were computed from, the report counted (or that none
//! was), and whether this node's view of the region is stale.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{read, report_key, DeltaRef, Period, Report, Schema};
use crate::core::ids::{DeltaHash, NodeId};
use crate::core::replica::Replica;
use crate::core::roster::Role;
use crate::core::store::Store;

/// The `format` of every aggregate this version writes.
pub const FORMAT: &str = "fedsync.aggregate.v1";

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
    /// A region not heard from for longer than this is stale.
    pub stale_after_ms: u64,
    /// The schema's metrics, in its order: the ones totalled.
    pub metrics: Vec<String>,
    pub totals: Vec<MetricTotal>,
    /// Every region in the roster, by name.
    pub regions: Vec<RegionCoverage>,
    /// What was left out of the totals, and why.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Count, sum, min and max of one metric over the reports that carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTotal {
    pub metric: String,
    pub count: u64,
    pub sum: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

/// One region's part: what was counted, and from which point of its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionCoverage {
    pub region: String,
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
}

impl RegionCoverage {
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
    pub values: BTreeMap<String, i64>,
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
}

/// Aggregates `cx.period` from what `replica` holds now.
pub fn compute<S: Store>(replica: &Replica<S>, cx: &Context<'_>) -> Result<Aggregate, S::Error> {
    let roster = replica.roster();
    let me = roster.member(&cx.me);
    let my_region = me.and_then(|m| m.region.as_deref());
    // Regions are the roster's: a region with no report is listed missing.
    let mut regions: BTreeMap<&str, Vec<&crate::core::Member>> = BTreeMap::new();
    for m in roster.members() {
        if let (true, Some(r)) = (m.roles.contains(&Role::Region), m.region.as_deref()) {
            regions.entry(r).or_default().push(m);
        }
    }
    let mut out = Vec::with_capacity(regions.len());
    let mut warnings = Vec::new();
    for (region, members) in regions {
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
        // A node is never stale to itself.
        let last_contact = if my_region == Some(region) {
            Some(cx.now_ms)
        } else {
            members
                .iter()
                .filter_map(|m| (cx.last_contact)(&m.name))
                .max()
        };
        let stale = last_contact.is_none_or(|t| cx.now_ms.saturating_sub(t) > cx.stale_after_ms);
        let key = report_key(region, cx.period);
        let delta = match replica.store().record(&key)? {
            Some(r) if !r.deleted => replica.store().delta(&r.author, r.seq)?,
            _ => None,
        };
        let (figures, invalid) = match delta.as_ref().map(|d| read(d, cx.schema)) {
            None => (None, None),
            Some(Ok(r)) => (Some(Figures::of(r)), None),
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        if let Some(f) = &figures {
            for name in f.values.keys().filter(|n| cx.schema.metric(n).is_none()) {
                warnings.push(format!(
                    "region {region}: metric {name} is not in the schema; not in the totals"
                ));
            }
        }
        if let Some(why) = &invalid {
            warnings.push(format!("region {region}: report not counted: {why}"));
        }
        out.push(RegionCoverage {
            region: region.to_owned(),
            frontier,
            missing: delta.is_none(),
            report: delta.as_ref().map(DeltaRef::of),
            figures,
            invalid,
            stale,
            last_contact_ms: last_contact,
        });
    }
    let metrics: Vec<String> = cx.schema.metrics.iter().map(|m| m.name.clone()).collect();
    Ok(Aggregate {
        format: FORMAT.into(),
        period: cx.period.to_string(),
        computed_by: cx.my_name.to_owned(),
        computed_by_id: cx.me,
        computed_ms: cx.now_ms,
        roster_version: roster.version,
        stale_after_ms: cx.stale_after_ms,
        totals: totals(&metrics, &out),
        metrics,
        regions: out,
        warnings,
    })
}

/// Each metric's count, sum, min and max over the regions' readable
/// reports. Values are bounded by [`super::VALUE_MAX`], so a sum over any
/// roster fits in i64; saturating is only a guard against a bad document.
pub fn totals(metrics: &[String], regions: &[RegionCoverage]) -> Vec<MetricTotal> {
    metrics
        .iter()
        .map(|metric| {
            // Only a report counts: figures beside "missing" are not.
            let values = (regions.iter())
                .filter(|r| r.report.is_some())
                .filter_map(|r| r.figures.as_ref()?.values.get(metric).copied());
            let mut t = MetricTotal {
                metric: metric.clone(),
                count: 0,
                sum: 0,
                min: None,
                max: None,
            };
            for v in values {
                t.count += 1;
                t.sum = t.sum.saturating_add(v);
                t.min = Some(t.min.map_or(v, |m| m.min(v)));
                t.max = Some(t.max.map_or(v, |m| m.max(v)));
            }
            t
        })
        .collect()
}

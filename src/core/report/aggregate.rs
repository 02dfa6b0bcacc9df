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

use super::approval::{self, Blocked};
pub use super::coverage::{
    Aggregate, CategoryTotal, CoveredHead, Figure, Figures, MetricTotal, RegionCoverage, FORMAT,
    FORMAT_V1,
};
pub use super::rules::totals;
use super::timeliness::{first_revision, Reporting, Timeliness};
use super::{read, DeltaRef, Part, Period, Rule, Schema};
use crate::core::ids::NodeId;
use crate::core::replica::Replica;
use crate::core::roster::{Member, Roster};
use crate::core::store::Store;

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
    /// Count only reports approved by the level above.
    pub approved_only: bool,
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
        let (mut figures, mut invalid) = match delta.as_ref().map(|d| (d, read(d, cx.schema))) {
            None => (None, None),
            Some((d, Ok(r))) => {
                first = Some(first_revision(replica.store(), d, &r)?);
                (Some(Figures::of(r)), None)
            }
            Some((_, Err(e))) => (None, Some(e.to_string())),
        };
        let readable = delta
            .as_ref()
            .filter(|_| figures.is_some())
            .map(DeltaRef::of);
        let (approval, blocked) = approval::review(
            replica,
            &part,
            cx.period,
            readable.as_ref(),
            cx.approved_only,
        )?;
        let mut unapproved = false;
        match blocked {
            Some(Blocked::Locked(why)) => (figures, invalid) = (None, Some(why)),
            Some(Blocked::Unapproved) => (figures, unapproved) = (None, true),
            None => {}
        }
        if let Some(why) = approval.as_ref().and_then(|n| n.why.as_ref()) {
            warnings.push(format!(
                "{}: the record at its approval key is not an approval: {why}",
                part.describe()
            ));
        }
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
            approval,
            unapproved,
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
        approved_only: cx.approved_only,
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

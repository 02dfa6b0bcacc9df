//! Receipts: for each revision of a part's reports, whether HQ holds it
//! and since when, from what HQ itself confirmed, never a guess:
//! - over a link to an HQ node, the seq of the log HQ confirmed holding,
//!   and when this node first saw it confirm that far;
//! - in the newest aggregate HQ published and signed, the log point it
//!   covered (it held the revision when it computed), and whether the
//!   revision is the one counted.
//!
//! A node with no link to HQ (a unit below its region) learns of HQ's
//! holdings only from the published aggregate; without one, it says it
//! does not know.

use std::collections::BTreeMap;

use serde::Serialize;

use super::coverage::{Aggregate, RegionCoverage};
use super::{DeltaRef, Part, Report};
use crate::core::delta::SignedDelta;
use crate::core::ids::{DeltaHash, NodeId};

/// What one HQ node confirmed over its link with this node.
pub struct HqLink {
    pub name: String,
    /// Per author, the seq of its log HQ confirmed holding; an author
    /// absent: HQ has not said.
    pub confirmed: BTreeMap<NodeId, u64>,
    /// Steps of confirmation this node saw, oldest first: author, seq
    /// confirmed, and when it first saw that.
    pub steps: Vec<(NodeId, u64, u64)>,
    /// Its last word on the link.
    pub as_of_ms: Option<u64>,
}

impl HqLink {
    fn since(&self, author: &NodeId, seq: u64) -> Option<u64> {
        (self.steps.iter())
            .find(|(a, s, _)| a == author && *s >= seq)
            .map(|(_, _, t)| *t)
    }
}

/// One revision's receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub period: String,
    pub revision: u32,
    pub author: NodeId,
    pub seq: u64,
    pub hash: DeltaHash,
    pub submitted_ms: u64,
    /// The report's current revision at this node.
    pub current: bool,
    pub at_hq: AtHq,
    /// In the newest aggregate HQ published for the period, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_aggregate: Option<InAggregate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AtHq {
    /// HQ node `by` confirmed holding it over the link, first seen at
    /// `since_ms` (absent if before this node last started).
    Held {
        by: String,
        since_ms: Option<u64>,
        as_of_ms: Option<u64>,
    },
    /// HQ's signed aggregate, computed at `at_ms`, covered it.
    Covered { by: String, at_ms: u64 },
    /// HQ node `by` confirmed this log only to `confirmed_seq`.
    NotYet {
        by: String,
        confirmed_seq: u64,
        as_of_ms: Option<u64>,
    },
    /// No link to HQ has said, and no published aggregate covers it.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InAggregate {
    pub signer: String,
    pub computed_ms: u64,
    /// `counted`, `superseded` (a later revision counted), `not counted`
    /// (covered, yet not counted: the entry says why) or `not covered`.
    pub status: &'static str,
    pub approved: bool,
    /// Why the entry counts nothing, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Receipts for `revisions` (one report's, newest first) of `part`.
pub fn receipts(
    part: &Part,
    revisions: &[SignedDelta],
    links: &[HqLink],
    published: Option<&Aggregate>,
) -> Vec<Receipt> {
    let entry = published.and_then(|a| a.regions.iter().find(|e| e.part() == *part));
    revisions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let r = Report::decode(d).ok()?;
            Some(Receipt {
                period: r.period.clone(),
                revision: r.revision,
                author: d.author(),
                seq: d.seq(),
                hash: d.hash(),
                submitted_ms: r.submitted_ms,
                current: i == 0,
                at_hq: at_hq(d, links, published.zip(entry)),
                in_aggregate: published.map(|a| in_aggregate(a, entry, d)),
            })
        })
        .collect()
}

fn covers(entry: &RegionCoverage, d: &SignedDelta) -> bool {
    entry
        .frontier
        .iter()
        .any(|h| h.author == d.author() && h.seq >= d.seq())
}

fn at_hq(
    d: &SignedDelta,
    links: &[HqLink],
    published: Option<(&Aggregate, &RegionCoverage)>,
) -> AtHq {
    let (author, seq) = (d.author(), d.seq());
    if let Some(l) = links
        .iter()
        .find(|l| l.confirmed.get(&author).is_some_and(|c| *c >= seq))
    {
        return AtHq::Held {
            by: l.name.clone(),
            since_ms: l.since(&author, seq),
            as_of_ms: l.as_of_ms,
        };
    }
    if let Some((a, _)) = published.filter(|(_, e)| covers(e, d)) {
        return AtHq::Covered {
            by: a.computed_by.clone(),
            at_ms: a.computed_ms,
        };
    }
    match links
        .iter()
        .find_map(|l| Some((l, *l.confirmed.get(&author)?)))
    {
        Some((l, confirmed_seq)) => AtHq::NotYet {
            by: l.name.clone(),
            confirmed_seq,
            as_of_ms: l.as_of_ms,
        },
        None => AtHq::Unknown,
    }
}

fn in_aggregate(a: &Aggregate, entry: Option<&RegionCoverage>, d: &SignedDelta) -> InAggregate {
    let me = DeltaRef::of(d);
    let (status, approved, why) = match entry {
        None => ("not covered", false, None),
        Some(e) if e.report.as_ref() == Some(&me) && e.figures.is_some() => {
            ("counted", e.is_approved(), None)
        }
        Some(e) if e.report.as_ref() == Some(&me) => {
            let why = e
                .invalid
                .clone()
                .or(e.unapproved.then(|| "not approved".to_owned()));
            ("not counted", false, why)
        }
        Some(e) if covers(e, d) => ("superseded", false, None),
        Some(_) => ("not covered", false, None),
    };
    InAggregate {
        signer: a.computed_by.clone(),
        computed_ms: a.computed_ms,
        status,
        approved,
        why,
    }
}

/// Where HQ publishes its signed aggregate of `period`.
pub fn published_key(period: super::Period) -> String {
    format!("hq/reports/aggregates/{period}")
}

/// The newest aggregate of `period` HQ published, as this replica holds
/// it: only a document whose signature verifies and whose signer is an
/// HQ node in this roster.
pub fn published<S: crate::core::store::Store>(
    replica: &crate::core::replica::Replica<S>,
    period: super::Period,
) -> Result<Option<Aggregate>, S::Error> {
    let Some(d) = replica.get(&published_key(period))? else {
        return Ok(None);
    };
    let Ok(opened) = super::document::open(d.value()) else {
        return Ok(None);
    };
    let by_hq = (replica.roster().member(&opened.signer))
        .is_some_and(|m| m.roles.contains(&crate::core::roster::Role::Hq) && m.id == d.author());
    Ok(by_hq
        .then_some(opened.aggregate)
        .filter(|a| a.period == period.to_string()))
}

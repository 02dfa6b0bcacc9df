//! Deadlines: whether each part's report came in on time, and the
//! reporting rates an aggregate states.
//!
//! A report is judged twice, as an HQ that wants both facts would:
//! - by its first revision's signed `submitted_ms`: what the office says,
//!   under its own key, and what anyone holding the log can check;
//! - by when the aggregating node first held any revision of it: what that
//!   node saw, which a link down for a week makes late even when the office
//!   was not. Only that node can vouch for this one.
//!
//! The first revision counts, so a correction after the deadline does not
//! make an on-time report late; the revision counted is shown beside it.

use super::coverage::{Aggregate, RegionCoverage};
pub use super::coverage::{Pct, Rates, RegionRates, Reporting, Timeliness};
use super::period::civil;
use super::{previous, Back, Report};
use crate::core::delta::SignedDelta;
use crate::core::store::Store;

/// Revisions followed back to the first before giving up.
const CHAIN_MAX: usize = 10_000;

/// A report's first revision, found by walking its supersede chain back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct First {
    /// The first revision's signed submission time.
    pub submitted_ms: u64,
    pub revision: u32,
    /// The earliest time this node first held any revision on the way.
    pub held_ms: Option<u64>,
    /// Why the walk stopped before revision 1, if it did: the times are
    /// then the oldest revision's held here.
    pub broken: Option<String>,
}

/// Walks back from `current` (a readable report) to its first revision.
pub fn first_revision<S: Store>(
    store: &S,
    current: &SignedDelta,
    current_report: &Report,
) -> Result<First, S::Error> {
    let mut first = First {
        submitted_ms: current_report.submitted_ms,
        revision: current_report.revision,
        held_ms: store.arrived(&current.author(), current.seq())?,
        broken: None,
    };
    let mut cur = current.clone();
    for _ in 0..CHAIN_MAX {
        cur = match previous(store, &cur)? {
            Back::Revision(d) => d,
            Back::First => return Ok(first),
            Back::Broken(why) => {
                first.broken = Some(why);
                return Ok(first);
            }
        };
        if let Some(t) = store.arrived(&cur.author(), cur.seq())? {
            first.held_ms = Some(first.held_ms.map_or(t, |h| h.min(t)));
        }
        // `previous` read it to get here, so only a revision it could not
        // read stops the walk (at the next step).
        if let Ok(r) = Report::decode(&cur) {
            first.submitted_ms = r.submitted_ms;
            first.revision = r.revision;
        }
    }
    first.broken = Some(format!(
        "the report's history is longer than {CHAIN_MAX} revisions"
    ));
    Ok(first)
}

impl Rates {
    fn add(&mut self, e: &RegionCoverage) {
        self.expected += 1;
        let t = e.timeliness.unwrap_or(Timeliness::Missing);
        self.received += u64::from(matches!(
            t,
            Timeliness::OnTime | Timeliness::Late | Timeliness::Received
        ));
        self.on_time += u64::from(t == Timeliness::OnTime);
        self.late += u64::from(t == Timeliness::Late);
        self.pending += u64::from(t == Timeliness::Pending);
        self.overdue += u64::from(t == Timeliness::Overdue);
        self.arrived_late += u64::from(e.arrived == Some(Timeliness::Late));
        self.invalid += u64::from(e.status() == "invalid");
        self.approved += u64::from(e.figures.is_some() && e.is_approved());
    }

    fn finish(&mut self) {
        self.reporting_rate = Pct::of(self.received, self.expected);
        self.on_time_rate = Pct::of(self.on_time, self.expected);
    }
}

impl Reporting {
    /// The rates of `entries`, which list each region before its units.
    pub fn of(entries: &[RegionCoverage]) -> Reporting {
        let mut out = Reporting::default();
        for e in entries {
            out.total.add(e);
            match out.regions.last_mut() {
                Some(r) if r.region == e.region => r.rates.add(e),
                _ => {
                    let mut rates = Rates::default();
                    rates.add(e);
                    out.regions.push(RegionRates {
                        region: e.region.clone(),
                        rates,
                    });
                }
            }
        }
        out.total.finish();
        out.regions.iter_mut().for_each(|r| r.rates.finish());
        out
    }
}

/// What an entry's timeliness must be, from its own fields: the check a
/// verifier runs on every entry. `Err` says what contradicts.
pub fn recheck(e: &RegionCoverage, due: Option<u64>, now: u64) -> Result<(), String> {
    // Received is readable: counted, or held out only for its approval.
    let counted = e.first_submitted_ms;
    if e.figures.is_some() && e.first_submitted_ms.is_none() {
        return Err(format!("{}: counted, with no submission time", e.label()));
    }
    let want = Timeliness::judge(counted, due, now);
    if e.timeliness != Some(want) {
        return Err(format!(
            "{} is listed {}, but by its times it is {}",
            e.label(),
            e.timeliness.map_or("unjudged", Timeliness::describe),
            want.describe()
        ));
    }
    let arrived = (e.first_submitted_ms)
        .and(e.first_held_ms)
        .zip(due)
        .map(|(held, due)| Timeliness::judge(Some(held), Some(due), now));
    if e.arrived != arrived {
        return Err(format!(
            "{}'s arrival is listed {}, but by its times it is {}",
            e.label(),
            e.arrived.map_or("unjudged", Timeliness::describe),
            arrived.map_or("unjudged", Timeliness::describe)
        ));
    }
    Ok(())
}

/// The verifier's check of an aggregate's deadline arithmetic: every
/// entry's judgement follows from its times, and the rates from the
/// entries. `Ok` and `Err` are a passed and a failed check, in words.
pub fn check_rates(agg: &Aggregate) -> Result<String, String> {
    for e in &agg.regions {
        recheck(e, agg.due_ms, agg.computed_ms)?;
    }
    let want = Reporting::of(&agg.regions);
    if agg.reporting.as_ref() != Some(&want) {
        return Err("the reporting rates are not those of the entries listed".into());
    }
    let t = &want.total;
    Ok(format!(
        "the reporting rates follow from the entries: {} of {} received, {} on time{}",
        t.received,
        t.expected,
        t.on_time,
        agg.due_ms
            .map_or(", no deadline set".into(), |d| format!(", due {}", day(d)))
    ))
}

/// The verifier's check of one entry's first submission time against
/// this log: the first revision of the report counted, as signed.
pub fn check_first<S: Store>(
    store: &S,
    counted: &SignedDelta,
    entry: &RegionCoverage,
) -> Result<Result<String, String>, S::Error> {
    let Ok(report) = Report::decode(counted) else {
        return Ok(Err("the report counted cannot be read here".into()));
    };
    let first = first_revision(store, counted, &report)?;
    Ok(match entry.first_submitted_ms {
        Some(t) if t == first.submitted_ms => Ok(format!(
            "its first revision (revision {}) was signed as submitted at {}, as the aggregate says",
            first.revision,
            day(t)
        )),
        claimed => Err(format!(
            "the aggregate dates its first submission {}, but this log's revision {} says {}",
            claimed.map_or("nowhere".into(), day),
            first.revision,
            day(first.submitted_ms)
        )),
    })
}

/// `2026-10-16 00:00 UTC`: a time as deadlines are read.
pub fn day(ms: u64) -> String {
    let c = civil(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

//! How an aggregate and a history print: a table for people, CSV for
//! spreadsheets. The JSON is the signed document itself.

use std::fmt::Write;

use fedsync::client::Revision;
use fedsync::core::report::aggregate::{totals, Aggregate, Figure, MetricTotal, RegionCoverage};
use fedsync::core::report::approval::State;
use fedsync::core::report::timeliness::{day, Pct, Rates, Timeliness};

use super::By;
use fedsync::node::status::age;

use crate::cli::status::ago;
use crate::cli::trust::when;

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}

/// The figure a metric's rule makes, `-` if none; a v1 aggregate's sum.
fn value(t: &MetricTotal) -> String {
    match (t.value, t.count) {
        (Some(v), _) => v.to_string(),
        (None, 0) => "-".into(),
        (None, _) => t.sum.to_string(),
    }
}

/// Each broken-down metric's figure per combination, by its rule.
fn categories(out: &mut String, a: &Aggregate) {
    let broken: Vec<&MetricTotal> = a
        .totals
        .iter()
        .filter(|t| !t.categories.is_empty())
        .collect();
    if broken.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:<40} {:>14} {:>6}",
        "METRIC", "CATEGORY", "VALUE", "COUNT"
    );
    for t in broken {
        for c in &t.categories {
            let v = c.value.map_or("-".into(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{:<20} {:<40} {v:>14} {:>6}",
                t.metric, c.category, c.count
            );
        }
    }
}

fn frontier(r: &RegionCoverage) -> String {
    let heads: Vec<String> = r
        .frontier
        .iter()
        .map(|h| format!("{}:{} {}", h.name, h.seq, h.hash.short()))
        .collect();
    heads.join(", ")
}

/// `on time`, `late 3d`, `overdue 2d`, `pending, due in 4d`: the entry
/// against its deadline, as of the aggregate.
pub fn deadline_cell(a: &Aggregate, r: &RegionCoverage) -> String {
    let Some(t) = r.timeliness else {
        return "-".into();
    };
    let by = |late: u64| age(late);
    match (t, a.due_ms) {
        (Timeliness::Late, Some(due)) => {
            format!(
                "late {}",
                by(r.first_submitted_ms.unwrap_or(due).saturating_sub(due))
            )
        }
        (Timeliness::Overdue, Some(due)) => {
            format!("overdue {}", by(a.computed_ms.saturating_sub(due)))
        }
        (Timeliness::Pending, Some(due)) => {
            format!("due in {}", by(due.saturating_sub(a.computed_ms)))
        }
        (t, _) => t.describe().into(),
    }
}

fn pct(p: Option<Pct>) -> String {
    p.map_or("-".into(), |p| p.to_string())
}

/// `4 of 5 received (80.0%), 4 on time (80.0%), 0 late, 0 overdue, 1 pending`.
fn summary(t: &Rates) -> String {
    format!(
        "{} of {} received ({}), {} on time ({}), {} late, {} overdue, {} pending",
        t.received,
        t.expected,
        pct(t.reporting_rate),
        t.on_time,
        pct(t.on_time_rate),
        t.late,
        t.overdue,
        t.pending
    )
}

/// The totals line of the reporting rates, and one line per region.
fn rates(out: &mut String, a: &Aggregate, name_w: usize) {
    let Some(rep) = &a.reporting else {
        return;
    };
    let due = a
        .due_ms
        .map_or("no deadline set".into(), |d| format!("due {}", day(d)));
    let t = &rep.total;
    let _ = writeln!(out, "\nREPORTING ({due}): {}", summary(t));
    if t.arrived_late > 0 {
        let _ = writeln!(
            out,
            "{} reached {} only after the deadline",
            t.arrived_late, a.computed_by
        );
    }
    let _ = writeln!(
        out,
        "{:<name_w$} {:>8} {:>8} {:>7} {:>4} {:>7} {:>7} {:>7} {:>7}",
        "REGION",
        "EXPECTED",
        "RECEIVED",
        "ON TIME",
        "LATE",
        "OVERDUE",
        "PENDING",
        "RATE",
        "ON-TIME"
    );
    for r in &rep.regions {
        let t = &r.rates;
        let _ = writeln!(
            out,
            "{:<name_w$} {:>8} {:>8} {:>7} {:>4} {:>7} {:>7} {:>7} {:>7}",
            r.region,
            t.expected,
            t.received,
            t.on_time,
            t.late,
            t.overdue,
            t.pending,
            pct(t.reporting_rate),
            pct(t.on_time_rate)
        );
    }
}

fn coverage_cell(r: &RegionCoverage) -> String {
    let status = match (r.status(), &r.figures) {
        ("included", Some(f)) => format!("included rev {}", f.revision),
        (s, _) => s.to_uppercase(),
    };
    let approval = match r.approval.as_ref().map(|n| n.state) {
        Some(State::Approved) => ", approved".to_owned(),
        Some(State::LockBroken) => ", LOCK BROKEN".to_owned(),
        Some(State::Withdrawn) => ", withdrawn".to_owned(),
        Some(State::Waiting) => ", approval waiting for its report".to_owned(),
        Some(State::Refused) => ", FORGED APPROVAL".to_owned(),
        None => String::new(),
    };
    if r.stale {
        format!("{status}{approval}, STALE")
    } else {
        format!("{status}{approval}")
    }
}

/// The rows `by` asks for, each a name and its metrics' totals: a region
/// with its units added in, or every region and unit alone.
fn rows(a: &Aggregate, by: By) -> Vec<(String, Vec<MetricTotal>)> {
    match by {
        By::Unit => (a.regions.iter())
            .map(|r| (r.label(), totals(a, std::slice::from_ref(r))))
            .collect(),
        By::Region => {
            let mut groups: Vec<(String, Vec<RegionCoverage>)> = Vec::new();
            for r in &a.regions {
                match groups.last_mut() {
                    Some((name, g)) if *name == r.region => g.push(r.clone()),
                    _ => groups.push((r.region.clone(), vec![r.clone()])),
                }
            }
            (groups.into_iter())
                .map(|(name, g)| (name, totals(a, &g)))
                .collect()
        }
    }
}

/// The aggregate as a person reads it: totals, optionally the figures by
/// region or unit, then the coverage and anything left out.
pub fn table(a: &Aggregate, by: Option<By>) -> String {
    let mut out = String::new();
    let scope = a
        .scope
        .as_deref()
        .map(|s| format!(" of {s}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Aggregate{scope} for {}, computed and signed by {} ({}) at {} UTC, roster v{}",
        a.period,
        a.computed_by,
        a.computed_by_id.short(),
        when(a.computed_ms),
        a.roster_version
    );
    if a.approved_only {
        let _ = writeln!(
            out,
            "approved reports only: each approved by the level above"
        );
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:<4} {:>14} {:>6} {:>14} {:>14} {:>14}",
        "METRIC", "RULE", "VALUE", "COUNT", "SUM", "MIN", "MAX"
    );
    for t in &a.totals {
        let _ = writeln!(
            out,
            "{:<20} {:<4} {:>14} {:>6} {:>14} {:>14} {:>14}",
            t.metric,
            t.rule.as_str(),
            value(t),
            t.count,
            t.sum,
            opt(t.min),
            opt(t.max)
        );
    }
    categories(&mut out, a);
    let name_w = (a.regions.iter().map(|r| r.label().len()))
        .max()
        .unwrap_or(0)
        .clamp(12, 32);
    if let Some(by) = by {
        let head = if by == By::Unit {
            "REGION/UNIT"
        } else {
            "REGION"
        };
        let _ = write!(out, "\n{head:<name_w$}");
        let widths: Vec<usize> = a.metrics.iter().map(|m| m.len().max(8)).collect();
        for (m, w) in a.metrics.iter().zip(&widths) {
            let _ = write!(out, " {m:>w$}");
        }
        out.push('\n');
        for (name, t) in rows(a, by) {
            let _ = write!(out, "{name:<name_w$}");
            for (t, w) in t.iter().zip(&widths) {
                let _ = write!(out, " {:>w$}", value(t));
            }
            out.push('\n');
        }
        let _ = write!(out, "{:<name_w$}", "TOTAL");
        for (t, w) in a.totals.iter().zip(&widths) {
            let _ = write!(out, " {:>w$}", value(t));
        }
        out.push('\n');
    }
    rates(&mut out, a, name_w);
    let _ = writeln!(
        out,
        "\nCOVERAGE (stale: no contact for over {})",
        age(a.stale_after_ms)
    );
    let _ = writeln!(
        out,
        "{:<name_w$} {:<34} {:<14} {:<12} FRONTIER COUNTED (author:seq head)",
        "REGION/UNIT", "REPORT", "DEADLINE", "CONTACT"
    );
    for r in &a.regions {
        let _ = writeln!(
            out,
            "{:<name_w$} {:<34} {:<14} {:<12} {}",
            r.label(),
            coverage_cell(r),
            deadline_cell(a, r),
            ago(a.computed_ms, r.last_contact_ms),
            frontier(r)
        );
    }
    let missing: Vec<String> = (a.regions.iter().filter(|r| r.missing))
        .map(|r| r.label())
        .collect();
    let stale: Vec<String> = (a.regions.iter().filter(|r| r.stale))
        .map(|r| r.label())
        .collect();
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "missing: {}; stale: {}", list(&missing), list(&stale));
    for w in &a.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// Who is late, for operators: each late or overdue entry with how late,
/// its signed submission and when this node first held it.
pub fn overdue(a: &Aggregate) -> String {
    let mut out = String::new();
    let Some(due) = a.due_ms else {
        let _ = writeln!(out, "the schema sets no deadline for {} reports", a.period);
        return out;
    };
    let _ = writeln!(
        out,
        "{} reports were due {}; as of {} at {}:",
        a.period,
        day(due),
        day(a.computed_ms),
        a.computed_by
    );
    let behind: Vec<&RegionCoverage> = (a.regions.iter())
        .filter(|r| r.timeliness.is_some_and(Timeliness::is_behind))
        .collect();
    if behind.is_empty() {
        let _ = writeln!(out, "nobody is late");
    } else {
        let w = behind
            .iter()
            .map(|r| r.label().len())
            .max()
            .unwrap_or(0)
            .max(11);
        let _ = writeln!(
            out,
            "{:<w$} {:<14} {:<22} HELD HERE SINCE",
            "REGION/UNIT", "STATE", "SUBMITTED (SIGNED)"
        );
        let at = |t: Option<u64>| t.map_or("-".into(), day);
        for r in behind {
            let _ = writeln!(
                out,
                "{:<w$} {:<14} {:<22} {}",
                r.label(),
                deadline_cell(a, r),
                at(r.first_submitted_ms),
                at(r.first_held_ms)
            );
        }
    }
    if let Some(rep) = &a.reporting {
        let _ = writeln!(out, "{}", summary(&rep.total));
    }
    out
}

/// [`overdue`] as JSON: the late and overdue entries, and the rates.
pub fn overdue_json(a: &Aggregate) -> serde_json::Value {
    let behind: Vec<serde_json::Value> = (a.regions.iter())
        .filter(|r| r.timeliness.is_some_and(Timeliness::is_behind))
        .map(|r| {
            let late_by = a.due_ms.map(|due| {
                let t = match r.timeliness {
                    Some(Timeliness::Late) => r.first_submitted_ms.unwrap_or(due),
                    _ => a.computed_ms,
                };
                t.saturating_sub(due)
            });
            serde_json::json!({
                "region": r.region,
                "unit": r.unit,
                "timeliness": r.timeliness,
                "late_by_ms": late_by,
                "first_submitted_ms": r.first_submitted_ms,
                "first_held_ms": r.first_held_ms,
                "report": r.report,
            })
        })
        .collect();
    serde_json::json!({
        "period": a.period,
        "due_ms": a.due_ms,
        "computed_by": a.computed_by,
        "computed_ms": a.computed_ms,
        "late": behind,
        "reporting": a.reporting,
    })
}

/// Receipts, one line per revision: where it stands at HQ, and in HQ's
/// newest published aggregate.
pub fn receipts(rs: &[serde_json::Value]) -> String {
    if rs.is_empty() {
        return "no reports submitted at this node's part\n".into();
    }
    let mut out = format!(
        "{:<8} {:>4} {:>6}  {:<52} NEWEST HQ AGGREGATE\n",
        "PERIOD", "REV", "SEQ", "AT HQ"
    );
    let t = |v: &serde_json::Value| v.as_u64().map_or("?".into(), day);
    for r in rs {
        let h = &r["at_hq"];
        let at_hq = match h["state"].as_str().unwrap_or("") {
            "held" => match h["since_ms"].as_u64() {
                Some(s) => format!(
                    "held by {} since {}",
                    h["by"].as_str().unwrap_or("?"),
                    day(s)
                ),
                None => format!(
                    "held by {} (confirmed before this node started)",
                    h["by"].as_str().unwrap_or("?")
                ),
            },
            "covered" => format!(
                "held by {} by {} (its aggregate)",
                h["by"].as_str().unwrap_or("?"),
                t(&h["at_ms"])
            ),
            "not_yet" => format!(
                "NOT YET: {} confirms seq {} of this log",
                h["by"].as_str().unwrap_or("?"),
                h["confirmed_seq"]
            ),
            _ => "unknown: no word from HQ yet".into(),
        };
        let agg = &r["in_aggregate"];
        let in_agg = if agg.is_null() {
            "none published".to_owned()
        } else {
            let approved = if agg["approved"] == true {
                ", approved"
            } else {
                ""
            };
            let why = agg["why"]
                .as_str()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            format!(
                "{}{approved} (signed by {} at {}){why}",
                agg["status"].as_str().unwrap_or("?"),
                agg["signer"].as_str().unwrap_or("?"),
                t(&agg["computed_ms"])
            )
        };
        // The aggregate's status already says a revision was superseded.
        let current = match r["current"] == true || !agg.is_null() {
            true => "",
            false => " (an older revision)",
        };
        let _ = writeln!(
            out,
            "{:<8} {:>4} {:>6}  {:<52} {in_agg}{current}",
            r["period"].as_str().unwrap_or("?"),
            r["revision"].to_string(),
            r["seq"].to_string(),
            at_hq
        );
    }
    out
}

/// A verification's checks, one line each: `ok` or `FAIL`, and why.
pub fn checks(checks: &[fedsync::rpc::pb::Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "  {} {}", if c.ok { "ok  " } else { "FAIL" }, c.text);
    }
    out
}

/// A CSV field, quoted when it must be.
pub(super) fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn figure_row(out: &mut String, scope: &str, t: &MetricTotal) {
    let n = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let v = |v: Option<Figure>| v.map(|n| n.to_string()).unwrap_or_default();
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},,,,,,,,{},{},",
        field(scope),
        field(&t.metric),
        t.count,
        t.sum,
        n(t.min),
        n(t.max),
        t.rule.as_str(),
        v(t.value),
    );
    for c in &t.categories {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},,,,,,,,{},{},{}",
            field(scope),
            field(&t.metric),
            c.count,
            c.sum,
            n(c.min),
            n(c.max),
            t.rule.as_str(),
            v(c.value),
            field(&c.category),
        );
    }
}

/// One table: a row per metric in total (scope `total`), per region (or
/// region and unit, `region/unit`) and metric with `by`, then a coverage
/// row per region and unit (metric empty).
pub fn csv(a: &Aggregate, by: Option<By>) -> String {
    let mut out = String::from(
        "scope,metric,count,sum,min,max,status,stale,last_contact_ms,frontier,timeliness,first_submitted_ms,first_held_ms,rule,value,category\n",
    );
    for t in &a.totals {
        figure_row(&mut out, "total", t);
    }
    for (name, t) in by.map(|by| rows(a, by)).unwrap_or_default() {
        for t in &t {
            figure_row(&mut out, &name, t);
        }
    }
    for r in &a.regions {
        let heads: Vec<String> = r
            .frontier
            .iter()
            .map(|h| format!("{}:{}:{}", h.author, h.seq, h.hash))
            .collect();
        let ms = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},,,,,,{},{},{},{},{},{},{},,,",
            field(&r.label()),
            r.status(),
            r.stale,
            ms(r.last_contact_ms),
            heads.join(" "),
            r.timeliness.map_or("", |t| t.describe()),
            ms(r.first_submitted_ms),
            ms(r.first_held_ms),
        );
    }
    out
}

/// A report's revisions, newest first.
pub fn history(revs: &[Revision]) -> String {
    let mut out = String::new();
    for r in revs {
        let head = format!("seq {} ({})", r.at.seq, r.at.hash.short());
        match &r.report {
            Ok(rep) => {
                let figures: Vec<String> = rep
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "revision {} {head} by {} at {} UTC: {}",
                    rep.revision,
                    rep.submitted_by,
                    when(rep.submitted_ms),
                    figures.join(" ")
                );
                for (metric, figures) in &rep.categories {
                    let f: Vec<String> =
                        figures.iter().map(|(c, v)| format!("[{c}]={v}")).collect();
                    let _ = writeln!(out, "    {metric} by category: {}", f.join(" "));
                }
                if !rep.notes.is_empty() {
                    let _ = writeln!(out, "    notes: {}", rep.notes);
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{head}: unreadable ({e})");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(field("fr"), "fr");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}

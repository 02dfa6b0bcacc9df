//! How an aggregate and a history print: a table for people, CSV for
//! spreadsheets. The JSON is the signed document itself.

use std::fmt::Write;

use fedsync::client::Revision;
use fedsync::core::report::aggregate::{totals, Aggregate, MetricTotal, RegionCoverage};

use super::By;
use fedsync::node::status::age;

use crate::cli::status::ago;
use crate::cli::trust::when;

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}

fn frontier(r: &RegionCoverage) -> String {
    let heads: Vec<String> = r
        .frontier
        .iter()
        .map(|h| format!("{}:{} {}", h.name, h.seq, h.hash.short()))
        .collect();
    heads.join(", ")
}

fn coverage_cell(r: &RegionCoverage) -> String {
    let status = match (r.status(), &r.figures) {
        ("included", Some(f)) => format!("included rev {}", f.revision),
        (s, _) => s.to_uppercase(),
    };
    if r.stale {
        format!("{status}, STALE")
    } else {
        status
    }
}

/// The rows `by` asks for, each a name and its metrics' totals: a region
/// with its units added in, or every region and unit alone.
fn rows(a: &Aggregate, by: By) -> Vec<(String, Vec<MetricTotal>)> {
    match by {
        By::Unit => (a.regions.iter())
            .map(|r| (r.label(), totals(&a.metrics, std::slice::from_ref(r))))
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
                .map(|(name, g)| (name, totals(&a.metrics, &g)))
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
    let _ = writeln!(
        out,
        "\n{:<20} {:>6} {:>14} {:>14} {:>14}",
        "METRIC", "COUNT", "SUM", "MIN", "MAX"
    );
    for t in &a.totals {
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>14} {:>14} {:>14}",
            t.metric,
            t.count,
            t.sum,
            opt(t.min),
            opt(t.max)
        );
    }
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
                let v = (t.count > 0).then_some(t.sum);
                let _ = write!(out, " {:>w$}", opt(v));
            }
            out.push('\n');
        }
        let _ = write!(out, "{:<name_w$}", "TOTAL");
        for (t, w) in a.totals.iter().zip(&widths) {
            let _ = write!(out, " {:>w$}", t.sum);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nCOVERAGE (stale: no contact for over {})",
        age(a.stale_after_ms)
    );
    let _ = writeln!(
        out,
        "{:<name_w$} {:<26} {:<12} FRONTIER COUNTED (author:seq head)",
        "REGION/UNIT", "REPORT", "CONTACT"
    );
    for r in &a.regions {
        let _ = writeln!(
            out,
            "{:<name_w$} {:<26} {:<12} {}",
            r.label(),
            coverage_cell(r),
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

/// A verification's checks, one line each: `ok` or `FAIL`, and why.
pub fn checks(checks: &[fedsync::rpc::pb::Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "  {} {}", if c.ok { "ok  " } else { "FAIL" }, c.text);
    }
    out
}

/// A CSV field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn figure_row(out: &mut String, scope: &str, t: &MetricTotal) {
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},,,,",
        field(scope),
        field(&t.metric),
        t.count,
        t.sum,
        t.min.map(|n| n.to_string()).unwrap_or_default(),
        t.max.map(|n| n.to_string()).unwrap_or_default(),
    );
}

/// One table: a row per metric in total (scope `total`), per region (or
/// region and unit, `region/unit`) and metric with `by`, then a coverage
/// row per region and unit (metric empty).
pub fn csv(a: &Aggregate, by: Option<By>) -> String {
    let mut out =
        String::from("scope,metric,count,sum,min,max,status,stale,last_contact_ms,frontier\n");
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
        let _ = writeln!(
            out,
            "{},,,,,,{},{},{},{}",
            field(&r.label()),
            r.status(),
            r.stale,
            r.last_contact_ms.map(|n| n.to_string()).unwrap_or_default(),
            heads.join(" ")
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

//! The `/reports` page: HQ's dashboard of a period, server-rendered with
//! inline SVG charts and no script, in the style of the status page.
//! Totals by region for each metric, the reporting rate over the last
//! periods, who is late or missing, the coverage of the newest signed
//! aggregate HQ published, and at a region's or unit's node, whether its
//! own reports reached HQ.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::core::report::aggregate::{totals, Aggregate, Figure, RegionCoverage};
use crate::core::report::receipt::{AtHq, Receipt};
use crate::core::report::timeliness::{day, Timeliness};
use crate::node::actor::Dashboard;

const STYLE: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:12px;color:#1b1b1b;background:#fafafa;max-width:1100px}
h1{font-size:1.3em;margin:0 0 4px}
h2{font-size:1.05em;margin:20px 0 6px}
.meta{color:#555;margin:0 0 12px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:6px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{font-size:.85em;color:#555;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.late,.overdue,.bad{color:#b00020;font-weight:600}
.pending{color:#8a5a00}
.ok{color:#1b6e20}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#fff;border:1px solid #ddd;padding:8px;max-width:100%;overflow-x:auto;box-sizing:border-box}
.chart h3{font-size:.95em;margin:0 0 4px}
svg text{font:12px system-ui,sans-serif;fill:#1b1b1b}
.periods a{margin-right:8px}
code{font-size:.9em}
";

/// A figure as a chart scales it.
fn as_f64(f: Option<Figure>) -> f64 {
    match f {
        Some(Figure::Whole(n)) => n as f64,
        Some(Figure::Thousandths(t)) => t as f64 / 1000.0,
        None => 0.0,
    }
}

/// Each region's entries (its own and its units'), in the aggregate's order.
fn by_region(a: &Aggregate) -> Vec<(String, Vec<RegionCoverage>)> {
    let mut groups: Vec<(String, Vec<RegionCoverage>)> = Vec::new();
    for e in &a.regions {
        match groups.last_mut() {
            Some((r, g)) if *r == e.region => g.push(e.clone()),
            _ => groups.push((e.region.clone(), vec![e.clone()])),
        }
    }
    groups
}

/// One metric's value per region as horizontal bars.
fn bars(metric: &str, rule: &str, rows: &[(String, Option<Figure>)]) -> Markup {
    let (label_w, bar_w, row_h) = (120.0, 260.0, 22.0);
    let max = rows
        .iter()
        .map(|(_, v)| as_f64(*v).abs())
        .fold(0.0, f64::max);
    let h = row_h * rows.len().max(1) as f64 + 6.0;
    html! {
        div.chart id={ "chart-" (metric) } {
            h3 { (metric) " (" (rule) ") by region" }
            svg width=(label_w + bar_w + 70.0) height=(h) role="img" aria-label={ (metric) " by region" } {
                @for (i, (region, v)) in rows.iter().enumerate() {
                    @let y = i as f64 * row_h;
                    @let w = if max > 0.0 { as_f64(*v).abs() / max * bar_w } else { 0.0 };
                    text x="0" y=(y + 15.0) { (region) }
                    rect x=(label_w) y=(y + 3.0) width=(w) height=(row_h - 6.0) fill="#3a6ea5" {}
                    text x=(label_w + w + 4.0) y=(y + 15.0) {
                        (v.map_or("-".into(), |v| v.to_string()))
                    }
                }
            }
        }
    }
}

/// Reporting and on-time rates per period as paired columns.
fn rates(d: &Dashboard) -> Markup {
    let (col_w, h, top) = (70.0, 140.0, 16.0);
    let width = col_w * d.history.len() as f64 + 10.0;
    let pct =
        |p: Option<crate::core::report::timeliness::Pct>| p.map_or(0.0, |p| f64::from(p.0) / 10.0);
    html! {
        div.chart id="chart-rates" {
            h3 { "reporting rate (dark) and on time (light), last " (d.history.len()) " periods" }
            svg width=(width) height=(h + top + 34.0) role="img" aria-label="reporting rates by period" {
                @for (i, (p, r)) in d.history.iter().enumerate() {
                    @let x = 10.0 + i as f64 * col_w;
                    @let (rr, ot) = (pct(r.total.reporting_rate), pct(r.total.on_time_rate));
                    rect x=(x) y=(top + h - rr / 100.0 * h) width="24" height=(rr / 100.0 * h) fill="#3a6ea5" {}
                    rect x=(x + 26.0) y=(top + h - ot / 100.0 * h) width="24" height=(ot / 100.0 * h) fill="#9dbbe0" {}
                    text x=(x) y=(top + h - rr / 100.0 * h - 3.0) { (format!("{rr:.0}%")) }
                    text x=(x) y=(top + h + 16.0) { (p.to_string()) }
                    text x=(x) y=(top + h + 30.0) { (r.total.received) "/" (r.total.expected) }
                }
                line x1="6" y1=(top + h) x2=(width) y2=(top + h) stroke="#999" {}
            }
        }
    }
}

fn timeliness_cell(a: &Aggregate, e: &RegionCoverage) -> Markup {
    let t = e.timeliness.unwrap_or(Timeliness::Missing);
    let class = match t {
        Timeliness::Late | Timeliness::Overdue => "bad",
        Timeliness::Pending => "pending",
        _ => "ok",
    };
    let detail = match (t, a.due_ms, e.first_submitted_ms) {
        (Timeliness::Late, Some(due), Some(at)) => {
            format!(" by {}", crate::node::status::age(at.saturating_sub(due)))
        }
        (Timeliness::Overdue, Some(due), _) => format!(
            " by {}",
            crate::node::status::age(a.computed_ms.saturating_sub(due))
        ),
        _ => String::new(),
    };
    html! { span class=(class) { (t.describe()) (detail) } }
}

fn coverage(a: &Aggregate, signed: bool) -> Markup {
    html! {
        p.meta {
            @if signed {
                "signed by " (a.computed_by) " (" (a.computed_by_id.short()) ") at " (day(a.computed_ms))
                ", roster v" (a.roster_version)
                @if a.approved_only { " · approved reports only" }
            } @else {
                "HQ has published no aggregate of " (a.period) " (" code { "fedsync report aggregate --publish" } "); this node's own view, unsigned:"
            }
        }
        div.wrap { table.coverage {
            thead { tr { th { "region / unit" } th { "report" } th { "approval" } th.n { "seq" } th { "hash" } th { "log covered" } } }
            tbody {
                @for e in &a.regions {
                    tr id={ "cov-" (e.label()) } data-status=(e.status()) {
                        td { (e.label()) }
                        td class=(if e.status() == "included" { "ok" } else { "bad" }) {
                            (e.status())
                            @if let Some(f) = &e.figures { " rev " (f.revision) }
                            @if let Some(w) = &e.invalid { br; span.meta { (w) } }
                        }
                        td { (e.approval.as_ref().map_or("-", |n| n.state.describe())) }
                        td.n { (e.report.as_ref().map_or("-".into(), |r| r.seq.to_string())) }
                        td { code { (e.report.as_ref().map_or("-".into(), |r| r.hash.short())) } }
                        td { @for h in &e.frontier { (h.name) ":" (h.seq) " " } }
                    }
                }
            }
        } }
    }
}

fn receipt_cell(r: &Receipt) -> Markup {
    match &r.at_hq {
        AtHq::Held { by, since_ms, .. } => html! {
            span.ok { "held by " (by) @if let Some(s) = since_ms { " since " (day(*s)) } }
        },
        AtHq::Covered { by, at_ms } => html! { span.ok { "held by " (by) " by " (day(*at_ms)) } },
        AtHq::NotYet {
            by, confirmed_seq, ..
        } => html! {
            span.bad { "not yet: " (by) " holds this log to seq " (confirmed_seq) }
        },
        AtHq::Unknown => html! { span.pending { "no word from HQ yet" } },
    }
}

pub(crate) fn render(d: &Dashboard) -> String {
    let a = &d.current;
    let groups = by_region(a);
    let behind: Vec<&RegionCoverage> = (a.regions.iter())
        .filter(|e| {
            !matches!(
                e.timeliness,
                Some(Timeliness::OnTime | Timeliness::Received)
            )
        })
        .collect();
    let rates_total = a
        .reporting
        .as_ref()
        .map(|r| r.total.clone())
        .unwrap_or_default();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "fedsync " (d.node) ": reports " (a.period) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Reports · " (a.period) " · " (d.node) }
                p.meta {
                    a href="/" { "status" } " · "
                    @if let Some(s) = &a.scope { (s) " · " } @else { "the whole federation · " }
                    @match a.due_ms { Some(due) => { "due " (day(due)) }, None => { "no deadline set" } }
                    " · " (rates_total.received) " of " (rates_total.expected) " received ("
                    (rates_total.reporting_rate.map_or("-".into(), |p| p.to_string())) "), "
                    (rates_total.on_time) " on time ("
                    (rates_total.on_time_rate.map_or("-".into(), |p| p.to_string())) ")"
                }
                p.meta.periods {
                    "periods: "
                    @for (p, _) in d.history.iter().rev() {
                        a href={ "/reports?period=" (p) } { (p) }
                    }
                }
                h2 { "Totals by region" }
                div.charts {
                    @for (i, metric) in a.metrics.iter().enumerate() {
                        @let rows: Vec<(String, Option<Figure>)> = groups.iter()
                            .map(|(r, g)| (r.clone(), totals(a, g).get(i).and_then(|t| t.value)))
                            .collect();
                        (bars(metric, a.totals.get(i).map_or("sum", |t| t.rule.as_str()), &rows))
                    }
                }
                h2 { "Reporting rate" }
                div.charts { (rates(d)) }
                h2 { "Late and missing" }
                @if behind.is_empty() {
                    p.ok { "every region and unit has reported on time" }
                } @else {
                    div.wrap { table.behind {
                        thead { tr { th { "region / unit" } th { "state" } th { "submitted (signed)" } th { "held here since" } } }
                        tbody { @for e in &behind {
                            tr id={ "late-" (e.label()) } data-timeliness=(e.timeliness.map_or("missing", Timeliness::describe)) {
                                td { (e.label()) }
                                td { (timeliness_cell(a, e)) }
                                td { (e.first_submitted_ms.map_or("-".into(), day)) }
                                td { (e.first_held_ms.map_or("-".into(), day)) }
                            }
                        } }
                    } }
                }
                h2 { "Coverage of the newest signed aggregate" }
                @match &d.published { Some(p) => { (coverage(p, true)) }, None => { (coverage(a, false)) } }
                @if !d.receipts.is_empty() {
                    h2 { "This node's reports at HQ" }
                    div.wrap { table.receipts {
                        thead { tr { th.n { "revision" } th.n { "seq" } th { "submitted" } th { "at HQ" } th { "in HQ's newest aggregate" } } }
                        tbody { @for r in &d.receipts {
                            tr id={ "receipt-" (r.revision) } {
                                td.n { (r.revision) @if !r.current { " (superseded)" } }
                                td.n { (r.seq) }
                                td { (day(r.submitted_ms)) }
                                td { (receipt_cell(r)) }
                                td { (r.in_aggregate.as_ref().map_or("none published".into(), |x| {
                                    format!("{}{}", x.status, if x.approved { ", approved" } else { "" })
                                })) }
                            }
                        } }
                    } }
                }
            }
        }
    };
    page.into_string()
}

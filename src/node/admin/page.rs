//! The status page: one server-rendered table of the federation as this
//! node sees it, refreshed by the browser every few seconds. No script,
//! no external assets; it reads well on a phone.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::node::status::{
    age, describe_holds, describe_link, tree, NodeStatus, PeerState, PeerStatus,
};

/// Seconds between the browser's reloads.
pub const REFRESH_SECS: u32 = 5;

const STYLE: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:12px;color:#1b1b1b;background:#fafafa}
h1{font-size:1.3em;margin:0 0 4px}
.meta{color:#555;margin:0 0 12px}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:6px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{font-size:.85em;color:#555;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;white-space:nowrap}
.stalled .state,.refused .state,.unreachable .state{color:#b00020}
.lagging .state,.connecting .state{color:#8a5a00}
.in_sync .state,.self .state{color:#1b6e20}
.no_link .state,.inactive .state,.operator .state{color:#666}
.err{color:#b00020;font-size:.9em;word-break:break-word}
.totals{margin-top:12px;color:#333}
h2{font-size:1.05em;margin:18px 0 6px}
.tree td.broken{color:#b00020;font-weight:600}
@media (max-width:600px){.wide{display:none}}
";

fn ago(now_ms: u64, at: Option<u64>) -> String {
    at.map_or("never".into(), |t| {
        format!("{} ago", age(now_ms.saturating_sub(t)))
    })
}

fn lag(p: &PeerStatus, now_ms: u64) -> String {
    let Some(l) = p.lags else {
        return "unknown".into();
    };
    if l.in_sync() {
        return "0".into();
    }
    let side = |deltas: u64, since: Option<u64>| match since {
        Some(t) if deltas > 0 => format!("{deltas} ({})", age(now_ms.saturating_sub(t))),
        _ => deltas.to_string(),
    };
    format!(
        "{} / {}",
        side(l.they_lack.deltas, l.they_lack.since_ms),
        side(l.we_lack.deltas, l.we_lack.since_ms)
    )
}

fn role(p: &PeerStatus) -> String {
    if p.state == PeerState::Operator {
        return "operator".into();
    }
    let place = place(p.region.as_deref(), p.unit.as_deref());
    let place = if p.held {
        place
    } else {
        format!("{place}, not held")
    };
    if p.below {
        return format!("{place} (below)");
    }
    place
}

/// Where a node sits in the tree: `hq`, `fr`, `ru-altai / aleysk`.
pub(super) fn place(region: Option<&str>, unit: Option<&str>) -> String {
    match (region, unit) {
        (r, Some(u)) => format!("{} / {u}", r.unwrap_or("?")),
        (Some(r), None) => r.into(),
        (None, None) => "hq".into(),
    }
}

/// `evicted 120, tls_refused 2`: the reasons that refused anything.
fn refused_by_reason(s: &NodeStatus) -> String {
    (s.totals.connections_refused.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{} {n}", r.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every node under the one above it, with this node's hop towards each.
fn tree_view(s: &NodeStatus) -> Markup {
    html! {
        h2 { "tree" }
        div.wrap { table.tree {
            thead { tr {
                th { "node" } th title="this node's hop towards it: its link, or the node its data comes through" { "hop from here" }
            } }
            tbody {
                @for row in tree::rows(s) {
                    @let indent = format!("padding-left:{:.1}em", 0.5 + 1.5 * row.depth as f64);
                    @match row.peer {
                        None => tr id="tree-self" {
                            td style=(indent) { strong { (s.name) } } td { "this node" }
                        },
                        Some(p) => tr id={ "tree-" (p.name) } data-broken=(tree::broken(s, p)) {
                            td style=(indent) { (p.name) }
                            td class=[tree::broken(s, p).then_some("broken")] { (tree::describe(s, p)) }
                        },
                    }
                }
            }
        } }
    }
}

pub fn render(s: &NodeStatus) -> String {
    let worst = s.peers.first().map(|p| p.state);
    let title = match worst {
        Some(PeerState::Stalled) => "stalled",
        Some(PeerState::Refused) => "refused",
        Some(PeerState::Unreachable) => "unreachable",
        Some(PeerState::Lagging) => "lagging",
        _ => "ok",
    };
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                title { "fedsync " (s.name) ": " (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "fedsync · " (s.name) }
                p.meta {
                    @if let Some(u) = &s.unit { "unit " (u) " · " }
                    @if let Some(r) = &s.region { "region " (r) " · " }
                    "version " (s.version) " · up " (age(s.uptime_ms()))
                    " · roster v" (s.roster_version) " · "
                    @if s.serving { "serving" } @else { strong.err { "NOT SERVING" } }
                    " · stalled after " (age(s.stall_after_ms)) " without progress"
                    " · " a href="/reports" { "reports" }
                }
                @if let Some(holds) = describe_holds(s) { p.meta.holds { (holds) } }
                div.wrap {
                    table {
                        thead { tr {
                            th { "member" } th.wide title="region / unit; (below): it sits below this node and dials it" { "place" } th { "state" }
                            th { "last contact" } th.wide { "last in sync" }
                            th title="deltas they lack / we lack (how long)" { "lag" }
                            th.wide title="round trip, delivery rate, in flight, compression, catch-up left" { "link" }
                            th { "last error" }
                        } }
                        tbody {
                            tr.self id={ "member-" (s.name) } data-state="self" {
                                td { strong { (s.name) } } td.wide { (place(s.region.as_deref(), s.unit.as_deref())) }
                                td.state { "this node" } td { "-" } td.wide { "-" } td { "-" } td.wide { "-" } td { }
                            }
                            @for p in &s.peers {
                                tr class=(p.state.as_str()) id={ "member-" (p.name) } data-state=(p.state.as_str()) {
                                    td { (p.name) }
                                    td.wide { (role(p)) }
                                    td.state { (p.state.as_str().replace('_', " ")) }
                                    @if p.state == PeerState::Operator {
                                        td { "-" } td.wide { "-" } td.n { "-" } td.wide { "-" }
                                    } @else {
                                        td { (ago(s.now_ms, p.last_contact_ms)) }
                                        td.wide { (ago(s.now_ms, p.last_sync_ms)) }
                                        td.n { (lag(p, s.now_ms)) }
                                        td.wide { (describe_link(p).unwrap_or_else(|| "-".into())) }
                                    }
                                    td.err { @if let Some(e) = &p.last_error { (e.text) } }
                                }
                            }
                        }
                    }
                }
                @if tree::has_units(s) { (tree_view(s)) }
                p.totals {
                    (s.totals.records) " records · " (s.totals.deltas) " deltas · "
                    (s.totals.quarantined) " quarantined · " (s.totals.conflicts) " conflicts resolved · "
                    (s.totals.store_bytes / 1024) " KiB on disk"
                    @let refused: u64 = s.totals.connections_refused.values().sum();
                    @if refused > 0 {
                        " · " (refused) " connections refused ("
                        (refused_by_reason(s)) ")"
                    }
                }
            }
        }
    };
    page.into_string()
}

//! `fedsync status`: the node as an operator sees it. The table puts the
//! worst peers first and fits in 100 columns; `--json` gives every field.

use std::fmt::Write;

use anyhow::anyhow;
use clap::Args;
use fedsync::node::status::{
    age, describe_holds, describe_link, to_json, tree, NodeStatus, PeerStatus,
};

use super::print_json;
use super::records::Conn;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    conn: Conn,
}

pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let s = a.conn.open()?.status().await.map_err(|e| anyhow!(e))?;
    if a.conn.json {
        print_json(&to_json(&s));
    } else {
        print!("{}", table(&s));
    }
    Ok(())
}

const WIDTH: usize = 100;

/// Cuts `s` to `n` characters, marking the cut.
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn ago(now_ms: u64, at: Option<u64>) -> String {
    at.map_or("never".into(), |t| age(now_ms.saturating_sub(t)))
}

fn lag_cell(deltas: u64, since: Option<u64>, now_ms: u64) -> String {
    match since {
        Some(t) if deltas > 0 => format!("{deltas} ({})", age(now_ms.saturating_sub(t))),
        _ => deltas.to_string(),
    }
}

fn peer_row(p: &PeerStatus, now_ms: u64) -> String {
    let (they, we) = match p.lags {
        Some(l) => (
            lag_cell(l.they_lack.deltas, l.they_lack.since_ms, now_ms),
            lag_cell(l.we_lack.deltas, l.we_lack.since_ms, now_ms),
        ),
        None => ("?".into(), "?".into()),
    };
    let link = if p.links > 0 { "up" } else { "down" };
    let stalled = p
        .stalled_since_ms
        .map_or("-".into(), |t| ago(now_ms, Some(t)));
    let error = p
        .last_error
        .as_ref()
        .map(|e| format!("{} ago: {}", age(now_ms.saturating_sub(e.at_ms)), e.text))
        .or_else(|| p.last_refusal_by_peer.clone())
        .unwrap_or_default();
    let row = format!(
        "{:<14} {:<11} {:<4} {:>9} {:>13} {:>13} {:>7}  ",
        fit(&p.name, 14),
        p.state.as_str(),
        link,
        ago(now_ms, p.last_sync_ms),
        fit(&they, 13),
        fit(&we, 13),
        stalled
    );
    let room = WIDTH.saturating_sub(row.chars().count());
    let row = format!("{row}{}", fit(&error, room)).trim_end().to_owned();
    match describe_link(p) {
        Some(link) => format!("{row}\n  {}", fit(&format!("link: {link}"), WIDTH - 2)),
        None => row,
    }
}

/// The human table: a header line, peers worst first, authors, totals.
pub fn table(s: &NodeStatus) -> String {
    let mut out = String::new();
    let serving = if s.serving { "serving" } else { "NOT SERVING" };
    let unit = (s.unit.as_deref())
        .map(|u| format!(" · unit {u}"))
        .unwrap_or_default();
    let region = s
        .region
        .as_deref()
        .map(|r| format!("{unit} · region {r}"))
        .unwrap_or(unit);
    let head = format!(
        "{}{region} · v{} · up {} · roster v{} · {serving} · stalled after {}",
        s.name,
        s.version,
        age(s.uptime_ms()),
        s.roster_version,
        age(s.stall_after_ms)
    );
    let _ = writeln!(out, "{}", fit(&head, WIDTH));
    if let Some(holds) = describe_holds(s) {
        let _ = writeln!(out, "{}", fit(&holds, WIDTH));
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<11} {:<4} {:>9} {:>13} {:>13} {:>7}  LAST ERROR",
        "PEER", "STATE", "LINK", "LAST SYNC", "THEY LACK", "WE LACK", "STALLED"
    );
    for p in s.peers.iter().filter(|p| p.state.as_str() != "operator") {
        let _ = writeln!(out, "{}", peer_row(p, s.now_ms));
    }
    if tree::has_units(s) {
        let _ = writeln!(out, "\nTREE (this node's hop towards each)");
        for row in tree::rows(s) {
            let indent = "  ".repeat(row.depth);
            let line = match row.peer {
                None => format!("{indent}{} (this node)", s.name),
                Some(p) => format!("{indent}{:<16} {}", p.name, tree::describe(s, p)),
            };
            let _ = writeln!(out, "{}", fit(&line, WIDTH));
        }
    }
    let _ = writeln!(out, "\n{:<24} {:>10}  HEAD", "AUTHOR", "SEQ");
    for a in &s.authors {
        let who = format!("{} ({})", a.name.as_deref().unwrap_or("?"), a.id.short());
        let hash = hex::encode(&a.hash.0[..8]);
        let _ = writeln!(out, "{:<24} {:>10}  {hash}", fit(&who, 24), a.seq);
    }
    let t = &s.totals;
    let refused: u64 = t.refused.values().sum();
    let totals = format!(
        "{} records · {} deltas · {} quarantined · {} refused · {} conflicts · {} held · {} KiB",
        t.records,
        t.deltas,
        t.quarantined,
        refused,
        t.conflicts,
        t.held,
        t.store_bytes / 1024
    );
    let _ = writeln!(out, "\n{}", fit(&totals, WIDTH));
    let conns: u64 = t.connections_refused.values().sum();
    if conns > 0 {
        let by = (t.connections_refused.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let line = format!("{conns} connections refused: {by}");
        let _ = writeln!(out, "{}", fit(&line, WIDTH));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsync::core::{DeltaHash, Lag, Lags, NodeId};
    use fedsync::node::status::{
        AuthorStatus, LinkPace, PeerState, TimedText, Totals, Traffic, Via,
    };

    fn peer(name: &str, state: PeerState, lags: Option<Lags>) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            id: NodeId([name.len() as u8; 32]),
            region: Some("fr".into()),
            unit: None,
            below: true,
            held: true,
            path: vec!["fr".into()],
            seq: 0,
            via: None,
            reported: None,
            standing: "active".into(),
            state,
            links: u32::from(state == PeerState::InSync),
            address: Some("10.0.0.2:7101".into()),
            last_contact_ms: Some(1_000),
            last_sync_ms: Some(1_000),
            lags,
            stalled_since_ms: (state == PeerState::Stalled).then_some(2_000),
            refused_since_ms: None,
            last_error: Some(TimedText {
                at_ms: 5_000,
                text: "dial failed: connection refused (os error 111) and a very long tail"
                    .repeat(3),
            }),
            traffic: Traffic::default(),
            pace: None,
            refused_by_peer: 0,
            last_refusal_by_peer: None,
        }
    }

    #[test]
    fn table_fits_100_columns_and_shows_the_lag() {
        let lag = Lags {
            they_lack: Lag {
                deltas: 123_456,
                since_ms: Some(1_000),
            },
            we_lack: Lag::default(),
        };
        let s = NodeStatus {
            id: NodeId([9; 32]),
            name: "headquarters-of-the-organisation".repeat(3),
            region: None,
            unit: None,
            path: Vec::new(),
            holds: "tree".into(),
            version: "0.1.0".into(),
            now_ms: 601_000,
            started_ms: 1_000,
            roster_version: 4,
            serving: true,
            stall_after_ms: 120_000,
            peers: vec![
                peer(
                    "office-kenya-with-a-long-name",
                    PeerState::Stalled,
                    Some(lag),
                ),
                PeerStatus {
                    pace: Some(LinkPace {
                        rtt_ms: Some(612),
                        rate_bytes_per_sec: Some(7_900),
                        rate_cap_bytes_per_sec: Some(8_000),
                        in_flight_bytes: 24_000,
                        compressed: true,
                        catch_up_eta_secs: Some(180),
                    }),
                    traffic: Traffic {
                        bytes_sent: 31_000,
                        delta_bytes_sent: 100_000,
                        ..Traffic::default()
                    },
                    ..peer("office-ke", PeerState::Lagging, Some(lag))
                },
                peer("office-fr", PeerState::InSync, Some(Lags::default())),
                PeerStatus {
                    held: false,
                    ..peer("office-de", PeerState::NoLink, None)
                },
            ],
            authors: vec![AuthorStatus {
                id: NodeId([1; 32]),
                name: Some("office-fr".into()),
                seq: 42,
                hash: DeltaHash([7; 32]),
            }],
            totals: Totals::default(),
        };
        let text = table(&s);
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        let stalled = text
            .lines()
            .find(|l| l.starts_with("office-kenya"))
            .unwrap();
        assert!(stalled.contains("stalled"), "{stalled}");
        assert!(
            stalled.contains("123456 (10m)"),
            "lag in deltas and time: {stalled}"
        );
        assert!(stalled.contains("dial failed"), "{stalled}");
        let link = text
            .lines()
            .skip_while(|l| !l.starts_with("office-ke "))
            .nth(1)
            .unwrap();
        assert_eq!(
            link,
            "  link: rtt 612ms · 7.9 kB/s (cap 8.0) · 24 kB in flight · zstd 0.31x · 123456 to send, ~3m"
        );
        let first_peer = text
            .lines()
            .skip_while(|l| !l.starts_with("PEER"))
            .nth(1)
            .unwrap();
        assert!(
            first_peer.starts_with("office-kenya"),
            "worst first: {first_peer}"
        );
        assert!(
            text.contains("office-fr (0101"),
            "authors by name and id:\n{text}"
        );
        assert!(text.contains("42"), "{text}");
        assert!(
            text.contains("1 of 5 members' logs not held (office-de)"),
            "what a partial node does not hold:\n{text}"
        );
    }

    #[test]
    fn the_tree_puts_each_node_under_its_parent_and_names_a_broken_chain() {
        let at = |name: &str, path: &[&str], state: PeerState| PeerStatus {
            path: path.iter().map(|p| p.to_string()).collect(),
            seq: 41,
            last_contact_ms: Some(1_000),
            ..peer(name, state, Some(Lags::default()))
        };
        let via = |p: PeerStatus, hop: &str, hop_seq: Option<u64>| PeerStatus {
            via: Some(Via {
                hop: hop.into(),
                hop_seq,
            }),
            ..p
        };
        let s = NodeStatus {
            id: NodeId([9; 32]),
            name: "hq".into(),
            region: None,
            unit: None,
            path: Vec::new(),
            holds: "all".into(),
            version: "0.1.0".into(),
            now_ms: 3_601_000,
            started_ms: 1_000,
            roster_version: 4,
            serving: true,
            stall_after_ms: 120_000,
            peers: vec![
                at("office-altai", &["ru-altai"], PeerState::Unreachable),
                via(
                    at("centre-biysk", &["ru-altai", "biysk"], PeerState::NoLink),
                    "office-altai",
                    Some(41),
                ),
                via(
                    at("centre-aleysk", &["ru-altai", "aleysk"], PeerState::NoLink),
                    "office-altai",
                    Some(41),
                ),
                at("office-kem", &["ru-kem"], PeerState::InSync),
                via(
                    at("centre-tisul", &["ru-kem", "tisul"], PeerState::NoLink),
                    "office-kem",
                    Some(44),
                ),
                via(
                    at(
                        "centre-izhmorsk",
                        &["ru-kem", "izhmorsk"],
                        PeerState::NoLink,
                    ),
                    "office-kem",
                    Some(41),
                ),
            ],
            authors: Vec::new(),
            totals: Totals::default(),
        };
        let text = table(&s);
        let tree: Vec<&str> = (text.lines())
            .skip_while(|l| !l.starts_with("TREE"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        let names: Vec<&str> = (tree.iter())
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "hq",
                "office-altai",
                "centre-aleysk",
                "centre-biysk",
                "office-kem",
                "centre-izhmorsk",
                "centre-tisul"
            ],
            "{text}"
        );
        assert!(tree[0].starts_with("hq (this node)"), "{text}");
        assert!(tree[1].starts_with("  office-altai"), "{text}");
        assert!(tree[2].starts_with("    centre-aleysk"), "{text}");
        assert!(
            tree[1].contains("unreachable, last contact 60m ago"),
            "{text}"
        );
        assert!(
            tree[2].contains("chain broken at office-altai: unreachable"),
            "below a hop that is down the chain is broken:\n{text}"
        );
        assert!(tree[4].ends_with("in sync"), "{text}");
        assert!(
            tree[5].contains("via office-kem: in step (seq 41)"),
            "{text}"
        );
        assert!(
            tree[6].contains("via office-kem: we lack 3 of its log"),
            "{text}"
        );
        for l in &tree {
            assert!(l.chars().count() <= WIDTH, "{l}");
        }
        // A federation without units has no tree beyond the table.
        let flat = NodeStatus {
            peers: vec![at("office-fr", &["fr"], PeerState::InSync)],
            ..s
        };
        assert!(!table(&flat).contains("TREE"));
    }
}

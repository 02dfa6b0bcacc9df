//! The organisation's tree as this node sees it, for the table and the
//! page: every node under the one above it, and at each the hop this node
//! has towards it. A member it links with shows that link's state and lag
//! both ways; one further away shows the member next on the path (the
//! hop its data comes through) and how that hop's copy of its log
//! compares with ours, or that the chain is broken there.
//!
//! Below the nodes below it, this node knows the hops as those reported
//! them up the tree (`node::hops`): the hop into each member, or the first
//! one on the way that is down. Above and beside it, only its own hops.

use super::{age, NodeStatus, PeerState, PeerStatus};

/// One line of the tree: a member, or this node (`None`), at its depth.
pub struct TreeRow<'a> {
    pub depth: usize,
    pub peer: Option<&'a PeerStatus>,
}

/// Whether the roster has units, so the tree says more than the table.
pub fn has_units(s: &NodeStatus) -> bool {
    s.path.len() > 1 || s.peers.iter().any(|p| p.path.len() > 1)
}

/// Every node member and this node, each under the place above it (HQ
/// first, then each region followed by its branch), by name within a place.
pub fn rows(s: &NodeStatus) -> Vec<TreeRow<'_>> {
    let mut rows: Vec<(&[String], &str, Option<&PeerStatus>)> = (s.peers.iter())
        .filter(|p| p.state != PeerState::Operator)
        .map(|p| (&p.path[..], p.name.as_str(), Some(p)))
        .collect();
    rows.push((&s.path, &s.name, None));
    // A path sorts before every path that extends it: depth-first order.
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    (rows.into_iter())
        .map(|(path, _, peer)| TreeRow {
            depth: path.len(),
            peer,
        })
        .collect()
}

/// The chain to `p` is broken: at a hop next to this node, or at one
/// further down as reported.
pub fn broken(s: &NodeStatus, p: &PeerStatus) -> bool {
    match &p.via {
        Some(v) => {
            (s.peers.iter()).any(|h| h.name == v.hop && h.state.is_down())
                || p.reported.as_ref().is_some_and(|r| r.is_down())
        }
        None => p.state.is_down(),
    }
}

/// This node's hop towards `p`, in a few words: `in sync`, `lagging: they
/// lack 3 (2m), we lack 0`, `via office-altai: in step (seq 41)`, `chain
/// broken at office-altai: unreachable, last contact 3h ago`.
pub fn describe(s: &NodeStatus, p: &PeerStatus) -> String {
    if !p.held {
        return "not held here (outside this node's branch)".into();
    }
    let ago = |at: Option<u64>| match at {
        Some(t) => format!("last contact {} ago", age(s.now_ms.saturating_sub(t))),
        None => "never in contact".into(),
    };
    let contact = |h: &PeerStatus| ago(h.last_contact_ms);
    let Some(v) = &p.via else {
        let state = p.state.as_str().replace('_', " ");
        return match (p.state, p.lags) {
            (st, _) if st.is_down() => format!("{state}, {}", contact(p)),
            (PeerState::Lagging, Some(l)) => format!(
                "lagging: they lack {}, we lack {}",
                l.they_lack.deltas, l.we_lack.deltas
            ),
            (PeerState::NoLink, _) => "no link, and no linked node on its path".into(),
            _ => state,
        };
    };
    let hop = s.peers.iter().find(|h| h.name == v.hop);
    if let Some(h) = hop.filter(|h| h.state.is_down()) {
        let state = h.state.as_str();
        return format!("chain broken at {}: {state}, {}", h.name, contact(h));
    }
    let seq = p.seq;
    let copy = match v.hop_seq {
        None => format!("via {}: it has not said what it holds", v.hop),
        Some(h) if h > seq => format!("via {}: we lack {} of its log", v.hop, h - seq),
        Some(h) if h < seq => format!("via {}: it lacks {} of its log", v.hop, seq - h),
        Some(_) => format!("via {}: in step (seq {seq})", v.hop),
    };
    match &p.reported {
        Some(r) if r.is_down() => format!(
            "chain broken at {} -> {}: {}, {}",
            r.from,
            r.to,
            r.state.as_str(),
            ago(r.contact_ms)
        ),
        Some(r) if r.to == p.name => match r.state {
            PeerState::InSync => format!("{copy}; {} in sync with it", r.from),
            PeerState::Lagging => format!(
                "{copy}; {} lagging: it lacks {}, {} lacks {}",
                r.from, r.they_lack, r.from, r.we_lack
            ),
            st => format!("{copy}; {}: {}", r.from, st.as_str().replace('_', " ")),
        },
        _ => copy,
    }
}

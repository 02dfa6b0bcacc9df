//! A node's status as operators see it: per peer, per author, totals. One
//! snapshot type feeds the `Status` call, `fedsync status`, the metrics
//! and the status page, so they always agree.

mod json;
pub mod pb;
pub mod tree;

use std::collections::BTreeMap;

pub use json::to_json;

use crate::core::{Counters, DeltaHash, Lags, NodeId};

/// How a roster member looks from this node. Ordered worst first, which is
/// how the table and the page sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerState {
    /// Behind (either way) with no progress for `stall_after`, or refused
    /// that long.
    Stalled,
    /// Its connections are refused (its last error says why), and it has
    /// no link open.
    Refused,
    /// A peer we link with (we dial it, or it is an office of this HQ),
    /// not connected now.
    Unreachable,
    /// Connected, behind, and making progress.
    Lagging,
    /// Connected, but it has not told us what it holds yet.
    Connecting,
    /// Connected and known to hold what we hold.
    InSync,
    /// A node we neither dial nor expect to dial us, and have not heard
    /// from since start: its data reaches us through others (an office
    /// seen from another office).
    NoLink,
    /// Retired or revoked: no longer a peer.
    Inactive,
    /// An operator: not a node, not synced with.
    Operator,
    /// This node.
    Me,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Stalled => "stalled",
            PeerState::Refused => "refused",
            PeerState::Unreachable => "unreachable",
            PeerState::Lagging => "lagging",
            PeerState::Connecting => "connecting",
            PeerState::InSync => "in_sync",
            PeerState::NoLink => "no_link",
            PeerState::Inactive => "inactive",
            PeerState::Operator => "operator",
            PeerState::Me => "self",
        }
    }

    /// A link in this state carries nothing now.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            PeerState::Stalled | PeerState::Refused | PeerState::Unreachable
        )
    }

    pub fn parse(s: &str) -> Option<PeerState> {
        ALL_STATES.iter().copied().find(|p| p.as_str() == s)
    }
}

pub const ALL_STATES: [PeerState; 10] = [
    PeerState::Stalled,
    PeerState::Refused,
    PeerState::Unreachable,
    PeerState::Lagging,
    PeerState::Connecting,
    PeerState::InSync,
    PeerState::NoLink,
    PeerState::Inactive,
    PeerState::Operator,
    PeerState::Me,
];

/// Bytes and messages on every link with one peer since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Completed idle checks (`InSync` received) and frontier exchanges.
    pub sync_rounds: u64,
    /// Encoded bytes of the deltas in batches, before compression: beside
    /// `bytes_*` (what the links carried), the compression ratio.
    pub delta_bytes_sent: u64,
    pub delta_bytes_received: u64,
    /// Of `delta_bytes_sent`, what the peer acknowledged holding.
    pub delta_bytes_acked: u64,
}

/// An open link's pace, from the peer's acks and answered digests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkPace {
    pub rtt_ms: Option<u64>,
    /// Delta bytes per second the peer acknowledged (the estimate).
    pub rate_bytes_per_sec: Option<u64>,
    /// The cap the link's connection sends under (`[[peers]] rate_kbit`,
    /// ours or the one the peer asked for, whichever is lower).
    pub rate_cap_bytes_per_sec: Option<u64>,
    /// Delta bytes sent and not yet acknowledged.
    pub in_flight_bytes: u64,
    /// Batches to the peer are compressed (it announced it reads them).
    pub compressed: bool,
    /// While the peer lacks deltas of ours: when it will hold them at the
    /// measured rate, in seconds.
    pub catch_up_eta_secs: Option<u64>,
}

/// One roster member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: String,
    pub id: NodeId,
    /// Its region: its own, or the one its unit sits in.
    pub region: Option<String>,
    /// A unit's node: its unit.
    pub unit: Option<String>,
    /// It sits directly below this node in the tree, and so dials it.
    pub below: bool,
    /// This node holds its log (false: outside the branch it holds).
    pub held: bool,
    /// Where it sits in the tree, from HQ: `[]`, `[region]`, `[region,
    /// unit, …]`.
    pub path: Vec<String>,
    /// Of its log, the seq this node holds (0: none).
    pub seq: u64,
    /// A member this node does not link with: the node next on the tree's
    /// path to it, through which its data comes.
    pub via: Option<Via>,
    /// For a member below a node below this one: the hop into it as the
    /// node above it reported, or the first hop on the way that is down,
    /// or the deepest one reported.
    pub reported: Option<Hop>,
    /// `active`, `retired`, `revoked …`.
    pub standing: String,
    pub state: PeerState,
    /// Open links (inbound and outbound).
    pub links: u32,
    /// Where we dial it, or where it last dialled from.
    pub address: Option<String>,
    pub last_contact_ms: Option<u64>,
    pub last_sync_ms: Option<u64>,
    /// `None` until the peer has told us what it holds.
    pub lags: Option<Lags>,
    pub stalled_since_ms: Option<u64>,
    /// Since when its connections are refused (with no link of its own
    /// open in between); `last_error` says why.
    pub refused_since_ms: Option<u64>,
    pub last_error: Option<TimedText>,
    pub traffic: Traffic,
    /// `None` without an open link.
    pub pace: Option<LinkPace>,
    /// Deltas the peer reported refusing (duplicates aside), and why.
    pub refused_by_peer: u64,
    pub last_refusal_by_peer: Option<String>,
}

/// One link of the tree as the node at its upper end sees it (reported
/// up the tree, `node::hops`); times in this node's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub from: String,
    pub to: String,
    pub state: PeerState,
    /// Deltas `from` holds that `to` lacks, and the other way.
    pub they_lack: u64,
    pub we_lack: u64,
    /// When `from` last heard from `to`.
    pub contact_ms: Option<u64>,
}

impl Hop {
    /// Carries nothing now.
    pub fn is_down(&self) -> bool {
        self.state.is_down()
    }
}

/// The hop towards a member this node does not link with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// The member next on the tree's path, which this node links with.
    pub hop: String,
    /// The seq of the member's log that `hop` last confirmed holding;
    /// `None` until it has said what it holds.
    pub hop_seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedText {
    pub at_ms: u64,
    pub text: String,
}

/// One author's log as held here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorStatus {
    pub id: NodeId,
    /// The author's roster name, if it is (still) a member.
    pub name: Option<String>,
    pub seq: u64,
    pub hash: DeltaHash,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records (tombstones included).
    pub records: u64,
    pub deltas: u64,
    pub quarantined: u64,
    pub store_bytes: u64,
    /// Deltas held waiting for an earlier one.
    pub held: u64,
    /// Since start: deltas applied, already held, conflicts resolved
    /// (a delta that lost to, or displaced, another for its key), retracted
    /// by a roster change, refused by reason.
    pub applied: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub retracted: u64,
    /// Deltas dropped on receipt: their authors are outside what this
    /// node holds.
    pub unheld: u64,
    pub refused: BTreeMap<String, u64>,
    /// Whole peer messages refused, by code, since start.
    pub refused_messages: BTreeMap<String, u64>,
    /// Connections refused before or at authentication, by reason, since
    /// start ([`crate::node::net::ConnRefusal`]).
    pub connections_refused: BTreeMap<String, u64>,
    /// TLS handshakes in progress now.
    pub handshakes_pending: u64,
}

impl Totals {
    pub fn count(&mut self, c: &Counters) {
        self.applied = c.applied;
        self.duplicates = c.duplicates;
        self.conflicts = c.conflicts;
        self.retracted = c.retracted;
        self.unheld = c.unheld;
        self.refused = c.refused.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub name: String,
    pub region: Option<String>,
    pub unit: Option<String>,
    /// Where it sits in the tree, as [`PeerStatus::path`].
    pub path: Vec<String>,
    /// `all`, or `tree`: this node holds its branch of the tree only.
    pub holds: String,
    pub version: String,
    pub now_ms: u64,
    pub started_ms: u64,
    pub roster_version: u64,
    pub serving: bool,
    pub stall_after_ms: u64,
    /// Every roster member but this node, worst first.
    pub peers: Vec<PeerStatus>,
    pub authors: Vec<AuthorStatus>,
    pub totals: Totals,
}

impl NodeStatus {
    pub fn uptime_ms(&self) -> u64 {
        self.now_ms.saturating_sub(self.started_ms)
    }

    /// The nodes whose logs this node does not hold, by name.
    pub fn not_held(&self) -> Vec<&str> {
        (self.peers.iter())
            .filter(|p| !p.held)
            .map(|p| p.name.as_str())
            .collect()
    }
}

/// What a node that holds only its branch does not hold, in one line for
/// the table and the page; `None` for a node that holds everything.
pub fn describe_holds(s: &NodeStatus) -> Option<String> {
    if s.holds != "tree" {
        return None;
    }
    let not = s.not_held();
    let mut line = format!(
        "holds its branch of the tree only: {} of {} members' logs not held",
        not.len(),
        s.peers.len() + 1
    );
    if !not.is_empty() {
        const NAMED: usize = 8;
        let mut names = not[..not.len().min(NAMED)].join(", ");
        if not.len() > NAMED {
            names.push_str(&format!(", and {} more", not.len() - NAMED));
        }
        line.push_str(&format!(" ({names})"));
    }
    if s.totals.unheld > 0 {
        line.push_str(&format!("; {} of their deltas dropped", s.totals.unheld));
    }
    Some(line)
}

/// `12s`, `5m`, `3h`, `2d`: the age of something, short enough for a table.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// An open link in one line, for the table and the page:
/// `rtt 612ms · 7.9 kB/s (cap 8.0) · 24 kB in flight · zstd 0.31x · 1204 to send, ~3m`.
pub fn describe_link(p: &PeerStatus) -> Option<String> {
    let pace = p.pace?;
    let mut parts = Vec::new();
    if let Some(rtt) = pace.rtt_ms {
        parts.push(format!("rtt {rtt}ms"));
    }
    let kb = |b: u64| b as f64 / 1000.0;
    match (pace.rate_bytes_per_sec, pace.rate_cap_bytes_per_sec) {
        (Some(r), Some(c)) => parts.push(format!("{:.1} kB/s (cap {:.1})", kb(r), kb(c))),
        (Some(r), None) => parts.push(format!("{:.1} kB/s", kb(r))),
        (None, Some(c)) => parts.push(format!("cap {:.1} kB/s", kb(c))),
        (None, None) => {}
    }
    parts.push(format!(
        "{:.0} kB in flight",
        pace.in_flight_bytes as f64 / 1000.0
    ));
    let t = &p.traffic;
    if pace.compressed && t.delta_bytes_sent > 0 {
        let ratio = t.bytes_sent as f64 / t.delta_bytes_sent as f64;
        parts.push(format!("zstd {ratio:.2}x"));
    }
    let left = p.lags.map_or(0, |l| l.they_lack.deltas);
    if left > 0 {
        let eta = pace
            .catch_up_eta_secs
            .map_or(String::new(), |s| format!(", ~{}", age(s * 1000)));
        parts.push(format!("{left} to send{eta}"));
    }
    Some(parts.join(" · "))
}

#[cfg(test)]
impl PeerStatus {
    /// A member known by name only, for tests to fill in.
    pub(crate) fn blank(name: &str) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            id: NodeId([0; 32]),
            region: None,
            unit: None,
            below: false,
            held: true,
            path: Vec::new(),
            seq: 0,
            via: None,
            reported: None,
            standing: "active".into(),
            state: PeerState::NoLink,
            links: 0,
            address: None,
            last_contact_ms: None,
            last_sync_ms: None,
            lags: None,
            stalled_since_ms: None,
            refused_since_ms: None,
            last_error: None,
            traffic: Traffic::default(),
            pace: None,
            refused_by_peer: 0,
            last_refusal_by_peer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_sort_worst_first_and_round_trip_their_names() {
        let mut states = ALL_STATES.to_vec();
        states.reverse();
        states.sort();
        assert_eq!(states, ALL_STATES.to_vec());
        for s in ALL_STATES {
            assert_eq!(PeerState::parse(s.as_str()), Some(s));
        }
        assert_eq!(PeerState::parse("fine"), None);
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(119_000), "119s");
        assert_eq!(age(120_000), "2m");
        assert_eq!(age(7_200_000), "2h");
        assert_eq!(age(3 * 86_400_000), "3d");
    }
}

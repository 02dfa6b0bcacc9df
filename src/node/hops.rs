//! Hop reports: each node tells the node above it in the tree how its own
//! links to the nodes below it stand, with what those told it of theirs,
//! so every node sees every hop of its subtree: HQ sees that office-altai
//! has not heard from centre-biysk for three hours, not only that its own
//! link to office-altai is fine.
//!
//! A report rides in the digest to the node above, and only when it
//! changed since it last went on that link (and in a link's first digest),
//! so an idle tree sends none. Times travel as ages, so no two clocks need
//! agree. A receiver keeps only hops inside the reporter's own branch: a
//! node can misreport its subtree, never another's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::node::status::{Hop, PeerState};
use crate::rpc::pb;

/// Hops in one report, at most: a tree of a few hundred offices fits.
pub const HOPS_MAX: usize = 2048;
/// Characters of a node's name in a report, at most.
const NAME_MAX: usize = 128;

/// Equal but for when contact was last made: nothing worth a report.
fn same(a: &Hop, b: &Hop) -> bool {
    Hop {
        contact_ms: b.contact_ms,
        ..a.clone()
    } == *b
}

/// What this node reports up, and what the nodes below it reported.
#[derive(Debug, Default)]
pub struct Board {
    /// The members above this node, and its report for them.
    up: Mutex<(BTreeSet<String>, Arc<Vec<Hop>>)>,
    /// By reporting peer: its report.
    heard: Mutex<BTreeMap<String, Vec<Hop>>>,
}

impl Board {
    /// The report for the node above, as of now; replaced only when it
    /// changed, so a link sends it again only then. Returns whether a
    /// hop came, went or changed state: news to send at once.
    pub fn set_report(&self, above: BTreeSet<String>, hops: Vec<Hop>) -> bool {
        let mut up = self.up.lock().expect("hops lock poisoned");
        let news = !same_states(&up.1, &hops);
        let same = up.1.len() == hops.len() && up.1.iter().zip(&hops).all(|(a, b)| same(a, b));
        up.0 = above;
        if !same {
            up.1 = Arc::new(hops);
        }
        news
    }

    /// For a digest to `peer`: the report, if `peer` is above this node.
    pub fn report_for(&self, peer: &str) -> Option<Arc<Vec<Hop>>> {
        let up = self.up.lock().expect("hops lock poisoned");
        up.0.contains(peer).then(|| up.1.clone())
    }

    /// Files `peer`'s report; returns whether a hop in it came, went or
    /// changed state since its last.
    pub fn heard(&self, peer: &str, hops: Vec<Hop>) -> bool {
        let mut heard = self.heard.lock().expect("hops lock poisoned");
        let news = !(heard.get(peer)).is_some_and(|before| same_states(before, &hops));
        heard.insert(peer.to_owned(), hops);
        news
    }

    /// What `peer` last reported (empty if nothing).
    pub fn from(&self, peer: &str) -> Vec<Hop> {
        let heard = self.heard.lock().expect("hops lock poisoned");
        heard.get(peer).cloned().unwrap_or_default()
    }
}

/// The same hops in the same states, whatever their lags.
fn same_states(a: &[Hop], b: &[Hop]) -> bool {
    a.len() == b.len()
        && (a.iter().zip(b)).all(|(a, b)| (&a.from, &a.to, a.state) == (&b.from, &b.to, b.state))
}

/// `hops` on the wire, their times as ages at `now_ms`.
pub fn encode(hops: &[Hop], now_ms: u64) -> pb::Hops {
    pb::Hops {
        hops: (hops.iter())
            .map(|h| pb::Hop {
                from: h.from.clone(),
                to: h.to.clone(),
                state: h.state.as_str().to_owned(),
                they_lack: h.they_lack,
                we_lack: h.we_lack,
                contact_age_ms: h.contact_ms.map(|t| now_ms.saturating_sub(t)),
            })
            .collect(),
    }
}

/// A peer's report, checked and bounded, its ages as times at `now_ms`.
pub fn decode(r: &pb::Hops, now_ms: u64) -> Result<Vec<Hop>, String> {
    if r.hops.len() > HOPS_MAX {
        return Err(format!(
            "{} hops reported, at most {HOPS_MAX}",
            r.hops.len()
        ));
    }
    (r.hops.iter())
        .map(|h| {
            if h.from.chars().count() > NAME_MAX || h.to.chars().count() > NAME_MAX {
                return Err(format!("a hop's node name is over {NAME_MAX} characters"));
            }
            let state = PeerState::parse(&h.state)
                .ok_or_else(|| format!("a hop's state {:?} is not one", h.state))?;
            Ok(Hop {
                from: h.from.clone(),
                to: h.to.clone(),
                state,
                they_lack: h.they_lack,
                we_lack: h.we_lack,
                contact_ms: h.contact_age_ms.map(|a| now_ms.saturating_sub(a)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(to: &str, state: PeerState, contact_ms: Option<u64>) -> Hop {
        Hop {
            from: "office-altai".into(),
            to: to.into(),
            state,
            they_lack: 3,
            we_lack: 0,
            contact_ms,
        }
    }

    #[test]
    fn a_report_crosses_clocks_as_ages_and_bad_ones_are_refused() {
        let hops = vec![
            hop("centre-biysk", PeerState::Unreachable, Some(1_000)),
            hop("centre-aleysk", PeerState::InSync, None),
        ];
        // Sent at 61 s by the sender's clock, read at 500 s by ours.
        let back = decode(&encode(&hops, 61_000), 500_000).unwrap();
        assert_eq!(back[0].contact_ms, Some(440_000), "60 s before it arrived");
        assert_eq!(back[1], hops[1]);

        let mut bad = encode(&hops, 61_000);
        bad.hops[0].state = "fine".into();
        assert!(decode(&bad, 0).unwrap_err().contains("state"));
        let mut long = encode(&hops, 61_000);
        long.hops[1].to = "x".repeat(NAME_MAX + 1);
        assert!(decode(&long, 0).is_err());
        let many = pb::Hops {
            hops: vec![encode(&hops, 0).hops[0].clone(); HOPS_MAX + 1],
        };
        assert!(decode(&many, 0).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_report_heard_is_news_when_a_hop_changes_state() {
        let b = Board::default();
        let report = |state| vec![hop("centre-biysk", state, None)];
        assert!(b.heard("office-altai", report(PeerState::InSync)));
        assert!(!b.heard("office-altai", report(PeerState::InSync)));
        assert!(b.heard("office-altai", report(PeerState::Unreachable)));
        assert_eq!(b.from("office-altai")[0].state, PeerState::Unreachable);
        assert!(b.from("office-kem").is_empty());
    }

    #[test]
    fn a_report_goes_up_only_and_is_new_only_when_a_hop_changed() {
        let b = Board::default();
        let above: BTreeSet<String> = ["hq".to_owned()].into();
        let in_sync = |contact| vec![hop("centre-biysk", PeerState::InSync, Some(contact))];
        assert!(
            b.set_report(above.clone(), in_sync(1)),
            "a first report is news"
        );
        assert!(
            b.report_for("centre-biysk").is_none(),
            "never down the tree"
        );
        let first = b.report_for("hq").unwrap();
        // Only the time of the last contact moved: the same report.
        assert!(!b.set_report(above.clone(), in_sync(9)));
        assert!(Arc::ptr_eq(&first, &b.report_for("hq").unwrap()));
        // A lag moved: a new report, for the next digest, but no news.
        let mut lagging = in_sync(9);
        lagging[0].they_lack = 40;
        assert!(!b.set_report(above.clone(), lagging));
        let lagged = b.report_for("hq").unwrap();
        assert!(!Arc::ptr_eq(&first, &lagged));
        let down = vec![hop("centre-biysk", PeerState::Unreachable, Some(9))];
        assert!(b.set_report(above, down));
        let next = b.report_for("hq").unwrap();
        assert!(!Arc::ptr_eq(&lagged, &next));
        assert_eq!(next[0].state, PeerState::Unreachable);
    }
}

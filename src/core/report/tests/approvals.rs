//! Approvals: a region approves its unit's report and HQ accepts the
//! region's; an approved report is locked until the level above
//! withdraws; a revision that breaks the lock is flagged and not counted;
//! forged approvals are refused at every node; `approved_only` counts only
//! what is approved, and the parts verify all of it.

use super::*;
use crate::core::report::approval::{self, approve, Ask, State};
use crate::core::report::document::{check, sign};
use crate::core::Above;

struct Fed {
    hq: Author,
    fr: Author,
    a: Author,
    nodes: Vec<Replica<MemStore>>,
}

const HQ: usize = 0;
const FR: usize = 1;
const A: usize = 2;

fn fed() -> Fed {
    let hq = Author::hq(9);
    let fr = Author::region(1, "fr");
    let ke = Author::region(2, "ke");
    let a = Author::unit(3, "a");
    let mut r = crate::core::Roster::new(1, [&hq, &fr, &ke, &a].map(Author::member));
    r.units.insert("a", Above::Region("fr".into()));
    let nodes = (0..3)
        .map(|_| Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap())
        .collect();
    Fed { hq, fr, a, nodes }
}

impl Fed {
    /// Every node gets every delta, as after sync.
    fn sync(&mut self) {
        let all: Vec<SignedDelta> = (self.nodes.iter())
            .flat_map(|n| n.store().logs.values().cloned())
            .collect();
        for n in &mut self.nodes {
            n.ingest(all.clone(), "peer", NOW).unwrap();
        }
    }

    fn submit(&mut self, at: usize, figure: i64, t: u64) -> Result<SignedDelta, String> {
        let (author, part) = match at {
            A => (&self.a, Part::Unit("a".into())),
            _ => (&self.fr, Part::Region("fr".into())),
        };
        let who = Submitter {
            part: Some(part),
            region: Some("fr"),
            ..who(author)
        };
        let s = Schema::default_set();
        (submit(
            &mut self.nodes[at],
            &author.key,
            &s,
            &who,
            &sub("2026-09", &[("events", figure)]),
            t,
        ))
        .map(|(d, _)| d)
        .map_err(|e| e.to_string())
    }

    fn approve(&mut self, at: usize, part: &Part, approved: bool) -> Result<SignedDelta, String> {
        let key = if at == HQ { &self.hq.key } else { &self.fr.key };
        let ask = Ask {
            part,
            period: "2026-09".parse().unwrap(),
            approved,
            expect: None,
            operator: "op",
        };
        approve(&mut self.nodes[at], key, &ask, NOW + 100)
            .map(|(d, _)| d)
            .map_err(|e| e.to_string())
    }

    fn aggregate(&self, at: usize, approved_only: bool) -> Aggregate {
        let none = |_: &str| None;
        let schema = Schema::default_set();
        let me = [&self.hq, &self.fr, &self.a][at];
        let cx = Context {
            period: "2026-09".parse().unwrap(),
            schema: &schema,
            me: me.id(),
            my_name: "me",
            now_ms: NOW + 1000,
            stale_after_ms: DAY,
            last_contact: &none,
            scope: None,
            approved_only,
        };
        compute(&self.nodes[at], &cx).unwrap()
    }
}

fn entry<'a>(agg: &'a Aggregate, label: &str) -> &'a RegionCoverage {
    agg.regions.iter().find(|e| e.label() == label).unwrap()
}

#[test]
fn an_approval_locks_the_report_until_the_level_above_withdraws_it() {
    let mut f = fed();
    let unit_a = Part::Unit("a".into());
    let region_fr = Part::Region("fr".into());
    f.submit(A, 5, NOW).unwrap();
    f.submit(FR, 7, NOW).unwrap();
    f.sync();
    // Only the level above approves.
    let e = f.approve(HQ, &unit_a, true).unwrap_err();
    assert!(
        e.contains("unit a's reports are approved by region fr's nodes; this node is"),
        "{e}"
    );
    let e = f.approve(FR, &region_fr, true).unwrap_err();
    assert!(e.contains("region fr's reports are approved by HQ"), "{e}");
    f.approve(FR, &unit_a, true).unwrap();
    f.approve(HQ, &region_fr, true).unwrap();
    f.sync();

    // Locked: the unit's node refuses a new revision, and so does fr's.
    let e = f.submit(A, 6, NOW + 200).unwrap_err();
    assert!(
        e.contains("unit a's report for 2026-09 is locked: office"),
        "{e}"
    );
    assert!(f
        .submit(FR, 8, NOW + 200)
        .unwrap_err()
        .contains("is locked"));

    // Counted with --approved, the approval stated per entry.
    let agg = f.aggregate(HQ, true);
    for label in ["fr", "fr/a"] {
        let e = entry(&agg, label);
        assert!(e.is_approved() && e.figures.is_some(), "{e:?}");
    }
    assert_eq!(agg.totals[1].sum, 12);
    assert_eq!(agg.reporting.as_ref().unwrap().total.approved, 2);
    assert!(entry(&agg, "ke").missing);
    let doc = sign(&agg, &f.hq.key);
    let v = check(&f.nodes[A], doc.as_bytes(), Some(&unit_a)).unwrap();
    assert!(v.ok(), "{v:?}");
    assert!(
        v.checks.iter().any(|c| c
            .text
            .contains("approves seq 1 (revision 1), as the aggregate says")),
        "{v:?}"
    );

    // Withdrawn from above: the unit may submit again, and until it is
    // approved again --approved leaves it out.
    f.approve(FR, &unit_a, false).unwrap();
    f.sync();
    f.submit(A, 6, NOW + 300).unwrap();
    f.sync();
    let agg = f.aggregate(HQ, true);
    let e = entry(&agg, "fr/a");
    assert_eq!(
        (e.status(), e.approval.as_ref().map(|n| n.state)),
        ("unapproved", Some(State::Withdrawn))
    );
    assert_eq!(agg.totals[1].sum, 7, "only fr's approved report");
    let v = check(&f.nodes[A], sign(&agg, &f.hq.key).as_bytes(), Some(&unit_a)).unwrap();
    assert!(v.ok(), "{v:?}");
    // Without --approved, the new revision counts.
    assert_eq!(f.aggregate(HQ, false).totals[1].sum, 13);
}

/// A patched unit node submits after the approval anyway: every
/// aggregate flags it and counts nothing for it, and the unit agrees.
#[test]
fn a_revision_that_breaks_the_lock_is_flagged_and_not_counted() {
    let mut f = fed();
    let unit_a = Part::Unit("a".into());
    f.submit(A, 5, NOW).unwrap();
    f.sync();
    f.approve(FR, &unit_a, true).unwrap();
    // The unit's node has not heard of the approval yet (or ignores it).
    f.submit(A, 50, NOW + 150).unwrap();
    f.sync();
    for at in [HQ, FR] {
        let agg = f.aggregate(at, false);
        let e = entry(&agg, "fr/a");
        assert_eq!(e.approval.as_ref().unwrap().state, State::LockBroken);
        assert!(
            e.figures.is_none() && e.invalid.as_ref().unwrap().contains("locked"),
            "{e:?}"
        );
        assert_eq!(agg.totals[1].count, 0);
        let key = if at == HQ { &f.hq.key } else { &f.fr.key };
        let v = check(&f.nodes[A], sign(&agg, key).as_bytes(), Some(&unit_a)).unwrap();
        assert!(v.ok(), "{v:?}");
        // Counting it anyway fails the check every verifier runs.
        let mut counted = agg.clone();
        let e = counted
            .regions
            .iter_mut()
            .find(|e| e.label() == "fr/a")
            .unwrap();
        let d = f.nodes[A].get("units/a/reports/2026-09").unwrap().unwrap();
        e.figures = Some(aggregate::Figures::of(Report::decode(&d).unwrap()));
        e.invalid = None;
        counted.totals = aggregate::totals(&counted, &counted.regions);
        counted.reporting = Some(timeliness::Reporting::of(&counted.regions));
        let v = check(&f.nodes[HQ], sign(&counted, key).as_bytes(), None).unwrap();
        assert!(
            v.checks.iter().any(|c| !c.ok
                && c.text
                    .contains("fr/a is counted, but its approval is lock broken")),
            "{v:?}"
        );
    }
}

/// Approvals at the right key that are not approvals of that report:
/// another part named, and another delta's hash. Refused at every node,
/// never honoured, and never a lock.
#[test]
fn forged_approvals_are_refused_at_every_node() {
    let mut f = fed();
    let fr_report = f.submit(FR, 7, NOW).unwrap();
    f.submit(A, 5, NOW).unwrap();
    f.sync();
    let period: Period = "2026-09".parse().unwrap();
    let roster = f.nodes[FR].roster().clone();
    let unit_a = Part::Unit("a".into());
    let key = approval::approval_key(&roster, &unit_a, period).unwrap();
    let forged = |report: DeltaRef, unit: Option<&str>| approval::Approval {
        period: "2026-09".into(),
        region: "fr".into(),
        unit: unit.map(str::to_owned),
        report,
        revision: 1,
        approved: true,
        by: "mallory".into(),
        at_ms: NOW,
    };
    // Wrong level: fr approves its own report, at its unit's key.
    let wrong_level = forged(DeltaRef::of(&fr_report), None);
    // Wrong report: unit a named, fr's delta given.
    let wrong_hash = forged(DeltaRef::of(&fr_report), Some("a"));
    for (a, why) in [
        (
            wrong_level,
            "it names region fr for 2026-09, at the key of unit a",
        ),
        (wrong_hash, "which is not unit a's report"),
    ] {
        f.nodes[FR]
            .write(&f.fr.key, &key, Op::Put, a.encode(), NOW + 1)
            .unwrap();
        f.sync();
        for at in [HQ, FR, A] {
            let standing = approval::standing(&f.nodes[at], &unit_a, period).unwrap();
            assert!(
                matches!(&standing, approval::Standing::Forged { why: w, .. } if w.contains(why)),
                "{standing:?}"
            );
            let agg = f.aggregate(at, true);
            let e = entry(&agg, "fr/a");
            assert_eq!(
                (e.approval.as_ref().unwrap().state, e.status()),
                (State::Refused, "unapproved")
            );
            assert!(
                agg.warnings
                    .iter()
                    .any(|w| w.contains("is not an approval")),
                "{:?}",
                agg.warnings
            );
        }
        // And no lock: the unit may still submit.
        let v = check(
            &f.nodes[A],
            sign(&f.aggregate(HQ, true), &f.hq.key).as_bytes(),
            Some(&unit_a),
        )
        .unwrap();
        assert!(v.ok(), "{v:?}");
        assert!(
            v.checks.iter().any(|c| c.text.contains("rightly refused")),
            "{v:?}"
        );
    }
    f.submit(A, 6, NOW + 500).unwrap();
}

/// An approval that arrives before the report it names waits: neither
/// honoured nor called forged, and honoured once the report arrives.
#[test]
fn an_approval_ahead_of_its_report_waits_for_it() {
    let mut f = fed();
    let unit_a = Part::Unit("a".into());
    f.submit(A, 5, NOW).unwrap();
    let from_a: Vec<SignedDelta> = f.nodes[A].store().logs.values().cloned().collect();
    f.nodes[FR].ingest(from_a, "peer", NOW).unwrap();
    f.approve(FR, &unit_a, true).unwrap();
    // HQ hears from fr first: the approval, not yet the report.
    let from_fr: Vec<SignedDelta> = (f.nodes[FR].store().logs.values())
        .filter(|d| d.author() == f.fr.id())
        .cloned()
        .collect();
    f.nodes[HQ].ingest(from_fr, "peer", NOW).unwrap();
    let period: Period = "2026-09".parse().unwrap();
    let standing = approval::standing(&f.nodes[HQ], &unit_a, period).unwrap();
    assert!(
        matches!(standing, approval::Standing::Waiting { .. }),
        "{standing:?}"
    );
    let agg = f.aggregate(HQ, true);
    assert_eq!(
        entry(&agg, "fr/a").approval.as_ref().unwrap().state,
        State::Waiting
    );
    assert!(
        agg.warnings
            .iter()
            .all(|w| !w.contains("is not an approval")),
        "{:?}",
        agg.warnings
    );
    f.sync();
    let agg = f.aggregate(HQ, true);
    assert!(
        entry(&agg, "fr/a").is_approved() && agg.totals[1].sum == 5,
        "{agg:?}"
    );
}

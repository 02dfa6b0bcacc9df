//! Reports rolled up the organisation's tree, through the core: under
//! generated trees (regions, units, units below units), revisions, partial
//! arrival in any order, and one reorganisation (a unit moved to another
//! region by a newer roster), HQ's totals and every region's equal the
//! last reports of the parts below them, each counted once where the
//! roster in force puts it; and every region and unit verifies its part
//! of both its region's aggregate and HQ's against its own log.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use fedsync::core::report::aggregate::{compute, Aggregate, Context};
use fedsync::core::report::{document, submit, Part, Schema, Submission, Submitter};
use fedsync::core::{Above, Limits, MemStore, Replica, Roster, SignedDelta, SignedRoster};
use fedsync::testkit::Author;

const NOW: u64 = 1_800_000_000_000;
const METRICS: [&str; 4] = ["volunteers", "events", "participants", "hours"];
const PERIOD: &str = "2026-Q3";

#[derive(Clone, Debug)]
struct Tree {
    /// Per region: per unit, whether it hangs from the unit before it
    /// (else from the region).
    regions: Vec<Vec<bool>>,
}

fn tree() -> impl Strategy<Value = Tree> {
    let units = prop::collection::vec(prop::bool::weighted(0.4), 0..4);
    prop::collection::vec(units, 2..4).prop_map(|regions| Tree { regions })
}

/// A part of the generated tree: its name, what it hangs from, its author.
struct Node {
    part: Part,
    above: Option<Above>,
    author: Author,
}

fn nodes(t: &Tree) -> Vec<Node> {
    let mut out = Vec::new();
    let mut seed = 1;
    for (i, units) in t.regions.iter().enumerate() {
        let region = format!("r{i}");
        out.push(Node {
            part: Part::Region(region.clone()),
            above: None,
            author: Author::region(seed, &region),
        });
        seed += 1;
        for (j, nested) in units.iter().enumerate() {
            let unit = format!("u{i}-{j}");
            let above = match (*nested, j) {
                (true, j) if j > 0 => Above::Unit(format!("u{i}-{}", j - 1)),
                _ => Above::Region(region.clone()),
            };
            out.push(Node {
                part: Part::Unit(unit.clone()),
                above: Some(above),
                author: Author::unit(seed, &unit),
            });
            seed += 1;
        }
    }
    out
}

fn roster(version: u64, nodes: &[Node], hq: &Author) -> Roster {
    let mut r = Roster::new(
        version,
        nodes.iter().map(|n| n.author.member()).chain([hq.member()]),
    );
    for n in nodes {
        if let (Part::Unit(u), Some(a)) = (&n.part, &n.above) {
            r.units.insert(u.clone(), a.clone());
        }
    }
    r
}

fn open(signed: &SignedRoster) -> Replica<MemStore> {
    let (r, problem) =
        Replica::open_signed(MemStore::default(), signed.clone(), Limits::default(), NOW).unwrap();
    assert!(problem.is_none());
    r
}

fn aggregate(at: &Replica<MemStore>, me: &Author, scope: Option<Part>) -> Aggregate {
    let schema = Schema::default_set();
    let cx = Context {
        period: PERIOD.parse().unwrap(),
        schema: &schema,
        me: me.id(),
        my_name: "aggregator",
        now_ms: NOW,
        stale_after_ms: 1_000,
        last_contact: &|_| Some(NOW),
        scope,
        approved_only: false,
    };
    compute(at, &cx).unwrap()
}

/// Count, sum, min and max of each metric over `reports`.
fn expected_totals(reports: &[&BTreeMap<&str, i64>]) -> Vec<(u64, i64, Option<i64>, Option<i64>)> {
    METRICS
        .iter()
        .map(|m| {
            let v: Vec<i64> = reports.iter().filter_map(|r| r.get(m).copied()).collect();
            (
                v.len() as u64,
                v.iter().sum(),
                v.iter().min().copied(),
                v.iter().max().copied(),
            )
        })
        .collect()
}

fn totals_of(a: &Aggregate) -> Vec<(u64, i64, Option<i64>, Option<i64>)> {
    a.totals
        .iter()
        .map(|t| (t.count, t.sum, t.min, t.max))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn totals_at_every_level_equal_the_last_reports_of_the_parts_below(
        t in tree(),
        subs in prop::collection::vec(
            prop::collection::vec(prop::array::uniform4(prop::option::weighted(0.8, 0u32..100_000)), 0..4),
            16,
        ),
        cuts in prop::collection::vec(0u64..5, 16),
        moved in (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>()),
        order in any::<u64>(),
    ) {
        let fed = SigningKey::from_bytes(&[7; 32]);
        let hq = Author::hq(100);
        let mut nodes = nodes(&t);
        let first = SignedRoster::sign(&roster(1, &nodes, &hq), &fed).unwrap();
        // The reorganisation: a top-level unit (with whatever hangs from
        // it) moves to another region in roster version 2.
        let regions = t.regions.len();
        let top: Vec<usize> = (0..nodes.len())
            .filter(|i| matches!(nodes[*i].above, Some(Above::Region(_))))
            .collect();
        if !top.is_empty() {
            let i = top[moved.0.index(top.len())];
            let to = format!("r{}", moved.1.index(regions));
            nodes[i].above = Some(Above::Region(to));
        }
        let second = SignedRoster::sign(&roster(2, &nodes, &hq), &fed).unwrap();
        let schema = Schema::default_set();

        // Each part submits at its own node under the first roster.
        let mut last: BTreeMap<Part, BTreeMap<&str, i64>> = BTreeMap::new();
        let mut all: Vec<SignedDelta> = Vec::new();
        let mut at_parts = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let mut at = open(&first);
            let r = at.roster().clone();
            let member = n.author.member();
            let who = Submitter::of(&r, &member, "op");
            for (k, figures) in subs[i].iter().enumerate() {
                let metrics: BTreeMap<String, i64> = METRICS
                    .iter()
                    .zip(figures)
                    .filter_map(|(m, v)| Some((m.to_string(), i64::from((*v)?))))
                    .collect();
                let sub = Submission {
                    period: PERIOD.into(),
                    metrics,
                    ..Submission::default()
                };
                let Ok((delta, _)) = submit(&mut at, &n.author.key, &schema, &who, &sub, NOW + k as u64) else {
                    prop_assert!(sub.metrics.is_empty(), "only an empty report is refused");
                    continue;
                };
                if delta.seq() <= cuts[i] {
                    let figures = METRICS.iter().zip(figures)
                        .filter_map(|(m, v)| Some((*m, i64::from((*v)?)))).collect();
                    last.insert(n.part.clone(), figures);
                }
            }
            all.extend(at.store().logs.values().filter(|d| d.seq() <= cuts[i]).cloned());
            at.adopt_roster(second.clone(), NOW).unwrap();
            at_parts.push(at);
        }
        let mut seed = order;
        for i in (1..all.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            all.swap(i, (seed >> 33) as usize % (i + 1));
        }
        // HQ and each region's node hold everything that arrived; HQ hears
        // of the newer roster after the deltas, the regions before.
        let mut at_hq = open(&first);
        at_hq.ingest(all.clone(), "peers", NOW).unwrap();
        at_hq.adopt_roster(second.clone(), NOW).unwrap();
        let hq_agg = aggregate(&at_hq, &hq, None);
        prop_assert_eq!(hq_agg.roster_version, 2);
        let everything: Vec<&BTreeMap<&str, i64>> = last.values().collect();
        prop_assert_eq!(totals_of(&hq_agg), expected_totals(&everything));
        prop_assert_eq!(hq_agg.regions.len(), nodes.len(), "each part listed once");
        let hq_doc = document::sign(&hq_agg, &hq.key);

        let tree_now = at_hq.roster().units.clone();
        let region_of = |p: &Part| match p {
            Part::Region(r) => r.clone(),
            Part::Unit(u) => tree_now.region_of(u).unwrap().to_owned(),
        };
        let mut region_docs = BTreeMap::new();
        for n in nodes.iter().filter(|n| matches!(n.part, Part::Region(_))) {
            let mut at = open(&second);
            at.ingest(all.clone(), "peers", NOW).unwrap();
            let agg = aggregate(&at, &n.author, Some(n.part.clone()));
            let region = region_of(&n.part);
            let below: Vec<&BTreeMap<&str, i64>> = last.iter()
                .filter(|(p, _)| region_of(p) == region)
                .map(|(_, f)| f)
                .collect();
            prop_assert_eq!(totals_of(&agg), expected_totals(&below), "region {}", region);
            prop_assert!(agg.regions.iter().all(|e| e.region == region));
            region_docs.insert(region, document::sign(&agg, &n.author.key));
        }
        // Every part verifies its entry in its region's aggregate and HQ's.
        for (n, at) in nodes.iter().zip(&at_parts) {
            let region_doc = &region_docs[&region_of(&n.part)];
            for doc in [&hq_doc, region_doc] {
                let v = document::check(at, doc.as_bytes(), Some(&n.part)).unwrap();
                prop_assert!(v.ok(), "{:?}: {:?}", n.part, v);
            }
        }
    }
}

#[test]
fn a_unit_checking_an_aggregate_made_under_another_tree_is_told_so() {
    let fed = SigningKey::from_bytes(&[7; 32]);
    let hq = Author::hq(100);
    let t = Tree {
        regions: vec![vec![false], vec![]],
    };
    let mut nodes = nodes(&t);
    let first = SignedRoster::sign(&roster(1, &nodes, &hq), &fed).unwrap();
    nodes[1].above = Some(Above::Region("r1".into()));
    let second = SignedRoster::sign(&roster(2, &nodes, &hq), &fed).unwrap();
    let mut at_unit = open(&first);
    let r = at_unit.roster().clone();
    let member = nodes[1].author.member();
    let sub = Submission {
        period: PERIOD.into(),
        metrics: [("events".to_string(), 3)].into(),
        ..Submission::default()
    };
    let who = Submitter::of(&r, &member, "op");
    let schema = Schema::default_set();
    let (delta, _) = submit(&mut at_unit, &nodes[1].author.key, &schema, &who, &sub, NOW).unwrap();
    let mut at_hq = open(&second);
    at_hq.ingest(vec![delta], "peer", NOW).unwrap();
    let doc = document::sign(&aggregate(&at_hq, &hq, None), &hq.key);
    // The unit still holds roster 1, which puts it in r0: the check says
    // which roster the aggregate used.
    let v = document::check(&at_unit, doc.as_bytes(), Some(&nodes[1].part)).unwrap();
    assert!(!v.ok());
    let why = v.checks.iter().find(|c| !c.ok).unwrap();
    assert!(
        why.text.contains("roster version 2") && why.text.contains("r0"),
        "{why:?}"
    );
    at_unit.adopt_roster(second, NOW).unwrap();
    let v = document::check(&at_unit, doc.as_bytes(), Some(&nodes[1].part)).unwrap();
    assert!(v.ok(), "{v:?}");
}

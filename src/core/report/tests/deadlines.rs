//! Deadlines: each region judged on time, late, pending or overdue, by its
//! first revision's signed time and by when HQ first held it, over
//! generated submission and arrival times; and the rates that follow.

use proptest::prelude::*;

use super::*;
use crate::core::report::document::{check, sign};
use crate::core::report::timeliness::{self, Pct, Timeliness};

/// 2026-09's reports are due 15 days after it ends (the default schema).
fn due() -> u64 {
    let p: Period = "2026-09".parse().unwrap();
    p.due_ms(&Schema::default_set().due).unwrap()
}

/// One region's story: its first submission and a correction, as offsets
/// from the deadline in hours, and how long HQ took to get it.
#[derive(Clone, Debug)]
struct Story {
    first: Option<i64>,
    correction: Option<i64>,
    transit_hours: u64,
}

fn story() -> impl Strategy<Value = Story> {
    (
        prop::option::weighted(0.8, -400i64..400),
        prop::option::of(1i64..300),
        0u64..200,
    )
        .prop_map(|(first, correction, transit_hours)| Story {
            first,
            correction: first.and(correction),
            transit_hours,
        })
}

fn at(hours: i64) -> u64 {
    (due() as i64 + hours * 3_600_000) as u64
}

fn held(s: &Story, hours: i64) -> u64 {
    at(hours) + s.transit_hours * 3_600_000
}

/// The regions' reports written at their times and carried to HQ at
/// theirs, as far as HQ holds them by `now`; then HQ's aggregate at `now`.
fn run(stories: &[Story], now: u64) -> (Vec<Author>, Replica<MemStore>, Aggregate) {
    let hq = Author::hq(1);
    let regions: Vec<Author> = (0..stories.len())
        .map(|i| Author::region(10 + i as u64, &format!("r{i:02}")))
        .collect();
    let all: Vec<&Author> = std::iter::once(&hq).chain(&regions).collect();
    let mut at_hq = replica(&all);
    for (a, s) in regions.iter().zip(stories) {
        let mut mine = replica(&all);
        let Some(first) = s.first else { continue };
        let revisions = [Some(first), s.correction.map(|c| first + c)];
        for (n, hours) in revisions.into_iter().flatten().enumerate() {
            let events = ("events", n as i64 + 1);
            submit_at(&mut mine, a, sub("2026-09", &[events]), at(hours));
            if held(s, hours) <= now {
                let deltas: Vec<SignedDelta> = mine.store().logs.values().cloned().collect();
                at_hq.ingest(deltas, "peer", held(s, hours)).unwrap();
            }
        }
    }
    let agg = aggregate_at(&at_hq, &hq, now);
    let mut authors = vec![hq];
    authors.extend(regions);
    (authors, at_hq, agg)
}

fn aggregate_at(at_hq: &Replica<MemStore>, hq: &Author, now: u64) -> Aggregate {
    let schema = Schema::default_set();
    let none = |_: &str| None;
    let cx = Context {
        period: "2026-09".parse().unwrap(),
        schema: &schema,
        me: hq.id(),
        my_name: "hq",
        now_ms: now,
        stale_after_ms: 7 * DAY,
        last_contact: &none,
        scope: None,
        approved_only: false,
    };
    compute(at_hq, &cx).unwrap()
}

/// What a region's story makes it at `now`, worked out from the story
/// alone: HQ holds its report once the first revision has travelled.
fn expected(s: &Story, now: u64) -> (Timeliness, Option<Timeliness>) {
    let judge = |t: u64| {
        if t <= due() {
            Timeliness::OnTime
        } else {
            Timeliness::Late
        }
    };
    match s.first.filter(|&f| held(s, f) <= now) {
        Some(first) => (judge(at(first)), Some(judge(held(s, first)))),
        None if now <= due() => (Timeliness::Pending, None),
        None => (Timeliness::Overdue, None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn each_region_is_judged_by_its_first_revision_and_its_arrival(
        stories in prop::collection::vec(story(), 1..8),
        now_hours in -100i64..800,
    ) {
        let now = at(now_hours);
        let (_, _, agg) = run(&stories, now);
        let rates = agg.reporting.as_ref().unwrap();
        let (mut received, mut on_time, mut arrived_late) = (0, 0, 0);
        for (s, e) in stories.iter().zip(&agg.regions) {
            let (t, arrived) = expected(s, now);
            prop_assert_eq!(e.timeliness, Some(t), "{:?}", s);
            prop_assert_eq!(e.arrived, arrived, "{:?}", s);
            received += u64::from(arrived.is_some());
            on_time += u64::from(t == Timeliness::OnTime);
            arrived_late += u64::from(arrived == Some(Timeliness::Late));
        }
        let expected_n = stories.len() as u64;
        prop_assert_eq!(rates.total.expected, expected_n);
        prop_assert_eq!(rates.total.received, received);
        prop_assert_eq!(rates.total.on_time, on_time);
        prop_assert_eq!(rates.total.arrived_late, arrived_late);
        prop_assert_eq!(rates.total.reporting_rate, Pct::of(received, expected_n));
        prop_assert_eq!(rates.total.on_time_rate, Pct::of(on_time, expected_n));
        prop_assert_eq!(rates.regions.len(), stories.len());
    }
}

/// A late correction keeps an on-time report on time; a region that sent
/// nothing is overdue; and a region verifies the time HQ states for it.
#[test]
fn a_late_correction_stays_on_time_and_the_region_checks_the_date() {
    let stories = [
        Story {
            first: Some(-48),
            correction: Some(100),
            transit_hours: 1,
        },
        Story {
            first: Some(30),
            correction: None,
            transit_hours: 0,
        },
        Story {
            first: None,
            correction: None,
            transit_hours: 0,
        },
    ];
    let now = at(24 * 30);
    let (authors, at_hq, agg) = run(&stories, now);
    let states: Vec<_> = agg.regions.iter().map(|e| e.timeliness.unwrap()).collect();
    assert_eq!(
        states,
        [Timeliness::OnTime, Timeliness::Late, Timeliness::Overdue]
    );
    let r0 = &agg.regions[0];
    assert_eq!(
        r0.figures.as_ref().unwrap().revision,
        2,
        "the correction is counted"
    );
    assert_eq!(r0.first_submitted_ms, Some(at(-48)));
    assert_eq!(r0.first_held_ms, Some(at(-47)));
    let rates = &agg.reporting.as_ref().unwrap().total;
    assert_eq!(rates.reporting_rate, Some(Pct(667)));
    assert_eq!(rates.on_time_rate, Some(Pct(333)));
    assert_eq!(serde_json::to_value(rates).unwrap()["on_time_rate"], 33.3);

    // r00 checks HQ's document against its own log (HQ holds the same).
    let hq = &authors[0];
    let part = Part::Region("r00".into());
    let v = check(&at_hq, sign(&agg, &hq.key).as_bytes(), Some(&part)).unwrap();
    assert!(v.ok(), "{v:?}");
    assert!(
        v.checks
            .iter()
            .any(|c| c.text.contains("first revision (revision 1)")),
        "{v:?}"
    );

    // HQ moves r00's first submission past the deadline, and relabels it
    // late with rates to match: signed, consistent, and caught at r00.
    let mut forged = agg.clone();
    forged.regions[0].first_submitted_ms = Some(at(5));
    forged.regions[0].timeliness = Some(Timeliness::Late);
    forged.reporting = Some(timeliness::Reporting::of(&forged.regions));
    let v = check(&at_hq, sign(&forged, &hq.key).as_bytes(), Some(&part)).unwrap();
    let failed: Vec<_> = v.checks.iter().filter(|c| !c.ok).collect();
    assert_eq!(failed.len(), 1, "{v:?}");
    assert!(
        failed[0].text.contains("dates its first submission"),
        "{v:?}"
    );

    // A relabel that does not follow from the times fails anywhere.
    let mut relabelled = agg.clone();
    relabelled.regions[2].timeliness = Some(Timeliness::Pending);
    let v = check(&at_hq, sign(&relabelled, &hq.key).as_bytes(), None).unwrap();
    assert!(!v.ok());
    assert!(
        v.checks.iter().any(|c| c
            .text
            .contains("r02 is listed pending, but by its times it is overdue")),
        "{v:?}"
    );

    // Rates that do not follow from the entries fail too.
    let mut inflated = agg.clone();
    inflated.reporting.as_mut().unwrap().total.on_time += 1;
    let v = check(&at_hq, sign(&inflated, &hq.key).as_bytes(), None).unwrap();
    assert!(
        v.checks
            .iter()
            .any(|c| !c.ok && c.text.contains("reporting rates are not")),
        "{v:?}"
    );
}

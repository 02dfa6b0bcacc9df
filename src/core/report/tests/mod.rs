//! Report unit tests: periods, schema and submission checks, the supersede
//! chain, aggregation with coverage; `document.rs`: signed aggregates
//! checked against a region's log.

mod approvals;
mod deadlines;
mod document;
mod receipts;
mod rules;

use std::collections::BTreeMap;

use super::aggregate::{self, compute, Aggregate, Context, MetricTotal, RegionCoverage};
use super::*;
use crate::core::store::MemStore;
use crate::core::Limits;
use crate::testkit::{roster, submission as sub, Author};

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 86_400_000;

fn replica(all: &[&Author]) -> Replica<MemStore> {
    Replica::open(
        MemStore::default(),
        roster(all.iter().copied()),
        Limits::default(),
    )
    .unwrap()
}

fn who(a: &Author) -> Submitter<'_> {
    Submitter {
        node_name: "node",
        part: a.region.clone().map(Part::Region),
        region: a.region.as_deref(),
        operator: "operator-x",
    }
}

fn submit_at(rep: &mut Replica<MemStore>, a: &Author, s: Submission, now: u64) -> SignedDelta {
    let schema = Schema::default_set();
    submit(rep, &a.key, &schema, &who(a), &s, now).unwrap().0
}

/// Copies every delta `from` holds into `to`, as sync would.
fn sync(from: &Replica<MemStore>, to: &mut Replica<MemStore>) {
    let deltas: Vec<SignedDelta> = from.store().logs.values().cloned().collect();
    to.ingest(deltas, "peer", NOW).unwrap();
}

fn aggregate(
    rep: &Replica<MemStore>,
    me: &Author,
    period: &str,
    contact: &dyn Fn(&str) -> Option<u64>,
) -> Aggregate {
    let schema = Schema::default_set();
    let cx = Context {
        period: period.parse().unwrap(),
        schema: &schema,
        me: me.id(),
        my_name: "hq",
        now_ms: NOW,
        stale_after_ms: 7 * DAY,
        last_contact: contact,
        scope: None,
        approved_only: false,
    };
    compute(rep, &cx).unwrap()
}

#[test]
fn periods_have_one_spelling() {
    for ok in ["2026-09", "2026-Q3", "1970-01", "9999-12", "2026-Q1"] {
        assert_eq!(ok.parse::<Period>().unwrap().to_string(), ok);
    }
    for bad in [
        "2026-9",
        "2026-13",
        "2026-00",
        "2026-Q0",
        "2026-Q5",
        "2026-q3",
        "26-09",
        "1969-12",
        "2026-09-01",
        "2026",
        "",
        "２０２６-09",
        "+202-09",
    ] {
        assert!(
            matches!(bad.parse::<Period>(), Err(ReportError::BadPeriod(_))),
            "{bad:?} parsed"
        );
    }
}

#[test]
fn report_keys_are_reserved_to_the_report_calls() {
    assert!(is_reserved("regions/fr/reports/2026-09"));
    assert!(is_reserved("regions/fr/reports/anything"));
    assert!(is_reserved(SCHEMA_KEY));
    assert!(!is_reserved("regions/fr/notes/1"));
    assert!(!is_reserved("regions/reports/x"));
    assert!(!is_reserved("hq/announcements/1"));
}

#[test]
fn schemas_are_checked() {
    assert!(Schema::default_set().check().is_ok());
    let round = Schema::decode(&Schema::default_set().encode()).unwrap();
    assert_eq!(round, Schema::default_set());
    for bad in [
        r#"{"metrics":[]}"#,
        r#"{"metrics":[{"name":"Volunteers"}]}"#,
        r#"{"metrics":[{"name":"a"},{"name":"a"}]}"#,
        r#"{"metrics":[{"name":"1a"}]}"#,
        r#"{"metrics":[{"name":"a","unit":"x"}]}"#,
        r#"{"metrics":[{"name":"a"}],"extra":1}"#,
        "not json",
    ] {
        assert!(
            matches!(
                Schema::decode(bad.as_bytes()),
                Err(ReportError::BadSchema(_))
            ),
            "{bad} accepted"
        );
    }
}

#[test]
fn bad_submissions_get_their_own_error_and_store_nothing() {
    let fr = Author::region(1, "fr");
    let hq = Author::hq(9);
    let mut rep = replica(&[&fr, &hq]);
    let schema = Schema::default_set();
    type Expect = fn(&ReportError) -> bool;
    let cases: Vec<(Submission, Expect)> = vec![
        (sub("2026-13", &[("events", 1)]), |e| {
            matches!(e, ReportError::BadPeriod(_))
        }),
        (sub("2026-09", &[("dances", 1)]), |e| {
            matches!(e, ReportError::UnknownMetric { .. })
        }),
        (sub("2026-09", &[("events", -1)]), |e| {
            matches!(e, ReportError::Negative { value: -1, .. })
        }),
        (sub("2026-09", &[("events", VALUE_MAX + 1)]), |e| {
            matches!(e, ReportError::TooLarge { .. })
        }),
        (sub("2026-09", &[]), |e| matches!(e, ReportError::NoMetrics)),
        (
            Submission {
                region: Some("ke".into()),
                ..sub("2026-09", &[("events", 1)])
            },
            |e| matches!(e, ReportError::WrongRegion { .. }),
        ),
        (
            Submission {
                notes: "x".repeat(NOTES_MAX + 1),
                ..sub("2026-09", &[("events", 1)])
            },
            |e| matches!(e, ReportError::NotesTooLong(_)),
        ),
    ];
    for (s, expected) in cases {
        match submit(&mut rep, &fr.key, &schema, &who(&fr), &s, NOW) {
            Err(SubmitError::Report(e)) => assert!(expected(&e), "{s:?}: {e}"),
            other => panic!("{s:?}: {other:?}"),
        }
    }
    let at_hq = submit(
        &mut rep,
        &hq.key,
        &schema,
        &who(&hq),
        &sub("2026-09", &[]),
        NOW,
    );
    assert!(matches!(
        at_hq,
        Err(SubmitError::Report(ReportError::NotARegion(_)))
    ));
    assert!(rep.frontier().is_empty(), "nothing was written");
}

#[test]
fn a_newer_report_supersedes_and_the_history_stays() {
    let fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let first = submit_at(&mut rep, &fr, sub("2026-09", &[("events", 3)]), NOW);
    let second = submit_at(&mut rep, &fr, sub("2026-09", &[("events", 4)]), NOW + 1);
    let current = rep.get("regions/fr/reports/2026-09").unwrap().unwrap();
    assert_eq!(current, second);
    let r = Report::decode(&current).unwrap();
    assert_eq!((r.revision, r.metrics["events"]), (2, 4));
    assert_eq!(r.supersedes, Some(DeltaRef::of(&first)));
    assert_eq!(r.submitted_by, "operator-x");
    let (revs, stop) = history(rep.store(), "regions/fr/reports/2026-09", 10, 1 << 20).unwrap();
    assert_eq!((revs, stop), (vec![second, first], None));
}

#[test]
fn only_hq_publishes_a_schema_and_reports_follow_it() {
    let fr = Author::region(1, "fr");
    let hq = Author::hq(9);
    let mut rep = replica(&[&fr, &hq]);
    let custom =
        Schema::decode(br#"{"metrics":[{"name":"balance","allow_negative":true}]}"#).unwrap();
    let refused = publish_schema(&mut rep, &fr.key, &custom, "office-fr", NOW);
    assert!(matches!(
        refused,
        Err(SubmitError::Report(ReportError::NotHq(_)))
    ));
    publish_schema(&mut rep, &hq.key, &custom, "hq", NOW).unwrap();
    let held = schema(&rep).unwrap().unwrap();
    assert_eq!(held, custom);
    let s = sub("2026-Q3", &[("balance", -5)]);
    submit(&mut rep, &fr.key, &held, &who(&fr), &s, NOW).unwrap();
    let old = sub("2026-Q3", &[("events", 1)]);
    assert!(submit(&mut rep, &fr.key, &held, &who(&fr), &old, NOW).is_err());
}

#[test]
fn unreadable_reports_are_errors_not_panics() {
    let mut fr = Author::region(1, "fr");
    for value in [
        &b"not json"[..],
        br#"{"region":"ke","period":"2026-09","revision":1,"metrics":{},"submitted_by":"x","submitted_ms":1}"#,
        br#"{"region":"fr","period":"2026-09","revision":1,"metrics":{"Bad":1},"submitted_by":"x","submitted_ms":1}"#,
        br#"{"region":"fr","period":"2026-09","revision":1,"metrics":{"a":1e20},"submitted_by":"x","submitted_ms":1}"#,
        br#"{"region":"fr","period":"2026-09","revision":1,"metrics":{},"submitted_by":"x","submitted_ms":1,"x":1}"#,
    ] {
        let d = fr.put("reports/2026-09", value, NOW);
        assert!(Report::decode(&d).is_err(), "{}", String::from_utf8_lossy(value));
    }
}

fn three_regions() -> (Author, Author, Author, Author) {
    (
        Author::hq(9),
        Author::region(1, "fr"),
        Author::region(2, "ke"),
        Author::region(3, "br"),
    )
}

#[test]
fn coverage_names_heads_and_shows_missing_and_stale_regions() {
    let (hq, fr, ke, br) = three_regions();
    let all = [&hq, &fr, &ke, &br];
    let (mut at_fr, mut at_ke, mut at_hq) = (replica(&all), replica(&all), replica(&all));
    submit_at(
        &mut at_fr,
        &fr,
        sub("2026-09", &[("events", 3), ("volunteers", 10)]),
        NOW,
    );
    submit_at(&mut at_ke, &ke, sub("2026-09", &[("events", 5)]), NOW);
    sync(&at_fr, &mut at_hq);
    sync(&at_ke, &mut at_hq);
    // fr was heard from an hour ago, ke ten days ago, br never.
    let contact = |name: &str| match name {
        "office-fr" => Some(NOW - DAY / 24),
        "office-ke" => Some(NOW - 10 * DAY),
        _ => None,
    };
    let agg = aggregate(&at_hq, &hq, "2026-09", &contact);
    let by: BTreeMap<&str, _> = agg.regions.iter().map(|r| (r.region.as_str(), r)).collect();
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), ["br", "fr", "ke"]);
    assert_eq!((by["fr"].status(), by["fr"].stale), ("included", false));
    assert_eq!((by["ke"].status(), by["ke"].stale), ("included", true));
    assert_eq!((by["br"].status(), by["br"].stale), ("missing", true));
    assert!(by["br"].missing && by["br"].last_contact_ms.is_none());
    let head = &by["fr"].frontier[0];
    assert_eq!((head.author, head.seq), (fr.id(), 1));
    assert_eq!(head.hash, at_fr.frontier().head(&fr.id()).hash);
    let events = agg.totals.iter().find(|t| t.metric == "events").unwrap();
    assert_eq!(
        (events.count, events.sum, events.min, events.max),
        (2, 8, Some(3), Some(5))
    );
    let hours = agg.totals.iter().find(|t| t.metric == "hours").unwrap();
    assert_eq!((hours.count, hours.sum, hours.min), (0, 0, None));
    // Another period: everyone missing.
    let other = aggregate(&at_hq, &hq, "2026-10", &contact);
    assert!(other.regions.iter().all(|r| r.missing));
}

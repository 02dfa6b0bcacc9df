//! Declared semantics: breakdowns by category, each metric's rule applied
//! per category and at every level of the tree, and reports under an
//! earlier schema version counted explicitly.

use super::*;
use crate::core::report::aggregate::Figure;
use crate::core::report::document::{check, sign};
use crate::core::Above;

/// Volunteers by age and sex (summed), the largest event (max, by
/// category of venue), the lowest stock (min), the mean satisfaction
/// score (avg) and the staff on the books (last).
fn schema() -> Schema {
    let cat = |name: &str, options: &[&str]| CategoryDef {
        name: name.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
    };
    let metric = |name: &str, aggregate: Rule, categories: Vec<CategoryDef>| MetricDef {
        aggregate,
        categories,
        ..MetricDef::count(name, "")
    };
    Schema {
        version: 2,
        metrics: vec![
            MetricDef {
                formerly: vec!["helpers".into()],
                ..metric(
                    "volunteers",
                    Rule::Sum,
                    vec![
                        cat("age", &["under_18", "adult"]),
                        cat("sex", &["female", "male"]),
                    ],
                )
            },
            metric(
                "largest_event",
                Rule::Max,
                vec![cat("venue", &["indoor", "outdoor"])],
            ),
            metric("stock", Rule::Min, vec![]),
            metric("satisfaction", Rule::Avg, vec![]),
            metric("staff", Rule::Last, vec![]),
        ],
        due: Due::default(),
    }
}

fn categories(metric: &str, figures: &[(&str, i64)]) -> Categories {
    let f = figures.iter().map(|(c, v)| (c.to_string(), *v)).collect();
    [(metric.to_string(), f)].into()
}

fn fr_who(a: &Author) -> Submitter<'_> {
    Submitter {
        part: a
            .unit
            .clone()
            .map(Part::Unit)
            .or(a.region.clone().map(Part::Region)),
        region: Some("fr"),
        ..who(a)
    }
}

#[test]
fn a_breakdown_is_checked_and_its_total_follows_its_rule() {
    let fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let s = schema();
    s.check().unwrap();
    let go = |rep: &mut Replica<MemStore>, sub: &Submission| {
        submit(rep, &fr.key, &s, &fr_who(&fr), sub, NOW).map(|(_, r)| r)
    };
    let by_age = categories(
        "volunteers",
        &[
            ("age=under_18,sex=female", 4),
            ("age=adult,sex=female", 10),
            ("age=adult,sex=male", 6),
        ],
    );
    // No total given: the sum of the categories is it.
    let r = go(
        &mut rep,
        &Submission {
            categories: by_age.clone(),
            ..sub("2026-09", &[])
        },
    )
    .unwrap();
    assert_eq!((r.metrics["volunteers"], r.schema_version), (20, 2));
    // A max metric's total is the largest category.
    let venues = categories(
        "largest_event",
        &[("venue=indoor", 40), ("venue=outdoor", 250)],
    );
    let r = go(
        &mut rep,
        &Submission {
            categories: venues,
            ..sub("2026-09", &[])
        },
    )
    .unwrap();
    assert_eq!(r.metrics["largest_event"], 250);

    let before = rep.frontier().clone();
    let mut refused = |sub: Submission| go(&mut rep, &sub).unwrap_err();
    let e = refused(Submission {
        categories: by_age.clone(),
        ..sub("2026-09", &[("volunteers", 21)])
    });
    assert!(
        matches!(
            e,
            SubmitError::Report(ReportError::TotalDisagrees {
                stated: 21,
                derived: 20,
                ..
            })
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "volunteers is stated as 21, but the sum of its categories is 20"
    );
    let e = refused(Submission {
        categories: categories("volunteers", &[("sex=female,age=adult", 1)]),
        ..sub("2026-09", &[])
    });
    assert!(
        e.to_string()
            .contains("has no category \"sex=female,age=adult\""),
        "{e}"
    );
    let e = refused(Submission {
        categories: categories("stock", &[("x=y", 1)]),
        ..sub("2026-09", &[])
    });
    assert!(
        matches!(e, SubmitError::Report(ReportError::NoCategories { .. })),
        "{e}"
    );
    let e = refused(Submission {
        categories: categories("volunteers", &[("age=adult,sex=male", -1)]),
        ..sub("2026-09", &[])
    });
    assert!(
        matches!(e, SubmitError::Report(ReportError::Negative { .. })),
        "{e}"
    );
    assert_eq!(rep.frontier(), &before, "nothing refused was stored");
}

#[test]
fn schemas_with_breakdowns_and_rules_are_checked() {
    let mut s = schema();
    s.metrics[3].categories = s.metrics[1].categories.clone();
    assert!(s
        .check()
        .unwrap_err()
        .to_string()
        .contains("satisfaction aggregates by avg"));
    let mut s = schema();
    s.metrics[2].formerly = vec!["volunteers".into()];
    assert!(s
        .check()
        .unwrap_err()
        .to_string()
        .contains("is a metric's name"));
    let mut s = schema();
    let many: Vec<String> = (0..9).map(|i| format!("o{i}")).collect();
    s.metrics[0].categories[0].options = many.clone();
    s.metrics[0].categories[1].options = many;
    assert!(s
        .check()
        .unwrap_err()
        .to_string()
        .contains("81 combinations"));
    assert_eq!(schema().metrics[0].combos().len(), 4);
    assert_eq!(schema().metrics[0].combos()[1], "age=under_18,sex=male");
}

/// A patched node signs a total its categories do not make: not counted,
/// and the aggregate says why.
#[test]
fn a_signed_total_that_disagrees_with_its_categories_is_not_counted() {
    let hq = Author::hq(9);
    let mut fr = Author::region(1, "fr");
    let mut at_hq = replica(&[&hq, &fr]);
    let forged = Report {
        region: "fr".into(),
        unit: None,
        period: "2026-09".into(),
        revision: 1,
        metrics: [("volunteers".to_string(), 99)].into(),
        categories: categories("volunteers", &[("age=adult,sex=male", 6)]),
        schema_version: 2,
        notes: String::new(),
        submitted_by: "x".into(),
        submitted_ms: NOW,
        supersedes: None,
    };
    let d = fr.put("reports/2026-09", &forged.encode(), NOW);
    at_hq.ingest(vec![d], "peer", NOW).unwrap();
    let agg = at(&at_hq, &hq, &schema(), None);
    assert_eq!(agg.regions[0].status(), "invalid");
    assert!(
        agg.warnings[0].contains("volunteers is stated as 99, but the sum of its categories is 6"),
        "{:?}",
        agg.warnings
    );
    assert_eq!(agg.totals[0].count, 0);
}

fn at(rep: &Replica<MemStore>, me: &Author, schema: &Schema, scope: Option<Part>) -> Aggregate {
    let none = |_: &str| None;
    let cx = aggregate::Context {
        period: "2026-09".parse().unwrap(),
        schema,
        me: me.id(),
        my_name: "me",
        now_ms: NOW,
        stale_after_ms: DAY,
        last_contact: &none,
        scope,
        approved_only: false,
    };
    compute(rep, &cx).unwrap()
}

/// One node's report in the test below.
type Row<'a> = (&'a Author, &'a str, [i64; 2], [i64; 2], i64, i64, i64, u64);

/// Region fr with units a and b below it, region ke: every rule, per
/// category, in each unit, in fr's own aggregate of its subtree, in HQ's
/// row for fr, and in HQ's total; each worked out by hand.
#[test]
fn each_rule_holds_per_category_and_at_every_level() {
    let hq = Author::hq(9);
    let fr = Author::region(1, "fr");
    let ke = Author::region(2, "ke");
    let (a, b) = (Author::unit(3, "a"), Author::unit(4, "b"));
    let mut r = crate::core::Roster::new(1, [&hq, &fr, &ke, &a, &b].map(Author::member));
    r.units.insert("a", Above::Region("fr".into()));
    r.units.insert("b", Above::Region("fr".into()));
    let s = schema();
    // HQ publishes the schema, and every node holds it, as after sync.
    let mut at_hq = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let published = publish_schema(&mut at_hq, &hq.key, &s, "hq", NOW).unwrap();
    let open = || {
        let mut rep = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
        rep.ingest(vec![published.clone()], "peer", NOW).unwrap();
        rep
    };
    let mut at_fr = open();
    // (author, region, volunteers by [u18 f, adult f], indoor, outdoor,
    //  stock, satisfaction, staff, submitted at)
    let rows: [Row; 4] = [
        (&fr, "fr", [1, 2], [30, 5], 70, 3, 11, 40),
        (&a, "fr", [3, 4], [10, 90], 20, 4, 12, 10),
        (&b, "fr", [5, 6], [60, 1], 50, 4, 13, 30),
        (&ke, "ke", [7, 8], [5, 95], 10, 5, 14, 50),
    ];
    for (author, region, vol, venue, stock, sat, staff, t) in rows {
        let mut mine = open();
        let mut cats = categories(
            "volunteers",
            &[
                ("age=under_18,sex=female", vol[0]),
                ("age=adult,sex=female", vol[1]),
            ],
        );
        cats.extend(categories(
            "largest_event",
            &[("venue=indoor", venue[0]), ("venue=outdoor", venue[1])],
        ));
        let sub = Submission {
            categories: cats,
            ..sub(
                "2026-09",
                &[("stock", stock), ("satisfaction", sat), ("staff", staff)],
            )
        };
        let who = Submitter {
            part: author
                .unit
                .clone()
                .map(Part::Unit)
                .or(author.region.clone().map(Part::Region)),
            region: Some(region),
            ..who(author)
        };
        submit(&mut mine, &author.key, &s, &who, &sub, NOW + t).unwrap();
        let deltas: Vec<SignedDelta> = mine.store().logs.values().cloned().collect();
        at_hq.ingest(deltas.clone(), "peer", NOW).unwrap();
        if region == "fr" {
            at_fr.ingest(deltas, "peer", NOW).unwrap();
        }
    }
    let whole = at(&at_hq, &hq, &s, None);
    let fr_own = at(&at_fr, &fr, &s, Some(Part::Region("fr".into())));
    let fr_rows: Vec<RegionCoverage> = whole
        .regions
        .iter()
        .filter(|e| e.region == "fr")
        .cloned()
        .collect();
    let fr_row = aggregate::totals(&whole, &fr_rows);
    let unit_a = aggregate::totals(&whole, &whole.regions[1..2]);
    assert_eq!(whole.regions[1].label(), "fr/a");
    assert_eq!(
        fr_own.totals, fr_row,
        "fr's own aggregate is HQ's row for fr"
    );

    let value = |t: &[MetricTotal], m: &str| t.iter().find(|t| t.metric == m).unwrap().value;
    let cat = |t: &[MetricTotal], m: &str, c: &str| {
        let t = t.iter().find(|t| t.metric == m).unwrap();
        t.categories.iter().find(|x| x.category == c).unwrap().value
    };
    let w = Figure::Whole;
    // A unit alone: its own figures.
    assert_eq!(value(&unit_a, "volunteers"), Some(w(7)));
    assert_eq!(
        value(&unit_a, "satisfaction"),
        Some(Figure::Thousandths(4000))
    );
    // Region fr with its units; then everything.
    for (t, vol, u18f, largest, outdoor, stock, sat, staff) in [
        (&fr_row, 21, 9, 90, 90, 20, 3667, (11, "fr")),
        (&whole.totals, 36, 16, 95, 95, 10, 4000, (14, "ke")),
    ] {
        assert_eq!(value(t, "volunteers"), Some(w(vol)));
        assert_eq!(
            cat(t, "volunteers", "age=under_18,sex=female"),
            Some(w(u18f))
        );
        assert_eq!(value(t, "largest_event"), Some(w(largest)));
        assert_eq!(cat(t, "largest_event", "venue=outdoor"), Some(w(outdoor)));
        assert_eq!(value(t, "stock"), Some(w(stock)));
        assert_eq!(value(t, "satisfaction"), Some(Figure::Thousandths(sat)));
        let last = t.iter().find(|t| t.metric == "staff").unwrap();
        assert_eq!(
            (last.value, last.last_from.as_deref()),
            (Some(w(staff.0)), Some(staff.1))
        );
    }

    // fr, and unit a, verify HQ's aggregate: the rules recomputed agree.
    let doc = sign(&whole, &hq.key);
    for part in [Part::Region("fr".into()), Part::Unit("a".into())] {
        let v = check(&at_fr, doc.as_bytes(), Some(&part)).unwrap();
        assert!(v.ok(), "{v:?}");
    }
    // A mean shifted before signing fails the recomputation.
    let mut shifted = whole.clone();
    let t = shifted
        .totals
        .iter_mut()
        .find(|t| t.metric == "satisfaction")
        .unwrap();
    t.value = Some(Figure::Thousandths(4100));
    let v = check(&at_fr, sign(&shifted, &hq.key).as_bytes(), None).unwrap();
    assert!(
        v.checks
            .iter()
            .any(|c| !c.ok && c.text.contains("totals are not")),
        "{v:?}"
    );
}

/// A report under an earlier schema version with a metric renamed since
/// counts under the new name, and one with a metric removed since does
/// not count it; the aggregate says both.
#[test]
fn a_renamed_metric_counts_as_its_new_name_and_a_removed_one_is_named() {
    let hq = Author::hq(9);
    let (fr, ke) = (Author::region(1, "fr"), Author::region(2, "ke"));
    let mut at_hq = replica(&[&hq, &fr, &ke]);
    let mut v1 = schema();
    v1.version = 1;
    v1.metrics[0] = MetricDef::count("helpers", "");
    v1.metrics.push(MetricDef::count("leaflets", ""));
    for (a, figures) in [
        (&fr, [("helpers", 5), ("leaflets", 100)]),
        (&ke, [("helpers", 7), ("stock", 1)]),
    ] {
        let mut mine = replica(&[&hq, &fr, &ke]);
        let who = Submitter {
            region: a.region.as_deref(),
            ..who(a)
        };
        submit(&mut mine, &a.key, &v1, &who, &sub("2026-09", &figures), NOW).unwrap();
        let deltas: Vec<SignedDelta> = mine.store().logs.values().cloned().collect();
        at_hq.ingest(deltas, "peer", NOW).unwrap();
    }
    let agg = at(&at_hq, &hq, &schema(), None);
    assert_eq!(agg.schema_version, 2);
    assert_eq!(
        agg.totals[0].value,
        Some(Figure::Whole(12)),
        "helpers counted as volunteers"
    );
    let said = agg.warnings.join("\n");
    assert!(said.contains("region fr: metric helpers, as reported under schema v1, counted as volunteers (renamed by v2)"), "{said}");
    assert!(
        said.contains(
            "region fr: metric leaflets (schema v1) is not in schema v2; not in the totals"
        ),
        "{said}"
    );
    // The entries keep the names as signed: fr verifies it.
    assert_eq!(
        agg.regions[0].figures.as_ref().unwrap().values["helpers"],
        5
    );
    let mut at_fr = replica(&[&hq, &fr, &ke]);
    let deltas: Vec<SignedDelta> = at_hq.store().logs.values().cloned().collect();
    at_fr.ingest(deltas, "peer", NOW).unwrap();
    let v = check(
        &at_fr,
        sign(&agg, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(v.ok(), "{v:?}");
}

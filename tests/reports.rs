//! HQ reports: aggregates equal what the regions submitted (property test
//! through the core, with generated reports, revisions and arrival order),
//! and on real nodes over gRPC + mTLS: a stopped region turns stale, HQ's
//! published schema governs what regions may submit, and a region verifies
//! HQ's signed aggregate.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fedsync::client::{Client, ClientConfig};
use fedsync::core::report::aggregate::{compute, Aggregate, Context};
use fedsync::core::report::{document, submit, Part, Schema, Submission, Submitter};
use fedsync::core::{Limits, MemStore, Replica, SignedDelta};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::NodeHandle;
use fedsync::testkit::{roster, submission as sub, Author};
use proptest::prelude::*;

use common::SYNC_TIMEOUT;

const NOW: u64 = 1_800_000_000_000;
const REGIONS: [&str; 5] = ["br", "de", "fr", "ke", "mx"];
const METRICS: [&str; 4] = ["volunteers", "events", "participants", "hours"];

/// Per region: its revisions, each a value (or none) per metric.
type Submitted = Vec<Vec<[Option<u32>; 4]>>;

fn submitted() -> impl Strategy<Value = Submitted> {
    let figures = prop::array::uniform4(prop::option::weighted(0.8, 0u32..1_000_000));
    let revisions = prop::collection::vec(figures, 0..4);
    prop::collection::vec(revisions, REGIONS.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Each region submits its revisions at its own replica; HQ receives a
    /// generated prefix of each region's log (as after a partial sync), in
    /// a generated order. HQ's totals are the sums, counts, minima and
    /// maxima of each region's last revision within that prefix, a region
    /// with none is missing, and every region, holding more than HQ
    /// counted, confirms its part of the signed aggregate.
    #[test]
    fn aggregates_equal_the_sums_of_the_last_reports(
        subs in submitted(),
        cuts in prop::collection::vec(0u64..5, REGIONS.len()),
        order in Just(()).prop_perturb(|_, mut rng| rng.next_u64()),
    ) {
        let hq = Author::hq(100);
        let regions: Vec<Author> = (0..REGIONS.len())
            .map(|i| Author::region(i as u64 + 1, REGIONS[i]))
            .collect();
        let r = roster(regions.iter().chain([&hq]));
        let open = || Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
        let schema = Schema::default_set();
        let mut all: Vec<SignedDelta> = Vec::new();
        let mut last: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
        let mut at_regions = Vec::new();
        for (i, revisions) in subs.iter().enumerate() {
            let mut at = open();
            let who = Submitter {
                node_name: "n",
                part: Some(Part::Region(REGIONS[i].into())),
                region: Some(REGIONS[i]),
                operator: "op",
            };
            for (n, figures) in revisions.iter().enumerate() {
                let metrics: BTreeMap<String, i64> = METRICS
                    .iter()
                    .zip(figures)
                    .filter_map(|(m, v)| Some((m.to_string(), i64::from((*v)?))))
                    .collect();
                let sub = Submission {
                    region: None,
                    unit: None,
                    period: "2026-Q3".into(),
                    metrics: metrics.clone(),
                    ..Submission::default()
                };
                let result = submit(&mut at, &regions[i].key, &schema, &who, &sub, NOW + n as u64);
                if metrics.is_empty() {
                    prop_assert!(result.is_err(), "an empty report is refused");
                    continue;
                }
                let (delta, _) = result.unwrap();
                if delta.seq() <= cuts[i] {
                    last.insert(REGIONS[i], METRICS.iter().zip(figures)
                        .filter_map(|(m, v)| Some((*m, i64::from((*v)?)))).collect());
                }
            }
            all.extend(at.store().logs.values().filter(|d| d.seq() <= cuts[i]).cloned());
            at_regions.push(at);
        }
        // Any arrival order (the replica holds what is ahead of a gap).
        let mut seed = order;
        for i in (1..all.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            all.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut at_hq = open();
        at_hq.ingest(all, "peers", NOW).unwrap();
        let agg = aggregate_at(&at_hq, &hq, &schema);

        for (metric, total) in METRICS.iter().zip(&agg.totals) {
            let values: Vec<i64> = last.values().filter_map(|m| m.get(metric).copied()).collect();
            prop_assert_eq!(&total.metric, metric);
            prop_assert_eq!(total.count, values.len() as u64);
            prop_assert_eq!(total.sum, values.iter().sum::<i64>());
            prop_assert_eq!(total.min, values.iter().min().copied());
            prop_assert_eq!(total.max, values.iter().max().copied());
        }
        for entry in &agg.regions {
            let want = last.get(entry.region.as_str());
            prop_assert_eq!(entry.missing, want.is_none());
            let got = entry.figures.as_ref().map(|f| {
                f.values.iter().map(|(k, v)| (k.clone(), *v)).collect::<BTreeMap<_, _>>()
            });
            let want = want.map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect());
            prop_assert_eq!(got, want);
        }
        // The document verifies, and every region confirms its part
        // against its own log.
        let doc = document::sign(&agg, &hq.key);
        let v = document::check(&at_hq, doc.as_bytes(), None).unwrap();
        prop_assert!(v.ok(), "{:?}", v);
        for (at, region) in at_regions.iter().zip(REGIONS) {
            let v = document::check(at, doc.as_bytes(), Some(&Part::Region(region.into()))).unwrap();
            prop_assert!(v.ok(), "{}: {:?}", region, v);
        }
    }
}

fn aggregate_at(at: &Replica<MemStore>, me: &Author, schema: &Schema) -> Aggregate {
    let cx = Context {
        period: "2026-Q3".parse().unwrap(),
        schema,
        me: me.id(),
        my_name: "hq",
        now_ms: NOW,
        stale_after_ms: 1_000,
        last_contact: &|_| Some(NOW),
        scope: None,
        approved_only: false,
    };
    compute(at, &cx).unwrap()
}

/// Quick redials; a region not heard from for a second is stale.
const FAST: &str = "[sync]\nanti_entropy_secs = 1\nreconnect_min_ms = 50\n\
                    reconnect_max_ms = 200\n[reports]\nstale_after_secs = 1\n";

fn client_at(fed: &LocalFederation, node: &NodeHandle) -> Client {
    let mut config = ClientConfig::load(&fed.client_config()).unwrap();
    config.connect = node.local_addr().to_string();
    Client::from_config(&config).unwrap()
}

/// Polls HQ's aggregate until `ok` holds for it.
async fn aggregate_until(hq: &mut Client, what: &str, ok: impl Fn(&Aggregate) -> bool) -> String {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let doc = hq
            .aggregate_reports("2026-09", 0, None, false, false)
            .await
            .unwrap();
        let agg = document::open(doc.as_bytes()).unwrap().aggregate;
        if ok(&agg) {
            return doc;
        }
        assert!(Instant::now() < deadline, "{what}: never; last {agg:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_region_turns_stale_and_hqs_schema_governs_submissions() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        NodeSpec::region("office-ke", "ke", &["hq"]),
    ];
    let mut fed = LocalFederation::create(dir.path(), &specs, FAST).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let ke = fed.start("office-ke").await.unwrap();
    let (mut at_hq, mut at_fr, mut at_ke) = (
        client_at(&fed, &hq),
        client_at(&fed, &fr),
        client_at(&fed, &ke),
    );

    // HQ publishes a schema; a region may not.
    let custom: Schema = serde_json::from_str(
        r#"{"metrics":[{"name":"volunteers"},{"name":"balance","allow_negative":true}]}"#,
    )
    .unwrap();
    let refused = at_fr.publish_report_schema(&custom).await.unwrap_err();
    assert!(refused.contains("not an HQ node"), "{refused}");
    at_hq.publish_report_schema(&custom).await.unwrap();
    // It reaches the regions by sync, and governs what they accept.
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while !at_fr.report_schema().await.unwrap().1 {
        assert!(
            Instant::now() < deadline,
            "the schema never reached office-fr"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(at_fr.report_schema().await.unwrap().0, custom);
    let old = at_fr.submit_report(&sub("2026-09", &[("events", 3)])).await;
    assert!(old.unwrap_err().contains("unknown metric \"events\""));
    let fr_sub = sub("2026-09", &[("volunteers", 12), ("balance", -5)]);
    at_fr.submit_report(&fr_sub).await.unwrap();
    at_ke
        .submit_report(&sub("2026-09", &[("volunteers", 30), ("balance", 7)]))
        .await
        .unwrap();

    let both = |a: &Aggregate| a.regions.iter().all(|r| r.figures.is_some() && !r.stale);
    let doc = aggregate_until(&mut at_hq, "both reports, both fresh", both).await;
    let agg = document::open(doc.as_bytes()).unwrap().aggregate;
    assert_eq!(agg.metrics, ["volunteers", "balance"]);
    let sums: Vec<i64> = agg.totals.iter().map(|t| t.sum).collect();
    assert_eq!(sums, [42, 2]);
    // France confirms HQ counted exactly its report.
    let v = at_fr.verify_aggregate(doc.as_bytes(), None).await.unwrap();
    assert!(v.ok && v.region == "fr", "{v:?}");

    // Kenya goes away: once HQ has not heard from it for over a second,
    // it is stale; its report still counts, and France stays fresh.
    ke.shutdown().await.unwrap();
    let ke_stale = |a: &Aggregate| {
        let by = |r: &str| a.regions.iter().find(|e| e.region == r).unwrap();
        by("ke").stale && !by("fr").stale
    };
    let doc = aggregate_until(&mut at_hq, "office-ke stale", ke_stale).await;
    let agg = document::open(doc.as_bytes()).unwrap().aggregate;
    let ke_entry = agg.regions.iter().find(|e| e.region == "ke").unwrap();
    assert!(!ke_entry.missing && ke_entry.last_contact_ms.is_some());
    assert_eq!(agg.totals[0].sum, 42);

    // A plain put cannot write a report past the checks.
    let put = at_fr.put("regions/fr/reports/2026-10", b"{}").await;
    assert!(put.unwrap_err().contains("report key"));
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();
}

/// HQ's `/reports` page on real nodes: totals by region as SVG, the
/// reporting rate, who is late or missing, and the coverage of the signed
/// aggregate HQ published; a region's page shows its own report at HQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hqs_dashboard_shows_totals_rates_the_late_and_its_signed_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
        NodeSpec::region("office-ke", "ke", &["hq"]),
    ];
    let mut fed = LocalFederation::create(dir.path(), &specs, FAST).unwrap();
    let hq = fed.start("hq").await.unwrap();
    let fr = fed.start("office-fr").await.unwrap();
    let (mut at_hq, mut at_fr) = (client_at(&fed, &hq), client_at(&fed, &fr));
    at_fr
        .submit_report(&sub("2026-09", &[("volunteers", 12), ("events", 2)]))
        .await
        .unwrap();
    aggregate_until(&mut at_hq, "fr's report", |a| {
        a.regions[0].figures.is_some()
    })
    .await;
    at_hq.publish_aggregate("2026-09", false).await.unwrap();

    let admin = hq.admin_addr().unwrap();
    let (code, page) = common::http_get(admin, "/reports?period=2026-09").await;
    assert_eq!(code, 200, "{page}");
    for part in [
        r#"id="chart-volunteers""#,
        r#"id="chart-rates""#,
        // Due 2026-10-16: fr reported after it, ke never did.
        r#"id="late-fr" data-timeliness="late""#,
        r#"id="late-ke" data-timeliness="overdue""#,
        r#"id="cov-fr" data-status="included""#,
        r#"id="cov-ke" data-status="missing""#,
        "signed by hq",
        "1 of 2 received (50.0%)",
    ] {
        assert!(page.contains(part), "{part} not in {page}");
    }
    assert!(page.contains("<svg") && !page.contains("<script"));
    // The newest period held is the default.
    let (_, default) = common::http_get(admin, "/reports").await;
    assert!(default.contains("Reports · 2026-09"), "{default}");
    let (code, _) = common::http_get(admin, "/reports?period=2026-13").await;
    assert_eq!(code, 400);

    // France's page: its own report, held by HQ, counted.
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let (_, page) = common::http_get(fr.admin_addr().unwrap(), "/reports?period=2026-09").await;
        if page.contains(r#"id="receipt-1""#)
            && page.contains("held by hq")
            && page.contains(">counted<")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no receipt on fr's page: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fr.shutdown().await.unwrap();
    hq.shutdown().await.unwrap();
}

//! Signed aggregates checked at a region: the honest one passes, and each
//! kind of tampering fails with its own reason.

use super::*;
use crate::core::report::document::{check, open, sign, DocError};

/// HQ's aggregate, signed, checked at a region: passes against the honest
/// log, and every kind of tampering fails with its reason.
#[test]
fn signed_aggregates_verify_against_the_regions_log() {
    let (hq, fr, ke, br) = three_regions();
    let all = [&hq, &fr, &ke, &br];
    let (mut at_fr, mut at_ke, mut at_hq) = (replica(&all), replica(&all), replica(&all));
    submit_at(&mut at_fr, &fr, sub("2026-09", &[("events", 3)]), NOW);
    submit_at(&mut at_ke, &ke, sub("2026-09", &[("events", 5)]), NOW);
    sync(&at_fr, &mut at_hq);
    sync(&at_ke, &mut at_hq);
    let none = |_: &str| None;
    let agg = aggregate(&at_hq, &hq, "2026-09", &none);
    let doc = sign(&agg, &hq.key);
    assert_eq!(open(doc.as_bytes()).unwrap().aggregate, agg);

    let v = check(&at_fr, doc.as_bytes(), Some(&Part::Region("fr".into()))).unwrap();
    assert!(v.ok(), "{v:?}");
    let v = check(&at_fr, doc.as_bytes(), Some(&Part::Region("br".into()))).unwrap();
    assert!(v.ok(), "br is rightly missing: {v:?}");

    // A later revision at fr does not invalidate what HQ covered.
    submit_at(&mut at_fr, &fr, sub("2026-09", &[("events", 30)]), NOW + 1);
    let v = check(&at_fr, doc.as_bytes(), Some(&Part::Region("fr".into()))).unwrap();
    assert!(v.ok(), "the covered point still holds: {v:?}");

    // Tampered figures: the signature breaks.
    let tampered = doc.replace(r#""events":3"#, r#""events":4"#);
    assert_ne!(tampered, doc);
    let v = check(
        &at_fr,
        tampered.as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(!v.ok());
    assert!(
        v.checks[0].text.contains("signature does not match"),
        "{v:?}"
    );

    // Signed, but not matching fr's log: a figure altered before signing.
    let mut forged = agg.clone();
    let entry = forged
        .regions
        .iter_mut()
        .find(|r| r.region == "fr")
        .unwrap();
    entry
        .figures
        .as_mut()
        .unwrap()
        .values
        .insert("events".into(), 4);
    forged.totals = crate::core::report::aggregate::totals(&forged, &forged.regions);
    let v = check(
        &at_fr,
        sign(&forged, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    let failed: Vec<_> = v.checks.iter().filter(|c| !c.ok).collect();
    assert_eq!(failed.len(), 1, "{v:?}");
    assert!(failed[0]
        .text
        .contains("events is 3 here, 4 in the aggregate"));

    // Totals that are not the sums.
    let mut padded = agg.clone();
    padded.totals[1].sum += 1;
    let v = check(
        &at_fr,
        sign(&padded, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(v
        .checks
        .iter()
        .any(|c| !c.ok && c.text.contains("not the sums")));

    // fr said missing although it reported within the covered range.
    let mut dropped = agg.clone();
    let entry = dropped
        .regions
        .iter_mut()
        .find(|r| r.region == "fr")
        .unwrap();
    (entry.report, entry.figures, entry.missing) = (None, None, true);
    dropped.totals = crate::core::report::aggregate::totals(&dropped, &dropped.regions);
    let v = check(
        &at_fr,
        sign(&dropped, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(v
        .checks
        .iter()
        .any(|c| !c.ok && c.text.contains("listed as missing")));

    // A head hash that is not fr's log.
    let mut alien = agg.clone();
    let entry = alien.regions.iter_mut().find(|r| r.region == "fr").unwrap();
    entry.frontier[0].hash = crate::core::DeltaHash([7; 32]);
    let v = check(
        &at_fr,
        sign(&alien, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(v
        .checks
        .iter()
        .any(|c| !c.ok && c.text.contains("not this log")));

    // Signed by a key outside the roster.
    let stranger = Author::hq(77);
    let mut theirs = agg.clone();
    theirs.computed_by_id = stranger.id();
    let v = check(&at_fr, sign(&theirs, &stranger.key).as_bytes(), None).unwrap();
    assert!(
        !v.ok() && v.checks[0].text.contains("not in this node's roster"),
        "{v:?}"
    );
    assert_eq!(v.checks.len(), 1, "nothing else is checked: {v:?}");
    // Named by one node, signed by another.
    let v = check(&at_fr, sign(&agg, &stranger.key).as_bytes(), None).unwrap();
    assert!(
        v.checks[0].text.contains("other than the one it names"),
        "{v:?}"
    );

    // A region listed twice: the totals could count it twice.
    let mut twice = agg.clone();
    let fr_entry = twice
        .regions
        .iter()
        .find(|r| r.region == "fr")
        .unwrap()
        .clone();
    twice.regions.push(fr_entry);
    twice.totals = crate::core::report::aggregate::totals(&twice, &twice.regions);
    let v = check(
        &at_fr,
        sign(&twice, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(
        v.checks
            .iter()
            .any(|c| !c.ok && c.text.contains("listed twice")),
        "{v:?}"
    );

    // Missing, yet with figures: never counted, and refused as contradictory.
    let mut ghost = agg.clone();
    let br_entry = ghost.regions.iter_mut().find(|r| r.region == "br").unwrap();
    br_entry.figures = agg
        .regions
        .iter()
        .find(|r| r.region == "fr")
        .unwrap()
        .figures
        .clone();
    assert_eq!(
        crate::core::report::aggregate::totals(&ghost, &ghost.regions),
        agg.totals
    );
    let v = check(
        &at_fr,
        sign(&ghost, &hq.key).as_bytes(),
        Some(&Part::Region("br".into())),
    )
    .unwrap();
    assert!(
        v.checks
            .iter()
            .any(|c| !c.ok && c.text.contains("contradicts itself")),
        "{v:?}"
    );

    // fr's log left out of its own coverage: it cannot pass as "missing".
    let mut hidden = agg.clone();
    let entry = hidden
        .regions
        .iter_mut()
        .find(|r| r.region == "fr")
        .unwrap();
    (entry.frontier, entry.report, entry.figures, entry.missing) = (vec![], None, None, true);
    hidden.totals = crate::core::report::aggregate::totals(&hidden, &hidden.regions);
    let v = check(
        &at_fr,
        sign(&hidden, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(
        v.checks
            .iter()
            .any(|c| !c.ok && c.text.contains("leaves out the log of office-fr")),
        "{v:?}"
    );

    // Notes changed, figures untouched: still altered.
    let mut noted = agg.clone();
    let entry = noted.regions.iter_mut().find(|r| r.region == "fr").unwrap();
    entry.figures.as_mut().unwrap().notes = "all figures audited".into();
    let v = check(
        &at_fr,
        sign(&noted, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(
        v.checks
            .iter()
            .any(|c| !c.ok && c.text.contains("the notes differ")),
        "{v:?}"
    );

    // Not a document at all.
    assert!(matches!(open(b"{}"), Err(DocError::Malformed(_))));
    let v = check(&at_fr, b"garbage", Some(&Part::Region("fr".into()))).unwrap();
    assert!(!v.ok() && v.checks[0].text.starts_with("not a signed aggregate"));
}

/// A duplicated key, which a lenient reader would resolve either way,
/// changes the signed bytes: refused.
#[test]
fn a_duplicated_field_breaks_the_signature() {
    let (hq, fr, ke, br) = three_regions();
    let all = [&hq, &fr, &ke, &br];
    let (mut at_fr, mut at_hq) = (replica(&all), replica(&all));
    submit_at(&mut at_fr, &fr, sub("2026-09", &[("events", 3)]), NOW);
    sync(&at_fr, &mut at_hq);
    let doc = sign(&aggregate(&at_hq, &hq, "2026-09", &|_| None), &hq.key);
    let dup = doc.replace(r#""events":3"#, r#""events":9,"events":3"#);
    assert!(matches!(
        open(dup.as_bytes()),
        Err(DocError::BadSignature(_))
    ));
}

/// A patched region node signs a report the schema forbids: HQ does not
/// count it, says why, and the region agrees it was not countable.
#[test]
fn reports_that_break_the_schema_are_not_counted() {
    let (hq, mut fr, ke, br) = three_regions();
    let all = [&hq, &fr, &ke, &br];
    let (mut at_fr, mut at_hq) = (replica(&all), replica(&all));
    let negative = br#"{"region":"fr","period":"2026-09","revision":1,"metrics":{"events":-4},"submitted_by":"x","submitted_ms":1}"#;
    at_fr
        .ingest(vec![fr.put("reports/2026-09", negative, NOW)], "p", NOW)
        .unwrap();
    sync(&at_fr, &mut at_hq);
    let agg = aggregate(&at_hq, &hq, "2026-09", &|_| None);
    let entry = agg.regions.iter().find(|r| r.region == "fr").unwrap();
    assert_eq!(entry.status(), "invalid");
    assert!(entry
        .invalid
        .as_deref()
        .unwrap()
        .contains("may not be negative"));
    assert!(agg.totals.iter().all(|t| t.count == 0), "{agg:?}");
    assert!(agg.warnings.iter().any(|w| w.contains("not counted")));
    let v = check(
        &at_fr,
        sign(&agg, &hq.key).as_bytes(),
        Some(&Part::Region("fr".into())),
    )
    .unwrap();
    assert!(v.ok(), "{v:?}");
}

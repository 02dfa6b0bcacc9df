//! Receipts follow what HQ confirmed: a revision HQ has not confirmed is
//! "not yet", one it confirmed over the link is held since the step that
//! covered it, and HQ's published aggregate says which one it counted.

use super::*;
use crate::core::report::receipt::{receipts, AtHq, HqLink};

#[test]
fn receipts_follow_hqs_confirmed_frontier_and_its_published_aggregate() {
    let fr = Author::region(1, "fr");
    let hq = Author::hq(9);
    let mut at_fr = replica(&[&fr, &hq]);
    let mut at_hq = replica(&[&fr, &hq]);
    let first = submit_at(&mut at_fr, &fr, sub("2026-09", &[("events", 3)]), NOW);
    sync(&at_fr, &mut at_hq);
    let published = aggregate(&at_hq, &hq, "2026-09", &|_| None);
    let second = submit_at(&mut at_fr, &fr, sub("2026-09", &[("events", 4)]), NOW + 10);
    let part = Part::Region("fr".into());
    let (revisions, _) = history(
        at_fr.store(),
        &part.key("2026-09".parse().unwrap()),
        10,
        1 << 20,
    )
    .unwrap();
    assert_eq!(revisions.len(), 2);

    // HQ confirmed the log to the first revision, at NOW + 5.
    let link = |seq: u64| HqLink {
        name: "hq".into(),
        confirmed: [(fr.id(), seq)].into(),
        steps: vec![
            (fr.id(), first.seq(), NOW + 5),
            (fr.id(), second.seq(), NOW + 20),
        ]
        .into_iter()
        .filter(|s| s.1 <= seq)
        .collect(),
        as_of_ms: Some(NOW + 30),
    };
    let r = receipts(&part, &revisions, &[link(first.seq())], Some(&published));
    let (newest, oldest) = (&r[0], &r[1]);
    assert_eq!(
        (newest.revision, newest.current, oldest.current),
        (2, true, false)
    );
    assert_eq!(
        newest.at_hq,
        AtHq::NotYet {
            by: "hq".into(),
            confirmed_seq: first.seq(),
            as_of_ms: Some(NOW + 30)
        },
        "the office's report HQ does not hold yet"
    );
    assert_eq!(
        oldest.at_hq,
        AtHq::Held {
            by: "hq".into(),
            since_ms: Some(NOW + 5),
            as_of_ms: Some(NOW + 30)
        }
    );
    assert_eq!(oldest.in_aggregate.as_ref().unwrap().status, "counted");
    assert_eq!(newest.in_aggregate.as_ref().unwrap().status, "not covered");

    // Confirmed to the second: held since the step that covered it.
    let r = receipts(&part, &revisions, &[link(second.seq())], Some(&published));
    assert_eq!(
        r[0].at_hq,
        AtHq::Held {
            by: "hq".into(),
            since_ms: Some(NOW + 20),
            as_of_ms: Some(NOW + 30)
        }
    );

    // No link to HQ (a unit below its region): only the aggregate speaks.
    let r = receipts(&part, &revisions, &[], Some(&published));
    assert_eq!(
        r[1].at_hq,
        AtHq::Covered {
            by: "hq".into(),
            at_ms: NOW
        }
    );
    assert_eq!(r[0].at_hq, AtHq::Unknown);
    let r = receipts(&part, &revisions, &[], None);
    assert!(r
        .iter()
        .all(|x| x.at_hq == AtHq::Unknown && x.in_aggregate.is_none()));
}

//! Replica unit tests: one behaviour each, with hand-built chains.

use super::*;
use crate::core::store::MemStore;
use crate::core::{RosterOffer, Standing};
use crate::testkit::{roster, sign, Author};

const NOW: u64 = 1_800_000_000_000;

fn replica(authors: &[&Author]) -> Replica<MemStore> {
    Replica::open(
        MemStore::default(),
        roster(authors.iter().copied()),
        Limits::default(),
    )
    .unwrap()
}

#[test]
fn equivocation_is_detected_kept_as_evidence_and_not_applied() {
    let mut fr = Author::region(1, "fr");
    let mut twin = Author::region(1, "fr"); // same key, diverging log
    let mut rep = replica(&[&fr]);
    let a = fr.put("x", b"1", NOW);
    let b = twin.put("x", b"2", NOW);
    assert_eq!((a.author(), a.seq()), (b.author(), b.seq()));
    rep.ingest(vec![a.clone()], "p", NOW).unwrap();
    let report = rep.ingest(vec![b.clone()], "q", NOW).unwrap();
    assert!(report.applied.is_empty());
    match &report.refused[..] {
        [Refusal::Equivocation(ev)] => {
            assert_eq!((&ev.first, &ev.second), (&a, &b));
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
    assert_eq!(rep.get("regions/fr/x").unwrap(), Some(a.clone()));
    // Both signed deltas are kept: together they prove the fork.
    let kept = &rep.store().quarantine[0];
    assert_eq!(kept.code, "equivocation");
    assert_eq!(
        (&kept.bytes[..], &kept.evidence[..]),
        (b.as_bytes(), a.as_bytes())
    );
}

#[test]
fn list_pages_through_live_records_and_skips_deletes() {
    let mut fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let mut batch: Vec<_> = (0..7)
        .map(|i| fr.put(&format!("k{i}"), &[i], NOW))
        .collect();
    batch.push(fr.next("regions/fr/k2", Op::Delete, b"", NOW));
    batch.push(fr.next("regions/fr/k3", Op::Delete, b"", NOW));
    batch.push(fr.next("regions/frx/other", Op::Put, b"", NOW));
    rep.ingest(batch, "p", NOW).unwrap();
    let keys = |v: &[SignedDelta]| v.iter().map(|d| d.key().to_owned()).collect::<Vec<_>>();
    let first = rep.list("regions/fr/", None, 3, usize::MAX).unwrap();
    assert_eq!(
        keys(&first.records),
        ["regions/fr/k0", "regions/fr/k1", "regions/fr/k4"]
    );
    assert!(first.more);
    let rest = rep
        .list("regions/fr/", Some(first.records[2].key()), 3, usize::MAX)
        .unwrap();
    assert_eq!(keys(&rest.records), ["regions/fr/k5", "regions/fr/k6"]);
    assert!(!rest.more);
    let none = rep.list("regions/de/", None, 3, usize::MAX).unwrap();
    assert!(none.records.is_empty() && !none.more);
}

#[test]
fn list_pages_are_bounded_in_bytes_but_always_hold_one_record() {
    let mut fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let big = vec![7u8; 1000];
    let batch: Vec<_> = (0..5)
        .map(|i| fr.put(&format!("k{i}"), &big, NOW))
        .collect();
    rep.ingest(batch, "p", NOW).unwrap();
    // Each record is 1,012 bytes of key and value: 2,500 bytes hold two.
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = rep
            .list("regions/fr/", after.as_deref(), 100, 2500)
            .unwrap();
        pages.push(page.records.len());
        after = page.records.last().map(|d| d.key().to_owned());
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, [2, 2, 1]);
    // A bound smaller than one record still moves forward.
    let one = rep.list("regions/fr/", None, 100, 10).unwrap();
    assert_eq!(one.records.len(), 1);
    assert!(one.more);
}

#[test]
fn a_gap_holds_deltas_until_it_fills() {
    let mut fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let d: Vec<_> = (0..3).map(|i| fr.put("x", &[i], NOW)).collect();
    let r = rep
        .ingest(vec![d[2].clone(), d[1].clone()], "p", NOW)
        .unwrap();
    assert_eq!((r.applied.len(), r.held), (0, 2));
    assert_eq!(rep.frontier().head(&fr.id()).seq, 0);
    let r = rep.ingest(vec![d[0].clone()], "p", NOW).unwrap();
    assert_eq!(r.applied, d);
    assert_eq!(rep.held_len(), 0);
    assert_eq!(rep.get("regions/fr/x").unwrap().unwrap().value(), &[2]);
}

#[test]
fn far_future_timestamps_and_oversized_values_are_refused() {
    let mut fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let future = fr.put("x", b"1", NOW + 2 * 60 * 60 * 1000);
    let r = rep.ingest(vec![future], "p", NOW).unwrap();
    assert_eq!(r.refused[0].code(), "from_the_future");
    let mut fr2 = Author::region(1, "fr");
    let big = fr2.put("x", &vec![0u8; 1024 * 1024 + 1], NOW);
    let r = rep.ingest(vec![big], "p", NOW).unwrap();
    assert_eq!(r.refused[0].code(), "value_too_large");
    assert_eq!(rep.frontier().total_deltas(), 0);
    assert_eq!(rep.counters().refused.values().sum::<u64>(), 2);
}

#[test]
fn local_writes_chain_and_respect_authority() {
    let fr = Author::region(1, "fr");
    let mut rep = replica(&[&fr]);
    let a = rep
        .write(&fr.key, "regions/fr/a", Op::Put, b"1".to_vec(), NOW)
        .unwrap();
    let b = rep
        .write(
            &fr.key,
            "regions/fr/a",
            Op::Delete,
            b"ignored".to_vec(),
            NOW - 5,
        )
        .unwrap();
    assert_eq!((a.seq(), b.seq(), b.prev()), (1, 2, a.hash()));
    assert!(
        b.hlc() > a.hlc(),
        "clock is monotonic though wall time went back"
    );
    assert!(b.value().is_empty());
    assert_eq!(rep.get("regions/fr/a").unwrap(), None);
    let err = rep
        .write(&fr.key, "hq/x", Op::Put, vec![], NOW)
        .unwrap_err();
    assert!(err.to_string().contains("outside its key space"), "{err}");
    assert_eq!(rep.frontier().head(&fr.id()).seq, 2);
}

/// A replica that applied an author's deltas before learning the author was
/// compromised ends with exactly the state of one that learnt first.
#[test]
fn a_revocation_retracts_what_it_disallows_and_both_orders_agree() {
    let mut fr = Author::region(1, "fr");
    let mut hq = Author::hq(2);
    let v1 = sign(&roster([&fr, &hq]));
    let mut revoked = v1.roster().clone();
    let mut m = revoked.member(&fr.id()).unwrap().clone();
    m.standing = Standing::Revoked { valid_through: 1 };
    revoked.insert(m);
    revoked.version = 2;
    let v2 = sign(&revoked);

    let good = fr.put("x", b"kept", NOW);
    let bad = vec![
        fr.put("x", b"forged", NOW + 1),
        fr.put("y", b"forged", NOW + 2),
    ];
    let other = hq.put("z", b"hq", NOW);

    let open = |r| {
        Replica::open_signed(MemStore::default(), r, Limits::default(), NOW)
            .unwrap()
            .0
    };
    // Early: applies everything, then hears of the revocation.
    let mut early = open(v1.clone());
    let mut all = vec![good.clone()];
    all.extend(bad.clone());
    all.push(other.clone());
    assert_eq!(
        early.ingest(all.clone(), "p", NOW).unwrap().applied.len(),
        4
    );
    let offer = early.offer_roster(v2.as_bytes(), NOW).unwrap();
    assert!(
        matches!(offer, RosterOffer::Adopted(ref c) if c.retracted == 2),
        "{offer:?}"
    );
    // Late: learns first, then is offered the same deltas.
    let mut late = open(v1);
    late.adopt_roster(v2.clone(), NOW).unwrap();
    let r = late.ingest(all, "p", NOW).unwrap();
    assert_eq!(r.applied.len(), 2);
    assert_eq!(
        r.refused.iter().map(|r| r.code()).collect::<Vec<_>>(),
        ["compromised"; 2]
    );

    for rep in [&early, &late] {
        assert_eq!(rep.frontier().head(&fr.id()).seq, 1);
        assert_eq!(rep.get("regions/fr/x").unwrap(), Some(good.clone()));
        assert_eq!(rep.get("regions/fr/y").unwrap(), None);
        assert_eq!(rep.store().records.get("regions/fr/y"), None);
        assert_eq!(rep.get("hq/z").unwrap(), Some(other.clone()));
    }
    assert_eq!(early.digest(), late.digest());
    let codes: Vec<_> = early
        .store()
        .quarantine
        .iter()
        .map(|q| q.code.as_str())
        .collect();
    assert_eq!(codes, ["retracted", "retracted"]);
    // An older or equal roster changes nothing; a forged one is refused.
    assert!(matches!(
        early.offer_roster(v2.as_bytes(), NOW).unwrap(),
        RosterOffer::NotNewer {
            held: 2,
            offered: 2
        }
    ));
    let mut forged = v2.as_bytes().to_vec();
    forged[40] ^= 1;
    assert!(matches!(
        early.offer_roster(&forged, NOW).unwrap(),
        RosterOffer::Invalid(_)
    ));
    // The adopted roster is stored, so a reopened replica keeps it.
    let (reopened, problem) = Replica::open_signed(
        early.store().clone(),
        sign(&roster([&fr, &hq])),
        Limits::default(),
        NOW,
    )
    .unwrap();
    assert!(problem.is_none());
    assert_eq!(reopened.roster().version, 2);
}

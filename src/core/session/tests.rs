//! The session's protocol rules, one exchange at a time.

use super::*;
use crate::core::{Limits, MemStore, Op};
use crate::testkit::{roster, Author};

const NOW: u64 = 1_800_000_000_000;

#[test]
fn equal_digests_at_open_let_pushes_start_and_blind_pushes_wait() {
    let x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut a = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let mut b = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    let (mut sa, mut sb) = (Session::new(), Session::new());
    let early = a
        .write(&x.key, "regions/fr/k", Op::Put, vec![0], NOW)
        .unwrap();
    // Nothing known of the peer yet: no blind push.
    assert_eq!(sa.push(std::slice::from_ref(&early)), None);
    b.ingest(vec![early], "a", NOW).unwrap();
    // Both open with equal digests: each learns the other's frontier.
    let to_b = sa.digest(&a);
    let reply = sb.handle(to_b, &mut b, "a", NOW).unwrap().send;
    assert_eq!(reply, vec![PeerMsg::InSync(b.digest())]);
    for m in reply {
        assert!(sa.handle(m, &mut a, "b", NOW).unwrap().send.is_empty());
    }
    let d = a
        .write(&x.key, "regions/fr/k", Op::Put, vec![1], NOW)
        .unwrap();
    assert_eq!(
        sa.push(std::slice::from_ref(&d)),
        Some(PeerMsg::Deltas(vec![d]))
    );
}

#[test]
fn every_batch_is_acknowledged_with_the_heads_it_left_and_claims_count_only_if_held() {
    let mut x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut a = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let mut b = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    let (d1, d2) = (x.put("k", b"1", NOW), x.put("k", b"2", NOW));
    let _never_sent = x.put("k", b"3", NOW);
    let d4 = x.put("k", b"4", NOW);
    a.ingest(vec![d1.clone(), d2.clone()], "x", NOW).unwrap();
    let (mut sa, mut sb) = (Session::new(), Session::new());

    // b receives 1..2: it acknowledges head 2, and counts a's word.
    let r1 = sb
        .handle(PeerMsg::Deltas(vec![d1, d2]), &mut b, "a", NOW)
        .unwrap();
    let ack = r1.send.iter().find_map(|m| match m {
        PeerMsg::Ack(f) => Some(f.clone()),
        _ => None,
    });
    assert_eq!(ack.map(|f| f.head(&x.id()).seq), Some(2));
    assert_eq!(r1.peer_view.unwrap().seqs, vec![(x.id(), 2)]);

    // a hears the Ack: its view of b rises, and nothing is answered.
    let r2 = sa
        .handle(PeerMsg::Ack(b.frontier().clone()), &mut a, "b", NOW)
        .unwrap();
    assert!(r2.send.is_empty(), "an Ack is never answered");
    let view = r2.peer_view.unwrap();
    assert_eq!((view.whole, view.seqs), (false, vec![(x.id(), 2)]));

    // seq 4 behind a gap is held, not applied: the Ack stays at 2 and
    // the sender's claim to hold 4 does not count.
    let r3 = sb
        .handle(PeerMsg::Deltas(vec![d4]), &mut b, "a", NOW)
        .unwrap();
    assert!(r3.send.contains(&PeerMsg::Ack(b.frontier().clone())));
    assert_eq!(b.frontier().head(&x.id()).seq, 2);
    assert_eq!(r3.peer_view.unwrap().seqs, vec![(x.id(), 2)]);
}

#[test]
fn a_push_during_catch_up_waits_its_turn_and_nothing_is_skipped() {
    let x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut a = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let mut b = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    for i in 0..50u8 {
        a.write(&x.key, "regions/fr/k", Op::Put, vec![i], NOW)
            .unwrap();
    }
    let mut to_b = Session::new();
    to_b.handle(PeerMsg::Frontier(b.frontier().clone()), &mut a, "b", NOW)
        .unwrap();
    let mut sent = to_b.next_batch(&a, 10, usize::MAX).unwrap().unwrap();
    let late = a
        .write(&x.key, "regions/fr/k", Op::Put, vec![99], NOW)
        .unwrap();
    assert_eq!(
        to_b.push(&[late]),
        None,
        "must not overtake the catch-up run"
    );
    while let Some(batch) = to_b.next_batch(&a, 10, usize::MAX).unwrap() {
        sent.extend(batch);
    }
    let seqs: Vec<u64> = sent.iter().map(|d| d.seq()).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    let report = b.ingest(sent, "a", NOW).unwrap();
    assert_eq!((report.applied.len(), report.duplicates), (51, 0));
    assert_eq!(b.digest(), a.digest());
}

#[test]
fn an_idle_check_is_one_exchange_of_digests() {
    let x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut a = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let mut b = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    let d = a
        .write(&x.key, "regions/fr/k", Op::Put, vec![1], NOW)
        .unwrap();
    b.ingest(vec![d], "a", NOW).unwrap();
    let (sa, mut sb) = (Session::new(), Session::new());
    let reply = sb.handle(sa.digest(&a), &mut b, "a", NOW).unwrap();
    assert_eq!(reply.send, vec![PeerMsg::InSync(a.digest())]);
    assert!(sb.in_sync(&b));
}

#[test]
fn an_older_roster_version_in_a_digest_gets_the_newer_roster() {
    use crate::core::RosterOffer;
    use crate::testkit::sign;
    let x = Author::region(1, "fr");
    let v1 = sign(&roster([&x]));
    let mut r2 = v1.roster().clone();
    r2.version = 2;
    let v2 = sign(&r2);
    let open = |r| {
        Replica::open_signed(MemStore::default(), r, Limits::default(), NOW)
            .unwrap()
            .0
    };
    let (mut old, mut new) = (open(v1), open(v2.clone()));
    let (mut s_old, mut s_new) = (Session::new(), Session::new());
    let reply = s_new
        .handle(s_old.digest(&old), &mut new, "old", NOW)
        .unwrap()
        .send;
    assert_eq!(reply[0], PeerMsg::Roster(v2.as_bytes().to_vec()));
    let got = s_old
        .handle(reply[0].clone(), &mut old, "new", NOW)
        .unwrap();
    assert!(matches!(got.roster, Some(RosterOffer::Adopted(_))));
    assert_eq!(old.roster().version, 2);
    // Equal versions: no roster is sent.
    let reply = s_new
        .handle(s_old.digest(&old), &mut new, "old", NOW)
        .unwrap()
        .send;
    assert!(!reply.iter().any(|m| matches!(m, PeerMsg::Roster(_))));
}

#[test]
fn batches_admitted_together_are_each_acknowledged_with_the_heads_after_all() {
    let mut x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut b = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    let mut sb = Session::new();
    let deltas: Vec<_> = (0..3).map(|i| x.put("k", &[i], NOW)).collect();
    // Three batches of one delta each, gathered by the link into one.
    let mut admitted = crate::core::Admitted::unverified(deltas);
    admitted.batches = 3;
    let reaction = sb.handle_admitted(admitted, &mut b, "a", NOW).unwrap();
    let acks: Vec<u64> = (reaction.send.iter())
        .filter_map(|m| match m {
            PeerMsg::Ack(f) => Some(f.head(&x.id()).seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        vec![3, 3, 3],
        "one Ack per batch, each at the last head"
    );
}

#[test]
fn a_dialler_frontier_in_the_opening_digest_starts_the_stream_and_nothing_goes_twice() {
    let x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut hq = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let mut office = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    for i in 0..30u8 {
        hq.write(&x.key, "regions/fr/k", Op::Put, vec![i], NOW)
            .unwrap();
    }
    let (mut at_hq, mut at_office) = (Session::new(), Session::new());
    // The listener's own opening digest leaves first, as a link opens.
    let hq_opening = at_hq.opening(&hq, false);
    assert!(matches!(
        &hq_opening,
        PeerMsg::Digest { frontier: None, .. }
    ));
    at_hq.digest_sent();
    let opening = at_office.opening(&office, true);
    assert!(matches!(
        &opening,
        PeerMsg::Digest {
            frontier: Some(_),
            ..
        }
    ));
    let answer = at_hq.handle(opening, &mut hq, "office", NOW).unwrap();
    assert_eq!(answer.send, vec![PeerMsg::Frontier(hq.frontier().clone())]);
    // HQ streams now, without waiting for the answer to its own digest.
    let mut streamed = at_hq.next_batch(&hq, 10, usize::MAX).unwrap().unwrap();
    // That answer was computed before the batch arrived, and shows none
    // of it: the batch is on its way and is not sent again.
    let late = at_office
        .handle(hq_opening, &mut office, "hq", NOW)
        .unwrap();
    for m in late.send {
        at_hq.handle(m, &mut hq, "office", NOW).unwrap();
    }
    while let Some(batch) = at_hq.next_batch(&hq, 10, usize::MAX).unwrap() {
        streamed.extend(batch);
    }
    let seqs: Vec<u64> = streamed.iter().map(|d| d.seq()).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    let report = office.ingest(streamed, "hq", NOW).unwrap();
    assert_eq!((report.applied.len(), report.duplicates), (30, 0));
}

#[test]
fn an_opening_frontier_is_ignored_unless_it_is_the_one_its_digest_names() {
    let x = Author::region(1, "fr");
    let r = roster([&x]);
    let mut hq = Replica::open(MemStore::default(), r.clone(), Limits::default()).unwrap();
    let office = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    hq.write(&x.key, "regions/fr/k", Op::Put, vec![1], NOW)
        .unwrap();
    let mut at_hq = Session::new();
    let PeerMsg::Digest {
        roster,
        rebuild,
        holds,
        ..
    } = Session::new().opening(&office, true)
    else {
        unreachable!("an opening is a digest")
    };
    // A digest that is neither side's, with a frontier it does not name.
    let lying = PeerMsg::Digest {
        digest: FrontierDigest([7; 32]),
        roster,
        rebuild,
        frontier: Some(office.frontier().clone()),
        holds,
    };
    at_hq.handle(lying, &mut hq, "office", NOW).unwrap();
    assert!(at_hq.peer_frontier().is_none());
    assert_eq!(at_hq.next_batch(&hq, 10, usize::MAX).unwrap(), None);
}

#[test]
fn only_a_small_frontier_rides_in_the_opening_digest() {
    let authors: Vec<Author> = (0..=OPENING_FRONTIER_MAX as u64)
        .map(|i| Author::region(i + 1, "fr"))
        .collect();
    let r = roster(authors.iter());
    let mut office = Replica::open(MemStore::default(), r, Limits::default()).unwrap();
    let carries = |office: &Replica<MemStore>| {
        matches!(
            Session::new().opening(office, true),
            PeerMsg::Digest {
                frontier: Some(_),
                ..
            }
        )
    };
    for a in &authors[..OPENING_FRONTIER_MAX] {
        office
            .write(&a.key, "regions/fr/k", Op::Put, vec![1], NOW)
            .unwrap();
    }
    assert!(carries(&office));
    let last = &authors[OPENING_FRONTIER_MAX];
    office
        .write(&last.key, "regions/fr/k", Op::Put, vec![1], NOW)
        .unwrap();
    assert!(!carries(&office));
}

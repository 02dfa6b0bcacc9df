//! The sled store: durable, atomic, and honest about corruption.

use fedsync::core::{Limits, Op, Replica, Store};
use fedsync::store::{KvStore, StoreError};
use fedsync::testkit::{roster, Author};

const NOW: u64 = 1_800_000_000_000;

#[test]
fn reopening_after_writes_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let mut hq = Author::hq(2);
    let r = roster([&fr, &hq]);
    let mut deltas = Vec::new();
    for i in 0..50u64 {
        deltas.push(fr.put(&format!("k{}", i % 7), format!("v{i}").as_bytes(), NOW + i));
        deltas.push(hq.put(&format!("k{}", i % 3), b"x", NOW + i));
    }
    deltas.push(fr.next("regions/fr/k1", Op::Delete, b"", NOW + 100));
    let (frontier, k0, k1) = {
        let store = KvStore::open(dir.path(), 100).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        let report = rep.ingest(deltas.clone(), "t", NOW).unwrap();
        assert_eq!(report.applied.len(), deltas.len());
        (
            rep.frontier().clone(),
            rep.get("regions/fr/k0").unwrap(),
            rep.get("regions/fr/k1").unwrap(),
        )
    };
    assert!(k0.is_some() && k1.is_none(), "k1 was deleted");
    let store = KvStore::open(dir.path(), 100).unwrap();
    let rep = Replica::open(store, r, Limits::default()).unwrap();
    assert_eq!(rep.frontier(), &frontier);
    assert_eq!(rep.frontier().total_deltas(), 101);
    assert_eq!(rep.get("regions/fr/k0").unwrap(), k0);
    assert_eq!(rep.get("regions/fr/k1").unwrap(), None);
    assert_eq!(rep.store().record_count(), 10);
    let head = rep.frontier().head(&fr.id());
    assert_eq!(head.hash, fr.head_hash());
}

#[test]
fn a_corrupted_value_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let r = roster([&fr]);
    let d = fr.put("a", b"precious", NOW);
    {
        let store = KvStore::open(dir.path(), 100).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        rep.ingest(vec![d.clone()], "t", NOW).unwrap();
    }
    // Flip one bit of the stored delta behind the store's back.
    {
        let db = fedsync::store::open_db(dir.path()).unwrap();
        let log = db.open_tree(fedsync::store::TREE).unwrap();
        let (k, v) = log.scan_prefix(b"l").next().unwrap().unwrap();
        let mut bad = v.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        log.insert(k, bad).unwrap();
        db.flush().unwrap();
    }
    let store = KvStore::open(dir.path(), 100).unwrap();
    let err = store.delta(&fr.id(), 1).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().starts_with("store corrupt: entry l/"),
        "{err}"
    );
    assert!(err.to_string().contains("checksum"), "{err}");
    let rep = Replica::open(store, r, Limits::default()).err().unwrap();
    assert!(rep.to_string().contains("corrupt"), "{rep}");
}

#[test]
fn quarantine_is_bounded_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let r = roster([&fr]);
    let store = KvStore::open(dir.path(), 3).unwrap();
    let mut rep = Replica::open(store, r, Limits::default()).unwrap();
    let forged: Vec<_> = (0..5)
        .map(|i| fr.next(&format!("hq/x{i}"), Op::Put, b"x", NOW))
        .collect();
    let report = rep.ingest(forged, "peer-a", NOW).unwrap();
    assert_eq!(report.refused.len(), 5);
    let q = rep.store().quarantine(10).unwrap();
    assert_eq!((q.entries.len(), q.kept, q.dropped), (3, 3, 2));
    assert_eq!(q.entries[0].origin, "peer-a");
    assert_eq!(q.entries[0].code, "no_authority");
    // Newest first: the last forged write leads.
    assert!(
        q.entries[0].reason.contains("hq/x4"),
        "{}",
        q.entries[0].reason
    );
    assert!(q.entries[2].reason.contains("hq/x2"));
    assert_eq!(rep.store().quarantine(1).unwrap().entries.len(), 1);
    assert_eq!(rep.frontier().total_deltas(), 0);
}

#[test]
fn an_unknown_layout_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fedsync::store::open_db(dir.path()).unwrap();
        let meta = db.open_tree(fedsync::store::TREE).unwrap();
        let payload = 99u32.to_be_bytes();
        let mut v = crc32fast::hash(&payload).to_be_bytes().to_vec();
        v.extend_from_slice(&payload);
        meta.insert(b"mlayout", v).unwrap();
        db.flush().unwrap();
    }
    let err = KvStore::open(dir.path(), 10).err().unwrap();
    assert!(matches!(err, StoreError::Layout { found: 99 }), "{err}");
}

#[test]
fn a_store_reopens_at_once_after_close_and_a_held_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let store = KvStore::open(dir.path(), 10).unwrap();
        drop(store);
    }
    let held = KvStore::open(dir.path(), 10).unwrap();
    let err = KvStore::open(dir.path(), 10).err().unwrap();
    assert!(err.to_string().contains("could not acquire lock"), "{err}");
    drop(held);
}

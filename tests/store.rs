//! The sled store: durable, atomic, and honest about corruption.

use fedsync::core::{Limits, Op, Replica, Store};
use fedsync::store::{KvStore, StoreError, StoreOptions};
use fedsync::testkit::{roster, Author};

const NOW: u64 = 1_800_000_000_000;

fn opts(quarantine_max: u64) -> StoreOptions {
    StoreOptions {
        quarantine_max,
        ..StoreOptions::default()
    }
}

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
        let store = KvStore::open(dir.path(), &opts(100)).unwrap();
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
    let store = KvStore::open(dir.path(), &opts(100)).unwrap();
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
fn the_record_count_is_kept_by_commits_and_counted_once_for_an_older_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let r = roster([&fr]);
    {
        let store = KvStore::open(dir.path(), &opts(100)).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        assert_eq!(rep.store().record_count(), 0);
        let first: Vec<_> = (0..30)
            .map(|i| fr.put(&format!("k{}", i % 12), b"v", NOW + i))
            .collect();
        rep.ingest(first, "t", NOW).unwrap();
        assert_eq!(rep.store().record_count(), 12, "new keys counted once each");
        // Deletes are tombstones: still records.
        let d = fr.next("regions/fr/k3", Op::Delete, b"", NOW + 50);
        rep.ingest(vec![d], "t", NOW).unwrap();
        assert_eq!(rep.store().record_count(), 12);
    }
    // A store from an earlier release has no count: it is counted once.
    {
        let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
        let tree = db.open_tree(fedsync::store::TREE).unwrap();
        assert!(
            tree.remove(b"mrecords").unwrap().is_some(),
            "the count is kept as m/records"
        );
        db.flush().unwrap();
    }
    let store = KvStore::open(dir.path(), &opts(100)).unwrap();
    assert_eq!(store.record_count(), 12);
    assert_eq!(store.sizes().record_count(), 12);
}

#[test]
fn a_corrupted_value_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let r = roster([&fr]);
    let d = fr.put("a", b"precious", NOW);
    {
        let store = KvStore::open(dir.path(), &opts(100)).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        rep.ingest(vec![d.clone()], "t", NOW).unwrap();
    }
    // Flip one bit of the stored delta behind the store's back.
    {
        let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
        let log = db.open_tree(fedsync::store::TREE).unwrap();
        let (k, v) = log.scan_prefix(b"l").next().unwrap().unwrap();
        let mut bad = v.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        log.insert(k, bad).unwrap();
        db.flush().unwrap();
    }
    let store = KvStore::open(dir.path(), &opts(100)).unwrap();
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
    let store = KvStore::open(dir.path(), &opts(3)).unwrap();
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
        let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
        let meta = db.open_tree(fedsync::store::TREE).unwrap();
        let payload = 99u32.to_be_bytes();
        let mut v = crc32fast::hash(&payload).to_be_bytes().to_vec();
        v.extend_from_slice(&payload);
        meta.insert(b"mlayout", v).unwrap();
        db.flush().unwrap();
    }
    let err = KvStore::open(dir.path(), &opts(10)).err().unwrap();
    assert!(matches!(err, StoreError::Layout { found: 99 }), "{err}");
}

#[test]
fn a_store_reopens_at_once_after_close_and_a_held_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let store = KvStore::open(dir.path(), &opts(10)).unwrap();
        drop(store);
    }
    let held = KvStore::open(dir.path(), &opts(10)).unwrap();
    let err = KvStore::open(dir.path(), &opts(10)).err().unwrap();
    assert!(err.to_string().contains("could not acquire lock"), "{err}");
    drop(held);
}

/// `crc32(payload) ‖ payload`: how layouts 2 and 3 frame every value.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = crc32fast::hash(payload).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Writes `deltas` into `tree` as layouts 2 and 3 kept them: each delta an
/// `l` entry, each key (written once) an `r` record, each author's last
/// delta its `h` head.
fn write_old_entries(tree: &sled::Tree, deltas: &[fedsync::core::SignedDelta]) {
    for d in deltas {
        let mut k = b"l".to_vec();
        k.extend_from_slice(&d.author().0);
        k.extend_from_slice(&d.seq().to_be_bytes());
        tree.insert(k, framed(d.as_bytes())).unwrap();
        let mut rec = d.hlc().wall_ms.to_be_bytes().to_vec();
        rec.extend_from_slice(&d.hlc().logical.to_be_bytes());
        rec.extend_from_slice(&d.author().0);
        rec.extend_from_slice(&d.seq().to_be_bytes());
        rec.push(0);
        tree.insert([b"r", d.key().as_bytes()].concat(), framed(&rec))
            .unwrap();
        let last = deltas.iter().rfind(|e| e.author() == d.author());
        if last == Some(d) {
            let head = [&d.seq().to_be_bytes()[..], &d.hash().0].concat();
            tree.insert([b"h", &d.author().0[..]].concat(), framed(&head))
                .unwrap();
        }
    }
}

/// Reopens a migrated store twice: every delta, record and head is there.
fn assert_migrated(
    dir: &std::path::Path,
    r: &fedsync::core::Roster,
    deltas: &[fedsync::core::SignedDelta],
) {
    for _ in 0..2 {
        let store = KvStore::open(dir, &opts(10)).unwrap();
        let rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        for d in deltas {
            assert_eq!(
                rep.store().delta(&d.author(), d.seq()).unwrap().as_ref(),
                Some(d)
            );
            assert_eq!(rep.get(d.key()).unwrap().as_ref(), Some(d));
            let head = rep.frontier().head(&d.author()).seq;
            assert!(head >= d.seq(), "{head} < {}", d.seq());
        }
        assert_eq!(rep.store().record_count(), deltas.len() as u64);
        let listed = rep.store().records("", None, usize::MAX).unwrap();
        assert_eq!(listed.len(), deltas.len());
    }
}

/// A store as the release before last wrote it (layout 2, tree
/// `fedsync/v2`: one `l` entry per delta, no chunks, no record count)
/// opens in this release: migrated once, every delta, record and head
/// kept, the old tree gone; and it opens again as layout 4.
#[test]
fn a_store_of_layout_2_is_migrated_once_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let mut hq = Author::hq(2);
    let r = roster([&fr, &hq]);
    let mut deltas = Vec::new();
    for i in 0..150u64 {
        deltas.push(fr.put(&format!("k{i:03}"), format!("v{i}").as_bytes(), NOW + i));
    }
    for i in 0..10u64 {
        deltas.push(hq.put(&format!("n{i}"), b"x", NOW + i));
    }
    {
        let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
        let old = db.open_tree("fedsync/v2").unwrap();
        old.insert(b"mlayout", framed(&2u32.to_be_bytes())).unwrap();
        write_old_entries(&old, &deltas);
        db.flush().unwrap();
    }
    assert_migrated(dir.path(), &r, &deltas);
    let store = KvStore::open(dir.path(), &opts(10)).unwrap();
    let rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
    assert_eq!(rep.frontier().head(&fr.id()).hash, fr.head_hash());
    assert_eq!(rep.frontier().head(&hq.id()).seq, 10);
    drop(rep);
    let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
    let names: Vec<String> = (db.tree_names().iter())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "fedsync/v2"), "{names:?}");
    let tree = db.open_tree(fedsync::store::TREE).unwrap();
    assert_eq!(
        tree.get(b"mlayout").unwrap().unwrap().as_ref(),
        framed(&4u32.to_be_bytes())
    );
    // France's first nine chunks of 16 are sealed; the rest are tail entries.
    assert_eq!(tree.scan_prefix(b"c").count(), 9);
    assert_eq!(tree.scan_prefix(b"l").count(), 6 + 10);
    // 160 records in 5 buckets of 32, none left one to an entry.
    assert_eq!(tree.scan_prefix(b"r").count(), 0);
    assert_eq!(tree.scan_prefix(b"b").count(), 5);
}

/// A store as the previous release wrote it (layout 3: one `r` entry per
/// record) is migrated in place, its records moved into buckets; and a
/// move cut short (the layout already says 4, entries are left) goes on
/// at the next open.
#[test]
fn a_store_of_layout_3_moves_its_records_into_buckets_once() {
    for layout in [3u32, 4] {
        let dir = tempfile::tempdir().unwrap();
        let mut authors: Vec<Author> = (1..=6)
            .map(|i| Author::region(i, &format!("r{i}")))
            .collect();
        let r = roster(authors.iter());
        let mut deltas = Vec::new();
        // Fifteen each: a tail, no sealed chunk, as layout 3 would hold it.
        for a in authors.iter_mut() {
            for i in 0..15u64 {
                deltas.push(a.put(&format!("k{i:02}"), b"v", NOW + i));
            }
        }
        {
            let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
            let tree = db.open_tree(fedsync::store::TREE).unwrap();
            tree.insert(b"mlayout", framed(&layout.to_be_bytes()))
                .unwrap();
            tree.insert(b"mrecords", framed(&90u64.to_be_bytes()))
                .unwrap();
            write_old_entries(&tree, &deltas);
            db.flush().unwrap();
        }
        assert_migrated(dir.path(), &r, &deltas);
        let db = fedsync::store::open_db(dir.path(), &opts(10)).unwrap();
        let tree = db.open_tree(fedsync::store::TREE).unwrap();
        assert_eq!(
            tree.get(b"mlayout").unwrap().unwrap().as_ref(),
            framed(&4u32.to_be_bytes())
        );
        assert_eq!(tree.scan_prefix(b"r").count(), 0);
        assert_eq!(tree.scan_prefix(b"b").count(), 3, "90 records, 3 buckets");
    }
}

/// How a damaged copy of a store turned out.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Refused with the documented error: damage sled or a checksum found,
    /// or a log shorter than the mark says it was.
    Refused { shorter: bool },
    /// Opened, and every one of the node's own deltas is there.
    Intact,
}

/// Opens the store in `dir` as a node starts, then reads back the node's
/// own log: `Ok(Refused)` for a clear error, `Ok(Intact)` for the whole
/// log, `Err` for anything else (a shorter log taken as good, an error
/// that does not say what to do).
fn open_as_a_node_would(
    dir: &std::path::Path,
    me: &fedsync::core::NodeId,
    log: &[fedsync::core::SignedDelta],
    r: &fedsync::core::Roster,
) -> Result<Outcome, String> {
    let refused = |e: StoreError| {
        let text = e.to_string();
        if text.starts_with("store corrupt") && text.contains("--rebuild") && !text.contains('\n') {
            let shorter = matches!(e, StoreError::Truncated { .. });
            Ok(Outcome::Refused { shorter })
        } else {
            Err(format!("an error that does not say what to do: {text}"))
        }
    };
    let mut store = match KvStore::open(dir, &opts(100)) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    if let Err(e) = store.own_log(*me) {
        return refused(e);
    }
    let rep = match Replica::open(store, r.clone(), Limits::default()) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let head = rep.frontier().head(me).seq;
    for d in log {
        match rep.store().delta(me, d.seq()) {
            Ok(Some(got)) if got == *d => {}
            Ok(other) => {
                return Err(format!(
                    "seq {} read back as {other:?} with the head at {head}: a damaged log taken as good",
                    d.seq()
                ))
            }
            Err(e) => return refused(e),
        }
    }
    if head != log.len() as u64 {
        return Err(format!("the head is {head}, the log {} long", log.len()));
    }
    Ok(Outcome::Intact)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// What a case does to a copy of the store's directory.
type Damage = Box<dyn Fn(&std::path::Path)>;

/// One byte flipped at many offsets of a real sled store, and its files
/// cut short: every case ends in the documented one-line error or with
/// the node's whole log; never a panic, never a shorter log taken as good.
#[test]
fn a_damaged_store_fails_loudly_and_never_serves_a_shorter_log() {
    let pristine = tempfile::tempdir().unwrap();
    let mut me = Author::region(1, "fr");
    let r = roster([&me]);
    let mut log = Vec::new();
    {
        let mut store = KvStore::open(pristine.path(), &opts(100)).unwrap();
        store.own_log(me.id()).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        for batch in 0..30u64 {
            let ds: Vec<_> = (0..10)
                .map(|i| {
                    me.put(
                        &format!("k{batch}-{i}"),
                        format!("value {batch} {i}").as_bytes(),
                        NOW + batch,
                    )
                })
                .collect();
            rep.ingest(ds.clone(), "local", NOW).unwrap();
            log.extend(ds);
        }
    }
    let id = me.id();
    assert_eq!(
        open_as_a_node_would(pristine.path(), &id, &log, &r),
        Ok(Outcome::Intact)
    );
    let db = pristine.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let mut cases: Vec<(String, Damage)> = Vec::new();
    let spread = (0..96)
        .map(|i| i * len / 96)
        .chain([0, 1, 8, 16, 24, 32, len - 1]);
    for at in spread {
        cases.push((
            format!("byte {at} of {len} flipped"),
            Box::new(move |dir: &std::path::Path| {
                let path = dir.join("db");
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[at as usize] ^= 0x41;
                std::fs::write(&path, bytes).unwrap();
            }),
        ));
    }
    for eighths in 0..8 {
        let to = len * eighths / 8;
        cases.push((
            format!("db cut to {to} of {len} bytes"),
            Box::new(move |dir: &std::path::Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("db"))
                    .unwrap();
                f.set_len(to).unwrap();
            }),
        ));
    }
    for to in [0u64, 10, 100] {
        cases.push((
            format!("own-head cut to {to} bytes"),
            Box::new(move |dir: &std::path::Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("own-head"))
                    .unwrap();
                f.set_len(to).unwrap();
            }),
        ));
    }
    let mut tally = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for (what, damage) in cases {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("data");
        copy_dir(pristine.path(), &dir);
        damage(&dir);
        let (log, r) = (log.clone(), r.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| open_as_a_node_would(&dir, &id, &log, &r));
            let _ = tx.send(outcome);
            drop(work);
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Ok(Ok(o))) => *tally.entry(format!("{o:?}")).or_insert(0) += 1,
            Ok(Ok(Err(why))) => failures.push(format!("{what}: {why}")),
            Ok(Err(_)) => failures.push(format!("{what}: panicked")),
            Err(_) => failures.push(format!("{what}: hung")),
        }
    }
    eprintln!("damaged stores: {tally:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        tally.keys().any(|k| k.starts_with("Refused")),
        "no case was refused: {tally:?}"
    );
}

/// sled recovering to an earlier point (the damage the field saw once: a
/// node's own log cut from seq 25 to 14, silently) is caught by the mark
/// kept beside sled's files: the start is refused instead of the node
/// signing seqs it already used. Here the earlier point is the store's own
/// file as it was at seq 14, put back under the mark of seq 25.
#[test]
fn a_log_that_came_back_shorter_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = tempfile::tempdir().unwrap();
    let mut me = Author::region(1, "fr");
    let r = roster([&me]);
    let write = |rep: &mut Replica<KvStore>, me: &mut Author, from: u64, to: u64| {
        for i in from..to {
            let d = me.put(&format!("k{i}"), b"v", NOW + i);
            rep.ingest(vec![d], "local", NOW).unwrap();
        }
    };
    {
        let mut store = KvStore::open(dir.path(), &opts(100)).unwrap();
        store.own_log(me.id()).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        write(&mut rep, &mut me, 0, 14);
    }
    std::fs::copy(dir.path().join("db"), earlier.path().join("db")).unwrap();
    {
        let mut store = KvStore::open(dir.path(), &opts(100)).unwrap();
        store.own_log(me.id()).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        write(&mut rep, &mut me, 14, 25);
        assert_eq!(rep.frontier().head(&me.id()).seq, 25);
    }
    std::fs::copy(earlier.path().join("db"), dir.path().join("db")).unwrap();
    let mut store = KvStore::open(dir.path(), &opts(100)).unwrap();
    assert_eq!(
        store.record_count(),
        14,
        "sled opens the earlier state as good"
    );
    let err = store.own_log(me.id()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Truncated {
                held: 14,
                written: 25
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("store corrupt"), "{err}");
    assert!(err.to_string().contains("--rebuild"), "{err}");
}

/// When a report's delta first arrived is kept with it: written in the
/// commit that stores the delta, once, across a restart, and gone with a
/// retracted log. Other deltas keep none.
#[test]
fn a_reports_arrival_is_kept_once_and_retracted_with_its_log() {
    use fedsync::core::{Commit, SeqRange};
    let dir = tempfile::tempdir().unwrap();
    let mut fr = Author::region(1, "fr");
    let r = roster([&fr]);
    let note = fr.put("notes/1", b"x", NOW);
    let report = fr.put("reports/2026-09", b"{}", NOW + 1);
    let later = fr.put("reports/2026-10", b"{}", NOW + 2);
    {
        let store = KvStore::open(dir.path(), &opts(100)).unwrap();
        let mut rep = Replica::open(store, r.clone(), Limits::default()).unwrap();
        rep.ingest(vec![note.clone(), report.clone()], "t", NOW + 10)
            .unwrap();
        rep.ingest(vec![report.clone(), later.clone()], "t", NOW + 20)
            .unwrap();
    }
    let mut store = KvStore::open(dir.path(), &opts(100)).unwrap();
    let id = fr.id();
    let arrived = |s: &KvStore, seq| s.arrived(&id, seq).unwrap();
    assert_eq!(arrived(&store, 1), None, "a note is not a report");
    assert_eq!(
        arrived(&store, 2),
        Some(NOW + 10),
        "the duplicate kept the first"
    );
    assert_eq!(arrived(&store, 3), Some(NOW + 20));
    let retract = Commit {
        retract: vec![SeqRange {
            author: id,
            first: 3,
            last: 3,
        }],
        ..Commit::default()
    };
    store.commit(&retract).unwrap();
    assert_eq!(
        (arrived(&store, 2), arrived(&store, 3)),
        (Some(NOW + 10), None)
    );
}

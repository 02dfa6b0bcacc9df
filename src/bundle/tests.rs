//! The format against damage: a roundtrip, every byte flipped, every
//! truncation; import into a replica (prefix, idempotence, quarantine,
//! refused exporter); `check` finding a bundle that lies about itself.

use proptest::prelude::*;

use super::*;
use crate::core::{Frontier, Limits, MemStore, Replica, Roster, Store};
use crate::testkit::{roster, Author};

const NOW: u64 = 1_800_000_000_000;

struct Fixture {
    authors: Vec<Author>,
    roster: Roster,
    /// The exporter's replica, holding every author's deltas.
    source: Replica<MemStore>,
}

/// Three authors, `per_author` deltas each, in the exporter's store. The
/// exporter is the `hq` author (a node in the roster).
fn fixture(per_author: usize) -> Fixture {
    let mut authors = vec![
        Author::hq(3),
        Author::region(1, "fr"),
        Author::region(2, "de"),
    ];
    let roster = roster(authors.iter());
    let mut source = Replica::open(MemStore::default(), roster.clone(), Limits::default()).unwrap();
    for a in authors.iter_mut() {
        let deltas = (0..per_author)
            .map(|i| a.put(&format!("k{i}"), format!("{{\"n\":{i}}}").as_bytes(), NOW))
            .collect();
        let report = source.ingest(deltas, "test", NOW).unwrap();
        assert_eq!(report.applied.len(), per_author);
    }
    Fixture {
        authors,
        roster,
        source,
    }
}

fn bundle(f: &Fixture, base: Frontier, chunk_bytes: usize) -> Vec<u8> {
    let req = ExportRequest {
        key: &f.authors[0].key,
        name: "hq",
        base,
        roster: None,
        created_ms: NOW,
        part_bytes: parts::PART_BYTES_DEFAULT,
        chunk_bytes,
    };
    export(f.source.store(), req, Vec::new()).unwrap().0
}

/// Each chunk's deltas, as bytes.
type ChunkDeltas = Vec<Vec<Vec<u8>>>;

/// Every chunk's deltas, and where each record ends: header, then each
/// chunk, then the trailer.
fn read_all(bytes: &[u8]) -> Result<(ChunkDeltas, Vec<u64>), BundleError> {
    let mut r = BundleReader::open(bytes)?;
    let mut ends = vec![r.verified().bytes];
    let mut chunks = Vec::new();
    while let Some(c) = r.next_chunk()? {
        chunks.push(c.deltas().map(<[u8]>::to_vec).collect());
        ends.push(r.verified().bytes);
    }
    ends.push(r.verified().bytes);
    assert!(r.verified().complete);
    Ok((chunks, ends))
}

/// What a reader yields of `bytes` before it stops, and why it stopped.
fn read_prefix(bytes: &[u8]) -> (ChunkDeltas, Result<(), BundleError>) {
    let mut r = match BundleReader::open(bytes) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut chunks = Vec::new();
    loop {
        match r.next_chunk() {
            Ok(Some(c)) => chunks.push(c.deltas().map(<[u8]>::to_vec).collect()),
            Ok(None) => return (chunks, Ok(())),
            Err(e) => return (chunks, Err(e)),
        }
    }
}

fn empty_replica(f: &Fixture) -> Replica<MemStore> {
    Replica::open(MemStore::default(), f.roster.clone(), Limits::default()).unwrap()
}

fn import_bytes(into: &mut Replica<MemStore>, bytes: &[u8]) -> Imported {
    let reader = BundleReader::open(bytes).unwrap();
    import(into, reader, &ImportOptions::at(NOW)).unwrap()
}

#[test]
fn a_bundle_round_trips_every_delta_exactly() {
    let f = fixture(40);
    let bytes = bundle(&f, Frontier::new(), 1_000);
    let (chunks, _) = read_all(&bytes).unwrap();
    assert!(chunks.len() > 5, "small chunks: {}", chunks.len());
    let got: Vec<Vec<u8>> = chunks.into_iter().flatten().collect();
    let mut want = Vec::new();
    for (author, head) in f.source.frontier().iter() {
        for seq in 1..=head.seq {
            let d = f.source.store().delta(author, seq).unwrap().unwrap();
            want.push(d.as_bytes().to_vec());
        }
    }
    assert_eq!(got, want);
    let header = BundleReader::open(&bytes[..]).unwrap().header().clone();
    assert_eq!(header.result, *f.source.frontier());
    assert_eq!(header.delta_count, 120);
    assert_eq!(header.exporter_name, "hq");
    assert!(check(BundleReader::open(&bytes[..]).unwrap(), None, NOW).sound());
}

#[test]
fn every_flipped_byte_is_refused_at_its_record_and_only_the_prefix_read() {
    let f = fixture(6);
    let bytes = bundle(&f, Frontier::new(), 300);
    let (chunks, ends) = read_all(&bytes).unwrap();
    assert!(chunks.len() >= 4);
    for at in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= bit;
            let (got, end) = read_prefix(&bad);
            let err = end.expect_err(&format!("flip of {bit:#x} at {at} went unnoticed"));
            // Chunks wholly before the flipped byte, and nothing after.
            let before = ends[1..].iter().filter(|e| **e <= at as u64).count();
            let before = before.min(chunks.len());
            assert_eq!(got, chunks[..before], "flip at {at}: {err}");
            assert!(!err.to_string().contains('\n'));
        }
    }
}

#[test]
fn every_truncation_reads_exactly_the_whole_chunks_before_it() {
    let f = fixture(6);
    let bytes = bundle(&f, Frontier::new(), 300);
    let (chunks, ends) = read_all(&bytes).unwrap();
    for len in 0..bytes.len() {
        let (got, end) = read_prefix(&bytes[..len]);
        let err = end.expect_err("a truncated bundle reads as whole");
        assert!(err.is_truncation(), "cut at {len}: {err}");
        let whole = ends[1..].iter().filter(|e| **e <= len as u64).count();
        assert_eq!(got, chunks[..whole.min(chunks.len())], "cut at {len}");
    }
}

#[test]
fn import_applies_everything_once_and_a_second_import_stores_nothing() {
    let f = fixture(30);
    let bytes = bundle(&f, Frontier::new(), 2_000);
    let mut office = empty_replica(&f);
    let first = import_bytes(&mut office, &bytes);
    assert_eq!((first.applied, first.refused_total()), (90, 0));
    assert!(first.reached && first.error.is_none() && first.verified.complete);
    assert_eq!(office.frontier(), f.source.frontier());
    let again = import_bytes(&mut office, &bytes);
    assert_eq!((again.applied, again.duplicates), (0, 90));
    assert!(office.store().quarantine.is_empty());
}

#[test]
fn a_truncated_bundle_imports_its_verified_prefix() {
    let f = fixture(30);
    let bytes = bundle(&f, Frontier::new(), 1_000);
    let (chunks, ends) = read_all(&bytes).unwrap();
    let cut = (ends[3] - 10) as usize; // inside the third chunk
    let mut office = empty_replica(&f);
    let got = import_bytes(&mut office, &bytes[..cut]);
    let prefix: u64 = chunks[..2].iter().map(|c| c.len() as u64).sum();
    assert_eq!((got.applied, got.verified.deltas), (prefix, prefix));
    assert!(got.error.as_ref().is_some_and(BundleError::is_truncation));
    assert!(!got.reached);
    assert_eq!(office.frontier().total_deltas(), prefix);
    // The whole bundle later: the rest, nothing twice.
    let rest = import_bytes(&mut office, &bytes);
    assert_eq!((rest.applied, rest.duplicates), (90 - prefix, prefix));
}

#[test]
fn a_receipt_frontier_as_base_exports_only_what_it_lacks() {
    let f = fixture(20);
    let full = bundle(&f, Frontier::new(), 1_000);
    let mut office = empty_replica(&f);
    let (chunks, ends) = read_all(&full).unwrap();
    import_bytes(&mut office, &full[..ends[2] as usize]);
    let held: u64 = chunks[..2].iter().map(|c| c.len() as u64).sum();
    assert_eq!(office.frontier().total_deltas(), held);
    let delta = bundle(&f, office.frontier().clone(), 1_000);
    let header = BundleReader::open(&delta[..]).unwrap().header().clone();
    assert_eq!(header.delta_count, 60 - held);
    let got = import_bytes(&mut office, &delta);
    assert_eq!((got.applied, got.duplicates), (60 - held, 0));
    assert_eq!(office.frontier(), f.source.frontier());
}

#[test]
fn deltas_refused_as_from_a_peer_are_quarantined_with_the_bundle_origin() {
    let mut f = fixture(0);
    // fr writes into de's space: signed, but out of its authority.
    let bad = f.authors[1].next("regions/de/x", crate::core::Op::Put, b"1", NOW);
    let good = f.authors[2].put("y", b"2", NOW);
    let mut result = Frontier::new();
    for d in [&bad, &good] {
        let head = crate::core::Head {
            seq: d.seq(),
            hash: d.hash(),
        };
        result.set(d.author(), head);
    }
    let header = Header {
        exporter: f.authors[0].id(),
        exporter_name: "hq".into(),
        created_ms: NOW,
        part_bytes: parts::PART_BYTES_DEFAULT,
        base: Frontier::new(),
        result: result.clone(),
        delta_count: 2,
        roster: None,
    };
    let mut w = BundleWriter::new(Vec::new(), &header, &f.authors[0].key, 1 << 20).unwrap();
    let mut ordered = [&bad, &good];
    ordered.sort_by_key(|d| d.author());
    for d in ordered {
        w.push(d.as_bytes()).unwrap();
    }
    let bytes = w.finish().unwrap().0;
    let mut office = empty_replica(&f);
    let got = import_bytes(&mut office, &bytes);
    assert_eq!(got.applied, 1);
    assert_eq!(got.refused.get("no_authority"), Some(&1), "{got:?}");
    let q = &office.store().quarantine;
    assert_eq!((q.len(), q[0].origin.as_str()), (1, "bundle:hq"));
    // verify with the roster says the same, without a store.
    let limits = Limits::default();
    let checked = check(
        BundleReader::open(&bytes[..]).unwrap(),
        Some((&f.roster, &limits)),
        NOW,
    );
    assert_eq!(checked.refused.get("no_authority"), Some(&1));
}

#[test]
fn a_bundle_from_outside_the_roster_is_refused_whole() {
    let f = fixture(5);
    let stranger = Author::hq(99);
    let req = ExportRequest {
        key: &stranger.key,
        name: "stranger",
        base: Frontier::new(),
        roster: None,
        created_ms: NOW,
        part_bytes: parts::PART_BYTES_DEFAULT,
        chunk_bytes: 1 << 20,
    };
    let bytes = export(f.source.store(), req, Vec::new()).unwrap().0;
    let mut office = empty_replica(&f);
    let reader = BundleReader::open(&bytes[..]).unwrap();
    let err = import(&mut office, reader, &ImportOptions::at(NOW)).unwrap_err();
    assert!(err.to_string().contains("not in the roster"), "{err}");
    assert!(office.frontier().is_empty());
}

#[test]
fn check_finds_deltas_that_are_not_what_the_header_announces() {
    let mut fr = Author::region(1, "fr");
    let hq = Author::hq(3);
    let d1 = fr.put("a", b"1", NOW);
    let _skipped = fr.put("b", b"2", NOW);
    let d3 = fr.put("c", b"3", NOW);
    let mut result = Frontier::new();
    let head = crate::core::Head {
        seq: 2,
        hash: d3.hash(),
    };
    result.set(fr.id(), head);
    let header = Header {
        exporter: hq.id(),
        exporter_name: "hq".into(),
        created_ms: NOW,
        part_bytes: parts::PART_BYTES_DEFAULT,
        base: Frontier::new(),
        result,
        delta_count: 2,
        roster: None,
    };
    let mut w = BundleWriter::new(Vec::new(), &header, &hq.key, 1 << 20).unwrap();
    w.push(d1.as_bytes()).unwrap();
    w.push(d3.as_bytes()).unwrap();
    let bytes = w.finish().unwrap().0;
    let checked = check(BundleReader::open(&bytes[..]).unwrap(), None, NOW);
    assert!(checked.verified.complete && checked.bad_signatures == 0);
    let why = checked.mismatch.clone().expect("a skipped seq is found");
    assert!(why.contains("#3 where"), "{why}");
    assert!(!checked.sound());
}

#[test]
fn a_writer_refuses_to_finish_with_fewer_deltas_than_announced() {
    let f = fixture(2);
    let header = Header {
        exporter: f.authors[0].id(),
        exporter_name: "hq".into(),
        created_ms: NOW,
        part_bytes: parts::PART_BYTES_DEFAULT,
        base: Frontier::new(),
        result: f.source.frontier().clone(),
        delta_count: 6,
        roster: None,
    };
    let w = BundleWriter::new(Vec::new(), &header, &f.authors[0].key, 1 << 20).unwrap();
    assert!(matches!(w.finish(), Err(WriteError::Count { .. })));
}

#[test]
fn garbage_and_other_files_are_not_bundles() {
    for bytes in [&b""[..], b"FSBUN", b"PK\x03\x04 a zip file", &[0u8; 100]] {
        let err = BundleReader::open(bytes).err().expect("refused");
        assert!(
            matches!(err, BundleError::NotABundle | BundleError::Truncated { .. }),
            "{err}"
        );
    }
    let mut huge = b"FSBUNDLE\x01".to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    let err = BundleReader::open(&huge[..]).err().unwrap();
    assert!(err.to_string().contains("at most"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_split_of_chunks_round_trips(per_author in 0usize..25, chunk_bytes in 150usize..3_000) {
        let f = fixture(per_author);
        let bytes = bundle(&f, Frontier::new(), chunk_bytes);
        let mut office = empty_replica(&f);
        let got = import_bytes(&mut office, &bytes);
        prop_assert!(got.error.is_none() && got.reached);
        prop_assert_eq!(office.frontier(), f.source.frontier());
        prop_assert!(check(BundleReader::open(&bytes[..]).unwrap(), None, NOW).sound());
    }
}

//! Ingest throughput: decode + verify + apply + durable commit of signed
//! deltas into the sled store, beside the same run's ceiling, batch
//! signature verification alone with no store.
//!
//! `cargo bench --bench ingest`. The deltas arrive as they do from a peer:
//! batches of `BATCH` encoded deltas, five authors interleaved.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fedsync::core::{verify::KeyCache, Admission, Limits, Replica, Roster, SignedDelta};
use fedsync::store::KvStore;
use fedsync::testkit::{roster, Author};

const TOTAL: usize = 20_000;
const BATCH: usize = 1_000;
const NOW: u64 = 1_800_000_000_000;

fn fixture() -> (Roster, Vec<Vec<Vec<u8>>>) {
    let mut authors: Vec<Author> = ["fr", "de", "ke", "br", "in"]
        .iter()
        .enumerate()
        .map(|(i, r)| Author::region(i as u64 + 1, r))
        .collect();
    let r = roster(authors.iter());
    let n = authors.len();
    let deltas: Vec<SignedDelta> = (0..TOTAL)
        .map(|i| {
            let value = format!("{{\"volunteers\":{i},\"note\":\"a typical small JSON record\"}}");
            authors[i % n].put(
                &format!("reports/{}", i % 5_000),
                value.as_bytes(),
                NOW + i as u64,
            )
        })
        .collect();
    let batches = deltas
        .chunks(BATCH)
        .map(|c| c.iter().map(|d| d.as_bytes().to_vec()).collect())
        .collect();
    (r, batches)
}

/// An empty replica on a new sled store (the directory lives as long as it).
fn fresh_replica(roster: &Roster) -> (tempfile::TempDir, Replica<KvStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path(), &Default::default()).unwrap();
    let replica = Replica::open(store, roster.clone(), Limits::default()).unwrap();
    (dir, replica)
}

fn ingest(c: &mut Criterion) {
    let (roster, batches) = fixture();
    let decoded: Vec<Vec<SignedDelta>> = batches
        .iter()
        .map(|b| b.iter().map(|d| SignedDelta::decode(d).unwrap()).collect())
        .collect();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(TOTAL as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    g.bench_function("ceiling_batch_verify_only", |b| {
        b.iter(|| {
            let mut keys = KeyCache::default();
            for batch in &decoded {
                let refs: Vec<&SignedDelta> = batch.iter().collect();
                assert!(keys.verify_deltas(&refs).iter().all(|v| *v));
            }
        })
    });

    g.bench_function("decode_verify_apply_commit_sled", |b| {
        b.iter_batched(
            || fresh_replica(&roster),
            |(dir, mut replica)| {
                for batch in &batches {
                    let report = replica
                        .ingest_encoded(batch.iter().map(Vec::as_slice), "bench", NOW)
                        .unwrap();
                    assert_eq!(report.applied.len(), batch.len());
                }
                (dir, replica)
            },
            BatchSize::PerIteration,
        )
    });
    // The same work split over two cores the way a node does it:
    // admission (decode + checks + batch verify) on one thread, apply and
    // durable commit of the previous batch on the other.
    g.bench_function("pipelined_decode_verify_apply_commit_sled", |b| {
        b.iter_batched(
            || fresh_replica(&roster),
            |(dir, mut replica)| {
                let mut admission = Admission::new(roster.clone(), Limits::default());
                let known = replica.frontier().clone();
                let batches = &batches;
                std::thread::scope(|scope| {
                    let (tx, rx) = std::sync::mpsc::sync_channel(2);
                    scope.spawn(move || {
                        for batch in batches {
                            let admitted =
                                admission.admit(batch.iter().map(Vec::as_slice), &known, NOW);
                            tx.send(admitted).unwrap();
                        }
                    });
                    for admitted in rx {
                        let n = admitted.len();
                        let report = replica.ingest_admitted(admitted, "bench", NOW).unwrap();
                        assert_eq!(report.applied.len(), n);
                    }
                });
                (dir, replica)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);

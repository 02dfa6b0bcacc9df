//! Offline bundles at scale: office-fr's store preloaded with N deltas
//! (about 420 bytes each, as the field's records), exported to a bundle
//! file, imported into HQ's empty store, then imported again.
//!
//! Reports deltas/s for the export, the import and both together (the
//! target: at least 0.75x the loopback catch-up rate, ~37,000/s here),
//! the file's bytes against the deltas' encoded bytes, and the second
//! import, which must store nothing.
//!
//! `cargo bench --bench bundle`. N is `FEDSYNC_BENCH_RECORDS` (default
//! 1,000,000); `FEDSYNC_BENCH_VALUE_BYTES` (default 300) sizes each value.
//! Export and import run in this process through the library calls the
//! `fedsync bundle` commands make, each on a stopped node's store.

#[allow(dead_code)]
mod common;

use std::time::Instant;

use common::env;

use fedsync::bundle::{self, parts, BundleReader, ImportOptions};
use fedsync::config::NodeConfig;
use fedsync::core::Replica;
use fedsync::identity::NodeKey;
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::store::KvStore;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A node's replica on its store, as `fedsync bundle` opens it.
fn open(fed: &LocalFederation, name: &str) -> Replica<KvStore> {
    let config = NodeConfig::load(&fed.config_path(name)).unwrap();
    let store = KvStore::open(&config.data_dir, &config.store_options()).unwrap();
    let limits = config.core_limits();
    Replica::open_signed(store, fed.signed_roster(), limits, now_ms())
        .unwrap()
        .0
}

fn import(fed: &LocalFederation, file: &std::path::Path) -> (bundle::Imported, f64) {
    let mut hq = open(fed, "hq");
    let t = Instant::now();
    let reader = BundleReader::open(parts::PartReader::open(file).unwrap()).unwrap();
    let got = bundle::import(&mut hq, reader, &ImportOptions::at(now_ms())).unwrap();
    hq.store().flush().unwrap();
    (got, t.elapsed().as_secs_f64())
}

fn main() {
    let n = env("FEDSYNC_BENCH_RECORDS", 1_000_000);
    let value_bytes = env("FEDSYNC_BENCH_VALUE_BYTES", 300);
    let tmp = tempfile::tempdir().unwrap();
    let specs = [
        NodeSpec::hq("hq"),
        NodeSpec::region("office-fr", "fr", &["hq"]),
    ];
    let fed = LocalFederation::create(tmp.path(), &specs, "").unwrap();
    let t = Instant::now();
    let encoded = common::preload(&fed, "office-fr", n, value_bytes);
    println!(
        "bundle: {n} deltas, {encoded} bytes encoded ({} per delta), preloaded in {:.0} s",
        encoded / n as u64,
        t.elapsed().as_secs_f64()
    );

    let file = tmp.path().join("fr.fsb");
    let key = NodeKey::load(&fed.dir.join("office-fr/node.key")).unwrap();
    let fr = open(&fed, "office-fr");
    let t = Instant::now();
    let req = bundle::ExportRequest {
        key: key.signing_key(),
        name: "office-fr",
        base: Default::default(),
        roster: fr.signed_roster().map(|s| s.as_bytes().to_vec()),
        created_ms: now_ms(),
        part_bytes: parts::PART_BYTES_DEFAULT,
        chunk_bytes: bundle::CHUNK_TARGET_BYTES,
    };
    let out = parts::PartWriter::create(&file, parts::PART_BYTES_DEFAULT).unwrap();
    let (out, exported) = bundle::export(fr.store(), req, out).unwrap();
    let files = out.finish().unwrap();
    let export_s = t.elapsed().as_secs_f64();
    drop(fr);
    let file_bytes: u64 = files.iter().map(|(_, b)| b).sum();
    assert_eq!(exported.written.deltas, n as u64);

    let (got, import_s) = import(&fed, &file);
    assert_eq!((got.applied, got.refused_total()), (n as u64, 0));
    assert!(got.reached && got.error.is_none());
    let (again, again_s) = import(&fed, &file);
    assert_eq!((again.applied, again.duplicates), (0, n as u64));

    let rate = |s: f64| n as f64 / s;
    println!(
        "  export: {:.0} deltas/s ({export_s:.1} s), {} chunks",
        rate(export_s),
        exported.written.chunks
    );
    println!(
        "  import: {:.0} deltas/s ({import_s:.1} s), {} flushes",
        rate(import_s),
        got.flushes
    );
    println!(
        "  export + import: {:.0} deltas/s ({:.1} s)",
        rate(export_s + import_s),
        export_s + import_s
    );
    println!(
        "  file: {file_bytes} bytes in {} file(s) = {:.2}x the deltas' encoded bytes",
        files.len(),
        file_bytes as f64 / encoded as f64
    );
    println!(
        "  second import: stored nothing ({} duplicates) at {:.0} deltas/s ({again_s:.1} s)",
        again.duplicates,
        rate(again_s)
    );
}

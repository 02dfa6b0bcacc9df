//! Offline bundles end to end with the `fedsync` binary, on the data
//! directories of a local federation: records written at HQ (straight
//! into its store, the node stopped) reach an office by `bundle export`
//! and `bundle import`; a second import stores nothing; a flipped byte
//! is refused; a truncated bundle imports its prefix; split files import;
//! a running node's store is refused in one line; the receipt brings the
//! next export down to what the office lacks; an import killed with
//! SIGKILL resumes without storing anything twice.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fedsync::config::NodeConfig;
use fedsync::core::{DeltaBody, Frontier, Head, HlcClock, Op, Replica, Store};
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::store::KvStore;

const BIN: &str = env!("CARGO_BIN_EXE_fedsync");

fn fedsync(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run fedsync")
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = fedsync(args);
    assert!(
        out.status.success(),
        "fedsync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Fails, with one line on stderr: that line.
fn refused(args: &[&str]) -> String {
    let out = fedsync(args);
    assert!(!out.status.success(), "fedsync {args:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Fed {
    fed: LocalFederation,
    _tmp: tempfile::TempDir,
}

impl Fed {
    fn new() -> Fed {
        let tmp = tempfile::tempdir().unwrap();
        let specs = [
            NodeSpec::hq("hq"),
            NodeSpec::region("office-fr", "fr", &["hq"]),
            NodeSpec::region("office-de", "de", &["hq"]),
        ];
        let mut fed = LocalFederation::create(tmp.path(), &specs, "").unwrap();
        fed.release_ports();
        Fed { fed, _tmp: tmp }
    }

    fn config(&self, name: &str) -> String {
        self.fed.config_path(name).to_str().unwrap().to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.fed.dir.join(name)
    }

    /// Node `name`'s replica on its store, as the node opens it. The
    /// store stays locked until the replica is dropped.
    fn replica(&self, name: &str) -> Replica<KvStore> {
        let config = NodeConfig::load(&self.fed.config_path(name)).unwrap();
        let store = KvStore::open(&config.data_dir, &config.store_options()).unwrap();
        let roster = self.fed.signed_roster();
        Replica::open_signed(store, roster, config.core_limits(), now_ms())
            .unwrap()
            .0
    }

    /// `n` signed writes by `name` in its own space, one durable commit
    /// per thousand (a local write flushes each, which is slow for many).
    fn write(&self, name: &str, from: usize, n: usize) {
        let key = self.fed.node_key(name).unwrap();
        let space = match name {
            "hq" => "hq".to_owned(),
            other => format!("regions/{}", other.trim_start_matches("office-")),
        };
        let mut replica = self.replica(name);
        let mut head = replica.frontier().head(&key.id());
        let mut clock = HlcClock::new();
        let mut done = 0;
        while done < n {
            let batch: Vec<_> = (done..n.min(done + 1_000))
                .map(|i| {
                    let d = DeltaBody {
                        author: key.id(),
                        seq: head.seq + 1,
                        prev: head.hash,
                        hlc: clock.tick(now_ms()),
                        key: format!("{space}/records/{:06}", from + i),
                        op: Op::Put,
                        value: format!("{{\"n\":{}}}", from + i).into_bytes(),
                    }
                    .sign(key.signing_key());
                    head = Head {
                        seq: d.seq(),
                        hash: d.hash(),
                    };
                    d
                })
                .collect();
            done += batch.len();
            let report = replica.ingest(batch, "test", now_ms()).unwrap();
            assert!(report.refused.is_empty(), "{:?}", report.refused);
        }
    }

    fn frontier(&self, name: &str) -> Frontier {
        self.replica(name).frontier().clone()
    }

    /// Every live record at `name`: key and value.
    fn records(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let page = self
            .replica(name)
            .list("", None, 100_000, usize::MAX)
            .unwrap();
        assert!(!page.more);
        (page.records.iter())
            .map(|d| (d.key().to_owned(), d.value().to_vec()))
            .collect()
    }

    fn quarantined(&self, name: &str) -> u64 {
        self.replica(name).store().quarantine(1).unwrap().kept
    }

    fn export(&self, name: &str, out: &Path, what: &[&str]) -> serde_json::Value {
        let (config, out) = (self.config(name), out.to_str().unwrap());
        let mut args = vec![
            "bundle", "export", "--config", &config, "--out", out, "--json",
        ];
        args.extend_from_slice(what);
        ok_json(&args)
    }

    fn import(&self, name: &str, file: &Path) -> serde_json::Value {
        let config = self.config(name);
        ok_json(&[
            "bundle",
            "import",
            "--config",
            &config,
            file.to_str().unwrap(),
            "--json",
        ])
    }
}

#[test]
fn records_travel_by_bundle_and_a_second_import_stores_nothing() {
    let f = Fed::new();
    f.write("hq", 0, 300);
    f.write("office-de", 0, 40);
    // de's writes reach HQ by a bundle of everything de holds...
    let de = f.path("de.fsb");
    let made = f.export("office-de", &de, &["--all"]);
    assert_eq!(made["deltas"], 40);
    assert_eq!(f.import("hq", &de)["applied"], 40);
    // ...and HQ's bundle for office-fr carries both authors.
    let b = f.path("for-fr.fsb");
    let made = f.export("hq", &b, &["--for", "office-fr"]);
    assert_eq!(
        (made["deltas"].as_u64(), made["authors"].as_u64()),
        (Some(340), Some(2))
    );
    let checked = ok_json(&["bundle", "verify", b.to_str().unwrap(), "--json"]);
    assert_eq!(checked["verified"]["complete"], true);
    assert_eq!(checked["verified"]["deltas"], 340);
    let got = f.import("office-fr", &b);
    assert_eq!(
        (
            got["applied"].as_u64(),
            got["refused"].as_object().map(|m| m.len())
        ),
        (Some(340), Some(0))
    );
    assert_eq!(got["reached"], true);
    assert_eq!(f.records("office-fr"), f.records("hq"));
    assert_eq!(f.frontier("office-fr"), f.frontier("hq"));
    // The same bundle again: all duplicates, nothing stored, nothing refused.
    let again = f.import("office-fr", &b);
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(340))
    );
    assert_eq!(f.quarantined("office-fr"), 0);
    // The receipt the import wrote holds fr's frontier.
    let receipt = PathBuf::from(format!("{}.receipt.json", b.display()));
    let r =
        fedsync::bundle::Receipt::from_json(&std::fs::read_to_string(receipt).unwrap()).unwrap();
    assert_eq!(
        (r.node.as_str(), r.frontier),
        ("office-fr", f.frontier("office-fr"))
    );
    // An existing bundle is never written over.
    let config = f.config("hq");
    let err = refused(&[
        "bundle",
        "export",
        "--config",
        &config,
        "--out",
        b.to_str().unwrap(),
        "--all",
    ]);
    assert!(err.contains("exists"), "{err}");
}

#[test]
fn the_receipt_brings_the_next_export_down_to_what_the_office_lacks() {
    let f = Fed::new();
    // Starting an exchange: the office's receipt first.
    let start = f.path("fr-start.json");
    let config = f.config("office-fr");
    ok_json(&[
        "bundle",
        "receipt",
        "--config",
        &config,
        "--out",
        start.to_str().unwrap(),
        "--json",
    ]);
    f.write("hq", 0, 100);
    let first = f.path("one.fsb");
    let since = ["--for", "office-fr", "--since", start.to_str().unwrap()];
    assert_eq!(f.export("hq", &first, &since)["deltas"], 100);
    f.import("office-fr", &first);
    f.write("hq", 100, 25);
    // The receipt the import wrote comes back: only the 25 new ones go.
    let receipt = format!("{}.receipt.json", first.display());
    let second = f.path("two.fsb");
    let made = f.export("hq", &second, &["--since", &receipt]);
    assert_eq!(
        (made["deltas"].as_u64(), made["base_deltas"].as_u64()),
        (Some(25), Some(100))
    );
    let got = f.import("office-fr", &second);
    assert_eq!(
        (got["applied"].as_u64(), got["duplicates"].as_u64()),
        (Some(25), Some(0))
    );
    assert_eq!(f.records("office-fr"), f.records("hq"));
    // A receipt from another office is not taken for this one's.
    let config = f.config("hq");
    let err = refused(&[
        "bundle",
        "export",
        "--config",
        &config,
        "--out",
        f.path("x.fsb").to_str().unwrap(),
        "--for",
        "office-de",
        "--since",
        &receipt,
    ]);
    assert!(err.contains("not \"office-de\""), "{err}");
}

#[test]
fn a_flipped_byte_is_refused_and_a_truncated_bundle_imports_its_prefix() {
    let f = Fed::new();
    f.write("hq", 0, 3_000);
    let b = f.path("b.fsb");
    f.export("hq", &b, &["--all", "--chunk-bytes", "20000"]);
    let bytes = std::fs::read(&b).unwrap();
    // A flipped byte halfway: verify and import both say where, in one line.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let bad = f.path("flipped.fsb");
    std::fs::write(&bad, &flipped).unwrap();
    let err = refused(&["bundle", "verify", bad.to_str().unwrap()]);
    let said = err.contains("is damaged") || err.contains("truncated");
    assert!(said && err.contains("verified prefix"), "{err}");
    let config = f.config("office-fr");
    let err = refused(&[
        "bundle",
        "import",
        "--config",
        &config,
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("imported the verified prefix"), "{err}");
    let after_flip = f.frontier("office-fr").total_deltas();
    assert!(after_flip > 0 && after_flip < 3_000, "{after_flip}");
    // A copy cut short: its prefix imports, the whole later adds the rest.
    let cut = f.path("cut.fsb");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let err = refused(&[
        "bundle",
        "import",
        "--config",
        &config,
        cut.to_str().unwrap(),
    ]);
    assert!(err.contains("truncated"), "{err}");
    let after_cut = f.frontier("office-fr").total_deltas();
    assert!(after_cut > after_flip && after_cut < 3_000, "{after_cut}");
    let got = f.import("office-fr", &b);
    assert_eq!(got["applied"].as_u64(), Some(3_000 - after_cut));
    assert_eq!(got["duplicates"].as_u64(), Some(after_cut));
    assert_eq!(f.records("office-fr"), f.records("hq"));
    assert_eq!(f.quarantined("office-fr"), 0);
    // Not a bundle at all: refused before the store is opened.
    let err = refused(&["bundle", "import", "--config", &config, config.as_str()]);
    assert!(err.contains("not a fedsync bundle"), "{err}");
}

#[test]
fn a_bundle_split_into_files_imports_and_a_missing_part_is_named() {
    let f = Fed::new();
    f.write("hq", 0, 2_000);
    let b = f.path("split.fsb");
    let made = f.export(
        "hq",
        &b,
        &["--all", "--part-bytes", "8192", "--chunk-bytes", "4096"],
    );
    let files = made["files"].as_array().unwrap();
    assert!(files.len() > 3, "{made}");
    assert!(files[..files.len() - 1].iter().all(|p| p["bytes"] == 8192));
    ok_json(&["bundle", "verify", b.to_str().unwrap(), "--json"]);
    // A part lost on the way: the parts before it still import.
    let moved = f.path("part3");
    std::fs::rename(format!("{}.3", b.display()), &moved).unwrap();
    let err = refused(&["bundle", "verify", b.to_str().unwrap()]);
    assert!(err.contains("split.fsb.3 missing?"), "{err}");
    std::fs::rename(&moved, format!("{}.3", b.display())).unwrap();
    let got = f.import("office-fr", &b);
    assert_eq!(got["applied"].as_u64(), Some(2_000));
    assert_eq!(f.records("office-fr"), f.records("hq"));
}

#[test]
fn a_running_node_s_store_is_refused_in_one_line_and_left_alone() {
    let f = Fed::new();
    f.write("hq", 0, 50);
    let b = f.path("b.fsb");
    f.export("hq", &b, &["--all"]);
    let before = f.frontier("office-fr");
    let mut node = Command::new(BIN)
        .args(["run", "--config", &f.config("office-fr")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(node.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let config = f.config("office-fr");
    let err = refused(&["bundle", "import", "--config", &config, b.to_str().unwrap()]);
    assert!(err.contains("is in use: is the node running?"), "{err}");
    assert!(!PathBuf::from(format!("{}.receipt.json", b.display())).exists());
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    node.wait().unwrap();
    assert_eq!(f.frontier("office-fr"), before);
}

#[test]
fn an_import_killed_midway_resumes_without_storing_anything_twice() {
    let f = Fed::new();
    f.write("hq", 0, 40_000);
    let b = f.path("big.fsb");
    f.export("hq", &b, &["--all"]);
    let mut child = Command::new(BIN)
        .args(["--log", "fedsync=info", "bundle", "import"])
        .args(["--config", &f.config("office-fr"), b.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed as soon as its first batch is durable: the rest is lost.
    let log = std::io::BufReader::new(child.stderr.take().unwrap());
    let committed = std::io::BufRead::lines(log)
        .map(Result::unwrap)
        .find(|l| l.contains("bundle batch committed"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(committed.is_some(), "the import logged no batch");
    let held = f.frontier("office-fr").total_deltas();
    assert!(held >= 10_000, "a committed batch was lost: {held}");
    let got = f.import("office-fr", &b);
    assert_eq!(got["applied"].as_u64(), Some(40_000 - held));
    assert_eq!(got["duplicates"].as_u64(), Some(held));
    assert_eq!(f.frontier("office-fr"), f.frontier("hq"));
    assert_eq!(f.quarantined("office-fr"), 0);
    let replica = f.replica("office-fr");
    assert_eq!(replica.store().record_count(), 40_000);
    let hq = f.fed.node_key("hq").unwrap().id();
    assert!(replica.store().delta(&hq, 40_000).unwrap().is_some());
}

//! The `fedsync` binary end to end, as an operator would use it: create a
//! federation, keys and roster with the CLI, run two nodes as processes,
//! put at one and get at the other.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

mod cycle;
#[path = "../common/flood.rs"]
#[allow(dead_code)]
mod flood;
mod refused;
mod reports;
mod tree;
mod values;

const BIN: &str = env!("CARGO_BIN_EXE_fedsync");

fn fedsync(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run fedsync")
}

fn ok(args: &[&str]) -> String {
    let out = fedsync(args);
    assert!(
        out.status.success(),
        "fedsync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// A node process, stopped with SIGTERM when dropped.
struct Running {
    child: Child,
    addr: String,
}

impl Running {
    fn start(config: &Path) -> Running {
        // Debug-level JSON logs to a file beside the config, which the test
        // reads for secrets at the end.
        Running::start_logging(config, "debug")
    }

    /// [`Running::start`], logging what `filter` selects.
    fn start_logging(config: &Path, filter: &str) -> Running {
        let log = std::fs::File::create(config.with_file_name("node.log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .args(["--log", filter, "--log-json"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn fedsync run");
        // The node prints one line once it serves: wait for it, not a timer.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|_| line.contains("listening on"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Running { child, addr }
    }

    /// SIGTERM, then the exit status: a graceful stop exits 0.
    fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().success()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_config(
    dir: &Path,
    name: &str,
    fed: &str,
    peer: Option<(&str, &str)>,
) -> std::path::PathBuf {
    let mut text = format!(
        "name = \"{name}\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         [federation]\nkey = \"{fed}\"\nroster = \"../fed/roster.bin\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    if let Some((peer, addr)) = peer {
        text.push_str(&format!(
            "[[peers]]\nname = \"{peer}\"\naddress = \"{addr}\"\n"
        ));
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Creates a federation under `dir` with the CLI: its key and roster
/// (`fed/`), each node's keys in its own directory, and an operator `alice`
/// (`op/client.toml`). Returns the federation key.
fn federation(dir: &Path, nodes: &[(&str, &str, &str, Option<&str>)]) -> String {
    let d = |p: &str| dir.join(p).to_str().unwrap().to_owned();
    let fed = json(&["federation", "create", "--dir", &d("fed"), "--json"]);
    let fed = fed["federation"].as_str().unwrap().to_owned();
    for (sub, name, _, _) in nodes {
        let made = json(&["node", "init", "--dir", &d(sub), "--name", name, "--json"]);
        assert_eq!(made["id"].as_str().unwrap().len(), 64);
    }
    ok(&[
        "operator",
        "init",
        "--dir",
        &d("op"),
        "--name",
        "alice",
        "--connect",
        "127.0.0.1:1",
        "--federation",
        &fed,
        "--roster",
        &d("fed/roster.bin"),
    ]);
    let signer = [
        "--roster",
        &d("fed/roster.bin"),
        "--federation-key",
        &d("fed/federation.key"),
    ];
    let operator = [("op", "alice", "operator", None)];
    for (sub, name, role, region) in nodes.iter().chain(&operator) {
        let from = d(sub);
        let mut args = vec![
            "roster", "add", "--from", &from, "--name", name, "--role", role,
        ];
        args.extend(signer);
        if let Some(r) = region {
            args.extend(["--region", r]);
        }
        ok(&args);
    }
    fed
}

#[test]
fn put_at_one_node_get_at_another_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_owned();

    let fed = federation(
        tmp.path(),
        &[
            ("hq", "hq", "hq", None),
            ("fr", "office-fr", "region", Some("fr")),
        ],
    );
    let signer = [
        "--roster",
        &d("fed/roster.bin"),
        "--federation-key",
        &d("fed/federation.key"),
    ];
    let shown = json(&[
        "roster",
        "show",
        "--roster",
        &d("fed/roster.bin"),
        "--federation",
        &fed,
        "--json",
    ]);
    assert_eq!(shown["version"], 4);
    assert_eq!(shown["members"].as_array().unwrap().len(), 3);

    let hq = Running::start(&node_config(&tmp.path().join("hq"), "hq", &fed, None));
    let fr = Running::start(&node_config(
        &tmp.path().join("fr"),
        "office-fr",
        &fed,
        Some(("hq", &hq.addr)),
    ));
    let client = d("op/client.toml");

    let put = json(&[
        "put",
        "--client",
        &client,
        "--connect",
        &fr.addr,
        "--json",
        "regions/fr/notes/2026-Q3",
        r#"{"volunteers":12}"#,
    ]);
    assert_eq!(put["seq"], 1);
    let got = json(&[
        "get",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "--wait",
        "30",
        "--json",
        "regions/fr/notes/2026-Q3",
    ]);
    assert_eq!(got["value"], r#"{"volunteers":12}"#);

    // HQ's status: office-fr linked and in sync, its one delta held.
    let status_args = ["status", "--client", &client, "--connect", &hq.addr];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let mut args = status_args.to_vec();
        args.push("--json");
        let s = json(&args);
        if s["peers"][0]["state"] == "in_sync" || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status["name"], "hq");
    assert_eq!(status["serving"], true);
    assert_eq!(status["peers"][0]["name"], "office-fr", "{status}");
    assert_eq!(status["peers"][0]["state"], "in_sync", "{status}");
    assert_eq!(status["peers"][0]["connected"], true);
    assert_eq!(status["totals"]["deltas"], 1);
    assert_eq!(status["totals"]["records"], 1);
    let table = ok(&status_args);
    let row = table.lines().find(|l| l.starts_with("office-fr")).unwrap();
    assert!(row.contains("in_sync") && row.contains("up"), "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");

    // Errors are one line on stderr and a non-zero exit.
    let missing = fedsync(&[
        "get",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "regions/fr/none",
    ]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no record"), "{stderr}");
    // HQ may not write a region's space, whoever asks.
    let refused = fedsync(&[
        "put",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "regions/fr/x",
        "1",
    ]);
    assert!(!refused.status.success());

    // A node stays listed: removing it is refused, revoking it works.
    let mut remove = vec!["roster", "remove", "--name", "office-fr"];
    remove.extend(signer);
    assert!(!fedsync(&remove).status.success());
    let mut revoke = vec!["roster", "revoke", "--name", "office-fr"];
    revoke.extend(signer);
    ok(&revoke);
    let roster_file = d("fed/roster.bin");
    let publish = [
        "roster",
        "publish",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "--roster",
    ];
    let mut args = publish.to_vec();
    args.extend([roster_file.as_str(), "--json"]);
    let published = json(&args);
    assert_eq!(published["adopted"], true, "{published}");
    assert_eq!(
        (
            published["version"].as_u64(),
            published["retracted"].as_u64()
        ),
        (Some(5), Some(1))
    );
    // France's write is retracted at HQ and kept, with the reason, in its
    // quarantine.
    let gone = fedsync(&[
        "get",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "regions/fr/notes/2026-Q3",
    ]);
    assert!(!gone.status.success());
    let q = json(&[
        "quarantine",
        "list",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "--json",
    ]);
    let entry = &q["entries"][0];
    assert_eq!(entry["code"], "retracted", "{q}");
    assert_eq!(entry["key"], "regions/fr/notes/2026-Q3");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("office-fr is revoked"),
        "{q}"
    );
    let table = ok(&[
        "quarantine",
        "list",
        "--client",
        &client,
        "--connect",
        &hq.addr,
    ]);
    assert!(
        table.contains("retracted") && table.contains("1 refused deltas kept"),
        "{table}"
    );
    // Publishing the same version again changes nothing.
    let again = json(&args);
    assert_eq!(again["adopted"], false, "{again}");

    assert!(fr.stop(), "office-fr did not stop cleanly on SIGTERM");
    assert!(hq.stop(), "hq did not stop cleanly on SIGTERM");
    for node in ["hq", "fr"] {
        logs_are_json_and_hold_no_secrets(&tmp.path().join(node));
    }
}

/// Every log line is a JSON object, peer lines carry their peer's span, and
/// neither the node key nor the TLS key appears anywhere.
fn logs_are_json_and_hold_no_secrets(dir: &Path) {
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap();
    assert!(log.lines().count() > 5, "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains(r#""name":"link""#) && l.contains(r#""peer":"#)),
        "a link's lines name their peer: {log}"
    );
    let node_key = std::fs::read_to_string(dir.join("node.key")).unwrap();
    let secret = node_key
        .lines()
        .next_back()
        .unwrap()
        .split(' ')
        .next_back()
        .unwrap();
    assert_eq!(secret.len(), 64);
    assert!(!log.contains(secret), "the node key is in the log");
    let tls_key = std::fs::read_to_string(dir.join("tls.key")).unwrap();
    for line in tls_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "the TLS key is in the log");
    }
}

//! Through the CLI: large values with `put --file` and from standard input
//! (no command line holds them), `list` paging through records whose
//! values together exceed one message, and a node's log under a flood of
//! connections.

use std::io::Write;
use std::process::Stdio;

use super::{federation, fedsync, json, node_config, ok, Running, BIN};
use crate::flood::Flood;

/// A value larger than a command line may be (128 KiB per argument).
const BIG: usize = 1_000_000;

#[test]
fn large_values_go_in_from_a_file_or_stdin_and_list_pages_through_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_owned();
    let fed = federation(tmp.path(), &[("hq", "hq", "hq", None)]);
    let hq = Running::start(&node_config(&tmp.path().join("hq"), "hq", &fed, None));
    let client = d("op/client.toml");
    let conn = ["--client", client.as_str(), "--connect", hq.addr.as_str()];

    for i in 0..4u8 {
        let path = tmp.path().join(format!("value-{i}"));
        std::fs::write(&path, vec![b'a' + i; BIG]).unwrap();
        let key = format!("hq/big/{i}");
        let mut args = vec!["put"];
        args.extend(conn);
        args.extend([key.as_str(), "--file", path.to_str().unwrap()]);
        ok(&args);
    }
    // The fifth from standard input.
    let mut put = std::process::Command::new(BIN)
        .arg("put")
        .args(conn)
        .args(["hq/big/4", "--file", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin.take().unwrap().write_all(&[b'e'; BIG]).unwrap();
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Five values of 1,000,000 bytes exceed one 4 MiB message: the node
    // pages them by bytes, and the CLI follows the pages.
    let mut args = vec!["list"];
    args.extend(conn);
    args.extend(["hq/big/", "--json"]);
    let listed = json(&args);
    let records = listed.as_array().unwrap();
    assert_eq!(records.len(), 5);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["key"], format!("hq/big/{i}"));
        let v = r["value"].as_str().unwrap();
        assert_eq!(v.len(), BIG);
        assert!(v.bytes().all(|b| b == b'a' + i as u8));
    }
    // A value and --file together, or neither, is a usage error.
    let mut both = vec!["put"];
    both.extend(conn);
    both.extend(["hq/x", "1", "--file", "-"]);
    assert!(!fedsync(&both).status.success());
    assert!(hq.stop());
}

#[test]
fn a_flood_of_connections_leaves_the_log_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = federation(tmp.path(), &[("hq", "hq", "hq", None)]);
    let dir = tmp.path().join("hq");
    let hq = Running::start_logging(&node_config(&dir, "hq", &fed, None), "info");
    let addr = hq.addr.parse().unwrap();
    let flood = Flood::start(addr, 300);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(3) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let opened = flood.stop();
    assert!(hq.stop());
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap();
    let lines = log.lines().count();
    let refusals = log.lines().filter(|l| l.contains("refused")).count();
    eprintln!("{opened} connections in 3 s: {lines} log lines, {refusals} about refusals");
    assert!(opened > 1000, "the flood hardly ran: {opened}");
    // One line for the first refusal of each interval and one summary per
    // interval, not one line per connection.
    assert!(refusals >= 1, "{log}");
    assert!(lines < 40, "{lines} lines for {opened} connections:\n{log}");
}

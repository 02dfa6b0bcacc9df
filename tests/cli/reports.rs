//! `fedsync report` end to end: submit at two regions, aggregate at HQ,
//! verify at a region.

use super::{federation, fedsync, node_config, ok, Running, BIN};
use serde_json::json;

/// The report commands end to end: two regions submit (a file, flags, a
/// correction), bad reports are refused with a clear line, HQ aggregates
/// with coverage (table, CSV, the signed JSON), a region verifies it, and
/// a tampered copy fails.
#[test]
fn reports_submitted_at_two_regions_aggregate_at_hq_and_verify_at_a_region() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_owned();
    let fed = federation(
        tmp.path(),
        &[
            ("hq", "hq", "hq", None),
            ("fr", "office-fr", "region", Some("fr")),
            ("ke", "office-ke", "region", Some("ke")),
            ("br", "office-br", "region", Some("br")),
        ],
    );
    let hq = Running::start(&node_config(&tmp.path().join("hq"), "hq", &fed, None));
    let peer = Some(("hq", hq.addr.as_str()));
    let fr = Running::start(&node_config(
        &tmp.path().join("fr"),
        "office-fr",
        &fed,
        peer,
    ));
    let ke = Running::start(&node_config(
        &tmp.path().join("ke"),
        "office-ke",
        &fed,
        peer,
    ));
    // office-br never runs: it never reports and is never heard from.
    let client = d("op/client.toml");
    let report = |addr: &str, args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["report", args[0], "--client", &client, "--connect", addr]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(args[1..].iter().map(|s| s.to_string()));
        v
    };
    let run = |v: &[String]| fedsync(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let run_ok = |v: &[String]| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());

    std::fs::write(
        d("fr-q3.toml"),
        "period = \"2026-Q3\"\nnotes = \"Two new partner schools.\"\n\
         [metrics]\nvolunteers = 120\nevents = 14\n",
    )
    .unwrap();
    let file = d("fr-q3.toml");
    let sub: serde_json::Value = serde_json::from_str(&run_ok(&report(
        &fr.addr,
        &["submit", "--file", &file, "--json"],
    )))
    .unwrap();
    assert_eq!(sub["key"], "regions/fr/reports/2026-Q3");
    assert_eq!(sub["revision"], 1);
    let by_flags = ["submit", "--period", "2026-Q3", "--metric", "volunteers=85"];
    let first = run_ok(&report(
        &ke.addr,
        &[&by_flags[..], &["--metric", "events=9"]].concat(),
    ));
    assert!(first.contains("revision 1"), "{first}");
    let fix = [
        "--metric",
        "volunteers=90",
        "--metric",
        "events=9",
        "--json",
    ];
    let fixed: serde_json::Value = serde_json::from_str(&run_ok(&report(
        &ke.addr,
        &[
            "submit", "--period", "2026-Q3", fix[0], fix[1], fix[2], fix[3], fix[4],
        ],
    )))
    .unwrap();
    assert_eq!(
        (fixed["revision"].as_u64(), fixed["supersedes_seq"].as_u64()),
        (Some(2), Some(1))
    );

    // Bad reports: one clear line, a failed exit, nothing stored.
    for (args, expect) in [
        (
            ["--period", "2026-13", "--metric", "events=1"],
            "neither a month",
        ),
        (
            ["--period", "2026-Q3", "--metric", "dances=1"],
            "unknown metric \"dances\"",
        ),
        (
            ["--period", "2026-Q3", "--metric", "events=-3"],
            "may not be negative",
        ),
        (["--period", "2026-Q3", "--region", "ke"], "not \"ke\""),
    ] {
        let mut v = report(&fr.addr, &["submit"]);
        v.extend(args.iter().map(|s| s.to_string()));
        if args[3] == "ke" {
            v.extend(["--metric".into(), "events=1".into()]);
        }
        let out = run(&v);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expect),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let h = run_ok(&report(
        &fr.addr,
        &["history", "--region", "fr", "--period", "2026-Q3", "--json"],
    ));
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    assert_eq!(h["revisions"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["revisions"][0]["report"]["metrics"]["volunteers"], 120);

    // HQ, once both reports (ke's correction included) have arrived.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let agg_args = report(&hq.addr, &["aggregate", "--period", "2026-Q3", "--json"]);
    let doc = loop {
        let doc = run_ok(&agg_args);
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let regions = v["aggregate"]["regions"].as_array().unwrap().clone();
        let revision = |r: &str| {
            let e = regions.iter().find(|e| e["region"] == r).unwrap();
            e["figures"]["revision"].as_u64()
        };
        if (revision("fr"), revision("ke")) == (Some(1), Some(2)) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{doc}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let agg = &doc["aggregate"];
    assert_eq!(agg["computed_by"], "hq");
    let total = |m: &str| {
        agg["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["metric"] == m)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            total("volunteers")["sum"].as_i64(),
            total("volunteers")["count"].as_u64()
        ),
        (Some(210), Some(2))
    );
    assert_eq!(
        (
            total("events")["min"].as_i64(),
            total("events")["max"].as_i64()
        ),
        (Some(9), Some(14))
    );
    let region = |r: &str| {
        (agg["regions"].as_array().unwrap().iter())
            .find(|e| e["region"] == r)
            .unwrap_or_else(|| panic!("no coverage entry for {r}: {agg}"))
    };
    let br = region("br");
    assert_eq!(
        (br["missing"].as_bool(), br["stale"].as_bool()),
        (Some(true), Some(true))
    );
    let fr_entry = region("fr");
    assert_eq!(
        (fr_entry["missing"].as_bool(), fr_entry["stale"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(fr_entry["frontier"][0]["seq"], 1);

    // 2026-Q3's reports were due 30 days after it (the default schema),
    // on 2026-10-31; these were submitted on today's clock, after that.
    assert_eq!(agg["due_ms"], 1_793_404_800_000u64);
    assert_eq!(fr_entry["timeliness"], "late");
    assert_eq!(br["timeliness"], "overdue");
    let rates = &agg["reporting"]["total"];
    assert_eq!(
        (
            &rates["expected"],
            &rates["received"],
            &rates["reporting_rate"],
            &rates["on_time_rate"]
        ),
        (&json!(3), &json!(2), &json!(66.7), &json!(0.0)),
        "{agg}"
    );
    let late = run_ok(&report(&hq.addr, &["overdue", "--period", "2026-Q3"]));
    assert!(
        late.contains("2026-Q3 reports were due 2026-10-31 00:00 UTC"),
        "{late}"
    );
    let row = |name: &str| {
        late.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}: {late}"))
            .to_owned()
    };
    assert!(row("br ").contains("overdue"), "{late}");
    assert!(
        row("fr ").contains("late") && row("ke ").contains("late"),
        "{late}"
    );
    assert!(
        late.contains("2 of 3 received (66.7%), 0 on time (0.0%)"),
        "{late}"
    );
    let late: serde_json::Value = serde_json::from_str(&run_ok(&report(
        &hq.addr,
        &["overdue", "--period", "2026-Q3", "--json"],
    )))
    .unwrap();
    assert_eq!(late["late"].as_array().unwrap().len(), 3, "{late}");

    let saved = d("aggregate.json");
    let table = run_ok(&report(
        &hq.addr,
        &[
            "aggregate",
            "--period",
            "2026-Q3",
            "--by",
            "region",
            "--out",
            &saved,
        ],
    ));
    assert!(table.contains("missing: br; stale: br"), "{table}");
    let fr_row = table.lines().find(|l| l.starts_with("fr ")).unwrap();
    assert!(fr_row.contains("120") && fr_row.contains("14"), "{table}");
    let csv = run_ok(&report(
        &hq.addr,
        &[
            "aggregate",
            "--period",
            "2026-Q3",
            "--by",
            "region",
            "--csv",
        ],
    ));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "scope,metric,count,sum,min,max,status,stale,last_contact_ms,frontier,timeliness,first_submitted_ms,first_held_ms,rule,value,category"
    );
    assert!(
        lines.contains(&"total,volunteers,2,210,90,120,,,,,,,,sum,210,"),
        "{csv}"
    );
    assert!(
        lines.contains(&"ke,volunteers,1,90,90,90,,,,,,,,sum,90,"),
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("br,,,,,,missing,true,,")),
        "{csv}"
    );

    // France verifies HQ's document against its own log; so does Kenya.
    let verified = run_ok(&report(&fr.addr, &["verify", &saved]));
    assert!(
        verified.contains("verified:") && !verified.contains("FAIL"),
        "{verified}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(&report(&ke.addr, &["verify", &saved, "--json"]))).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["region"].as_str()),
        (Some(true), Some("ke")),
        "{v}"
    );

    // One figure changed in the file: verification fails, and says why.
    let text = std::fs::read_to_string(&saved).unwrap();
    let tampered = text.replace(r#""volunteers":120"#, r#""volunteers":121"#);
    assert_ne!(text, tampered);
    std::fs::write(&saved, tampered).unwrap();
    let out = run(&report(&fr.addr, &["verify", &saved]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("signature does not match"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match this node's log"));

    // A plain put cannot forge a report around the checks.
    let put = fedsync(&[
        "put",
        "--client",
        &client,
        "--connect",
        &fr.addr,
        "regions/fr/reports/2026-Q4",
        "{}",
    ]);
    assert!(!put.status.success());
    assert!(String::from_utf8_lossy(&put.stderr).contains("fedsync report submit"));

    // Another period's report as JSON on standard input.
    let mut piped = std::process::Command::new(BIN)
        .args(report(&fr.addr, &["submit", "--file", "-", "--json"]))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let json = r#"{"period": "2026-Q2", "metrics": {"volunteers": 101, "events": 3}}"#;
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), json.as_bytes()).unwrap();
    let out = piped.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q2: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(q2["key"], "regions/fr/reports/2026-Q2");

    assert!(
        ke.stop() && fr.stop() && hq.stop(),
        "a node did not stop cleanly"
    );
}

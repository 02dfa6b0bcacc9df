//! The reporting cycle end to end, as operators run it: HQ publishes a
//! schema with a breakdown, a rule and deadlines; a region and its unit
//! submit; the region approves the unit's report and HQ the region's; the
//! approved report is locked; HQ aggregates the approved reports, the
//! unit and the region verify it, and the export read back from Parquet,
//! CSV and JSON lines equals the aggregate. With `FEDSYNC_EXPORT_DIR` set
//! the files and the signed document are kept there, for
//! `scripts/check-export.sh` to read with DuckDB and pyarrow.

use std::time::{Duration, Instant};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;

use super::{federation, fedsync, node_config, ok, Running};

const PERIOD: &str = "2026-Q3";

const SCHEMA: &str = r#"version = 2

[due]
month_days = 15
quarter_days = 30

[[metrics]]
name = "volunteers"
description = "people who volunteered"

[[metrics.categories]]
name = "sex"
options = ["female", "male"]

[[metrics]]
name = "events"

[[metrics]]
name = "satisfaction"
aggregate = "avg"
"#;

/// Polls `check` until it returns `Some`, for up to 30 s.
fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn submit_approve_aggregate_verify_and_export_a_period() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_owned();
    let fed = federation(
        tmp.path(),
        &[
            ("hq", "hq", "hq", None),
            ("fr", "office-fr", "region", Some("fr")),
            ("ke", "office-ke", "region", Some("ke")),
        ],
    );
    ok(&["node", "init", "--dir", &d("a"), "--name", "centre-a"]);
    ok(&[
        "roster",
        "add",
        "--from",
        &d("a"),
        "--name",
        "centre-a",
        "--role",
        "unit",
        "--unit",
        "a",
        "--region",
        "fr",
        "--roster",
        &d("fed/roster.bin"),
        "--federation-key",
        &d("fed/federation.key"),
    ]);
    let start = |dir: &str, name: &str, peer: Option<(&str, &str)>| {
        Running::start(&node_config(&tmp.path().join(dir), name, &fed, peer))
    };
    let hq = start("hq", "hq", None);
    let fr = start("fr", "office-fr", Some(("hq", &hq.addr)));
    let ke = start("ke", "office-ke", Some(("hq", &hq.addr)));
    let a = start("a", "centre-a", Some(("office-fr", &fr.addr)));
    let client = d("op/client.toml");
    let cmd = |addr: &str, args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["report", args[0], "--client", &client, "--connect", addr]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(args[1..].iter().map(|s| s.to_string()));
        v
    };
    let run = |addr: &str, args: &[&str]| {
        fedsync(
            &cmd(addr, args)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    };
    let run_ok = |addr: &str, args: &[&str]| {
        ok(&cmd(addr, args)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>())
    };
    let run_json =
        |addr: &str, args: &[&str]| -> Value { serde_json::from_str(&run_ok(addr, args)).unwrap() };
    let stderr = |addr: &str, args: &[&str]| {
        let out = run(addr, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // HQ publishes the schema; it reaches the unit through its region.
    std::fs::write(d("schema.toml"), SCHEMA).unwrap();
    run_ok(&hq.addr, &["schema", "--publish", &d("schema.toml")]);
    until("the schema at centre-a", || {
        (run_json(&a.addr, &["schema", "--json"])["version"] == 2).then_some(())
    });
    assert!(
        stderr(&hq.addr, &["schema", "--publish", &d("schema.toml")])
            .contains("is not after the schema in force")
    );

    // Submissions, one with a total its categories do not make.
    let submit = |addr: &str, figures: &[&str]| {
        let mut args = vec!["submit", "--period", PERIOD];
        for f in figures {
            args.extend([
                if f.contains('[') {
                    "--category"
                } else {
                    "--metric"
                },
                f,
            ]);
        }
        run(addr, &args)
    };
    let refused = submit(
        &ke.addr,
        &[
            "volunteers=3",
            "volunteers[sex=female]=1",
            "volunteers[sex=male]=1",
        ],
    );
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("volunteers is stated as 3, but the sum of its categories is 2"));
    for (node, figures) in [
        (
            &fr.addr,
            [
                "events=4",
                "satisfaction=4",
                "volunteers[sex=female]=10",
                "volunteers[sex=male]=5",
            ],
        ),
        (
            &a.addr,
            [
                "events=2",
                "satisfaction=5",
                "volunteers[sex=female]=3",
                "volunteers[sex=male]=4",
            ],
        ),
        (
            &ke.addr,
            [
                "events=7",
                "satisfaction=3",
                "volunteers[sex=female]=1",
                "volunteers[sex=male]=1",
            ],
        ),
    ] {
        let out = submit(node, &figures);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let received = |addr: &str, n: u64| {
        until("the reports", || {
            let agg = run_json(addr, &["aggregate", "--period", PERIOD, "--json"]);
            (agg["aggregate"]["reporting"]["total"]["received"] == n).then_some(agg)
        })
    };
    received(&hq.addr, 3);
    received(&fr.addr, 2);

    // Approvals, level by level; the wrong level is refused.
    assert!(
        stderr(&fr.addr, &["approve", "--period", PERIOD, "--region", "fr"])
            .contains("approved by HQ")
    );
    assert!(
        stderr(&hq.addr, &["approve", "--period", PERIOD, "--unit", "a"])
            .contains("approved by region fr's nodes")
    );
    let approved = run_json(
        &fr.addr,
        &[
            "approve",
            "--period",
            PERIOD,
            "--unit",
            "a",
            "--revision",
            "1",
            "--json",
        ],
    );
    assert_eq!(
        (
            approved["approved"].as_bool(),
            approved["report"]["revision"].as_u64()
        ),
        (Some(true), Some(1))
    );
    run_ok(&hq.addr, &["approve", "--period", PERIOD, "--region", "fr"]);

    // The unit, once it holds the approval, is locked.
    let state = |addr: &str, label: &str| -> Value {
        let agg = run_json(addr, &["aggregate", "--period", PERIOD, "--all", "--json"]);
        let e = agg["aggregate"]["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                (e["unit"]
                    .as_str()
                    .map(|u| format!("{}/{u}", e["region"].as_str().unwrap())))
                .unwrap_or_else(|| e["region"].as_str().unwrap().to_owned())
                    == label
            })
            .cloned()
            .unwrap();
        e["approval"]["state"].clone()
    };
    until("the approval at centre-a", || {
        (state(&a.addr, "fr/a") == "approved").then_some(())
    });
    let locked = submit(&a.addr, &["events=20"]);
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("unit a's report for 2026-Q3 is locked")
    );

    // HQ's aggregate of approved reports: fr and its unit, not ke.
    until("both approvals at hq", || {
        (state(&hq.addr, "fr/a") == "approved").then_some(())
    });
    let doc = d("approved.json");
    let table = run_ok(
        &hq.addr,
        &[
            "aggregate",
            "--period",
            PERIOD,
            "--approved",
            "--out",
            &doc,
            "--by",
            "unit",
        ],
    );
    assert!(table.contains("approved reports only"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ke ") && l.contains("UNAPPROVED")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("sex=female") || l.contains("volunteers           sex=female")),
        "{table}"
    );
    let agg: Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    let agg = &agg["aggregate"];
    let total = |m: &str| {
        agg["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["metric"] == m)
            .unwrap()
            .clone()
    };
    assert_eq!(total("volunteers")["value"], 22);
    assert_eq!(
        total("volunteers")["categories"][0]["category"],
        "sex=female"
    );
    assert_eq!(total("volunteers")["categories"][0]["value"], 13);
    assert_eq!(total("events")["value"], 6);
    assert_eq!(total("satisfaction")["value"], 4.5);
    assert_eq!(agg["reporting"]["total"]["approved"], 2);
    for (addr, part) in [(&a.addr, "unit a"), (&fr.addr, "region fr")] {
        let out = run_ok(addr, &["verify", &doc]);
        assert!(
            out.contains("verified:")
                && !out.contains("FAIL")
                && out.contains("as the aggregate says"),
            "{part}: {out}"
        );
    }

    // HQ publishes it; each office sees whether its report is in.
    run_ok(
        &hq.addr,
        &["aggregate", "--period", PERIOD, "--approved", "--publish"],
    );
    let receipt = |addr: &str| -> Value {
        until("HQ's published aggregate", || {
            let r = run_json(addr, &["status", "--period", PERIOD, "--json"]);
            let newest = r["receipts"][0].clone();
            (!newest["in_aggregate"].is_null()).then_some(newest)
        })
    };
    // The region links to HQ: held since HQ confirmed it.
    let at_fr = receipt(&fr.addr);
    assert_eq!(
        (&at_fr["at_hq"]["state"], &at_fr["at_hq"]["by"]),
        (&Value::from("held"), &Value::from("hq")),
        "{at_fr}"
    );
    assert!(at_fr["at_hq"]["since_ms"].is_u64(), "{at_fr}");
    assert_eq!(
        (
            &at_fr["in_aggregate"]["status"],
            &at_fr["in_aggregate"]["approved"]
        ),
        (&Value::from("counted"), &Value::from(true))
    );
    // The unit does not: HQ's signed aggregate is its evidence.
    let at_a = receipt(&a.addr);
    assert_eq!(at_a["at_hq"]["state"], "covered", "{at_a}");
    assert_eq!(at_a["in_aggregate"]["status"], "counted");
    // Kenya's is held but not counted: it is not approved.
    let at_ke = receipt(&ke.addr);
    assert_eq!(
        (
            &at_ke["in_aggregate"]["status"],
            &at_ke["in_aggregate"]["why"]
        ),
        (&Value::from("not counted"), &Value::from("not approved")),
        "{at_ke}"
    );
    let table = run_ok(&a.addr, &["status"]);
    assert!(
        table.contains("held by hq by") && table.contains("counted, approved (signed by hq"),
        "{table}"
    );

    // The export, read back: every row names a report the document
    // counted, and the rows add up to its totals.
    let counted: Vec<(String, u64)> = agg["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["figures"].is_null())
        .map(|e| {
            (
                e["report"]["hash"].as_str().unwrap().to_owned(),
                e["report"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counted.len(), 2);
    let keep = std::env::var_os("FEDSYNC_EXPORT_DIR");
    let out_dir = keep
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&out_dir).unwrap();
    for format in ["parquet", "csv", "json"] {
        let file = out_dir.join(format!("export.{format}"));
        let said = run_json(
            &hq.addr,
            &[
                "export",
                "--period",
                PERIOD,
                "--approved",
                "--format",
                format,
                "--out",
                file.to_str().unwrap(),
                "--document",
                out_dir.join("aggregate.json").to_str().unwrap(),
                "--json",
            ],
        );
        // Per counted report: 3 totals and 2 categories of volunteers.
        assert_eq!(said["rows"], 10, "{said}");
    }
    let reader =
        SerializedFileReader::new(std::fs::File::open(out_dir.join("export.parquet")).unwrap())
            .unwrap();
    let mut volunteers = 0;
    let mut female = 0;
    let mut rows = 0;
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let get = |name: &str| {
            row.get_column_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| f.clone())
                .unwrap()
        };
        let (Field::Str(metric), Field::Long(value), Field::Str(hash), Field::Long(seq)) =
            (get("metric"), get("value"), get("hash"), get("seq"))
        else {
            panic!("unexpected column types: {row}");
        };
        assert!(counted.contains(&(hash, seq as u64)), "{row}");
        match (metric.as_str(), get("category")) {
            ("volunteers", Field::Null) => volunteers += value,
            ("volunteers", Field::Str(c)) if c == "sex=female" => female += value,
            _ => {}
        }
        rows += 1;
    }
    assert_eq!((rows, volunteers, female), (10, 22, 13));
    let csv = std::fs::read_to_string(out_dir.join("export.csv")).unwrap();
    assert_eq!(csv.lines().count(), 11);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("2026-Q3,fr,a,volunteers,sex=male,4,1,")),
        "{csv}"
    );

    // Withdrawn from above, the unit may submit again.
    run_ok(
        &fr.addr,
        &["approve", "--period", PERIOD, "--unit", "a", "--withdraw"],
    );
    until("the withdrawal at centre-a", || {
        (state(&a.addr, "fr/a") == "withdrawn").then_some(())
    });
    let again = submit(
        &a.addr,
        &[
            "events=3",
            "volunteers[sex=female]=3",
            "volunteers[sex=male]=4",
        ],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    assert!(
        a.stop() && ke.stop() && fr.stop() && hq.stop(),
        "a node did not stop cleanly"
    );
}

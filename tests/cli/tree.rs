//! The organisation's tree with the CLI: units added below a region and
//! below another unit, the tree printed, a unit moved, and changes that
//! would break the tree refused with the roster file untouched.

use super::{federation, fedsync, json, ok};

#[test]
fn units_join_move_and_print_as_a_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_owned();
    let fed = federation(
        tmp.path(),
        &[
            ("hq", "hq", "hq", None),
            ("altai", "office-altai", "region", Some("ru-altai")),
            ("kem", "office-kem", "region", Some("ru-kem")),
        ],
    );
    let signer = [
        "--roster".to_owned(),
        d("fed/roster.bin"),
        "--federation-key".to_owned(),
        d("fed/federation.key"),
    ];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(signer.iter().map(String::as_str));
        fedsync(&all)
    };
    let add = |dir: &str, name: &str, place: &[&str]| {
        ok(&["node", "init", "--dir", &d(dir), "--name", name]);
        let from = d(dir);
        let mut args = vec![
            "roster", "add", "--from", &from, "--name", name, "--role", "unit",
        ];
        args.extend(place);
        let out = run(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        add(
            "aleysk",
            "centre-aleysk",
            &["--unit", "aleysk", "--region", "ru-altai"]
        )
        .0
    );
    assert!(
        add(
            "north",
            "centre-north",
            &["--unit", "north", "--parent-unit", "aleysk"]
        )
        .0
    );

    let tree = |fed: &str| {
        json(&[
            "roster",
            "tree",
            "--roster",
            &d("fed/roster.bin"),
            "--federation",
            fed,
            "--json",
        ])
    };
    let t = tree(&fed);
    let altai = &t["regions"][0];
    assert_eq!(altai["region"], "ru-altai");
    assert_eq!(altai["nodes"][0], "office-altai");
    assert_eq!(altai["units"][0]["unit"], "aleysk");
    assert_eq!(altai["units"][0]["nodes"][0], "centre-aleysk");
    assert_eq!(altai["units"][0]["units"][0]["nodes"][0], "centre-north");
    let text = ok(&[
        "roster",
        "tree",
        "--roster",
        &d("fed/roster.bin"),
        "--federation",
        &fed,
    ]);
    assert!(
        text.contains("    aleysk: centre-aleysk\n      north: centre-north\n"),
        "{text}"
    );

    // Refused, each with its reason, and the roster file unchanged.
    let before = std::fs::read(d("fed/roster.bin")).unwrap();
    let (done, why) = add("lost", "centre-lost", &["--unit", "lost"]);
    assert!(!done && why.contains("not in the tree yet"), "{why}");
    let (done, why) = add("odd", "centre-odd", &["--region", "ru-altai"]);
    assert!(!done && why.contains("needs --unit"), "{why}");
    let out = run(&[
        "roster",
        "move-unit",
        "--unit",
        "aleysk",
        "--parent-unit",
        "north",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("below it"));
    assert_eq!(std::fs::read(d("fed/roster.bin")).unwrap(), before);

    // A move keeps the unit's nodes and children with it.
    assert!(run(&[
        "roster",
        "move-unit",
        "--unit",
        "aleysk",
        "--region",
        "ru-kem"
    ])
    .status
    .success());
    let t = tree(&fed);
    let kem = &t["regions"][1];
    assert_eq!(kem["region"], "ru-kem");
    assert_eq!(kem["units"][0]["units"][0]["unit"], "north");
    assert_eq!(t["regions"][0]["units"], serde_json::json!([]));
}

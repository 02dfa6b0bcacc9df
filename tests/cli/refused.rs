//! A start refused for its key files or its roster leaves the data
//! directory byte for byte as it was: for a store the operator keeps as
//! evidence, opening it to then refuse would already have changed it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{federation, fedsync, node_config, ok, Running};

/// Every file under `dir`, by path, with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// `fedsync run` on `config` must fail, with `expect` in its one-line error.
fn refused(config: &Path, expect: &str) {
    let out = fedsync(&["run", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(err.contains(expect), "{expect:?} not in {err:?}");
}

#[test]
fn a_refused_start_leaves_the_data_directory_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).to_str().unwrap().to_owned();
    let fed = federation(tmp.path(), &[("hq", "hq", "hq", None)]);
    let config = node_config(&tmp.path().join("hq"), "hq", &fed, None);
    let hq = Running::start(&config);
    let client = d("op/client.toml");
    ok(&[
        "put",
        "--client",
        &client,
        "--connect",
        &hq.addr,
        "hq/a",
        "1",
    ]);
    assert!(hq.stop());
    let data = tmp.path().join("hq/data");
    let before = contents(&data);
    assert!(before.len() > 1, "a store was written: {:?}", before.keys());

    // A node key others may read.
    let key = tmp.path().join("hq/node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&config, "node.key");
    assert!(contents(&data) == before, "the store changed");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A roster cut short.
    let roster = tmp.path().join("fed/roster.bin");
    let whole = std::fs::read(&roster).unwrap();
    std::fs::write(&roster, &whole[..whole.len() / 2]).unwrap();
    refused(&config, "roster");
    assert!(contents(&data) == before, "the store changed");

    // Put back, the node starts and still holds its record.
    std::fs::write(&roster, &whole).unwrap();
    let hq = Running::start(&config);
    let got = ok(&["get", "--client", &client, "--connect", &hq.addr, "hq/a"]);
    assert_eq!(got.trim(), "1");
    assert!(hq.stop());
}

//! What the benchmarks share: a store preloaded with one author's signed
//! deltas, written before its node starts, and `fedsync run` processes
//! (`process.rs`).

pub mod process;

/// The environment variable `name` parsed, or `default` when it is unset
/// or does not parse: how every bench takes its sizes.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the node `c` is connected to holds.
pub async fn frontier(c: &mut fedsync::client::Client) -> fedsync::core::Frontier {
    c.frontier().await.unwrap().3
}

use fedsync::core::{DeltaBody, DeltaHash, Head, HlcClock, Op, Replica};
use fedsync::identity::NodeKey;
use fedsync::local::LocalFederation;
use fedsync::store::KvStore;

/// Signs `n` deltas as `author` (a region node of `fed`) straight into its
/// store (opened as its config says), each with a JSON value of about
/// `value_bytes`: a few fields and a note of hex digits, which compresses
/// about as well as real records' text does (to about half). Returns their
/// total encoded size.
pub fn preload(fed: &LocalFederation, author: &str, n: usize, value_bytes: usize) -> u64 {
    let dir = fed.dir.join(author);
    let key = NodeKey::load(&dir.join("node.key")).unwrap();
    let roster = fed.signed_roster();
    let region = roster
        .roster()
        .by_name(author)
        .and_then(|m| m.region.clone())
        .expect("a region node");
    let config = fedsync::config::NodeConfig::load(&fed.config_path(author)).unwrap();
    let store = KvStore::open(&config.data_dir, &config.store_options()).unwrap();
    let mut replica = Replica::open(store, roster.roster().clone(), Default::default()).unwrap();
    let (mut head, mut clock) = (Head::default(), HlcClock::new());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let note_len = value_bytes.saturating_sub(48);
    let mut bytes = 0u64;
    let mut done = 0;
    while done < n {
        let chunk: Vec<_> = (done..n.min(done + 10_000))
            .map(|i| {
                let body = DeltaBody {
                    author: key.id(),
                    seq: head.seq + 1,
                    prev: if head.seq == 0 {
                        DeltaHash::GENESIS
                    } else {
                        head.hash
                    },
                    hlc: clock.tick(now),
                    key: format!("regions/{region}/records/{i:08}"),
                    op: Op::Put,
                    value: format!(
                        "{{\"volunteers\":{i},\"note\":\"a typical record {}\"}}",
                        note(i, note_len)
                    )
                    .into_bytes(),
                };
                let d = body.sign(key.signing_key());
                head = Head {
                    seq: d.seq(),
                    hash: d.hash(),
                };
                bytes += d.as_bytes().len() as u64;
                d
            })
            .collect();
        done += chunk.len();
        let report = replica.ingest(chunk, "bench", now).unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused[0]);
    }
    replica.store().flush().unwrap();
    bytes
}

/// `len` hex digits that differ from record to record.
fn note(i: usize, len: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut out = String::with_capacity(len + 64);
    let mut block = Sha256::digest(i.to_be_bytes());
    while out.len() < len {
        out.push_str(&hex::encode(block));
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

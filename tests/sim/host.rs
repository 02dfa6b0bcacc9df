//! What runs on each simulated host: a real node (the same
//! `node::start_in` a process runs, over the real store layout on a
//! [`MemKv`] disk) on turmoil's network and a skewable clock, and the
//! client that writes to it and records what was acknowledged.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedsync::config::NodeConfig;
use fedsync::core::Op;
use fedsync::local::{LocalFederation, NodeSpec};
use fedsync::node::env::{BoxFuture, BoxIo};
use fedsync::node::{self, Blocking, Clock, Env, Listener, Network, Setup};
use fedsync::store::{KvStore, MemKv};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{Dump, History};

/// Hub and spoke around `hq`, plus one mesh link (`office-fr` dials
/// `office-ke`): name, region, peers dialled.
pub const NODES: [(&str, Option<&str>, &[&str]); 5] = [
    ("hq", None, &[]),
    ("office-fr", Some("fr"), &["hq", "office-ke"]),
    ("office-ke", Some("ke"), &["hq"]),
    ("office-br", Some("br"), &["hq"]),
    ("office-in", Some("in"), &["hq"]),
];
pub const PORT: u16 = 7100;
/// Simulated time from the final heal within which every node must hold
/// the same data.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
/// Unix time at the start of every run (2026-01-01).
const EPOCH_MS: i64 = 1_767_225_600_000;

/// Timing tuned for the simulation: quick redial and keepalive, so that a
/// link cut without a word is noticed within seconds.
const SIM_CONFIG: &str = "[sync]\nanti_entropy_secs = 5\nreconnect_min_ms = 100\n\
    reconnect_max_ms = 2000\nconnect_timeout_secs = 2\nkeepalive_secs = 1\n\
    keepalive_timeout_secs = 2\n";

/// The federation's keys and configs, the same for every seed.
pub struct Federation {
    _dir: tempfile::TempDir,
    pub configs: Vec<NodeConfig>,
    pub ids: Vec<fedsync::core::NodeId>,
}

impl Federation {
    pub fn create() -> Federation {
        let dir = tempfile::tempdir().expect("temp dir");
        let specs: Vec<NodeSpec> = NODES
            .iter()
            .map(|(name, region, peers)| match region {
                None => NodeSpec::hq(name),
                Some(r) => NodeSpec::region(name, r, peers),
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let fed = LocalFederation::create_from(dir.path(), &specs, SIM_CONFIG, &mut rng)
            .expect("federation");
        let configs = NODES
            .iter()
            .map(|(name, _, _)| {
                let mut c = NodeConfig::load(&fed.config_path(name)).expect("config");
                c.listen = SocketAddr::from(([0, 0, 0, 0], PORT));
                c.admin.enabled = false;
                for p in &mut c.peers {
                    p.address = format!("{}:{PORT}", p.name);
                }
                c
            })
            .collect();
        let ids = (NODES.iter())
            .map(|(name, _, _)| fed.node_key(name).expect("node key").id())
            .collect();
        Federation {
            _dir: dir,
            configs,
            ids,
        }
    }
}

/// A node's wall clock: simulated time, plus an offset faults change.
pub struct SimClock {
    pub offset_ms: AtomicI64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
        (EPOCH_MS + elapsed + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }
}

/// The disk a run's nodes get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disk {
    /// Flushes when asked: what the store needs.
    Honest,
    /// Never makes anything durable: the bug a store that skipped its
    /// flush would have. The checker must catch it.
    SkipsFlush,
}

/// A [`MemKv`] whose flush does nothing.
struct SkipsFlush(MemKv);

impl fedsync::store::Kv for SkipsFlush {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, fedsync::store::StoreError> {
        self.0.get(key)
    }
    fn scan(
        &self,
        from: std::ops::Bound<Vec<u8>>,
        to: std::ops::Bound<Vec<u8>>,
        rev: bool,
    ) -> fedsync::store::kv::Entries<'_> {
        self.0.scan(from, to, rev)
    }
    fn apply(&self, batch: fedsync::store::Batch) -> Result<(), fedsync::store::StoreError> {
        self.0.apply(batch)
    }
    fn flush(&self) -> Result<(), fedsync::store::StoreError> {
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64, fedsync::store::StoreError> {
        self.0.size_on_disk()
    }
    // Nothing is durable, the mark included.
    fn read_mark(&self) -> Result<Option<Vec<u8>>, fedsync::store::StoreError> {
        Ok(None)
    }
    fn write_mark(&self, _: &[u8]) -> Result<(), fedsync::store::StoreError> {
        Ok(())
    }
}

struct SimNet;

impl Network for SimNet {
    fn connect(&self, address: String) -> BoxFuture<'static, io::Result<BoxIo>> {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect(address).await?;
            Ok(Box::new(s) as BoxIo)
        })
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let (s, remote) = self.0.accept().await?;
            Ok((Box::new(s) as BoxIo, remote))
        })
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Clients write; faults happen.
    Faults,
    /// Everything healed; nodes report their frontier digest.
    Heal,
    /// Converged: nodes report everything they hold.
    Dump,
}

/// What the hosts and the driver share (one thread: `Rc`).
pub struct Shared {
    pub seed: u64,
    pub ids: Vec<fedsync::core::NodeId>,
    pub disk: Disk,
    pub configs: Vec<NodeConfig>,
    pub disks: Vec<MemKv>,
    pub clocks: Vec<Arc<SimClock>>,
    pub phase: Cell<Phase>,
    pub history: RefCell<History>,
    /// Per node: the next key number (kept across restarts).
    pub next_key: RefCell<Vec<u64>>,
    pub incarnation: RefCell<Vec<u64>>,
    /// Per node: start the next incarnation with `--rebuild`.
    pub rebuild: RefCell<Vec<bool>>,
    /// Per node: its frontier digest, while running in the heal phase.
    pub digests: RefCell<Vec<Option<String>>>,
    pub dumps: RefCell<Vec<Option<Dump>>>,
}

pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

pub async fn run_node(i: usize, sh: Rc<Shared>) -> turmoil::Result {
    let incarnation = {
        let mut inc = sh.incarnation.borrow_mut();
        inc[i] += 1;
        inc[i]
    };
    let node = match start(i, &sh, incarnation).await {
        Ok(node) => node,
        // A disk that fails while the node starts takes it down, as it
        // would a process: the driver crashes and restarts it.
        Err(_) if sh.disks[i].has_failed() => std::future::pending().await,
        Err(e) => return Err(e),
    };
    let mut rng = StdRng::seed_from_u64(mix(sh.seed, 100 + i as u64, incarnation));
    let prefix = match NODES[i].1 {
        None => "hq/sim".to_string(),
        Some(r) => format!("regions/{r}/sim"),
    };
    loop {
        match sh.phase.get() {
            Phase::Faults => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..400))).await;
                write_once(i, &sh, &node, &prefix, &mut rng).await;
            }
            Phase::Heal => {
                let f = node.frontier().borrow().clone();
                let heads: Vec<String> = (f.iter())
                    .map(|(a, h)| {
                        let who = sh
                            .ids
                            .iter()
                            .position(|id| id == a)
                            .map_or("?", |n| NODES[n].0);
                        format!("{who}:{}", h.seq)
                    })
                    .collect();
                sh.digests.borrow_mut()[i] = Some(format!("{} [{}]", f.digest(), heads.join(" ")));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Phase::Dump => {
                if sh.dumps.borrow()[i].is_none() {
                    let dump = dump(&node, NODES[i].0).await?;
                    sh.dumps.borrow_mut()[i] = Some(dump);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn start(
    i: usize,
    sh: &Shared,
    incarnation: u64,
) -> Result<node::NodeHandle, Box<dyn std::error::Error>> {
    let config = sh.configs[i].clone();
    let kv: Arc<dyn fedsync::store::Kv> = match sh.disk {
        Disk::Honest => Arc::new(sh.disks[i].clone()),
        Disk::SkipsFlush => Arc::new(SkipsFlush(sh.disks[i].clone())),
    };
    let store = KvStore::on(kv, config.limits.quarantine_max)?;
    let mut setup = Setup::load_with(config.clone(), store)?;
    // The operator runs `--rebuild` until a start succeeds; from then on
    // the store's marker carries the rebuild across restarts.
    setup.rebuild = sh.rebuild.borrow()[i];
    // Besides the peers it dials, a node waits for those that dial it.
    setup.rebuild_from = (NODES.iter())
        .filter(|(_, _, peers)| peers.contains(&NODES[i].0))
        .map(|(name, _, _)| name.to_string())
        .filter(|_| !NODES[i].2.is_empty())
        .collect();
    let listener = turmoil::net::TcpListener::bind(config.listen).await?;
    let env = Env {
        clock: sh.clocks[i].clone(),
        net: Arc::new(SimNet),
        blocking: Blocking::Inline,
        seed: Some(mix(sh.seed, i as u64, incarnation)),
    };
    let node = node::start_in(setup, Box::new(SimListener(listener)), env)?;
    sh.rebuild.borrow_mut()[i] = false;
    Ok(node)
}

/// One client operation at node `i`: mostly a new put, sometimes a delete
/// of one of the node's acknowledged puts. Recorded before it is sent and
/// again once acknowledged; a crash in between leaves it unanswered.
async fn write_once(
    i: usize,
    sh: &Shared,
    node: &node::NodeHandle,
    prefix: &str,
    rng: &mut StdRng,
) {
    let mine = format!("{prefix}/{}-", NODES[i].0);
    if rng.gen_bool(0.2) {
        let candidates: Vec<String> = {
            let h = sh.history.borrow();
            (h.acked.iter())
                .filter(|k| k.starts_with(&mine) && !h.delete_attempted.contains(*k))
                .cloned()
                .collect()
        };
        if !candidates.is_empty() {
            let key = candidates[rng.gen_range(0..candidates.len())].clone();
            sh.history.borrow_mut().delete_attempted.insert(key.clone());
            if let Ok(d) = node.write(&key, Op::Delete, b"").await {
                let mut h = sh.history.borrow_mut();
                h.seq_of.insert(key.clone(), (i, d.seq()));
                h.deleted.insert(key);
            }
            return;
        }
    }
    let n = {
        let mut next = sh.next_key.borrow_mut();
        next[i] += 1;
        next[i]
    };
    let key = format!("{mine}{n:05}");
    let value = format!("{}-{}-{n}", sh.seed, NODES[i].0);
    (sh.history.borrow_mut().attempted).insert(key.clone(), value.clone());
    if let Ok(d) = node.write(&key, Op::Put, value.as_bytes()).await {
        let mut h = sh.history.borrow_mut();
        h.seq_of.insert(key.clone(), (i, d.seq()));
        h.acked.insert(key);
    }
}

async fn dump(node: &node::NodeHandle, name: &str) -> Result<Dump, Box<dyn std::error::Error>> {
    let mut records = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = node.list("", after.as_deref(), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key().to_owned());
        for d in &page {
            let value = String::from_utf8_lossy(d.value()).into_owned();
            records.insert(d.key().to_owned(), value);
        }
    }
    // The roster and anything else outside the clients' key space is not
    // theirs to check.
    records.retain(|k, _| k.contains("/sim/"));
    let quarantined = node.quarantine(1).await?.kept;
    let digest = node.frontier().borrow().digest().to_string();
    Ok(Dump {
        node: name.to_owned(),
        records,
        digest,
        quarantined,
    })
}

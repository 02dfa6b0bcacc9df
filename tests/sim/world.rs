//! One seed's run: five real nodes (the same `node::start_in` a process
//! runs, over the real store layout on a [`MemKv`] disk) on turmoil's
//! simulated network and clock, clients writing at every node, the seed's
//! faults applied, then everything healed and the end state checked.

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

use crate::checker::{self, Dump, History};
use crate::faults::{self, Fault, Planned, FAULTS_FOR, SKEW_MAX_MS};

/// Hub and spoke around `hq`, plus one mesh link (`office-fr` dials
/// `office-ke`): name, region, peers dialled.
const NODES: [(&str, Option<&str>, &[&str]); 5] = [
    ("hq", None, &[]),
    ("office-fr", Some("fr"), &["hq", "office-ke"]),
    ("office-ke", Some("ke"), &["hq"]),
    ("office-br", Some("br"), &["hq"]),
    ("office-in", Some("in"), &["hq"]),
];
const PORT: u16 = 7100;
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
    configs: Vec<NodeConfig>,
    ids: Vec<fedsync::core::NodeId>,
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
struct SimClock {
    offset_ms: AtomicI64,
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
enum Phase {
    /// Clients write; faults happen.
    Faults,
    /// Everything healed; nodes report their frontier digest.
    Heal,
    /// Converged: nodes report everything they hold.
    Dump,
}

/// What the hosts and the driver share (one thread: `Rc`).
struct Shared {
    seed: u64,
    ids: Vec<fedsync::core::NodeId>,
    disk: Disk,
    configs: Vec<NodeConfig>,
    disks: Vec<MemKv>,
    clocks: Vec<Arc<SimClock>>,
    phase: Cell<Phase>,
    history: RefCell<History>,
    /// Per node: the next key number (kept across restarts).
    next_key: RefCell<Vec<u64>>,
    incarnation: RefCell<Vec<u64>>,
    /// Per node: start the next incarnation with `--rebuild`.
    rebuild: RefCell<Vec<bool>>,
    /// Per node: its frontier digest, while running in the heal phase.
    digests: RefCell<Vec<Option<String>>>,
    dumps: RefCell<Vec<Option<Dump>>>,
}

/// What one seed did and found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: usize,
    pub deleted: usize,
    /// Acknowledged writes lost with a disk before any peer held them.
    pub lost_with_disk: usize,
    pub crashes: usize,
    pub faults: usize,
    /// Simulated time from the final heal to identical nodes.
    pub converged_after: Duration,
    /// The run, event by event: equal for two runs of one seed.
    pub trace: Vec<String>,
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

async fn run_node(i: usize, sh: Rc<Shared>) -> turmoil::Result {
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

/// The driver's view of the faults in force.
struct Faults<'s> {
    sim: turmoil::Sim<'s>,
    sh: Rc<Shared>,
    /// Restart times of crashed nodes.
    down: BTreeMap<usize, Duration>,
    /// Faults to undo, and when.
    undo: Vec<(Duration, Fault)>,
    outcome: Outcome,
}

impl Faults<'_> {
    fn name(n: usize) -> &'static str {
        NODES[n].0
    }

    fn log(&mut self, now: Duration, what: String) {
        self.outcome
            .trace
            .push(format!("{:>8.3}s {what}", now.as_secs_f64()));
    }

    /// Whether a node other than `n` has a rebuild from peers unfinished.
    fn rebuilding_other_than(&self, n: usize) -> bool {
        (0..NODES.len()).filter(|m| *m != n).any(|m| {
            let kv = Arc::new(self.sh.disks[m].clone());
            self.sh.rebuild.borrow()[m]
                || KvStore::on(kv, 1).is_ok_and(|s| s.rebuilding().unwrap_or(false))
        })
    }

    /// How far any other node holds node `n`'s log, read off their disks.
    fn held_elsewhere(&self, n: usize) -> u64 {
        use fedsync::core::Store;
        (0..NODES.len())
            .filter(|m| *m != n)
            .filter_map(|m| {
                let kv = Arc::new(self.sh.disks[m].clone());
                let store = KvStore::on(kv, 1).ok()?;
                Some(store.load_frontier().ok()?.head(&self.sh.ids[n]).seq)
            })
            .max()
            .unwrap_or(0)
    }

    fn crash(&mut self, n: usize, now: Duration, restart: Duration) {
        if self.down.contains_key(&n) {
            return;
        }
        self.sim.crash(Self::name(n));
        self.sh.disks[n].crash();
        self.sh.digests.borrow_mut()[n] = None;
        self.down.insert(n, now + restart);
        self.outcome.crashes += 1;
    }

    fn start(&mut self, p: &Planned, now: Duration) {
        let (name, sim) = (Self::name, &self.sim);
        self.outcome.faults += 1;
        match &p.fault {
            Fault::Partition(a, b) => sim.partition(name(*a), name(*b)),
            Fault::OneWay(a, b) => sim.partition_oneway(name(*a), name(*b)),
            Fault::Bridge { bridge, side } => {
                for x in side {
                    for y in (0..NODES.len()).filter(|y| y != bridge && !side.contains(y)) {
                        sim.partition(name(*x), name(y));
                    }
                }
            }
            Fault::Isolate(a) => {
                for b in (0..NODES.len()).filter(|b| b != a) {
                    sim.partition(name(*a), name(b));
                }
            }
            Fault::Hold(a, b) => sim.hold(name(*a), name(*b)),
            Fault::Crash(a) => self.crash(*a, now, p.lasts),
            // One rebuild at a time (see the README): while another node
            // is still rebuilding, a lost disk is only a crash.
            Fault::LoseDisk(a) if self.rebuilding_other_than(*a) => {
                self.crash(*a, now, p.lasts);
                self.log(
                    now,
                    format!("{:?} deferred: a rebuild is unfinished", p.fault),
                );
            }
            Fault::LoseDisk(a) => {
                self.crash(*a, now, p.lasts);
                let held = self.held_elsewhere(*a);
                self.sh.history.borrow_mut().disk_lost(*a, held);
                self.sh.disks[*a].wipe();
                self.sh.rebuild.borrow_mut()[*a] = true;
            }
            Fault::DiskFailure {
                node,
                after_flushes,
            } => self.sh.disks[*node].fail_flush_after(*after_flushes),
            Fault::Skew(a, ms) => self.sh.clocks[*a].offset_ms.store(*ms, Ordering::Relaxed),
            Fault::Jump(a, by) => {
                let clock = &self.sh.clocks[*a].offset_ms;
                let to = (clock.load(Ordering::Relaxed) + by).clamp(-SKEW_MAX_MS, SKEW_MAX_MS);
                clock.store(to, Ordering::Relaxed);
            }
        }
        self.log(now, format!("{:?}", p.fault));
        if !matches!(
            p.fault,
            Fault::Crash(_) | Fault::LoseDisk(_) | Fault::Skew(..) | Fault::Jump(..)
        ) {
            self.undo.push((now + p.lasts, p.fault.clone()));
        }
    }

    fn end(&mut self, fault: &Fault) {
        let (name, sim) = (Self::name, &self.sim);
        match fault {
            Fault::Partition(a, b) => sim.repair(name(*a), name(*b)),
            Fault::OneWay(a, b) => sim.repair_oneway(name(*a), name(*b)),
            Fault::Bridge { bridge, side } => {
                for x in side {
                    for y in (0..NODES.len()).filter(|y| y != bridge && !side.contains(y)) {
                        sim.repair(name(*x), name(y));
                    }
                }
            }
            Fault::Isolate(a) => {
                for b in (0..NODES.len()).filter(|b| b != a) {
                    sim.repair(name(*a), name(b));
                }
            }
            Fault::Hold(a, b) => sim.release(name(*a), name(*b)),
            // A disk fault armed but never hit is disarmed by the next
            // crash; one that never comes is harmless.
            Fault::DiskFailure { .. }
            | Fault::Crash(_)
            | Fault::LoseDisk(_)
            | Fault::Skew(..)
            | Fault::Jump(..) => {}
        }
    }

    /// Every link healthy (held traffic delivered), every node running.
    fn heal_all(&mut self, now: Duration) {
        for a in 0..NODES.len() {
            for b in a + 1..NODES.len() {
                self.sim.release(Self::name(a), Self::name(b));
            }
        }
        self.undo.clear();
        for disk in &self.sh.disks {
            disk.disarm();
        }
        for n in 0..NODES.len() {
            if self.sh.disks[n].has_failed() && !self.down.contains_key(&n) {
                self.crash(n, now, Duration::ZERO);
            }
        }
        for n in std::mem::take(&mut self.down).into_keys() {
            self.sim.bounce(Self::name(n));
        }
        self.log(now, "heal: every link repaired, every node running".into());
    }

    fn restart_due(&mut self, now: Duration) {
        let due: Vec<usize> = (self.down.iter())
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            self.down.remove(&n);
            self.sim.bounce(Self::name(n));
            self.log(now, format!("restart {}", Self::name(n)));
        }
        // A disk that failed takes its node down with it.
        for n in 0..NODES.len() {
            if self.sh.disks[n].has_failed() && !self.down.contains_key(&n) {
                self.log(now, format!("disk failed: crash {}", Self::name(n)));
                self.crash(n, now, Duration::from_secs(1));
            }
        }
        let ended: Vec<Fault> = (self.undo.iter())
            .filter(|(at, _)| *at <= now)
            .map(|(_, f)| f.clone())
            .collect();
        self.undo.retain(|(at, _)| *at > now);
        for f in ended {
            self.end(&f);
        }
    }
}

/// Runs seed `seed`, returning what it did, or every violation found.
pub fn run(seed: u64, fed: &Federation) -> Result<Outcome, String> {
    run_on(seed, fed, Disk::Honest)
}

/// [`run`] with nodes on `disk`.
pub fn run_on(seed: u64, fed: &Federation, disk: Disk) -> Result<Outcome, String> {
    let sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(FAULTS_FOR + CONVERGE_WITHIN + Duration::from_secs(30))
        .tick_duration(Duration::from_millis(5))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(40))
        .build();
    let sh = Rc::new(Shared {
        seed,
        ids: fed.ids.clone(),
        disk,
        configs: fed.configs.clone(),
        disks: (0..NODES.len()).map(|_| MemKv::new()).collect(),
        clocks: (0..NODES.len())
            .map(|_| {
                Arc::new(SimClock {
                    offset_ms: AtomicI64::new(0),
                })
            })
            .collect(),
        phase: Cell::new(Phase::Faults),
        history: RefCell::default(),
        next_key: RefCell::new(vec![0; NODES.len()]),
        incarnation: RefCell::new(vec![0; NODES.len()]),
        rebuild: RefCell::new(vec![false; NODES.len()]),
        digests: RefCell::new(vec![None; NODES.len()]),
        dumps: RefCell::new(vec![None; NODES.len()]),
    });
    let mut f = Faults {
        sim,
        sh: sh.clone(),
        down: BTreeMap::new(),
        undo: Vec::new(),
        outcome: Outcome::default(),
    };
    for (i, (name, _, _)) in NODES.iter().enumerate() {
        let sh = sh.clone();
        f.sim.host(*name, move || run_node(i, sh.clone()));
    }
    let plan = faults::plan(seed, NODES.len());
    let mut next = 0;
    let mut healed_at = None;
    loop {
        let now = f.sim.elapsed();
        while next < plan.len() && plan[next].at <= now && sh.phase.get() == Phase::Faults {
            let p = plan[next].clone();
            f.start(&p, now);
            next += 1;
        }
        if sh.phase.get() == Phase::Faults {
            f.restart_due(now);
            if now >= FAULTS_FOR {
                sh.phase.set(Phase::Heal);
                f.heal_all(now);
                healed_at = Some(now);
            }
        }
        if let Some(at) = healed_at {
            let digests = sh.digests.borrow().clone();
            let equal = digests.iter().all(|d| d.is_some() && *d == digests[0]);
            if sh.phase.get() == Phase::Heal && equal {
                sh.phase.set(Phase::Dump);
                f.outcome.converged_after = now - at;
                f.log(
                    now,
                    format!(
                        "converged: digest {}",
                        digests[0].clone().unwrap_or_default()
                    ),
                );
            }
            if sh.phase.get() == Phase::Dump && sh.dumps.borrow().iter().all(Option::is_some) {
                break;
            }
            if now > at + CONVERGE_WITHIN {
                return Err(format!(
                    "nodes still differ {CONVERGE_WITHIN:?} after the heal: digests {digests:?}\n{}",
                    f.outcome.trace.join("\n")
                ));
            }
        }
        if let Err(e) = f.sim.step() {
            return Err(format!(
                "a node failed: {e}\n{}",
                f.outcome.trace.join("\n")
            ));
        }
    }
    let dumps: Vec<Dump> = sh.dumps.borrow().iter().flatten().cloned().collect();
    let h = sh.history.borrow();
    checker::check(&h, &dumps).map_err(|e| format!("{e}\n{}", f.outcome.trace.join("\n")))?;
    f.outcome.acked = h.acked.len();
    f.outcome.deleted = h.deleted.len();
    f.outcome.lost_with_disk = h.lost_with_disk;
    let summary = format!(
        "end: {} puts acknowledged, {} deletes, {} lost with a disk, digest {}",
        h.acked.len(),
        h.deleted.len(),
        h.lost_with_disk,
        dumps[0].digest
    );
    f.outcome.trace.push(summary);
    Ok(std::mem::take(&mut f.outcome))
}

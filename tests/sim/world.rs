//! One seed's run: five hosts ([`crate::host`]) on turmoil, the seed's
//! faults applied and undone on schedule, then everything healed and the
//! end state checked.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fedsync::store::{KvStore, MemKv};

use crate::checker::{self, Dump};
use crate::faults::{self, Fault, Planned, FAULTS_FOR, SKEW_MAX_MS};
use crate::host::{run_node, Disk, Federation, Phase, Shared, SimClock, CONVERGE_WITHIN, NODES};

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

    /// Node `m`'s store as its disk holds it now, to read from outside the
    /// node (`None` while the disk has failed).
    fn store_on(&self, m: usize) -> Option<KvStore> {
        KvStore::on(Arc::new(self.sh.disks[m].clone()), 1).ok()
    }

    /// How far `author`'s log reaches on the disks other than `lost`.
    fn held_elsewhere(&self, author: usize, lost: &[usize]) -> u64 {
        use fedsync::core::Store;
        (0..NODES.len())
            .filter(|m| !lost.contains(m))
            .filter_map(|m| {
                Some(
                    self.store_on(m)?
                        .load_frontier()
                        .ok()?
                        .head(&self.sh.ids[author])
                        .seq,
                )
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
            cut @ (Fault::Partition(..) | Fault::Bridge { .. } | Fault::Isolate(_)) => {
                for (a, b) in cut.cut_pairs(NODES.len()) {
                    sim.partition(name(a), name(b));
                }
            }
            Fault::OneWay(a, b) => sim.partition_oneway(name(*a), name(*b)),
            Fault::Hold(a, b) => sim.hold(name(*a), name(*b)),
            Fault::Crash(a) => self.crash(*a, now, p.lasts),
            Fault::LoseDisk(lost) => {
                for n in lost {
                    self.crash(*n, now, p.lasts);
                }
                // Every author's writes that only these disks held are
                // gone with them.
                for author in 0..NODES.len() {
                    let held = self.held_elsewhere(author, lost);
                    self.sh.history.borrow_mut().disk_lost(author, held);
                }
                for n in lost {
                    self.sh.disks[*n].wipe();
                    self.sh.rebuild.borrow_mut()[*n] = true;
                }
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
            cut @ (Fault::Partition(..) | Fault::Bridge { .. } | Fault::Isolate(_)) => {
                for (a, b) in cut.cut_pairs(NODES.len()) {
                    sim.repair(name(a), name(b));
                }
            }
            Fault::OneWay(a, b) => sim.repair_oneway(name(*a), name(*b)),
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

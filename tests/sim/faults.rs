//! A seed's fault schedule: what happens to which nodes, and when. Drawn
//! in full before the run from the seed alone, so a failing seed's
//! schedule is printed and replayed as it was.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long faults are injected and clients write; then everything heals.
pub const FAULTS_FOR: Duration = Duration::from_secs(30);
/// The largest clock offset from true time, either way.
pub const SKEW_MAX_MS: i64 = 10 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No traffic either way between two nodes.
    Partition(usize, usize),
    /// Traffic from the first to the second is dropped; the other way flows.
    OneWay(usize, usize),
    /// The nodes split into two sides that reach each other only through
    /// the bridge node.
    Bridge { bridge: usize, side: Vec<usize> },
    /// Every link of one node is cut.
    Isolate(usize),
    /// Traffic between two nodes is held, then delivered late.
    Hold(usize, usize),
    /// The process dies (power loss: unflushed writes are gone); it
    /// restarts when the fault ends.
    Crash(usize),
    /// The disk fails at a flush soon; the node is crashed when it does
    /// and restarts after the fault's duration.
    DiskFailure { node: usize, after_flushes: u64 },
    /// These nodes' disks are lost at once (each loss is independent of
    /// any rebuild still running elsewhere): each restarts on an empty
    /// disk with `--rebuild` and must recover everything, its own writes
    /// included.
    LoseDisk(Vec<usize>),
    /// The node's wall clock is set this far from true time.
    Skew(usize, i64),
    /// The node's wall clock jumps by this much (bounded by the skew limit).
    Jump(usize, i64),
}

impl Fault {
    /// The pairs of nodes a partition cuts both ways: one pair, every pair
    /// across a bridge's two sides, or every link of an isolated node.
    pub fn cut_pairs(&self, nodes: usize) -> Vec<(usize, usize)> {
        match self {
            Fault::Partition(a, b) => vec![(*a, *b)],
            Fault::Bridge { bridge, side } => (side.iter())
                .flat_map(|x| {
                    (0..nodes)
                        .filter(|y| y != bridge && !side.contains(y))
                        .map(move |y| (*x, y))
                })
                .collect(),
            Fault::Isolate(a) => (0..nodes).filter(|b| b != a).map(|b| (*a, b)).collect(),
            _ => Vec::new(),
        }
    }
}

/// A fault that starts at `at` and, where it has an end, ends `lasts` later.
#[derive(Clone, Debug)]
pub struct Planned {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// The schedule for `seed` over `nodes` nodes.
pub fn plan(seed: u64, nodes: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_5eed);
    let mut out = Vec::new();
    // Every seed starts with skewed clocks, some ahead and some behind.
    for n in 0..nodes {
        let at = Duration::ZERO;
        let fault = Fault::Skew(n, rng.gen_range(-SKEW_MAX_MS..=SKEW_MAX_MS));
        out.push(Planned {
            at,
            lasts: at,
            fault,
        });
    }
    let mut at = Duration::from_millis(rng.gen_range(200..1500));
    while at < FAULTS_FOR {
        let lasts = Duration::from_millis(rng.gen_range(300..6000));
        let a = rng.gen_range(0..nodes);
        let b = (a + rng.gen_range(1..nodes)) % nodes;
        let fault = match rng.gen_range(0..100) {
            0..=14 => Fault::Partition(a, b),
            15..=24 => Fault::OneWay(a, b),
            25..=32 => {
                let side = (0..nodes)
                    .filter(|&n| n != a && rng.gen_bool(0.5))
                    .collect();
                Fault::Bridge { bridge: a, side }
            }
            33..=42 => Fault::Isolate(a),
            43..=54 => Fault::Hold(a, b),
            55..=74 => Fault::Crash(a),
            75..=81 => Fault::DiskFailure {
                node: a,
                after_flushes: rng.gen_range(0..20),
            },
            82..=83 => Fault::LoseDisk(vec![a]),
            84 => Fault::LoseDisk(vec![a, b]),
            85..=90 => Fault::Skew(a, rng.gen_range(-SKEW_MAX_MS..=SKEW_MAX_MS)),
            _ => {
                let by = rng.gen_range(60_000..=SKEW_MAX_MS);
                Fault::Jump(a, if rng.gen_bool(0.5) { by } else { -by })
            }
        };
        out.push(Planned { at, lasts, fault });
        at += Duration::from_millis(rng.gen_range(100..1500));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_plans_the_same_schedule() {
        let one: Vec<_> = plan(42, 5).into_iter().map(|p| format!("{p:?}")).collect();
        let two: Vec<_> = plan(42, 5).into_iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(one, two);
        assert_ne!(
            one,
            plan(43, 5)
                .into_iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
        );
    }
}

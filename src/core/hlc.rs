//! Hybrid logical clock (Kulkarni et al.): wall-clock milliseconds plus a
//! logical counter, so timestamps stay close to real time yet never go
//! backwards on a node, even when its wall clock jumps back.
//!
//! The clock never reads time itself: callers pass `now_ms`, which keeps the
//! sync core deterministic under simulation.

/// A hybrid logical timestamp. Ordered by wall time, then counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    pub wall_ms: u64,
    pub logical: u32,
}

impl Hlc {
    pub const fn new(wall_ms: u64, logical: u32) -> Self {
        Hlc { wall_ms, logical }
    }

    fn successor(self) -> Hlc {
        match self.logical.checked_add(1) {
            Some(logical) => Hlc::new(self.wall_ms, logical),
            // 4 billion events in one millisecond cannot happen honestly;
            // borrowing a millisecond keeps the clock monotonic regardless.
            None => Hlc::new(self.wall_ms.saturating_add(1), 0),
        }
    }
}

/// The node's clock state: the highest timestamp issued or observed.
#[derive(Clone, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh timestamp for a local event, strictly greater than every
    /// timestamp issued or observed before.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let next = if now_ms > self.last.wall_ms {
            Hlc::new(now_ms, 0)
        } else {
            self.last.successor()
        };
        self.last = next;
        next
    }

    /// Takes a remote timestamp into account, so the next local tick orders
    /// after everything this node has seen. The caller bounds how far ahead
    /// `remote` may be (validation refuses absurd timestamps first).
    pub fn observe(&mut self, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_monotonic_when_wall_clock_goes_back() {
        let mut c = HlcClock::new();
        let a = c.tick(1_000);
        let b = c.tick(500);
        let d = c.tick(500);
        assert!(a < b && b < d);
        assert_eq!(b, Hlc::new(1_000, 1));
    }

    #[test]
    fn observe_moves_the_clock_past_remote_events() {
        let mut c = HlcClock::new();
        c.observe(Hlc::new(9_000, 7));
        assert_eq!(c.tick(1_000), Hlc::new(9_000, 8));
        assert_eq!(c.tick(10_000), Hlc::new(10_000, 0));
    }

    #[test]
    fn counter_overflow_borrows_a_millisecond() {
        let mut c = HlcClock::new();
        c.observe(Hlc::new(5, u32::MAX));
        assert_eq!(c.tick(0), Hlc::new(6, 0));
    }
}

//! How much a link may have on the line: what the peer's acks show the
//! line delivers sets how many delta bytes may be sent and not yet
//! acknowledged (about [`WINDOW_SECS`] of the line) and how big each
//! catch-up batch is (half of that: two batches in flight keep the line
//! busy through a round trip, and a batch of many records compresses far
//! better than a few).
//!
//! Why: a fixed window of megabytes is milliseconds on a LAN and minutes
//! on a 64 kbit/s line. Everything queued ahead of a digest, an ack or a
//! live write delays it by the line's drain time, and everything in
//! flight when the line drops is lost and sent again. Keeping only a few
//! seconds of the line in flight keeps control traffic prompt, makes the
//! peer's acks (and so lag and stall) current, and bounds what a drop
//! costs. On a fast link the window quickly reaches its ceiling and
//! catch-up runs as before.
//!
//! The delivery rate is measured the way TCP's BBR does: at each ack, the
//! bytes acknowledged since the acked batch was sent over the time since
//! the last ack before it, so idle periods do not count as slow. The
//! estimate is the highest of the recent samples, since queueing only
//! ever makes a sample lower. Round trips come from digests: each is
//! answered at once (`InSync` or `Frontier`). Time is passed in.

use std::collections::VecDeque;

/// Seconds of the line allowed in flight: above the round trip of the
/// slowest links (800 ms) with room for the peer's commit, and small
/// enough that a drop loses little.
pub const WINDOW_SECS: f64 = 1.5;
/// The window before the first ack, and its floor: enough for one batch of
/// small deltas and a round trip on a 64 kbit/s line.
pub const WINDOW_MIN: u64 = 16 * 1024;
pub const WINDOW_START: u64 = 64 * 1024;
/// Rate samples kept (the estimate is their maximum), and how long one
/// counts.
const SAMPLES_MAX: usize = 16;
const SAMPLE_TTL_MS: u64 = 30_000;
/// Smallest catch-up batch, whatever the window.
pub const BATCH_MIN: usize = 4 * 1024;

/// The delivery rate assumed before an ack has measured one, and the
/// least ever assumed: 8 kbit/s, below any line fedsync is meant for.
pub const RATE_FLOOR: f64 = 1000.0;

/// How long a link's peer may go unheard before the link counts as dead,
/// in ms: a keepalive interval for a PING to go out, the configured
/// timeout for its answer, and twice the time the line needs, at the
/// rate last measured, to drain what was sent and not yet acknowledged,
/// since the answer waits behind whatever of that is still below HTTP/2.
///
/// Why: a fixed timeout ends a link that is slow but alive as soon as
/// more is queued than the line moves in that time. Bytes arriving from
/// the peer (data, acks, PING answers) reset the silence, so a healthy
/// slow link never comes near this; a dead one is noticed once even the
/// slowest drain would have finished.
pub fn silence_allowed_ms(
    keepalive_ms: u64,
    timeout_ms: u64,
    unacked_bytes: u64,
    rate: Option<f64>,
) -> u64 {
    let rate = rate.unwrap_or(RATE_FLOOR).max(RATE_FLOOR);
    let drain_ms = (unacked_bytes as f64 * 2.0 * 1000.0 / rate) as u64;
    keepalive_ms + timeout_ms + drain_ms
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// Its place among the batches sent on this link.
    index: u64,
    bytes: u64,
    deltas: u64,
    /// Bytes delivered, and the time of the latest ack, when it was sent.
    delivered: u64,
    delivered_ms: u64,
    sent_ms: u64,
}

/// One link's pacing state.
#[derive(Clone, Debug)]
pub struct Pace {
    /// Deltas messages sent and not yet acked, in order: the peer acks
    /// every batch, in order, on the same stream.
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: u64,
    /// Batches sent on this link.
    sends: u64,
    /// Bytes (and deltas) the peer acknowledged on this link, and when it
    /// last did.
    delivered: u64,
    delivered_deltas: u64,
    delivered_ms: u64,
    samples: VecDeque<(u64, f64)>,
    window_max: u64,
    /// When our oldest unanswered digest left, and how many batches had
    /// been sent before it.
    digest_sent: Option<(u64, u64)>,
    /// Smoothed round trip, as TCP smooths it (7/8 old, 1/8 new).
    srtt_ms: Option<f64>,
    /// The shortest round trip seen, from digests and from acks (a batch's
    /// ack also waits for its bytes and the peer's commit, so only ever
    /// makes a sample longer): the line's own, without its queues.
    rtt_min_ms: Option<u64>,
}

/// What operators see of a link's pace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PaceView {
    pub rtt_ms: Option<u64>,
    /// Delta bytes per second the peer acknowledged (the estimate).
    pub rate_bytes_per_sec: Option<u64>,
    pub in_flight_bytes: u64,
    pub window_bytes: u64,
    /// Delta bytes, and deltas, the peer acknowledged on this link.
    pub acked_bytes: u64,
    pub acked_deltas: u64,
}

impl PaceView {
    /// Seconds until `deltas` more are acknowledged at the measured rate
    /// and the average size acknowledged so far: a catch-up's estimate.
    pub fn eta_secs(&self, deltas: u64) -> Option<u64> {
        let rate = self.rate_bytes_per_sec.filter(|r| *r > 0)?;
        if self.acked_deltas == 0 || deltas == 0 {
            return None;
        }
        let bytes = deltas as f64 * self.acked_bytes as f64 / self.acked_deltas as f64;
        Some((bytes / rate as f64).ceil() as u64)
    }
}

impl Pace {
    /// `window_max`: the most ever in flight, whatever the rate.
    pub fn new(window_max: u64) -> Pace {
        Pace {
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            sends: 0,
            delivered: 0,
            delivered_deltas: 0,
            delivered_ms: 0,
            samples: VecDeque::new(),
            window_max: window_max.max(WINDOW_MIN),
            digest_sent: None,
            srtt_ms: None,
            rtt_min_ms: None,
        }
    }

    /// A batch of `deltas` deltas, `bytes` of them, left for the peer.
    pub fn sent(&mut self, bytes: u64, deltas: u64, now_ms: u64) {
        if self.in_flight.is_empty() {
            // Nothing was on the line: the interval of this batch's sample
            // starts now, not at an ack long ago.
            self.delivered_ms = now_ms;
        }
        self.in_flight.push_back(InFlight {
            index: self.sends,
            bytes,
            deltas,
            delivered: self.delivered,
            delivered_ms: self.delivered_ms,
            sent_ms: now_ms,
        });
        self.in_flight_bytes += bytes;
        self.sends += 1;
    }

    /// The peer acknowledged the oldest batch in flight.
    pub fn acked(&mut self, now_ms: u64) {
        let Some(b) = self.in_flight.pop_front() else {
            return; // an ack of a batch sent before a reset: nothing to learn
        };
        self.in_flight_bytes -= b.bytes;
        self.delivered += b.bytes;
        self.delivered_deltas += b.deltas;
        self.delivered_ms = now_ms;
        let elapsed = now_ms.saturating_sub(b.delivered_ms).max(1);
        let rate = (self.delivered - b.delivered) as f64 * 1000.0 / elapsed as f64;
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back((now_ms, rate));
        self.round_trip(now_ms.saturating_sub(b.sent_ms));
    }

    fn round_trip(&mut self, ms: u64) {
        self.rtt_min_ms = Some(self.rtt_min_ms.map_or(ms, |m| m.min(ms)));
    }

    /// The shortest round trip measured on this link, if any has been.
    pub fn rtt_min_ms(&self) -> Option<u64> {
        self.rtt_min_ms
    }

    pub fn digest_sent(&mut self, now_ms: u64) {
        self.digest_sent.get_or_insert((now_ms, self.sends));
    }

    /// The answer to our digest (`InSync` or `Frontier`) arrived: a round
    /// trip. The peer handles a link's messages in order and acks each
    /// batch before it answers what followed, so a batch sent before the
    /// digest and not acked by now never will be (one the peer refused
    /// whole): it stops counting as in flight.
    pub fn digest_answered(&mut self, now_ms: u64) {
        let Some((at, sends)) = self.digest_sent.take() else {
            return;
        };
        self.round_trip(now_ms.saturating_sub(at));
        let sample = now_ms.saturating_sub(at) as f64;
        let srtt = self.srtt_ms.map_or(sample, |s| s * 0.875 + sample * 0.125);
        self.srtt_ms = Some(srtt);
        while self.in_flight.front().is_some_and(|b| b.index < sends) {
            let b = self.in_flight.pop_front().expect("checked");
            self.in_flight_bytes -= b.bytes;
        }
    }

    /// Delivery rate in bytes per second: the highest recent sample.
    pub fn rate(&self, now_ms: u64) -> Option<f64> {
        self.samples
            .iter()
            .filter(|(at, _)| now_ms.saturating_sub(*at) <= SAMPLE_TTL_MS)
            .map(|(_, r)| *r)
            .reduce(f64::max)
    }

    /// Bytes that may be in flight.
    pub fn window(&self, now_ms: u64) -> u64 {
        match self.rate(now_ms) {
            None => WINDOW_START.min(self.window_max),
            Some(rate) => ((rate * WINDOW_SECS) as u64).clamp(WINDOW_MIN, self.window_max),
        }
    }

    /// Whether another catch-up batch may be sent now. One batch is always
    /// allowed when nothing is in flight, however large its one delta.
    pub fn may_send(&self, now_ms: u64) -> bool {
        self.in_flight_bytes < self.window(now_ms)
    }

    /// The byte budget of the next catch-up batch, at most `max`.
    pub fn batch_bytes(&self, max: usize, now_ms: u64) -> usize {
        let half = (self.window(now_ms) / 2) as usize;
        half.clamp(BATCH_MIN, max.max(BATCH_MIN))
    }

    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    pub fn view(&self, now_ms: u64) -> PaceView {
        PaceView {
            rtt_ms: self.srtt_ms.map(|s| s.round() as u64),
            rate_bytes_per_sec: self.rate(now_ms).map(|r| r as u64),
            in_flight_bytes: self.in_flight_bytes,
            window_bytes: self.window(now_ms),
            acked_bytes: self.delivered,
            acked_deltas: self.delivered_deltas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_allowed_grows_with_what_the_line_must_drain() {
        // Nothing unacknowledged: the configured keepalive and timeout.
        assert_eq!(silence_allowed_ms(10_000, 20_000, 0, Some(1e6)), 30_000);
        // 900 KB at 64 kbit/s (8 kB/s): twice its 112.5 s drain on top.
        assert_eq!(
            silence_allowed_ms(10_000, 20_000, 900_000, Some(8_000.0)),
            255_000
        );
        // No rate yet, or an implausibly low one: the floor's.
        let unknown = silence_allowed_ms(10_000, 20_000, 50_000, None);
        assert_eq!(unknown, 130_000);
        assert_eq!(
            silence_allowed_ms(10_000, 20_000, 50_000, Some(3.0)),
            unknown
        );
    }

    /// A line of `rate` bytes/s and `rtt` ms, the sender keeping the
    /// window full with batches as `batch_bytes` says: returns the pace
    /// after `secs` of it and the most ever in flight.
    fn run(rate: f64, rtt: u64, secs: u64, window_max: u64) -> (Pace, u64) {
        let mut pace = Pace::new(window_max);
        // Batches on the line: (ack time, bytes).
        let mut line: VecDeque<u64> = VecDeque::new();
        let mut free_at = 0.0f64;
        let mut peak = 0;
        for now in 0..secs * 1000 {
            while line.front().is_some_and(|at| *at <= now) {
                line.pop_front();
                pace.acked(now);
            }
            while pace.may_send(now) {
                let bytes = pace.batch_bytes(2 << 20, now) as u64;
                pace.sent(bytes, 1, now);
                free_at = free_at.max(now as f64) + bytes as f64 * 1000.0 / rate;
                line.push_back(free_at as u64 + rtt);
            }
            peak = peak.max(pace.in_flight_bytes());
        }
        (pace, peak)
    }

    #[test]
    fn a_slow_line_holds_about_a_window_of_its_own_time() {
        // 64 kbit/s, 600 ms round trip.
        let (pace, peak) = run(8_000.0, 600, 120, 16 << 20);
        let rate = pace.rate(120_000).unwrap();
        assert!((7_000.0..=8_800.0).contains(&rate), "{rate}");
        // In flight: the window (1.5 s of the line), not megabytes.
        assert!(peak <= WINDOW_START + 8 * 1024, "{peak}");
        assert!(
            pace.window(120_000) <= 16 * 1024,
            "{}",
            pace.window(120_000)
        );
    }

    #[test]
    fn slow_lines_stay_busy_through_the_fields_round_trips() {
        // 64 kbit/s and 256 kbit/s; the field's 300 to 800 ms round trips.
        // (Beyond the window's 1.5 s of round trip, the line idles.)
        for (rate, rtt) in [
            (8_000.0, 800),
            (8_000.0, 600),
            (32_000.0, 300),
            (32_000.0, 800),
        ] {
            let (pace, _) = run(rate, rtt, 300, 16 << 20);
            let acked = pace.view(300_000).acked_bytes as f64;
            let busy = acked / (rate * 300.0);
            assert!(busy > 0.9, "{rate} B/s, {rtt} ms: line busy {busy:.2}");
        }
    }

    #[test]
    fn a_catch_up_estimate_follows_the_rate_and_the_sizes_acked() {
        let mut pace = Pace::new(1 << 20);
        assert_eq!(pace.view(0).eta_secs(100), None, "nothing measured yet");
        pace.sent(10_000, 20, 0);
        pace.acked(1_000);
        // 10 kB/s, 500 bytes a delta: 200 more deltas take 10 s.
        assert_eq!(pace.view(1_000).eta_secs(200), Some(10));
        assert_eq!(pace.view(1_000).eta_secs(0), None);
    }

    #[test]
    fn a_fast_link_reaches_the_ceiling() {
        // 50 MB/s, 1 ms round trip.
        let (pace, _) = run(50e6, 1, 2, 16 << 20);
        assert_eq!(pace.window(2_000), 16 << 20);
        assert_eq!(pace.batch_bytes(2 << 20, 2_000), 2 << 20);
    }

    #[test]
    fn one_large_delta_may_go_when_nothing_is_in_flight() {
        let mut pace = Pace::new(1 << 20);
        assert!(pace.may_send(0));
        pace.sent(900_000, 1, 0);
        assert!(!pace.may_send(1));
        pace.acked(100_000);
        assert!(pace.may_send(100_001));
    }

    #[test]
    fn a_batch_never_acked_stops_counting_once_a_later_digest_is_answered() {
        let mut pace = Pace::new(1 << 20);
        pace.sent(WINDOW_START, 10, 0); // refused whole: never acked
        pace.digest_sent(5);
        pace.sent(1_000, 2, 6); // after the digest: still on its way
        assert!(!pace.may_send(10));
        pace.digest_answered(600);
        assert_eq!(pace.in_flight_bytes(), 1_000);
        assert!(pace.may_send(600));
        pace.acked(700);
        assert_eq!(pace.in_flight_bytes(), 0);
    }

    #[test]
    fn round_trips_come_from_answered_digests() {
        let mut pace = Pace::new(1 << 20);
        pace.digest_sent(1_000);
        pace.digest_sent(1_100); // the first one's answer is the one awaited
        pace.digest_answered(1_600);
        assert_eq!(pace.view(1_600).rtt_ms, Some(600));
        pace.digest_answered(1_700); // no digest outstanding: no sample
        assert_eq!(pace.view(1_700).rtt_ms, Some(600));
    }

    #[test]
    fn the_shortest_round_trip_is_the_lines_without_its_queues() {
        let mut pace = Pace::new(1 << 20);
        assert_eq!(pace.rtt_min_ms(), None, "nothing measured yet");
        pace.digest_sent(0);
        pace.digest_answered(40); // a digest queued behind a busy peer
        assert_eq!(pace.rtt_min_ms(), Some(40));
        pace.sent(1_000, 1, 100);
        pace.sent(1_000, 1, 100); // waits on the line behind the first
        pace.acked(103);
        pace.acked(160);
        assert_eq!(pace.rtt_min_ms(), Some(3), "the ack that did not queue");
        pace.digest_sent(200);
        pace.digest_answered(290);
        assert_eq!(pace.rtt_min_ms(), Some(3), "a longer one changes nothing");
        // The smoothed round trip still follows the digests alone.
        assert_eq!(pace.view(290).rtt_ms, Some(46));
    }
}

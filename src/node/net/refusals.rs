//! Connections refused before or at authentication: counted by reason for
//! the metrics, and logged at a bounded rate. A flood refuses thousands of
//! connections a second; one log line each would fill a disk, so the first
//! refusal of each interval is logged as it happens and the rest of the
//! interval only as one summary line.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often at most a refusal is logged on its own; the rest of each
/// interval is summarised.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection was refused. `code()` is its metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnRefusal {
    /// Every pre-authentication place was held by a handshake past its
    /// ClientHello.
    PendingFull,
    /// The source address held its share of pre-authentication places.
    SourceFull,
    /// A handshake that had not sent its ClientHello gave its place to a
    /// newer connection.
    Evicted,
    /// No complete ClientHello within the deadline.
    HelloTimeout,
    /// The handshake did not finish within the deadline.
    HandshakeTimeout,
    /// The TLS handshake failed: no certificate, one the roster does not
    /// pin (unknown, revoked, retired), or not TLS at all.
    Tls,
    /// The client closed the connection before its handshake finished.
    Abandoned,
    /// A member already had its limit of connections open.
    MemberLimit,
}

impl ConnRefusal {
    pub const ALL: [ConnRefusal; 8] = [
        ConnRefusal::PendingFull,
        ConnRefusal::SourceFull,
        ConnRefusal::Evicted,
        ConnRefusal::HelloTimeout,
        ConnRefusal::HandshakeTimeout,
        ConnRefusal::Tls,
        ConnRefusal::Abandoned,
        ConnRefusal::MemberLimit,
    ];

    pub fn code(self) -> &'static str {
        match self {
            ConnRefusal::PendingFull => "handshakes_full",
            ConnRefusal::SourceFull => "source_full",
            ConnRefusal::Evicted => "evicted",
            ConnRefusal::HelloTimeout => "hello_timeout",
            ConnRefusal::HandshakeTimeout => "handshake_timeout",
            ConnRefusal::Tls => "tls_refused",
            ConnRefusal::Abandoned => "abandoned",
            ConnRefusal::MemberLimit => "member_limit",
        }
    }
}

/// The counts since start, and the log's current interval.
#[derive(Debug, Default)]
struct State {
    total: BTreeMap<ConnRefusal, u64>,
    window: Window,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    /// Refusals in this interval not logged on their own.
    unlogged: BTreeMap<ConnRefusal, u64>,
    sources: HashMap<IpAddr, u64>,
}

/// Refused connections, shared by the accept loop and handshake tasks.
#[derive(Clone, Debug, Default)]
pub struct ConnRefusals {
    state: Arc<Mutex<State>>,
    /// Handshakes refused for their certificate (or lack of one), for
    /// callers that wait for a count to change (tests, operators).
    tls: Arc<tokio::sync::watch::Sender<u64>>,
    /// Handshakes in progress, as the door counts them.
    pending: Arc<AtomicUsize>,
}

/// Sources named in a summary line, at most.
const SOURCES_SHOWN: usize = 3;

impl ConnRefusals {
    /// Counts one refusal and logs it, or keeps it for the summary.
    /// `detail` says more (the TLS error, the member's name).
    pub(crate) fn refuse(&self, why: ConnRefusal, source: IpAddr, detail: &str) {
        if why == ConnRefusal::Tls {
            self.tls.send_modify(|n| *n += 1);
        }
        let now = Instant::now();
        let mut s = self.state.lock().expect("refusals lock poisoned");
        *s.total.entry(why).or_default() += 1;
        if s.window.started.is_some_and(|t| now - t >= LOG_INTERVAL) {
            summarise(&mut s.window);
        }
        if s.window.started.is_none() {
            s.window.started = Some(now);
            drop(s);
            tracing::warn!(reason = why.code(), %source, detail, "connection refused (more in this interval are summarised)");
            return;
        }
        *s.window.unlogged.entry(why).or_default() += 1;
        // Bounded: a spoofed spread of sources cannot grow this without
        // limit within one interval.
        if s.window.sources.len() < 1024 || s.window.sources.contains_key(&source) {
            *s.window.sources.entry(source).or_default() += 1;
        }
    }

    /// Logs the summary of an interval that has ended (called on a timer,
    /// so the last burst of a flood is reported too).
    pub(crate) fn tick(&self) {
        let mut s = self.state.lock().expect("refusals lock poisoned");
        if s.window
            .started
            .is_some_and(|t| t.elapsed() >= LOG_INTERVAL)
        {
            summarise(&mut s.window);
        }
    }

    /// Refusals since start, by reason (every reason, zeros included).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let s = self.state.lock().expect("refusals lock poisoned");
        (ConnRefusal::ALL.iter())
            .map(|r| (r.code(), s.total.get(r).copied().unwrap_or(0)))
            .collect()
    }

    /// Handshakes in progress now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Where the door keeps its count of handshakes in progress.
    pub(crate) fn pending_gauge(&self) -> Arc<AtomicUsize> {
        self.pending.clone()
    }

    /// Handshakes refused for their certificate, as a value to await.
    pub fn tls_refused(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tls.subscribe()
    }
}

fn summarise(w: &mut Window) {
    let started = w.started.take();
    let unlogged = std::mem::take(&mut w.unlogged);
    let sources = std::mem::take(&mut w.sources);
    if unlogged.is_empty() {
        return;
    }
    let total: u64 = unlogged.values().sum();
    let by_reason = (unlogged.iter())
        .map(|(r, n)| format!("{}={n}", r.code()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut top: Vec<(IpAddr, u64)> = sources.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = (top.iter().take(SOURCES_SHOWN))
        .map(|(ip, n)| format!("{ip} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    let secs = started.map_or(0, |t| t.elapsed().as_secs());
    tracing::warn!(refused = total, by_reason, top_sources = %top, secs, "connections refused in the last interval");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_by_reason() {
        let r = ConnRefusals::default();
        let ip = IpAddr::from([198, 18, 0, 1]);
        for _ in 0..1000 {
            r.refuse(ConnRefusal::Evicted, ip, "");
        }
        r.refuse(ConnRefusal::Tls, ip, "unknown certificate");
        let counts = r.counts();
        assert_eq!(counts["evicted"], 1000);
        assert_eq!(counts["tls_refused"], 1);
        assert_eq!(counts["handshakes_full"], 0);
        assert_eq!(counts["abandoned"], 0);
        assert_eq!(counts.len(), ConnRefusal::ALL.len());
        assert_eq!(*r.tls_refused().borrow(), 1);
        // All but the first wait for the summary.
        let s = r.state.lock().unwrap();
        assert_eq!(s.window.unlogged.values().sum::<u64>(), 1000);
    }
}

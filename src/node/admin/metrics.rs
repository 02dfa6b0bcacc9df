//! Prometheus metrics, in the text format (`prometheus-client`), rendered
//! at each scrape from the same status snapshot the `Status` call returns,
//! plus RPC latency histograms recorded as calls complete.
//!
//! Counters count since the process started, as Prometheus expects.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::node::status::{NodeStatus, PeerState, ALL_STATES};

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Every method the node serves. Paths outside it are counted as `other`:
/// a path is chosen by the caller, and labels must stay bounded.
const METHODS: [&str; 13] = [
    "/fedsync.v1.Peer/Sync",
    "/fedsync.v1.Client/Put",
    "/fedsync.v1.Client/Delete",
    "/fedsync.v1.Client/Get",
    "/fedsync.v1.Client/List",
    "/fedsync.v1.Client/Watch",
    "/fedsync.v1.Client/Frontier",
    "/fedsync.v1.Client/Quarantine",
    "/fedsync.v1.Client/PublishRoster",
    "/fedsync.v1.Client/Status",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

fn rpc_histogram() -> Histogram {
    // 250 µs .. about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// RPC latency by method: time until the response starts (for a
/// streaming call, until its stream opens).
#[derive(Clone)]
pub struct RpcMetrics {
    durations: Histograms,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            durations: Family::new_with_constructor(rpc_histogram),
        }
    }
}

impl RpcMetrics {
    fn observe(&self, path: &str, secs: f64) {
        let method = METHODS
            .iter()
            .find(|m| **m == path)
            .map_or("other", |m| &m[1..]);
        self.durations
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(secs);
    }
}

/// A tower layer for the gRPC server that times every call.
#[derive(Clone)]
pub struct RpcTiming(pub RpcMetrics);

impl<S> tower::Layer<S> for RpcTiming {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let out = call.await;
            metrics.observe(&path, start.elapsed().as_secs_f64());
            out
        })
    }
}

fn counter(reg: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    reg.register(name, help, g);
}

fn gauge_unit(reg: &mut Registry, name: &str, help: &str, unit: Unit, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    reg.register_with_unit(name, help, unit, g);
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Renders every metric in the Prometheus text format.
pub fn render(s: &NodeStatus, rpc: &RpcMetrics) -> String {
    let mut reg = Registry::with_prefix("fedsync");
    let t = &s.totals;
    gauge(
        &mut reg,
        "up",
        "1 while the node serves (the gRPC health service says SERVING)",
        s.serving as i64,
    );
    gauge_unit(
        &mut reg,
        "start_time",
        "When the node started, Unix time",
        Unit::Seconds,
        clamp(s.started_ms / 1000),
    );
    gauge(
        &mut reg,
        "roster_version",
        "Version of the roster in force",
        clamp(s.roster_version),
    );
    counter(&mut reg, "deltas_applied", "Deltas applied", t.applied);
    counter(
        &mut reg,
        "deltas_duplicate",
        "Deltas received that were already held",
        t.duplicates,
    );
    counter(
        &mut reg,
        "conflicts",
        "Deltas that lost to, or displaced, another delta for the same key",
        t.conflicts,
    );
    counter(
        &mut reg,
        "deltas_retracted",
        "Deltas removed because a newer roster revoked their author",
        t.retracted,
    );
    let refused = Family::<Labels, Counter>::default();
    for (reason, n) in &t.refused {
        refused
            .get_or_create(&vec![("reason", reason.clone())])
            .inc_by(*n);
    }
    reg.register("deltas_refused", "Deltas refused, by reason", refused);
    let messages = Family::<Labels, Counter>::default();
    for (code, n) in &t.refused_messages {
        messages
            .get_or_create(&vec![("code", code.clone())])
            .inc_by(*n);
    }
    reg.register(
        "messages_refused",
        "Whole peer messages refused, by code",
        messages,
    );
    let tls_refused = t.connections_refused.get("tls_refused").copied();
    counter(
        &mut reg,
        "handshakes_refused",
        "TLS handshakes refused (unknown, revoked or missing certificates)",
        tls_refused.unwrap_or(0),
    );
    let conns = Family::<Labels, Counter>::default();
    for (reason, n) in &t.connections_refused {
        conns
            .get_or_create(&vec![("reason", reason.clone())])
            .inc_by(*n);
    }
    reg.register(
        "connections_refused",
        "Connections refused before or at authentication, by reason",
        conns,
    );
    gauge(
        &mut reg,
        "handshakes_pending",
        "TLS handshakes in progress (places a stranger can hold)",
        clamp(t.handshakes_pending),
    );
    gauge(
        &mut reg,
        "deltas_held",
        "Deltas held in the store (the sum of every author's head)",
        clamp(t.deltas),
    );
    gauge(
        &mut reg,
        "records",
        "Records in the store, tombstones included",
        clamp(t.records),
    );
    gauge(
        &mut reg,
        "quarantined",
        "Refused deltas kept in quarantine",
        clamp(t.quarantined),
    );
    gauge(
        &mut reg,
        "waiting_for_gap",
        "Deltas held until an earlier one arrives",
        clamp(t.held),
    );
    gauge_unit(
        &mut reg,
        "store_size",
        "Size of the store on disk",
        Unit::Bytes,
        clamp(t.store_bytes),
    );
    peers(&mut reg, s);
    reg.register_with_unit(
        "rpc_duration",
        "Time until an RPC's response starts (for streams: until the stream opens), by method",
        Unit::Seconds,
        rpc.durations.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

/// The classic Prometheus text format (0.0.4) from OpenMetrics text, for
/// scrapers that do not ask for OpenMetrics (promtool among them): in the
/// classic format a counter's family is named with its `_total` suffix, and
/// there are no `# UNIT` or `# EOF` lines.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn peers(reg: &mut Registry, s: &NodeStatus) {
    let state = Family::<Labels, Gauge>::default();
    let connected = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge>::default();
    let lag_secs = Family::<Labels, Gauge>::default();
    let sent = Family::<Labels, Counter>::default();
    let received = Family::<Labels, Counter>::default();
    let rounds = Family::<Labels, Counter>::default();
    let refused_by_peer = Family::<Labels, Counter>::default();
    let delta_bytes = Family::<Labels, Counter>::default();
    let rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let rate = Family::<Labels, Gauge>::default();
    let cap = Family::<Labels, Gauge>::default();
    let in_flight = Family::<Labels, Gauge>::default();
    let eta = Family::<Labels, Gauge>::default();
    // Operators are members, not peers: nothing to sync with them.
    for p in s.peers.iter().filter(|p| p.state != PeerState::Operator) {
        let peer = || vec![("peer", p.name.clone())];
        for st in ALL_STATES {
            let mut l = peer();
            l.push(("state", st.as_str().to_owned()));
            state.get_or_create(&l).set((p.state == st) as i64);
        }
        connected.get_or_create(&peer()).set((p.links > 0) as i64);
        if let Some(lags) = p.lags {
            for (dir, l) in [("they_lack", lags.they_lack), ("we_lack", lags.we_lack)] {
                let mut labels = peer();
                labels.push(("direction", dir.to_owned()));
                lag.get_or_create(&labels).set(clamp(l.deltas));
                let secs = l.since_ms.map_or(0, |t| s.now_ms.saturating_sub(t) / 1000);
                lag_secs.get_or_create(&labels).set(clamp(secs));
            }
        }
        sent.get_or_create(&peer()).inc_by(p.traffic.bytes_sent);
        received
            .get_or_create(&peer())
            .inc_by(p.traffic.bytes_received);
        rounds.get_or_create(&peer()).inc_by(p.traffic.sync_rounds);
        refused_by_peer
            .get_or_create(&peer())
            .inc_by(p.refused_by_peer);
        let t = &p.traffic;
        for (dir, n) in [
            ("sent", t.delta_bytes_sent),
            ("received", t.delta_bytes_received),
            ("acked", t.delta_bytes_acked),
        ] {
            let mut labels = peer();
            labels.push(("direction", dir.to_owned()));
            delta_bytes.get_or_create(&labels).inc_by(n);
        }
        if let Some(pace) = p.pace {
            if let Some(ms) = pace.rtt_ms {
                rtt.get_or_create(&peer()).set(ms as f64 / 1000.0);
            }
            if let Some(r) = pace.rate_bytes_per_sec {
                rate.get_or_create(&peer()).set(clamp(r));
            }
            if let Some(c) = pace.rate_cap_bytes_per_sec {
                cap.get_or_create(&peer()).set(clamp(c));
            }
            in_flight
                .get_or_create(&peer())
                .set(clamp(pace.in_flight_bytes));
            if let Some(s) = pace.catch_up_eta_secs {
                eta.get_or_create(&peer()).set(clamp(s));
            }
        }
    }
    reg.register(
        "peer_state",
        "1 for the state each roster member is in, as this node sees it",
        state,
    );
    reg.register(
        "peer_connected",
        "1 while at least one link with the peer is open",
        connected,
    );
    reg.register(
        "peer_lag_deltas",
        "Deltas one side holds that the other lacks (they_lack: the peer lacks ours)",
        lag,
    );
    reg.register_with_unit(
        "peer_lag",
        "How long the gap in each direction has been open",
        Unit::Seconds,
        lag_secs,
    );
    reg.register_with_unit(
        "peer_sent",
        "Bytes sent to the peer (protobuf messages)",
        Unit::Bytes,
        sent,
    );
    reg.register_with_unit(
        "peer_received",
        "Bytes received from the peer (protobuf messages)",
        Unit::Bytes,
        received,
    );
    reg.register(
        "peer_sync_rounds",
        "Frontier comparisons completed with the peer",
        rounds,
    );
    reg.register(
        "peer_refused_ours",
        "Deltas the peer reported refusing (duplicates aside)",
        refused_by_peer,
    );
    reg.register_with_unit(
        "peer_delta",
        "Encoded bytes of deltas in batches before compression: sent, received, and of those sent acknowledged by the peer",
        Unit::Bytes,
        delta_bytes,
    );
    reg.register_with_unit(
        "peer_rtt",
        "Round trip of the open link, from answered digests",
        Unit::Seconds,
        rtt,
    );
    reg.register(
        "peer_delivery_rate_bytes",
        "Delta bytes per second the peer acknowledges on the open link",
        rate,
    );
    reg.register(
        "peer_rate_cap_bytes",
        "Bytes per second the open link's connection may send (`[[peers]] rate_kbit`)",
        cap,
    );
    reg.register_with_unit(
        "peer_in_flight",
        "Delta bytes sent on the open link and not yet acknowledged",
        Unit::Bytes,
        in_flight,
    );
    reg.register_with_unit(
        "peer_catch_up_eta",
        "While the peer lacks our deltas: when it will hold them at the measured rate",
        Unit::Seconds,
        eta,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_with_total_and_drops_openmetrics_lines() {
        let om = "# HELP a_applied Deltas applied.\n# TYPE a_applied counter\na_applied_total 3\n\
                  # HELP a_size Size.\n# TYPE a_size gauge\n# UNIT a_size bytes\na_size 9\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP a_applied_total Deltas applied.\n# TYPE a_applied_total counter\na_applied_total 3\n\
             # HELP a_size Size.\n# TYPE a_size gauge\na_size 9\n"
        );
    }

    #[test]
    fn rpc_labels_stay_bounded() {
        let m = RpcMetrics::default();
        m.observe("/fedsync.v1.Client/Put", 0.001);
        m.observe("/made/up/1", 0.001);
        m.observe("/made/up/2", 0.001);
        let has = |method: &str| {
            m.durations
                .get(&vec![("method", method.to_owned())])
                .is_some()
        };
        assert!(has("fedsync.v1.Client/Put"));
        assert!(has("other"), "unknown paths share one label");
        assert!(!has("made/up/1") && !has("/made/up/1"));
    }
}

//! Outbound links: each configured peer gets a task that dials it, runs
//! the sync stream until it breaks, and dials again after a capped,
//! jittered backoff. A link that got as far as syncing resets the backoff,
//! so a peer that returns after an outage is resynced at once, after a
//! spread that grows with the federation: when a hub restarts, its
//! hundreds of offices do not all dial it in the same instant. A dial the
//! peer refused for capacity backs off faster than one that got no answer,
//! since dialling again at once only adds to the peer's load.
//!
//! A dial that found no one there (refused, unreachable, timed out) does
//! not back off at all: an office's only line comes back after a
//! blackout, and the link should follow within a second or two, not
//! after the backoff's last step. A probe every second or so costs one
//! SYN; the peer's door bounds the storm when a hub comes back to
//! hundreds of probing offices, and refuses the excess for capacity,
//! which does back off.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tracing::Instrument;

use super::actor::Command;
use super::link::{self, LinkContext};
use super::link_info::LinkPeer;
use super::net;
use crate::config::{PeerConfig, SyncConfig};
use crate::identity::tls::TrustStore;
use crate::rpc::pb::peer_client::PeerClient;
use tokio_stream::StreamExt;

pub(crate) struct Dialer {
    pub ctx: LinkContext,
    pub peer: PeerConfig,
    pub tls: Arc<rustls::ClientConfig>,
    pub trust: TrustStore,
    pub sync: SyncConfig,
    pub message_bytes_max: usize,
    pub net: Arc<dyn super::Network>,
    /// Seeds the jitter (the simulation's); `None` draws it from the OS.
    pub seed: Option<u64>,
}

impl Dialer {
    /// Runs inside a span naming the peer, so every line it and its link
    /// log says which peer it is about.
    pub(crate) async fn run(self, shutdown: watch::Receiver<bool>) {
        let span = tracing::info_span!("link", peer = %self.peer.name, address = %self.peer.address, dir = "out");
        self.dial_forever(shutdown).instrument(span).await
    }

    async fn dial_forever(self, mut shutdown: watch::Receiver<bool>) {
        let (min, max) = (self.sync.reconnect_min(), self.sync.reconnect_max());
        let mut backoff = min;
        let mut rng = match self.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        let mut away = Away::default();
        loop {
            let outcome = tokio::select! {
                r = self.once() => r,
                _ = shutdown.changed() => return,
            };
            let name = self.peer.name.clone();
            if !matches!(outcome, Outcome::Unreachable(_)) {
                away.back();
            }
            let (report, delay) = match outcome {
                Outcome::Unreachable(why) => {
                    away.failed(&why);
                    let text = format!("dial failed: {why}");
                    let delay = jittered(PROBE_INTERVAL.max(min), &mut rng);
                    (Command::PeerError { name, text }, delay)
                }
                Outcome::Ended(why) => {
                    tracing::info!(%why, "link ended; redialling");
                    backoff = min;
                    let spread = herd_spread(self.nodes());
                    let text = format!("link ended: {why}");
                    let delay = min + spread.mul_f64(rng.gen_range(0.0..=1.0));
                    (Command::PeerError { name, text }, delay)
                }
                Outcome::Failed(why) => {
                    tracing::warn!(%why, "dial failed");
                    let text = format!("dial failed: {why}");
                    let delay = jittered(backoff, &mut rng);
                    backoff = (backoff * 2).min(max);
                    (Command::PeerError { name, text }, delay)
                }
                Outcome::Refused(why) => {
                    tracing::warn!(%why, "dial refused by the peer");
                    backoff = (backoff * 2).max(REFUSED_BACKOFF_MIN).min(max);
                    let delay = jittered(backoff, &mut rng);
                    (Command::PeerRefused { name, text: why }, delay)
                }
            };
            if self.ctx.actor.send(report).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Active nodes in the roster: how many may dial a hub at once.
    fn nodes(&self) -> usize {
        let roster = self.ctx.roster.borrow();
        roster
            .members()
            .filter(|m| m.is_node() && m.is_active())
            .count()
    }

    /// One connection, and how it ended.
    async fn once(&self) -> Outcome {
        match self.link().await {
            Ok(why) => Outcome::Ended(why),
            Err(Failure::Refused(why)) => Outcome::Refused(why),
            Err(Failure::Unreachable(why)) => Outcome::Unreachable(why),
            Err(Failure::Other(why)) => Outcome::Failed(why),
        }
    }

    /// `Ok` with why the link ended once it synced, `Err` if it never got
    /// that far.
    async fn link(&self) -> Result<String, Failure> {
        let (channel, line) = net::connect(
            self.net.clone(),
            self.peer.address.clone(),
            Some(self.peer.name.clone()),
            self.tls.clone(),
            self.trust.clone(),
            self.sync.clone(),
            self.message_bytes_max,
        )?;
        let id = self
            .ctx
            .roster
            .borrow()
            .by_name(&self.peer.name)
            .filter(|m| m.is_node() && m.is_active())
            .map(|m| m.id)
            .ok_or_else(|| {
                Failure::Other(format!(
                    "{} is not an active node in the roster",
                    self.peer.name
                ))
            })?;
        let peer = LinkPeer {
            name: self.peer.name.clone(),
            id,
            inbound: false,
            address: self.peer.address.clone(),
        };
        let (open, outbound) = link::open(self.ctx.clone(), peer)
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
        // A request stream carries no status: it just ends.
        let outbound = outbound.map_while(Result::ok);
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(self.message_bytes_max)
            .max_encoding_message_size(self.message_bytes_max);
        let answer = match link::answered(&self.ctx, &open, &line, client.sync(outbound)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => {
                let why = format!("sync failed: {}", net::error_chain(&status));
                Err(match status.code() {
                    tonic::Code::ResourceExhausted => Failure::Refused(why),
                    _ if nobody_there(&status) => Failure::Unreachable(why),
                    _ => Failure::Other(why),
                })
            }
            // Silent since the handshake: nobody answering, as far as
            // redialling goes, so it probes again soon.
            Err(why) => Err(Failure::Unreachable(format!(
                "no answer to the link request: {why}"
            ))),
        };
        let inbound = match answer {
            Ok(inbound) => inbound,
            Err(failure) => {
                let _ = self
                    .ctx
                    .actor
                    .send(Command::LinkClosed { link: open.id })
                    .await;
                return Err(failure);
            }
        };
        tracing::info!("link up");
        let name = self.peer.name.clone();
        Ok(link::read(self.ctx.clone(), open, name, inbound, line).await)
    }
}

/// The shortest backoff after the peer refused us for capacity.
const REFUSED_BACKOFF_MIN: Duration = Duration::from_secs(2);
/// Redials after a link ends spread over this much per node in the
/// roster, up to [`HERD_SPREAD_MAX`]: 200 offices over 5 s.
const HERD_SPREAD_PER_NODE: Duration = Duration::from_millis(25);
const HERD_SPREAD_MAX: Duration = Duration::from_secs(15);

/// How often a peer that is not there is dialled again (jittered down
/// to half): the delay between a line's return and its link.
const PROBE_INTERVAL: Duration = Duration::from_millis(1000);
/// While a peer stays unreachable, a line says so this often, not at
/// every probe.
const AWAY_LOG_EVERY: Duration = Duration::from_secs(300);

/// How a connection to the peer ended.
enum Outcome {
    /// Nobody answered at the address: refused, unreachable, timed out.
    Unreachable(String),
    /// It synced, then ended (why).
    Ended(String),
    /// It never got as far as syncing: no answer, TLS, or the stream.
    Failed(String),
    /// The peer refused it for capacity (RESOURCE_EXHAUSTED).
    Refused(String),
}

enum Failure {
    Refused(String),
    Unreachable(String),
    Other(String),
}

/// Whether `e` says the TCP connection never opened: the line or the
/// peer is down, rather than anything the peer said.
fn nobody_there(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionRefused
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | NetworkDown
                    | AddrNotAvailable
            );
        }
        cause = c.source();
    }
    false
}

/// An outage of the peer as the log tells it: its first failed probe,
/// then a line every [`AWAY_LOG_EVERY`], then its end.
#[derive(Default)]
struct Away {
    since: Option<tokio::time::Instant>,
    logged: Option<tokio::time::Instant>,
    probes: u64,
}

impl Away {
    fn failed(&mut self, why: &str) {
        let now = tokio::time::Instant::now();
        self.probes += 1;
        let since = *self.since.get_or_insert(now);
        match self.logged {
            None => tracing::warn!(%why, "dial failed: nobody there; probing"),
            Some(at) if now - at >= AWAY_LOG_EVERY => tracing::warn!(
                %why,
                away_secs = (now - since).as_secs(),
                probes = self.probes,
                "peer still unreachable"
            ),
            Some(_) => return,
        }
        self.logged = Some(now);
    }

    fn back(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                away_secs = since.elapsed().as_secs(),
                probes = self.probes,
                "peer reachable again"
            );
        }
        *self = Away::default();
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure::Other(why)
    }
}

/// How widely redials after a lost link spread, for `nodes` in the roster.
fn herd_spread(nodes: usize) -> Duration {
    HERD_SPREAD_PER_NODE
        .saturating_mul(nodes.min(u32::MAX as usize) as u32)
        .min(HERD_SPREAD_MAX)
}

/// Somewhere in [delay/2, delay], so offices that lost the same link do
/// not all redial in the same instant.
fn jittered(delay: Duration, rng: &mut impl Rng) -> Duration {
    let ms = delay.as_millis().max(2) as u64;
    Duration::from_millis(rng.gen_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_spread_with_the_federation_up_to_a_bound() {
        assert_eq!(herd_spread(2), Duration::from_millis(50));
        assert_eq!(herd_spread(200), Duration::from_secs(5));
        assert_eq!(herd_spread(100_000), HERD_SPREAD_MAX);
        // 200 offices redialling a restarted hub: no 250 ms window holds
        // more than a small share of them.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let spread = herd_spread(200);
        let mut per_window = [0u32; 21];
        for _ in 0..200 {
            let at = spread.mul_f64(rng.gen_range(0.0..=1.0));
            per_window[(at.as_millis() / 250) as usize] += 1;
        }
        assert!(per_window.iter().all(|n| *n <= 25), "{per_window:?}");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn only_a_connection_that_never_opened_counts_as_nobody_there() {
        use std::io::{Error, ErrorKind};
        for kind in [ErrorKind::ConnectionRefused, ErrorKind::TimedOut] {
            assert!(nobody_there(&Wrapped(Error::new(kind, "x"))), "{kind:?}");
        }
        // The peer answered: a TLS or certificate failure is not a line
        // that is down, and keeps backing off.
        let denied = Wrapped(Error::new(ErrorKind::PermissionDenied, "certificate"));
        assert!(!nobody_there(&denied));
        assert!(!nobody_there(&tonic::Status::internal("decode")));
    }

    #[test]
    fn jitter_stays_within_half_to_whole_delay() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(400), &mut rng);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }
}

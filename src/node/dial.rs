//! Outbound links: each configured peer gets a task that dials it, runs
//! the sync stream until it breaks, and dials again after a capped,
//! jittered backoff. A link that got as far as syncing resets the backoff,
//! so a peer that returns after an outage is resynced at once.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tracing::Instrument;

use super::actor::Command;
use super::link::{self, LinkContext, LinkPeer};
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
        let mut backoff = self.sync.reconnect_min();
        let mut rng = match self.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_entropy(),
        };
        loop {
            let synced = tokio::select! {
                r = self.once() => r,
                _ = shutdown.changed() => return,
            };
            let error = match synced {
                Ok(why) => {
                    tracing::info!(%why, "link ended; redialling");
                    backoff = self.sync.reconnect_min();
                    format!("link ended: {why}")
                }
                Err(why) => {
                    tracing::warn!(%why, "dial failed");
                    format!("dial failed: {why}")
                }
            };
            let name = self.peer.name.clone();
            let report = Command::PeerError { name, text: error };
            if self.ctx.actor.send(report).await.is_err() {
                return;
            }
            let delay = jittered(backoff, &mut rng);
            backoff = (backoff * 2).min(self.sync.reconnect_max());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One connection: `Ok` with why it ended once it synced, `Err` if it
    /// never got that far.
    async fn once(&self) -> Result<String, String> {
        let channel = net::connect(
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
            .ok_or_else(|| format!("{} is not an active node in the roster", self.peer.name))?;
        let peer = LinkPeer {
            name: self.peer.name.clone(),
            id,
            inbound: false,
            address: self.peer.address.clone(),
        };
        let (open, outbound) = link::open(self.ctx.clone(), peer)
            .await
            .map_err(|e| e.to_string())?;
        // A request stream carries no status: it just ends.
        let outbound = outbound.map_while(Result::ok);
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(self.message_bytes_max)
            .max_encoding_message_size(self.message_bytes_max);
        let inbound = match client.sync(outbound).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let _ = self
                    .ctx
                    .actor
                    .send(Command::LinkClosed { link: open.id })
                    .await;
                return Err(format!("sync failed: {}", net::error_chain(&status)));
            }
        };
        tracing::info!("link up");
        Ok(link::read(self.ctx.clone(), open, self.peer.name.clone(), inbound).await)
    }
}

/// Somewhere in [delay/2, delay], so offices that lost the same link do
/// not all redial in the same instant.
fn jittered(delay: Duration, rng: &mut impl Rng) -> Duration {
    let ms = delay.as_millis().max(2) as u64;
    Duration::from_millis(rng.gen_range(ms / 2..=ms))
}

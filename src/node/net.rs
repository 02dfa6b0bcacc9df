//! Sockets and TLS: the listener that hands tonic only connections whose
//! certificate the roster pins, and the connector a node dials peers with.
//!
//! tonic's own TLS takes a CA, not a verifier, so the handshake happens
//! here with tokio-rustls and our pinned verifier (`identity::tls`), and
//! tonic serves the already-authenticated stream. The peer's roster
//! identity rides along as tonic connect info, so a handler knows who
//! called without looking at a certificate again.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use super::env::{BoxIo, Listener, Network};
use crate::config::SyncConfig;
use crate::identity::tls::{peer_of, Fingerprint, Peer, TrustStore, WakerSlot};

/// The name every fedsync certificate carries besides the node's own; the
/// pinned verifier ignores names, but standard clients need one to send.
pub const TLS_SERVER_NAME: &str = "fedsync";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a served connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: Peer,
    /// The certificate the peer presented: handlers check it is still
    /// trusted at every call, since a roster change may revoke it.
    pub fingerprint: Fingerprint,
    pub remote: SocketAddr,
    /// Set when the peer already has its limit of connections open: every
    /// call on this one is refused with this reason.
    pub over_limit: Option<String>,
}

/// Open connections per peer certificate, each held by a [`PeerSlot`].
#[derive(Clone, Default)]
pub(crate) struct PeerConns {
    counts: Arc<Mutex<HashMap<Fingerprint, usize>>>,
}

/// One connection's place in [`PeerConns`], given back on drop.
pub(crate) struct PeerSlot {
    conns: PeerConns,
    fp: Fingerprint,
}

impl PeerConns {
    /// Counts a new connection from `fp`; returns its slot and how many
    /// connections the peer now has open.
    fn enter(&self, fp: Fingerprint) -> (PeerSlot, usize) {
        let mut counts = self.counts.lock().expect("peer conns lock poisoned");
        let n = counts.entry(fp).or_default();
        *n += 1;
        let now = *n;
        let slot = PeerSlot {
            conns: self.clone(),
            fp,
        };
        (slot, now)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.conns.counts.lock().expect("peer conns lock poisoned");
        if let Some(n) = counts.get_mut(&self.fp) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.fp);
            }
        }
    }
}

/// An authenticated inbound connection. Holds a slot of the connection
/// limit for as long as it lives, and fails its next read or write once a
/// roster change stops trusting its certificate: a revoked peer's open
/// connections close at once, not at its next handshake.
pub(crate) struct TlsConn {
    io: tokio_rustls::server::TlsStream<BoxIo>,
    info: ConnInfo,
    trust: TrustStore,
    /// The trust epoch this connection last checked itself against.
    seen: u64,
    waker: Arc<WakerSlot>,
    _slot: OwnedSemaphorePermit,
    _peer_slot: PeerSlot,
}

impl TlsConn {
    /// `Err` once the certificate is no longer trusted. Otherwise leaves
    /// the task's waker where a roster change will find it.
    fn still_trusted(&mut self, cx: &Context<'_>) -> io::Result<()> {
        let epoch = self.trust.epoch();
        if epoch != self.seen {
            if self.trust.get(&self.info.fingerprint).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{}: certificate revoked by a roster change",
                        self.info.peer.name
                    ),
                ));
            }
            self.seen = epoch;
        }
        let mut slot = self.waker.lock().expect("waker slot poisoned");
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.still_trusted(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.still_trusted(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts TCP connections, runs each TLS handshake on its own task (a
/// slow handshake does not hold up others), and yields the authenticated
/// ones. At most `links_max` connections, handshaking or open, at once.
/// Handshakes refused so far (a count operators and tests can await).
pub(crate) type RefusedCount = tokio::sync::watch::Sender<u64>;

/// Connection limits the listener applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Connections, handshaking or open, at once.
    pub total: usize,
    /// Open connections per peer certificate.
    pub per_peer: usize,
}

pub(crate) fn incoming(
    mut listener: Box<dyn Listener>,
    acceptor: TlsAcceptor,
    trust: TrustStore,
    limits: ConnLimits,
    refused: Arc<RefusedCount>,
) -> (mpsc::Receiver<io::Result<TlsConn>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(limits.total));
    let per_peer = PeerConns::default();
    let links_max = limits.total;
    let task = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote, links_max, "connection refused: limit reached");
                continue;
            };
            let (acceptor, trust, tx) = (acceptor.clone(), trust.clone(), tx.clone());
            let (refused, per_peer) = (refused.clone(), per_peer.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let io = match handshake.await {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "TLS handshake refused");
                        refused.send_modify(|n| *n += 1);
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                // The verifier accepted the certificate, so it is pinned.
                let Some((peer, fingerprint)) = peer_of(&trust, io.get_ref().1.peer_certificates())
                else {
                    tracing::warn!(%remote, "certificate left the roster during the handshake");
                    refused.send_modify(|n| *n += 1);
                    return;
                };
                let (peer_slot, open) = per_peer.enter(fingerprint);
                // Served anyway, so the peer hears why in a gRPC status
                // rather than seeing its connection drop.
                let over_limit = (open > limits.per_peer).then(|| {
                    tracing::warn!(peer = %peer.name, %remote, open, "connection over the per-peer limit");
                    format!(
                        "{} already has {} connections open to this node (limit {})",
                        peer.name,
                        open - 1,
                        limits.per_peer
                    )
                });
                let conn = TlsConn {
                    io,
                    info: ConnInfo {
                        peer,
                        fingerprint,
                        remote,
                        over_limit,
                    },
                    waker: trust.watch(),
                    seen: trust.epoch(),
                    trust,
                    _slot: slot,
                    _peer_slot: peer_slot,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    (rx, task)
}

/// Dials `address`, completes mutual TLS, and checks the server is a roster
/// node, and the one named `expected` when given (a peer link must reach
/// the member it was configured for, not merely some member).
pub fn connect(
    net: Arc<dyn Network>,
    address: String,
    expected: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    trust: TrustStore,
    sync: SyncConfig,
    message_bytes_max: usize,
) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad address {address:?}: {e}"))?
        .connect_timeout(sync.connect_timeout())
        .http2_keep_alive_interval(sync.keepalive())
        .keep_alive_timeout(sync.keepalive_timeout())
        .keep_alive_while_idle(true)
        .initial_stream_window_size(super::window(message_bytes_max))
        .initial_connection_window_size(super::window(message_bytes_max))
        .tcp_nodelay(true);
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (address, expected) = (address.clone(), expected.clone());
        let (tls, trust, net) = (tls.clone(), trust.clone(), net.clone());
        async move {
            let tcp = net.connect(address.clone()).await?;
            let name = ServerName::try_from(TLS_SERVER_NAME).expect("a valid DNS name");
            let io = TlsConnector::from(tls).connect(name, tcp).await?;
            let found = peer_of(&trust, io.get_ref().1.peer_certificates()).map(|(p, _)| p);
            match found {
                Some(p) if p.node.is_some() && expected.as_ref().is_none_or(|e| &p.name == e) => {
                    Ok(TokioIo::new(io))
                }
                other => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{address} presented the certificate of {}, expected {}",
                        other.map_or("nobody in the roster".into(), |p| p.name),
                        expected.as_deref().unwrap_or("a node")
                    ),
                )),
            }
        }
    });
    // Lazy: the first call connects (and reports a failure). The eager
    // variant's future borrows the endpoint, which rustc cannot prove
    // `Send` for every lifetime once spawned.
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// An error and its causes on one line: tonic's top-level message alone
/// ("transport error") tells an operator nothing.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

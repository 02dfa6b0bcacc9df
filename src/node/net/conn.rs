//! An authenticated inbound connection: who it is, its member's share of
//! connections, and the check that closes it once a roster change stops
//! trusting its certificate.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use super::alive::Alive;
use super::cap::Capped;
use super::Line;
use crate::identity::tls::{leave_waker, Fingerprint, Peer, TrustStore, WakerSlot};
use crate::node::env::BoxIo;

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
    /// When the connection last heard from the peer (a link over it is
    /// judged alive by this), and its send cap.
    pub line: Line,
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
    pub(super) fn enter(&self, fp: Fingerprint) -> (PeerSlot, usize) {
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

/// An authenticated inbound connection. Holds its member's slot for as
/// long as it lives, and fails its next read or write once a
/// roster change stops trusting its certificate: a revoked peer's open
/// connections close at once, not at its next handshake.
pub(crate) struct TlsConn {
    io: Alive<Capped<tokio_rustls::server::TlsStream<BoxIo>>>,
    info: ConnInfo,
    trust: TrustStore,
    /// The trust epoch this connection last checked itself against.
    seen: u64,
    waker: Arc<WakerSlot>,
    _peer_slot: PeerSlot,
}

impl TlsConn {
    pub(super) fn new(
        io: tokio_rustls::server::TlsStream<BoxIo>,
        info: ConnInfo,
        trust: TrustStore,
        peer_slot: PeerSlot,
    ) -> TlsConn {
        TlsConn {
            io: Alive::new(
                Capped::new(io, info.line.cap.clone()),
                info.line.alive.clone(),
            ),
            info,
            waker: trust.watch(),
            seen: trust.epoch(),
            trust,
            _peer_slot: peer_slot,
        }
    }

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
        leave_waker(&self.waker, cx.waker());
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

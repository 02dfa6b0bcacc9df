//! The accept loop and each connection's handshake. A connection first
//! takes a place in the [`Door`] (or is turned away at once, costing one
//! accept and one close), then has a short deadline for its ClientHello
//! and a longer one for the rest of the handshake, and leaves the door as
//! soon as the handshake ends. Only then is it a member's connection,
//! bounded per member: a stranger can never hold one of those.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;

use super::conn::{ConnInfo, PeerConns, TlsConn};
use super::door::{Admitted, Door, DoorLimits, Full};
use super::refusals::{ConnRefusal, ConnRefusals, LOG_INTERVAL};
use crate::identity::tls::{peer_of, TrustStore};
use crate::node::env::{BoxIo, Listener};

/// What the listener enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListenLimits {
    pub door: DoorLimits,
    /// From accept to a complete ClientHello.
    pub hello_timeout: Duration,
    /// From accept to the end of the handshake.
    pub handshake_timeout: Duration,
    /// Open connections per member certificate. One more is served only
    /// to tell the member why its calls are refused; beyond that a
    /// connection is closed at once.
    pub per_member: usize,
}

/// Told of a member refused for its connection limit: its name and why.
pub(crate) type OnMemberRefused = Arc<dyn Fn(String, String) + Send + Sync>;

/// What the accept loop needs besides its listener.
pub(crate) struct Incoming {
    pub tls: Arc<rustls::ServerConfig>,
    pub trust: TrustStore,
    pub limits: ListenLimits,
    pub refusals: ConnRefusals,
    pub on_member_refused: OnMemberRefused,
}

/// Accepts connections and yields the authenticated ones. Each handshake
/// runs on its own task, so a slow one holds up nothing but its place.
pub(crate) fn incoming(
    mut listener: Box<dyn Listener>,
    inc: Incoming,
) -> (mpsc::Receiver<io::Result<TlsConn>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let door = Door::new(inc.limits.door, inc.refusals.pending_gauge());
    let members = PeerConns::default();
    let inc = Arc::new(inc);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(LOG_INTERVAL);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tick.tick() => {
                    inc.refusals.tick();
                    continue;
                }
            };
            let (tcp, remote) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let from = source(remote.ip());
            // A real client sends its ClientHello with its first packet, so
            // it is usually here already: such a connection is let in ahead
            // of any that has not spoken (see the door).
            let mut hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
            let early = poll_once(&mut hello);
            let talker = matches!(early, Some(Ok(_)));
            let admitted = match door.admit(from, talker) {
                Ok(a) => a,
                Err(full) => {
                    let why = match full {
                        Full::Pending => ConnRefusal::PendingFull,
                        Full::Source => ConnRefusal::SourceFull,
                    };
                    inc.refusals.refuse(why, from, "");
                    continue; // dropping the connection closes it
                }
            };
            if admitted.displaced {
                inc.refusals.refuse(ConnRefusal::Evicted, from, "");
            }
            let (inc, tx, members) = (inc.clone(), tx.clone(), members.clone());
            tokio::spawn(async move {
                let hello = match early {
                    Some(result) => Hello::Arrived(result),
                    None => Hello::Waiting(hello),
                };
                if let Some(conn) = serve(&inc, &members, hello, remote, admitted).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    (rx, task)
}

type Acceptor = LazyConfigAcceptor<BoxIo>;
type StartHandshake = tokio_rustls::StartHandshake<BoxIo>;

/// A connection's ClientHello: read already, or still to come.
enum Hello {
    Arrived(io::Result<StartHandshake>),
    Waiting(Acceptor),
}

/// Polls the ClientHello once, without waiting: `Some` if it is complete
/// (or broken) with what the socket holds now.
fn poll_once(hello: &mut Acceptor) -> Option<io::Result<StartHandshake>> {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(hello).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// One connection from accept to an authenticated [`TlsConn`], or `None`
/// (counted and, at a bounded rate, logged) if it never gets there.
async fn serve(
    inc: &Incoming,
    members: &PeerConns,
    hello: Hello,
    remote: SocketAddr,
    admitted: Admitted,
) -> Option<TlsConn> {
    let Admitted {
        ticket,
        mut evicted,
        ..
    } = admitted;
    let started = tokio::time::Instant::now();
    let refuse = |why: ConnRefusal, detail: &str| {
        inc.refusals.refuse(why, remote.ip(), detail);
        None
    };
    let limits = inc.limits;
    let arrived = match hello {
        Hello::Arrived(r) => r,
        Hello::Waiting(acceptor) => tokio::select! {
            r = tokio::time::timeout(limits.hello_timeout, acceptor) => match r {
                Ok(r) => r,
                Err(_) => return refuse(ConnRefusal::HelloTimeout, ""),
            },
            // Counted when the newcomer was admitted.
            _ = &mut evicted => return None,
        },
    };
    let start = match arrived {
        Ok(start) => start,
        Err(e) => return refuse(failed(&e), &e.to_string()),
    };
    ticket.hello();
    let left = limits.handshake_timeout.saturating_sub(started.elapsed());
    let mut io = match tokio::time::timeout(left, start.into_stream(inc.tls.clone())).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return refuse(failed(&e), &e.to_string()),
        Err(_) => return refuse(ConnRefusal::HandshakeTimeout, ""),
    };
    drop(ticket);
    io.get_mut()
        .1
        .set_buffer_limit(Some(super::TLS_SEND_BUFFER));
    // The verifier accepted the certificate, so it is pinned.
    let Some((peer, fingerprint)) = peer_of(&inc.trust, io.get_ref().1.peer_certificates()) else {
        return refuse(
            ConnRefusal::Tls,
            "certificate left the roster during the handshake",
        );
    };
    let (slot, open) = members.enter(fingerprint);
    let over_limit = if open > limits.per_member {
        let why = format!(
            "{} already has {} connections open to this node (limit {})",
            peer.name,
            open - 1,
            limits.per_member
        );
        inc.refusals
            .refuse(ConnRefusal::MemberLimit, remote.ip(), &why);
        (inc.on_member_refused)(peer.name.clone(), why.clone());
        if open > limits.per_member + 1 {
            return None; // already told on the connection it is served
        }
        // Served anyway, so the member hears why in a gRPC status rather
        // than seeing its connection drop.
        Some(why)
    } else {
        None
    };
    let info = ConnInfo {
        peer,
        fingerprint,
        remote,
        over_limit,
        line: super::Line::default(),
    };
    Some(TlsConn::new(io, info, inc.trust.clone(), slot))
}

/// Why a handshake failed: the client went away, or TLS refused it.
fn failed(e: &io::Error) -> ConnRefusal {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => ConnRefusal::Abandoned,
        _ => ConnRefusal::Tls,
    }
}

/// A source as the door counts it: an IPv4 address (also when seen through
/// an IPv6 socket), or an IPv6 /64, the block one subscriber is given.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::source;
    use std::net::IpAddr;

    #[test]
    fn sources_are_ipv4_addresses_or_ipv6_blocks() {
        let v4: IpAddr = "198.18.0.7".parse().unwrap();
        assert_eq!(source(v4), v4);
        assert_eq!(source("::ffff:198.18.0.7".parse().unwrap()), v4);
        let a = source("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = source("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(a, source("2001:db8:1:3::1".parse().unwrap()));
    }
}

//! Sockets and TLS: the listener that hands tonic only connections whose
//! certificate the roster pins, and the connector a node dials peers with.
//!
//! tonic's own TLS takes a CA, not a verifier, so the handshake happens
//! here with tokio-rustls and our pinned verifier (`identity::tls`), and
//! tonic serves the already-authenticated stream. The peer's roster
//! identity rides along as tonic connect info, so a handler knows who
//! called without looking at a certificate again.
//!
//! - `door.rs`: the places a stranger can take (handshakes in progress),
//!   bounded per source and in all, silent connections giving way first;
//! - `listen.rs`: the accept loop and each connection's handshake;
//! - `conn.rs`: an authenticated connection, bounded per member, that
//!   fails once a roster change stops trusting its certificate;
//! - `refusals.rs`: refused connections counted by reason, logged at a
//!   bounded rate;
//! - `alive.rs`: when a connection last heard from its peer, and the
//!   switch that cuts it;
//! - `cap.rs`: the most a connection may send per second.

mod alive;
mod cap;
mod conn;
mod door;
mod listen;
mod refusals;

use std::io;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::env::Network;
use crate::config::SyncConfig;
use crate::identity::tls::{peer_of, TrustStore};

use alive::Alive;
pub use alive::Liveness;
use cap::Capped;
pub use cap::SendCap;
pub use conn::ConnInfo;
pub(crate) use door::DoorLimits;
pub(crate) use listen::{incoming, Incoming, ListenLimits, OnMemberRefused};
pub use refusals::{ConnRefusal, ConnRefusals};

/// The name every fedsync certificate carries besides the node's own; the
/// pinned verifier ignores names, but standard clients need one to send.
pub const TLS_SERVER_NAME: &str = "fedsync";

/// Bytes of TLS records rustls holds for a connection beyond what the
/// socket took (its default is 64 KiB). With the socket's own small queue
/// (`TCP_NOTSENT_LOWAT`), this keeps what waits ahead of an HTTP/2 ping
/// to a few seconds of even a 24 kbit/s line: h2 sends its pings and our
/// acks first, but only into the buffers below it.
pub(crate) const TLS_SEND_BUFFER: usize = 16 * 1024;

/// How long HTTP/2 waits for a PING's answer before it gives up on a
/// connection: a backstop only. A PING waits behind what is queued below
/// HTTP/2 (TLS's [`TLS_SEND_BUFFER`], the socket's `NOTSENT_LOWAT`, the
/// line's own buffer), a few seconds on most lines but more than the
/// configured timeout on a slow one, so peer links are judged by their
/// watchdog instead (`node::link::ending`), which allows for that.
pub(crate) fn h2_keepalive_timeout(sync: &SyncConfig) -> std::time::Duration {
    sync.keepalive_timeout().max(H2_KEEPALIVE_TIMEOUT_MIN)
}
const H2_KEEPALIVE_TIMEOUT_MIN: std::time::Duration = std::time::Duration::from_secs(300);

/// The connection under a link, as the link sees it: whether the peer is
/// still heard from, and how fast the connection may send.
#[derive(Clone, Debug)]
pub struct Line {
    pub alive: Arc<Liveness>,
    pub cap: Arc<SendCap>,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            alive: Liveness::new(),
            cap: SendCap::new(),
        }
    }
}

/// Dials `address`, completes mutual TLS, and checks the server is a roster
/// node, and the one named `expected` when given (a peer link must reach
/// the member it was configured for, not merely some member). The
/// [`Line`] returned hears every byte the channel's connection receives,
/// and caps what it sends.
pub fn connect(
    net: Arc<dyn Network>,
    address: String,
    expected: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    trust: TrustStore,
    sync: SyncConfig,
    message_bytes_max: usize,
) -> Result<(Channel, Line), String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad address {address:?}: {e}"))?
        // Ours below bounds the TCP connect and says "timed out" as an
        // io error, which the dialler reads as nobody there; this one
        // also bounds the TLS handshake after it.
        .connect_timeout(sync.connect_timeout() * 2)
        .http2_keep_alive_interval(sync.keepalive())
        .keep_alive_timeout(h2_keepalive_timeout(&sync))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(super::window(message_bytes_max))
        .initial_connection_window_size(super::window(message_bytes_max))
        .tcp_nodelay(true);
    let tcp_timeout = sync.connect_timeout();
    let line = Line::default();
    let under = line.clone();
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (address, expected) = (address.clone(), expected.clone());
        let (tls, trust, net) = (tls.clone(), trust.clone(), net.clone());
        let line = under.clone();
        async move {
            let tcp = tokio::time::timeout(tcp_timeout, net.connect(address.clone()))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from {address} in {tcp_timeout:?}"),
                    )
                })??;
            let name = ServerName::try_from(TLS_SERVER_NAME).expect("a valid DNS name");
            let mut io = TlsConnector::from(tls).connect(name, tcp).await?;
            io.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
            let found = peer_of(&trust, io.get_ref().1.peer_certificates()).map(|(p, _)| p);
            match found {
                Some(p) if p.node.is_some() && expected.as_ref().is_none_or(|e| &p.name == e) => {
                    line.alive.heard();
                    let capped = Capped::new(io, line.cap);
                    Ok(TokioIo::new(Alive::new(capped, line.alive)))
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
    Ok((endpoint.connect_with_connector_lazy(connector), line))
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

//! What a node takes from the world besides its setup: the wall clock, the
//! network, and where blocking work runs. [`Env::real`] is a process on a
//! real machine; the seeded simulation (`tests/sim/`) supplies a skewable
//! clock, turmoil's network, and runs everything on its one thread so that
//! a seed replays the same run.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};

/// The wall clock, in milliseconds since the Unix epoch. The core never
/// reads a clock; the runtime reads this one and passes `now_ms` in.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The machine's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            // A clock before 1970 is broken; 0 makes every delta look "from
            // the future" and so refused, rather than silently accepted.
            .unwrap_or(0)
    }
}

/// A byte stream to or from a peer, before TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a node accepts connections.
pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// How a node dials `host:port`.
pub trait Network: Send + Sync + 'static {
    fn connect(&self, address: String) -> BoxFuture<'static, io::Result<BoxIo>>;
}

impl Listener for tokio::net::TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxIo, SocketAddr)>> {
        Box::pin(async move {
            let (tcp, remote) = tokio::net::TcpListener::accept(self).await?;
            // Small messages (digests, acks) must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            small_send_queue(&tcp);
            Ok((Box::new(tcp) as BoxIo, remote))
        })
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// Unsent bytes the kernel takes from a connection before it reports the
/// socket unwritable. Without a bound, a slow line's socket swallows
/// megabytes and an HTTP/2 ping or a digest queued behind them waits
/// minutes: the keepalive then ends a link that is slow but alive. With
/// it, the rest waits in HTTP/2, which sends pings and acks ahead of data.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Sets [`NOTSENT_LOWAT`] on a connection (Linux; elsewhere a no-op, and a
/// failure only costs latency, so it is not an error).
fn small_send_queue(tcp: &tokio::net::TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let value = NOTSENT_LOWAT as libc::c_int;
        // SAFETY: a valid socket descriptor owned by `tcp`, and a pointer
        // to an int that lives for the call, of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "TCP_NOTSENT_LOWAT not set");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}

/// The machine's TCP.
pub struct Tcp;

impl Network for Tcp {
    fn connect(&self, address: String) -> BoxFuture<'static, io::Result<BoxIo>> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            small_send_queue(&tcp);
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

/// The world a node runs in.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub net: Arc<dyn Network>,
    pub blocking: Blocking,
    /// Seeds the redial jitter; `None` draws it from the OS.
    pub seed: Option<u64>,
}

impl Env {
    /// A process on a real machine.
    pub fn real() -> Env {
        Env {
            clock: Arc::new(SystemClock),
            net: Arc::new(Tcp),
            blocking: Blocking::Threads,
            seed: None,
        }
    }
}

/// Where blocking work (the actor's commits, batch verification, store
/// scans) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// On tokio's blocking threads, beside the network tasks: a process.
    Threads,
    /// On the runtime's own thread, in turn with everything else: the
    /// simulation, whose single thread and simulated time would otherwise
    /// race work on real threads and never replay the same.
    Inline,
}

impl Blocking {
    /// Runs `f` where this node runs blocking work, and returns its result
    /// (`Err` only if it panicked).
    pub async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        match self {
            Blocking::Inline => Ok(f()),
            Blocking::Threads => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

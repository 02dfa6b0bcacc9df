//! Whether a connection still hears from its peer, judged by the bytes
//! that arrive, and the switch that closes it when it does not.
//!
//! HTTP/2's keepalive judges a link by one PING's answer within a fixed
//! time, but on a slow line the PING waits behind what is queued below
//! HTTP/2 (TLS, the socket, the line itself), and a link that is slow but
//! alive is ended. A link's watchdog (`node::link::ending`) asks this instead how
//! long the peer has been silent, and allows for what it still has to
//! drain; HTTP/2's own timeout stays only as a backstop.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::identity::tls::{leave_waker, WakerSlot};

/// When a connection last heard from its peer, and whether it was cut.
#[derive(Debug)]
pub struct Liveness {
    base: Instant,
    /// Milliseconds after `base` that bytes last arrived.
    heard_ms: AtomicU64,
    cut: AtomicBool,
    /// The task that polls the connection, woken by [`Liveness::cut`].
    waker: WakerSlot,
}

impl Liveness {
    pub fn new() -> Arc<Liveness> {
        Arc::new(Liveness {
            base: Instant::now(),
            heard_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
    }

    /// Notes that the peer was heard from now.
    pub(crate) fn heard(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.heard_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// How long since bytes last arrived (or the connection opened).
    pub fn silence(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heard_ms.load(Ordering::Relaxed)))
    }

    /// Fails the connection's reads and writes from now on, so HTTP/2
    /// gives up on it at once, whatever it was waiting for.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().expect("liveness waker poisoned").take() {
            w.wake();
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// `Err` once cut; otherwise leaves the task's waker for [`cut`].
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        if !self.is_cut() {
            leave_waker(&self.waker, cx.waker());
        }
        // Checked again after the waker is in place: a cut between the
        // first check and storing it would otherwise wake nobody.
        if self.is_cut() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection cut: the peer went silent for longer than the link allows",
            ));
        }
        Ok(())
    }
}

/// A connection that tells its [`Liveness`] when bytes arrive and fails
/// once that is cut.
pub struct Alive<T> {
    io: T,
    live: Arc<Liveness>,
}

impl<T> Alive<T> {
    pub fn new(io: T, live: Arc<Liveness>) -> Alive<T> {
        Alive { io, live }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Alive<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.live.check(cx)?;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.live.heard();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Alive<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.live.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.live.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn bytes_arriving_reset_the_silence() {
        let (a, mut b) = tokio::io::duplex(64);
        let live = Liveness::new();
        let mut a = Alive::new(a, live.clone());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(live.silence(), Duration::from_secs(5));
        b.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(live.silence(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(live.silence(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_cut_wakes_a_blocked_read_and_fails_writes() {
        let (a, _b) = tokio::io::duplex(64);
        let live = Liveness::new();
        let mut a = Alive::new(a, live.clone());
        let cutter = live.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cutter.cut();
        });
        let mut buf = [0u8; 8];
        let err = a.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(a.write_all(b"x").await.is_err());
    }
}

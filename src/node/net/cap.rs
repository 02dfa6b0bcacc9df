//! A cap on how fast a connection sends: an office's only line keeps room
//! for the office's other traffic while a catch-up runs.
//!
//! The cap paces the writes into TLS, so what reaches the socket, and the
//! line, follows it (TLS adds about 1 %). It is a [`SendCap`] shared with
//! the link, because the link learns its value only after the connection
//! is up: from this node's `[[peers]] rate_kbit` for the peer, and from
//! the cap the peer asks for in its digest, whichever is lower.
//!
//! Pacing is by a schedule, not a bucket of saved-up credit: each write
//! books the line for its length at the cap, and a write waits until the
//! line is free again but for [`BURST`]. A link idle for an hour does not
//! save up an hour's worth of line to flood it with after.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How far ahead of the schedule a write may run: what goes out at once.
const BURST: Duration = Duration::from_millis(50);
/// The least one write may carry, so a very low cap still writes whole
/// TLS records' worth rather than a byte at a time.
const CHUNK_MIN: usize = 512;

/// The most a connection may send, in bytes per second; 0 for no cap.
#[derive(Debug, Default)]
pub struct SendCap {
    bytes_per_sec: AtomicU64,
}

impl SendCap {
    pub fn new() -> Arc<SendCap> {
        Arc::new(SendCap::default())
    }

    /// Sets the cap from now on; 0 lifts it.
    pub fn set(&self, bytes_per_sec: u64) {
        self.bytes_per_sec.store(bytes_per_sec, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.bytes_per_sec.load(Ordering::Relaxed)
    }
}

/// A connection whose writes keep to a [`SendCap`]. Reads pass through.
pub struct Capped<T> {
    io: T,
    cap: Arc<SendCap>,
    /// When the line is free again: the end of what has been written so
    /// far, at the cap.
    free_at: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<T> Capped<T> {
    pub fn new(io: T, cap: Arc<SendCap>) -> Capped<T> {
        let now = Instant::now();
        Capped {
            io,
            cap,
            free_at: now,
            sleep: Box::pin(tokio::time::sleep_until(now)),
        }
    }

    /// Ready once a write may go out under a cap of `rate`, with how many
    /// bytes it may carry.
    fn poll_turn(&mut self, cx: &mut Context<'_>, rate: u64) -> Poll<usize> {
        let start = self.free_at.checked_sub(BURST);
        if let Some(start) = start.filter(|s| *s > Instant::now()) {
            self.sleep.as_mut().reset(start);
            ready!(self.sleep.as_mut().poll(cx));
        }
        let burst_bytes = rate.saturating_mul(BURST.as_millis() as u64) / 1000;
        Poll::Ready((burst_bytes as usize).max(CHUNK_MIN))
    }

    /// Books the line for `written` bytes at `rate`.
    fn book(&mut self, written: usize, rate: u64) {
        let from = self.free_at.max(Instant::now());
        self.free_at = from + Duration::from_secs_f64(written as f64 / rate as f64);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Capped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Capped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let rate = self.cap.get();
        if rate == 0 || buf.is_empty() {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        let most = ready!(self.poll_turn(cx, rate));
        let n = buf.len().min(most);
        let written = ready!(Pin::new(&mut self.io).poll_write(cx, &buf[..n]))?;
        self.book(written, rate);
        Poll::Ready(Ok(written))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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

    /// Writes `bytes` through a connection capped at `rate` (0: none),
    /// with the other end reading all of it; the time it took.
    async fn send(bytes: usize, rate: u64, cap_later: Option<u64>) -> Duration {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let cap = SendCap::new();
        cap.set(rate);
        let mut a = Capped::new(a, cap.clone());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        let started = Instant::now();
        let half = vec![7u8; bytes / 2];
        a.write_all(&half).await.unwrap();
        if let Some(later) = cap_later {
            cap.set(later);
        }
        a.write_all(&half).await.unwrap();
        a.shutdown().await.unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), bytes / 2 * 2);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn writes_keep_to_the_cap() {
        // 100 kB at 10 kB/s: 10 s, less the one burst allowed ahead.
        let took = send(100_000, 10_000, None).await;
        assert!(
            took >= Duration::from_millis(9_900) && took <= Duration::from_millis(10_100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_cap_is_no_wait_and_a_cap_follows_its_changes() {
        assert_eq!(send(100_000, 0, None).await, Duration::ZERO);
        // The first half at 10 kB/s (5 s), the rest with the cap lifted.
        let took = send(100_000, 10_000, Some(0)).await;
        assert!(
            took >= Duration::from_millis(4_900) && took <= Duration::from_millis(5_100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_saves_up_no_credit() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let cap = SendCap::new();
        cap.set(1_000);
        let mut a = Capped::new(a, cap);
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = b.read_to_end(&mut sink).await;
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let started = Instant::now();
        a.write_all(&[0u8; 5_000]).await.unwrap();
        // 5 kB at 1 kB/s: the hour idle bought nothing.
        assert!(started.elapsed() >= Duration::from_millis(4_400));
    }
}

//! A shaped link between two nodes: a TCP proxy that behaves like a slow
//! office line. Each direction has a bottleneck that sends `rate` bits per
//! second out of a bounded buffer, then a one-way `delay`; the link can be
//! cut (open connections dropped, as when a GSM line re-attaches) or taken
//! down (a blackout: open connections carry nothing, new ones are refused,
//! as when the route is gone). Shared by `tests/links.rs` and
//! `benches/links.rs`.
//!
//! It runs on a thread and runtime of its own: a link is another machine,
//! not tasks that take turns with the nodes'. Kernel buffers on loopback
//! would hide megabytes of queue the real line does not have, so both of
//! its sockets ask for small ones, and the bounded buffer is the queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// Rewrites the node config at `config` so that it dials `target`
/// through the line at `line` instead.
pub fn route_through(config: &std::path::Path, target: SocketAddr, line: SocketAddr) {
    let text = std::fs::read_to_string(config).unwrap();
    let routed = text.replace(&format!("\"{target}\""), &format!("\"{line}\""));
    assert_ne!(text, routed, "{} names {target}", config.display());
    std::fs::write(config, routed).unwrap();
}

/// One direction of the line.
#[derive(Clone, Copy, Debug)]
pub struct LinkSpec {
    /// Bits per second through the bottleneck.
    pub rate_bps: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Bytes the bottleneck queues before the sender must wait.
    pub buffer_bytes: usize,
}

impl LinkSpec {
    /// `kbit` kbit/s and `delay_ms` one way, with a queue of two seconds
    /// of the line (at least 16 KiB), as on a modem or a GSM cell.
    pub fn kbit(kbit: u64, delay_ms: u64) -> LinkSpec {
        let rate_bps = kbit * 1000;
        LinkSpec {
            rate_bps,
            delay: Duration::from_millis(delay_ms),
            buffer_bytes: ((rate_bps / 8 * 2) as usize).max(16 * 1024),
        }
    }

    /// Seconds `bytes` need at this rate.
    pub fn secs_for(&self, bytes: u64) -> f64 {
        bytes as f64 * 8.0 / self.rate_bps as f64
    }
}

/// What the line carried, both ways together unless named.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Bytes delivered from the dialling side to the listening side.
    pub up: AtomicU64,
    /// Bytes delivered from the listening side to the dialling side.
    pub down: AtomicU64,
    /// Connections that got through (accepted while the line was up).
    pub connections: AtomicU64,
    /// Connections refused while the line was down.
    pub refused: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LineState {
    up: bool,
    /// Bumped by each cut: connections from an older generation end.
    generation: u64,
}

/// A running shaped link from `addr()` to the target.
pub struct Shaper {
    addr: SocketAddr,
    state: watch::Sender<LineState>,
    pub counters: Arc<LinkCounters>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Socket buffers of the proxy's own sockets: small, so the line's queue
/// is its bounded buffer and not the kernel's.
const SOCKET_BUFFER: u32 = 8 * 1024;
/// Bytes read at once: a packet.
const CHUNK: usize = 1448;

impl Shaper {
    /// A line to `target` shaped by `spec` in both directions.
    pub fn start(target: SocketAddr, spec: LinkSpec) -> Shaper {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the shaper");
        let addr = std_listener.local_addr().expect("shaper address");
        drop(std_listener); // re-bound below, with small buffers
        let (state, rx) = watch::channel(LineState {
            up: true,
            generation: 0,
        });
        let counters = Arc::new(LinkCounters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let c = counters.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("shaper runtime");
            rt.block_on(async move {
                let listener = listen(addr).await;
                tokio::select! {
                    _ = serve(listener, addr, target, spec, rx, c) => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Shaper {
            addr,
            state,
            counters,
            stop,
            thread,
        }
    }

    /// Where to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection now; the line stays up.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }

    /// Takes the line down (a blackout) or brings it back.
    pub fn set_up(&self, up: bool) {
        self.state.send_modify(|s| s.up = up);
    }

    /// Bytes delivered both ways.
    pub fn bytes(&self) -> u64 {
        self.counters.up.load(Ordering::Relaxed) + self.counters.down.load(Ordering::Relaxed)
    }

    /// Bytes delivered from the listening side to the dialling side: the
    /// direction a catch-up by the dialler fills.
    pub fn bytes_down(&self) -> u64 {
        self.counters.down.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::Relaxed)
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Accepts while the line is up. While it is down the port is closed, so
/// a dial is refused at once, as a dead route answers.
async fn serve(
    mut listener: TcpListener,
    addr: SocketAddr,
    target: SocketAddr,
    spec: LinkSpec,
    mut state: watch::Receiver<LineState>,
    counters: Arc<LinkCounters>,
) {
    loop {
        if !state.borrow_and_update().up {
            drop(listener);
            while !state.borrow_and_update().up {
                if state.changed().await.is_err() {
                    return;
                }
            }
            listener = listen(addr).await;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let (state, counters) = (state.clone(), counters.clone());
                tokio::spawn(connection(client, target, spec, state, counters));
            }
            _ = state.changed() => {}
        }
    }
}

/// One proxied connection, until either side closes or the line is cut.
async fn connection(
    client: TcpStream,
    target: SocketAddr,
    spec: LinkSpec,
    mut state: watch::Receiver<LineState>,
    counters: Arc<LinkCounters>,
) {
    let generation = state.borrow().generation;
    let _ = client.set_nodelay(true);
    let socket = TcpSocket::new_v4().expect("socket");
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let Ok(server) = socket.connect(target).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(cr, sw, spec, state.clone(), counters.clone(), Dir::Up);
    let down = pipe(sr, cw, spec, state.clone(), counters, Dir::Down);
    let cut = async {
        while state.borrow_and_update().generation == generation {
            if state.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut => {}
    }
}

/// Listens on `addr` (again, after a blackout) with small buffers, which
/// accepted connections inherit.
async fn listen(addr: SocketAddr) -> TcpListener {
    loop {
        let socket = TcpSocket::new_v4().expect("socket");
        let _ = socket.set_reuseaddr(true);
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        match socket.bind(addr).and_then(|()| socket.listen(64)) {
            Ok(l) => return l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

/// One direction: read into the bottleneck's bounded buffer, send out of
/// it at the line's rate, deliver each chunk `delay` after it left. While
/// the line is down nothing leaves and nothing is delivered.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    spec: LinkSpec,
    state: watch::Receiver<LineState>,
    counters: Arc<LinkCounters>,
    dir: Dir,
) {
    let buffer = Arc::new(Semaphore::new(spec.buffer_bytes));
    let (queued, mut bottleneck) = mpsc::unbounded_channel::<(Vec<u8>, _)>();
    let (sent, mut wire) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let want = CHUNK.min(spec.buffer_bytes) as u32;
            let Ok(permit) = buffer.clone().acquire_many_owned(want).await else {
                return;
            };
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut permit = permit;
                    let _unused = permit.split(want as usize - n);
                    if queued.send((buf[..n].to_vec(), permit)).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut line = state.clone();
    let send = async move {
        let mut free_at = Instant::now();
        while let Some((chunk, permit)) = bottleneck.recv().await {
            wait_up(&mut line).await;
            let start = free_at.max(Instant::now());
            let took = Duration::from_secs_f64(chunk.len() as f64 * 8.0 / spec.rate_bps as f64);
            free_at = start + took;
            tokio::time::sleep_until(free_at).await;
            drop(permit); // it has left the buffer
            if sent.send((free_at + spec.delay, chunk)).is_err() {
                return;
            }
        }
    };
    let mut line = state;
    let deliver = async move {
        while let Some((at, chunk)) = wire.recv().await {
            tokio::time::sleep_until(at).await;
            wait_up(&mut line).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            let counter = match dir {
                Dir::Up => &counters.up,
                Dir::Down => &counters.down,
            };
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, send, deliver);
}

async fn wait_up(state: &mut watch::Receiver<LineState>) {
    while !state.borrow_and_update().up {
        if state.changed().await.is_err() {
            return;
        }
    }
}

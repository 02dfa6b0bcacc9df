//! A pre-authentication flood: connections that never finish a TLS
//! handshake, each re-opened as soon as the node closes it. Half stay
//! silent; half send the first bytes of a ClientHello and stall. Shared by
//! the hostile suite, the CLI test and the door benchmark.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The start of a TLS record holding a ClientHello of 508 bytes, of which
/// only these few are ever sent.
const PARTIAL_HELLO: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

/// A running flood, on a thread and runtime of its own: an attacker is
/// another machine, not tasks that take turns with the node's own.
pub struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Flood {
    /// `conns` connections to `addr`, kept open and re-opened.
    pub fn start(addr: SocketAddr, conns: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the flood");
            rt.block_on(async move {
                let tasks = connections(addr, conns, s, o);
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Flood {
            stop,
            opened,
            thread,
        }
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Ends the flood; returns the connections it opened.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.opened.load(Ordering::Relaxed)
    }
}

fn connections(
    addr: SocketAddr,
    conns: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    (0..conns)
        .map(|i| {
            let (stop, opened) = (stop.clone(), opened.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut tcp) = TcpStream::connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    if i % 2 == 1 {
                        let _ = tcp.write_all(&PARTIAL_HELLO).await;
                    }
                    // Held until the node lets go (or the flood ends).
                    let mut buf = [0u8; 256];
                    loop {
                        let read =
                            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf));
                        match read.await {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            Ok(Ok(_)) => continue,
                            Err(_) if stop.load(Ordering::Relaxed) => break,
                            Err(_) => continue,
                        }
                    }
                }
            })
        })
        .collect()
}

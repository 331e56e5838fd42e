//! A TCP echo server (on 127.0.0.1, or on a listener made elsewhere) for the fault-tool
//! tests: it sends back every byte it receives and counts them.

#![allow(dead_code)] // each test binary uses a different part of it

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running echo server; stopped when dropped.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Echo {
    /// Starts an echo server on a free port.
    pub async fn start() -> std::io::Result<Echo> {
        Self::serve(TcpListener::bind("127.0.0.1:0").await?)
    }

    /// Serves echo on `listener` (one made elsewhere, say in a network namespace).
    pub fn serve(listener: TcpListener) -> std::io::Result<Echo> {
        let addr = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buf = vec![0; 16 * 1024];
                    // A connection that fails just ends; the tests judge what the client saw.
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Echo { addr, received, task })
    }

    /// Bytes received so far, over all connections.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

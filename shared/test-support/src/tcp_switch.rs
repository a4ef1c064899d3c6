//! A TCP proxy a test can cut and restore, to take a server "away" and
//! bring it back without touching the server itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct TcpSwitch {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpSwitch {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: (String, u16)) -> TcpSwitch {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Ok(mut c) = conns2.lock() {
                    c.push(handle);
                }
            }
        });
        TcpSwitch {
            port,
            up,
            conns,
            accept,
        }
    }

    /// Breaks every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for handle in c.drain(..) {
                handle.abort();
            }
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpSwitch {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

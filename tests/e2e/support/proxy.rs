//! A TCP proxy on loopback whose link can be cut and restored, to simulate a
//! network outage between hxlog and a real server; or which cuts a
//! connection the moment the client sends given bytes (a statement), to
//! simulate a link lost at that point of a conversation.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A cuttable proxy to `upstream`.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    cuts: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listens on a free loopback port; forwards to `upstream` while up.
    pub fn start(upstream: String, up: bool) -> Proxy {
        Proxy::listen(upstream, up, None)
    }

    /// Forwards to `upstream`, but cuts a connection (both ways, the bytes
    /// not forwarded) whenever its client sends `trigger`: e.g. the Postgres
    /// simple-query message of one statement. [`Proxy::cuts`] counts them.
    pub fn cutting_on(upstream: String, trigger: &'static [u8]) -> Proxy {
        Proxy::listen(upstream, true, Some(trigger))
    }

    fn listen(upstream: String, up: bool, trigger: Option<&'static [u8]>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let flag = Arc::new(AtomicBool::new(up));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let cuts: Arc<AtomicUsize> = Arc::default();
        let (f, l, c) = (flag.clone(), live.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !f.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut g = l.lock().unwrap();
                    g.push(client.try_clone().unwrap());
                    g.push(server.try_clone().unwrap());
                }
                let cut = trigger.map(|t| (t, c.clone()));
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    cut,
                );
                pump(server, client, None);
            }
        });
        Proxy {
            port,
            up: flag,
            live,
            cuts,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Connections cut on their trigger so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`; with `cut`, shuts both down instead of forwarding
/// the read that completes the trigger (also one split across reads).
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<(&'static [u8], Arc<AtomicUsize>)>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        // The last bytes forwarded, so a trigger split across reads is seen.
        let mut seen: Vec<u8> = vec![];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some((trigger, cuts)) = &cut {
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(trigger.len()).any(|w| w == *trigger) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = from.shutdown(Shutdown::Both);
                            let _ = to.shutdown(Shutdown::Both);
                            return;
                        }
                        let keep = seen.len().saturating_sub(trigger.len() - 1);
                        seen.drain(..keep);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

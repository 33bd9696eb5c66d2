//! A syslog drain receiver written in the test (it stands in for any TCP syslog server):
//! std threads on 127.0.0.1 that split octet-counted frames and append each message, one
//! per line, to a file the test polls. Dropped, it closes its listener and every connection
//! before returning, as a receiver that dies would.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a [`TcpReceiver`] behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpOptions {
    /// The port to bind (0: any free one).
    pub port: u16,
    /// Closes the first connection after this many messages (0: never).
    pub close_after: usize,
    /// Sleeps this long after each read, reading 4 KiB at a time (a slow receiver).
    pub read_delay: Duration,
    /// Reads nothing for this long after accepting a connection.
    pub start_delay: Duration,
}

pub struct TcpReceiver {
    pub port: u16,
    /// One line per message received, without the LF that ends every drain frame; an LF
    /// inside a message is written as `\n`.
    pub out: PathBuf,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl TcpReceiver {
    /// Listens on 127.0.0.1 and writes to `DIR/NAME.out`.
    pub fn start(dir: &Path, name: &str, opts: TcpOptions) -> TcpReceiver {
        let out = dir.join(format!("{name}.out"));
        let listener = TcpListener::bind(("127.0.0.1", opts.port))
            .unwrap_or_else(|e| panic!("receiver {name}: cannot bind port {}: {e}", opts.port));
        let port = listener.local_addr().expect("bound address").port();
        let file = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap_or_else(|e| panic!("receiver {name}: {}: {e}", out.display())),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (stop, conns, threads) = (stop.clone(), conns.clone(), threads.clone());
            std::thread::spawn(move || {
                let mut first = true;
                for sock in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(sock) = sock else { continue };
                    let limit = if first { opts.close_after } else { 0 };
                    first = false;
                    if let Ok(c) = sock.try_clone() {
                        conns.lock().unwrap().push(c);
                    }
                    let (file, stop) = (file.clone(), stop.clone());
                    let t = std::thread::spawn(move || handle(sock, limit, opts, &file, &stop));
                    threads.lock().unwrap().push(t);
                }
            })
        };
        TcpReceiver {
            port,
            out,
            stop,
            conns,
            threads,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

fn handle(
    mut sock: TcpStream,
    limit: usize,
    opts: TcpOptions,
    file: &Mutex<std::fs::File>,
    stop: &AtomicBool,
) {
    if !opts.start_delay.is_zero() {
        std::thread::sleep(opts.start_delay);
    }
    let mut chunk = vec![
        0u8;
        if opts.read_delay.is_zero() {
            256 * 1024
        } else {
            4096
        }
    ];
    let mut buf: Vec<u8> = Vec::new();
    let mut count = 0;
    while !stop.load(Ordering::SeqCst) {
        let n = match sock.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let (frames, used) = split_frames(&buf);
        let mut lines = Vec::new();
        for f in frames {
            let f = f.strip_suffix(b"\n").unwrap_or(f);
            for &b in f {
                if b == b'\n' {
                    lines.extend_from_slice(b"\\n");
                } else {
                    lines.push(b);
                }
            }
            lines.push(b'\n');
            count += 1;
            if limit > 0 && count >= limit {
                break;
            }
        }
        let _ = file.lock().unwrap().write_all(&lines);
        buf.drain(..used);
        if limit > 0 && count >= limit {
            let _ = sock.shutdown(Shutdown::Both);
            return;
        }
        if !opts.read_delay.is_zero() {
            std::thread::sleep(opts.read_delay);
        }
    }
}

/// The whole octet-counted frames at the start of `data` (blanks and LFs between frames
/// skipped), and how many bytes they take; a partial frame waits for more bytes.
pub fn split_frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::new();
    let mut i = 0;
    loop {
        let mut j = i;
        while j < data.len() && matches!(data[j], b'\n' | b' ') {
            j += 1;
        }
        let Some(sp) = data[j..].iter().position(|&b| b == b' ').map(|p| j + p) else {
            break;
        };
        let Some(n) = std::str::from_utf8(&data[j..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            panic!(
                "receiver: not an octet count: {:?}",
                String::from_utf8_lossy(&data[j..sp])
            );
        };
        if data.len() < sp + 1 + n {
            break;
        }
        frames.push(&data[sp + 1..sp + 1 + n]);
        i = sp + 1 + n;
    }
    (frames, i)
}

impl Drop for TcpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag and returns, closing the listener.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

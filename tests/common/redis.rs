//! A real `redis-server` for the cluster tests, on a free loopback port, owned by the test
//! (killed with SIGKILL and reaped when dropped). Tests that use it first call
//! `common::need("redis-server", "apt-get install redis-server")`.
#![allow(dead_code)]

use super::ChildGuard;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    /// Where it keeps its append-only file, when it keeps one.
    dir: Option<PathBuf>,
    guard: Option<ChildGuard>,
}

impl Redis {
    /// A Redis that keeps nothing on disk.
    pub fn start() -> Redis {
        Redis::start_on(super::serve::free_port(), None)
    }

    /// A Redis that keeps its data in `dir` (append-only file, fsync on every write), so
    /// that a restart on the same port finds it again.
    pub fn start_persistent(dir: &Path) -> Redis {
        Redis::start_on(super::serve::free_port(), Some(dir.to_path_buf()))
    }

    fn start_on(port: u16, dir: Option<PathBuf>) -> Redis {
        let mut r = Redis {
            port,
            dir,
            guard: None,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.dir {
            Some(d) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(d);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.guard = Some(ChildGuard::spawn("redis-server", &mut cmd));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Does it answer `PING` with `PONG` (not `-LOADING`)?
    pub fn ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// An integer reply to `args` (e.g. `["XLEN", "key"]`), over a raw RESP connection.
    pub fn int(&self, args: &[&str]) -> i64 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]);
        line.trim()
            .strip_prefix(':')
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not an integer reply to {args:?}: {line}"))
    }

    /// `kill -9` and reaped.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.signal(rustix::process::Signal::KILL);
            let _ = g.child().wait();
        }
    }

    /// Started again on the same port (with its data, when it keeps any).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

//! The real binary as a server: `logplex serve --config` in its own process, with its
//! stderr kept in a file, stopped with SIGTERM (or killed when the test ends or fails).
#![allow(dead_code)]

use super::ChildGuard;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_logplex");

/// A free port on 127.0.0.1 for both TCP and UDP, for a server started later to bind.
///
/// Taken below the kernel's ephemeral range (Linux: 32768 and up), where `bind(0)` and
/// every outgoing connection take theirs: a port found free by binding `:0` and letting go
/// could be taken by a client socket of a test running alongside before the server binds
/// it ("Address already in use"). Never the same port twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test process starts at its own place, so one run's ports are not the last's.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port");
}

/// Where a server listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api: u16,
    pub http: u16,
    pub syslog: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            api: free_port(),
            http: free_port(),
            syslog: free_port(),
        }
    }
    pub fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api))
    }
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }
    pub fn tcp(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.syslog))
    }
}

/// Writes `dir/NAME` with the listeners of `p`, the store at `store` and `extra` TOML
/// appended (its own tables, e.g. `[ingest.http]` must not repeat one written here; an
/// `[ingest.http]` or `[store]` of `extra` gets the listener or path added).
pub fn write_config(dir: &Path, name: &str, p: &Ports, store: &Path, extra: &str) -> PathBuf {
    let path_line = format!("path = \"{}\"", store.display());
    let (extra, store_table) = if extra.contains("[store]") {
        (
            extra.replacen("[store]", &format!("[store]\n{path_line}"), 1),
            String::new(),
        )
    } else {
        (extra.to_string(), format!("[store]\n{path_line}\n"))
    };
    let text = format!(
        "{extra}\n[api]\nlisten = \"127.0.0.1:{}\"\n\
         [ingest.tcp]\nlisten = \"127.0.0.1:{}\"\n[ingest.udp]\nlisten = \"127.0.0.1:{}\"\n\
         {store_table}",
        p.api, p.syslog, p.syslog,
    );
    let text = if extra.contains("[ingest.http]") {
        text.replacen(
            "[ingest.http]",
            &format!("[ingest.http]\nlisten = \"127.0.0.1:{}\"", p.http),
            1,
        )
    } else {
        format!("{text}[ingest.http]\nlisten = \"127.0.0.1:{}\"\n", p.http)
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `logplex serve`, killed and reaped when dropped (see [`ChildGuard`]).
pub struct Serve {
    pub child: ChildGuard,
    pub stderr: PathBuf,
}

impl Serve {
    /// Starts `serve --config CONFIG` with `env` and waits (at most 20 s) until `api`
    /// accepts connections.
    pub fn start(config: &Path, api: SocketAddr, env: &[(&str, &str)]) -> Serve {
        let s = Serve::spawn(config, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(api).is_err() {
            if Instant::now() > deadline {
                panic!("serve did not start: {}", s.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Starts `serve --config CONFIG` without waiting.
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> Serve {
        let stderr = config.with_extension(format!(
            "stderr.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(config)
            .env_remove("LOGPLEX_AUTH_KEY")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&stderr)
                    .unwrap_or_else(|e| panic!("{}: {e}", stderr.display())),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serve {
            child: ChildGuard::spawn("logplex serve", &mut cmd),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (at most `within`) for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match self.child.wait_timeout(within) {
            Some(st) => st,
            // The panic drops the guard, which kills it.
            None => panic!(
                "serve did not exit within {within:?}: {}",
                self.stderr_text()
            ),
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.child.terminate();
        self.wait_exit(Duration::from_secs(30))
    }

    /// The peak resident memory of the process in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        proc_status_kb(self.pid(), "VmHWM:") * 1024
    }

    /// The resident memory of the process now, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS:") * 1024
    }

    /// CPU time the process has used (user and system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        super::procstat::cpu_secs(&self.pid().to_string())
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

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
    /// Its working folder (its append-only file, a cluster node's `nodes.conf`).
    dir: Option<PathBuf>,
    /// Does it keep its data in an append-only file (fsync on every write)?
    aof: bool,
    /// A node of a Redis Cluster (its `nodes.conf` in `dir`).
    cluster: bool,
    guard: Option<ChildGuard>,
}

impl Redis {
    /// A Redis that keeps nothing on disk.
    pub fn start() -> Redis {
        Redis::start_on(super::serve::free_port(), None, false)
    }

    /// A Redis that keeps its data in `dir` (append-only file, fsync on every write), so
    /// that a restart on the same port finds it again.
    pub fn start_persistent(dir: &Path) -> Redis {
        Redis::start_on(super::serve::free_port(), Some(dir.to_path_buf()), true)
    }

    fn start_on(port: u16, dir: Option<PathBuf>, aof: bool) -> Redis {
        let mut r = Redis {
            port,
            dir,
            aof,
            cluster: false,
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
        if self.cluster {
            // A master that stops answering is marked failed within a second, and the
            // others go on serving their own slots meanwhile.
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ]);
        }
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(d) = &self.dir {
            cmd.arg("--dir").arg(d);
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

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(ChildGuard::id)
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

/// A Redis Cluster of three masters (no replicas) on free loopback ports, each keeping
/// its data and its `nodes.conf` in a folder of its own (append-only, fsync on every
/// write), so a master killed and started again comes back with its slots and keys
/// (except those of [`RedisCluster::start_volatile`]).
/// Tests that use it first call `common::need` for `redis-server` and `redis-cli`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(0)
    }

    /// Three masters with `replicas` replicas each (`nodes[0..3]` the masters as
    /// `redis-cli --cluster create` assigns them, the replicas after).
    pub fn start_with(replicas: usize) -> RedisCluster {
        RedisCluster::make(replicas, true)
    }

    /// Three masters that keep nothing on disk (a bench's figures are then Redis's work,
    /// not its disk's); a master killed loses its keys.
    pub fn start_volatile() -> RedisCluster {
        RedisCluster::make(0, false)
    }

    fn make(replicas: usize, aof: bool) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 * (1 + replicas) {
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let mut r = Redis {
                port: cluster_port(),
                dir: Some(d),
                aof,
                cluster: true,
                guard: None,
            };
            r.launch();
            nodes.push(r);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes, _dir: dir };
        c.wait_ok();
        c
    }

    /// The seed nodes, as `cluster.redis` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// Waits (at most 20 s) until every running master says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &self.nodes {
            if n.guard.is_none() {
                continue;
            }
            while !n.info("CLUSTER", "INFO").contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the Redis Cluster was not ok within 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Moves `key`'s slot, with its keys, to master `to` the way `redis-cli --cluster
    /// reshard` does (IMPORTING on `to`, MIGRATING on the owner, `MIGRATE` of its keys a
    /// batch at a time, then the slot given to `to` on every master), waiting `pause`
    /// between the steps so that clients meet each state of it (`ASK` while the keys move,
    /// `MOVED` after).
    pub fn move_slot_of(&self, key: &str, to: usize, pause: Duration) {
        let from = self.owner(key);
        assert_ne!(from, to, "{key} is on master {to} already");
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let slot = src.cli(&["CLUSTER", "KEYSLOT", key]);
        let (src_id, dst_id) = (src.cli(&["CLUSTER", "MYID"]), dst.cli(&["CLUSTER", "MYID"]));
        assert_eq!(
            dst.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]),
            "OK"
        );
        assert_eq!(
            src.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]),
            "OK"
        );
        std::thread::sleep(pause);
        loop {
            let keys = src.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "10"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = dst.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(&keys);
            assert_eq!(src.cli(&args), "OK", "MIGRATE {keys:?}");
            std::thread::sleep(pause);
        }
        for n in [dst, src] {
            assert_eq!(n.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]), "OK");
        }
        for n in &self.nodes {
            if !std::ptr::eq(n, src) && !std::ptr::eq(n, dst) {
                n.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
            }
        }
        assert_eq!(self.owner(key), to, "{key} moved");
    }

    /// The index in `nodes` of the replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.nodes[master].cli(&["CLUSTER", "MYID"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.nodes.iter().position(|n| {
                n.guard.is_some()
                    && n.info("CLUSTER", "NODES")
                        .lines()
                        .any(|l| l.contains("myself,slave") && l.contains(&id))
            }) {
                return i;
            }
            assert!(Instant::now() < deadline, "no replica of master {master}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index in `nodes` of the master that holds `key`'s slot.
    pub fn owner(&self, key: &str) -> usize {
        let up = self
            .nodes
            .iter()
            .find(|n| n.guard.is_some())
            .expect("a master runs");
        let slot = up.int(&["CLUSTER", "KEYSLOT", key]);
        self.nodes
            .iter()
            .position(|n| n.guard.is_some() && n.owns(slot))
            .expect("a running master owns the slot")
    }
}

impl Redis {
    /// The reply to `args` as `redis-cli` prints it, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The bulk-string reply to a two-word command (`CLUSTER INFO`, `INFO commandstats`).
    pub fn info(&self, a: &str, b: &str) -> String {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("*2\r\n${}\r\n{a}\r\n${}\r\n{b}\r\n", a.len(), b.len());
        if s.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        // `$LEN\r\n` then the text: read until it is all there.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n") {
                let want: usize = head.trim_start_matches('$').parse().unwrap_or(0);
                if body.len() >= want {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Does this master serve `slot` (by the `myself` line of its `CLUSTER NODES`: the
    /// slot ranges from the ninth field on)?
    fn owns(&self, slot: i64) -> bool {
        let nodes = self.info("CLUSTER", "NODES");
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
            return false;
        };
        me.split_whitespace()
            .skip(8)
            .any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<i64>().is_ok_and(|a| a <= slot)
                        && b.parse::<i64>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<i64>() == Ok(slot),
            })
    }
}

/// A free port whose cluster bus port (the port + 10000) is free too.
fn cluster_port() -> u16 {
    for _ in 0..200 {
        let p = super::serve::free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

/// What the nodes of a test share: one Redis, or a Redis Cluster of three masters. The
/// tests of the main properties take it, so the same body runs on both.
pub enum Backend {
    One(Redis),
    Cluster(RedisCluster),
}

impl Backend {
    /// One `redis-server`; `None` (the test skipped, said) when it is not installed.
    pub fn one() -> Option<Backend> {
        super::need("redis-server", "apt-get install redis-server")
            .then(|| Backend::One(Redis::start()))
    }

    /// A three-master Redis Cluster; `None` (skipped, said) without `redis-server` and
    /// `redis-cli`.
    pub fn cluster() -> Option<Backend> {
        (super::need("redis-server", "apt-get install redis-server")
            && super::need("redis-cli", "apt-get install redis-tools"))
        .then(|| Backend::Cluster(RedisCluster::start()))
    }

    /// `cluster.redis` for it: the URL, or the seed nodes.
    pub fn at(&self) -> logplex::config::RedisAt {
        match self {
            Backend::One(r) => logplex::config::RedisAt::One(r.url()),
            Backend::Cluster(c) => logplex::config::RedisAt::Cluster(c.urls()),
        }
    }

    /// Its servers: the one, or every node of the cluster.
    pub fn servers(&self) -> Vec<&Redis> {
        match self {
            Backend::One(r) => vec![r],
            Backend::Cluster(c) => c.nodes.iter().collect(),
        }
    }

    /// The URL of the one Redis (the single-Redis tests).
    pub fn url(&self) -> String {
        match self {
            Backend::One(r) => r.url(),
            Backend::Cluster(_) => panic!("a Redis Cluster has no one URL"),
        }
    }

    /// A node on it.
    pub async fn node(&self) -> super::TestServer {
        let at = self.at();
        super::TestServer::start_with(move |c| c.cluster.redis = at).await
    }
}

/// The config file `NAME.toml` in `dir` of a node run as the binary (on ports `p`, its store
/// `NAME.db` beside it) in the cluster on the Redis at `url`, with the tests' admin key.
pub fn node_config(dir: &Path, name: &str, p: &super::serve::Ports, url: &str) -> PathBuf {
    node_config_with(dir, name, p, &format!("[cluster]\nredis = \"{url}\"\n"))
}

/// [`node_config`] with `extra` (its own `[cluster]` table, and any other) in place of the
/// one Redis's URL.
pub fn node_config_with(dir: &Path, name: &str, p: &super::serve::Ports, extra: &str) -> PathBuf {
    let store = dir.join(format!("{name}.db"));
    let cfg = super::serve::write_config(dir, &format!("{name}.toml"), p, &store, extra);
    // The test's admin key, in the [api] table write_config made.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[api]\n",
        &format!("[api]\nauth_key = \"{}\"\n", super::KEY),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

//! The durable log against real failures: a full disk (a small tmpfs), and a writer process
//! killed with SIGKILL at random points.

mod common;
use common::Tmpfs;

use logplex::log::{Fsync, Health, Log, LogError, Options, Query};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn frame(ch: u64, seq: u64) -> Vec<u8> {
    let pad = "p".repeat((seq * 7 % 90) as usize);
    format!("<134>1 2024-01-01T00:00:00Z host app web.1 - - ch={ch} seq={seq} {pad}").into_bytes()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn read_all(log: &Log, ch: u64) -> Vec<(u64, Vec<u8>)> {
    let q = Query {
        limit: usize::MAX,
        ..Query::default()
    };
    log.read(ch, &q)
        .unwrap()
        .into_iter()
        .map(|l| (l.seq, l.frame.to_vec()))
        .collect()
}

#[test]
fn a_full_disk_degrades_the_log_and_it_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("mnt"), "4m") else {
        common::skip("cannot mount a tmpfs (needs root and mount(8))");
        return;
    };
    let opts = Options {
        segment_bytes: 256 << 10,
        fsync: Fsync::Batch,
        flush_delay: Duration::from_millis(1),
        retry_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let logdir = fs.0.join("log");
    let (log, _) = Log::open(&logdir, opts.clone()).unwrap();
    let rt = rt();
    let ch = 1;
    let mut seq = 0u64;
    let mut acked = Vec::new();
    let mut put = |log: &Log, n: u64| -> Result<Vec<u64>, LogError> {
        let first = seq + 1;
        seq += n;
        let lines: Vec<_> = (first..=seq).map(|s| (&b"app"[..], frame(ch, s))).collect();
        let lsn = log.append(ch, first, now_us(), lines)?;
        rt.block_on(log.durable(lsn))?;
        Ok((first..=seq).collect())
    };
    for _ in 0..20 {
        acked.extend(put(&log, 10).unwrap());
    }

    // Fill the disk, then write until the log notices.
    let filler = fs.0.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
    let mut failure = None;
    for _ in 0..2000 {
        match put(&log, 10) {
            Ok(s) => acked.extend(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a full disk fails a write");
    assert!(
        matches!(failure, LogError::NotPersisted(_)),
        "the waiter learns its lines were lost: {failure}"
    );
    let Health::Degraded { reason, .. } = log.health() else {
        panic!("not degraded")
    };
    assert!(reason.contains("No space left"), "{reason}");
    let r = put(&log, 1);
    assert!(matches!(r, Err(LogError::Failed(_))), "{r:?}");
    let st = log.stats();
    assert!(
        st.lost_lines >= 10 && st.rejected_failed_lines >= 1,
        "{st:?}"
    );
    // Still degraded while the disk is full (retries fail).
    std::thread::sleep(Duration::from_millis(300));
    let health = log.health();
    assert!(matches!(health, Health::Degraded { .. }), "{health:?}");

    // The disk frees up: the log recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let t = Instant::now();
    while log.health() != Health::Ok {
        assert!(t.elapsed() < Duration::from_secs(3), "no recovery");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..5 {
        acked.extend(put(&log, 10).unwrap());
    }
    let check = |log: &Log| {
        let got = read_all(log, ch);
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, acked, "exactly the acknowledged lines, in order");
        for (s, f) in &got {
            assert_eq!(f, &frame(ch, *s));
        }
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let (log, rec) = Log::open(&logdir, opts).unwrap();
    assert_eq!(rec.torn_bytes, 0, "{rec:?}");
    check(&log);
    drop(log);
}

const CHILD_ENV: &str = "LOGPLEX_LOG_KILL9_DIR";
const CHANNELS: u64 = 6;

/// The child half of `kill_9_loses_no_acknowledged_line` (it does nothing unless that test
/// runs it): appends batches in batch mode from several tasks and prints `ack CH SEQ` once
/// `durable` covers a batch, until it is killed.
#[test]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let opts = Options {
        segment_bytes: 64 << 10,
        fsync: Fsync::Batch,
        flush_delay: Duration::from_millis(1),
        ..Options::default()
    };
    let (log, rec) = Log::open(&dir, opts).unwrap();
    let log = std::sync::Arc::new(log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for ch in 1..=CHANNELS {
            let log = log.clone();
            let mut seq = rec.last_seq.get(&ch).copied().unwrap_or(0);
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(ch + seq);
                for _ in 0..1_000_000 {
                    let n = rng.u64(1..40);
                    let first = seq + 1;
                    let lines: Vec<_> = (first..first + n)
                        .map(|s| (&b"app"[..], frame(ch, s)))
                        .collect();
                    let lsn = log.append(ch, first, now_us(), lines).unwrap();
                    seq += n;
                    log.durable(lsn).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {ch} {seq}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_line() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(9);
    for round in 0..20 {
        let mut child = common::ChildGuard::spawn(
            "the kill9_child test",
            Command::new(&exe)
                .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let stdout = child.child().stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ack ") {
                    let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                    let _ = tx.send((it.next().unwrap(), it.next().unwrap()));
                }
            }
        });
        // Kill at a random point once the child acknowledges lines.
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("no ack");
        std::thread::sleep(Duration::from_millis(rng.u64(5..150)));
        drop(child); // SIGKILL, and reaped
        reader.join().unwrap();
        for (ch, seq) in std::iter::once(first).chain(rx.try_iter()) {
            let e = acked.entry(ch).or_insert(0);
            *e = (*e).max(seq);
        }
        let (log, rec) = Log::open(dir.path(), Options::default()).unwrap();
        for ch in 1..=CHANNELS {
            let got = read_all(&log, ch);
            let want = acked.get(&ch).copied().unwrap_or(0);
            assert!(
                got.len() as u64 >= want,
                "round {round} ch {ch}: {} lines stored, {want} acknowledged; {rec:?}",
                got.len()
            );
            for (i, (s, f)) in got.iter().enumerate() {
                assert_eq!(*s, i as u64 + 1, "round {round} ch {ch}: in order, no gap");
                assert_eq!(f, &frame(ch, *s), "round {round} ch {ch} seq {s}");
            }
            assert_eq!(
                rec.last_seq.get(&ch).copied().unwrap_or(0),
                got.len() as u64
            );
        }
        drop(log);
    }
    assert!(acked.values().all(|&s| s > 0), "{acked:?}");
}

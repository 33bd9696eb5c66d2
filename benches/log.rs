//! The durable log's bench: append throughput, this disk's fsync latency, recovery time of a
//! large log and the read of one channel's last lines through the index.
//!
//! ```text
//! cargo bench --bench log                    # everything
//! cargo bench --bench log -- append [--secs 3]
//! cargo bench --bench log -- fsync
//! cargo bench --bench log -- big [--gib 2]   # recovery + read of a 1%-channel
//! options: --dir PATH (default: a temporary directory under $TMPDIR)
//!          --cold 1  drop the page cache before recovery and reads (root; it slows every
//!                    other process on the machine for a moment)
//! ```
//! Append cases: 150-byte lines in batches of 1, 100 and 1000, over 1 and 1000 channels,
//! in `interval` mode (producers never wait for the disk) and `batch` mode (every producer
//! awaits `durable` for each batch, like an HTTP ingest answering after fsync). Producers
//! are 16 tasks on a 2-thread runtime (one task for a single channel: seqs are per
//! channel). Each case runs `--secs` and counts lines written by its `close`.

/// The `logplex` binary's allocator, so that what the router does in this process costs
/// what it costs in the binary (glibc's malloc gives other figures).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use logplex::log::{Fsync, Log, LogError, Options, Query};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LINE: usize = 150;

fn args() -> (String, HashMap<String, String>) {
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut mode = "all".to_string();
    let mut kv = HashMap::new();
    let mut i = 0;
    while i < raw.len() {
        if let Some(k) = raw[i].strip_prefix("--") {
            kv.insert(k.to_string(), raw.get(i + 1).cloned().unwrap_or_default());
            i += 2;
        } else {
            mode = raw[i].clone();
            i += 1;
        }
    }
    (mode, kv)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn frame() -> Vec<u8> {
    let mut f = b"<190>1 2016-03-08T02:43:26.693600+00:00 host app web.1 - - Started GET \"/siso/\" for 1.2.3.4 at=info ".to_vec();
    f.resize(LINE, b'.');
    f
}

fn main() {
    let (mode, kv) = args();
    let base: PathBuf = kv
        .get("dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench dir");
    let secs: f64 = kv.get("secs").and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let gib: f64 = kv.get("gib").and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let cold = kv.get("cold").is_some_and(|v| v == "1");
    if mode == "all" || mode == "fsync" {
        fsync_latency(&base);
    }
    if mode == "all" || mode == "append" {
        append(&base, secs);
    }
    if mode == "all" || mode == "big" {
        big(&base, gib, cold);
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// Latency of a 4 KiB write + fdatasync on this disk (what one group commit costs).
fn fsync_latency(base: &Path) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let f = std::fs::File::create(dir.path().join("f")).expect("file");
    let buf = vec![7u8; 4096];
    let mut lat = Vec::new();
    for i in 0..300u64 {
        let t = Instant::now();
        f.write_all_at(&buf, i * 4096).expect("write");
        f.sync_data().expect("fsync");
        lat.push(t.elapsed());
    }
    println!(
        "fsync (4 KiB write + fdatasync, 300×): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut lat, 0.5).as_secs_f64() * 1e3,
        pct(&mut lat, 0.99).as_secs_f64() * 1e3
    );
}

fn append(base: &Path, secs: f64) {
    println!(
        "{:<9} {:>6} {:>9} {:>13} {:>9} {:>8} {:>10}",
        "mode", "batch", "channels", "lines/s", "MB/s", "fsyncs", "records"
    );
    for mode in [Fsync::Interval, Fsync::Batch] {
        for batch in [1usize, 100, 1000] {
            for channels in [1u64, 1000] {
                append_case(base, mode, batch, channels, secs);
            }
        }
    }
}

fn append_case(base: &Path, mode: Fsync, batch: usize, channels: u64, secs: f64) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let opts = Options {
        fsync: mode,
        ..Options::default()
    };
    let (log, _) = Log::open(dir.path(), opts).expect("open");
    let log = Arc::new(log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let producers = channels.min(16);
    let stop = Arc::new(AtomicBool::new(false));
    let full = Arc::new(AtomicU64::new(0));
    let frame = frame();
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for p in 0..producers {
            let (log, stop, full, frame) = (log.clone(), stop.clone(), full.clone(), frame.clone());
            tasks.push(tokio::spawn(async move {
                let mine: Vec<u64> = (p..channels).step_by(producers as usize).collect();
                let mut seqs = vec![0u64; mine.len()];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let k = i % mine.len();
                    i += 1;
                    let first = seqs[k] + 1;
                    let lines = (0..batch).map(|_| (&b"app"[..], &frame[..]));
                    match log.append(mine[k], first, now_us(), lines) {
                        Ok(lsn) => {
                            seqs[k] += batch as u64;
                            if mode == Fsync::Batch {
                                log.durable(lsn).await.expect("durable");
                            } else if i % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                        Err(LogError::Full(_)) => {
                            full.fetch_add(1, Ordering::Relaxed);
                            let _ =
                                tokio::time::timeout(Duration::from_secs(1), log.writable()).await;
                        }
                        Err(e) => panic!("append: {e}"),
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("producer");
        }
    });
    log.close().expect("close");
    let took = t.elapsed().as_secs_f64();
    let st = log.stats();
    println!(
        "{:<9} {:>6} {:>9} {:>13.0} {:>9.1} {:>8} {:>10}",
        format!("{mode:?}").to_lowercase(),
        batch,
        channels,
        st.written_lines as f64 / took,
        st.written_bytes as f64 / took / 1e6,
        st.fsyncs,
        st.written_records,
    );
    let _ = std::io::stdout().flush();
}

/// Writes a log of about `gib` GiB over 1,000 channels where channel 0 has 1 % of the
/// lines, then times a reopen (recovery) and the read of channel 0's last 100,000 lines.
fn big(base: &Path, gib: f64, cold: bool) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let target = (gib * (1u64 << 30) as f64) as u64;
    let opts = Options::default();
    let (log, _) = Log::open(dir.path(), opts.clone()).expect("open");
    let frame = frame();
    let mut seqs = vec![0u64; 1000];
    let mut rng = fastrand::Rng::with_seed(1);
    let t = Instant::now();
    let mut lines = 0u64;
    while log.stats().written_bytes + log.stats().pending_bytes < target {
        for _ in 0..1000 {
            let ch = if rng.u32(0..100) == 0 {
                0
            } else {
                rng.u64(1..1000)
            };
            let first = seqs[ch as usize] + 1;
            loop {
                let l = (0..100).map(|_| (&b"app"[..], &frame[..]));
                match log.append(ch, first, now_us(), l) {
                    Ok(_) => break,
                    Err(LogError::Full(_)) => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => panic!("append: {e}"),
                }
            }
            seqs[ch as usize] += 100;
            lines += 100;
        }
    }
    log.close().expect("close");
    let st = log.stats();
    drop(log);
    println!(
        "big log: {:.2} GiB, {} segments, {lines} lines ({} of channel 0) written in {:.1} s",
        st.bytes as f64 / (1u64 << 30) as f64,
        st.segments,
        seqs[0],
        t.elapsed().as_secs_f64()
    );
    let cold = cold && drop_caches();
    let t = Instant::now();
    let (log, rec) = Log::open(dir.path(), opts).expect("reopen");
    let open = t.elapsed();
    println!(
        "recovery ({}): open in {:.1} ms ({} segments, {} records of the last one scanned); \
         the sealed part scales with segment count: ≈ {:.1} ms at 10 GiB",
        if cold { "cold cache" } else { "warm cache" },
        open.as_secs_f64() * 1e3,
        rec.segments,
        rec.records_scanned,
        open.as_secs_f64() * 1e3 * (10.0 / (st.bytes as f64 / (1u64 << 30) as f64)),
    );
    for (name, since) in [
        ("last 100,000", None),
        ("last 100,000 --since 1h", Some(now_us() - 3_600_000_000)),
    ] {
        let cold = cold && drop_caches();
        let t = Instant::now();
        let got = log
            .read(
                0,
                &Query {
                    since_us: since,
                    limit: 100_000,
                    from_end: true,
                    ..Query::default()
                },
            )
            .expect("read");
        println!(
            "read channel 0 ({name}, {}): {} lines in {:.1} ms",
            if cold { "cold cache" } else { "warm cache" },
            got.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    drop(log);
    // Worst case: a whole segment scanned (a full last segment, or an index to rebuild).
    let first_idx = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .min()
        .expect("an index");
    std::fs::remove_file(first_idx).expect("remove index");
    let cold = cold && drop_caches();
    let t = Instant::now();
    let (log, rec) = Log::open(dir.path(), Options::default()).expect("reopen");
    println!(
        "recovery with one 64 MiB segment scanned ({}): open in {:.1} ms ({} records scanned, \
         {} index rebuilt)",
        if cold { "cold cache" } else { "warm cache" },
        t.elapsed().as_secs_f64() * 1e3,
        rec.records_scanned,
        rec.indexes_rebuilt
    );
    let t = Instant::now();
    let mut after = 0;
    let mut n = 0;
    loop {
        let a = log.read_after(0, after, 1000, 1 << 20).expect("read_after");
        let Some(last) = a.lines.last() else { break };
        after = last.seq;
        n += a.lines.len();
    }
    println!(
        "cursor over channel 0 (read_after, 1000 lines a call): {n} lines in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}

/// Drops the page cache (root only) so a measurement reads the disk; false if it cannot.
fn drop_caches() -> bool {
    // Synced first so that dirty pages can be dropped.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

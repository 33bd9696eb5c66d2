//! Tests of the log on real files in temporary directories.

use super::*;
use std::path::Path;

const NOW: i64 = 1_700_000_000_000_000;

fn opts() -> Options {
    Options {
        segment_bytes: 4096,
        fsync: Fsync::Batch,
        flush_delay: Duration::from_millis(1),
        // NOW is in the past: keep its lines.
        max_age: Duration::from_secs(100 * 365 * 86400),
        ..Options::default()
    }
}

fn frame(ch: u64, seq: u64) -> Vec<u8> {
    let pad = "x".repeat((seq % 37) as usize);
    format!("<134>1 2024-01-01T00:00:00Z host app web.1 - - line {ch}/{seq} {pad}").into_bytes()
}

fn source(seq: u64) -> &'static [u8] {
    [&b"app"[..], b"heroku", b"router", b""][(seq % 4) as usize]
}

/// Appends lines first..first+n of a channel, received 200 ms after the previous seq (so
/// that every call makes its own record); returns the Lsn.
fn put(log: &Log, ch: u64, first: u64, n: u64) -> Lsn {
    put_at(log, ch, first, n, NOW + first as i64 * 200_000)
}

fn put_at(log: &Log, ch: u64, first: u64, n: u64, recv: i64) -> Lsn {
    let lines: Vec<(&[u8], Vec<u8>)> = (first..first + n)
        .map(|s| (source(s), frame(ch, s)))
        .collect();
    log.append(ch, first, recv, lines).unwrap()
}

fn wait(log: &Log, lsn: Lsn) {
    rt().block_on(log.durable(lsn)).unwrap();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn all(log: &Log, ch: u64) -> Vec<LogLine> {
    log.read(
        ch,
        &Query {
            limit: usize::MAX,
            ..Query::default()
        },
    )
    .unwrap()
}

fn seqs(lines: &[LogLine]) -> Vec<u64> {
    lines.iter().map(|l| l.seq).collect()
}

/// Every line is the one written with its seq.
fn check_lines(ch: u64, lines: &[LogLine]) {
    for l in lines {
        assert_eq!(&l.frame[..], &frame(ch, l.seq)[..], "seq {}", l.seq);
        assert_eq!(&l.source[..], source(l.seq), "seq {}", l.seq);
    }
}

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert!(rec.last_seq.is_empty());
    let mut lsn = 0;
    for i in 0..50 {
        lsn = put(&log, 1, 1 + i * 3, 3);
        lsn = lsn.max(put(&log, 2, 1 + i, 1));
    }
    wait(&log, lsn);
    let one = all(&log, 1);
    assert_eq!(seqs(&one), (1..=150).collect::<Vec<_>>());
    check_lines(1, &one);
    assert_eq!(seqs(&all(&log, 2)), (1..=50).collect::<Vec<_>>());
    assert!(all(&log, 3).is_empty());
    log.close().unwrap();
    assert!(matches!(put_err(&log, 1, 151), LogError::Closed));
    drop(log);

    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.last_seq, HashMap::from([(1, 150), (2, 50)]));
    assert_eq!((rec.records_skipped, rec.torn_bytes), (0, 0));
    let again = all(&log, 1);
    assert_eq!(again, one);
    // Numbering resumes after the last stored seq.
    assert!(matches!(
        put_err(&log, 1, 150),
        LogError::SeqNotIncreasing { last: 150, .. }
    ));
    wait(&log, put(&log, 1, 151, 1));
    assert_eq!(all(&log, 1).len(), 151);
}

fn put_err(log: &Log, ch: u64, seq: u64) -> LogError {
    log.append(ch, seq, NOW, [(&b"app"[..], &b"x"[..])])
        .unwrap_err()
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = Log::open(dir.path(), opts()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), opts()),
        Err(LogError::Locked(_))
    ));
}

#[test]
fn a_closed_log_lets_go_of_its_directory_while_still_held() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    put(&log, 1, 1, 3);
    log.close().unwrap();
    // A router stopped in-process frees its channels (each holding the log) later, on a
    // thread of its own; the next router on the same directory must not wait for that.
    let (again, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.last_seq, HashMap::from([(1, 3)]));
    assert_eq!(seqs(&all(&again, 1)), vec![1, 2, 3]);
    assert!(matches!(
        Log::open(dir.path(), opts()),
        Err(LogError::Locked(_))
    ));
    drop(log);
    drop(again);
}

#[test]
fn invalid_lines_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let long = [b'a'; 49];
    let e = log
        .append(
            1,
            1,
            NOW,
            [(&b"app"[..], &b"ok"[..]), (&long[..], &b"x"[..])],
        )
        .unwrap_err();
    assert!(matches!(e, LogError::Invalid(_)), "{e}");
    assert!(matches!(put_err(&log, 1, 0), LogError::Invalid(_)));
    // Nothing of the refused call was kept: seq 1 is still free.
    wait(&log, put(&log, 1, 1, 2));
    assert_eq!(seqs(&all(&log, 1)), vec![1, 2]);
    assert_eq!(log.stats().appended_lines, 2);
}

#[test]
fn appends_of_one_channel_coalesce_into_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        segment_bytes: 1 << 20,
        flush_delay: Duration::from_millis(300),
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    for s in 1..=100 {
        put_at(&log, 7, s, 1, NOW);
    }
    for s in 1..=10 {
        put_at(&log, 8, s, 1, NOW);
    }
    let lsn = put_at(&log, 9, 1, 1, NOW);
    wait(&log, lsn);
    let st = log.stats();
    assert_eq!(st.written_lines, 111);
    assert_eq!(st.written_records, 3, "{st:?}");
    assert_eq!(st.writes, 1);
    assert_eq!(
        lsn,
        log.durable_lsn(),
        "the returned Lsn is where the write ended"
    );
    assert_eq!(seqs(&all(&log, 7)), (1..=100).collect::<Vec<_>>());
}

#[test]
fn queries_by_seq_time_and_from_end_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    // 100 records of 10 lines, one per second of receive time; another channel between.
    let mut lsn = 0;
    for r in 0..100u64 {
        lsn = put_at(&log, 1, 1 + r * 10, 10, NOW + r as i64 * 1_000_000);
        put_at(&log, 2, 1 + r, 1, NOW + r as i64 * 1_000_000);
    }
    wait(&log, lsn);
    assert!(log.stats().segments > 10, "{:?}", log.stats());
    let q = |q: Query| seqs(&log.read(1, &q).unwrap());
    assert_eq!(
        q(Query {
            after_seq: Some(500),
            limit: 10,
            ..Query::default()
        }),
        (501..=510).collect::<Vec<_>>()
    );
    // Records 20..30 by receive time: seqs 201..=300.
    let range = Query {
        since_us: Some(NOW + 20_000_000),
        until_us: Some(NOW + 30_000_000),
        limit: 1000,
        ..Query::default()
    };
    assert_eq!(q(range.clone()), (201..=300).collect::<Vec<_>>());
    assert_eq!(
        q(Query {
            limit: 15,
            from_end: true,
            ..range.clone()
        }),
        (286..=300).collect::<Vec<_>>()
    );
    assert_eq!(
        q(Query {
            limit: 25,
            from_end: true,
            ..Query::default()
        }),
        (976..=1000).collect::<Vec<_>>()
    );
    assert_eq!(
        q(Query { limit: 5, ..range }),
        (201..=205).collect::<Vec<_>>()
    );
    assert_eq!(
        q(Query {
            after_seq: Some(995),
            limit: 100,
            from_end: true,
            ..Query::default()
        }),
        (996..=1000).collect::<Vec<_>>()
    );
    let got = log
        .read(
            1,
            &Query {
                limit: 1000,
                ..Query::default()
            },
        )
        .unwrap();
    check_lines(1, &got);
    assert_eq!(got[200].recv_us, NOW + 20_000_000);
    assert!(q(Query::default()).is_empty(), "limit 0 reads nothing");
}

#[test]
fn cursor_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let mut lsn = 0;
    for r in 0..200u64 {
        lsn = put(&log, 5, 1 + r * 3, 3);
        put(&log, 6, 1 + r, 1);
    }
    wait(&log, lsn);
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let a = log.read_after(5, after, 7, usize::MAX).unwrap();
        assert_eq!((a.first_stored, a.last_stored), (Some(1), Some(600)));
        let Some(last) = a.lines.last() else { break };
        assert!(a.lines.len() <= 7);
        after = last.seq;
        got.extend(a.lines);
    }
    assert_eq!(seqs(&got), (1..=600).collect::<Vec<_>>());
    check_lines(5, &got);
    // A byte budget smaller than a line still returns one line.
    let a = log.read_after(5, 10, 100, 1).unwrap();
    assert_eq!(seqs(&a.lines), vec![11]);
    let none = log.read_after(77, 0, 100, usize::MAX).unwrap();
    assert_eq!(none, After::default());
}

#[test]
fn sealed_segments_reopen_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let mut lsn = 0;
    for r in 0..300u64 {
        lsn = put(&log, 1 + r % 3, 1 + r / 3, 1);
    }
    wait(&log, lsn);
    let records = log.stats().written_records;
    let before: Vec<_> = (1..=3).map(|c| all(&log, c)).collect();
    log.close().unwrap();
    drop(log);
    let idx = files(dir.path(), "idx");
    assert_eq!(idx.len(), files(dir.path(), "log").len() - 1);

    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.indexes_rebuilt, 0);
    assert!(
        rec.records_scanned < records / 5,
        "only the last segment is scanned: {} of {records}",
        rec.records_scanned
    );
    for c in 1..=3 {
        assert_eq!(all(&log, c), before[c as usize - 1]);
    }
    drop(log);

    // A missing index and a damaged one are rebuilt by scanning their segment.
    std::fs::remove_file(&idx[0]).unwrap();
    let mut raw = std::fs::read(&idx[2]).unwrap();
    raw[60] ^= 0xff;
    std::fs::write(&idx[2], raw).unwrap();
    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.indexes_rebuilt, 2);
    for c in 1..=3 {
        assert_eq!(all(&log, c), before[c as usize - 1]);
    }
    assert_eq!(rec.last_seq[&3], 100);
}

/// Writes `n` records of channel 1 into one segment and closes; returns the segment path
/// and the end offset of every record.
fn one_segment(dir: &Path, n: u64) -> (std::path::PathBuf, Vec<u64>) {
    let o = Options {
        segment_bytes: 1 << 30,
        ..opts()
    };
    let (log, _) = Log::open(dir, o).unwrap();
    for r in 0..n {
        wait(&log, put(&log, 1, 1 + r * 2, 2));
    }
    log.close().unwrap();
    drop(log);
    let seg = files(dir, "log").pop().unwrap();
    let f = File::open(&seg).unwrap();
    let len = f.metadata().unwrap().len();
    let mut ends = Vec::new();
    record::scan(&f, len, |off, h| ends.push(off + u64::from(h.len))).unwrap();
    assert_eq!(ends.len() as u64, n);
    (seg, ends)
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_survives() {
    let src = tempfile::tempdir().unwrap();
    let (seg, ends) = one_segment(src.path(), 40);
    let raw = std::fs::read(&seg).unwrap();
    let mut rng = fastrand::Rng::with_seed(12);
    for _ in 0..25 {
        let cut = rng.usize(1..raw.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(seg.file_name().unwrap());
        std::fs::write(&path, &raw[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut as u64).count() as u64;
        let boundary = if whole == 0 {
            0
        } else {
            ends[whole as usize - 1]
        };
        let (log, rec) = Log::open(dir.path(), opts()).unwrap();
        assert_eq!(rec.torn_bytes, cut as u64 - boundary, "cut at {cut}");
        assert_eq!(rec.records_skipped, 0);
        let got = all(&log, 1);
        assert_eq!(
            seqs(&got),
            (1..=whole * 2).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        check_lines(1, &got);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), boundary);
        // The log goes on after the cut.
        wait(&log, put(&log, 1, 1000, 1));
        assert_eq!(all(&log, 1).last().unwrap().seq, 1000);
    }
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, ends) = one_segment(dir.path(), 20);
    let mut raw = std::fs::read(&seg).unwrap();
    // A byte inside record 5 (seqs 11, 12), and the length field of record 12 (25, 26),
    // counted from 0.
    raw[ends[4] as usize + 50] ^= 0x55;
    raw[ends[11] as usize] ^= 0x10;
    std::fs::write(&seg, &raw).unwrap();
    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.records_skipped, 2, "{rec:?}");
    assert_eq!(rec.torn_bytes, 0);
    let want: Vec<u64> = (1..=40).filter(|s| ![11, 12, 25, 26].contains(s)).collect();
    let got = all(&log, 1);
    assert_eq!(seqs(&got), want);
    check_lines(1, &got);
}

#[test]
fn a_corrupt_record_in_a_sealed_segment_is_skipped_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let mut lsn = 0;
    for r in 0..60u64 {
        lsn = put(&log, 1, 1 + r, 1);
    }
    wait(&log, lsn);
    log.close().unwrap();
    drop(log);
    let seg = &files(dir.path(), "log")[0];
    let mut raw = std::fs::read(seg).unwrap();
    raw[60] ^= 1; // inside the first line of the first record
    std::fs::write(seg, raw).unwrap();
    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(rec.indexes_rebuilt, 0, "the index is trusted");
    let got = all(&log, 1);
    assert_eq!(seqs(&got), (2..=60).collect::<Vec<_>>());
    assert_eq!(log.stats().read_corrupt_records, 1);
}

#[test]
fn retention_by_bytes_deletes_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        max_bytes: 16 << 10,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    let mut lsn = 0;
    for r in 0..1000u64 {
        lsn = put(&log, 1, 1 + r, 1);
    }
    wait(&log, lsn);
    let st = log.stats();
    assert!(st.deleted_segments > 5, "{st:?}");
    assert!(st.bytes <= (16 << 10) + 4096, "{st:?}");
    assert_eq!(files(dir.path(), "log").len() as u64, st.segments);
    let a = log.read_after(1, 0, 10_000, usize::MAX).unwrap();
    let first = a.first_stored.unwrap();
    assert!(first > 1);
    assert_eq!(a.lines[0].seq, first);
    assert_eq!(a.last_stored, Some(1000));
    assert_eq!(seqs(&a.lines), (first..=1000).collect::<Vec<_>>());
    assert_eq!(seqs(&all(&log, 1)), seqs(&a.lines));
    // Positions keep growing after deletions, and a reopen agrees.
    let durable = log.durable_lsn();
    drop(log);
    let (log, rec) = Log::open(dir.path(), opts()).unwrap();
    assert_eq!(log.durable_lsn(), durable);
    assert_eq!(rec.last_seq[&1], 1000);
}

#[test]
fn retention_by_age_deletes_segments_whose_newest_record_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        max_age: Duration::from_secs(3600),
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    let now = now_us();
    let old = now - 2 * 3600 * 1_000_000;
    for r in 0..200u64 {
        put_at(&log, 1, 1 + r, 1, old + r as i64 * 200_000);
    }
    let mut lsn = 0;
    for r in 200..400u64 {
        lsn = put_at(&log, 1, 1 + r, 1, now);
    }
    wait(&log, lsn);
    assert!(log.stats().deleted_segments > 3, "{:?}", log.stats());
    let got = all(&log, 1);
    // Only the segment where old lines meet new ones keeps old lines.
    let old_kept = got.iter().filter(|l| l.recv_us < now).count();
    assert!(old_kept < 50, "{old_kept}");
    assert_eq!(got.last().unwrap().seq, 400);
    let first = log.read_after(1, 0, 1, usize::MAX).unwrap().first_stored;
    assert_eq!(first, Some(got[0].seq));
}

#[test]
fn a_forgotten_channel_is_not_returned_and_stays_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        max_bytes: 12 << 10,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o.clone()).unwrap();
    let mut lsn = 0;
    for r in 0..30u64 {
        put(&log, 1, 1 + r, 1);
        lsn = put(&log, 2, 1 + r, 1);
    }
    wait(&log, lsn);
    log.forget(1).unwrap();
    assert!(all(&log, 1).is_empty());
    assert_eq!(log.read_after(1, 0, 10, 1000).unwrap(), After::default());
    assert_eq!(all(&log, 2).len(), 30);
    drop(log);
    let (log, _) = Log::open(dir.path(), o).unwrap();
    assert!(all(&log, 1).is_empty());
    assert_eq!(
        std::fs::metadata(dir.path().join("forgotten"))
            .unwrap()
            .len(),
        20
    );
    // Once retention has deleted every segment holding it, the channel leaves the file.
    let mut lsn = 0;
    for r in 30..400u64 {
        lsn = put(&log, 2, 1 + r, 1);
    }
    wait(&log, lsn);
    assert_eq!(
        std::fs::metadata(dir.path().join("forgotten"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(all(&log, 2).last().unwrap().seq, 400);
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        segment_bytes: 1 << 20,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    let log = Arc::new(log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let appends = 400u64;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..appends {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let lsn = put(&log, t, 1, 4);
                log.durable(lsn).await.unwrap();
                lsn
            }));
        }
        for t in tasks {
            let lsn = t.await.unwrap();
            assert!(log.durable_lsn() >= lsn);
        }
    });
    let st = log.stats();
    assert_eq!(st.written_lines, appends * 4);
    assert!(
        st.fsyncs * 4 < appends,
        "{} fsyncs for {appends} appends",
        st.fsyncs
    );
    for ch in 0..appends {
        assert_eq!(seqs(&all(&log, ch)), vec![1, 2, 3, 4]);
    }
}

#[test]
fn interval_mode_fsyncs_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        fsync: Fsync::Interval,
        fsync_interval: Duration::from_millis(200),
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    wait(&log, put(&log, 1, 1, 1));
    let t = Instant::now();
    for s in 2..50 {
        let lsn = put(&log, 1, s, 1);
        std::thread::sleep(Duration::from_millis(2));
        if s == 49 {
            wait(&log, lsn);
        }
    }
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert!(log.stats().fsyncs <= 4, "{:?}", log.stats());
}

#[test]
fn a_full_pending_buffer_refuses_appends_and_says_when_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        max_pending_bytes: 8 << 10,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    let big = vec![b'x'; 1000];
    let lines: Vec<(&[u8], &[u8])> = (0..10).map(|_| (&b"app"[..], &big[..])).collect();
    let e = log.append(1, 1, NOW, lines).unwrap_err();
    assert!(matches!(e, LogError::Full(8192)), "{e}");
    assert_eq!(log.stats().rejected_full_lines, 10);
    rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(2), log.writable())
            .await
            .unwrap()
    });
    wait(&log, put(&log, 1, 1, 3));
    assert_eq!(all(&log, 1).len(), 3);
}

#[test]
fn close_is_bounded_with_many_channels_pending() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        segment_bytes: 64 << 20,
        flush_delay: Duration::from_secs(60),
        flush_bytes: usize::MAX,
        max_pending_bytes: 256 << 20,
        fsync: Fsync::Interval,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o.clone()).unwrap();
    for ch in 0..20_000u64 {
        put(&log, ch, 1, 2);
    }
    assert!(log.stats().pending_bytes > 1 << 20, "{:?}", log.stats());
    let t = Instant::now();
    log.close().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    drop(log);
    let (log, rec) = Log::open(dir.path(), o).unwrap();
    assert_eq!(rec.last_seq.len(), 20_000);
    assert_eq!(seqs(&all(&log, 12_345)), vec![1, 2]);
}

#[test]
fn a_resolved_waiter_finds_its_lines_even_when_its_write_spans_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        flush_delay: Duration::from_millis(50),
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    let log = Arc::new(log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..5u64 {
            // 60 channels × ~700 bytes in one write: about ten segments rolled mid-write.
            let mut tasks = Vec::new();
            for ch in 0..60u64 {
                let lsn = put(&log, ch, 1 + round * 8, 8);
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    log.durable(lsn).await.unwrap();
                    let got = log.read_after(ch, round * 8, 100, usize::MAX).unwrap();
                    assert_eq!(got.lines.len(), 8, "round {round} channel {ch}");
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    assert!(log.stats().segments > 20, "{:?}", log.stats());
}

#[test]
fn preallocated_segments_are_cut_to_their_records_when_sealed_and_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        segment_bytes: 32 << 10,
        preallocate: 8 << 10,
        // Preallocation is for writes through the page cache.
        direct: false,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o.clone()).unwrap();
    let mut lsn = 0;
    for i in 0..400 {
        lsn = put(&log, 1, 1 + i * 3, 3);
        if i % 50 == 0 {
            wait(&log, lsn);
            // The active segment is zero-filled ahead of what was written.
            let active = files(dir.path(), "log").pop().unwrap();
            let on_disk = std::fs::metadata(&active).unwrap().len();
            let written = log.stats().bytes - sealed_bytes(dir.path());
            assert!(on_disk >= written, "{on_disk} < {written}");
        }
    }
    wait(&log, lsn);
    let one = all(&log, 1);
    assert_eq!(seqs(&one), (1..=1200).collect::<Vec<_>>());
    check_lines(1, &one);
    let segs = files(dir.path(), "log");
    assert!(segs.len() > 3, "{segs:?}");
    drop(log);
    // The zeros past the last record are not a torn tail, and each sealed segment is as
    // long as its index says (else the index would be rebuilt by a scan).
    let (log, rec) = Log::open(dir.path(), o).unwrap();
    assert_eq!(
        (rec.records_skipped, rec.torn_bytes, rec.indexes_rebuilt),
        (0, 0, 0),
        "{rec:?}"
    );
    assert_eq!(all(&log, 1), one);
    wait(&log, put(&log, 1, 1201, 1));
    assert_eq!(all(&log, 1).len(), 1201);
}

/// Bytes of the sealed segments (those with an index beside them).
fn sealed_bytes(dir: &Path) -> u64 {
    files(dir, "idx")
        .iter()
        .map(|i| std::fs::metadata(i.with_extension("log")).unwrap().len())
        .sum()
}

#[test]
fn lines_read_back_whole_after_the_writer_lets_their_pages_go() {
    // About 35 MiB in 24 MiB segments: the writer lets go of the page cache behind the newest
    // 16 MiB of the active segment and of a sealed one at once; every line reads back.
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        segment_bytes: 24 << 20,
        fsync: Fsync::Interval,
        direct: false,
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o).unwrap();
    let (per, calls) = (1000, 400);
    let mut lsn = 0;
    for c in 0..calls {
        lsn = put(&log, 3, 1 + c * per, per);
    }
    log.close().unwrap();
    drop(log);
    let (log, _) = Log::open(dir.path(), opts()).unwrap();
    let lines = all(&log, 3);
    assert_eq!(seqs(&lines), (1..=calls * per).collect::<Vec<_>>());
    check_lines(3, &lines);
    assert!(lsn > 24 << 20, "a segment was sealed: {lsn}");
    assert_eq!(files(dir.path(), "log").len(), 2);
}

#[test]
fn small_and_large_writes_mixed_read_back_whole_while_open_and_after_reopen() {
    // In interval mode writes under 64 KiB go through the page cache, larger ones directly
    // (where the filesystem has direct I/O): alternated, each over the other's last block,
    // every line reads back, from the open log and after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        segment_bytes: 4 << 20,
        fsync: Fsync::Interval,
        fsync_interval: Duration::from_millis(2),
        ..opts()
    };
    let (log, _) = Log::open(dir.path(), o.clone()).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut next = 1;
    for i in 0..120 {
        let n = if i % 2 == 0 {
            rng.u64(1..5)
        } else {
            rng.u64(800..1500)
        };
        wait(&log, put(&log, 4, next, n));
        next += n;
        if i % 20 == 19 {
            let lines = all(&log, 4);
            assert_eq!(seqs(&lines), (1..next).collect::<Vec<_>>(), "write {i}");
        }
    }
    let open_lines = all(&log, 4);
    check_lines(4, &open_lines);
    log.close().unwrap();
    drop(log);
    let (log, rec) = Log::open(dir.path(), o).unwrap();
    assert_eq!((rec.records_skipped, rec.torn_bytes), (0, 0));
    let lines = all(&log, 4);
    assert_eq!(lines, open_lines);
    assert!(files(dir.path(), "log").len() > 1, "segments were sealed");
}

//! Throughput of the intake hot path: split a logplex-1 body of 143-byte octet-counted frames
//! and parse every frame, as the HTTP and TCP listeners do; reported in messages/s and bytes/s.
//!
//! Every benchmark runs twice: `intake_*` on wall-clock time (criterion's default) and
//! `cpu_intake_*` on the on-CPU time of the benchmark thread, read from
//! `/proc/thread-self/schedstat`. The second is what one core can do even when the machine
//! is shared (other builds time-slicing with us would otherwise lower the wall-clock figure);
//! it still includes slowdowns from a busy hyperthread sibling. On systems without schedstat
//! the CPU group is skipped.

use bytes::{Bytes, BytesMut};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use logplex_proto::{parse, parse_lenient, split_batch, Decoded, SyslogCodec};
use tokio_util::codec::Decoder;

const FRAMES: usize = 100_000;
const FRAME_LEN: usize = 143;

/// ~100k frames like log-shuttle's, each exactly 143 bytes with its `LEN ` prefix.
fn body() -> Bytes {
    let header = b"<190>1 2016-03-08T02:43:26.693600+00:00 host t.00000000-0000-4000-8000-000000000001 web.1 - - ";
    let msg_len = FRAME_LEN - 4; // "139 "
    let mut buf = Vec::with_capacity(FRAMES * FRAME_LEN);
    for i in 0..FRAMES {
        let start = buf.len();
        buf.extend_from_slice(format!("{msg_len} ").as_bytes());
        buf.extend_from_slice(header);
        let line = format!("line {i} at=info method=GET path=\"/\" status=200 ");
        buf.extend_from_slice(line.as_bytes());
        buf.resize(start + FRAME_LEN, b'x');
    }
    Bytes::from(buf)
}

/// On-CPU time of the calling thread in nanoseconds (first field of schedstat).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A criterion measurement of on-CPU time, formatted like wall-clock time.
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns().unwrap_or(0)
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().unwrap_or(0).saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, ns: &u64) -> f64 {
        *ns as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as WallTime's; reuse its formatter.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn bench<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let body = body();
    assert_eq!(body.len(), FRAMES * FRAME_LEN);
    let frames = split_batch(&body, 10240, Some(FRAMES)).unwrap();
    assert!(frames.iter().all(|f| parse(f).is_ok()));

    for (unit, tp) in [
        ("msgs", Throughput::Elements(FRAMES as u64)),
        ("bytes", Throughput::Bytes(body.len() as u64)),
    ] {
        let mut g = c.benchmark_group(format!("{prefix}intake_{unit}"));
        g.throughput(tp);
        g.bench_function(BenchmarkId::new("split_batch+parse_lenient", FRAMES), |b| {
            b.iter(|| {
                let frames = split_batch(black_box(&body), 10240, None).unwrap();
                let mut n = 0usize;
                for f in &frames {
                    n += parse_lenient(f).unwrap().msg.len();
                }
                n
            })
        });
        g.bench_function(BenchmarkId::new("split_batch+parse", FRAMES), |b| {
            b.iter(|| {
                let frames = split_batch(black_box(&body), 10240, None).unwrap();
                frames
                    .iter()
                    .map(|f| parse(f).unwrap().msg.len())
                    .sum::<usize>()
            })
        });
        g.bench_function(BenchmarkId::new("parse_lenient", FRAMES), |b| {
            b.iter(|| {
                frames
                    .iter()
                    .map(|f| parse_lenient(black_box(f)).unwrap().msg.len())
                    .sum::<usize>()
            })
        });
        g.bench_function(BenchmarkId::new("split_batch", FRAMES), |b| {
            b.iter(|| split_batch(black_box(&body), 10240, None).unwrap().len())
        });
        g.bench_function(BenchmarkId::new("parse_lenient_hot_frame", FRAMES), |b| {
            // One frame parsed 100k times: the parser without memory traffic.
            let f = &frames[0];
            b.iter(|| {
                (0..FRAMES)
                    .map(|_| parse_lenient(black_box(f)).unwrap().msg.len())
                    .sum::<usize>()
            })
        });
        g.bench_function(BenchmarkId::new("codec+parse_lenient", FRAMES), |b| {
            b.iter(|| {
                let mut codec = SyslogCodec::default();
                let mut buf = BytesMut::from(&body[..]);
                let mut n = 0usize;
                while let Ok(Some(Decoded::Frame(f))) = codec.decode(&mut buf) {
                    n += parse_lenient(&f).unwrap().msg.len();
                }
                n
            })
        });
        g.finish();
    }
}

fn wall(c: &mut Criterion) {
    bench(c, "");
}

fn cpu(c: &mut Criterion<CpuTime>) {
    if thread_cpu_ns().is_some() {
        bench(c, "cpu_");
    }
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(CpuTime);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);

//! Throughput of the intake hot path: split a logplex-1 body of 143-byte octet-counted frames
//! and parse every frame, as the HTTP and TCP listeners do; reported in messages/s and bytes/s.

use bytes::{Bytes, BytesMut};
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

fn bench(c: &mut Criterion) {
    let body = body();
    assert_eq!(body.len(), FRAMES * FRAME_LEN);
    let frames = split_batch(&body, 10240, Some(FRAMES)).unwrap();
    assert!(frames.iter().all(|f| parse(f).is_ok()));

    for (unit, tp) in [
        ("msgs", Throughput::Elements(FRAMES as u64)),
        ("bytes", Throughput::Bytes(body.len() as u64)),
    ] {
        let mut g = c.benchmark_group(format!("intake_{unit}"));
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

criterion_group!(benches, bench);
criterion_main!(benches);

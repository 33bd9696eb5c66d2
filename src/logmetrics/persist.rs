//! The roll-ups of a channel as bytes and back, so they survive a restart: a magic, a
//! version, a CRC-32C of the payload, then the payload (postcard). Decoding checks all of
//! it, and every record inside, before it builds anything.

use super::extract::{Kind, MAX_NAME, MAX_UNIT};
use super::names::{Names, Slot};
use super::period::{Agg, Parts, Record};
use super::{floor, Closed, Limits, LogMetrics, Totals, FINE, HOUR, MINUTE, RECORD_OVERHEAD};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"LPMX";
/// The version of the layout written; a change to [`State`] or [`Record`] bumps it.
pub const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 4;

/// Why bytes are not a channel's metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not logplex metrics (bad magic)")]
    Magic,
    #[error("logplex metrics version {0} cannot be read by this build (it reads {VERSION})")]
    Version(u8),
    #[error("logplex metrics fail their checksum")]
    Checksum,
    #[error("logplex metrics are malformed: {0}")]
    Malformed(&'static str),
}

#[derive(Serialize, Deserialize)]
struct State {
    origin: i64,
    sketch_floor: i64,
    fine_floor: i64,
    names: Vec<NameState>,
    /// The open 10-second, minute and hour periods: (start, record).
    open: [(i64, Record); 3],
    fines: Vec<ClosedState>,
    minutes: Vec<ClosedState>,
    hours: Vec<ClosedState>,
}

#[derive(Serialize, Deserialize)]
struct NameState {
    id: u16,
    kind: Kind,
    name: String,
    unit: String,
    last_seen: i64,
}

#[derive(Serialize, Deserialize)]
struct ClosedState {
    start: i64,
    full: bool,
    /// Written as a `Vec<u8>` is; shared with the live period when saving.
    #[serde(with = "shared_bytes")]
    data: Arc<[u8]>,
}

/// `Arc<[u8]>` as serde writes and reads a `Vec<u8>` (a sequence of bytes).
mod shared_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(data: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(data.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        Vec::<u8>::deserialize(d).map(Arc::from)
    }
}

/// The roll-ups taken for a save ([`LogMetrics::to_save`]): the closed periods shared, not
/// copied, so taking them under the channel's lock is cheap; [`Saving::bytes`] makes the
/// bytes after.
pub struct Saving(State);

impl Saving {
    /// [`LogMetrics::encode`]'s bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(&self.0).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

impl LogMetrics {
    /// The roll-ups as bytes (see the module doc); the cumulative [`super::Counters`] are
    /// not in them (they restart from zero, as Prometheus counters do).
    pub fn encode(&self) -> Vec<u8> {
        self.to_save().bytes()
    }

    /// What [`LogMetrics::encode`] writes, taken without making the bytes yet.
    pub fn to_save(&self) -> Saving {
        let kind = |id| self.names.slot(id).map(|s| s.kind);
        let closed = |ring: &VecDeque<Closed>| {
            ring.iter()
                .map(|c| ClosedState {
                    start: c.start,
                    full: c.full,
                    data: c.data.clone(),
                })
                .collect()
        };
        Saving(State {
            origin: self.origin,
            sketch_floor: self.sketch_floor,
            fine_floor: self.fine_floor,
            names: self
                .names
                .iter()
                .map(|(id, s)| NameState {
                    id,
                    kind: s.kind,
                    name: s.name.to_string(),
                    unit: s.unit.to_string(),
                    last_seen: s.last_seen,
                })
                .collect(),
            open: [
                (self.fine.start, self.fine.to_record(kind, Parts::ALL)),
                (self.minute.start, self.minute.to_record(kind, Parts::ALL)),
                (self.hour.start, self.hour.to_record(kind, Parts::SKETCHES)),
            ],
            fines: closed(&self.fines),
            minutes: closed(&self.minutes),
            hours: closed(&self.hours),
        })
    }

    /// Metrics from [`LogMetrics::encode`]'s bytes, with new limits (over the byte budget,
    /// detail is dropped at once; over the names limit, names stay until they age out).
    pub fn decode(bytes: &[u8], limits: Limits) -> Result<LogMetrics, DecodeError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if bytes[4] != VERSION {
            return Err(DecodeError::Version(bytes[4]));
        }
        let (crc, payload) = bytes[5..].split_at(4);
        if crc32c::crc32c(payload).to_le_bytes() != crc {
            return Err(DecodeError::Checksum);
        }
        let state: State =
            postcard::from_bytes(payload).map_err(|_| DecodeError::Malformed("payload"))?;
        build(state, limits)
    }
}

fn valid_text(s: &str, max: usize, ok: impl Fn(u8) -> bool) -> bool {
    s.len() <= max && s.bytes().all(ok)
}

fn build(state: State, limits: Limits) -> Result<LogMetrics, DecodeError> {
    use DecodeError::Malformed;
    let mut names = Names::default();
    for n in state.names {
        let ok = (-(1 << 40)..(1 << 40)).contains(&n.last_seen)
            && !n.name.is_empty()
            && valid_text(&n.name, MAX_NAME, |b| {
                b.is_ascii_graphic() && !matches!(b, b'"' | b'\\')
            })
            && valid_text(&n.unit, MAX_UNIT, |b| {
                b.is_ascii_alphabetic() || matches!(b, b'%' | b'/' | b'_')
            });
        let slot = Slot {
            kind: n.kind,
            name: Arc::from(n.name),
            unit: Arc::from(n.unit),
            last_seen: n.last_seen,
        };
        if !ok || !names.restore(n.id, slot) {
            return Err(Malformed("names"));
        }
    }
    names.restored();
    // A record is usable when it is consistent and names only known names of its kind.
    let usable = |r: &Record| {
        r.valid()
            && r.names
                .iter()
                .all(|(id, n)| names.slot(*id).is_some_and(|s| s.kind == n.kind()))
    };
    // Times are Unix seconds within ±35,000 years, so no arithmetic on them overflows.
    let sane = |t: i64| (-(1 << 40)..(1 << 40)).contains(&t);
    let floor_ok = |t: i64| t == i64::MIN || sane(t);
    let [(fs, f), (ms, m), (hs, h)] = &state.open;
    if !sane(state.origin)
        || !floor_ok(state.sketch_floor)
        || !floor_ok(state.fine_floor)
        || !sane(*fs)
        || floor(*fs, FINE) != *fs
        || floor(*fs, MINUTE) != *ms
        || floor(*fs, HOUR) != *hs
        || ![f, m, h].into_iter().all(usable)
    {
        return Err(Malformed("open periods"));
    }
    let mut closed_bytes = 0;
    let mut ring = |rs: Vec<ClosedState>, len: i64, before: i64| {
        let mut out = VecDeque::with_capacity(rs.len());
        let mut prev = i64::MIN;
        for c in rs {
            let ok = c.start > prev
                && sane(c.start)
                && c.start < before
                && floor(c.start, len) == c.start
                && Record::decode(&c.data).is_some_and(|r| usable(&r));
            if !ok {
                return Err(Malformed("closed periods"));
            }
            prev = c.start;
            closed_bytes += c.data.len() + RECORD_OVERHEAD;
            out.push_back(Closed {
                start: c.start,
                full: c.full,
                data: c.data,
            });
        }
        Ok(out)
    };
    let fines = ring(state.fines, FINE, *fs)?;
    let minutes = ring(state.minutes, MINUTE, *ms)?;
    let hours = ring(state.hours, HOUR, *hs)?;
    let agg = |start: i64, r: &Record, parts| {
        let mut a = Agg::new(start);
        a.merge(r, parts);
        a
    };
    let mut lm = LogMetrics {
        limits,
        origin: state.origin,
        names,
        fine: agg(*fs, f, Parts::ALL),
        minute: agg(*ms, m, Parts::ALL),
        hour: agg(*hs, h, Parts::SKETCHES),
        fines,
        minutes,
        hours,
        closed_bytes,
        sketch_floor: state.sketch_floor,
        fine_floor: state.fine_floor,
        totals: Totals::default(),
        names_over_limit: 0,
        malformed: 0,
        evicted: 0,
    };
    // Only a newest run of minutes may keep sketches.
    if let Some(i) = lm.minutes.iter().rposition(|m| !m.full) {
        lm.sketch_floor = lm.sketch_floor.max(lm.minutes[i].start + MINUTE);
        for j in 0..i {
            lm.thin(j);
        }
    }
    lm.enforce_budget();
    Ok(lm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut lm = LogMetrics::new(1_000_000, Limits::default());
        for t in 0..400 {
            let now = 1_000_000 + t * 7;
            lm.observe(
                now,
                b"heroku",
                b"router",
                format!(
                    "status={} service={}ms connect=1ms bytes=10",
                    200 + (t % 4) * 100,
                    t % 50
                )
                .as_bytes(),
            );
            lm.observe(
                now,
                b"app",
                b"web.1",
                format!(
                    "measure#db.query={}ms count#hits sample#pool={}",
                    t % 30,
                    t % 9
                )
                .as_bytes(),
            );
        }
        let bytes = lm.encode();
        let back = LogMetrics::decode(&bytes, Limits::default()).unwrap();
        assert_eq!(back.encode(), bytes);

        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(
            LogMetrics::decode(&bad, Limits::default()).unwrap_err(),
            DecodeError::Magic
        );
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(
            LogMetrics::decode(&bad, Limits::default()).unwrap_err(),
            DecodeError::Version(9)
        );
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            LogMetrics::decode(&bad, Limits::default()).unwrap_err(),
            DecodeError::Checksum
        );
        assert!(LogMetrics::decode(&bytes[..bytes.len() / 2], Limits::default()).is_err());
        assert!(LogMetrics::decode(&[], Limits::default()).is_err());
    }

    /// A closed period shared (`Arc<[u8]>`) is written byte for byte as version 1 wrote it
    /// from a `Vec<u8>`, and read back the same.
    #[test]
    fn shared_closed_periods_keep_the_layout_of_version_1() {
        #[derive(Serialize)]
        struct AsBefore {
            start: i64,
            full: bool,
            data: Vec<u8>,
        }
        let data: Vec<u8> = (0..=255).collect();
        let before = postcard::to_allocvec(&AsBefore {
            start: -7,
            full: true,
            data: data.clone(),
        })
        .unwrap();
        let now = ClosedState {
            start: -7,
            full: true,
            data: Arc::from(data.clone()),
        };
        assert_eq!(postcard::to_allocvec(&now).unwrap(), before);
        let back: ClosedState = postcard::from_bytes(&before).unwrap();
        assert_eq!(
            (back.start, back.full, &back.data[..]),
            (-7, true, &data[..])
        );
    }

    #[test]
    fn a_payload_with_a_good_checksum_is_still_checked() {
        let mut lm = LogMetrics::new(0, Limits::default());
        lm.observe(5, b"app", b"web.1", b"count#x=1");
        let bytes = lm.encode();
        let mut state: State = postcard::from_bytes(&bytes[HEADER..]).unwrap();
        state.names[0].name = "bad name".into();
        let payload = postcard::to_allocvec(&state).unwrap();
        let mut out = bytes[..5].to_vec();
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        assert_eq!(
            LogMetrics::decode(&out, Limits::default()).unwrap_err(),
            DecodeError::Malformed("names")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Bytes with a good checksum but any content: refused or usable, never a panic.
        #[test]
        fn any_payload_is_refused_or_usable(flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..8)) {
            let mut lm = LogMetrics::new(1_000_000, Limits::default());
            for t in 0..300 {
                lm.observe(1_000_000 + t * 11, b"heroku", b"router", format!("status=200 service={}ms code=H1{}", t % 70, t % 3).as_bytes());
                lm.observe(1_000_000 + t * 11, b"app", b"web.1", format!("measure#q={}ms count#c sample#s={}", t % 30, t).as_bytes());
            }
            let bytes = lm.encode();
            let mut payload = bytes[HEADER..].to_vec();
            for (at, b) in flips {
                let i = at % payload.len();
                payload[i] = b;
            }
            let mut out = bytes[..5].to_vec();
            out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
            if let Ok(mut back) = LogMetrics::decode(&out, Limits::default()) {
                let d = std::time::Duration::from_secs(86_400);
                let snap = back.snapshot(1_000_000 + 4000, d);
                let _ = snap.summary("app", d);
                let _ = snap.value(&"router.p95_service".parse().unwrap(), d);
                back.observe(1_000_000 + 9000, b"heroku", b"router", b"status=200 service=1ms");
                let _ = back.counters();
            }
        }
    }
}

//! A channel's line rate: how many lines it stored in each wall-clock minute of the last
//! [`MINUTES`], for the console and `GET /v2/stats`. The ring lives inside the channel's
//! history and is updated once per pushed batch under the lock the push already holds:
//! no lock or atomic of its own, nothing per line.

/// Minutes of counts kept.
pub const MINUTES: usize = 15;

const MINUTE_US: i64 = 60_000_000;

/// Lines stored per minute (a ring of [`MINUTES`] slots) and in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineRate {
    /// (minute since the Unix epoch, lines stored in it); a slot keeps its minute's count
    /// until the ring comes round to it again, so a quiet channel costs nothing.
    slots: [(u64, u64); MINUTES],
    total: u64,
}

fn minute(us: i64) -> u64 {
    (us.max(0) / MINUTE_US) as u64
}

impl LineRate {
    /// Counts `n` lines stored at `now_us` (µs since the epoch).
    pub fn add(&mut self, now_us: i64, n: u64) {
        let m = minute(now_us);
        let slot = &mut self.slots[(m % MINUTES as u64) as usize];
        if slot.0 != m {
            *slot = (m, 0);
        }
        slot.1 += n;
        self.total += n;
    }

    /// Lines stored in each of the last [`MINUTES`] minutes up to the one holding `now_us`,
    /// oldest first; the last is the minute under way.
    pub fn minutes(&self, now_us: i64) -> [u64; MINUTES] {
        let now = minute(now_us);
        let mut out = [0; MINUTES];
        for (k, v) in out.iter_mut().enumerate() {
            let Some(m) = now.checked_sub((MINUTES - 1 - k) as u64) else {
                continue;
            };
            let slot = self.slots[(m % MINUTES as u64) as usize];
            if slot.0 == m {
                *v = slot.1;
            }
        }
        out
    }

    /// Lines stored since the server started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000 / MINUTE_US * MINUTE_US;

    #[test]
    fn counts_land_in_their_minute() {
        let mut r = LineRate::default();
        r.add(T0, 5);
        r.add(T0 + 59_999_999, 2);
        r.add(T0 + MINUTE_US, 10);
        r.add(T0 + 3 * MINUTE_US + 1, 1);
        let m = r.minutes(T0 + 3 * MINUTE_US + 5);
        assert_eq!(m[MINUTES - 4..], [7, 10, 0, 1]);
        assert!(m[..MINUTES - 4].iter().all(|&c| c == 0));
        assert_eq!(r.total(), 18);
    }

    #[test]
    fn old_minutes_fall_out_of_the_ring() {
        let mut r = LineRate::default();
        r.add(T0, 5);
        // Read MINUTES minutes later: the slot of T0 is the one under way, and T0 is gone.
        assert_eq!(r.minutes(T0 + MINUTES as i64 * MINUTE_US), [0; MINUTES]);
        // Reused by a later minute, it starts from zero.
        r.add(T0 + MINUTES as i64 * MINUTE_US, 1);
        assert_eq!(r.minutes(T0 + MINUTES as i64 * MINUTE_US)[MINUTES - 1], 1);
        assert_eq!(r.total(), 6);
    }

    #[test]
    fn a_minute_read_before_it_is_written_is_empty() {
        let mut r = LineRate::default();
        r.add(T0 + 2 * MINUTE_US, 3);
        // A reader whose clock is a minute behind does not see a future minute's count.
        assert_eq!(r.minutes(T0 + MINUTE_US)[MINUTES - 1], 0);
    }
}

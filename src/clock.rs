//! The one wall clock: every timestamp logplex makes (received-at of lines, L-notices,
//! store rows, drain status, alert firings) comes from here, in microseconds or seconds
//! since the UNIX epoch. A clock set before 1970 reads as 0 rather than failing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the UNIX epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the UNIX epoch, now.
pub fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

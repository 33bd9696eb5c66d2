//! Opening a URL in the user's browser for `logplex logs --web`: `open` on macOS,
//! `xdg-open` elsewhere when a desktop session is there (`DISPLAY` or `WAYLAND_DISPLAY`).
//! Best effort: the URL is printed first, and a machine without a browser, a display or
//! the opener is not an error.

use std::process::{Command, Stdio};

/// The program that opens URLs here, if this looks like a machine with a browser.
fn opener() -> Option<&'static str> {
    if cfg!(target_os = "macos") {
        return Some("open");
    }
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    (set("DISPLAY") || set("WAYLAND_DISPLAY")).then_some("xdg-open")
}

/// Asks the desktop to open `url`, without waiting for it (a browser started by the
/// opener may live on after this command). Failures are only logged.
pub fn open(url: &str) {
    let Some(program) = opener() else {
        return;
    };
    let started = Command::new(program)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = started {
        tracing::debug!("cannot run {program}: {e}");
    }
}

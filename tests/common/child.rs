//! The one guard over the processes a test starts: whatever the test does (returns, fails an
//! assert, panics in a helper), a child it spawned is signalled by its PID and reaped, so a
//! failing test leaves no `logplex serve` or `rsyslogd` behind and a piped run
//! (`cargo test 2>&1 | cat`) does not wait on a leaked process holding the pipe.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process owned by a test. Dropped (at the end of the test or while a panic
/// unwinds) it is sent SIGKILL, or SIGTERM first and SIGKILL after a grace period (see
/// [`ChildGuard::term_first`]), and reaped.
pub struct ChildGuard {
    child: Child,
    what: String,
    grace: Option<Duration>,
    group: bool,
}

impl ChildGuard {
    /// Guards a child that was just spawned; `what` names it in messages.
    pub fn new(what: &str, child: Child) -> ChildGuard {
        ChildGuard {
            child,
            what: what.to_string(),
            grace: None,
            group: false,
        }
    }

    /// Spawns `cmd` and guards it at once; panics with the program's name when it cannot
    /// be started.
    pub fn spawn(what: &str, cmd: &mut Command) -> ChildGuard {
        match cmd.spawn() {
            Ok(c) => ChildGuard::new(what, c),
            Err(e) => panic!("cannot start {what} ({:?}): {e}", cmd.get_program()),
        }
    }

    /// On drop, SIGTERM first and SIGKILL only if it has not exited within `grace`.
    pub fn term_first(mut self, grace: Duration) -> ChildGuard {
        self.grace = Some(grace);
        self
    }

    /// Signals go to its whole process group (for a child spawned with
    /// `CommandExt::process_group(0)`, such as chromedriver with the browsers it starts).
    pub fn whole_group(mut self) -> ChildGuard {
        self.group = true;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` to the process by its PID (no `kill(1)` needed on the machine).
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .unwrap_or_else(|| panic!("{}: bad pid {}", self.what, self.child.id()));
        // ESRCH (already gone, not yet reaped) is fine: the wait reaps it.
        let _ = if self.group {
            rustix::process::kill_process_group(pid, sig)
        } else {
            rustix::process::kill_process(pid, sig)
        };
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Its exit status if it has exited (reaped), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(s) => s,
            Err(e) => panic!("{}: wait failed: {e}", self.what),
        }
    }

    /// Waits at most `within` for it to exit by itself.
    pub fn wait_timeout(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits at most `within` for the exit; panics (the drop then kills it)
    /// when it does not stop.
    pub fn stop(&mut self, within: Duration) -> ExitStatus {
        self.terminate();
        match self.wait_timeout(within) {
            Some(st) => st,
            None => panic!("{} did not exit within {within:?} of SIGTERM", self.what),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if running {
            if let Some(grace) = self.grace {
                self.terminate();
                if self.wait_timeout(grace).is_some() && !self.group {
                    return;
                }
            }
        }
        if running || self.group {
            // The group's other members may outlive its leader.
            self.signal(rustix::process::Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to its end with stdin from `input` (none when `None`) and its stdout and stderr
/// collected, guarded and bounded: a command still running after `within` is killed and
/// the test fails saying so (with what it printed so far).
pub fn output(what: &str, cmd: &mut Command, input: Option<&[u8]>, within: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut g = ChildGuard::spawn(what, cmd);
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(g.child().stdout.take().map(|s| Box::new(s) as _));
    let err = drain(g.child().stderr.take().map(|s| Box::new(s) as _));
    if let (Some(bytes), Some(mut stdin)) = (input, g.child().stdin.take()) {
        use std::io::Write;
        let bytes = bytes.to_vec();
        // Written from a thread so a child that does not read cannot block the test.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let Some(status) = g.wait_timeout(within) else {
        drop(g);
        let (o, e) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        panic!(
            "{what} did not finish within {within:?}; stdout: {:?}; stderr: {:?}",
            String::from_utf8_lossy(&o),
            String::from_utf8_lossy(&e)
        );
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

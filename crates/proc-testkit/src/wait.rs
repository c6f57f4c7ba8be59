//! Waits bounded by a timeout: a bug fails the test with a message saying what did not happen,
//! instead of hanging it. Where an event exists it is waited for (a pidfd, a channel, a
//! thread's end); only conditions without one (a file appearing, `/proc` changing) are polled,
//! every [`POLL_INTERVAL`].

use std::io::{BufRead, BufReader, Read};
use std::panic;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::procfs;

/// The pause between two looks at a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `done` every [`POLL_INTERVAL`] for at most `timeout`; whether it became true (it is
/// checked once more at the deadline).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || done().then_some(())).is_some()
}

/// Polls `probe` every [`POLL_INTERVAL`] for at most `timeout`; its first `Some`.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// [`wait_for`] that must succeed.
///
/// # Panics
/// `"{what}: not within {timeout:?}"` if `probe` gave nothing in time.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_for(timeout, probe).unwrap_or_else(|| panic!("{what}: not within {timeout:?}"))
}

/// Waits until `pid` (any process, not only a child of ours) has terminated, by pidfd
/// (pidfd_open(2), then poll(2) for `POLLIN`, which a pidfd signals once the process has
/// exited, zombie or not); `true` if it did within `timeout` or was gone already.
///
/// # Panics
/// If pidfd_open(2) or poll(2) fail other than with `ESRCH` (no such process) or `EINTR`.
pub fn wait_terminated(pid: i32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        match Errno::last() {
            Errno::ESRCH => return true,
            errno => panic!("pidfd_open({pid}): {errno}"),
        }
    }
    let fd = i32::try_from(fd).expect("a descriptor fits an int");
    let deadline = Instant::now() + timeout;
    let exited = loop {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so that a wait of less than a millisecond does not end at once.
        let millis = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd on our own descriptor.
        let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
        match ready {
            1 => break true,
            0 => break false,
            _ => match Errno::last() {
                Errno::EINTR => continue,
                errno => {
                    // SAFETY: our descriptor, closed once.
                    unsafe { libc::close(fd) };
                    panic!("poll(pidfd of {pid}): {errno}");
                }
            },
        }
    };
    // SAFETY: `fd` was returned by pidfd_open and is closed once.
    unsafe { libc::close(fd) };
    exited
}

/// Waits until no live (non-zombie) process is left in group `pgid`, by pidfd on each member
/// ([`wait_terminated`]): processes outside our reach (reparented grandchildren) may take a
/// moment to die after their signal.
///
/// # Errors
/// The members still alive at `timeout` (each as [`procfs::describe`] shows it).
pub fn wait_group_gone(pgid: i32, timeout: Duration) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let live: Vec<i32> = procfs::processes()
            .into_iter()
            .filter(|s| s.pgrp == pgid && s.is_live())
            .map(|s| s.pid)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(live.into_iter().map(procfs::describe).collect());
        }
        // Each at most until the deadline; then look again (a member may have forked).
        for pid in live {
            wait_terminated(pid, deadline.saturating_duration_since(Instant::now()));
        }
    }
}

/// Waits for our child to exit and reaps it: its pidfd first ([`wait_terminated`]), so that
/// `Child::wait` never blocks.
///
/// # Panics
/// `"{what} (pid N) did not exit within {timeout:?}"`, or if waitpid(2) fails.
#[track_caller]
pub fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let pid = i32::try_from(child.id()).expect("a pid fits a pid_t");
    assert!(
        wait_terminated(pid, timeout),
        "{what} (pid {pid}) did not exit within {timeout:?}"
    );
    child
        .wait()
        .unwrap_or_else(|err| panic!("waitpid({what}, pid {pid}): {err}"))
}

/// The next value from `rx` within `timeout`.
///
/// # Panics
/// `"{what}: nothing within {timeout:?}"`, or `"{what}: the sender is gone"`.
#[track_caller]
pub fn recv_within<T>(rx: &Receiver<T>, timeout: Duration, what: &str) -> T {
    match rx.recv_timeout(timeout) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: nothing within {timeout:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: the sender is gone"),
    }
}

/// Runs the blocking `work` on a thread of its own and returns what it returned, if it ends
/// within `timeout`. A panic in `work` is passed on as it was.
///
/// # Panics
/// `"{what}: not done within {timeout:?}"`; the thread is then left running (blocked), since
/// a thread cannot be stopped from outside.
#[track_caller]
pub fn within<T, F>(timeout: Duration, what: &str, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(panic::AssertUnwindSafe(work)));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(value)) => {
            let _ = worker.join();
            value
        }
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("{what}: not done within {timeout:?}"),
    }
}

/// The lines of a pipe, read by a thread of its own, each taken with a timeout.
pub struct Lines {
    rx: Receiver<std::io::Result<String>>,
    what: String,
}

impl Lines {
    /// Starts reading `pipe`; `what` names it in failure messages (e.g. `"the task's stdout"`).
    pub fn new(pipe: impl Read + Send + 'static, what: &str) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    break;
                }
            }
        });
        Self {
            rx,
            what: what.to_owned(),
        }
    }

    /// The next line (without its newline) within `timeout`; `None` at end-of-file.
    ///
    /// # Panics
    /// If no line comes within `timeout`, or reading fails.
    #[track_caller]
    pub fn next_within(&mut self, timeout: Duration) -> Option<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(line)) => Some(line),
            Ok(Err(err)) => panic!("reading {}: {err}", self.what),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line from {} within {timeout:?}", self.what)
            }
        }
    }

    /// The next line (without its newline) within `timeout`.
    ///
    /// # Panics
    /// At end-of-file, if no line comes within `timeout`, or if reading fails.
    #[track_caller]
    pub fn line(&mut self, timeout: Duration) -> String {
        let what = self.what.clone();
        self.next_within(timeout)
            .unwrap_or_else(|| panic!("{what} ended before the line expected"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::process::{Command, Stdio};

    use super::*;

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn a_condition_that_holds_later_is_seen_and_one_that_never_does_times_out() {
        let mut calls = 0;
        assert!(wait_until(LONG, || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        assert!(!wait_until(Duration::ZERO, || false), "looked at once");
        assert_eq!(wait_for(LONG, || Some(7)), Some(7));
    }

    #[test]
    #[should_panic(expected = "the file: not within")]
    fn eventually_names_what_did_not_happen() {
        eventually(Duration::from_millis(20), "the file", || None::<()>);
    }

    #[test]
    fn a_child_is_waited_for_by_pidfd_and_reaped() {
        let mut child = Command::new("sh")
            .args(["-c", "exit 3"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let status = wait_child(&mut child, LONG, "sh");
        assert_eq!(status.code(), Some(3));
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(wait_terminated(pid, Duration::ZERO), "gone: at once");
    }

    #[test]
    fn a_live_process_is_not_reported_terminated() {
        let mut child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(!wait_terminated(pid, Duration::from_millis(20)));
        assert_eq!(
            wait_group_gone(i32::MAX - 1, Duration::ZERO),
            Ok(()),
            "no such group"
        );
        child.kill().expect("kill");
        wait_child(&mut child, LONG, "sleep");
    }

    #[test]
    fn a_group_is_gone_once_its_members_died() {
        use std::os::unix::process::CommandExt as _;
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 1000 & sleep 1000 & wait"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = i32::try_from(leader.id()).expect("pid");
        eventually(LONG, "both sleeps started", || {
            (procfs::live_group_members(pgid).len() == 3).then_some(())
        });
        let alive = wait_group_gone(pgid, Duration::from_millis(20)).expect_err("alive");
        assert_eq!(alive.len(), 3, "{alive:?}");
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("killpg");
        wait_child(&mut leader, LONG, "sh");
        assert_eq!(wait_group_gone(pgid, LONG), Ok(()));
    }

    #[test]
    fn within_returns_the_result_and_passes_panics_on() {
        assert_eq!(within(LONG, "adding", || 2 + 2), 4);
        let caught = panic::catch_unwind(|| within(LONG, "failing", || panic!("inner")));
        let payload = caught.expect_err("panicked");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"inner"));
    }

    #[test]
    #[should_panic(expected = "parked: not done within")]
    fn within_fails_a_call_that_blocks() {
        within(Duration::from_millis(20), "parked", || {
            loop {
                thread::park();
            }
        });
    }

    #[test]
    fn lines_come_in_order_then_end() {
        let mut lines = Lines::new(Cursor::new(b"one\ntwo\n".to_vec()), "a cursor");
        assert_eq!(lines.line(LONG), "one");
        assert_eq!(lines.line(LONG), "two");
        assert_eq!(lines.next_within(LONG), None);
    }

    #[test]
    #[should_panic(expected = "no line from a silent pipe within")]
    fn a_silent_pipe_fails_the_read() {
        let (read, write) = std::io::pipe().expect("pipe");
        let mut lines = Lines::new(read, "a silent pipe");
        let _open = write;
        lines.line(Duration::from_millis(20));
    }
}

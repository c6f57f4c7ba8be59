//! Helpers for the tests: looking at processes through /proc and waiting for them by event
//! (blocking waitid, pidfd), never by sleeping.

use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use proc_state::{ExitStatus, SpawnSpec, StdinMode};

use crate::process;

/// A spec for `program args...` with stdin `/dev/null`, no cwd, no env.
pub(crate) fn spec(program: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        program: program.to_owned(),
        args: args.iter().map(|&arg| arg.to_owned()).collect(),
        cwd: None,
        env: Vec::new(),
        stdin: StdinMode::Null,
    }
}

/// `sh -c script`.
pub(crate) fn sh(script: &str) -> SpawnSpec {
    spec("/bin/sh", &["-c", script])
}

/// Fields of /proc/<pid>/stat: state, ppid, pgrp, session; `None` once the pid is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let mut number = || fields.next()?.parse::<i32>().ok();
    Some(Stat {
        state,
        ppid: number()?,
        pgrp: number()?,
        session: number()?,
    })
}

/// Every process in process group `pgid`, with its state.
pub(crate) fn group_members(pgid: i32) -> Vec<(i32, char)> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = stat(pid) {
            if stat.pgrp == pgid {
                members.push((pid, stat.state));
            }
        }
    }
    members
}

/// Blocks until our child `pid` has exited (without reaping it) and returns how.
pub(crate) fn wait_exited(pid: Pid) -> ExitStatus {
    // SAFETY: zeroed siginfo_t is valid; waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw().unsigned_abs(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        match Errno::result(rc) {
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            Err(errno) => panic!("waitid({pid}): {errno}"),
        }
    }
    process::exit_status(pid)
        .expect("exit_status")
        .expect("exited after a blocking waitid")
}

/// Waits (pidfd_open(2) + poll(2)) until `pid` — any process, not only our children — has
/// terminated; `true` if it did within `timeout` or was gone already.
pub(crate) fn wait_terminated(pid: i32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Errno::last() == Errno::ESRCH;
    }
    let fd = i32::try_from(fd).expect("fd fits in i32");
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; the fd is ours and closed right after.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    // SAFETY: `fd` was returned by pidfd_open and is closed once.
    unsafe { libc::close(fd) };
    ready == 1
}

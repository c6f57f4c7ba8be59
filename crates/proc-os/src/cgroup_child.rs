//! The one piece of child code of its own that spawning keeps: starting a task **inside a
//! cgroup v2**, before it can run anything, which glibc's posix_spawn(3) cannot do before
//! glibc 2.41 (`posix_spawnattr_setcgroup_np`); this system has glibc 2.36.
//!
//! The child is created with clone3(2) `CLONE_INTO_CGROUP` (Linux 5.7), born in the cgroup,
//! or — where clone3 refuses that, or where the kernel kills a child born in a cgroup that was
//! killed before (Linux 6.18) — with fork(2), and then writes `0` to the cgroup's
//! `cgroup.procs`, which moves the writing process (cgroups(7)). Either way nothing the task
//! runs, and nothing it forks, is ever outside the cgroup. Moving costs the spawning thread an
//! RCU grace period, being born there costs nothing (cgroup-v2.rst, "cgroup.procs").
//!
//! **It is a fork, not a `CLONE_VM` child**: the child has its own copy of the server's
//! memory, so no mistake in it can write over the server's, and it needs no stack of its own,
//! no assembly and no kernel structure written by hand. The price is the page-table copy of a
//! fork (see `crate::process` for the figures). Between fork and exec it does the steps
//! posix_spawn(3) does for the other spawns, in the same order: default signal dispositions,
//! setsid(2), (the move into the cgroup), dup2(2) of stdin, stdout and stderr, descriptors from
//! 3 up marked close-on-exec, chdir(2), an empty signal mask, execve(2). It allocates nothing
//! and takes no lock (another thread of the server may have held the allocator's lock at the
//! fork), only makes system calls, and is linted against panics and indexing below.
//!
//! It reports to the parent through a close-on-exec pipe: one byte when it starts, then, if a
//! step fails, the step and its errno. End-of-file after the first byte means the exec
//! succeeded; end-of-file before it means the child never ran its code (killed at birth).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects,
        clippy::unreachable
    )
)]

use std::ffi::{CStr, c_char, c_int};
use std::fmt;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::unistd::Pid;

use crate::fd;

/// Everything the child needs, prepared by the parent (the child allocates nothing).
pub(crate) struct Exec<'a> {
    /// The file to execute.
    pub path: &'a CStr,
    /// NULL-terminated `argv`.
    pub argv: &'a [*const c_char],
    /// NULL-terminated `envp`.
    pub envp: &'a [*const c_char],
    /// Descriptors to put on 0, 1 and 2; all 3 or above, so no dup2(2) overwrites another's
    /// source.
    pub stdio: [RawFd; 3],
    /// The working directory, or `None` to keep the server's.
    pub cwd: Option<&'a CStr>,
    /// The directory of the cgroup to be born in (clone3 `CLONE_INTO_CGROUP`), or -1.
    pub cgroup_dir: RawFd,
    /// The cgroup's `cgroup.procs`, open for writing: the child moves itself there when it
    /// was not born there.
    pub cgroup_procs: RawFd,
    /// The highest signal number whose disposition is reset.
    pub last_signal: c_int,
    /// Bounds the last-resort loop of [`fd::mark_cloexec_from`].
    pub fd_limit: c_int,
}

/// What the child does before exec; a failure is reported with the step it happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// setsid(2).
    Setsid,
    /// write(2) of `0` to `cgroup.procs` (moving into the cgroup).
    Cgroup,
    /// dup2(2) onto 0, 1 and 2.
    Stdio,
    /// Marking descriptors from 3 up close-on-exec.
    Cloexec,
    /// chdir(2) to the working directory.
    Chdir,
    /// execve(2).
    Exec,
}

impl Step {
    const ALL: [Self; 6] = [
        Self::Setsid,
        Self::Cgroup,
        Self::Stdio,
        Self::Cloexec,
        Self::Chdir,
        Self::Exec,
    ];

    fn code(self) -> u8 {
        match self {
            Self::Setsid => 1,
            Self::Cgroup => 2,
            Self::Stdio => 3,
            Self::Cloexec => 4,
            Self::Chdir => 5,
            Self::Exec => 6,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.code() == code)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Setsid => "setsid",
            Self::Cgroup => "moving into its cgroup (writing cgroup.procs)",
            Self::Stdio => "dup2 of stdin, stdout and stderr",
            Self::Cloexec => "marking descriptors close-on-exec",
            Self::Chdir => "chdir",
            Self::Exec => "execve",
        })
    }
}

/// Why [`spawn`] started nothing.
#[derive(Debug)]
pub(crate) enum Error {
    /// The parent could not start a child (pipe2(2), clone3(2) or fork(2) failed).
    Create(io::Error),
    /// The child failed at this step (it has been reaped).
    Child(Step, Errno),
    /// The child ended before it could report anything, twice (killed; it has been reaped).
    Vanished,
}

/// Starts `exec` as a child of the calling thread, in its cgroup; returns once the child has
/// exec'd (or failed and been reaped). [`crate::rlimit::with_original_limit`] is applied to
/// the fork itself.
pub(crate) fn spawn(exec: &Exec<'_>) -> Result<Pid, Error> {
    // Born in the cgroup where the kernel allows; else, and if such a child is killed at birth
    // (Linux 6.18 does that in a cgroup that was killed before), forked and moved.
    let born = exec.cgroup_dir >= 0;
    match spawn_once(exec, born) {
        Err(Error::Vanished) if born => spawn_once(exec, false),
        other => other,
    }
}

/// One attempt: born in the cgroup (`born`) or moved there.
fn spawn_once(exec: &Exec<'_>, born: bool) -> Result<Pid, Error> {
    let (read, write) = report_pipe().map_err(Error::Create)?;
    let created = crate::rlimit::with_original_limit(|| create(exec, born, &write));
    drop(write);
    let pid = created.map_err(Error::Create)?;
    let mut report = [0_u8; 8];
    let len = read_to_end(read, &mut report);
    let failure = match report.get(..len) {
        // Started, then exec'd (which closed its end of the pipe).
        Some([1]) => return Ok(pid),
        Some(&[1, step, a, b, c, d]) => Step::from_code(step)
            .map(|step| Error::Child(step, Errno::from_raw(i32::from_ne_bytes([a, b, c, d])))),
        _ => None,
    };
    // It failed or ended: reap it (its pid is in no run table yet).
    let _ = crate::process::reap(pid);
    Err(failure.unwrap_or(Error::Vanished))
}

/// Creates the child with every signal blocked in this thread (the child inherits the mask
/// and unblocks only once every disposition is the default: no handler of the server runs in
/// it). Returns in the parent only.
fn create(exec: &Exec<'_>, born: bool, report: &OwnedFd) -> io::Result<Pid> {
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // SAFETY (both calls): clone3 without CLONE_VM or a stack is a fork, like fork(2): the
    // child returns here with a copy of this thread's stack and of the server's memory, and
    // runs only `child`, which makes system calls and never returns.
    let mut pid = if born {
        unsafe { clone3_into(exec.cgroup_dir) }
    } else {
        -1
    };
    let placed = born && pid >= 0;
    // Without clone3 or CLONE_INTO_CGROUP (or refused by a seccomp filter, or a cgroup that
    // cannot take it): fork, and move into the cgroup, which reports any real error of the
    // cgroup at that step. Out of processes or memory is an error either way.
    if !born || (pid < 0 && !matches!(Errno::last(), Errno::EAGAIN | Errno::ENOMEM)) {
        pid = unsafe { libc::fork() };
    }
    if pid == 0 {
        child(exec, placed, report.as_raw_fd());
    }
    let created = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(Pid::from_raw(pid))
    };
    // Cannot fail with a mask that pthread_sigmask(3) itself returned.
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    created
}

/// `CLONE_INTO_CGROUP` of linux/sched.h (Linux 5.7); libc 0.2's constant is a `c_int`, which
/// cannot hold it (rust-lang/libc#3584).
const CLONE_INTO_CGROUP: u64 = 1 << 33;

/// clone3(2) with `CLONE_INTO_CGROUP` into the cgroup whose directory is `cgroup_dir`, exit
/// signal `SIGCHLD`, nothing shared: a fork born in that cgroup. Returns the pid (0 in the
/// child), or -1 with errno set (`ENOSYS`, `E2BIG`: no clone3 or no `CLONE_INTO_CGROUP`;
/// `EPERM`: a seccomp filter; `EOPNOTSUPP`, `EBUSY`: the cgroup cannot take processes).
///
/// # Safety
/// As fork(2): in the child, only async-signal-safe calls until exec.
unsafe fn clone3_into(cgroup_dir: RawFd) -> libc::pid_t {
    let Ok(cgroup) = u64::try_from(cgroup_dir) else {
        Errno::set(Errno::EBADF);
        return -1;
    };
    // SAFETY: clone_args is plain data; all zeroes is "no flags, nothing to share".
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup;
    // SAFETY: `args` is a valid clone_args of the size given; see the caller for the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    libc::pid_t::try_from(rc).unwrap_or(-1)
}

/// The child: sets itself up and execs, or reports the step that failed and `_exit`s.
fn child(exec: &Exec<'_>, placed: bool, report: RawFd) -> ! {
    // SAFETY: write(2) of a byte from a local to our own pipe.
    unsafe { libc::write(report, [1_u8].as_ptr().cast(), 1) };
    let (step, errno) = setup_and_exec(exec, placed);
    let [a, b, c, d] = errno.to_ne_bytes();
    let record = [step.code(), a, b, c, d];
    // SAFETY: as above; the parent reads it once this process has exited.
    unsafe { libc::write(report, record.as_ptr().cast(), record.len()) };
    // SAFETY: _exit(2) ends the child without running the server's atexit handlers.
    unsafe { libc::_exit(127) }
}

/// The steps, in posix_spawn(3)'s order; returns only on failure, with the step and errno.
fn setup_and_exec(exec: &Exec<'_>, placed: bool) -> (Step, c_int) {
    let failed = |step| (step, Errno::last_raw());
    // Default dispositions for every signal, before any is unblocked: signals the server
    // ignores would stay ignored across exec (signal(7)), and a handler of the server must not
    // run here. (glibc refuses 32 and 33, which it keeps for itself: harmless.)
    for signo in 1..=exec.last_signal {
        if signo != libc::SIGKILL && signo != libc::SIGSTOP {
            // SAFETY: signal(2) is async-signal-safe; SIG_DFL is a valid disposition.
            unsafe { libc::signal(signo, libc::SIG_DFL) };
        }
    }
    // New session, hence new process group: pgid == sid == pid (setsid(2)).
    // SAFETY: system calls on this process's own state, below likewise.
    if unsafe { libc::setsid() } < 0 {
        return failed(Step::Setsid);
    }
    if !placed
        && exec.cgroup_procs >= 0
        && unsafe { libc::write(exec.cgroup_procs, c"0".as_ptr().cast(), 1) } < 0
    {
        return failed(Step::Cgroup);
    }
    for (target, source) in (0..).zip(exec.stdio) {
        // SAFETY: dup2(2) on descriptors of this process; the copy is not close-on-exec.
        if unsafe { libc::dup2(source, target) } < 0 {
            return failed(Step::Stdio);
        }
    }
    if let Err(err) = fd::mark_cloexec_from(3, exec.fd_limit) {
        return (Step::Cloexec, err.raw_os_error().unwrap_or(libc::EINVAL));
    }
    if let Some(cwd) = exec.cwd
        && unsafe { libc::chdir(cwd.as_ptr()) } < 0
    {
        return failed(Step::Chdir);
    }
    // SAFETY: sigset_t is plain data; sigemptyset(3) initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&raw mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
    }
    // SAFETY: NUL-terminated path, NULL-terminated arrays of NUL-terminated strings, all owned
    // by the parent's frame (copied into this process).
    unsafe { libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr()) };
    failed(Step::Exec)
}

/// The report pipe, both ends close-on-exec and 3 or above (a descriptor below 3 would be
/// overwritten by the child's dup2 onto 0, 1 and 2).
fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((
        crate::process::above_stdio(read)?,
        crate::process::above_stdio(write)?,
    ))
}

/// Reads `read` until end-of-file into `buf`; the number of bytes read (reading stops when
/// `buf` is full).
fn read_to_end(read: OwnedFd, buf: &mut [u8]) -> usize {
    let mut file = std::fs::File::from(read);
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..)
        && !rest.is_empty()
    {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => len = len.saturating_add(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    len
}

//! Spawning without copying the server: `clone(CLONE_VM | CLONE_VFORK)`, the way glibc's
//! posix_spawn(3) does it, with everything [`crate::process::spawn`] promises a task.
//!
//! `fork` copies the server's page tables (about 260 µs here); a child that borrows the
//! parent's memory until it calls execve(2) costs a fraction of that. The price is discipline,
//! and this module is where all of it lives:
//!
//! - **Everything is prepared in the parent**: the C strings of the program, `argv` and `envp`,
//!   every path to try for a program looked up in `PATH` (in the order execvp(3) tries them),
//!   the pipes and `/dev/null`, the limit to restore. The child allocates nothing and takes no
//!   lock: another thread of the server may hold the allocator's lock, forever from the child's
//!   point of view.
//! - **The child runs on a stack of its own** ([`Stack`], with a guard page), not on the
//!   caller's, which the caller will use again; `CLONE_VFORK` suspends the calling thread until
//!   the child has exec'd or exited, so the prepared data outlives every use the child makes of
//!   it. The server's other threads keep running: the child touches only its stack, the
//!   [`Plan`] (two atomics and one slot of the `/bin/sh` fallback's `argv`) and the calling
//!   thread's `errno`, none of which they use.
//! - **No signal handler may run in the child**: a handler would run the server's code on the
//!   server's memory. The parent blocks every signal in the calling thread around clone(2)
//!   (the child inherits that mask); the child sets every disposition to `SIG_DFL` (ignored
//!   ones too: a task must not inherit `SIG_IGN`) and only then unblocks everything, just
//!   before execve(2), so the task starts with an empty signal mask.
//! - **Only raw system calls in the child**: setsid(2), prctl(2), getppid(2), write(2) (of
//!   `cgroup.procs`, to start in a cgroup), setrlimit(2), dup2(2), close_range(2) (or its
//!   fallbacks in [`crate::fd`]), chdir(2), rt_sigaction(2), rt_sigprocmask(2), execve(2),
//!   _exit(2). Their glibc wrappers write only `errno`, which is the suspended caller's
//!   thread-local.
//! - **The parent learns why the child failed** through the shared memory: the child records
//!   the step it was at and the errno, then `_exit(127)`s; the parent reaps it and reports.
//!
//! Linux on x86_64, aarch64 and riscv64 only: the kernel's `struct sigaction` and `sigset_t`
//! are written by hand below, and on those they are the same (`sigset_t` is 8 bytes; an
//! all-zero `struct sigaction` is `SIG_DFL` with no flags and an empty mask). Where clone(2) is
//! refused (a sandbox, an emulator) [`spawn`] says so with [`Error::Unsupported`] and the caller
//! falls back to `fork`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString, c_char, c_int, c_void};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use proc_state::{SpawnSpec, StdinMode};

use crate::fd;

/// What the child must be given that does not come from the [`SpawnSpec`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inherit {
    /// The server's pid: the child checks that its parent is still this one once it has asked
    /// for the parent-death signal.
    pub parent: libc::pid_t,
    /// The highest signal number whose disposition is reset.
    pub last_signal: c_int,
    /// The `RLIMIT_NOFILE` (soft, hard) to restore, if the server raised its own.
    pub nofile: Option<(libc::rlim_t, libc::rlim_t)>,
    /// Bounds the last-resort loop of [`fd::mark_cloexec_from`].
    pub fd_limit: c_int,
    /// `cgroup.procs` of the cgroup to start in, open for writing, or -1: the child writes `0`
    /// to it, which moves the writing process (cgroups(7)), before it can fork — unless it was
    /// born there (`cgroup_dir`).
    pub cgroup_procs: RawFd,
    /// The directory of the cgroup to start in, or -1: the child is created in it with
    /// clone3(2) `CLONE_INTO_CGROUP` (Linux 5.7), which costs nothing more than a spawn, where
    /// moving a process costs an RCU grace period (cgroup-v2.rst) during which the spawning
    /// thread waits.
    pub cgroup_dir: RawFd,
}

/// A started child: the leader of its own session, and the parent's ends of its pipes.
#[derive(Debug)]
pub(crate) struct Child {
    /// Its pid (also its process group id and session id).
    pub pid: libc::pid_t,
    /// The write end of its stdin pipe, when piped.
    pub stdin: Option<OwnedFd>,
    /// The read end of its stdout pipe.
    pub stdout: OwnedFd,
    /// The read end of its stderr pipe.
    pub stderr: OwnedFd,
}

/// What the child does, in order; a failure is reported with the step it happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    /// Resetting signal dispositions (cannot fail).
    Signals = 0,
    /// setsid(2).
    Setsid = 1,
    /// prctl(2) `PR_SET_PDEATHSIG`.
    Pdeathsig = 2,
    /// write(2) of `0` to the target cgroup's `cgroup.procs` (moving into it).
    Cgroup = 3,
    /// setrlimit(2) `RLIMIT_NOFILE`.
    Rlimit = 4,
    /// dup2(2) of the pipes and `/dev/null` onto 0, 1 and 2.
    Stdio = 5,
    /// Marking descriptors from 3 up close-on-exec.
    Cloexec = 6,
    /// chdir(2) to the working directory.
    Chdir = 7,
    /// execve(2) (the signal mask is emptied just before).
    Exec = 8,
}

impl Step {
    /// The step with number `n`, as stored in [`Plan::step`].
    fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Setsid,
            2 => Self::Pdeathsig,
            3 => Self::Cgroup,
            4 => Self::Rlimit,
            5 => Self::Stdio,
            6 => Self::Cloexec,
            7 => Self::Chdir,
            8 => Self::Exec,
            _ => Self::Signals,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Signals => "resetting signal dispositions",
            Self::Setsid => "setsid",
            Self::Pdeathsig => "prctl(PR_SET_PDEATHSIG)",
            Self::Cgroup => "moving into its cgroup (writing cgroup.procs)",
            Self::Rlimit => "setrlimit(RLIMIT_NOFILE)",
            Self::Stdio => "dup2 of stdin, stdout and stderr",
            Self::Cloexec => "marking descriptors close-on-exec",
            Self::Chdir => "chdir",
            Self::Exec => "execve",
        })
    }
}

/// Why [`spawn`] did not start a child.
#[derive(Debug)]
pub(crate) enum Error {
    /// clone(2) refused these flags (`ENOSYS`, `EINVAL`, `EPERM`: a seccomp filter or an
    /// emulator): nothing was started; spawn with `fork` instead.
    Unsupported(io::Error),
    /// Preparing failed (a NUL byte in an argument, no descriptors left for the pipes) or
    /// clone(2) failed otherwise (`EAGAIN`: too many processes).
    Prepare(io::Error),
    /// The child failed at this step (it was reaped). `Step::Exec` carries execve's errno as
    /// execvp(3) would report it (`ENOENT` for a command not in `PATH`...).
    Child(Step, io::Error),
    /// The child ended before exec without saying why (a signal; or the server's process died
    /// meanwhile). It was reaped.
    Vanished,
}

/// Bytes of the kernel's `sigset_t` (`_NSIG / 8`) for rt_sigaction(2) and rt_sigprocmask(2).
const SIGSET_BYTES: usize = 8;

/// Bytes of the child's stack, besides the guard page. The child needs a few KiB (the largest
/// frame is the 2 KiB directory buffer of [`fd::mark_cloexec_listed`]); debug builds more.
const STACK_BYTES: usize = 64 * 1024;

/// Everything the child reads, prepared by the parent, and the two fields it writes back.
/// The pointers point into C strings and arrays owned by [`spawn`]'s frame, which stays
/// suspended while the child runs.
struct Plan<'a> {
    /// The paths to try with execve(2), in order.
    candidates: &'a [*const c_char],
    /// Whether `candidates` come from a `PATH` search (then `ENOENT` and the like move on to
    /// the next one, as in execvp(3)).
    search: bool,
    /// NULL-terminated `argv`.
    argv: *const *const c_char,
    /// NULL-terminated `["/bin/sh", <path>, argv[1..]]` for a file without a `#!` line
    /// (`ENOEXEC`), as execvp(3) runs it; the child writes the path into slot 1.
    script_argv: *mut *const c_char,
    /// NULL-terminated `envp`.
    envp: *const *const c_char,
    /// Descriptors to put on 0, 1 and 2; all of them 3 or above, so dup2(2) cannot clobber one
    /// with another.
    stdio: [RawFd; 3],
    /// The working directory, or null to keep the server's.
    cwd: *const c_char,
    /// See [`Inherit`].
    inherit: Inherit,
    /// The child was created in its cgroup (`CLONE_INTO_CGROUP`): it need not move itself.
    placed: AtomicBool,
    /// The [`Step`] the child is at.
    step: AtomicU8,
    /// The errno of the failed step; 0 while nothing failed.
    errno: AtomicI32,
}

/// Starts `spec` (program, arguments, environment on top of the server's, working directory,
/// stdin) as the leader of a new session. The working directory should have been checked
/// already: a missing one is reported here as a failed `chdir`.
///
/// Call it from a thread that lives as long as the child should: the parent-death signal is
/// tied to the thread (prctl(2)).
pub(crate) fn spawn(spec: &SpawnSpec, inherit: Inherit) -> Result<Child, Error> {
    // --- Everything the child will read, built here: it may not allocate. ---
    let program = c_string(spec.program.as_bytes().to_vec()).map_err(Error::Prepare)?;
    if spec.program.is_empty() {
        // execvp(3) says so without looking: "" names no file.
        return Err(Error::Child(Step::Exec, Errno::ENOENT.into()));
    }
    let args = spec
        .args
        .iter()
        .map(|arg| c_string(arg.as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(Error::Prepare)?;
    let (env, path) = environment(&spec.env).map_err(Error::Prepare)?;
    let search = !spec.program.contains('/');
    let candidates = if search {
        search_path(path.as_deref(), spec.program.as_bytes()).map_err(Error::Prepare)?
    } else {
        Vec::new()
    };
    let candidate_ptrs: Vec<*const c_char> = if search {
        candidates.iter().map(|path| path.as_ptr()).collect()
    } else {
        vec![program.as_ptr()]
    };
    let cwd = spec
        .cwd
        .as_ref()
        .map(|cwd| c_string(cwd.as_bytes().to_vec()))
        .transpose()
        .map_err(Error::Prepare)?;
    let argv = null_terminated(
        [program.as_c_str()]
            .into_iter()
            .chain(args.iter().map(|a| &**a)),
    );
    let mut script_argv = null_terminated(
        [c"/bin/sh", program.as_c_str()]
            .into_iter()
            .chain(args.iter().map(|a| &**a)),
    );
    let envp = null_terminated(env.iter().map(|e| &**e));

    // --- The descriptors: the child's ends are dup2'd onto 0, 1 and 2 in the child; all are
    // close-on-exec, so the originals close when it execs. ---
    let (stdin_child, stdin_parent) = match spec.stdin {
        StdinMode::Piped => {
            let (read, write) = pipe().map_err(Error::Prepare)?;
            (read, Some(write))
        }
        _ => (dev_null().map_err(Error::Prepare)?, None),
    };
    let (stdout_parent, stdout_child) = pipe().map_err(Error::Prepare)?;
    let (stderr_parent, stderr_child) = pipe().map_err(Error::Prepare)?;

    let plan = Plan {
        candidates: &candidate_ptrs,
        search,
        argv: argv.as_ptr(),
        script_argv: script_argv.as_mut_ptr(),
        envp: envp.as_ptr(),
        stdio: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        cwd: cwd.as_ref().map_or(ptr::null(), |cwd| cwd.as_ptr()),
        inherit,
        placed: AtomicBool::new(false),
        step: AtomicU8::new(Step::Signals as u8),
        errno: AtomicI32::new(0),
    };
    let mut attempts = 0;
    let (pid, errno, step) = loop {
        attempts += 1;
        let pid = with_stack(|stack| clone_child(&plan, stack)).map_err(Error::Prepare)?;
        let pid = match pid {
            Ok(pid) => pid,
            Err(err) => {
                return Err(match err.raw_os_error() {
                    Some(libc::ENOSYS | libc::EINVAL | libc::EPERM) => Error::Unsupported(err),
                    _ => Error::Prepare(err),
                });
            }
        };
        // --- The child has exec'd or exited: its memory is its own (or gone). ---
        let errno = plan.errno.load(Ordering::Acquire);
        let step = Step::from_u8(plan.step.load(Ordering::Acquire));
        if plan.placed.load(Ordering::Acquire) && errno == 0 && step != Step::Exec && attempts == 1
        {
            // Born in its cgroup and gone before it could do anything: some kernels kill at
            // birth a child created in a cgroup whose kill count differs from its creator's
            // (a cgroup.kill in the target's past). Move into the cgroup from now on.
            let _ = crate::process::reap(nix::unistd::Pid::from_raw(pid));
            CLONE3_REFUSED.store(true, Ordering::Relaxed);
            plan.step.store(Step::Signals as u8, Ordering::Release);
            continue;
        }
        break (pid, errno, step);
    };
    if errno != 0 || step != Step::Exec {
        // It exits right after reporting (or has already ended): reap it. The pid is not in
        // any run table, so nothing else waits for it.
        let _ = crate::process::reap(nix::unistd::Pid::from_raw(pid));
        return Err(if errno != 0 {
            Error::Child(step, io::Error::from_raw_os_error(errno))
        } else {
            Error::Vanished
        });
    }
    Ok(Child {
        pid,
        stdin: stdin_parent,
        stdout: stdout_parent,
        stderr: stderr_parent,
    })
}

/// clone(2) with `CLONE_VM | CLONE_VFORK` running [`child_main`] on `stack`, all signals
/// blocked in this thread meanwhile. Returns once the child has exec'd or exited.
fn clone_child(plan: &Plan<'_>, stack: &Stack) -> io::Result<libc::pid_t> {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask(2) reads and writes one kernel sigset_t (SIGSET_BYTES) through
    // valid pointers. Blocking every signal (SIGKILL and SIGSTOP excepted by the kernel) keeps
    // the server's handlers from running in the child, which inherits this mask; the raw call
    // also blocks glibc's internal signals, which pthread_sigmask(3) would leave out.
    let blocked = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const all,
            &raw mut old,
            SIGSET_BYTES,
        )
    };
    if blocked != 0 {
        // Without the mask a handler could run in the child: start nothing.
        return Err(io::Error::last_os_error());
    }
    let arg = ptr::from_ref(plan).cast_mut().cast::<c_void>();
    plan.placed.store(false, Ordering::Release);
    let mut pid = -1;
    if plan.inherit.cgroup_dir >= 0 && !CLONE3_REFUSED.load(Ordering::Relaxed) {
        plan.placed.store(true, Ordering::Release);
        // SAFETY: as for clone(2) below; the stack is the mapping above its guard page.
        let rc = unsafe { clone3_into_cgroup(stack, plan.inherit.cgroup_dir, arg) };
        if rc >= 0 {
            pid = libc::pid_t::try_from(rc).unwrap_or(-1);
        } else if matches!(
            c_int::try_from(-rc),
            Ok(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM | libc::EOPNOTSUPP)
        ) {
            // An older kernel, or a sandbox that refuses clone3: move into the cgroup instead.
            CLONE3_REFUSED.store(true, Ordering::Relaxed);
            plan.placed.store(false, Ordering::Release);
        } else {
            plan.placed.store(false, Ordering::Release);
            Errno::set_raw(c_int::try_from(-rc).unwrap_or(libc::EINVAL));
            pid = -2;
        }
    }
    if pid == -1 {
        let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        // SAFETY: `stack.top()` is the 16-byte aligned top of a private mapping that nothing
        // else uses while this thread is suspended; `plan` and everything it points to live
        // in `spawn`'s frame, which cannot return before the child has exec'd or exited
        // (CLONE_VFORK). `child_main` only makes async-signal-safe system calls and never
        // returns. Without CLONE_FILES and CLONE_SIGHAND the child gets its own descriptor
        // table and signal dispositions; exit signal SIGCHLD makes it an ordinary child for
        // waitpid(2).
        pid = unsafe { libc::clone(child_main, stack.top(), flags, arg) };
    }
    let result = if pid < 0 {
        // The child never ran: errno is clone's.
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    };
    // SAFETY: as above; puts back the mask this thread had.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const old,
            ptr::null_mut::<u64>(),
            SIGSET_BYTES,
        )
    };
    result
}

/// The child: runs on [`Stack`] in the server's memory until execve(2) replaces it.
/// Async-signal-safe system calls only, no allocation, no panic (it would unwind into the
/// server's state): on failure it records the step and errno in the [`Plan`] and `_exit`s.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&Plan` that `clone_child` passed, alive while its thread is
    // suspended, i.e. for as long as this child runs on the shared memory.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    // SAFETY: called once, in the child of clone(CLONE_VM | CLONE_VFORK), with every signal
    // blocked (inherited from `clone_child`).
    let errno = unsafe { prepare_and_exec(plan) };
    plan.errno.store(
        if errno == 0 { libc::EINVAL } else { errno },
        Ordering::Release,
    );
    // SAFETY: _exit(2) ends the child at once (exit_group of the child's own thread group),
    // without running the server's atexit handlers or flushing its stdio.
    unsafe { libc::_exit(127) }
}

/// Sets the child up and execs; returns the errno of the step that failed (recorded in
/// `plan.step`), as execve(2) returns only on failure.
///
/// # Safety
/// Only in the child of [`clone_child`], with every signal blocked.
unsafe fn prepare_and_exec(plan: &Plan<'_>) -> c_int {
    let at = |step: Step| plan.step.store(step as u8, Ordering::Release);
    let inherit = &plan.inherit;

    // Default dispositions for every signal, before any can be unblocked: a handler of the
    // server must not run here, and a signal the server ignores would stay ignored across
    // exec (signal(7)). The kernel's struct sigaction, all zeroes, is SIG_DFL with no flags
    // and an empty mask. The raw call also resets glibc's internal signals (32 and 33).
    let default_action = [0_u64; 8];
    for signo in 1..=inherit.last_signal {
        if signo != libc::SIGKILL && signo != libc::SIGSTOP {
            // SAFETY: `default_action` is larger than the kernel's struct sigaction and all
            // zero; no old action is asked for. Cannot fail for a valid number.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    default_action.as_ptr(),
                    ptr::null_mut::<c_void>(),
                    SIGSET_BYTES,
                )
            };
        }
    }

    // New session, hence new process group: pgid == sid == pid (setsid(2)).
    at(Step::Setsid);
    // SAFETY: setsid(2) has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Errno::last_raw();
    }

    // SIGKILL when the server's spawning thread dies; and if the server died before this
    // took effect, nobody would ever kill the task: give up at once.
    at(Step::Pdeathsig);
    // SAFETY: prctl(2) PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } < 0 {
        return Errno::last_raw();
    }
    // SAFETY: getppid(2) has no preconditions.
    if unsafe { libc::getppid() } != inherit.parent {
        // SAFETY: _exit(2) ends the child at once; the server is gone, no one to tell.
        unsafe { libc::_exit(1) };
    }

    // Into the task's cgroup before anything else can run: writing "0" to cgroup.procs moves
    // the writing process, this child (cgroups(7); cgroup-v2.rst "cgroup.procs"). Whatever the
    // task forks later is born there. The descriptor is close-on-exec.
    at(Step::Cgroup);
    if inherit.cgroup_procs >= 0 && !plan.placed.load(Ordering::Acquire) {
        // SAFETY: write(2) of one byte from a static string to a descriptor of ours.
        if unsafe { libc::write(inherit.cgroup_procs, b"0".as_ptr().cast(), 1) } < 0 {
            return Errno::last_raw();
        }
    }

    // The limit the server started with, not the raised one (see `rlimit`).
    at(Step::Rlimit);
    if let Some((soft, hard)) = inherit.nofile {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `limit` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } < 0 {
            return Errno::last_raw();
        }
    }

    // stdin, stdout and stderr. The sources are all 3 or above, so no dup2 overwrites
    // another's source; dup2 clears close-on-exec on the copy.
    at(Step::Stdio);
    for (target, source) in (0..).zip(plan.stdio) {
        // SAFETY: dup2(2) on descriptors of this (the child's own) descriptor table.
        if unsafe { libc::dup2(source, target) } < 0 {
            return Errno::last_raw();
        }
    }

    // Only 0, 1 and 2 cross exec: whatever else the server holds (or was leaked by whoever
    // started it) is marked close-on-exec, in the child's own descriptor table.
    at(Step::Cloexec);
    if let Err(err) = fd::mark_cloexec_from(3, inherit.fd_limit) {
        return err.raw_os_error().unwrap_or(libc::EINVAL);
    }

    at(Step::Chdir);
    // SAFETY: `cwd` is null or a NUL-terminated path owned by `spawn`.
    if !plan.cwd.is_null() && unsafe { libc::chdir(plan.cwd) } < 0 {
        return Errno::last_raw();
    }

    // Dispositions are all defaults now: a signal that arrives from here on does what it
    // would do to the task, and the task starts with an empty mask.
    at(Step::Exec);
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask(2) reads one kernel sigset_t through a valid pointer.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            ptr::null_mut::<u64>(),
            SIGSET_BYTES,
        )
    };
    // SAFETY: as this function's.
    unsafe { exec(plan) }
}

/// execvp(3)'s loop (glibc's, without its allocation): tries each candidate; runs a file
/// without a `#!` line with `/bin/sh`; in a `PATH` search moves on after `ENOENT`, `ENOTDIR`,
/// `EACCES` (remembered) and a few more, and stops at any other error. Returns the errno.
///
/// # Safety
/// Only in the child of [`clone_child`]; every pointer in `plan` is valid.
unsafe fn exec(plan: &Plan<'_>) -> c_int {
    let mut denied = false;
    for &path in plan.candidates {
        // SAFETY: `path`, `argv` and `envp` are NUL-terminated strings and NULL-terminated
        // arrays of them, owned by `spawn`.
        unsafe { libc::execve(path, plan.argv, plan.envp) };
        let mut errno = Errno::last_raw();
        if errno == libc::ENOEXEC {
            // SAFETY: `script_argv` has at least three slots (sh, path, NULL) and is used by
            // no one else while the child runs; then as above.
            unsafe {
                *plan.script_argv.add(1) = path;
                libc::execve(c"/bin/sh".as_ptr(), plan.script_argv, plan.envp);
            }
            errno = Errno::last_raw();
        }
        if !plan.search {
            return errno;
        }
        match errno {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return errno,
        }
    }
    if denied { libc::EACCES } else { libc::ENOENT }
}

/// Set once clone3(2) refused `CLONE_INTO_CGROUP`: the child moves itself from then on.
static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);

/// `struct clone_args` of clone3(2), up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, Linux 5.7).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3(2) with `CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP`, the child running
/// [`child_main`]`(arg)` on `stack` and born in the cgroup whose directory is `cgroup_dir`.
/// Returns the child's pid, or `-errno`; in the parent only, once the child has exec'd or
/// exited.
///
/// libc has no wrapper that runs a function in the child, so the system call is made here:
/// the child comes back from it on the new stack, where no Rust frame exists, and must call
/// [`child_main`] before touching the stack (it never returns: it execs or `_exit`s, then
/// `exit`s should `child_main` ever return).
///
/// # Safety
/// As for [`clone_child`]: every signal blocked in this thread, `arg` a [`Plan`] that lives
/// until this returns, `stack` used by nothing else.
unsafe fn clone3_into_cgroup(stack: &Stack, cgroup_dir: RawFd, arg: *mut c_void) -> i64 {
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.lowest() as u64,
        stack_size: stack.usable() as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::try_from(cgroup_dir).unwrap_or(u64::MAX),
    };
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let ret: i64;
    // SAFETY: the caller's contract; the asm only returns in the parent. The registers
    // holding `entry` and `arg` are preserved across the system call (callee-saved), so the
    // child finds them there on its new, 16-byte aligned stack.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &raw const args,
            in("rsi") core::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x0, x21",
            "blr x22",
            "mov x8, {exit}",
            "svc 0",
            "brk #0",
            "2:",
            exit = const libc::SYS_exit,
            in("x8") libc::SYS_clone3,
            inlateout("x0") &raw const args => ret,
            in("x1") core::mem::size_of::<CloneArgs>(),
            in("x21") arg,
            in("x22") entry,
            options(nostack),
        );
    }
    #[cfg(target_arch = "riscv64")]
    unsafe {
        core::arch::asm!(
            "ecall",
            "bnez a0, 2f",
            "mv s0, zero",
            "mv a0, s2",
            "jalr s3",
            "li a7, {exit}",
            "ecall",
            "unimp",
            "2:",
            exit = const libc::SYS_exit,
            in("a7") libc::SYS_clone3,
            inlateout("a0") &raw const args => ret,
            in("a1") core::mem::size_of::<CloneArgs>(),
            in("s2") arg,
            in("s3") entry,
            options(nostack),
        );
    }
    ret
}

/// A stack for the child: a private mapping with a guard page below it (a child that
/// overflowed would fault, not write over the server's heap). Kept per thread and reused:
/// once the child has exec'd or exited (when clone(2) returns) it no longer uses it.
struct Stack {
    /// Start of the mapping (the guard page).
    base: *mut c_void,
    /// Length of the mapping.
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Self> {
        // SAFETY: sysconf(3) has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&page| page > 0)
            .unwrap_or(4096);
        let len = STACK_BYTES.next_multiple_of(page) + page;
        // SAFETY: a new anonymous private mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base, len };
        // SAFETY: the lowest page of our own mapping becomes inaccessible: the guard.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The lowest usable address: just above the guard page.
    fn lowest(&self) -> *mut c_void {
        // SAFETY: within the mapping: one page above its start.
        unsafe { self.base.cast::<u8>().add(self.guard()).cast() }
    }

    /// Bytes usable above the guard page.
    fn usable(&self) -> usize {
        self.len - self.guard()
    }

    fn guard(&self) -> usize {
        // SAFETY: sysconf(3) has no preconditions.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&page| page > 0)
            .unwrap_or(4096)
    }

    /// The initial stack pointer: the end of the mapping (stacks grow down), page-aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is `len` bytes long.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once, and no child runs on it any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

thread_local! {
    /// This thread's [`Stack`], made at its first spawn.
    static STACK: Cell<Option<Stack>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's stack (made now if there is none; a fresh one, dropped after,
/// while the thread's locals are being destroyed).
fn with_stack<R>(f: impl FnOnce(&Stack) -> R) -> io::Result<R> {
    let stack = match STACK.try_with(Cell::take).ok().flatten() {
        Some(stack) => stack,
        None => Stack::new()?,
    };
    let result = f(&stack);
    // Fails only while the thread's locals are destroyed; the stack is unmapped then.
    let _ = STACK.try_with(|kept| kept.set(Some(stack)));
    Ok(result)
}

/// `bytes` as a C string; a NUL byte in it is an error, worded as std's.
fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// A NULL-terminated array of pointers to `strings`, which must outlive it.
fn null_terminated<'a>(strings: impl Iterator<Item = &'a CStr>) -> Vec<*const c_char> {
    strings.map(CStr::as_ptr).chain([ptr::null()]).collect()
}

/// The child's environment as `KEY=value` strings, and its `PATH` (for the search): the
/// server's environment as it is, or, with `overrides`, merged and sorted as std's `Command`
/// does.
fn environment(overrides: &[(String, String)]) -> io::Result<(Vec<CString>, Option<Vec<u8>>)> {
    let vars: Vec<(OsString, OsString)> = if overrides.is_empty() {
        std::env::vars_os().collect()
    } else {
        let mut merged: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        for (key, value) in overrides {
            merged.insert(key.into(), value.into());
        }
        merged.into_iter().collect()
    };
    let mut path = None;
    let mut env = Vec::with_capacity(vars.len());
    for (key, value) in vars {
        if key == "PATH" {
            path = Some(value.as_bytes().to_vec());
        }
        let mut entry = key.into_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        env.push(c_string(entry)?);
    }
    Ok((env, path))
}

/// The paths execvp(3) tries for `program`, in order: each `PATH` entry joined with it (an
/// empty entry means the working directory); glibc's `/bin:/usr/bin` without a `PATH`.
fn search_path(path: Option<&[u8]>, program: &[u8]) -> io::Result<Vec<CString>> {
    path.unwrap_or(b"/bin:/usr/bin")
        .split(|&byte| byte == b':')
        .map(|dir| {
            let mut full = Vec::with_capacity(dir.len() + program.len() + 2);
            full.extend_from_slice(dir);
            if !dir.is_empty() {
                full.push(b'/');
            }
            full.extend_from_slice(program);
            c_string(full)
        })
        .collect()
}

/// A pipe, both ends close-on-exec and 3 or above: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `/dev/null` for reading, close-on-exec, 3 or above.
fn dev_null() -> io::Result<OwnedFd> {
    above_stdio(std::fs::File::open("/dev/null")?.into())
}

/// `fd` itself if it is 3 or above, else a close-on-exec copy that is (`try_clone` uses
/// `F_DUPFD_CLOEXEC` from 3). Only if the server's own 0, 1 or 2 is closed can a new
/// descriptor be below 3; then the child's dup2 onto 0, 1 and 2 could overwrite it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        Ok(fd)
    } else {
        fd.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};

    use nix::unistd::Pid;

    use super::*;
    use crate::process::reap;
    use crate::testutil::{sh, spec, wait_exited};

    /// What `process::spawn` passes on, for a server that did not raise its limit.
    fn inherit() -> Inherit {
        Inherit {
            parent: nix::unistd::getpid().as_raw(),
            last_signal: libc::SIGRTMAX(),
            nofile: None,
            fd_limit: fd::fd_limit(),
            cgroup_procs: -1,
            cgroup_dir: -1,
        }
    }

    /// The step and errno `spawn` failed with.
    fn failure(spec: &SpawnSpec) -> (Step, Option<i32>) {
        match spawn(spec, inherit()) {
            Err(Error::Child(step, err)) => (step, err.raw_os_error()),
            other => panic!("expected a failure in the child, got {other:?}"),
        }
    }

    #[test]
    fn the_clone_path_starts_and_reports_failures_by_step() {
        let child = spawn(&spec("true", &[]), inherit()).expect("clone(CLONE_VFORK) works here");
        let pid = Pid::from_raw(child.pid);
        assert_eq!(wait_exited(pid), proc_state::ExitStatus::Code(0));
        reap(pid).expect("reap");

        let mut in_missing_dir = spec("true", &[]);
        in_missing_dir.cwd = Some("/nonexistent/dir".to_owned());
        assert_eq!(failure(&in_missing_dir), (Step::Chdir, Some(libc::ENOENT)));
        assert_eq!(
            failure(&spec("no-such-command-7f3a", &[])),
            (Step::Exec, Some(libc::ENOENT))
        );
        assert_eq!(failure(&spec("", &[])), (Step::Exec, Some(libc::ENOENT)));
        assert_eq!(
            failure(&spec("/etc/passwd", &[])),
            (Step::Exec, Some(libc::EACCES))
        );
        assert_eq!(failure(&spec("/", &[])), (Step::Exec, Some(libc::EACCES)));
    }

    /// Set for the copy of this test binary that runs [`low_descriptors_in_a_fresh_process`].
    const CHILD: &str = "PROC_OS_VFORK_LOW_FDS";

    /// With the server's stdin closed, a new pipe can be descriptor 0, which the child's dup2
    /// onto 0 would clobber: checked in a copy of this test binary, where closing 0 disturbs
    /// no other test.
    #[test]
    fn pipes_that_land_on_0_1_or_2_are_moved_up() {
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "vfork::tests::low_descriptors_in_a_fresh_process",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdin(Stdio::null())
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("moved up and delivered"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Does the work of [`pipes_that_land_on_0_1_or_2_are_moved_up`] in its copy only.
    #[test]
    fn low_descriptors_in_a_fresh_process() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        // SAFETY: this copy runs this test only, and nothing in it reads stdin.
        assert_eq!(unsafe { libc::close(0) }, 0);
        let mut piped = sh("cat; echo out; echo err >&2");
        piped.stdin = StdinMode::Piped;
        let child = spawn(&piped, inherit()).expect("spawn");
        let mut stdin = std::fs::File::from(child.stdin.expect("piped"));
        stdin.write_all(b"in\n").expect("write");
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .expect("read");
        std::fs::File::from(child.stderr)
            .read_to_string(&mut err)
            .expect("read");
        let pid = Pid::from_raw(child.pid);
        assert_eq!(wait_exited(pid), proc_state::ExitStatus::Code(0));
        reap(pid).expect("reap");
        assert_eq!((out.as_str(), err.as_str()), ("in\nout\n", "err\n"));
        println!("moved up and delivered");
    }

    #[test]
    fn path_search_lists_every_entry_in_order() {
        let paths = search_path(Some(b"/usr/bin::bin:/x/"), b"true").expect("search");
        let paths: Vec<&[u8]> = paths.iter().map(|p| p.as_bytes()).collect();
        assert_eq!(
            paths,
            [&b"/usr/bin/true"[..], b"true", b"bin/true", b"/x//true"]
        );
        let paths = search_path(None, b"ls").expect("search");
        assert_eq!(paths, [c"/bin/ls".to_owned(), c"/usr/bin/ls".to_owned()]);
    }

    #[test]
    fn overrides_replace_and_add_variables_in_sorted_order() {
        let overrides = [
            ("PROC_OS_VFORK_B".to_owned(), "2".to_owned()),
            ("PATH".to_owned(), "/nowhere".to_owned()),
            ("PROC_OS_VFORK_A".to_owned(), "1".to_owned()),
            ("PROC_OS_VFORK_A".to_owned(), "3".to_owned()),
        ];
        let (env, path) = environment(&overrides).expect("environment");
        assert_eq!(path.as_deref(), Some(&b"/nowhere"[..]));
        let ours: Vec<&[u8]> = env
            .iter()
            .map(|e| e.as_bytes())
            .filter(|e| e.starts_with(b"PROC_OS_VFORK_") || e.starts_with(b"PATH="))
            .collect();
        assert_eq!(
            ours,
            [
                &b"PATH=/nowhere"[..],
                b"PROC_OS_VFORK_A=3",
                b"PROC_OS_VFORK_B=2"
            ]
        );
        let mut sorted = env.clone();
        sorted.sort_by(|a, b| {
            let key = |e: &CString| {
                e.as_bytes()
                    .split(|&b| b == b'=')
                    .next()
                    .map(<[u8]>::to_vec)
            };
            key(a).cmp(&key(b))
        });
        assert_eq!(env, sorted);

        let err = environment(&[("A".to_owned(), "nul\0".to_owned())]).expect_err("nul");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn steps_round_trip_through_their_numbers() {
        for step in [
            Step::Signals,
            Step::Setsid,
            Step::Pdeathsig,
            Step::Cgroup,
            Step::Rlimit,
            Step::Stdio,
            Step::Cloexec,
            Step::Chdir,
            Step::Exec,
        ] {
            assert_eq!(Step::from_u8(step as u8), step);
        }
    }
}

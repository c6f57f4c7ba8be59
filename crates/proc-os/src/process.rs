//! Processes and process groups: spawning a task in its own session, signalling its group,
//! seeing its exit without reaping it, and reaping it at last.
//!
//! Everything here is synchronous and talks to the kernel directly; a driver's event loop
//! decides when to call it. POSIX references: setsid(2), prctl(2) `PR_SET_PDEATHSIG`, close_range(2),
//! setrlimit(2), killpg(3), waitid(2) with `WNOWAIT`, waitpid(2).

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal as NixSignal;
use nix::unistd::Pid;
use proc_state::{ExitStatus, Signal, SpawnSpec, StdinMode};

use crate::signal::{signal_from_number, signal_number};
#[cfg(vfork_spawn)]
use crate::vfork;
use crate::{fd, rlimit};

/// A freshly started process: the leader of its own session and process group
/// (`pid == pgid == sid`), with the parent's ends of its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// Process id; also the process group id and the session id.
    pub pid: Pid,
    /// Write end of the child's stdin, for [`StdinMode::Piped`].
    pub stdin: Option<ChildStdin>,
    /// Read end of the child's stdout pipe.
    pub stdout: ChildStdout,
    /// Read end of the child's stderr pipe.
    pub stderr: ChildStderr,
}

/// Where [`spawn_placed`] starts a task, besides its own session and process group.
/// [`SpawnPlacement::default`] is what [`spawn`] does: nothing more.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct SpawnPlacement<'fd> {
    /// The `cgroup.procs` file of a cgroup v2 to start the task in, open for writing (see
    /// `cgroup::Cgroup::open_procs` on Linux). The child writes `0` to it before exec, which
    /// moves the writing process (cgroups(7)), so the task is in that cgroup before it can fork
    /// and everything it starts is born there.
    pub cgroup_procs: Option<BorrowedFd<'fd>>,
    /// The directory of that cgroup (see `cgroup::Cgroup::open_dir`): where the kernel has
    /// clone3(2) `CLONE_INTO_CGROUP` (Linux 5.7), the task is created in the cgroup instead of
    /// moving there, which spares the spawning thread an RCU grace period.
    pub cgroup_dir: Option<BorrowedFd<'fd>>,
}

impl<'fd> SpawnPlacement<'fd> {
    /// Start in the cgroup whose `cgroup.procs` is open as `procs` (for writing).
    pub fn in_cgroup(procs: BorrowedFd<'fd>) -> Self {
        Self {
            cgroup_procs: Some(procs),
            cgroup_dir: None,
        }
    }

    /// Start in the cgroup whose directory is open as `dir` and whose `cgroup.procs` is open as
    /// `procs`: created there where the kernel can, else moved there.
    pub fn in_cgroup_dir(dir: BorrowedFd<'fd>, procs: BorrowedFd<'fd>) -> Self {
        Self {
            cgroup_procs: Some(procs),
            cgroup_dir: Some(dir),
        }
    }
}

/// Starts `spec` as the leader of a new session and process group: [`spawn_placed`] with the
/// default [`SpawnPlacement`].
///
/// # Errors
/// As [`spawn_placed`].
pub fn spawn(spec: &SpawnSpec) -> Result<Spawned, String> {
    spawn_placed(spec, SpawnPlacement::default())
}

/// Starts `spec` as the leader of a new session and process group, placed as `placement` says.
///
/// The child gets stdin from `/dev/null` (or a pipe for [`StdinMode::Piped`]), stdout and
/// stderr as pipes, the server's environment plus `spec.env`, default dispositions for all
/// signals and an empty signal mask, and on Linux `SIGKILL` as its parent-death signal. It
/// inherits no other file descriptor: every descriptor from 3 up is marked close-on-exec
/// ([`fd::mark_cloexec_from`]), so descriptors that whoever started the server leaked to it
/// never reach a task. If [`rlimit::raise_nofile_limit`] raised the server's `RLIMIT_NOFILE`,
/// the child gets the original soft limit back. A program without `/` is looked up in the
/// child's `PATH` as execvp(3) does (a file without `#!` runs with `/bin/sh`). Note that Linux
/// delivers the parent-death signal when the *thread* that spawned exits (prctl(2)), so call
/// this from a thread that lives as long as the server.
///
/// On Linux (x86_64, aarch64, riscv64) the child is made with `clone(CLONE_VM | CLONE_VFORK)`
/// like posix_spawn(3), which costs a fraction of a `fork` (see the `vfork` module); elsewhere,
/// or where that clone(2) is refused, with std's `Command` (`fork`).
///
/// With [`SpawnPlacement::cgroup_procs`] the child first moves itself into that cgroup (right
/// after asking for its parent-death signal, before anything else).
///
/// # Errors
/// A one-line message for people: the working directory does not exist or is not a
/// directory, the command is not found, is not executable, the move into the cgroup failed
/// (`EACCES`/`EPERM`: the cgroup is not ours to write, `ENODEV`/`ENOENT`: it was removed,
/// `EBUSY`: it has controllers enabled for its children), or `fork`/`exec` failed otherwise
/// (with the OS error). On the `fork` fallback a failed move is reported like a failed exec
/// with the same error.
pub fn spawn_placed(spec: &SpawnSpec, placement: SpawnPlacement<'_>) -> Result<Spawned, String> {
    if let Some(cwd) = &spec.cwd {
        check_cwd(cwd)?;
    }
    let parent = nix::unistd::getpid();
    let last_signal = last_signal();
    let nofile = rlimit::original();
    let fd_limit = fd::fd_limit();
    // Borrowed for the whole call: valid until the child has exec'd.
    let cgroup_procs = placement.cgroup_procs.map_or(-1, |fd| fd.as_raw_fd());
    #[cfg(vfork_spawn)]
    let cgroup_dir = placement.cgroup_dir.map_or(-1, |fd| fd.as_raw_fd());
    #[cfg(vfork_spawn)]
    {
        use std::sync::atomic::{AtomicBool, Ordering};

        /// Set once clone(2) refused `CLONE_VM | CLONE_VFORK`: fork from then on.
        static CLONE_REFUSED: AtomicBool = AtomicBool::new(false);

        if !CLONE_REFUSED.load(Ordering::Relaxed) {
            let inherit = vfork::Inherit {
                parent: parent.as_raw(),
                last_signal,
                nofile,
                fd_limit,
                cgroup_procs,
                cgroup_dir,
            };
            match vfork::spawn(spec, inherit) {
                Ok(child) => {
                    return Ok(Spawned {
                        pid: Pid::from_raw(child.pid),
                        stdin: child.stdin.map(ChildStdin::from),
                        stdout: ChildStdout::from(child.stdout),
                        stderr: ChildStderr::from(child.stderr),
                    });
                }
                // Refused by a sandbox or an emulator: fork from now on.
                Err(vfork::Error::Unsupported(err)) => {
                    if !CLONE_REFUSED.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "proc-mcp: clone(CLONE_VM | CLONE_VFORK) refused ({err}); spawning with fork"
                        );
                    }
                }
                Err(vfork::Error::Prepare(err) | vfork::Error::Child(vfork::Step::Exec, err)) => {
                    return Err(describe_spawn_error(&spec.program, &err));
                }
                Err(vfork::Error::Child(vfork::Step::Chdir, err)) => {
                    let cwd = spec.cwd.as_deref().unwrap_or(".");
                    return Err(format!("cannot use working directory {cwd:?}: {err}"));
                }
                Err(vfork::Error::Child(step, err)) => {
                    return Err(format!("cannot start {:?}: {step}: {err}", spec.program));
                }
                Err(vfork::Error::Vanished) => {
                    return Err(format!(
                        "cannot start {:?}: the new process ended before it could exec",
                        spec.program
                    ));
                }
            }
        }
    }
    spawn_forked(spec, parent, last_signal, nofile, fd_limit, cgroup_procs)
}

/// [`spawn`] with std's `Command`, which forks because of the `pre_exec` hook.
fn spawn_forked(
    spec: &SpawnSpec,
    parent: Pid,
    last_signal: libc::c_int,
    nofile: Option<(libc::rlim_t, libc::rlim_t)>,
    fd_limit: libc::c_int,
    cgroup_procs: RawFd,
) -> Result<Spawned, String> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(match spec.stdin {
            StdinMode::Piped => Stdio::piped(),
            _ => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    // SAFETY: `setup_child` only makes async-signal-safe system calls (setsid, signal, prctl,
    // getppid, write, close_range, open, getdents64, fcntl, close, setrlimit, _exit) and does
    // not allocate, as required between fork and exec. `cgroup_procs` stays open until
    // `spawn` returns, after the exec.
    unsafe {
        command.pre_exec(move || setup_child(parent, last_signal, nofile, fd_limit, cgroup_procs));
    }
    let mut child = command
        .spawn()
        .map_err(|err| describe_spawn_error(&spec.program, &err))?;
    // Dropping a `std::process::Child` neither kills nor reaps it: from here on the process is
    // ours to wait for, by pid.
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| "pid out of range".to_owned())?);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("internal error: the child's output pipes are missing".to_owned());
    };
    Ok(Spawned {
        pid,
        stdin: child.stdin.take(),
        stdout,
        stderr,
    })
}

/// Runs in the child between `fork` and `exec`; async-signal-safe calls only.
fn setup_child(
    parent: Pid,
    last_signal: libc::c_int,
    nofile: Option<(libc::rlim_t, libc::rlim_t)>,
    fd_limit: libc::c_int,
    cgroup_procs: RawFd,
) -> io::Result<()> {
    // New session, hence new process group: pgid == sid == pid (setsid(2)).
    nix::unistd::setsid()?;
    // Only 0, 1 and 2 cross exec. std has already put the pipes in place with dup2(2), and its
    // own descriptors (the pipe that reports a failed exec) are close-on-exec already.
    fd::mark_cloexec_from(3, fd_limit)?;
    // The limit the server started with, not the raised one: a task that relies on select(2)
    // and FD_SETSIZE, or that sizes tables by the limit, sees what it would see elsewhere.
    if let Some(original) = nofile {
        rlimit::restore_in_child(original)?;
    }
    // Signals the server ignores would stay ignored across exec (signal(7)); give the task the
    // defaults so that SIGINT, SIGHUP, SIGTERM stop it as the tools promise. Handled signals
    // are reset by exec anyway. libuv does the same for its children. (glibc refuses 32 and 33,
    // which it reserves for itself: harmless.)
    for signo in 1..=last_signal {
        if signo != libc::SIGKILL && signo != libc::SIGSTOP {
            // SAFETY: signal(2) is async-signal-safe; SIG_DFL is a valid disposition.
            unsafe { libc::signal(signo, libc::SIG_DFL) };
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::prctl::set_pdeathsig(NixSignal::SIGKILL)?;
        // The server may have died between fork and prctl: then nobody would kill us later.
        if nix::unistd::getppid() != parent {
            // SAFETY: _exit(2) is async-signal-safe and ends the child at once.
            unsafe { libc::_exit(1) };
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = parent;
    // Into the task's cgroup: writing "0" to cgroup.procs moves the writing process
    // (cgroups(7)).
    if cgroup_procs >= 0 {
        // SAFETY: write(2) of one byte from a static string to a descriptor of ours.
        if unsafe { libc::write(cgroup_procs, b"0".as_ptr().cast(), 1) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The highest signal number: `SIGRTMAX` where there are real-time signals.
fn last_signal() -> libc::c_int {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        libc::SIGRTMAX()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        31
    }
}

/// Tells "the working directory is wrong" apart from "the command is wrong" before spawning:
/// afterwards both are the same `ENOENT`.
fn check_cwd(cwd: &str) -> Result<(), String> {
    match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("working directory {cwd:?} is not a directory")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(format!("working directory {cwd:?} does not exist"));
        }
        Err(err) => return Err(format!("cannot use working directory {cwd:?}: {err}")),
    }
    match nix::unistd::access(cwd, nix::unistd::AccessFlags::X_OK) {
        Ok(()) => Ok(()),
        Err(errno) => Err(format!(
            "cannot use working directory {cwd:?}: {}",
            io::Error::from(errno)
        )),
    }
}

fn describe_spawn_error(program: &str, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound if program.contains('/') => {
            format!("cannot start {program:?}: no such file (or its #! interpreter is missing)")
        }
        io::ErrorKind::NotFound => format!("command not found: {program:?} is not in PATH"),
        io::ErrorKind::PermissionDenied => {
            format!("cannot start {program:?}: permission denied (not an executable file)")
        }
        _ => format!("cannot start {program:?}: {err}"),
    }
}

/// Sends `signal` to the whole process group `pgid` (killpg(3)). A group that no longer exists
/// (`ESRCH`) is not an error: the task ended on its own.
///
/// # Errors
/// `EPERM` (a member changed its user id), `EINVAL` (a signal number the system does not
/// have), or `InvalidInput` for a pgid of 0 or 1, which would hit our own group or init.
pub fn signal_group(pgid: Pid, signal: Signal) -> io::Result<()> {
    if pgid.as_raw() <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    let Some(signo) = signal_number(signal) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no signal number for {signal}"),
        ));
    };
    // SAFETY: killpg(3) has no memory-safety preconditions; pgid > 1 was checked above.
    match Errno::result(unsafe { libc::killpg(pgid.as_raw(), signo) }) {
        Ok(_) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// How the child `pid` ended, if it has, **without reaping it**: waitid(2) with
/// `WEXITED | WNOHANG | WNOWAIT`. The zombie keeps its pid, and so its process group id,
/// reserved until [`reap`].
///
/// Calls libc rather than `nix::sys::wait::waitid`, which fails with `EINVAL` for a child killed
/// by a signal outside nix's `Signal` enum (real-time signals).
///
/// # Errors
/// `ECHILD` if `pid` is not an unreaped child of this process.
pub fn exit_status(pid: Pid) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value (and means "no child").
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(pid.as_raw())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative pid"))?;
    loop {
        // SAFETY: `info` is a valid, writable siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                id,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        match Errno::result(rc) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
    // SAFETY: waitid filled `info` for SIGCHLD (or left it zeroed): si_pid/si_status are valid.
    let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
    if si_pid == 0 {
        return Ok(None);
    }
    Ok(match info.si_code {
        libc::CLD_EXITED => Some(ExitStatus::Code(si_status)),
        libc::CLD_KILLED | libc::CLD_DUMPED => {
            Some(ExitStatus::Signaled(signal_from_number(si_status)))
        }
        // Only WEXITED was asked for; anything else is not an exit.
        _ => None,
    })
}

/// Reaps the child `pid` (waitpid(2)), freeing its pid and process group id. Blocks until it
/// has exited, so call it after [`exit_status`] returned `Some`.
///
/// # Errors
/// `ECHILD` if `pid` is not an unreaped child of this process.
pub fn reap(pid: Pid) -> io::Result<()> {
    wait_pid(pid, 0).map(drop)
}

/// Reaps the child `pid` if it has exited (`WNOHANG`); `Ok(false)` if it still runs.
///
/// # Errors
/// `ECHILD` if `pid` is not an unreaped child of this process.
pub fn try_reap(pid: Pid) -> io::Result<bool> {
    wait_pid(pid, libc::WNOHANG)
}

fn wait_pid(pid: Pid, flags: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: a null status pointer is allowed by waitpid(2).
        let rc = unsafe { libc::waitpid(pid.as_raw(), std::ptr::null_mut(), flags) };
        match Errno::result(rc) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::time::Duration;

    use proc_state::{ExitStatus, Signal, StdinMode};

    use super::*;
    use crate::testutil::{
        Leaked, group_members, open_fds, sh, spec, stat, wait_exited, wait_terminated,
    };

    fn read_all(mut pipe: impl std::io::Read) -> String {
        let mut text = String::new();
        pipe.read_to_string(&mut text).expect("read pipe");
        text
    }

    /// Runs `spec` to completion: (stdout, stderr, status); reaps it.
    fn run(spec: &SpawnSpec) -> (String, String, ExitStatus) {
        let child = spawn(spec).expect("spawn");
        let stderr = child.stderr;
        let reader = std::thread::spawn(move || read_all(stderr));
        let stdout = read_all(child.stdout);
        let stderr = reader.join().expect("stderr reader");
        let status = wait_exited(child.pid);
        reap(child.pid).expect("reap");
        (stdout, stderr, status)
    }

    #[test]
    fn child_leads_its_own_session_and_process_group() {
        let child = spawn(&spec("sleep", &["1000"])).expect("spawn sleep");
        let pid = child.pid.as_raw();
        let ours = stat(std::process::id().try_into().expect("pid")).expect("our stat");
        let theirs = stat(pid).expect("child stat");
        assert_eq!((theirs.pgrp, theirs.session), (pid, pid));
        assert_ne!(theirs.session, ours.session);
        signal_group(child.pid, Signal::Kill).expect("killpg");
        assert_eq!(wait_exited(child.pid), ExitStatus::Signaled(Signal::Kill));
        reap(child.pid).expect("reap");
    }

    #[test]
    fn stdin_is_dev_null_unless_piped() {
        let (out, _, status) = run(&spec("readlink", &["/proc/self/fd/0"]));
        assert_eq!((out.as_str(), status), ("/dev/null\n", ExitStatus::Code(0)));

        let mut piped = spec("readlink", &["/proc/self/fd/0"]);
        piped.stdin = StdinMode::Piped;
        let child = spawn(&piped).expect("spawn");
        assert!(child.stdin.is_some());
        let out = read_all(child.stdout);
        assert!(out.starts_with("pipe:"), "{out}");
        wait_exited(child.pid);
        reap(child.pid).expect("reap");
    }

    #[test]
    fn stdout_and_stderr_are_separate_pipes_and_cwd_env_apply() {
        let mut spec = sh("echo \"$GREETING\"; pwd; echo oops >&2; exit 7");
        spec.env = vec![("GREETING".to_owned(), "hello there".to_owned())];
        spec.cwd = Some("/tmp".to_owned());
        let (out, err, status) = run(&spec);
        assert_eq!(out, "hello there\n/tmp\n");
        assert_eq!(err, "oops\n");
        assert_eq!(status, ExitStatus::Code(7));
    }

    #[test]
    fn exit_is_seen_without_reaping_until_reap() {
        let child = spawn(&sh("exit 3")).expect("spawn");
        let pid = child.pid;
        assert_eq!(wait_exited(pid), ExitStatus::Code(3));
        // WNOWAIT: asking again gives the same answer, and the zombie holds pid and pgid.
        assert_eq!(exit_status(pid).expect("waitid"), Some(ExitStatus::Code(3)));
        assert_eq!(stat(pid.as_raw()).map(|s| s.state), Some('Z'));
        assert_eq!(group_members(pid.as_raw()), vec![(pid.as_raw(), 'Z')]);
        reap(pid).expect("reap");
        assert_eq!(stat(pid.as_raw()), None);
        assert_eq!(
            exit_status(pid).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ECHILD))
        );
    }

    #[test]
    fn a_running_child_has_no_exit_status() {
        let child = spawn(&spec("sleep", &["1000"])).expect("spawn");
        assert_eq!(exit_status(child.pid).expect("waitid"), None);
        assert!(!try_reap(child.pid).expect("waitpid"));
        signal_group(child.pid, Signal::Term).expect("killpg");
        assert_eq!(wait_exited(child.pid), ExitStatus::Signaled(Signal::Term));
        assert!(try_reap(child.pid).expect("waitpid"));
    }

    #[test]
    fn signal_deaths_are_mapped_including_real_time_signals() {
        let (_, _, status) = run(&sh("kill -s SEGV $$"));
        assert_eq!(status, ExitStatus::Signaled(Signal::Segv));

        let rt = libc::SIGRTMIN() + 2;
        let child = spawn(&spec("sleep", &["1000"])).expect("spawn");
        signal_group(child.pid, Signal::Other(rt)).expect("killpg");
        assert_eq!(
            wait_exited(child.pid),
            ExitStatus::Signaled(Signal::Other(rt))
        );
        reap(child.pid).expect("reap");
    }

    #[test]
    fn killpg_reaches_grandchildren() {
        let child = spawn(&sh("sleep 1000 & sleep 1000 & echo ready; wait")).expect("spawn");
        let pgid = child.pid.as_raw();
        let mut stdout = BufReader::new(child.stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert_eq!(line, "ready\n");
        let members = group_members(pgid);
        assert_eq!(members.len(), 3, "sh and two sleeps: {members:?}");

        signal_group(child.pid, Signal::Term).expect("killpg");
        for (pid, _) in &members {
            assert!(
                wait_terminated(*pid, Duration::from_secs(10)),
                "{pid} survived"
            );
        }
        assert_eq!(wait_exited(child.pid), ExitStatus::Signaled(Signal::Term));
        reap(child.pid).expect("reap");
        // The orphaned sleeps belong to init now, which may be slow to (or never) reap them
        // here: nothing in the group may be alive, zombies aside.
        let alive: Vec<_> = group_members(pgid)
            .into_iter()
            .filter(|(_, state)| !matches!(state, 'Z' | 'X'))
            .collect();
        assert_eq!(alive, vec![]);
        // Nothing left to signal: not an error.
        signal_group(child.pid, Signal::Kill).expect("ESRCH is fine");
    }

    #[test]
    fn signal_group_refuses_our_own_group_and_init() {
        for pgid in [0, 1, -5] {
            let err = signal_group(Pid::from_raw(pgid), Signal::Term).expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn spawn_failures_say_what_is_wrong() {
        let mut in_missing_dir = spec("true", &[]);
        in_missing_dir.cwd = Some("/nonexistent/dir".to_owned());
        let err = spawn(&in_missing_dir).expect_err("missing cwd");
        assert_eq!(err, "working directory \"/nonexistent/dir\" does not exist");

        let mut in_file = spec("true", &[]);
        in_file.cwd = Some("/etc/passwd".to_owned());
        let err = spawn(&in_file).expect_err("cwd is a file");
        assert_eq!(err, "working directory \"/etc/passwd\" is not a directory");

        let err = spawn(&spec("no-such-command-7f3a", &[])).expect_err("missing program");
        assert_eq!(
            err,
            "command not found: \"no-such-command-7f3a\" is not in PATH"
        );

        let err = spawn(&spec("/nonexistent/prog", &[])).expect_err("missing path");
        assert!(
            err.starts_with("cannot start \"/nonexistent/prog\": no such file"),
            "{err}"
        );

        let err = spawn(&spec("/etc/passwd", &[])).expect_err("not executable");
        assert!(err.contains("permission denied"), "{err}");

        let err = spawn(&spec("echo", &["nul\0byte"])).expect_err("nul byte");
        assert!(err.starts_with("cannot start \"echo\": "), "{err}");
    }

    #[test]
    fn ignored_signals_are_not_inherited() {
        // The test process ignores SIGPIPE (Rust's runtime) and, from here on, SIGHUP.
        // SAFETY: SIG_IGN is a valid disposition; nothing in the tests relies on SIGHUP.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let (out, _, _) = run(&sh("grep SigIgn /proc/self/status"));
        let mask = out
            .strip_prefix("SigIgn:\t")
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("unexpected {out:?}"));
        // Bit n-1 is signal n; glibc keeps 32 and 33 for itself and will not reset them.
        let glibc_internal = (1 << 31) | (1 << 32);
        assert_eq!(mask & !glibc_internal, 0, "ignored: {mask:#x}");
    }

    #[test]
    fn the_fork_fallback_keeps_the_same_promises() {
        let forked = |spec: &SpawnSpec| {
            spawn_forked(
                spec,
                nix::unistd::getpid(),
                last_signal(),
                rlimit::original(),
                fd::fd_limit(),
                -1,
            )
        };
        let leaked = Leaked::new();
        let mut script = sh("echo \"$GREETING\"; pwd; ls /proc/self/fd; ps -o sid= -p $$; exit 4");
        script.env = vec![("GREETING".to_owned(), "forked".to_owned())];
        script.cwd = Some("/tmp".to_owned());
        let child = forked(&script).expect("spawn");
        let out = read_all(child.stdout);
        assert_eq!(wait_exited(child.pid), ExitStatus::Code(4));
        reap(child.pid).expect("reap");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // `ls` lists 0, 1, 2 and its own directory descriptor, never `leaked`.
        let sid = child.pid.to_string();
        assert_eq!(
            lines,
            ["forked", "/tmp", "0", "1", "2", "3", sid.as_str()],
            "fd {}",
            leaked.0
        );
        let err = forked(&spec("no-such-command-7f3a", &[])).expect_err("missing program");
        assert_eq!(
            err,
            "command not found: \"no-such-command-7f3a\" is not in PATH"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn both_spawn_paths_start_the_task_in_the_given_cgroup() {
        let cgroups = match crate::cgroup::detect() {
            Ok(cgroups) => cgroups,
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        };
        let me = crate::tree::Instance::current().expect("our instance");
        // Not a server's name: nothing else here may take it for stale and remove it.
        let parent = cgroups
            .create_server(&me)
            .and_then(|server| server.create_child(&format!("spawn-test-{}", me.pid)))
            .expect("cgroup");
        let procs = parent.open_procs().expect("cgroup.procs");
        let placement = SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&procs));
        let forked = |spec: &SpawnSpec| {
            spawn_forked(
                spec,
                nix::unistd::getpid(),
                last_signal(),
                rlimit::original(),
                fd::fd_limit(),
                procs.as_raw_fd(),
            )
        };
        let script = sh("cat /proc/self/cgroup");
        let mut outputs = Vec::new();
        for child in [spawn_placed(&script, placement), forked(&script)] {
            let child = child.expect("spawn");
            outputs.push(read_all(child.stdout));
            assert_eq!(wait_exited(child.pid), ExitStatus::Code(0));
            reap(child.pid).expect("reap");
        }
        let _ = parent.remove();
        let _ = crate::cgroup::Cgroup::at(parent.path().parent().expect("parent")).remove();
        let suffix = format!("/spawn-test-{}", me.pid);
        for out in outputs {
            assert!(
                out.lines()
                    .any(|line| line.starts_with("0::") && line.ends_with(&suffix)),
                "{out}"
            );
        }
    }

    #[test]
    fn the_child_starts_with_an_empty_signal_mask() {
        // Whatever this thread blocks, the task gets nothing blocked (nor ignored).
        let run_blocked = || {
            let mut blocked = nix::sys::signal::SigSet::empty();
            blocked.add(NixSignal::SIGTERM);
            blocked.add(NixSignal::SIGUSR1);
            blocked.thread_block().expect("block");
            run(&sh("grep -E '^Sig(Blk|Ign)' /proc/self/status"))
        };
        let (out, _, status) = std::thread::spawn(run_blocked).join().expect("thread");
        assert_eq!(status, ExitStatus::Code(0));
        for line in out.lines() {
            let (name, hex) = line.split_once(":\t").expect("status line");
            let mask = u64::from_str_radix(hex, 16).expect("hex mask");
            let glibc_internal = (1 << 31) | (1 << 32);
            assert_eq!(mask & !glibc_internal, 0, "{name}: {mask:#x}\n{out}");
        }
    }

    #[test]
    fn argv_zero_is_the_program_as_given() {
        let (out, _, _) = run(&spec("sh", &["-c", "echo \"$0\""]));
        assert_eq!(out, "sh\n");
    }

    #[test]
    fn the_program_is_looked_up_in_the_childs_path_like_execvp() {
        let dir = std::env::temp_dir().join(format!("proc-os-path-{}", std::process::id()));
        let (denied, found) = (dir.join("denied"), dir.join("found"));
        std::fs::create_dir_all(&denied).expect("mkdir");
        std::fs::create_dir_all(&found).expect("mkdir");
        let write = |path: &std::path::Path, text: &str, mode: u32| {
            std::fs::write(path, text).expect("write");
            let perms = std::os::unix::fs::PermissionsExt::from_mode(mode);
            std::fs::set_permissions(path, perms).expect("chmod");
        };
        // Not executable in the first directory: execvp moves on (and would report EACCES).
        write(
            &denied.join("proc-os-tool"),
            "#!/bin/sh\necho wrong\n",
            0o644,
        );
        // No `#!` line: run with /bin/sh, arguments and all.
        write(&found.join("proc-os-tool"), "echo \"found $1\"\n", 0o755);
        let path = format!("{}:/nonexistent:{}", denied.display(), found.display());

        let mut tool = spec("proc-os-tool", &["it"]);
        tool.env = vec![("PATH".to_owned(), path.clone())];
        let (out, err, status) = run(&tool);
        assert_eq!(
            (out.as_str(), status),
            ("found it\n", ExitStatus::Code(0)),
            "{err}"
        );

        let mut denied_only = spec("proc-os-tool", &[]);
        denied_only.env = vec![("PATH".to_owned(), denied.display().to_string())];
        let err = spawn(&denied_only).expect_err("not executable");
        assert!(err.contains("permission denied"), "{err}");

        // A relative path with a slash is relative to the task's working directory.
        let mut relative = spec("./proc-os-tool", &["here"]);
        relative.cwd = Some(found.display().to_string());
        let (out, _, _) = run(&relative);
        assert_eq!(out, "found here\n");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn spawning_from_many_threads_at_once_while_signals_fly() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        static CAUGHT: AtomicUsize = AtomicUsize::new(0);
        extern "C" fn on_usr2(_: libc::c_int) {
            CAUGHT.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the handler only touches an atomic; nothing else in the tests uses SIGUSR2.
        unsafe { libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t) };
        let done = std::sync::Arc::new(AtomicBool::new(false));
        // Signals at the whole process, which any thread (a spawning one included) may take,
        // and allocations on other threads, while four threads spawn.
        let noise = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut junk = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    // SAFETY: kill(2) to ourselves with a signal we handle.
                    unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
                    junk.push(vec![0_u8; 4096]);
                    if junk.len() > 64 {
                        junk.clear();
                    }
                    std::thread::yield_now();
                }
            })
        };
        let spawners: Vec<_> = (0..4)
            .map(|n| {
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let (out, _, status) = run(&spec("echo", &[&format!("{n}-{i}")]));
                        assert_eq!((out, status), (format!("{n}-{i}\n"), ExitStatus::Code(0)));
                        let err = spawn(&spec("no-such-command-7f3a", &[])).expect_err("missing");
                        assert!(err.starts_with("command not found"), "{err}");
                    }
                })
            })
            .collect();
        for spawner in spawners {
            spawner.join().expect("spawner");
        }
        done.store(true, Ordering::Relaxed);
        noise.join().expect("noise");
        assert!(CAUGHT.load(Ordering::Relaxed) > 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn child_is_killed_when_the_spawning_thread_dies() {
        let pid = std::thread::spawn(|| {
            let child = spawn(&spec("sleep", &["1000"])).expect("spawn");
            child.pid
        })
        .join()
        .expect("spawning thread");
        assert_eq!(wait_exited(pid), ExitStatus::Signaled(Signal::Kill));
        reap(pid).expect("reap");
    }

    #[test]
    fn only_stdin_stdout_and_stderr_reach_the_child() {
        let leaked = Leaked::new();
        // Looked at once it has printed: while a program starts, the dynamic loader briefly
        // holds descriptors of its own. (`exit` keeps the shell from exec'ing `sleep`.)
        let mut piped = sh("echo ready; sleep 1000; exit");
        piped.stdin = StdinMode::Piped;
        let child = spawn(&piped).expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout)
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line, "ready\n");
        assert_eq!(
            open_fds(child.pid.as_raw()),
            vec![0, 1, 2],
            "leaked fd {}",
            leaked.0
        );
        signal_group(child.pid, Signal::Kill).expect("killpg");
        wait_exited(child.pid);
        reap(child.pid).expect("reap");
    }
}

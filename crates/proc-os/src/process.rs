//! Processes and process groups: spawning a task in its own session, signalling its group,
//! seeing its exit without reaping it, and reaping it at last.
//!
//! Everything here is synchronous and talks to the kernel directly; a driver's event loop
//! decides when to call it. POSIX references: posix_spawn(3), setsid(2), setrlimit(2),
//! killpg(3), waitid(2) with `WNOWAIT`, waitpid(2).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString, c_char};
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::ptr;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use proc_state::{ExitStatus, Signal, SpawnSpec, StdinMode, Stdio, WindowSize};

use crate::cgroup_child;
use crate::signal::{signal_from_number, signal_number};
use crate::{fd, rlimit};

/// A freshly started process: the leader of its own session and process group
/// (`pid == pgid == sid`), with the parent's ends of its pipes, or the master side of its
/// terminal.
#[derive(Debug)]
pub struct Spawned {
    /// Process id; also the process group id and the session id.
    pub pid: Pid,
    /// Write end of the child's stdin, for [`StdinMode::Piped`].
    pub stdin: Option<ChildStdin>,
    /// Read end of the child's stdout pipe; `None` on a terminal ([`Stdio::Terminal`]).
    pub stdout: Option<ChildStdout>,
    /// Read end of the child's stderr pipe; `None` on a terminal ([`Stdio::Terminal`]).
    pub stderr: Option<ChildStderr>,
    /// For [`Stdio::Terminal`]: the master side of the child's pseudo-terminal (pty(7)),
    /// close-on-exec and non-blocking (`O_NONBLOCK`). Reading it gives what the child wrote to
    /// its terminal (stdout and stderr alike, with `ONLCR`'s `\r\n` line endings, and the echo
    /// of what was written to it), then `EIO` once no process holds the slave side open (its
    /// end-of-file); writing it is typing on the terminal; [`set_window_size`] resizes it.
    /// The parent's descriptor of the slave side is closed once the child has it.
    pub terminal: Option<OwnedFd>,
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
/// stderr as pipes; or, for [`Stdio::Terminal`], stdin, stdout and stderr all on the slave side
/// of a new pseudo-terminal of that size (pty(7), posix_openpt(3)), which is the controlling
/// terminal of its new session, whose process group is the terminal's foreground group (so
/// `^C` typed on the master reaches the task's group as `SIGINT`), in the kernel's default
/// mode (canonical input, echo, `ONLCR`); the parent keeps the master
/// ([`Spawned::terminal`]) and closes its descriptor of the slave. The child also gets the
/// server's environment plus `spec.env`, default dispositions for all
/// signals (but glibc's own 32 and 33) and an empty signal mask. It inherits no other file
/// descriptor: every descriptor from 3 up is closed in the child, so descriptors that whoever
/// started the server leaked to it never reach a task. If [`rlimit::raise_nofile_limit`]
/// raised the server's `RLIMIT_NOFILE`, the child gets the original soft limit back
/// ([`rlimit`] lowers the server's own for the instant of the spawn). A program without `/` is
/// looked up in the child's `PATH` as execvp(3) does (a file without `#!` runs with
/// `/bin/sh`). There is no parent-death signal: the watchdog (`crate::watchdog`) kills every
/// task when the server dies, whichever thread spawned it.
///
/// # How
/// With glibc's posix_spawn(3) (`POSIX_SPAWN_SETSID`, `POSIX_SPAWN_SETSIGDEF` with every
/// signal, `POSIX_SPAWN_SETSIGMASK` with none, `dup2` onto 0, 1 and 2 (for a terminal: an
/// `open` of the slave's path onto 0 without `O_NOCTTY`, which glibc does after `setsid`, so
/// the new session leader acquires it as its controlling terminal, then `dup2` of 0 onto 1
/// and 2), `closefrom(3)` and `chdir` file actions; glibc 2.34 or later), which creates the child with
/// `clone(CLONE_VM | CLONE_VFORK)`: no copy of the server's memory, and no child code of ours.
///
/// With a cgroup in `placement` (glibc before 2.41 cannot spawn into one), with the small
/// child of `cgroup_child`, which is born in the cgroup (clone3(2) `CLONE_INTO_CGROUP`) or
/// moves itself there before exec, and otherwise does the same steps in the same order (a
/// terminal's slave is dup2'd onto 0, 1 and 2, then made the controlling terminal with ioctl
/// `TIOCSCTTY`, tty_ioctl(4)), also
/// on borrowed memory (`CLONE_VM | CLONE_VFORK`): a fork-based child measured a millisecond
/// slower per start under load (the figures are in that module).
///
/// Measured with `cargo bench --bench figures`, "tools/call start `true` round trip (median
/// of 200)", median of 7 interleaved runs on the 2-core machine shared with other builds
/// (load 5-7), the server started with `--cgroups off` (`PROC_MCP_BIN` set to a script that
/// execs the binary with that flag) so that every task goes through posix_spawn: 1.56 ms with the former hand-written `vfork` module, 1.53 ms with
/// posix_spawn. The difference is noise: glibc does what that module did, with no code of
/// ours in the child.
///
/// # Errors
/// A one-line message for people: the working directory does not exist or is not a
/// directory, the command is not found, is not executable, the move into the cgroup failed
/// (`EACCES`/`EPERM`: the cgroup is not ours to write, `ENODEV`/`ENOENT`: it was removed,
/// `EBUSY`: it has controllers enabled for its children), no pseudo-terminal could be opened
/// (`ENOENT`/`ENOSPC`: no `/dev/ptmx` or no free pty, see `/proc/sys/kernel/pty/max`), the
/// terminal could not be made the controlling one (cgroup child, `TIOCSCTTY`), or the spawn
/// failed otherwise (with the OS error).
pub fn spawn_placed(spec: &SpawnSpec, placement: SpawnPlacement<'_>) -> Result<Spawned, String> {
    if let Some(cwd) = &spec.cwd {
        check_cwd(cwd)?;
    }
    let command = Command::new(spec).map_err(|err| describe_spawn_error(&spec.program, &err))?;
    let size = match spec.stdio {
        Stdio::Terminal(size) => size,
        Stdio::Pipes { stdin } => return spawn_with_pipes(spec, &command, stdin, placement),
    };
    let terminal = Terminal::open(size).map_err(|err| {
        format!(
            "cannot start {:?}: cannot open a pseudo-terminal: {err}",
            spec.program
        )
    })?;
    let slave = terminal.slave.as_raw_fd();
    let stdio = ChildStdio {
        fds: [slave; 3],
        terminal: Some(&terminal.path),
    };
    let pid = command
        .start(stdio, placement)
        .map_err(|failure| failure.describe(spec))?;
    // The child has it now: once the task and everything it started have closed it, reading
    // the master gives EIO.
    drop(terminal.slave);
    Ok(Spawned {
        pid,
        stdin: None,
        stdout: None,
        stderr: None,
        terminal: Some(terminal.master),
    })
}

/// [`spawn_placed`] for [`Stdio::Pipes`].
fn spawn_with_pipes(
    spec: &SpawnSpec,
    command: &Command,
    stdin: StdinMode,
    placement: SpawnPlacement<'_>,
) -> Result<Spawned, String> {
    let describe = |err: &io::Error| describe_spawn_error(&spec.program, err);
    let (stdin_child, stdin_parent) = match stdin {
        StdinMode::Piped => {
            let (read, write) = pipe().map_err(|err| describe(&err))?;
            (read, Some(write))
        }
        _ => (dev_null().map_err(|err| describe(&err))?, None),
    };
    let (stdout_parent, stdout_child) = pipe().map_err(|err| describe(&err))?;
    let (stderr_parent, stderr_child) = pipe().map_err(|err| describe(&err))?;
    let stdio = ChildStdio {
        fds: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        terminal: None,
    };
    let pid = command
        .start(stdio, placement)
        .map_err(|failure| failure.describe(spec))?;
    Ok(Spawned {
        pid,
        stdin: stdin_parent.map(ChildStdin::from),
        stdout: Some(ChildStdout::from(stdout_parent)),
        stderr: Some(ChildStderr::from(stderr_parent)),
        terminal: None,
    })
}

/// What the child gets on 0, 1 and 2.
#[derive(Clone, Copy)]
struct ChildStdio<'a> {
    /// Descriptors of the parent to put on 0, 1 and 2 (all 3 or above); for a terminal, the
    /// slave side three times.
    fds: [RawFd; 3],
    /// For a terminal: the slave's path (ptsname(3)), which the child opens as the leader of
    /// its new session, making it its controlling terminal.
    terminal: Option<&'a CStr>,
}

/// A new pseudo-terminal (pty(7)), both sides close-on-exec and 3 or above.
struct Terminal {
    /// The master side, non-blocking.
    master: OwnedFd,
    /// The slave side, opened with `O_NOCTTY` (it never becomes the server's terminal).
    slave: OwnedFd,
    /// The slave's path, `/dev/pts/N`.
    path: CString,
}

impl Terminal {
    /// posix_openpt(3) (`O_RDWR | O_NOCTTY | O_CLOEXEC`), grantpt(3), unlockpt(3),
    /// ptsname_r(3), the slave opened `O_NOCTTY`, the window size set to `size`
    /// (`TIOCSWINSZ`), the master made non-blocking.
    fn open(size: WindowSize) -> io::Result<Self> {
        // SAFETY: posix_openpt(3) returns a new descriptor or -1.
        let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        let master = above_stdio(owned(master)?)?;
        // SAFETY: (both) on the master just opened.
        Errno::result(unsafe { libc::grantpt(master.as_raw_fd()) })?;
        Errno::result(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
        let mut name = [0 as c_char; 128];
        // SAFETY: a writable buffer of the length given; ptsname_r NUL-terminates it.
        let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: NUL-terminated by ptsname_r, within `name`.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) }.to_owned();
        // SAFETY: a NUL-terminated path; returns a new descriptor or -1.
        let slave = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        let slave = above_stdio(owned(slave)?)?;
        set_window_size(master.as_fd(), size)?;
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
        )?;
        Ok(Self {
            master,
            slave,
            path,
        })
    }
}

/// A descriptor a system call returned, owned; -1 is its errno.
fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the window size of the terminal whose master (or slave) side is `terminal` to `size`:
/// ioctl `TIOCSWINSZ` (tty_ioctl(4)) with `ws_row = size.rows`, `ws_col = size.cols` (character
/// cells) and no pixel sizes. When the size changes, the kernel sends `SIGWINCH` to the
/// terminal's foreground process group.
///
/// # Errors
/// The ioctl's: `ENOTTY` if `terminal` is not a terminal, `EBADF` if it is not open.
pub fn set_window_size(terminal: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer.
    Errno::result(unsafe {
        libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &raw const winsize)
    })?;
    Ok(())
}

/// A program to start, prepared in the parent: C strings of everything the child needs.
struct Command {
    /// `argv`, the program as given first.
    args: Vec<CString>,
    /// `KEY=value` strings: the server's environment with the spec's on top.
    env: Vec<CString>,
    /// The paths to try, in execvp(3)'s order: the program itself if it has a `/`, else each
    /// `PATH` entry joined with it.
    candidates: Vec<CString>,
    /// Whether `candidates` come from a `PATH` search (`ENOENT` and the like then move on).
    search: bool,
    /// The working directory, if not the server's.
    cwd: Option<CString>,
}

/// Why a spawn failed.
enum Failure {
    /// execve(2) (or, on posix_spawn's path, an earlier step: posix_spawn(3) reports any step's
    /// errno) failed with this errno.
    Exec(Errno),
    /// A step of the cgroup child before exec failed.
    Step(cgroup_child::Step, Errno),
    /// The parent could not create the child.
    Os(io::Error),
    /// The child ended before it could exec or report.
    Vanished,
}

impl Command {
    fn new(spec: &SpawnSpec) -> io::Result<Self> {
        let program = c_string(spec.program.as_bytes().to_vec())?;
        let search = !spec.program.contains('/');
        let (env, path) = environment(&spec.env)?;
        let candidates = if search {
            search_path(path.as_deref(), spec.program.as_bytes())?
        } else {
            vec![program.clone()]
        };
        let mut args = Vec::with_capacity(spec.args.len() + 1);
        args.push(program);
        for arg in &spec.args {
            args.push(c_string(arg.as_bytes().to_vec())?);
        }
        let cwd = spec
            .cwd
            .as_ref()
            .map(|cwd| c_string(cwd.as_bytes().to_vec()))
            .transpose()?;
        Ok(Self {
            args,
            env,
            candidates,
            search,
            cwd,
        })
    }

    /// execvp(3)'s loop over the candidates: runs a file without a `#!` line with `/bin/sh`;
    /// in a `PATH` search moves on after `ENOENT`, `ENOTDIR`, `EACCES` (remembered) and a few
    /// more, and stops at any other error. Candidates that do not exist are passed over
    /// without spawning (access(2)), so a search costs one spawn, not one per `PATH` entry.
    fn start(&self, stdio: ChildStdio<'_>, placement: SpawnPlacement<'_>) -> Result<Pid, Failure> {
        if self.args.first().is_none_or(|program| program.is_empty()) {
            // execvp(3) says so without looking: "" names no file.
            return Err(Failure::Exec(Errno::ENOENT));
        }
        let argv = null_terminated(self.args.iter().map(CString::as_c_str));
        let envp = null_terminated(self.env.iter().map(CString::as_c_str));
        let mut denied = false;
        for path in &self.candidates {
            if self.search {
                match self.executable(path) {
                    Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                    Err(Errno::EACCES) => {
                        denied = true;
                        continue;
                    }
                    _ => {}
                }
            }
            let errno = match self.create(path, &argv, &envp, stdio, placement) {
                Ok(pid) => return Ok(pid),
                Err(Failure::Exec(Errno::ENOEXEC)) => {
                    let script = null_terminated(
                        [c"/bin/sh", path.as_c_str()]
                            .into_iter()
                            .chain(self.args.iter().skip(1).map(CString::as_c_str)),
                    );
                    match self.create(c"/bin/sh", &script, &envp, stdio, placement) {
                        Ok(pid) => return Ok(pid),
                        Err(Failure::Exec(errno)) => errno,
                        Err(other) => return Err(other),
                    }
                }
                Err(Failure::Exec(errno)) => errno,
                Err(other) => return Err(other),
            };
            if !self.search {
                return Err(Failure::Exec(errno));
            }
            match errno {
                Errno::EACCES => denied = true,
                Errno::ENOENT
                | Errno::ESTALE
                | Errno::ENOTDIR
                | Errno::ENODEV
                | Errno::ETIMEDOUT => {}
                _ => return Err(Failure::Exec(errno)),
            }
        }
        Err(Failure::Exec(if denied {
            Errno::EACCES
        } else {
            Errno::ENOENT
        }))
    }

    /// access(2) `X_OK` on a candidate, relative to the child's working directory.
    fn executable(&self, path: &CStr) -> nix::Result<()> {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
        match &self.cwd {
            Some(cwd) if path.is_relative() => {
                let cwd = std::path::Path::new(std::ffi::OsStr::from_bytes(cwd.to_bytes()));
                nix::unistd::access(&cwd.join(path), nix::unistd::AccessFlags::X_OK)
            }
            _ => nix::unistd::access(path, nix::unistd::AccessFlags::X_OK),
        }
    }

    /// Creates the child running `path` with `argv` and `envp`: posix_spawn(3), or the cgroup
    /// child for a placement in a cgroup.
    fn create(
        &self,
        path: &CStr,
        argv: &[*const c_char],
        envp: &[*const c_char],
        stdio: ChildStdio<'_>,
        placement: SpawnPlacement<'_>,
    ) -> Result<Pid, Failure> {
        if placement.cgroup_procs.is_none() && placement.cgroup_dir.is_none() {
            return rlimit::with_original_limit(|| {
                posix_spawn(path, argv, envp, stdio, self.cwd.as_deref())
            })
            .map_err(|err| match err.raw_os_error() {
                Some(errno) => Failure::Exec(Errno::from_raw(errno)),
                None => Failure::Os(err),
            });
        }
        let exec = cgroup_child::Exec {
            path,
            argv,
            envp,
            stdio: stdio.fds,
            controlling_terminal: stdio.terminal.is_some(),
            cwd: self.cwd.as_deref(),
            cgroup_dir: placement.cgroup_dir.map_or(-1, |fd| fd.as_raw_fd()),
            cgroup_procs: placement.cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
            last_signal: last_signal(),
            fd_limit: child_fd_limit(),
        };
        cgroup_child::spawn(&exec).map_err(|err| match err {
            cgroup_child::Error::Child(cgroup_child::Step::Exec, errno) => Failure::Exec(errno),
            cgroup_child::Error::Child(step, errno) => Failure::Step(step, errno),
            cgroup_child::Error::Create(err) => Failure::Os(err),
            cgroup_child::Error::Vanished => Failure::Vanished,
        })
    }
}

impl Failure {
    fn describe(self, spec: &SpawnSpec) -> String {
        let program = &spec.program;
        let cwd = spec.cwd.as_deref().unwrap_or(".");
        match self {
            // The working directory may have gone since it was checked: posix_spawn(3) reports
            // its chdir's ENOENT like an exec's.
            Self::Exec(errno) => match spec.cwd.as_deref().map(check_cwd) {
                Some(Err(message)) => message,
                _ => describe_spawn_error(program, &errno.into()),
            },
            Self::Step(cgroup_child::Step::Chdir, errno) => match check_cwd(cwd) {
                Err(message) => message,
                Ok(()) => format!(
                    "cannot use working directory {cwd:?}: {}",
                    io::Error::from(errno)
                ),
            },
            Self::Step(step, errno) => {
                format!(
                    "cannot start {program:?}: {step}: {}",
                    io::Error::from(errno)
                )
            }
            Self::Os(err) => describe_spawn_error(program, &err),
            Self::Vanished => {
                format!("cannot start {program:?}: the new process ended before it could exec")
            }
        }
    }
}

/// posix_spawn(3) of `path` as the leader of a new session, with default dispositions for
/// every signal, an empty signal mask, `stdio` on 0, 1 and 2, every other descriptor closed,
/// in `cwd`. For a terminal, the slave is opened by its path onto 0 (without `O_NOCTTY`:
/// glibc applies `POSIX_SPAWN_SETSID` before the file actions, so the new session's leader,
/// which has no controlling terminal, acquires it, as credentials(7) says), then dup'd onto 1
/// and 2. The error is the errno of whichever step failed in the child (glibc reports
/// them all, the exec's included, and reaps the failed child).
fn posix_spawn(
    path: &CStr,
    argv: &[*const c_char],
    envp: &[*const c_char],
    stdio: ChildStdio<'_>,
    cwd: Option<&CStr>,
) -> io::Result<Pid> {
    let mut attr = SpawnAttr::new()?;
    let mut actions = FileActions::new()?;
    let flags = libc::POSIX_SPAWN_SETSID
        | libc::c_short::try_from(libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK)
            .map_err(|_| io::Error::from(Errno::EINVAL))?;
    // SAFETY (this block): each call gets an initialised object of its type and pointers to
    // valid, NUL-terminated strings; the arrays are NULL-terminated. glibc copies what it
    // keeps (the chdir path). posix_spawn(3) returns once the child has exec'd or failed.
    unsafe {
        check(libc::posix_spawnattr_setflags(attr.as_ptr(), flags))?;
        check(libc::posix_spawnattr_setsigdefault(
            attr.as_ptr(),
            SigSet::all().as_ref(),
        ))?;
        check(libc::posix_spawnattr_setsigmask(
            attr.as_ptr(),
            SigSet::empty().as_ref(),
        ))?;
        if let Some(terminal) = stdio.terminal {
            check(libc::posix_spawn_file_actions_addopen(
                actions.as_ptr(),
                0,
                terminal.as_ptr(),
                libc::O_RDWR,
                0,
            ))?;
            for target in [1, 2] {
                check(libc::posix_spawn_file_actions_adddup2(
                    actions.as_ptr(),
                    0,
                    target,
                ))?;
            }
        } else {
            for (target, source) in (0..).zip(stdio.fds) {
                check(libc::posix_spawn_file_actions_adddup2(
                    actions.as_ptr(),
                    source,
                    target,
                ))?;
            }
        }
        check(libc::posix_spawn_file_actions_addclosefrom_np(
            actions.as_ptr(),
            3,
        ))?;
        if let Some(cwd) = cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(
                actions.as_ptr(),
                cwd.as_ptr(),
            ))?;
        }
        let mut pid = 0;
        check(libc::posix_spawn(
            &raw mut pid,
            path.as_ptr(),
            actions.as_ptr(),
            attr.as_ptr(),
            argv.as_ptr().cast(),
            envp.as_ptr().cast(),
        ))?;
        Ok(Pid::from_raw(pid))
    }
}

/// A posix_spawn(3) function's result: 0, or the errno it returns.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// An initialised `posix_spawnattr_t`, destroyed on drop; boxed so that it never moves.
struct SpawnAttr(Box<libc::posix_spawnattr_t>);

impl SpawnAttr {
    fn new() -> io::Result<Self> {
        // SAFETY: plain data, initialised by posix_spawnattr_init(3) before any other use.
        let mut attr: Box<libc::posix_spawnattr_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: a valid pointer to an uninitialised attribute object.
        check(unsafe { libc::posix_spawnattr_init(&raw mut *attr) })?;
        Ok(Self(attr))
    }

    fn as_ptr(&mut self) -> *mut libc::posix_spawnattr_t {
        &raw mut *self.0
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(self.as_ptr()) };
    }
}

/// An initialised `posix_spawn_file_actions_t`, destroyed on drop; boxed so that it never
/// moves.
struct FileActions(Box<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: plain data, initialised by posix_spawn_file_actions_init(3) before any use.
        let mut actions: Box<libc::posix_spawn_file_actions_t> =
            Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: a valid pointer to an uninitialised file actions object.
        check(unsafe { libc::posix_spawn_file_actions_init(&raw mut *actions) })?;
        Ok(Self(actions))
    }

    fn as_ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
        &raw mut *self.0
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe { libc::posix_spawn_file_actions_destroy(self.as_ptr()) };
    }
}

/// Bounds the last-resort descriptor loop in the cgroup child: the raised soft limit (the hard
/// one) when the server raised it, since the child runs with the original one lowered back
/// while the server may hold descriptors above it.
fn child_fd_limit() -> libc::c_int {
    rlimit::original().map_or_else(fd::fd_limit, |(_, hard)| {
        libc::c_int::try_from(hard).unwrap_or(libc::c_int::MAX)
    })
}

/// The highest signal number: `SIGRTMAX` where there are real-time signals.
fn last_signal() -> libc::c_int {
    libc::SIGRTMAX()
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
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        Ok(fd)
    } else {
        fd.try_clone()
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
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::os::fd::{AsFd as _, FromRawFd as _};
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
        let stderr = child.stderr.expect("stderr piped");
        let reader = std::thread::spawn(move || read_all(stderr));
        let stdout = read_all(child.stdout.expect("stdout piped"));
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
        piped.stdio = Stdio::Pipes {
            stdin: StdinMode::Piped,
        };
        let child = spawn(&piped).expect("spawn");
        assert!(child.stdin.is_some());
        let out = read_all(child.stdout.expect("stdout piped"));
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
        let mut stdout = BufReader::new(child.stdout.expect("stdout piped"));
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

    /// A cgroup of this test process's own to start tasks in, removed on drop; `None` (with a
    /// note on stdout) where cgroup v2 cannot be managed here.
    struct TestCgroup {
        cgroup: crate::cgroup::Cgroup,
        dir: OwnedFd,
        procs: OwnedFd,
        suffix: String,
    }

    impl TestCgroup {
        fn new(name: &str) -> Option<Self> {
            let cgroups = match crate::cgroup::detect() {
                Ok(cgroups) => cgroups,
                Err(reason) => {
                    println!("skipped: {reason}");
                    return None;
                }
            };
            let me = crate::tree::Instance::current().expect("our instance");
            // Not a server's name: nothing else here may take it for stale and remove it.
            let name = format!("{name}-{}", me.pid);
            let mut users = TEST_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
            *users += 1;
            let cgroup = cgroups
                .create_server(&me)
                .and_then(|server| server.create_child(&name))
                .expect("cgroup");
            let dir = cgroup.open_dir().expect("directory");
            let procs = cgroup.open_procs().expect("cgroup.procs");
            Some(Self {
                cgroup,
                dir,
                procs,
                suffix: format!("/{name}"),
            })
        }

        /// Born there (clone3 `CLONE_INTO_CGROUP`).
        fn born(&self) -> SpawnPlacement<'_> {
            SpawnPlacement::in_cgroup_dir(self.dir.as_fd(), self.procs.as_fd())
        }

        /// Moved there by the child before exec.
        fn moved(&self) -> SpawnPlacement<'_> {
            SpawnPlacement::in_cgroup(self.procs.as_fd())
        }

        /// Whether `/proc/<pid>/cgroup` output names this cgroup.
        fn holds(&self, proc_cgroup: &str) -> bool {
            proc_cgroup
                .lines()
                .any(|line| line.starts_with("0::") && line.ends_with(&self.suffix))
        }
    }

    /// How many [`TestCgroup`]s exist: the last one removes the server cgroup they share,
    /// which no test may remove while another is creating its own in it.
    static TEST_CGROUPS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let mut users = TEST_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
            *users -= 1;
            let _ = self.cgroup.remove();
            if *users == 0
                && let Some(server) = self.cgroup.path().parent()
            {
                let _ = crate::cgroup::Cgroup::at(server).remove();
            }
        }
    }

    /// [`run`] placed as `placement` says.
    fn run_placed(spec: &SpawnSpec, placement: SpawnPlacement<'_>) -> (String, String, ExitStatus) {
        let child = spawn_placed(spec, placement).expect("spawn");
        let stderr = child.stderr.expect("stderr piped");
        let reader = std::thread::spawn(move || read_all(stderr));
        let stdout = read_all(child.stdout.expect("stdout piped"));
        let stderr = reader.join().expect("stderr reader");
        let status = wait_exited(child.pid);
        reap(child.pid).expect("reap");
        (stdout, stderr, status)
    }

    /// The promises of `spawn_placed`, checked for one placement: session, environment,
    /// working directory, descriptors, signals, `#!`-less scripts and the errors.
    fn keeps_the_promises(placement: SpawnPlacement<'_>) -> String {
        let leaked = Leaked::new();
        // SAFETY: SIG_IGN is a valid disposition; nothing in the tests relies on SIGHUP.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let mut script = sh(
            "echo \"$GREETING\"; pwd; ls /proc/self/fd; ps -o sid= -p $$; \
             grep -E '^Sig(Blk|Ign)' /proc/self/status; cat /proc/self/cgroup; exit 4",
        );
        script.env = vec![("GREETING".to_owned(), "placed".to_owned())];
        script.cwd = Some("/tmp".to_owned());
        let child = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // Whatever the spawning thread blocks, the task gets nothing blocked.
                    let mut blocked = nix::sys::signal::SigSet::empty();
                    blocked.add(nix::sys::signal::Signal::SIGTERM);
                    blocked.thread_block().expect("block");
                    spawn_placed(&script, placement)
                })
                .join()
                .expect("thread")
        })
        .expect("spawn");
        let out = read_all(child.stdout.expect("stdout piped"));
        assert_eq!(wait_exited(child.pid), ExitStatus::Code(4));
        reap(child.pid).expect("reap");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // `ls` lists 0, 1, 2 and its own directory descriptor, never `leaked`.
        let sid = child.pid.to_string();
        assert_eq!(
            lines.get(..7),
            Some(&["placed", "/tmp", "0", "1", "2", "3", sid.as_str()][..]),
            "fd {}: {out}",
            leaked.0
        );
        let glibc_internal = (1 << 31) | (1 << 32);
        for line in lines.iter().filter(|line| line.starts_with("Sig")) {
            let (name, hex) = line.split_once(":\t").expect("status line");
            let mask = u64::from_str_radix(hex, 16).expect("hex mask");
            assert_eq!(mask & !glibc_internal, 0, "{name}: {mask:#x}\n{out}");
        }

        let err = spawn_placed(&spec("no-such-command-7f3a", &[]), placement).expect_err("missing");
        assert_eq!(
            err,
            "command not found: \"no-such-command-7f3a\" is not in PATH"
        );
        let err = spawn_placed(&spec("/etc/passwd", &[]), placement).expect_err("not executable");
        assert!(err.contains("permission denied"), "{err}");
        let err = spawn_placed(&spec("/nonexistent/prog", &[]), placement).expect_err("missing");
        assert!(
            err.starts_with("cannot start \"/nonexistent/prog\": no such file"),
            "{err}"
        );

        // A file without `#!` runs with /bin/sh, arguments and all.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("proc-os-noexec-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let tool = dir.join("tool");
        std::fs::write(&tool, "echo \"script $1\"\n").expect("write");
        let perms = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&tool, perms).expect("chmod");
        let (out, _, status) = run_placed(&spec(&tool.display().to_string(), &["ran"]), placement);
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(
            (out.as_str(), status),
            ("script ran\n", ExitStatus::Code(0))
        );
        lines.iter().skip(7).copied().collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn posix_spawn_keeps_the_promises() {
        let rest = keeps_the_promises(SpawnPlacement::default());
        assert!(rest.lines().any(|line| line.starts_with("0::")), "{rest}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_removed_cgroup_fails_the_spawn_at_the_cgroup_step_and_nothing_else() {
        let Some(removed) = TestCgroup::new("spawn-removed") else {
            return;
        };
        let Some(live) = TestCgroup::new("spawn-live") else {
            return;
        };
        removed.cgroup.remove().expect("rmdir");
        for placement in [removed.born(), removed.moved()] {
            let err = spawn_placed(&spec("true", &[]), placement).expect_err("no cgroup");
            assert!(
                err.starts_with(
                    "cannot start \"true\": moving into its cgroup (writing cgroup.procs): "
                ),
                "{err}"
            );
        }
        // Not taken for a kernel that cannot clone3 CLONE_VM: spawns go on as before.
        #[cfg(vm_child)]
        assert!(!cgroup_child::vm_refused());
        let (out, _, status) = run_placed(&sh("cat /proc/self/cgroup"), live.born());
        assert_eq!(status, ExitStatus::Code(0));
        assert!(live.holds(&out), "{out}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_forked_cgroup_child_keeps_the_same_promises_born_or_moved() {
        let Some(cgroup) = TestCgroup::new("spawn-forked") else {
            return;
        };
        use std::sync::atomic::Ordering::Relaxed;
        cgroup_child::FORCE_FORK.store(true, Relaxed);
        let outputs = [cgroup.born(), cgroup.moved()].map(keeps_the_promises);
        cgroup_child::FORCE_FORK.store(false, Relaxed);
        for rest in outputs {
            assert!(cgroup.holds(&rest), "{rest}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_cgroup_child_keeps_the_same_promises_born_or_moved() {
        let Some(cgroup) = TestCgroup::new("spawn-promises") else {
            return;
        };
        for placement in [cgroup.born(), cgroup.moved()] {
            let rest = keeps_the_promises(placement);
            assert!(cgroup.holds(&rest), "{rest}");
        }
    }

    #[test]
    fn a_working_directory_removed_after_the_check_is_reported_as_such() {
        let cgroup = TestCgroup::new("spawn-chdir");
        // Checked before spawning, so only a directory that goes away meanwhile reaches the
        // child's chdir, on either path.
        let dir = std::env::temp_dir().join(format!("proc-os-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut in_dir = spec("true", &[]);
        in_dir.cwd = Some(dir.display().to_string());
        let exec = Command::new(&in_dir).expect("prepared");
        std::fs::remove_dir(&dir).expect("rmdir");
        let null = dev_null().expect("/dev/null");
        let stdio = ChildStdio {
            fds: [null.as_raw_fd(); 3],
            terminal: None,
        };
        let placements = [
            Some(SpawnPlacement::default()),
            cgroup.as_ref().map(TestCgroup::born),
        ];
        for placement in placements.into_iter().flatten() {
            let failure = exec
                .start(stdio, placement)
                .expect_err("no working directory");
            assert_eq!(
                failure.describe(&in_dir),
                format!(
                    "working directory {:?} does not exist",
                    dir.display().to_string()
                )
            );
        }
    }

    #[test]
    fn the_child_starts_with_an_empty_signal_mask() {
        // Whatever this thread blocks, the task gets nothing blocked (nor ignored).
        let run_blocked = || {
            let mut blocked = nix::sys::signal::SigSet::empty();
            blocked.add(nix::sys::signal::Signal::SIGTERM);
            blocked.add(nix::sys::signal::Signal::SIGUSR1);
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

    /// No parent-death signal: a task lives on when the thread that spawned it ends (the
    /// watchdog, not the spawning thread, ends tasks when the server dies).
    #[test]
    fn a_task_outlives_the_thread_that_spawned_it() {
        let (pid, tid) = std::thread::spawn(|| {
            let child = spawn(&spec("sleep", &["1000"])).expect("spawn");
            (child.pid, nix::unistd::gettid())
        })
        .join()
        .expect("spawning thread");
        // Until the thread's exit is complete: a parent-death signal would have been sent by
        // then (exit_notify sends it before it notifies a thread's pidfd). PIDFD_THREAD
        // (O_EXCL, Linux 6.9) makes a pidfd of a thread; ESRCH: gone already.
        // SAFETY: pidfd_open takes a tid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid.as_raw(), libc::O_EXCL) };
        if let Ok(fd) = i32::try_from(fd)
            && fd >= 0
        {
            // SAFETY: a descriptor pidfd_open just returned, owned here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut pollfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut pollfd, 1, 10_000) };
            assert_eq!(ready, 1, "the spawning thread did not finish exiting");
        } else {
            assert_eq!(
                Errno::last(),
                Errno::ESRCH,
                "pidfd_open of the spawning thread"
            );
        }
        // A pending SIGKILL would win over this SIGTERM.
        signal_group(pid, Signal::Term).expect("killpg");
        assert_eq!(wait_exited(pid), ExitStatus::Signaled(Signal::Term));
        reap(pid).expect("reap");
    }

    #[test]
    fn only_stdin_stdout_and_stderr_reach_the_child() {
        let leaked = Leaked::new();
        // Looked at once it has printed: while a program starts, the dynamic loader briefly
        // holds descriptors of its own. (`exit` keeps the shell from exec'ing `sleep`.)
        let mut piped = sh("echo ready; sleep 1000; exit");
        piped.stdio = Stdio::Pipes {
            stdin: StdinMode::Piped,
        };
        let child = spawn(&piped).expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.expect("stdout piped"))
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

    /// Set for the copy of this test binary that runs [`low_descriptors_in_a_fresh_process`].
    const LOW_FDS: &str = "PROC_OS_SPAWN_LOW_FDS";

    /// With the server's stdin closed, a new pipe can be descriptor 0, which the child's dup2
    /// onto 0 would clobber: checked in a copy of this test binary, where closing 0 disturbs
    /// no other test.
    #[test]
    fn pipes_that_land_on_0_1_or_2_are_moved_up() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "process::tests::low_descriptors_in_a_fresh_process",
                "--nocapture",
            ])
            .env(LOW_FDS, "1")
            .stdin(std::process::Stdio::null())
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
        if std::env::var_os(LOW_FDS).is_none() {
            return;
        }
        // SAFETY: this copy runs this test only, and nothing in it reads stdin.
        assert_eq!(unsafe { libc::close(0) }, 0);
        let mut piped = sh("cat; echo out; echo err >&2");
        piped.stdio = Stdio::Pipes {
            stdin: StdinMode::Piped,
        };
        let child = spawn(&piped).expect("spawn");
        let mut stdin = child.stdin.expect("piped");
        stdin.write_all(b"in\n").expect("write");
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.expect("stdout piped");
        stdout.read_to_string(&mut out).expect("read");
        let mut stderr = child.stderr.expect("stderr piped");
        stderr.read_to_string(&mut err).expect("read");
        assert_eq!(wait_exited(child.pid), ExitStatus::Code(0));
        reap(child.pid).expect("reap");
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
            ("PROC_OS_SPAWN_B".to_owned(), "2".to_owned()),
            ("PATH".to_owned(), "/nowhere".to_owned()),
            ("PROC_OS_SPAWN_A".to_owned(), "1".to_owned()),
            ("PROC_OS_SPAWN_A".to_owned(), "3".to_owned()),
        ];
        let (env, path) = environment(&overrides).expect("environment");
        assert_eq!(path.as_deref(), Some(&b"/nowhere"[..]));
        let ours: Vec<&[u8]> = env
            .iter()
            .map(|e| e.as_bytes())
            .filter(|e| e.starts_with(b"PROC_OS_SPAWN_") || e.starts_with(b"PATH="))
            .collect();
        assert_eq!(
            ours,
            [
                &b"PATH=/nowhere"[..],
                b"PROC_OS_SPAWN_A=3",
                b"PROC_OS_SPAWN_B=2"
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
    fn an_empty_program_or_a_directory_is_not_started() {
        let err = spawn(&spec("", &[])).expect_err("empty");
        assert_eq!(err, "command not found: \"\" is not in PATH");
        let err = spawn(&spec("/", &[])).expect_err("a directory");
        assert!(err.contains("permission denied"), "{err}");
    }

    /// `spec` on a terminal of `rows` x `cols`.
    fn on_terminal(mut spec: SpawnSpec, rows: u16, cols: u16) -> SpawnSpec {
        spec.stdio = Stdio::Terminal(WindowSize { rows, cols });
        spec
    }

    /// Everything written to the terminal whose master is `master` until no process holds its
    /// slave open (`EIO`).
    fn read_terminal(master: OwnedFd) -> String {
        let mut file = std::fs::File::from(master);
        let mut bytes = Vec::new();
        read_terminal_until(&mut file, &mut bytes, |_| false);
        String::from_utf8(bytes).expect("utf-8")
    }

    /// Reads the terminal whose master is `master` into `bytes` until `done(bytes)` or until no
    /// process holds its slave open (`EIO`: returns true). The master is non-blocking, so
    /// poll(2) waits (bounded).
    fn read_terminal_until(
        master: &mut std::fs::File,
        bytes: &mut Vec<u8>,
        done: impl Fn(&[u8]) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + crate::testutil::CHILD_TIMEOUT;
        let mut buf = [0_u8; 4096];
        while !done(bytes) {
            match master.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(err) if err.raw_os_error() == Some(libc::EIO) => return true,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let mut pollfd = libc::pollfd {
                        fd: master.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
                    // SAFETY: one valid pollfd.
                    let ready = unsafe { libc::poll(&raw mut pollfd, 1, ms) };
                    assert!(ready != 0, "nothing more on the terminal: {bytes:?}");
                }
                Err(err) => panic!("reading the terminal: {err}"),
            }
        }
        false
    }

    /// Runs `spec` on a terminal to completion, placed as `placement` says: (what it wrote to
    /// the terminal, status); reaps it.
    fn run_on_terminal(spec: &SpawnSpec, placement: SpawnPlacement<'_>) -> (String, ExitStatus) {
        let child = spawn_placed(spec, placement).expect("spawn");
        assert!(child.stdin.is_none() && child.stdout.is_none() && child.stderr.is_none());
        let master = child.terminal.expect("a terminal");
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL");
        assert_ne!(flags & libc::O_NONBLOCK, 0, "the master is non-blocking");
        let fd_flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
        assert_ne!(
            fd_flags & libc::FD_CLOEXEC,
            0,
            "the master is close-on-exec"
        );
        let out = read_terminal(master);
        let status = wait_exited(child.pid);
        reap(child.pid).expect("reap");
        (out, status)
    }

    /// Python reporting on its terminal: whether 0, 1 and 2 are terminals; whether they are
    /// one terminal, the controlling terminal of the task's session (`/dev/tty` opens, the
    /// task's group is its foreground group, the task leads its session); and the size.
    const TERMINAL_REPORT: &str = "import os, sys\n\
        print(sys.stdin.isatty(), sys.stdout.isatty(), sys.stderr.isatty())\n\
        print(os.ttyname(0) == os.ttyname(1) == os.ttyname(2), \
              os.tcgetpgrp(0) == os.getpgrp() == os.getsid(0) == os.getpid(), \
              open('/dev/tty').isatty())\n\
        sys.stdout.flush(); os.system('stty size; ps -o tty= -p $PPID')";

    /// Checks what [`TERMINAL_REPORT`] wrote on a 40 x 120 terminal.
    fn check_terminal_report(out: &str, status: ExitStatus) {
        assert_eq!(status, ExitStatus::Code(0), "{out:?}");
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines.len(), 5, "CRLF line endings (ONLCR): {out:?}");
        assert_eq!(
            lines[..3],
            ["True True True", "True True True", "40 120"],
            "{out:?}"
        );
        assert!(
            lines[3].trim().starts_with("pts/"),
            "ps names the terminal: {out:?}"
        );
        assert_eq!(lines[4], "");
    }

    #[test]
    fn a_terminal_is_stdin_stdout_stderr_and_the_controlling_terminal() {
        let spec = on_terminal(spec("python3", &["-c", TERMINAL_REPORT]), 40, 120);
        let (out, status) = run_on_terminal(&spec, SpawnPlacement::default());
        check_terminal_report(&out, status);
    }

    #[test]
    fn a_terminal_task_is_its_own_session_and_process_group() {
        let child = spawn(&on_terminal(sh("echo ready; sleep 1000; exit"), 24, 80)).expect("spawn");
        let mut master = std::fs::File::from(child.terminal.expect("terminal"));
        let mut out = Vec::new();
        let eof = read_terminal_until(&mut master, &mut out, |out| out.ends_with(b"\n"));
        assert!(!eof);
        assert_eq!(out, b"ready\r\n");
        let pid = child.pid.as_raw();
        let theirs = stat(pid).expect("child stat");
        assert_eq!((theirs.pgrp, theirs.session), (pid, pid));
        // Only 0, 1 and 2 reach it, all the terminal.
        let sleeper = group_members(pid)
            .into_iter()
            .find(|&(member, _)| member != pid)
            .map_or(pid, |(member, _)| member);
        assert_eq!(open_fds(sleeper), vec![0, 1, 2]);
        signal_group(child.pid, Signal::Kill).expect("killpg");
        assert_eq!(wait_exited(child.pid), ExitStatus::Signaled(Signal::Kill));
        // Nothing holds the slave any more: EIO, the terminal's end-of-file.
        out.clear();
        assert!(read_terminal_until(&mut master, &mut out, |_| false));
        assert_eq!(out, b"");
        reap(child.pid).expect("reap");
    }

    #[test]
    fn the_window_size_can_be_set_on_the_master() {
        let (master, slave) = {
            let terminal = Terminal::open(WindowSize { rows: 5, cols: 7 }).expect("openpty");
            (terminal.master, terminal.slave)
        };
        let get = || {
            // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
            let mut size: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes one winsize through the pointer.
            let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &raw mut size) };
            assert_eq!(rc, 0);
            (size.ws_row, size.ws_col)
        };
        assert_eq!(get(), (5, 7));
        set_window_size(
            master.as_fd(),
            WindowSize {
                rows: 30,
                cols: 100,
            },
        )
        .expect("resize");
        assert_eq!(get(), (30, 100));
        let null = dev_null().expect("/dev/null");
        let err = set_window_size(null.as_fd(), WindowSize { rows: 1, cols: 1 })
            .expect_err("not a terminal");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_cgroup_child_starts_terminals_too_born_moved_or_forked() {
        let Some(cgroup) = TestCgroup::new("spawn-terminal") else {
            return;
        };
        let spec = on_terminal(spec("python3", &["-c", TERMINAL_REPORT]), 40, 120);
        for placement in [cgroup.born(), cgroup.moved()] {
            let (out, status) = run_on_terminal(&spec, placement);
            check_terminal_report(&out, status);
        }
        use std::sync::atomic::Ordering::Relaxed;
        cgroup_child::FORCE_FORK.store(true, Relaxed);
        let forked = run_on_terminal(&spec, cgroup.born());
        cgroup_child::FORCE_FORK.store(false, Relaxed);
        check_terminal_report(&forked.0, forked.1);
    }

    /// A file without `#!` is run with `/bin/sh` after a first, failed exec: the second child
    /// still gets the terminal as its controlling terminal (the first one's session, which
    /// had it, ended when glibc or the cgroup child reaped it).
    #[test]
    fn a_script_without_a_shebang_gets_its_terminal_on_the_second_try() {
        let dir = std::env::temp_dir().join(format!("proc-os-tty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let script = dir.join("no-shebang");
        std::fs::write(&script, "exec 3</dev/tty && echo controlling; stty size\n").expect("write");
        let perms = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&script, perms).expect("chmod");
        let spec = on_terminal(spec(&script.display().to_string(), &[]), 12, 34);
        let cgroup = TestCgroup::new("spawn-terminal-retry");
        let placements = [
            Some(SpawnPlacement::default()),
            cgroup.as_ref().map(TestCgroup::born),
        ];
        for placement in placements.into_iter().flatten() {
            let (out, status) = run_on_terminal(&spec, placement);
            assert_eq!(
                (out.as_str(), status),
                ("controlling\r\n12 34\r\n", ExitStatus::Code(0))
            );
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}

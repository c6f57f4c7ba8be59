//! Everything a task spawns, wherever it went: an inherited tag to find a task's descendants
//! after they left its process group (a daemon that called setsid(2), a double fork), pidfds to
//! signal them without hitting a reused pid, and the subreaper role that makes the server the
//! parent of its tasks' orphans. Linux only (`/proc`, pidfd_open(2), prctl(2)).
//!
//! - **Tags.** Every task gets the environment variable [`TAG_VAR`] =
//!   `<server pid>.<server start time>.<run id>` ([`Instance::tag`]); the environment is inherited
//!   across fork(2) and execve(2), so the task's descendants carry it too, setsid(2) or not. A
//!   [`Scanner`] finds them through `/proc/<pid>/environ` (proc(5)). An [`Instance`] is a
//!   server as one process incarnation: its pid *and* its start time (field 22 of
//!   `/proc/<pid>/stat`), so a reused pid is never taken for the server that died.
//! - **pidfds.** [`PidFd::open_verified`] opens a pidfd (pidfd_open(2), Linux 5.3) and checks that
//!   it refers to the process that was found (same start time); signals then go through the
//!   pidfd (pidfd_send_signal(2)), which can never reach a later process with the same pid.
//!   [`PidFd::exited`] waits for the exit asynchronously (the pidfd becomes readable).
//! - **Orphans.** With [`set_child_subreaper`] (prctl(2) `PR_SET_CHILD_SUBREAPER`) the processes
//!   orphaned by a task's exit are re-parented to the server instead of init; [`reap_orphans`]
//!   reaps those that have exited, never touching the children the caller keeps.
//!
//! What the tag cannot see: a process that cleared or rewrote its environment before exec'ing
//! (`env -i`, a daemon that scrubs its environment, a program that overwrites its environment
//! block for setproctitle), a process of another user (set-user-ID, or another real uid: not
//! scanned), and a process whose environment is not readable by us (not dumpable: ptrace(2)
//! access mode `PTRACE_MODE_READ_FSCREDS`).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

use memchr::memmem;
use nix::errno::Errno;
use proc_state::{ExitStatus, Signal};

use crate::signal::{signal_from_number, signal_number};

/// The environment variable that tags a task and everything it spawns:
/// `PROC_MCP_TAG=<server pid>.<server start time>.<run id>` (see [`Instance::tag`]).
pub const TAG_VAR: &str = "PROC_MCP_TAG";

/// `TAG_VAR=`, as it starts an entry of `/proc/<pid>/environ`.
const TAG_ENTRY: &[u8] = b"PROC_MCP_TAG=";

/// Characters of [`TaggedProcess::command`] at most (the last one is `…` when cut): the core's
/// bound for what it shows of an escaped process.
pub const COMMAND_CHARS: usize = proc_state::EscapedProcess::COMMAND_CHARS;

/// A server process as one incarnation: its pid and its start time, which together never
/// name another process (a reused pid has a later start time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    /// Its process id (in the pid namespace of whoever reads `/proc`).
    pub pid: i32,
    /// When it started: field 22 (`starttime`) of `/proc/<pid>/stat`, in clock ticks since
    /// boot (sysconf(3) `_SC_CLK_TCK` per second), proc(5).
    pub start_time: u64,
}

impl Instance {
    /// This process.
    ///
    /// # Errors
    /// `/proc/self/stat` cannot be read or parsed (no `/proc`).
    pub fn current() -> io::Result<Self> {
        Self::of(nix::unistd::getpid().as_raw())
    }

    /// The process `pid` as it is now.
    ///
    /// # Errors
    /// `NotFound` once it is gone; any error reading `/proc/<pid>/stat`.
    pub fn of(pid: i32) -> io::Result<Self> {
        let stat = read_stat(pid)?;
        Ok(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this instance still runs: a process with its pid exists, has its start time,
    /// and is not a zombie. `false` only when that is verified: a `/proc/<pid>/stat` that
    /// exists but cannot be read or parsed counts as alive, so nothing is ever cleaned up on a
    /// guess.
    pub fn is_alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match read_stat(self.pid) {
            Ok(stat) => stat.start_time == self.start_time && !stat.is_dead(),
            Err(err) => !matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)),
        }
    }

    /// The value of [`TAG_VAR`] for run `run` of this instance: `<pid>.<start time>.<run>`.
    pub fn tag(&self, run: u64) -> String {
        format!("{self}.{run}")
    }
}

/// `<pid>.<start time>`, as in the tag and on the watchdog's command line.
impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pid, self.start_time)
    }
}

/// Parses `<pid>.<start time>` (decimal, pid > 0), as [`Instance`]'s `Display` writes it.
impl FromStr for Instance {
    type Err = InvalidInstance;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (pid, start) = text.split_once('.').ok_or(InvalidInstance)?;
        match (decimal(pid), decimal(start)) {
            (Some(pid), Some(start_time)) if pid > 0 => Ok(Self { pid, start_time }),
            _ => Err(InvalidInstance),
        }
    }
}

/// Not `<pid>.<start time>` with decimal numbers and pid > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidInstance;

impl fmt::Display for InvalidInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected <pid>.<start time>")
    }
}

impl std::error::Error for InvalidInstance {}

/// The instance and run id of a [`TAG_VAR`] value `<pid>.<start time>.<run id>`; `None` for
/// anything else (all three decimal without sign, pid > 0, nothing around them).
pub fn parse_tag(value: &str) -> Option<(Instance, u64)> {
    let (instance, run) = value.rsplit_once('.')?;
    Some((instance.parse().ok()?, decimal(run)?))
}

/// Digits only (no sign, no spaces, not empty), as `T`.
fn decimal<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A live process carrying [`TAG_VAR`], as [`Scanner`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedProcess {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid (the server, a task, a subreaper, or 1 once orphaned).
    pub ppid: i32,
    /// Its process group id.
    pub pgid: i32,
    /// Its session id.
    pub session: i32,
    /// Its start time, in clock ticks since boot (see [`Instance::start_time`]).
    pub start_time: u64,
    /// The server instance its tag names.
    pub instance: Instance,
    /// The run id its tag names.
    pub run: u64,
    /// For people: its command line joined with spaces, at most [`COMMAND_CHARS`] characters;
    /// its command name (`comm`) when the command line is empty.
    pub command: String,
    /// Whether it is in the scanner's pid namespace: only then can its tag's server pid be
    /// checked by a process here (a server in another namespace has pids of its own).
    pub in_our_pid_ns: bool,
}

impl TaggedProcess {
    /// A pidfd for it, if it still is this process ([`PidFd::open_verified`]).
    ///
    /// # Errors
    /// As [`PidFd::open_verified`].
    pub fn open_pidfd(&self) -> io::Result<Option<PidFd>> {
        PidFd::open_verified(self.pid, self.start_time)
    }
}

/// Finds tagged processes through `/proc`, reusing its buffers from one scan to the next.
///
/// A scan lists `/proc` and reads `/proc/<pid>/environ` of every process (one open(2), read(2)
/// and close(2) each; a process of another user fails at open with `EACCES` unless we are
/// root, kernel threads and zombies have an empty one). Only for a tagged process does it go
/// on: it opens `/proc/<pid>` as a directory, which stays tied to that very process (if it
/// exits, files opened through it fail even when the pid is reused), reads the environment
/// again through it to confirm the tag, then `stat`, `status` (the real uid) and `cmdline`.
/// Processes that vanish or cannot be read meanwhile are skipped silently; so are processes
/// of another real uid, zombies, and the scanning process itself.
#[derive(Debug)]
pub struct Scanner {
    /// `/proc`, opened once.
    proc_dir: OwnedFd,
    /// Our real uid: only that user's processes are reported.
    uid: u32,
    /// Our pid: never reported.
    own_pid: i32,
    /// (device, inode) of our pid namespace (`/proc/self/ns/pid`), if it can be read.
    pid_ns: Option<(u64, u64)>,
    /// File contents, reused.
    buf: Vec<u8>,
    /// Paths relative to `/proc` being built, reused.
    path: Vec<u8>,
}

impl Scanner {
    /// A scanner for the processes of this process's real uid.
    ///
    /// # Errors
    /// `/proc` cannot be opened.
    pub fn new() -> io::Result<Self> {
        let proc_dir = open_at(
            None,
            c"/proc",
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )?;
        let pid_ns = pid_namespace(proc_dir.as_fd(), c"self/ns/pid");
        Ok(Self {
            proc_dir,
            // SAFETY: getuid(2) cannot fail.
            uid: unsafe { libc::getuid() },
            own_pid: nix::unistd::getpid().as_raw(),
            pid_ns,
            buf: Vec::with_capacity(8192),
            path: Vec::with_capacity(64),
        })
    }

    /// Every tagged process of ours (see [`Scanner`]) whose tag `want(instance, run)` accepts,
    /// in pid order. `want` is asked before anything else is read about the process, so a
    /// narrow filter keeps the scan cheap.
    pub fn scan(&mut self, want: impl FnMut(&Instance, u64) -> bool) -> Vec<TaggedProcess> {
        self.scan_where(|_| true, want)
    }

    /// [`Scanner::scan`] of only the processes `consider(pid)` accepts: the others are not
    /// read at all (a caller that knows some processes cannot be of interest, such as an
    /// inspection that has already placed them in a run's process group, saves reading their
    /// environment).
    pub fn scan_where(
        &mut self,
        mut consider: impl FnMut(i32) -> bool,
        mut want: impl FnMut(&Instance, u64) -> bool,
    ) -> Vec<TaggedProcess> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        let mut pids: Vec<i32> = entries
            .filter_map(|entry| decimal(entry.ok()?.file_name().to_str()?))
            .filter(|&pid| pid != self.own_pid && consider(pid))
            .collect();
        pids.sort_unstable();
        for pid in pids {
            if let Some(process) = self.inspect(pid, &mut want) {
                found.push(process);
            }
        }
        found
    }

    /// Every tagged process of ours, whatever its tag.
    pub fn scan_all(&mut self) -> Vec<TaggedProcess> {
        self.scan(|_, _| true)
    }

    /// Every tagged process of ours that belongs to `instance` (any run).
    pub fn scan_instance(&mut self, instance: &Instance) -> Vec<TaggedProcess> {
        self.scan(|theirs, _| theirs == instance)
    }

    /// Every tagged process of ours, in our pid namespace, whose instance is verified dead
    /// ([`Instance::is_alive`] is `false`: no such pid, another start time, or a zombie):
    /// what a server that was killed left behind. Each instance is checked once per scan.
    pub fn scan_stale(&mut self) -> Vec<TaggedProcess> {
        let mut alive: HashMap<Instance, bool> = HashMap::new();
        let mut found = self.scan(|instance, _| {
            !*alive
                .entry(*instance)
                .or_insert_with(|| instance.is_alive())
        });
        found.retain(|process| process.in_our_pid_ns);
        found
    }

    /// Reads what [`Scanner::scan`] reports about `pid`; `None` if it is not one to report.
    fn inspect(
        &mut self,
        pid: i32,
        want: &mut impl FnMut(&Instance, u64) -> bool,
    ) -> Option<TaggedProcess> {
        // The cheap test first, on every process: its environment, through /proc/<pid>/...
        let environ = self.open_relative(None, pid, Some("environ")).ok()?;
        read_all(environ, &mut self.buf).ok()?;
        let (instance, run) = find_tag(&self.buf)?;
        if !want(&instance, run) {
            return None;
        }
        // ...then everything through the directory, which names this process and no later one
        // with the same pid; the tag is read again to be sure it is this process's.
        let dir = self.open_relative(None, pid, None).ok()?;
        let environ = self
            .open_relative(Some(dir.as_fd()), pid, Some("environ"))
            .ok()?;
        read_all(environ, &mut self.buf).ok()?;
        if find_tag(&self.buf)? != (instance, run) {
            return None;
        }
        self.details(pid, dir, instance, run)
    }

    /// What [`Scanner::scan`] would report about `pid`, for a process known to belong to
    /// `instance`'s run `run` by other means (it is in the run's cgroup) whether or not it
    /// carries the tag (it may have cleared its environment). `None` if it is gone, a zombie,
    /// or another user's.
    pub fn describe(&mut self, pid: i32, instance: Instance, run: u64) -> Option<TaggedProcess> {
        if pid == self.own_pid {
            return None;
        }
        let dir = self.open_relative(None, pid, None).ok()?;
        self.details(pid, dir, instance, run)
    }

    /// The rest of a process's report, read through its `/proc/<pid>` directory `dir`.
    fn details(
        &mut self,
        pid: i32,
        dir: OwnedFd,
        instance: Instance,
        run: u64,
    ) -> Option<TaggedProcess> {
        let stat = self
            .open_relative(Some(dir.as_fd()), pid, Some("stat"))
            .ok()?;
        read_all(stat, &mut self.buf).ok()?;
        let stat = parse_stat(&self.buf)?;
        if stat.is_dead() {
            return None;
        }
        let comm = String::from_utf8_lossy(stat.comm).into_owned();
        let (ppid, pgid, session, start_time) =
            (stat.ppid, stat.pgrp, stat.session, stat.start_time);
        let status = self
            .open_relative(Some(dir.as_fd()), pid, Some("status"))
            .ok()?;
        read_all(status, &mut self.buf).ok()?;
        if real_uid(&self.buf)? != self.uid {
            return None;
        }
        let in_our_pid_ns =
            self.pid_ns.is_some() && pid_namespace(dir.as_fd(), c"ns/pid") == self.pid_ns;
        let cmdline = self.open_relative(Some(dir.as_fd()), pid, Some("cmdline"));
        let read = cmdline.and_then(|cmdline| read_all(cmdline, &mut self.buf));
        let command = command_line(if read.is_ok() { &self.buf } else { &[] }, &comm);
        Some(TaggedProcess {
            pid,
            ppid,
            pgid,
            session,
            start_time,
            instance,
            run,
            command,
            in_our_pid_ns,
        })
    }

    /// Opens `<pid>/<file>` under `/proc` (or `<file>` under `dir`, a `/proc/<pid>` directory);
    /// with no `file`, the directory `<pid>` itself (`O_PATH`).
    fn open_relative(
        &mut self,
        dir: Option<BorrowedFd<'_>>,
        pid: i32,
        file: Option<&str>,
    ) -> io::Result<OwnedFd> {
        use std::io::Write as _;
        self.path.clear();
        let (base, flags) = match (dir, file) {
            (Some(dir), Some(file)) => {
                self.path.extend_from_slice(file.as_bytes());
                (dir, libc::O_RDONLY)
            }
            (None, Some(file)) => {
                let _ = write!(self.path, "{pid}/{file}");
                (self.proc_dir.as_fd(), libc::O_RDONLY)
            }
            (_, None) => {
                let _ = write!(self.path, "{pid}");
                (self.proc_dir.as_fd(), libc::O_PATH | libc::O_DIRECTORY)
            }
        };
        self.path.push(0);
        let path = CStr::from_bytes_with_nul(&self.path)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        open_at(Some(base), path, flags | libc::O_CLOEXEC)
    }
}

/// openat(2) `path` relative to `dir` (or the working directory).
fn open_at(dir: Option<BorrowedFd<'_>>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let dirfd = dir.map_or(libc::AT_FDCWD, |dir| dir.as_raw_fd());
    // SAFETY: a NUL-terminated path; openat(2) returns a new descriptor or -1.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads all of `fd` into `buf` (cleared first, capacity kept).
fn read_all(fd: OwnedFd, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::from(fd).read_to_end(buf).map(drop)
}

/// (device, inode) of the namespace file `path` under `dir`: equal pairs are the same
/// namespace (namespaces(7)).
fn pid_namespace(dir: BorrowedFd<'_>, path: &CStr) -> Option<(u64, u64)> {
    // SAFETY: an all-zero struct stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid, writable struct stat.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr(), &raw mut st, 0) };
    (rc == 0).then_some((st.st_dev, st.st_ino))
}

/// The instance and run of the first `PROC_MCP_TAG=` entry in an environment block (entries
/// separated by NUL, as in `/proc/<pid>/environ`), as getenv(3) would find it.
fn find_tag(environ: &[u8]) -> Option<(Instance, u64)> {
    let at_entry_start = |&at: &usize| at == 0 || environ[at - 1] == 0;
    let start = memmem::find_iter(environ, TAG_ENTRY).find(at_entry_start)? + TAG_ENTRY.len();
    let value = &environ[start..];
    let value = &value[..memchr::memchr(0, value).unwrap_or(value.len())];
    parse_tag(std::str::from_utf8(value).ok()?)
}

/// The fields of `/proc/<pid>/stat` used here (proc(5)).
#[derive(Clone, Copy, Debug)]
struct ProcStat<'a> {
    /// Field 2 without its parentheses.
    comm: &'a [u8],
    /// Field 3: `R`, `S`, `Z`...
    state: u8,
    /// Field 4.
    ppid: i32,
    /// Field 5.
    pgrp: i32,
    /// Field 6.
    session: i32,
    /// Field 22.
    start_time: u64,
}

impl ProcStat<'_> {
    /// A zombie (`Z`) or dead (`X`, `x`) process: it has exited.
    fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may contain anything,
/// spaces and parentheses included: the fields that follow start after the *last* `)`.
fn parse_stat(text: &[u8]) -> Option<ProcStat<'_>> {
    let open = memchr::memchr(b'(', text)?;
    let close = memchr::memrchr(b')', text)?;
    let comm = text.get(open + 1..close)?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    // Fields 3, 4, ... from here: field n is at index n - 3.
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let start_time = fields.nth(22 - 7)?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        ppid,
        pgrp,
        session,
        start_time,
    })
}

/// The start time and state of `pid`, from `/proc/<pid>/stat`.
fn read_stat(pid: i32) -> io::Result<OwnedStat> {
    let text = std::fs::read(format!("/proc/{pid}/stat"))?;
    let stat = parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat"))?;
    Ok(OwnedStat {
        state: stat.state,
        start_time: stat.start_time,
    })
}

/// What [`read_stat`] keeps.
#[derive(Clone, Copy, Debug)]
struct OwnedStat {
    state: u8,
    start_time: u64,
}

impl OwnedStat {
    fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// The real uid: the first number of the `Uid:` line of `/proc/<pid>/status`.
fn real_uid(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// A command line for people: `cmdline`'s NUL-separated arguments joined with spaces, control
/// characters shown as `?`, cut to [`COMMAND_CHARS`] characters (ending in `…` when cut);
/// `comm` when `cmdline` is empty (kernel threads, and processes that cleared their arguments).
fn command_line(cmdline: &[u8], comm: &str) -> String {
    let end = cmdline
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    let text = if end == 0 {
        std::borrow::Cow::Borrowed(comm)
    } else {
        String::from_utf8_lossy(&cmdline[..end])
    };
    let mut command = String::with_capacity(text.len().min(COMMAND_CHARS * 2));
    for (count, c) in text.chars().enumerate() {
        if count + 1 == COMMAND_CHARS && text.chars().nth(COMMAND_CHARS).is_some() {
            command.push('…');
            break;
        }
        command.push(match c {
            '\0' => ' ',
            c if c.is_control() => '?',
            c => c,
        });
    }
    command
}

/// A pidfd (pidfd_open(2), Linux 5.3): a handle on one process that stays on it, so signals
/// sent through it never reach a later process that got the same pid. Close-on-exec.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// A pidfd for process `pid` (a thread-group leader), whatever it is.
    ///
    /// # Errors
    /// `ESRCH`: no such process; `EINVAL`: `pid` is not a process (a thread); `ENOSYS` before
    /// Linux 5.3; `EMFILE`.
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: a new descriptor (close-on-exec: pidfd_open sets O_CLOEXEC), owned by nothing
        // else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pid,
        })
    }

    /// A pidfd for process `pid` if it still is the process that started at `start_time`
    /// (clock ticks, [`Instance::start_time`]) and has not exited; `Ok(None)` otherwise.
    ///
    /// The check, in this order: open the pidfd; read the start time in `/proc/<pid>/stat`;
    /// check through the pidfd that its process has not exited. A process that did not exit
    /// between the first and the last step kept its pid throughout, so the start time read in
    /// between is its own. A reused pid therefore never passes (short of a new process that got
    /// the same pid within the same clock tick, which pid allocation (cyclic) makes practically
    /// impossible).
    ///
    /// # Errors
    /// As [`PidFd::open`] except `ESRCH` (`Ok(None)`); poll(2) failing.
    pub fn open_verified(pid: i32, start_time: u64) -> io::Result<Option<Self>> {
        let pidfd = match Self::open(pid) {
            Ok(pidfd) => pidfd,
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(err) => return Err(err),
        };
        match read_stat(pid) {
            Ok(stat) if stat.start_time == start_time && !stat.is_dead() => {}
            Ok(_) => return Ok(None),
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        }
        if pidfd.has_exited()? {
            return Ok(None);
        }
        Ok(Some(pidfd))
    }

    /// The pid it was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to its process (pidfd_send_signal(2), Linux 5.1). `Ok(false)` if the
    /// process is gone (`ESRCH`: reaped); a zombie, like kill(2)'s, takes (and ignores) it.
    ///
    /// # Errors
    /// `EPERM` (not ours to signal), `EINVAL` (no such signal number), `InvalidInput` for a
    /// signal this platform lacks.
    pub fn send_signal(&self, signal: Signal) -> io::Result<bool> {
        let signo = signal_number(signal).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no number for {signal}"),
            )
        })?;
        // SAFETY: pidfd_send_signal(2) with our pidfd, a signal number, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signo,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match Errno::result(rc) {
            Ok(_) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Whether its process has exited (zombie or reaped), without waiting.
    ///
    /// # Errors
    /// poll(2) failed.
    pub fn has_exited(&self) -> io::Result<bool> {
        self.wait_timeout(Duration::ZERO)
    }

    /// Blocks until its process has exited or `timeout` has passed; `true` if it exited.
    ///
    /// # Errors
    /// poll(2) failed.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<bool> {
        Ok(wait_any(std::slice::from_ref(self), timeout)?.is_some())
    }

    /// Waits, without blocking the thread, until its process has exited: a pidfd becomes
    /// readable then (pidfd_open(2)). Registers the pidfd with [`async_io`]'s reactor for the
    /// duration of the wait. A zombie counts as exited.
    ///
    /// # Errors
    /// The reactor cannot watch the descriptor.
    pub async fn exited(&self) -> io::Result<()> {
        // A pidfd is never read, only polled: no need for O_NONBLOCK.
        let watched = async_io::Async::new_nonblocking(self.fd.as_fd())?;
        watched.readable().await
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Blocks until one of `pidfds` has exited or `timeout` has passed: the index of one that has
/// exited, or `None` at the timeout (at once for an empty slice).
///
/// # Errors
/// poll(2) failed (not `EINTR`, which is retried).
pub fn wait_any(pidfds: &[PidFd], timeout: Duration) -> io::Result<Option<usize>> {
    if pidfds.is_empty() {
        return Ok(None);
    }
    let mut polled: Vec<libc::pollfd> = pidfds
        .iter()
        .map(|pidfd| libc::pollfd {
            fd: pidfd.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = libc::c_int::try_from(left.as_millis().max(u128::from(!left.is_zero())))
            .unwrap_or(libc::c_int::MAX);
        let count = libc::nfds_t::try_from(polled.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `polled` is a valid array of `count` pollfd.
        let rc = unsafe { libc::poll(polled.as_mut_ptr(), count, millis) };
        match Errno::result(rc) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(polled.iter().position(|p| p.revents != 0)),
            Err(Errno::EINTR) if !left.is_zero() => {}
            Err(Errno::EINTR) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Makes this process a child subreaper (prctl(2) `PR_SET_CHILD_SUBREAPER`, Linux 3.4): a
/// process orphaned below it (a task's child whose parent exited) is re-parented to it rather
/// than to init, so it can be reaped ([`reap_orphans`]) and, if alive, is still among our
/// descendants. Process-wide, inherited by no one (fork(2) clears it in the child).
///
/// # Errors
/// prctl(2) failed (`EINVAL` before Linux 3.4).
pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// The pids of this process's children, zombies included, in pid order: every thread's
/// `/proc/self/task/<tid>/children` (proc(5), `CONFIG_PROC_CHILDREN`), since a child belongs to
/// the thread that forked it and an orphan is re-parented to any live thread of a subreaper.
/// Where those files do not exist, every `/proc/<pid>/stat` is read for its parent pid
/// (costly: one read per process on the system).
///
/// Like the files it reads, the list is a snapshot: a child that is forked or exits while it
/// is read may be missing from it (proc(5) calls it reliable only when the children are
/// stopped or frozen).
///
/// # Errors
/// `/proc/self/task` cannot be listed.
pub fn children() -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    let mut buf = Vec::new();
    let mut any_file = false;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Ok(entry) = entry else { continue };
        let path = entry.path().join("children");
        // Missing when the thread exited meanwhile, or without CONFIG_PROC_CHILDREN.
        if let Ok(file) = File::open(&path) {
            any_file = true;
            if read_all(file.into(), &mut buf).is_ok() {
                let text = String::from_utf8_lossy(&buf);
                pids.extend(text.split_ascii_whitespace().filter_map(decimal::<i32>));
            }
        }
    }
    if !any_file {
        pids = children_by_parent(nix::unistd::getpid().as_raw());
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Every process whose parent is `parent`, from each `/proc/<pid>/stat`.
fn children_by_parent(parent: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut buf = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(decimal::<i32>) else {
            continue;
        };
        let Ok(file) = File::open(entry.path().join("stat")) else {
            continue;
        };
        if read_all(file.into(), &mut buf).is_ok()
            && parse_stat(&buf).is_some_and(|stat| stat.ppid == parent)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Reaps (waitpid(2) `WNOHANG`) every child of this process that has exited and that `keep`
/// does not claim, and returns them with how they ended. Meant for a subreaper
/// ([`set_child_subreaper`]) after SIGCHLD: the orphans re-parented to it would otherwise stay
/// zombies forever.
///
/// `keep(pid)` must be `true` for every child the caller waits for itself, above all the task
/// leaders it keeps as unreaped zombies on purpose (their pid is their process group id, which
/// must stay reserved until released); those are never waited for here, not even peeked at.
/// Call it from the thread that spawns and records the children (the driver's loop), so that no
/// child can be started but not yet recorded while it runs. A child reaped elsewhere
/// meanwhile (`ECHILD`) is skipped.
///
/// Cost: one read of `/proc/self/task/<tid>/children` per thread of this process (see
/// [`children`]), one `keep` call per child, one waitpid(2) per child not kept (nothing is read
/// per process on the system). A few tens of microseconds for a server with a few threads and
/// tens of children.
///
/// # Errors
/// The children cannot be listed ([`children`]).
pub fn reap_orphans(mut keep: impl FnMut(i32) -> bool) -> io::Result<Vec<(i32, ExitStatus)>> {
    let mut reaped = Vec::new();
    for pid in children()? {
        if keep(pid) {
            continue;
        }
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: `status` is a valid, writable int.
            let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
            match Errno::result(rc) {
                Ok(0) => break,
                Ok(_) => {
                    reaped.push((pid, wait_status(status)));
                    break;
                }
                Err(Errno::EINTR) => {}
                // Reaped by someone else, or not our child after all.
                Err(_) => break,
            }
        }
    }
    Ok(reaped)
}

/// How a process ended, from waitpid(2)'s status.
fn wait_status(status: libc::c_int) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ExitStatus::Signaled(signal_from_number(libc::WTERMSIG(status)))
    } else {
        ExitStatus::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_anything_else_is_rejected() {
        let instance = Instance {
            pid: 4242,
            start_time: 987_654,
        };
        assert_eq!(instance.tag(17), "4242.987654.17");
        assert_eq!(parse_tag(&instance.tag(17)), Some((instance, 17)));
        assert_eq!(instance.to_string().parse(), Ok(instance));
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "-1.2.3",
            "0.2.3",
            "+1.2.3",
            "1.2.x",
            " 1.2.3",
            "1.2.3 ",
            "1..3",
            "99999999999.2.3",
            "1.2.18446744073709551616",
        ] {
            assert_eq!(parse_tag(bad), None, "{bad:?}");
        }
        assert_eq!("1.2.3".parse::<Instance>(), Err(InvalidInstance));
    }

    #[test]
    fn the_tag_is_found_only_at_the_start_of_an_entry() {
        let environ = b"A=1\0B=PROC_MCP_TAG=9.9.9\0XPROC_MCP_TAG=8.8.8\0PROC_MCP_TAG=5.6.7\0\
                        PROC_MCP_TAG=1.1.1\0";
        let five = Instance {
            pid: 5,
            start_time: 6,
        };
        assert_eq!(find_tag(environ), Some((five, 7)));
        assert_eq!(find_tag(b"PROC_MCP_TAG=5.6.7"), Some((five, 7)));
        assert_eq!(find_tag(b"PROC_MCP_TAG=5.6.x\0"), None);
        assert_eq!(find_tag(b"PROC_MCP_TAG\0"), None);
        assert_eq!(find_tag(b""), None);
    }

    #[test]
    fn stat_is_parsed_after_the_last_parenthesis() {
        let mut text = b"77 (a) (b) R) S 1 77 77 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 ".to_vec();
        text.extend_from_slice(b"123456 1 2 3\n");
        let stat = parse_stat(&text).expect("parsed");
        assert_eq!(stat.comm, b"a) (b) R");
        assert_eq!(
            (
                stat.state,
                stat.ppid,
                stat.pgrp,
                stat.session,
                stat.start_time
            ),
            (b'S', 1, 77, 77, 123_456)
        );
        assert!(parse_stat(b"77 (a) S 1 77").is_none());
        let ours = Instance::current().expect("our instance");
        assert_eq!(ours.pid, nix::unistd::getpid().as_raw());
        assert!(ours.start_time > 0);
    }

    #[test]
    fn commands_are_joined_cut_and_fall_back_to_comm() {
        assert_eq!(command_line(b"sleep\x001000\0", "sleep"), "sleep 1000");
        assert_eq!(command_line(b"a\nb\0\0", "x"), "a?b");
        assert_eq!(command_line(b"", "kworker/0:1"), "kworker/0:1");
        assert_eq!(command_line(b"\0\0", "zombie"), "zombie");
        let long = "é".repeat(300);
        let cut = command_line(long.as_bytes(), "x");
        assert_eq!(cut.chars().count(), COMMAND_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "y".repeat(COMMAND_CHARS);
        assert_eq!(command_line(exact.as_bytes(), "x"), exact);
        assert_eq!(
            real_uid(b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\n"),
            Some(1000)
        );
        assert_eq!(real_uid(b"Name:\tx\n"), None);
    }
}

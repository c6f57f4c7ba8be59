//! The watchdog: a small process, one per server, that outlives the server just long enough to
//! end everything the server started when the server dies without cleaning up (`kill -9`, a
//! crash, the OOM killer).
//!
//! It is the server's own executable run again with the hidden first argument
//! [`WATCHDOG_ARG`] ([`run_if_requested`], which the binary's `main` calls first). The server
//! starts it at startup ([`Watchdog::spawn`]) in a session of its own (setsid(2): a signal to
//! the client's process group or session does not reach it), with
//!
//! - stdin: the read end of a pipe whose write end only the server holds (close-on-exec, so
//!   no task inherits it). The server's death closes it: the watchdog reads end-of-file
//!   (pipe(7));
//! - stdout: `/dev/null` (the server's stdout is the MCP channel);
//! - stderr: the server's, for one line when it cleans up;
//! - no [`TAG_VAR`]: an enclosing proc-mcp that ends the server's task must not kill this
//!   watchdog before it has cleaned up after the server.
//!
//! The server tells it, one line per message, which process groups and cgroups are its runs'
//! ([`Watchdog::watch_group`], [`Watchdog::watch_cgroup`]...). At startup the watchdog first
//! SIGKILLs what dead servers left behind ([`kill_stale`]). Then it reads messages until:
//!
//! - `disarm` ([`Watchdog::disarm`], a clean server exit that already stopped everything): it
//!   exits 0 without killing anything;
//! - end-of-file (the server died): it SIGKILLs every watched process group (killpg(3)), kills
//!   every watched cgroup and the server's cgroup (`cgroup.kill`), then scans `/proc` for
//!   processes tagged with the server's instance and SIGKILLs them (through verified pidfds)
//!   until a scan finds none — a process may fork while it is being killed — for at most
//!   [`Config::kill_timeout`]; then it removes the cgroups and exits 0.
//!
//! It ignores SIGHUP, SIGINT and SIGPIPE. [`serve`] is the whole logic on any reader, so it can
//! be tested in-process.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use proc_state::{ExitStatus, Signal};

use crate::cgroup::{Cgroup, Cgroups};
use crate::signal::signal_from_number;
use crate::tree::{Instance, PidFd, Scanner, TAG_VAR, TaggedProcess};

/// The hidden first argument that makes the server's executable a watchdog:
/// `<exe> __proc-mcp-watchdog <pid>.<start time> [<server cgroup>]`.
pub const WATCHDOG_ARG: &str = "__proc-mcp-watchdog";

/// How long the watchdog goes on killing tagged processes after the server died (they may
/// fork while being killed, or take a moment to die).
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one round of killing waits for the killed processes to exit before scanning again.
const ROUND_WAIT: Duration = Duration::from_millis(100);

/// Rounds of stale cleanup at startup at most.
const STALE_ROUNDS: usize = 3;

/// One message from the server, one line on the pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `watch-group <pgid>`: a run's process group; SIGKILL it if the server dies.
    WatchGroup(i32),
    /// `unwatch-group <pgid>`: the run was released (send it before reaping the leader, which
    /// frees the pgid for reuse).
    UnwatchGroup(i32),
    /// `watch-cgroup <path>`: a cgroup to kill and remove if the server dies (one outside the
    /// server's cgroup; those inside it are killed with it anyway).
    WatchCgroup(PathBuf),
    /// `unwatch-cgroup <path>`.
    UnwatchCgroup(PathBuf),
    /// `disarm`: the server has cleaned up and exits; kill nothing.
    Disarm,
}

impl Message {
    /// Appends the message's line, newline included, to `out`.
    ///
    /// # Errors
    /// `InvalidInput` for a path with a newline, or a pgid not above 1.
    pub fn encode(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        match self {
            Self::WatchGroup(pgid) | Self::UnwatchGroup(pgid) if *pgid <= 1 => {
                return Err(invalid(format!("not a process group to watch: {pgid}")));
            }
            Self::WatchCgroup(path) | Self::UnwatchCgroup(path)
                if path.as_os_str().as_bytes().contains(&b'\n') =>
            {
                return Err(invalid(format!("a newline in {}", path.display())));
            }
            _ => {}
        }
        match self {
            Self::WatchGroup(pgid) => write!(out, "watch-group {pgid}")?,
            Self::UnwatchGroup(pgid) => write!(out, "unwatch-group {pgid}")?,
            Self::WatchCgroup(path) => {
                out.extend_from_slice(b"watch-cgroup ");
                out.extend_from_slice(path.as_os_str().as_bytes());
            }
            Self::UnwatchCgroup(path) => {
                out.extend_from_slice(b"unwatch-cgroup ");
                out.extend_from_slice(path.as_os_str().as_bytes());
            }
            Self::Disarm => out.extend_from_slice(b"disarm"),
        }
        out.push(b'\n');
        Ok(())
    }

    /// The message on `line` (with or without its newline); `None` for anything else.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line == b"disarm" {
            return Some(Self::Disarm);
        }
        let space = line.iter().position(|&b| b == b' ')?;
        let (verb, arg) = (&line[..space], &line[space + 1..]);
        let pgid = || {
            std::str::from_utf8(arg)
                .ok()?
                .parse::<i32>()
                .ok()
                .filter(|&pgid| pgid > 1)
        };
        let path = || (!arg.is_empty()).then(|| PathBuf::from(OsString::from_vec(arg.to_vec())));
        match verb {
            b"watch-group" => pgid().map(Self::WatchGroup),
            b"unwatch-group" => pgid().map(Self::UnwatchGroup),
            b"watch-cgroup" => path().map(Self::WatchCgroup),
            b"unwatch-cgroup" => path().map(Self::UnwatchCgroup),
            _ => None,
        }
    }
}

/// What the watchdog watches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The server.
    pub instance: Instance,
    /// The server's cgroup (`cgroup::Cgroups::create_server`), if it uses cgroups: killed and
    /// removed with everything below it when the server dies; its parent is where stale
    /// servers' cgroups are looked for at startup.
    pub cgroup_parent: Option<PathBuf>,
    /// How long to go on killing after the server died: [`KILL_TIMEOUT`].
    pub kill_timeout: Duration,
    /// A descriptor of the server's list of process groups to kill (see [`GroupList`]), read
    /// once the server has died.
    pub groups_fd: Option<RawFd>,
}

impl Config {
    /// For `instance`, with the server's cgroup if any, and [`KILL_TIMEOUT`].
    pub fn new(instance: Instance, cgroup_parent: Option<PathBuf>) -> Self {
        Self {
            instance,
            cgroup_parent,
            kill_timeout: KILL_TIMEOUT,
            groups_fd: None,
        }
    }
}

/// How [`serve`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Told to disarm: nothing was killed (stale cleanup at startup aside).
    Disarmed {
        /// Processes of dead servers killed at startup ([`kill_stale`]).
        stale_killed: usize,
    },
    /// The input ended without `disarm`: everything of the server's was killed.
    CleanedUp(Report),
}

/// What the watchdog did after the server died.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Processes of dead servers killed at startup ([`kill_stale`]).
    pub stale_killed: usize,
    /// Watched process groups signalled (killpg(3) succeeded: the group existed).
    pub groups: usize,
    /// Cgroups killed (`cgroup.kill` succeeded), the server's cgroup included.
    pub cgroups: usize,
    /// Tagged processes SIGKILLed after the groups and cgroups, each counted once (some may
    /// have been dying of the group or cgroup kill already: SIGKILL takes a moment).
    pub tagged_killed: usize,
    /// Tagged processes still alive when [`Config::kill_timeout`] ran out.
    pub survivors: usize,
    /// Cgroups that could not be removed (still populated when the time ran out).
    pub cgroups_left: usize,
}

impl Report {
    /// Whether anything was found to kill.
    pub fn killed_anything(&self) -> bool {
        self.groups + self.cgroups + self.tagged_killed > 0
    }
}

/// The watchdog's logic on `input` (its stdin in the real thing): stale cleanup, then messages
/// until `disarm` or end-of-file, then the cleanup after the server (see the module's doc). A
/// read error counts as end-of-file. Returns what it did; the caller exits.
pub fn serve(input: impl BufRead, config: &Config) -> Outcome {
    let mut scanner = Scanner::new().ok();
    let stale_killed = kill_stale(scanner.as_mut(), config);
    let mut watched = Watched::default();
    if watched.read(input) {
        return Outcome::Disarmed { stale_killed };
    }
    if let Some(fd) = config.groups_fd {
        watched.groups.extend(GroupList::read(fd));
    }
    let mut report = clean_up(scanner.as_mut(), config, &watched);
    report.stale_killed = stale_killed;
    Outcome::CleanedUp(report)
}

/// What the server asked the watchdog to watch.
#[derive(Debug, Default)]
struct Watched {
    groups: BTreeSet<i32>,
    cgroups: BTreeSet<PathBuf>,
}

impl Watched {
    /// Applies the messages on `input` until `disarm` (`true`) or end-of-file (`false`; a read
    /// error counts as end-of-file).
    fn read(&mut self, mut input: impl BufRead) -> bool {
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                // End-of-file. A last line without its newline is a message cut short by the
                // server's death (a backlog longer than PIPE_BUF may be written in pieces): a
                // cut pgid or path would name another group or cgroup, so it is dropped.
                Ok(_) if line.last() != Some(&b'\n') => return false,
                Ok(_) => match Message::parse(&line) {
                    Some(Message::WatchGroup(pgid)) => {
                        self.groups.insert(pgid);
                    }
                    Some(Message::UnwatchGroup(pgid)) => {
                        self.groups.remove(&pgid);
                    }
                    Some(Message::WatchCgroup(path)) => {
                        self.cgroups.insert(path);
                    }
                    Some(Message::UnwatchCgroup(path)) => {
                        self.cgroups.remove(&path);
                    }
                    Some(Message::Disarm) => return true,
                    None => eprintln!(
                        "proc-mcp watchdog: ignoring {:?}",
                        String::from_utf8_lossy(&line)
                    ),
                },
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// SIGKILLs what dead servers left behind: tagged processes of our uid and pid namespace
/// whose server instance is verified dead ([`Scanner::scan_stale`]), in a few rounds (one may
/// fork meanwhile); and, with a server cgroup, the stale servers' cgroups next to it
/// ([`Cgroups::remove_stale`]). Returns how many processes were killed.
pub fn kill_stale(scanner: Option<&mut Scanner>, config: &Config) -> usize {
    let mut killed = BTreeSet::new();
    if let Some(scanner) = scanner {
        for _ in 0..STALE_ROUNDS {
            let stale = scanner.scan_stale();
            if stale.is_empty() {
                break;
            }
            kill_all(&stale, &mut killed, ROUND_WAIT);
        }
    }
    if let Some(base) = config.cgroup_parent.as_deref().and_then(Path::parent) {
        Cgroups::at(base).remove_stale();
    }
    killed.len()
}

/// SIGKILLs each of `processes` through a verified pidfd, adding (pid, start time) to `killed`,
/// then waits up to `wait` for them to exit (just waits, if no pidfd could be opened: the
/// caller scans again after).
fn kill_all(processes: &[TaggedProcess], killed: &mut BTreeSet<(i32, u64)>, wait: Duration) {
    let mut pidfds = Vec::with_capacity(processes.len());
    for process in processes {
        if let Ok(Some(pidfd)) = process.open_pidfd() {
            if pidfd.send_signal(Signal::Kill).unwrap_or(false) {
                killed.insert((process.pid, process.start_time));
            }
            pidfds.push(pidfd);
        }
    }
    if pidfds.is_empty() {
        std::thread::sleep(wait);
        return;
    }
    let deadline = Instant::now() + wait;
    for pidfd in &pidfds {
        let _ = pidfd.wait_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Everything after the server died: groups, cgroups, tagged processes, cgroup removal.
fn clean_up(scanner: Option<&mut Scanner>, config: &Config, watched: &Watched) -> Report {
    let deadline = Instant::now() + config.kill_timeout;
    let mut report = Report::default();
    // SAFETY: getpgrp(2) cannot fail.
    let own_group = unsafe { libc::getpgrp() };
    for &pgid in &watched.groups {
        if pgid > 1 && pgid != own_group {
            // SAFETY: killpg(3) has no memory-safety preconditions; pgid > 1.
            if unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0 {
                report.groups += 1;
            }
        }
    }
    let mut all_cgroups: Vec<Cgroup> = watched.cgroups.iter().map(Cgroup::at).collect();
    all_cgroups.extend(config.cgroup_parent.iter().map(Cgroup::at));
    for cgroup in &all_cgroups {
        if cgroup.kill().is_ok() {
            report.cgroups += 1;
        }
    }
    if let Some(scanner) = scanner {
        let mut killed = BTreeSet::new();
        loop {
            let found = scanner.scan_instance(&config.instance);
            let left = deadline.saturating_duration_since(Instant::now());
            if found.is_empty() {
                break;
            }
            if left.is_zero() {
                report.survivors = found.len();
                break;
            }
            kill_all(&found, &mut killed, left.min(ROUND_WAIT));
        }
        report.tagged_killed = killed.len();
    }
    for cgroup in &all_cgroups {
        let left = deadline.saturating_duration_since(Instant::now());
        if cgroup.path().exists() {
            let _ = cgroup.wait_empty(left);
            if cgroup.remove_tree().is_err() {
                report.cgroups_left += 1;
            }
        }
    }
    report
}

/// If this process was started as a watchdog (its first argument is [`WATCHDOG_ARG`]), runs
/// it and exits the process (0; 2 for bad arguments); otherwise returns at once. Call it first
/// thing in `main`, before anything else is set up.
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(WATCHDOG_ARG)) {
        return;
    }
    let args: Vec<OsString> = args.collect();
    let Some(config) = parse_args(&args) else {
        eprintln!("proc-mcp watchdog: usage: {WATCHDOG_ARG} <pid>.<start time> [<cgroup>]");
        std::process::exit(2);
    };
    std::process::exit(run(&config));
}

/// The watchdog's arguments after [`WATCHDOG_ARG`].
fn parse_args(args: &[OsString]) -> Option<Config> {
    let (instance, mut rest) = args.split_first()?;
    let instance: Instance = instance.to_str()?.parse().ok()?;
    let mut groups_fd = None;
    if let [flag, fd, more @ ..] = rest
        && flag == GROUPS_FD_ARG
    {
        groups_fd = Some(fd.to_str()?.parse().ok()?);
        rest = more;
    }
    let cgroup_parent = match rest {
        [] => None,
        [path] => Some(PathBuf::from(path)),
        _ => return None,
    };
    let mut config = Config::new(instance, cgroup_parent);
    config.groups_fd = groups_fd;
    Some(config)
}

/// The argument that names the descriptor of the [`GroupList`] the watchdog inherits.
const GROUPS_FD_ARG: &str = "--groups-fd";

/// The descriptor number the watchdog gets its [`GroupList`] on.
const GROUPS_FD: RawFd = 3;

/// The process groups the watchdog must kill, kept by the server in a memory file
/// (memfd_create(2)) the watchdog inherits and reads only once the server has died: a slot
/// of 4 bytes (native-endian `i32`, 0 for a free slot) per live run. Updating it is one
/// pwrite(2) and wakes nobody, unlike a message on the watchdog's pipe, which would make it
/// run at every spawn, when the server's own threads need the CPU.
#[derive(Debug)]
pub struct GroupList {
    file: File,
    slots: BTreeMap<i32, u64>,
    free: Vec<u64>,
    next: u64,
}

impl GroupList {
    /// An empty list in a new memory file.
    ///
    /// # Errors
    /// memfd_create(2) failed.
    pub fn new() -> io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            c"proc-mcp-groups",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        Ok(Self {
            file: File::from(fd),
            slots: BTreeMap::new(),
            free: Vec::new(),
            next: 0,
        })
    }

    /// Adds `pgid` (a no-op if it is listed).
    ///
    /// # Errors
    /// pwrite(2) failed.
    pub fn add(&mut self, pgid: i32) -> io::Result<()> {
        if self.slots.contains_key(&pgid) {
            return Ok(());
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.file.write_all_at(&pgid.to_ne_bytes(), slot * 4)?;
        self.slots.insert(pgid, slot);
        Ok(())
    }

    /// Removes `pgid` (a no-op if it is not listed).
    ///
    /// # Errors
    /// pwrite(2) failed.
    pub fn remove(&mut self, pgid: i32) -> io::Result<()> {
        let Some(slot) = self.slots.remove(&pgid) else {
            return Ok(());
        };
        self.free.push(slot);
        self.file.write_all_at(&0i32.to_ne_bytes(), slot * 4)
    }

    /// The process groups listed in the memory file on `fd` (as the watchdog reads it).
    fn read(fd: RawFd) -> Vec<i32> {
        let mut bytes = Vec::new();
        // SAFETY: `fd` is the list the watchdog inherited; the `File` is forgotten below, so
        // the descriptor is neither closed nor used twice.
        let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        let mut offset = 0;
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = file.read_at(&mut chunk, offset) {
            bytes.extend_from_slice(&chunk[..n]);
            offset += n as u64;
        }
        bytes
            .chunks_exact(4)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .filter(|&pgid| pgid > 1)
            .collect()
    }
}

/// The watchdog process: signals, then [`serve`] on stdin; the exit code.
fn run(config: &Config) -> i32 {
    for signo in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
        // SAFETY: SIG_IGN is a valid disposition for these signals.
        unsafe { libc::signal(signo, libc::SIG_IGN) };
    }
    let stdin = io::stdin();
    if let Outcome::CleanedUp(report) = serve(stdin.lock(), config)
        && (report.killed_anything() || report.survivors > 0 || report.cgroups_left > 0)
    {
        eprintln!(
            "proc-mcp watchdog: server {} ended without cleaning up: killed {} process \
                 groups, {} cgroups, {} tagged processes ({} survived, {} cgroups left)",
            config.instance.pid,
            report.groups,
            report.cgroups,
            report.tagged_killed,
            report.survivors,
            report.cgroups_left,
        );
    }
    0
}

/// The server's handle on its watchdog: the write end of its pipe and its pid.
///
/// Writes never block: the pipe's write end is non-blocking, and what does not fit (the
/// watchdog is not reading: stopped, or busy with stale cleanup at startup) waits in a backlog
/// that every later message, and [`Watchdog::flush`], tries to write first, so the watchdog
/// receives everything, in order. A message is about 25 bytes and a pipe holds 64 KiB, so the
/// backlog only grows if the watchdog stops reading for thousands of messages;
/// [`Watchdog::pending_bytes`] shows it. Dropping the handle closes the pipe: the watchdog then
/// kills everything watched, as if the server had died.
#[derive(Debug)]
pub struct Watchdog {
    /// Its pid; for SIGCHLD handling (keep it out of `tree::reap_orphans`).
    pid: i32,
    /// A pidfd on it, where pidfds exist: its death can be awaited, and it is reaped through
    /// it (waitid(2) `P_PIDFD`), never by a pid that could have been reused.
    pidfd: Option<PidFd>,
    /// The write end of its stdin, non-blocking and close-on-exec; `None` once closed.
    pipe: Option<File>,
    /// Bytes not written yet.
    pending: Vec<u8>,
    /// The process groups to kill if the server dies, which the watchdog reads then.
    groups: GroupList,
}

impl Watchdog {
    /// Starts `exe` (the server's own executable; `/proc/self/exe` names it even if the file
    /// was replaced or deleted since) as the watchdog of `instance`, with the server's cgroup
    /// if it has one, in a new session, with the pipe on stdin, `/dev/null` on stdout, stderr
    /// inherited, the working directory `/`, no [`TAG_VAR`], and no descriptor beyond 0, 1
    /// and 2. It has no parent-death signal: it must outlive the server.
    ///
    /// # Errors
    /// pipe(2), fcntl(2) or the spawn failed.
    pub fn spawn(
        exe: &Path,
        instance: &Instance,
        cgroup_parent: Option<&Path>,
    ) -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        nix::fcntl::fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let groups = GroupList::new()?;
        let groups_fd = groups.file.as_raw_fd();
        let mut command = Command::new(exe);
        command
            .arg(WATCHDOG_ARG)
            .arg(instance.to_string())
            .arg(GROUPS_FD_ARG)
            .arg(GROUPS_FD.to_string())
            .args(cgroup_parent)
            .env_remove(TAG_VAR)
            .current_dir("/")
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let fd_limit = crate::fd::fd_limit();
        // SAFETY: setsid(2) and the close_range(2)/fcntl(2) of `mark_cloexec_from` are
        // async-signal-safe and do not allocate, as required between fork and exec.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid()?;
                crate::fd::mark_cloexec_from(3, fd_limit)?;
                // The group list on a known descriptor, kept across exec: dup2(2) clears
                // close-on-exec on the copy (and when it is already there, fcntl(2) does).
                if groups_fd == GROUPS_FD {
                    libc::fcntl(GROUPS_FD, libc::F_SETFD, 0);
                } else if libc::dup2(groups_fd, GROUPS_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid =
            i32::try_from(child.id()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // Our unreaped child: it cannot be gone (pidfd_open works on a zombie too).
        let pidfd = PidFd::open(pid).ok();
        Ok(Self {
            pid,
            pidfd,
            pipe: Some(File::from(write)),
            pending: Vec::new(),
            groups,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd on it ([`PidFd::exited`] to notice its death), unless the kernel has none.
    pub fn pidfd(&self) -> Option<&PidFd> {
        self.pidfd.as_ref()
    }

    /// Watch process group `pgid`: SIGKILL it if the server dies. Kept in the [`GroupList`]
    /// (no message, no wake-up).
    ///
    /// # Errors
    /// pwrite(2) failed.
    pub fn watch_group(&mut self, pgid: i32) -> io::Result<()> {
        self.groups.add(pgid)
    }

    /// Stop watching process group `pgid` (before reaping its leader: that frees the pgid).
    ///
    /// # Errors
    /// pwrite(2) failed.
    pub fn unwatch_group(&mut self, pgid: i32) -> io::Result<()> {
        self.groups.remove(pgid)
    }

    /// Watch the cgroup at `path`: kill and remove it if the server dies. Cgroups under the
    /// server's cgroup need not be watched: that one is killed as a whole.
    ///
    /// # Errors
    /// See [`Watchdog::send`].
    pub fn watch_cgroup(&mut self, path: &Path) -> io::Result<()> {
        self.send(&Message::WatchCgroup(path.to_path_buf()))
    }

    /// Stop watching the cgroup at `path`.
    ///
    /// # Errors
    /// See [`Watchdog::send`].
    pub fn unwatch_cgroup(&mut self, path: &Path) -> io::Result<()> {
        self.send(&Message::UnwatchCgroup(path.to_path_buf()))
    }

    /// Queues `message` and writes as much of the backlog as the pipe takes, without blocking.
    ///
    /// # Errors
    /// `InvalidInput` for a message that cannot be sent ([`Message::encode`]); `BrokenPipe`
    /// when the watchdog has exited (or [`Watchdog::disarm`]ed): start a new one and watch
    /// again everything still running.
    pub fn send(&mut self, message: &Message) -> io::Result<()> {
        if self.pipe.is_none() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        message.encode(&mut self.pending)?;
        self.flush().map(drop)
    }

    /// Writes as much of the backlog as the pipe takes now; `true` when nothing is left.
    ///
    /// # Errors
    /// `BrokenPipe` when the watchdog has exited; another write(2) error.
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        while !self.pending.is_empty() {
            match pipe.write(&self.pending) {
                Ok(written) => {
                    self.pending.drain(..written);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Bytes waiting for the watchdog to read (see [`Watchdog`]).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Waits up to `timeout` until the backlog is written; `true` if it was.
    fn flush_within(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.flush()? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(pipe) = self.pipe.as_ref().filter(|_| !left.is_zero()) else {
                return Ok(false);
            };
            let mut pollfd = libc::pollfd {
                fd: pipe.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let millis = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd on a descriptor we hold.
            match Errno::result(unsafe { libc::poll(&raw mut pollfd, 1, millis) }) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// If the watchdog has exited, reaps it and says how it ended; `Ok(None)` while it runs.
    /// Call it after SIGCHLD (or when its pidfd is readable): a watchdog that died must be
    /// replaced ([`Watchdog::spawn`], then watch again everything still running). One reaped
    /// by someone else shows as [`ExitStatus::Lost`].
    ///
    /// # Errors
    /// waitid(2) failed otherwise.
    pub fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        // SAFETY: siginfo_t is plain data; all zeroes is valid and means "no child".
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let (idtype, id) = match &self.pidfd {
            Some(pidfd) => (libc::P_PIDFD, pidfd.as_fd().as_raw_fd().unsigned_abs()),
            None => (libc::P_PID, self.pid.unsigned_abs()),
        };
        loop {
            // SAFETY: `info` is a valid, writable siginfo_t.
            let rc =
                unsafe { libc::waitid(idtype, id, &raw mut info, libc::WEXITED | libc::WNOHANG) };
            match Errno::result(rc) {
                Ok(_) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    self.pipe = None;
                    return Ok(Some(ExitStatus::Lost));
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        // SAFETY: waitid filled `info` for a child (or left it zeroed).
        let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
        if si_pid == 0 {
            return Ok(None);
        }
        self.pipe = None;
        Ok(Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Code(si_status),
            _ => ExitStatus::Signaled(signal_from_number(si_status)),
        }))
    }

    /// For a clean server exit, once every task is stopped: tells the watchdog to exit
    /// without killing anything, closes the pipe, and waits for the watchdog to exit and
    /// reaps it, all within `timeout`.
    ///
    /// # Errors
    /// `TimedOut` if the message could not be written or the watchdog did not exit in time
    /// (it then reads end-of-file, or has read `disarm`, and exits by itself; with end-of-file
    /// it kills whatever is still watched); `BrokenPipe` if the watchdog had died already.
    pub fn disarm(mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        self.send(&Message::Disarm)?;
        let written = self.flush_within(timeout)?;
        self.pipe = None;
        if !written {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the watchdog did not read its messages",
            ));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match &self.pidfd {
                Some(pidfd) => {
                    pidfd.wait_timeout(left)?;
                }
                // Without pidfds (before Linux 5.3): look again every few milliseconds.
                None => std::thread::sleep(left.min(Duration::from_millis(5))),
            }
            if self.try_reap()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the watchdog did not exit",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read as _};

    use super::*;
    use crate::testutil::pipe;

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let messages = [
            Message::WatchGroup(1234),
            Message::UnwatchGroup(1234),
            Message::WatchCgroup(PathBuf::from("/sys/fs/cgroup/a b/proc-mcp-1.2")),
            Message::UnwatchCgroup(PathBuf::from(OsStr::from_bytes(b"/x/\xff"))),
            Message::Disarm,
        ];
        let mut wire = Vec::new();
        for message in &messages {
            message.encode(&mut wire).expect("encode");
        }
        let parsed: Vec<Message> = wire
            .split_inclusive(|&b| b == b'\n')
            .map(|line| Message::parse(line).expect("parse"))
            .collect();
        assert_eq!(parsed, messages);
        assert_eq!(&wire[..18], b"watch-group 1234\nu");
        for bad in [
            &b"watch-group 1"[..],
            b"watch-group -5",
            b"watch-group x",
            b"watch-cgroup ",
            b"watch-group",
            b"disarm now",
            b"",
        ] {
            assert_eq!(
                Message::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut out = Vec::new();
        assert!(Message::WatchGroup(0).encode(&mut out).is_err());
        assert!(
            Message::WatchCgroup(PathBuf::from("/a\nb"))
                .encode(&mut out)
                .is_err()
        );
        assert!(out.is_empty());
        let args = |list: &[&str]| -> Vec<OsString> { list.iter().map(OsString::from).collect() };
        assert_eq!(
            parse_args(&args(&["12.34", "/cg"])),
            Some(Config::new(
                Instance {
                    pid: 12,
                    start_time: 34
                },
                Some(PathBuf::from("/cg"))
            ))
        );
        assert!(parse_args(&args(&["12.34"])).is_some_and(|c| c.cgroup_parent.is_none()));
        assert_eq!(parse_args(&args(&[])), None);
        assert_eq!(parse_args(&args(&["12"])), None);
        assert_eq!(parse_args(&args(&["12.34", "/a", "/b"])), None);
    }

    #[test]
    fn a_message_cut_short_by_the_end_is_dropped() {
        let mut watched = Watched::default();
        let input = b"watch-group 1234\nwatch-cgroup /cg/a\nbogus\nwatch-group 56\n\
                      unwatch-group 56\nwatch-cgroup /cg/ab\nwatch-group 12";
        assert!(!watched.read(&input[..]), "end-of-file, not disarmed");
        assert_eq!(watched.groups.into_iter().collect::<Vec<_>>(), [1234]);
        let cgroups: Vec<PathBuf> = watched.cgroups.into_iter().collect();
        assert_eq!(cgroups, [PathBuf::from("/cg/a"), PathBuf::from("/cg/ab")]);

        let mut watched = Watched::default();
        let input = b"watch-group 1234\nwatch-cgroup /cg/ab";
        assert!(!watched.read(&input[..]));
        assert!(watched.cgroups.is_empty(), "a cut path is not taken");

        let mut watched = Watched::default();
        assert!(watched.read(&b"watch-group 1234\ndisarm\nwatch-group 5678\n"[..]));
        assert_eq!(watched.groups.into_iter().collect::<Vec<_>>(), [1234]);
    }

    #[test]
    fn the_group_list_is_read_back_as_kept() {
        let mut groups = GroupList::new().expect("memfd");
        for pgid in [100, 200, 300] {
            groups.add(pgid).expect("add");
        }
        groups.remove(200).expect("remove");
        groups.add(400).expect("add, in the freed slot");
        groups.add(100).expect("twice is once");
        let mut read = GroupList::read(groups.file.as_raw_fd());
        read.sort_unstable();
        assert_eq!(read, [100, 300, 400]);
    }

    #[test]
    fn writes_never_block_and_arrive_in_order() {
        let (read, write) = pipe();
        nix::fcntl::fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("fcntl");
        let mut watchdog = Watchdog {
            pid: 0,
            pidfd: None,
            pipe: Some(write),
            pending: Vec::new(),
            groups: GroupList::new().expect("memfd"),
        };
        // Far more than a pipe holds, with nobody reading: nothing blocks.
        let count = 20_000;
        for pgid in 2..count {
            watchdog.send(&Message::WatchGroup(pgid)).expect("queued");
        }
        assert!(watchdog.pending_bytes() > 0);
        assert!(!watchdog.flush().expect("flush"));
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            BufReader::new(read).read_to_end(&mut all).expect("read");
            all
        });
        assert!(watchdog.flush_within(LONG).expect("flush"), "not drained");
        assert_eq!(watchdog.pending_bytes(), 0);
        watchdog.pipe = None;
        let all = reader.join().expect("reader");
        let groups: Vec<i32> = all
            .split_inclusive(|&b| b == b'\n')
            .map(|line| match Message::parse(line) {
                Some(Message::WatchGroup(pgid)) => pgid,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(groups, (2..count).collect::<Vec<_>>());
        assert_eq!(
            watchdog.send(&Message::WatchGroup(7)).map_err(|e| e.kind()),
            Err(io::ErrorKind::BrokenPipe)
        );
    }
}

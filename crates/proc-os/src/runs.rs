//! The table of live runs: what the core's `Spawn`, `Signal`, `WriteStdin`, `CloseStdin`,
//! `Resize` and `Release` outputs do, and how SIGCHLD turns into `Exited` inputs. Runtime-agnostic: the
//! driver says how to start the tasks that read a run's pipes (and that wait for its stdin to
//! have room), and gets them back to drop (which must stop them).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::Arc;

use async_io::Async;
use nix::libc;
use nix::unistd::Pid;
use proc_state::{ExitStatus, RunId, Signal, SpawnSpec, Stream, WindowSize};

use crate::input;
use crate::process::{self, SpawnPlacement};

/// A run's stdin pipe (our end, non-blocking), or the master side of its terminal, and, after
/// a short write, the task that waits for it to have room.
struct Stdin<P> {
    pipe: Arc<Async<File>>,
    waiting: Option<P>,
}

/// One spawned process, from `Spawn` until `Release`.
struct Run<P> {
    /// Also the process group id; stays reserved until we reap it in [`RunTable::release`].
    pid: Pid,
    /// `Exited` was reported for it (the leader is a zombie now).
    exited: bool,
    /// A signal was sent to its group while the leader was alive.
    signalled: bool,
    /// Each of those signals would have killed the leader (it neither caught nor ignored it,
    /// and its default action ends the process): if the leader still exits with a code of its
    /// own, none of them reached it in time.
    only_fatal: bool,
    /// Its stdin, while open; `None` unless piped or on a terminal (then the terminal's
    /// master side).
    stdin: Option<Stdin<P>>,
    /// The master side of its terminal, for `Resize` (the same descriptor as `stdin`'s).
    terminal: Option<Arc<Async<File>>>,
    /// What reads its stdout and its stderr, or its terminal; dropping them stops them and
    /// closes the pipes (or the reader's descriptor of the master).
    _pumps: Vec<P>,
}

/// An exit found by [`RunTable::collect_exits`] or [`RunTable::signal`], as the core's
/// `Input::Exited` wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The run whose leader exited.
    pub run: RunId,
    /// How it ended.
    pub status: ExitStatus,
    /// A signal reached its group while the leader was alive.
    pub signalled: bool,
}

impl<P> Run<P> {
    /// Its exit as reported: signalled only if a signal can have made it end this way.
    fn exit(&self, run: RunId, status: ExitStatus) -> Exit {
        let own_code = matches!(status, ExitStatus::Code(_));
        Exit {
            run,
            status,
            signalled: self.signalled && !(own_code && self.only_fatal),
        }
    }
}

/// Every run the core has not released yet. `P` is the driver's handle on a task that serves
/// one of a run's pipes (for example `smol::Task<()>`): dropping it must stop that task, and
/// the task must then drop what it holds.
pub struct RunTable<P> {
    live: BTreeMap<RunId, Run<P>>,
    /// Released before they exited (a contract breach of the core): killed, reaped when they
    /// exit.
    orphans: Vec<Pid>,
}

impl<P> Default for RunTable<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> RunTable<P> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            orphans: Vec::new(),
        }
    }

    /// Whether `run` was spawned and not released: events about other runs are stale.
    pub fn is_live(&self, run: RunId) -> bool {
        self.live.contains_key(&run)
    }

    /// How many runs are live (spawned and not released).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no run is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether `pid` is the leader of a live run: a process that must not be reaped before
    /// its run is released.
    pub fn is_leader(&self, pid: i32) -> bool {
        self.live.values().any(|run| run.pid.as_raw() == pid)
    }

    /// Spawns `spec` for `run`, placed as `placement` says (see [`process::spawn_placed`]), and
    /// starts reading its output with `serve(stream, fd)`, which returns a handle that stops
    /// the reader when dropped: its stdout and stderr pipes ([`Stream::Stdout`],
    /// [`Stream::Stderr`]), or, on a terminal ([`proc_state::Stdio::Terminal`]), a copy of the
    /// terminal's master side ([`Stream::Tty`], non-blocking; the reader must take `EIO` for
    /// end-of-file, as [`crate::pipes::pump`] does). Returns the pid, which is also the process
    /// group id.
    ///
    /// # Errors
    /// The reason, for people, when the process could not be started (`serve` is not called).
    pub fn spawn(
        &mut self,
        run: RunId,
        spec: &SpawnSpec,
        placement: SpawnPlacement<'_>,
        mut serve: impl FnMut(Stream, OwnedFd) -> P,
    ) -> Result<u32, String> {
        if self.live.contains_key(&run) {
            return Err(format!("internal error: {run} was spawned twice"));
        }
        let child = process::spawn_placed(spec, placement)?;
        let is_terminal = child.terminal.is_some();
        let mut pumps = Vec::with_capacity(2);
        let mut terminal = None;
        let mut stdin = child.stdin.map(OwnedFd::from);
        if let Some(master) = child.terminal {
            // A descriptor of its own for the reader (F_DUPFD_CLOEXEC, 3 or above): the
            // reactor registers each descriptor once, and the writer (stdin) and `Resize` keep
            // the other.
            match master.try_clone() {
                Ok(copy) => pumps.push(serve(Stream::Tty, copy)),
                Err(err) => eprintln!("proc-mcp: cannot read the terminal of {run}: {err}"),
            }
            stdin = Some(master);
        }
        let pipes = [
            (Stream::Stdout, child.stdout.map(OwnedFd::from)),
            (Stream::Stderr, child.stderr.map(OwnedFd::from)),
        ];
        for (stream, pipe) in pipes {
            if let Some(pipe) = pipe {
                pumps.push(serve(stream, pipe));
            }
        }
        let stdin = match stdin.map(|stdin| Async::new(File::from(stdin))) {
            None => None,
            Some(Ok(pipe)) => {
                let pipe = Arc::new(pipe);
                if is_terminal {
                    terminal = Some(pipe.clone());
                }
                Some(Stdin {
                    pipe,
                    waiting: None,
                })
            }
            Some(Err(err)) => {
                // Not registrable with the reactor: writes to it will be reported as failed.
                eprintln!("proc-mcp: cannot watch the stdin of {run}: {err}");
                None
            }
        };
        self.live.insert(
            run,
            Run {
                pid: child.pid,
                exited: false,
                signalled: false,
                only_fatal: true,
                stdin,
                terminal,
                _pumps: pumps,
            },
        );
        // pid > 0 for a child, so it fits.
        Ok(child.pid.as_raw().unsigned_abs())
    }

    /// Writes as much of `data` to `run`'s stdin (or, on a terminal, to its master side: typed
    /// on the terminal) as it takes now, without waiting, and returns how much that was (0
    /// when it is full). After a short write, `wait(pipe)` is started: a task that must report
    /// when the pipe (or the master) is writable again (the core's `StdinReady`). `None` for a
    /// run that was released.
    ///
    /// # Errors
    /// Why nothing more can be written, for people: the process closed its stdin (or exited),
    /// the terminal has no process any more (`EIO`: nothing holds its slave side open), or the
    /// stdin is not a pipe.
    pub fn write_stdin(
        &mut self,
        run: RunId,
        data: &[u8],
        wait: impl FnOnce(Arc<Async<File>>) -> P,
    ) -> Option<Result<usize, String>> {
        let entry = self.live.get_mut(&run)?;
        let on_terminal = entry.terminal.is_some();
        let Some(stdin) = entry.stdin.as_mut() else {
            return Some(Err(if on_terminal {
                "the process's terminal was closed".to_owned()
            } else {
                "the process's stdin is not a pipe (or was closed)".to_owned()
            }));
        };
        // Writing a master whose slave nobody holds any more succeeds, into nothing: poll(2)
        // tells, with POLLHUP (the task and everything it started have closed the terminal).
        if on_terminal && hung_up(stdin.pipe.get_ref().as_fd()) {
            entry.stdin = None;
            return Some(Err(TERMINAL_CLOSED.to_owned()));
        }
        let mut written = 0;
        while written < data.len() {
            match stdin.pipe.get_ref().write(&data[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    entry.stdin = None;
                    return Some(Err(
                        if on_terminal && err.raw_os_error() == Some(libc::EIO) {
                            TERMINAL_CLOSED.to_owned()
                        } else if err.kind() == io::ErrorKind::BrokenPipe {
                            "the process closed its stdin (or exited)".to_owned()
                        } else {
                            format!("cannot write to the process's stdin: {err}")
                        },
                    ));
                }
            }
        }
        if written < data.len() {
            stdin.waiting = Some(wait(stdin.pipe.clone()));
        }
        Some(Ok(written))
    }

    /// `run`'s stdin was reported writable: forgets the task that waited for it.
    pub fn stdin_ready(&mut self, run: RunId) {
        if let Some(Run {
            stdin: Some(stdin), ..
        }) = self.live.get_mut(&run)
        {
            stdin.waiting = None;
        }
    }

    /// Closes `run`'s stdin pipe: the process reads end-of-file. Nothing for a run on a
    /// terminal (the core never asks; end-of-file there is the `VEOF` character, typed).
    pub fn close_stdin(&mut self, run: RunId) {
        if let Some(entry) = self.live.get_mut(&run)
            && entry.terminal.is_none()
        {
            entry.stdin = None;
        }
    }

    /// Sets the window size of `run`'s terminal to `size` ([`process::set_window_size`]: ioctl
    /// `TIOCSWINSZ` on the master side, tty_ioctl(4); the kernel sends `SIGWINCH` to the
    /// terminal's foreground process group when the size changes). Nothing for a run that was
    /// released or has no terminal; a failure is reported on stderr.
    pub fn resize(&mut self, run: RunId, size: WindowSize) {
        let Some(terminal) = self
            .live
            .get(&run)
            .and_then(|entry| entry.terminal.as_ref())
        else {
            return;
        };
        if let Err(err) = process::set_window_size(terminal.get_ref().as_fd(), size) {
            eprintln!(
                "proc-mcp: cannot resize the terminal of {run} to {}x{}: {err}",
                size.rows, size.cols
            );
        }
    }

    /// Whether `run`'s foreground process waits for input, as the core's `QueryInput` asks
    /// (`proc_state::Output::QueryInput`), found by [`input::input_wanted`]: on a terminal,
    /// whether its foreground process group (tcgetpgrp(3)) is blocked reading it; with a
    /// stdin pipe, whether the run's process group is blocked reading that pipe. `None` when
    /// it cannot be known, and for a run that was released or has neither a terminal nor a
    /// stdin pipe (or whose stdin was closed).
    pub fn input_wanted(&self, run: RunId) -> Option<bool> {
        let entry = self.live.get(&run)?;
        if let Some(master) = &entry.terminal {
            return input::input_wanted(input::Source::Terminal(master.get_ref().as_fd()));
        }
        let stdin = entry.stdin.as_ref()?;
        input::input_wanted(input::Source::Pipe {
            write_end: stdin.pipe.get_ref().as_fd(),
            pgid: entry.pid.as_raw(),
        })
    }

    /// Sends `signal` to `run`'s process group; nothing for a run that was released or never
    /// started. Failures other than "already gone" are reported on stderr.
    ///
    /// Before signalling a leader not known to have exited, checks it (waitid `WNOWAIT`): if it
    /// has exited meanwhile, returns that exit (marked not signalled, unless an earlier signal
    /// reached it alive) for the caller to report now; the group still gets the signal, which
    /// reaches what is left of it. A leader that is not a zombie yet but already on its way out
    /// ([`is_exiting`]) is not counted as signalled either: it ends as it chose; nor is one that
    /// then exits with a code of its own although every signal sent would have killed it (the
    /// signal came as it was exiting).
    pub fn signal(&mut self, run: RunId, signal: Signal) -> Option<Exit> {
        let entry = self.live.get_mut(&run)?;
        let mut found = None;
        if !entry.exited {
            match process::exit_status(entry.pid) {
                Ok(Some(status)) => {
                    entry.exited = true;
                    found = Some(entry.exit(run, status));
                }
                Ok(None) => {
                    if !is_exiting(entry.pid) {
                        entry.signalled = true;
                        entry.only_fatal &= kills_by_default(entry.pid, signal);
                    }
                }
                Err(_) => {}
            }
        }
        if let Err(err) = process::signal_group(entry.pid, signal) {
            eprintln!(
                "proc-mcp: cannot send {signal} to process group {} of {run}: {err}",
                entry.pid
            );
        }
        found
    }

    /// After SIGCHLD: every live run whose process has exited since the last call, once per
    /// run, in run order. The processes are not reaped (waitid `WNOWAIT`). Also reaps the
    /// orphans that have exited.
    pub fn collect_exits(&mut self) -> Vec<Exit> {
        self.orphans
            .retain(|&pid| matches!(process::try_reap(pid), Ok(false)));
        let mut exits = Vec::new();
        for (&run, entry) in self.live.iter_mut().filter(|(_, e)| !e.exited) {
            let status = match process::exit_status(entry.pid) {
                Ok(None) => continue,
                Ok(Some(status)) => status,
                Err(err) => {
                    // Not our child any more (something else in this process reaped it, or set
                    // SIGCHLD to SIG_IGN): it is gone but its status is lost. Say so, so the
                    // core does not wait for it forever.
                    eprintln!(
                        "proc-mcp: cannot wait for process {} of {run}: {err}",
                        entry.pid
                    );
                    ExitStatus::Lost
                }
            };
            entry.exited = true;
            exits.push(entry.exit(run, status));
        }
        exits
    }

    /// Forgets `run`: stops its pumps, closes its pipes and reaps its process, which frees its
    /// pid and process group id. Nothing for an unknown run (e.g. one that failed to spawn).
    ///
    /// A process that is still running (the core breached its contract) has its process group
    /// killed and is reaped after a later [`RunTable::collect_exits`] or at
    /// [`RunTable::shutdown`], never blocking the caller.
    pub fn release(&mut self, run: RunId) {
        let Some(entry) = self.live.remove(&run) else {
            return;
        };
        self.dispose(run, entry);
    }

    /// Releases every run still in the table, killing the process groups of those still
    /// running, and reaps them (blocking). For the end of the server: no process it started
    /// may outlive it.
    pub fn shutdown(&mut self) {
        for (run, entry) in std::mem::take(&mut self.live) {
            self.dispose(run, entry);
        }
        for pid in std::mem::take(&mut self.orphans) {
            let _ = process::reap(pid);
        }
    }

    fn dispose(&mut self, run: RunId, entry: Run<P>) {
        let (pid, exited) = (entry.pid, entry.exited);
        // Stops the tasks serving its pipes, which close our ends.
        drop(entry);
        let still_running = if exited {
            Ok(false)
        } else {
            process::exit_status(pid).map(|status| status.is_none())
        };
        match still_running {
            Ok(false) => {
                if let Err(err) = process::reap(pid) {
                    eprintln!("proc-mcp: cannot reap process {pid} of {run}: {err}");
                }
            }
            Ok(true) => {
                eprintln!(
                    "proc-mcp: {run} was released while process {pid} still runs: \
                     killing its process group"
                );
                let _ = process::signal_group(pid, Signal::Kill);
                // Never block the loop on it: reap it after a later SIGCHLD (or at shutdown).
                self.orphans.push(pid);
            }
            // Not our child any more: nothing to reap.
            Err(_) => {}
        }
    }
}

/// Why a write to a terminal that no process holds any more fails.
const TERMINAL_CLOSED: &str = "the process's terminal was closed (no process has it open any more)";

/// Whether the terminal whose master is `master` has no process on its slave side any more:
/// poll(2) reports `POLLHUP` on the master then (pty(7)). False if poll fails.
fn hung_up(master: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut pollfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&master),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a timeout of 0 never blocks.
    let ready = unsafe { libc::poll(&raw mut pollfd, 1, 0) };
    ready > 0 && pollfd.revents & libc::POLLHUP != 0
}

/// Whether `pid` has begun to exit: `PF_EXITING` in the flags of `/proc/<pid>/stat` (field 9).
/// Set from the start of exit(2) (or of a death by signal) until it is a zombie, a stretch in
/// which it runs no code of its own any more and a signal can no longer change how it ends.
/// False when that cannot be read.
fn is_exiting(pid: Pid) -> bool {
    /// `PF_EXITING` of the kernel's task flags (include/linux/sched.h).
    const PF_EXITING: u64 = 0x4;
    let Ok(text) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name may contain anything: the fields that follow start after the last ')'.
    let Some(close) = text.iter().rposition(|&b| b == b')') else {
        return false;
    };
    std::str::from_utf8(&text[close + 1..])
        .ok()
        .and_then(|rest| rest.split_ascii_whitespace().nth(9 - 3))
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
}

/// Whether `signal` would end `pid` now: its default action ends a process and `pid` neither
/// catches nor ignores it (`SigCgt`, `SigIgn` of `/proc/<pid>/status`; `SIGKILL` always).
/// False when that cannot be read.
fn kills_by_default(pid: Pid, signal: Signal) -> bool {
    let fatal = matches!(
        signal,
        Signal::Hup
            | Signal::Int
            | Signal::Quit
            | Signal::Ill
            | Signal::Trap
            | Signal::Abrt
            | Signal::Bus
            | Signal::Fpe
            | Signal::Kill
            | Signal::Usr1
            | Signal::Segv
            | Signal::Usr2
            | Signal::Pipe
            | Signal::Alrm
            | Signal::Term
            | Signal::Xcpu
            | Signal::Xfsz
            | Signal::Vtalrm
            | Signal::Prof
            | Signal::Io
            | Signal::Sys
    );
    if !fatal {
        return false;
    }
    if signal == Signal::Kill {
        return true;
    }
    let Some(bit) = crate::signal::signal_number(signal)
        .and_then(|n| u32::try_from(n - 1).ok())
        .filter(|&bit| bit < 64)
    else {
        return false;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    };
    match (mask("SigCgt:"), mask("SigIgn:")) {
        (Some(caught), Some(ignored)) => (caught | ignored) & (1 << bit) == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use async_channel::{Receiver, Sender};
    use async_executor::{LocalExecutor, Task};
    use async_io::Timer;
    use async_signal::{Signal as OsSignal, Signals};
    use futures_lite::StreamExt as _;
    use proc_state::{ExitStatus, RunId, Signal, SpawnSpec, Stream, WindowSize};

    use super::RunTable;
    use crate::driver::Event;
    use crate::pipes::{self, Pool};
    use crate::testutil::{group_members, sh, spec, stat, wait_terminated};

    /// The table as a driver uses it: pumps on a local executor, into a small pool.
    struct Runs<'ex> {
        table: RunTable<Task<()>>,
        executor: &'ex LocalExecutor<'static>,
        events: Sender<Event>,
        pool: Pool,
    }

    impl Runs<'_> {
        fn spawn(&mut self, run: RunId, spec: &SpawnSpec) -> Result<u32, String> {
            let (executor, events, pool) = (self.executor, &self.events, &self.pool);
            self.table
                .spawn(run, spec, Default::default(), |stream, pipe| {
                    executor.spawn(pipes::pump(run, stream, pipe, pool.clone(), events.clone()))
                })
        }

        /// Writes what the pipe takes now; on a short write, the ready event follows.
        fn write(&mut self, run: RunId, data: &[u8]) -> Option<Result<usize, String>> {
            let (executor, events) = (self.executor, &self.events);
            self.table.write_stdin(run, data, |pipe| {
                executor.spawn(pipes::stdin_ready(run, pipe, events.clone()))
            })
        }
    }

    impl std::ops::Deref for Runs<'_> {
        type Target = RunTable<Task<()>>;
        fn deref(&self) -> &Self::Target {
            &self.table
        }
    }

    impl std::ops::DerefMut for Runs<'_> {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.table
        }
    }

    /// What the event loop would have fed the core for one run.
    #[derive(Debug, Default)]
    struct Seen {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        tty: Vec<u8>,
        closed: Vec<Stream>,
        exit: Option<ExitStatus>,
        chunks: usize,
        /// `StdinReady` events.
        ready: usize,
    }

    impl Seen {
        fn done(&self) -> bool {
            (self.closed.len() == 2 || self.closed == [Stream::Tty]) && self.exit.is_some()
        }

        /// Whether what came from its terminal contains `text`.
        fn tty_has(&self, text: &str) -> bool {
            self.tty
                .windows(text.len())
                .any(|window| window == text.as_bytes())
        }
    }

    /// The loop's event sources without the core: events and SIGCHLD.
    struct Harness {
        events: Receiver<Event>,
        signals: Signals,
        seen: BTreeMap<RunId, Seen>,
    }

    impl Harness {
        /// Waits for the next event (or SIGCHLD) and records it; panics after 30 s.
        async fn step(&mut self, runs: &mut Runs<'_>) {
            enum Woke {
                Event(Event),
                Child,
            }
            let woke = futures_lite::future::or(
                async { Woke::Event(self.events.recv().await.expect("channel open")) },
                async {
                    self.signals.next().await;
                    Woke::Child
                },
            );
            let woke = futures_lite::future::or(woke, async {
                Timer::after(Duration::from_secs(30)).await;
                panic!("no event within 30 s");
            })
            .await;
            match woke {
                Woke::Child => {
                    for exit in runs.collect_exits() {
                        let seen = self.seen.entry(exit.run).or_default();
                        assert_eq!(seen.exit, None, "{} exited twice", exit.run);
                        seen.exit = Some(exit.status);
                    }
                }
                Woke::Event(Event::Output { run, stream, chunk }) => {
                    let seen = self.seen.entry(run).or_default();
                    seen.chunks += 1;
                    match stream {
                        Stream::Stdout => seen.stdout.extend_from_slice(chunk.bytes()),
                        Stream::Stderr => seen.stderr.extend_from_slice(chunk.bytes()),
                        Stream::Tty => seen.tty.extend_from_slice(chunk.bytes()),
                    }
                }
                Woke::Event(Event::StreamClosed { run, stream }) => {
                    self.seen.entry(run).or_default().closed.push(stream);
                }
                Woke::Event(Event::StdinReady { run }) => {
                    runs.stdin_ready(run);
                    self.seen.entry(run).or_default().ready += 1;
                }
                Woke::Event(other) => panic!("unexpected {other:?}"),
            }
        }

        async fn until(&mut self, runs: &mut Runs<'_>, done: impl Fn(&Self) -> bool) {
            while !done(self) {
                self.step(runs).await;
            }
        }
    }

    /// Runs `test` with a fresh table of runs on a local executor.
    fn with_runs(test: impl AsyncFnOnce(&mut Runs<'_>, &mut Harness)) {
        let executor = LocalExecutor::new();
        let signals = Signals::new([OsSignal::Child]).expect("SIGCHLD handler");
        let (tx, rx) = async_channel::bounded(4);
        let mut harness = Harness {
            events: rx,
            signals,
            seen: BTreeMap::new(),
        };
        async_io::block_on(executor.run(async {
            let mut runs = Runs {
                table: RunTable::new(),
                executor: &executor,
                events: tx,
                pool: Pool::new(2),
            };
            test(&mut runs, &mut harness).await;
            runs.shutdown();
        }));
    }

    #[test]
    fn output_closes_and_exit_are_reported_then_release_reaps() {
        with_runs(async |runs, h| {
            let run = RunId(1);
            let pid = runs
                .spawn(run, &sh("echo out; echo err >&2; exit 3"))
                .expect("spawn");
            let pid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            assert_eq!(seen.stdout, b"out\n");
            assert_eq!(seen.stderr, b"err\n");
            assert_eq!(seen.exit, Some(ExitStatus::Code(3)));
            // Exited but not reaped: the zombie holds pid and pgid until release.
            assert!(runs.is_live(run));
            assert_eq!(stat(pid).map(|s| s.state), Some('Z'));
            runs.release(run);
            assert!(!runs.is_live(run));
            assert_eq!(stat(pid), None);
            // Released: no signal reaches anything any more.
            runs.signal(run, Signal::Kill);
        });
    }

    #[test]
    fn stop_reaches_the_whole_group_and_is_reported_once() {
        with_runs(async |runs, h| {
            let run = RunId(7);
            let pid = runs
                .spawn(run, &sh("sleep 1000 & sleep 1000 & echo ready; wait"))
                .expect("spawn");
            let pgid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"ready\n")
            })
            .await;
            let members = group_members(pgid);
            assert_eq!(members.len(), 3, "{members:?}");
            runs.signal(run, Signal::Term);
            h.until(runs, |h| h.seen[&run].done()).await;
            assert_eq!(h.seen[&run].exit, Some(ExitStatus::Signaled(Signal::Term)));
            for (pid, _) in members {
                assert!(
                    wait_terminated(pid, Duration::from_secs(10)),
                    "{pid} survived"
                );
            }
            runs.release(run);
            assert!(group_members(pgid).iter().all(|(_, state)| *state == 'Z'));
        });
    }

    #[test]
    fn a_spawn_failure_leaves_nothing_behind() {
        with_runs(async |runs, _| {
            let mut bad = spec("true", &[]);
            bad.cwd = Some("/nonexistent".to_owned());
            let err = runs.spawn(RunId(1), &bad).expect_err("fails");
            assert_eq!(err, "working directory \"/nonexistent\" does not exist");
            assert!(!runs.is_live(RunId(1)));
            // The core releases failed runs too: a no-op.
            runs.release(RunId(1));
            runs.signal(RunId(1), Signal::Term);
        });
    }

    #[test]
    fn a_flood_arrives_complete_in_bounded_chunks() {
        with_runs(async |runs, h| {
            let run = RunId(2);
            // 10 MB on stdout and 1 MB on stderr at once, through 2 pooled buffers.
            runs.spawn(
                run,
                &sh("head -c 1000000 /dev/zero >&2 & head -c 10000000 /dev/zero; wait"),
            )
            .expect("spawn");
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            assert_eq!(
                (seen.stdout.len(), seen.stderr.len()),
                (10_000_000, 1_000_000)
            );
            assert!(seen.stdout.iter().chain(&seen.stderr).all(|&b| b == 0));
            assert!(seen.chunks >= 11_000_000 / pipes::CHUNK_BYTES);
            assert_eq!(seen.exit, Some(ExitStatus::Code(0)));
            runs.release(run);
        });
    }

    #[test]
    fn many_runs_exit_each_reported_once() {
        with_runs(async |runs, h| {
            let ids: Vec<_> = (0..20u64).map(RunId).collect();
            for &run in &ids {
                runs.spawn(run, &sh(&format!("exit {}", run.0)))
                    .expect("spawn");
            }
            h.until(runs, |h| {
                ids.iter().all(|r| h.seen.get(r).is_some_and(Seen::done))
            })
            .await;
            for &run in &ids {
                let code = i32::try_from(run.0).expect("small");
                assert_eq!(h.seen[&run].exit, Some(ExitStatus::Code(code)));
                runs.release(run);
            }
        });
    }

    #[test]
    fn releasing_a_running_process_kills_its_group() {
        with_runs(async |runs, _| {
            let run = RunId(3);
            let pid = runs.spawn(run, &spec("sleep", &["1000"])).expect("spawn");
            let pid = i32::try_from(pid).expect("pid");
            runs.release(run);
            assert!(wait_terminated(pid, Duration::from_secs(10)));
            // Reaped at shutdown (or after the next SIGCHLD), never blocking the loop.
        });
    }

    #[test]
    fn release_closes_pipes_held_by_an_escaped_grandchild() {
        with_runs(async |runs, h| {
            let run = RunId(4);
            let pid = runs
                .spawn(run, &sh("sleep 1000 & echo started"))
                .expect("spawn");
            let pgid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| h.seen.get(&run).is_some_and(|s| s.exit.is_some()))
                .await;
            // The sleep still holds stdout and stderr open.
            assert!(h.seen[&run].closed.is_empty());
            runs.release(run);
            let sleepers: Vec<_> = group_members(pgid)
                .into_iter()
                .filter(|(_, state)| *state != 'Z')
                .collect();
            assert_eq!(sleepers.len(), 1, "{sleepers:?}");
            // Clean up the orphan (the core would have signalled the group before release).
            // SAFETY: plain syscall on a process group we created.
            unsafe { nix::libc::killpg(pgid, nix::libc::SIGKILL) };
            assert!(wait_terminated(sleepers[0].0, Duration::from_secs(10)));
        });
    }

    /// `spec` with stdin piped.
    fn piped(mut spec: SpawnSpec) -> SpawnSpec {
        spec.stdio = proc_state::Stdio::Pipes {
            stdin: proc_state::StdinMode::Piped,
        };
        spec
    }

    #[test]
    fn stdin_writes_arrive_in_order_and_closing_ends_the_reader() {
        with_runs(async |runs, h| {
            let run = RunId(5);
            runs.spawn(run, &piped(spec("cat", &[]))).expect("spawn");
            assert_eq!(runs.write(run, b"hello\n"), Some(Ok(6)));
            assert_eq!(runs.write(run, b"bye\n"), Some(Ok(4)));
            runs.close_stdin(run);
            assert_eq!(
                runs.write(run, b"late\n"),
                Some(Err(
                    "the process's stdin is not a pipe (or was closed)".to_owned()
                ))
            );
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            assert_eq!(h.seen[&run].stdout, b"hello\nbye\n");
            // cat saw end-of-file and exited on its own.
            assert_eq!(h.seen[&run].exit, Some(ExitStatus::Code(0)));
            runs.release(run);
        });
    }

    #[test]
    fn a_write_bigger_than_the_pipe_takes_what_fits_and_ready_follows() {
        with_runs(async |runs, h| {
            let run = RunId(6);
            // A reader that waits for a go before reading: the pipe fills up.
            runs.spawn(run, &piped(sh("read go; cat"))).expect("spawn");
            let data = vec![b'x'; 4 << 20];
            let mut sent = 0;
            let Some(Ok(n)) = runs.write(run, b"go\n") else {
                panic!("the first line fits");
            };
            assert_eq!(n, 3);
            // Everything that fits now, never blocking: at most the pipe's capacity.
            loop {
                let Some(Ok(n)) = runs.write(run, &data[sent..]) else {
                    panic!("write failed");
                };
                sent += n;
                if sent == data.len() {
                    break;
                }
                let ready = h.seen.get(&run).map_or(0, |s| s.ready);
                h.until(runs, |h| h.seen.get(&run).is_some_and(|s| s.ready > ready))
                    .await;
            }
            runs.close_stdin(run);
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            assert_eq!(seen.stdout.len(), 4 << 20);
            assert!(seen.ready > 0, "the pipe was full at least once");
            runs.release(run);
        });
    }

    #[test]
    fn writing_to_a_process_that_closed_stdin_is_an_error() {
        with_runs(async |runs, h| {
            let run = RunId(7);
            runs.spawn(run, &piped(sh("exec 0<&-; echo closed; sleep 1000")))
                .expect("spawn");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"closed\n")
            })
            .await;
            assert_eq!(
                runs.write(run, b"anyone?\n"),
                Some(Err("the process closed its stdin (or exited)".to_owned()))
            );
            let _ = runs.signal(run, Signal::Kill);
            h.until(runs, |h| h.seen[&run].done()).await;
            runs.release(run);
        });
    }

    #[test]
    fn stdin_that_is_not_a_pipe_is_refused_at_once() {
        with_runs(async |runs, h| {
            let run = RunId(8);
            runs.spawn(run, &sh("exit 0")).expect("spawn");
            assert_eq!(
                runs.write(run, b"x"),
                Some(Err(
                    "the process's stdin is not a pipe (or was closed)".to_owned()
                ))
            );
            // Released or unknown runs: nothing to report.
            assert_eq!(runs.write(RunId(99), b"x"), None);
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            runs.release(run);
            assert_eq!(runs.write(run, b"x"), None);
        });
    }

    #[test]
    fn a_signal_for_a_leader_that_already_exited_reports_the_exit_instead() {
        with_runs(async |runs, h| {
            let run = RunId(9);
            let pid = runs.spawn(run, &sh("exit 3")).expect("spawn");
            let pid = i32::try_from(pid).expect("pid");
            // Exited (a SIGCHLD came: this test's or another's), and not collected yet.
            while stat(pid).is_some_and(|s| s.state != 'Z') {
                h.signals.next().await;
            }
            let exit = runs.signal(run, Signal::Term).expect("the exit is found");
            assert_eq!(exit.status, ExitStatus::Code(3));
            assert!(!exit.signalled, "the signal came too late to count");
            assert!(runs.collect_exits().is_empty(), "reported once");
            runs.release(run);
        });
    }

    #[test]
    fn a_leader_is_exiting_from_its_exit_on() {
        with_runs(async |runs, h| {
            let run = RunId(11);
            let pid = runs
                .spawn(run, &piped(sh("read x; exit 3")))
                .expect("spawn");
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
            assert!(!super::is_exiting(pid), "waiting for its stdin");
            // `read` sees end-of-file and the shell exits.
            runs.close_stdin(run);
            while stat(pid.as_raw()).is_some_and(|s| s.state != 'Z') {
                h.signals.next().await;
            }
            assert!(super::is_exiting(pid), "a zombie has exited");
            assert!(runs.signal(run, Signal::Term).is_some());
            runs.release(run);
            assert!(!super::is_exiting(pid), "gone");
        });
    }

    #[test]
    fn a_signal_kills_by_default_unless_caught_or_ignored() {
        with_runs(async |runs, h| {
            let run = RunId(12);
            let script =
                "trap '' TERM; trap 'exit 5' USR1; echo ready; while :; do sleep 0.01; done";
            let pid = runs.spawn(run, &sh(script)).expect("spawn");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"ready\n")
            })
            .await;
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
            assert!(!super::kills_by_default(pid, Signal::Term), "ignored");
            assert!(!super::kills_by_default(pid, Signal::Usr1), "caught");
            // (dash catches SIGINT, even when not interactive.)
            assert!(super::kills_by_default(pid, Signal::Hup));
            assert!(super::kills_by_default(pid, Signal::Kill));
            assert!(
                !super::kills_by_default(pid, Signal::Winch),
                "ignored by default"
            );
            // Caught, and the handler ends it with a code: the signal did it.
            assert_eq!(runs.signal(run, Signal::Usr1), None);
            let mut exits = Vec::new();
            while exits.is_empty() {
                h.signals.next().await;
                exits = runs.collect_exits();
            }
            assert_eq!(exits[0].status, ExitStatus::Code(5));
            assert!(exits[0].signalled);
            runs.release(run);
        });
    }

    #[test]
    fn an_exit_code_after_a_signal_that_would_have_killed_is_not_the_signals_doing() {
        with_runs(async |runs, h| {
            let run = RunId(13);
            // SIGHUP blocked (neither caught nor ignored): sent, it stays pending and never
            // reaches the process, which then exits 3 of its own when its stdin closes.
            let script = "import signal, sys\n\
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})\n\
                print('ready', flush=True)\n\
                sys.stdin.read()\n\
                sys.exit(3)";
            runs.spawn(run, &piped(spec("python3", &["-c", script])))
                .expect("spawn");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"ready\n")
            })
            .await;
            assert_eq!(runs.signal(run, Signal::Hup), None, "alive");
            runs.close_stdin(run);
            let mut exits = Vec::new();
            while exits.is_empty() {
                h.signals.next().await;
                exits = runs.collect_exits();
            }
            assert_eq!(exits[0].status, ExitStatus::Code(3));
            assert!(!exits[0].signalled, "the signal never reached it");
            runs.release(run);
        });
    }

    #[test]
    fn a_signal_that_reaches_a_live_leader_is_remembered_in_its_exit() {
        with_runs(async |runs, h| {
            let run = RunId(10);
            runs.spawn(run, &spec("sleep", &["1000"])).expect("spawn");
            assert_eq!(runs.signal(run, Signal::Term), None);
            let mut exits = Vec::new();
            while exits.is_empty() {
                h.signals.next().await;
                exits = runs.collect_exits();
            }
            assert_eq!(exits[0].status, ExitStatus::Signaled(Signal::Term));
            assert!(exits[0].signalled);
            runs.release(run);
        });
    }

    /// `spec` on a terminal of `rows` x `cols`.
    fn on_terminal(mut spec: SpawnSpec, rows: u16, cols: u16) -> SpawnSpec {
        spec.stdio = proc_state::Stdio::Terminal(WindowSize { rows, cols });
        spec
    }

    #[test]
    fn terminal_output_arrives_as_tty_then_the_terminal_closes() {
        with_runs(async |runs, h| {
            let run = RunId(20);
            let script = "import sys; print(sys.stdin.isatty(), sys.stdout.isatty(), \
                          sys.stderr.isatty()); print('err', file=sys.stderr)";
            runs.spawn(run, &on_terminal(spec("python3", &["-c", script]), 40, 120))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            // stdout and stderr alike, with ONLCR's line endings; no pipes.
            assert_eq!(
                String::from_utf8_lossy(&seen.tty),
                "True True True\r\nerr\r\n"
            );
            assert_eq!((seen.stdout.len(), seen.stderr.len()), (0, 0));
            assert_eq!(seen.closed, [Stream::Tty]);
            assert_eq!(seen.exit, Some(ExitStatus::Code(0)));
            runs.release(run);
        });
    }

    #[test]
    fn the_terminal_has_the_size_asked_for_and_resize_reaches_the_task() {
        with_runs(async |runs, h| {
            let run = RunId(21);
            let script = "import os, signal\n\
                def on_winch(*_):\n    \
                    cols, rows = os.get_terminal_size()\n    \
                    print('size', rows, cols, flush=True)\n\
                signal.signal(signal.SIGWINCH, on_winch)\n\
                print('ready', os.popen('stty size').read().strip(), flush=True)\n\
                while True:\n    signal.pause()";
            runs.spawn(run, &on_terminal(spec("python3", &["-c", script]), 40, 120))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("\n")).await;
            assert_eq!(
                String::from_utf8_lossy(&h.seen[&run].tty),
                "ready 40 120\r\n"
            );
            runs.resize(
                run,
                WindowSize {
                    rows: 30,
                    cols: 100,
                },
            );
            h.until(runs, |h| h.seen[&run].tty_has("size 30 100\r\n"))
                .await;
            runs.signal(run, Signal::Kill);
            h.until(runs, |h| h.seen[&run].done()).await;
            runs.release(run);
            // Released (or unknown): nothing happens.
            runs.resize(run, WindowSize { rows: 1, cols: 1 });
            runs.resize(RunId(99), WindowSize { rows: 1, cols: 1 });
        });
    }

    #[test]
    fn ctrl_c_typed_on_the_terminal_interrupts_its_foreground_group() {
        with_runs(async |runs, h| {
            let run = RunId(22);
            let pid = runs
                .spawn(
                    run,
                    &on_terminal(sh("echo ready; sleep 1000; echo after $?"), 24, 80),
                )
                .expect("spawn");
            h.seen.entry(run).or_default();
            let pgid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            // The shell's sleep is running, in the terminal's foreground group (the task's).
            let sleeper = crate::testutil::wait_for(Duration::from_secs(10), || {
                group_members(pgid)
                    .into_iter()
                    .find(|&(member, _)| crate::testutil::cmdline(member) == "sleep 1000")
            })
            .expect("the sleep started")
            .0;
            assert_eq!(runs.write(run, b"\x03"), Some(Ok(1)));
            h.until(runs, |h| h.seen[&run].done()).await;
            let seen = &h.seen[&run];
            // ISIG: ^C became SIGINT for the whole group, which ended the sleep and the shell
            // (or the shell, if it outlived it, said so).
            assert!(
                seen.exit == Some(ExitStatus::Signaled(Signal::Int)) || seen.tty_has("after 130"),
                "{:?} {:?}",
                seen.exit,
                String::from_utf8_lossy(&seen.tty)
            );
            assert!(wait_terminated(sleeper, Duration::from_secs(10)));
            runs.release(run);
        });
    }

    #[test]
    fn writes_to_a_terminal_are_typed_and_close_stdin_is_ignored() {
        with_runs(async |runs, h| {
            let run = RunId(23);
            runs.spawn(run, &on_terminal(spec("cat", &[]), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            // Never sent for a terminal run; ignored if it comes.
            runs.close_stdin(run);
            assert_eq!(runs.write(run, b"hello\n"), Some(Ok(6)));
            // The echo, then cat's copy.
            h.until(runs, |h| h.seen[&run].tty_has("hello\r\nhello\r\n"))
                .await;
            // VEOF at the start of a line: cat reads end-of-file and exits.
            assert_eq!(runs.write(run, b"\x04"), Some(Ok(1)));
            h.until(runs, |h| h.seen[&run].done()).await;
            assert_eq!(
                String::from_utf8_lossy(&h.seen[&run].tty),
                "hello\r\nhello\r\n"
            );
            assert_eq!(h.seen[&run].exit, Some(ExitStatus::Code(0)));
            // Nothing holds the terminal any more: said, not written into nothing.
            assert_eq!(
                runs.write(run, b"x"),
                Some(Err(super::TERMINAL_CLOSED.to_owned()))
            );
            runs.release(run);
            assert_eq!(runs.write(run, b"x"), None);
        });
    }

    #[test]
    fn a_write_bigger_than_the_terminal_takes_what_fits_and_ready_follows() {
        with_runs(async |runs, h| {
            let run = RunId(24);
            runs.spawn(
                run,
                &on_terminal(sh("stty -echo; echo ready; exec cat >/dev/null"), 24, 80),
            )
            .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            let line = [vec![b'x'; 99], vec![b'\n']].concat();
            let data = line.repeat(20_000);
            let mut sent = 0;
            loop {
                let Some(Ok(n)) = runs.write(run, &data[sent..]) else {
                    panic!("write failed");
                };
                sent += n;
                if sent == data.len() {
                    break;
                }
                let ready = h.seen[&run].ready;
                h.until(runs, |h| h.seen[&run].ready > ready).await;
            }
            assert!(
                h.seen[&run].ready > 0,
                "the terminal was full at least once"
            );
            assert_eq!(runs.write(run, b"\x04"), Some(Ok(1)));
            h.until(runs, |h| h.seen[&run].done()).await;
            assert_eq!(h.seen[&run].exit, Some(ExitStatus::Code(0)));
            runs.release(run);
        });
    }

    /// What `input_wanted` says of `run` once it says `want`, or after 10 s of asking (every
    /// 10 ms, the pumps running meanwhile): a process may need a moment to block.
    async fn input_becomes(runs: &Runs<'_>, run: RunId, want: Option<bool>) -> Option<bool> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = runs.input_wanted(run);
            if got == want || std::time::Instant::now() > deadline {
                return got;
            }
            Timer::after(Duration::from_millis(10)).await;
        }
    }

    /// Kills `run`'s group, waits for its end and releases it.
    async fn kill_and_release(runs: &mut Runs<'_>, h: &mut Harness, run: RunId) {
        let _ = runs.signal(run, Signal::Kill);
        h.until(runs, |h| h.seen[&run].done()).await;
        runs.release(run);
    }

    #[test]
    fn a_python_prompt_on_a_terminal_waits_for_input() {
        with_runs(async |runs, h| {
            let run = RunId(30);
            runs.spawn(run, &on_terminal(spec("python3", &["-q", "-i"]), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has(">>> ")).await;
            assert_eq!(input_becomes(runs, run, Some(true)).await, Some(true));
            kill_and_release(runs, h, run).await;
            assert_eq!(runs.input_wanted(run), None, "released");
        });
    }

    #[test]
    fn a_shell_read_on_a_terminal_waits_for_input_until_it_gets_a_line() {
        with_runs(async |runs, h| {
            let run = RunId(31);
            let script = "echo ready; read a; echo got $a; sleep 1000";
            runs.spawn(run, &on_terminal(sh(script), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            assert_eq!(input_becomes(runs, run, Some(true)).await, Some(true));
            assert_eq!(runs.write(run, b"x\n"), Some(Ok(2)));
            h.until(runs, |h| h.seen[&run].tty_has("got x\r\n")).await;
            // The shell waits for its sleep, which sleeps: neither reads.
            assert_eq!(input_becomes(runs, run, Some(false)).await, Some(false));
            kill_and_release(runs, h, run).await;
        });
    }

    #[test]
    fn a_read_of_dev_tty_is_a_read_of_the_terminal() {
        with_runs(async |runs, h| {
            let run = RunId(38);
            let script = "echo ready; read a </dev/tty; echo got $a; sleep 1000";
            runs.spawn(run, &on_terminal(sh(script), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            assert_eq!(input_becomes(runs, run, Some(true)).await, Some(true));
            assert_eq!(runs.write(run, b"y\n"), Some(Ok(2)));
            h.until(runs, |h| h.seen[&run].tty_has("got y\r\n")).await;
            kill_and_release(runs, h, run).await;
        });
    }

    #[test]
    fn a_busy_loop_on_a_terminal_does_not_wait_for_input() {
        with_runs(async |runs, h| {
            let run = RunId(32);
            let script = "print('ready', flush=True)\nwhile True: pass";
            runs.spawn(run, &on_terminal(spec("python3", &["-c", script]), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            for _ in 0..20 {
                assert_eq!(runs.input_wanted(run), Some(false));
            }
            kill_and_release(runs, h, run).await;
        });
    }

    #[test]
    fn a_sleeping_foreground_group_does_not_wait_for_input() {
        with_runs(async |runs, h| {
            let run = RunId(33);
            runs.spawn(run, &on_terminal(sh("echo ready; sleep 30"), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            assert_eq!(input_becomes(runs, run, Some(false)).await, Some(false));
            kill_and_release(runs, h, run).await;
        });
    }

    #[test]
    fn poll_on_the_terminal_alone_waits_for_input_and_select_on_more_is_unknown() {
        with_runs(async |runs, h| {
            let run = RunId(34);
            // poll(2) on descriptor 0 alone, then select(2) on it and a pipe.
            let script = "import os, select, sys\n\
                p = select.poll(); p.register(0, select.POLLIN)\n\
                print('ready', flush=True)\n\
                p.poll(); sys.stdin.readline()\n\
                r, w = os.pipe()\n\
                print('both', flush=True)\n\
                select.select([0, r], [], [])";
            runs.spawn(run, &on_terminal(spec("python3", &["-c", script]), 24, 80))
                .expect("spawn");
            h.seen.entry(run).or_default();
            h.until(runs, |h| h.seen[&run].tty_has("ready\r\n")).await;
            assert_eq!(input_becomes(runs, run, Some(true)).await, Some(true));
            assert_eq!(runs.write(run, b"x\n"), Some(Ok(2)));
            h.until(runs, |h| h.seen[&run].tty_has("both\r\n")).await;
            assert_eq!(input_becomes(runs, run, None).await, None);
            kill_and_release(runs, h, run).await;
        });
    }

    #[test]
    fn a_pipe_reader_waits_for_input_and_runs_without_stdin_are_unknown() {
        with_runs(async |runs, h| {
            let run = RunId(35);
            runs.spawn(run, &piped(spec("cat", &[]))).expect("spawn");
            h.seen.entry(run).or_default();
            assert_eq!(input_becomes(runs, run, Some(true)).await, Some(true));
            // Closed: nothing more to ask about.
            runs.close_stdin(run);
            assert_eq!(runs.input_wanted(run), None);
            h.until(runs, |h| h.seen[&run].done()).await;
            runs.release(run);

            let run = RunId(36);
            runs.spawn(run, &sh("echo ready; sleep 1000"))
                .expect("spawn");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"ready\n")
            })
            .await;
            assert_eq!(runs.input_wanted(run), None, "no stdin");
            assert_eq!(runs.input_wanted(RunId(99)), None, "unknown run");
            kill_and_release(runs, h, run).await;
        });
    }

    #[test]
    fn a_pipe_run_busy_elsewhere_does_not_wait_for_input() {
        with_runs(async |runs, h| {
            let run = RunId(37);
            runs.spawn(run, &piped(sh("echo ready; sleep 1000")))
                .expect("spawn");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"ready\n")
            })
            .await;
            assert_eq!(input_becomes(runs, run, Some(false)).await, Some(false));
            kill_and_release(runs, h, run).await;
        });
    }
}

//! A proc-mcp server with no async runtime: proc-state driven by std threads, channels and
//! poll(2). It is a complete driver in one file, written to be read next to "Writing a driver"
//! in proc-state's crate docs. Serve MCP over stdio with:
//!
//! ```text
//! cargo run --example std_driver
//! ```
//!
//! One loop owns the [`Server`]; everything that can block runs on a thread of its own and
//! reports to the loop through one bounded channel:
//! - the client reader reads stdin once per permit the loop gives it, and the loop gives one
//!   only while the core wants client bytes (the client's backpressure);
//! - the client writer writes each line to stdout and reports it written;
//! - per run: a thread per output pipe, one that waits for the leader's exit without reaping
//!   it (`waitid(WNOWAIT)`), and after a short stdin write one that waits for room. They also
//!   poll a "cancel" pipe whose write end the run holds, so dropping the run ends them;
//! - per port probe, a thread that tries to connect; and one that takes SIGTERM and SIGINT.
//!
//! Left out, compared with the real driver (`crates/proc-os`): escaped processes are not
//! looked for (every sweep finds none), there is no cgroup or environment-tag containment and
//! no raised file limit, and `signalled` means only "a signal was sent while the leader was
//! alive" (proc-os also asks `/proc` whether the leader was already exiting).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::hash::BuildHasher as _;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{SigSet, SigmaskHow, Signal as NixSignal, killpg, raise, sigprocmask};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpid, getppid, pipe, setsid};
use proc_state::{
    Config, ExitStatus, IdGenerator, Input, Instant, Now, Output, PROBE_TIMEOUT, ProbeId,
    ProbeOutcome, ProbeTarget, RunId, Server, Signal, SpawnSpec, StdinMode, Stdio as SpawnStdio,
    Stream,
};

/// Events in flight to the loop at most; a thread that finds the channel full waits (so a
/// task that prints faster than the loop handles it is slowed down, not buffered without end).
const EVENT_QUEUE: usize = 64;
/// Bytes read from a pipe or from the client at once.
const READ_BYTES: usize = 64 << 10;
/// How long the server waits, at exit, for the client to take the last lines.
const EXIT_PATIENCE: Duration = Duration::from_secs(1);

/// What a thread saw, sent to the loop.
enum Event {
    ClientBytes(Vec<u8>),
    ClientEof,
    /// The writer wrote and flushed one line of this many bytes.
    Transmitted(usize),
    /// The client's stdout is closed: as good as end-of-file on stdin.
    ClientGone,
    /// The writer has written every line it was given (the loop has ended).
    WriterDone,
    Output {
        run: RunId,
        stream: Stream,
        bytes: Vec<u8>,
    },
    Closed {
        run: RunId,
        stream: Stream,
    },
    Exited {
        run: RunId,
        pid: Pid,
        status: ExitStatus,
    },
    StdinReady {
        run: RunId,
    },
    Probed {
        probe: ProbeId,
        outcome: ProbeOutcome,
    },
    Terminate,
}

/// What woke the loop up.
enum Wake {
    /// An input that carrying out an output produced (`Spawned`, `StdinWritten`, ...).
    Own(Input<'static>),
    Event(Event),
    Timer,
}

/// One spawned process, from `Spawn` to `Release`.
struct Run {
    /// Also its process group id, reserved until we reap it at `Release`.
    pid: Pid,
    /// `Exited` was fed for it: the leader is a zombie.
    exited: bool,
    /// A signal was sent to its group while the leader was alive.
    signalled: bool,
    /// Our end of its stdin (non-blocking), while open and piped.
    stdin: Option<Arc<ChildStdin>>,
    /// The read end of the cancel pipe, polled by the run's threads.
    cancelled: Arc<OwnedFd>,
    /// The write end: dropping it (with the run) wakes those threads, which then end and close
    /// their pipes.
    _cancel: OwnedFd,
}

struct Driver {
    server: Server,
    events: SyncSender<Event>,
    /// Inputs our own outputs produced, fed one per turn before anything new.
    own: VecDeque<Input<'static>>,
    runs: BTreeMap<RunId, Run>,
    /// Released before their exit (the core never does this): killed, reaped once they exit.
    orphans: Vec<Pid>,
    to_client: Sender<Vec<u8>>,
    permits: Sender<()>,
    /// The client reader holds a permit: bytes (or end-of-file) are on their way.
    reading: bool,
    /// Bytes read under an earlier permit, held while the core does not want them.
    held: Option<Vec<u8>>,
    client_eof: bool,
    /// The signals blocked for the thread that waits for them.
    blocked: SigSet,
    origin: std::time::Instant,
}

fn main() -> io::Result<()> {
    // SIGTERM and SIGINT go to a thread that waits for them: blocked here, so in every thread
    // started from now on (and unblocked in the children, which would inherit the mask).
    let mut terminate = SigSet::empty();
    terminate.add(NixSignal::SIGTERM);
    terminate.add(NixSignal::SIGINT);
    terminate.thread_block()?;

    let (events, received) = mpsc::sync_channel(EVENT_QUEUE);
    let to_signals = events.clone();
    thread::spawn(
        move || {
            while terminate.wait().is_ok() && to_signals.send(Event::Terminate).is_ok() {}
        },
    );
    let mut config = Config::default();
    config.server_name = "proc-state-std-driver".to_owned();
    if let Some(dir) = std::env::current_dir()
        .ok()
        .and_then(|d| d.to_str().map(String::from))
    {
        config.cwd = dir;
    }
    let mut driver = Driver {
        server: Server::new(config, task_ids()),
        permits: client_reader(events.clone()),
        to_client: client_writer(events.clone()),
        events,
        own: VecDeque::new(),
        runs: BTreeMap::new(),
        orphans: Vec::new(),
        reading: false,
        held: None,
        client_eof: false,
        blocked: terminate,
        origin: std::time::Instant::now(),
    };
    driver.run(&received);

    // The core said Exit: every run is released. Let the writer finish the lines already
    // transmitted, if the client takes them soon; then reap the orphans (killed already).
    let Driver {
        to_client, orphans, ..
    } = driver;
    drop(to_client);
    let until = std::time::Instant::now() + EXIT_PATIENCE;
    while let Ok(event) = received.recv_timeout(until.saturating_duration_since(now_std())) {
        if matches!(event, Event::WriterDone) {
            break;
        }
    }
    for pid in orphans {
        let _ = waitpid(pid, None);
    }
    Ok(())
}

impl Driver {
    /// The loop of proc-state's driver contract, until the core says `Exit`.
    fn run(&mut self, events: &Receiver<Event>) {
        let mut deadline: Option<std::time::Instant> = None;
        loop {
            // The client reader reads once more only when the core wants its bytes.
            let wants = !self.client_eof && self.server.wants_client_bytes();
            if wants && !self.reading && self.held.is_none() {
                self.reading = self.permits.send(()).is_ok();
            }
            // 1. One event: our own results first, then a deadline that has passed, then
            //    bytes held for the core, then whatever comes first, waiting no longer than
            //    the deadline.
            let wake = if let Some(input) = self.own.pop_front() {
                Wake::Own(input)
            } else if deadline.is_some_and(|at| at <= now_std()) {
                Wake::Timer
            } else if let Some(bytes) = self.held.take_if(|_| wants) {
                Wake::Event(Event::ClientBytes(bytes))
            } else if let Some(at) = deadline {
                match events.recv_timeout(at.saturating_duration_since(now_std())) {
                    Ok(event) => Wake::Event(event),
                    Err(RecvTimeoutError::Timeout) => Wake::Timer,
                    // Unreachable: we hold a sender.
                    Err(RecvTimeoutError::Disconnected) => Wake::Event(Event::ClientEof),
                }
            } else {
                Wake::Event(events.recv().unwrap_or(Event::ClientEof))
            };
            // 2. Feed it, with the time now.
            let now = self.now();
            match wake {
                Wake::Own(input) => self.server.handle_input(now, input),
                Wake::Event(event) => self.feed(now, event),
                Wake::Timer => self.server.handle_timeout(now),
            }
            // 3. Carry out every output; 4. arm the timer (`None`: never).
            match self.drain() {
                Some(next) => {
                    deadline = next.and_then(|at| {
                        self.origin.checked_add(Duration::from_nanos(at.as_nanos()))
                    });
                }
                None => return,
            }
        }
    }

    fn feed(&mut self, now: Now, event: Event) {
        let input = match event {
            Event::ClientBytes(bytes) => {
                self.reading = false;
                // The core stopped wanting them after the permit (it fell behind, or is
                // shutting down): held until it wants them again.
                if !self.server.wants_client_bytes() {
                    self.held = Some(bytes);
                    return;
                }
                return self.server.handle_input(now, Input::ClientBytes(&bytes));
            }
            Event::ClientEof | Event::ClientGone => {
                if std::mem::replace(&mut self.client_eof, true) {
                    return;
                }
                Input::ClientEof
            }
            Event::Transmitted(bytes) => Input::Transmitted { bytes },
            Event::WriterDone => return,
            // Output and closes of released runs are fed too: the core ignores them.
            Event::Output { run, stream, bytes } => {
                let bytes = &bytes;
                return self
                    .server
                    .handle_input(now, Input::ProcessOutput { run, stream, bytes });
            }
            Event::Closed { run, stream } => Input::StreamClosed { run, stream },
            Event::Exited { run, pid, status } => match self.runs.get_mut(&run) {
                Some(entry) if !entry.exited => {
                    entry.exited = true;
                    let signalled = entry.signalled;
                    Input::Exited {
                        run,
                        status,
                        signalled,
                    }
                }
                // Reported already, when a signal found the leader gone.
                Some(_) => return,
                None => {
                    // Released before it exited: reap it now that it has.
                    if let Some(at) = self.orphans.iter().position(|&p| p == pid) {
                        let _ = waitpid(self.orphans.swap_remove(at), None);
                    }
                    return;
                }
            },
            Event::StdinReady { run } => Input::StdinReady { run },
            Event::Probed { probe, outcome } => Input::Probed { probe, outcome },
            Event::Terminate => Input::Terminate,
        };
        self.server.handle_input(now, input);
    }

    /// Carries out outputs up to `Timeout` and returns its deadline; `None` for `Exit`.
    fn drain(&mut self) -> Option<Option<Instant>> {
        loop {
            match self.server.poll_output() {
                // The writer thread takes it: the loop never waits for the client.
                Output::Transmit(line) => {
                    let _ = self.to_client.send(line);
                }
                Output::Spawn { run, spec } => {
                    let input = match self.spawn(run, &spec) {
                        Ok(pid) => Input::Spawned { run, pid },
                        Err(err) => {
                            let error = format!("cannot start `{}`: {err}", spec.program);
                            Input::SpawnFailed { run, error }
                        }
                    };
                    self.own.push_back(input);
                }
                Output::Signal { run, signal } => self.signal(run, signal),
                Output::WriteStdin { run, data } => {
                    let result = self.write_stdin(run, &data);
                    self.own.push_back(Input::StdinWritten { run, result });
                }
                Output::CloseStdin { run } => {
                    if let Some(entry) = self.runs.get_mut(&run) {
                        entry.stdin = None;
                    }
                }
                // Escaped processes (that left the run's group) are not looked for here: each
                // sweep is answered at once with none found, so there is never one to signal.
                // proc-os finds them by an inherited tag or a cgroup and holds a pidfd on each.
                Output::Sweep { run, .. } => {
                    let processes = Vec::new();
                    self.own.push_back(Input::Escaped { run, processes });
                }
                Output::SignalEscaped { .. } => {}
                Output::Probe { probe, target } => {
                    let events = self.events.clone();
                    thread::spawn(move || {
                        let outcome = match target {
                            ProbeTarget::Port(port) => {
                                let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                                match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
                                    Ok(_) => ProbeOutcome::Open,
                                    Err(error) => ProbeOutcome::Failed(error.to_string()),
                                }
                            }
                            // This driver speaks no HTTP: a `wait` on a URL times out.
                            ProbeTarget::Http(_) => {
                                ProbeOutcome::Failed("this driver has no HTTP client".into())
                            }
                        };
                        let _ = events.send(Event::Probed { probe, outcome });
                    });
                }
                // This driver does not look into /proc: no run's usage is known.
                Output::Inspect { .. } => {
                    self.own.push_back(Input::Inspected { usage: Vec::new() });
                }
                // It starts no terminal task (see `spawn`), so there is no terminal to resize.
                Output::Resize { .. } => {}
                // This driver does not look into /proc: it cannot know.
                Output::QueryInput { run } => {
                    self.own.push_back(Input::InputWanted { run, wanted: None });
                }
                Output::Release { run } => self.release(run),
                Output::Exit => return None,
                Output::Timeout(deadline) => return Some(deadline),
            }
        }
    }

    /// Starts `spec` in a new session (so a new process group whose id is its pid), with its
    /// stdout and stderr on pipes read by threads, and a thread waiting for its exit.
    fn spawn(&mut self, run: RunId, spec: &SpawnSpec) -> io::Result<u32> {
        let (cancelled, cancel) = pipe()?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(key, value)| (key, value)))
            .stdin(match spec.stdio {
                SpawnStdio::Pipes {
                    stdin: StdinMode::Piped,
                } => Stdio::piped(),
                SpawnStdio::Pipes { .. } => Stdio::null(),
                SpawnStdio::Terminal(_) => {
                    return Err(io::Error::other("this driver has no terminals"));
                }
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        let (parent, blocked) = (getpid(), self.blocked);
        // SAFETY: between fork and exec the hook makes only async-signal-safe system calls
        // (sigprocmask, setsid, prctl, getppid, kill) and does not allocate.
        unsafe {
            command.pre_exec(move || {
                sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked), None)?;
                setsid()?;
                // Killed if the thread that spawned it (the loop's) ends, e.g. the server dies;
                // and at once if the server died before this line.
                set_pdeathsig(NixSignal::SIGKILL)?;
                if getppid() != parent {
                    raise(NixSignal::SIGKILL)?;
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = Pid::from_raw(child.id().cast_signed());
        let cancelled = Arc::new(cancelled);
        let pipes = [
            (Stream::Stdout, child.stdout.take().map(OwnedFd::from)),
            (Stream::Stderr, child.stderr.take().map(OwnedFd::from)),
        ];
        for (stream, pipe) in pipes {
            let (pipe, cancelled, events) = (pipe, cancelled.clone(), self.events.clone());
            thread::spawn(move || pump(run, stream, pipe.map(File::from), &cancelled, &events));
        }
        let events = self.events.clone();
        thread::spawn(move || {
            // Blocks until the leader has exited; WNOWAIT leaves it a zombie, so its pid and
            // group id stay ours until `Release`.
            let status = loop {
                match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                    Err(Errno::EINTR) => {}
                    Ok(status) => break exit_status(status),
                    // Reaped by someone else, or a signal nix cannot name: the status is lost.
                    Err(_) => break ExitStatus::Lost,
                }
            };
            let _ = events.send(Event::Exited { run, pid, status });
        });
        // A pipe that cannot be made non-blocking is closed: writes to it are reported failed.
        let nonblocking = |stdin: &ChildStdin| fcntl(stdin, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        let stdin = child.stdin.take().filter(|s| nonblocking(s).is_ok());
        let stdin = stdin.map(Arc::new);
        let entry = Run {
            pid,
            exited: false,
            signalled: false,
            stdin,
            cancelled,
            _cancel: cancel,
        };
        self.runs.insert(run, entry);
        // `child` is dropped: that neither kills nor waits for the process.
        Ok(child.id())
    }

    /// Sends `signal` to the run's process group, after checking whether the leader has
    /// exited already: if it has, that exit is reported first, not signalled by this signal.
    fn signal(&mut self, run: RunId, signal: Signal) {
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        if !entry.exited {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(entry.pid), flags) {
                Ok(WaitStatus::StillAlive) => entry.signalled = true,
                Ok(status) => {
                    entry.exited = true;
                    let (status, signalled) = (exit_status(status), entry.signalled);
                    self.own.push_back(Input::Exited {
                        run,
                        status,
                        signalled,
                    });
                }
                Err(_) => {}
            }
        }
        // The group gets it either way: the leader, alive or a zombie, holds the group id, so
        // this reaches no stranger, and it reaches what is left of the group.
        let sent = nix_signal(signal).ok_or(Errno::EINVAL);
        if let Err(err) = sent.and_then(|number| killpg(entry.pid, number)) {
            eprintln!("std_driver: cannot send {signal} to {run}: {err}");
        }
    }

    /// Writes what the run's stdin pipe takes now; after a short write, a thread reports
    /// when it has room again.
    fn write_stdin(&mut self, run: RunId, data: &[u8]) -> Result<usize, String> {
        let Some(entry) = self.runs.get_mut(&run) else {
            return Err("the process was released".to_owned());
        };
        let Some(stdin) = entry.stdin.clone() else {
            return Err("the process's stdin is not a pipe (or was closed)".to_owned());
        };
        let mut written = 0;
        while written < data.len() {
            match (&*stdin).write(&data[written..]) {
                Ok(n) if n > 0 => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(_) => break,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    entry.stdin = None;
                    return Err(format!("cannot write to the process's stdin: {err}"));
                }
            }
        }
        if written < data.len() {
            let (cancelled, events) = (entry.cancelled.clone(), self.events.clone());
            thread::spawn(move || {
                // Room, or the reader is gone (then the next write says so).
                if ready(stdin.as_fd(), PollFlags::POLLOUT, &cancelled) {
                    let _ = events.send(Event::StdinReady { run });
                }
            });
        }
        Ok(written)
    }

    /// Forgets the run: its threads end and close its pipes, and its process is reaped.
    fn release(&mut self, run: RunId) {
        // Unknown: it failed to spawn.
        let Some(entry) = self.runs.remove(&run) else {
            return;
        };
        let (pid, exited) = (entry.pid, entry.exited);
        drop(entry);
        if exited {
            // A zombie since its exit was reported: this returns at once.
            if let Err(err) = waitpid(pid, None) {
                eprintln!("std_driver: cannot reap process {pid} of {run}: {err}");
            }
        } else {
            // Still running (the core releases a run only after its exit): kill its group and
            // reap it once its exit is reported, never waiting here.
            let _ = killpg(pid, NixSignal::SIGKILL);
            self.orphans.push(pid);
        }
    }

    /// Both clocks: monotonic nanoseconds since the driver started, and the wall clock.
    fn now(&self) -> Now {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let unix_ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        Now::new(Instant::from_nanos(nanos), unix_ms)
    }
}

/// Reads one output pipe until end-of-file, then reports it closed; once the run is released,
/// just closes it.
fn pump(
    run: RunId,
    stream: Stream,
    pipe: Option<File>,
    cancelled: &OwnedFd,
    events: &SyncSender<Event>,
) {
    // Always `Some`: both are piped. (`None` reads as an empty pipe.)
    if let Some(pipe) = pipe {
        let mut buf = vec![0; READ_BYTES];
        loop {
            if !ready(pipe.as_fd(), PollFlags::POLLIN, cancelled) {
                return;
            }
            match (&pipe).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let bytes = buf[..n].to_vec();
                    if events.send(Event::Output { run, stream, bytes }).is_err() {
                        return;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    let _ = events.send(Event::Closed { run, stream });
}

/// Waits until `fd` is ready for `interest` (or has hung up, or failed): `true`; `false` once
/// the run is released (its cancel pipe hangs up), which wins when both happen.
fn ready(fd: BorrowedFd<'_>, interest: PollFlags, cancelled: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(fd, interest),
            PollFd::new(cancelled.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) if fds[1].any() != Some(false) => return false,
            Ok(_) if fds[0].any() != Some(false) => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// The thread that reads the client: one read per permit, so it reads only as fast as the
/// loop asks. Returns where the permits go.
fn client_reader(events: SyncSender<Event>) -> Sender<()> {
    let (permits, permitted) = mpsc::channel::<()>();
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0; READ_BYTES];
        for () in permitted {
            let event = loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break Event::ClientEof,
                    Ok(n) => break Event::ClientBytes(buf[..n].to_vec()),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break Event::ClientEof,
                }
            };
            let eof = matches!(event, Event::ClientEof);
            if events.send(event).is_err() || eof {
                return;
            }
        }
    });
    permits
}

/// The thread that writes the client's lines, in order, each reported once flushed. Returns
/// where the lines go; dropping it ends the thread once it has written them all.
fn client_writer(events: SyncSender<Event>) -> Sender<Vec<u8>> {
    let (lines, to_write) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        let mut stdout = io::stdout().lock();
        for line in to_write {
            if stdout
                .write_all(&line)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                let _ = events.send(Event::ClientGone);
                break;
            }
            let _ = events.send(Event::Transmitted(line.len()));
        }
        let _ = events.send(Event::WriterDone);
    });
    lines
}

/// Task ids: six hex digits from std's randomly seeded hasher (the core retries on a clash).
fn task_ids() -> IdGenerator {
    let seed = RandomState::new();
    let mut count = 0_u64;
    Box::new(move || {
        count += 1;
        format!("{:06x}", seed.hash_one(count) & 0xff_ffff)
    })
}

/// The core's name for how a process ended.
fn exit_status(status: WaitStatus) -> ExitStatus {
    match status {
        WaitStatus::Exited(_, code) => ExitStatus::Code(code),
        WaitStatus::Signaled(_, signal, _) => ExitStatus::Signaled(
            Signal::from_name(signal.as_str()).unwrap_or(Signal::Other(signal as i32)),
        ),
        _ => ExitStatus::Lost,
    }
}

/// The platform's signal for the core's (same names, signal(7)).
fn nix_signal(signal: Signal) -> Option<NixSignal> {
    match signal {
        Signal::Other(number) => NixSignal::try_from(number).ok(),
        named => named.name().parse().ok(),
    }
}

fn now_std() -> std::time::Instant {
    std::time::Instant::now()
}

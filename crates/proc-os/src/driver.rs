//! The runtime-agnostic half of a driver: one [`Server`] driven exactly as the proc-state crate
//! docs say, on any async runtime that can spawn a task and sleep until a deadline
//! ([`Runtime`]).
//!
//! 1. Wait for one event: a result of our own last outputs (spawned, failed, exited, written),
//!    else a deadline that has already passed, else whichever comes first of the next
//!    [`Event`] (a task's output, SIGCHLD, SIGTERM/SIGINT, a line written to the client), the
//!    client's next bytes (only while the core wants them), or the timer.
//! 2. Feed it with [`Server::handle_input`] / [`Server::handle_timeout`] and the current [`Now`].
//! 3. Drain [`Server::poll_output`] until [`Output::Timeout`], carrying out each output.
//! 4. Arm the one timer and go to 1.
//!
//! A due deadline is handled before anything else is waited for, so timers fire on time however
//! busy the event sources are; and the event sources are polled in random order, so none can
//! starve another. The loop never blocks: client stdin and stdout each have a thread
//! ([`crate::stdio`]), pipes are non-blocking, a stdin write takes only what the pipe holds
//! now, and what can only block runs on the blocking thread pool ([`blocking`]) and comes back
//! as an [`Event`]: HTTP probes ([`crate::probe`]), and inspections ([`crate::inspect`]), which
//! one task carries out one after the other, so that each `Inspect` is answered by one
//! `Inspected`, in the order they were asked for. Probes and inspections under way are
//! dropped with the loop (an inspection or request already on a thread finishes there,
//! unheard).
//!
//! The loop runs on the thread that awaits [`Session::serve`] (spawning happens there). The event channel is bounded, and output bytes travel
//! in pooled buffers ([`crate::pipes`]), so the memory in flight is fixed however fast the tasks
//! print; the lines waiting for the client are bounded by the core
//! ([`proc_state::Config::max_client_backlog_bytes`]).
//!
//! A driver crate is then: a [`Runtime`] implementation (spawn, sleep until a deadline, block
//! on a future), and [`serve_stdio`] with it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_channel::{Receiver, Sender};
use async_signal::{Signal as OsSignal, Signals};
use futures_lite::StreamExt as _;
use proc_state::{
    Config, EscapedProcess, Input, Instant, Now, Output, ProbeId, ProbeOutcome, RunId, Server,
    Signal, Stream, Usage,
};

use crate::contain::{ContainOptions, Containment};
use crate::inspect::{self, Inspector};
use crate::tree::{PidFd, TaggedProcess};

use crate::pipes::{self, Chunk, Pool};
use crate::probe;
use crate::rlimit;
use crate::runs::RunTable;
use crate::stdio::{self, ClientInput, ClientWriter};

/// Buffers for task output in flight, shared by all tasks (each [`pipes::CHUNK_BYTES`]).
const OUTPUT_BUFFERS: usize = 8;

/// Capacity of the event channel into the loop.
const EVENT_QUEUE: usize = 32;

/// How long the server waits, at exit, for a client that has stopped reading to take the last
/// lines.
const EXIT_PATIENCE: Duration = Duration::from_secs(1);

/// What a driver's async runtime provides: spawning the tasks that read pipes and forward
/// signals, and a timer. Everything else (the reactor, channels, signal handling) is
/// runtime-agnostic and lives here.
///
/// The spawned tasks may run on the loop's thread (smol's local executor) or on other threads
/// (async-std's global executor); the loop's correctness does not depend on which: events reach
/// it through one bounded channel, and it handles due deadlines before waiting on that channel,
/// so readers on other threads that keep the channel full cannot delay a timer.
pub trait Runtime {
    /// A spawned task. Dropping it must stop the task soon (drop its future), without
    /// blocking: that is how a released run's pipes get closed.
    type Task;

    /// Starts `future` and returns its handle. Called on the loop's thread, inside the
    /// executor that runs [`Session::serve`].
    fn spawn<F>(&self, future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes at `deadline` (on std's monotonic clock), or at once if it has
    /// passed. It does not borrow the runtime: the loop keeps one across its turns for as
    /// long as the deadline stays the same, since arming a timer costs the reactor a wake-up.
    fn sleep_until(&self, deadline: std::time::Instant) -> impl Future<Output = ()> + use<Self>;

    /// Runs `future` to its end on the calling thread, with the executor that
    /// [`Runtime::spawn`] uses running, and returns its output. [`run`] calls it (with the
    /// loop) on the thread that called [`serve_stdio`].
    fn block_on<T>(&self, future: impl Future<Output = T>) -> T;
}

/// Serves MCP over this process's stdin and stdout on `runtime` until the core has stopped
/// every task and says the session is over: after the client closed stdin, or after SIGTERM or
/// SIGINT (each time one arrives, the core is told to terminate).
///
/// While it runs it handles SIGCHLD, SIGTERM and SIGINT (registered through `async-signal`,
/// removed on return), runs the loop on the calling thread with [`Runtime::block_on`] (the
/// thread must live until it returns),
/// and reads stdin on one extra thread, which ends at its next read after this returns. Task
/// ids come from `nanoid` (6 characters). A `config.cwd` of `"."` (the default) is replaced by
/// the real working directory ([`startup`]).
///
/// At startup it raises this process's soft limit on open files (`RLIMIT_NOFILE`) to the hard
/// limit, so that about a thousand tasks with their pipes fit; every task gets the original
/// soft limit back, and inherits no file descriptor but 0, 1 and 2.
///
/// `contain` says how the tasks' processes are kept within reach (see [`crate::contain`]): a
/// server process wants [`ContainOptions::all`].
///
/// # Errors
/// Only for failures to set up: the signal handlers, the stdin thread or the stdout thread
/// could not be created. Everything that goes wrong later (a task that cannot be spawned, a
/// client that goes away) is handled by the core or reported on stderr.
pub fn serve_stdio<Rt>(config: Config, contain: ContainOptions, runtime: Rt) -> io::Result<()>
where
    Rt: Runtime + Clone,
{
    let session = Session::open(io::stdin())?.contain(contain);
    run(session, startup(config), io::stdout(), runtime)
}

/// Runs [`Session::serve`] (the core's lines written to `output`) to its end on the calling
/// thread, with [`Runtime::block_on`]. [`serve_stdio`] is this with stdin and stdout; tests
/// give it other ends.
///
/// # Errors
/// As [`Session::serve`].
pub fn run<Rt, W>(session: Session, config: Config, output: W, runtime: Rt) -> io::Result<()>
where
    Rt: Runtime + Clone,
    W: Write + Send + 'static,
{
    let blocking = runtime.clone();
    blocking.block_on(session.serve(config, output, runtime))
}

/// Something that happened outside the loop, sent to it over a bounded channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Bytes from one of a task's pipes.
    Output {
        /// The run whose pipe it was.
        run: RunId,
        /// Which pipe.
        stream: Stream,
        /// The bytes, in a pooled buffer.
        chunk: Chunk,
    },
    /// End-of-file on one of a task's pipes.
    StreamClosed {
        /// The run whose pipe it was.
        run: RunId,
        /// Which pipe.
        stream: Stream,
    },
    /// A run's stdin can take more bytes after a short write (see [`pipes::stdin_ready`]).
    StdinReady {
        /// The run whose stdin it is.
        run: RunId,
    },
    /// A probe answered.
    Probed {
        /// The core's probe.
        probe: ProbeId,
        /// What it found.
        outcome: ProbeOutcome,
    },
    /// An inspection answered (the next one in the order they were asked for).
    Inspected {
        /// What each run measured uses.
        usage: Vec<(RunId, Usage)>,
    },
    /// The writer thread wrote and flushed one line of this many bytes to the client.
    Transmitted {
        /// The line's length.
        bytes: usize,
    },
    /// The client can no longer be written to (its end of stdout is closed).
    ClientGone,
    /// An escaped process that a sweep found (and holds a pidfd on) has exited.
    EscapedExited {
        /// The run it escaped from.
        run: RunId,
        /// Its pid.
        pid: i32,
    },
    /// SIGCHLD: some child changed state.
    ChildSignal,
    /// SIGTERM or SIGINT.
    Terminate,
}

/// Prepares a server process: raises its limit on open files (see
/// [`rlimit::raise_nofile_limit`]; a failure is reported on stderr and otherwise ignored) and
/// replaces a `config.cwd` of `"."` (the default) by the real working directory, which tasks
/// are shown. A path that is not UTF-8 stays `"."`.
pub fn startup(mut config: Config) -> Config {
    if let Err(err) = rlimit::raise_nofile_limit() {
        eprintln!("proc-mcp: cannot raise the limit on open files (RLIMIT_NOFILE): {err}");
    }
    if config.cwd == "."
        && let Ok(dir) = std::env::current_dir().map(|dir| dir.into_os_string().into_string())
    {
        config.cwd = dir.unwrap_or(config.cwd);
    }
    config
}

/// A serving session's plumbing, set up before any runtime runs: the signal handlers
/// (SIGCHLD, SIGTERM, SIGINT, registered through `async-signal` and removed when the session
/// ends), the event channel, and the thread that reads the client.
pub struct Session {
    signals: Signals,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    client: Receiver<ClientInput>,
    contain: ContainOptions,
}

impl Session {
    /// Registers the signal handlers and starts the thread that reads `input` (see
    /// [`stdio::spawn_client_reader`]).
    ///
    /// # Errors
    /// The signal handlers or the thread could not be created.
    pub fn open<R>(input: R) -> io::Result<Self>
    where
        R: Read + Send + 'static,
    {
        // Before the first spawn, so that no SIGCHLD is missed.
        let signals = Signals::new([OsSignal::Child, OsSignal::Term, OsSignal::Int])?;
        let (events_tx, events_rx) = async_channel::bounded(EVENT_QUEUE);
        let client = stdio::spawn_client_reader(input)?;
        Ok(Self {
            signals,
            events_tx,
            events_rx,
            client,
            contain: ContainOptions::default(),
        })
    }

    /// Contains the tasks with what `options` allow (see [`crate::contain`]); by default only
    /// the inherited tag.
    #[must_use]
    pub fn contain(mut self, options: ContainOptions) -> Self {
        self.contain = options;
        self
    }

    /// Serves MCP (the client's lines come from the session's input, the core's go to
    /// `output`, written by a thread of their own) until the core says [`Output::Exit`], then
    /// kills and reaps whatever is left, so that no task outlives it. Task ids come from
    /// `nanoid` (6 characters).
    ///
    /// Await it on a thread that lives as long as the server.
    ///
    /// # Errors
    /// The writer thread could not be started.
    pub async fn serve<Rt, W>(self, mut config: Config, output: W, runtime: Rt) -> io::Result<()>
    where
        Rt: Runtime,
        W: Write + Send + 'static,
    {
        let Session {
            signals,
            events_tx,
            events_rx,
            client,
            contain,
        } = self;
        let containment = Containment::start(&contain);
        config.containment = containment.describe();
        let writer = ClientWriter::spawn(output, events_tx.clone())?;
        let signal_task = runtime.spawn(forward_signals(signals, events_tx.clone()));
        let mut driver = Driver {
            server: Server::new(config, Box::new(|| nanoid::nanoid!(6))),
            runs: RunTable::new(),
            runtime,
            events: events_tx,
            pool: Pool::new(OUTPUT_BUFFERS),
            writer,
            pending: VecDeque::new(),
            client_eof: false,
            probes: BTreeMap::new(),
            inspections: None,
            contain: containment,
            escaped: BTreeMap::new(),
            sweeps: BTreeMap::new(),
            clock: Clock::new(),
        };
        driver.run(&events_rx, &client).await;
        driver.runs.shutdown();
        drop(signal_task);
        let Driver {
            writer,
            contain,
            escaped,
            ..
        } = driver;
        drop(escaped);
        contain.finish();
        // Give back every pooled buffer still queued, so the readers are never stuck waiting
        // for one, and let them see the channels closed.
        events_rx.close();
        while events_rx.try_recv().is_ok() {}
        client.close();
        while client.try_recv().is_ok() {}
        writer.finish(EXIT_PATIENCE);
        Ok(())
    }
}

/// Turns the signals the server handles into events, each time one arrives.
async fn forward_signals(mut signals: Signals, events: Sender<Event>) {
    while let Some(signal) = signals.next().await {
        let event = match signal {
            Ok(OsSignal::Child) => Event::ChildSignal,
            Ok(OsSignal::Term | OsSignal::Int) => Event::Terminate,
            Ok(_) => continue,
            Err(err) => {
                eprintln!("proc-mcp: waiting for signals: {err}");
                return;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// Wraps `future` so that it ends, dropping what it holds, once the returned [`AbortOnDrop`]
/// is dropped. For runtimes whose task handles detach on drop (async-std's `JoinHandle`),
/// to give [`Runtime::Task`] the cancel-on-drop meaning it needs.
pub fn abort_on_drop<F>(future: F) -> (impl Future<Output = ()> + Send + 'static, AbortOnDrop)
where
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = async_channel::bounded::<()>(1);
    let abortable = futures_lite::future::or(future, async move {
        // Nothing is ever sent: this returns when the sender is dropped.
        let _ = rx.recv().await;
    });
    (abortable, AbortOnDrop { _sender: tx })
}

/// The handle of a future wrapped by [`abort_on_drop`]: dropping it ends the future at its
/// next poll (its task is woken for that).
#[derive(Debug)]
pub struct AbortOnDrop {
    _sender: Sender<()>,
}

/// What woke the loop up.
enum Wake {
    /// An input that our own handling of an output produced; fed before anything new.
    Pending(Input<'static>),
    Event(Event),
    Client(ClientInput),
    Timer,
}

struct Driver<Rt: Runtime> {
    server: Server,
    runs: RunTable<Rt::Task>,
    runtime: Rt,
    events: Sender<Event>,
    pool: Pool,
    writer: ClientWriter,
    /// Inputs our own handling of outputs produced (spawned, failed, exited, written, client
    /// gone).
    pending: VecDeque<Input<'static>>,
    /// `ClientEof` was fed: client input is over.
    client_eof: bool,
    /// Probes under way (dropped, hence cancelled, with the driver).
    probes: BTreeMap<ProbeId, Rt::Task>,
    /// The inspections' queue and the task that carries them out one after the other, started
    /// at the first `Inspect` (dropped, hence cancelled, with the driver).
    inspections: Option<(Sender<inspect::Request>, Rt::Task)>,
    contain: Containment,
    /// The escaped processes found, by run and pid: a pidfd on each, and the task that waits
    /// for it to exit.
    escaped: BTreeMap<(RunId, i32), (Arc<PidFd>, Rt::Task)>,
    /// Sweeps asked for in this drain, by run (with its process group), done together.
    sweeps: BTreeMap<RunId, u32>,
    clock: Clock,
}

impl<Rt: Runtime> Driver<Rt> {
    /// Runs the loop until the core says [`Output::Exit`].
    async fn run(&mut self, events: &Receiver<Event>, client: &Receiver<ClientInput>) {
        let mut deadline: Option<std::time::Instant> = None;
        // The armed timer and its deadline, kept while the deadline does not change.
        let mut timer = None;
        loop {
            // 1. One event: our own results first, then a deadline that has passed, then
            //    whatever comes first.
            let wake = if let Some(pending) = self.pending.pop_front() {
                Wake::Pending(pending)
            } else if deadline.is_some_and(|at| at <= std::time::Instant::now()) {
                Wake::Timer
            } else {
                let read_client = !self.client_eof && self.server.wants_client_bytes();
                if let Some(at) = deadline
                    && timer.as_ref().is_none_or(|(armed, _)| *armed != at)
                {
                    timer = Some((at, Box::pin(self.runtime.sleep_until(at))));
                }
                let sleep = match deadline {
                    Some(_) => timer.as_mut().map(|(_, sleep)| sleep.as_mut()),
                    None => None,
                };
                self.wait(events, client, read_client, sleep).await
            };
            if matches!(wake, Wake::Timer) {
                timer = None;
            }
            // 2. Feed it.
            let now = self.clock.now();
            match wake {
                Wake::Pending(pending) => self.feed_pending(now, pending),
                Wake::Event(event) => self.feed_event(now, event),
                Wake::Client(ClientInput::Bytes(chunk)) => {
                    self.server
                        .handle_input(now, Input::ClientBytes(chunk.bytes()));
                }
                Wake::Client(ClientInput::Eof) => self.feed_pending(now, Input::ClientEof),
                Wake::Timer => self.server.handle_timeout(now),
            }
            // 3. Drain the outputs; 4. arm the timer.
            match self.drain() {
                Some(next) => deadline = next,
                None => return,
            }
        }
    }

    /// Waits for the first of: an event, the client's next input (if `read_client`), the
    /// timer (`sleep`, if a deadline is armed). The sources are polled in random order, so a
    /// busy one cannot starve the others.
    async fn wait(
        &self,
        events: &Receiver<Event>,
        client: &Receiver<ClientInput>,
        read_client: bool,
        sleep: Option<std::pin::Pin<&mut impl Future<Output = ()>>>,
    ) -> Wake {
        let event = async {
            match events.recv().await {
                Ok(event) => Wake::Event(event),
                // Unreachable while we hold a sender; as if the client left.
                Err(_) => Wake::Pending(Input::ClientEof),
            }
        };
        let client = async {
            if !read_client {
                futures_lite::future::pending::<()>().await;
            }
            Wake::Client(client.recv().await.unwrap_or(ClientInput::Eof))
        };
        let timer = async {
            match sleep {
                Some(sleep) => sleep.await,
                None => futures_lite::future::pending().await,
            }
            Wake::Timer
        };
        futures_lite::future::race(futures_lite::future::race(event, client), timer).await
    }

    fn feed_pending(&mut self, now: Now, input: Input<'static>) {
        if matches!(input, Input::ClientEof) {
            if self.client_eof {
                return;
            }
            self.client_eof = true;
        }
        self.server.handle_input(now, input);
    }

    fn feed_event(&mut self, now: Now, event: Event) {
        match event {
            Event::Output { run, stream, chunk } => {
                if self.runs.is_live(run) {
                    let bytes = chunk.bytes();
                    self.server
                        .handle_input(now, Input::ProcessOutput { run, stream, bytes });
                }
            }
            Event::StreamClosed { run, stream } => {
                if self.runs.is_live(run) {
                    self.server
                        .handle_input(now, Input::StreamClosed { run, stream });
                }
            }
            Event::StdinReady { run } => {
                if self.runs.is_live(run) {
                    self.runs.stdin_ready(run);
                    self.server.handle_input(now, Input::StdinReady { run });
                }
            }
            Event::Probed { probe, outcome } => {
                self.probes.remove(&probe);
                self.server
                    .handle_input(now, Input::Probed { probe, outcome });
            }
            Event::Inspected { usage } => {
                self.server.handle_input(now, Input::Inspected { usage });
            }
            Event::Transmitted { bytes } => {
                self.server.handle_input(now, Input::Transmitted { bytes });
            }
            Event::ClientGone => self.feed_pending(now, Input::ClientEof),
            Event::EscapedExited { run, pid } => {
                if self.escaped.remove(&(run, pid)).is_some() {
                    if !self.escaped.keys().any(|(r, _)| *r == run) {
                        self.contain.remove_cgroup_if_empty(run);
                    }
                    let pid = pid.unsigned_abs();
                    self.server
                        .handle_input(now, Input::EscapedExited { run, pid });
                }
            }
            Event::ChildSignal => {
                let runs = &self.runs;
                self.contain.child_exited(|pid| runs.is_leader(pid));
                // Possibly several exits: each is one input of its own, fed before anything
                // new. The first one now, so that this wake-up feeds exactly one input.
                let mut exits = self
                    .runs
                    .collect_exits()
                    .into_iter()
                    .map(|exit| Input::Exited {
                        run: exit.run,
                        status: exit.status,
                        signalled: exit.signalled,
                    });
                if let Some(first) = exits.next() {
                    self.pending.extend(exits);
                    self.server.handle_input(now, first);
                }
            }
            Event::Terminate => self.server.handle_input(now, Input::Terminate),
        }
    }

    /// Carries out every output up to the next [`Output::Timeout`] and returns its deadline as
    /// a point on the clock; `None` for [`Output::Exit`].
    fn drain(&mut self) -> Option<Option<std::time::Instant>> {
        loop {
            match self.server.poll_output() {
                Output::Transmit(line) => self.writer.transmit(line),
                Output::Spawn { run, mut spec } => {
                    spec.env.extend(self.contain.tag(run));
                    self.contain.prepare(run);
                    let placement = self.contain.placement(run);
                    let (runtime, pool, events) = (&self.runtime, &self.pool, &self.events);
                    let spawned = self.runs.spawn(run, &spec, placement, |stream, pipe| {
                        runtime.spawn(pipes::pump(run, stream, pipe, pool.clone(), events.clone()))
                    });
                    self.pending.push_back(match spawned {
                        Ok(pid) => {
                            self.contain.spawned(run, pid.cast_signed());
                            Input::Spawned { run, pid }
                        }
                        Err(error) => {
                            self.contain.failed(run);
                            Input::SpawnFailed { run, error }
                        }
                    });
                }
                Output::Signal { run, signal } => {
                    if let Some(exit) = self.runs.signal(run, signal) {
                        // The leader had exited before the signal: said first.
                        self.pending.push_back(Input::Exited {
                            run: exit.run,
                            status: exit.status,
                            signalled: exit.signalled,
                        });
                    }
                }
                Output::WriteStdin { run, data } => {
                    let (runtime, events) = (&self.runtime, &self.events);
                    let written = self.runs.write_stdin(run, &data, |pipe| {
                        runtime.spawn(pipes::stdin_ready(run, pipe, events.clone()))
                    });
                    if let Some(result) = written {
                        self.pending.push_back(Input::StdinWritten { run, result });
                    }
                }
                Output::CloseStdin { run } => self.runs.close_stdin(run),
                Output::Resize { run, size } => self.runs.resize(run, size),
                Output::QueryInput { run } => {
                    let wanted = self.runs.input_wanted(run);
                    self.pending.push_back(Input::InputWanted { run, wanted });
                }
                Output::Probe { probe, target } => {
                    let events = self.events.clone();
                    let task = self.runtime.spawn(async move {
                        let outcome = probe::probe(target).await;
                        let _ = events.send(Event::Probed { probe, outcome }).await;
                    });
                    self.probes.insert(probe, task);
                }
                Output::Inspect { runs } => self.inspect(runs),
                Output::Sweep { run, pgid } => {
                    self.sweeps.insert(run, pgid);
                }
                Output::SignalEscaped { run, signal } => self.signal_escaped(run, signal),
                Output::Release { run } => {
                    self.contain.releasing(run);
                    self.runs.release(run);
                }
                Output::Exit => return None,
                Output::Timeout(deadline) => {
                    self.sweep();
                    return Some(deadline.and_then(|deadline| self.clock.to_std(deadline)));
                }
            }
        }
    }
}

impl<Rt: Runtime> Driver<Rt> {
    /// Queues an inspection of `runs` (with their process groups) for the inspections' task,
    /// started now if this is the first; its answer comes back as [`Event::Inspected`], after
    /// those of the inspections queued before it. The escaped processes are looked for as a
    /// sweep would ([`Containment::sweep_plan`]), off the loop.
    fn inspect(&mut self, runs: Vec<(RunId, u32)>) {
        let escaped = self.contain.sweep_plan(&runs.iter().copied().collect());
        let request = inspect::Request { runs, escaped };
        let (queue, _) = self.inspections.get_or_insert_with(|| {
            let (queue, requests) = async_channel::unbounded();
            let task = self
                .runtime
                .spawn(serve_inspections(requests, self.events.clone()));
            (queue, task)
        });
        if queue.try_send(request).is_err() {
            // Only once the task is gone, which it is not while the loop runs: every
            // inspection is answered all the same.
            self.pending
                .push_back(Input::Inspected { usage: Vec::new() });
        }
    }

    /// Carries out the sweeps of this drain with one scan of `/proc`, takes a pidfd on every
    /// escaped process not known yet (and starts waiting for its exit), and queues one
    /// `Escaped` input per sweep.
    fn sweep(&mut self) {
        if self.sweeps.is_empty() {
            return;
        }
        let sweeps = core::mem::take(&mut self.sweeps);
        let mut found: BTreeMap<RunId, Vec<EscapedProcess>> =
            sweeps.keys().map(|run| (*run, Vec::new())).collect();
        for (run, process) in self.contain.sweep(&sweeps) {
            if let Some(held) = self.hold(run, process)
                && let Some(list) = found.get_mut(&run)
            {
                list.push(held);
            }
        }
        for (run, processes) in found {
            self.pending.push_back(Input::Escaped { run, processes });
        }
    }

    /// Takes a pidfd on an escaped process of `run` not held yet and starts waiting for its
    /// exit; the process as the core wants it reported. `None` if it was held already, or is
    /// gone.
    fn hold(&mut self, run: RunId, process: TaggedProcess) -> Option<EscapedProcess> {
        if self.escaped.contains_key(&(run, process.pid)) {
            return None;
        }
        let Ok(Some(pidfd)) = process.open_pidfd() else {
            return None;
        };
        let pidfd = Arc::new(pidfd);
        let (watched, events, pid) = (pidfd.clone(), self.events.clone(), process.pid);
        let waiter = self.runtime.spawn(async move {
            let _ = watched.exited().await;
            let _ = events.send(Event::EscapedExited { run, pid }).await;
        });
        self.escaped.insert((run, pid), (pidfd, waiter));
        Some(EscapedProcess {
            pid: pid.unsigned_abs(),
            command: process.command,
        })
    }

    /// Sends `signal` to every escaped process of `run` held; with `SIGKILL`, the run's
    /// cgroup is killed too (which also reaches what the tag could not find).
    fn signal_escaped(&mut self, run: RunId, signal: Signal) {
        let held = self
            .escaped
            .range((run, i32::MIN)..=(run, i32::MAX))
            .map(|(_, (pidfd, _))| pidfd);
        for pidfd in held {
            if let Err(err) = pidfd.send_signal(signal) {
                eprintln!(
                    "proc-mcp: cannot send {signal} to escaped process {} of {run}: {err}",
                    pidfd.pid()
                );
            }
        }
        if signal == Signal::Kill {
            self.contain.kill_cgroup(run);
        }
    }
}

/// Carries out the inspections `requests` brings, one at a time and in order, each on the
/// blocking thread pool ([`blocking::unblock`]) with one [`Inspector`] passed from one to the
/// next, and sends each answer as an [`Event::Inspected`]. Ends when either channel closes;
/// dropped (with the driver), it stops waiting, and an inspection under way finishes on its
/// thread unheard.
async fn serve_inspections(requests: Receiver<inspect::Request>, events: Sender<Event>) {
    let mut inspector = Inspector::new();
    while let Ok(request) = requests.recv().await {
        let (kept, usage) = blocking::unblock(move || {
            let usage = inspector.inspect(&request);
            (inspector, usage)
        })
        .await;
        inspector = kept;
        if events.send(Event::Inspected { usage }).await.is_err() {
            return;
        }
    }
}

/// The driver's clocks: [`Instant`]s count nanoseconds since the driver started.
struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// Both clocks now.
    fn now(&self) -> Now {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        Now::new(Instant::from_nanos(nanos), unix_ms)
    }

    /// `deadline` on std's clock; `None` if it is too far away to represent (never fires).
    fn to_std(&self, deadline: Instant) -> Option<std::time::Instant> {
        self.origin
            .checked_add(Duration::from_nanos(deadline.as_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use async_executor::{LocalExecutor, Task};
    use futures_lite::FutureExt as _;

    use super::{Runtime, abort_on_drop};

    /// A runtime made of smol's parts, to test the loop without a driver crate.
    #[derive(Clone, Default)]
    struct Reference(Rc<LocalExecutor<'static>>);

    impl Runtime for Reference {
        type Task = Task<()>;

        fn spawn<F>(&self, future: F) -> Task<()>
        where
            F: Future<Output = ()> + Send + 'static,
        {
            self.0.spawn(future)
        }

        fn sleep_until(&self, deadline: std::time::Instant) -> impl Future<Output = ()> + use<> {
            async move {
                async_io::Timer::at(deadline).await;
            }
        }

        fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
            async_io::block_on(self.0.run(future))
        }
    }

    crate::driver_tests!(Reference::default);

    #[test]
    fn inspections_are_answered_one_each_in_the_order_asked() {
        use proc_state::RunId;

        use super::{Event, serve_inspections};
        use crate::inspect::Request;

        // Our own process group: it has a live process, this one.
        let ours = nix::unistd::getpgrp().as_raw().unsigned_abs();
        let (queue, requests) = async_channel::unbounded();
        let (events, answers) = async_channel::unbounded();
        let asked = [
            vec![(RunId(1), ours)],
            vec![],
            // No process group has that id: left out.
            vec![(RunId(3), ours), (RunId(2), i32::MAX.unsigned_abs())],
        ];
        for runs in asked {
            queue
                .try_send(Request {
                    runs,
                    escaped: None,
                })
                .expect("queued");
        }
        // With the queue closed, the task ends once every inspection is answered.
        drop(queue);
        crate::testutil::within(
            crate::testutil::CHILD_TIMEOUT,
            "the inspections",
            move || async_io::block_on(serve_inspections(requests, events)),
        );
        let answered: Vec<Vec<RunId>> = std::iter::from_fn(|| answers.try_recv().ok())
            .map(|event| match event {
                Event::Inspected { usage } => usage.into_iter().map(|(run, _)| run).collect(),
                other => panic!("not an inspection: {other:?}"),
            })
            .collect();
        assert_eq!(answered, vec![vec![RunId(1)], vec![], vec![RunId(3)]]);
    }

    #[test]
    fn abort_on_drop_ends_the_future_and_drops_what_it_holds() {
        let (held, watch) = async_channel::bounded::<()>(1);
        let (future, abort) = abort_on_drop(async move {
            let _held = held;
            futures_lite::future::pending::<()>().await;
        });
        let thread = std::thread::spawn(move || async_io::block_on(future));
        drop(abort);
        thread.join().expect("the future ended");
        // Its captures were dropped with it.
        assert!(watch.is_closed());

        // Not dropped: it runs to completion as usual.
        let (future, _abort) = abort_on_drop(async {});
        async_io::block_on(future.or(async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            panic!("the future did not complete");
        }));
    }
}

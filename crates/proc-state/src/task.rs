//! One task's lifecycle, as one enum of phases that carry their own data:
//!
//! ```text
//!  Starting ──spawned──▶ Running ──stop──▶ Stopping ──leader exited──▶ Draining ──pipes done──▶ Exited
//!     │                     └──────────leader exited─────────────────────▲
//!     └──spawn failed──▶ Failed
//! ```
//!
//! A [`Task`] owns its output buffer, its stdin queue and its timers (the stop escalation
//! deadline, the `max_runtime` deadline and the post-exit drain deadline) and turns inputs about
//! its process into [`Action`]s for the server to carry out. It never answers the client: it
//! reports [`Progress`] and the server answers whoever waits.
//!
//! Stopping follows the usual supervisor escalation (see kill(2), killpg(3)): the first signal goes
//! to the whole process group, and if the leader has not exited when the grace period ends,
//! `SIGKILL` goes to the group. When the leader exits for any reason, `SIGKILL` goes to the group
//! as well, so nothing the task started outlives it; the driver has not reaped the leader at that
//! point, so the process group id cannot have been reused.
//!
//! Requests that race are ordered by one rule: the latest request decides what follows the end
//! of the current run. A `stop` after a `restart` means the task stays stopped; a `restart`
//! after a `stop` means it starts again; any number of `restart`s of one run restart it once.
//! The server's shutdown is a `stop` that no later request can undo.
//!
//! A task counts as ended only when its exit status is known *and* both pipes reached EOF (or
//! the drain deadline passed), so output printed just before exit is in the buffer by the time
//! anyone hears the task ended.
//!
//! A task may also end or start again on its own, each by a deadline it owns:
//! - its **restart policy** ([`RestartPolicy`]): a run that ended on its own (or was stopped for
//!   using too much memory) is started again after a backoff that doubles from
//!   [`BACKOFF_FIRST`] to [`BACKOFF_MAX`] and starts over after a run of [`BACKOFF_RESET`]; the
//!   ended phase then says `Then::Retry { at }`, and any `stop` ends the policy;
//! - its **idle lease** (`idle_timeout`): stopped when nothing referred to it for that long;
//! - its **memory limit** (`max_memory`): while it runs it is measured every
//!   [`MEMORY_CHECK_INTERVAL`], and stopped once two measurements in a row are above the limit.
//!
//! Every stop records its [`StopCause`], so `status` can say why a task ended.

use core::time::Duration;

use std::collections::VecDeque;

use crate::escaped::{self, Escaped};
use crate::log::{LogBuffer, LogLimits};
use crate::process::{
    EscapedProcess, ExitStatus, RunId, Signal, SpawnSpec, StdinMode, Stdio, Stream, Usage,
};
use crate::stdin::{Stdin, StdinAction};
use crate::terminal::Screen;
use crate::time::{Instant, Now};
use crate::urls::Urls;

/// The first delay of a restart policy, doubled for each restart that follows a short run.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest delay of a restart policy.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long resets the backoff to [`BACKOFF_FIRST`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Restarts by the policy this close together make a crash loop: [`CRASH_LOOP_RESTARTS`]
/// within this window.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// See [`CRASH_LOOP_WINDOW`].
pub const CRASH_LOOP_RESTARTS: usize = 3;
/// How often a task with a memory limit is measured while it runs.
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How many measurements in a row above the limit stop a task.
pub const MEMORY_STRIKES: u32 = 2;

/// Where a task is in its life, as the tools show it (`state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Spawn requested; no pid yet.
    Starting,
    /// The process runs.
    Running,
    /// A stop signal was sent, or the process exited and its last output is being read.
    Stopping,
    /// The process exited and its output is complete.
    Exited,
    /// The process could not be started.
    Failed,
}

impl State {
    /// The state as the tools spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
        }
    }

    /// `exited` or `failed`: nothing will happen to the task any more.
    pub const fn is_ended(self) -> bool {
        matches!(self, State::Exited | State::Failed)
    }
}

/// What follows the end of the current run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Nothing: the task stays ended.
    Rest,
    /// It is started again (same id, name, command and buffer).
    Restart,
    /// Its restart policy starts it again at `at` (a stop in between ends the policy).
    Retry { at: Instant },
}

/// Who or what stopped a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// A `stop` or `restart` request (or a signal ending the run through the `signal` tool is
    /// not a stop at all).
    Request,
    /// The server is shutting down.
    Shutdown,
    /// `max_runtime_ms` passed.
    MaxRuntime,
    /// Its resident memory stayed above `max_memory_bytes`.
    MaxMemory,
    /// Nothing referred to it for `idle_timeout_ms`.
    Idle,
}

impl StopCause {
    /// As `status` spells it (`stop_reason`).
    pub const fn as_str(self) -> &'static str {
        match self {
            StopCause::Request => "stop",
            StopCause::Shutdown => "shutdown",
            StopCause::MaxRuntime => "max_runtime",
            StopCause::MaxMemory => "max_memory",
            StopCause::Idle => "idle",
        }
    }
}

/// When a task is started again after a run ends on its own (`start`'s `restart`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartMode {
    /// Never (the default).
    #[default]
    No,
    /// After a run that failed: an exit code other than 0, a signal, a spawn that failed, or a
    /// stop for using too much memory.
    OnFailure,
    /// After every run that was not stopped by a request, the shutdown or the idle lease.
    Always,
}

/// `start`'s restart policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    /// Most restarts the policy makes (`None`: no limit).
    pub max_restarts: Option<u32>,
}

/// A stop under way, or asked for before the spawn answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// The first signal, sent to the whole process group.
    pub signal: Signal,
    /// How long after it `SIGKILL` follows.
    pub grace: Duration,
    /// What follows the end of the run.
    pub then: Then,
    /// The grace period ran out and `SIGKILL` was sent.
    pub escalated: bool,
    /// Why it was asked for.
    pub cause: StopCause,
}

/// The spawned process: its pid (also its process group id) and which pipes are still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawned {
    /// Process id, process group id and session id.
    pub pid: u32,
    /// stdout, stderr, the terminal: not at end-of-file yet.
    pub open: [bool; 3],
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// As waitid(2) reported it.
    pub status: ExitStatus,
    /// When the exit was seen.
    pub at: Now,
    /// A stop (or `max_runtime`, or the shutdown) ended it: its signal reached the leader
    /// while it was alive.
    pub stopped: bool,
    /// `SIGKILL` was needed after the grace period.
    pub escalated: bool,
    /// Why a stop was under way when it ended (whether or not its signal ended it).
    pub cause: Option<StopCause>,
}

/// A task's phase. Each carries what only it needs; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Spawn requested; no pid yet. `stop` was asked for meanwhile and applies once spawned.
    Starting { stop: Option<Stop> },
    /// The process runs; `max_runtime` ends at `runtime_limit_at`.
    Running {
        process: Spawned,
        runtime_limit_at: Option<Instant>,
    },
    /// The stop's signal went to the group; `SIGKILL` follows at `kill_at` (`None` once sent).
    Stopping {
        process: Spawned,
        stop: Stop,
        kill_at: Option<Instant>,
    },
    /// The leader exited (unreaped; its group was sent `SIGKILL`); the pipes are read until
    /// both close or `until`.
    Draining {
        process: Spawned,
        exit: Exit,
        until: Instant,
        then: Then,
    },
    /// The run is over and released; `then` waits for its escaped processes to be gone.
    Exited { pid: u32, exit: Exit, then: Then },
    /// The process could not be started; `at` is when that was known.
    Failed { error: String, at: Now, then: Then },
}

/// Something the server must do for a task's current run.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Send this signal to the run's process group.
    Signal(Signal),
    /// Write to or close the run's stdin.
    Stdin(StdinAction),
    /// Look for, or signal, the run's escaped processes.
    Escaped(escaped::Action),
    /// Measure what the run's processes use (see [`Task::on_usage`]).
    Inspect,
    /// The run is over: the driver reaps its process and forgets it.
    Release,
}

/// What an input did to a task, as far as the server cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Progress {
    /// Nothing anyone waits for.
    Unchanged,
    /// The spawn was answered (`Spawned` or `SpawnFailed`): a pending `start` can be answered.
    Started,
    /// The run ended (`exited` or `failed`) and was released. Whether it starts again is
    /// known once its escaped processes are gone ([`Task::take_restart`]).
    Finished,
}

/// What the user asked to run, kept for display and for restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The command line (with a shell) or program (with `args`).
    pub command: String,
    /// Arguments when run without a shell.
    pub args: Option<Vec<String>>,
    /// The working directory shown to users.
    pub cwd: String,
    /// What the driver is asked to spawn.
    pub spec: SpawnSpec,
    /// The `start` options that outlive the call.
    pub options: Options,
}

/// `start` options kept with the task (a restart applies them again).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Send exit notifications when the task ends.
    pub notify_on_exit: bool,
    /// The compiled `wait_for`: a new output line must match it before `start`/`restart`
    /// answer.
    pub wait_for: Option<regex::Regex>,
    /// An `http://` URL that must answer (a status below 500) before `start`/`restart`
    /// answer.
    pub wait_url: Option<String>,
    /// Output must pause this long before `start`/`restart` answer.
    pub wait_quiet: Option<Duration>,
    /// Bound for `wait_for`, `wait_url` and `wait_quiet`.
    pub wait_timeout: Duration,
    /// Stop the task once it has run this long.
    pub max_runtime: Option<Duration>,
    /// The grace period between SIGTERM and SIGKILL when `max_runtime` or a `restart` stops
    /// the task.
    pub grace: Duration,
    /// When a run that ended on its own is started again.
    pub restart: RestartPolicy,
    /// Stop the task once its resident memory stays above this many bytes.
    pub max_memory: Option<u64>,
    /// Stop the task once nothing referred to it for this long.
    pub idle_timeout: Option<Duration>,
}

impl PartialEq for Options {
    fn eq(&self, other: &Self) -> bool {
        self.restart == other.restart
            && self.max_memory == other.max_memory
            && self.idle_timeout == other.idle_timeout
            && self.wait_url == other.wait_url
            && self.wait_quiet == other.wait_quiet
            && self.notify_on_exit == other.notify_on_exit
            && self.wait_for.as_ref().map(regex::Regex::as_str)
                == other.wait_for.as_ref().map(regex::Regex::as_str)
            && self.wait_timeout == other.wait_timeout
            && self.max_runtime == other.max_runtime
            && self.grace == other.grace
    }
}

impl Eq for Options {}

/// One supervised process and its output.
#[derive(Debug)]
pub struct Task {
    /// Short unique id (nanoid).
    pub id: String,
    /// Optional label given at start.
    pub name: Option<String>,
    /// What it runs.
    pub command: Command,
    /// Its output.
    pub log: LogBuffer,
    /// Its stdin queue (for tasks started with `stdin: true`).
    pub stdin: Stdin,
    /// The processes its current run started that left its process group.
    pub escaped: Escaped,
    /// The current screen of a terminal task ([`Stdio::Terminal`]); `None` for pipes.
    pub screen: Option<Screen>,
    /// When output last arrived (of any run).
    pub last_output: Option<Instant>,
    /// The partial line the task sat at when it was last written to: its prompt, for a
    /// `write` with `prompt` while it is busy.
    pub prompt: Option<String>,
    /// Whether its foreground process waits for input: the driver's last answer and when it
    /// came, and when the question now out was asked (see `Output::QueryInput`).
    pub input: InputQuery,
    /// What its processes use, as the driver last measured it.
    pub usage: Measured,
    /// The URLs it printed.
    pub urls: Urls,
    /// When a tool call or a resource read last referred to it (the idle lease).
    pub touched: Instant,
    /// Its restart policy's record.
    pub supervision: Supervision,
    run: RunId,
    phase: Phase,
    started: Now,
    restarts: u32,
}

/// What a task's processes use, as the driver last measured it, and the measurement asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measured {
    /// The last measurement of the current run and when it came (`None` inside: the run had no
    /// process left, or the driver cannot tell).
    pub last: Option<(Option<Usage>, Instant)>,
    /// When the measurement now out was asked for.
    pub asked: Option<Instant>,
    /// When the memory limit is checked next, while the task runs.
    check_at: Option<Instant>,
    /// Measurements in a row above the memory limit.
    strikes: u32,
}

impl Measured {
    /// The last usage measured, if known.
    pub fn usage(&self) -> Option<&Usage> {
        self.last.as_ref().and_then(|(usage, _)| usage.as_ref())
    }

    /// Whether a measurement at or after `since` came.
    pub fn fresh_since(&self, since: Instant) -> bool {
        self.last.as_ref().is_some_and(|(_, at)| *at >= since)
    }
}

/// What a task's restart policy has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Supervision {
    /// Restarts the policy made.
    pub restarts: u32,
    /// Restarts since the last run that lasted [`BACKOFF_RESET`] (sets the next delay).
    consecutive: u32,
    /// When the last [`CRASH_LOOP_RESTARTS`] restarts by the policy happened.
    recent: VecDeque<Instant>,
    /// How the last run ended (kept across restarts) and when.
    pub last_exit: Option<(ExitStatus, Now)>,
    /// The policy gave up: `max_restarts` reached.
    pub exhausted: bool,
}

impl Supervision {
    /// Restarted [`CRASH_LOOP_RESTARTS`] times within [`CRASH_LOOP_WINDOW`], and no run since
    /// lasted [`BACKOFF_RESET`].
    pub fn crash_loop(&self) -> bool {
        self.consecutive as usize >= CRASH_LOOP_RESTARTS
            && self.recent.len() == CRASH_LOOP_RESTARTS
            && self.recent[CRASH_LOOP_RESTARTS - 1].saturating_duration_since(self.recent[0])
                <= CRASH_LOOP_WINDOW
    }

    /// The delay before the next restart: [`BACKOFF_FIRST`] doubled per restart in a row, at
    /// most [`BACKOFF_MAX`].
    fn delay(&self) -> Duration {
        let doubled = BACKOFF_FIRST.saturating_mul(1u32 << self.consecutive.min(16));
        doubled.min(BACKOFF_MAX)
    }
}

impl Task {
    /// A task in phase `Starting` for `run`; the caller asks the driver to spawn it.
    /// `stdin_limit` bounds the bytes queued for its stdin.
    pub fn new(
        id: String,
        name: Option<String>,
        command: Command,
        run: RunId,
        limits: LogLimits,
        stdin_limit: usize,
        now: Now,
    ) -> Self {
        // A terminal is always writable; pipes only when asked for.
        let writable = interactive(&command.spec);
        let screen = terminal_screen(&command.spec);
        Self {
            id,
            name,
            command,
            log: LogBuffer::new(limits),
            stdin: Stdin::new(writable, stdin_limit),
            escaped: Escaped::default(),
            screen,
            last_output: None,
            prompt: None,
            input: InputQuery::default(),
            usage: Measured::default(),
            urls: Urls::default(),
            touched: now.instant,
            supervision: Supervision::default(),
            run,
            phase: Phase::Starting { stop: None },
            started: now,
            restarts: 0,
        }
    }

    /// Starts an ended task over as `run`: same id, name, command and buffer (cursors
    /// continue); `restarts` counts up. The caller asks the driver to spawn it. A no-op (false)
    /// unless the task is [settled](Task::is_settled).
    pub fn respawn(&mut self, run: RunId, now: Now) -> bool {
        if !self.is_settled() {
            return false;
        }
        self.escaped = Escaped::default();
        self.usage = Measured::default();
        // A new terminal: blank, at the size the task has now.
        if let Some(screen) = &mut self.screen {
            *screen = Screen::new(screen.size());
        }
        self.run = run;
        self.phase = Phase::Starting { stop: None };
        self.started = now;
        self.restarts += 1;
        self.stdin.reset();
        true
    }

    /// Its current run's process is started and not released yet: commands about it (signals,
    /// writes, resizes, questions) may still go to the driver.
    pub fn is_live(&self) -> bool {
        self.spawned().is_some()
    }

    /// Whether something can be written to it: a terminal, or a stdin pipe.
    pub fn interactive(&self) -> bool {
        interactive(&self.command.spec)
    }

    /// The current run (process) of this task.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Ended, and every escaped process of the run is gone (or survived `SIGKILL`): nothing
    /// more will happen until a new request.
    pub fn is_settled(&self) -> bool {
        self.state().is_ended() && self.escaped.is_settled()
    }

    /// Whether the latest request asked for a new run, and the task is settled: then it is
    /// cleared and `true` returned (once), and the caller respawns the task.
    pub fn take_restart(&mut self) -> bool {
        if !self.escaped.is_settled() {
            return false;
        }
        match &mut self.phase {
            Phase::Exited { then, .. } | Phase::Failed { then, .. } if *then == Then::Restart => {
                *then = Then::Rest;
                true
            }
            _ => false,
        }
    }

    /// The state as the tools show it.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Starting { .. } => State::Starting,
            Phase::Running { .. } => State::Running,
            Phase::Stopping { .. } | Phase::Draining { .. } => State::Stopping,
            Phase::Exited { .. } => State::Exited,
            Phase::Failed { .. } => State::Failed,
        }
    }

    /// The process id (also its process group id), once spawned.
    pub fn pid(&self) -> Option<u32> {
        match &self.phase {
            Phase::Running { process, .. }
            | Phase::Stopping { process, .. }
            | Phase::Draining { process, .. } => Some(process.pid),
            Phase::Exited { pid, .. } => Some(*pid),
            Phase::Starting { .. } | Phase::Failed { .. } => None,
        }
    }

    /// How the current run ended, once its leader exited.
    pub fn exit(&self) -> Option<&Exit> {
        match &self.phase {
            Phase::Draining { exit, .. } | Phase::Exited { exit, .. } => Some(exit),
            _ => None,
        }
    }

    /// The exit code, when the process called `exit`.
    pub fn exit_code(&self) -> Option<i32> {
        match self.exit()?.status {
            ExitStatus::Code(code) => Some(code),
            _ => None,
        }
    }

    /// The signal that ended the process, if one did.
    pub fn exit_signal(&self) -> Option<Signal> {
        match self.exit()?.status {
            ExitStatus::Signaled(signal) => Some(signal),
            _ => None,
        }
    }

    /// Why the spawn failed, for a `failed` task.
    pub fn failure(&self) -> Option<&str> {
        match &self.phase {
            Phase::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether a stop (or `max_runtime`, or the server's shutdown) ended the run.
    pub fn stopped(&self) -> bool {
        self.exit().is_some_and(|exit| exit.stopped)
    }

    /// Whether the grace period ran out and `SIGKILL` was sent.
    pub fn escalated(&self) -> bool {
        match &self.phase {
            Phase::Stopping { stop, .. } => stop.escalated,
            _ => self.exit().is_some_and(|exit| exit.escalated),
        }
    }

    /// When `start` (or the last restart) was called.
    pub fn started(&self) -> Now {
        self.started
    }

    /// When the process exited (or failed to start).
    pub fn ended(&self) -> Option<Now> {
        match &self.phase {
            Phase::Failed { at, .. } => Some(*at),
            _ => self.exit().map(|exit| exit.at),
        }
    }

    /// How many times the task was restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Time from start to exit, or to `now` while it runs.
    pub fn runtime(&self, now: Now) -> Duration {
        let end = self.ended().unwrap_or(now);
        end.instant.saturating_duration_since(self.started.instant)
    }

    /// The process started (`fork`/`exec` succeeded).
    pub fn on_spawned(&mut self, pid: u32, now: Now, out: &mut Vec<Action>) -> Progress {
        let Phase::Starting { stop } = self.phase else {
            return Progress::Unchanged;
        };
        let open = match self.command.spec.stdio {
            Stdio::Pipes { .. } => [true, true, false],
            Stdio::Terminal(_) => [false, false, true],
        };
        let process = Spawned { pid, open };
        self.stdin.spawned();
        if self.command.options.max_memory.is_some() {
            self.usage.check_at = Some(now.instant);
        }
        self.phase = match stop {
            Some(stop) => self.send_stop(process, stop, now, out),
            None => Phase::Running {
                process,
                runtime_limit_at: self
                    .command
                    .options
                    .max_runtime
                    .map(|limit| now.instant.saturating_add(limit)),
            },
        };
        self.pump_stdin(out);
        Progress::Started
    }

    /// The process could not be started.
    pub fn on_spawn_failed(&mut self, error: String, now: Now, out: &mut Vec<Action>) -> Progress {
        let Phase::Starting { stop } = self.phase else {
            return Progress::Unchanged;
        };
        let then = match stop {
            Some(stop) => stop.then,
            None => self.policy_then(None, now),
        };
        self.phase = Phase::Failed {
            error,
            at: now,
            then,
        };
        self.stdin.end();
        out.push(Action::Release);
        Progress::Finished
    }

    /// Output from one of the pipes.
    pub fn on_output(&mut self, stream: Stream, bytes: &[u8], now: Now) {
        if self.spawned().is_some() {
            self.last_output = Some(now.instant);
            let _ = self.log.push(stream, bytes, now.unix_ms);
            self.urls.observe(bytes, &self.log);
            if let (Stream::Tty, Some(screen)) = (stream, &mut self.screen) {
                screen.feed(bytes);
            }
        }
    }

    /// EOF on one of the pipes.
    pub fn on_stream_closed(&mut self, stream: Stream, out: &mut Vec<Action>) -> Progress {
        let Some(process) = self.spawned_mut() else {
            return Progress::Unchanged;
        };
        process.open[stream_index(stream)] = false;
        let _ = self.log.close(stream);
        self.finish_if_drained(out)
    }

    /// The leader exited (not yet reaped). Kills what is left of its group and finishes once the
    /// pipes are drained, or at the drain deadline. `signalled`: a signal of ours reached the
    /// leader while it was alive (so a stop under way really ended it).
    pub fn on_exited(
        &mut self,
        status: ExitStatus,
        signalled: bool,
        now: Now,
        drain: Duration,
        out: &mut Vec<Action>,
    ) -> Progress {
        let (process, stop) = match &self.phase {
            Phase::Running { process, .. } => (*process, None),
            Phase::Stopping { process, stop, .. } => (*process, Some(*stop)),
            _ => return Progress::Unchanged,
        };
        self.stdin.end();
        out.push(Action::Signal(Signal::Kill));
        // What left the group is stopped as the group was: with the stop under way, or, after
        // an exit of its own, with SIGTERM and the task's grace period.
        let mut escaped = Vec::new();
        self.escaped.sweep(&mut escaped);
        if stop.is_none() {
            let grace = self.command.options.grace;
            self.escaped
                .stop(Signal::Term, grace, now.instant, now, &mut escaped);
        }
        out.extend(escaped.into_iter().map(Action::Escaped));
        self.usage.check_at = None;
        let exit = Exit {
            status,
            at: now,
            stopped: stop.is_some() && signalled,
            escalated: stop.is_some_and(|stop| stop.escalated),
            cause: stop.map(|stop| stop.cause),
        };
        let then = match stop {
            Some(stop) if stop.cause != StopCause::MaxMemory => stop.then,
            _ => self.policy_then(Some(&exit), now),
        };
        self.supervision.last_exit = Some((status, now));
        self.phase = Phase::Draining {
            process,
            exit,
            until: now.instant.saturating_add(drain),
            then,
        };
        self.finish_if_drained(out)
    }

    /// Asks the task to stop: `signal` to its group now, `SIGKILL` after `grace` if it still
    /// runs; the task then stays ended (a pending restart is superseded). A second stop may
    /// only make things faster. A no-op for an ended task.
    pub fn stop(
        &mut self,
        signal: Signal,
        grace: Duration,
        cause: StopCause,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        self.request_stop(signal, grace, Then::Rest, cause, now, out);
    }

    /// Asks the task to start again once the current run has ended (and its escaped
    /// processes are gone): stops it (`SIGTERM`, then `SIGKILL` after `grace`) if it runs.
    /// Returns `false` for a settled task, which the caller respawns at once.
    pub fn restart(&mut self, grace: Duration, now: Now, out: &mut Vec<Action>) -> bool {
        if self.is_settled() {
            return false;
        }
        self.request_stop(
            Signal::Term,
            grace,
            Then::Restart,
            StopCause::Request,
            now,
            out,
        );
        true
    }

    fn request_stop(
        &mut self,
        signal: Signal,
        grace: Duration,
        then: Then,
        cause: StopCause,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let new = Stop {
            signal,
            grace,
            then,
            escalated: false,
            cause,
        };
        match &mut self.phase {
            Phase::Starting { stop } => {
                *stop = Some(match *stop {
                    None => new,
                    Some(old) => Stop {
                        then,
                        ..faster(old, new)
                    },
                });
            }
            Phase::Running { process, .. } => {
                let process = *process;
                self.phase = self.send_stop(process, new, now, out);
            }
            Phase::Stopping { stop, kill_at, .. } => {
                stop.then = then;
                stop.cause = cause;
                if signal == Signal::Kill {
                    if kill_at.take().is_some() {
                        out.push(Action::Signal(Signal::Kill));
                    }
                } else if let Some(at) = kill_at {
                    *at = (*at).min(now.instant.saturating_add(grace));
                }
                self.stop_escaped(signal, grace, now, out);
            }
            Phase::Draining { then: t, .. } => {
                *t = then;
                self.stop_escaped(signal, grace, now, out);
            }
            Phase::Exited { then: t, .. } | Phase::Failed { then: t, .. } => {
                *t = then;
                if self.escaped.any_alive() {
                    // Look again: more may have left since the run ended.
                    let mut escaped = Vec::new();
                    self.escaped.sweep(&mut escaped);
                    out.extend(escaped.into_iter().map(Action::Escaped));
                    self.stop_escaped(signal, grace, now, out);
                }
            }
        }
    }

    /// Sends the stop's signal to the group and looks for what left it, to stop that too.
    fn send_stop(
        &mut self,
        process: Spawned,
        stop: Stop,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Phase {
        out.push(Action::Signal(stop.signal));
        let mut escaped = Vec::new();
        self.escaped.sweep(&mut escaped);
        out.extend(escaped.into_iter().map(Action::Escaped));
        self.stop_escaped(stop.signal, stop.grace, now, out);
        Phase::Stopping {
            process,
            stop,
            kill_at: (stop.signal != Signal::Kill).then(|| now.instant.saturating_add(stop.grace)),
        }
    }

    fn stop_escaped(&mut self, signal: Signal, grace: Duration, now: Now, out: &mut Vec<Action>) {
        let mut escaped = Vec::new();
        self.escaped
            .stop(signal, grace, now.instant, now, &mut escaped);
        out.extend(escaped.into_iter().map(Action::Escaped));
    }

    /// The driver's answer to a sweep. Once the leader has exited, pipes that escaped
    /// processes hold open are not waited for: those processes are being stopped.
    pub fn on_escaped(&mut self, found: Vec<EscapedProcess>, out: &mut Vec<Action>) -> Progress {
        let mut escaped = Vec::new();
        self.escaped.on_found(found, &mut escaped);
        out.extend(escaped.into_iter().map(Action::Escaped));
        if let Phase::Draining { process, .. } = &mut self.phase
            && self.escaped.any_alive()
            && process.open.iter().any(|open| *open)
        {
            process.open = [false; 3];
            let _ = self.log.close(Stream::Stdout);
            let _ = self.log.close(Stream::Stderr);
            return self.finish_if_drained(out);
        }
        Progress::Unchanged
    }

    /// An escaped process is gone (see [`Escaped::on_exited`]).
    pub fn on_escaped_exited(&mut self, pid: u32, out: &mut Vec<Action>) {
        let mut escaped = Vec::new();
        self.escaped.on_exited(pid, &mut escaped);
        out.extend(escaped.into_iter().map(Action::Escaped));
    }

    /// Kills the group at once (a second shutdown request), whatever the grace; the task then
    /// stays ended.
    pub fn kill_now(&mut self, now: Now, out: &mut Vec<Action>) {
        self.request_stop(
            Signal::Kill,
            Duration::ZERO,
            Then::Rest,
            StopCause::Shutdown,
            now,
            out,
        );
    }

    /// Stdin became writable again, or the driver wrote a chunk: feeds the next.
    pub fn pump_stdin(&mut self, out: &mut Vec<Action>) {
        if self.spawned().is_some() {
            while let Some(action) = self.stdin.poll_action() {
                out.push(Action::Stdin(action));
            }
        }
    }

    /// The earliest deadline this task needs a wake-up for.
    pub fn next_deadline(&self) -> Option<Instant> {
        let own = match &self.phase {
            Phase::Running {
                runtime_limit_at, ..
            } => *runtime_limit_at,
            Phase::Stopping { kill_at, .. } => *kill_at,
            Phase::Draining { until, .. } => Some(*until),
            _ => self.next_attempt(),
        };
        own.into_iter()
            .chain(self.idle_deadline())
            .chain(self.usage.check_at)
            .chain(self.escaped.next_deadline())
            .min()
    }

    /// When the idle lease runs out, while it can: the task runs or waits to be restarted.
    pub fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.command.options.idle_timeout?;
        let leased = match &self.phase {
            Phase::Starting { stop: None } | Phase::Running { .. } => true,
            Phase::Exited { then, .. } | Phase::Failed { then, .. } => {
                matches!(then, Then::Retry { .. })
            }
            _ => false,
        };
        leased.then(|| self.touched.saturating_add(timeout))
    }

    /// When the restart policy starts it again, while it waits to.
    pub fn next_attempt(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Exited {
                then: Then::Retry { at },
                ..
            }
            | Phase::Failed {
                then: Then::Retry { at },
                ..
            } => Some(*at),
            _ => None,
        }
    }

    /// Why the last run was stopped, if a stop was under way when it ended.
    pub fn stop_cause(&self) -> Option<StopCause> {
        match &self.phase {
            Phase::Stopping { stop, .. } => Some(stop.cause),
            _ => self.exit().and_then(|exit| exit.cause),
        }
    }

    /// What follows a run that ended (`exit`; `None`: the spawn failed) without a stop asked
    /// for, by the restart policy: `Retry` after the backoff, or `Rest`.
    fn policy_then(&mut self, exit: Option<&Exit>, now: Now) -> Then {
        let policy = self.command.options.restart;
        let failed = match exit {
            None => true,
            Some(exit) => {
                exit.cause == Some(StopCause::MaxMemory)
                    || !matches!(exit.status, ExitStatus::Code(0))
            }
        };
        let wanted = match policy.mode {
            RestartMode::No => false,
            RestartMode::OnFailure => failed,
            RestartMode::Always => true,
        };
        if !wanted {
            return Then::Rest;
        }
        let supervision = &mut self.supervision;
        if policy
            .max_restarts
            .is_some_and(|max| supervision.restarts >= max)
        {
            supervision.exhausted = true;
            return Then::Rest;
        }
        if now.instant.saturating_duration_since(self.started.instant) >= BACKOFF_RESET {
            supervision.consecutive = 0;
        }
        let at = now.instant.saturating_add(supervision.delay());
        Then::Retry { at }
    }

    /// The restart policy starts the task again now: counted for the backoff and the crash
    /// loop.
    fn policy_restarts(&mut self, now: Now) {
        let supervision = &mut self.supervision;
        supervision.restarts += 1;
        supervision.consecutive += 1;
        if supervision.recent.len() == CRASH_LOOP_RESTARTS {
            supervision.recent.pop_front();
        }
        supervision.recent.push_back(now.instant);
    }

    /// A tool call or a resource read referred to the task: the idle lease starts over.
    pub fn touch(&mut self, now: Instant) {
        self.touched = self.touched.max(now);
    }

    /// The driver measured the current run (`None`: it could not). Returns whether the memory
    /// limit now stops the task.
    pub fn on_usage(&mut self, usage: Option<Usage>, now: Now, out: &mut Vec<Action>) {
        self.usage.asked = None;
        if let (Some(limit), Some(measured), Phase::Running { .. }) =
            (self.command.options.max_memory, usage.as_ref(), &self.phase)
        {
            if measured.rss_bytes > limit {
                self.usage.strikes += 1;
            } else {
                self.usage.strikes = 0;
            }
            if self.usage.strikes >= MEMORY_STRIKES {
                let grace = self.command.options.grace;
                self.stop(Signal::Term, grace, StopCause::MaxMemory, now, out);
            }
        }
        self.usage.last = Some((usage, now.instant));
    }

    /// Fires the deadlines that passed; early calls are no-ops.
    pub fn on_timeout(&mut self, now: Now, out: &mut Vec<Action>) -> Progress {
        let mut escaped = Vec::new();
        self.escaped.on_timeout(now, &mut escaped);
        out.extend(escaped.into_iter().map(Action::Escaped));
        if self.idle_deadline().is_some_and(|at| at <= now.instant) {
            let grace = self.command.options.grace;
            self.stop(Signal::Term, grace, StopCause::Idle, now, out);
        }
        if let Some(at) = self.usage.check_at
            && at <= now.instant
        {
            self.usage.check_at = Some(now.instant.saturating_add(MEMORY_CHECK_INTERVAL));
            if self.usage.asked.is_none() {
                self.usage.asked = Some(now.instant);
                out.push(Action::Inspect);
            }
        }
        if self.next_attempt().is_some_and(|at| at <= now.instant) {
            if let Phase::Exited { then, .. } | Phase::Failed { then, .. } = &mut self.phase {
                *then = Then::Restart;
            }
            self.policy_restarts(now);
            return Progress::Unchanged;
        }
        match &mut self.phase {
            Phase::Running {
                runtime_limit_at: Some(at),
                ..
            } if *at <= now.instant => {
                let grace = self.command.options.grace;
                self.stop(Signal::Term, grace, StopCause::MaxRuntime, now, out);
                Progress::Unchanged
            }
            Phase::Stopping {
                stop,
                kill_at: kill_at @ Some(_),
                ..
            } if kill_at.is_some_and(|at| at <= now.instant) => {
                *kill_at = None;
                stop.escalated = true;
                out.push(Action::Signal(Signal::Kill));
                self.stop_escaped(Signal::Kill, Duration::ZERO, now, out);
                Progress::Unchanged
            }
            Phase::Draining { process, until, .. } if *until <= now.instant => {
                // What is left in the pipes belongs to a process that escaped the group.
                process.open = [false; 3];
                let _ = self.log.close(Stream::Stdout);
                let _ = self.log.close(Stream::Stderr);
                self.finish_if_drained(out)
            }
            _ => Progress::Unchanged,
        }
    }

    fn spawned(&self) -> Option<&Spawned> {
        match &self.phase {
            Phase::Running { process, .. }
            | Phase::Stopping { process, .. }
            | Phase::Draining { process, .. } => Some(process),
            _ => None,
        }
    }

    fn spawned_mut(&mut self) -> Option<&mut Spawned> {
        match &mut self.phase {
            Phase::Running { process, .. }
            | Phase::Stopping { process, .. }
            | Phase::Draining { process, .. } => Some(process),
            _ => None,
        }
    }

    fn finish_if_drained(&mut self, out: &mut Vec<Action>) -> Progress {
        let Phase::Draining {
            process,
            exit,
            then,
            ..
        } = &self.phase
        else {
            return Progress::Unchanged;
        };
        if process.open.iter().any(|open| *open) {
            return Progress::Unchanged;
        }
        self.phase = Phase::Exited {
            pid: process.pid,
            exit: *exit,
            then: *then,
        };
        out.push(Action::Release);
        Progress::Finished
    }
}

/// Of two stops asked for before the spawn answered, the one that ends the task sooner.
fn faster(old: Stop, new: Stop) -> Stop {
    match (old.signal, new.signal) {
        (Signal::Kill, _) => Stop {
            grace: old.grace.min(new.grace),
            ..old
        },
        (_, Signal::Kill) => new,
        _ => Stop {
            grace: old.grace.min(new.grace),
            ..new
        },
    }
}

/// Whether a task's foreground process waits for input, as the driver last said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputQuery {
    /// The number the next question gets.
    next: u64,
    /// The question now out: its number and when it was asked.
    pub asked: Option<Question>,
    /// The last answer: the number of the question it answers, and the answer (`None`: it
    /// cannot be known).
    answer: Option<(u64, Option<bool>)>,
}

/// One question to the driver about a task's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    pub number: u64,
    pub at: Instant,
}

impl InputQuery {
    /// A new question asked at `at`.
    pub fn ask(&mut self, at: Instant) -> Question {
        let question = Question {
            number: self.next,
            at,
        };
        self.next += 1;
        self.asked = Some(question);
        question
    }

    /// The driver answered the question out.
    pub fn answered(&mut self, wanted: Option<bool>) {
        if let Some(question) = self.asked.take() {
            self.answer = Some((question.number, wanted));
        }
    }

    /// The answer to `question` (or a later one), once it came.
    pub fn answer_to(&self, question: Question) -> Option<Option<bool>> {
        self.answer
            .filter(|(number, _)| *number >= question.number)
            .map(|(_, wanted)| wanted)
    }
}

/// Whether a process spawned as `spec` can be written to: a terminal, or a stdin pipe.
fn interactive(spec: &SpawnSpec) -> bool {
    !matches!(
        spec.stdio,
        Stdio::Pipes {
            stdin: StdinMode::Null
        }
    )
}

/// A blank screen for a terminal task, at the size it is spawned with.
fn terminal_screen(spec: &SpawnSpec) -> Option<Screen> {
    match spec.stdio {
        Stdio::Terminal(size) => Some(Screen::new(size)),
        Stdio::Pipes { .. } => None,
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Tty => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escaped;

    const GRACE: Duration = Duration::from_secs(5);
    const DRAIN: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> Now {
        Now::new(Instant::from_nanos(ms * 1_000_000), 1_700_000_000_000 + ms)
    }

    fn task() -> Task {
        let spec = SpawnSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "sleep 1000".into()],
            cwd: None,
            env: Vec::new(),
            stdio: Stdio::Pipes {
                stdin: StdinMode::Null,
            },
        };
        let command = Command {
            command: "sleep 1000".into(),
            args: None,
            cwd: "/".into(),
            spec,
            options: Options {
                max_runtime: Some(Duration::from_secs(60)),
                grace: GRACE,
                ..Options::default()
            },
        };
        let limits = LogLimits {
            budget_bytes: 4096,
            max_line_bytes: 256,
        };
        Task::new(
            "abc123".into(),
            None,
            command,
            RunId(1),
            limits,
            1024,
            at(0),
        )
    }

    fn running() -> Task {
        let mut t = task();
        let mut out = Vec::new();
        assert_eq!(t.on_spawned(42, at(0), &mut out), Progress::Started);
        assert!(out.is_empty());
        t
    }

    fn signal(signal: Signal) -> Action {
        Action::Signal(signal)
    }

    /// The actions about the group and the run (escaped-process actions left out).
    fn own(out: &[Action]) -> Vec<&Action> {
        out.iter()
            .filter(|a| !matches!(a, Action::Escaped(_)))
            .collect()
    }

    /// The leader was killed by the stop's SIGTERM at `ms`.
    fn terminated(t: &mut Task, ms: u64, out: &mut Vec<Action>) {
        let _ = t.on_exited(ExitStatus::Signaled(Signal::Term), true, at(ms), DRAIN, out);
    }

    /// The driver found no escaped process.
    fn none_escaped(t: &mut Task) {
        let _ = t.on_escaped(Vec::new(), &mut Vec::new());
    }

    fn close_both(t: &mut Task, out: &mut Vec<Action>) -> Progress {
        let first = t.on_stream_closed(Stream::Stdout, out);
        assert_eq!(first, Progress::Unchanged);
        t.on_stream_closed(Stream::Stderr, out)
    }

    #[test]
    fn stop_sends_signal_then_escalates_to_sigkill_after_grace() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(10), &mut out);
        assert_eq!(own(&out), [&signal(Signal::Term)]);
        assert_eq!(t.state(), State::Stopping);
        assert_eq!(t.next_deadline(), Some(at(5010).instant));

        out.clear();
        assert_eq!(t.on_timeout(at(5009), &mut out), Progress::Unchanged);
        assert!(out.is_empty(), "early timeout is a no-op");
        assert_eq!(t.on_timeout(at(5010), &mut out), Progress::Unchanged);
        assert_eq!(own(&out), [&signal(Signal::Kill)]);
        assert!(t.escalated());
        assert_eq!(t.next_deadline(), None, "no timer once SIGKILL went out");
    }

    #[test]
    fn task_ends_only_when_exit_and_both_streams_are_done() {
        let mut t = running();
        let mut out = Vec::new();
        t.on_output(Stream::Stdout, b"last words\n", at(19));
        assert_eq!(
            t.on_exited(ExitStatus::Code(3), false, at(20), DRAIN, &mut out),
            Progress::Unchanged
        );
        assert_eq!(
            own(&out),
            [&signal(Signal::Kill)],
            "leftovers in the group are killed"
        );
        assert_eq!(t.state(), State::Stopping, "draining");
        assert_eq!(t.exit_code(), Some(3));
        out.clear();
        assert_eq!(close_both(&mut t, &mut out), Progress::Finished);
        assert_eq!(own(&out), [&Action::Release]);
        assert_eq!(t.state(), State::Exited);
        assert!(!t.stopped());
        assert_eq!(t.runtime(at(999)), Duration::from_millis(20));
    }

    #[test]
    fn streams_held_open_by_an_escaped_process_end_at_the_drain_deadline() {
        let mut t = running();
        let mut out = Vec::new();
        let _ = t.on_exited(ExitStatus::Code(0), false, at(0), DRAIN, &mut out);
        assert_eq!(t.next_deadline(), Some(at(1000).instant));
        out.clear();
        assert_eq!(t.on_timeout(at(1000), &mut out), Progress::Finished);
        assert_eq!(own(&out), [&Action::Release]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn stop_while_starting_is_applied_on_spawn() {
        let mut t = task();
        let mut out = Vec::new();
        t.stop(Signal::Int, GRACE, StopCause::Request, at(1), &mut out);
        assert!(out.is_empty());
        let _ = t.on_spawned(7, at(2), &mut out);
        assert_eq!(own(&out), [&signal(Signal::Int)]);
        assert_eq!(t.state(), State::Stopping);
        let _ = t.on_exited(
            ExitStatus::Signaled(Signal::Int),
            true,
            at(3),
            DRAIN,
            &mut out,
        );
        assert!(t.stopped());
    }

    #[test]
    fn sigkill_stop_sets_no_grace_timer() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Kill, GRACE, StopCause::Request, at(0), &mut out);
        assert_eq!(own(&out), [&signal(Signal::Kill)]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn max_runtime_stops_the_task_with_the_grace_period() {
        let mut t = running();
        let mut out = Vec::new();
        assert_eq!(t.next_deadline(), Some(at(60_000).instant));
        let _ = t.on_timeout(at(60_000), &mut out);
        assert_eq!(own(&out), [&signal(Signal::Term)]);
        assert_eq!(t.next_deadline(), Some(at(65_000).instant));
        let _ = t.on_exited(
            ExitStatus::Signaled(Signal::Term),
            true,
            at(60_001),
            DRAIN,
            &mut out,
        );
        assert!(t.stopped());
    }

    #[test]
    fn respawn_keeps_the_buffer_and_counts() {
        let mut t = running();
        let mut out = Vec::new();
        t.on_output(Stream::Stdout, b"one\n", at(4));
        let _ = t.on_exited(ExitStatus::Code(0), false, at(5), DRAIN, &mut out);
        let _ = close_both(&mut t, &mut out);
        assert!(!t.respawn(RunId(2), at(9)), "not before the sweep answered");
        none_escaped(&mut t);
        assert!(t.respawn(RunId(2), at(10)));
        assert_eq!(
            (t.state(), t.run(), t.restarts()),
            (State::Starting, RunId(2), 1)
        );
        assert_eq!(t.exit(), None);
        let _ = t.on_spawned(43, at(11), &mut out);
        t.on_output(Stream::Stdout, b"two\n", at(12));
        assert_eq!(t.log.next_cursor(), 2, "cursors continue across runs");
        assert!(!t.respawn(RunId(3), at(12)), "only an ended task respawns");
    }

    #[test]
    fn forced_second_stop_kills_at_once() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(0), &mut out);
        t.stop(Signal::Kill, GRACE, StopCause::Request, at(1), &mut out);
        assert_eq!(own(&out), [&signal(Signal::Term), &signal(Signal::Kill)]);
        assert!(!t.escalated(), "a forced stop is not an escalation");
        t.stop(Signal::Kill, GRACE, StopCause::Request, at(2), &mut out);
        assert_eq!(own(&out).len(), 2, "SIGKILL goes out once");
    }

    #[test]
    fn spawn_failure_ends_the_task_and_releases_the_run() {
        let mut t = task();
        let mut out = Vec::new();
        let p = t.on_spawn_failed("no such directory".into(), at(3), &mut out);
        assert_eq!(p, Progress::Finished);
        assert_eq!(t.state(), State::Failed);
        assert_eq!(t.failure(), Some("no such directory"));
        assert_eq!(own(&out), [&Action::Release]);
    }

    #[test]
    fn stop_after_exit_is_a_no_op() {
        let mut t = running();
        let mut out = Vec::new();
        let _ = t.on_exited(
            ExitStatus::Signaled(Signal::Segv),
            false,
            at(5),
            DRAIN,
            &mut out,
        );
        let _ = close_both(&mut t, &mut out);
        out.clear();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(6), &mut out);
        assert!(out.is_empty());
        assert!(!t.stopped());
        assert_eq!(t.exit_signal(), Some(Signal::Segv));
    }

    #[test]
    fn an_exit_that_came_before_the_stop_signal_is_not_a_stop() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(1), &mut out);
        // The driver found the leader already gone when it came to signal it.
        let _ = t.on_exited(ExitStatus::Code(3), false, at(2), DRAIN, &mut out);
        let _ = close_both(&mut t, &mut out);
        assert!(!t.stopped());
        assert_eq!(t.exit_code(), Some(3));
    }

    #[test]
    fn the_latest_request_decides_what_follows_the_run() {
        let mut out = Vec::new();
        // restart, then stop: stays stopped.
        let mut t = running();
        assert!(t.restart(GRACE, at(0), &mut out));
        t.stop(Signal::Term, GRACE, StopCause::Request, at(1), &mut out);
        terminated(&mut t, 2, &mut out);
        assert_eq!(close_both(&mut t, &mut out), Progress::Finished);
        none_escaped(&mut t);
        assert!(!t.take_restart());
        // stop, then restart (even while draining): starts again.
        let mut t = running();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(0), &mut out);
        terminated(&mut t, 1, &mut out);
        assert!(t.restart(GRACE, at(2), &mut out));
        assert_eq!(close_both(&mut t, &mut out), Progress::Finished);
        assert!(
            !t.take_restart(),
            "not before the escaped processes are known"
        );
        none_escaped(&mut t);
        assert!(t.take_restart());
        assert!(!t.take_restart(), "once");
        // A restart asked for before the spawn answered stops the new process at once.
        let mut t = task();
        out.clear();
        assert!(t.restart(GRACE, at(0), &mut out));
        let _ = t.on_spawned(9, at(1), &mut out);
        assert_eq!(own(&out), [&signal(Signal::Term)]);
        // An ended task is restarted by the caller.
        terminated(&mut t, 2, &mut out);
        let _ = close_both(&mut t, &mut out);
        none_escaped(&mut t);
        assert!(!t.restart(GRACE, at(3), &mut out));
    }

    fn daemon(pid: u32) -> Vec<EscapedProcess> {
        vec![EscapedProcess {
            pid,
            command: "daemon".into(),
        }]
    }

    fn escaped_signals(out: &[Action]) -> Vec<Signal> {
        out.iter()
            .filter_map(|a| match a {
                Action::Escaped(escaped::Action::Signal(s)) => Some(*s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_looks_for_escaped_processes_and_stops_them_with_the_group() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(0), &mut out);
        assert!(out.contains(&Action::Escaped(escaped::Action::Sweep)));
        out.clear();
        let _ = t.on_escaped(daemon(99), &mut out);
        assert_eq!(escaped_signals(&out), [Signal::Term]);
        // The leader goes at once; the daemon ignores SIGTERM.
        terminated(&mut t, 10, &mut out);
        let _ = close_both(&mut t, &mut out);
        let _ = t.on_escaped(Vec::new(), &mut out);
        assert_eq!(t.state(), State::Exited);
        assert!(!t.is_settled(), "the daemon is not gone yet");
        out.clear();
        assert_eq!(
            t.next_deadline(),
            Some(at(5000).instant),
            "the group's deadline"
        );
        let _ = t.on_timeout(at(5000), &mut out);
        assert_eq!(escaped_signals(&out), [Signal::Kill]);
        out.clear();
        t.on_escaped_exited(99, &mut out);
        assert!(
            !t.is_settled(),
            "it looks again for what the daemon started meanwhile"
        );
        assert_eq!(out, [Action::Escaped(escaped::Action::Sweep)]);
        let _ = t.on_escaped(Vec::new(), &mut out);
        assert!(t.is_settled());
    }

    #[test]
    fn a_daemon_holding_the_pipes_does_not_hold_up_the_exit() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, StopCause::Request, at(0), &mut out);
        terminated(&mut t, 1, &mut out);
        // The pipes stay open: the daemon has them. Once it is found, the run ends at once.
        let _ = t.on_escaped(Vec::new(), &mut out);
        let progress = t.on_escaped(daemon(5), &mut out);
        assert_eq!(progress, Progress::Finished);
        assert_eq!(t.state(), State::Exited);
    }

    #[test]
    fn escaped_processes_of_a_task_that_exited_on_its_own_get_sigterm_then_sigkill() {
        let mut t = running();
        let mut out = Vec::new();
        let _ = t.on_exited(ExitStatus::Code(0), false, at(0), DRAIN, &mut out);
        assert!(out.contains(&Action::Escaped(escaped::Action::Sweep)));
        out.clear();
        let _ = t.on_escaped(daemon(8), &mut out);
        assert_eq!(escaped_signals(&out), [Signal::Term]);
        assert_eq!(t.escaped.next_deadline(), Some(at(5000).instant));
        // A `stop` of the ended task hurries it along.
        out.clear();
        t.stop(Signal::Kill, GRACE, StopCause::Request, at(100), &mut out);
        assert_eq!(escaped_signals(&out), [Signal::Kill]);
        assert!(!t.stopped(), "the task itself ended on its own");
    }

    #[test]
    fn repeated_restarts_of_one_run_send_one_signal() {
        let mut t = running();
        let mut out = Vec::new();
        for ms in 0..3 {
            assert!(t.restart(GRACE, at(ms), &mut out));
        }
        assert_eq!(own(&out), [&signal(Signal::Term)]);
        assert_eq!(t.next_deadline(), Some(at(5000).instant));
    }
}

//! One task's lifecycle: `starting → running → stopping → exited`, or `starting → failed`.
//!
//! A [`Task`] owns its output buffer and its timers (the stop escalation deadline and the
//! post-exit drain deadline) and turns inputs about its process into [`Output`]s for the driver.
//! It never answers the client: it reports [`Progress::Finished`] and the server answers whoever
//! waits.
//!
//! Stopping follows the usual supervisor escalation (see kill(2), killpg(3)): the first signal goes
//! to the whole process group, and if the leader has not exited when the grace period ends,
//! `SIGKILL` goes to the group. When the leader exits for any reason, `SIGKILL` goes to the group
//! as well, so nothing the task started outlives it; the driver has not reaped the leader at that
//! point, so the process group id cannot have been reused.
//!
//! A task counts as ended only when its exit status is known *and* both pipes reached EOF (or
//! the drain deadline passed), so output printed just before exit is in the buffer by the time
//! anyone hears the task ended.

use core::time::Duration;

use crate::log::{LogBuffer, LogLimits};
use crate::process::{ExitStatus, RunId, Signal, SpawnSpec, StdinMode, Stream};
use crate::server::Output;
use crate::time::{Instant, Now};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Spawn requested; no pid yet.
    Starting,
    /// The process runs.
    Running,
    /// A stop signal was sent; waiting for the exit.
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

/// What an input did to a task, as far as the server cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Progress {
    /// Nothing anyone waits for.
    Unchanged,
    /// The spawn was answered (`Spawned` or `SpawnFailed`): a pending `start` can be answered.
    Started,
    /// The task ended (`exited` or `failed`) and its run was released.
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Send exit notifications when the task ends.
    pub notify_on_exit: bool,
    /// Regex a new output line must match before `start`/`restart` answer.
    pub wait_for: Option<String>,
    /// Bound for `wait_for`.
    pub wait_timeout: Duration,
    /// Stop the task once it has run this long.
    pub max_runtime: Option<Duration>,
    /// The grace period between SIGTERM and SIGKILL when `max_runtime` stops the task.
    pub grace: Duration,
}

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
    run: RunId,
    state: State,
    pid: Option<u32>,
    exit: Option<ExitStatus>,
    failure: Option<String>,
    stopped: bool,
    escalated: bool,
    started: Now,
    ended: Option<Now>,
    restarts: u32,
    streams_open: [bool; 2],
    /// A stop that arrived while starting: applied on `Spawned`.
    deferred_stop: Option<(Signal, Duration)>,
    kill_at: Option<Instant>,
    drain_until: Option<Instant>,
    /// When `max_runtime` runs out.
    runtime_limit_at: Option<Instant>,
    /// The stdin pipe is open (started with `stdin: true` and not closed by `write`).
    stdin_open: bool,
}

impl Task {
    /// A task in state `starting`; the caller emits [`Output::Spawn`] for `run`.
    pub fn new(
        id: String,
        name: Option<String>,
        command: Command,
        run: RunId,
        limits: LogLimits,
        now: Now,
    ) -> Self {
        Self {
            id,
            name,
            command,
            log: LogBuffer::new(limits),
            run,
            state: State::Starting,
            pid: None,
            exit: None,
            failure: None,
            stopped: false,
            escalated: false,
            started: now,
            ended: None,
            restarts: 0,
            streams_open: [true, true],
            deferred_stop: None,
            kill_at: None,
            drain_until: None,
            runtime_limit_at: None,
            stdin_open: false,
        }
    }

    /// Starts the task over as `run`: same id, name, command and buffer (cursors continue);
    /// `restarts` counts up. The caller emits [`Output::Spawn`] for `run`.
    pub fn restart(&mut self, run: RunId, now: Now) {
        self.run = run;
        self.state = State::Starting;
        self.pid = None;
        self.exit = None;
        self.failure = None;
        self.stopped = false;
        self.escalated = false;
        self.started = now;
        self.ended = None;
        self.restarts += 1;
        self.streams_open = [true, true];
        self.deferred_stop = None;
        self.kill_at = None;
        self.drain_until = None;
        self.runtime_limit_at = None;
        self.stdin_open = false;
    }

    /// Whether `write` can reach the process: it runs, was started with `stdin: true`, and
    /// stdin was not closed.
    pub fn stdin_open(&self) -> bool {
        self.stdin_open && self.exit.is_none() && !self.state.is_ended()
    }

    /// `write` with `eof`: no more writes after this one.
    pub fn close_stdin(&mut self) {
        self.stdin_open = false;
    }

    /// The current run (process) of this task.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The process id (also its process group id), once spawned.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The exit status, once the process exited.
    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// The exit code, when the process called `exit`.
    pub fn exit_code(&self) -> Option<i32> {
        match self.exit {
            Some(ExitStatus::Code(code)) => Some(code),
            _ => None,
        }
    }

    /// The signal that ended the process, if one did.
    pub fn exit_signal(&self) -> Option<Signal> {
        match self.exit {
            Some(ExitStatus::Signaled(signal)) => Some(signal),
            _ => None,
        }
    }

    /// Why the spawn failed, for a `failed` task.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether a stop (or the server's shutdown) ended the task.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the grace period ran out and `SIGKILL` was sent.
    pub fn escalated(&self) -> bool {
        self.escalated
    }

    /// When `start` was called.
    pub fn started(&self) -> Now {
        self.started
    }

    /// When the process exited (or failed to start).
    pub fn ended(&self) -> Option<Now> {
        self.ended
    }

    /// How many times the task was restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Time from start to exit, or to `now` while it runs.
    pub fn runtime(&self, now: Now) -> Duration {
        let end = self.ended.unwrap_or(now);
        end.instant.saturating_duration_since(self.started.instant)
    }

    /// The process started (`fork`/`exec` succeeded).
    pub fn on_spawned(&mut self, pid: u32, now: Now, out: &mut impl Extend<Output>) -> Progress {
        if self.state != State::Starting {
            return Progress::Unchanged;
        }
        self.pid = Some(pid);
        self.state = State::Running;
        self.stdin_open = self.command.spec.stdin == StdinMode::Piped;
        self.runtime_limit_at = self
            .command
            .options
            .max_runtime
            .map(|limit| now.instant.saturating_add(limit));
        if let Some((signal, grace)) = self.deferred_stop.take() {
            // The stop's own clock started when it was asked for; close enough to start now.
            self.send_stop(signal, grace, self.started, out);
        }
        Progress::Started
    }

    /// The process could not be started.
    pub fn on_spawn_failed(
        &mut self,
        error: String,
        now: Now,
        out: &mut impl Extend<Output>,
    ) -> Progress {
        if self.state != State::Starting {
            return Progress::Unchanged;
        }
        self.state = State::Failed;
        self.failure = Some(error);
        self.ended = Some(now);
        self.deferred_stop = None;
        out.extend([Output::Release { run: self.run }]);
        Progress::Finished
    }

    /// Output from one of the pipes.
    pub fn on_output(&mut self, stream: Stream, bytes: &[u8]) {
        if !self.state.is_ended() {
            let _ = self.log.push(stream, bytes);
        }
    }

    /// EOF on one of the pipes.
    pub fn on_stream_closed(&mut self, stream: Stream, out: &mut impl Extend<Output>) -> Progress {
        if self.state.is_ended() {
            return Progress::Unchanged;
        }
        let _ = self.log.close(stream);
        self.streams_open[stream_index(stream)] = false;
        self.finish_if_complete(out)
    }

    /// The leader exited (not yet reaped). Kills what is left of its group and finishes once the
    /// pipes are drained, or at the drain deadline.
    pub fn on_exited(
        &mut self,
        status: ExitStatus,
        now: Now,
        drain: Duration,
        out: &mut impl Extend<Output>,
    ) -> Progress {
        if self.exit.is_some() || self.state.is_ended() {
            return Progress::Unchanged;
        }
        self.exit = Some(status);
        self.ended = Some(now);
        self.kill_at = None;
        self.runtime_limit_at = None;
        out.extend([Output::Signal {
            run: self.run,
            signal: Signal::Kill,
        }]);
        self.drain_until = Some(now.instant.saturating_add(drain));
        self.finish_if_complete(out)
    }

    /// Asks the task to stop: `signal` to its group now, `SIGKILL` after `grace` if it still
    /// runs. A second stop may only make things faster. A no-op once the process exited.
    pub fn stop(
        &mut self,
        signal: Signal,
        grace: Duration,
        now: Now,
        out: &mut impl Extend<Output>,
    ) {
        if self.state.is_ended() || self.exit.is_some() {
            return;
        }
        self.stopped = true;
        match self.state {
            State::Starting => {
                self.deferred_stop = Some(match self.deferred_stop {
                    Some((Signal::Kill, g)) => (Signal::Kill, g.min(grace)),
                    Some((_, g)) if signal != Signal::Kill => (signal, g.min(grace)),
                    _ => (signal, grace),
                });
            }
            State::Running => self.send_stop(signal, grace, now, out),
            State::Stopping => {
                if signal == Signal::Kill {
                    self.kill_at = None;
                    out.extend([Output::Signal {
                        run: self.run,
                        signal: Signal::Kill,
                    }]);
                } else {
                    let deadline = now.instant.saturating_add(grace);
                    self.kill_at = self.kill_at.map(|at| at.min(deadline));
                }
            }
            State::Exited | State::Failed => {}
        }
    }

    fn send_stop(
        &mut self,
        signal: Signal,
        grace: Duration,
        now: Now,
        out: &mut impl Extend<Output>,
    ) {
        self.state = State::Stopping;
        out.extend([Output::Signal {
            run: self.run,
            signal,
        }]);
        self.kill_at = (signal != Signal::Kill).then(|| now.instant.saturating_add(grace));
    }

    /// Kills the group at once (a second shutdown request), whatever the grace.
    pub fn kill_now(&mut self, out: &mut impl Extend<Output>) {
        match self.state {
            State::Starting => self.deferred_stop = Some((Signal::Kill, Duration::ZERO)),
            State::Running | State::Stopping if self.exit.is_none() => {
                self.stopped = true;
                self.state = State::Stopping;
                self.kill_at = None;
                out.extend([Output::Signal {
                    run: self.run,
                    signal: Signal::Kill,
                }]);
            }
            _ => {}
        }
    }

    /// The earliest deadline this task needs a wake-up for.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.kill_at, self.drain_until, self.runtime_limit_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires the deadlines that passed; early calls are no-ops.
    pub fn on_timeout(&mut self, now: Now, out: &mut impl Extend<Output>) -> Progress {
        if self.runtime_limit_at.is_some_and(|at| at <= now.instant) {
            self.runtime_limit_at = None;
            let grace = self.command.options.grace;
            self.stop(Signal::Term, grace, now, out);
        }
        if self.kill_at.is_some_and(|at| at <= now.instant) {
            self.kill_at = None;
            self.escalated = true;
            out.extend([Output::Signal {
                run: self.run,
                signal: Signal::Kill,
            }]);
        }
        if self.drain_until.is_some_and(|at| at <= now.instant) {
            self.streams_open = [false, false];
            let _ = self.log.close(Stream::Stdout);
            let _ = self.log.close(Stream::Stderr);
            return self.finish_if_complete(out);
        }
        Progress::Unchanged
    }

    fn finish_if_complete(&mut self, out: &mut impl Extend<Output>) -> Progress {
        if self.exit.is_none() || self.streams_open.iter().any(|open| *open) {
            return Progress::Unchanged;
        }
        self.state = State::Exited;
        self.kill_at = None;
        self.drain_until = None;
        self.runtime_limit_at = None;
        out.extend([Output::Release { run: self.run }]);
        Progress::Finished
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            stdin: StdinMode::Null,
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
        Task::new("abc123".into(), None, command, RunId(1), limits, at(0))
    }

    fn running() -> Task {
        let mut t = task();
        let mut out = Vec::new();
        assert_eq!(t.on_spawned(42, at(0), &mut out), Progress::Started);
        assert!(out.is_empty());
        t
    }

    fn signal(signal: Signal) -> Output {
        Output::Signal {
            run: RunId(1),
            signal,
        }
    }

    fn close_both(t: &mut Task, out: &mut Vec<Output>) -> Progress {
        let first = t.on_stream_closed(Stream::Stdout, out);
        assert_eq!(first, Progress::Unchanged);
        t.on_stream_closed(Stream::Stderr, out)
    }

    #[test]
    fn stop_sends_signal_then_escalates_to_sigkill_after_grace() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, at(10), &mut out);
        assert_eq!(out, vec![signal(Signal::Term)]);
        assert_eq!(t.state(), State::Stopping);
        assert_eq!(t.next_deadline(), Some(at(5010).instant));

        out.clear();
        assert_eq!(t.on_timeout(at(5009), &mut out), Progress::Unchanged);
        assert!(out.is_empty(), "early timeout is a no-op");
        assert_eq!(t.on_timeout(at(5010), &mut out), Progress::Unchanged);
        assert_eq!(out, vec![signal(Signal::Kill)]);
        assert!(t.escalated());
    }

    #[test]
    fn task_ends_only_when_exit_and_both_streams_are_done() {
        let mut t = running();
        let mut out = Vec::new();
        t.on_output(Stream::Stdout, b"last words\n");
        assert_eq!(
            t.on_exited(ExitStatus::Code(3), at(20), DRAIN, &mut out),
            Progress::Unchanged
        );
        assert_eq!(
            out,
            vec![signal(Signal::Kill)],
            "leftovers in the group are killed"
        );
        assert_eq!(t.state(), State::Running);
        out.clear();
        assert_eq!(close_both(&mut t, &mut out), Progress::Finished);
        assert_eq!(out, vec![Output::Release { run: RunId(1) }]);
        assert_eq!(t.state(), State::Exited);
        assert_eq!(t.exit_code(), Some(3));
        assert!(!t.stopped());
        assert_eq!(t.runtime(at(999)), Duration::from_millis(20));
    }

    #[test]
    fn streams_held_open_by_an_escaped_process_end_at_the_drain_deadline() {
        let mut t = running();
        let mut out = Vec::new();
        let _ = t.on_exited(ExitStatus::Code(0), at(0), DRAIN, &mut out);
        assert_eq!(t.next_deadline(), Some(at(1000).instant));
        out.clear();
        assert_eq!(t.on_timeout(at(1000), &mut out), Progress::Finished);
        assert_eq!(out, vec![Output::Release { run: RunId(1) }]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn stop_while_starting_is_applied_on_spawn() {
        let mut t = task();
        let mut out = Vec::new();
        t.stop(Signal::Int, GRACE, at(1), &mut out);
        assert!(out.is_empty());
        let _ = t.on_spawned(7, at(2), &mut out);
        assert_eq!(out, vec![signal(Signal::Int)]);
        assert_eq!(t.state(), State::Stopping);
        assert!(t.stopped());
    }

    #[test]
    fn sigkill_stop_sets_no_grace_timer() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Kill, GRACE, at(0), &mut out);
        assert_eq!(out, vec![signal(Signal::Kill)]);
        assert_eq!(
            t.next_deadline(),
            Some(at(60_000).instant),
            "only max_runtime is left"
        );
    }

    #[test]
    fn max_runtime_stops_the_task_with_the_grace_period() {
        let mut t = running();
        let mut out = Vec::new();
        assert_eq!(t.next_deadline(), Some(at(60_000).instant));
        let _ = t.on_timeout(at(60_000), &mut out);
        assert_eq!(out, vec![signal(Signal::Term)]);
        assert!(t.stopped());
        assert_eq!(t.next_deadline(), Some(at(65_000).instant));
    }

    #[test]
    fn restart_keeps_the_buffer_and_counts() {
        let mut t = running();
        let mut out = Vec::new();
        t.on_output(Stream::Stdout, b"one\n");
        let _ = t.on_exited(ExitStatus::Code(0), at(5), DRAIN, &mut out);
        let _ = close_both(&mut t, &mut out);
        t.restart(RunId(2), at(10));
        assert_eq!(
            (t.state(), t.run(), t.restarts()),
            (State::Starting, RunId(2), 1)
        );
        assert_eq!(t.exit(), None);
        let _ = t.on_spawned(43, at(11), &mut out);
        t.on_output(Stream::Stdout, b"two\n");
        assert_eq!(t.log.next_cursor(), 2, "cursors continue across runs");
    }

    #[test]
    fn forced_second_stop_kills_at_once() {
        let mut t = running();
        let mut out = Vec::new();
        t.stop(Signal::Term, GRACE, at(0), &mut out);
        t.stop(Signal::Kill, GRACE, at(1), &mut out);
        assert_eq!(out, vec![signal(Signal::Term), signal(Signal::Kill)]);
        assert!(!t.escalated(), "a forced stop is not an escalation");
    }

    #[test]
    fn spawn_failure_ends_the_task_and_releases_the_run() {
        let mut t = task();
        let mut out = Vec::new();
        let p = t.on_spawn_failed("no such directory".into(), at(3), &mut out);
        assert_eq!(p, Progress::Finished);
        assert_eq!(t.state(), State::Failed);
        assert_eq!(t.failure(), Some("no such directory"));
        assert_eq!(out, vec![Output::Release { run: RunId(1) }]);
    }

    #[test]
    fn stop_after_exit_is_a_no_op() {
        let mut t = running();
        let mut out = Vec::new();
        let _ = t.on_exited(ExitStatus::Signaled(Signal::Segv), at(5), DRAIN, &mut out);
        let _ = close_both(&mut t, &mut out);
        out.clear();
        t.stop(Signal::Term, GRACE, at(6), &mut out);
        assert!(out.is_empty());
        assert!(!t.stopped());
        assert_eq!(t.exit_signal(), Some(Signal::Segv));
    }
}

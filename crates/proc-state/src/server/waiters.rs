//! Requests that wait on a task's run: `start` until spawned (and ready), `stop` until the run
//! ended, `restart` until the old run ended and the new one started, `wait` until its
//! condition, `write` until its bytes are settled.
//!
//! Each waiter is bound to the run it was asked about, so a restart can never leave it waiting
//! on a process that no longer exists. Waiters are indexed by task (only the waiters of a task
//! that changed are looked at), by request id (cancellation), and by their one deadline in the
//! server's timers. Cancelled requests are dropped without a response (MCP "Utilities:
//! Cancellation").

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde_json::json;

use super::tasks::Tasks;
use super::tools::{
    INSPECT_TIMEOUT, Ready, Then, start_result, status_result, stop_result, wait_result,
    write_result,
};
use super::{Output, Pending, ProbeId, Server, Shutdown, ToolResult, error_result};
use crate::log::{Line, Query};
use crate::mcp::jsonrpc::RequestId;
use crate::process::RunId;
use crate::shared::{ProbeOutcome, ProbeTarget};
use crate::stdin::SegmentId;
use crate::task::{Phase, Question, Task};
use crate::time::{Instant, Now};
use crate::timers::Timers;

/// How often a waiting request with a `progressToken` hears about it.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Pause between two probes (of a port or a URL) that did not succeed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long an answer waits for the driver to say whether the task waits for input; past it,
/// the answer leaves `input_wanted` out.
pub(super) const INPUT_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// Waiters, a sub-machine of the server: every waiting request, indexed, with its one
/// deadline (timeout, progress or the next probe), the port probes in flight, and the
/// `write`s whose bytes may still be queued (for `notifications/cancelled`).
#[derive(Debug, Default)]
pub(super) struct Waiters {
    next: u64,
    all: BTreeMap<u64, Waiter>,
    by_task: BTreeMap<u64, BTreeSet<u64>>,
    by_request: BTreeSet<(RequestId, u64)>,
    probes: BTreeMap<ProbeId, u64>,
    next_probe: u64,
    timers: Timers<u64>,
    /// `write`s whose bytes may still be queued, by request: the task and the write's segment.
    queued_writes: BTreeMap<RequestId, (u64, SegmentId)>,
}

impl Waiters {
    /// The earliest deadline of any waiter.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// A waiter whose deadline is at or before `now`, earliest first.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        self.timers.pop_due(now)
    }

    /// Remembers that the bytes of `write` request `id` may stay queued in task `key`'s stdin,
    /// and forgets the writes whose bytes are all settled once there are many.
    pub(super) fn queued_write(
        &mut self,
        id: RequestId,
        key: u64,
        segment: SegmentId,
        tasks: &Tasks,
    ) {
        self.queued_writes.insert(id, (key, segment));
        if self.queued_writes.len() > 1024 {
            self.queued_writes.retain(|_, (key, segment)| {
                tasks.get(*key).is_some_and(|t| t.stdin.is_queued(*segment))
            });
        }
    }

    /// Task `key` is gone: its writes can no longer be cancelled.
    pub(super) fn forget_writes_of(&mut self, key: u64) {
        self.queued_writes.retain(|_, (task, _)| *task != key);
    }

    fn insert(&mut self, id: u64, waiter: Waiter) {
        self.by_task.entry(waiter.task).or_default().insert(id);
        self.by_request.insert((waiter.request.id.clone(), id));
        self.all.insert(id, waiter);
    }

    fn remove(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.all.remove(&id)?;
        if let Some(set) = self.by_task.get_mut(&waiter.task) {
            set.remove(&id);
            if set.is_empty() {
                self.by_task.remove(&waiter.task);
            }
        }
        self.by_request.remove(&(waiter.request.id.clone(), id));
        Some(waiter)
    }

    fn of_task(&self, task: u64) -> Vec<u64> {
        self.by_task
            .get(&task)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    fn of_request(&self, request: &RequestId) -> Vec<u64> {
        self.by_request
            .range((request.clone(), 0)..=(request.clone(), u64::MAX))
            .map(|(_, id)| *id)
            .collect()
    }
}

/// One waiting request.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) task: u64,
    pub(super) request: Pending,
    pub(super) kind: Kind,
}

/// What a request waits for, and on which run.
#[derive(Debug)]
pub(super) enum Kind {
    /// `start`, or a `restart` whose new run was spawned: answered once the spawn is answered
    /// and, with `wait_for`, once ready.
    Start { run: RunId, ready: Option<Watch> },
    /// `restart`: resolved when `run` ends (a new run starts, or a later `stop` or the
    /// shutdown superseded it).
    Restart { run: RunId },
    /// `stop`: answered once `run` ended.
    Stop { run: RunId },
    /// `wait`: answered once its watch resolves (or `run` ends), and then, for a task that can
    /// be written to, once the driver said whether it waits for input (`finish`: the outcome
    /// and when that was asked).
    Wait {
        run: RunId,
        watch: Watch,
        finish: Option<(Outcome, Option<Question>)>,
    },
    /// `status` of a live task: answered once the driver measured what it uses (asked for at
    /// `measured`) and, for a task that can be written to, said whether it waits for input
    /// (`asked`); or once the run ended, or that took too long.
    Status {
        run: RunId,
        tail: usize,
        asked: Option<Question>,
        measured: Option<Instant>,
    },
    /// `write`: answered once the bytes of `segment` are settled (in the pipe, or queued
    /// behind a full pipe).
    Write {
        run: RunId,
        segment: SegmentId,
        next_cursor: u64,
        /// With `eof`: bytes of earlier writes that were dropped.
        dropped_earlier: usize,
        /// A condition to wait for once the bytes are settled, before answering.
        then: Option<Box<Then>>,
    },
}

impl Kind {
    /// The watch whose probes go out: a `wait` not resolved yet, or a `start` waiting to be
    /// ready.
    fn probing(&mut self) -> Option<&mut Watch> {
        match self {
            Kind::Wait {
                watch,
                finish: None,
                ..
            }
            | Kind::Start {
                ready: Some(watch), ..
            } => Some(watch),
            _ => None,
        }
    }
}

/// How long a task must have printed nothing before its partial line (a prompt without a
/// newline) may match: long enough that a line still being written is not matched half-way.
pub(super) const PARTIAL_SETTLE: Duration = Duration::from_millis(100);

/// What a `wait` (or `start` with `wait_for`, or `write` with a condition) is waiting for, and
/// until when.
#[derive(Debug)]
pub(super) struct Watch {
    /// The regex and the cursor of the first line not yet checked.
    pattern: Option<(Regex, u64)>,
    /// Only the pending partial line may match `pattern` (a prompt coming back).
    partial_only: bool,
    /// A regex the text of a terminal task's screen must match.
    screen: Option<Regex>,
    /// Until the task has printed nothing for this long.
    quiet: Option<Duration>,
    /// Bytes the task had printed at the last check, to skip checks when nothing came.
    checked_bytes: Option<u64>,
    /// When to look again although nothing came: a partial line that matched settles, or
    /// the task has been quiet long enough.
    recheck_at: Option<Instant>,
    /// Probes to repeat until one succeeds.
    probes: Vec<ProbeWatch>,
    pub(super) started: Instant,
    deadline: Instant,
    next_progress: Instant,
    progress_sent: u64,
}

/// A probe a watch repeats until it succeeds: a port, or a URL.
#[derive(Debug)]
struct ProbeWatch {
    target: ProbeTarget,
    /// The probe in flight, if any.
    probe: Option<ProbeId>,
    /// When the next probe may go out.
    retry_at: Instant,
    /// What the last probe found.
    last: Option<ProbeOutcome>,
}

impl ProbeWatch {
    fn new(target: ProbeTarget, now: Now) -> Self {
        Self {
            target,
            probe: None,
            retry_at: now.instant,
            last: None,
        }
    }

    /// The condition holds: the port took a connection, or the URL answered with a status
    /// below 500.
    fn met(&self) -> Option<Outcome> {
        match self.last {
            Some(ProbeOutcome::Open) => Some(Outcome::PortOpen),
            Some(ProbeOutcome::Http(status)) if status < 500 => Some(Outcome::Url { status }),
            _ => None,
        }
    }
}

/// How a watch resolved.
#[derive(Debug)]
pub(super) enum Outcome {
    Matched {
        line: Line,
        next_cursor: u64,
    },
    Screen,
    Quiet,
    PortOpen,
    /// The URL answered with this status code (below 500).
    Url {
        status: u16,
    },
    Exited,
    Timeout,
}

impl Outcome {
    /// As the results spell it.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Outcome::Matched { .. } => "matched",
            Outcome::Screen => "screen",
            Outcome::Quiet => "quiet",
            Outcome::PortOpen => "port_open",
            Outcome::Url { .. } => "url_ok",
            Outcome::Exited => "exited",
            Outcome::Timeout => "timeout",
        }
    }
}

impl Watch {
    /// A watch started at `now` that gives up after `timeout`.
    pub(super) fn new(
        pattern: Option<(Regex, u64)>,
        port: Option<u16>,
        now: Now,
        timeout: Duration,
    ) -> Self {
        Self {
            pattern,
            partial_only: false,
            screen: None,
            quiet: None,
            checked_bytes: None,
            recheck_at: None,
            probes: port
                .map(|port| ProbeWatch::new(ProbeTarget::Port(port), now))
                .into_iter()
                .collect(),
            started: now.instant,
            deadline: now.instant.saturating_add(timeout),
            next_progress: now.instant.saturating_add(PROGRESS_INTERVAL),
            progress_sent: 0,
        }
    }

    /// Only a partial line may match the pattern (see [`Watch::partial_only`]).
    pub(super) fn prompt(mut self) -> Self {
        self.partial_only = true;
        self
    }

    /// Also resolves once a terminal task's screen matches `regex`.
    pub(super) fn screen(mut self, regex: Option<Regex>) -> Self {
        self.screen = regex;
        self
    }

    /// Also resolves once `url` answers an HTTP `GET` with a status below 500.
    pub(super) fn url(mut self, url: Option<String>, now: Now) -> Self {
        self.probes
            .extend(url.map(|url| ProbeWatch::new(ProbeTarget::Http(url), now)));
        self
    }

    /// Also resolves once the task has printed nothing for `quiet`.
    pub(super) fn quiet(mut self, quiet: Option<Duration>) -> Self {
        self.quiet = quiet;
        self
    }

    /// Checks the condition against the task; `None` while it does not hold yet. `run_over`:
    /// the run watched has ended.
    fn check(&mut self, task: &Task, run_over: bool, now: Now) -> Option<Outcome> {
        let printed = task.log.total_bytes();
        let due = self.recheck_at.is_some_and(|at| now.instant >= at);
        if self.checked_bytes != Some(printed) || due {
            self.checked_bytes = Some(printed);
            self.recheck_at = None;
            if let Some(outcome) = self.scan(task, now) {
                return Some(outcome);
            }
            if let (Some(regex), Some(screen)) = (&self.screen, &task.screen)
                && regex.is_match(&screen.snapshot().rows.join("\n"))
            {
                return Some(Outcome::Screen);
            }
        }
        if let Some(outcome) = self.probes.iter().find_map(ProbeWatch::met) {
            return Some(outcome);
        }
        if let Some(quiet) = self.quiet {
            let last = task
                .last_output
                .map_or(self.started, |at| at.max(self.started));
            let at = last.saturating_add(quiet);
            if now.instant >= at {
                return Some(Outcome::Quiet);
            }
            self.recheck_at = Some(self.recheck_at.map_or(at, |r| r.min(at)));
        }
        if run_over {
            return Some(Outcome::Exited);
        }
        (now.instant >= self.deadline).then_some(Outcome::Timeout)
    }

    /// Looks for the pattern in the lines printed since the last look and in the partial
    /// lines; a partial line matches only once the task has been quiet for
    /// [`PARTIAL_SETTLE`] (until then, a wake-up is asked for).
    fn scan(&mut self, task: &Task, now: Now) -> Option<Outcome> {
        let (regex, cursor) = self.pattern.as_mut()?;
        // Partial lines are numbered from `next_cursor` on.
        let since = if self.partial_only {
            (*cursor).max(task.log.next_cursor())
        } else {
            *cursor
        };
        let page = task.log.read(&Query {
            since: Some(since),
            tail: None,
            head: Some(1),
            grep: Some(regex),
            stream: None,
            max_bytes: super::tools::MAX_READ_BYTES,
            line_overhead: 0,
            raw: false,
            timestamps: false,
        });
        match page.lines.into_iter().next() {
            Some(line) if line.partial => {
                let settled = task
                    .last_output
                    .map_or(now.instant, |at| at.saturating_add(PARTIAL_SETTLE));
                if now.instant < settled {
                    self.recheck_at = Some(settled);
                    return None;
                }
                let next_cursor = line.n;
                Some(Outcome::Matched { line, next_cursor })
            }
            Some(line) => {
                let next_cursor = line.n + 1;
                Some(Outcome::Matched { line, next_cursor })
            }
            None => {
                *cursor = page.next_cursor.max(*cursor);
                None
            }
        }
    }

    fn next_deadline(&self, with_progress: bool) -> Instant {
        let mut at = self
            .recheck_at
            .map_or(self.deadline, |r| r.min(self.deadline));
        if with_progress {
            at = at.min(self.next_progress);
        }
        for probe in &self.probes {
            if probe.probe.is_none() && probe.met().is_none() {
                at = at.min(probe.retry_at);
            }
        }
        at
    }
}

/// For an answer that waits for the driver to say whether `task` waits for input (`asked`,
/// `None` when there was nothing to ask): `Some(answer)` once the answer can go out (the
/// driver's answer, or `None` inside when the run ended, nothing was asked or the driver took
/// too long), `None` while it waits.
fn input_answer(
    task: &Task,
    run: RunId,
    asked: Option<Question>,
    now: Now,
) -> Option<Option<bool>> {
    let Some(question) = asked else {
        return Some(None);
    };
    if let Some(wanted) = task.input.answer_to(question) {
        return Some(wanted.filter(|_| task.run() == run));
    }
    let gone = task.run() != run || task.state().is_ended();
    let late = now.instant >= question.at.saturating_add(INPUT_QUERY_TIMEOUT);
    (gone || late).then_some(None)
}

impl Waiter {
    /// When this waiter needs a wake-up: its timeout, its next progress notification or its
    /// next port probe.
    fn next_deadline(&self) -> Option<Instant> {
        let progress = self.request.progress_token.is_some();
        match &self.kind {
            Kind::Wait {
                finish: Some((_, Some(asked))),
                ..
            } => Some(asked.at.saturating_add(INPUT_QUERY_TIMEOUT)),
            Kind::Status {
                asked, measured, ..
            } => {
                let input = asked.map(|q| q.at.saturating_add(INPUT_QUERY_TIMEOUT));
                let usage = measured.map(|at| at.saturating_add(INSPECT_TIMEOUT));
                input.into_iter().chain(usage).max()
            }
            Kind::Wait {
                finish: Some((_, None)),
                ..
            } => None,
            Kind::Wait { watch, .. }
            | Kind::Start {
                ready: Some(watch), ..
            } => Some(watch.next_deadline(progress)),
            // Its deadline counts once the bytes are written (until then it waits for them).
            Kind::Write {
                then: Some(then), ..
            } if then.written.is_some() => Some(then.watch.next_deadline(false)),
            _ => None,
        }
    }
}

/// What one look at a waiter decided.
enum Step {
    Keep(Waiter),
    Answer(Pending, ToolResult),
    /// Keep it, and ask the driver whether its task waits for input (a `wait` that resolved).
    AskInput(Waiter),
}

impl Server {
    /// Adds a waiter and looks at it at once (it may be answered already).
    pub(super) fn add_waiter(&mut self, now: Now, task: u64, request: Pending, kind: Kind) {
        let id = self.waiters.next;
        self.waiters.next += 1;
        self.waiters.insert(
            id,
            Waiter {
                task,
                request,
                kind,
            },
        );
        self.progress_waiter(now, id);
    }

    /// Looks at every waiter of task `key`.
    pub(super) fn progress_task_waiters(&mut self, now: Now, key: u64) {
        for id in self.waiters.of_task(key) {
            self.progress_waiter(now, id);
        }
    }

    /// Looks at one waiter: answers it if its condition holds, else sends its due progress
    /// notification, starts its due port probe and re-arms its timer.
    pub(super) fn progress_waiter(&mut self, now: Now, id: u64) {
        let Some(waiter) = self.waiters.remove(id) else {
            return;
        };
        self.waiters.timers.set(id, None);
        let step = match self.step(waiter, now) {
            Step::AskInput(mut waiter) => {
                let asked = self.ask_input(now, waiter.task);
                if let Kind::Wait {
                    finish: Some((_, at)),
                    ..
                } = &mut waiter.kind
                {
                    // Nothing to ask about (`None`): the next step answers at once.
                    *at = asked;
                }
                match asked {
                    Some(_) => Step::Keep(waiter),
                    None => self.step(waiter, now),
                }
            }
            step => step,
        };
        match step {
            Step::Answer(request, result) => self.respond_tool(&request, &result),
            Step::AskInput(waiter) | Step::Keep(waiter) => {
                let mut waiter = waiter;
                self.send_progress(&mut waiter, now);
                self.start_probes(id, &mut waiter, now);
                // A waiter kept although its deadline has passed waits for its task (a `start`
                // whose spawn is not answered yet): the task's next event looks at it again.
                // Arming a deadline in the past would make the driver call back at once,
                // forever.
                let deadline = waiter.next_deadline().filter(|at| *at > now.instant);
                self.waiters.timers.set(id, deadline);
                self.waiters.insert(id, waiter);
            }
        }
    }

    fn step(&mut self, waiter: Waiter, now: Now) -> Step {
        let Some(task) = self.tasks.get_mut(waiter.task) else {
            return Step::Answer(waiter.request, error_result("the task was removed".into()));
        };
        let run_over = |run: RunId, task: &Task| task.run() != run || task.state().is_ended();
        let Waiter {
            task: key,
            request,
            kind,
        } = waiter;
        match kind {
            Kind::Start { run, ready } => {
                if task.run() == run && matches!(task.phase(), Phase::Starting { .. }) {
                    return Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Start { run, ready },
                    });
                }
                if let Some(error) = task.failure() {
                    let reason = format!(
                        "could not start `{}`: {error} (task {} is now `failed`)",
                        task.command.command, task.id
                    );
                    return Step::Answer(request, error_result(reason));
                }
                let ready = match ready {
                    None => None,
                    Some(mut watch) => {
                        let Some(outcome) = watch.check(task, run_over(run, task), now) else {
                            return Step::Keep(Waiter {
                                task: key,
                                request,
                                kind: Kind::Start {
                                    run,
                                    ready: Some(watch),
                                },
                            });
                        };
                        let line = match &outcome {
                            Outcome::Matched { line, .. } => Some(line.text.clone()),
                            _ => None,
                        };
                        Some(Ready {
                            matched: matches!(outcome, Outcome::Matched { .. }),
                            line,
                            reason: outcome.reason(),
                        })
                    }
                };
                let result = start_result(&request, task, ready);
                Step::Answer(request, result)
            }
            Kind::Restart { run } => {
                if task.run() == run {
                    Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Restart { run },
                    })
                } else {
                    // Resolved by `restarts_resolved` when the run ended; never left behind.
                    let result = start_result(&request, task, None);
                    Step::Answer(request, result)
                }
            }
            Kind::Stop { run } => {
                // Answered once the run is over and what escaped from it is gone too.
                if !run_over(run, task) || (task.run() == run && !task.escaped.is_settled()) {
                    return Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Stop { run },
                    });
                }
                let result = stop_result(&request, task, now);
                Step::Answer(request, result)
            }
            Kind::Wait {
                run,
                watch,
                finish: Some((outcome, asked)),
            } => {
                let Some(input_wanted) = input_answer(task, run, asked, now) else {
                    return Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Wait {
                            run,
                            watch,
                            finish: Some((outcome, asked)),
                        },
                    });
                };
                let result = wait_result(&request, task, &watch, &outcome, now, input_wanted);
                Step::Answer(request, result)
            }
            Kind::Wait {
                run,
                mut watch,
                finish: None,
            } => match watch.check(task, run_over(run, task), now) {
                None => Step::Keep(Waiter {
                    task: key,
                    request,
                    kind: Kind::Wait {
                        run,
                        watch,
                        finish: None,
                    },
                }),
                // A task that can still be written to: say whether it waits for input.
                Some(outcome) if task.interactive() && !run_over(run, task) => {
                    Step::AskInput(Waiter {
                        task: key,
                        request,
                        kind: Kind::Wait {
                            run,
                            watch,
                            finish: Some((outcome, None)),
                        },
                    })
                }
                Some(outcome) => {
                    let result = wait_result(&request, task, &watch, &outcome, now, None);
                    Step::Answer(request, result)
                }
            },
            Kind::Status {
                run,
                tail,
                asked,
                measured,
            } => {
                let input_wanted = input_answer(task, run, asked, now);
                let usage_known = measured.is_none_or(|since| {
                    task.usage.fresh_since(since)
                        || run_over(run, task)
                        || now.instant >= since.saturating_add(INSPECT_TIMEOUT)
                });
                let (Some(input_wanted), true) = (input_wanted, usage_known) else {
                    return Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Status {
                            run,
                            tail,
                            asked,
                            measured,
                        },
                    });
                };
                let result = status_result(&request, task, tail, now, input_wanted);
                Step::Answer(request, result)
            }
            Kind::Write {
                run,
                segment,
                next_cursor,
                dropped_earlier,
                then,
            } => {
                let written = then.as_ref().and_then(|then| then.written);
                if written.is_none() && task.run() == run && !task.stdin.is_settled() {
                    return Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Write {
                            run,
                            segment,
                            next_cursor,
                            dropped_earlier,
                            then,
                        },
                    });
                }
                let progress = written.unwrap_or_else(|| {
                    (task.run() == run)
                        .then(|| task.stdin.progress(segment))
                        .flatten()
                });
                let complete = progress.is_some_and(|p| p.dropped == 0);
                let Some(mut then) = then.filter(|_| complete) else {
                    let result =
                        write_result(&request, task, progress, dropped_earlier, next_cursor, None);
                    return Step::Answer(request, result);
                };
                then.written = Some(progress);
                match then.watch.check(task, run_over(run, task), now) {
                    None => Step::Keep(Waiter {
                        task: key,
                        request,
                        kind: Kind::Write {
                            run,
                            segment,
                            next_cursor,
                            dropped_earlier,
                            then: Some(then),
                        },
                    }),
                    Some(outcome) => {
                        let after = Some((&*then, &outcome));
                        let result = write_result(
                            &request,
                            task,
                            progress,
                            dropped_earlier,
                            next_cursor,
                            after,
                        );
                        Step::Answer(request, result)
                    }
                }
            }
        }
    }

    /// The run `old` of task `key` has ended: its `restart` requests become `start` waiters
    /// of the new run `new`, or, without one (a later `stop` or the shutdown superseded the
    /// restart), are answered with an error that says so.
    pub(super) fn restarts_resolved(&mut self, now: Now, key: u64, old: RunId, new: Option<RunId>) {
        for id in self.waiters.of_task(key) {
            let is_restart = self
                .waiters
                .all
                .get(&id)
                .is_some_and(|w| matches!(w.kind, Kind::Restart { run } if run == old));
            if !is_restart {
                continue;
            }
            let Some(waiter) = self.waiters.remove(id) else {
                continue;
            };
            match new {
                Some(run) => {
                    let ready = self.ready_watch(key, now);
                    self.add_waiter(now, key, waiter.request, Kind::Start { run, ready });
                }
                None => {
                    let reason = match self.shutdown {
                        Shutdown::Serving => {
                            "a later `stop` superseded this `restart`; the task stays stopped"
                        }
                        _ => "the server is shutting down; nothing can restart",
                    };
                    let id = self.tasks.get(key).map_or("?", |t| t.id.as_str());
                    let text = format!("task {id} was not restarted: {reason}");
                    self.respond_tool(&waiter.request, &error_result(text));
                }
            }
        }
    }

    /// The `wait_for` and `wait_url` watch of task `key`'s options, for a `start` or `restart`
    /// answer.
    pub(super) fn ready_watch(&self, key: u64, now: Now) -> Option<Watch> {
        let task = self.tasks.get(key)?;
        let options = &task.command.options;
        if options.wait_for.is_none() && options.wait_url.is_none() && options.wait_quiet.is_none()
        {
            return None;
        }
        let pattern = options
            .wait_for
            .clone()
            .map(|regex| (regex, task.log.next_cursor()));
        let watch = Watch::new(pattern, None, now, options.wait_timeout)
            .url(options.wait_url.clone(), now)
            .quiet(options.wait_quiet);
        Some(watch)
    }

    /// Asks the driver for the watch's probes that are due.
    fn start_probes(&mut self, id: u64, waiter: &mut Waiter, now: Now) {
        // Nothing listens before the process is spawned.
        let spawning = self
            .tasks
            .get(waiter.task)
            .is_none_or(|t| matches!(t.phase(), Phase::Starting { .. }));
        let Some(watch) = waiter.kind.probing().filter(|_| !spawning) else {
            return;
        };
        for watched in &mut watch.probes {
            if watched.met().is_some() || watched.probe.is_some() || watched.retry_at > now.instant
            {
                continue;
            }
            let probe = ProbeId(self.waiters.next_probe);
            self.waiters.next_probe += 1;
            watched.probe = Some(probe);
            self.waiters.probes.insert(probe, id);
            self.outputs.push_back(Output::Probe {
                probe,
                target: watched.target.clone(),
            });
        }
    }

    /// The driver answered a probe: its condition holds, or it is tried again shortly.
    pub(super) fn probed(&mut self, now: Now, probe: ProbeId, outcome: ProbeOutcome) {
        let Some(id) = self.waiters.probes.remove(&probe) else {
            return;
        };
        if let Some(watch) = self
            .waiters
            .all
            .get_mut(&id)
            .and_then(|waiter| waiter.kind.probing())
            && let Some(watched) = watch.probes.iter_mut().find(|w| w.probe == Some(probe))
        {
            watched.probe = None;
            watched.last = Some(outcome);
            watched.retry_at = now.instant.saturating_add(PROBE_INTERVAL);
        }
        self.progress_waiter(now, id);
    }

    /// `notifications/cancelled`: the request gets no response and stops waiting; a cancelled
    /// `write` drops what it still has queued (even after it was answered). Requests answered
    /// already, or unknown, are otherwise ignored.
    pub(super) fn cancel(&mut self, now: Now, request: &RequestId) {
        if self.close_listener(request) {
            return;
        }
        for id in self.waiters.of_request(request) {
            let Some(waiter) = self.waiters.remove(id) else {
                continue;
            };
            self.waiters.timers.set(id, None);
            if let Kind::Write { segment, .. } = waiter.kind {
                self.drop_queued_write(now, waiter.task, segment);
            }
            self.deliver(waiter.request.batch, None);
        }
        if let Some((task, segment)) = self.waiters.queued_writes.remove(request) {
            self.drop_queued_write(now, task, segment);
        }
    }

    fn drop_queued_write(&mut self, now: Now, key: u64, segment: SegmentId) {
        self.with_task(now, key, |task, _| {
            task.stdin.cancel(segment);
            crate::task::Progress::Unchanged
        });
    }

    /// `notifications/progress` for a waiter that asked for it, about once a second, with
    /// `progress` in whole seconds waited (strictly increasing) and `total` the timeout. Skipped
    /// while the client is not reading (the next one says where things stand).
    fn send_progress(&mut self, waiter: &mut Waiter, now: Now) {
        let Some(token) = waiter.request.progress_token.clone() else {
            return;
        };
        let (Kind::Wait { watch, .. }
        | Kind::Start {
            ready: Some(watch), ..
        }) = &mut waiter.kind
        else {
            return;
        };
        if now.instant < watch.next_progress {
            return;
        }
        let elapsed = now.instant.saturating_duration_since(watch.started);
        let total = watch.deadline.saturating_duration_since(watch.started);
        let progress = elapsed.as_secs().max(watch.progress_sent + 1);
        watch.next_progress = now.instant.saturating_add(PROGRESS_INTERVAL);
        if self.congested() {
            return;
        }
        watch.progress_sent = progress;
        let id = self.tasks.get(waiter.task).map_or("?", |t| t.id.as_str());
        let message = format!("waiting on task {id}: {progress}s of {}s", total.as_secs());
        self.notify(
            "notifications/progress",
            &json!({"progressToken": token, "progress": progress, "total": total.as_secs(), "message": message}),
        );
    }
}

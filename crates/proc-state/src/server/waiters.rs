//! Requests that wait on tasks: `start` until spawned (and ready), `stop` until ended,
//! `restart` until the old run ended, `wait` until its condition, `write` until the driver wrote.
//!
//! After every input the server calls [`Server::progress_waiters`], which answers each waiter
//! whose condition now holds, sends progress notifications that are due, and asks the driver for
//! port probes. Cancelled requests are dropped without a response (MCP "Utilities:
//! Cancellation").

use core::time::Duration;

use regex::Regex;
use serde_json::{Value, json};

use super::render::{self, line_json};
use super::{Output, Pending, ProbeId, Server, error_result};
use crate::log::{Line, Query};
use crate::mcp::jsonrpc::RequestId;
use crate::process::RunId;
use crate::task::{State, Task};
use crate::time::{Instant, Now};

/// How often a waiting request with a `progressToken` hears about it.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Pause between two port probes that found the port closed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(super) enum Waiter {
    /// `start`/`restart`: answered once the spawn is answered and, with `wait_for`, once ready.
    Start {
        task: u64,
        request: Pending,
        ready: Option<Watch>,
    },
    /// `restart`: respawns once the old run has ended, then waits as `Start`.
    Restart { task: u64, request: Pending },
    /// `stop`: answered once the task ended.
    Stop { task: u64, request: Pending },
    /// `wait`: answered once its watch resolves.
    Wait {
        task: u64,
        request: Pending,
        watch: Watch,
    },
    /// `write`: answered when the driver reports the write of `run`.
    Write {
        task: u64,
        run: RunId,
        request: Pending,
        next_cursor: u64,
    },
}

/// What a `wait` (or `start` with `wait_for`) is waiting for, and until when.
#[derive(Debug)]
pub(super) struct Watch {
    /// The regex and the cursor of the first line not yet checked.
    pattern: Option<(Regex, u64)>,
    /// Bytes the task had printed at the last check, to skip checks when nothing came.
    checked_bytes: Option<u64>,
    port: Option<PortWatch>,
    started: Instant,
    deadline: Instant,
    next_progress: Instant,
    progress_sent: u64,
}

#[derive(Debug)]
struct PortWatch {
    port: u16,
    /// The probe in flight, if any.
    probe: Option<ProbeId>,
    /// When the next probe may go out.
    retry_at: Instant,
    open: bool,
}

/// How a watch resolved.
#[derive(Debug)]
enum Outcome {
    Matched { line: Line, next_cursor: u64 },
    PortOpen,
    Exited,
    Timeout,
}

impl Outcome {
    fn reason(&self) -> &'static str {
        match self {
            Outcome::Matched { .. } => "matched",
            Outcome::PortOpen => "port_open",
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
            checked_bytes: None,
            port: port.map(|port| PortWatch {
                port,
                probe: None,
                retry_at: now.instant,
                open: false,
            }),
            started: now.instant,
            deadline: now.instant.saturating_add(timeout),
            next_progress: now.instant.saturating_add(PROGRESS_INTERVAL),
            progress_sent: 0,
        }
    }

    /// Checks the condition against the task; `None` while it does not hold yet.
    fn check(&mut self, task: &Task, now: Now) -> Option<Outcome> {
        if let Some(outcome) = self.scan(task) {
            return Some(outcome);
        }
        if self.port.as_ref().is_some_and(|p| p.open) {
            return Some(Outcome::PortOpen);
        }
        if task.state().is_ended() {
            return Some(Outcome::Exited);
        }
        (now.instant >= self.deadline).then_some(Outcome::Timeout)
    }

    /// Looks for the pattern in the lines printed since the last look (and in partial lines).
    fn scan(&mut self, task: &Task) -> Option<Outcome> {
        let (regex, cursor) = self.pattern.as_mut()?;
        let printed = task.log.total_bytes();
        if self.checked_bytes == Some(printed) {
            return None;
        }
        self.checked_bytes = Some(printed);
        let page = task.log.read(&Query {
            since: Some(*cursor),
            tail: None,
            head: Some(1),
            grep: Some(regex),
            stream: None,
            max_bytes: crate::mcp::tools::MAX_LOGS_BYTES,
            raw: false,
        });
        match page.lines.into_iter().next() {
            Some(line) => {
                let next_cursor = if line.partial { line.n } else { line.n + 1 };
                Some(Outcome::Matched { line, next_cursor })
            }
            None => {
                *cursor = page.next_cursor.max(*cursor);
                None
            }
        }
    }

    fn next_deadline(&self, with_progress: bool) -> Instant {
        let mut at = self.deadline;
        if with_progress {
            at = at.min(self.next_progress);
        }
        if let Some(port) = &self.port
            && port.probe.is_none()
            && !port.open
        {
            at = at.min(port.retry_at);
        }
        at
    }
}

impl Waiter {
    fn request(&self) -> &Pending {
        match self {
            Waiter::Start { request, .. }
            | Waiter::Restart { request, .. }
            | Waiter::Stop { request, .. }
            | Waiter::Wait { request, .. }
            | Waiter::Write { request, .. } => request,
        }
    }

    /// When this waiter needs a wake-up: its timeout, its next progress notification or its next
    /// port probe.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let progress = self.request().progress_token.is_some();
        match self {
            Waiter::Wait { watch, .. }
            | Waiter::Start {
                ready: Some(watch), ..
            } => Some(watch.next_deadline(progress)),
            _ => None,
        }
    }
}

impl Server {
    /// Answers every waiter whose condition holds, sends due progress notifications and starts
    /// due port probes.
    pub(super) fn progress_waiters(&mut self, now: Now) {
        if self.waiters.is_empty() {
            return;
        }
        let waiters = core::mem::take(&mut self.waiters);
        for waiter in waiters {
            if let Some(mut waiter) = self.progress(waiter, now) {
                self.send_progress(&mut waiter, now);
                self.waiters.push(waiter);
            }
        }
    }

    /// Moves one waiter on; `Some` while it must keep waiting.
    fn progress(&mut self, waiter: Waiter, now: Now) -> Option<Waiter> {
        let Some(task) = self.tasks.get(&waiter_task(&waiter)) else {
            self.respond(
                waiter.request(),
                Ok(error_result("the task was removed".into())),
            );
            return None;
        };
        match waiter {
            Waiter::Start {
                task: key,
                request,
                ready,
            } => {
                if task.state() == State::Starting {
                    return Some(Waiter::Start {
                        task: key,
                        request,
                        ready,
                    });
                }
                if let Some(error) = task.failure() {
                    let reason = format!(
                        "could not start `{}`: {error} (task {} is now `failed`)",
                        task.command.command, task.id
                    );
                    self.respond(&request, Ok(error_result(reason)));
                    return None;
                }
                let ready = match ready {
                    None => None,
                    Some(mut watch) => {
                        let Some(outcome) = watch.check(task, now) else {
                            return Some(Waiter::Start {
                                task: key,
                                request,
                                ready: Some(watch),
                            });
                        };
                        let line = match &outcome {
                            Outcome::Matched { line, .. } => Value::from(line.text.as_str()),
                            _ => Value::Null,
                        };
                        let matched = matches!(outcome, Outcome::Matched { .. });
                        Some(json!({"matched": matched, "line": line, "reason": outcome.reason()}))
                    }
                };
                let result = Self::start_result(&request, task, ready);
                self.respond(&request, Ok(result));
                None
            }
            Waiter::Restart { task: key, request } => {
                if !task.state().is_ended() {
                    return Some(Waiter::Restart { task: key, request });
                }
                self.respawn(now, key, request);
                None
            }
            Waiter::Stop { task: key, request } => {
                if !task.state().is_ended() {
                    return Some(Waiter::Stop { task: key, request });
                }
                let mut status = render::status_fields(task, now);
                status.insert("escalated".into(), Value::Bool(task.escalated()));
                let text = render::stop_text(task, now);
                let result = Self::tool_result(&request, Value::Object(status), text);
                self.respond(&request, Ok(result));
                None
            }
            Waiter::Wait {
                task: key,
                request,
                mut watch,
            } => {
                let Some(outcome) = watch.check(task, now) else {
                    self.start_probe(&mut watch, now);
                    return Some(Waiter::Wait {
                        task: key,
                        request,
                        watch,
                    });
                };
                let result = wait_result(&request, task, &watch, &outcome, now);
                self.respond(&request, Ok(result));
                None
            }
            Waiter::Write {
                task: key,
                run,
                request,
                next_cursor,
            } => {
                if task.run() == run && !task.state().is_ended() {
                    return Some(Waiter::Write {
                        task: key,
                        run,
                        request,
                        next_cursor,
                    });
                }
                let reason = format!(
                    "task {} ended before its stdin took the data; it may not have been read",
                    task.id
                );
                self.respond(&request, Ok(error_result(reason)));
                None
            }
        }
    }

    /// Asks the driver for a port probe when one is due.
    fn start_probe(&mut self, watch: &mut Watch, now: Now) {
        let Some(port) = watch.port.as_mut() else {
            return;
        };
        if port.open || port.probe.is_some() || port.retry_at > now.instant {
            return;
        }
        let probe = ProbeId(self.next_probe);
        self.next_probe += 1;
        port.probe = Some(probe);
        self.outputs.push_back(Output::ProbePort {
            probe,
            port: port.port,
        });
    }

    /// The driver answered a probe: the port is open, or try again shortly.
    pub(super) fn port_probed(&mut self, now: Now, probe: ProbeId, open: bool) {
        for waiter in &mut self.waiters {
            if let Waiter::Wait { watch, .. } = waiter
                && let Some(port) = watch.port.as_mut()
                && port.probe == Some(probe)
            {
                port.probe = None;
                port.open = open;
                port.retry_at = now.instant.saturating_add(PROBE_INTERVAL);
            }
        }
    }

    /// The driver wrote (or failed to write) one `write`'s data.
    pub(super) fn stdin_written(&mut self, run: RunId, result: Result<usize, String>) {
        let Some(index) = self
            .waiters
            .iter()
            .position(|w| matches!(w, Waiter::Write { run: r, .. } if *r == run))
        else {
            return;
        };
        let Waiter::Write {
            task,
            request,
            next_cursor,
            ..
        } = self.waiters.remove(index)
        else {
            return;
        };
        let id = self
            .tasks
            .get(&task)
            .map_or_else(String::new, |t| t.id.clone());
        let reply = match result {
            Ok(bytes) => {
                let text = format!(
                    "Wrote {bytes} bytes to task {id}'s stdin; its output from here on starts at cursor {next_cursor}."
                );
                let structured =
                    json!({"id": id, "bytes_written": bytes, "next_cursor": next_cursor});
                Self::tool_result(&request, structured, text)
            }
            Err(reason) => error_result(format!("could not write to task {id}'s stdin: {reason}")),
        };
        self.respond(&request, Ok(reply));
    }

    /// `notifications/cancelled`: the request gets no response and stops waiting. Requests
    /// answered already, or unknown, are ignored.
    pub(super) fn cancel(&mut self, id: &RequestId) {
        if self.close_listener(id) {
            return;
        }
        let Some(index) = self.waiters.iter().position(|w| w.request().id == *id) else {
            return;
        };
        let waiter = self.waiters.remove(index);
        self.deliver(waiter.request().batch, None);
    }

    /// `notifications/progress` for a waiter that asked for it, about once a second, with
    /// `progress` in whole seconds waited (strictly increasing) and `total` the timeout.
    fn send_progress(&mut self, waiter: &mut Waiter, now: Now) {
        let Some(token) = waiter.request().progress_token.clone() else {
            return;
        };
        let task = waiter_task(waiter);
        let (Waiter::Wait { watch, .. }
        | Waiter::Start {
            ready: Some(watch), ..
        }) = waiter
        else {
            return;
        };
        if now.instant < watch.next_progress {
            return;
        }
        let elapsed = now.instant.saturating_duration_since(watch.started);
        let total = watch.deadline.saturating_duration_since(watch.started);
        let progress = elapsed.as_secs().max(watch.progress_sent + 1);
        watch.progress_sent = progress;
        watch.next_progress = now.instant.saturating_add(PROGRESS_INTERVAL);
        let id = self.tasks.get(&task).map_or("?", |t| t.id.as_str());
        let message = format!("waiting on task {id}: {progress}s of {}s", total.as_secs());
        self.notify(
            "notifications/progress",
            json!({"progressToken": token, "progress": progress, "total": total.as_secs(), "message": message}),
        );
    }
}

fn waiter_task(waiter: &Waiter) -> u64 {
    match waiter {
        Waiter::Start { task, .. }
        | Waiter::Restart { task, .. }
        | Waiter::Stop { task, .. }
        | Waiter::Wait { task, .. }
        | Waiter::Write { task, .. } => *task,
    }
}

fn wait_result(
    request: &Pending,
    task: &Task,
    watch: &Watch,
    outcome: &Outcome,
    now: Now,
) -> Value {
    let waited = now.instant.saturating_duration_since(watch.started);
    let (line, next_cursor) = match outcome {
        Outcome::Matched { line, next_cursor } => (line_json(line), *next_cursor),
        _ => (Value::Null, task.log.next_cursor()),
    };
    let structured = json!({
        "id": task.id,
        "reason": outcome.reason(),
        "line": line,
        "state": task.state().as_str(),
        "exit_code": task.exit_code(),
        "next_cursor": next_cursor,
        "waited_ms": super::millis(waited),
    });
    let text = render::wait_text(
        task,
        outcome.reason(),
        match outcome {
            Outcome::Matched { line, .. } => Some(line),
            _ => None,
        },
        waited,
        next_cursor,
    );
    Server::tool_result(request, structured, text)
}

//! Task output as MCP resources (`proc://<id>/output`), subscriptions to them, and the
//! notifications about tasks: `notifications/resources/updated` (coalesced), `…/list_changed`,
//! and the exit notifications of `notify_on_exit`.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::modern::Listener;
use super::{LogLevel, Server};
use crate::timers::Timers;
// A read returns what `logs` without arguments returns: the last lines, bounded in bytes.
use super::tools::LINE_OVERHEAD_BYTES;
use crate::log::{DEFAULT_MAX_BYTES, DEFAULT_TAIL_LINES, Query};
use crate::mcp::jsonrpc::{Error, ErrorCode};
use crate::mcp::paging;
use crate::task::{State, Task};
use crate::time::{self, Instant, Now};

/// Least time between two `notifications/resources/updated` for one resource.
const UPDATE_INTERVAL: Duration = Duration::from_millis(250);
/// Changes to the list of tasks closer together than this are one burst, notified once.
const LIST_QUIET: Duration = Duration::from_millis(100);
/// A burst that goes on is notified at least this often.
const LIST_MAX_DELAY: Duration = Duration::from_secs(1);
/// MCP's "Resource not found" error code (handshake era).
const RESOURCE_NOT_FOUND: i64 = -32002;

/// Subscriptions, a sub-machine of the server: the subscribed task outputs, the open listen
/// streams, and the deadlines of the notifications they coalesce.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// Subscribed task outputs (`resources/subscribe` or `subscriptions/listen`), by task key.
    pub(super) by_task: BTreeMap<u64, Subscription>,
    /// Open `subscriptions/listen` streams (2026-07-28), by a key of their own.
    pub(super) listeners: BTreeMap<u64, Listener>,
    pub(super) next_listener: u64,
    /// The first and the last change to the task list not notified yet (see
    /// `resources_list_changed`).
    list_changed: Option<(Instant, Instant)>,
    timers: Timers<Due>,
}

/// A coalesced notification that goes out at a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    /// `notifications/resources/updated` for this task's output.
    Update(u64),
    /// `notifications/resources/list_changed`.
    ListChanged,
}

impl Subscriptions {
    /// Task `key` is gone: nothing about it is owed any more.
    pub(super) fn forget(&mut self, key: u64) {
        self.by_task.remove(&key);
        self.timers.set(Due::Update(key), None);
    }

    /// Drops the streams' interest in task outputs nobody wants any more.
    pub(super) fn prune(&mut self) {
        self.by_task.retain(|_, s| s.is_wanted());
    }

    /// The earliest coalesced notification's deadline.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// A notification due at or before `now`, earliest first.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        self.timers.pop_due(now)
    }
}

/// One subscribed task output, and who subscribed to it.
#[derive(Debug, Default)]
pub(super) struct Subscription {
    /// The handshake-era session called `resources/subscribe`.
    pub(super) session: bool,
    /// `subscriptions/listen` streams that asked for it.
    pub(super) listeners: BTreeSet<u64>,
    last_sent: Option<Instant>,
    /// An update is owed and goes out at this time (a [`Due::Update`]).
    due: Option<Instant>,
}

impl Subscription {
    /// Someone still wants updates.
    pub(super) fn is_wanted(&self) -> bool {
        self.session || !self.listeners.is_empty()
    }
}

/// The `resources/templates/list` result.
pub(super) fn templates() -> Value {
    json!({"resourceTemplates": [{
        "uriTemplate": "proc://{id}/output",
        "name": "task-output",
        "title": "Task output",
        "description": "The recent output (stdout and stderr) of a task, by id or name.",
        "mimeType": "text/plain",
    }]})
}

fn uri(t: &Task) -> String {
    format!("proc://{}/output", t.id)
}

impl Server {
    pub(super) fn list_resources(&self, params: &Map<String, Value>) -> Result<Value, Error> {
        let start =
            paging::start("resources", params.get("cursor")).map_err(Error::invalid_params)?;
        let items = self
            .tasks
            .iter()
            .map(|(_, t)| t)
            .map(|t| {
                json!({
                    "uri": uri(t),
                    "name": t.name.clone().unwrap_or_else(|| t.id.clone()),
                    "title": format!("Output of `{}`", super::render::display_command(t)),
                    "description": format!("Recent output of task {} ({})", t.id, t.state().as_str()),
                    "mimeType": "text/plain",
                })
            })
            .collect();
        Ok(self.page("resources", "resources", items, start.0))
    }

    /// The task a `proc://<id or name>/output` URI names.
    pub(super) fn resource_key(&self, uri: &str) -> Option<u64> {
        uri.strip_prefix("proc://")
            .and_then(|rest| rest.strip_suffix("/output"))
            .and_then(|reference| self.tasks.find(reference).ok())
    }

    /// The task named by `params.uri`. Errors: `-32602` without a `uri`; for an unknown one,
    /// "Resource not found": `-32002` in the handshake era, `-32602` in 2026-07-28 (which
    /// retired `-32002`), both with `data: {uri}`.
    fn resource(&self, params: &Map<String, Value>, modern: bool) -> Result<u64, Error> {
        let uri = params
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_params("Invalid params: `uri` (a string) is required"))?;
        self.resource_key(uri).ok_or_else(|| Error {
            code: if modern {
                ErrorCode::InvalidParams
            } else {
                ErrorCode::ServerError(RESOURCE_NOT_FOUND)
            },
            message: format!("Resource not found: {uri}"),
            data: Some(json!({"uri": uri})),
        })
    }

    pub(super) fn read_resource(
        &mut self,
        now: Now,
        params: &Map<String, Value>,
        modern: bool,
    ) -> Result<Value, Error> {
        let key = self.resource(params, modern)?;
        if let Some(task) = self.tasks.get_mut(key) {
            task.touch(now.instant);
        }
        let t = self.tasks.task(key);
        let page = t.log.read(&Query {
            since: None,
            tail: Some(DEFAULT_TAIL_LINES),
            head: None,
            grep: None,
            stream: None,
            max_bytes: DEFAULT_MAX_BYTES,
            line_overhead: LINE_OVERHEAD_BYTES,
            raw: false,
            timestamps: false,
        });
        let mut text = String::new();
        for line in &page.lines {
            text.push_str(&line.text);
            if !line.partial {
                text.push('\n');
            }
        }
        Ok(json!({"contents": [{"uri": uri(t), "mimeType": "text/plain", "text": text}]}))
    }

    pub(super) fn subscribe(
        &mut self,
        params: &Map<String, Value>,
        on: bool,
    ) -> Result<Value, Error> {
        let key = self.resource(params, false)?;
        let subscription = self.subscriptions.by_task.entry(key).or_default();
        subscription.session = on;
        if !subscription.is_wanted() {
            self.subscriptions.by_task.remove(&key);
        }
        Ok(json!({}))
    }

    /// New output for task `key`.
    pub(super) fn output_arrived(&mut self, now: Now, key: u64) {
        self.resource_changed(now, key, false);
    }

    /// Sends `notifications/resources/updated` for a subscribed task now, or owes it for when
    /// the interval allows; `at_exit` sends at once. While the client does not read, the
    /// update is owed until it does (one per task, however much changes meanwhile).
    pub(super) fn resource_changed(&mut self, now: Now, key: u64, at_exit: bool) {
        let congested = self.congested();
        let subscriptions = &mut self.subscriptions;
        let Some(subscription) = subscriptions.by_task.get_mut(&key) else {
            return;
        };
        if congested {
            subscription.due = None;
            subscriptions.timers.set(Due::Update(key), None);
            self.session.owed.updated.insert(key);
            return;
        }
        let allowed = subscription
            .last_sent
            .map_or(now.instant, |last| last.saturating_add(UPDATE_INTERVAL));
        if at_exit || allowed <= now.instant {
            subscription.last_sent = Some(now.instant);
            subscription.due = None;
            subscriptions.timers.set(Due::Update(key), None);
            self.send_updated(key);
        } else if subscription.due.is_none() {
            subscription.due = Some(allowed);
            subscriptions.timers.set(Due::Update(key), Some(allowed));
        }
    }

    /// The coalesced update of task `key` came due.
    pub(super) fn resource_update_due(&mut self, now: Now, key: u64) {
        if let Some(subscription) = self.subscriptions.by_task.get_mut(&key) {
            subscription.due = None;
            self.resource_changed(now, key, true);
        }
    }

    /// `notifications/resources/updated` to everyone subscribed to task `key`'s output.
    fn send_updated(&mut self, key: u64) {
        let (Some(t), Some(subscription)) =
            (self.tasks.get(key), self.subscriptions.by_task.get(&key))
        else {
            return;
        };
        let params = json!({"uri": uri(t)});
        let listeners: Vec<u64> = subscription.listeners.iter().copied().collect();
        if subscription.session {
            self.notify("notifications/resources/updated", &params);
        }
        for listener in listeners {
            self.notify_listener(listener, "notifications/resources/updated", &params);
        }
    }

    /// Tasks came or went. A burst of changes (300 starts in a row) makes one
    /// `notifications/resources/list_changed` (each invites the client to list the resources
    /// again): it goes out once the list has been quiet for [`LIST_QUIET`], and at the latest
    /// [`LIST_MAX_DELAY`] after the burst's first change.
    ///
    /// The deadline is set by the burst's first change and only moved when it comes due (to
    /// the last change plus [`LIST_QUIET`]), not by every change: re-arming a timer costs the
    /// driver a reactor wake-up, which a burst of starts would pay per call.
    pub(super) fn resources_list_changed(&mut self, now: Now) {
        let subscriptions = &mut self.subscriptions;
        match &mut subscriptions.list_changed {
            Some((_, last)) => *last = now.instant,
            None => {
                subscriptions.list_changed = Some((now.instant, now.instant));
                let due = now.instant.saturating_add(LIST_QUIET);
                subscriptions.timers.set(Due::ListChanged, Some(due));
            }
        }
    }

    /// The deadline of the coalesced `notifications/resources/list_changed` came: it goes out
    /// if the list has been quiet long enough (or the burst has lasted long enough), else the
    /// deadline moves to when it will have been.
    pub(super) fn list_changed_due(&mut self, now: Now) {
        let Some((first, last)) = self.subscriptions.list_changed else {
            return;
        };
        let due = last
            .saturating_add(LIST_QUIET)
            .min(first.saturating_add(LIST_MAX_DELAY));
        if now.instant < due {
            self.subscriptions.timers.set(Due::ListChanged, Some(due));
            return;
        }
        self.subscriptions.list_changed = None;
        self.send_list_changed();
    }

    /// `notifications/resources/list_changed` to the session and to the listen streams that
    /// asked for it (held back while the client does not read).
    pub(super) fn send_list_changed(&mut self) {
        let listeners: Vec<u64> = self
            .subscriptions
            .listeners
            .iter()
            .filter(|(_, l)| l.resources_list_changed)
            .map(|(k, _)| *k)
            .collect();
        if self.congested() {
            self.session.owed.list_changed |= self.in_session();
            self.session.owed.listeners_list_changed.extend(listeners);
            return;
        }
        if self.in_session() {
            self.notify("notifications/resources/list_changed", &json!({}));
        }
        for listener in listeners {
            self.notify_listener(listener, "notifications/resources/list_changed", &json!({}));
        }
    }

    /// The exit notifications of `notify_on_exit` (docs/tools.md, Notifications).
    pub(super) fn notify_exit(&mut self, key: u64, now: Now) {
        let Some(t) = self.tasks.get(key) else {
            return;
        };
        if !self.in_session() {
            return;
        }
        let level = if t.exit_code() == Some(0) {
            LogLevel::Info
        } else {
            LogLevel::Warning
        };
        let data = json!({
            "event": "exit",
            "id": t.id,
            "name": t.name,
            "state": t.state().as_str(),
            "exit_code": t.exit_code(),
            "signal": t.exit_signal().map(crate::Signal::name),
            "runtime_ms": super::millis(t.runtime(now)),
        });
        let mut data = data;
        if let Some(at) = t.next_attempt() {
            // The restart policy starts it again: say when.
            data["restarting_in_ms"] =
                json!(super::millis(at.saturating_duration_since(now.instant)));
        }
        if let Some(cause) = t.stop_cause() {
            data["stop_reason"] = json!(cause.as_str());
        }
        let status = match (t.state(), t.exit_signal()) {
            (State::Failed, _) => "failed",
            (_, Some(_)) => "killed",
            _ => "exited",
        };
        let exit = json!({
            "id": t.id,
            "status": status,
            "exitCode": t.exit_code(),
            "timestamp": time::rfc3339(t.ended().unwrap_or(now).unix_ms),
        });
        if self.congested() {
            self.session.owed.exits.insert(key, (level, data, exit));
        } else {
            self.send_exit_notifications(level, data, &exit);
        }
    }

    /// `notifications/message` (filtered by the log level) and `process/exit`.
    pub(super) fn send_exit_notifications(&mut self, level: LogLevel, data: Value, exit: &Value) {
        self.log(level, data);
        self.notify("process/exit", exit);
    }
}

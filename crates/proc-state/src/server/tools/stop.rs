//! `stop`: a task and everything it started, answered once it is gone.

use core::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Annotations, Spec, TaskFields, Tool, bad_argument};
use crate::process::Signal;
use crate::server::render;
use crate::server::waiters::Kind;
use crate::server::{Config, Pending, Reply, Server, ToolError, ToolResult, millis};
use crate::task::{Progress, StopCause, Task};
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Stop a task and its process group",
    description: "Stop a task and everything it started: sends `signal` (default SIGTERM) to its whole process group, \
waits up to `grace_ms` for it to exit, then sends SIGKILL to the group. Returns once it has \
exited, with `escalated: true` if SIGKILL was needed. Ends a `restart` policy. Example: {\"id\": \"web\"} or {\"id\": \"web\", \"force\": true}.",
    annotations: Annotations {
        read_only: false,
        destructive: true,
        idempotent: true,
    },
    config_defaults,
};

/// `grace_ms` defaults to the configured grace (`--stop-grace-ms`).
fn config_defaults(config: &Config) -> Vec<(&'static str, Value)> {
    vec![("grace_ms", Value::from(millis(config.default_grace)))]
}

/// Signals `stop` accepts as its first signal.
pub const STOP_SIGNALS: [&str; 5] = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL"];

/// Largest `stop.grace_ms` accepted (5 minutes).
pub const MAX_GRACE_MS: u64 = 300_000;

/// `stop` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// First signal, sent to the whole process group.
    #[schemars(extend("enum" = STOP_SIGNALS, "default" = "SIGTERM"))]
    signal: Option<String>,
    /// Milliseconds to wait before SIGKILL.
    #[schemars(range(max = MAX_GRACE_MS))]
    grace_ms: Option<u64>,
    /// Same as signal SIGKILL.
    #[serde(default)]
    force: bool,
}

impl Args {
    /// The first signal to send: `SIGKILL` with `force`, else `signal`, else `SIGTERM`.
    fn first_signal(&self) -> Result<Signal, ToolError> {
        if self.force {
            return Ok(Signal::Kill);
        }
        let name = match self.signal.as_deref() {
            None => return Ok(Signal::Term),
            Some(name) => name,
        };
        Signal::from_name(name)
            .filter(|_| STOP_SIGNALS.contains(&name))
            .ok_or_else(|| {
                bad_argument(
                    Tool::Stop,
                    "signal",
                    format_args!("{name:?} is not one of {}", STOP_SIGNALS.join(", ")),
                )
            })
    }
}

/// The `stop` result: the task's final status.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    #[serde(flatten)]
    task: TaskFields<'a>,
    /// SIGKILL was needed after the grace period.
    escalated: bool,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let signal = args.first_signal()?;
    let grace = match args.grace_ms {
        Some(ms) if ms > MAX_GRACE_MS => {
            return Err(bad_argument(
                Tool::Stop,
                "grace_ms",
                format_args!("must be at most {MAX_GRACE_MS}"),
            ));
        }
        Some(ms) => Duration::from_millis(ms),
        None => server.config.default_grace,
    };
    let key = server.lookup(&args.id, now)?;
    let run = server.tasks.task(key).run();
    server.with_task(now, key, |task, out| {
        task.stop(signal, grace, StopCause::Request, now, out);
        Progress::Unchanged
    });
    // An ended task is answered at once.
    server.add_waiter(now, key, request.clone(), Kind::Stop { run });
    Ok(Reply::Later)
}

/// The answer to a `stop` once the run and what escaped from it are gone.
pub(in crate::server) fn stop_result(request: &Pending, t: &Task, now: Now) -> ToolResult {
    let mut text = format!("Task {}: {}", t.id, render::state_phrase_at(t, now));
    if t.escalated() {
        text.push_str(" (it outlived the grace period; SIGKILL was sent to its process group)");
    }
    if let Some(escaped) = render::escaped_text(t) {
        text.push('\n');
        text.push_str(&escaped);
    }
    text.push_str(&format!(
        "\noutput: {} lines; next_cursor {}",
        t.log.total_lines(),
        t.log.next_cursor()
    ));
    let structured = Structured {
        task: TaskFields::of(t, now),
        escalated: t.escalated(),
    };
    Server::tool_result(request, &structured, text)
}

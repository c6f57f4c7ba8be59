//! `wait`: block until an output line matches, a port opens or the task exits.

use core::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, LineOut, MAX_WAIT_MS, Spec, Tool, bad_argument, millis_arg, no_config_defaults,
    optional_regex,
};
use crate::log::Line;
use crate::server::render;
use crate::server::waiters::{Kind, Outcome, Watch};
use crate::server::{Pending, Reply, Server, ToolError, ToolResult};
use crate::task::{State, Task};
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Wait for output, a port or exit",
    description: "Block until something happens to a task instead of polling: an output line matches `pattern` \
(earlier lines count, from `since` or the oldest held; a prompt matches once output pauses), `port` takes a \
TCP connection, `url` answers, output pauses `quiet_ms`, or, with none of these, the task exits. Returns on \
exit or after `timeout_ms` at the latest; `reason` says which happened. Example: {\"id\": \"web\", \"pattern\": \"compiled|error\", \"timeout_ms\": 60000}.",
    annotations: Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `wait.timeout_ms` when not given.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// `wait` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// Regex (Rust regex syntax) an output line must match.
    pattern: Option<String>,
    /// Cursor where matching starts; default: the oldest line still held, so earlier output
    /// counts.
    since: Option<u64>,
    /// Until 127.0.0.1:port accepts a TCP connection.
    #[schemars(range(min = 1, max = 65535))]
    port: Option<u64>,
    /// Regex the screen of a tty task must match (rows joined by newlines).
    screen: Option<String>,
    /// Until this http:// URL answers a GET (status < 500).
    url: Option<String>,
    /// Until nothing was printed for this long.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    quiet_ms: Option<u64>,
    #[schemars(range(min = 1, max = MAX_WAIT_MS), extend("default" = DEFAULT_TIMEOUT_MS))]
    timeout_ms: Option<u64>,
}

/// The `wait` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
    #[schemars(extend("enum" = ["matched", "screen", "port_open", "url_ok", "quiet", "exited", "timeout"]))]
    reason: &'static str,
    /// The matching line.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<LineOut<'a>>,
    state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    /// Pass as `since` to read on after the match.
    next_cursor: u64,
    waited_ms: u64,
    /// With `url`: the status code it answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    http_status: Option<u16>,
    /// URLs the task printed, most recent last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<&'a str>,
    /// A task with stdin or a terminal: its foreground process is blocked reading it (absent
    /// when that cannot be known).
    #[serde(skip_serializing_if = "Option::is_none")]
    input_wanted: Option<bool>,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let timeout = millis_arg(
        Tool::Wait,
        "timeout_ms",
        args.timeout_ms,
        DEFAULT_TIMEOUT_MS,
        MAX_WAIT_MS,
    )?;
    let port = match args.port {
        None => None,
        Some(port @ 1..=65535) => u16::try_from(port).ok(),
        Some(_) => {
            return Err(bad_argument(
                Tool::Wait,
                "port",
                "must be between 1 and 65535",
            ));
        }
    };
    let regex = optional_regex(Tool::Wait, "pattern", args.pattern.as_deref())?;
    let screen = optional_regex(Tool::Wait, "screen", args.screen.as_deref())?;
    let quiet = args
        .quiet_ms
        .map(|ms| millis_arg(Tool::Wait, "quiet_ms", Some(ms), ms, MAX_WAIT_MS))
        .transpose()?;
    let url = args
        .url
        .as_deref()
        .map(|url| super::probe_url(Tool::Wait, "url", url, &server.config))
        .transpose()?;
    let key = server.lookup(&args.id, now)?;
    let task = server.tasks.task(key);
    if screen.is_some() && task.screen.is_none() {
        return Err(super::screen::not_a_terminal(&task.id));
    }
    let (first, run) = (task.log.first_retained(), task.run());
    let pattern = regex.map(|regex| (regex, args.since.unwrap_or(first).max(first)));
    let watch = Watch::new(pattern, port, now, timeout)
        .screen(screen)
        .quiet(quiet)
        .url(url, now);
    let kind = Kind::Wait {
        run,
        watch,
        finish: None,
    };
    server.add_waiter(now, key, request.clone(), kind);
    Ok(Reply::Later)
}

/// The answer to a `wait` whose watch has an outcome.
pub(in crate::server) fn wait_result(
    request: &Pending,
    task: &Task,
    watch: &Watch,
    outcome: &Outcome,
    now: Now,
    input_wanted: Option<bool>,
) -> ToolResult {
    let waited = now.instant.saturating_duration_since(watch.started);
    let (line, next_cursor) = match outcome {
        Outcome::Matched { line, next_cursor } => (Some(line), *next_cursor),
        _ => (None, task.log.next_cursor()),
    };
    let http_status = match outcome {
        Outcome::Url { status } => Some(*status),
        _ => None,
    };
    let mut text = wait_text(task, outcome.reason(), line, waited, next_cursor, now);
    if let Some(status) = http_status {
        text.push_str(&format!("; HTTP {status}"));
    }
    if input_wanted == Some(true) {
        text.push_str("; waiting for input");
    }
    let structured = Structured {
        id: &task.id,
        reason: outcome.reason(),
        line: line.map(LineOut::from),
        state: task.state(),
        exit_code: task.exit_code(),
        next_cursor,
        waited_ms: crate::server::millis(waited),
        http_status,
        urls: task.urls.iter().collect(),
        input_wanted,
    };
    Server::tool_result(request, &structured, text)
}

pub(super) fn wait_text(
    t: &Task,
    reason: &str,
    line: Option<&Line>,
    waited: Duration,
    next_cursor: u64,
    now: Now,
) -> String {
    let what = match (reason, line) {
        ("matched", Some(line)) => {
            let mut text = "matched ".to_owned();
            render::push_line_text(&mut text, line);
            text
        }
        ("port_open", _) => "the port is open".to_owned(),
        ("url_ok", _) => "the URL answered".to_owned(),
        ("screen", _) => "the screen matched".to_owned(),
        ("quiet", _) => "the output went quiet".to_owned(),
        // The task's own runtime, not the wait's: "killed by SIGTERM after 9.8s".
        ("exited", _) => format!("the task {}", render::state_phrase_at(t, now)),
        _ => "timed out".to_owned(),
    };
    format!(
        "Task {}: {what}; waited {}; next_cursor {next_cursor}; state {}",
        t.id,
        render::seconds(waited),
        t.state().as_str()
    )
}

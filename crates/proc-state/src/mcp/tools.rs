//! The tools: their definitions as `tools/list` shows them (names, titles, descriptions written
//! for a language model, input and output JSON Schemas, annotations) and their typed arguments.
//!
//! The contract is the project's TOOLS.md; MCP "Server Features: Tools" gives the shapes.
//! Arguments are checked here, before any task is touched: a wrong type, an unknown field or a
//! value out of range becomes a [`ArgumentError`], which the server turns into a tool result with
//! `isError: true` (MCP 2025-11-25: input validation errors are tool execution errors).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::process::{Signal, Stream};

/// A tool this server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tool {
    Start,
    Status,
    Logs,
    Wait,
    Write,
    Signal,
    Stop,
    Restart,
    List,
    Remove,
}

impl Tool {
    /// Every tool, in the order `tools/list` shows them.
    pub const ALL: [Tool; 10] = [
        Tool::Start,
        Tool::Status,
        Tool::Logs,
        Tool::Wait,
        Tool::Write,
        Tool::Signal,
        Tool::Stop,
        Tool::Restart,
        Tool::List,
        Tool::Remove,
    ];

    /// The tool's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Tool::Start => "start",
            Tool::Status => "status",
            Tool::Logs => "logs",
            Tool::Wait => "wait",
            Tool::Write => "write",
            Tool::Signal => "signal",
            Tool::Stop => "stop",
            Tool::Restart => "restart",
            Tool::List => "list",
            Tool::Remove => "remove",
        }
    }

    /// Looks a tool up by its name.
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The tool as `tools/list` describes it: `{name, title, description, inputSchema,
    /// outputSchema, annotations}`.
    pub fn definition(self) -> Value {
        let (title, description, input, output, annotations) = match self {
            Tool::Start => (
                "Start a background process",
                START_DESCRIPTION,
                start_input(),
                start_output(),
                annotations(false, false, false),
            ),
            Tool::Status => (
                "Task status",
                STATUS_DESCRIPTION,
                object(
                    json!({"id": id_param(), "tail": int_param("How many recent output lines to include (0 to 1000).", 10, 0, 1000)}),
                    &["id"],
                ),
                object(status_properties(true), STATUS_REQUIRED_WITH_TAIL),
                annotations(true, false, true),
            ),
            Tool::Logs => (
                "Read task output",
                LOGS_DESCRIPTION,
                logs_input(),
                logs_output(),
                annotations(true, false, true),
            ),
            Tool::Wait => (
                "Wait for output, a port or exit",
                WAIT_DESCRIPTION,
                wait_input(),
                wait_output(),
                annotations(true, false, true),
            ),
            Tool::Write => (
                "Write to a task's stdin",
                WRITE_DESCRIPTION,
                object(
                    json!({
                        "id": id_param(),
                        "data": {"type": "string", "description": "Text written as is (add \\n yourself)."},
                        "eof": {"type": "boolean", "default": false, "description": "Close stdin after this data, dropping what earlier writes still have queued."},
                    }),
                    &["id", "data"],
                ),
                object(
                    json!({
                        "id": {"type": "string"},
                        "bytes_written": {"type": "integer", "minimum": 0, "description": "Bytes of this write the process's stdin took so far."},
                        "bytes_queued": {"type": "integer", "minimum": 0, "description": "Bytes of all writes still waiting for the process to read."},
                        "bytes_dropped": {"type": "integer", "minimum": 0, "description": "With `eof`: queued bytes of earlier writes dropped."},
                        "next_cursor": {"type": "integer", "description": "Where output produced after this write begins."},
                    }),
                    &["id", "bytes_written", "bytes_queued", "next_cursor"],
                ),
                annotations(false, false, false),
            ),
            Tool::Signal => (
                "Send a signal to a task",
                SIGNAL_DESCRIPTION,
                object(
                    json!({
                        "id": id_param(),
                        "signal": {"type": "string", "enum": SIGNALS, "description": "Signal sent to the whole process group."},
                    }),
                    &["id", "signal"],
                ),
                object(
                    json!({"id": {"type": "string"}, "signal": {"type": "string"}, "state": state_schema()}),
                    &["id", "signal", "state"],
                ),
                annotations(false, true, false),
            ),
            Tool::Restart => (
                "Restart a task",
                RESTART_DESCRIPTION,
                object(json!({"id": id_param()}), &["id"]),
                start_output(),
                annotations(false, true, false),
            ),
            Tool::Stop => (
                "Stop a task and its process group",
                STOP_DESCRIPTION,
                stop_input(),
                stop_output(),
                annotations(false, true, true),
            ),
            Tool::List => (
                "List tasks",
                LIST_DESCRIPTION,
                object(
                    json!({"state": {"type": "string", "enum": ["running", "exited", "all"], "default": "all",
                        "description": "`running`: not yet ended (starting, running, stopping); `exited`: ended (exited or failed); `all`."}}),
                    &[],
                ),
                list_output(),
                annotations(true, false, true),
            ),
            Tool::Remove => (
                "Remove an ended task",
                REMOVE_DESCRIPTION,
                object(json!({"id": id_param()}), &["id"]),
                object(
                    json!({"id": {"type": "string"}, "removed": {"type": "boolean"}}),
                    &["id", "removed"],
                ),
                annotations(false, true, true),
            ),
        };
        json!({
            "name": self.name(),
            "title": title,
            "description": description,
            "inputSchema": input,
            "outputSchema": output,
            "annotations": annotations,
        })
    }
}

const START_DESCRIPTION: &str = "Start a long-running or slow command in the background and return at once with its task id, \
so the conversation is never blocked: dev servers, watchers, builds, test suites, language servers. \
`command` is run by `/bin/sh -c`; give `args` to run a program directly without a shell. \
The process gets its own process group, stdin from /dev/null, and NO_COLOR=1, PAGER=cat, GIT_PAGER=cat, \
PYTHONUNBUFFERED=1 in its environment (override them with `env`). Its output is kept in a bounded buffer: \
read it with `logs`, check on it with `status`, end it with `stop`. When the process exits, anything it \
left running in its process group is killed. \
Example: {\"command\": \"npm run dev\", \"cwd\": \"/home/me/app\", \"name\": \"web\"}.";

const STATUS_DESCRIPTION: &str = "Everything about one task: state (starting, running, stopping, exited, failed), pid, exit code or \
signal, start and end times, runtime, restarts, output counters with `next_cursor`, and its last `tail` \
lines of output. Use it to check whether a process is still alive or how it ended. \
Example: {\"id\": \"web\", \"tail\": 20}.";

const LOGS_DESCRIPTION: &str = "Read a task's output (stdout and stderr, interleaved in arrival order). Every line has an absolute \
number `n`; pass the previous result's `next_cursor` as `since` to get only lines printed since, without \
repeats or gaps. With no `since`, `head` or `tail`, returns the last 100 lines. `grep` keeps lines matching \
a regular expression; `stream` picks stdout or stderr. ANSI colours are removed unless `raw`. If the \
process printed more than the buffer holds, the oldest lines are gone and counted in `skipped`. \
Example: {\"id\": \"web\", \"since\": 120, \"grep\": \"error|warn\"}.";

const WAIT_DESCRIPTION: &str = "Block until something happens to a task instead of polling: until an output line matches `pattern` \
(a regex; lines printed before the call count, from `since` or else the oldest line still held), until a TCP \
connection to 127.0.0.1:`port` succeeds, or, with neither, until the task exits. Always returns when the task \
exits, and at the latest after `timeout_ms`, with `reason` saying which happened (matched, port_open, exited, \
timeout) and the matching `line`. Example: {\"id\": \"web\", \"pattern\": \"compiled|error\", \"timeout_ms\": 60000}.";

const WRITE_DESCRIPTION: &str = "Write text to the stdin of a task started with `stdin: true` (a REPL, `cat`, a program that \
prompts). The text is written as is: add \"\\n\" to end a line. Returns at once: what the process has not read yet \
stays queued (`bytes_queued`, up to 1 MiB per task) and is written as it reads. `eof: true` closes stdin afterwards, \
which ends programs that read until end of input. Use the returned `next_cursor` as `since` in `logs` or `wait` to \
read the reply. Example: {\"id\": \"repl\", \"data\": \"print(6*7)\\n\"}.";

const SIGNAL_DESCRIPTION: &str = "Send one signal to a task's whole process group and return at once, without waiting: SIGINT to \
interrupt a REPL or a running command, SIGHUP to make a server reload, SIGSTOP/SIGCONT to pause and resume. To \
end a task use `stop`, which also waits and escalates. Example: {\"id\": \"web\", \"signal\": \"SIGHUP\"}.";

const RESTART_DESCRIPTION: &str = "Stop a task if it runs (SIGTERM to its group, SIGKILL after the grace period), then start it \
again with the same command, arguments, directory, environment and options. The id and name stay, `restarts` \
counts up, and the output continues in the same buffer, so cursors stay valid. With the task's `wait_for`, \
returns once it is ready again. Example: {\"id\": \"web\"}.";

const STOP_DESCRIPTION: &str = "Stop a task and everything it started: sends `signal` (default SIGTERM) to its whole process group, \
waits up to `grace_ms` for it to exit, then sends SIGKILL to the group. Returns once the process has \
exited, with its final status and `escalated: true` if SIGKILL was needed. Stopping a task that already \
ended just returns its status. Example: {\"id\": \"web\"} or {\"id\": \"web\", \"force\": true}.";

const LIST_DESCRIPTION: &str = "List the tasks this server knows, oldest first, with id, name, pid, state, exit code or signal, \
command, start time and runtime. Use it to find a task id or name you lost track of. \
Example: {\"state\": \"running\"}.";

const REMOVE_DESCRIPTION: &str = "Forget a task that has ended (exited or failed) and free its output buffer. A running task must be \
stopped first. Example: {\"id\": \"web\"}.";

fn annotations(read_only: bool, destructive: bool, idempotent: bool) -> Value {
    json!({
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": false,
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn id_param() -> Value {
    json!({"type": "string", "description": "The task's id or its name."})
}

fn int_param(description: &str, default: u64, min: u64, max: u64) -> Value {
    json!({"type": "integer", "description": description, "default": default, "minimum": min, "maximum": max})
}

fn nullable(ty: &str) -> Value {
    json!({"type": [ty, "null"]})
}

fn state_schema() -> Value {
    json!({"type": "string", "enum": ["starting", "running", "stopping", "exited", "failed"]})
}

fn line_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer", "description": "Absolute line number, from 0, never reused."},
            "stream": {"type": "string", "enum": ["stdout", "stderr"]},
            "text": {"type": "string"},
            "partial": {"type": "boolean", "description": "The line has no newline yet."},
        },
        "required": ["n", "stream", "text"],
    })
}

fn start_input() -> Value {
    object(
        json!({
            "command": {"type": "string", "minLength": 1,
                "description": "Shell command line, run as `/bin/sh -c command`; with `args`, the program to run directly."},
            "args": {"type": "array", "items": {"type": "string"},
                "description": "Arguments for `command`, run without a shell (no quoting or injection issues)."},
            "cwd": {"type": "string", "description": "Working directory (must exist); default: the server's."},
            "env": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Environment variables to add or override."},
            "name": {"type": "string", "minLength": 1,
                "description": "A label unique among running tasks, usable wherever an id is."},
            "stdin": {"type": "boolean", "default": false,
                "description": "Keep a pipe to the process's stdin for `write`; otherwise stdin is /dev/null."},
            "notify_on_exit": {"type": "boolean", "default": false,
                "description": "Send a notification (notifications/message) when the task ends."},
            "wait_for": {"type": "string",
                "description": "Regex: return only once a new output line matches (or the process exits, or wait_timeout_ms passes); the result's `ready` says which."},
            "wait_timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MS, "default": DEFAULT_READY_MS,
                "description": "Bound for `wait_for`, in milliseconds."},
            "max_runtime_ms": {"type": "integer", "minimum": 1,
                "description": "Stop the task (SIGTERM, then SIGKILL after the grace period) once it has run this long."},
        }),
        &["command"],
    )
}

fn start_output() -> Value {
    object(
        json!({
            "id": {"type": "string"},
            "name": nullable("string"),
            "pid": nullable("integer"),
            "state": state_schema(),
            "command": {"type": "string"},
            "args": {"type": ["array", "null"], "items": {"type": "string"}},
            "cwd": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "restarts": {"type": "integer", "minimum": 0},
            "ready": {
                "type": "object",
                "description": "With `wait_for`: whether the pattern matched before the process exited or the timeout.",
                "properties": {
                    "matched": {"type": "boolean"},
                    "line": nullable("string"),
                    "reason": {"type": "string", "enum": ["matched", "exited", "timeout"]},
                },
                "required": ["matched", "line", "reason"],
            },
        }),
        &[
            "id",
            "name",
            "pid",
            "state",
            "command",
            "args",
            "cwd",
            "started_at",
            "restarts",
        ],
    )
}

fn wait_input() -> Value {
    object(
        json!({
            "id": id_param(),
            "pattern": {"type": "string", "description": "Regex (Rust regex syntax) an output line must match."},
            "since": {"type": "integer", "minimum": 0,
                "description": "Cursor where matching starts; default: the oldest line still held, so earlier output counts."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                "description": "Until a TCP connection to 127.0.0.1:port succeeds."},
            "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MS, "default": DEFAULT_WAIT_MS},
        }),
        &["id"],
    )
}

fn wait_output() -> Value {
    let mut line = line_schema();
    line["type"] = json!(["object", "null"]);
    object(
        json!({
            "id": {"type": "string"},
            "reason": {"type": "string", "enum": ["matched", "port_open", "exited", "timeout"]},
            "line": line,
            "state": state_schema(),
            "exit_code": nullable("integer"),
            "next_cursor": {"type": "integer", "description": "Pass as `since` to read on after the match."},
            "waited_ms": {"type": "integer", "minimum": 0},
        }),
        &[
            "id",
            "reason",
            "line",
            "state",
            "exit_code",
            "next_cursor",
            "waited_ms",
        ],
    )
}

const STATUS_REQUIRED: &[&str] = &[
    "id",
    "name",
    "command",
    "args",
    "cwd",
    "pid",
    "state",
    "exit_code",
    "signal",
    "stopped",
    "started_at",
    "ended_at",
    "runtime_ms",
    "restarts",
    "output",
];

const STATUS_REQUIRED_WITH_TAIL: &[&str] = &[
    "id",
    "name",
    "command",
    "args",
    "cwd",
    "pid",
    "state",
    "exit_code",
    "signal",
    "stopped",
    "started_at",
    "ended_at",
    "runtime_ms",
    "restarts",
    "output",
    "tail",
];

fn status_properties(with_tail: bool) -> Value {
    let mut properties = json!({
        "id": {"type": "string"},
        "name": nullable("string"),
        "command": {"type": "string"},
        "args": {"type": ["array", "null"], "items": {"type": "string"}},
        "cwd": {"type": "string"},
        "pid": nullable("integer"),
        "state": state_schema(),
        "exit_code": nullable("integer"),
        "signal": nullable("string"),
        "stopped": {"type": "boolean", "description": "A stop (or server shutdown) ended it."},
        "escaped": {"type": "array", "description": "Processes it started that left its process group (daemons); stopped with it.",
            "items": {"type": "object", "properties": {"pid": {"type": "integer"}, "command": {"type": "string"},
                "state": {"type": "string", "enum": ["running", "stopping", "exited", "survived_sigkill"]}},
                "required": ["pid", "command", "state"]}},
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "runtime_ms": {"type": "integer", "minimum": 0},
        "restarts": {"type": "integer", "minimum": 0},
        "output": {
            "type": "object",
            "properties": {
                "lines": {"type": "integer", "description": "Complete lines ever printed."},
                "bytes": {"type": "integer", "description": "Bytes ever printed."},
                "dropped_lines": {"type": "integer", "description": "Lines evicted from the buffer."},
                "next_cursor": {"type": "integer", "description": "The number the next line will get."},
            },
            "required": ["lines", "bytes", "dropped_lines", "next_cursor"],
        },
    });
    if with_tail {
        properties["tail"] = json!({"type": "array", "items": line_schema()});
    }
    properties
}

fn logs_input() -> Value {
    object(
        json!({
            "id": id_param(),
            "since": {"type": "integer", "minimum": 0,
                "description": "Cursor: only lines numbered >= since (pass the previous `next_cursor`)."},
            "tail": {"type": "integer", "minimum": 0, "description": "Only the last N matching lines."},
            "head": {"type": "integer", "minimum": 0, "description": "Only the first N matching lines."},
            "grep": {"type": "string", "description": "Regular expression (Rust regex syntax); keep only matching lines."},
            "stream": {"type": "string", "enum": ["stdout", "stderr", "both"], "default": "both"},
            "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_LOGS_BYTES, "default": DEFAULT_LOGS_BYTES,
                "description": "Bound on the returned text, each line counting 32 bytes more; cut at line boundaries and flagged `truncated`."},
            "raw": {"type": "boolean", "default": false, "description": "Keep ANSI escape sequences."},
        }),
        &["id"],
    )
}

fn logs_output() -> Value {
    object(
        json!({
            "id": {"type": "string"},
            "state": state_schema(),
            "exit_code": nullable("integer"),
            "lines": {"type": "array", "items": line_schema()},
            "next_cursor": {"type": "integer", "description": "Pass as `since` next time."},
            "skipped": {"type": "integer", "description": "Requested lines already evicted from the buffer."},
            "truncated": {"type": "boolean", "description": "`max_bytes` cut the result."},
        }),
        &[
            "id",
            "state",
            "exit_code",
            "lines",
            "next_cursor",
            "skipped",
            "truncated",
        ],
    )
}

fn stop_input() -> Value {
    object(
        json!({
            "id": id_param(),
            "signal": {"type": "string", "enum": STOP_SIGNALS, "default": "SIGTERM",
                "description": "First signal, sent to the whole process group."},
            "grace_ms": int_param("Milliseconds to wait before SIGKILL.", 5000, 0, MAX_GRACE_MS),
            "force": {"type": "boolean", "default": false, "description": "Same as signal SIGKILL."},
        }),
        &["id"],
    )
}

fn stop_output() -> Value {
    let mut properties = status_properties(false);
    properties["escalated"] =
        json!({"type": "boolean", "description": "SIGKILL was needed after the grace period."});
    let mut required = STATUS_REQUIRED.to_vec();
    required.push("escalated");
    object(properties, &required)
}

fn list_output() -> Value {
    let task = json!({
        "type": "object",
        "description": "Fields that do not apply (no name, not started, not ended) are left out.",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "pid": {"type": "integer"},
            "state": state_schema(),
            "exit_code": {"type": "integer"},
            "signal": {"type": "string"},
            "command": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "runtime_ms": {"type": "integer", "minimum": 0},
        },
        "required": ["id", "state", "command", "started_at", "runtime_ms"],
    });
    object(
        json!({"tasks": {"type": "array", "items": task}}),
        &["tasks"],
    )
}

/// Signals `stop` accepts as its first signal.
pub const STOP_SIGNALS: [&str; 5] = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL"];
/// Signals the `signal` tool accepts.
pub const SIGNALS: [&str; 9] = [
    "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGCONT", "SIGSTOP",
];
/// `wait.timeout_ms` when not given.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// `start.wait_timeout_ms` when not given.
pub const DEFAULT_READY_MS: u64 = 10_000;
/// Largest `wait.timeout_ms` and `start.wait_timeout_ms` accepted (5 minutes).
pub const MAX_WAIT_MS: u64 = 300_000;
/// What each line counts toward `logs.max_bytes` (and the other output reads) besides its
/// text: about what its number, stream and punctuation take in a reply.
pub const LINE_OVERHEAD_BYTES: usize = 32;
/// `logs.max_bytes` when not given.
pub const DEFAULT_LOGS_BYTES: usize = 32 * 1024;
/// Largest `logs.max_bytes` accepted.
pub const MAX_LOGS_BYTES: usize = 1024 * 1024;
/// Largest `stop.grace_ms` accepted (5 minutes).
pub const MAX_GRACE_MS: u64 = 300_000;
/// `status.tail` when not given.
pub const DEFAULT_STATUS_TAIL: usize = 10;
/// Largest `status.tail` accepted.
pub const MAX_STATUS_TAIL: usize = 1000;

/// Arguments that do not fit a tool's input schema, with a reason for the model.
#[derive(Debug, PartialEq, Eq)]
pub struct ArgumentError(pub String);

/// Decodes `arguments` into `T`, naming the offending field in the error.
pub fn parse<T: DeserializeOwned>(tool: Tool, arguments: Value) -> Result<T, ArgumentError> {
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ArgumentError(format!("invalid arguments for `{}`: {inner}", tool.name()))
        } else {
            ArgumentError(format!(
                "invalid arguments for `{}`: `{path}`: {inner}",
                tool.name()
            ))
        }
    })
}

/// `start` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    pub command: String,
    pub args: Option<Vec<String>>,
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub name: Option<String>,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub notify_on_exit: bool,
    pub wait_for: Option<String>,
    pub wait_timeout_ms: Option<u64>,
    pub max_runtime_ms: Option<u64>,
}

/// `wait` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub id: String,
    pub pattern: Option<String>,
    pub since: Option<u64>,
    pub port: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// `write` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    pub id: String,
    pub data: String,
    #[serde(default)]
    pub eof: bool,
}

/// `signal` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalArgs {
    pub id: String,
    pub signal: String,
}

impl SignalArgs {
    /// The signal, if it is one the tool accepts.
    pub fn signal(&self) -> Result<Signal, ArgumentError> {
        Signal::from_name(&self.signal)
            .filter(|_| SIGNALS.contains(&self.signal.as_str()))
            .ok_or_else(|| {
                ArgumentError(format!(
                    "invalid arguments for `signal`: `signal`: {:?} is not one of {}",
                    self.signal,
                    SIGNALS.join(", ")
                ))
            })
    }
}

/// Arguments of the tools that take only a task reference (`restart`, `remove`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    pub id: String,
}

/// Checks an optional duration argument in milliseconds against `1..=max`.
pub fn millis_arg(
    tool: Tool,
    field: &str,
    value: Option<u64>,
    default: u64,
    max: u64,
) -> Result<core::time::Duration, ArgumentError> {
    let ms = value.unwrap_or(default);
    if ms == 0 || ms > max {
        return Err(ArgumentError(format!(
            "invalid arguments for `{}`: `{field}` must be between 1 and {max} (milliseconds)",
            tool.name()
        )));
    }
    Ok(core::time::Duration::from_millis(ms))
}

/// Compiles a regex argument with a size bound, so a pathological pattern cannot eat memory.
/// The error is one line: the regex crate's own message spans several (it draws a caret under
/// the pattern), so only its last line, the reason, is kept.
pub fn regex_arg(tool: Tool, field: &str, pattern: &str) -> Result<regex::Regex, ArgumentError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ArgumentError(format!(
            "invalid arguments for `{}`: `{field}` is {} bytes, longer than the {MAX_PATTERN_BYTES} bytes a pattern may have",
            tool.name(),
            pattern.len()
        )));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let message = e.to_string();
            let reason = message
                .lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("invalid syntax");
            let reason = reason.strip_prefix("error: ").unwrap_or(reason);
            ArgumentError(format!(
                "invalid arguments for `{}`: `{field}` {pattern:?} is not a valid regex: {reason}",
                tool.name()
            ))
        })
}

/// Bound on a compiled regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest pattern (`wait_for`, `pattern`, `grep`) accepted, in bytes: longer ones take long
/// enough to compile to delay everything else the server does.
pub const MAX_PATTERN_BYTES: usize = 8 << 10;

/// `status` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    pub id: String,
    pub tail: Option<usize>,
}

/// Which streams `logs` returns.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StreamFilter {
    Stdout,
    Stderr,
    #[default]
    Both,
}

impl StreamFilter {
    /// The one stream to keep, or `None` for both.
    pub fn stream(self) -> Option<Stream> {
        match self {
            StreamFilter::Stdout => Some(Stream::Stdout),
            StreamFilter::Stderr => Some(Stream::Stderr),
            StreamFilter::Both => None,
        }
    }
}

/// `logs` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    pub id: String,
    pub since: Option<u64>,
    pub tail: Option<usize>,
    pub head: Option<usize>,
    pub grep: Option<String>,
    #[serde(default)]
    pub stream: StreamFilter,
    pub max_bytes: Option<usize>,
    #[serde(default)]
    pub raw: bool,
}

/// `stop` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    pub id: String,
    pub signal: Option<String>,
    pub grace_ms: Option<u64>,
    #[serde(default)]
    pub force: bool,
}

impl StopArgs {
    /// The first signal to send: `SIGKILL` with `force`, else `signal`, else `SIGTERM`.
    pub fn first_signal(&self) -> Result<Signal, ArgumentError> {
        if self.force {
            return Ok(Signal::Kill);
        }
        match self.signal.as_deref() {
            None => Ok(Signal::Term),
            Some(name) if STOP_SIGNALS.contains(&name) => {
                Signal::from_name(name).ok_or_else(|| bad_signal(name))
            }
            Some(name) => Err(bad_signal(name)),
        }
    }
}

fn bad_signal(name: &str) -> ArgumentError {
    ArgumentError(format!(
        "invalid arguments for `stop`: `signal`: {name:?} is not one of {}",
        STOP_SIGNALS.join(", ")
    ))
}

/// Which tasks `list` shows.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListFilter {
    Running,
    Exited,
    #[default]
    All,
}

/// `list` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    pub state: ListFilter,
}

/// Every tool definition as a session sees it: without `title` and `outputSchema` for versions
/// before 2025-06-18, which did not have them.
pub fn definitions(structured: bool) -> Vec<Value> {
    Tool::ALL
        .into_iter()
        .map(|tool| {
            let mut definition = tool.definition();
            if !structured && let Some(object) = definition.as_object_mut() {
                object.remove("title");
                object.remove("outputSchema");
            }
            definition
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_complete_definition() {
        for tool in Tool::ALL {
            let d = tool.definition();
            assert_eq!(d["name"], tool.name());
            assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(
                d["description"]
                    .as_str()
                    .is_some_and(|t| t.contains("Example"))
            );
            assert_eq!(d["inputSchema"]["type"], "object");
            assert_eq!(d["inputSchema"]["additionalProperties"], false);
            assert_eq!(d["outputSchema"]["type"], "object");
            assert_eq!(d["annotations"]["openWorldHint"], false);
            assert_eq!(Tool::from_name(tool.name()), Some(tool));
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse::<StartArgs>(Tool::Start, json!({"command": 5})).unwrap_err();
        assert!(err.0.contains("`command`"), "{}", err.0);
        assert!(err.0.contains("expected a string"), "{}", err.0);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse::<StatusArgs>(Tool::Status, json!({"id": "a", "colour": 1})).unwrap_err();
        assert!(err.0.contains("unknown field `colour`"), "{}", err.0);
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = parse::<LogsArgs>(Tool::Logs, json!({})).unwrap_err();
        assert!(err.0.contains("missing field `id`"), "{}", err.0);
    }

    #[test]
    fn regex_errors_are_one_line() {
        let err = regex_arg(Tool::Wait, "pattern", "(a").unwrap_err();
        assert_eq!(
            err.0,
            "invalid arguments for `wait`: `pattern` \"(a\" is not a valid regex: unclosed group"
        );
    }

    #[test]
    fn stop_signal_defaults_to_sigterm_and_force_wins() {
        let args: StopArgs = parse(Tool::Stop, json!({"id": "a"})).unwrap();
        assert_eq!(args.first_signal(), Ok(Signal::Term));
        let args: StopArgs = parse(
            Tool::Stop,
            json!({"id": "a", "signal": "SIGINT", "force": true}),
        )
        .unwrap();
        assert_eq!(args.first_signal(), Ok(Signal::Kill));
        let args: StopArgs = parse(Tool::Stop, json!({"id": "a", "signal": "SIGUSR1"})).unwrap();
        assert!(args.first_signal().is_err());
    }
}

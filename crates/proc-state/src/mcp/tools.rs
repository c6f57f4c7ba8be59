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
use serde_json::{Map, Value, json};

use crate::process::{Signal, Stream};

/// A tool this server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tool {
    Start,
    Status,
    Logs,
    Stop,
    List,
    Remove,
}

impl Tool {
    /// Every tool, in the order `tools/list` shows them.
    pub const ALL: [Tool; 6] = [
        Tool::Start,
        Tool::Status,
        Tool::Logs,
        Tool::Stop,
        Tool::List,
        Tool::Remove,
    ];

    /// The tool's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Tool::Start => "start",
            Tool::Status => "status",
            Tool::Logs => "logs",
            Tool::Stop => "stop",
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
                "description": "A label unique among current tasks, usable wherever an id is."},
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
                "description": "Bound on the returned text; cut at line boundaries and flagged `truncated`."},
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
        "properties": {
            "id": {"type": "string"},
            "name": nullable("string"),
            "pid": nullable("integer"),
            "state": state_schema(),
            "exit_code": nullable("integer"),
            "signal": nullable("string"),
            "command": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "runtime_ms": {"type": "integer", "minimum": 0},
        },
        "required": ["id", "name", "pid", "state", "exit_code", "signal", "command", "started_at", "runtime_ms"],
    });
    object(
        json!({"tasks": {"type": "array", "items": task}}),
        &["tasks"],
    )
}

/// Signals `stop` accepts as its first signal.
pub const STOP_SIGNALS: [&str; 5] = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL"];
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
}

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

/// `remove` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    pub id: String,
}

/// The `tools/list` result for a session: every definition, without `title` and `outputSchema`
/// for versions before 2025-06-18, which did not have them.
pub fn list(structured: bool) -> Value {
    let tools: Vec<Value> = Tool::ALL
        .into_iter()
        .map(|tool| {
            let mut definition = tool.definition();
            if !structured {
                if let Some(object) = definition.as_object_mut() {
                    object.remove("title");
                    object.remove("outputSchema");
                }
            }
            definition
        })
        .collect();
    let mut result = Map::new();
    result.insert("tools".into(), Value::Array(tools));
    Value::Object(result)
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

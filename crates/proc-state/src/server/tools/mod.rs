//! The tools, one module each: its arguments (whose type gives the input schema), its result
//! (whose type gives the output schema), its description for the model, its handler and the
//! text it shows. MCP "Server Features: Tools" gives the shapes; `docs/tools.md` is the contract
//! for people, generated from these definitions (`tests/docs.rs`).
//!
//! Arguments are checked before any task is touched: a wrong type, an unknown field or a value
//! out of range becomes a tool execution error (`isError: true`; MCP 2025-11-25: input
//! validation errors are tool execution errors) that names the field.
//!
//! Schemas are JSON Schema 2020-12, derived with `schemars` and then tidied for a model that
//! reads them on every turn: no titles, no Rust integer formats, and optional fields described
//! by their type alone (they may be left out; `null` is never asked for). Defaults that a
//! [`Config`] sets (`stop.grace_ms`) are taken from it.

use std::borrow::Cow;

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::{Config, Pending, Reply, Server, ToolError, ToolResult};
use crate::escaped::Fate;
use crate::log::Line;
use crate::mcp::jsonrpc::Error;
use crate::process::ExitStatus;
use crate::process::{Stream, WindowSize};
use crate::task::{RestartMode, State, StopCause, Task};
use crate::terminal;
use crate::time::{self, Now};

mod list;
mod logs;
mod remove;
mod resize;
mod restart;
mod screen;
mod signal;
mod start;
mod status;
mod stop;
mod wait;
mod write;

pub use signal::SIGNALS;
pub use start::DEFAULT_READY_MS;
pub use status::{DEFAULT_TAIL as DEFAULT_STATUS_TAIL, MAX_TAIL as MAX_STATUS_TAIL};
pub use stop::{MAX_GRACE_MS, STOP_SIGNALS};
pub use wait::DEFAULT_TIMEOUT_MS as DEFAULT_WAIT_MS;

pub(super) use start::{Ready, start_result};
pub(super) use status::status_result;
pub(super) use stop::stop_result;
pub(super) use wait::wait_result;
pub(super) use write::{Then, write_result};

/// A tool this server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    Screen,
    Resize,
}

impl Tool {
    /// Every tool, in the order `tools/list` shows them.
    pub const ALL: [Tool; 12] = [
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
        Tool::Screen,
        Tool::Resize,
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
            Tool::Screen => "screen",
            Tool::Resize => "resize",
        }
    }

    /// Looks a tool up by its name.
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The tool as `tools/list` shows it to a session of 2025-06-18 or later: `{name, title,
    /// description, inputSchema, outputSchema, annotations}`, with the defaults `config` sets.
    pub fn definition(self, config: &Config) -> Value {
        match self {
            Tool::Start => define::<start::Args, start::Structured>(self, &start::SPEC, config),
            Tool::Status => define::<status::Args, status::Structured>(self, &status::SPEC, config),
            Tool::Logs => define::<logs::Args, logs::Structured>(self, &logs::SPEC, config),
            Tool::Wait => define::<wait::Args, wait::Structured>(self, &wait::SPEC, config),
            Tool::Write => define::<write::Args, write::Structured>(self, &write::SPEC, config),
            Tool::Signal => define::<signal::Args, signal::Structured>(self, &signal::SPEC, config),
            Tool::Stop => define::<stop::Args, stop::Structured>(self, &stop::SPEC, config),
            Tool::Restart => {
                define::<restart::Args, start::Structured>(self, &restart::SPEC, config)
            }
            Tool::List => define::<list::Args, list::Structured>(self, &list::SPEC, config),
            Tool::Remove => define::<remove::Args, remove::Structured>(self, &remove::SPEC, config),
            Tool::Screen => define::<screen::Args, screen::Structured>(self, &screen::SPEC, config),
            Tool::Resize => define::<resize::Args, resize::Structured>(self, &resize::SPEC, config),
        }
    }
}

/// Every tool definition as a session sees it: without `title` and `outputSchema` for versions
/// before 2025-06-18 (`structured: false`), which did not have them.
pub fn definitions(config: &Config, structured: bool) -> Vec<Value> {
    Tool::ALL
        .into_iter()
        .map(|tool| {
            let mut definition = tool.definition(config);
            if !structured && let Some(object) = definition.as_object_mut() {
                object.remove("title");
                object.remove("outputSchema");
            }
            definition
        })
        .collect()
}

/// What a tool module says about its tool besides its types.
struct Spec {
    title: &'static str,
    /// For the model: what the tool is for, when to use it, one example.
    description: &'static str,
    annotations: Annotations,
    /// Input defaults that come from the [`Config`]: `(field, value)`.
    config_defaults: fn(&Config) -> Vec<(&'static str, Value)>,
}

/// MCP tool annotations (hints for the client; `openWorldHint` is always false: tasks are
/// local processes).
struct Annotations {
    read_only: bool,
    destructive: bool,
    idempotent: bool,
}

/// No input default depends on the [`Config`].
fn no_config_defaults(_: &Config) -> Vec<(&'static str, Value)> {
    Vec::new()
}

fn define<A: JsonSchema, R: JsonSchema>(tool: Tool, spec: &Spec, config: &Config) -> Value {
    let mut input = schema_of::<A>(Contract::Deserialize);
    for (field, value) in (spec.config_defaults)(config) {
        if let Some(property) = input
            .get_mut("properties")
            .and_then(|p| p.get_mut(field))
            .and_then(Value::as_object_mut)
        {
            property.insert("default".into(), value);
        }
    }
    json!({
        "name": tool.name(),
        "title": spec.title,
        "description": spec.description,
        "inputSchema": input,
        "outputSchema": schema_of::<R>(Contract::Serialize),
        "annotations": {
            "readOnlyHint": spec.annotations.read_only,
            "destructiveHint": spec.annotations.destructive,
            "idempotentHint": spec.annotations.idempotent,
            "openWorldHint": false,
        },
    })
}

/// `T`'s JSON Schema (2020-12, subschemas inlined), tidied: see the module docs.
fn schema_of<T: JsonSchema>(contract: Contract) -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.meta_schema = None;
            settings.inline_subschemas = true;
            settings.contract = contract;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(root) = schema.as_object_mut() {
        // The type's own doc comment is for people reading the code; the tool has its own
        // description.
        root.remove("description");
    }
    tidy(&mut schema);
    schema
}

fn tidy(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    map.remove("title");
    let rust_format = map
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| f.starts_with("int") || f.starts_with("uint") || f == "double");
    if rust_format {
        map.remove("format");
    }
    // Optional fields: `"type": ["string", "null"]` → `"type": "string"`.
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    // `anyOf: [S, {"type": "null"}]` → S.
    let is_null = |s: &Value| s.get("type").is_some_and(|t| t == "null");
    if let Some(Value::Array(any)) = map.get("anyOf")
        && any.len() == 2
        && any.iter().any(is_null)
        && let Some(Value::Object(inner)) = any.iter().find(|s| !is_null(s)).cloned()
    {
        map.remove("anyOf");
        for (key, value) in inner {
            map.entry(key).or_insert(value);
        }
    }
    if let Some(Value::String(text)) = map.get_mut("description") {
        *text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    // Defaults a model assumes anyway: nothing, empty, false.
    let empty_default = map.get("default").is_some_and(|d| {
        d.is_null() || *d == json!({}) || *d == json!([]) || *d == json!(false) || *d == json!("")
    });
    if empty_default {
        map.remove("default");
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(tidy);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get_mut(key) {
            tidy(sub);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(subs)) = map.get_mut(key) {
            subs.iter_mut().for_each(tidy);
        }
    }
}

// ---- dispatch ----

impl Server {
    /// `tools/call`: finds the tool, decodes its arguments and runs its handler. Unknown tools
    /// and a missing name are protocol errors; everything about the arguments is a tool error.
    pub(super) fn call_tool(
        &mut self,
        now: Now,
        request: &Pending,
        mut params: Map<String, Value>,
    ) -> Result<Reply, Error> {
        let name = match params.remove("name") {
            Some(Value::String(name)) => name,
            _ => {
                return Err(Error::invalid_params(
                    "Invalid params: `name` (the tool's name, a string) is required",
                ));
            }
        };
        let Some(tool) = Tool::from_name(&name) else {
            return Err(Error::invalid_params(format!(
                "Unknown tool: `{name}` (tools: {})",
                Tool::ALL.map(Tool::name).join(", ")
            )));
        };
        let arguments = match params.remove("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(arguments @ Value::Object(_)) => arguments,
            Some(_) => {
                return Ok(Reply::Tool(ToolResult::error(format!(
                    "invalid arguments for `{name}`: `arguments` must be an object"
                ))));
            }
        };
        let outcome = match tool {
            Tool::Start => parse(tool, arguments).and_then(|a| start::call(self, now, request, a)),
            Tool::Status => {
                parse(tool, arguments).and_then(|a| status::call(self, now, request, a))
            }
            Tool::Logs => parse(tool, arguments).and_then(|a| logs::call(self, now, request, a)),
            Tool::Wait => parse(tool, arguments).and_then(|a| wait::call(self, now, request, a)),
            Tool::Write => parse(tool, arguments).and_then(|a| write::call(self, now, request, a)),
            Tool::Signal => {
                parse(tool, arguments).and_then(|a| signal::call(self, now, request, a))
            }
            Tool::Stop => parse(tool, arguments).and_then(|a| stop::call(self, now, request, a)),
            Tool::Restart => {
                parse(tool, arguments).and_then(|a| restart::call(self, now, request, a))
            }
            Tool::List => parse(tool, arguments).and_then(|a| list::call(self, now, request, a)),
            Tool::Remove => {
                parse(tool, arguments).and_then(|a| remove::call(self, now, request, a))
            }
            Tool::Screen => {
                parse(tool, arguments).and_then(|a| screen::call(self, now, request, a))
            }
            Tool::Resize => {
                parse(tool, arguments).and_then(|a| resize::call(self, now, request, a))
            }
        };
        Ok(outcome.unwrap_or_else(|ToolError(reason)| Reply::Tool(ToolResult::error(reason))))
    }
}

// ---- arguments ----

/// Decodes `arguments` into `T`, naming the offending field in the error.
fn parse<T: DeserializeOwned>(tool: Tool, arguments: Value) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ToolError(format!("invalid arguments for `{}`: {inner}", tool.name()))
        } else {
            ToolError(format!(
                "invalid arguments for `{}`: `{path}`: {inner}",
                tool.name()
            ))
        }
    })
}

/// A tool error about one field: "invalid arguments for `tool`: `field` why".
fn bad_argument(tool: Tool, field: &str, why: impl core::fmt::Display) -> ToolError {
    ToolError(format!(
        "invalid arguments for `{}`: `{field}` {why}",
        tool.name()
    ))
}

/// A terminal window size from `rows` and `cols` arguments, each checked against its bound
/// ([`terminal::MAX_ROWS`], [`terminal::MAX_COLS`]), the error naming the field.
fn window_size(tool: Tool, rows: u16, cols: u16) -> Result<WindowSize, ToolError> {
    for (field, value, max) in [
        ("rows", rows, terminal::MAX_ROWS),
        ("cols", cols, terminal::MAX_COLS),
    ] {
        if !(1..=max).contains(&value) {
            return Err(bad_argument(
                tool,
                field,
                format_args!("must be 1 to {max}"),
            ));
        }
    }
    Ok(WindowSize { rows, cols })
}

/// Checks an optional duration argument in milliseconds against `1..=max`.
fn millis_arg(
    tool: Tool,
    field: &str,
    value: Option<u64>,
    default: u64,
    max: u64,
) -> Result<core::time::Duration, ToolError> {
    let ms = value.unwrap_or(default);
    if ms == 0 || ms > max {
        return Err(bad_argument(
            tool,
            field,
            format_args!("must be between 1 and {max} (milliseconds)"),
        ));
    }
    Ok(core::time::Duration::from_millis(ms))
}

/// Longest pattern (`wait_for`, `pattern`, `grep`) accepted, in bytes: longer ones take long
/// enough to compile to delay everything else the server does.
pub const MAX_PATTERN_BYTES: usize = 8 << 10;

/// Bound on a compiled regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a regex argument with a size bound, so a pathological pattern cannot eat memory.
/// The error is one line: the regex crate's own message spans several (it draws a caret under
/// the pattern), so only its last line, the reason, is kept.
fn regex_arg(tool: Tool, field: &str, pattern: &str) -> Result<regex::Regex, ToolError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(bad_argument(
            tool,
            field,
            format_args!(
                "is {} bytes, longer than the {MAX_PATTERN_BYTES} bytes a pattern may have",
                pattern.len()
            ),
        ));
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
            bad_argument(
                tool,
                field,
                format_args!("{pattern:?} is not a valid regex: {reason}"),
            )
        })
}

/// An optional regex argument.
fn optional_regex(
    tool: Tool,
    field: &str,
    pattern: Option<&str>,
) -> Result<Option<regex::Regex>, ToolError> {
    pattern.map(|p| regex_arg(tool, field, p)).transpose()
}

/// Checks a URL argument to probe with HTTP (`wait.url`, `start.wait_url`): absolute, `http`
/// (this server probes without TLS), with a host that is a loopback address or `localhost`
/// unless [`Config::probe_any_host`]. Returns it as parsed (normalised, RFC 3986).
fn probe_url(tool: Tool, field: &str, text: &str, config: &Config) -> Result<String, ToolError> {
    let url = url::Url::parse(text)
        .map_err(|error| bad_argument(tool, field, format_args!("is not a URL: {error}")))?;
    if url.scheme() != "http" {
        return Err(bad_argument(
            tool,
            field,
            format_args!("must be an http:// URL, not {}://", url.scheme()),
        ));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !loopback && !config.probe_any_host {
        return Err(bad_argument(
            tool,
            field,
            "must name a loopback host (127.0.0.1, [::1], localhost); the server's --probe-any-host allows others",
        ));
    }
    Ok(url.into())
}

/// A measurement of what a task uses this recent is good enough for `status`; an older one is
/// asked for again.
pub const USAGE_FRESH: core::time::Duration = core::time::Duration::from_millis(250);
/// `list` shows measurements up to this old, and asks for new ones (without waiting for them)
/// when they are older.
pub const USAGE_TTL: core::time::Duration = core::time::Duration::from_secs(2);
/// How long `status` waits for the driver to measure what a task uses; past it, the answer
/// gives the last measurement (or none).
pub const INSPECT_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(1);

/// Largest `wait.timeout_ms` and `start.wait_timeout_ms` accepted (5 minutes).
pub const MAX_WAIT_MS: u64 = 300_000;

/// Largest `logs.max_bytes` accepted, and the bound of the other reads of a task's output
/// (`status`'s tail, `wait`'s scan).
pub const MAX_READ_BYTES: usize = 1 << 20;

/// What each line counts toward `logs.max_bytes` (and the other output reads) besides its
/// text: about what its number, stream and punctuation take in a reply.
pub const LINE_OVERHEAD_BYTES: usize = 32;

// ---- results ----

/// A line of output as the tools return it.
#[derive(Serialize, JsonSchema)]
struct LineOut<'a> {
    /// Absolute line number, from 0, never reused.
    n: u64,
    stream: Stream,
    text: &'a str,
    /// The line has no newline yet.
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    partial: bool,
    /// With `timestamps`: when the read that delivered its last bytes happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    time: Option<time::Rfc3339>,
}

impl<'a> From<&'a Line> for LineOut<'a> {
    fn from(line: &'a Line) -> Self {
        Self {
            n: line.n,
            stream: line.stream,
            text: &line.text,
            partial: line.partial,
            time: line.time_ms.map(time::Rfc3339),
        }
    }
}

/// What `list` shows of a task, and the first fields of `status` and `stop`: fields that do
/// not apply (no name, not started, not ended) are left out.
#[derive(Serialize, JsonSchema)]
struct TaskSummary<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    command: &'a str,
    #[schemars(extend("format" = "date-time"))]
    #[schemars(with = "String")]
    started_at: time::Rfc3339,
    runtime_ms: u64,
    /// Sockets its processes listen on (TCP, and UDP), as last measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    listening: Vec<ListenerOut>,
    /// What its live processes use, as last measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
    /// Its restart policy restarted it 3 times within a minute.
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    crash_loop: bool,
    /// Milliseconds until the idle lease stops it.
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_left_ms: Option<u64>,
}

/// What a task's live processes use.
#[derive(Serialize, JsonSchema)]
struct UsageOut {
    /// Processes: its group's and those that left it.
    processes: u32,
    /// CPU time, user plus system, of the live processes.
    cpu_ms: u64,
    /// Resident memory, summed.
    rss_bytes: u64,
}

impl<'a> TaskSummary<'a> {
    fn of(t: &'a Task, now: Now) -> Self {
        let usage = t.usage.usage();
        Self {
            id: &t.id,
            name: t.name.as_deref(),
            pid: t.pid(),
            state: t.state(),
            exit_code: t.exit_code(),
            signal: t.exit_signal().map(crate::Signal::name),
            command: &t.command.command,
            started_at: time::Rfc3339(t.started().unix_ms),
            runtime_ms: super::millis(t.runtime(now)),
            listening: usage
                .map(|u| u.listening.iter().map(ListenerOut::from).collect())
                .unwrap_or_default(),
            usage: usage.map(|u| UsageOut {
                processes: u.processes,
                cpu_ms: u.cpu_ms,
                rss_bytes: u.rss_bytes,
            }),
            crash_loop: t.supervision.crash_loop(),
            idle_left_ms: t
                .idle_deadline()
                .map(|at| super::millis(at.saturating_duration_since(now.instant))),
        }
    }
}

/// Everything about one task: the body of `status` and `stop`.
#[derive(Serialize, JsonSchema)]
struct TaskFields<'a> {
    #[serde(flatten)]
    summary: TaskSummary<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [String]>,
    cwd: &'a str,
    /// A stop (or server shutdown) ended it.
    stopped: bool,
    /// Processes it started that left its process group (daemons); stopped with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    escaped: Vec<EscapedOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    ended_at: Option<String>,
    restarts: u32,
    output: OutputCounters,
    /// URLs it printed, most recent last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<&'a str>,
    /// Why a stop ended it (or is ending it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["stop", "shutdown", "max_runtime", "max_memory", "idle"]))]
    stop_reason: Option<&'static str>,
    /// Its restart policy: how the last run ended and when the next one starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<PolicyOut>,
}

/// A listening socket.
#[derive(Serialize, JsonSchema)]
struct ListenerOut {
    #[schemars(extend("enum" = ["tcp", "udp"]))]
    protocol: &'static str,
    /// Local address (0.0.0.0 or :: for all interfaces).
    address: String,
    port: u16,
}

impl From<&crate::process::Listener> for ListenerOut {
    fn from(l: &crate::process::Listener) -> Self {
        Self {
            protocol: l.protocol.as_str(),
            address: l.address.to_string(),
            port: l.port,
        }
    }
}

/// A task's restart policy at work.
#[derive(Serialize, JsonSchema)]
struct PolicyOut {
    #[schemars(extend("enum" = ["on-failure", "always"]))]
    mode: &'static str,
    /// Restarts the policy made.
    restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_restarts: Option<u32>,
    /// The last run's exit code or signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_signal: Option<String>,
    /// When the next run starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    next_attempt_at: Option<String>,
    /// `max_restarts` reached: it stays ended.
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    exhausted: bool,
}

impl PolicyOut {
    fn of(t: &Task, now: Now) -> Option<Self> {
        let policy = t.command.options.restart;
        let mode = match policy.mode {
            RestartMode::No => return None,
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
        };
        let supervision = &t.supervision;
        let last = supervision.last_exit.map(|(status, _)| status);
        Some(Self {
            mode,
            restarts: supervision.restarts,
            max_restarts: policy.max_restarts,
            last_exit_code: match last {
                Some(ExitStatus::Code(code)) => Some(code),
                _ => None,
            },
            last_signal: match last {
                Some(ExitStatus::Signaled(signal)) => Some(signal.name()),
                _ => None,
            },
            next_attempt_at: t.next_attempt().map(|at| {
                let wait = at.saturating_duration_since(now.instant);
                time::rfc3339(now.unix_ms + super::millis(wait))
            }),
            exhausted: supervision.exhausted,
        })
    }
}

impl<'a> TaskFields<'a> {
    fn of(t: &'a Task, now: Now) -> Self {
        Self {
            summary: TaskSummary::of(t, now),
            args: t.command.args.as_deref(),
            cwd: &t.command.cwd,
            stopped: t.stopped(),
            escaped: t
                .escaped
                .listed()
                .map(|e| EscapedOut {
                    pid: e.pid,
                    command: &e.command,
                    state: e.fate,
                })
                .collect(),
            ended_at: t.ended().map(|e| time::rfc3339(e.unix_ms)),
            restarts: t.restarts(),
            output: OutputCounters {
                lines: t.log.total_lines(),
                bytes: t.log.total_bytes(),
                dropped_lines: t.log.dropped_lines(),
                next_cursor: t.log.next_cursor(),
            },
            urls: t.urls.iter().collect(),
            stop_reason: t.stop_cause().map(StopCause::as_str),
            restart_policy: PolicyOut::of(t, now),
        }
    }
}

/// A process that left the task's process group.
#[derive(Serialize, JsonSchema)]
struct EscapedOut<'a> {
    pid: u32,
    command: &'a str,
    state: Fate,
}

/// A task's output counters.
#[derive(Serialize, JsonSchema)]
struct OutputCounters {
    /// Complete lines ever printed.
    lines: u64,
    /// Bytes ever printed.
    bytes: u64,
    /// Lines evicted from the buffer.
    dropped_lines: u64,
    /// The number the next line will get.
    next_cursor: u64,
}

/// Names as the tools spell them, in results and their schemas.
macro_rules! spelled {
    ($type:ty, $name:literal, $all:expr) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "enum": $all})
            }
        }
    };
}

spelled!(
    State,
    "State",
    ["starting", "running", "stopping", "exited", "failed"]
);
spelled!(Stream, "Stream", ["stdout", "stderr", "tty"]);
spelled!(
    Fate,
    "Fate",
    ["running", "stopping", "exited", "survived_sigkill"]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_complete_definition() {
        let config = Config::default();
        for tool in Tool::ALL {
            let d = tool.definition(&config);
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
            let text = d.to_string();
            for noise in ["\"title\":\"Args", "uint", "\"null\"", "$ref", "$defs"] {
                assert!(!text.contains(noise), "{} has {noise}: {text}", tool.name());
            }
        }
    }

    /// A model reads every tool's name, title, description and input schema on every turn.
    #[test]
    fn definitions_stay_within_what_a_model_reads_every_turn() {
        let sizes: Vec<(String, usize)> = definitions(&Config::default(), true)
            .into_iter()
            .map(|mut d| {
                let object = d.as_object_mut().unwrap();
                object.remove("outputSchema");
                object.remove("annotations");
                (d["name"].to_string(), d.to_string().len())
            })
            .collect();
        let read: usize = sizes.iter().map(|(_, size)| size).sum();
        assert!(read < 12 * 1024, "{read} bytes: {sizes:?}");
        eprintln!("{read} bytes");
    }

    /// The MCP conformance suite checks this: each schema is valid JSON Schema 2020-12.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn every_schema_is_valid_json_schema_2020_12() {
        for definition in definitions(&Config::default(), true) {
            for key in ["inputSchema", "outputSchema"] {
                let schema = &definition[key];
                if let Err(error) = jsonschema::draft202012::meta::validate(schema) {
                    panic!("{} {key}: {error}\n{schema}", definition["name"]);
                }
            }
        }
    }

    #[test]
    fn spelled_names_match_the_code() {
        for state in [
            State::Starting,
            State::Running,
            State::Stopping,
            State::Exited,
            State::Failed,
        ] {
            let schema = State::json_schema(&mut SchemaGenerator::default()).to_value();
            assert!(
                schema["enum"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(state.as_str()))
            );
        }
        for fate in [
            Fate::Running,
            Fate::Signalled(crate::Signal::Term),
            Fate::Exited,
            Fate::Survived,
        ] {
            let schema = Fate::json_schema(&mut SchemaGenerator::default()).to_value();
            assert!(
                schema["enum"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(fate.as_str()))
            );
        }
    }

    #[test]
    fn stop_grace_default_is_the_configured_one() {
        let config = Config {
            default_grace: core::time::Duration::from_millis(1234),
            ..Config::default()
        };
        let d = Tool::Stop.definition(&config);
        assert_eq!(d["inputSchema"]["properties"]["grace_ms"]["default"], 1234);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse::<start::Args>(Tool::Start, json!({"command": 5}))
            .err()
            .unwrap();
        assert!(err.0.contains("`command`"), "{}", err.0);
        assert!(err.0.contains("expected a string"), "{}", err.0);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse::<status::Args>(Tool::Status, json!({"id": "a", "colour": 1}))
            .err()
            .unwrap();
        assert!(err.0.contains("unknown field `colour`"), "{}", err.0);
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = parse::<logs::Args>(Tool::Logs, json!({})).err().unwrap();
        assert!(err.0.contains("missing field `id`"), "{}", err.0);
    }

    #[test]
    fn regex_errors_are_one_line() {
        let err = regex_arg(Tool::Wait, "pattern", "(a").err().unwrap();
        assert_eq!(
            err.0,
            "invalid arguments for `wait`: `pattern` \"(a\" is not a valid regex: unclosed group"
        );
    }
}

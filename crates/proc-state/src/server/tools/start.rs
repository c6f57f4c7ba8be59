//! `start`: run a command in the background and answer at once (or, with `wait_for`, once it
//! is ready).

use std::collections::BTreeMap;

use core::time::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Annotations, MAX_WAIT_MS, Spec, Tool, bad_argument, millis_arg, no_config_defaults};
use crate::log::LogLimits;
use crate::process::{SpawnSpec, StdinMode, Stdio};
use crate::server::render;
use crate::server::waiters::Kind;
use crate::server::{Pending, Reply, Server, Shutdown, ToolError, ToolResult};
use crate::task::{Command, Options, RestartMode, RestartPolicy, State, Task};
use crate::terminal;
use crate::time::{self, Now};

pub(super) const SPEC: Spec = Spec {
    title: "Start a background process",
    description: "Run a long-running command in the background (dev servers, watchers, builds, tests) and \
return at once with its task id, so the conversation is never blocked. \
`command` is run by `/bin/sh -c`; give `args` to run a program directly without a shell. \
The process gets its own process group, stdin from /dev/null, and NO_COLOR=1, PAGER=cat, GIT_PAGER=cat, \
PYTHONUNBUFFERED=1 in its environment (override them with `env`). \
When it exits, what it left in its process group is killed. \
Example: {\"command\": \"npm run dev\", \"cwd\": \"/home/me/app\", \"name\": \"web\"}.",
    annotations: Annotations {
        read_only: false,
        destructive: false,
        idempotent: false,
    },
    config_defaults: no_config_defaults,
};

/// `start.wait_timeout_ms` when not given.
pub const DEFAULT_READY_MS: u64 = 10_000;

/// Added to every child's environment unless `env` overrides them (docs/tools.md, `start`).
const DEFAULT_ENV: [(&str, &str); 4] = [
    ("NO_COLOR", "1"),
    ("PAGER", "cat"),
    ("GIT_PAGER", "cat"),
    ("PYTHONUNBUFFERED", "1"),
];

/// `start` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// Shell command line; with `args`, the program to run.
    #[schemars(length(min = 1))]
    command: String,
    /// Arguments: run `command` without a shell.
    args: Option<Vec<String>>,
    /// Working directory (must exist); default: the server's.
    cwd: Option<String>,
    /// Environment variables to add or override.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// A label unique among running tasks, usable wherever an id is.
    #[schemars(length(min = 1))]
    name: Option<String>,
    /// Keep a pipe to the process's stdin for `write`; otherwise stdin is /dev/null.
    #[serde(default)]
    stdin: bool,
    /// Run on a pseudo-terminal (REPLs, prompts, full-screen programs): see it with `screen`,
    /// send `keys` with `write`.
    #[serde(default)]
    tty: bool,
    /// With tty: terminal rows.
    #[schemars(range(min = 1, max = terminal::MAX_ROWS), extend("default" = terminal::DEFAULT_SIZE.rows))]
    rows: Option<u16>,
    /// With tty: terminal columns.
    #[schemars(range(min = 1, max = terminal::MAX_COLS), extend("default" = terminal::DEFAULT_SIZE.cols))]
    cols: Option<u16>,
    /// Notify (notifications/message) when it ends.
    #[serde(default)]
    notify_on_exit: bool,
    /// Regex: return once a new output line matches (or on exit or timeout: `ready` says
    /// which).
    wait_for: Option<String>,
    /// Bound for `wait_for` and `wait_url`.
    #[schemars(range(min = 1, max = MAX_WAIT_MS), extend("default" = DEFAULT_READY_MS))]
    wait_timeout_ms: Option<u64>,
    /// Return once this http:// URL answers (status < 500).
    wait_url: Option<String>,
    /// Return once output pauses this long.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    wait_quiet_ms: Option<u64>,
    /// Stop it after this long.
    #[schemars(range(min = 1))]
    max_runtime_ms: Option<u64>,
    /// Stop it when its resident memory stays above this.
    #[schemars(range(min = 1))]
    max_memory_bytes: Option<u64>,
    /// Stop it when no call has named it for this long.
    #[schemars(range(min = 1))]
    idle_timeout_ms: Option<u64>,
    /// Start it again when it exits on its own (backoff 1 s doubling to 30 s).
    #[serde(default)]
    restart: RestartArg,
    /// Limit for `restart`.
    #[schemars(range(min = 1))]
    max_restarts: Option<u32>,
}

/// `start.restart`.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum RestartArg {
    #[default]
    No,
    OnFailure,
    Always,
}

/// The `start` (and `restart`) result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    state: State,
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [String]>,
    cwd: &'a str,
    #[schemars(extend("format" = "date-time"))]
    started_at: String,
    restarts: u32,
    /// URLs it printed so far, most recent last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<&'a str>,
    /// With `wait_for`: whether the pattern matched before the process exited or the timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<Ready>,
}

/// How a `start` with `wait_for` ended.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub(in crate::server) struct Ready {
    pub(in crate::server) matched: bool,
    /// The matching line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(in crate::server) line: Option<String>,
    #[schemars(extend("enum" = ["matched", "url_ok", "quiet", "exited", "timeout"]))]
    pub(in crate::server) reason: &'static str,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    if server.shutdown != Shutdown::Serving {
        return Err(ToolError(
            "the server is shutting down; nothing new can start".into(),
        ));
    }
    if args.command.trim().is_empty() {
        return Err(bad_argument(Tool::Start, "command", "is empty"));
    }
    check_process_text(&args)?;
    let wait_timeout = millis_arg(
        Tool::Start,
        "wait_timeout_ms",
        args.wait_timeout_ms,
        DEFAULT_READY_MS,
        MAX_WAIT_MS,
    )?;
    let wait_for = super::optional_regex(Tool::Start, "wait_for", args.wait_for.as_deref())?;
    let at_least_one = |field: &str, value: Option<u64>| match value {
        Some(0) => Err(bad_argument(Tool::Start, field, "must be at least 1")),
        value => Ok(value),
    };
    let max_runtime =
        at_least_one("max_runtime_ms", args.max_runtime_ms)?.map(Duration::from_millis);
    let idle_timeout =
        at_least_one("idle_timeout_ms", args.idle_timeout_ms)?.map(Duration::from_millis);
    let max_memory = at_least_one("max_memory_bytes", args.max_memory_bytes)?;
    let max_restarts =
        at_least_one("max_restarts", args.max_restarts.map(u64::from))?.map(|n| n as u32);
    let restart = RestartPolicy {
        mode: match args.restart {
            RestartArg::No => RestartMode::No,
            RestartArg::OnFailure => RestartMode::OnFailure,
            RestartArg::Always => RestartMode::Always,
        },
        max_restarts,
    };
    if max_restarts.is_some() && restart.mode == RestartMode::No {
        return Err(bad_argument(
            Tool::Start,
            "max_restarts",
            "needs `restart` (\"on-failure\" or \"always\")",
        ));
    }
    let wait_quiet = args
        .wait_quiet_ms
        .map(|ms| millis_arg(Tool::Start, "wait_quiet_ms", Some(ms), ms, MAX_WAIT_MS))
        .transpose()?;
    let wait_url = args
        .wait_url
        .as_deref()
        .map(|url| super::probe_url(Tool::Start, "wait_url", url, &server.config))
        .transpose()?;
    if let Some(name) = &args.name {
        server.tasks.check_name(name)?;
    }
    server.make_room(now)?;
    let id = server.tasks.fresh_id();
    let cwd = match &args.cwd {
        Some(dir) => join_path(&server.config.cwd, dir),
        None => server.config.cwd.clone(),
    };
    let stdio = stdio(&args)?;
    let term = matches!(stdio, Stdio::Terminal(_)).then_some(("TERM", terminal::DEFAULT_TERM));
    let mut env: Vec<(String, String)> = DEFAULT_ENV
        .iter()
        .chain(&term)
        .filter(|(k, _)| !args.env.contains_key(*k))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.extend(args.env);
    let (program, argv) = match &args.args {
        Some(argv) => (args.command.clone(), argv.clone()),
        None => (
            "/bin/sh".to_owned(),
            vec!["-c".to_owned(), args.command.clone()],
        ),
    };
    let command = Command {
        command: args.command,
        args: args.args,
        cwd: cwd.clone(),
        spec: SpawnSpec {
            program,
            args: argv,
            cwd: Some(cwd),
            env,
            stdio,
        },
        options: Options {
            notify_on_exit: args.notify_on_exit,
            wait_for,
            wait_timeout,
            max_runtime,
            grace: server.config.default_grace,
            restart,
            max_memory,
            idle_timeout,
            wait_url,
            wait_quiet,
        },
    };
    let limits = LogLimits {
        budget_bytes: server.config.output_budget_bytes,
        max_line_bytes: server.config.max_line_bytes,
    };
    let stdin_queue = server.config.max_stdin_queue_bytes;
    let (key, spawn) = server
        .tasks
        .add(|run| Task::new(id, args.name, command, run, limits, stdin_queue, now));
    let run = server.tasks.task(key).run();
    server.outputs.push_back(spawn);
    server.resources_list_changed(now);
    let ready = server.ready_watch(key, now);
    server.add_waiter(now, key, request.clone(), Kind::Start { run, ready });
    Ok(Reply::Later)
}

/// How the arguments connect the process: a terminal of the size asked for, or pipes.
fn stdio(args: &Args) -> Result<Stdio, ToolError> {
    if !args.tty {
        if args.rows.is_some() || args.cols.is_some() {
            return Err(bad_argument(
                Tool::Start,
                "rows",
                "and `cols` need `tty: true`",
            ));
        }
        let stdin = if args.stdin {
            StdinMode::Piped
        } else {
            StdinMode::Null
        };
        return Ok(Stdio::Pipes { stdin });
    }
    let default = terminal::DEFAULT_SIZE;
    let rows = args.rows.unwrap_or(default.rows);
    let cols = args.cols.unwrap_or(default.cols);
    Ok(Stdio::Terminal(super::window_size(
        Tool::Start,
        rows,
        cols,
    )?))
}

/// The `start`/`restart` result for a task that was spawned.
pub(in crate::server) fn start_result(
    request: &Pending,
    t: &Task,
    ready: Option<Ready>,
) -> ToolResult {
    let mut text = format!(
        "{} task {}{} (pid {}): {}",
        if t.restarts() > 0 {
            "Restarted"
        } else {
            "Started"
        },
        t.id,
        render::name_suffix(t),
        t.pid().map_or_else(|| "?".to_owned(), |p| p.to_string()),
        render::display_command(t),
    );
    if let Some(ready) = &ready {
        text.push_str(&match ready.reason {
            "matched" => format!("\nReady: {}", ready.line.as_deref().unwrap_or_default()),
            "url_ok" => "\nReady: `wait_url` answered.".to_owned(),
            "quiet" => "\nReady: the output settled.".to_owned(),
            "exited" => "\nNot ready: the process exited before `wait_for` matched.".to_owned(),
            _ => {
                "\nNot ready yet: not ready before `wait_timeout_ms`; it keeps running.".to_owned()
            }
        });
    }
    if !t.urls.is_empty() {
        text.push_str("\nurls: ");
        text.push_str(&t.urls.iter().collect::<Vec<_>>().join(" "));
    }
    text.push_str(&format!(
        "\nRead its output with logs {{\"id\": \"{}\"}}; end it with stop.",
        t.id
    ));
    let structured = Structured {
        id: &t.id,
        name: t.name.as_deref(),
        pid: t.pid(),
        state: t.state(),
        command: &t.command.command,
        args: t.command.args.as_deref(),
        cwd: &t.command.cwd,
        started_at: time::rfc3339(t.started().unix_ms),
        restarts: t.restarts(),
        urls: t.urls.iter().collect(),
        ready,
    };
    Server::tool_result(request, &structured, text)
}

/// `dir` resolved against `base` (both as given; no file system access).
fn join_path(base: &str, dir: &str) -> String {
    if dir.starts_with('/') || base.is_empty() {
        dir.to_owned()
    } else {
        format!("{}/{dir}", base.trim_end_matches('/'))
    }
}

/// Refuses text the kernel cannot pass to a process: NUL bytes anywhere (execve(2) takes C
/// strings), and environment names that are empty or hold `=` (environ(7): `NAME=value`, so such
/// a name would silently become a different variable).
fn check_process_text(args: &Args) -> Result<(), ToolError> {
    let bad = |field: &str, why: &str| Err(bad_argument(Tool::Start, field, why));
    if args.command.contains('\0') {
        return bad("command", "contains a NUL byte");
    }
    if args.args.iter().flatten().any(|arg| arg.contains('\0')) {
        return bad("args", "contains a NUL byte");
    }
    if args.cwd.as_deref().is_some_and(|cwd| cwd.contains('\0')) {
        return bad("cwd", "contains a NUL byte");
    }
    for (name, value) in &args.env {
        if name.is_empty() {
            return bad("env", "has an empty variable name");
        }
        if name.contains('=') || name.contains('\0') {
            return bad(
                "env",
                &format!("has the variable name {name:?}; names cannot contain `=` or NUL"),
            );
        }
        if value.contains('\0') {
            return bad("env", &format!("value of {name:?} contains a NUL byte"));
        }
    }
    Ok(())
}

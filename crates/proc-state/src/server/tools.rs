//! The tool handlers: arguments in (already typed by `mcp::tools`), task commands and results out.

use core::time::Duration;

use serde_json::{Map, Value, json};

use super::render::{self, line_json};
use super::waiters::{Kind, Watch};
use super::{Output, Pending, Reply, Server, Shutdown, Timer, ToolError, ToolResult, error_result};
use crate::log::{LogLimits, Query};
use crate::mcp::jsonrpc::Error;
use crate::mcp::tools::LINE_OVERHEAD_BYTES;
use crate::mcp::tools::{
    self as defs, DEFAULT_LOGS_BYTES, DEFAULT_READY_MS, DEFAULT_STATUS_TAIL, DEFAULT_WAIT_MS,
    IdArgs, ListArgs, ListFilter, LogsArgs, MAX_GRACE_MS, MAX_LOGS_BYTES, MAX_STATUS_TAIL,
    MAX_WAIT_MS, SignalArgs, StartArgs, StatusArgs, StopArgs, Tool, WaitArgs, WriteArgs,
};
use crate::process::{RunId, SpawnSpec, StdinMode};
use crate::stdin::Refused;
use crate::task::{Command, Options, Progress, Task};
use crate::time::{self, Now};

/// Added to every child's environment unless `env` overrides them (TOOLS.md, `start`).
const DEFAULT_ENV: [(&str, &str); 4] = [
    ("NO_COLOR", "1"),
    ("PAGER", "cat"),
    ("GIT_PAGER", "cat"),
    ("PYTHONUNBUFFERED", "1"),
];

impl Server {
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
                return Ok(Reply::Tool(error_result(format!(
                    "invalid arguments for `{name}`: `arguments` must be an object"
                ))));
            }
        };
        let outcome = match tool {
            Tool::Start => self.start(now, request, arguments),
            Tool::Status => self.status(now, request, arguments),
            Tool::Logs => self.logs(request, arguments),
            Tool::Wait => self.wait(now, request, arguments),
            Tool::Write => self.write(now, request, arguments),
            Tool::Signal => self.signal(request, arguments),
            Tool::Stop => self.stop(now, request, arguments),
            Tool::Restart => self.restart(now, request, arguments),
            Tool::List => self.list(now, request, arguments),
            Tool::Remove => self.remove(now, request, arguments),
        };
        Ok(outcome.unwrap_or_else(|ToolError(reason)| Reply::Tool(error_result(reason))))
    }

    fn start(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: StartArgs = defs::parse(Tool::Start, arguments)?;
        if self.shutdown != Shutdown::Serving {
            return Err(ToolError(
                "the server is shutting down; nothing new can start".into(),
            ));
        }
        if args.command.trim().is_empty() {
            return Err(ToolError(
                "invalid arguments for `start`: `command` is empty".into(),
            ));
        }
        check_process_text(&args)?;
        let wait_timeout = defs::millis_arg(
            Tool::Start,
            "wait_timeout_ms",
            args.wait_timeout_ms,
            DEFAULT_READY_MS,
            MAX_WAIT_MS,
        )?;
        let wait_for = match &args.wait_for {
            Some(pattern) => Some(defs::regex_arg(Tool::Start, "wait_for", pattern)?),
            None => None,
        };
        let max_runtime = match args.max_runtime_ms {
            Some(0) => {
                return Err(ToolError(
                    "invalid arguments for `start`: `max_runtime_ms` must be at least 1".into(),
                ));
            }
            ms => ms.map(Duration::from_millis),
        };
        if let Some(name) = &args.name {
            self.check_name(name)?;
        }
        self.make_room(now)?;
        let id = self.fresh_id();
        let cwd = match &args.cwd {
            Some(dir) => join_path(&self.config.cwd, dir),
            None => self.config.cwd.clone(),
        };
        let mut env: Vec<(String, String)> = DEFAULT_ENV
            .iter()
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
                stdin: if args.stdin {
                    StdinMode::Piped
                } else {
                    StdinMode::Null
                },
            },
            options: Options {
                notify_on_exit: args.notify_on_exit,
                wait_for,
                wait_timeout,
                max_runtime,
                grace: self.config.default_grace,
            },
        };
        let run = RunId(self.next_run);
        self.next_run += 1;
        let key = self.next_task;
        self.next_task += 1;
        let limits = LogLimits {
            budget_bytes: self.config.output_budget_bytes,
            max_line_bytes: self.config.max_line_bytes,
        };
        let spec = command.spec.clone();
        let task = Task::new(
            id,
            args.name,
            command,
            run,
            limits,
            self.config.max_stdin_queue_bytes,
            now,
        );
        self.tasks.insert(key, task);
        self.runs.insert(run, key);
        self.outputs.push_back(Output::Spawn { run, spec });
        self.resources_list_changed(now);
        let ready = self.ready_watch(key, now);
        self.add_waiter(now, key, request.clone(), Kind::Start { run, ready });
        Ok(Reply::Later)
    }

    fn check_name(&self, name: &str) -> Result<(), ToolError> {
        if name.is_empty() {
            return Err(ToolError(
                "invalid arguments for `start`: `name` is empty".into(),
            ));
        }
        match self
            .tasks
            .values()
            .find(|t| t.id == name || (t.name.as_deref() == Some(name) && !t.state().is_ended()))
        {
            Some(other) => Err(ToolError(format!(
                "the name {name:?} is taken by task {} ({}); pick another name or stop that task first",
                other.id,
                other.state().as_str()
            ))),
            None => Ok(()),
        }
    }

    /// Keeps the task count under `max_tasks` by forgetting the oldest ended task.
    fn make_room(&mut self, now: Now) -> Result<(), ToolError> {
        if self.tasks.len() < self.config.max_tasks {
            return Ok(());
        }
        let oldest_ended = self
            .tasks
            .iter()
            .find(|(_, t)| t.is_settled())
            .map(|(k, _)| *k);
        match oldest_ended {
            Some(key) => {
                self.forget(now, key);
                Ok(())
            }
            None => Err(ToolError(format!(
                "too many tasks: all {} are running; stop some first",
                self.config.max_tasks
            ))),
        }
    }

    /// Removes an ended task and everything that refers to it; whoever still waited on it is
    /// told so.
    fn forget(&mut self, now: Now, key: u64) {
        if let Some(task) = self.tasks.remove(&key) {
            self.output_bytes -= task.log.allocated_bytes();
        }
        self.subscriptions.remove(&key);
        self.timers.set(Timer::Task(key), None);
        self.timers.set(Timer::Update(key), None);
        self.owed.updated.remove(&key);
        self.queued_writes.retain(|_, (task, _)| *task != key);
        self.resources_list_changed(now);
        self.progress_task_waiters(now, key);
    }

    /// A new id from the generator, unique among tasks' ids and names. A generator that keeps
    /// clashing (a broken one; nanoid clashes once in billions) gets a numeric suffix.
    fn fresh_id(&mut self) -> String {
        let taken = |server: &Server, id: &str| {
            id.is_empty()
                || server
                    .tasks
                    .values()
                    .any(|t| t.id == id || t.name.as_deref() == Some(id))
        };
        let mut id = String::new();
        for _ in 0..16 {
            id = (self.ids)();
            if !taken(self, &id) {
                return id;
            }
        }
        (self.next_task..)
            .map(|n| format!("{id}-{n}"))
            .find(|candidate| !taken(self, candidate))
            .unwrap_or(id)
    }

    /// Finds a task by id, or else by name (the newest task with that name).
    pub(super) fn find(&self, reference: &str) -> Result<u64, ToolError> {
        let by_id = self.tasks.iter().find(|(_, t)| t.id == reference);
        let by_name = || {
            self.tasks
                .iter()
                .rev()
                .find(|(_, t)| t.name.as_deref() == Some(reference))
        };
        by_id.or_else(by_name).map(|(k, _)| *k).ok_or_else(|| {
            ToolError(format!(
                "no task with id or name {reference:?}; `list` shows the tasks there are"
            ))
        })
    }

    fn task(&self, key: u64) -> &Task {
        &self.tasks[&key]
    }

    fn status(
        &mut self,
        now: Now,
        request: &Pending,
        arguments: Value,
    ) -> Result<Reply, ToolError> {
        let args: StatusArgs = defs::parse(Tool::Status, arguments)?;
        let tail = args.tail.unwrap_or(DEFAULT_STATUS_TAIL);
        if tail > MAX_STATUS_TAIL {
            return Err(ToolError(format!(
                "invalid arguments for `status`: `tail` must be at most {MAX_STATUS_TAIL}"
            )));
        }
        let t = self.task(self.find(&args.id)?);
        let page = t.log.read(&Query {
            since: None,
            tail: Some(tail),
            head: None,
            grep: None,
            stream: None,
            max_bytes: MAX_LOGS_BYTES,
            line_overhead: LINE_OVERHEAD_BYTES,
            raw: false,
        });
        let mut structured = render::status_fields(t, now);
        structured.insert(
            "tail".into(),
            Value::Array(page.lines.iter().map(line_json).collect()),
        );
        let mut text = render::status_text(t, now);
        if !page.lines.is_empty() {
            text.push_str(&format!("\n--- last {} lines ---", page.lines.len()));
            for line in &page.lines {
                text.push('\n');
                render::push_line_text(&mut text, line);
            }
        }
        Ok(Reply::Tool(Self::tool_result(request, &structured, text)))
    }

    fn logs(&mut self, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: LogsArgs = defs::parse(Tool::Logs, arguments)?;
        let max_bytes = args.max_bytes.unwrap_or(DEFAULT_LOGS_BYTES);
        if !(1..=MAX_LOGS_BYTES).contains(&max_bytes) {
            return Err(ToolError(format!(
                "invalid arguments for `logs`: `max_bytes` must be between 1 and {MAX_LOGS_BYTES}"
            )));
        }
        if args.head.is_some() && args.tail.is_some() {
            return Err(ToolError(
                "invalid arguments for `logs`: give `head` or `tail`, not both (use `since` with `head` to read forward from a cursor)".into(),
            ));
        }
        let grep = match &args.grep {
            Some(pattern) => Some(defs::regex_arg(Tool::Logs, "grep", pattern)?),
            None => None,
        };
        let t = self.task(self.find(&args.id)?);
        let page = t.log.read(&Query {
            since: args.since,
            tail: args.tail,
            head: args.head,
            grep: grep.as_ref(),
            stream: args.stream.stream(),
            max_bytes,
            line_overhead: LINE_OVERHEAD_BYTES,
            raw: args.raw,
        });
        let structured = json!({
            "id": t.id,
            "state": t.state().as_str(),
            "exit_code": t.exit_code(),
            "lines": page.lines.iter().map(line_json).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
            "skipped": page.skipped,
            "truncated": page.truncated,
        });
        let text = render::logs_text(t, &page, max_bytes);
        Ok(Reply::Tool(Self::tool_result(request, &structured, text)))
    }

    fn wait(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: WaitArgs = defs::parse(Tool::Wait, arguments)?;
        let timeout = defs::millis_arg(
            Tool::Wait,
            "timeout_ms",
            args.timeout_ms,
            DEFAULT_WAIT_MS,
            MAX_WAIT_MS,
        )?;
        let port = match args.port {
            None => None,
            Some(port @ 1..=65535) => u16::try_from(port).ok(),
            Some(_) => {
                return Err(ToolError(
                    "invalid arguments for `wait`: `port` must be between 1 and 65535".into(),
                ));
            }
        };
        let regex = match &args.pattern {
            Some(pattern) => Some(defs::regex_arg(Tool::Wait, "pattern", pattern)?),
            None => None,
        };
        let key = self.find(&args.id)?;
        let task = self.task(key);
        let (first, run) = (task.log.first_retained(), task.run());
        let pattern = regex.map(|regex| (regex, args.since.unwrap_or(first).max(first)));
        let watch = Watch::new(pattern, port, now, timeout);
        self.add_waiter(now, key, request.clone(), Kind::Wait { run, watch });
        Ok(Reply::Later)
    }

    fn write(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: WriteArgs = defs::parse(Tool::Write, arguments)?;
        let key = self.find(&args.id)?;
        let Some(task) = self.tasks.get_mut(&key) else {
            return Err(ToolError("the task was removed".into()));
        };
        if task.state().is_ended() {
            return Err(ToolError(format!(
                "task {} has exited; nothing was written",
                task.id
            )));
        }
        let (segment, dropped) = match task.stdin.push(args.data.into_bytes(), args.eof) {
            Ok(pushed) => pushed,
            Err(refused) => return Err(write_refused(task, refused)),
        };
        let (run, next_cursor) = (task.run(), task.log.next_cursor());
        self.queued_writes
            .insert(request.id.clone(), (key, segment));
        self.prune_queued_writes();
        self.with_task(now, key, |_, _| Progress::Unchanged);
        self.add_waiter(
            now,
            key,
            request.clone(),
            Kind::Write {
                run,
                segment,
                next_cursor,
                dropped_earlier: dropped,
            },
        );
        Ok(Reply::Later)
    }

    /// Keeps the map of cancellable `write`s to those whose bytes may still be queued.
    fn prune_queued_writes(&mut self) {
        if self.queued_writes.len() <= 1024 {
            return;
        }
        let tasks = &self.tasks;
        self.queued_writes.retain(|_, (key, segment)| {
            tasks.get(key).is_some_and(|t| t.stdin.is_queued(*segment))
        });
    }

    fn signal(&mut self, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: SignalArgs = defs::parse(Tool::Signal, arguments)?;
        let signal = args.signal()?;
        let key = self.find(&args.id)?;
        let task = self.task(key);
        if task.pid().is_none() || task.exit().is_some() || task.state().is_ended() {
            return Err(ToolError(format!(
                "task {} is not running ({}); nothing was sent",
                task.id,
                render::state_phrase(task)
            )));
        }
        let (id, run, state) = (task.id.clone(), task.run(), task.state());
        self.outputs.push_back(Output::Signal { run, signal });
        let text = format!("Sent {signal} to the process group of task {id}.");
        let structured = json!({"id": id, "signal": signal.name(), "state": state.as_str()});
        Ok(Reply::Tool(Self::tool_result(request, &structured, text)))
    }

    fn stop(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: StopArgs = defs::parse(Tool::Stop, arguments)?;
        let signal = args.first_signal()?;
        let grace = match args.grace_ms {
            Some(ms) if ms > MAX_GRACE_MS => {
                return Err(ToolError(format!(
                    "invalid arguments for `stop`: `grace_ms` must be at most {MAX_GRACE_MS}"
                )));
            }
            Some(ms) => Duration::from_millis(ms),
            None => self.config.default_grace,
        };
        let key = self.find(&args.id)?;
        let run = self.task(key).run();
        self.with_task(now, key, |task, out| {
            task.stop(signal, grace, now, out);
            Progress::Unchanged
        });
        // An ended task is answered at once.
        self.add_waiter(now, key, request.clone(), Kind::Stop { run });
        Ok(Reply::Later)
    }

    fn restart(
        &mut self,
        now: Now,
        request: &Pending,
        arguments: Value,
    ) -> Result<Reply, ToolError> {
        let args: IdArgs = defs::parse(Tool::Restart, arguments)?;
        if self.shutdown != Shutdown::Serving {
            return Err(ToolError(
                "the server is shutting down; nothing can restart".into(),
            ));
        }
        let key = self.find(&args.id)?;
        let run = self.task(key).run();
        let grace = self.config.default_grace;
        let mut pending = false;
        self.with_task(now, key, |task, out| {
            pending = task.restart(grace, now, out);
            Progress::Unchanged
        });
        if pending {
            // Resolved when this run has ended: every restart of one run restarts it once.
            self.add_waiter(now, key, request.clone(), Kind::Restart { run });
        } else if let Some(run) = self.respawn(now, key) {
            let ready = self.ready_watch(key, now);
            self.add_waiter(now, key, request.clone(), Kind::Start { run, ready });
        } else {
            return Err(ToolError("the task could not be restarted".into()));
        }
        Ok(Reply::Later)
    }

    fn list(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: ListArgs = defs::parse(Tool::List, arguments)?;
        let tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| match args.state {
                ListFilter::All => true,
                ListFilter::Running => !t.state().is_ended(),
                ListFilter::Exited => t.state().is_ended(),
            })
            .collect();
        let entries: Vec<ListEntry<'_>> = tasks.iter().map(|t| ListEntry::of(t, now)).collect();
        let text = render::list_text(&tasks, now);
        Ok(Reply::Tool(Self::tool_result(
            request,
            &ListResult { tasks: entries },
            text,
        )))
    }

    fn remove(
        &mut self,
        now: Now,
        request: &Pending,
        arguments: Value,
    ) -> Result<Reply, ToolError> {
        let args: IdArgs = defs::parse(Tool::Remove, arguments)?;
        let key = self.find(&args.id)?;
        let t = self.task(key);
        if !t.state().is_ended() {
            return Err(ToolError(format!(
                "task {} is {}; stop it first, then remove it",
                t.id,
                t.state().as_str()
            )));
        }
        if !t.escaped.is_settled() {
            return Err(ToolError(format!(
                "task {} has processes that left its process group and are being stopped; `stop` it (or wait), then remove it",
                t.id
            )));
        }
        let id = t.id.clone();
        self.forget(now, key);
        let text = format!("Removed task {id} and freed its output.");
        Ok(Reply::Tool(Self::tool_result(
            request,
            &json!({"id": id, "removed": true}),
            text,
        )))
    }

    /// The `start`/`restart` result for a task that was spawned (or failed to be).
    pub(super) fn start_result(request: &Pending, t: &Task, ready: Option<Value>) -> ToolResult {
        let mut structured = json!({
            "id": t.id,
            "name": t.name,
            "pid": t.pid(),
            "state": t.state().as_str(),
            "command": t.command.command,
            "args": t.command.args,
            "cwd": t.command.cwd,
            "started_at": time::rfc3339(t.started().unix_ms),
            "restarts": t.restarts(),
        });
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
        if let Some(ready) = ready {
            text.push_str(&render::ready_text(&ready));
            structured["ready"] = ready;
        }
        text.push_str(&format!(
            "\nRead its output with logs {{\"id\": \"{}\"}}; end it with stop.",
            t.id
        ));
        Self::tool_result(request, &structured, text)
    }
}

/// The `list` result: `{tasks: [...]}`, oldest first.
#[derive(serde::Serialize)]
struct ListResult<'a> {
    tasks: Vec<ListEntry<'a>>,
}

/// One task in `list`: fields that do not apply (no name, not started, not ended) are left out.
#[derive(serde::Serialize)]
struct ListEntry<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    command: &'a str,
    started_at: String,
    runtime_ms: u64,
}

impl<'a> ListEntry<'a> {
    fn of(t: &'a Task, now: Now) -> Self {
        Self {
            id: &t.id,
            name: t.name.as_deref(),
            pid: t.pid(),
            state: t.state().as_str(),
            exit_code: t.exit_code(),
            signal: t.exit_signal().map(crate::Signal::name),
            command: &t.command.command,
            started_at: time::rfc3339(t.started().unix_ms),
            runtime_ms: super::millis(t.runtime(now)),
        }
    }
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
fn check_process_text(args: &StartArgs) -> Result<(), ToolError> {
    let bad = |field: &str, why: &str| {
        Err(ToolError(format!(
            "invalid arguments for `start`: `{field}` {why}"
        )))
    };
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

/// Why a `write` was refused, for the model.
fn write_refused(task: &Task, refused: Refused) -> ToolError {
    use crate::stdin::Closed;
    let id = &task.id;
    ToolError(match refused {
        Refused::NotPiped => format!(
            "task {id} was started without `stdin: true`, so it has no stdin to write to; start it again with `stdin: true`"
        ),
        Refused::Closed(Closed::ByEof) => format!(
            "task {id} had its stdin closed by an earlier `write` with `eof: true`; nothing was written"
        ),
        Refused::Closed(Closed::ByProcess) => {
            format!("task {id} closed its stdin; nothing was written")
        }
        Refused::Closed(Closed::Ended) => format!("task {id} has exited; nothing was written"),
        Refused::Full { queued, limit } => format!(
            "task {id} is not reading its stdin: {queued} bytes are still queued and the queue holds at most {limit}; nothing was written. Wait for it to read, or send `write` with `eof: true` to drop what is queued"
        ),
    })
}

//! The owner object: one [`Server`] holds the MCP session and every task.

use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

use regex::RegexBuilder;
use serde_json::{Map, Value, json};

use crate::log::{Line, LogLimits, Query};
use crate::mcp::framing::{Frame, LineFramer};
use crate::mcp::jsonrpc::{self, Error, ErrorCode, Invalid, Message, RequestId};
use crate::mcp::protocol::ProtocolVersion;
use crate::mcp::tools::{
    self, ArgumentError, DEFAULT_LOGS_BYTES, DEFAULT_STATUS_TAIL, ListArgs, ListFilter, LogsArgs,
    MAX_GRACE_MS, MAX_LOGS_BYTES, MAX_STATUS_TAIL, RemoveArgs, StartArgs, StatusArgs, StopArgs,
    Tool,
};
use crate::process::{ExitStatus, RunId, Signal, SpawnSpec, StdinMode, Stream};
use crate::task::{Command, Progress, State, Task};
use crate::time::{self, Instant, Now};

/// Makes task ids: short strings, unique for the server's life (the core retries on a clash).
/// Production drivers pass a nanoid generator (6 characters, URL-safe alphabet); tests pass a
/// seeded one so runs are reproducible.
pub type IdGenerator = Box<dyn FnMut() -> String + Send>;

/// Limits and defaults. Every size is in bytes, every duration a [`Duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Bytes of output (text plus per-line bookkeeping) kept per task; older lines are evicted.
    /// Default 4 MiB.
    pub output_budget_bytes: usize,
    /// Longest line stored as one line; longer ones are split into several. Default 64 KiB.
    pub max_line_bytes: usize,
    /// Longest client message (one line of stdin); longer ones are answered with an error and
    /// discarded without being buffered. Default 1 MiB.
    pub max_message_bytes: usize,
    /// How long `stop` waits after the first signal before it sends SIGKILL. Default 5 s.
    pub default_grace: Duration,
    /// The same for the stop of every task at shutdown (stdin EOF, SIGTERM, SIGINT). Default 1 s.
    pub shutdown_grace: Duration,
    /// How long after a task's exit its pipes may stay open (held by an escaped grandchild)
    /// before the core stops reading them. Default 1 s.
    pub exit_drain: Duration,
    /// Most tasks kept at once (running or not yet removed). Default 1024.
    pub max_tasks: usize,
    /// The server's working directory, shown as a task's `cwd` when none is given and used to
    /// resolve relative ones. Default `"."`; drivers set the real path.
    pub cwd: String,
    /// `serverInfo.name`.
    pub server_name: String,
    /// `serverInfo.version`.
    pub server_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            output_budget_bytes: 4 << 20,
            max_line_bytes: 64 << 10,
            max_message_bytes: 1 << 20,
            default_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
            exit_drain: Duration::from_secs(1),
            max_tasks: 1024,
            cwd: ".".to_owned(),
            server_name: "proc-mcp".to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Something that happened, fed to [`Server::handle_input`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// Bytes read from the client (stdin), in any chunking; the core finds the lines.
    ClientBytes(&'a [u8]),
    /// The client closed stdin: stop every task, then [`Output::Exit`].
    ClientEof,
    /// The server was asked to terminate (SIGTERM, SIGINT): as `ClientEof`. A second one
    /// while shutting down kills every process group at once.
    Terminate,
    /// The process for `run` was started; `pid` is also its process group and session id.
    Spawned { run: RunId, pid: u32 },
    /// The process for `run` could not be started; `error` says why, for people.
    SpawnFailed { run: RunId, error: String },
    /// Bytes the process wrote to one of its pipes, in any chunking.
    Output {
        run: RunId,
        stream: Stream,
        bytes: &'a [u8],
    },
    /// End-of-file on one of the process's pipes.
    StreamClosed { run: RunId, stream: Stream },
    /// The process (the group leader) exited. The driver reports this **without reaping** it
    /// (`waitid(WNOWAIT)`), so its pid and process group id stay reserved until
    /// [`Output::Release`] and signals to the group can never reach a stranger.
    Exited { run: RunId, status: ExitStatus },
}

/// What the driver must do next, from [`Server::poll_output`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Output {
    /// Write this line to the client (stdout) and flush. It is one compact JSON-RPC message
    /// ending in `\n`.
    Transmit(Vec<u8>),
    /// Start a process as [`SpawnSpec`] describes and answer with [`Input::Spawned`] or
    /// [`Input::SpawnFailed`].
    Spawn { run: RunId, spec: SpawnSpec },
    /// Send `signal` to the run's whole process group (`killpg(2)`). Never emitted after
    /// [`Output::Release`] for that run.
    Signal { run: RunId, signal: Signal },
    /// The core is done with this run: reap the process (`waitpid(2)`), close its pipes and
    /// forget it. Later events for it are ignored.
    Release { run: RunId },
    /// Every task is stopped and released: exit the server with status 0.
    Exit,
    /// Nothing more to do now: wake up at this deadline (or never, for `None`) and call
    /// [`Server::handle_timeout`].
    Timeout(Option<Instant>),
}

/// The whole server: MCP session, tools and tasks. See the crate docs for how to drive it.
pub struct Server {
    config: Config,
    ids: IdGenerator,
    framer: LineFramer,
    frames: Vec<Frame>,
    /// The negotiated version, once `initialize` was answered.
    version: Option<ProtocolVersion>,
    /// Every task not yet removed, oldest first (keys only grow).
    tasks: BTreeMap<u64, Task>,
    next_task: u64,
    /// The task of every run not yet released.
    runs: BTreeMap<RunId, u64>,
    next_run: u64,
    /// Requests answered when something happens to a task.
    waiters: Vec<Waiter>,
    batches: BTreeMap<u64, Batch>,
    next_batch: u64,
    outputs: VecDeque<Output>,
    shutdown: Shutdown,
}

/// A request whose response is not sent yet, and where the response goes.
#[derive(Clone, Debug)]
struct Pending {
    id: RequestId,
    batch: Option<u64>,
}

#[derive(Debug)]
enum Waiter {
    /// `start`: answered when the spawn is answered.
    Start { task: u64, request: Pending },
    /// `stop`: answered when the task ended.
    Stop { task: u64, request: Pending },
}

/// A JSON-RPC batch (2025-03-26): one array response once every request in it is answered.
#[derive(Debug, Default)]
struct Batch {
    remaining: usize,
    responses: Vec<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    Serving,
    Stopping,
    Killing,
    Done,
}

/// A handler's answer: now, or later (the request waits on a task).
enum Reply {
    Now(Value),
    Later,
}

impl Server {
    /// A server with no session and no tasks yet.
    pub fn new(config: Config, ids: IdGenerator) -> Self {
        Self {
            framer: LineFramer::new(config.max_message_bytes),
            config,
            ids,
            frames: Vec::new(),
            version: None,
            tasks: BTreeMap::new(),
            next_task: 0,
            runs: BTreeMap::new(),
            next_run: 0,
            waiters: Vec::new(),
            batches: BTreeMap::new(),
            next_batch: 0,
            outputs: VecDeque::new(),
            shutdown: Shutdown::Serving,
        }
    }

    /// Feeds one input that happened at `now`.
    pub fn handle_input(&mut self, now: Now, input: Input<'_>) {
        match input {
            Input::ClientBytes(bytes) => {
                let mut frames = core::mem::take(&mut self.frames);
                self.framer.push(bytes, &mut frames);
                for frame in frames.drain(..) {
                    self.handle_frame(now, frame);
                }
                self.frames = frames;
            }
            Input::ClientEof => {
                let mut frames = Vec::new();
                self.framer.finish(&mut frames);
                for frame in frames {
                    self.handle_frame(now, frame);
                }
                self.begin_shutdown(now);
            }
            Input::Terminate => match self.shutdown {
                Shutdown::Serving => self.begin_shutdown(now),
                Shutdown::Stopping => {
                    self.shutdown = Shutdown::Killing;
                    for task in self.tasks.values_mut() {
                        task.kill_now(&mut self.outputs);
                    }
                }
                Shutdown::Killing | Shutdown::Done => {}
            },
            Input::Spawned { run, pid } => {
                self.with_run(run, |task, out| task.on_spawned(pid, out));
            }
            Input::SpawnFailed { run, error } => {
                self.with_run(run, |task, out| task.on_spawn_failed(error, now, out));
            }
            Input::Output { run, stream, bytes } => {
                if let Some(task) = self.runs.get(&run).and_then(|k| self.tasks.get_mut(k)) {
                    task.on_output(stream, bytes);
                }
            }
            Input::StreamClosed { run, stream } => {
                self.with_run(run, |task, out| task.on_stream_closed(stream, out));
            }
            Input::Exited { run, status } => {
                let drain = self.config.exit_drain;
                self.with_run(run, |task, out| task.on_exited(status, now, drain, out));
            }
        }
        self.progress_waiters(now);
    }

    /// The timer armed from [`Output::Timeout`] fired (or any time: early calls are no-ops).
    pub fn handle_timeout(&mut self, now: Now) {
        let due: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.next_deadline().is_some_and(|d| d <= now.instant))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(task) = self.tasks.get_mut(&key) {
                let progress = task.on_timeout(now, &mut self.outputs);
                if progress == Progress::Finished {
                    self.runs.remove(&task.run());
                }
            }
        }
        self.progress_waiters(now);
    }

    /// The next thing for the driver to do; [`Output::Timeout`] when there is nothing more.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        if matches!(self.shutdown, Shutdown::Stopping | Shutdown::Killing) && self.runs.is_empty() {
            self.shutdown = Shutdown::Done;
            return Output::Exit;
        }
        Output::Timeout(self.tasks.values().filter_map(Task::next_deadline).min())
    }

    fn with_run(
        &mut self,
        run: RunId,
        f: impl FnOnce(&mut Task, &mut VecDeque<Output>) -> Progress,
    ) {
        let Some(key) = self.runs.get(&run).copied() else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        if f(task, &mut self.outputs) == Progress::Finished {
            self.runs.remove(&run);
        }
    }

    fn begin_shutdown(&mut self, now: Now) {
        if self.shutdown != Shutdown::Serving {
            return;
        }
        self.shutdown = Shutdown::Stopping;
        let grace = self.config.shutdown_grace;
        for task in self.tasks.values_mut() {
            task.stop(Signal::Term, grace, now, &mut self.outputs);
        }
    }

    /// Answers every waiter whose task moved on.
    fn progress_waiters(&mut self, now: Now) {
        if self.waiters.is_empty() {
            return;
        }
        let waiters = core::mem::take(&mut self.waiters);
        for waiter in waiters {
            match waiter {
                Waiter::Start { task, request } => match self.tasks.get(&task) {
                    Some(t) if t.state() == State::Starting => {
                        self.waiters.push(Waiter::Start { task, request });
                    }
                    Some(t) => {
                        let reply = match t.failure() {
                            Some(error) => error_result(format!(
                                "could not start `{}`: {error} (task {} is now `failed`)",
                                t.command.command, t.id
                            )),
                            None => self.start_result(t),
                        };
                        self.respond(&request, Ok(reply));
                    }
                    None => self.respond(&request, Ok(error_result("the task was removed".into()))),
                },
                Waiter::Stop { task, request } => match self.tasks.get(&task) {
                    Some(t) if !t.state().is_ended() => {
                        self.waiters.push(Waiter::Stop { task, request });
                    }
                    Some(t) => {
                        let mut status = status_fields(t, now);
                        status.insert("escalated".into(), Value::Bool(t.escalated()));
                        let text = stop_text(t, now);
                        let reply = self.tool_result(Value::Object(status), text);
                        self.respond(&request, Ok(reply));
                    }
                    None => self.respond(&request, Ok(error_result("the task was removed".into()))),
                },
            }
        }
    }

    // ---- client messages ----

    fn handle_frame(&mut self, now: Now, frame: Frame) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::TooLong { len } => {
                let error = jsonrpc::error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "Invalid Request: message of {len} bytes exceeds the limit of {} bytes",
                        self.config.max_message_bytes
                    ),
                );
                self.transmit(&jsonrpc::failure(None, &error));
                return;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let value: Value = match serde_json::from_slice(&line) {
            Ok(value) => value,
            Err(e) => {
                let error = jsonrpc::error(ErrorCode::ParseError, format!("Parse error: {e}"));
                self.transmit(&jsonrpc::failure(None, &error));
                return;
            }
        };
        match value {
            Value::Array(items) => self.handle_batch(now, items),
            value => self.handle_value(now, value, None),
        }
    }

    fn handle_batch(&mut self, now: Now, items: Vec<Value>) {
        let refusal = match self.version {
            _ if items.is_empty() => Some("Invalid Request: an empty batch".to_owned()),
            Some(v) if v.accepts_batches() => None,
            Some(v) => Some(format!(
                "Invalid Request: JSON-RPC batches are not part of protocol version {}",
                v.as_str()
            )),
            None => {
                Some("Invalid Request: a batch cannot carry `initialize`; initialize first".into())
            }
        };
        if let Some(message) = refusal {
            let error = jsonrpc::error(ErrorCode::InvalidRequest, message);
            self.transmit(&jsonrpc::failure(None, &error));
            return;
        }
        let classified: Vec<_> = items.into_iter().map(jsonrpc::classify).collect();
        let remaining = classified
            .iter()
            .filter(|m| !matches!(m, Ok(Message::Notification { .. } | Message::Response)))
            .count();
        let batch = self.next_batch;
        self.next_batch += 1;
        if remaining > 0 {
            self.batches.insert(
                batch,
                Batch {
                    remaining,
                    responses: Vec::with_capacity(remaining),
                },
            );
        }
        for message in classified {
            self.handle_message(now, message, Some(batch));
        }
    }

    fn handle_value(&mut self, now: Now, value: Value, batch: Option<u64>) {
        self.handle_message(now, jsonrpc::classify(value), batch);
    }

    fn handle_message(
        &mut self,
        now: Now,
        message: Result<Message, Box<Invalid>>,
        batch: Option<u64>,
    ) {
        match message {
            Err(invalid) => match invalid.id {
                Some(id) => self.respond(&Pending { id, batch }, Err(invalid.error)),
                None => {
                    let response = jsonrpc::failure(None, &invalid.error);
                    self.push_batch_response(batch, response);
                }
            },
            Ok(Message::Response) => {}
            Ok(Message::Notification { method, params }) => {
                self.handle_notification(&method, params)
            }
            Ok(Message::Request { id, method, params }) => {
                let request = Pending { id, batch };
                match self.handle_request(now, &request, &method, params) {
                    Ok(Reply::Later) => {}
                    Ok(Reply::Now(result)) => self.respond(&request, Ok(result)),
                    Err(error) => self.respond(&request, Err(error)),
                }
            }
        }
    }

    fn handle_notification(&mut self, method: &str, _params: Map<String, Value>) {
        // `notifications/initialized` needs no action (requests are served as soon as
        // `initialize` is answered); `notifications/cancelled` has nothing to cancel while no
        // request waits on anything but a spawn or an exit. Unknown notifications are ignored,
        // as JSON-RPC requires.
        let _ = method;
    }

    fn handle_request(
        &mut self,
        now: Now,
        request: &Pending,
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Reply, Error> {
        let Some(version) = self.version else {
            return match method {
                "initialize" => self.initialize(params).map(Reply::Now),
                "ping" => Ok(Reply::Now(json!({}))),
                _ => Err(jsonrpc::error(
                    ErrorCode::MethodNotFound,
                    format!(
                        "Method not found: `{method}` (send `initialize` first; this server speaks protocol versions {})",
                        supported_versions()
                    ),
                )),
            };
        };
        match method {
            "ping" => Ok(Reply::Now(json!({}))),
            "initialize" => Err(jsonrpc::error(
                ErrorCode::InvalidRequest,
                "Invalid Request: the session is already initialized",
            )),
            "tools/list" => {
                if params.get("cursor").is_some_and(|c| !c.is_null()) {
                    return Err(Error::invalid_params(
                        "Invalid params: unknown `cursor` (tools/list has a single page)",
                    ));
                }
                Ok(Reply::Now(tools::list(version.has_structured_content())))
            }
            "tools/call" => self.call_tool(now, request, params),
            _ => Err(jsonrpc::error(
                ErrorCode::MethodNotFound,
                format!("Method not found: `{method}`"),
            )),
        }
    }

    fn initialize(&mut self, params: Map<String, Value>) -> Result<Value, Error> {
        let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
            return Err(Error::invalid_params(
                "Invalid params: `protocolVersion` (a string) is required",
            ));
        };
        let version = ProtocolVersion::parse(requested).unwrap_or(ProtocolVersion::LATEST);
        self.version = Some(version);
        Ok(json!({
            "protocolVersion": version.as_str(),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {
                "name": self.config.server_name,
                "title": "proc-mcp: background processes",
                "version": self.config.server_version,
            },
            "instructions": INSTRUCTIONS,
        }))
    }

    // ---- responses ----

    fn respond(&mut self, request: &Pending, outcome: Result<Value, Error>) {
        let response = match outcome {
            Ok(result) => jsonrpc::success(&request.id, result),
            Err(error) => jsonrpc::failure(Some(&request.id), &error),
        };
        match request.batch {
            None => self.transmit(&response),
            Some(_) => self.push_batch_response(request.batch, response),
        }
    }

    fn push_batch_response(&mut self, batch: Option<u64>, response: Value) {
        let Some(key) = batch else {
            return self.transmit(&response);
        };
        let Some(batch) = self.batches.get_mut(&key) else {
            return;
        };
        batch.responses.push(response);
        batch.remaining = batch.remaining.saturating_sub(1);
        if batch.remaining == 0
            && let Some(batch) = self.batches.remove(&key)
        {
            self.transmit(&Value::Array(batch.responses));
        }
    }

    fn transmit(&mut self, message: &Value) {
        self.outputs
            .push_back(Output::Transmit(jsonrpc::to_line(message)));
    }

    /// A successful tool result: the structured value (for versions that have it) and a text
    /// block for a model to read.
    fn tool_result(&self, structured: Value, text: String) -> Value {
        let mut result = Map::new();
        result.insert("content".into(), json!([{"type": "text", "text": text}]));
        if self
            .version
            .is_some_and(ProtocolVersion::has_structured_content)
        {
            result.insert("structuredContent".into(), structured);
        }
        Value::Object(result)
    }

    // ---- tools ----

    fn call_tool(
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
                return Ok(Reply::Now(error_result(format!(
                    "invalid arguments for `{name}`: `arguments` must be an object"
                ))));
            }
        };
        let outcome = match tool {
            Tool::Start => self.start(now, request, arguments),
            Tool::Status => self.status(now, arguments),
            Tool::Logs => self.logs(arguments),
            Tool::Stop => self.stop(now, request, arguments),
            Tool::List => self.list(now, arguments),
            Tool::Remove => self.remove(arguments),
        };
        Ok(outcome.unwrap_or_else(|ToolError(reason)| Reply::Now(error_result(reason))))
    }

    fn start(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: StartArgs = tools::parse(Tool::Start, arguments)?;
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
        if let Some(name) = &args.name {
            if name.is_empty() {
                return Err(ToolError(
                    "invalid arguments for `start`: `name` is empty".into(),
                ));
            }
            if let Some(other) = self
                .tasks
                .values()
                .find(|t| t.id == *name || (t.name.as_ref() == Some(name) && !t.state().is_ended()))
            {
                return Err(ToolError(format!(
                    "the name {name:?} is taken by task {} ({}); pick another name or stop that task first",
                    other.id,
                    other.state().as_str()
                )));
            }
        }
        self.make_room()?;
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
        let spec = SpawnSpec {
            program,
            args: argv,
            cwd: Some(cwd.clone()),
            env,
            stdin: StdinMode::Null,
        };
        let command = Command {
            command: args.command,
            args: args.args,
            cwd,
            spec: spec.clone(),
        };
        let run = RunId(self.next_run);
        self.next_run += 1;
        let key = self.next_task;
        self.next_task += 1;
        let limits = LogLimits {
            budget_bytes: self.config.output_budget_bytes,
            max_line_bytes: self.config.max_line_bytes,
        };
        self.tasks
            .insert(key, Task::new(id, args.name, command, run, limits, now));
        self.runs.insert(run, key);
        self.outputs.push_back(Output::Spawn { run, spec });
        self.waiters.push(Waiter::Start {
            task: key,
            request: request.clone(),
        });
        Ok(Reply::Later)
    }

    /// Keeps the task count under `max_tasks` by forgetting the oldest ended task.
    fn make_room(&mut self) -> Result<(), ToolError> {
        if self.tasks.len() < self.config.max_tasks {
            return Ok(());
        }
        let oldest_ended = self
            .tasks
            .iter()
            .find(|(_, t)| t.state().is_ended())
            .map(|(k, _)| *k);
        match oldest_ended {
            Some(key) => {
                self.tasks.remove(&key);
                Ok(())
            }
            None => Err(ToolError(format!(
                "too many tasks: all {} are running; stop some first",
                self.config.max_tasks
            ))),
        }
    }

    /// A new id from the generator, unique among tasks' ids and names. A generator that keeps
    /// clashing (a broken one; nanoid clashes once in billions) gets a numeric suffix.
    fn fresh_id(&mut self) -> String {
        let taken = |tasks: &BTreeMap<u64, Task>, id: &str| {
            id.is_empty()
                || tasks
                    .values()
                    .any(|t| t.id == id || t.name.as_deref() == Some(id))
        };
        let mut id = String::new();
        for _ in 0..16 {
            id = (self.ids)();
            if !taken(&self.tasks, &id) {
                return id;
            }
        }
        (self.next_task..)
            .map(|n| format!("{id}-{n}"))
            .find(|candidate| !taken(&self.tasks, candidate))
            .unwrap_or(id)
    }

    /// Finds a task by id, or else by name (the newest task with that name).
    fn find(&self, reference: &str) -> Result<u64, ToolError> {
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

    fn start_result(&self, t: &Task) -> Value {
        let structured = json!({
            "id": t.id,
            "name": t.name,
            "pid": t.pid(),
            "state": t.state().as_str(),
            "command": t.command.command,
            "args": t.command.args,
            "cwd": t.command.cwd,
            "started_at": time::rfc3339(t.started().unix_ms),
        });
        let text = format!(
            "Started task {}{} (pid {}): {}\nRead its output with logs {{\"id\": \"{}\"}}; end it with stop.",
            t.id,
            t.name
                .as_deref()
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default(),
            t.pid().map_or_else(|| "?".to_owned(), |p| p.to_string()),
            display_command(t),
            t.id,
        );
        self.tool_result(structured, text)
    }

    fn status(&mut self, now: Now, arguments: Value) -> Result<Reply, ToolError> {
        let args: StatusArgs = tools::parse(Tool::Status, arguments)?;
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
            raw: false,
        });
        let mut structured = status_fields(t, now);
        structured.insert(
            "tail".into(),
            Value::Array(page.lines.iter().map(line_json).collect()),
        );
        let mut text = status_text(t, now);
        if !page.lines.is_empty() {
            text.push_str(&format!("\n--- last {} lines ---", page.lines.len()));
            for line in &page.lines {
                text.push('\n');
                push_line_text(&mut text, line);
            }
        }
        Ok(Reply::Now(
            self.tool_result(Value::Object(structured), text),
        ))
    }

    fn logs(&mut self, arguments: Value) -> Result<Reply, ToolError> {
        let args: LogsArgs = tools::parse(Tool::Logs, arguments)?;
        let max_bytes = args.max_bytes.unwrap_or(DEFAULT_LOGS_BYTES);
        if !(1..=MAX_LOGS_BYTES).contains(&max_bytes) {
            return Err(ToolError(format!(
                "invalid arguments for `logs`: `max_bytes` must be between 1 and {MAX_LOGS_BYTES}"
            )));
        }
        let grep = match &args.grep {
            Some(pattern) => Some(
                RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        ToolError(format!(
                            "invalid arguments for `logs`: `grep` is not a valid regex: {e}"
                        ))
                    })?,
            ),
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
        let mut text = String::new();
        if page.skipped > 0 {
            text.push_str(&format!(
                "({} earlier lines were evicted from the buffer before they were read)\n",
                page.skipped
            ));
        }
        for line in &page.lines {
            push_line_text(&mut text, line);
            text.push('\n');
        }
        if page.lines.is_empty() {
            text.push_str("(no matching output)\n");
        }
        if page.truncated {
            text.push_str(&format!("(cut at max_bytes {max_bytes})\n"));
        }
        text.push_str(&format!(
            "next_cursor: {}; task {} is {}",
            page.next_cursor,
            t.id,
            state_phrase(t)
        ));
        Ok(Reply::Now(self.tool_result(structured, text)))
    }

    fn stop(&mut self, now: Now, request: &Pending, arguments: Value) -> Result<Reply, ToolError> {
        let args: StopArgs = tools::parse(Tool::Stop, arguments)?;
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
        let Some(task) = self.tasks.get_mut(&key) else {
            return Err(ToolError("the task was removed".into()));
        };
        task.stop(signal, grace, now, &mut self.outputs);
        self.waiters.push(Waiter::Stop {
            task: key,
            request: request.clone(),
        });
        // An ended task is answered at once by `progress_waiters`.
        Ok(Reply::Later)
    }

    fn list(&mut self, now: Now, arguments: Value) -> Result<Reply, ToolError> {
        let args: ListArgs = tools::parse(Tool::List, arguments)?;
        let tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| match args.state {
                ListFilter::All => true,
                ListFilter::Running => !t.state().is_ended(),
                ListFilter::Exited => t.state().is_ended(),
            })
            .collect();
        let entries: Vec<Value> = tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "name": t.name,
                    "pid": t.pid(),
                    "state": t.state().as_str(),
                    "exit_code": t.exit_code(),
                    "signal": t.exit_signal().map(Signal::name),
                    "command": t.command.command,
                    "started_at": time::rfc3339(t.started().unix_ms),
                    "runtime_ms": millis(t.runtime(now)),
                })
            })
            .collect();
        let mut text = if tasks.is_empty() {
            "No tasks.".to_owned()
        } else {
            format!("{} task(s), oldest first:", tasks.len())
        };
        for t in &tasks {
            text.push_str(&format!(
                "\n{}{}: {}: {}",
                t.id,
                t.name
                    .as_deref()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default(),
                state_phrase_at(t, now),
                display_command(t)
            ));
        }
        Ok(Reply::Now(
            self.tool_result(json!({"tasks": entries}), text),
        ))
    }

    fn remove(&mut self, arguments: Value) -> Result<Reply, ToolError> {
        let args: RemoveArgs = tools::parse(Tool::Remove, arguments)?;
        let key = self.find(&args.id)?;
        let t = self.task(key);
        if !t.state().is_ended() {
            return Err(ToolError(format!(
                "task {} is {}; stop it first, then remove it",
                t.id,
                t.state().as_str()
            )));
        }
        let id = t.id.clone();
        self.tasks.remove(&key);
        let text = format!("Removed task {id} and freed its output.");
        Ok(Reply::Now(
            self.tool_result(json!({"id": id, "removed": true}), text),
        ))
    }
}

/// A tool execution error: becomes a result with `isError: true` and this one-line reason.
struct ToolError(String);

impl From<ArgumentError> for ToolError {
    fn from(ArgumentError(reason): ArgumentError) -> Self {
        ToolError(reason)
    }
}

const INSTRUCTIONS: &str = "proc-mcp runs commands in the background so they never block the conversation. \
Use `start` for anything long-running (dev servers, watchers, builds, test suites), then `logs` with `since` \
set to the previous `next_cursor` to read only new output, `status` to check on it, and `stop` to end it \
and everything it started. Tasks can be referred to by id or by the `name` given at start.";

/// Added to every child's environment unless `env` overrides them (TOOLS.md, `start`).
const DEFAULT_ENV: [(&str, &str); 4] = [
    ("NO_COLOR", "1"),
    ("PAGER", "cat"),
    ("GIT_PAGER", "cat"),
    ("PYTHONUNBUFFERED", "1"),
];

/// Bound on a compiled `grep` regex (bytes), so a pathological pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn supported_versions() -> String {
    ProtocolVersion::ALL.map(ProtocolVersion::as_str).join(", ")
}

fn error_result(reason: String) -> Value {
    json!({"content": [{"type": "text", "text": reason}], "isError": true})
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `dir` resolved against `base` (both as given; no file system access).
fn join_path(base: &str, dir: &str) -> String {
    if dir.starts_with('/') || base.is_empty() {
        dir.to_owned()
    } else {
        format!("{}/{dir}", base.trim_end_matches('/'))
    }
}

fn line_json(line: &Line) -> Value {
    let mut object = Map::with_capacity(4);
    object.insert("n".into(), Value::from(line.n));
    object.insert("stream".into(), Value::from(line.stream.as_str()));
    object.insert("text".into(), Value::from(line.text.as_str()));
    if line.partial {
        object.insert("partial".into(), Value::Bool(true));
    }
    Value::Object(object)
}

fn push_line_text(text: &mut String, line: &Line) {
    let marker = match (line.stream, line.partial) {
        (Stream::Stdout, false) => "",
        (Stream::Stdout, true) => " partial",
        (Stream::Stderr, false) => " stderr",
        (Stream::Stderr, true) => " stderr partial",
    };
    text.push_str(&format!("[{}{marker}] {}", line.n, line.text));
}

fn display_command(t: &Task) -> String {
    match &t.command.args {
        Some(args) if !args.is_empty() => format!("{} {}", t.command.command, args.join(" ")),
        _ => t.command.command.clone(),
    }
}

fn status_fields(t: &Task, now: Now) -> Map<String, Value> {
    let fields = json!({
        "id": t.id,
        "name": t.name,
        "command": t.command.command,
        "args": t.command.args,
        "cwd": t.command.cwd,
        "pid": t.pid(),
        "state": t.state().as_str(),
        "exit_code": t.exit_code(),
        "signal": t.exit_signal().map(Signal::name),
        "stopped": t.stopped(),
        "started_at": time::rfc3339(t.started().unix_ms),
        "ended_at": t.ended().map(|e| time::rfc3339(e.unix_ms)),
        "runtime_ms": millis(t.runtime(now)),
        "restarts": t.restarts(),
        "output": {
            "lines": t.log.total_lines(),
            "bytes": t.log.total_bytes(),
            "dropped_lines": t.log.dropped_lines(),
            "next_cursor": t.log.next_cursor(),
        },
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// How the task is doing, in a few words: `running`, `exited with code 0`, …
fn state_phrase(t: &Task) -> String {
    match t.state() {
        State::Exited => match t.exit() {
            Some(ExitStatus::Code(code)) => format!("exited with code {code}"),
            Some(ExitStatus::Signaled(signal)) => format!("killed by {signal}"),
            None => "exited".to_owned(),
        },
        State::Failed => format!(
            "failed to start: {}",
            t.failure().unwrap_or("unknown error")
        ),
        other => other.as_str().to_owned(),
    }
}

fn state_phrase_at(t: &Task, now: Now) -> String {
    let runtime = t.runtime(now).as_secs_f64();
    match t.state() {
        State::Failed => state_phrase(t),
        State::Exited => format!("{} after {runtime:.1}s", state_phrase(t)),
        _ => format!(
            "{} for {runtime:.1}s (pid {})",
            state_phrase(t),
            t.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
    }
}

fn status_text(t: &Task, now: Now) -> String {
    let mut text = format!(
        "Task {}{}: {}{}\ncommand: {} (cwd {})\noutput: {} lines, {} bytes, {} dropped; next_cursor {}",
        t.id,
        t.name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default(),
        state_phrase_at(t, now),
        if t.stopped() { " (stopped)" } else { "" },
        display_command(t),
        t.command.cwd,
        t.log.total_lines(),
        t.log.total_bytes(),
        t.log.dropped_lines(),
        t.log.next_cursor(),
    );
    if t.restarts() > 0 {
        text.push_str(&format!("\nrestarts: {}", t.restarts()));
    }
    text
}

fn stop_text(t: &Task, now: Now) -> String {
    let mut text = format!("Task {}: {}", t.id, state_phrase_at(t, now));
    if t.escalated() {
        text.push_str(" (it outlived the grace period; SIGKILL was sent to its process group)");
    }
    text.push_str(&format!(
        "\noutput: {} lines; next_cursor {}",
        t.log.total_lines(),
        t.log.next_cursor()
    ));
    text
}

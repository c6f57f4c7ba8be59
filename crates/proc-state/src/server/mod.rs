//! The owner object: one [`Server`] holds the MCP session and every task.

use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::mcp::framing::{Frame, LineFramer};
use crate::mcp::jsonrpc::{self, Error, ErrorCode, Invalid, Message, RequestId};
use crate::mcp::protocol::ProtocolVersion;
use crate::mcp::{paging, tools as tool_defs};
use crate::process::{ExitStatus, RunId, Signal, SpawnSpec, Stream};
use crate::task::{Progress, Task};
use crate::time::{Instant, Now};

mod modern;
mod render;
mod resources;
mod tools;
mod waiters;

use waiters::Waiter;

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
    /// Most items on one page of `tools/list` and `resources/list`. Default 100.
    pub page_size: usize,
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
            page_size: 100,
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
    /// The bytes of one [`Output::WriteStdin`] were written (`Ok(count)`), or could not be
    /// (`Err(reason)`, e.g. the process closed its stdin). One report per `WriteStdin`, in order.
    StdinWritten {
        run: RunId,
        result: Result<usize, String>,
    },
    /// The answer to [`Output::ProbePort`]: whether a TCP connection to 127.0.0.1:port was
    /// accepted.
    PortProbed { probe: ProbeId, open: bool },
}

/// Identifies one [`Output::ProbePort`] so its answer finds its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u64);

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
    /// Write `data` to the run's stdin pipe (waiting while the pipe is full), then close the
    /// pipe if `close`; report with [`Input::StdinWritten`]. Only for runs spawned with
    /// [`StdinMode::Piped`](crate::StdinMode::Piped).
    WriteStdin {
        run: RunId,
        data: Vec<u8>,
        close: bool,
    },
    /// Try a TCP connection to `127.0.0.1:port` (closing it at once) and report with
    /// [`Input::PortProbed`]. A probe should give up after about a second.
    ProbePort { probe: ProbeId, port: u16 },
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
    /// The version negotiated by `initialize` (handshake era), once answered.
    version: Option<ProtocolVersion>,
    /// Least severe `notifications/message` level the client wants (`logging/setLevel`).
    log_level: LogLevel,
    /// Every task not yet removed, oldest first (keys only grow).
    tasks: BTreeMap<u64, Task>,
    next_task: u64,
    /// The task of every run not yet released.
    runs: BTreeMap<RunId, u64>,
    next_run: u64,
    /// Requests answered when something happens to a task.
    waiters: Vec<Waiter>,
    next_probe: u64,
    /// Subscribed task outputs (`resources/subscribe` or `subscriptions/listen`), by task key.
    subscriptions: BTreeMap<u64, resources::Subscription>,
    /// Open `subscriptions/listen` streams (2026-07-28), by a key of their own.
    listeners: BTreeMap<u64, modern::Listener>,
    next_listener: u64,
    batches: BTreeMap<u64, Batch>,
    next_batch: u64,
    outputs: VecDeque<Output>,
    shutdown: Shutdown,
}

/// A request whose response is not sent yet: where the response goes and how it is shaped.
#[derive(Clone, Debug)]
struct Pending {
    id: RequestId,
    batch: Option<u64>,
    /// `params._meta.progressToken`, when the client wants progress notifications.
    progress_token: Option<Value>,
    /// Whether results carry `structuredContent` (2025-06-18 and later).
    structured: bool,
    /// A 2026-07-28 (stateless era) request: results carry `resultType` and `_meta`.
    modern: bool,
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

/// A tool execution error: becomes a result with `isError: true` and this one-line reason.
struct ToolError(String);

impl From<tool_defs::ArgumentError> for ToolError {
    fn from(tool_defs::ArgumentError(reason): tool_defs::ArgumentError) -> Self {
        ToolError(reason)
    }
}

/// Syslog severities as MCP names them ("Utilities: Logging"), least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    const ALL: [(LogLevel, &'static str); 8] = [
        (LogLevel::Debug, "debug"),
        (LogLevel::Info, "info"),
        (LogLevel::Notice, "notice"),
        (LogLevel::Warning, "warning"),
        (LogLevel::Error, "error"),
        (LogLevel::Critical, "critical"),
        (LogLevel::Alert, "alert"),
        (LogLevel::Emergency, "emergency"),
    ];

    fn parse(name: &str) -> Option<LogLevel> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(l, _)| *l)
    }

    fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(l, _)| *l == self)
            .map_or("info", |(_, n)| n)
    }
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
            log_level: LogLevel::Debug,
            tasks: BTreeMap::new(),
            next_task: 0,
            runs: BTreeMap::new(),
            next_run: 0,
            waiters: Vec::new(),
            next_probe: 0,
            subscriptions: BTreeMap::new(),
            listeners: BTreeMap::new(),
            next_listener: 0,
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
                self.with_run(now, run, |task, out| task.on_spawned(pid, now, out));
            }
            Input::SpawnFailed { run, error } => {
                self.with_run(now, run, |task, out| task.on_spawn_failed(error, now, out));
            }
            Input::Output { run, stream, bytes } => {
                let Some(&key) = self.runs.get(&run) else {
                    return;
                };
                if let Some(task) = self.tasks.get_mut(&key) {
                    task.on_output(stream, bytes);
                }
                self.output_arrived(now, key);
            }
            Input::StreamClosed { run, stream } => {
                self.with_run(now, run, |task, out| task.on_stream_closed(stream, out));
            }
            Input::Exited { run, status } => {
                let drain = self.config.exit_drain;
                self.with_run(now, run, |task, out| {
                    task.on_exited(status, now, drain, out)
                });
            }
            Input::StdinWritten { run, result } => self.stdin_written(run, result),
            Input::PortProbed { probe, open } => self.port_probed(now, probe, open),
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
                self.task_moved(now, key, progress);
            }
        }
        self.flush_resource_updates(now);
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
        let tasks = self.tasks.values().filter_map(Task::next_deadline);
        let waiters = self.waiters.iter().filter_map(Waiter::next_deadline);
        let updates = self.subscriptions.values().filter_map(|s| s.due);
        Output::Timeout(tasks.chain(waiters).chain(updates).min())
    }

    /// Applies `f` to the task of `run`, if the core still knows the run.
    fn with_run(
        &mut self,
        now: Now,
        run: RunId,
        f: impl FnOnce(&mut Task, &mut VecDeque<Output>) -> Progress,
    ) {
        let Some(key) = self.runs.get(&run).copied() else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        let progress = f(task, &mut self.outputs);
        self.task_moved(now, key, progress);
    }

    /// Book-keeping after a task changed: a finished task's run is forgotten and whoever
    /// listens hears it ended.
    fn task_moved(&mut self, now: Now, key: u64, progress: Progress) {
        if progress != Progress::Finished {
            return;
        }
        let Some(task) = self.tasks.get(&key) else {
            return;
        };
        self.runs.remove(&task.run());
        if task.command.options.notify_on_exit {
            self.notify_exit(key, now);
        }
        self.resource_changed(now, key, true);
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
            value => self.handle_message(now, jsonrpc::classify(value), None),
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

    fn handle_message(
        &mut self,
        now: Now,
        message: Result<Message, Box<Invalid>>,
        batch: Option<u64>,
    ) {
        match message {
            Err(invalid) => {
                let response = jsonrpc::failure(invalid.id.as_ref(), &invalid.error);
                self.deliver(batch, Some(response));
            }
            Ok(Message::Response) => {}
            Ok(Message::Notification { method, params }) => {
                self.handle_notification(&method, params);
            }
            Ok(Message::Request { id, method, params }) => {
                let progress_token = params
                    .get("_meta")
                    .and_then(|meta| meta.get("progressToken"))
                    .filter(|token| token.is_string() || token.is_number())
                    .cloned();
                let modern = modern::is_modern(&method, &params);
                let request = Pending {
                    id,
                    batch,
                    progress_token,
                    structured: modern
                        || self
                            .version
                            .is_none_or(ProtocolVersion::has_structured_content),
                    modern,
                };
                let outcome = if modern {
                    self.handle_modern_request(now, &request, &method, params)
                } else {
                    self.handle_request(now, &request, &method, params)
                };
                match outcome {
                    Ok(Reply::Later) => {}
                    Ok(Reply::Now(result)) => self.respond(&request, Ok(result)),
                    Err(error) => self.respond(&request, Err(error)),
                }
            }
        }
    }

    /// Client notifications: `notifications/cancelled` ends a waiting request without a
    /// response. `notifications/initialized` needs no action (requests are served as soon as
    /// `initialize` is answered), and unknown notifications are ignored, as JSON-RPC requires.
    fn handle_notification(&mut self, method: &str, params: Map<String, Value>) {
        if method == "notifications/cancelled"
            && let Some(id) = params
                .get("requestId")
                .cloned()
                .and_then(RequestId::from_value)
        {
            self.cancel(&id);
        }
    }

    fn handle_request(
        &mut self,
        now: Now,
        request: &Pending,
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Reply, Error> {
        if self.version.is_none() {
            return match method {
                "initialize" => self.initialize(params).map(Reply::Now),
                "ping" => Ok(Reply::Now(json!({}))),
                _ => Err(jsonrpc::error(
                    ErrorCode::MethodNotFound,
                    format!(
                        "Method not found: `{method}` (send `initialize` first, or use the {} envelope; this server speaks protocol versions {})",
                        modern::VERSION,
                        supported_versions()
                    ),
                )),
            };
        }
        match method {
            "ping" => Ok(Reply::Now(json!({}))),
            "initialize" => Err(jsonrpc::error(
                ErrorCode::InvalidRequest,
                "Invalid Request: the session is already initialized",
            )),
            "tools/list" => self.list_tools(request, &params).map(Reply::Now),
            "tools/call" => self.call_tool(now, request, params),
            "logging/setLevel" => {
                let level = params.get("level").and_then(Value::as_str);
                let Some(level) = level.and_then(LogLevel::parse) else {
                    return Err(Error::invalid_params(format!(
                        "Invalid params: `level` must be one of {}",
                        LogLevel::ALL.map(|(_, n)| n).join(", ")
                    )));
                };
                self.log_level = level;
                Ok(Reply::Now(json!({})))
            }
            "resources/list" => self.list_resources(&params).map(Reply::Now),
            "resources/templates/list" => Ok(Reply::Now(resources::templates())),
            "resources/read" => self.read_resource(&params, false).map(Reply::Now),
            "resources/subscribe" => self.subscribe(&params, true).map(Reply::Now),
            "resources/unsubscribe" => self.subscribe(&params, false).map(Reply::Now),
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
            "capabilities": capabilities(),
            "serverInfo": {
                "name": self.config.server_name,
                "title": "proc-mcp: background processes",
                "version": self.config.server_version,
            },
            "instructions": INSTRUCTIONS,
        }))
    }

    /// One page of `tools/list`.
    fn list_tools(&self, request: &Pending, params: &Map<String, Value>) -> Result<Value, Error> {
        let start = paging::start("tools", params.get("cursor")).map_err(Error::invalid_params)?;
        let all = tool_defs::definitions(request.structured);
        Ok(self.page("tools", "tools", all, start.0))
    }

    /// One page of a list result: `{<key>: [...], nextCursor?}`, `page_size` items from `start`.
    fn page(&self, kind: &str, key: &str, items: Vec<Value>, start: u64) -> Value {
        let size = self.config.page_size.max(1);
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let total = items.len();
        let page: Vec<Value> = items.into_iter().skip(start).take(size).collect();
        let mut result = Map::new();
        result.insert(key.into(), Value::Array(page));
        if start.saturating_add(size) < total {
            let next = paging::cursor(kind, (start + size) as u64);
            result.insert("nextCursor".into(), Value::from(next));
        }
        Value::Object(result)
    }

    // ---- responses and notifications ----

    fn respond(&mut self, request: &Pending, outcome: Result<Value, Error>) {
        let response = match outcome {
            Ok(result) if request.modern => {
                jsonrpc::success(&request.id, self.modern_result(result))
            }
            Ok(result) => jsonrpc::success(&request.id, result),
            Err(error) => jsonrpc::failure(Some(&request.id), &error),
        };
        self.deliver(request.batch, Some(response));
    }

    /// Sends a response, or adds it to its batch (`None`: the request was cancelled and gets
    /// no response, but its batch must not wait for it).
    fn deliver(&mut self, batch: Option<u64>, response: Option<Value>) {
        let Some(key) = batch else {
            if let Some(response) = response {
                self.transmit(&response);
            }
            return;
        };
        let Some(batch) = self.batches.get_mut(&key) else {
            return;
        };
        batch.responses.extend(response);
        batch.remaining = batch.remaining.saturating_sub(1);
        if batch.remaining == 0
            && let Some(batch) = self.batches.remove(&key)
            && !batch.responses.is_empty()
        {
            self.transmit(&Value::Array(batch.responses));
        }
    }

    fn transmit(&mut self, message: &Value) {
        self.outputs
            .push_back(Output::Transmit(jsonrpc::to_line(message)));
    }

    fn notify(&mut self, method: &str, params: Value) {
        let params = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let message = jsonrpc::notification(method, params);
        self.transmit(&message);
    }

    /// `notifications/message` at `level`, if the client's `logging/setLevel` lets it through.
    fn log(&mut self, level: LogLevel, data: Value) {
        if level >= self.log_level {
            self.notify(
                "notifications/message",
                json!({"level": level.as_str(), "logger": "proc-mcp", "data": data}),
            );
        }
    }

    /// A notification goes to the client only once a session exists.
    fn in_session(&self) -> bool {
        self.version.is_some()
    }

    /// A successful tool result: a text block for a model to read and, for versions that have
    /// it, the structured value.
    fn tool_result(request: &Pending, structured: Value, text: String) -> Value {
        let mut result = Map::new();
        result.insert("content".into(), json!([{"type": "text", "text": text}]));
        if request.structured {
            result.insert("structuredContent".into(), structured);
        }
        Value::Object(result)
    }
}

/// What this server offers (the `capabilities` of `initialize`).
fn capabilities() -> Value {
    json!({
        "tools": {"listChanged": false},
        "logging": {},
        "resources": {"subscribe": true, "listChanged": true},
    })
}

const INSTRUCTIONS: &str = "proc-mcp runs commands in the background so they never block the conversation. \
Use `start` for anything long-running (dev servers, watchers, builds, test suites), with `wait_for` to return \
once it is ready; `wait` to block until a pattern appears, a port opens or it exits, instead of polling; \
`logs` with `since` set to the previous `next_cursor` to read only new output; `write` to talk to a task \
started with `stdin: true`; and `stop` to end it and everything it started. Tasks can be referred to by id \
or by the `name` given at start.";

fn supported_versions() -> String {
    ProtocolVersion::ALL.map(ProtocolVersion::as_str).join(", ")
}

fn error_result(reason: String) -> Value {
    json!({"content": [{"type": "text", "text": reason}], "isError": true})
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

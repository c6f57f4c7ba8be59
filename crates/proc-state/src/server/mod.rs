//! The owner object: one [`Server`] holds the MCP session and every task.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Map, Value, json};

use crate::mcp::framing::{Frame, LineFramer};
use crate::mcp::jsonrpc::{self, Error, ErrorCode, Invalid, Message, RequestId};
use crate::mcp::paging;
use crate::mcp::protocol::ProtocolVersion;
use crate::time::Now;

pub(crate) use crate::shared::{BATCH_REPLY_FACTOR, Config, IdGenerator, Input, Output, ProbeId};

mod lifecycle;
mod modern;
mod render;
mod resources;
mod tasks;
pub mod tools;
mod waiters;

use resources::{Due, Subscriptions};
use tasks::Tasks;
use waiters::Waiters;

/// The sub-machines that own deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Tasks,
    Waiters,
    Subscriptions,
}

/// The whole server: MCP session, tools and tasks. See the crate docs for how to drive it.
pub struct Server {
    config: Config,
    /// The MCP session: client lines, version, log level, batches, the client's backlog.
    session: Session,
    /// The task registry: tasks, runs, ids, output memory and the tasks' deadlines.
    tasks: Tasks,
    /// Requests answered when something happens to a task, with their deadlines.
    waiters: Waiters,
    /// Subscribed task outputs and listen streams, with the deadlines of coalesced
    /// notifications.
    subscriptions: Subscriptions,
    outputs: VecDeque<Output>,
    shutdown: Shutdown,
}

/// The MCP session, a sub-machine of the server: the client's lines not handled yet, the
/// negotiated version, the log level, the open batches, and how far behind the client is
/// (bytes sent but not reported written, and the notifications held back meanwhile).
#[derive(Debug)]
struct Session {
    framer: LineFramer,
    /// Client lines framed but not handled yet: handling pauses while the client is slow to
    /// read what was sent to it.
    frames: VecDeque<Frame>,
    /// The version negotiated by `initialize` (handshake era), once answered.
    version: Option<ProtocolVersion>,
    /// Least severe `notifications/message` level the client wants (`logging/setLevel`).
    log_level: LogLevel,
    batches: BTreeMap<u64, Batch>,
    next_batch: u64,
    /// Bytes of [`Output::Transmit`] not yet reported written.
    unacked: usize,
    /// Above this many unacked bytes the client is congested.
    max_backlog: usize,
    /// Notifications held back while the client does not read.
    owed: Owed,
}

impl Session {
    fn new(config: &Config) -> Self {
        Self {
            framer: LineFramer::new(config.max_message_bytes),
            frames: VecDeque::new(),
            version: None,
            log_level: LogLevel::Debug,
            batches: BTreeMap::new(),
            next_batch: 0,
            unacked: 0,
            max_backlog: config.max_client_backlog_bytes,
            owed: Owed::default(),
        }
    }

    /// Whether the client is behind on reading: more than
    /// [`Config::max_client_backlog_bytes`] sent and not yet written.
    fn congested(&self) -> bool {
        self.unacked >= self.max_backlog
    }

    /// A notification goes to the client only once a session exists.
    fn is_open(&self) -> bool {
        self.version.is_some()
    }
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
    /// The responses so far, each a compact JSON text, joined by `,`.
    body: Vec<u8>,
    /// A reply did not fit: the requests still to come are refused without being carried out.
    full: bool,
}

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    Serving,
    /// Every task was asked to stop; waiting for them to end.
    Stopping,
    /// Asked twice: every group was sent SIGKILL.
    Killing,
    /// [`Output::Exit`] was given.
    Done,
}

/// Notifications held back while the client is congested, coalesced: at most one of each kind
/// per subject, so what is owed stays bounded by the number of tasks.
#[derive(Debug, Default)]
struct Owed {
    /// `notifications/resources/list_changed` to the session.
    list_changed: bool,
    /// The same to these listen streams.
    listeners_list_changed: BTreeSet<u64>,
    /// `notifications/resources/updated` for these tasks' outputs.
    updated: BTreeSet<u64>,
    /// The exit notifications of `notify_on_exit`, by task (the latest run's).
    exits: BTreeMap<u64, (LogLevel, Value, Value)>,
}

/// A handler's answer: now, or later (the request waits on a task).
enum Reply {
    Now(Value),
    /// A `tools/call` result.
    Tool(ToolResult),
    Later,
}

/// A `tools/call` result (`CallToolResult`, MCP "Server Features: Tools"): one text block for
/// the model and, for sessions that have it, `structuredContent`, already serialized from the
/// tool's typed result so no JSON tree is built for it.
struct ToolResult {
    text: String,
    /// `None` for versions before 2025-06-18 and for errors.
    structured: Option<Box<serde_json::value::RawValue>>,
    is_error: bool,
    /// A PNG image, base64: an image content after the text.
    png: Option<String>,
}

impl ToolResult {
    /// A tool execution error (`isError: true`) with a one-line reason.
    fn error(reason: String) -> Self {
        Self {
            text: reason,
            structured: None,
            is_error: true,
            png: None,
        }
    }
}

/// How a [`ToolResult`] goes on the wire.
#[derive(serde::Serialize)]
struct ToolResultWire<'a> {
    content: Vec<Content<'a>>,
    #[serde(rename = "structuredContent", skip_serializing_if = "Option::is_none")]
    structured: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "isError", skip_serializing_if = "core::ops::Not::not")]
    is_error: bool,
    /// 2026-07-28 requests: `"complete"`.
    #[serde(rename = "resultType", skip_serializing_if = "Option::is_none")]
    result_type: Option<&'static str>,
    /// 2026-07-28 requests: the server's info.
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<Value>,
}

/// One content block of a tool result (MCP "Tools: Tool Result").
#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Content<'a> {
    Text {
        text: &'a str,
    },
    /// Base64-encoded image data.
    Image {
        data: &'a str,
        #[serde(rename = "mimeType")]
        mime_type: &'static str,
    },
}

/// A tool execution error: becomes a result with `isError: true` and this one-line reason.
struct ToolError(String);

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
            session: Session::new(&config),
            tasks: Tasks::new(ids, config.output_budget_total_bytes),
            config,
            waiters: Waiters::default(),
            subscriptions: Subscriptions::default(),
            outputs: VecDeque::new(),
            shutdown: Shutdown::Serving,
        }
    }

    /// Whether the driver should read and feed more client bytes now: every line fed so far
    /// was handled, and the client has read what was sent to it (fewer than
    /// [`Config::max_client_backlog_bytes`] are unwritten). While this is `false` the driver
    /// stops reading stdin, which pushes back on the client; task output, exits, timers and
    /// signals are handled as usual.
    pub fn wants_client_bytes(&self) -> bool {
        self.session.frames.is_empty() && !self.congested() && self.shutdown == Shutdown::Serving
    }

    /// Memory held by the output of every task, in bytes: their buffers' blocks and partial
    /// lines. At most [`Config::output_budget_total_bytes`], but for partial lines (which are
    /// never evicted: each task's two hold at most `max_line_bytes + 2` bytes each).
    pub fn output_memory(&self) -> usize {
        self.tasks.output_bytes()
    }

    /// Feeds one input that happened at `now`.
    pub fn handle_input(&mut self, now: Now, input: Input<'_>) {
        match input {
            Input::ClientBytes(bytes) => {
                let mut frames = Vec::new();
                self.session.framer.push(bytes, &mut frames);
                self.session.frames.extend(frames);
                self.handle_frames(now);
            }
            Input::ClientEof => {
                let mut frames = Vec::new();
                self.session.framer.finish(&mut frames);
                self.session.frames.extend(frames);
                self.handle_frames(now);
                // What the client sent but we could not handle while it did not read is dropped:
                // it closed its side, and answering could take unbounded memory.
                self.session.frames.clear();
                self.begin_shutdown(now);
            }
            Input::Terminate => self.terminate(now),
            Input::Transmitted { bytes } => {
                let was_congested = self.congested();
                self.session.unacked = self.session.unacked.saturating_sub(bytes);
                if was_congested && !self.congested() {
                    self.pay_owed(now);
                    self.handle_frames(now);
                }
            }
            Input::Spawned { run, pid } => self.spawned(now, run, pid),
            Input::SpawnFailed { run, error } => self.spawn_failed(now, run, error),
            Input::ProcessOutput { run, stream, bytes } => {
                self.task_output(now, run, stream, bytes)
            }
            Input::StreamClosed { run, stream } => self.stream_closed(now, run, stream),
            Input::Exited {
                run,
                status,
                signalled,
            } => self.exited(now, run, status, signalled),
            Input::StdinWritten { run, result } => self.stdin_written(now, run, result),
            Input::StdinReady { run } => self.stdin_ready(now, run),
            Input::Probed { probe, outcome } => self.probed(now, probe, outcome),
            Input::Escaped { run, processes } => self.escaped_found(now, run, processes),
            Input::EscapedExited { run, pid } => self.escaped_exited(now, run, pid),
            Input::InputWanted { run, wanted } => self.input_answered(now, run, wanted),
            Input::Inspected { usage } => self.inspected(now, usage),
        }
        self.maybe_exit();
    }

    /// The timer armed from [`Output::Timeout`] fired (or any time: early calls are no-ops).
    pub fn handle_timeout(&mut self, now: Now) {
        // The earliest due deadline first, whichever sub-machine owns it (ties in the order
        // tasks, waiters, subscriptions), so timers fire in time order however late the call.
        loop {
            let due = [
                (Owner::Tasks, self.tasks.poll_timeout()),
                (Owner::Waiters, self.waiters.poll_timeout()),
                (Owner::Subscriptions, self.subscriptions.poll_timeout()),
            ]
            .into_iter()
            .filter_map(|(owner, at)| Some((at.filter(|at| *at <= now.instant)?, owner)))
            .min();
            let Some((_, owner)) = due else {
                break;
            };
            match owner {
                Owner::Tasks => {
                    if let Some(key) = self.tasks.pop_due(now.instant) {
                        self.task_timeout(now, key);
                    }
                }
                Owner::Waiters => {
                    if let Some(id) = self.waiters.pop_due(now.instant) {
                        self.progress_waiter(now, id);
                    }
                }
                Owner::Subscriptions => match self.subscriptions.pop_due(now.instant) {
                    Some(Due::Update(key)) => self.resource_update_due(now, key),
                    Some(Due::ListChanged) => self.list_changed_due(now),
                    None => {}
                },
            }
        }
        self.maybe_exit();
    }

    /// The next thing for the driver to do; [`Output::Timeout`] when there is nothing more.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        let deadlines = [
            self.tasks.poll_timeout(),
            self.waiters.poll_timeout(),
            self.subscriptions.poll_timeout(),
        ];
        Output::Timeout(deadlines.into_iter().flatten().min())
    }

    /// Queues [`Output::Exit`] once shutting down, every run is released and every escaped
    /// process is gone (or survived `SIGKILL`).
    fn maybe_exit(&mut self) {
        if matches!(self.shutdown, Shutdown::Stopping | Shutdown::Killing)
            && !self.tasks.has_runs()
            && self.tasks.iter().all(|(_, t)| t.escaped.is_settled())
        {
            self.shutdown = Shutdown::Done;
            self.close_listeners();
            self.outputs.push_back(Output::Exit);
        }
    }

    // ---- client messages ----

    /// Handles the framed lines, as long as the client keeps up with reading our answers.
    fn handle_frames(&mut self, now: Now) {
        while !self.congested() && self.shutdown != Shutdown::Done {
            let Some(frame) = self.session.frames.pop_front() else {
                return;
            };
            self.handle_frame(now, frame);
        }
    }

    fn handle_frame(&mut self, now: Now, frame: Frame) {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::TooLong { len, prefix } => {
                let error = jsonrpc::error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "Invalid Request: message of {len} bytes exceeds the limit of {} bytes",
                        self.config.max_message_bytes
                    ),
                );
                self.transmit(jsonrpc::failure(
                    jsonrpc::recover_id(&prefix).as_ref(),
                    &error,
                ));
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
                let id = jsonrpc::recover_id(&line[..line.len().min(4096)]);
                self.transmit(jsonrpc::failure(id.as_ref(), &error));
                return;
            }
        };
        match value {
            Value::Array(items) => self.handle_batch(now, items, &line),
            value => {
                let message = jsonrpc::classify(value, &line);
                self.handle_message(now, message, &line, None);
            }
        }
    }

    fn handle_batch(&mut self, now: Now, items: Vec<Value>, line: &[u8]) {
        let refusal = match self.session.version {
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
            self.transmit(jsonrpc::failure(None, &error));
            return;
        }
        let texts: Vec<&[u8]> = match jsonrpc::batch_elements(line) {
            Some(raw) if raw.len() == items.len() => {
                raw.into_iter().map(|r| r.get().as_bytes()).collect()
            }
            _ => vec![&[][..]; items.len()],
        };
        let classified: Vec<_> = items
            .into_iter()
            .zip(&texts)
            .map(|(item, text)| jsonrpc::classify(item, text))
            .collect();
        let remaining = classified
            .iter()
            .filter(|m| !matches!(m, Ok(Message::Notification { .. } | Message::Response)))
            .count();
        let batch = self.session.next_batch;
        self.session.next_batch += 1;
        if remaining > 0 {
            self.session.batches.insert(
                batch,
                Batch {
                    remaining,
                    body: Vec::new(),
                    full: false,
                },
            );
        }
        for (message, text) in classified.into_iter().zip(texts) {
            // Once the replies have reached the bound, the remaining requests are refused
            // without being carried out: no work is done for a reply that could not be sent.
            if let Ok(Message::Request { id, .. }) = &message
                && self
                    .session
                    .batches
                    .get(&batch)
                    .is_some_and(|b| b.full || b.body.len() >= self.batch_reply_limit())
            {
                let error = self.batch_too_large(false);
                let response = jsonrpc::failure(Some(id), &error);
                self.deliver(Some(batch), Some((response, Some(id))));
                continue;
            }
            self.handle_message(now, message, text, Some(batch));
        }
    }

    /// A batch's reply holds at most this many bytes.
    fn batch_reply_limit(&self) -> usize {
        self.config
            .max_message_bytes
            .saturating_mul(BATCH_REPLY_FACTOR)
    }

    /// The error for a batch element whose reply would not fit; `done` says whether the request
    /// was carried out all the same.
    fn batch_too_large(&self, done: bool) -> Error {
        let limit = self.batch_reply_limit();
        let what = if done {
            "its reply was dropped"
        } else {
            "it was not carried out"
        };
        Error {
            code: ErrorCode::ServerError(BATCH_TOO_LARGE),
            message: format!(
                "Response too large: this batch's replies reached {limit} bytes, so {what}; send this request on its own, or ask for less (e.g. a smaller `max_bytes`)"
            ),
            data: Some(json!({"limit": limit, "done": done})),
        }
    }

    fn handle_message(
        &mut self,
        now: Now,
        message: Result<Message, Box<Invalid>>,
        text: &[u8],
        batch: Option<u64>,
    ) {
        match message {
            Err(invalid) => {
                let response = jsonrpc::failure(invalid.id.as_ref(), &invalid.error);
                self.deliver(batch, Some((response, invalid.id.as_ref())));
            }
            Ok(Message::Response) => {}
            Ok(Message::Notification { method, params }) => {
                self.handle_notification(now, &method, &params, text);
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
                            .session
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
                    Ok(Reply::Tool(result)) => self.respond_tool(&request, &result),
                    Err(error) => self.respond(&request, Err(error)),
                }
            }
        }
    }

    /// Client notifications: `notifications/cancelled` ends a waiting request without a
    /// response (and drops what a cancelled `write` still has queued).
    /// `notifications/initialized` needs no action (requests are served as soon as
    /// `initialize` is answered), and unknown notifications are ignored, as JSON-RPC requires.
    fn handle_notification(
        &mut self,
        now: Now,
        method: &str,
        params: &Map<String, Value>,
        text: &[u8],
    ) {
        if method == "notifications/cancelled"
            && let Some(id) = jsonrpc::cancelled_request(params, text)
        {
            self.cancel(now, &id);
        }
    }

    fn handle_request(
        &mut self,
        now: Now,
        request: &Pending,
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Reply, Error> {
        if self.session.version.is_none() {
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
                self.session.log_level = level;
                Ok(Reply::Now(json!({})))
            }
            "resources/list" => self.list_resources(&params).map(Reply::Now),
            "resources/templates/list" => Ok(Reply::Now(resources::templates())),
            "resources/read" => self.read_resource(now, &params, false).map(Reply::Now),
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
        self.session.version = Some(version);
        Ok(json!({
            "protocolVersion": version.as_str(),
            "capabilities": capabilities(),
            "serverInfo": {
                "name": self.config.server_name,
                "title": "proc-mcp: background processes",
                "version": self.config.server_version,
            },
            "instructions": self.instructions(),
        }))
    }

    /// The `instructions` of `initialize` and `server/discover`.
    fn instructions(&self) -> String {
        if self.config.containment.is_empty() {
            INSTRUCTIONS.to_owned()
        } else {
            format!("{INSTRUCTIONS} {}", self.config.containment)
        }
    }

    /// One page of `tools/list`.
    fn list_tools(&self, request: &Pending, params: &Map<String, Value>) -> Result<Value, Error> {
        let start = paging::start("tools", params.get("cursor")).map_err(Error::invalid_params)?;
        let all = tools::definitions(&self.config, request.structured);
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
                jsonrpc::success(&request.id, &self.modern_result(result))
            }
            Ok(result) => jsonrpc::success(&request.id, &result),
            Err(error) => jsonrpc::failure(Some(&request.id), &error),
        };
        self.deliver(request.batch, Some((response, Some(&request.id))));
    }

    /// Answers a `tools/call`.
    fn respond_tool(&mut self, request: &Pending, result: &ToolResult) {
        let wire = ToolResultWire {
            content: core::iter::once(Content::Text { text: &result.text })
                .chain(result.png.as_deref().map(|data| Content::Image {
                    data,
                    mime_type: "image/png",
                }))
                .collect(),
            structured: result.structured.as_deref(),
            is_error: result.is_error,
            result_type: request.modern.then_some("complete"),
            meta: request.modern.then(|| self.modern_meta()),
        };
        let response = jsonrpc::success(&request.id, &wire);
        self.deliver(request.batch, Some((response, Some(&request.id))));
    }

    /// Sends a response (a compact JSON text and the id it answers), or adds it to its batch.
    /// `None`: the request was cancelled and gets no response, but its batch must not wait for
    /// it.
    ///
    /// A batch's reply is bounded by [`BATCH_REPLY_FACTOR`] × `max_message_bytes`: a response
    /// that would not fit is replaced by an error that says so.
    fn deliver(&mut self, batch: Option<u64>, response: Option<(Vec<u8>, Option<&RequestId>)>) {
        let Some(key) = batch else {
            if let Some((response, _)) = response {
                self.transmit(response);
            }
            return;
        };
        let limit = self.batch_reply_limit();
        let too_large = self.batch_too_large(true);
        let Some(batch) = self.session.batches.get_mut(&key) else {
            return;
        };
        if let Some((mut response, id)) = response {
            if batch.body.len() + response.len() + 2 > limit {
                response = jsonrpc::failure(id, &too_large);
                batch.full = true;
            }
            if !batch.body.is_empty() {
                batch.body.push(b',');
            }
            batch.body.extend_from_slice(&response);
        }
        batch.remaining = batch.remaining.saturating_sub(1);
        if batch.remaining == 0
            && let Some(batch) = self.session.batches.remove(&key)
            && !batch.body.is_empty()
        {
            let mut line = Vec::with_capacity(batch.body.len() + 2);
            line.push(b'[');
            line.extend_from_slice(&batch.body);
            line.push(b']');
            self.transmit(line);
        }
    }

    /// Sends one compact JSON text as a line.
    fn transmit(&mut self, text: Vec<u8>) {
        let line = jsonrpc::to_line(text);
        self.session.unacked += line.len();
        self.outputs.push_back(Output::Transmit(line));
    }

    /// Whether the client is behind on reading: more than
    /// [`Config::max_client_backlog_bytes`] sent and not yet written.
    fn congested(&self) -> bool {
        self.session.congested()
    }

    fn notify(&mut self, method: &str, params: &Value) {
        let empty = Map::new();
        let params = params.as_object().unwrap_or(&empty);
        self.transmit(jsonrpc::notification(method, params));
    }

    /// `notifications/message` at `level`, if the client's `logging/setLevel` lets it through.
    fn log(&mut self, level: LogLevel, data: Value) {
        if level >= self.session.log_level {
            self.notify(
                "notifications/message",
                &json!({"level": level.as_str(), "logger": "proc-mcp", "data": data}),
            );
        }
    }

    /// A notification goes to the client only once a session exists.
    fn in_session(&self) -> bool {
        self.session.is_open()
    }

    /// Sends what was held back while the client did not read.
    fn pay_owed(&mut self, now: Now) {
        let owed = core::mem::take(&mut self.session.owed);
        if owed.list_changed {
            self.send_list_changed();
        }
        for listener in owed.listeners_list_changed {
            self.notify_listener(listener, "notifications/resources/list_changed", &json!({}));
        }
        for key in owed.updated {
            self.resource_changed(now, key, true);
        }
        for (_, (level, data, exit)) in owed.exits {
            self.send_exit_notifications(level, data, &exit);
        }
    }

    /// A successful tool result: a text block for a model to read and, for versions that have
    /// it, the structured value, serialized from the tool's typed result.
    fn tool_result(
        request: &Pending,
        structured: &impl serde::Serialize,
        text: String,
    ) -> ToolResult {
        ToolResult {
            text,
            png: None,
            // Serializing plain data into JSON cannot fail (string keys, no foreign types).
            structured: request
                .structured
                .then(|| serde_json::value::to_raw_value(structured).ok())
                .flatten(),
            is_error: false,
        }
    }
}

/// The error code of a batch element whose response would not fit the batch's bound
/// (JSON-RPC's implementation-defined server errors are -32000 to -32099).
const BATCH_TOO_LARGE: i64 = -32000;

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
started with `stdin: true`; and `stop` to end it and everything it started. For REPLs, prompts and \
full-screen programs, start with `tty: true`: `screen` shows the terminal, and `write` with `keys` and \
`prompt: true` answers a prompt in one call. Tasks can be referred to by id or by the `name` given at start.";

fn supported_versions() -> String {
    ProtocolVersion::ALL.map(ProtocolVersion::as_str).join(", ")
}

fn error_result(reason: String) -> ToolResult {
    ToolResult::error(reason)
}

/// Milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

//! The whole core driven by a model of a driver and a client, under arbitrary interleavings of
//! tool calls (every tool, both protocol eras, batches, cancellations), process events (spawn
//! results, output, stream ends, exits, stdin reports, probes, sweeps, escaped exits), time,
//! a client that stops reading, end-of-input and termination. The model checks, after every
//! step:
//!
//! - no `Signal`, `WriteStdin`, `CloseStdin` or second `Release` for a run after its `Release`,
//!   and at most one `WriteStdin` in flight per run;
//! - `Inspect` only of runs spawned and not released, never empty (answered in order);
//! - exactly one response per request id (none for a cancelled one), and only for ids sent;
//! - no `Spawn` after the shutdown began, nor for a task whose latest request was `stop`;
//! - `Exit` only once every run is released, with every request answered, and nothing after it;
//! - every line is one compact JSON-RPC message without `"params": null`.
//!
//! Time only moves to deadlines the core asked for (or by a bounded step that fires them in
//! order), like a real driver's timer.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proc_state::{
    Config, EscapedProcess, ExitStatus, Input, Instant, Listener, Now, Output, ProbeId,
    ProbeOutcome, Protocol, RunId, Server, Signal, Stdio, Stream, Usage,
};
use serde_json::{Value, json};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ToolOp {
    Start {
        stdin: bool,
        tty: bool,
        wait_for: bool,
        max_runtime: Option<u8>,
        notify: bool,
        args: bool,
        /// 0: no restart policy; 1: on-failure; 2: always; 3: on-failure, at most 2.
        policy: u8,
        idle: Option<u8>,
        max_memory: bool,
        wait_url: bool,
    },
    Stop {
        task: u8,
        grace: u8,
        kill: bool,
    },
    Restart {
        task: u8,
    },
    Wait {
        task: u8,
        pattern: bool,
        port: bool,
        url: bool,
        quiet: Option<u8>,
        timeout: u8,
    },
    Write {
        task: u8,
        len: u8,
        eof: bool,
        keys: bool,
        /// 0: answered once written; 1: then `prompt`; 2: then `quiet_ms`; 3: then `wait_for`.
        then: u8,
    },
    Screen {
        task: u8,
        png: bool,
    },
    Resize {
        task: u8,
        rows: u8,
        cols: u8,
    },
    Signal {
        task: u8,
    },
    Logs {
        task: u8,
        max_bytes: u8,
        since: Option<u8>,
    },
    Status {
        task: u8,
    },
    List,
    Remove {
        task: u8,
    },
    Bad {
        which: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Initialize {
        version: u8,
    },
    Call(ToolOp),
    /// A 2026-07-28 request (its own envelope).
    Modern(ToolOp),
    /// A batch of up to three calls (2025-03-26 only; refused otherwise).
    Batch(Vec<ToolOp>),
    Listen,
    Resource {
        task: u8,
        subscribe: bool,
    },
    Cancel {
        request: u8,
    },
    Raw(Vec<u8>),
    Spawned {
        which: u8,
        pid: u16,
    },
    SpawnFailed {
        which: u8,
    },
    Output {
        which: u8,
        stderr: bool,
        text: u8,
    },
    Closed {
        which: u8,
        stderr: bool,
    },
    Exited {
        which: u8,
        code: i8,
        signalled: bool,
    },
    StdinWritten {
        which: u8,
        part: u8,
        fail: bool,
    },
    StdinReady {
        which: u8,
    },
    Probe {
        which: u8,
        open: bool,
        status: u16,
    },
    /// The answer to the oldest `Output::Inspect`: each run measured (by the bits of `found`)
    /// or left out.
    Inspected {
        found: u8,
        rss: u8,
        port: bool,
    },
    /// The answer to an `Output::QueryInput`.
    InputAnswer {
        which: u8,
        wanted: Option<bool>,
    },
    Sweep {
        which: u8,
        found: u8,
    },
    EscapedExited {
        which: u8,
    },
    /// Events for a run the core no longer knows.
    Stale {
        run: u8,
    },
    ToDeadline,
    Advance {
        ms: u16,
    },
    Stall(bool),
    Eof,
    Terminate,
}

const VERSIONS: [&str; 5] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "x"];

/// A run as the model driver sees it.
#[derive(Debug, Default)]
struct Run {
    exited: bool,
    /// On a terminal: its one stream is `Stream::Tty` (kept in `streams[0]`).
    tty: bool,
    streams: [bool; 2],
    /// A `WriteStdin` not yet reported.
    writing: Option<usize>,
    /// A short write happened: `StdinReady` may be reported.
    blocked: bool,
}

struct Model {
    server: Server,
    now_ns: u64,
    deadline: Option<Instant>,
    /// Spawns asked for and not answered: (run, task number).
    spawning: Vec<(RunId, u32)>,
    live: BTreeMap<RunId, Run>,
    released: BTreeSet<RunId>,
    /// Every run ever spawned, with its task number.
    task_of: BTreeMap<RunId, u32>,
    probes: Vec<ProbeId>,
    /// The runs of each `Inspect` not answered yet, oldest first.
    inspections: VecDeque<Vec<RunId>>,
    /// Runs whose `QueryInput` is not answered yet.
    queries: Vec<RunId>,
    /// Runs spawned on a terminal.
    terminals: BTreeSet<RunId>,
    sweeps: Vec<RunId>,
    escaped: Vec<(RunId, u32)>,
    next_escapee: u32,
    /// Request ids sent (fed to the core) and not answered yet.
    open_requests: BTreeSet<i64>,
    answered: BTreeSet<i64>,
    cancelled: BTreeSet<i64>,
    /// Requests sent in a batch: one answered already may be cancelled while the batch waits for
    /// the others, and its answer then still goes out with the batch.
    batched: BTreeSet<i64>,
    sent: Vec<i64>,
    next_id: i64,
    /// Messages the client wrote that the core did not want yet.
    held: VecDeque<Vec<u8>>,
    /// The client does not read: transmitted bytes are not reported written.
    stalled: bool,
    unread: usize,
    /// `ClientEof` or `Terminate` was fed.
    shutting_down: bool,
    exited: bool,
    /// The latest lifecycle request fed per task number: `Some(true)` for `stop`; `None` when it
    /// came in a batch (its place among the batch's outputs is not known).
    latest_is_stop: BTreeMap<u32, Option<bool>>,
    /// Starts asked for so far; task `n` is started with the name `tn` and the command
    /// `cmd-n`, so names are never reused and name the same task as long as it exists.
    next_task: u32,
    initialized: bool,
    version: &'static str,
}

fn now_of(ns: u64) -> Now {
    Now::new(Instant::from_nanos(ns), 1_700_000_000_000 + ns / 1_000_000)
}

impl Model {
    fn new() -> Self {
        let mut config = Config::default();
        config.output_budget_bytes = 8192;
        config.output_budget_total_bytes = 16384;
        config.max_line_bytes = 64;
        config.max_message_bytes = 4096;
        config.max_client_backlog_bytes = 2048;
        config.max_stdin_queue_bytes = 512;
        config.max_tasks = 6;
        config.default_grace = std::time::Duration::from_millis(300);
        config.shutdown_grace = std::time::Duration::from_millis(200);
        config.exit_drain = std::time::Duration::from_millis(100);
        let mut counter = 0u32;
        Self {
            server: Server::new(
                config,
                Box::new(move || {
                    counter += 1;
                    format!("id{}", counter % 5)
                }),
            ),
            now_ns: 0,
            deadline: None,
            spawning: Vec::new(),
            live: BTreeMap::new(),
            released: BTreeSet::new(),
            task_of: BTreeMap::new(),
            probes: Vec::new(),
            inspections: VecDeque::new(),
            queries: Vec::new(),
            terminals: BTreeSet::new(),
            sweeps: Vec::new(),
            escaped: Vec::new(),
            next_escapee: 1000,
            open_requests: BTreeSet::new(),
            answered: BTreeSet::new(),
            cancelled: BTreeSet::new(),
            batched: BTreeSet::new(),
            sent: Vec::new(),
            next_id: 1,
            held: VecDeque::new(),
            stalled: false,
            unread: 0,
            shutting_down: false,
            exited: false,
            latest_is_stop: BTreeMap::new(),
            next_task: 0,
            initialized: false,
            version: "2025-11-25",
        }
    }

    fn now(&self) -> Now {
        now_of(self.now_ns)
    }

    fn input(&mut self, input: Input<'_>) {
        let now = self.now();
        self.server.handle_input(now, input);
        self.drain();
    }

    /// Carries out every output and checks it; then reports written bytes while the client
    /// reads, and feeds held client messages while the core wants them.
    fn drain(&mut self) {
        loop {
            for _ in 0..100_000 {
                match self.server.poll_output() {
                    Output::Timeout(deadline) => {
                        self.deadline = deadline;
                        break;
                    }
                    output => self.check(output),
                }
            }
            if !self.stalled && self.unread > 0 && !self.exited {
                let bytes = core::mem::take(&mut self.unread);
                let now = self.now();
                self.server.handle_input(now, Input::Transmitted { bytes });
                continue;
            }
            // The total output budget: only partial lines may stand above it.
            assert!(
                self.server.output_memory() <= 16384 + 6 * 2 * (64 + 2),
                "output memory {} over the total budget",
                self.server.output_memory()
            );
            if !self.shutting_down
                && self.server.wants_client_bytes()
                && let Some(message) = self.held.pop_front()
            {
                self.feed_client(message);
                continue;
            }
            return;
        }
    }

    fn check(&mut self, output: Output) {
        assert!(!self.exited, "output after Exit: {output:?}");
        match output {
            Output::Transmit(line) => {
                self.unread += line.len();
                self.check_line(&line);
            }
            Output::Spawn { run, spec } => {
                assert!(!self.shutting_down, "spawn after the shutdown began");
                assert!(!self.task_of.contains_key(&run), "{run} spawned twice");
                let task = spec
                    .args
                    .iter()
                    .chain(std::iter::once(&spec.program))
                    .find_map(|a| a.strip_prefix("cmd-").and_then(|n| n.parse::<u32>().ok()))
                    .expect("every command names its task");
                assert!(
                    self.latest_is_stop.get(&task).copied().flatten() != Some(true),
                    "spawn of task {task} whose latest request was stop"
                );
                self.task_of.insert(run, task);
                self.spawning.push((run, task));
                if matches!(spec.stdio, Stdio::Terminal(_)) {
                    self.terminals.insert(run);
                }
            }
            Output::Signal { run, .. } => {
                assert!(
                    !self.released.contains(&run),
                    "signal after release of {run}"
                );
                assert!(
                    self.task_of.contains_key(&run),
                    "signal to an unknown {run}"
                );
            }
            Output::WriteStdin { run, data } => {
                assert!(!self.released.contains(&run), "stdin write after release");
                let state = self
                    .live
                    .get_mut(&run)
                    .expect("stdin write to a spawned run");
                assert!(
                    state.writing.is_none(),
                    "two stdin writes in flight for {run}"
                );
                assert!(!data.is_empty());
                state.writing = Some(data.len());
            }
            Output::CloseStdin { run } => {
                assert!(!self.released.contains(&run), "stdin close after release");
                assert!(self.live.contains_key(&run));
            }
            Output::Probe { probe, .. } => self.probes.push(probe),
            Output::Inspect { runs } => {
                assert!(!runs.is_empty(), "an empty inspection");
                for (run, _) in &runs {
                    assert!(
                        self.live.contains_key(run) && !self.released.contains(run),
                        "inspection of {run}, not a spawned run"
                    );
                }
                self.inspections
                    .push_back(runs.into_iter().map(|(run, _)| run).collect());
            }
            Output::Resize { run, size } => {
                assert!(
                    !self.released.contains(&run),
                    "resize after release of {run}"
                );
                assert!(
                    self.terminals.contains(&run),
                    "resize of {run}, no terminal"
                );
                assert!(size.rows >= 1 && size.cols >= 1);
            }
            Output::QueryInput { run } => {
                assert!(!self.released.contains(&run), "input query after release");
                assert!(self.live.contains_key(&run), "input query about {run}");
                // Asked again only once the question out went unanswered too long.
                if !self.queries.contains(&run) {
                    self.queries.push(run);
                }
            }
            Output::Sweep { run, .. } => {
                assert!(self.task_of.contains_key(&run), "sweep of an unknown run");
                self.sweeps.push(run);
            }
            Output::SignalEscaped { run, .. } => {
                assert!(self.task_of.contains_key(&run));
            }
            Output::Release { run } => {
                assert!(self.released.insert(run), "{run} released twice");
                self.queries.retain(|r| *r != run);
                self.live.remove(&run);
                self.spawning.retain(|(r, _)| *r != run);
            }
            Output::Exit => {
                assert!(self.shutting_down, "exit without a shutdown");
                assert!(self.spawning.is_empty(), "exit with spawns unanswered");
                assert!(
                    self.live.is_empty(),
                    "exit with runs not released: {:?}",
                    self.live
                );
                let unanswered: Vec<&i64> = self
                    .open_requests
                    .iter()
                    .filter(|id| !self.cancelled.contains(id))
                    .collect();
                assert!(
                    unanswered.is_empty(),
                    "exit with requests unanswered: {unanswered:?}"
                );
                self.exited = true;
            }
            Output::Timeout(_) => unreachable!(),
        }
    }

    fn check_line(&mut self, line: &[u8]) {
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        assert!(!body.contains(&b'\n'), "one message per line");
        let value: Value = serde_json::from_slice(body).expect("valid JSON");
        let messages = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for message in messages {
            assert_eq!(message["jsonrpc"], "2.0");
            assert!(message.get("params").is_none_or(Value::is_object));
            if message.get("method").is_some() {
                continue;
            }
            let Some(id) = message["id"].as_i64() else {
                // Errors about messages whose id could not be read.
                assert!(
                    message["id"].is_null() || message["id"].is_string(),
                    "{message}"
                );
                continue;
            };
            assert!(!self.answered.contains(&id), "two responses for id {id}");
            assert!(
                !self.cancelled.contains(&id) || self.batched.contains(&id),
                "a response for cancelled id {id}"
            );
            assert!(
                self.open_requests.remove(&id),
                "a response for unknown id {id}"
            );
            self.answered.insert(id);
        }
    }

    /// The client writes one message; the core gets it when it wants client bytes.
    fn client_writes(&mut self, message: Vec<u8>) {
        if self.shutting_down {
            return;
        }
        self.held.push_back(message);
        self.drain();
    }

    /// Feeds one message (the core wants it, so it handles it at once).
    fn feed_client(&mut self, message: Vec<u8>) {
        if let Ok(value) = serde_json::from_slice::<Value>(&message) {
            self.note_sent(&value);
        }
        let now = self.now();
        self.server.handle_input(now, Input::ClientBytes(&message));
    }

    /// Records what a fed message asks for: request ids, and the latest lifecycle request
    /// per task.
    fn note_sent(&mut self, value: &Value) {
        let (items, batch) = match value {
            Value::Array(items) if self.version == "2025-03-26" && self.initialized => {
                (items.clone(), true)
            }
            Value::Array(_) => return,
            other => (vec![other.clone()], false),
        };
        for item in items {
            if let Some(id) = item["id"].as_i64() {
                self.open_requests.insert(id);
                if batch {
                    self.batched.insert(id);
                }
            }
            if item["method"] == "notifications/cancelled"
                && let Some(id) = item["params"]["requestId"].as_i64()
                && self.open_requests.contains(&id)
            {
                self.cancelled.insert(id);
            }
            let modern = item["params"]["_meta"]
                .get("io.modelcontextprotocol/protocolVersion")
                .is_some();
            let session_ok = self.initialized || modern;
            if item["method"] == "tools/call" && session_ok {
                let name = item["params"]["name"].as_str().unwrap_or("");
                let arguments = &item["params"]["arguments"];
                let reference = arguments["id"]
                    .as_str()
                    .or_else(|| {
                        (name == "start")
                            .then(|| arguments["name"].as_str())
                            .flatten()
                    })
                    .unwrap_or("");
                let task = reference
                    .strip_prefix('t')
                    .and_then(|n| n.parse::<u32>().ok());
                match (name, task) {
                    ("stop", Some(task)) => {
                        self.latest_is_stop.insert(task, (!batch).then_some(true));
                    }
                    ("restart" | "start", Some(task)) => {
                        self.latest_is_stop.insert(task, (!batch).then_some(false));
                    }
                    _ => {}
                }
            }
        }
    }

    fn tool_call(&mut self, op: ToolOp, modern: bool) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.sent.push(id);
        let (name, arguments) = self.arguments(op);
        let mut params = json!({"name": name, "arguments": arguments});
        if modern {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        if id % 3 == 0 {
            params["_meta"]["progressToken"] = json!(id);
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
    }

    fn arguments(&mut self, op: ToolOp) -> (&'static str, Value) {
        let started = self.next_task.max(1);
        let task = |t: u8| format!("t{}", u32::from(t) % started);
        match op {
            ToolOp::Start {
                stdin,
                tty,
                wait_for,
                max_runtime,
                notify,
                args,
                policy,
                idle,
                max_memory,
                wait_url,
            } => {
                let n = self.next_task;
                self.next_task += 1;
                let command = format!("cmd-{n}");
                let mut a = json!({"command": command, "name": format!("t{n}"), "stdin": stdin,
                    "notify_on_exit": notify, "tty": tty});
                if tty {
                    a["rows"] = json!(3);
                    a["cols"] = json!(10);
                }
                if args {
                    a["command"] = json!("prog");
                    a["args"] = json!([command]);
                }
                if wait_for {
                    a["wait_for"] = json!("ready");
                    a["wait_timeout_ms"] = json!(500);
                }
                if let Some(ms) = max_runtime {
                    a["max_runtime_ms"] = json!(u64::from(ms) * 10 + 1);
                }
                match policy % 4 {
                    1 => a["restart"] = json!("on-failure"),
                    2 => a["restart"] = json!("always"),
                    3 => {
                        a["restart"] = json!("on-failure");
                        a["max_restarts"] = json!(2);
                    }
                    _ => {}
                }
                if let Some(ms) = idle {
                    a["idle_timeout_ms"] = json!(u64::from(ms) * 20 + 1);
                }
                if max_memory {
                    a["max_memory_bytes"] = json!(1_000_000);
                }
                if wait_url {
                    a["wait_url"] = json!("http://127.0.0.1:8080/");
                    a["wait_timeout_ms"] = json!(700);
                }
                ("start", a)
            }
            ToolOp::Stop {
                task: t,
                grace,
                kill,
            } => (
                "stop",
                json!({"id": task(t), "grace_ms": u64::from(grace) * 5, "force": kill}),
            ),
            ToolOp::Restart { task: t } => ("restart", json!({"id": task(t)})),
            ToolOp::Wait {
                task: t,
                pattern,
                port,
                url,
                quiet,
                timeout,
            } => {
                let mut a = json!({"id": task(t), "timeout_ms": u64::from(timeout) * 10 + 1});
                if pattern {
                    a["pattern"] = json!("ready|x");
                }
                if port {
                    a["port"] = json!(8080);
                }
                if url {
                    a["url"] = json!("http://localhost:8080/health");
                }
                if let Some(ms) = quiet {
                    a["quiet_ms"] = json!(u64::from(ms) + 1);
                }
                ("wait", a)
            }
            ToolOp::Write {
                task: t,
                len,
                eof,
                keys,
                then,
            } => {
                let mut a =
                    json!({"id": task(t), "data": "w".repeat(usize::from(len) * 3), "eof": eof});
                if keys {
                    a["keys"] = json!(["Enter", "Up", "Ctrl-C"]);
                }
                match then % 4 {
                    1 => a["prompt"] = json!(true),
                    2 => a["quiet_ms"] = json!(u64::from(len) + 1),
                    3 => a["wait_for"] = json!("ready"),
                    _ => {}
                }
                if then % 4 != 0 {
                    a["timeout_ms"] = json!(u64::from(len) * 10 + 1);
                }
                ("write", a)
            }
            ToolOp::Screen { task: t, png } => (
                "screen",
                json!({"id": task(t), "format": if png { "png" } else { "text" }}),
            ),
            ToolOp::Resize {
                task: t,
                rows,
                cols,
            } => (
                "resize",
                json!({"id": task(t), "rows": u64::from(rows % 8) + 1, "cols": u64::from(cols % 40) + 1}),
            ),
            ToolOp::Signal { task: t } => ("signal", json!({"id": task(t), "signal": "SIGINT"})),
            ToolOp::Logs {
                task: t,
                max_bytes,
                since,
            } => {
                let mut a = json!({"id": task(t), "max_bytes": u64::from(max_bytes) + 1});
                if let Some(since) = since {
                    a["since"] = json!(since);
                }
                ("logs", a)
            }
            ToolOp::Status { task: t } => ("status", json!({"id": task(t)})),
            ToolOp::List => ("list", json!({})),
            ToolOp::Remove { task: t } => ("remove", json!({"id": task(t)})),
            ToolOp::Bad { which } => match which % 4 {
                0 => ("start", json!({"command": ""})),
                1 => ("logs", json!({"id": "t0", "head": 1, "tail": 1})),
                2 => ("start", json!({"command": "x", "env": {"A=B": "c"}})),
                _ => ("nope", json!({})),
            },
        }
    }

    /// A run the model knows, picked by `which`, among those `pick` accepts.
    fn pick_run(&self, which: u8, pick: impl Fn(&Run) -> bool) -> Option<RunId> {
        let runs: Vec<RunId> = self
            .live
            .iter()
            .filter(|(_, r)| pick(r))
            .map(|(id, _)| *id)
            .collect();
        (!runs.is_empty()).then(|| runs[usize::from(which) % runs.len()])
    }

    fn step(&mut self, op: Op) {
        if self.exited {
            return;
        }
        match op {
            Op::Initialize { version } => {
                let version = VERSIONS[usize::from(version) % VERSIONS.len()];
                let id = self.next_id;
                self.next_id += 1;
                if !self.initialized {
                    self.initialized = true;
                    self.version = if version == "x" {
                        "2025-11-25"
                    } else {
                        version
                    };
                }
                let message = json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
                    "params": {"protocolVersion": version, "capabilities": {}}});
                self.send(&message);
            }
            Op::Call(tool) => {
                let message = self.tool_call(tool, false);
                self.send(&message);
            }
            Op::Modern(tool) => {
                let message = self.tool_call(tool, true);
                self.send(&message);
            }
            Op::Batch(tools) => {
                let calls: Vec<Value> = tools
                    .into_iter()
                    .take(3)
                    .map(|t| self.tool_call(t, false))
                    .collect();
                if !calls.is_empty() {
                    self.send(&Value::Array(calls));
                }
            }
            Op::Listen => {
                let id = self.next_id;
                self.next_id += 1;
                self.sent.push(id);
                let message = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
                    "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {}},
                    "notifications": {"resourcesListChanged": true,
                        "resourceSubscriptions": ["proc://t0/output", "proc://t1/output"]}}});
                self.send(&message);
            }
            Op::Resource { task, subscribe } => {
                let id = self.next_id;
                self.next_id += 1;
                let method = if subscribe {
                    "resources/subscribe"
                } else {
                    "resources/read"
                };
                let message = json!({"jsonrpc": "2.0", "id": id, "method": method,
                    "params": {"uri": format!("proc://t{}/output", u32::from(task) % self.next_task.max(1))}});
                self.send(&message);
            }
            Op::Cancel { request } => {
                if self.sent.is_empty() {
                    return;
                }
                let id = self.sent[usize::from(request) % self.sent.len()];
                let message = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": id}});
                self.send(&message);
            }
            Op::Raw(mut bytes) => {
                bytes.truncate(256);
                bytes.retain(|b| *b != b'\n');
                // An id read from a broken message would be answered: not ours to track.
                if bytes.windows(4).any(|w| w == b"\"id\"") {
                    return;
                }
                bytes.push(b'\n');
                // Never a well-formed request of ours: ids we track are ours alone.
                if serde_json::from_slice::<Value>(&bytes).is_ok() {
                    return;
                }
                self.client_writes(bytes);
            }
            Op::Spawned { which, pid } => {
                if self.spawning.is_empty() {
                    return;
                }
                let (run, _) = self
                    .spawning
                    .remove(usize::from(which) % self.spawning.len());
                let tty = self.terminals.contains(&run);
                self.live.insert(
                    run,
                    Run {
                        tty,
                        streams: [true, !tty],
                        ..Run::default()
                    },
                );
                self.input(Input::Spawned {
                    run,
                    pid: u32::from(pid) + 2,
                });
            }
            Op::SpawnFailed { which } => {
                if self.spawning.is_empty() {
                    return;
                }
                let (run, _) = self
                    .spawning
                    .remove(usize::from(which) % self.spawning.len());
                self.input(Input::SpawnFailed {
                    run,
                    error: "no".into(),
                });
            }
            Op::Output {
                which,
                stderr,
                text,
            } => {
                let Some(run) = self.pick_run(which, |r| r.streams.iter().any(|s| *s)) else {
                    return;
                };
                let tty = self.live.get(&run).is_some_and(|r| r.tty);
                let stream = match (tty, stderr) {
                    (true, _) => Stream::Tty,
                    (false, true) => Stream::Stderr,
                    (false, false) => Stream::Stdout,
                };
                let bytes = match text % 4 {
                    0 => b"ready\n".to_vec(),
                    1 => b"partial".to_vec(),
                    2 => vec![b'y'; usize::from(text) * 7],
                    _ => b"a\nb\r\nc\x1b[31m\n".to_vec(),
                };
                self.input(Input::ProcessOutput {
                    run,
                    stream,
                    bytes: &bytes,
                });
            }
            Op::Closed { which, stderr } => {
                let index = usize::from(stderr);
                let Some(run) = self.pick_run(which, |r| r.streams[index]) else {
                    return;
                };
                if let Some(r) = self.live.get_mut(&run) {
                    r.streams[index] = false;
                }
                let tty = self.live.get(&run).is_some_and(|r| r.tty);
                let stream = match (tty, stderr) {
                    (true, _) => Stream::Tty,
                    (false, true) => Stream::Stderr,
                    (false, false) => Stream::Stdout,
                };
                self.input(Input::StreamClosed { run, stream });
            }
            Op::Exited {
                which,
                code,
                signalled,
            } => {
                let Some(run) = self.pick_run(which, |r| !r.exited && r.writing.is_none()) else {
                    return;
                };
                if let Some(r) = self.live.get_mut(&run) {
                    r.exited = true;
                }
                let status = if code == i8::MIN {
                    ExitStatus::Lost
                } else if code < 0 {
                    ExitStatus::Signaled(Signal::Term)
                } else {
                    ExitStatus::Code(i32::from(code))
                };
                self.input(Input::Exited {
                    run,
                    status,
                    signalled,
                });
            }
            Op::StdinWritten { which, part, fail } => {
                let Some(run) = self.pick_run(which, |r| r.writing.is_some()) else {
                    return;
                };
                let Some(r) = self.live.get_mut(&run) else {
                    return;
                };
                let Some(len) = r.writing.take() else {
                    return;
                };
                let result = if fail {
                    Err("closed".to_owned())
                } else {
                    let n = len * usize::from(part % 5) / 4;
                    r.blocked = n < len;
                    Ok(n.min(len))
                };
                self.input(Input::StdinWritten { run, result });
            }
            Op::StdinReady { which } => {
                let Some(run) = self.pick_run(which, |r| r.blocked && r.writing.is_none()) else {
                    return;
                };
                if let Some(r) = self.live.get_mut(&run) {
                    r.blocked = false;
                }
                self.input(Input::StdinReady { run });
            }
            Op::Probe {
                which,
                open,
                status,
            } => {
                if self.probes.is_empty() {
                    return;
                }
                let probe = self.probes.remove(usize::from(which) % self.probes.len());
                let outcome = match (open, status % 700) {
                    (true, 0..100) => ProbeOutcome::Open,
                    (true, status) => ProbeOutcome::Http(status),
                    (false, _) => ProbeOutcome::Failed("refused".into()),
                };
                self.input(Input::Probed { probe, outcome });
            }
            Op::Inspected { found, rss, port } => {
                let Some(runs) = self.inspections.pop_front() else {
                    return;
                };
                let usage = runs
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| found & (1 << (i % 8)) != 0)
                    .map(|(_, run)| {
                        let listening = port
                            .then(|| Listener {
                                protocol: Protocol::Tcp,
                                address: std::net::IpAddr::from([127, 0, 0, 1]),
                                port: 8080,
                            })
                            .into_iter()
                            .collect();
                        let usage = Usage {
                            processes: 1,
                            cpu_ms: 10,
                            rss_bytes: u64::from(rss) * 10_000,
                            listening,
                        };
                        (run, usage)
                    })
                    .collect();
                self.input(Input::Inspected { usage });
            }
            Op::InputAnswer { which, wanted } => {
                if self.queries.is_empty() {
                    return;
                }
                let run = self.queries.remove(usize::from(which) % self.queries.len());
                self.input(Input::InputWanted { run, wanted });
            }
            Op::Sweep { which, found } => {
                if self.sweeps.is_empty() {
                    return;
                }
                let run = self.sweeps.remove(usize::from(which) % self.sweeps.len());
                let processes: Vec<EscapedProcess> = (0..found % 3)
                    .map(|_| {
                        self.next_escapee += 1;
                        self.escaped.push((run, self.next_escapee));
                        EscapedProcess {
                            pid: self.next_escapee,
                            command: "daemon".into(),
                        }
                    })
                    .collect();
                self.input(Input::Escaped { run, processes });
            }
            Op::EscapedExited { which } => {
                if self.escaped.is_empty() {
                    return;
                }
                let (run, pid) = self.escaped.remove(usize::from(which) % self.escaped.len());
                self.input(Input::EscapedExited { run, pid });
            }
            Op::Stale { run } => {
                let run = RunId(u64::from(run) + 1000);
                self.input(Input::Exited {
                    run,
                    status: ExitStatus::Code(0),
                    signalled: false,
                });
                self.input(Input::ProcessOutput {
                    run,
                    stream: Stream::Stdout,
                    bytes: b"late\n",
                });
            }
            Op::ToDeadline => {
                if let Some(deadline) = self.deadline {
                    self.now_ns = self.now_ns.max(deadline.as_nanos());
                    self.fire_timers();
                }
            }
            Op::Advance { ms } => {
                let target = self.now_ns + u64::from(ms) * 1_000_000;
                while let Some(deadline) = self.deadline.filter(|d| d.as_nanos() <= target) {
                    self.now_ns = self.now_ns.max(deadline.as_nanos());
                    self.fire_timers();
                    if self.exited {
                        return;
                    }
                }
                self.now_ns = target;
            }
            Op::Stall(stalled) => {
                self.stalled = stalled;
                self.drain();
            }
            Op::Eof => {
                self.shutting_down = true;
                self.held.clear();
                self.input(Input::ClientEof);
                assert!(!self.server.wants_client_bytes());
            }
            Op::Terminate => {
                self.shutting_down = true;
                self.held.clear();
                self.input(Input::Terminate);
            }
        }
    }

    /// The timer fires now: the deadlines that passed are handled, and none that has passed is
    /// asked for again (a busy timer would make a real driver spin).
    fn fire_timers(&mut self) {
        let now = self.now();
        self.server.handle_timeout(now);
        self.drain();
        if !self.exited
            && let Some(deadline) = self.deadline
        {
            assert!(
                deadline > now.instant,
                "a deadline that has passed is still asked for after handle_timeout"
            );
        }
    }

    fn send(&mut self, message: &Value) {
        let mut line = serde_json::to_vec(message).expect("serializable");
        line.push(b'\n');
        self.client_writes(line);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut model = Model::new();
    for op in ops.into_iter().take(400) {
        model.step(op);
    }
});

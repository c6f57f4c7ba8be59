//! The scripted driver shared by the core's integration tests: a [`Harness`] around one
//! [`Server`] on virtual time, and helpers to read what it sent.
#![allow(dead_code)] // each test binary uses a different subset

use proc_state::{Config, ExitStatus, Input, Instant, Now, Output, RunId, Server, Stream, Usage};
use serde_json::{Value, json};

/// A scripted driver around one server, on virtual time.
///
/// Time only moves in [`Harness::advance`], and then only to the deadlines the core asked for
/// (the last [`Output::Timeout`]), the way quinn-proto's test utilities do: a timer the core
/// forgot to arm is never fired by accident, so the test that needs it stalls and fails.
/// Every line the core transmits is reported written at once (the client reads), unless
/// [`Harness::stall`] says the client stopped reading.
pub struct Harness {
    pub server: Server,
    now_ns: u64,
    /// The deadline of the last `Output::Timeout`.
    deadline: Option<Instant>,
    /// The client does not read: transmitted bytes are not reported written.
    stalled: bool,
    /// Bytes transmitted and not yet reported written.
    unread: usize,
    /// Answer every `Sweep` at once with "nothing escaped" (a world without daemons), and
    /// leave the sweeps out of what [`Harness::drain`] returns.
    pub auto_sweep: bool,
    /// Sweeps not answered yet (when `auto_sweep` is off).
    pub sweeps: Vec<RunId>,
    /// Answer every `Inspect` at once with what [`Harness::usage`] says of each run, and leave
    /// the inspections out of what [`Harness::drain`] returns.
    pub auto_inspect: bool,
    /// What each run uses, as the auto-answered inspections report it (a run not here is left
    /// out: not measured).
    pub usage: std::collections::BTreeMap<RunId, Usage>,
    /// Inspections not answered yet (when `auto_inspect` is off).
    pub inspections: Vec<Vec<(RunId, u32)>>,
    /// The tool of every `tools/call` sent, by its id (as JSON text): each result's
    /// `structuredContent` is checked against that tool's `outputSchema`.
    calls: std::collections::HashMap<String, String>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let mut counter = 0u32;
        let ids = Box::new(move || {
            counter += 1;
            format!("t{counter:05}")
        });
        Self {
            server: Server::new(config, ids),
            now_ns: 0,
            deadline: None,
            stalled: false,
            unread: 0,
            auto_sweep: true,
            sweeps: Vec::new(),
            auto_inspect: true,
            usage: std::collections::BTreeMap::new(),
            inspections: Vec::new(),
            calls: std::collections::HashMap::new(),
        }
    }

    pub fn now(&self) -> Now {
        Now::new(
            Instant::from_nanos(self.now_ns),
            1_790_000_000_000 + self.now_ns / 1_000_000,
        )
    }

    /// An initialized session at `version`.
    pub fn initialized(version: &str) -> Self {
        let mut h = Self::new();
        let reply = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
        assert_eq!(reply["result"]["protocolVersion"], version);
        h.send_raw(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
        assert!(h.drain().is_empty());
        h
    }

    pub fn input(&mut self, input: Input<'_>) -> Vec<Output> {
        let now = self.now();
        self.server.handle_input(now, input);
        self.drain()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let now = self.now();
        self.server.handle_input(now, Input::ClientBytes(bytes));
    }

    /// Every output up to the timeout (and, while the client reads, the outputs of reporting
    /// the transmitted lines written; with `auto_sweep`, of answering the sweeps).
    pub fn drain(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        let mut swept = Vec::new();
        let mut inspected: Vec<Vec<(RunId, u32)>> = Vec::new();
        loop {
            match self.server.poll_output() {
                Output::Timeout(deadline) => {
                    self.deadline = deadline;
                    let now = self.now();
                    if let Some(run) = swept.pop() {
                        let processes = Vec::new();
                        self.server
                            .handle_input(now, Input::Escaped { run, processes });
                        continue;
                    }
                    if !inspected.is_empty() {
                        let runs = inspected.remove(0);
                        let usage = runs
                            .iter()
                            .filter_map(|(run, _)| Some((*run, self.usage.get(run)?.clone())))
                            .collect();
                        self.server.handle_input(now, Input::Inspected { usage });
                        continue;
                    }
                    if self.stalled || self.unread == 0 {
                        return outputs;
                    }
                    let bytes = core::mem::take(&mut self.unread);
                    self.server.handle_input(now, Input::Transmitted { bytes });
                }
                other => {
                    match &other {
                        Output::Transmit(line) => {
                            self.unread += line.len();
                            self.check_results(line);
                        }
                        // Answered here and not shown: nothing ever escapes in this world.
                        Output::Sweep { run, .. } if self.auto_sweep => {
                            swept.push(*run);
                            continue;
                        }
                        Output::Sweep { run, .. } => self.sweeps.push(*run),
                        Output::Inspect { runs } if self.auto_inspect => {
                            inspected.push(runs.clone());
                            continue;
                        }
                        Output::Inspect { runs } => self.inspections.push(runs.clone()),
                        _ => {}
                    }
                    outputs.push(other);
                }
            }
        }
    }

    /// Checks the `structuredContent` of every tool result in `line` (a response or a batch)
    /// against the called tool's `outputSchema` (not on wasm32, where the validator is not
    /// built).
    fn check_results(&self, line: &[u8]) {
        let message: Value = serde_json::from_slice(line).unwrap();
        let responses = match message {
            Value::Array(items) => items,
            other => vec![other],
        };
        for response in responses {
            let (Some(id), Some(structured)) = (
                response.get("id"),
                response.pointer("/result/structuredContent"),
            ) else {
                continue;
            };
            if let Some(tool) = self.calls.get(&id.to_string()) {
                check_output_schema(tool, structured);
            }
        }
    }

    /// The client stops reading (`true`) or reads everything again (`false`).
    pub fn stall(&mut self, stalled: bool) -> Vec<Output> {
        self.stalled = stalled;
        self.drain()
    }

    pub fn send(&mut self, message: Value) -> Vec<Output> {
        let calls = match &message {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for call in calls {
            if call["method"] == "tools/call"
                && let (Some(id), Some(tool)) = (call.get("id"), call["params"]["name"].as_str())
            {
                self.calls.insert(id.to_string(), tool.to_owned());
            }
        }
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
        self.drain()
    }

    /// Sends a message and returns the one line it caused.
    pub fn request(&mut self, message: Value) -> Value {
        let lines = transmitted(&self.send(message));
        assert_eq!(lines.len(), 1, "expected one response, got {lines:?}");
        lines.into_iter().next().unwrap()
    }

    pub fn call(&mut self, id: i64, tool: &str, arguments: Value) -> Vec<Output> {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}))
    }

    /// Calls a tool that answers at once and returns its result.
    pub fn call_now(&mut self, tool: &str, arguments: Value) -> Value {
        let lines = transmitted(&self.call(99, tool, arguments));
        assert_eq!(lines.len(), 1, "expected one response, got {lines:?}");
        lines[0]["result"].clone()
    }

    /// Starts `command`, answers the spawn with `pid`, returns (run, result).
    pub fn start(&mut self, arguments: Value, pid: u32) -> (RunId, Value) {
        let outputs = self.call(1, "start", arguments);
        let run = spawned(&outputs)
            .unwrap_or_else(|| panic!("expected a spawn, got {outputs:?}"))
            .0;
        let lines = transmitted(&self.input(Input::Spawned { run, pid }));
        (run, lines[0]["result"].clone())
    }

    /// Lets `ms` milliseconds pass: fires, in order, every deadline the core asked for within
    /// them (and only those), then sets the clock to the end.
    pub fn advance(&mut self, ms: u64) -> Vec<Output> {
        let target = self.now_ns + ms * 1_000_000;
        let mut outputs = Vec::new();
        while let Some(deadline) = self.deadline.filter(|d| d.as_nanos() <= target) {
            self.now_ns = self.now_ns.max(deadline.as_nanos());
            let now = self.now();
            self.server.handle_timeout(now);
            outputs.extend(self.drain());
        }
        self.now_ns = target;
        outputs
    }

    /// The process exits with `status` (after the signals sent to it, if any) and closes both
    /// pipes.
    pub fn exit(&mut self, run: RunId, status: ExitStatus) -> Vec<Output> {
        let mut outputs = self.input(Input::Exited {
            run,
            status,
            signalled: true,
        });
        outputs.extend(self.input(Input::StreamClosed {
            run,
            stream: Stream::Stdout,
        }));
        outputs.extend(self.input(Input::StreamClosed {
            run,
            stream: Stream::Stderr,
        }));
        outputs
    }
}

/// The responses among the outputs (notifications left out).
pub fn transmitted(outputs: &[Output]) -> Vec<Value> {
    every_message(outputs)
        .into_iter()
        .filter(|m| m.is_array() || m.get("id").is_some())
        .collect()
}

/// The notifications among the outputs.
pub fn notifications(outputs: &[Output]) -> Vec<Value> {
    every_message(outputs)
        .into_iter()
        .filter(|m| m.get("method").is_some() && m.get("id").is_none())
        .collect()
}

/// The outputs without the coalesced `notifications/resources/list_changed`, for tests about
/// something else that let time pass after a start.
pub fn without_list_changed(outputs: Vec<Output>) -> Vec<Output> {
    const METHOD: &[u8] = b"notifications/resources/list_changed";
    outputs
        .into_iter()
        .filter(|o| {
            !matches!(o, Output::Transmit(line)
                if line.windows(METHOD.len()).any(|w| w == METHOD))
        })
        .collect()
}

/// Every line sent, parsed.
fn every_message(outputs: &[Output]) -> Vec<Value> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(line) => {
                assert_eq!(line.last(), Some(&b'\n'));
                assert_eq!(
                    line.iter().filter(|b| **b == b'\n').count(),
                    1,
                    "one line per message"
                );
                let text = std::str::from_utf8(line).unwrap();
                assert!(!text.contains("\"params\":null"), "params null in {text}");
                Some(serde_json::from_str(text).unwrap())
            }
            _ => None,
        })
        .collect()
}

/// The one spawn among the outputs.
pub fn spawned(outputs: &[Output]) -> Option<(RunId, proc_state::SpawnSpec)> {
    let mut spawns = outputs.iter().filter_map(|o| match o {
        Output::Spawn { run, spec } => Some((*run, spec.clone())),
        _ => None,
    });
    let first = spawns.next();
    assert!(spawns.next().is_none(), "one spawn expected: {outputs:?}");
    first
}

pub fn error_code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {response}"))
}

/// Output of `run` on stdout.
pub fn output(h: &mut Harness, run: RunId, bytes: &[u8]) -> Vec<Output> {
    h.input(Input::ProcessOutput {
        run,
        stream: Stream::Stdout,
        bytes,
    })
}

/// Fails when `structured` does not fit `tool`'s `outputSchema`.
#[cfg(not(target_family = "wasm"))]
fn check_output_schema(tool: &str, structured: &Value) {
    let Some(tool) = proc_state::tools::Tool::from_name(tool) else {
        return;
    };
    let schema = tool.definition(&Config::default())["outputSchema"].clone();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(structured)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "`{}` result does not fit its outputSchema: {errors:?}\n{structured}",
        tool.name()
    );
}

#[cfg(target_family = "wasm")]
fn check_output_schema(_: &str, _: &Value) {}

//! Shared helpers for the end-to-end tests (and `benches/figures.rs`):
//! - [`server_bin`]: the `proc-mcp` binary, built once per test binary (or `PROC_MCP_BIN`);
//! - [`RawServer`]: the binary driven over raw stdio lines, recording everything it writes;
//! - process inspection through `/proc`, `kill(2)` and pidfds, from the test kit shared with the
//!   crates' tests (`proc_testkit`, re-exported here);
//! - [`TempDir`].
//!
//! The rmcp-based client lives in [`client`].
#![allow(dead_code)] // each test binary uses a different subset

pub mod client;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use proc_testkit::{
    group_exists, id_of, is_alive, live_group_members, pid_of, proc_entry_exists, texts, vm_kib,
};
use serde_json::{Value, json};

/// How long any single response may take (generous: a loaded 2-core CI machine, debug build).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// "At once": the bound for answers that must not wait for anything (e.g. pre-`initialize`).
pub const AT_ONCE: Duration = Duration::from_secs(3);
/// Default bound for polling `status`/`logs` until something shows up.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The protocol version the raw tests speak unless they test another one.
pub const LATEST: &str = "2025-11-25";

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The `proc-mcp` binary under test: `PROC_MCP_BIN` if set, else built once with
/// `cargo build -p proc-mcp --bin proc-mcp` (`--release` when this code is built without
/// debug assertions, e.g. `cargo test --release` or `cargo bench`).
pub fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("PROC_MCP_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_server(),
    })
}

fn build_server() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = !cfg!(debug_assertions);
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "-p", "proc-mcp", "--bin", "proc-mcp"])
        .arg("--message-format=json-render-diagnostics");
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("could not run cargo to build proc-mcp");
    assert!(
        out.status.success(),
        "`cargo build -p proc-mcp --bin proc-mcp` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Cargo names the executable it built; fall back to <target dir>/<profile>/proc-mcp.
    let built = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "proc-mcp")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from));
    let bin = built.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target
            .join(if release { "release" } else { "debug" })
            .join("proc-mcp")
    });
    assert!(
        bin.is_file(),
        "built proc-mcp not found at {}",
        bin.display()
    );
    bin
}

/// A command for the server with the given CLI arguments and extra environment; inherited
/// `PROC_MCP_*` settings are removed so that a developer's shell cannot change the results,
/// except `PROC_MCP_RUNTIME`, which picks the driver the suite runs against
/// (`PROC_MCP_RUNTIME=async-std cargo test -p proc-mcp-suite`; smol when unset).
pub fn server_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(server_bin());
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PROC_MCP_") && key != "PROC_MCP_RUNTIME" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

// ---------------------------------------------------------------------------------------------
// Raw stdio harness
// ---------------------------------------------------------------------------------------------

/// The server driven over raw stdio: every line it writes to stdout is recorded (raw bytes,
/// newline included) so a test can assert that nothing but JSON-RPC ever appeared there.
///
/// Writes go through a thread, so a server that stops reading can never block a test: the
/// next read times out instead. Dropping it closes stdin, waits up to 5 s for the exit, then
/// SIGKILLs the server; when the test is panicking it prints the server's stderr.
pub struct RawServer {
    pub pid: u32,
    stdin: Option<Sender<Vec<u8>>>,
    stdout: Receiver<String>,
    stdout_eof: bool,
    stdout_log: Arc<Mutex<Vec<Vec<u8>>>>,
    stderr_log: Arc<Mutex<Vec<u8>>>,
    exit: Receiver<ExitStatus>,
    exit_status: Option<ExitStatus>,
    next_id: i64,
    /// Notifications and requests from the server seen while waiting for responses.
    pub notifications: Vec<Value>,
}

impl RawServer {
    /// Starts the server with default settings (no handshake yet).
    pub fn spawn() -> Self {
        Self::spawn_with(&[], &[])
    }

    /// Starts the server with CLI arguments and extra environment (no handshake yet).
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = server_command(args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", server_bin().display()));
        let pid = child.id();

        let mut stdin = child.stdin.take().expect("stdin");
        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || {
            for bytes in stdin_rx {
                if stdin
                    .write_all(&bytes)
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
            }
            // Dropping `stdin` here is the EOF the server sees.
        });

        let stdout_log = Arc::new(Mutex::new(Vec::new()));
        let (stdout_tx, stdout_rx) = mpsc::channel();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let log = Arc::clone(&stdout_log);
        thread::spawn(move || {
            loop {
                let mut line = Vec::new();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line)
                            .trim_end_matches('\n')
                            .to_owned();
                        log.lock().unwrap().push(line);
                        let _ = stdout_tx.send(text);
                    }
                }
            }
        });

        let stderr_log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let log = Arc::clone(&stderr_log);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                let mut log = log.lock().unwrap();
                log.extend_from_slice(&buf[..n]);
                let excess = log.len().saturating_sub(64 << 10);
                log.drain(..excess);
            }
        });

        let (exit_tx, exit_rx) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });

        RawServer {
            pid,
            stdin: Some(stdin_tx),
            stdout: stdout_rx,
            stdout_eof: false,
            stdout_log,
            stderr_log,
            exit: exit_rx,
            exit_status: None,
            next_id: 1,
            notifications: Vec::new(),
        }
    }

    /// Starts the server and completes the handshake with `version`.
    pub fn initialized(version: &str) -> Self {
        Self::initialized_with(version, &[], &[])
    }

    /// Starts the server with CLI arguments and environment, and completes the handshake.
    pub fn initialized_with(version: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut server = Self::spawn_with(args, env);
        server.initialize(version);
        server
    }

    /// `initialize` with `version` (asserting it is echoed), then `notifications/initialized`.
    pub fn initialize(&mut self, version: &str) -> Value {
        let result = self.result(
            "initialize",
            Some(json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "proc-mcp-suite", "version": "0"},
            })),
        );
        assert_eq!(
            result["protocolVersion"], version,
            "initialize result: {result}"
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        result
    }

    /// Writes `line` and a newline to the server's stdin.
    pub fn send_line(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.send_bytes(bytes);
    }

    /// Writes raw bytes to the server's stdin.
    pub fn send_bytes(&self, bytes: Vec<u8>) {
        self.stdin
            .as_ref()
            .expect("stdin already closed")
            .send(bytes)
            .expect("stdin writer thread is gone");
    }

    /// Writes one JSON message as a line.
    pub fn send(&self, message: &Value) {
        self.send_line(&message.to_string());
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next line on stdout, or `None` after `timeout` or at EOF.
    pub fn recv_line(&mut self, timeout: Duration) -> Option<String> {
        match self.stdout.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.stdout_eof = true;
                None
            }
        }
    }

    /// The next message on stdout; panics on timeout, EOF or a line that is not JSON.
    pub fn recv(&mut self, timeout: Duration) -> Value {
        let Some(line) = self.recv_line(timeout) else {
            if self.stdout_eof {
                let exit = self.wait_exit(Duration::from_secs(1));
                panic!("the server closed stdout instead of answering (exit status: {exit:?})");
            }
            panic!("no message from the server within {timeout:?}");
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("server wrote non-JSON ({e}): {line:?}"))
    }

    /// The next response (an object without `method`, or a batch array), setting aside
    /// notifications and requests from the server in [`Self::notifications`].
    pub fn next_response(&mut self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left);
            if msg.get("method").is_some() {
                self.notifications.push(msg);
            } else {
                return msg;
            }
        }
    }

    /// Sends a request with a fresh id and returns the whole response message (result or
    /// error), asserting that it carries that id.
    pub fn request_within(
        &mut self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Value {
        let id = self.next_id();
        let mut msg = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = params {
            msg["params"] = params;
        }
        self.send(&msg);
        let response = self.next_response(timeout);
        assert_eq!(
            response["id"], id,
            "response to {method} (id {id}) expected, got {response}"
        );
        response
    }

    /// [`Self::request_within`] with [`RESPONSE_TIMEOUT`].
    pub fn request(&mut self, method: &str, params: Option<Value>) -> Value {
        self.request_within(method, params, RESPONSE_TIMEOUT)
    }

    /// Sends a request and returns its `result`, panicking on an error response.
    pub fn result(&mut self, method: &str, params: Option<Value>) -> Value {
        let response = self.request(method, params);
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method}: no result in {response}"))
    }

    /// Sends a request and returns its `error`, panicking on a result.
    pub fn error(&mut self, method: &str, params: Option<Value>) -> Value {
        let response = self.request(method, params);
        response
            .get("error")
            .cloned()
            .unwrap_or_else(|| panic!("{method}: expected an error, got {response}"))
    }

    /// `tools/call`: the whole `CallToolResult` object.
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        self.result(
            "tools/call",
            Some(json!({"name": name, "arguments": arguments})),
        )
    }

    /// `tools/call` that must succeed: its `structuredContent`.
    pub fn call(&mut self, name: &str, arguments: Value) -> Value {
        let result = self.call_tool(name, arguments.clone());
        assert_ne!(
            result["isError"], true,
            "{name} {arguments} failed: {result}"
        );
        result
            .get("structuredContent")
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no structuredContent in {result}"))
    }

    /// `tools/call` that must be a tool execution error (`isError: true`): its text.
    pub fn call_err(&mut self, name: &str, arguments: Value) -> String {
        let result = self.call_tool(name, arguments.clone());
        assert_eq!(
            result["isError"], true,
            "{name} {arguments} should fail: {result}"
        );
        tool_text(&result)
    }

    /// Calls `tool` every [`POLL_INTERVAL`] until `done(structuredContent)`, for at most
    /// `timeout`; returns the last structuredContent.
    pub fn poll(
        &mut self,
        tool: &str,
        arguments: Value,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.call(tool, arguments.clone());
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "gave up after {timeout:?} polling {tool} {arguments}; last: {value}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Polls `status` until the task's state is `exited`; returns that status.
    pub fn wait_exited(&mut self, id: &str) -> Value {
        self.poll("status", json!({"id": id, "tail": 0}), POLL_TIMEOUT, |s| {
            s["state"] == "exited"
        })
    }

    /// `ping` must still be answered with `{}`: the session is alive.
    pub fn assert_alive(&mut self) {
        assert_eq!(
            self.result("ping", None),
            json!({}),
            "server stopped answering ping"
        );
        assert!(self.exit.try_recv().is_err(), "server exited");
    }

    /// The next server message whose `method` is `method` (seen earlier or arriving within
    /// `timeout`).
    pub fn wait_notification(&mut self, method: &str, timeout: Duration) -> Value {
        if let Some(found) = self.notifications.iter().find(|n| n["method"] == method) {
            return found.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left);
            let found = msg["method"] == method;
            self.notifications.push(msg.clone());
            if found {
                return msg;
            }
        }
    }

    /// Closes the server's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The server's exit status, if it exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self.exit.recv_timeout(timeout).ok();
        }
        self.exit_status
    }

    /// Reads stdout until EOF (within `timeout`), keeping any messages as notifications;
    /// true when EOF was reached.
    pub fn drain_to_eof(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.stdout_eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(Ok(msg)) = self.recv_line(left).map(|l| serde_json::from_str(&l)) {
                self.notifications.push(msg);
            }
        }
        true
    }

    /// Closes stdin, expects a clean exit within 5 s and stdout at EOF, and checks everything
    /// the server ever wrote to stdout (see [`assert_jsonrpc_lines`]).
    pub fn finish(mut self) {
        self.close_stdin();
        let status = self.wait_exit(Duration::from_secs(5));
        assert!(
            status.is_some(),
            "server did not exit within 5 s of stdin EOF"
        );
        assert!(
            self.drain_to_eof(Duration::from_secs(5)),
            "stdout stayed open after exit"
        );
        assert_jsonrpc_lines(&self.stdout_lines());
    }

    /// Every line written to stdout so far, raw (newline included when there was one).
    pub fn stdout_lines(&self) -> Vec<Vec<u8>> {
        self.stdout_log.lock().unwrap().clone()
    }

    /// What the server wrote to stderr (the last 64 KiB).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr_log.lock().unwrap()).into_owned()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.close_stdin();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            self.wait_exit(Duration::from_secs(5));
        }
        if thread::panicking() {
            let lines = self.stdout_lines();
            let from = lines.len().saturating_sub(10);
            eprintln!(
                "--- proc-mcp (pid {}) exit: {:?}",
                self.pid, self.exit_status
            );
            for line in &lines[from..] {
                let line = String::from_utf8_lossy(line);
                eprintln!("--- stdout: {}", truncate(&line, 2000));
            }
            eprintln!("--- stderr:\n{}", self.stderr());
        }
    }
}

/// Asserts that every line is a `\n`-terminated UTF-8 JSON-RPC 2.0 message (or batch of
/// them) and that none carries `"params": null`.
pub fn assert_jsonrpc_lines(lines: &[Vec<u8>]) {
    for (i, raw) in lines.iter().enumerate() {
        let shown = String::from_utf8_lossy(raw);
        let shown = truncate(&shown, 500);
        assert!(
            raw.ends_with(b"\n"),
            "stdout line {i} is not newline-terminated: {shown}"
        );
        let text = std::str::from_utf8(raw)
            .unwrap_or_else(|_| panic!("stdout line {i} is not UTF-8: {shown}"));
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("stdout line {i} is not JSON ({e}): {shown}"));
        let messages = match &value {
            Value::Array(batch) => batch.iter().collect(),
            single => vec![single],
        };
        for msg in messages {
            assert_eq!(
                msg["jsonrpc"], "2.0",
                "stdout line {i} is not JSON-RPC 2.0: {shown}"
            );
            assert_ne!(
                msg.get("params"),
                Some(&Value::Null),
                "stdout line {i} has \"params\": null: {shown}"
            );
        }
    }
}

/// The text of a `CallToolResult`'s first text block.
pub fn tool_text(result: &Value) -> String {
    result["content"]
        .as_array()
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "text"))
        .and_then(|b| b["text"].as_str())
        .unwrap_or_else(|| panic!("no text content in {result}"))
        .to_owned()
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Waits (bounded by `timeout`) until no live process is left in group `pgid`, by pidfd on
/// each member ([`proc_testkit::wait_group_gone`]): processes outside the server's reach
/// (reparented grandchildren) may take a moment to die after their signal.
#[track_caller]
pub fn assert_group_gone(pgid: i32, timeout: Duration) {
    if let Err(members) = proc_testkit::wait_group_gone(pgid, timeout) {
        panic!("process group {pgid} still has live members after {timeout:?}: {members:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("proc-mcp-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a `&str` (for JSON arguments).
    pub fn str(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

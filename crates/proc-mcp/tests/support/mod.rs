//! A small raw-stdio client for the binary's own tests: start `proc-mcp` (with a hook that runs
//! in its process before exec, to give it leaked descriptors or lower limits) and call tools.
//! Processes are looked at through the test kit (`proc_testkit`).
#![allow(dead_code)] // each test file uses a different subset

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use proc_testkit::{Lines, texts, wait_child, wait_terminated, wait_until};
use serde_json::{Value, json};

/// Every runtime the binary offers (`--runtime`), for tests that must hold under each.
pub const RUNTIMES: [&str; 2] = ["smol", "async-std"];

/// How long one response may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to exit once told to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The server under test, driven over raw JSON-RPC lines.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines,
    next_id: i64,
    runtime: String,
}

impl Server {
    /// Starts the server with `runtime` and completes the MCP handshake.
    pub fn start(runtime: &str) -> Self {
        Self::start_with(runtime, &[], || Ok(()))
    }

    /// As [`Server::start`], with extra arguments and `before_exec` run in the server's process
    /// between fork and exec (async-signal-safe calls only).
    pub fn start_with(
        runtime: &str,
        args: &[&str],
        before_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proc-mcp"));
        command
            .args(args)
            .env("PROC_MCP_RUNTIME", runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: the callers' hooks only make async-signal-safe system calls.
        unsafe { command.pre_exec(before_exec) };
        let mut child = command.spawn().expect("start proc-mcp");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Lines::new(stdout, &format!("proc-mcp ({runtime})"));
        let mut server = Self {
            stdin: child.stdin.take(),
            child,
            lines,
            next_id: 0,
            runtime: runtime.to_owned(),
        };
        server.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "proc-mcp-tests", "version": "0"},
            }),
        );
        server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{message}").expect("write to proc-mcp");
    }

    /// Sends a request and returns its `result`.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.next_within(left).unwrap_or_else(|| {
                panic!(
                    "{}: proc-mcp ended instead of answering {method}",
                    self.runtime
                )
            });
            let message: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
            if message["id"] == id {
                assert!(
                    message.get("error").is_none(),
                    "{}: {method} failed: {message}",
                    self.runtime
                );
                return message["result"].clone();
            }
        }
    }

    /// Calls a tool that must succeed; its `structuredContent`.
    pub fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.request(
            "tools/call",
            json!({"name": tool, "arguments": arguments.clone()}),
        );
        assert_ne!(
            result["isError"], true,
            "{}: {tool} {arguments}: {result}",
            self.runtime
        );
        result["structuredContent"].clone()
    }

    /// Polls `status` until the task has exited.
    pub fn wait_exited(&mut self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.call("status", json!({"id": id, "tail": 0}));
            if status["state"] == "exited" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: task {id} did not exit: {status}",
                self.runtime
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `logs` until the task has printed the line `text`.
    pub fn wait_for_line(&mut self, id: &str, text: &str) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.log_texts(id).iter().any(|line| line == text)
        });
        assert!(ok, "{}: task {id} did not print {text:?}", self.runtime);
    }

    /// The text of every line of a task's output.
    pub fn log_texts(&mut self, id: &str) -> Vec<String> {
        texts(&self.call("logs", json!({"id": id})))
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("kill proc-mcp");
        wait_child(&mut self.child, EXIT_TIMEOUT, "proc-mcp after SIGKILL");
    }

    /// Closes stdin and expects the server to exit 0 within [`EXIT_TIMEOUT`].
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let what = format!("proc-mcp ({}) after stdin EOF", self.runtime);
        let status = wait_child(&mut self.child, EXIT_TIMEOUT, &what);
        assert_eq!(status.code(), Some(0), "{}", self.runtime);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            // Reaped only once it is gone: a drop must not block (nor panic while panicking).
            if wait_terminated(self.pid(), EXIT_TIMEOUT) {
                let _ = self.child.wait();
            }
        }
    }
}

//! A small raw-stdio client for the binary's own tests: start `proc-mcp` (with a hook that runs
//! in its process before exec, to give it leaked descriptors or lower limits), call tools, and
//! look at processes through `/proc`.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Every runtime the binary offers (`--runtime`), for tests that must hold under each.
pub const RUNTIMES: [&str; 2] = ["smol", "async-std"];

/// How long one response may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// The server under test, driven over raw JSON-RPC lines.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
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
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
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
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("{}: no answer to {method} within the timeout", self.runtime)
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
        let logs = self.call("logs", json!({"id": id}));
        logs["lines"]
            .as_array()
            .unwrap_or_else(|| panic!("no lines in {logs}"))
            .iter()
            .map(|line| line["text"].as_str().expect("text").to_owned())
            .collect()
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("kill proc-mcp");
        self.child.wait().expect("reap proc-mcp");
    }

    /// Closes stdin and expects the server to exit 0 within 20 s.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let ok = wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            ok,
            "{}: proc-mcp did not exit after stdin EOF",
            self.runtime
        );
        let status = self.child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "{}", self.runtime);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A task's pid from a `start` result.
pub fn pid_of(task: &Value) -> i32 {
    i32::try_from(task["pid"].as_i64().expect("pid")).expect("pid fits")
}

/// A task's id from a `start` result.
pub fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("id").to_owned()
}

/// The open descriptors of process `pid`, in order (from `/proc/<pid>/fd`).
pub fn read_fd_dir(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The soft and hard `Max open files` of process `pid` (from `/proc/<pid>/limits`).
pub fn limits_of(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("Max open files");
    let mut numbers = line
        .split_whitespace()
        .filter_map(|word| word.parse::<u64>().ok());
    (numbers.next().expect("soft"), numbers.next().expect("hard"))
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// Polls `done` every 10 ms for at most `timeout`; whether it became true.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

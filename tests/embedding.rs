//! proc-state embedded without an async runtime: `examples/std_driver.rs` (std threads,
//! channels and poll(2)) serves the end-to-end suite's main scenario over stdio: start an HTTP
//! server, read its port from `logs`, fetch a page, `stop` it, its process group gone; then it
//! exits 0 when the client closes stdin. Also its stdin path (short writes, room again, EOF)
//! and SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpgid};
use serde_json::{Value, json};

/// Bound for any one response, and for the server's exit (a loaded 2-core machine, debug build).
const TIMEOUT: Duration = Duration::from_secs(15);

/// The example, built once per test binary: cargo builds examples for `cargo test` only when no
/// target is named, so `cargo test --test embedding` would not.
fn example_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "-p", "proc-mcp-suite", "--example", "std_driver"])
            .arg("--message-format=json-render-diagnostics");
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let out = command.stdin(Stdio::null()).output().expect("run cargo");
        assert!(
            out.status.success(),
            "building the example failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "std_driver")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from));
        built.expect("cargo named the example's executable")
    })
}

/// The example serving MCP over its stdio, with a small JSON-RPC client. Writes go through a
/// thread and reads come through one, so no call can hang: each read has a deadline. Dropping
/// it kills the server if it still runs (its tasks die with it: parent-death signal).
struct StdDriver {
    pid: Pid,
    stdin: Option<Sender<Vec<u8>>>,
    lines: Receiver<String>,
    exit: Receiver<ExitStatus>,
    exited: bool,
    next_id: u64,
}

impl StdDriver {
    /// Starts the example and completes the handshake (2025-11-25).
    fn initialized() -> Self {
        let mut child = Command::new(example_bin())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let pid = Pid::from_raw(child.id().cast_signed());
        let (stdin, to_write) = mpsc::channel::<Vec<u8>>();
        let mut pipe = child.stdin.take().expect("stdin");
        thread::spawn(move || {
            for bytes in to_write {
                if pipe.write_all(&bytes).is_err() {
                    return;
                }
            }
            // Dropping the pipe here is the end-of-file the server sees.
        });
        let (read, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if read.send(line).is_err() {
                    return;
                }
            }
        });
        let (exited, exit) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exited.send(status);
            }
        });
        let mut server = StdDriver {
            pid,
            stdin: Some(stdin),
            lines,
            exit,
            exited: false,
            next_id: 1,
        };
        let init = server.result(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "embedding", "version": "0"}}),
        );
        assert_eq!(init["protocolVersion"], "2025-11-25", "{init}");
        assert_eq!(
            init["serverInfo"]["name"], "proc-state-std-driver",
            "{init}"
        );
        server.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&self, message: &Value) {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        let stdin = self.stdin.as_ref().expect("stdin open");
        stdin.send(line).expect("the writer thread runs");
    }

    /// Sends a request and returns its result, setting notifications aside.
    fn result(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|err| panic!("no response to {method} within {TIMEOUT:?}: {err}"));
            let message: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
            if message.get("method").is_none() {
                assert_eq!(message["id"], id, "response to {method}: {message}");
                return message["result"].clone();
            }
        }
    }

    /// `tools/call` that must succeed: its `structuredContent`.
    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let params = json!({"name": tool, "arguments": arguments});
        let result = self.result("tools/call", params);
        assert_ne!(result["isError"], true, "{tool} {arguments}: {result}");
        result["structuredContent"].clone()
    }

    /// Waits (bounded) for the server to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let status = self.exit.recv_timeout(TIMEOUT).expect("the server exited");
        self.exited = true;
        status
    }
}

impl Drop for StdDriver {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}

/// A fresh directory under cargo's temporary directory for this test binary.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("embedding-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

fn pid_of(task: &Value) -> Pid {
    let pid = task["pid"].as_i64().expect("a pid");
    Pid::from_raw(i32::try_from(pid).expect("a pid fits an i32"))
}

/// Whether any process is left in process group `pgid` (kill(2) with signal 0).
fn group_exists(pgid: Pid) -> bool {
    match kill(Pid::from_raw(-pgid.as_raw()), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(err) => panic!("kill(-{pgid}, 0): {err}"),
    }
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the task");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    response
}

#[test]
fn serves_an_http_server_task_and_stops_its_group() {
    let dir = temp_dir("http");
    std::fs::write(dir.join("hello.txt"), "hello from a std driver\n").unwrap();
    let mut server = StdDriver::initialized();

    let task = server.call(
        "start",
        json!({"command": "python3", "args": ["-m", "http.server", "0", "--bind", "127.0.0.1"],
               "cwd": dir, "wait_for": "Serving HTTP"}),
    );
    assert_eq!(task["state"], "running", "{task}");
    assert_eq!(task["ready"]["matched"], true, "{task}");
    let (id, pid) = (task["id"].clone(), pid_of(&task));
    // A process group of its own, led by the task's process.
    assert_eq!(getpgid(Some(pid)), Ok(pid));

    let logs = server.call("logs", json!({"id": id}));
    let port = logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|line| line["text"].as_str())
        .find_map(|text| text.split_once("Serving HTTP on 127.0.0.1 port "))
        .and_then(|(_, rest)| rest.split(' ').next()?.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {logs}"));
    let response = http_get(port, "/hello.txt");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nhello from a std driver\n"),
        "{response}"
    );
    // The request's log line reaches the task's output.
    let since = logs["next_cursor"].clone();
    let pattern = "\"GET /hello.txt HTTP/1.0\" 200";
    let seen = server.call(
        "wait",
        json!({"id": id, "pattern": pattern, "since": since, "timeout_ms": 10_000}),
    );
    assert_eq!(seen["reason"], "matched", "{seen}");

    assert!(group_exists(pid));
    let stopped = server.call("stop", json!({"id": id}));
    assert_eq!(stopped["state"], "exited", "{stopped}");
    assert_eq!(stopped["stopped"], true, "{stopped}");
    assert_eq!(
        stopped["escalated"], false,
        "python ends on SIGTERM: {stopped}"
    );
    // Released, so reaped, before `stop` answered: nothing of the group is left.
    assert!(!group_exists(pid), "process group {pid} outlived stop");

    server.stdin = None;
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn writes_more_than_a_pipe_holds_then_closes_stdin() {
    let dir = temp_dir("write");
    let mut server = StdDriver::initialized();
    // Reads nothing until the file `go` exists, then one line, then counts every byte up to
    // end-of-file: the write is answered while the pipe is full.
    let task = server.call(
        "start",
        json!({"command": "while [ ! -e go ]; do sleep 0.01; done; read -r first; wc -c",
               "stdin": true, "cwd": dir}),
    );
    let id = task["id"].clone();
    let data = format!("go\n{}", "x".repeat(299_997));
    let written = server.call("write", json!({"id": id, "data": data, "eof": true}));
    // A pipe holds less: the rest goes as the task reads (after the driver's "room again").
    assert!(written["bytes_queued"].as_u64() > Some(0), "{written}");
    std::fs::write(dir.join("go"), "").unwrap();
    let ended = server.call("wait", json!({"id": id, "timeout_ms": 10_000}));
    assert_eq!(ended["reason"], "exited", "{ended}");
    assert_eq!(ended["exit_code"], 0, "{ended}");
    let logs = server.call("logs", json!({"id": id}));
    let text = logs["lines"][0]["text"].as_str().unwrap_or_default();
    assert_eq!(text.trim(), "299997", "{logs}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stops_its_tasks_and_exits_on_sigterm() {
    let mut server = StdDriver::initialized();
    // One process (no shell, which would fork it): a grandchild would be reaped by init, at
    // its own pace, after the server has gone.
    let task = server.call("start", json!({"command": "sleep", "args": ["1000"]}));
    let pid = pid_of(&task);
    assert!(group_exists(pid));
    kill(server.pid, Signal::SIGTERM).expect("signal the server");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        !group_exists(pid),
        "process group {pid} outlived the server"
    );
}

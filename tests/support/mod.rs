//! Helpers for the end-to-end tests (`wait.rs`, `interactive.rs`, `terminal.rs`, `interop.rs`), on top of
//! [`crate::common`]:
//! - raw requests whose messages are collected with their arrival times ([`Exchange`]);
//! - ports and HTTP for dev-server scenarios;
//! - the real third-party clients (Python SDK in a venv, TypeScript SDK via npm), installed
//!   once, pinned, under `<target>/interop`, and a runner for their scripts.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::common::{RESPONSE_TIMEOUT, RawServer, truncate};

/// The 2026-07-28 (stateless) protocol version.
pub const STATELESS: &str = "2026-07-28";

// ---------------------------------------------------------------------------------------------
// Raw requests with timed messages
// ---------------------------------------------------------------------------------------------

/// Everything the server wrote while one request was outstanding.
pub struct Exchange {
    /// The response to the request.
    pub response: Value,
    /// When the request was sent.
    pub sent: Instant,
    /// When the response arrived.
    pub answered: Instant,
    /// Every other message (notifications, other responses), with its arrival time.
    pub others: Vec<(Instant, Value)>,
}

impl Exchange {
    /// The `result`, panicking on an error response.
    #[track_caller]
    pub fn result(&self) -> &Value {
        assert!(
            self.response.get("error").is_none(),
            "error response: {}",
            self.response
        );
        &self.response["result"]
    }

    /// The `structuredContent` of a `tools/call` that must have succeeded.
    #[track_caller]
    pub fn structured(&self) -> &Value {
        let result = self.result();
        assert_ne!(result["isError"], true, "tool error: {result}");
        let Some(structured) = result.get("structuredContent") else {
            panic!("no structuredContent in {result}");
        };
        structured
    }

    /// The notifications with `method`, with their arrival times.
    pub fn notifications(&self, method: &str) -> Vec<(Instant, &Value)> {
        self.others
            .iter()
            .filter(|(_, m)| m["method"] == method)
            .map(|(at, m)| (*at, m))
            .collect()
    }

    /// How long the request took.
    pub fn elapsed(&self) -> Duration {
        self.answered - self.sent
    }
}

/// Sends a request with a fresh id (params as given) and returns that id.
pub fn send_request(server: &mut RawServer, method: &str, params: Value) -> i64 {
    let id = server.next_id();
    server.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    id
}

/// Sends a `tools/call` carrying `meta` as `params._meta`; returns its id.
pub fn send_call(server: &mut RawServer, tool: &str, arguments: Value, meta: Value) -> i64 {
    send_request(
        server,
        "tools/call",
        json!({"name": tool, "arguments": arguments, "_meta": meta}),
    )
}

/// Reads messages until the response to `id` (within `timeout`), keeping everything else with
/// its arrival time.
#[track_caller]
pub fn collect_until_response(server: &mut RawServer, id: i64, timeout: Duration) -> Exchange {
    let sent = Instant::now();
    let deadline = sent + timeout;
    let mut others = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = server.recv(left);
        let at = Instant::now();
        if msg.get("method").is_none() && msg["id"] == id {
            return Exchange {
                response: msg,
                sent,
                answered: at,
                others,
            };
        }
        others.push((at, msg));
    }
}

/// `tools/call` of a tool that may block for up to `blocks` (e.g. `wait` with its
/// `timeout_ms`): its `structuredContent`, which must not be a tool error.
#[track_caller]
pub fn call_blocking(
    server: &mut RawServer,
    tool: &str,
    arguments: Value,
    blocks: Duration,
) -> Value {
    let response = server.request_within(
        "tools/call",
        Some(json!({"name": tool, "arguments": arguments.clone()})),
        RESPONSE_TIMEOUT + blocks,
    );
    let Some(result) = response.get("result") else {
        panic!("{tool} {arguments}: {response}");
    };
    assert_ne!(
        result["isError"], true,
        "{tool} {arguments} failed: {result}"
    );
    result["structuredContent"].clone()
}

/// `wait` with `arguments` (its `timeout_ms` bounds how long the reply may take).
#[track_caller]
pub fn wait(server: &mut RawServer, arguments: Value) -> Value {
    let blocks = arguments["timeout_ms"].as_u64().unwrap_or(30_000);
    call_blocking(server, "wait", arguments, Duration::from_millis(blocks))
}

/// `wait` for a line (or a settled partial line) matching `pattern` from `since`; the line.
#[track_caller]
pub fn wait_line(server: &mut RawServer, id: &str, pattern: &str, since: u64) -> Value {
    let result = wait(
        server,
        json!({"id": id, "pattern": pattern, "since": since, "timeout_ms": 20000}),
    );
    assert_eq!(
        result["reason"], "matched",
        "wait for {pattern:?}: {result}"
    );
    result["line"].clone()
}

/// `wait` for the task to exit; the wait result.
#[track_caller]
pub fn wait_exit(server: &mut RawServer, id: &str) -> Value {
    let result = wait(server, json!({"id": id, "timeout_ms": 30000}));
    assert_eq!(result["reason"], "exited", "wait for exit: {result}");
    result
}

/// The first message from the server (seen before, in [`RawServer::notifications`], or arriving
/// within `timeout`) for which `pred` holds; `what` names it in the failure message.
#[track_caller]
pub fn notified(
    server: &mut RawServer,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(found) = server.notifications.iter().find(|n| pred(n)) {
        return found.clone();
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = server.recv_line(left) else {
            let seen: Vec<String> = server
                .notifications
                .iter()
                .map(|n| truncate(&n.to_string(), 300))
                .collect();
            panic!("no {what} within {timeout:?}; seen: {seen:#?}");
        };
        let msg: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("server wrote non-JSON ({e}): {line:?}"));
        server.notifications.push(msg.clone());
        if pred(&msg) {
            return msg;
        }
    }
}

/// A predicate for [`notified`]: a notification with `method` whose params match `params`
/// on every key given there.
pub fn method_with(method: &str, params: Value) -> impl Fn(&Value) -> bool + '_ {
    move |msg| {
        msg["method"] == method
            && params
                .as_object()
                .is_none_or(|want| want.iter().all(|(k, v)| msg["params"][k] == *v))
    }
}

/// `_meta` of a 2026-07-28 request: protocol version, client info and capabilities.
pub fn stateless_meta(version: &str) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": {"name": "proc-mcp-suite", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

// ---------------------------------------------------------------------------------------------
// Ports and HTTP
// ---------------------------------------------------------------------------------------------

/// The port in python's "Serving HTTP on 127.0.0.1 port N (http://...) ..." line.
#[track_caller]
pub fn served_port(line: &str) -> u16 {
    line.split_once("Serving HTTP on 127.0.0.1 port ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A plain HTTP/1.0 GET; the whole response as text.
#[track_caller]
pub fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the task's port");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read HTTP response");
    response
}

// ---------------------------------------------------------------------------------------------
// Real third-party clients
// ---------------------------------------------------------------------------------------------

/// The committed client scripts and their pinned dependency lists.
pub fn interop_sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Where the clients are installed: `<target dir>/interop`.
pub fn interop_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("interop")
}

/// Bound for one install step (pip or npm over the network, on a loaded 2-core machine).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The venv's python with the pinned `mcp` SDK (`tests/interop/requirements.txt`), installed
/// on first use. Idempotent: a marker holding the requirements' text says it is done.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = interop_sources().join("requirements.txt");
        let wanted = fs::read_to_string(&requirements).expect("read requirements.txt");
        let venv = interop_dir().join("venv");
        let python = venv.join("bin/python");
        let marker = venv.join(".proc-mcp-installed");
        let _lock = install_lock();
        if fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && python.is_file()
        {
            return python;
        }
        let started = Instant::now();
        let _ = fs::remove_dir_all(&venv);
        run_step(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run_step(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-q",
                ])
                .arg("-r")
                .arg(&requirements),
        );
        fs::write(&marker, &wanted).expect("write the venv marker");
        eprintln!(
            "interop: installed the Python SDK into {} in {:.1?}",
            venv.display(),
            started.elapsed()
        );
        python
    })
}

/// A directory with the pinned TypeScript SDK in `node_modules` (`npm ci` from the committed
/// package.json + package-lock.json) and the client script beside it, installed on first use.
pub fn node_dir() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let sources = interop_sources();
        let dir = interop_dir().join("node");
        let _lock = install_lock();
        let manifest = fs::read_to_string(sources.join("package.json")).expect("package.json");
        let lock =
            fs::read_to_string(sources.join("package-lock.json")).expect("package-lock.json");
        let wanted = format!("{manifest}\n{lock}");
        let marker = dir.join(".proc-mcp-installed");
        if fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
            let started = Instant::now();
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the node dir");
            fs::write(dir.join("package.json"), &manifest).unwrap();
            fs::write(dir.join("package-lock.json"), &lock).unwrap();
            run_step(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir),
            );
            fs::write(&marker, &wanted).expect("write the node marker");
            eprintln!(
                "interop: installed the TypeScript SDK into {} in {:.1?}",
                dir.display(),
                started.elapsed()
            );
        }
        // ESM resolves packages from the script's own directory, so the script lives here.
        let script = fs::read(sources.join("ts_client.mjs")).expect("ts_client.mjs");
        if fs::read(dir.join("ts_client.mjs")).ok() != Some(script.clone()) {
            fs::write(dir.join("ts_client.mjs"), script).expect("copy ts_client.mjs");
        }
        dir
    })
}

/// An exclusive lock on `<target>/interop/.lock`: test binaries (or nextest's processes) never
/// install at the same time.
fn install_lock() -> Flock<File> {
    let dir = interop_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .expect("open the interop lock file");
    Flock::lock(file, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("flock: {e}"))
}

/// Runs one install step; panics with its output when it fails or overruns.
fn run_step(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let run = run_bounded(cmd, INSTALL_TIMEOUT);
    assert!(
        run.status.is_some_and(|s| s.success()),
        "install step failed ({:?} after {:.1?}): {shown}\n--- stdout:\n{}\n--- stderr:\n{}",
        run.status,
        run.elapsed,
        run.stdout,
        run.stderr
    );
}

/// What a bounded run of a command did.
pub struct Run {
    /// `None` when it overran its bound and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Panics (showing everything the command printed) unless it exited 0.
    pub fn assert_success(&self, what: &str) {
        if !self.status.is_some_and(|s| s.success()) {
            panic!(
                "{what}: {} after {:.1?}\n--- stdout:\n{}\n--- stderr:\n{}",
                match self.status {
                    Some(status) => format!("failed ({status})"),
                    None => "timed out and was killed".to_owned(),
                },
                self.elapsed,
                truncate(&self.stdout, 20_000),
                truncate(&self.stderr, 40_000),
            );
        }
    }
}

/// Runs `cmd` in its own process group with stdin closed, capturing stdout and stderr. Past
/// `timeout` the group gets SIGTERM (a proc-mcp in it then stops its tasks), then SIGKILL.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pgid = Pid::from_raw(-(child.id() as i32));
    let stdout = read_to_end(child.stdout.take().expect("stdout"));
    let stderr = read_to_end(child.stderr.take().expect("stderr"));

    let mut signalled = None::<(Signal, Instant)>;
    let status = loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            break signalled.is_none().then_some(exit);
        }
        let now = Instant::now();
        match signalled {
            None if now - started > timeout => {
                let _ = kill(pgid, Signal::SIGTERM);
                signalled = Some((Signal::SIGTERM, now));
            }
            Some((Signal::SIGTERM, at)) if now - at > Duration::from_secs(5) => {
                let _ = kill(pgid, Signal::SIGKILL);
                signalled = Some((Signal::SIGKILL, now));
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Anything left in the group (a server the script failed to close) would hold the pipes.
    let _ = kill(pgid, Signal::SIGTERM);
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                let _ = kill(pgid, Signal::SIGKILL);
                rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
                    "<output not collected: a process kept the pipe open>".into()
                })
            })
    };
    Run {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
        elapsed: started.elapsed(),
    }
}

/// Reads `pipe` to its end on a thread; the text arrives on the returned channel.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

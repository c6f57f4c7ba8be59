//! `wait` and `start`'s `wait_for`: the model blocks until something happens instead of
//! polling. Raw stdio harness, so progress and cancellation are seen on the wire. These check
//! the wiring (the call returns, with the right result and reason); when timers fire is checked
//! on virtual time in proc-state's tests (`server.rs`, `timing.rs`), so the only bounds on time
//! here are generous ones against a hang.

mod common;
mod support;

use std::time::Duration;

use common::{LATEST, RawServer, TempDir, id_of};
use serde_json::{Value, json};
use support::{call_blocking, collect_until_response, http_get, send_call, send_request, wait};

/// Slack on top of a timeout for the reply to travel (loaded 2-core CI machine, debug build).
const SLACK: Duration = Duration::from_millis(1500);

fn server() -> RawServer {
    RawServer::initialized(LATEST)
}

/// Starts `command` (through the shell) and returns its id.
#[track_caller]
fn start(server: &mut RawServer, command: &str) -> String {
    id_of(&server.call("start", json!({"command": command})))
}

/// A command that prints nothing until the file `go` exists in its cwd, then runs `then`.
fn gated(then: &str) -> String {
    format!("while [ ! -e go ]; do sleep 0.02; done; {then}")
}

#[track_caller]
fn assert_reason(result: &Value, reason: &str) {
    assert_eq!(result["reason"], reason, "wait: {result}");
    let waited = result["waited_ms"].as_u64();
    assert!(waited.is_some(), "waited_ms: {result}");
    assert!(
        result["next_cursor"].as_u64().is_some(),
        "next_cursor: {result}"
    );
}

// ---------------------------------------------------------------------------------------------
// wait: pattern, port, exit, timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn wait_matches_a_line_printed_before_the_call() {
    let mut s = server();
    let id = start(
        &mut s,
        "printf 'alpha\\nready on 4242\\nomega\\n'; exec sleep 60",
    );
    s.poll(
        "status",
        json!({"id": id, "tail": 0}),
        common::POLL_TIMEOUT,
        |st| st["output"]["lines"] == 3,
    );

    // Answered at once (server.rs in proc-state, on virtual time): here, that it is answered.
    let result = wait(
        &mut s,
        json!({"id": id, "pattern": r"ready on (\d+)", "timeout_ms": 20000}),
    );
    assert_reason(&result, "matched");
    assert_eq!(result["line"]["n"], 1, "wait: {result}");
    assert_eq!(result["line"]["text"], "ready on 4242", "wait: {result}");
    assert_eq!(result["state"], "running", "wait: {result}");
    assert_eq!(result["id"], id.as_str(), "wait: {result}");
    s.finish();
}

#[test]
fn wait_since_ignores_lines_before_the_cursor() {
    let mut s = server();
    let id = start(&mut s, "echo ready; exec sleep 60");
    let first = wait(
        &mut s,
        json!({"id": id, "pattern": "ready", "timeout_ms": 20000}),
    );
    let after = first["line"]["n"].as_u64().expect("line.n") + 1;
    let result = wait(
        &mut s,
        json!({"id": id, "pattern": "ready", "since": after, "timeout_ms": 500}),
    );
    assert_reason(&result, "timeout");
    assert_eq!(result["line"], Value::Null, "wait: {result}");
    s.finish();
}

#[test]
fn wait_matches_a_line_printed_later() {
    let dir = TempDir::new();
    let mut s = server();
    let task = s.call(
        "start",
        json!({"command": gated("echo early-bird; echo late-line; exec sleep 60"), "cwd": dir.str(), "name": "later"}),
    );
    let wait_id = send_call(
        &mut s,
        "wait",
        json!({"id": "later", "pattern": "^late-", "timeout_ms": 20000}),
        json!({}),
    );
    // The server handles requests in order: once the ping is answered, the wait is pending.
    let ping = send_request(&mut s, "ping", json!({}));
    let pong = collect_until_response(&mut s, ping, common::RESPONSE_TIMEOUT);
    assert!(
        pong.others.iter().all(|(_, m)| m["id"] != wait_id),
        "wait answered before its line was printed: {:?}",
        pong.others
    );
    std::fs::write(dir.path().join("go"), "").unwrap();

    let result = collect_until_response(&mut s, wait_id, common::RESPONSE_TIMEOUT + SLACK);
    let result = result.structured();
    assert_reason(result, "matched");
    assert_eq!(result["line"]["text"], "late-line", "wait: {result}");
    assert_eq!(result["line"]["n"], 1, "wait: {result}");
    assert_eq!(result["id"], task["id"], "wait: {result}");
    s.finish();
}

/// An HTTP server on a port of its own choosing: it binds 127.0.0.1:0 (so no other process can
/// take the port), prints the port, and starts listening only once the file `go` exists in
/// its cwd; until then a connection is refused.
const LATE_LISTENER: &str = r#"
import http.server, os, time
server = http.server.HTTPServer(
    ("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler, bind_and_activate=False)
server.server_bind()
print("bound to port", server.server_address[1], flush=True)
while not os.path.exists("go"):
    time.sleep(0.02)
server.server_activate()
server.serve_forever()
"#;

#[test]
fn wait_returns_port_open_when_the_port_starts_accepting() {
    let dir = TempDir::new();
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-c", LATE_LISTENER], "cwd": dir.str()}),
    ));
    let bound = wait(
        &mut s,
        json!({"id": id, "pattern": r"^bound to port \d+$", "timeout_ms": 20000}),
    );
    assert_reason(&bound, "matched");
    let port: u16 = bound["line"]["text"]
        .as_str()
        .and_then(|text| text.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no port in {bound}"));

    let wait_id = send_call(
        &mut s,
        "wait",
        json!({"id": id, "port": port, "timeout_ms": 30000}),
        json!({}),
    );
    // The server handles requests in order: once the ping is answered, the wait is pending,
    // and it must not have seen the bound but refusing port as open.
    let ping = send_request(&mut s, "ping", json!({}));
    let pong = collect_until_response(&mut s, ping, common::RESPONSE_TIMEOUT);
    assert!(
        pong.others.iter().all(|(_, m)| m["id"] != wait_id),
        "wait answered before the port accepted: {:?}",
        pong.others
    );
    std::fs::write(dir.path().join("go"), "").unwrap();

    let exchange = collect_until_response(
        &mut s,
        wait_id,
        common::RESPONSE_TIMEOUT + Duration::from_secs(30),
    );
    let result = exchange.structured();
    assert_reason(result, "port_open");
    assert_eq!(result["state"], "running", "wait: {result}");
    let response = http_get(port, "/");
    assert!(response.starts_with("HTTP/1.0 200"), "response: {response}");
    s.finish();
}

#[test]
fn wait_returns_exited_when_the_task_ends_before_a_match() {
    let mut s = server();
    s.call(
        "start",
        json!({"command": "echo nope; exit 4", "name": "quitter"}),
    );
    let result = wait(
        &mut s,
        json!({"id": "quitter", "pattern": "never printed", "timeout_ms": 20000}),
    );
    assert_reason(&result, "exited");
    assert_eq!(result["line"], Value::Null, "wait: {result}");
    assert_eq!(result["state"], "exited", "wait: {result}");
    assert_eq!(result["exit_code"], 4, "wait: {result}");
    s.finish();
}

#[test]
fn wait_without_pattern_or_port_waits_for_exit() {
    let mut s = server();
    let id = start(&mut s, "sleep 0.3; exit 2");
    let result = wait(&mut s, json!({"id": id, "timeout_ms": 20000}));
    assert_reason(&result, "exited");
    assert_eq!(result["exit_code"], 2, "wait: {result}");
    s.finish();
}

/// When it times out is checked on virtual time (proc-state's `wait_times_out_at_its_deadline`
/// and `timing.rs`); here, that the timer is wired: it ends with `timeout`.
#[test]
fn wait_times_out_with_reason_timeout() {
    let mut s = server();
    let id = start(&mut s, "exec sleep 60");
    let result = wait(
        &mut s,
        json!({"id": id, "pattern": "never", "timeout_ms": 1500}),
    );
    assert_reason(&result, "timeout");
    assert_eq!(result["state"], "running", "wait: {result}");
    assert_eq!(result["line"], Value::Null, "wait: {result}");
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// wait: cancellation and progress
// ---------------------------------------------------------------------------------------------

#[test]
fn cancelled_wait_gets_no_response_and_the_server_keeps_serving() {
    let mut s = server();
    let id = start(&mut s, "exec sleep 60");
    let cancelled = send_call(
        &mut s,
        "wait",
        json!({"id": id, "pattern": "never", "timeout_ms": 2000}),
        json!({}),
    );
    s.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": cancelled, "reason": "the user moved on"}}),
    );
    s.assert_alive();

    // A second wait outlasts the first one's timeout: had the first gone on, its response
    // would arrive in the meantime.
    let later = send_call(
        &mut s,
        "wait",
        json!({"id": id, "pattern": "never", "timeout_ms": 3000}),
        json!({}),
    );
    let exchange = collect_until_response(&mut s, later, common::RESPONSE_TIMEOUT + SLACK);
    assert_eq!(exchange.structured()["reason"], "timeout");
    let stray: Vec<&Value> = exchange
        .others
        .iter()
        .map(|(_, m)| m)
        .chain(s.notifications.iter())
        .filter(|m| m["id"] == cancelled)
        .collect();
    assert!(
        stray.is_empty(),
        "the cancelled wait was answered: {stray:?}"
    );
    s.assert_alive();
    s.finish();
}

/// How often progress is sent is checked on virtual time (proc-state's
/// `wait_sends_increasing_progress_about_once_a_second`); here, that it reaches the client, for
/// the request's token, increasing, before the response.
#[test]
fn wait_with_progress_token_reports_increasing_progress() {
    let mut s = server();
    let id = start(&mut s, "exec sleep 60");
    let request = send_call(
        &mut s,
        "wait",
        json!({"id": id, "pattern": "never", "timeout_ms": 3500}),
        json!({"progressToken": "wait-1"}),
    );
    let exchange = collect_until_response(&mut s, request, common::RESPONSE_TIMEOUT + SLACK);
    assert_eq!(exchange.structured()["reason"], "timeout");

    let progress = exchange.notifications("notifications/progress");
    assert!(
        progress
            .iter()
            .all(|(_, n)| n["params"]["progressToken"] == "wait-1"),
        "progress for another token: {progress:?}"
    );
    // The first is due at 1 s, the response at 3.5 s, on the same clock.
    assert!(
        !progress.is_empty(),
        "no progress notification before the response"
    );
    let values: Vec<f64> = progress
        .iter()
        .map(|(_, n)| {
            n["params"]["progress"]
                .as_f64()
                .expect("progress is a number")
        })
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "progress not strictly increasing: {values:?}"
    );
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// start with wait_for
// ---------------------------------------------------------------------------------------------

/// `start` with `wait_for`: the whole start result (the call blocks up to `wait_timeout_ms`).
#[track_caller]
fn start_waiting(s: &mut RawServer, command: &str, pattern: &str, timeout_ms: u64) -> Value {
    call_blocking(
        s,
        "start",
        json!({"command": command, "wait_for": pattern, "wait_timeout_ms": timeout_ms}),
        Duration::from_millis(timeout_ms),
    )
}

#[test]
fn start_wait_for_returns_once_the_ready_line_appears() {
    let mut s = server();
    let task = start_waiting(
        &mut s,
        "echo booting; sleep 0.3; echo 'listening on 8080'; exec sleep 60",
        r"listening on (\d+)",
        20000,
    );
    assert_eq!(
        task["ready"],
        json!({"matched": true, "line": "listening on 8080", "reason": "matched"}),
        "start: {task}"
    );
    assert_eq!(task["state"], "running", "start: {task}");
    s.finish();
}

#[test]
fn start_wait_for_reports_exited_when_the_task_dies_first() {
    let mut s = server();
    let task = start_waiting(&mut s, "echo oops; exit 1", "never printed", 20000);
    assert_eq!(
        task["ready"],
        json!({"matched": false, "reason": "exited"}),
        "start: {task}"
    );
    s.finish();
}

/// When it times out is checked on virtual time (proc-state's `timing.rs`); here, that the
/// timer is wired: `start` answers, with the task running.
#[test]
fn start_wait_for_times_out_with_reason_timeout() {
    let mut s = server();
    let task = start_waiting(&mut s, "exec sleep 60", "never printed", 1000);
    assert_eq!(
        task["ready"],
        json!({"matched": false, "reason": "timeout"}),
        "start: {task}"
    );
    assert_eq!(task["state"], "running", "start: {task}");
    s.finish();
}

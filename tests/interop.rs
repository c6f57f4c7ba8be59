//! Interop with real MCP clients that nobody here wrote, each driving the built binary:
//! the official Python SDK (`ClientSession` over the handshake, and `Client(mode="auto")`,
//! which must land on 2026-07-28 at once), the official TypeScript SDK, and rmcp. Plus the
//! stateless 2026-07-28 era over raw stdio.
//!
//! The Python and TypeScript clients are scripts in `tests/interop/`; their SDKs are installed
//! on first use, pinned, under `<target>/interop` (see `support::python`/`support::node_dir`).

mod common;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::client::Client;
use common::{AT_ONCE, RawServer, TempDir, id_of, server_bin};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use support::{STATELESS, http_get, run_bounded, served_port, stateless_meta};

/// Bound for one client script run (a dev server, a few waits, a stop; debug build, 2 cores).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `python_client.py` with the pinned Python SDK: `mode` is `session` or `auto`.
fn python_client(mode: &str, scenario: &str) {
    let python = support::python();
    let run = run_bounded(
        Command::new(python)
            .arg(support::interop_sources().join("python_client.py"))
            .args([server_bin().as_os_str(), mode.as_ref(), scenario.as_ref()]),
        SCRIPT_TIMEOUT,
    );
    run.assert_success(&format!("python_client.py {mode} {scenario}"));
    assert!(
        run.stdout.contains(&format!("PASS {mode} {scenario}")),
        "no PASS line:\n{}",
        run.stdout
    );
}

/// Runs `ts_client.mjs` with the pinned TypeScript SDK on the machine's Node.
fn ts_client(scenario: &str) {
    let dir = support::node_dir();
    let run = run_bounded(
        Command::new("node")
            .arg(dir.join("ts_client.mjs"))
            .arg(server_bin())
            .arg(scenario)
            .current_dir(dir),
        SCRIPT_TIMEOUT,
    );
    run.assert_success(&format!("ts_client.mjs {scenario}"));
    assert!(
        run.stdout.contains(&format!("PASS ts {scenario}")),
        "no PASS line:\n{}",
        run.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// The harness itself: each client drives the issue-2 tools
// ---------------------------------------------------------------------------------------------

#[test]
fn python_session_drives_the_issue2_tools() {
    python_client("session", "smoke");
}

#[test]
fn python_auto_mode_connects_at_once_and_drives_the_issue2_tools() {
    python_client("auto", "smoke");
}

#[test]
fn typescript_client_drives_the_issue2_tools_with_strict_output_schemas() {
    ts_client("smoke");
}

// ---------------------------------------------------------------------------------------------
// The real scenario: a dev server started with wait_for, fetched, waited on, read, stopped
// ---------------------------------------------------------------------------------------------

#[test]
fn python_session_runs_the_dev_server_scenario() {
    python_client("session", "devserver");
}

#[test]
fn python_auto_mode_lands_on_2026_07_28_and_runs_the_dev_server_scenario() {
    python_client("auto", "devserver");
}

#[test]
fn typescript_client_runs_the_dev_server_scenario() {
    ts_client("devserver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_runs_the_dev_server_scenario() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("hello.txt"), "hello from rmcp\n").unwrap();
    std::fs::write(dir.path().join("second.txt"), "second file\n").unwrap();
    let c = Client::connect(ProtocolVersion::V_2025_11_25).await;

    let task = c
        .call(
            "start",
            json!({
                "command": "python3 -m http.server 0 --bind 127.0.0.1",
                "cwd": dir.str(),
                "wait_for": r"Serving HTTP on 127\.0\.0\.1 port (\d+)",
                "wait_timeout_ms": 30000,
            }),
        )
        .await;
    let id = id_of(&task);
    assert_eq!(task["state"], "running", "start: {task}");
    let ready = &task["ready"];
    assert_eq!(ready["matched"], true, "start: {task}");
    assert_eq!(ready["reason"], "matched", "start: {task}");
    let port = served_port(ready["line"].as_str().expect("ready.line"));

    let get = |path: &'static str| tokio::task::spawn_blocking(move || http_get(port, path));
    let response = get("/hello.txt").await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "response: {response}");
    assert!(
        response.ends_with("hello from rmcp\n"),
        "response: {response}"
    );
    let waited = c
        .call(
            "wait",
            json!({"id": id, "pattern": r"GET /hello\.txt", "timeout_ms": 30000}),
        )
        .await;
    assert_eq!(waited["reason"], "matched", "wait: {waited}");
    let text = waited["line"]["text"].as_str().expect("line.text");
    assert!(text.contains("GET /hello.txt"), "wait: {waited}");

    let first = c.call("logs", json!({"id": id})).await;
    assert!(
        common::texts(&first)
            .iter()
            .any(|t| t.contains("Serving HTTP on 127.0.0.1 port")),
        "logs: {first}"
    );
    let cursor = first["next_cursor"].as_u64().expect("next_cursor");

    get("/second.txt").await.unwrap();
    let waited = c
        .call(
            "wait",
            json!({"id": id, "pattern": r"GET /second\.txt", "since": cursor, "timeout_ms": 30000}),
        )
        .await;
    assert_eq!(waited["reason"], "matched", "wait: {waited}");
    let fresh = c.call("logs", json!({"id": id, "since": cursor})).await;
    let lines = fresh["lines"].as_array().expect("lines");
    assert!(!lines.is_empty(), "logs since {cursor}: {fresh}");
    assert!(
        lines.iter().all(|l| l["n"].as_u64() >= Some(cursor)),
        "logs since {cursor} returned older lines: {fresh}"
    );
    assert!(
        common::texts(&fresh)
            .iter()
            .any(|t| t.contains("GET /second.txt")),
        "logs: {fresh}"
    );
    let next = fresh["next_cursor"].as_u64().expect("next_cursor");
    assert!(next > cursor, "next_cursor did not move: {fresh}");
    let rest = c.call("logs", json!({"id": id, "since": next})).await;
    assert_eq!(rest["lines"], json!([]), "nothing newer: {rest}");

    let stopped = c.call("stop", json!({"id": id})).await;
    assert_eq!(stopped["state"], "exited", "stop: {stopped}");
    assert_eq!(stopped["stopped"], true, "stop: {stopped}");
    c.close().await;
}

// ---------------------------------------------------------------------------------------------
// Notifications, as a real client's handlers see them
// ---------------------------------------------------------------------------------------------

#[test]
fn python_session_handlers_see_exit_notifications_and_resource_updates() {
    python_client("session", "notify");
}

// ---------------------------------------------------------------------------------------------
// The stateless 2026-07-28 era, over raw stdio
// ---------------------------------------------------------------------------------------------

/// A 2026-07-28 request (no `initialize`): the whole response message.
fn stateless(server: &mut RawServer, method: &str, mut params: Value, version: &str) -> Value {
    params["_meta"] = stateless_meta(version);
    server.request(method, Some(params))
}

/// The `result` of a 2026-07-28 request, asserting `resultType: "complete"`.
fn stateless_result(server: &mut RawServer, method: &str, params: Value) -> Value {
    let response = stateless(server, method, params, STATELESS);
    let result = response
        .get("result")
        .unwrap_or_else(|| panic!("{method} failed: {response}"))
        .clone();
    assert_eq!(result["resultType"], "complete", "{method}: {result}");
    result
}

/// `ttlMs` (a non-negative integer) and `cacheScope` ("public" or "private") of a list result.
fn assert_cache_hints(result: &Value) {
    assert!(result["ttlMs"].as_u64().is_some(), "ttlMs: {result}");
    assert!(
        matches!(result["cacheScope"].as_str(), Some("public" | "private")),
        "cacheScope: {result}"
    );
}

#[test]
fn server_discover_describes_the_server_without_initialize() {
    let mut server = RawServer::spawn();
    let started = Instant::now();
    let result = stateless_result(&mut server, "server/discover", json!({}));
    assert!(
        started.elapsed() < AT_ONCE,
        "server/discover took {:?}",
        started.elapsed()
    );

    let versions = result["supportedVersions"]
        .as_array()
        .expect("supportedVersions");
    assert!(versions.contains(&json!(STATELESS)), "discover: {result}");
    assert!(
        result["capabilities"]["tools"].is_object(),
        "discover: {result}"
    );
    let info = &result["_meta"]["io.modelcontextprotocol/serverInfo"];
    assert_eq!(info["name"], "proc-mcp", "discover: {result}");
    assert!(info["version"].is_string(), "discover: {result}");
    assert_cache_hints(&result);
    server.finish();
}

#[test]
fn stateless_requests_are_served_without_initialize() {
    let mut server = RawServer::spawn();

    let tools = stateless_result(&mut server, "tools/list", json!({}));
    assert_cache_hints(&tools);
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in [
        "start", "status", "logs", "wait", "write", "signal", "stop", "restart", "list", "remove",
    ] {
        assert!(names.contains(&name), "tools/list lacks {name}: {names:?}");
    }

    let started = stateless_result(
        &mut server,
        "tools/call",
        json!({"name": "start", "arguments": {"command": "echo stateless; exec sleep 60"}}),
    );
    assert_ne!(started["isError"], true, "start: {started}");
    let id = id_of(&started["structuredContent"]);
    let waited = stateless_result(
        &mut server,
        "tools/call",
        json!({"name": "wait", "arguments": {"id": id, "pattern": "stateless", "timeout_ms": 10000}}),
    );
    assert_eq!(
        waited["structuredContent"]["reason"], "matched",
        "wait: {waited}"
    );
    let stopped = stateless_result(
        &mut server,
        "tools/call",
        json!({"name": "stop", "arguments": {"id": id}}),
    );
    assert_eq!(
        stopped["structuredContent"]["state"], "exited",
        "stop: {stopped}"
    );

    let resources = stateless_result(&mut server, "resources/list", json!({}));
    assert_cache_hints(&resources);
    server.finish();
}

#[test]
fn unknown_protocol_version_in_meta_is_error_32022() {
    let mut server = RawServer::spawn();
    for method in ["server/discover", "tools/list"] {
        let response = stateless(&mut server, method, json!({}), "2099-01-01");
        let error = response
            .get("error")
            .unwrap_or_else(|| panic!("{method} at 2099-01-01 succeeded: {response}"));
        assert_eq!(error["code"], -32022, "{method}: {response}");
        assert_eq!(
            error["data"]["requested"], "2099-01-01",
            "{method}: {response}"
        );
        let supported = error["data"]["supported"]
            .as_array()
            .expect("data.supported");
        assert!(
            supported.contains(&json!(STATELESS)),
            "{method}: {response}"
        );
    }
    // The session is still usable in either era.
    stateless_result(&mut server, "server/discover", json!({}));
    server.finish();
}

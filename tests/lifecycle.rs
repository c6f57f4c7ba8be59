//! Starting, reading and stopping tasks: the processes really start, and really end.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::client::Client;
use common::{
    LATEST, RawServer, TempDir, assert_group_gone, id_of, is_alive, live_group_members, pid_of,
    proc_entry_exists,
};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

async fn client() -> Client {
    Client::connect(ProtocolVersion::V_2025_11_25).await
}

/// The port in python's "Serving HTTP on 127.0.0.1 port N ..." line of a `logs` result.
fn served_port(logs: &Value) -> u16 {
    let line = common::texts(logs)
        .into_iter()
        .find(|text| text.contains("Serving HTTP on 127.0.0.1 port "))
        .unwrap_or_else(|| panic!("no port in {logs}"));
    support::served_port(&line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_task_serves_logs_by_cursor_and_stops_with_its_group() {
    let dir = TempDir::new();
    std::fs::write(dir.path().join("file.txt"), "hello from a proc-mcp task\n").unwrap();
    let c = client().await;

    let task = c
        .call(
            "start",
            json!({"command": "python3 -m http.server 0 --bind 127.0.0.1", "cwd": dir.str()}),
        )
        .await;
    let (id, pid) = (id_of(&task), pid_of(&task));
    assert_eq!(task["state"], "running", "start: {task}");

    let first = c
        .wait_for_line(json!({"id": id}), "Serving HTTP on 127.0.0.1 port")
        .await;
    let port = served_port(&first);
    let cursor = first["next_cursor"].as_u64().expect("next_cursor");

    let response = tokio::task::spawn_blocking(move || support::http_get(port, "/file.txt"))
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "response: {response}");
    assert!(
        response.ends_with("hello from a proc-mcp task\n"),
        "response: {response}"
    );

    let since = json!({"id": id, "since": cursor});
    let new = c
        .wait_for_line(since, "\"GET /file.txt HTTP/1.0\" 200")
        .await;
    for line in new["lines"].as_array().unwrap() {
        assert!(
            line["n"].as_u64().unwrap() >= cursor,
            "line before the cursor {cursor}: {line}"
        );
        assert!(
            !line["text"].as_str().unwrap().contains("Serving HTTP"),
            "old line again: {line}"
        );
    }

    let stopped = c.call("stop", json!({"id": id})).await;
    assert_eq!(stopped["state"], "exited", "stop: {stopped}");
    assert_eq!(stopped["stopped"], true, "stop: {stopped}");
    assert_eq!(
        stopped["escalated"], false,
        "python ends on SIGTERM: {stopped}"
    );
    // The leader is reaped by the time `stop` answers; a forked grandchild killed with the group
    // is reparented to init and may need a moment to be gone.
    assert_group_gone(pid, Duration::from_secs(5));
    assert!(
        !proc_entry_exists(pid),
        "pid {pid} not reaped when stop answered"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_background_children_of_a_shell() {
    let c = client().await;
    let task = c
        .call(
            "start",
            json!({"command": "sleep 1000 & sleep 1000 & echo ready; wait"}),
        )
        .await;
    let (id, pgid) = (id_of(&task), pid_of(&task));
    c.wait_for_line(json!({"id": id}), "ready").await;
    let members = live_group_members(pgid);
    assert!(
        members.len() >= 3,
        "expected the shell and two sleeps in group {pgid}: {members:?}"
    );

    let stopped = c.call("stop", json!({"id": id})).await;
    assert_eq!(stopped["state"], "exited", "stop: {stopped}");
    assert_eq!(stopped["stopped"], true, "stop: {stopped}");
    assert_group_gone(pgid, Duration::from_secs(5));
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let c = client().await;
    let script = r#"trap "" TERM; echo ready; while :; do sleep 0.1; done"#;
    let task = c.call("start", json!({"command": script})).await;
    let (id, pgid) = (id_of(&task), pid_of(&task));
    c.wait_for_line(json!({"id": id}), "ready").await;

    let asked = Instant::now();
    let stopped = c.call("stop", json!({"id": id, "grace_ms": 500})).await;
    let took = asked.elapsed();
    assert_eq!(stopped["escalated"], true, "stop: {stopped}");
    assert_eq!(stopped["signal"], "SIGKILL", "stop: {stopped}");
    assert_eq!(stopped["state"], "exited", "stop: {stopped}");
    assert_eq!(stopped["stopped"], true, "stop: {stopped}");
    assert!(
        took < Duration::from_millis(4500),
        "grace_ms 500 took {took:?} (the default grace is 5 s)"
    );
    assert_group_gone(pgid, Duration::from_secs(5));
    c.close().await;
}

#[test]
fn closing_stdin_stops_every_task_and_exits_zero() {
    let mut server = RawServer::initialized(LATEST);
    let pids: Vec<i32> = (0..3)
        .map(|_| pid_of(&server.call("start", json!({"command": "sleep 1000"}))))
        .collect();
    for &pid in &pids {
        assert!(is_alive(pid), "task {pid} not running");
    }

    server.close_stdin();
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after stdin EOF");
    assert!(
        status.success(),
        "server exit status after stdin EOF: {status}"
    );
    for &pid in &pids {
        assert!(!is_alive(pid), "task {pid} outlived the server");
        assert_group_gone(pid, Duration::from_secs(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_missing_cwd_is_a_tool_error() {
    let c = client().await;
    let missing = "/nonexistent/proc-mcp-suite-missing-dir";
    let text = c
        .call_err("start", json!({"command": "true", "cwd": missing}))
        .await;
    assert!(
        text.contains(missing) || text.contains("cwd"),
        "the reason should name the cwd: {text:?}"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_of_missing_program_with_args_is_a_tool_error() {
    let c = client().await;
    let program = "proc-mcp-suite-no-such-program";
    let text = c
        .call_err("start", json!({"command": program, "args": ["--version"]}))
        .await;
    assert!(
        text.contains(program),
        "the reason should name the program: {text:?}"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_id_is_a_tool_error() {
    let c = client().await;
    for tool in ["status", "logs", "stop", "remove"] {
        let text = c.call_err(tool, json!({"id": "nosuch"})).await;
        assert!(
            text.contains("nosuch"),
            "{tool}: the reason should name the id: {text:?}"
        );
    }
    c.close().await;
}

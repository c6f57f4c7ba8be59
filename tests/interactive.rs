//! Talking to tasks and hearing from them: `stdin` + `write`, `signal`, `restart`,
//! `max_runtime_ms`, environment defaults, exit notifications, `proc://<id>/output`
//! resources and their subscriptions, pagination, and schema-checked inputs of the new tools.
//! Raw stdio harness, so every notification is seen on the wire.

mod common;
mod support;

use std::collections::HashSet;
use std::time::Duration;

use common::{LATEST, RESPONSE_TIMEOUT, RawServer, TempDir, id_of, pid_of};
use serde_json::{Value, json};
use support::{collect_until_response, method_with, notified, send_call, wait_exit, wait_line};

/// Bound for a notification the server should send "soon".
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);

fn server() -> RawServer {
    RawServer::initialized(LATEST)
}

#[track_caller]
fn cursor(value: &Value) -> u64 {
    value["next_cursor"]
        .as_u64()
        .unwrap_or_else(|| panic!("no next_cursor in {value}"))
}

/// A command that prints nothing until the file `go` exists in its cwd, then runs `then`.
fn gated(then: &str) -> String {
    format!("while [ ! -e go ]; do sleep 0.02; done; {then}")
}

// ---------------------------------------------------------------------------------------------
// stdin and write
// ---------------------------------------------------------------------------------------------

#[test]
fn cat_echoes_written_lines_read_by_the_write_cursor() {
    let mut s = server();
    let id = id_of(&s.call("start", json!({"command": "cat", "stdin": true})));

    let written = s.call("write", json!({"id": id, "data": "hello\n"}));
    assert_eq!(written["id"], id.as_str(), "write: {written}");
    assert_eq!(written["bytes_written"], 6, "write: {written}");
    let c0 = cursor(&written);
    let line = wait_line(&mut s, &id, "^hello$", c0);
    assert_eq!(
        line["n"], c0,
        "the echo is the first line after the write: {line}"
    );

    let written = s.call("write", json!({"id": id, "data": "wörld 🌍\n"}));
    assert_eq!(
        written["bytes_written"],
        "wörld 🌍\n".len(),
        "write: {written}"
    );
    let c1 = cursor(&written);
    assert!(c1 > c0, "cursor did not move on: {written}");
    wait_line(&mut s, &id, "^wörld", c1);
    let logs = s.call("logs", json!({"id": id, "since": c1}));
    assert_eq!(
        common::texts(&logs),
        ["wörld 🌍"],
        "logs since the write: {logs}"
    );
    s.finish();
}

#[test]
fn write_with_eof_ends_the_process() {
    let mut s = server();
    let id = id_of(&s.call("start", json!({"command": "cat", "stdin": true})));
    let written = s.call(
        "write",
        json!({"id": id, "data": "last words\n", "eof": true}),
    );
    assert_eq!(written["bytes_written"], 11, "write: {written}");
    let exited = wait_exit(&mut s, &id);
    assert_eq!(exited["state"], "exited", "{exited}");
    assert_eq!(exited["exit_code"], 0, "{exited}");
    let logs = s.call("logs", json!({"id": id}));
    assert_eq!(common::texts(&logs), ["last words"], "logs: {logs}");
    s.finish();
}

#[test]
fn python_repl_answers_written_statements() {
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-i", "-u", "-q"], "stdin": true}),
    ));
    let written = s.call("write", json!({"id": id, "data": "print(6 * 7)\n"}));
    let line = wait_line(&mut s, &id, "^42$", cursor(&written));
    assert_eq!(line["stream"], "stdout", "{line}");
    let written = s.call(
        "write",
        json!({"id": id, "data": "import sys; sys.exit(5)\n"}),
    );
    assert!(written["bytes_written"].as_u64() > Some(0), "{written}");
    assert_eq!(wait_exit(&mut s, &id)["exit_code"], 5);
    s.finish();
}

#[test]
fn write_needs_a_task_started_with_stdin() {
    let mut s = server();
    let id = id_of(&s.call("start", json!({"command": "exec sleep 60"})));
    let err = s.call_err("write", json!({"id": id, "data": "x\n"}));
    assert!(err.contains("stdin"), "reason should mention stdin: {err}");
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// signal, restart, max_runtime_ms, environment
// ---------------------------------------------------------------------------------------------

#[test]
fn signal_reaches_the_task_without_stopping_it() {
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "trap 'echo got-usr1' USR1; echo armed; while :; do sleep 0.05; done"}),
    ));
    wait_line(&mut s, &id, "^armed$", 0);
    let sent = s.call("signal", json!({"id": id, "signal": "SIGUSR1"}));
    assert_eq!(
        sent,
        json!({"id": id, "signal": "SIGUSR1", "state": "running"}),
        "signal result"
    );
    wait_line(&mut s, &id, "^got-usr1$", 0);
    let status = s.call("status", json!({"id": id, "tail": 0}));
    assert_eq!(status["state"], "running", "{status}");
    s.finish();
}

#[test]
fn restart_keeps_id_and_name_and_continues_the_cursor() {
    let mut s = server();
    let first = s.call(
        "start",
        json!({"command": "echo run-started; exec sleep 60", "name": "restartable"}),
    );
    let id = id_of(&first);
    let old_line = wait_line(&mut s, &id, "^run-started$", 0);
    let before = s.call("status", json!({"id": id, "tail": 0}));
    assert_eq!(before["restarts"], 0, "{before}");

    let again = s.call("restart", json!({"id": "restartable"}));
    assert_eq!(again["id"], id.as_str(), "restart: {again}");
    assert_eq!(again["name"], "restartable", "restart: {again}");
    assert_eq!(again["state"], "running", "restart: {again}");
    assert_ne!(
        pid_of(&again),
        pid_of(&first),
        "restart reused the pid: {again}"
    );

    let since = cursor(&before["output"]);
    let new_line = wait_line(&mut s, &id, "^run-started$", since);
    assert!(
        new_line["n"].as_u64() > old_line["n"].as_u64(),
        "the new run's first line ({new_line}) is not after the old run's last ({old_line})"
    );
    let after = s.call("status", json!({"id": "restartable", "tail": 0}));
    assert_eq!(after["restarts"], 1, "{after}");
    assert_eq!(after["state"], "running", "{after}");
    let logs = s.call("logs", json!({"id": id}));
    assert_eq!(
        common::texts(&logs),
        ["run-started", "run-started"],
        "{logs}"
    );
    s.finish();
}

/// When the limit fires is checked on virtual time (proc-state's `max_runtime_stops_the_task`
/// and `timing.rs`); here, that it is wired: the task ends, stopped by the server.
#[test]
fn max_runtime_ms_stops_the_task() {
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "exec sleep 60", "max_runtime_ms": 1000}),
    ));
    wait_exit(&mut s, &id);
    let status = s.call("status", json!({"id": id, "tail": 0}));
    assert_eq!(status["state"], "exited", "{status}");
    assert_eq!(status["stopped"], true, "{status}");
    assert!(status["runtime_ms"].is_u64(), "runtime_ms: {status}");
    s.finish();
}

#[test]
fn start_adds_environment_defaults_that_env_overrides() {
    let mut s = server();
    let defaults = id_of(&s.call("start", json!({"command": "env"})));
    let custom = id_of(&s.call(
        "start",
        json!({"command": "env", "env": {"PAGER": "less", "NO_COLOR": "0"}}),
    ));
    for id in [&defaults, &custom] {
        s.wait_exited(id);
    }
    let env_of = |s: &mut RawServer, id: &str| -> HashSet<String> {
        let logs = s.call("logs", json!({"id": id, "head": 1000}));
        common::texts(&logs).into_iter().collect()
    };
    let env = env_of(&mut s, &defaults);
    for var in [
        "NO_COLOR=1",
        "PAGER=cat",
        "GIT_PAGER=cat",
        "PYTHONUNBUFFERED=1",
    ] {
        assert!(
            env.contains(var),
            "{var} missing from the task's environment: {env:?}"
        );
    }
    let env = env_of(&mut s, &custom);
    for var in [
        "NO_COLOR=0",
        "PAGER=less",
        "GIT_PAGER=cat",
        "PYTHONUNBUFFERED=1",
    ] {
        assert!(
            env.contains(var),
            "{var} missing from the task's environment: {env:?}"
        );
    }
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Exit notifications and logging
// ---------------------------------------------------------------------------------------------

/// The `notifications/message` about task `id` exiting.
#[track_caller]
fn exit_message(s: &mut RawServer, id: &str) -> Value {
    let id = id.to_owned();
    notified(
        s,
        NOTIFY_TIMEOUT,
        "notifications/message for the exit",
        move |m| m["method"] == "notifications/message" && m["params"]["data"]["id"] == id.as_str(),
    )
}

#[test]
fn notify_on_exit_sends_a_log_message_and_process_exit() {
    let mut s = server();
    let ok = id_of(&s.call(
        "start",
        json!({"command": "true", "notify_on_exit": true, "name": "fine"}),
    ));
    let failing = id_of(&s.call(
        "start",
        json!({"command": "exit 3", "notify_on_exit": true}),
    ));

    for (id, code, level) in [(&ok, 0, "info"), (&failing, 3, "warning")] {
        let message = exit_message(&mut s, id);
        let params = &message["params"];
        assert_eq!(params["level"], level, "{message}");
        assert_eq!(params["logger"], "proc-mcp", "{message}");
        let data = &params["data"];
        assert_eq!(data["event"], "exit", "{message}");
        assert_eq!(data["state"], "exited", "{message}");
        assert_eq!(data["exit_code"], code, "{message}");
        assert_eq!(data["signal"], Value::Null, "{message}");
        assert!(data["runtime_ms"].is_u64(), "{message}");
        assert!(data.get("name").is_some(), "{message}");

        let exit = notified(
            &mut s,
            NOTIFY_TIMEOUT,
            "process/exit",
            method_with("process/exit", json!({"id": id})),
        );
        assert_eq!(exit["params"]["exitCode"], code, "{exit}");
        assert!(exit["params"].get("status").is_some(), "{exit}");
        assert!(
            exit["params"]["timestamp"].is_string() || exit["params"]["timestamp"].is_number(),
            "{exit}"
        );
    }
    assert_eq!(exit_message(&mut s, &ok)["params"]["data"]["name"], "fine");
    s.finish();
}

#[test]
fn logging_set_level_filters_exit_messages() {
    let mut s = server();
    assert_eq!(
        s.result("logging/setLevel", Some(json!({"level": "error"}))),
        json!({})
    );
    let quiet = id_of(&s.call(
        "start",
        json!({"command": "exit 3", "notify_on_exit": true}),
    ));
    notified(
        &mut s,
        NOTIFY_TIMEOUT,
        "process/exit",
        method_with("process/exit", json!({"id": quiet})),
    );
    s.assert_alive();
    let filtered: Vec<&Value> = s
        .notifications
        .iter()
        .filter(|m| {
            m["method"] == "notifications/message" && m["params"]["data"]["id"] == quiet.as_str()
        })
        .collect();
    assert!(
        filtered.is_empty(),
        "a warning got through level error: {filtered:?}"
    );

    assert_eq!(
        s.result("logging/setLevel", Some(json!({"level": "warning"}))),
        json!({})
    );
    let loud = id_of(&s.call(
        "start",
        json!({"command": "exit 3", "notify_on_exit": true}),
    ));
    assert_eq!(exit_message(&mut s, &loud)["params"]["level"], "warning");
    let bad = s.error("logging/setLevel", Some(json!({"level": "loud"})));
    assert_eq!(bad["code"], -32602, "{bad}");
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

fn output_uri(id: &str) -> String {
    format!("proc://{id}/output")
}

/// Every resource over all `resources/list` pages.
#[track_caller]
fn all_resources(s: &mut RawServer) -> Vec<Value> {
    all_pages(s, "resources/list", "resources")
}

/// Every item of a paginated list method, following `nextCursor` (at most 100 pages).
#[track_caller]
fn all_pages(s: &mut RawServer, method: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut params = json!({});
    for _ in 0..100 {
        let page = s.result(method, Some(params.clone()));
        items.extend(
            page[key]
                .as_array()
                .unwrap_or_else(|| panic!("{method}: {page}"))
                .clone(),
        );
        match page.get("nextCursor") {
            None | Some(Value::Null) => return items,
            Some(next) => params = json!({"cursor": next}),
        }
    }
    panic!("{method} never ended (100 pages)");
}

#[test]
fn each_task_is_a_resource_with_its_recent_output() {
    let mut s = RawServer::spawn();
    let init = s.initialize(LATEST);
    let caps = &init["capabilities"]["resources"];
    assert_eq!(caps["subscribe"], true, "initialize: {init}");
    assert_eq!(caps["listChanged"], true, "initialize: {init}");
    assert!(
        init["capabilities"]["logging"].is_object(),
        "initialize: {init}"
    );

    let id = id_of(&s.call(
        "start",
        json!({"command": "echo resource-line; exec sleep 60"}),
    ));
    wait_line(&mut s, &id, "resource-line", 0);
    let uri = output_uri(&id);

    let listed = all_resources(&mut s);
    let entry = listed
        .iter()
        .find(|r| r["uri"] == uri.as_str())
        .unwrap_or_else(|| panic!("{uri} not in resources/list: {listed:?}"));
    assert_eq!(entry["mimeType"], "text/plain", "{entry}");
    assert!(entry["name"].is_string(), "{entry}");

    let templates = s.result("resources/templates/list", Some(json!({})));
    let templates = templates["resourceTemplates"]
        .as_array()
        .expect("resourceTemplates");
    assert!(
        templates
            .iter()
            .any(|t| t["uriTemplate"] == "proc://{id}/output"),
        "templates: {templates:?}"
    );

    let read = s.result("resources/read", Some(json!({"uri": uri})));
    let contents = &read["contents"][0];
    assert_eq!(contents["uri"], uri.as_str(), "{read}");
    assert_eq!(contents["mimeType"], "text/plain", "{read}");
    let text = contents["text"].as_str().expect("text");
    assert!(text.contains("resource-line"), "{read}");
    s.finish();
}

#[test]
fn reading_an_unknown_resource_is_error_32002() {
    let mut s = server();
    for uri in ["proc://nosuch/output", "proc://", "file:///etc/passwd"] {
        let error = s.error("resources/read", Some(json!({"uri": uri})));
        assert_eq!(error["code"], -32002, "{uri}: {error}");
    }
    s.assert_alive();
    s.finish();
}

#[test]
fn task_list_changes_send_list_changed() {
    let mut s = server();
    let list_changed = |m: &Value| m["method"] == "notifications/resources/list_changed";
    let id = id_of(&s.call("start", json!({"command": "true"})));
    notified(
        &mut s,
        NOTIFY_TIMEOUT,
        "list_changed after start",
        list_changed,
    );
    s.wait_exited(&id);
    s.assert_alive();
    s.notifications.clear();
    s.call("remove", json!({"id": id}));
    notified(
        &mut s,
        NOTIFY_TIMEOUT,
        "list_changed after remove",
        list_changed,
    );
    s.finish();
}

#[test]
fn subscribed_resource_is_updated_when_the_task_exits() {
    let dir = TempDir::new();
    let mut s = server();
    // Prints nothing: the only update can be the one at exit.
    let id = id_of(&s.call(
        "start",
        json!({"command": gated("exit 0"), "cwd": dir.str()}),
    ));
    let uri = output_uri(&id);
    assert_eq!(
        s.result("resources/subscribe", Some(json!({"uri": uri}))),
        json!({})
    );
    std::fs::write(dir.path().join("go"), "").unwrap();
    notified(
        &mut s,
        NOTIFY_TIMEOUT,
        "resources/updated at exit",
        method_with("notifications/resources/updated", json!({"uri": uri})),
    );
    assert_eq!(
        s.result("resources/unsubscribe", Some(json!({"uri": uri}))),
        json!({})
    );
    s.finish();
}

#[test]
fn resource_updates_are_coalesced_under_a_flood() {
    const LINES: u64 = 200_000;
    let dir = TempDir::new();
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": gated(&format!("seq 1 {LINES}")), "cwd": dir.str()}),
    ));
    let uri = output_uri(&id);
    assert_eq!(
        s.result("resources/subscribe", Some(json!({"uri": uri}))),
        json!({})
    );

    std::fs::write(dir.path().join("go"), "").unwrap();
    let request = send_call(
        &mut s,
        "wait",
        json!({"id": id, "timeout_ms": 60000}),
        json!({}),
    );
    let within = RESPONSE_TIMEOUT + Duration::from_secs(60);
    let exchange = collect_until_response(&mut s, request, within);
    assert_eq!(exchange.structured()["reason"], "exited");
    let updates = exchange
        .notifications("notifications/resources/updated")
        .into_iter()
        .filter(|(_, n)| n["params"]["uri"] == uri.as_str())
        .count();

    let status = s.call("status", json!({"id": id, "tail": 1}));
    assert_eq!(status["output"]["lines"], LINES, "{status}");
    assert!(
        updates > 0,
        "no resources/updated during a flood of {LINES} lines"
    );
    // The rate (one at once, then one per 250 ms, and one at exit) is checked on virtual time
    // (proc-state's `subscribed_output_updates_are_coalesced_and_sent_at_exit`). Here, that
    // coalescing is wired: over the exchange's bound, at most 4 a second plus one at exit,
    // not one per line or per chunk read.
    let bound = within.as_secs() * 4 + 2;
    assert!(
        updates as u64 <= bound,
        "{updates} updates for {LINES} lines (bound {bound}): not coalesced"
    );
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

#[test]
fn tools_list_pages_with_next_cursor_and_rejects_a_bad_cursor() {
    let mut s = RawServer::initialized_with(LATEST, &["--page-size", "3"], &[]);
    let first = s.result("tools/list", Some(json!({})));
    assert_eq!(first["tools"].as_array().map(Vec::len), Some(3), "{first}");
    assert!(first["nextCursor"].is_string(), "more pages: {first}");
    let tools = all_pages(&mut s, "tools/list", "tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "a tool listed twice: {names:?}");
    let expected = [
        "start", "status", "logs", "wait", "write", "signal", "stop", "restart", "list", "remove",
        "screen", "resize",
    ];
    assert_eq!(unique, expected.into_iter().collect(), "tools");

    let error = s.error("tools/list", Some(json!({"cursor": "not-a-cursor"})));
    assert_eq!(error["code"], -32602, "{error}");
    s.assert_alive();
    s.finish();
}

#[test]
fn resources_list_pages_with_next_cursor_and_rejects_a_bad_cursor() {
    const TASKS: usize = 120;
    let mut s = server();
    let ids: HashSet<String> = (0..TASKS)
        .map(|_| id_of(&s.call("start", json!({"command": "true"}))))
        .collect();
    let resources = all_resources(&mut s);
    let uris: Vec<&str> = resources.iter().filter_map(|r| r["uri"].as_str()).collect();
    let unique: HashSet<&str> = uris.iter().copied().collect();
    assert_eq!(unique.len(), uris.len(), "a resource listed twice");
    for id in &ids {
        assert!(
            unique.contains(output_uri(id).as_str()),
            "{id} missing from resources/list"
        );
    }

    let error = s.error("resources/list", Some(json!({"cursor": "not-a-cursor"})));
    assert_eq!(error["code"], -32602, "{error}");
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Schema-checked inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn new_tools_are_listed_with_schemas_and_honest_annotations() {
    let mut s = server();
    let tools = all_pages(&mut s, "tools/list", "tools");
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    for (name, read_only, destructive) in [
        ("wait", true, false),
        ("write", false, false),
        ("signal", false, true),
        ("restart", false, false),
    ] {
        let t = tool(name);
        assert!(
            t["title"].is_string() && t["description"].is_string(),
            "{t}"
        );
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["inputSchema"]["additionalProperties"], false, "{t}");
        assert!(t["outputSchema"].is_object(), "{t}");
        let hints = &t["annotations"];
        assert_eq!(hints["openWorldHint"], false, "{t}");
        if read_only {
            assert_eq!(hints["readOnlyHint"], true, "{t}");
        }
        if destructive {
            assert_eq!(hints["destructiveHint"], true, "{t}");
        }
    }
    let start = tool("start");
    for option in [
        "stdin",
        "notify_on_exit",
        "wait_for",
        "wait_timeout_ms",
        "max_runtime_ms",
    ] {
        assert!(
            start["inputSchema"]["properties"][option].is_object(),
            "start lacks {option}"
        );
    }
    s.finish();
}

#[test]
fn new_tools_and_start_options_reject_wrong_types_naming_the_field() {
    let mut s = server();
    let id = id_of(&s.call("start", json!({"command": "cat", "stdin": true})));
    let cases = [
        ("wait", json!({"id": 5}), "id"),
        ("wait", json!({"id": id, "pattern": 5}), "pattern"),
        ("wait", json!({"id": id, "pattern": "("}), "pattern"),
        ("wait", json!({"id": id, "since": "3"}), "since"),
        ("wait", json!({"id": id, "port": "8080"}), "port"),
        (
            "wait",
            json!({"id": id, "timeout_ms": "1000"}),
            "timeout_ms",
        ),
        ("wait", json!({"id": id, "timeout_ms": 0}), "timeout_ms"),
        ("wait", json!({"id": id, "until": "ready"}), "until"),
        ("write", json!({"id": id}), "data"),
        ("write", json!({"id": id, "data": 5}), "data"),
        ("write", json!({"id": id, "data": "x", "eof": "yes"}), "eof"),
        ("signal", json!({"id": id}), "signal"),
        ("signal", json!({"id": id, "signal": 9}), "signal"),
        ("signal", json!({"id": id, "signal": "SIGFOO"}), "signal"),
        ("restart", json!({}), "id"),
        ("restart", json!({"id": 42}), "id"),
        ("start", json!({"command": "true", "stdin": "yes"}), "stdin"),
        (
            "start",
            json!({"command": "true", "notify_on_exit": 1}),
            "notify_on_exit",
        ),
        (
            "start",
            json!({"command": "true", "wait_for": 5}),
            "wait_for",
        ),
        (
            "start",
            json!({"command": "true", "wait_for": "("}),
            "wait_for",
        ),
        (
            "start",
            json!({"command": "true", "wait_timeout_ms": "10"}),
            "wait_timeout_ms",
        ),
        (
            "start",
            json!({"command": "true", "max_runtime_ms": "1000"}),
            "max_runtime_ms",
        ),
    ];
    for (tool, arguments, field) in cases {
        let reason = s.call_err(tool, arguments.clone());
        assert!(
            reason.contains(field),
            "{tool} {arguments}: the reason should name `{field}`: {reason}"
        );
        assert!(
            !reason.contains('\n'),
            "{tool}: the reason should be one line: {reason}"
        );
    }
    let listed = s.call("list", json!({}));
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(1),
        "a bad start ran: {listed}"
    );
    s.finish();
}

//! JSON-RPC and MCP framing under bad or unusual input, over raw stdio lines. After each bad
//! input the server must keep answering, and everything it writes must be JSON-RPC.

mod common;

use common::{AT_ONCE, LATEST, RESPONSE_TIMEOUT, RawServer, id_of, tool_text};
use serde_json::{Value, json};

/// The `error` of a response message, asserting its code.
fn assert_error_code(response: &Value, code: i64) -> &Value {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("expected error {code}, got {response}"));
    assert_eq!(error["code"], code, "response: {response}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {response}"
    );
    error
}

/// Sends `line` as is and returns the next response.
fn send_raw(server: &mut RawServer, line: &str) -> Value {
    server.send_line(line);
    server.next_response(RESPONSE_TIMEOUT)
}

/// After `line` (which must get no answer), the next response is the one to a `ping`.
fn assert_no_response_to(server: &mut RawServer, line: &str) {
    server.send_line(line);
    let id = server.next_id();
    server.send(&json!({"jsonrpc": "2.0", "id": id, "method": "ping"}));
    let response = server.next_response(RESPONSE_TIMEOUT);
    assert_eq!(response["id"], id, "{line} was answered: {response}");
    assert_eq!(response["result"], json!({}), "ping: {response}");
}

#[test]
fn malformed_json_is_a_parse_error_answered_with_its_id_when_readable() {
    let mut server = RawServer::initialized(LATEST);
    // An SDK waits for the response to its id: read it from the broken message if it can be.
    let response = send_raw(
        &mut server,
        r#"{"jsonrpc": "2.0", "id": 1, "method": "ping""#,
    );
    assert_error_code(&response, -32700);
    assert_eq!(response.get("id"), Some(&json!(1)), "response: {response}");
    let response = send_raw(&mut server, r#"{"jsonrpc": "2.0", "method": "#);
    assert_error_code(&response, -32700);
    assert_eq!(
        response.get("id"),
        Some(&Value::Null),
        "response: {response}"
    );
    server.assert_alive();
    server.finish();
}

#[test]
fn json_that_is_not_an_object_is_invalid_request() {
    let mut server = RawServer::initialized(LATEST);
    for line in ["42", r#""x""#, "null", "true"] {
        let response = send_raw(&mut server, line);
        assert_error_code(&response, -32600);
        assert_eq!(response.get("id"), Some(&Value::Null), "{line}: {response}");
        server.assert_alive();
    }
    server.finish();
}

#[test]
fn unknown_method_is_method_not_found_echoing_the_id_exactly() {
    let mut server = RawServer::initialized(LATEST);
    for id in [json!(7), json!(0), json!(-7), json!("req-1"), json!("")] {
        server.send(&json!({"jsonrpc": "2.0", "id": id, "method": "no/such/method", "params": {}}));
        let response = server.next_response(RESPONSE_TIMEOUT);
        assert_error_code(&response, -32601);
        assert_eq!(
            response["id"], id,
            "the error must carry the request's id: {response}"
        );
    }
    server.assert_alive();
    server.finish();
}

#[test]
fn unknown_tool_is_invalid_params_error() {
    let mut server = RawServer::initialized(LATEST);
    let error = server.error(
        "tools/call",
        Some(json!({"name": "no_such_tool", "arguments": {}})),
    );
    assert_eq!(error["code"], -32602, "error: {error}");
    server.assert_alive();
    server.finish();
}

#[test]
fn wrong_argument_type_is_tool_error_naming_the_field() {
    let mut server = RawServer::initialized(LATEST);
    let text = server.call_err("start", json!({"command": 5}));
    assert!(
        text.contains("command"),
        "the reason should name `command`: {text:?}"
    );
    server.assert_alive();
    server.finish();
}

#[test]
fn missing_required_argument_is_tool_error_naming_the_field() {
    let mut server = RawServer::initialized(LATEST);
    let text = server.call_err("start", json!({}));
    assert!(
        text.contains("command"),
        "the reason should name `command`: {text:?}"
    );
    server.assert_alive();
    server.finish();
}

#[test]
fn unknown_argument_is_tool_error_naming_it() {
    let mut server = RawServer::initialized(LATEST);
    let text = server.call_err("start", json!({"command": "true", "comand_typo": "x"}));
    assert!(
        text.contains("comand_typo"),
        "the reason should name the unknown argument: {text:?}"
    );
    server.assert_alive();
    server.finish();
}

#[test]
fn request_before_initialize_is_method_not_found_at_once() {
    let mut server = RawServer::spawn();
    let response = server.request_within("tools/list", None, AT_ONCE);
    assert_error_code(&response, -32601);
    server.initialize(LATEST);
    server.assert_alive();
    server.finish();
}

#[test]
fn server_discover_is_method_not_found_at_once() {
    let mut server = RawServer::spawn();
    let response = server.request_within("server/discover", Some(json!({})), AT_ONCE);
    assert_error_code(&response, -32601);
    server.initialize(LATEST);
    server.assert_alive();
    server.finish();
}

#[test]
fn ping_before_initialize_returns_empty_result() {
    let mut server = RawServer::spawn();
    let response = server.request_within("ping", None, AT_ONCE);
    assert_eq!(response["result"], json!({}), "response: {response}");
    server.finish();
}

#[test]
fn notifications_get_no_response() {
    let mut server = RawServer::initialized(LATEST);
    assert_no_response_to(
        &mut server,
        r#"{"jsonrpc": "2.0", "method": "notifications/no_such_thing"}"#,
    );
    assert_no_response_to(
        &mut server,
        r#"{"jsonrpc": "2.0", "method": "notifications/initialized"}"#,
    );
    assert_no_response_to(
        &mut server,
        r#"{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 12345}}"#,
    );
    assert_no_response_to(&mut server, r#"{"jsonrpc": "2.0", "method": "tools/list"}"#);
    server.finish();
}

#[test]
fn responses_from_the_client_get_no_response() {
    let mut server = RawServer::initialized(LATEST);
    assert_no_response_to(&mut server, r#"{"jsonrpc": "2.0", "id": 99, "result": {}}"#);
    assert_no_response_to(
        &mut server,
        r#"{"jsonrpc": "2.0", "id": 98, "error": {"code": -32601, "message": "Method not found"}}"#,
    );
    server.finish();
}

#[test]
fn oversized_line_gets_an_error_and_the_session_continues() {
    let mut server = RawServer::initialized(LATEST);
    let pad = "x".repeat(5 << 20);
    let line =
        json!({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {"pad": pad}}).to_string();
    let response = send_raw(&mut server, &line);
    assert!(
        response.get("error").is_some(),
        "a 5 MB message must be refused: {}",
        common::truncate(&response.to_string(), 300)
    );
    assert!(
        response["id"] == 5 || response["id"].is_null(),
        "response: {response}"
    );
    server.assert_alive();
    assert!(server.result("tools/list", None)["tools"].is_array());
    server.finish();
}

#[test]
fn batch_is_answered_with_an_array_in_2025_03_26() {
    let mut server = RawServer::initialized("2025-03-26");
    let response = send_raw(
        &mut server,
        r#"[{"jsonrpc": "2.0", "id": 101, "method": "ping"}, {"jsonrpc": "2.0", "id": 102, "method": "tools/list"}]"#,
    );
    let batch = response
        .as_array()
        .unwrap_or_else(|| panic!("a batch is answered with an array: {response}"));
    assert_eq!(batch.len(), 2, "response: {response}");
    let ping = batch
        .iter()
        .find(|r| r["id"] == 101)
        .unwrap_or_else(|| panic!("no answer to 101: {response}"));
    assert_eq!(ping["result"], json!({}), "response: {response}");
    let list = batch
        .iter()
        .find(|r| r["id"] == 102)
        .unwrap_or_else(|| panic!("no answer to 102: {response}"));
    assert!(list["result"]["tools"].is_array(), "response: {response}");
    server.assert_alive();
    server.finish();
}

#[test]
fn nothing_the_server_sends_carries_null_params() {
    let mut server = RawServer::initialized(LATEST);
    let task = server.call("start", json!({"command": "exit 3"}));
    let status = server.wait_exited(&id_of(&task));
    assert_eq!(status["exit_code"], 3, "status: {status}");
    server.result("tools/list", None);
    server.call("list", json!({}));
    // `finish` checks every line the server wrote for `"params": null`.
    server.finish();
}

#[test]
fn stdout_carries_only_jsonrpc_while_a_child_floods_both_streams() {
    let mut server = RawServer::initialized(LATEST);
    let script = "seq 1 200000; seq 1 200000 >&2; echo 'not json {'; echo 'nor this' >&2; printf 'no newline'";
    let task = server.call("start", json!({"command": script}));
    let id = id_of(&task);
    let status = server.wait_exited(&id);
    assert_eq!(status["exit_code"], 0, "status: {status}");
    for stream in ["stdout", "stderr", "both"] {
        let logs = server.call("logs", json!({"id": id, "stream": stream, "tail": 1000}));
        assert!(
            !logs["lines"].as_array().unwrap().is_empty(),
            "logs {stream}: {logs}"
        );
    }
    let text = tool_text(&server.call_tool("logs", json!({"id": id})));
    assert!(!text.is_empty());
    server.finish();
}

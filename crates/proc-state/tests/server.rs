//! The server driven on virtual time by a scripted driver: every test feeds inputs and checks
//! the outputs, as a real driver would see them. No I/O, no clock, no threads.

mod harness;

use std::time::Duration;

use harness::{
    Harness, error_code, notifications, output, spawned, transmitted, without_list_changed,
};
use proc_state::{
    Config, ExitStatus, Input, Output, ProbeOutcome, ProbeTarget, RunId, Server, Signal, StdinMode,
    Stdio, Stream,
};
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
#[case::tools_list("tools/list")]
#[case::tools_call("tools/call")]
#[case::server_discover("server/discover")]
#[case::unknown("no/such/method")]
fn requests_before_initialize_get_method_not_found_at_once(#[case] method: &str) {
    let mut h = Harness::new();
    let reply = h.request(json!({"jsonrpc": "2.0", "id": 5, "method": method, "params": {}}));
    assert_eq!(error_code(&reply), -32601);
    assert_eq!(reply["id"], 5);
}

#[test]
fn ping_is_answered_before_initialize() {
    let mut h = Harness::new();
    let reply = h.request(json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}));
    assert_eq!(reply, json!({"jsonrpc": "2.0", "id": "p", "result": {}}));
}

#[rstest]
#[case("2024-11-05")]
#[case("2025-03-26")]
#[case("2025-06-18")]
#[case("2025-11-25")]
fn initialize_echoes_a_supported_version(#[case] version: &str) {
    let mut h = Harness::new();
    let reply = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    assert_eq!(reply["id"], 0);
    assert_eq!(reply["result"]["protocolVersion"], version);
    assert_eq!(reply["result"]["serverInfo"]["name"], "proc-mcp");
    assert!(reply["result"]["capabilities"]["tools"].is_object());
}

#[test]
fn initialize_with_an_unknown_version_offers_the_latest() {
    let mut h = Harness::new();
    let reply = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "1999-01-01", "capabilities": {}}}));
    assert_eq!(reply["result"]["protocolVersion"], "2025-11-25");
}

#[rstest]
#[case::malformed_json_with_a_readable_id(&b"{\"jsonrpc\": \"2.0\", \"id\": 1,\n"[..], -32700, json!(1))]
#[case::malformed_json(&b"{\"jsonrpc\": \"2.0\", \"method\": \n"[..], -32700, Value::Null)]
#[case::number(&b"42\n"[..], -32600, Value::Null)]
#[case::string(&b"\"x\"\n"[..], -32600, Value::Null)]
#[case::missing_jsonrpc(&b"{\"id\":3,\"method\":\"ping\"}\n"[..], -32600, json!(3))]
#[case::unknown_method(&b"{\"jsonrpc\":\"2.0\",\"id\":-7,\"method\":\"nope\"}\n"[..], -32601, json!(-7))]
#[case::params_not_object(&b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"ping\",\"params\":[]}\n"[..], -32602, json!(0))]
#[case::unknown_tool(&b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":\"fly\"}}\n"[..], -32602, json!(8))]
#[case::tool_without_name(&b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{}}\n"[..], -32602, json!(9))]
#[case::bad_cursor(&b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"tools/list\",\"params\":{\"cursor\":\"x\"}}\n"[..], -32602, json!(10))]
#[case::batch_after_2025_03_26(&b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n"[..], -32600, Value::Null)]
#[case::second_initialize(&b"{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\"}}\n"[..], -32600, json!(11))]
fn bad_messages_get_the_right_error_and_the_session_goes_on(
    #[case] line: &[u8],
    #[case] code: i64,
    #[case] id: Value,
) {
    let mut h = Harness::initialized("2025-11-25");
    h.send_raw(line);
    let replies = transmitted(&h.drain());
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(error_code(&replies[0]), code, "{}", replies[0]);
    assert_eq!(replies[0]["id"], id);
    let pong = h.request(json!({"jsonrpc": "2.0", "id": 100, "method": "ping"}));
    assert_eq!(pong["result"], json!({}));
}

#[test]
fn over_long_message_is_refused_without_buffering_it_and_the_next_is_served() {
    let mut config = Config::default();
    config.max_message_bytes = 1024;
    let mut h = Harness::with_config(config);
    let big = vec![b'x'; 5 * 1024 * 1024];
    h.send_raw(&big);
    assert!(h.drain().is_empty(), "nothing until the line ends");
    h.send_raw(b"\n");
    let replies = transmitted(&h.drain());
    assert_eq!(error_code(&replies[0]), -32600);
    assert!(
        replies[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5242880 bytes")
    );
    let pong = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    assert_eq!(pong["id"], 1);
}

#[test]
fn notifications_and_client_responses_are_never_answered() {
    let mut h = Harness::initialized("2025-11-25");
    assert!(
        h.send(json!({"jsonrpc": "2.0", "method": "notifications/whatever"}))
            .is_empty()
    );
    assert!(
        h.send(json!({"jsonrpc": "2.0", "id": 4, "result": {}}))
            .is_empty()
    );
    assert!(
        h.send(json!({"jsonrpc": "2.0", "id": 4, "error": {"code": 1, "message": "x"}}))
            .is_empty()
    );
}

#[test]
fn batch_is_answered_with_one_array_in_2025_03_26() {
    let mut h = Harness::initialized("2025-03-26");
    let replies = transmitted(&h.send(json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "nope"},
    ])));
    assert_eq!(replies.len(), 1);
    let array = replies[0].as_array().expect("an array response");
    let ids: Vec<&Value> = array.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(error_code(&array[2]), -32601);
}

#[test]
fn batch_waits_for_a_deferred_start() {
    let mut h = Harness::initialized("2025-03-26");
    let outputs = h.send(json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "start", "arguments": {"command": "true"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]));
    assert!(
        transmitted(&outputs).is_empty(),
        "the batch is answered as a whole"
    );
    let Output::Spawn { run, .. } = &outputs[0] else {
        panic!("{outputs:?}")
    };
    let replies = transmitted(&h.input(Input::Spawned { run: *run, pid: 10 }));
    assert_eq!(replies[0].as_array().map(Vec::len), Some(2));
}

#[test]
fn tools_list_matches_the_protocol_version() {
    let mut h = Harness::initialized("2025-06-18");
    let reply = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let names: Vec<&str> = reply["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "start", "status", "logs", "wait", "write", "signal", "stop", "restart", "list",
            "remove", "screen", "resize",
        ]
    );
    assert!(reply["result"]["tools"][0]["outputSchema"].is_object());

    let mut old = Harness::initialized("2025-03-26");
    let reply = old.request(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert!(reply["result"]["tools"][0].get("outputSchema").is_none());
    assert!(reply["result"]["tools"][0]["annotations"].is_object());
}

#[test]
fn start_spawns_a_shell_in_a_clean_environment_and_answers_with_the_pid() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "echo hi", "env": {"PAGER": "less", "A": "b"}, "cwd": "sub"}),
    );
    let (run, spec) = spawned(&outputs).unwrap();
    let run = &run;
    assert!(
        notifications(&outputs).is_empty(),
        "list_changed is coalesced"
    );
    assert_eq!(spec.program, "/bin/sh");
    assert_eq!(spec.args, ["-c", "echo hi"]);
    assert_eq!(spec.cwd.as_deref(), Some("./sub"));
    assert_eq!(
        spec.stdio,
        Stdio::Pipes {
            stdin: StdinMode::Null
        }
    );
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("NO_COLOR", "1"),
            ("GIT_PAGER", "cat"),
            ("PYTHONUNBUFFERED", "1"),
            ("A", "b"),
            ("PAGER", "less")
        ]
    );

    let replies = transmitted(&h.input(Input::Spawned {
        run: *run,
        pid: 4242,
    }));
    let result = &replies[0]["result"];
    assert_eq!(result["structuredContent"]["pid"], 4242);
    assert_eq!(result["structuredContent"]["state"], "running");
    assert_eq!(result["structuredContent"]["id"], "t00001");
    assert!(result.get("isError").is_none());
}

#[test]
fn a_burst_of_starts_and_removals_makes_one_list_changed() {
    let mut h = Harness::initialized("2025-11-25");
    let mut sent = Vec::new();
    for pid in 0..50 {
        let (run, _) = h.start(json!({"command": "true"}), 100 + pid);
        sent.extend(h.exit(run, ExitStatus::Code(0)));
        sent.extend(h.advance(1));
        sent.extend(h.call(2, "remove", json!({"id": format!("t{:05}", pid + 1)})));
    }
    let burst = notifications(&sent);
    assert!(burst.is_empty(), "{burst:?}");
    assert!(
        notifications(&h.advance(99)).is_empty(),
        "100 ms of quiet first"
    );
    let after = notifications(&h.advance(1));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["method"], "notifications/resources/list_changed");
    assert!(notifications(&h.advance(10_000)).is_empty());
    // A burst that goes on is notified once a second.
    let mut notified = Vec::new();
    for n in 0..60 {
        let (run, _) = h.start(json!({"command": "true"}), 200 + n);
        let _ = h.exit(run, ExitStatus::Code(0));
        notified.extend(notifications(&h.advance(50)).into_iter().map(|_| n));
    }
    assert_eq!(notified, [19, 39, 59], "at 1 s, 2 s and 3 s");
}

#[test]
fn start_with_args_runs_the_program_without_a_shell() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(1, "start", json!({"command": "ls", "args": ["-l", "a b"]}));
    let (_, spec) = spawned(&outputs).unwrap();
    assert_eq!(spec.program, "ls");
    assert_eq!(spec.args, ["-l", "a b"]);
}

#[test]
fn spawn_failure_is_a_tool_error_and_leaves_a_failed_task() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "nope", "args": [], "name": "x"}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    let run = &run;
    let outputs = h.input(Input::SpawnFailed {
        run: *run,
        error: "program not found".into(),
    });
    assert!(outputs.contains(&Output::Release { run: *run }));
    let replies = transmitted(&outputs);
    assert_eq!(replies[0]["result"]["isError"], true);
    assert!(
        replies[0]["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("program not found")
    );
    let status = h.call_now("status", json!({"id": "x"}));
    assert_eq!(status["structuredContent"]["state"], "failed");
}

#[rstest]
#[case::wrong_type("start", json!({"command": 5}), "`command`")]
#[case::missing("start", json!({}), "missing field `command`")]
#[case::unknown_field("logs", json!({"id": "a", "lines": 3}), "unknown field `lines`")]
#[case::negative("logs", json!({"id": "a", "since": -1}), "`since`")]
#[case::bad_regex("logs", json!({"id": "t00001", "grep": "("}), "`grep`")]
#[case::bad_signal("stop", json!({"id": "t00001", "signal": "SIGWHAT"}), "`signal`")]
#[case::tail_too_big("status", json!({"id": "t00001", "tail": 5000}), "`tail`")]
#[case::unknown_task("status", json!({"id": "ghost"}), "no task with id or name \"ghost\"")]
#[case::not_an_object("list", json!([1]), "must be an object")]
fn bad_arguments_are_tool_errors_with_a_reason(
    #[case] tool: &str,
    #[case] arguments: Value,
    #[case] reason: &str,
) {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "sleep 9"}), 1);
    let result = h.call_now(tool, arguments);
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(reason), "{text:?} should mention {reason:?}");
}

#[test]
fn stop_escalates_to_sigkill_after_grace_and_answers_once_released() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(
        json!({"command": "trap '' TERM; sleep 1000", "name": "stubborn"}),
        77,
    );
    let outputs = h.call(2, "stop", json!({"id": "stubborn", "grace_ms": 500}));
    assert_eq!(
        outputs,
        [Output::Signal {
            run,
            signal: Signal::Term
        }]
    );
    assert_eq!(without_list_changed(h.advance(499)), []);
    assert_eq!(
        h.advance(1),
        [Output::Signal {
            run,
            signal: Signal::Kill
        }]
    );
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Kill));
    let release = outputs
        .iter()
        .position(|o| *o == Output::Release { run })
        .expect("released");
    let reply = outputs
        .iter()
        .position(|o| matches!(o, Output::Transmit(_)))
        .expect("answered");
    assert!(release < reply, "reaped before the answer");
    let result = &transmitted(&outputs)[0]["result"]["structuredContent"];
    assert_eq!(result["escalated"], true);
    assert_eq!(result["signal"], "SIGKILL");
    assert_eq!(result["state"], "exited");
    assert_eq!(result["stopped"], true);
    assert_eq!(result["runtime_ms"], 500);
}

#[test]
fn stop_of_an_ended_task_returns_its_status_at_once() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "true"}), 5);
    let _ = h.exit(run, ExitStatus::Code(0));
    let result = h.call_now("stop", json!({"id": "t00001"}));
    assert_eq!(result["structuredContent"]["exit_code"], 0);
    assert_eq!(result["structuredContent"]["escalated"], false);
    assert_eq!(result["structuredContent"]["stopped"], false);
}

#[test]
fn logs_since_returns_only_new_lines() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server"}), 5);
    let _ = h.input(Input::ProcessOutput {
        run,
        stream: Stream::Stderr,
        bytes: b"listening on 8000\n",
    });
    let first = h.call_now("logs", json!({"id": "t00001"}));
    assert_eq!(first["structuredContent"]["next_cursor"], 1);
    let _ = h.input(Input::ProcessOutput {
        run,
        stream: Stream::Stdout,
        bytes: b"GET / 200\nGET /x 404\n",
    });
    let next = h.call_now("logs", json!({"id": "t00001", "since": 1}));
    let lines = &next["structuredContent"]["lines"];
    assert_eq!(
        lines,
        &json!([
            {"n": 1, "stream": "stdout", "text": "GET / 200"},
            {"n": 2, "stream": "stdout", "text": "GET /x 404"},
        ])
    );
    assert_eq!(next["structuredContent"]["next_cursor"], 3);
}

#[test]
fn names_are_references_and_are_unique_among_live_tasks() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "a", "name": "web"}), 5);
    let clash = h.call_now("start", json!({"command": "b", "name": "web"}));
    assert_eq!(clash["isError"], true);
    let _ = h.exit(run, ExitStatus::Code(0));
    let (_, second) = h.start(json!({"command": "b", "name": "web"}), 6);
    assert_eq!(second["structuredContent"]["id"], "t00002");
    let status = h.call_now("status", json!({"id": "web"}));
    assert_eq!(
        status["structuredContent"]["id"], "t00002",
        "the newest task owns the name"
    );
}

#[test]
fn remove_refuses_a_running_task_and_forgets_an_ended_one() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "sleep 1"}), 5);
    assert_eq!(
        h.call_now("remove", json!({"id": "t00001"}))["isError"],
        true
    );
    let _ = h.exit(run, ExitStatus::Code(0));
    let removed = h.call_now("remove", json!({"id": "t00001"}));
    assert_eq!(
        removed["structuredContent"],
        json!({"id": "t00001", "removed": true})
    );
    assert_eq!(
        h.call_now("list", json!({}))["structuredContent"]["tasks"],
        json!([])
    );
}

#[test]
fn client_eof_stops_every_task_then_exits() {
    let mut h = Harness::initialized("2025-11-25");
    let (a, _) = h.start(json!({"command": "sleep 1000"}), 5);
    let (b, _) = h.start(json!({"command": "sleep 1000"}), 6);
    let outputs = h.input(Input::ClientEof);
    assert_eq!(
        outputs,
        [
            Output::Signal {
                run: a,
                signal: Signal::Term
            },
            Output::Signal {
                run: b,
                signal: Signal::Term
            },
        ]
    );
    let _ = h.exit(a, ExitStatus::Signaled(Signal::Term));
    assert_eq!(
        without_list_changed(h.advance(1000)),
        [Output::Signal {
            run: b,
            signal: Signal::Kill
        }],
        "shutdown grace is 1 s"
    );
    let outputs = h.exit(b, ExitStatus::Signaled(Signal::Kill));
    assert_eq!(outputs.last(), Some(&Output::Exit));
    assert_eq!(
        h.server.poll_output(),
        Output::Timeout(None),
        "exit is said once"
    );
}

#[test]
fn second_terminate_kills_at_once() {
    let mut h = Harness::initialized("2025-11-25");
    let (a, _) = h.start(json!({"command": "sleep 1000"}), 5);
    let _ = h.input(Input::Terminate);
    assert_eq!(
        h.input(Input::Terminate),
        [Output::Signal {
            run: a,
            signal: Signal::Kill
        }]
    );
}

#[test]
fn late_events_for_released_runs_are_ignored() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "true"}), 5);
    let _ = h.exit(run, ExitStatus::Code(0));
    assert!(
        h.input(Input::ProcessOutput {
            run,
            stream: Stream::Stdout,
            bytes: b"late\n"
        })
        .is_empty()
    );
    assert!(
        h.input(Input::Exited {
            run,
            status: ExitStatus::Code(1),
            signalled: false,
        })
        .is_empty()
    );
    assert!(
        h.input(Input::Spawned {
            run: RunId(999),
            pid: 1
        })
        .is_empty()
    );
    let status = h.call_now("status", json!({"id": "t00001"}));
    assert_eq!(status["structuredContent"]["exit_code"], 0);
    assert_eq!(status["structuredContent"]["output"]["lines"], 0);
}

#[test]
fn the_same_inputs_give_byte_identical_outputs() {
    fn script() -> Vec<Output> {
        let mut h = Harness::initialized("2025-11-25");
        let (run, _) = h.start(json!({"command": "x"}), 5);
        let mut all = h.input(Input::ProcessOutput {
            run,
            stream: Stream::Stdout,
            bytes: b"\x1b[31mred\x1b[0m\xff\n",
        });
        all.extend(h.call(3, "logs", json!({"id": "t00001"})));
        all.extend(h.call(4, "stop", json!({})));
        all.extend(h.call(5, "list", json!({})));
        all.extend(h.advance(Duration::from_secs(1).as_millis() as u64));
        all
    }
    assert_eq!(script(), script());
}

#[test]
fn a_generator_that_repeats_itself_still_gives_unique_ids() {
    let mut h = Harness::initialized("2025-11-25");
    h.server = Server::new(Config::default(), Box::new(|| "same".to_owned()));
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let (_, a) = h.start(json!({"command": "a"}), 1);
    let (_, b) = h.start(json!({"command": "b"}), 2);
    assert_eq!(a["structuredContent"]["id"], "same");
    assert_ne!(b["structuredContent"]["id"], "same");
}

#[test]
fn wait_matches_a_line_printed_before_the_call() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server"}), 5);
    let _ = output(&mut h, run, b"booting\nlistening on :8080\nmore\n");
    let result = h.call_now(
        "wait",
        json!({"id": "t00001", "pattern": "listening on :(\\d+)"}),
    );
    let s = &result["structuredContent"];
    assert_eq!(s["reason"], "matched");
    assert_eq!(
        s["line"],
        json!({"n": 1, "stream": "stdout", "text": "listening on :8080"})
    );
    assert_eq!(s["next_cursor"], 2, "reading on starts after the match");
}

#[test]
fn wait_answers_when_the_pattern_is_printed_later() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server"}), 5);
    assert!(
        transmitted(&h.call(7, "wait", json!({"id": "t00001", "pattern": "ready"}))).is_empty()
    );
    assert!(transmitted(&output(&mut h, run, b"not yet\n")).is_empty());
    assert!(transmitted(&h.advance(1500)).is_empty());
    let replies = transmitted(&output(&mut h, run, b"all ready\n"));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(replies[0]["id"], 7);
    assert_eq!(s["reason"], "matched");
    assert_eq!(s["line"]["n"], 1);
    assert_eq!(s["waited_ms"], 1500);
}

#[test]
fn wait_since_skips_earlier_matches() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server"}), 5);
    let _ = output(&mut h, run, b"error one\nok\n");
    assert!(
        transmitted(&h.call(
            7,
            "wait",
            json!({"id": "t00001", "pattern": "error", "since": 1})
        ))
        .is_empty()
    );
    let replies = transmitted(&output(&mut h, run, b"error two\n"));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["line"]["text"],
        "error two"
    );
}

#[test]
fn wait_times_out_at_its_deadline() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 5);
    let _ = h.call(
        7,
        "wait",
        json!({"id": "t00001", "pattern": "never", "timeout_ms": 2000}),
    );
    assert!(transmitted(&h.advance(1999)).is_empty());
    let replies = transmitted(&h.advance(1));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["reason"],
        "timeout"
    );
    assert_eq!(
        replies[0]["result"]["structuredContent"]["line"],
        Value::Null
    );
}

#[test]
fn wait_returns_exited_when_the_task_ends_first() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "false"}), 5);
    let _ = h.call(7, "wait", json!({"id": "t00001", "pattern": "never"}));
    let replies = transmitted(&h.exit(run, ExitStatus::Code(1)));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(s["reason"], "exited");
    assert_eq!(s["exit_code"], 1);
    assert_eq!(s["state"], "exited");
}

#[test]
fn an_exit_whose_status_was_lost_ends_the_task_and_says_so() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "sleep 1000"}), 5);
    let _ = h.call(7, "wait", json!({"id": "t00001", "pattern": "never"}));
    let replies = transmitted(&h.exit(run, ExitStatus::Lost));
    let result = &replies[0]["result"];
    assert_eq!(result["structuredContent"]["reason"], "exited");
    assert_eq!(result["structuredContent"]["state"], "exited");
    assert_eq!(result["structuredContent"]["exit_code"], Value::Null);
    assert_eq!(result["structuredContent"]["signal"], Value::Null);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("exit status lost"), "{text}");
}

#[test]
fn wait_for_a_port_probes_until_it_opens() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 5);
    let outputs = h.call(7, "wait", json!({"id": "t00001", "port": 8080}));
    let [
        Output::Probe {
            probe,
            target: ProbeTarget::Port(8080),
        },
    ] = outputs.as_slice()
    else {
        panic!("{outputs:?}")
    };
    assert!(
        h.input(Input::Probed {
            probe: *probe,
            outcome: ProbeOutcome::Failed("refused".into()),
        })
        .is_empty()
    );
    assert!(
        without_list_changed(h.advance(99)).is_empty(),
        "probes are spaced"
    );
    let outputs = without_list_changed(h.advance(1));
    let [Output::Probe { probe, .. }] = outputs.as_slice() else {
        panic!("{outputs:?}")
    };
    let replies = transmitted(&h.input(Input::Probed {
        probe: *probe,
        outcome: ProbeOutcome::Open,
    }));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["reason"],
        "port_open"
    );
}

#[test]
fn cancelled_wait_gets_no_response_and_the_session_goes_on() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 5);
    let _ = h.call(7, "wait", json!({"id": "t00001", "timeout_ms": 1000}));
    assert!(h.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}})).is_empty());
    assert!(
        without_list_changed(h.advance(5000)).is_empty(),
        "no response after cancellation"
    );
    assert_eq!(
        h.request(json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}))["id"],
        8
    );
}

#[test]
fn wait_sends_increasing_progress_about_once_a_second() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 5);
    let _ = h.send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "wait", "arguments": {"id": "t00001", "timeout_ms": 3500}, "_meta": {"progressToken": "p1"}}}));
    let mut progress = Vec::new();
    for _ in 0..4 {
        for n in notifications(&without_list_changed(h.advance(1000))) {
            assert_eq!(n["method"], "notifications/progress");
            assert_eq!(n["params"]["progressToken"], "p1");
            progress.push(n["params"]["progress"].as_u64().unwrap());
        }
    }
    assert_eq!(progress, [1, 2, 3]);
}

#[test]
fn start_with_wait_for_answers_once_ready() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "server", "wait_for": "Serving on port \\d+"}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    assert!(
        transmitted(&h.input(Input::Spawned { run, pid: 9 })).is_empty(),
        "not ready yet"
    );
    let replies = transmitted(&output(&mut h, run, b"Serving on port 8000\n"));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(
        s["ready"],
        json!({"matched": true, "line": "Serving on port 8000", "reason": "matched"})
    );
    assert_eq!(s["pid"], 9);
}

#[test]
fn start_with_wait_for_reports_a_timeout_and_keeps_running() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "server", "wait_for": "x", "wait_timeout_ms": 500}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    let _ = h.input(Input::Spawned { run, pid: 9 });
    let replies = transmitted(&h.advance(500));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(s["ready"]["reason"], "timeout");
    assert_eq!(s["state"], "running");
}

#[test]
fn write_sends_bytes_to_stdin_and_answers_when_written() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "cat", "stdin": true}), 5);
    let _ = output(&mut h, run, b"earlier\n");
    let outputs = h.call(
        3,
        "write",
        json!({"id": "t00001", "data": "hello\n", "eof": true}),
    );
    assert_eq!(
        outputs,
        [Output::WriteStdin {
            run,
            data: b"hello\n".to_vec(),
        }]
    );
    let outputs = h.input(Input::StdinWritten { run, result: Ok(6) });
    assert_eq!(
        outputs[0],
        Output::CloseStdin { run },
        "eof: closed once written"
    );
    let replies = transmitted(&outputs);
    assert_eq!(
        replies[0]["result"]["structuredContent"],
        json!({"id": "t00001", "bytes_written": 6, "bytes_queued": 0, "next_cursor": 1})
    );
    let again = h.call_now("write", json!({"id": "t00001", "data": "more"}));
    assert_eq!(again["isError"], true, "stdin was closed by eof");
}

#[test]
fn write_needs_a_task_started_with_stdin() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "cat"}), 5);
    let result = h.call_now("write", json!({"id": "t00001", "data": "x"}));
    assert_eq!(result["isError"], true);
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("stdin: true")
    );
}

#[test]
fn signal_goes_to_the_group_without_waiting() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "python3 -i"}), 5);
    let outputs = h.call(4, "signal", json!({"id": "t00001", "signal": "SIGINT"}));
    assert_eq!(
        outputs[0],
        Output::Signal {
            run,
            signal: Signal::Int
        }
    );
    let replies = transmitted(&outputs);
    assert_eq!(
        replies[0]["result"]["structuredContent"],
        json!({"id": "t00001", "signal": "SIGINT", "state": "running"})
    );
}

#[test]
fn restart_keeps_id_name_and_cursors() {
    let mut h = Harness::initialized("2025-11-25");
    let (old, _) = h.start(json!({"command": "server", "name": "web"}), 5);
    let _ = output(&mut h, old, b"one\ntwo\n");
    let outputs = h.call(5, "restart", json!({"id": "web"}));
    assert_eq!(
        outputs,
        [Output::Signal {
            run: old,
            signal: Signal::Term
        }]
    );
    let outputs = h.exit(old, ExitStatus::Signaled(Signal::Term));
    let (new, spec) = spawned(&outputs).expect("respawned");
    assert_ne!(new, old);
    assert_eq!(spec.args, ["-c", "server"]);
    let replies = transmitted(&h.input(Input::Spawned { run: new, pid: 6 }));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(
        (
            s["id"].as_str(),
            s["name"].as_str(),
            s["restarts"].as_u64(),
            s["pid"].as_u64()
        ),
        (Some("t00001"), Some("web"), Some(1), Some(6))
    );
    let _ = output(&mut h, new, b"three\n");
    let logs = h.call_now("logs", json!({"id": "web", "since": 2}));
    assert_eq!(
        logs["structuredContent"]["lines"],
        json!([{"n": 2, "stream": "stdout", "text": "three"}])
    );
}

#[test]
fn max_runtime_stops_the_task() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "sleep 1000", "max_runtime_ms": 3000}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    let _ = h.input(Input::Spawned { run, pid: 5 });
    assert!(without_list_changed(h.advance(2999)).is_empty());
    assert_eq!(
        h.advance(1),
        [Output::Signal {
            run,
            signal: Signal::Term
        }]
    );
    let _ = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert_eq!(
        h.call_now("status", json!({"id": "t00001"}))["structuredContent"]["stopped"],
        true
    );
}

#[test]
fn notify_on_exit_sends_a_log_message_and_process_exit() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "false", "notify_on_exit": true}), 5);
    let sent = notifications(&h.exit(run, ExitStatus::Code(1)));
    assert_eq!(sent[0]["method"], "notifications/message");
    assert_eq!(sent[0]["params"]["level"], "warning");
    assert_eq!(sent[0]["params"]["logger"], "proc-mcp");
    assert_eq!(sent[0]["params"]["data"]["event"], "exit");
    assert_eq!(sent[0]["params"]["data"]["exit_code"], 1);
    assert_eq!(sent[1]["method"], "process/exit");
    assert_eq!(sent[1]["params"]["exitCode"], 1);
    assert_eq!(sent[1]["params"]["id"], "t00001");
}

#[test]
fn set_level_filters_log_messages() {
    let mut h = Harness::initialized("2025-11-25");
    let reply = h.request(json!({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "error"}}));
    assert_eq!(reply["result"], json!({}));
    let bad = h.request(json!({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": {"level": "loud"}}));
    assert_eq!(error_code(&bad), -32602);
    let (run, _) = h.start(json!({"command": "true", "notify_on_exit": true}), 5);
    let sent = notifications(&h.exit(run, ExitStatus::Code(0)));
    let methods: Vec<&str> = sent.iter().map(|n| n["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["process/exit"], "info is below error");
}

#[test]
fn resources_list_read_and_unknown_uri() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server", "name": "web"}), 5);
    let _ = output(&mut h, run, b"hello\n");
    let list = h.request(json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list"}));
    assert_eq!(
        list["result"]["resources"][0]["uri"],
        "proc://t00001/output"
    );
    assert_eq!(list["result"]["resources"][0]["mimeType"], "text/plain");
    let read = h.request(json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "proc://web/output"}}));
    assert_eq!(read["result"]["contents"][0]["text"], "hello\n");
    let missing = h.request(json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "proc://nope/output"}}));
    assert_eq!(error_code(&missing), -32002);
    let templates =
        h.request(json!({"jsonrpc": "2.0", "id": 5, "method": "resources/templates/list"}));
    assert_eq!(
        templates["result"]["resourceTemplates"][0]["uriTemplate"],
        "proc://{id}/output"
    );
}

#[test]
fn subscribed_output_updates_are_coalesced_and_sent_at_exit() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "flood"}), 5);
    let reply = h.request(json!({"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": "proc://t00001/output"}}));
    assert_eq!(reply["result"], json!({}));
    let mut updates = 0;
    assert_eq!(
        notifications(&h.advance(250)).len(),
        1,
        "the start's list_changed"
    );
    for _ in 0..100 {
        updates += notifications(&h.advance(10)).len();
        updates += notifications(&output(&mut h, run, b"line\n")).len();
        updates += notifications(&h.advance(0)).len();
    }
    assert_eq!(
        updates, 4,
        "1000 ms of output: one update at once, then one per 250 ms"
    );
    let at_exit = notifications(&h.exit(run, ExitStatus::Code(0)));
    assert_eq!(
        at_exit[0],
        json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "proc://t00001/output"}})
    );
}

#[test]
fn lists_are_paginated_with_opaque_cursors() {
    let mut config = Config::default();
    config.page_size = 4;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}));
    let mut names = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = h.request(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": cursor}}));
        names.extend(
            page["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].clone()),
        );
        cursor = page["result"]["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(names.len(), proc_state::tools::Tool::ALL.len());
    let bad = h.request(json!({"jsonrpc": "2.0", "id": 2, "method": "resources/list", "params": {"cursor": "tools:4"}}));
    assert_eq!(error_code(&bad), -32602);
}

fn modern(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[test]
fn server_discover_advertises_the_stateless_era() {
    let mut h = Harness::new();
    let reply = h.request(modern(1, "server/discover", json!({})));
    let r = &reply["result"];
    assert_eq!(r["resultType"], "complete");
    assert_eq!(r["supportedVersions"], json!(["2026-07-28"]));
    assert!(r["capabilities"]["tools"].is_object());
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "proc-mcp"
    );
    assert!(r["ttlMs"].is_u64());
    assert!(r["cacheScope"] == "public" || r["cacheScope"] == "private");
}

#[test]
fn modern_requests_are_served_without_initialize() {
    let mut h = Harness::new();
    let list = h.request(modern(1, "tools/list", json!({})));
    assert_eq!(list["result"]["resultType"], "complete");
    assert_eq!(
        list["result"]["tools"].as_array().map(Vec::len),
        Some(proc_state::tools::Tool::ALL.len())
    );
    assert!(list["result"]["ttlMs"].is_u64());
    let outputs = h.send(modern(
        2,
        "tools/call",
        json!({"name": "start", "arguments": {"command": "true"}}),
    ));
    let (run, _) = spawned(&outputs).unwrap();
    let replies = transmitted(&h.input(Input::Spawned { run, pid: 3 }));
    let result = &replies[0]["result"];
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["structuredContent"]["pid"], 3);
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "proc-mcp"
    );
}

#[test]
fn modern_request_with_an_unknown_version_gets_32022() {
    let mut h = Harness::new();
    let mut message = modern(1, "tools/list", json!({}));
    message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let reply = h.request(message);
    assert_eq!(error_code(&reply), -32022);
    assert_eq!(
        reply["error"]["data"],
        json!({"supported": ["2026-07-28"], "requested": "2099-01-01"})
    );
}

#[rstest]
#[case::ping("ping")]
#[case::set_level("logging/setLevel")]
#[case::subscribe("resources/subscribe")]
fn what_the_stateless_era_removed_is_method_not_found_there(#[case] method: &str) {
    let mut h = Harness::initialized("2025-11-25");
    let reply = h.request(modern(
        1,
        method,
        json!({"level": "info", "uri": "proc://x/output"}),
    ));
    assert_eq!(error_code(&reply), -32601);
    assert_eq!(reply["error"]["data"], method);
}

#[test]
fn modern_envelope_without_capabilities_is_invalid_params() {
    let mut h = Harness::new();
    let mut message = modern(1, "tools/list", json!({}));
    message["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    assert_eq!(error_code(&h.request(message)), -32602);
}

#[test]
fn listen_streams_resource_updates_tagged_with_its_id() {
    let mut h = Harness::new();
    let outputs = h.send(modern(
        1,
        "tools/call",
        json!({"name": "start", "arguments": {"command": "x"}}),
    ));
    let (run, _) = spawned(&outputs).unwrap();
    let _ = h.input(Input::Spawned { run, pid: 3 });
    let ack = notifications(&h.send(modern(
        9,
        "subscriptions/listen",
        json!({"notifications": {
            "resourcesListChanged": true,
            "toolsListChanged": true,
            "resourceSubscriptions": ["proc://t00001/output", "proc://nope/output"],
        }}),
    )));
    assert_eq!(
        ack,
        [
            json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
                "notifications": {"resourcesListChanged": true, "resourceSubscriptions": ["proc://t00001/output"]},
                "_meta": {"io.modelcontextprotocol/subscriptionId": 9},
            }})
        ]
    );
    let updates = notifications(&output(&mut h, run, b"hi\n"));
    assert_eq!(
        updates[0]["params"],
        json!({"uri": "proc://t00001/output", "_meta": {"io.modelcontextprotocol/subscriptionId": 9}})
    );
    assert!(h.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}})).is_empty());
    assert!(h.advance(1000).is_empty());
    assert!(
        output(&mut h, run, b"more\n").is_empty(),
        "the stream is closed"
    );
}

//! The core under the races and hostile clients of the fault issue, on virtual time: requests
//! that race each other, a client that stops reading, writes to a task that never reads, and
//! malformed or oversized input. Each test injects the fault and checks the promise holds.

mod harness;

use harness::{Harness, error_code, notifications, output, spawned, transmitted};
use proc_state::{Config, ExitStatus, Input, Output, RunId, Signal, Stream};
use serde_json::{Value, json};

fn spawns(outputs: &[Output]) -> Vec<RunId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Spawn { run, .. } => Some(*run),
            _ => None,
        })
        .collect()
}

fn signals(outputs: &[Output]) -> Vec<(RunId, Signal)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Signal { run, signal } => Some((*run, *signal)),
            _ => None,
        })
        .collect()
}

fn ids(replies: &[Value]) -> Vec<i64> {
    replies.iter().filter_map(|r| r["id"].as_i64()).collect()
}

fn text(reply: &Value) -> &str {
    reply["result"]["content"][0]["text"].as_str().unwrap_or("")
}

// ---- restart races ----

#[test]
fn concurrent_restarts_coalesce_into_one_and_every_request_is_answered() {
    let mut h = Harness::initialized("2025-11-25");
    let (old, _) = h.start(json!({"command": "sleep 30", "name": "t"}), 10);
    let mut outputs = Vec::new();
    for id in [11, 12, 13] {
        outputs.extend(h.call(id, "restart", json!({"id": "t"})));
    }
    assert_eq!(
        signals(&outputs),
        [(old, Signal::Term)],
        "one stop for the three"
    );
    assert!(transmitted(&outputs).is_empty());
    let outputs = h.exit(old, ExitStatus::Signaled(Signal::Term));
    let new = spawns(&outputs);
    assert_eq!(new.len(), 1, "one respawn for the three: {outputs:?}");
    let replies = transmitted(&h.input(Input::Spawned {
        run: new[0],
        pid: 20,
    }));
    assert_eq!(ids(&replies), [11, 12, 13]);
    for reply in &replies {
        assert_eq!(reply["result"]["structuredContent"]["pid"], 20);
        assert_eq!(reply["result"]["structuredContent"]["restarts"], 1);
    }
    // A later stop ends the task for good: nothing brings it back.
    let outputs = h.call(14, "stop", json!({"id": "t", "grace_ms": 500}));
    assert_eq!(signals(&outputs), [(new[0], Signal::Term)]);
    let outputs = h.exit(new[0], ExitStatus::Signaled(Signal::Term));
    assert!(spawns(&outputs).is_empty());
    let replies = transmitted(&outputs);
    assert_eq!(ids(&replies), [14]);
    assert_eq!(replies[0]["result"]["structuredContent"]["state"], "exited");
}

#[test]
fn a_stop_after_a_pending_restart_supersedes_it() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "sleep 30", "name": "t"}), 10);
    let _ = h.call(11, "restart", json!({"id": "t"}));
    let _ = h.call(12, "stop", json!({"id": "t", "grace_ms": 500}));
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert!(spawns(&outputs).is_empty(), "no resurrection: {outputs:?}");
    let replies = transmitted(&outputs);
    let mut answered = ids(&replies);
    answered.sort_unstable();
    assert_eq!(answered, [11, 12], "both answered");
    let reply = |id: i64| replies.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(reply(12)["result"]["structuredContent"]["stopped"], true);
    assert_eq!(reply(11)["result"]["isError"], true);
    assert!(text(reply(11)).contains("superseded"), "{}", reply(11));
}

#[test]
fn a_restart_after_a_stop_starts_the_task_again() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "sleep 30", "name": "t"}), 10);
    let _ = h.call(11, "stop", json!({"id": "t"}));
    let _ = h.call(12, "restart", json!({"id": "t"}));
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert_eq!(spawns(&outputs).len(), 1, "the latest request wins");
    assert_eq!(
        ids(&transmitted(&outputs)),
        [11],
        "the stop saw its run end"
    );
}

#[test]
fn shutdown_supersedes_a_pending_restart_and_nothing_spawns_after_it() {
    let mut h = Harness::initialized("2025-11-25");
    // A task that ignores SIGTERM: the restart's stop would wait the default 5 s grace.
    let (run, _) = h.start(
        json!({"command": "trap '' TERM; sleep 30", "name": "t"}),
        10,
    );
    let _ = h.call(11, "restart", json!({"id": "t"}));
    let outputs = h.input(Input::ClientEof);
    assert!(spawns(&outputs).is_empty());
    let outputs = h.advance(1000);
    assert_eq!(
        signals(&outputs),
        [(run, Signal::Kill)],
        "the shutdown grace (1 s) shortens the restart's"
    );
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Kill));
    assert!(spawns(&outputs).is_empty(), "{outputs:?}");
    let replies = transmitted(&outputs);
    assert_eq!(ids(&replies), [11]);
    assert!(
        text(&replies[0]).contains("shutting down"),
        "{}",
        replies[0]
    );
    assert_eq!(outputs.last(), Some(&Output::Exit));
}

#[test]
fn restart_during_shutdown_is_refused() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "sleep 30", "name": "t"}), 10);
    let _ = h.input(Input::Terminate);
    // Requests already read are still answered while the tasks stop.
    let result = h.call_now("restart", json!({"id": "t"}));
    assert_eq!(result["isError"], true);
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert!(spawns(&outputs).is_empty());
    assert_eq!(outputs.last(), Some(&Output::Exit));
}

#[test]
fn an_exit_reported_before_the_stop_signal_landed_is_not_a_stop() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "exit 3"}), 10);
    let _ = h.call(11, "stop", json!({"id": "t00001"}));
    // The driver found the leader already exited when it came to signal it.
    let mut outputs = h.input(Input::Exited {
        run,
        status: ExitStatus::Code(3),
        signalled: false,
    });
    outputs.extend(h.input(Input::StreamClosed {
        run,
        stream: proc_state::Stream::Stdout,
    }));
    outputs.extend(h.input(Input::StreamClosed {
        run,
        stream: proc_state::Stream::Stderr,
    }));
    let replies = transmitted(&outputs);
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(
        (s["exit_code"].as_i64(), s["stopped"].as_bool()),
        (Some(3), Some(false))
    );
}

#[test]
fn the_wait_text_gives_the_tasks_runtime_not_the_waits() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "sleep 30"}), 10);
    let _ = h.advance(9800);
    let _ = h.call(11, "wait", json!({"id": "t00001"}));
    let _ = h.advance(200);
    let replies = transmitted(&h.exit(run, ExitStatus::Signaled(Signal::Term)));
    let t = text(&replies[0]);
    assert!(t.contains("killed by SIGTERM after 10.0s"), "{t}");
    assert!(t.contains("waited 0.2s"), "{t}");
}

// ---- writes that never block the conversation ----

fn piped(h: &mut Harness) -> RunId {
    h.start(json!({"command": "cat", "stdin": true, "name": "r"}), 10)
        .0
}

#[test]
fn a_write_to_a_task_that_does_not_read_is_answered_at_once_with_what_is_queued() {
    let mut h = Harness::initialized("2025-11-25");
    let run = piped(&mut h);
    let data = "x".repeat(200_000);
    let outputs = h.call(11, "write", json!({"id": "r", "data": data}));
    let Some(Output::WriteStdin { data: chunk, .. }) = outputs.first() else {
        panic!("{outputs:?}");
    };
    assert_eq!(chunk.len(), 64 << 10, "one chunk at a time");
    // The pipe took the first chunk whole; the next one finds it full.
    let outputs = h.input(Input::StdinWritten {
        run,
        result: Ok(65_536),
    });
    assert!(
        transmitted(&outputs).is_empty(),
        "the next chunk is in flight"
    );
    assert!(matches!(&outputs[..], [Output::WriteStdin { data, .. }] if data.len() == 65_536));
    let replies = transmitted(&h.input(Input::StdinWritten { run, result: Ok(0) }));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(
        (s["bytes_written"].as_u64(), s["bytes_queued"].as_u64()),
        (Some(65_536), Some(134_464))
    );
    // The conversation goes on meanwhile, and a second write queues behind the first.
    assert_eq!(
        h.request(json!({"jsonrpc": "2.0", "id": 12, "method": "ping"}))["id"],
        12
    );
    let outputs = h.call(13, "write", json!({"id": "r", "data": "y"}));
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::WriteStdin { .. }))
    );
    let s = &transmitted(&outputs)[0]["result"]["structuredContent"];
    assert_eq!(
        (s["bytes_written"].as_u64(), s["bytes_queued"].as_u64()),
        (Some(0), Some(134_465))
    );
    // The pipe has room again: the rest goes out, chunk by chunk.
    let outputs = h.input(Input::StdinReady { run });
    assert!(matches!(&outputs[..], [Output::WriteStdin { data, .. }] if data.len() == 65_536));
}

#[test]
fn the_stdin_queue_is_bounded_with_a_clear_error() {
    let mut config = Config::default();
    config.max_stdin_queue_bytes = 1000;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let run = piped(&mut h);
    let _ = h.call(11, "write", json!({"id": "r", "data": "x".repeat(900)}));
    let _ = h.input(Input::StdinWritten { run, result: Ok(0) });
    let refused = h.call_now("write", json!({"id": "r", "data": "x".repeat(200)}));
    assert_eq!(refused["isError"], true);
    let reason = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        reason.contains("900 bytes are still queued") && reason.contains("1000"),
        "{reason}"
    );
}

#[test]
fn cancelling_a_write_stops_its_bytes() {
    let mut h = Harness::initialized("2025-11-25");
    let run = piped(&mut h);
    let _ = h.call(11, "write", json!({"id": "r", "data": "x".repeat(200_000)}));
    let _ = h.input(Input::StdinWritten {
        run,
        result: Ok(1000),
    });
    let outputs = h.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 11}}),
    );
    assert!(outputs.is_empty());
    let outputs = h.input(Input::StdinReady { run });
    assert!(
        outputs.is_empty(),
        "nothing more goes into the pipe: {outputs:?}"
    );
    // The next write goes straight out.
    let outputs = h.call(12, "write", json!({"id": "r", "data": "next"}));
    assert_eq!(
        outputs[0],
        Output::WriteStdin {
            run,
            data: b"next".to_vec()
        }
    );
}

#[test]
fn a_write_with_eof_drops_what_earlier_writes_left_queued() {
    let mut h = Harness::initialized("2025-11-25");
    let run = piped(&mut h);
    let _ = h.call(11, "write", json!({"id": "r", "data": "x".repeat(100)}));
    let _ = h.input(Input::StdinWritten {
        run,
        result: Ok(10),
    });
    let outputs = h.call(12, "write", json!({"id": "r", "data": "bye", "eof": true}));
    let s = &transmitted(&outputs)[0]["result"]["structuredContent"];
    assert_eq!(
        (s["bytes_dropped"].as_u64(), s["bytes_queued"].as_u64()),
        (Some(90), Some(3))
    );
    let outputs = h.input(Input::StdinReady { run });
    assert_eq!(
        outputs[0],
        Output::WriteStdin {
            run,
            data: b"bye".to_vec()
        }
    );
    let outputs = h.input(Input::StdinWritten { run, result: Ok(3) });
    assert_eq!(outputs[0], Output::CloseStdin { run });
}

#[test]
fn a_write_to_a_task_that_closed_its_stdin_says_so() {
    let mut h = Harness::initialized("2025-11-25");
    let run = piped(&mut h);
    let _ = h.call(11, "write", json!({"id": "r", "data": "x"}));
    let replies = transmitted(&h.input(Input::StdinWritten {
        run,
        result: Err("the process closed its stdin".into()),
    }));
    assert_eq!(replies[0]["result"]["isError"], true);
    assert!(
        text(&replies[0]).contains("closed its stdin"),
        "{}",
        replies[0]
    );
}

// ---- a client that does not read ----

#[test]
fn a_client_that_does_not_read_gets_backpressure_while_timers_and_tasks_go_on() {
    let mut config = Config::default();
    config.max_client_backlog_bytes = 64 << 10;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let (run, _) = h.start(
        json!({"command": "yes", "max_runtime_ms": 1000, "notify_on_exit": true}),
        10,
    );
    let _ = output(&mut h, run, &[b'y'; 60_000]);
    let _ = h.stall(true);
    // 100 `logs` requests of ~60 KB each, sent in one go.
    let mut batch = Vec::new();
    for id in 100..200 {
        batch.extend(
            serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "logs", "arguments": {"id": "t00001", "max_bytes": 60000}}}))
            .unwrap(),
        );
        batch.push(b'\n');
    }
    h.send_raw(&batch);
    let answered = transmitted(&h.drain()).len();
    assert!(
        answered <= 2,
        "handling stops once 64 KiB are unread: {answered} answered"
    );
    assert!(!h.server.wants_client_bytes());
    // Output is still taken in, and the runtime limit fires on time.
    let _ = output(&mut h, run, b"more\n");
    assert_eq!(signals(&h.advance(1000)), [(run, Signal::Term)]);
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert!(
        notifications(&outputs).is_empty(),
        "the exit notification is held back"
    );
    // The client reads again: the rest is answered, and what was held back is sent.
    let outputs = h.stall(false);
    let replies = transmitted(&outputs);
    assert_eq!(answered + replies.len(), 100);
    let methods: Vec<Value> = notifications(&outputs)
        .iter()
        .map(|n| n["method"].clone())
        .collect();
    assert!(methods.contains(&json!("process/exit")), "{methods:?}");
    assert!(h.server.wants_client_bytes());
}

#[test]
fn sigterm_is_acted_on_while_the_client_does_not_read() {
    let mut config = Config::default();
    config.max_client_backlog_bytes = 1024;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let (run, _) = h.start(json!({"command": "sleep 30"}), 10);
    let _ = h.stall(true);
    for id in 1..20 {
        let _ = h.call(id, "list", json!({}));
    }
    let outputs = h.input(Input::Terminate);
    assert_eq!(signals(&outputs), [(run, Signal::Term)]);
    let outputs = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert_eq!(outputs.last(), Some(&Output::Exit));
}

// ---- bounded batches ----

#[test]
fn a_batch_reply_is_bounded_and_the_rest_get_an_error_each() {
    let mut config = Config::default();
    config.max_message_bytes = 64 << 10;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26"}}));
    let (run, _) = h.start(json!({"command": "yes"}), 10);
    for _ in 0..20 {
        let _ = output(&mut h, run, &[b'y'; 60_000]);
    }
    let calls: Vec<Value> = (1..=40)
        .map(|id| {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "logs", "arguments": {"id": "t00001", "max_bytes": 1048576}}})
        })
        .collect();
    let outputs = h.send(Value::Array(calls));
    let lines: Vec<&Vec<u8>> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(line) => Some(line),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].len() <= 4 * (64 << 10) + 1,
        "{} bytes",
        lines[0].len()
    );
    let replies = transmitted(&outputs);
    let array = replies[0].as_array().unwrap();
    assert_eq!(array.len(), 40, "every request answered");
    let too_large = array.iter().filter(|r| r.get("error").is_some()).count();
    assert!(too_large > 30, "{too_large}");
    let error = array.iter().find(|r| r.get("error").is_some()).unwrap();
    assert_eq!(error_code(error), -32000);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send this request on its own")
    );
}

#[test]
fn requests_of_a_batch_past_its_bound_are_not_carried_out() {
    let mut config = Config::default();
    config.max_message_bytes = 16 << 10;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26"}}));
    let (run, _) = h.start(json!({"command": "yes"}), 10);
    for _ in 0..4 {
        let _ = output(&mut h, run, &[b'y'; 60_000]);
    }
    let mut calls: Vec<Value> = (1..=3)
        .map(|id| {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "logs", "arguments": {"id": "t00001", "max_bytes": 60000}}})
        })
        .collect();
    calls.push(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "start", "arguments": {"command": "late"}}}));
    let outputs = h.send(Value::Array(calls));
    assert!(
        spawns(&outputs).is_empty(),
        "the start past the bound did not run: {outputs:?}"
    );
    let replies = transmitted(&outputs);
    let array = replies[0].as_array().unwrap();
    let last = array.iter().find(|r| r["id"] == 4).unwrap();
    assert_eq!(error_code(last), -32000);
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not carried out")
    );
}

// ---- the smaller ones ----

#[test]
fn an_oversized_message_is_answered_with_its_id() {
    let mut config = Config::default();
    config.max_message_bytes = 1024;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let big = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": {"name": "write", "arguments": {"id": "x", "data": "z".repeat(100_000)}}});
    let reply = h.request(big);
    assert_eq!(reply["id"], 77);
    assert_eq!(error_code(&reply), -32600);
}

#[test]
fn ids_beyond_64_bits_are_echoed_exactly_and_fractions_are_refused() {
    let mut h = Harness::initialized("2025-11-25");
    h.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":18446744073709551616,\"method\":\"ping\"}\n");
    let outputs = h.drain();
    let Output::Transmit(line) = &outputs[0] else {
        panic!("{outputs:?}")
    };
    assert_eq!(
        std::str::from_utf8(line).unwrap(),
        "{\"jsonrpc\":\"2.0\",\"id\":18446744073709551616,\"result\":{}}\n"
    );
    h.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}\n");
    let replies = transmitted(&h.drain());
    assert_eq!(error_code(&replies[0]), -32600);
    assert_eq!(replies[0]["id"], Value::Null);
}

#[test]
fn a_notification_with_malformed_params_is_never_answered() {
    let mut h = Harness::initialized("2025-11-25");
    for params in [json!([1]), json!("x"), json!(null), json!(3)] {
        let outputs = h
            .send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}));
        assert!(outputs.is_empty(), "{outputs:?}");
    }
}

#[test]
fn environment_names_with_equals_or_empty_are_refused() {
    let mut h = Harness::initialized("2025-11-25");
    for env in [
        json!({"HOME=/x": "y"}),
        json!({"": "y"}),
        json!({"A": "b\u{0}c"}),
    ] {
        let result = h.call_now("start", json!({"command": "env", "env": env}));
        assert_eq!(result["isError"], true, "{env}");
        assert!(
            result["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("`env`"),
            "{result}"
        );
    }
}

#[test]
fn oversized_patterns_are_refused_before_compiling() {
    let mut h = Harness::initialized("2025-11-25");
    let pattern = (0..60_000)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join("|");
    let result = h.call_now("start", json!({"command": "true", "wait_for": pattern}));
    assert_eq!(result["isError"], true);
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{result}"
    );
}

#[test]
fn start_with_a_large_pattern_reports_an_exited_task_as_exited() {
    let mut h = Harness::initialized("2025-11-25");
    let pattern = (0..500)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join("|");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "true", "wait_for": pattern, "wait_timeout_ms": 100}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    let _ = h.input(Input::Spawned { run, pid: 5 });
    let replies = transmitted(&h.exit(run, ExitStatus::Code(0)));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["ready"]["reason"],
        "exited"
    );
}

#[test]
fn logs_with_both_head_and_tail_is_refused() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "x"}), 10);
    let result = h.call_now("logs", json!({"id": "t00001", "head": 1, "tail": 1}));
    assert_eq!(result["isError"], true);
}

// ---- processes that left the group ----

fn escaped(run: RunId, pids: &[u32]) -> Input<'static> {
    Input::Escaped {
        run,
        processes: pids
            .iter()
            .map(|&pid| proc_state::EscapedProcess {
                pid,
                command: format!("sleep 1000 #{pid}"),
            })
            .collect(),
    }
}

fn escaped_signals(outputs: &[Output]) -> Vec<Signal> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::SignalEscaped { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect()
}

#[test]
fn stop_finds_what_left_the_group_stops_it_and_lists_it() {
    let mut h = Harness::initialized("2025-11-25");
    h.auto_sweep = false;
    let (run, _) = h.start(
        json!({"command": "setsid sh -c 'sleep 1000 &'; sleep 1000"}),
        10,
    );
    let outputs = h.call(11, "stop", json!({"id": "t00001"}));
    assert_eq!(signals(&outputs), [(run, Signal::Term)]);
    assert_eq!(
        h.sweeps.drain(..).collect::<Vec<_>>(),
        [run],
        "it looks for escapees"
    );
    let outputs = h.input(escaped(run, &[99]));
    assert_eq!(
        escaped_signals(&outputs),
        [Signal::Term],
        "they get the stop's signal"
    );
    // The leader goes; the daemon still holds the pipes: no waiting on them.
    let outputs = h.input(Input::Exited {
        run,
        status: ExitStatus::Signaled(Signal::Term),
        signalled: true,
    });
    assert_eq!(
        h.sweeps.drain(..).collect::<Vec<_>>(),
        [run],
        "and looks again"
    );
    assert!(
        !outputs.contains(&Output::Release { run }),
        "the pipes are open"
    );
    let outputs = h.input(escaped(run, &[]));
    assert!(
        outputs.contains(&Output::Release { run }),
        "released without the drain wait: {outputs:?}"
    );
    assert!(
        transmitted(&outputs).is_empty(),
        "the daemon is not gone yet"
    );
    let outputs = h.input(Input::EscapedExited { run, pid: 99 });
    assert!(transmitted(&outputs).is_empty(), "not before a last look");
    assert_eq!(
        h.sweeps.drain(..).collect::<Vec<_>>(),
        [run],
        "what it started while being stopped is looked for"
    );
    let replies = transmitted(&h.input(escaped(run, &[])));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(s["state"], "exited");
    assert_eq!(
        s["escaped"],
        json!([{"pid": 99, "command": "sleep 1000 #99", "state": "exited"}])
    );
    assert!(
        text(&replies[0]).contains("escaped its process group: 99"),
        "{}",
        replies[0]
    );
}

#[test]
fn an_escapee_that_ignores_sigterm_gets_sigkill_and_a_survivor_is_reported() {
    let mut h = Harness::initialized("2025-11-25");
    h.auto_sweep = false;
    let (run, _) = h.start(json!({"command": "daemonize"}), 10);
    let _ = h.call(11, "stop", json!({"id": "t00001", "grace_ms": 500}));
    let _ = h.input(escaped(run, &[7, 8]));
    let _ = h.exit(run, ExitStatus::Signaled(Signal::Term));
    let _ = h.input(escaped(run, &[]));
    let _ = h.input(Input::EscapedExited { run, pid: 7 });
    let outputs = h.advance(500);
    assert_eq!(escaped_signals(&outputs), [Signal::Kill], "after the grace");
    let replies = transmitted(&h.advance(500));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(s["escaped"][0]["state"], "exited");
    assert_eq!(s["escaped"][1]["state"], "survived_sigkill");
}

#[test]
fn escapees_of_a_task_that_exited_on_its_own_are_stopped_and_hold_up_the_shutdown() {
    let mut h = Harness::initialized("2025-11-25");
    h.auto_sweep = false;
    let (run, _) = h.start(json!({"command": "pg_ctl start"}), 10);
    let _ = h.exit(run, ExitStatus::Code(0));
    let outputs = h.input(escaped(run, &[50]));
    assert_eq!(escaped_signals(&outputs), [Signal::Term]);
    let status = h.call_now("status", json!({"id": "t00001"}));
    assert_eq!(
        status["structuredContent"]["escaped"][0]["state"],
        "stopping"
    );
    assert_eq!(
        h.call_now("remove", json!({"id": "t00001"}))["isError"],
        true
    );
    let outputs = h.input(Input::ClientEof);
    assert!(
        !outputs.contains(&Output::Exit),
        "not while the daemon lives"
    );
    assert_eq!(
        h.sweeps.drain(..).count(),
        2,
        "looked for more at the exit and at the shutdown"
    );
    let _ = h.input(escaped(run, &[]));
    let outputs = h.advance(1000);
    assert_eq!(
        escaped_signals(&outputs),
        [Signal::Kill],
        "the shutdown grace"
    );
    let _ = h.input(Input::EscapedExited { run, pid: 50 });
    let outputs = h.input(escaped(run, &[]));
    assert_eq!(outputs.last(), Some(&Output::Exit));
}

#[test]
fn what_an_escapee_forks_while_being_stopped_is_found_and_stopped_too() {
    let mut h = Harness::initialized("2025-11-25");
    h.auto_sweep = false;
    let (run, _) = h.start(json!({"command": "forking daemon"}), 10);
    let _ = h.call(11, "stop", json!({"id": "t00001", "grace_ms": 300}));
    let _ = h.input(escaped(run, &[7]));
    let _ = h.exit(run, ExitStatus::Signaled(Signal::Term));
    let _ = h.input(escaped(run, &[]));
    let _ = h.input(Input::EscapedExited { run, pid: 7 });
    // It had forked 8 before it went.
    let outputs = h.input(escaped(run, &[8]));
    assert_eq!(escaped_signals(&outputs), [Signal::Term]);
    assert!(transmitted(&outputs).is_empty());
    let _ = h.input(Input::EscapedExited { run, pid: 8 });
    let replies = transmitted(&h.input(escaped(run, &[])));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["escaped"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

// ---- one output budget for all tasks ----

#[test]
fn the_total_output_budget_holds_and_the_largest_pay_first() {
    let mut config = Config::default();
    config.output_budget_bytes = 256 << 10;
    config.output_budget_total_bytes = 512 << 10;
    config.max_line_bytes = 1024;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let (quiet, _) = h.start(json!({"command": "quiet"}), 10);
    let _ = output(&mut h, quiet, b"important line\n");
    let floods: Vec<RunId> = (0..4)
        .map(|n| h.start(json!({"command": format!("yes {n}")}), 11 + n).0)
        .collect();
    for _ in 0..100 {
        for &run in &floods {
            let _ = output(&mut h, run, &b"y\n".repeat(8 << 10));
        }
        let memory = h.server.output_memory();
        assert!(memory <= (512 << 10) + 5 * 2 * 1026, "{memory} bytes held");
    }
    // Each flood printed 1.6 MB, far more than the total: they were cut to about equal shares.
    for n in 2..6 {
        let status = h.call_now("status", json!({"id": format!("t{n:05}"), "tail": 0}));
        let dropped = status["structuredContent"]["output"]["dropped_lines"]
            .as_u64()
            .unwrap();
        assert!(dropped > 700_000, "task {n} dropped only {dropped}");
    }
    // The quiet task kept its line.
    let logs = h.call_now("logs", json!({"id": "t00001"}));
    assert_eq!(
        logs["structuredContent"]["lines"][0]["text"],
        "important line"
    );
    // Removing tasks gives their memory back.
    let before = h.server.output_memory();
    let _ = h.exit(floods[0], ExitStatus::Code(0));
    let _ = h.call_now("remove", json!({"id": "t00002"}));
    assert!(h.server.output_memory() < before);
}

#[test]
fn a_largest_task_holding_only_partial_lines_is_passed_over_for_the_others() {
    // Found by the model fuzzer: the largest task could free nothing, so eviction stopped there
    // with the other tasks' complete lines still over the total.
    let mut config = Config::default();
    config.output_budget_bytes = 8 << 10;
    config.output_budget_total_bytes = 16 << 10;
    config.max_line_bytes = 4 << 10;
    let mut h = Harness::with_config(config);
    let _ = h.request(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25"}}));
    let lines: Vec<RunId> = (0..3)
        .map(|n| h.start(json!({"command": format!("lines {n}")}), 10 + n).0)
        .collect();
    for &run in &lines {
        let _ = output(
            &mut h,
            run,
            &[[b'x'; 99].as_slice(), b"\n"].concat().repeat(30),
        );
    }
    let held = h.server.output_memory();
    assert!(
        held <= 16 << 10,
        "{held} bytes held before the partial lines"
    );
    let (prompt, _) = h.start(json!({"command": "prompt"}), 20);
    let partial = b"p".repeat(4000);
    let _ = h.input(Input::ProcessOutput {
        run: prompt,
        stream: Stream::Stdout,
        bytes: &partial,
    });
    let _ = h.input(Input::ProcessOutput {
        run: prompt,
        stream: Stream::Stderr,
        bytes: &partial,
    });
    let memory = h.server.output_memory();
    assert!(
        memory <= 16 << 10,
        "{memory} bytes held: the others were not evicted"
    );
    let dropped: u64 = (1..=3)
        .map(|n| {
            let status = h.call_now("status", json!({"id": format!("t{n:05}"), "tail": 0}));
            status["structuredContent"]["output"]["dropped_lines"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(dropped > 0, "nothing was evicted");
    // The partial lines are all there.
    let logs = h.call_now("logs", json!({"id": "t00004", "stream": "stdout"}));
    assert_eq!(
        logs["structuredContent"]["lines"][0]["text"]
            .as_str()
            .map(str::len),
        Some(4000)
    );
}

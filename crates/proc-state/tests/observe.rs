//! What an assistant needs to see of a task, on virtual time: ports and resource use measured
//! by the driver, URLs the task printed, readiness by URL and by quiet, the restart policy with
//! its backoff and crash loop, the idle lease, and the memory limit.

mod harness;

use std::net::{IpAddr, Ipv4Addr};

use harness::{Harness, notifications, spawned, transmitted, without_list_changed};
use proc_state::{
    ExitStatus, Input, Listener, Output, ProbeOutcome, ProbeTarget, Protocol, RunId, Signal,
    Stream, Usage,
};
use serde_json::{Value, json};

fn usage(rss_bytes: u64, ports: &[u16]) -> Usage {
    Usage {
        processes: ports.len().max(1) as u32,
        cpu_ms: 1500,
        rss_bytes,
        listening: ports
            .iter()
            .map(|&port| Listener {
                protocol: Protocol::Tcp,
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            })
            .collect(),
    }
}

fn print(h: &mut Harness, run: RunId, text: &str) -> Vec<Output> {
    h.input(Input::ProcessOutput {
        run,
        stream: Stream::Stdout,
        bytes: text.as_bytes(),
    })
}

fn status(h: &mut Harness, id: &str) -> Value {
    h.call_now("status", json!({"id": id}))
}

fn signals(outputs: &[Output]) -> Vec<Signal> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Signal { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect()
}

#[test]
fn status_and_list_show_what_the_driver_measured_and_the_urls_printed() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "python3 -m http.server 0"}), 40);
    let _ = print(
        &mut h,
        run,
        "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ...\n",
    );
    h.usage.insert(run, usage(21_500_000, &[41234]));
    let result = status(&mut h, "t00001");
    let s = &result["structuredContent"];
    assert_eq!(
        s["listening"],
        json!([{"protocol": "tcp", "address": "127.0.0.1", "port": 41234}])
    );
    assert_eq!(
        s["usage"],
        json!({"processes": 1, "cpu_ms": 1500, "rss_bytes": 21_500_000})
    );
    assert_eq!(s["urls"], json!(["http://127.0.0.1:41234/"]));
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.lines().next().unwrap().contains(
            "running for 0.0s (pid 40) · 127.0.0.1:41234/tcp · 21.5 MB · cpu 1.5s · 1 process"
        ),
        "{text}"
    );
    assert!(text.contains("urls: http://127.0.0.1:41234/"), "{text}");

    let list = h.call_now("list", json!({}));
    assert_eq!(
        list["structuredContent"]["tasks"][0]["listening"][0]["port"],
        41234
    );
    let text = list["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains(" · :41234 · 21.5 MB · cpu 1.5s: python3"),
        "{text}"
    );
}

#[test]
fn status_waits_for_the_measurement_and_list_does_not() {
    let mut h = Harness::initialized("2025-11-25");
    h.auto_inspect = false;
    let (run, _) = h.start(json!({"command": "server"}), 40);
    let outputs = h.call(5, "status", json!({"id": "t00001"}));
    assert!(transmitted(&outputs).is_empty(), "waits: {outputs:?}");
    assert_eq!(h.inspections, vec![vec![(run, 40)]]);
    // A list meanwhile answers at once and asks nothing more (a measurement is out).
    let list = h.call_now("list", json!({}));
    assert!(list["structuredContent"]["tasks"][0].get("usage").is_none());
    assert_eq!(h.inspections.len(), 1);
    let replies = transmitted(&h.input(Input::Inspected {
        usage: vec![(run, usage(1_000_000, &[8080]))],
    }));
    assert_eq!(replies[0]["id"], 5);
    assert_eq!(
        replies[0]["result"]["structuredContent"]["listening"][0]["port"],
        8080
    );
    // Fresh for 250 ms: a second status answers at once.
    let _ = status(&mut h, "t00001");
    // A driver that never answers: status gives up after a second, without usage.
    let _ = h.advance(300);
    let outputs = h.call(6, "status", json!({"id": "t00001"}));
    assert!(transmitted(&outputs).is_empty());
    let replies = transmitted(&without_list_changed(h.advance(1000)));
    assert_eq!(replies[0]["id"], 6);
    assert_eq!(
        replies[0]["result"]["structuredContent"]["listening"][0]["port"], 8080,
        "the last measurement"
    );
}

#[test]
fn a_task_that_ended_is_not_measured() {
    let mut h = Harness::initialized("2025-11-25");
    h.auto_inspect = false;
    let (run, _) = h.start(json!({"command": "true"}), 40);
    let _ = h.exit(run, ExitStatus::Code(0));
    let result = status(&mut h, "t00001");
    assert_eq!(result["structuredContent"]["state"], "exited");
    assert!(h.inspections.is_empty());
}

#[test]
fn wait_with_a_url_probes_until_it_answers_below_500() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 40);
    let outputs = h.call(
        7,
        "wait",
        json!({"id": "t00001", "url": "http://localhost:5173/"}),
    );
    let [
        Output::Probe {
            probe,
            target: ProbeTarget::Http(url),
        },
    ] = outputs.as_slice()
    else {
        panic!("{outputs:?}")
    };
    assert_eq!(url, "http://localhost:5173/");
    let _ = h.input(Input::Probed {
        probe: *probe,
        outcome: ProbeOutcome::Failed("connection refused".into()),
    });
    let outputs = without_list_changed(h.advance(100));
    let [Output::Probe { probe, .. }] = outputs.as_slice() else {
        panic!("{outputs:?}")
    };
    assert!(
        transmitted(&h.input(Input::Probed {
            probe: *probe,
            outcome: ProbeOutcome::Http(503),
        }))
        .is_empty(),
        "a 503 is not healthy"
    );
    let outputs = without_list_changed(h.advance(100));
    let [Output::Probe { probe, .. }] = outputs.as_slice() else {
        panic!("{outputs:?}")
    };
    let replies = transmitted(&h.input(Input::Probed {
        probe: *probe,
        outcome: ProbeOutcome::Http(404),
    }));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(s["reason"], "url_ok");
    assert_eq!(s["http_status"], 404);
}

#[test]
fn urls_to_probe_must_be_http_on_loopback() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 40);
    for (url, why) in [
        ("http://example.com/", "loopback"),
        ("https://127.0.0.1/", "http://"),
        ("not a url", "not a URL"),
    ] {
        let result = h.call_now("wait", json!({"id": "t00001", "url": url}));
        assert_eq!(result["isError"], true, "{url}");
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("`url`") && text.contains(why), "{text}");
    }
    for url in [
        "http://127.0.0.1:1/",
        "http://[::1]:2/x",
        "http://LOCALHOST/",
    ] {
        let outputs = h.call(
            8,
            "wait",
            json!({"id": "t00001", "url": url, "timeout_ms": 1}),
        );
        assert!(
            outputs.iter().any(|o| matches!(o, Output::Probe { .. })),
            "{url}: {outputs:?}"
        );
        let _ = h.advance(1);
    }
}

#[test]
fn start_with_wait_url_answers_once_the_url_does() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "server", "wait_url": "http://127.0.0.1:8000/"}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    let outputs = h.input(Input::Spawned { run, pid: 40 });
    assert!(transmitted(&outputs).is_empty());
    let [Output::Probe { probe, .. }] = outputs.as_slice() else {
        panic!("{outputs:?}")
    };
    let replies = transmitted(&h.input(Input::Probed {
        probe: *probe,
        outcome: ProbeOutcome::Http(200),
    }));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["ready"]["reason"],
        "url_ok"
    );
}

#[test]
fn wait_with_quiet_ms_returns_once_output_pauses() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "build"}), 40);
    assert!(transmitted(&h.call(7, "wait", json!({"id": "t00001", "quiet_ms": 300}))).is_empty());
    for _ in 0..10 {
        let _ = h.advance(100);
        assert!(transmitted(&print(&mut h, run, "compiling\n")).is_empty());
    }
    assert!(transmitted(&h.advance(299)).is_empty());
    let replies = transmitted(&h.advance(1));
    let s = &replies[0]["result"]["structuredContent"];
    assert_eq!(s["reason"], "quiet");
    assert_eq!(s["waited_ms"], 1300);
}

/// Runs the current run of task `t00001` to an exit with `code`; returns the outputs.
fn crash(h: &mut Harness, run: RunId, code: i32) -> Vec<Output> {
    let _ = print(h, run, "run\n");
    h.exit(run, ExitStatus::Code(code))
}

/// The run the next spawn starts, after exactly `ms` milliseconds and not before.
fn respawned_after(h: &mut Harness, ms: u64) -> RunId {
    assert!(spawned(&h.advance(ms - 1)).is_none(), "not before {ms} ms");
    let (run, _) = spawned(&h.advance(1)).expect("a respawn");
    let _ = h.input(Input::Spawned { run, pid: 50 });
    run
}

#[test]
fn on_failure_restarts_with_growing_delays_until_a_stop_and_calls_a_crash_loop_a_crash_loop() {
    let mut h = Harness::initialized("2025-11-25");
    let (mut run, _) = h.start(
        json!({"command": "sh -c 'echo run; exit 1'", "restart": "on-failure", "notify_on_exit": true}),
        40,
    );
    for (n, delay) in [1000, 2000, 4000].into_iter().enumerate() {
        let outputs = crash(&mut h, run, 1);
        let exit = notifications(&outputs)
            .into_iter()
            .find(|n| n["method"] == "notifications/message")
            .expect("an exit notification");
        assert_eq!(exit["params"]["data"]["restarting_in_ms"], delay);
        let s = status(&mut h, "t00001")["structuredContent"].clone();
        assert_eq!(s["state"], "exited");
        assert_eq!(s["restart_policy"]["last_exit_code"], 1);
        assert_eq!(s["restart_policy"]["restarts"], n);
        assert!(s["restart_policy"]["next_attempt_at"].is_string());
        run = respawned_after(&mut h, delay);
    }
    let result = status(&mut h, "t00001");
    let s = &result["structuredContent"];
    assert_eq!(s["restarts"], 3);
    assert_eq!(s["crash_loop"], true);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("restarts 3 (crash loop)"), "{text}");
    // Logs continue across runs: one buffer, increasing cursors.
    let _ = print(&mut h, run, "run\n");
    let logs = h.call_now("logs", json!({"id": "t00001"}));
    let numbers: Vec<u64> = logs["structuredContent"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
    // A stop while it waits for the next attempt ends the policy.
    let _ = crash(&mut h, run, 1);
    let stopped = h.call_now("stop", json!({"id": "t00001"}));
    assert_eq!(stopped["structuredContent"]["state"], "exited");
    assert!(
        spawned(&h.advance(120_000)).is_none(),
        "no restart after a stop"
    );
    assert!(
        status(&mut h, "t00001")["structuredContent"]["restart_policy"]
            .get("next_attempt_at")
            .is_none()
    );
}

#[test]
fn a_stop_while_it_runs_is_not_a_failure_to_restart() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server", "restart": "always"}), 40);
    let outputs = h.call(3, "stop", json!({"id": "t00001"}));
    assert_eq!(signals(&outputs), [Signal::Term]);
    let _ = h.exit(run, ExitStatus::Signaled(Signal::Term));
    assert!(spawned(&h.advance(60_000)).is_none());
    let s = status(&mut h, "t00001")["structuredContent"].clone();
    assert_eq!(s["stop_reason"], "stop");
}

#[test]
fn always_restarts_after_a_clean_exit_and_on_failure_does_not() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "job", "restart": "always"}), 40);
    let _ = crash(&mut h, run, 0);
    let _ = respawned_after(&mut h, 1000);
    let (run, _) = h.start(json!({"command": "job", "restart": "on-failure"}), 41);
    let _ = crash(&mut h, run, 0);
    assert!(spawned(&without_list_changed(h.advance(60_000))).is_none());
}

#[test]
fn max_restarts_ends_the_policy() {
    let mut h = Harness::initialized("2025-11-25");
    let (mut run, _) = h.start(
        json!({"command": "job", "restart": "on-failure", "max_restarts": 2}),
        40,
    );
    for delay in [1000, 2000] {
        let _ = crash(&mut h, run, 3);
        run = respawned_after(&mut h, delay);
    }
    let _ = crash(&mut h, run, 3);
    assert!(spawned(&h.advance(60_000)).is_none());
    let result = status(&mut h, "t00001");
    assert_eq!(
        result["structuredContent"]["restart_policy"]["exhausted"],
        true
    );
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("max_restarts reached"), "{text}");
    let refused = h.call_now("start", json!({"command": "x", "max_restarts": 2}));
    assert_eq!(refused["isError"], true);
}

#[test]
fn a_run_that_lasted_a_minute_resets_the_backoff() {
    let mut h = Harness::initialized("2025-11-25");
    let (mut run, _) = h.start(json!({"command": "job", "restart": "on-failure"}), 40);
    for delay in [1000, 2000, 4000] {
        let _ = crash(&mut h, run, 1);
        run = respawned_after(&mut h, delay);
    }
    let _ = h.advance(60_000);
    let _ = crash(&mut h, run, 1);
    let _ = respawned_after(&mut h, 1000);
    assert_eq!(
        status(&mut h, "t00001")["structuredContent"].get("crash_loop"),
        None
    );
}

#[test]
fn the_idle_lease_stops_a_task_nobody_asks_about_and_not_one_that_is_polled() {
    let mut h = Harness::initialized("2025-11-25");
    let (forgotten, _) = h.start(json!({"command": "a", "idle_timeout_ms": 1000}), 40);
    let (polled, _) = h.start(json!({"command": "b", "idle_timeout_ms": 1000}), 41);
    let mut stopped = Vec::new();
    for _ in 0..4 {
        let outputs = h.advance(400);
        stopped.extend(outputs.iter().filter_map(|o| match o {
            Output::Signal { run, signal } => Some((*run, *signal)),
            _ => None,
        }));
        let s = status(&mut h, "t00002")["structuredContent"].clone();
        assert_eq!(s["idle_left_ms"], 1000);
    }
    assert_eq!(stopped, [(forgotten, Signal::Term)]);
    let _ = h.exit(forgotten, ExitStatus::Signaled(Signal::Term));
    let s = h.call_now("list", json!({}))["structuredContent"]["tasks"].clone();
    assert_eq!(s[0]["state"], "exited");
    assert_eq!(s[1]["state"], "running");
    assert_eq!(s[1]["idle_left_ms"], 1000);
    let s = status(&mut h, "t00001")["structuredContent"].clone();
    assert_eq!(s["stop_reason"], "idle");
    let _ = polled;
}

#[test]
fn a_task_whose_memory_stays_above_the_limit_is_stopped_and_says_why() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(
        json!({"command": "hog", "max_memory_bytes": 50_000_000}),
        40,
    );
    // One measurement above the limit is a spike; two in a row stop it.
    h.usage.insert(run, usage(100_000_000, &[]));
    let first = h.advance(1);
    assert!(signals(&first).is_empty(), "{first:?}");
    h.usage.insert(run, usage(10_000_000, &[]));
    assert!(signals(&h.advance(500)).is_empty());
    h.usage.insert(run, usage(100_000_000, &[]));
    assert!(signals(&h.advance(500)).is_empty());
    assert_eq!(signals(&h.advance(500)), [Signal::Term]);
    let _ = h.exit(run, ExitStatus::Signaled(Signal::Term));
    let result = status(&mut h, "t00001");
    assert_eq!(result["structuredContent"]["stop_reason"], "max_memory");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("stopped: max_memory"), "{text}");
}

#[test]
fn logs_with_timestamps_give_each_line_the_time_of_the_read_that_completed_it() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server"}), 40);
    let base = h.now().unix_ms;
    let _ = print(&mut h, run, "a\n");
    let _ = h.advance(250);
    let _ = print(&mut h, run, "b\nhal");
    let _ = h.advance(100);
    let _ = print(&mut h, run, "f\nrest");
    let result = h.call_now("logs", json!({"id": "t00001", "timestamps": true}));
    let lines = result["structuredContent"]["lines"].as_array().unwrap();
    let times: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["text"].as_str().unwrap(), l["time"].as_str().unwrap()))
        .collect();
    let at = |ms: u64| proc_state::time::rfc3339(base + ms);
    assert_eq!(
        times,
        [
            ("a", at(0).as_str()),
            ("b", at(250).as_str()),
            ("half", at(350).as_str()),
            ("rest", at(350).as_str())
        ]
    );
    let text = result["content"][0]["text"].as_str().unwrap();
    let stamp = at(250);
    assert!(
        text.contains(&format!("[1 {}] b", &stamp[11..23])),
        "{text}"
    );
    // Without `timestamps`, no times.
    let plain = h.call_now("logs", json!({"id": "t00001"}));
    assert!(plain["structuredContent"]["lines"][0].get("time").is_none());
}

#[test]
fn start_with_wait_quiet_ms_answers_once_the_output_settles() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "build", "wait_quiet_ms": 300}),
    );
    let (run, _) = spawned(&outputs).unwrap();
    assert!(transmitted(&h.input(Input::Spawned { run, pid: 40 })).is_empty());
    for _ in 0..2 {
        let _ = h.advance(100);
        assert!(transmitted(&print(&mut h, run, "compiling\n")).is_empty());
    }
    assert!(transmitted(&without_list_changed(h.advance(299))).is_empty());
    let replies = transmitted(&h.advance(1));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["ready"]["reason"],
        "quiet"
    );
}

//! What an assistant needs to see, end to end against the real server and driver: the ports a
//! task's processes listen on and what they use (measured in /proc), the URLs it printed,
//! readiness by URL and by quiet, the memory limit, the restart policy and the idle lease.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{LATEST, RawServer, id_of, texts};
use serde_json::{Value, json};
use support::{served_port, wait, wait_line};

fn server() -> RawServer {
    RawServer::initialized(LATEST)
}

/// Polls `status` of `id` until `done`, for at most `within`; the last status.
#[track_caller]
fn status_until(
    s: &mut RawServer,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    s.poll("status", json!({"id": id, "tail": 0}), within, done)
}

fn ports(status: &Value) -> Vec<u64> {
    status["listening"]
        .as_array()
        .map(|ports| ports.iter().filter_map(|l| l["port"].as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn status_reports_the_port_a_server_listens_on_and_the_url_it_printed() {
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-m", "http.server", "0", "--bind", "127.0.0.1"]}),
    ));
    let status = status_until(&mut s, &id, Duration::from_secs(2), |s| {
        !ports(s).is_empty()
    });
    let line = wait_line(&mut s, &id, "Serving HTTP", 0);
    let port = served_port(line["text"].as_str().unwrap());
    assert_eq!(ports(&status), [u64::from(port)], "{status}");
    assert_eq!(
        status["listening"],
        json!([{"protocol": "tcp", "address": "127.0.0.1", "port": port}])
    );
    let status = s.call("status", json!({"id": id}));
    assert_eq!(status["urls"], json!([format!("http://127.0.0.1:{port}/")]));
    assert!(
        status["usage"]["rss_bytes"].as_u64().unwrap() > 1_000_000,
        "{status}"
    );
    assert_eq!(status["usage"]["processes"], 1);
    let list = s.call("list", json!({}));
    assert_eq!(ports(&list["tasks"][0]), [u64::from(port)], "{list}");
    s.finish();
}

#[test]
fn a_server_that_forks_workers_reports_every_port_of_its_tree() {
    let mut s = server();
    let serve = "python3 -m http.server 0 --bind 127.0.0.1";
    let id = id_of(&s.call(
        "start",
        json!({"command": format!("{serve} & {serve} & wait")}),
    ));
    let status = status_until(&mut s, &id, Duration::from_secs(10), |s| {
        ports(s).len() == 2
    });
    assert_eq!(
        status["usage"]["processes"], 3,
        "sh and two servers: {status}"
    );
    // Both print to one pipe, a line in two writes each: the lines may interleave.
    let announced = |logs: &Value| {
        let text = texts(logs).concat();
        text.split("Serving HTTP on ")
            .skip(1)
            .map(|rest| u64::from(served_port(&format!("Serving HTTP on {rest}"))))
            .collect::<Vec<u64>>()
    };
    let logs = s.poll("logs", json!({"id": id}), Duration::from_secs(10), |l| {
        announced(l).len() == 2
    });
    let mut printed = announced(&logs);
    printed.sort_unstable();
    assert_eq!(ports(&status), printed);
    s.finish();
}

/// A server that binds and listens, says so, and answers HTTP only a second later.
const SLOW_SERVER: &str = r#"
import http.server, sys, time
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
print("bound", server.server_address[1], flush=True)
time.sleep(1)
print("serving", flush=True)
server.serve_forever()
"#;

#[test]
fn wait_on_a_url_returns_only_once_the_server_answers() {
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-c", SLOW_SERVER]}),
    ));
    let bound = wait_line(&mut s, &id, "^bound ", 0);
    let port: u16 = bound["text"].as_str().unwrap()[6..].parse().unwrap();
    let open = wait(&mut s, json!({"id": id, "port": port, "timeout_ms": 5000}));
    assert_eq!(open["reason"], "port_open");
    let result = wait(
        &mut s,
        json!({"id": id, "url": format!("http://127.0.0.1:{port}/"), "timeout_ms": 10000}),
    );
    assert_eq!(result["reason"], "url_ok", "{result}");
    assert_eq!(result["http_status"], 200);
    // It answered only after it said it serves.
    let logs = s.call("logs", json!({"id": id}));
    assert!(texts(&logs).contains(&"serving".to_owned()), "{logs}");
    // The same as the readiness of `start`.
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-m", "http.server", "0", "--bind", "127.0.0.1"]}),
    ));
    let line = wait_line(&mut s, &id, "Serving HTTP", 0);
    let port = served_port(line["text"].as_str().unwrap());
    let started = s.call(
        "start",
        json!({"command": "sleep 30", "wait_url": format!("http://localhost:{port}/"), "wait_timeout_ms": 10000}),
    );
    assert_eq!(started["ready"]["reason"], "url_ok", "{started}");
    s.finish();
}

#[test]
fn wait_with_quiet_ms_returns_once_the_output_settles() {
    let mut s = server();
    let script = "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.1)\ntime.sleep(30)";
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-c", script]}),
    ));
    // Once it prints (a busy machine may take a while to start Python): a line every 100 ms
    // for 0.9 s more, then silence.
    wait_line(&mut s, &id, "^0$", 0);
    let result = wait(
        &mut s,
        json!({"id": id, "quiet_ms": 300, "timeout_ms": 10000}),
    );
    assert_eq!(result["reason"], "quiet", "{result}");
    // The wait cannot have settled before the last line.
    let logs = s.call("logs", json!({"id": id}));
    assert_eq!(texts(&logs).len(), 10, "{logs}");
    let waited = result["waited_ms"].as_u64().unwrap();
    assert!(
        waited >= 1000,
        "settled before the output stopped: {result}"
    );
    assert!(
        waited < 3000,
        "settled long after the output stopped: {result}"
    );
    s.finish();
}

/// Allocates and touches `mb` megabytes, says so, and sleeps.
fn hog(mb: u32) -> Value {
    let script = format!(
        "import time\nx = b'x' * ({mb} * 1000 * 1000)\nprint('allocated', flush=True)\ntime.sleep(60)"
    );
    json!({"command": "python3", "args": ["-c", script]})
}

#[test]
fn resident_memory_is_reported_and_the_limit_stops_the_task() {
    let mut s = server();
    let id = id_of(&s.call("start", hog(100)));
    wait_line(&mut s, &id, "^allocated$", 0);
    let status = s.call("status", json!({"id": id}));
    let rss = status["usage"]["rss_bytes"].as_u64().unwrap();
    assert!(rss >= 90_000_000, "{status}");

    let mut arguments = hog(100);
    arguments["max_memory_bytes"] = json!(50_000_000);
    let id = id_of(&s.call("start", arguments));
    let status = s.wait_exited(&id);
    assert_eq!(status["stop_reason"], "max_memory", "{status}");
    assert_eq!(status["stopped"], true);
    let text = common::tool_text(&s.call_tool("status", json!({"id": id})));
    assert!(text.contains("stopped: max_memory"), "{text}");
    s.finish();
}

#[test]
fn on_failure_restarts_with_growing_delays_and_a_stop_ends_it() {
    let mut s = server();
    let id = id_of(&s.call(
        "start",
        json!({"command": "echo run; exit 1", "restart": "on-failure", "notify_on_exit": true}),
    ));
    let status = status_until(&mut s, &id, Duration::from_secs(20), |s| {
        s["crash_loop"] == true
    });
    assert!(status["restarts"].as_u64().unwrap() >= 3, "{status}");
    assert_eq!(status["restart_policy"]["last_exit_code"], 1);
    let delays: Vec<u64> = s
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/message")
        .filter_map(|n| n["params"]["data"]["restarting_in_ms"].as_u64())
        .collect();
    // Counted from each exit, told once its output is read: each a little under 1, 2, 4 s.
    assert!(delays.len() >= 3, "{delays:?}");
    for (delay, nominal) in delays.iter().zip([1000, 2000, 4000]) {
        assert!((nominal - 250..=nominal).contains(delay), "{delays:?}");
    }
    let logs = s.call("logs", json!({"id": id}));
    let numbers: Vec<u64> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["n"].as_u64().unwrap())
        .collect();
    assert!(
        numbers.len() >= 3 && numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "{logs}"
    );
    assert!(texts(&logs).iter().all(|t| t == "run"), "{logs}");
    let stopped = s.call("stop", json!({"id": id}));
    assert_eq!(stopped["state"], "exited");
    let status = s.call("status", json!({"id": id}));
    assert!(
        status["restart_policy"].get("next_attempt_at").is_none(),
        "a stop ends the policy: {status}"
    );

    let id = id_of(&s.call("start", json!({"command": "echo ok", "restart": "always"})));
    let status = status_until(&mut s, &id, Duration::from_secs(10), |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    assert_eq!(status["restart_policy"]["last_exit_code"], 0);
    s.call("stop", json!({"id": id}));
    s.finish();
}

#[test]
fn the_idle_lease_stops_a_forgotten_task_and_keeps_a_polled_one() {
    let mut s = server();
    let forgotten = id_of(&s.call(
        "start",
        json!({"command": "sleep 60", "idle_timeout_ms": 1000}),
    ));
    let polled = id_of(&s.call(
        "start",
        json!({"command": "sleep 60", "idle_timeout_ms": 1000}),
    ));
    let started = Instant::now();
    // `list` does not count as referring to a task; `status` does.
    let list = loop {
        let status = s.call("status", json!({"id": polled, "tail": 0}));
        assert_eq!(status["state"], "running", "{status}");
        let list = s.call("list", json!({}));
        if list["tasks"][0]["state"] == "exited" {
            break list;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(list["tasks"][1]["state"], "running");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let status = s.call("status", json!({"id": forgotten}));
    assert_eq!(status["stop_reason"], "idle", "{status}");
    s.finish();
}

#[test]
fn logs_with_timestamps_give_non_decreasing_times() {
    let mut s = server();
    let script = "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.05)";
    let id = id_of(&s.call(
        "start",
        json!({"command": "python3", "args": ["-c", script]}),
    ));
    support::wait_exit(&mut s, &id);
    let logs = s.call("logs", json!({"id": id, "timestamps": true}));
    let times: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["time"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 5, "{logs}");
    // RFC 3339 UTC with milliseconds, all of one length: text order is time order.
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times[0] < times[4], "five reads 50 ms apart: {times:?}");
    s.finish();
}

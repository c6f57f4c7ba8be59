//! Headline figures of the release binary, printed as a table:
//!
//! - time from spawning `proc-mcp` to its `initialize` reply (median of 20 runs);
//! - round trip of `tools/call start` with command `true` (median of 200 calls);
//! - time until a 2,000,000-line `seq` flood is seen as exited, and the server's peak RSS;
//! - the server's RSS with 300 running tasks that each listen on a TCP port (a small Perl
//!   program), the round trip and size of a `list` of them with their ports and resource use (median of 100 calls, once every task has been
//!   measured), how long the first measurement of all 300 took, and how many
//!   `notifications/resources/list_changed` the 300 back-to-back starts caused;
//! - the round trip of `status` of a task that floods its output (`yes`), each answer with a
//!   measurement at most 250 ms old (median of 100 calls);
//! - bytes per second through a terminal task (`yes | head -c 50M` on a pseudo-terminal) into
//!   the log buffer and the screen model, and the server's RSS with 50 terminal tasks.
//!
//! `cargo bench --bench figures` (builds the release binary, or uses `PROC_MCP_BIN`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{LATEST, RawServer, id_of, server_bin, vm_kib};
use serde_json::json;

const INIT_RUNS: usize = 20;
const START_CALLS: usize = 200;
const FLOOD_LINES: u64 = 2_000_000;
const SLEEPERS: usize = 300;
const LIST_CALLS: usize = 100;
const TTY_BYTES: u64 = 50_000_000;
const TTY_TASKS: usize = 50;
/// Listens on a free port of 127.0.0.1, prints it, sleeps.
const LISTENER: &str = "my $s = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0) or die; print $s->sockport, \"\\n\"; sleep 1000";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Decimal megabytes (10^6 bytes) from KiB.
fn mb(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1e6
}

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    goal: Option<f64>,
}

fn initialize_time() -> Duration {
    let samples = (0..INIT_RUNS)
        .map(|_| {
            let spawned = Instant::now();
            let mut server = RawServer::spawn();
            server.initialize(LATEST);
            let took = spawned.elapsed();
            server.finish();
            took
        })
        .collect();
    median(samples)
}

fn start_round_trip() -> Duration {
    let mut server = RawServer::initialized(LATEST);
    let mut samples = Vec::with_capacity(START_CALLS);
    for _ in 0..START_CALLS {
        let sent = Instant::now();
        let task = server.call("start", json!({"command": "true"}));
        samples.push(sent.elapsed());
        let id = id_of(&task);
        server.wait_exited(&id);
        server.call("remove", json!({"id": id}));
    }
    server.finish();
    median(samples)
}

/// (time until the flood is seen as exited, server VmHWM in KiB)
fn flood() -> (Duration, u64) {
    let mut server = RawServer::initialized(LATEST);
    let started = Instant::now();
    let id = id_of(&server.call("start", json!({"command": format!("seq 1 {FLOOD_LINES}")})));
    let status = loop {
        let status = server.call("status", json!({"id": id, "tail": 0}));
        if status["state"] == "exited" {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "flood still running: {status}"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = started.elapsed();
    let peak = vm_kib(server.pid, "VmHWM");
    assert_eq!(status["output"]["lines"], FLOOD_LINES, "status: {status}");
    server.finish();
    (took, peak)
}

/// (bytes per second written through a terminal task, as the task wrote them)
fn tty_throughput() -> f64 {
    let mut server = RawServer::initialized(LATEST);
    let started = Instant::now();
    let command = format!("yes | head -c {TTY_BYTES}");
    let id = id_of(&server.call("start", json!({"command": command, "tty": true})));
    let waited = server.call("wait", json!({"id": id, "timeout_ms": 300_000}));
    let took = started.elapsed();
    assert_eq!(waited["reason"], "exited", "{waited}");
    let status = server.call("status", json!({"id": id, "tail": 0}));
    // The terminal turns each "y\n" into "y\r\n" (ONLCR): count what the task wrote.
    let lines = status["output"]["lines"].as_u64().unwrap_or_default();
    assert_eq!(lines, TTY_BYTES / 2, "status: {status}");
    server.finish();
    TTY_BYTES as f64 / took.as_secs_f64()
}

/// Server VmRSS in KiB with `TTY_TASKS` terminal tasks running (each with its screen).
fn tty_tasks_rss() -> u64 {
    let mut server = RawServer::initialized(LATEST);
    for _ in 0..TTY_TASKS {
        server.call(
            "start",
            json!({"command": "printf 'ready\\n'; sleep 1000", "tty": true}),
        );
    }
    let listed = server.call("list", json!({"state": "running"}));
    assert_eq!(listed["tasks"].as_array().map_or(0, Vec::len), TTY_TASKS);
    let rss = vm_kib(server.pid, "VmRSS");
    server.finish();
    rss
}

/// With `SLEEPERS` running tasks.
struct Sleepers {
    /// Server VmRSS, KiB.
    rss_kib: u64,
    /// Median round trip of `list`.
    list: Duration,
    /// Bytes of one `list` reply line.
    list_bytes: usize,
    /// `notifications/resources/list_changed` sent for the starts (and the lists).
    list_changed: usize,
    /// From the first `list` to the first that shows every task measured.
    measured_all: Duration,
}

fn sleepers() -> Sleepers {
    let mut server = RawServer::initialized(LATEST);
    for _ in 0..SLEEPERS {
        server.call(
            "start",
            json!({"command": "perl", "args": ["-MIO::Socket::INET", "-e", LISTENER]}),
        );
    }
    let listed = server.call("list", json!({"state": "running"}));
    let running = listed["tasks"].as_array().map_or(0, Vec::len);
    assert_eq!(running, SLEEPERS, "not all sleepers run");
    // The first list asked for the measurements; the lists that follow show them.
    let measuring = Instant::now();
    server.poll(
        "list",
        json!({"state": "running"}),
        Duration::from_secs(30),
        |listed| {
            listed["tasks"]
                .as_array()
                .is_some_and(|tasks| tasks.iter().all(|t| t.get("listening").is_some()))
        },
    );
    let measured_all = measuring.elapsed();
    let rss_kib = vm_kib(server.pid, "VmRSS");
    let mut samples = Vec::with_capacity(LIST_CALLS);
    let mut list_bytes = 0;
    for _ in 0..LIST_CALLS {
        let id = server.next_id();
        let request = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "list", "arguments": {}}});
        let sent = Instant::now();
        server.send(&request);
        let reply = loop {
            let line = server
                .recv_line(Duration::from_secs(10))
                .expect("no reply to `list`");
            if !line.contains("\"method\"") {
                break line;
            }
            server
                .notifications
                .push(serde_json::from_str(&line).expect("JSON"));
        };
        samples.push(sent.elapsed());
        list_bytes = reply.len() + 1;
    }
    // The coalesced notification goes out once the list has been quiet for a while: gather
    // what arrives in the 1.5 s after the burst.
    let quiet_until = Instant::now() + Duration::from_millis(1500);
    while let Some(line) = server.recv_line(quiet_until.saturating_duration_since(Instant::now())) {
        server
            .notifications
            .push(serde_json::from_str(&line).expect("JSON"));
    }
    let list_changed = server
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/resources/list_changed")
        .count();
    server.finish();
    Sleepers {
        rss_kib,
        list: median(samples),
        list_bytes,
        list_changed,
        measured_all,
    }
}

/// Median round trip of `status` (with its last 10 lines) of a task printing `yes` as fast as
/// it can.
fn status_under_flood() -> Duration {
    let mut server = RawServer::initialized(LATEST);
    let id = id_of(&server.call("start", json!({"command": "yes"})));
    let mut samples = Vec::with_capacity(LIST_CALLS);
    for _ in 0..LIST_CALLS {
        let started = Instant::now();
        let status = server.call("status", json!({"id": id}));
        samples.push(started.elapsed());
        assert_eq!(status["state"], "running", "{status}");
    }
    server.call("stop", json!({"id": id}));
    server.finish();
    median(samples)
}

fn main() {
    println!("proc-mcp figures ({})", server_bin().display());

    let init = initialize_time();
    let start = start_round_trip();
    let (flood_time, flood_peak) = flood();
    let sleepers = sleepers();
    let status_flood = status_under_flood();
    let tty = tty_throughput();
    let tty_rss = tty_tasks_rss();

    let figures = [
        Figure {
            name: "spawn → initialize reply (median of 20)",
            value: ms(init),
            unit: "ms",
            goal: Some(10.0),
        },
        Figure {
            name: "tools/call start `true` round trip (median of 200)",
            value: ms(start),
            unit: "ms",
            goal: Some(0.9),
        },
        Figure {
            name: "2,000,000-line flood seen as exited",
            value: ms(flood_time),
            unit: "ms",
            goal: None,
        },
        Figure {
            name: "server peak RSS (VmHWM) during the flood",
            value: mb(flood_peak),
            unit: "MB",
            goal: Some(20.0),
        },
        Figure {
            name: "server RSS (VmRSS) with 300 running listening tasks",
            value: mb(sleepers.rss_kib),
            unit: "MB",
            goal: Some(15.0),
        },
        Figure {
            name: "`list` of 300 measured listening tasks round trip (median of 100)",
            value: ms(sleepers.list),
            unit: "ms",
            goal: Some(0.5),
        },
        Figure {
            name: "first measurement of 300 tasks (list to list)",
            value: ms(sleepers.measured_all),
            unit: "ms",
            goal: None,
        },
        Figure {
            name: "`status` of a task flooding `yes` round trip (median of 100)",
            value: ms(status_flood),
            unit: "ms",
            goal: Some(1.0),
        },
        Figure {
            name: "`list` of 300 running tasks reply size",
            value: sleepers.list_bytes as f64 / 1e3,
            unit: "kB",
            goal: None,
        },
        Figure {
            name: "list_changed notifications for 300 starts (+100 lists)",
            value: sleepers.list_changed as f64,
            unit: "",
            goal: None,
        },
        Figure {
            name: "`yes | head -c 50M` through a terminal task",
            value: tty / 1e6,
            unit: "MB/s",
            goal: None,
        },
        Figure {
            name: "server RSS (VmRSS) with 50 terminal tasks",
            value: mb(tty_rss),
            unit: "MB",
            goal: None,
        },
    ];
    println!();
    println!("{:<55} {:>10}  {:>10}", "figure", "value", "goal");
    for f in &figures {
        let goal = f
            .goal
            .map_or(String::new(), |g| format!("< {g} {}", f.unit));
        let verdict = match f.goal {
            Some(g) if f.value < g => "ok",
            Some(_) => "MISSED",
            None => "",
        };
        println!(
            "{:<55} {:>7.3} {:<2}  {:>10}  {verdict}",
            f.name, f.value, f.unit, goal
        );
    }
    println!("(MB = 10^6 bytes)");
}

//! When the core's timers fire, and the times it reports, on virtual time: the properties the
//! end-to-end tests used to check as wall-clock windows (`tests/wait.rs`, `tests/interactive.rs`
//! at the root), which now check only that the real binary's timers are wired. The others are
//! in `server.rs`: a wait for a line already printed answers at once
//! (`wait_matches_a_line_printed_before_the_call`), a wait times out at its deadline
//! (`wait_times_out_at_its_deadline`), a port wait answers only once a probe finds the port open
//! (`wait_for_a_port_probes_until_it_opens`), progress comes once a second
//! (`wait_sends_increasing_progress_about_once_a_second`), `max_runtime_ms` fires at its limit
//! (`max_runtime_stops_the_task`), and resource updates are coalesced
//! (`subscribed_output_updates_are_coalesced_and_sent_at_exit`).

mod harness;

use harness::{Harness, output, spawned, transmitted, without_list_changed};
use proc_state::{ExitStatus, Input, Signal};
use serde_json::{Value, json};

/// The `structuredContent` of the one reply among `replies`.
#[track_caller]
fn structured(replies: &[Value]) -> &Value {
    assert_eq!(replies.len(), 1, "one reply expected: {replies:?}");
    &replies[0]["result"]["structuredContent"]
}

#[test]
fn a_wait_for_a_line_printed_before_it_waited_no_time() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server"}), 5);
    let _ = output(&mut h, run, b"ready on 4242\n");
    let _ = h.advance(700);
    let result = h.call_now(
        "wait",
        json!({"id": "t00001", "pattern": "ready", "timeout_ms": 20000}),
    );
    let s = &result["structuredContent"];
    assert_eq!(s["reason"], "matched");
    assert_eq!(s["waited_ms"], 0, "{s}");
}

#[test]
fn a_wait_that_times_out_answers_at_its_timeout_and_says_it_waited_that_long() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "server"}), 5);
    let _ = h.call(
        7,
        "wait",
        json!({"id": "t00001", "pattern": "never", "timeout_ms": 1500}),
    );
    assert!(transmitted(&h.advance(1499)).is_empty(), "answered early");
    let replies = transmitted(&h.advance(1));
    let s = structured(&replies);
    assert_eq!(replies[0]["id"], 7);
    assert_eq!(s["reason"], "timeout");
    assert_eq!(s["waited_ms"], 1500, "{s}");
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["line"], Value::Null, "{s}");
}

#[test]
fn start_with_wait_for_answers_at_wait_timeout_ms_and_not_before() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(
        1,
        "start",
        json!({"command": "server", "wait_for": "never", "wait_timeout_ms": 1000}),
    );
    let (run, _) = spawned(&outputs).expect("a spawn");
    assert!(
        transmitted(&h.input(Input::Spawned { run, pid: 9 })).is_empty(),
        "answered before the pattern or the timeout"
    );
    assert!(transmitted(&h.advance(999)).is_empty(), "answered early");
    let replies = transmitted(&h.advance(1));
    let s = structured(&replies);
    assert_eq!(s["ready"], json!({"matched": false, "reason": "timeout"}));
    assert_eq!(s["state"], "running", "{s}");
}

#[test]
fn a_task_stopped_by_max_runtime_ms_ran_from_its_start_to_its_exit() {
    let mut h = Harness::initialized("2025-11-25");
    let (run, _) = h.start(json!({"command": "server", "max_runtime_ms": 1000}), 5);
    assert!(
        without_list_changed(h.advance(999)).is_empty(),
        "stopped early"
    );
    assert!(
        !without_list_changed(h.advance(1)).is_empty(),
        "not stopped at its limit"
    );
    // The task takes 50 ms to end on SIGTERM.
    let _ = h.advance(50);
    let _ = h.exit(run, ExitStatus::Signaled(Signal::Term));
    let _ = h.advance(5000);
    let status = h.call_now("status", json!({"id": "t00001", "tail": 0}));
    let s = &status["structuredContent"];
    assert_eq!(s["state"], "exited", "{s}");
    assert_eq!(s["stopped"], true, "{s}");
    assert_eq!(s["runtime_ms"], 1050, "{s}");
}

//! What a server left behind when it and its watchdog were both killed (an OOM kill of the
//! whole session, a machine under pressure) is cleaned up by the next server that starts:
//! processes tagged by an instance verified dead (by pid and start time), and its cgroup.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{LATEST, RawServer, TempDir, is_alive};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use proc_testkit::{eventually, wait_terminated, watchdog_of, within};
use serde_json::json;

/// Bound for each step: the watchdog and the daemon showing up, the server stopping, the
/// daemon's end.
const STEP: Duration = Duration::from_secs(10);

/// Waits until child `pid` is stopped (waitpid(2) with WUNTRACED; it is not reaped).
fn wait_stopped(pid: Pid) {
    match within(STEP, "the server stopping", move || {
        waitpid(pid, Some(WaitPidFlag::WUNTRACED))
    }) {
        Ok(WaitStatus::Stopped(..)) => {}
        other => panic!("{pid} did not stop: {other:?}"),
    }
}

/// The pid the daemon wrote to `file`, once it is there.
fn daemon_pid(file: &Path) -> i32 {
    eventually(STEP, "the daemon's pid file", || {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    })
}

fn left_behind_is_cleaned_up_by_the_next_server(cgroups: &str) {
    let dir = TempDir::new();
    let file = dir.path().join("daemon.pid");
    let mut first = RawServer::initialized_with(LATEST, &["--cgroups", cgroups], &[]);
    let command = format!(
        "setsid sh -c 'sleep 1000 & echo $! > {}'; sleep 1000",
        file.display()
    );
    first.call("start", json!({"command": command}));
    let daemon = daemon_pid(&file);
    // Both the watchdog and the server die, and neither can act on the other's death: the
    // server is stopped first (else it would start a new watchdog when this one dies).
    let watchdog = eventually(STEP, "the server's watchdog", || watchdog_of(first.pid));
    let server = Pid::from_raw(first.pid as i32);
    kill(server, Signal::SIGSTOP).expect("stop the server");
    wait_stopped(server);
    kill(Pid::from_raw(watchdog.pid), Signal::SIGKILL).expect("kill the watchdog");
    kill(server, Signal::SIGKILL).expect("kill the server");
    let _ = first.wait_exit(Duration::from_secs(10));
    // The task leader dies with the server (parent-death signal); the daemon, in a session of
    // its own, is left.
    assert!(
        is_alive(daemon),
        "--cgroups {cgroups}: the daemon should be left behind"
    );

    let second = RawServer::initialized_with(LATEST, &["--cgroups", cgroups], &[]);
    let started = Instant::now();
    assert!(
        wait_terminated(daemon, STEP),
        "--cgroups {cgroups}: the next server left {daemon} alive"
    );
    eprintln!(
        "--cgroups {cgroups}: a dead server's daemon was killed {:?} after the next server started",
        started.elapsed()
    );
    second.finish();
}

#[test]
fn the_next_server_cleans_up_what_a_dead_one_left() {
    left_behind_is_cleaned_up_by_the_next_server("off");
    left_behind_is_cleaned_up_by_the_next_server("auto");
}

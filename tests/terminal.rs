//! Terminal tasks end to end: `start` with `tty: true` against the real server and driver, the
//! screen, keys, resize, prompts without a newline and one-call REPL steps.

mod common;
mod support;

use std::time::Duration;

use common::{LATEST, RawServer, id_of};
use serde_json::{Value, json};
use support::{call_blocking, wait, wait_exit, wait_line};

fn server() -> RawServer {
    RawServer::initialized(LATEST)
}

/// Starts `command` on a terminal; its id.
fn start_tty(s: &mut RawServer, arguments: Value) -> String {
    let mut arguments = arguments;
    arguments["tty"] = json!(true);
    id_of(&s.call("start", arguments))
}

/// `write` with a wait condition (answered once it holds): its result.
#[track_caller]
fn interact(s: &mut RawServer, arguments: Value) -> Value {
    let mut arguments = arguments;
    arguments["timeout_ms"] = json!(20000);
    call_blocking(s, "write", arguments, Duration::from_secs(20))
}

fn output_texts(result: &Value) -> Vec<String> {
    result["output"]
        .as_array()
        .unwrap_or_else(|| panic!("no output in {result}"))
        .iter()
        .map(|line| line["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_terminal_task_sees_a_terminal_of_the_size_asked_for() {
    let mut s = server();
    let script = "import sys; print(sys.stdin.isatty(), sys.stdout.isatty())";
    let id = start_tty(
        &mut s,
        json!({"command": "python3", "args": ["-c", script], "rows": 30, "cols": 100}),
    );
    wait_line(&mut s, &id, "^True True$", 0);
    assert_eq!(wait_exit(&mut s, &id)["exit_code"], 0);

    let id = start_tty(
        &mut s,
        json!({"command": "tput cols; tput lines", "cols": 100, "rows": 30}),
    );
    wait_exit(&mut s, &id);
    let logs = s.call("logs", json!({"id": id}));
    assert_eq!(common::texts(&logs), ["100", "30"], "{logs}");
    assert_eq!(logs["lines"][0]["stream"], "tty");
    s.finish();
}

#[test]
fn resize_reaches_the_program_as_sigwinch() {
    let mut s = server();
    let script = "import os, signal, sys, time\n\
        signal.signal(signal.SIGWINCH, lambda *_: print('size', *os.get_terminal_size(), flush=True))\n\
        print('ready', flush=True)\n\
        time.sleep(60)";
    let id = start_tty(
        &mut s,
        json!({"command": "python3", "args": ["-c", script]}),
    );
    wait_line(&mut s, &id, "^ready$", 0);
    let resized = s.call("resize", json!({"id": id, "rows": 20, "cols": 70}));
    assert_eq!(resized["cols"], 70);
    wait_line(&mut s, &id, "^size 70 20$", 0);
    let screen = s.call("screen", json!({"id": id}));
    assert_eq!(screen["size"], json!({"rows": 20, "cols": 70}));
    s.call("stop", json!({"id": id}));
    s.finish();
}

#[test]
fn a_python_repl_driven_through_its_prompt() {
    let mut s = server();
    let id = start_tty(&mut s, json!({"command": "python3", "args": ["-q", "-i"]}));
    // The prompt has no newline: it matches once the REPL waits.
    let prompt = wait_line(&mut s, &id, "^>>> $", 0);
    assert_eq!(prompt["partial"], true, "{prompt}");
    let written = s.call("write", json!({"id": id, "data": "6*7", "keys": ["Enter"]}));
    wait_line(
        &mut s,
        &id,
        "^42$",
        written["next_cursor"].as_u64().unwrap(),
    );

    // One call per step: write, then wait for the prompt to come back.
    let step = interact(
        &mut s,
        json!({"id": id, "data": "print('hist')", "keys": ["Enter"], "prompt": true}),
    );
    assert_eq!(step["reason"], "matched", "{step}");
    let texts = output_texts(&step);
    assert!(texts.iter().any(|t| t == "hist"), "{step}");
    assert_eq!(texts.last().map(String::as_str), Some(">>> "), "{step}");
    assert_eq!(step["screen_changed"], true);

    // Up recalls the last line from readline's history.
    let again = interact(
        &mut s,
        json!({"id": id, "keys": ["Up", "Enter"], "prompt": true}),
    );
    assert!(
        output_texts(&again).iter().any(|t| t == "hist"),
        "history recall: {again}"
    );

    let _ = s.call("write", json!({"id": id, "keys": ["Ctrl-D"]}));
    assert_eq!(wait_exit(&mut s, &id)["exit_code"], 0);
    s.finish();
}

#[test]
fn a_shell_prompt_without_a_newline_is_answered() {
    let mut s = server();
    let id = start_tty(
        &mut s,
        json!({"command": "bash", "args": ["-c", "read -p 'Continue? [y/N] ' a; echo \"got $a\""]}),
    );
    wait_line(&mut s, &id, r"^Continue\? \[y/N\] $", 0);
    let _ = s.call("write", json!({"id": id, "data": "y", "keys": ["Enter"]}));
    wait_line(&mut s, &id, "^got y$", 0);
    assert_eq!(wait_exit(&mut s, &id)["exit_code"], 0);
    s.finish();
}

#[test]
fn ctrl_c_interrupts_the_foreground_command_of_an_interactive_shell() {
    let mut s = server();
    let id = start_tty(
        &mut s,
        json!({"command": "sh", "args": ["-i"], "env": {"PS1": "ready> "}}),
    );
    wait_line(&mut s, &id, "^ready> $", 0);
    let _ = s.call(
        "write",
        json!({"id": id, "data": "sleep 30", "keys": ["Enter"]}),
    );
    // `sleep` is the foreground process group once it runs: the shell's child sets its group
    // and the terminal's foreground group before it execs (the echo on the screen comes
    // sooner, while the shell may not have forked yet).
    let shell = s.call("status", json!({"id": id}))["pid"].as_i64().unwrap() as i32;
    let running = proc_testkit::wait_until(Duration::from_secs(20), || {
        proc_testkit::processes().iter().any(|p| {
            p.session == shell && p.pgrp != shell && proc_testkit::cmdline(p.pid) == "sleep 30"
        })
    });
    assert!(running, "`sleep 30` never ran in its own group");
    let started = std::time::Instant::now();
    let back = interact(
        &mut s,
        json!({"id": id, "keys": ["Ctrl-C"], "prompt": true}),
    );
    assert_eq!(back["reason"], "matched", "{back}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let state = s.call("status", json!({"id": id}));
    assert_eq!(state["state"], "running", "the shell lives on: {state}");
    s.call("stop", json!({"id": id}));
    s.finish();
}

#[test]
fn a_full_screen_program_is_read_from_its_screen() {
    let mut s = server();
    let script = "import curses, time\n\
        def main(w):\n\
        \x20   w.addstr(5, 10, 'curses at row 5', curses.A_BOLD)\n\
        \x20   w.refresh()\n\
        \x20   time.sleep(60)\n\
        curses.wrapper(main)";
    let id = start_tty(
        &mut s,
        json!({"command": "python3", "args": ["-c", script], "rows": 12, "cols": 40}),
    );
    let drawn = wait(
        &mut s,
        json!({"id": id, "screen": "curses at row 5", "timeout_ms": 20000}),
    );
    assert_eq!(drawn["reason"], "screen", "{drawn}");
    let screen = s.call("screen", json!({"id": id}));
    assert_eq!(screen["rows"][5], "          curses at row 5", "{screen}");
    assert_eq!(screen["alternate_screen"], true, "{screen}");
    assert_eq!(screen["rows"].as_array().map(Vec::len), Some(12));
    s.call("stop", json!({"id": id}));
    s.finish();
}

#[test]
fn top_shows_its_summary_on_the_screen() {
    if std::process::Command::new("top")
        .arg("-v")
        .output()
        .is_err()
    {
        return;
    }
    let mut s = server();
    let id = start_tty(&mut s, json!({"command": "top", "rows": 24, "cols": 100}));
    let drawn = wait(
        &mut s,
        json!({"id": id, "screen": "(?m)^(top - |Tasks:)", "timeout_ms": 20000}),
    );
    assert_eq!(drawn["reason"], "screen", "{drawn}");
    let _ = s.call("write", json!({"id": id, "data": "q"}));
    assert_eq!(wait_exit(&mut s, &id)["exit_code"], 0);
    s.finish();
}

#[test]
fn a_curses_screen_as_png_has_its_size_and_colours() {
    use base64::Engine;
    let mut s = server();
    let script = "import curses, time\n\
        def main(w):\n\
        \x20   curses.start_color()\n\
        \x20   curses.init_pair(1, curses.COLOR_RED, curses.COLOR_BLUE)\n\
        \x20   w.addstr(2, 2, 'colour', curses.color_pair(1) | curses.A_BOLD)\n\
        \x20   w.refresh()\n\
        \x20   time.sleep(60)\n\
        curses.wrapper(main)";
    let id = start_tty(
        &mut s,
        json!({"command": "python3", "args": ["-c", script], "rows": 10, "cols": 30, "env": {"NO_COLOR": ""}}),
    );
    let drawn = wait(
        &mut s,
        json!({"id": id, "screen": "colour", "timeout_ms": 20000}),
    );
    assert_eq!(drawn["reason"], "screen", "{drawn}");
    let result = s.call_tool("screen", json!({"id": id, "format": "png"}));
    let image = &result["content"][1];
    assert_eq!(image["mimeType"], "image/png", "{result}");
    let file = base64::prelude::BASE64_STANDARD
        .decode(image["data"].as_str().unwrap())
        .expect("base64");
    let mut reader = png::Decoder::new(std::io::Cursor::new(file))
        .read_info()
        .expect("a PNG");
    let mut rgb = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut rgb).expect("a frame");
    assert_eq!((info.width, info.height), (30 * 9, 10 * 18));
    let colours: std::collections::BTreeSet<&[u8]> = rgb.chunks_exact(3).collect();
    assert!(colours.contains(&[0xcd, 0, 0][..]) || colours.contains(&[0xff, 0, 0][..]));
    assert!(colours.len() > 2, "{} colours", colours.len());
    s.call("stop", json!({"id": id}));
    s.finish();
}

#[test]
fn status_says_when_a_task_waits_for_input() {
    let mut s = server();
    let repl = start_tty(&mut s, json!({"command": "python3", "args": ["-q", "-i"]}));
    wait_line(&mut s, &repl, "^>>> $", 0);
    let status = s.call("status", json!({"id": repl}));
    assert_eq!(
        status["input_wanted"], true,
        "a REPL at its prompt: {status}"
    );

    let busy = start_tty(
        &mut s,
        json!({"command": "python3", "args": ["-c", "print('ready', flush=True)\nwhile True: pass"]}),
    );
    wait_line(&mut s, &busy, "^ready$", 0);
    let status = s.call("status", json!({"id": busy}));
    assert_eq!(status["input_wanted"], false, "a busy loop: {status}");

    let quiet = id_of(&s.call("start", json!({"command": "sleep 30"})));
    let status = s.call("status", json!({"id": quiet}));
    assert!(status.get("input_wanted").is_none(), "no stdin: {status}");
    for id in [repl, busy, quiet] {
        s.call("stop", json!({"id": id}));
    }
    s.finish();
}

//! How tasks look to a client: the structured fields of results and the compact text a model
//! reads at a glance.

use core::time::Duration;

use serde_json::{Map, Value, json};

use crate::log::{Line, Page};
use crate::process::{ExitStatus, Signal, Stream};
use crate::task::{State, Task};
use crate::time::{self, Now};

/// A line as the tools return it: `{n, stream, text, partial?}`.
pub(super) fn line_json(line: &Line) -> Value {
    let mut object = Map::with_capacity(4);
    object.insert("n".into(), Value::from(line.n));
    object.insert("stream".into(), Value::from(line.stream.as_str()));
    object.insert("text".into(), Value::from(line.text.as_str()));
    if line.partial {
        object.insert("partial".into(), Value::Bool(true));
    }
    Value::Object(object)
}

/// `[n] text`, with `stderr` and `partial` marked: `[12 stderr] warning: …`.
pub(super) fn push_line_text(text: &mut String, line: &Line) {
    let marker = match (line.stream, line.partial) {
        (Stream::Stdout, false) => "",
        (Stream::Stdout, true) => " partial",
        (Stream::Stderr, false) => " stderr",
        (Stream::Stderr, true) => " stderr partial",
    };
    text.push_str(&format!("[{}{marker}] {}", line.n, line.text));
}

/// The command as a person would type it.
pub(super) fn display_command(t: &Task) -> String {
    match &t.command.args {
        Some(args) if !args.is_empty() => format!("{} {}", t.command.command, args.join(" ")),
        _ => t.command.command.clone(),
    }
}

/// ` "name"` for a named task, nothing otherwise.
pub(super) fn name_suffix(t: &Task) -> String {
    t.name
        .as_deref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default()
}

/// The fields of `status` (without `tail`), also the body of `stop`'s result.
pub(super) fn status_fields(t: &Task, now: Now) -> Map<String, Value> {
    let fields = json!({
        "id": t.id,
        "name": t.name,
        "command": t.command.command,
        "args": t.command.args,
        "cwd": t.command.cwd,
        "pid": t.pid(),
        "state": t.state().as_str(),
        "exit_code": t.exit_code(),
        "signal": t.exit_signal().map(Signal::name),
        "stopped": t.stopped(),
        "started_at": time::rfc3339(t.started().unix_ms),
        "ended_at": t.ended().map(|e| time::rfc3339(e.unix_ms)),
        "runtime_ms": super::millis(t.runtime(now)),
        "restarts": t.restarts(),
        "output": {
            "lines": t.log.total_lines(),
            "bytes": t.log.total_bytes(),
            "dropped_lines": t.log.dropped_lines(),
            "next_cursor": t.log.next_cursor(),
        },
    });
    let mut fields = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let escaped: Vec<Value> = t
        .escaped
        .listed()
        .map(|e| json!({"pid": e.pid, "command": e.command, "state": e.fate.as_str()}))
        .collect();
    if !escaped.is_empty() {
        fields.insert("escaped".into(), Value::Array(escaped));
    }
    fields
}

/// One line on the task's escaped processes, if it has any: what happened to each.
pub(super) fn escaped_text(t: &Task) -> Option<String> {
    let listed: Vec<String> = t
        .escaped
        .listed()
        .map(|e| format!("{} `{}` ({})", e.pid, e.command, e.fate.as_str()))
        .collect();
    if listed.is_empty() {
        return None;
    }
    let mut text = format!("escaped its process group: {}", listed.join(", "));
    if t.escaped.unlisted() > 0 {
        text.push_str(&format!(" and {} more", t.escaped.unlisted()));
    }
    Some(text)
}

/// How the task is doing, in a few words: `running`, `exited with code 0`, …
pub(super) fn state_phrase(t: &Task) -> String {
    match t.state() {
        State::Exited => match t.exit().map(|exit| exit.status) {
            Some(ExitStatus::Code(code)) => format!("exited with code {code}"),
            Some(ExitStatus::Signaled(signal)) => format!("killed by {signal}"),
            Some(ExitStatus::Lost) => "ended (exit status lost)".to_owned(),
            None => "exited".to_owned(),
        },
        State::Failed => format!(
            "failed to start: {}",
            t.failure().unwrap_or("unknown error")
        ),
        other => other.as_str().to_owned(),
    }
}

/// [`state_phrase`] with the runtime and, while it runs, the pid.
pub(super) fn state_phrase_at(t: &Task, now: Now) -> String {
    let runtime = seconds(t.runtime(now));
    match t.state() {
        State::Failed => state_phrase(t),
        State::Exited => format!("{} after {runtime}", state_phrase(t)),
        _ => format!(
            "{} for {runtime} (pid {})",
            state_phrase(t),
            t.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

pub(super) fn status_text(t: &Task, now: Now) -> String {
    let mut text = format!(
        "Task {}{}: {}{}\ncommand: {} (cwd {})\noutput: {} lines, {} bytes, {} dropped; next_cursor {}",
        t.id,
        name_suffix(t),
        state_phrase_at(t, now),
        if t.stopped() { " (stopped)" } else { "" },
        display_command(t),
        t.command.cwd,
        t.log.total_lines(),
        t.log.total_bytes(),
        t.log.dropped_lines(),
        t.log.next_cursor(),
    );
    if t.restarts() > 0 {
        text.push_str(&format!("\nrestarts: {}", t.restarts()));
    }
    if let Some(escaped) = escaped_text(t) {
        text.push('\n');
        text.push_str(&escaped);
    }
    text
}

pub(super) fn stop_text(t: &Task, now: Now) -> String {
    let mut text = format!("Task {}: {}", t.id, state_phrase_at(t, now));
    if t.escalated() {
        text.push_str(" (it outlived the grace period; SIGKILL was sent to its process group)");
    }
    if let Some(escaped) = escaped_text(t) {
        text.push('\n');
        text.push_str(&escaped);
    }
    text.push_str(&format!(
        "\noutput: {} lines; next_cursor {}",
        t.log.total_lines(),
        t.log.next_cursor()
    ));
    text
}

pub(super) fn logs_text(t: &Task, page: &Page, max_bytes: usize) -> String {
    let mut text = String::new();
    if page.skipped > 0 {
        text.push_str(&format!(
            "({} earlier lines were evicted from the buffer before they were read)\n",
            page.skipped
        ));
    }
    for line in &page.lines {
        push_line_text(&mut text, line);
        text.push('\n');
    }
    if page.lines.is_empty() {
        text.push_str("(no matching output)\n");
    }
    if page.truncated {
        text.push_str(&format!("(cut at max_bytes {max_bytes})\n"));
    }
    text.push_str(&format!(
        "next_cursor: {}; task {} is {}",
        page.next_cursor,
        t.id,
        state_phrase(t)
    ));
    text
}

pub(super) fn list_text(tasks: &[&Task], now: Now) -> String {
    let mut text = if tasks.is_empty() {
        "No tasks.".to_owned()
    } else {
        format!("{} task(s), oldest first:", tasks.len())
    };
    for t in tasks {
        text.push_str(&format!(
            "\n{}{}: {}: {}",
            t.id,
            name_suffix(t),
            state_phrase_at(t, now),
            display_command(t)
        ));
    }
    text
}

pub(super) fn wait_text(
    t: &Task,
    reason: &str,
    line: Option<&Line>,
    waited: Duration,
    next_cursor: u64,
    now: Now,
) -> String {
    let what = match (reason, line) {
        ("matched", Some(line)) => {
            let mut text = "matched ".to_owned();
            push_line_text(&mut text, line);
            text
        }
        ("port_open", _) => "the port is open".to_owned(),
        // The task's own runtime, not the wait's: "killed by SIGTERM after 9.8s".
        ("exited", _) => format!("the task {}", state_phrase_at(t, now)),
        _ => "timed out".to_owned(),
    };
    format!(
        "Task {}: {what}; waited {}; next_cursor {next_cursor}; state {}",
        t.id,
        seconds(waited),
        t.state().as_str()
    )
}

/// The `ready` part of a `start` text.
pub(super) fn ready_text(ready: &Value) -> String {
    match ready["reason"].as_str() {
        Some("matched") => format!("\nReady: {}", ready["line"].as_str().unwrap_or_default()),
        Some("exited") => "\nNot ready: the process exited before `wait_for` matched.".to_owned(),
        _ => {
            "\nNot ready yet: `wait_for` did not match before `wait_timeout_ms`; it keeps running."
                .to_owned()
        }
    }
}

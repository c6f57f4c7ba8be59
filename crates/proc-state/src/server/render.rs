//! How tasks look to a client: the structured fields of results and the compact text a model
//! reads at a glance.

use core::time::Duration;

use crate::log::Line;
use crate::process::{ExitStatus, Stream};
use crate::task::{State, Task};
use crate::time::Now;

/// `[n] text`, with `stderr` and `partial` marked: `[12 stderr] warning: …` (a terminal
/// task's lines are all `tty`: they go unmarked, like stdout's).
pub(super) fn push_line_text(text: &mut String, line: &Line) {
    let marker = match (line.stream, line.partial) {
        (Stream::Stdout | Stream::Tty, false) => "",
        (Stream::Stdout | Stream::Tty, true) => " partial",
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

/// `1.5s`.
pub(super) fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

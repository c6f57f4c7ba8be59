//! How tasks look to a client: the structured fields of results and the compact text a model
//! reads at a glance.

use core::fmt::Write as _;
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
    let _ = write!(text, "[{}{marker}", line.n);
    if let Some(ms) = line.time_ms {
        // The time of day of RFC 3339 (`12:34:56.789`); the structured result has the date.
        // Written in place: `2026-11-28T12:34:56.789Z` loses its date and its `Z`.
        let start = text.len() + 1;
        let _ = write!(text, " {}", crate::time::Rfc3339(ms));
        text.pop();
        text.replace_range(start..start + 11, "");
    }
    let _ = write!(text, "] {}", line.text);
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
    let mut text = String::new();
    push_state_phrase_at(&mut text, t, now);
    text
}

/// [`state_phrase_at`], written into `text`.
pub(super) fn push_state_phrase_at(text: &mut String, t: &Task, now: Now) {
    match t.state() {
        State::Failed => text.push_str(&state_phrase(t)),
        State::Exited => {
            text.push_str(&state_phrase(t));
            text.push_str(" after ");
            push_seconds(text, t.runtime(now));
        }
        state => {
            text.push_str(state.as_str());
            text.push_str(" for ");
            push_seconds(text, t.runtime(now));
            let _ = match t.pid() {
                Some(pid) => write!(text, " (pid {pid})"),
                None => write!(text, " (pid ?)"),
            };
        }
    }
}

/// [`display_command`] and [`name_suffix`], written into `text`.
pub(super) fn push_name_suffix(text: &mut String, t: &Task) {
    if let Some(name) = &t.name {
        let _ = write!(text, " \"{name}\"");
    }
}

/// The command as a person would type it, written into `text`.
pub(super) fn push_command(text: &mut String, t: &Task) {
    text.push_str(&t.command.command);
    for arg in t.command.args.iter().flatten() {
        text.push(' ');
        text.push_str(arg);
    }
}

/// What the task's processes use, as last measured, for a dashboard line: ` · :5173 ·
/// 21.5 MB · cpu 0.4s` (with `listeners`: each socket as `127.0.0.1:5173/tcp`, and the
/// process count). Nothing when nothing was measured.
pub(super) fn push_usage_brief(text: &mut String, t: &Task, listeners: bool) {
    let Some(usage) = t.usage.usage() else {
        return;
    };
    if listeners {
        for l in &usage.listening {
            let _ = match l.address {
                core::net::IpAddr::V6(v6) => write!(text, " · [{v6}]"),
                v4 => write!(text, " · {v4}"),
            };
            let _ = write!(text, ":{}/{}", l.port, l.protocol.as_str());
        }
    } else {
        let mut last = None;
        for l in &usage.listening {
            if last != Some(l.port) {
                let _ = write!(text, " · :{}", l.port);
                last = Some(l.port);
            }
        }
    }
    text.push_str(" · ");
    push_megabytes(text, usage.rss_bytes);
    text.push_str(" · cpu ");
    push_seconds(text, Duration::from_millis(usage.cpu_ms));
    if listeners {
        let _ = write!(
            text,
            " · {} process{}",
            usage.processes,
            if usage.processes == 1 { "" } else { "es" }
        );
    }
}

/// What keeps the task going or ends it, for a dashboard line: ` · restarts 3 (crash loop,
/// next in 4.0s) · idle stop in 9.5s · stopped: max_memory`. Nothing when none applies.
pub(super) fn push_lifecycle_brief(text: &mut String, t: &Task, now: Now) {
    let policy = t.command.options.restart.mode != crate::task::RestartMode::No;
    if t.restarts() > 0 || policy {
        let _ = write!(text, " · restarts {}", t.restarts());
        let mut open = " (";
        if t.supervision.crash_loop() {
            text.push_str(open);
            text.push_str("crash loop");
            open = ", ";
        }
        if let Some(at) = t.next_attempt() {
            text.push_str(open);
            text.push_str("next in ");
            push_seconds(text, at.saturating_duration_since(now.instant));
            open = ", ";
        }
        if t.supervision.exhausted {
            text.push_str(open);
            text.push_str("max_restarts reached");
            open = ", ";
        }
        if open == ", " {
            text.push(')');
        }
    }
    if let Some(at) = t.idle_deadline() {
        text.push_str(" · idle stop in ");
        push_seconds(text, at.saturating_duration_since(now.instant));
    }
    if let Some(cause) = t.stop_cause() {
        text.push_str(" · stopped: ");
        text.push_str(cause.as_str());
    }
}

/// `21.5 MB` (decimal megabytes, rounded down to a tenth).
pub(super) fn push_megabytes(text: &mut String, bytes: u64) {
    let tenths = bytes / 100_000;
    let _ = write!(text, "{}.{} MB", tenths / 10, tenths % 10);
}

/// `1.5s`.
pub(super) fn seconds(d: Duration) -> String {
    let mut text = String::new();
    push_seconds(&mut text, d);
    text
}

/// `1.5s` (rounded to the nearest tenth), written into `text`.
pub(super) fn push_seconds(text: &mut String, d: Duration) {
    let tenths = (d.as_millis() + 50) / 100;
    let _ = write!(text, "{}.{}s", tenths / 10, tenths % 10);
}

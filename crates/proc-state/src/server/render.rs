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

/// What the task's processes use, as last measured, for a dashboard line: ` · :5173 ·
/// 21.5 MB · cpu 0.4s` (with `listeners`: each socket as `127.0.0.1:5173/tcp`, and the
/// process count). Empty when nothing was measured.
pub(super) fn usage_brief(t: &Task, listeners: bool) -> String {
    let Some(usage) = t.usage.usage() else {
        return String::new();
    };
    let mut text = String::new();
    if listeners {
        for l in &usage.listening {
            let address = match l.address {
                core::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            text.push_str(&format!(" · {address}:{}/{}", l.port, l.protocol.as_str()));
        }
    } else {
        let mut ports: Vec<u16> = usage.listening.iter().map(|l| l.port).collect();
        ports.dedup();
        for port in ports {
            text.push_str(&format!(" · :{port}"));
        }
    }
    text.push_str(&format!(
        " · {} · cpu {}",
        megabytes(usage.rss_bytes),
        seconds(Duration::from_millis(usage.cpu_ms))
    ));
    if listeners {
        text.push_str(&format!(
            " · {} process{}",
            usage.processes,
            if usage.processes == 1 { "" } else { "es" }
        ));
    }
    text
}

/// What keeps the task going or ends it, for a dashboard line: ` · restarts 3 (crash loop,
/// next in 4.0s) · idle stop in 9.5s · stopped: max_memory`. Empty when none applies.
pub(super) fn lifecycle_brief(t: &Task, now: Now) -> String {
    let mut text = String::new();
    let policy = t.command.options.restart.mode != crate::task::RestartMode::No;
    if t.restarts() > 0 || policy {
        let mut notes = Vec::new();
        if t.supervision.crash_loop() {
            notes.push("crash loop".to_owned());
        }
        if let Some(at) = t.next_attempt() {
            notes.push(format!(
                "next in {}",
                seconds(at.saturating_duration_since(now.instant))
            ));
        }
        if t.supervision.exhausted {
            notes.push("max_restarts reached".to_owned());
        }
        text.push_str(&format!(" · restarts {}", t.restarts()));
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join(", ")));
        }
    }
    if let Some(at) = t.idle_deadline() {
        text.push_str(&format!(
            " · idle stop in {}",
            seconds(at.saturating_duration_since(now.instant))
        ));
    }
    if let Some(cause) = t.stop_cause() {
        text.push_str(&format!(" · stopped: {}", cause.as_str()));
    }
    text
}

/// `21.5 MB` (decimal megabytes).
pub(super) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `1.5s`.
pub(super) fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

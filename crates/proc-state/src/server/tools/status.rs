//! `status`: everything about one task, with its last lines.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, LINE_OVERHEAD_BYTES, LineOut, MAX_READ_BYTES, Spec, TaskFields, Tool,
    bad_argument, no_config_defaults,
};
use crate::log::Query;
use crate::server::render;
use crate::server::waiters::Kind;
use crate::server::{Pending, Reply, Server, ToolError, ToolResult};
use crate::task::Task;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Task status",
    description: "Everything about one task: state, pid, exit code or signal, times, listening ports, CPU and \
memory, URLs it printed, restarts, output counters with `next_cursor`, and its last `tail` lines of output. \
Example: {\"id\": \"web\", \"tail\": 20}.",
    annotations: Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `status.tail` when not given.
pub const DEFAULT_TAIL: usize = 10;
/// Largest `status.tail` accepted.
pub const MAX_TAIL: usize = 1000;

/// `status` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// How many recent output lines to include.
    #[schemars(range(max = MAX_TAIL), extend("default" = DEFAULT_TAIL))]
    tail: Option<usize>,
}

/// The `status` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    #[serde(flatten)]
    task: TaskFields<'a>,
    tail: Vec<LineOut<'a>>,
    /// A task with stdin or a terminal: its foreground process is blocked reading it (absent
    /// when that cannot be known).
    #[serde(skip_serializing_if = "Option::is_none")]
    input_wanted: Option<bool>,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let tail = args.tail.unwrap_or(DEFAULT_TAIL);
    if tail > MAX_TAIL {
        return Err(bad_argument(
            Tool::Status,
            "tail",
            format_args!("must be at most {MAX_TAIL}"),
        ));
    }
    let key = server.lookup(&args.id, now)?;
    // A live task: first measure it and, if it can be written to, ask whether it waits for
    // input.
    let measured = server.measure(now, key);
    let asked = server.ask_input(now, key);
    if measured.is_some() || asked.is_some() {
        let run = server.tasks.task(key).run();
        let kind = Kind::Status {
            run,
            tail,
            asked,
            measured,
        };
        server.add_waiter(now, key, request.clone(), kind);
        return Ok(Reply::Later);
    }
    Ok(Reply::Tool(status_result(
        request,
        server.tasks.task(key),
        tail,
        now,
        None,
    )))
}

/// The `status` answer for task `t` with its last `tail` lines.
pub(in crate::server) fn status_result(
    request: &Pending,
    t: &Task,
    tail: usize,
    now: Now,
    input_wanted: Option<bool>,
) -> ToolResult {
    let page = t.log.read(&Query {
        since: None,
        tail: Some(tail),
        head: None,
        grep: None,
        stream: None,
        max_bytes: MAX_READ_BYTES,
        line_overhead: LINE_OVERHEAD_BYTES,
        raw: false,
        timestamps: false,
    });
    let mut text = status_text(t, now);
    if input_wanted == Some(true) {
        text.push_str("\nwaiting for input (blocked reading its stdin or terminal)");
    }
    if !page.lines.is_empty() {
        text.push_str(&format!("\n--- last {} lines ---", page.lines.len()));
        for line in &page.lines {
            text.push('\n');
            render::push_line_text(&mut text, line);
        }
    }
    let structured = Structured {
        task: TaskFields::of(t, now),
        tail: page.lines.iter().map(LineOut::from).collect(),
        input_wanted,
    };
    Server::tool_result(request, &structured, text)
}

fn status_text(t: &Task, now: Now) -> String {
    let mut head = format!("Task {}", t.id);
    render::push_name_suffix(&mut head, t);
    head.push_str(": ");
    render::push_state_phrase_at(&mut head, t, now);
    if t.stopped() && t.stop_cause().is_none() {
        head.push_str(" (stopped)");
    }
    render::push_usage_brief(&mut head, t, true);
    render::push_lifecycle_brief(&mut head, t, now);
    let mut text = format!(
        "{head}\ncommand: {} (cwd {})\noutput: {} lines, {} bytes, {} dropped; next_cursor {}",
        render::display_command(t),
        t.command.cwd,
        t.log.total_lines(),
        t.log.total_bytes(),
        t.log.dropped_lines(),
        t.log.next_cursor(),
    );
    if !t.urls.is_empty() {
        text.push_str("\nurls: ");
        text.push_str(&t.urls.iter().collect::<Vec<_>>().join(" "));
    }
    if let Some(escaped) = render::escaped_text(t) {
        text.push('\n');
        text.push_str(&escaped);
    }
    text
}

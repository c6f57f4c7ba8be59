//! `status`: everything about one task, with its last lines.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, LINE_OVERHEAD_BYTES, LineOut, MAX_READ_BYTES, Spec, TaskFields, Tool,
    bad_argument, no_config_defaults,
};
use crate::log::Query;
use crate::server::render;
use crate::server::{Pending, Reply, Server, ToolError};
use crate::task::Task;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Task status",
    description: "Everything about one task: state (starting, running, stopping, exited, failed), pid, exit code or \
signal, start and end times, runtime, restarts, output counters with `next_cursor`, and its last `tail` \
lines of output. \
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
    let t = server.tasks.task(server.tasks.find(&args.id)?);
    let page = t.log.read(&Query {
        since: None,
        tail: Some(tail),
        head: None,
        grep: None,
        stream: None,
        max_bytes: MAX_READ_BYTES,
        line_overhead: LINE_OVERHEAD_BYTES,
        raw: false,
    });
    let mut text = status_text(t, now);
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
    };
    Ok(Reply::Tool(Server::tool_result(request, &structured, text)))
}

fn status_text(t: &Task, now: Now) -> String {
    let mut text = format!(
        "Task {}{}: {}{}\ncommand: {} (cwd {})\noutput: {} lines, {} bytes, {} dropped; next_cursor {}",
        t.id,
        render::name_suffix(t),
        render::state_phrase_at(t, now),
        if t.stopped() { " (stopped)" } else { "" },
        render::display_command(t),
        t.command.cwd,
        t.log.total_lines(),
        t.log.total_bytes(),
        t.log.dropped_lines(),
        t.log.next_cursor(),
    );
    if t.restarts() > 0 {
        text.push_str(&format!("\nrestarts: {}", t.restarts()));
    }
    if let Some(escaped) = render::escaped_text(t) {
        text.push('\n');
        text.push_str(&escaped);
    }
    text
}

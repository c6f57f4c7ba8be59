//! `logs`: a task's output, by cursor, head, tail, pattern or stream.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, LINE_OVERHEAD_BYTES, LineOut, MAX_READ_BYTES, Spec, Tool, bad_argument,
    no_config_defaults, optional_regex,
};
use crate::log::{DEFAULT_MAX_BYTES, Page, Query};
use crate::process::Stream;
use crate::server::render;
use crate::server::{Pending, Reply, Server, ToolError};
use crate::task::{State, Task};
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Read task output",
    description: "Read a task's output (stdout and stderr, interleaved in arrival order). Every line has an absolute \
number `n`; pass the previous result's `next_cursor` as `since` to get only lines printed since, without \
repeats or gaps. With no `since`, `head` or `tail`, returns the last 100 lines. ANSI colours are removed; \
evicted lines are counted in `skipped`. \
Example: {\"id\": \"web\", \"since\": 120, \"grep\": \"error|warn\"}.",
    annotations: Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `logs` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// Cursor: only lines numbered >= since (pass the previous `next_cursor`).
    since: Option<u64>,
    /// Only the last N matching lines.
    tail: Option<usize>,
    /// Only the first N matching lines.
    head: Option<usize>,
    /// Regular expression (Rust regex syntax); keep only matching lines.
    grep: Option<String>,
    #[serde(default)]
    stream: StreamFilter,
    /// Bound on the returned text, each line counting 32 bytes more; cut at line boundaries
    /// and flagged `truncated`.
    #[schemars(range(min = 1, max = MAX_READ_BYTES), extend("default" = DEFAULT_MAX_BYTES))]
    max_bytes: Option<usize>,
    /// Keep ANSI escape sequences.
    #[serde(default)]
    raw: bool,
    /// Give each line the time it arrived (`time`).
    #[serde(default)]
    timestamps: bool,
}

/// Which streams `logs` returns.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StreamFilter {
    Stdout,
    Stderr,
    #[default]
    Both,
}

impl StreamFilter {
    /// The one stream to keep, or `None` for both.
    fn stream(self) -> Option<Stream> {
        match self {
            StreamFilter::Stdout => Some(Stream::Stdout),
            StreamFilter::Stderr => Some(Stream::Stderr),
            StreamFilter::Both => None,
        }
    }
}

/// The `logs` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
    state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    lines: Vec<LineOut<'a>>,
    /// Pass as `since` next time.
    next_cursor: u64,
    /// Requested lines already evicted from the buffer.
    skipped: u64,
    /// `max_bytes` cut the result.
    truncated: bool,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let max_bytes = args.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if !(1..=MAX_READ_BYTES).contains(&max_bytes) {
        return Err(bad_argument(
            Tool::Logs,
            "max_bytes",
            format_args!("must be between 1 and {MAX_READ_BYTES}"),
        ));
    }
    if args.head.is_some() && args.tail.is_some() {
        return Err(ToolError(
            "invalid arguments for `logs`: give `head` or `tail`, not both (use `since` with `head` to read forward from a cursor)".into(),
        ));
    }
    let grep = optional_regex(Tool::Logs, "grep", args.grep.as_deref())?;
    let key = server.lookup(&args.id, now)?;
    let t = server.tasks.task(key);
    let page = t.log.read(&Query {
        since: args.since,
        tail: args.tail,
        head: args.head,
        grep: grep.as_ref(),
        stream: args.stream.stream(),
        max_bytes,
        line_overhead: LINE_OVERHEAD_BYTES,
        raw: args.raw,
        timestamps: args.timestamps,
    });
    let text = logs_text(t, &page, max_bytes);
    let structured = Structured {
        id: &t.id,
        state: t.state(),
        exit_code: t.exit_code(),
        lines: page.lines.iter().map(LineOut::from).collect(),
        next_cursor: page.next_cursor,
        skipped: page.skipped,
        truncated: page.truncated,
    };
    Ok(Reply::Tool(Server::tool_result(request, &structured, text)))
}

fn logs_text(t: &Task, page: &Page, max_bytes: usize) -> String {
    let mut text = String::new();
    if page.skipped > 0 {
        text.push_str(&format!(
            "({} earlier lines were evicted from the buffer before they were read)\n",
            page.skipped
        ));
    }
    for line in &page.lines {
        render::push_line_text(&mut text, line);
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
        render::state_phrase(t)
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_gives_the_default_tail() {
        let said = format!("returns the last {} lines", crate::log::DEFAULT_TAIL_LINES);
        assert!(SPEC.description.contains(&said), "{}", SPEC.description);
    }
}

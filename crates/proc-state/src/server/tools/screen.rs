//! `screen`: what a terminal task's screen shows now.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Annotations, Spec, no_config_defaults};
use crate::server::{Pending, Reply, Server, ToolError};
use crate::terminal::Snapshot;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Show a terminal task's screen",
    description: "The current screen of a task started with `tty: true`, as text (one line per row), with the \
cursor position: what a full-screen program (top, less, vim, a test runner's watch mode) or a prompt shows now; \
`format: \"png\"` adds an image. \
Example: {\"id\": \"repl\"}.",
    annotations: Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `screen` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// png adds an image of the screen (colours, cursor).
    #[serde(default)]
    format: Format,
}

/// How `screen` shows the screen.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Text,
    Png,
}

/// The `screen` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
    /// Every row, top to bottom, trailing blanks trimmed.
    rows: Vec<String>,
    cursor: Cursor,
    /// The program is on the alternate screen (full-screen programs).
    alternate_screen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    size: Size,
}

/// Where the cursor is, from 0.
#[derive(Serialize, JsonSchema)]
struct Cursor {
    row: u16,
    col: u16,
}

/// The terminal's size in cells.
#[derive(Serialize, JsonSchema)]
struct Size {
    rows: u16,
    cols: u16,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let key = server.lookup(&args.id, now)?;
    let t = server.tasks.task(key);
    let Some(screen) = &t.screen else {
        return Err(not_a_terminal(&t.id));
    };
    let Snapshot {
        rows,
        cursor: (row, col),
        alternate_screen,
        title,
        size,
    } = screen.snapshot();
    // The text leaves out the blank rows at the bottom: they cost a model tokens and say nothing.
    let shown = rows
        .iter()
        .rposition(|r| !r.is_empty())
        .map_or(0, |i| i + 1);
    let mut text = format!(
        "Screen of task {} ({}x{}, cursor at row {row}, col {col}{}{}):",
        t.id,
        size.rows,
        size.cols,
        if alternate_screen {
            ", alternate screen"
        } else {
            ""
        },
        title
            .as_deref()
            .map_or_else(String::new, |title| format!(", title {title:?}")),
    );
    for row in rows.iter().take(shown) {
        text.push('\n');
        text.push_str(row);
    }
    let structured = Structured {
        id: &t.id,
        rows,
        cursor: Cursor { row, col },
        alternate_screen,
        title,
        size: Size {
            rows: size.rows,
            cols: size.cols,
        },
    };
    let mut result = Server::tool_result(request, &structured, text);
    if args.format == Format::Png {
        result.png = Some(BASE64_STANDARD.encode(screen.png()));
    }
    Ok(Reply::Tool(result))
}

/// The error for a terminal-only tool on a task with pipes.
pub(super) fn not_a_terminal(id: &str) -> ToolError {
    ToolError(format!(
        "task {id} has no terminal (it was started without `tty: true`); read its output with `logs`"
    ))
}

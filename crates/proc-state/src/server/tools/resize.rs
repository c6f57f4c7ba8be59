//! `resize`: a new window size for a terminal task.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::screen::not_a_terminal;
use super::{Annotations, Spec, Tool, no_config_defaults};
use crate::process::Stdio;
use crate::server::{Pending, Reply, Server, ToolError};
use crate::shared::Output;
use crate::terminal::{MAX_COLS, MAX_ROWS};
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Resize a terminal task",
    description: "Set the terminal size of a task started with `tty: true`; its programs get SIGWINCH and redraw. \
Example: {\"id\": \"top\", \"rows\": 50, \"cols\": 160}.",
    annotations: Annotations {
        read_only: false,
        destructive: false,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `resize` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    #[schemars(range(min = 1, max = MAX_ROWS))]
    rows: u16,
    #[schemars(range(min = 1, max = MAX_COLS))]
    cols: u16,
}

/// The `resize` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
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
    let size = super::window_size(Tool::Resize, args.rows, args.cols)?;
    let Some(task) = server.tasks.get_mut(key) else {
        return Err(ToolError("the task was removed".into()));
    };
    let Some(screen) = &mut task.screen else {
        return Err(not_a_terminal(&task.id));
    };
    screen.resize(size);
    // A later run (restart) starts at this size too.
    task.command.spec.stdio = Stdio::Terminal(size);
    if task.is_live() {
        let run = task.run();
        server.outputs.push_back(Output::Resize { run, size });
    }
    let t = server.tasks.task(key);
    let text = format!("Resized task {} to {}x{}.", t.id, size.rows, size.cols);
    let structured = Structured {
        id: &t.id,
        rows: size.rows,
        cols: size.cols,
    };
    Ok(Reply::Tool(Server::tool_result(request, &structured, text)))
}

//! `list`: every task, oldest first, one line each.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Annotations, Spec, TaskSummary, no_config_defaults};
use crate::server::render;
use crate::server::{Pending, Reply, Server, ToolError};
use crate::task::Task;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "List tasks",
    description: "List the tasks this server knows, oldest first, with id, name, pid, state, exit code or signal, \
command, runtime, ports and memory. Use it to find a task id or name you lost track of. \
Example: {\"state\": \"running\"}.",
    annotations: Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `list` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// `running`: not yet ended (starting, running, stopping); `exited`: ended (exited or
    /// failed); `all`.
    #[serde(default)]
    state: Filter,
}

/// Which tasks `list` shows.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Filter {
    Running,
    Exited,
    #[default]
    All,
}

/// The `list` result: `{tasks: [...]}`, oldest first.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    tasks: Vec<TaskSummary<'a>>,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    // What they use: as last measured, and measured again (without waiting) when older than
    // USAGE_TTL.
    let keys = server.tasks.keys();
    if let Some(inspect) = server.tasks.inspect(&keys, super::USAGE_TTL, now) {
        server.outputs.push_back(inspect);
    }
    let tasks: Vec<&Task> = server
        .tasks
        .iter()
        .map(|(_, t)| t)
        .filter(|t| match args.state {
            Filter::All => true,
            Filter::Running => !t.state().is_ended(),
            Filter::Exited => t.state().is_ended(),
        })
        .collect();
    let text = list_text(&tasks, now);
    let structured = Structured {
        tasks: tasks.iter().map(|t| TaskSummary::of(t, now)).collect(),
    };
    Ok(Reply::Tool(Server::tool_result(request, &structured, text)))
}

fn list_text(tasks: &[&Task], now: Now) -> String {
    let mut text = if tasks.is_empty() {
        "No tasks.".to_owned()
    } else {
        format!("{} task(s), oldest first:", tasks.len())
    };
    for t in tasks {
        text.push('\n');
        text.push_str(&t.id);
        render::push_name_suffix(&mut text, t);
        text.push_str(": ");
        render::push_state_phrase_at(&mut text, t, now);
        render::push_usage_brief(&mut text, t, false);
        render::push_lifecycle_brief(&mut text, t, now);
        text.push_str(": ");
        render::push_command(&mut text, t);
    }
    text
}

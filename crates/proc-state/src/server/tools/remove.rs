//! `remove`: forget an ended task and free its output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Annotations, Spec, no_config_defaults};
use crate::server::{Pending, Reply, Server, ToolError};
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Remove an ended task",
    description: "Forget a task that has ended (exited or failed) and free its output buffer. A running task must be \
stopped first. Example: {\"id\": \"web\"}.",
    annotations: Annotations {
        read_only: false,
        destructive: true,
        idempotent: true,
    },
    config_defaults: no_config_defaults,
};

/// `remove` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
}

/// The `remove` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured {
    id: String,
    removed: bool,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let key = server.lookup(&args.id, now)?;
    let t = server.tasks.task(key);
    if !t.state().is_ended() {
        return Err(ToolError(format!(
            "task {} is {}; stop it first, then remove it",
            t.id,
            t.state().as_str()
        )));
    }
    if !t.escaped.is_settled() {
        return Err(ToolError(format!(
            "task {} has processes that left its process group and are being stopped; `stop` it (or wait), then remove it",
            t.id
        )));
    }
    let id = t.id.clone();
    server.forget(now, key);
    let text = format!("Removed task {id} and freed its output.");
    let structured = Structured { id, removed: true };
    Ok(Reply::Tool(Server::tool_result(request, &structured, text)))
}

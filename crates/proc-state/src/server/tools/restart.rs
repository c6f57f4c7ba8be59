//! `restart`: stop a task if it runs and start it again, keeping its id, name and output.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Annotations, Spec, no_config_defaults};
use crate::server::waiters::Kind;
use crate::server::{Pending, Reply, Server, Shutdown, ToolError};
use crate::task::Progress;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Restart a task",
    description: "Stop a task if it runs (SIGTERM to its group, SIGKILL after the grace period), then start it \
again the same way. Id, name and output buffer stay, so cursors stay valid; `restarts` counts up. With the \
task's `wait_for`, returns once it is ready again. Example: {\"id\": \"web\"}.",
    annotations: Annotations {
        read_only: false,
        destructive: true,
        idempotent: false,
    },
    config_defaults: no_config_defaults,
};

/// `restart` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    if server.shutdown != Shutdown::Serving {
        return Err(ToolError(
            "the server is shutting down; nothing can restart".into(),
        ));
    }
    let key = server.lookup(&args.id, now)?;
    let run = server.tasks.task(key).run();
    let grace = server.config.default_grace;
    let mut pending = false;
    server.with_task(now, key, |task, out| {
        pending = task.restart(grace, now, out);
        Progress::Unchanged
    });
    if pending {
        // Resolved when this run has ended: every restart of one run restarts it once.
        server.add_waiter(now, key, request.clone(), Kind::Restart { run });
    } else if let Some(run) = server.respawn(now, key) {
        let ready = server.ready_watch(key, now);
        server.add_waiter(now, key, request.clone(), Kind::Start { run, ready });
    } else {
        return Err(ToolError("the task could not be restarted".into()));
    }
    Ok(Reply::Later)
}

//! `signal`: one signal to a task's process group, without waiting.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Annotations, Spec, Tool, bad_argument, no_config_defaults};
use crate::process::Signal;
use crate::server::render;
use crate::server::{Output, Pending, Reply, Server, ToolError};
use crate::task::State;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Send a signal to a task",
    description: "Send one signal to a task's whole process group and return at once, without waiting: SIGINT to \
interrupt, SIGHUP to reload, SIGSTOP/SIGCONT to pause and resume. To end a task use `stop`. Example: {\"id\": \"web\", \"signal\": \"SIGHUP\"}.",
    annotations: Annotations {
        read_only: false,
        destructive: true,
        idempotent: false,
    },
    config_defaults: no_config_defaults,
};

/// Signals the `signal` tool accepts.
pub const SIGNALS: [&str; 9] = [
    "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGCONT", "SIGSTOP",
];

/// `signal` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// Signal sent to the whole process group.
    #[schemars(extend("enum" = SIGNALS))]
    signal: String,
}

/// The `signal` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
    signal: String,
    state: State,
}

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let signal = Signal::from_name(&args.signal)
        .filter(|_| SIGNALS.contains(&args.signal.as_str()))
        .ok_or_else(|| {
            bad_argument(
                Tool::Signal,
                "signal",
                format_args!("{:?} is not one of {}", args.signal, SIGNALS.join(", ")),
            )
        })?;
    let key = server.lookup(&args.id, now)?;
    let task = server.tasks.task(key);
    if task.pid().is_none() || task.exit().is_some() || task.state().is_ended() {
        return Err(ToolError(format!(
            "task {} is not running ({}); nothing was sent",
            task.id,
            render::state_phrase(task)
        )));
    }
    let text = format!("Sent {signal} to the process group of task {}.", task.id);
    let structured = Structured {
        id: &task.id,
        signal: signal.name(),
        state: task.state(),
    };
    let result = Server::tool_result(request, &structured, text);
    let run = task.run();
    server.outputs.push_back(Output::Signal { run, signal });
    Ok(Reply::Tool(result))
}

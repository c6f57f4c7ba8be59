//! `write`: bytes to a task's stdin, answered at once with what was taken and what is queued.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use regex::Regex;

use super::DEFAULT_WAIT_MS;
use super::{
    Annotations, LINE_OVERHEAD_BYTES, LineOut, MAX_WAIT_MS, Spec, Tool, millis_arg,
    no_config_defaults, optional_regex,
};
use crate::log::{DEFAULT_MAX_BYTES, Query};
use crate::server::render;
use crate::server::waiters::{Kind, Outcome, Watch};
use crate::server::{Pending, Reply, Server, ToolError, ToolResult};
use crate::stdin::{Closed, Progress, Refused};
use crate::task::{Progress as TaskProgress, Task};
use crate::terminal;
use crate::time::Now;

pub(super) const SPEC: Spec = Spec {
    title: "Write to a task's stdin",
    description: "Write text to the stdin of a task started with `stdin: true` or `tty: true`, and `keys` \
to a tty task. The text is written as is: add \"\\n\" to end a line. Returns once \
written; what the process has not read yet stays queued (`bytes_queued`). `eof: true` closes stdin afterwards. \
With `prompt`, `wait_for` or `quiet_ms` it then waits and returns the output after the write: one call per REPL \
step. Example: {\"id\": \"repl\", \"data\": \"print(6*7)\", \"keys\": [\"Enter\"], \"prompt\": true}.",
    annotations: Annotations {
        read_only: false,
        destructive: false,
        idempotent: false,
    },
    config_defaults: no_config_defaults,
};

/// `write` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// The task's id or its name.
    id: String,
    /// Text written as is (add \n yourself).
    data: Option<String>,
    /// Keys sent after `data` (tty tasks), e.g. ["Enter"], ["Ctrl-C"], ["Up", "Tab"].
    #[serde(default)]
    keys: Vec<String>,
    /// Close stdin after this data, dropping what earlier writes still have queued (tty: send
    /// Ctrl-D).
    #[serde(default)]
    eof: bool,
    /// Then wait until a new output line matches this regex, and return the output.
    wait_for: Option<String>,
    /// Then wait until the prompt the task sat at (its partial line, or the last one it showed)
    /// is back, and return the output.
    #[serde(default)]
    prompt: bool,
    /// Then wait until output pauses this long, and return the output.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    quiet_ms: Option<u64>,
    /// Bound for the wait.
    #[schemars(range(min = 1, max = MAX_WAIT_MS), extend("default" = DEFAULT_WAIT_MS))]
    timeout_ms: Option<u64>,
}

/// The `write` result.
#[derive(Serialize, JsonSchema)]
pub(super) struct Structured<'a> {
    id: &'a str,
    /// Bytes of this write the process's stdin took so far.
    bytes_written: usize,
    /// Bytes of all writes still waiting for the process to read.
    bytes_queued: usize,
    /// With `eof`: queued bytes of earlier writes dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_dropped: Option<usize>,
    /// Where output produced after this write begins; after a wait, where output after the
    /// returned lines begins.
    next_cursor: u64,
    /// With a wait: what ended it.
    #[schemars(extend("enum" = ["matched", "quiet", "exited", "timeout"]))]
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// With a wait: the output after the write.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Vec<LineOut<'a>>>,
    /// With a wait, for a tty task: the screen differs from before the write.
    #[serde(skip_serializing_if = "Option::is_none")]
    screen_changed: Option<bool>,
}

/// What a `write` with a wait condition waits for after its bytes are written.
#[derive(Debug)]
pub(in crate::server) struct Then {
    pub(in crate::server) watch: Watch,
    /// The write's progress once its bytes were settled (`Some` from then on).
    pub(in crate::server) written: Option<Option<Progress>>,
    /// A terminal task's screen rows before the write.
    screen_before: Option<Vec<String>>,
}

/// The terminal's end-of-file character, `VEOF` in termios(3) (Ctrl-D by default): in
/// canonical mode it makes a pending `read` return what was typed, or 0 bytes (end of file) at
/// the start of a line.
const VEOF: u8 = 0x04;

pub(super) fn call(
    server: &mut Server,
    now: Now,
    request: &Pending,
    args: Args,
) -> Result<Reply, ToolError> {
    let key = server.lookup(&args.id, now)?;
    let Some(task) = server.tasks.get_mut(key) else {
        return Err(ToolError("the task was removed".into()));
    };
    if task.state().is_ended() {
        return Err(ToolError(format!(
            "task {} has exited; nothing was written",
            task.id
        )));
    }
    // The partial line the task sits at, read once: the prompt `prompt: true` waits for, and
    // the one a later `prompt` waits for while the task is busy.
    let sitting_at = current_prompt(task);
    let then = then(task, &args, sitting_at.as_deref(), now)?;
    if sitting_at.is_some() {
        task.prompt = sitting_at;
    }
    if args.data.is_none() && args.keys.is_empty() && !args.eof && then.is_none() {
        return Err(ToolError(
            "invalid arguments for `write`: give `data`, `keys` or `eof`".into(),
        ));
    }
    let mut bytes = args.data.unwrap_or_default().into_bytes();
    let mut eof = args.eof;
    if let Some(screen) = &task.screen {
        let application_cursor = screen.application_cursor();
        for name in &args.keys {
            let Some(key) = terminal::key_bytes(name, application_cursor) else {
                return Err(ToolError(format!(
                    "invalid arguments for `write`: unknown key {name:?}; keys are {}, and Ctrl-A to Ctrl-Z",
                    terminal::KEY_NAMES.join(", ")
                )));
            };
            bytes.extend(key);
        }
        // A terminal has no end of input to close: its end-of-file character ends a read.
        if core::mem::take(&mut eof) {
            bytes.push(VEOF);
        }
    } else if !args.keys.is_empty() {
        return Err(ToolError(format!(
            "task {} has no terminal, so it takes no `keys` (start it with `tty: true`); send text with `data`",
            task.id
        )));
    }
    let (segment, dropped) = match task.stdin.push(bytes, eof) {
        Ok(pushed) => pushed,
        Err(refused) => return Err(write_refused(task, refused)),
    };
    let (run, next_cursor) = (task.run(), task.log.next_cursor());
    server
        .waiters
        .queued_write(request.id.clone(), key, segment, &server.tasks);
    server.with_task(now, key, |_, _| TaskProgress::Unchanged);
    server.add_waiter(
        now,
        key,
        request.clone(),
        Kind::Write {
            run,
            segment,
            next_cursor,
            dropped_earlier: dropped,
            then,
        },
    );
    Ok(Reply::Later)
}

/// The wait the arguments ask for after the write, if any: from the output after the write.
fn then(
    task: &Task,
    args: &Args,
    sitting_at: Option<&str>,
    now: Now,
) -> Result<Option<Box<Then>>, ToolError> {
    let wait_for = optional_regex(Tool::Write, "wait_for", args.wait_for.as_deref())?;
    let quiet = match args.quiet_ms {
        None => None,
        ms => Some(millis_arg(Tool::Write, "quiet_ms", ms, 0, MAX_WAIT_MS)?),
    };
    if wait_for.is_none() && !args.prompt && quiet.is_none() {
        return Ok(None);
    }
    let timeout = millis_arg(
        Tool::Write,
        "timeout_ms",
        args.timeout_ms,
        DEFAULT_WAIT_MS,
        MAX_WAIT_MS,
    )?;
    let next_cursor = task.log.next_cursor();
    let watch = if args.prompt {
        if wait_for.is_some() {
            return Err(ToolError(
                "invalid arguments for `write`: give `wait_for` or `prompt`, not both".into(),
            ));
        }
        // The partial line the task sits at completes with this write (its line number is
        // `next_cursor`); the same text as a later partial line is the prompt back. A task that
        // is busy (its output ends with a newline) waits for the prompt it showed last.
        let (prompt, first) = match sitting_at {
            Some(prompt) => (prompt, next_cursor + 1),
            None => match &task.prompt {
                Some(prompt) => (prompt.as_str(), next_cursor),
                None => {
                    return Err(ToolError(format!(
                        "task {} has shown no prompt (a line without a newline) to wait for; use `wait_for` or `quiet_ms`",
                        task.id
                    )));
                }
            },
        };
        let regex = Regex::new(&format!("^{}$", regex::escape(prompt)))
            .map_err(|err| ToolError(format!("the prompt cannot be matched: {err}")))?;
        Watch::new(Some((regex, first)), None, now, timeout).prompt()
    } else {
        Watch::new(wait_for.map(|re| (re, next_cursor)), None, now, timeout)
    };
    Ok(Some(Box::new(Then {
        watch: watch.quiet(quiet),
        written: None,
        screen_before: task.screen.as_ref().map(|s| s.snapshot().rows),
    })))
}

/// The text of the partial line `task` sits at, if its output does not end with a newline.
fn current_prompt(task: &Task) -> Option<String> {
    let page = task.log.read(&Query {
        since: Some(task.log.next_cursor()),
        ..Query::default()
    });
    page.lines
        .into_iter()
        .rev()
        .find(|line| line.partial)
        .map(|line| line.text)
}

/// The answer to a `write` once its bytes are settled: all taken or queued, or some lost
/// (`progress` is `None` when the run ended before its stdin took anything).
pub(in crate::server) fn write_result(
    request: &Pending,
    task: &Task,
    progress: Option<Progress>,
    dropped_earlier: usize,
    next_cursor: u64,
    after: Option<(&Then, &Outcome)>,
) -> ToolResult {
    match progress {
        Some(p) if p.dropped == 0 => {
            let queued = task.stdin.queued();
            let mut text = if p.queued == 0 {
                format!("Wrote {} bytes to task {}'s stdin.", p.written, task.id)
            } else {
                format!(
                    "Task {} took {} bytes so far; {} more are queued and written as it reads.",
                    task.id, p.written, p.queued
                )
            };
            if dropped_earlier > 0 {
                text.push_str(&format!(
                    " Closing stdin dropped {dropped_earlier} bytes earlier writes still had queued."
                ));
            }
            let Some((then, outcome)) = after else {
                text.push_str(&format!(
                    " Output from here on starts at cursor {next_cursor}."
                ));
                let structured = Structured {
                    id: &task.id,
                    bytes_written: p.written,
                    bytes_queued: queued,
                    bytes_dropped: (dropped_earlier > 0).then_some(dropped_earlier),
                    next_cursor,
                    reason: None,
                    output: None,
                    screen_changed: None,
                };
                return Server::tool_result(request, &structured, text);
            };
            // The output after the write, oldest first, within the usual read bound.
            let page = task.log.read(&Query {
                since: Some(next_cursor),
                max_bytes: DEFAULT_MAX_BYTES,
                line_overhead: LINE_OVERHEAD_BYTES,
                ..Query::default()
            });
            let screen_changed = then.screen_before.as_ref().and_then(|before| {
                let now = task.screen.as_ref()?.snapshot().rows;
                Some(now != *before)
            });
            text.push_str(&format!(" Then {}", outcome.reason()));
            if screen_changed == Some(true) {
                text.push_str(" (the screen changed)");
            }
            text.push_str(&format!(
                "; next_cursor {}. Output after the write:",
                page.next_cursor
            ));
            for line in &page.lines {
                text.push('\n');
                render::push_line_text(&mut text, line);
            }
            if page.truncated {
                text.push_str("\n(more: read on with logs from next_cursor)");
            }
            let structured = Structured {
                id: &task.id,
                bytes_written: p.written,
                bytes_queued: queued,
                bytes_dropped: (dropped_earlier > 0).then_some(dropped_earlier),
                next_cursor: page.next_cursor,
                reason: Some(outcome.reason()),
                output: Some(page.lines.iter().map(LineOut::from).collect()),
                screen_changed,
            };
            Server::tool_result(request, &structured, text)
        }
        Some(p) => {
            let why = match task.stdin.closed() {
                Some(Closed::ByProcess) => "the process closed its stdin",
                Some(Closed::Ended) | None => "the process ended",
                Some(Closed::ByEof) => "a later `write` with `eof` dropped them",
            };
            ToolResult::error(format!(
                "task {}: {} of this write's bytes were written and {} were not: {why}",
                task.id, p.written, p.dropped
            ))
        }
        None => ToolResult::error(format!(
            "task {} ended before its stdin took the data; it may not have been read",
            task.id
        )),
    }
}

/// Why a `write` was refused, for the model.
fn write_refused(task: &Task, refused: Refused) -> ToolError {
    let id = &task.id;
    ToolError(match refused {
        Refused::NotPiped => format!(
            "task {id} was started without `stdin: true`, so it has no stdin to write to; start it again with `stdin: true`"
        ),
        Refused::Closed(Closed::ByEof) => format!(
            "task {id} had its stdin closed by an earlier `write` with `eof: true`; nothing was written"
        ),
        Refused::Closed(Closed::ByProcess) => {
            format!("task {id} closed its stdin; nothing was written")
        }
        Refused::Closed(Closed::Ended) => format!("task {id} has exited; nothing was written"),
        Refused::Full { queued, limit } => format!(
            "task {id} is not reading its stdin: {queued} bytes are still queued and the queue holds at most {limit}; nothing was written. Wait for it to read, or send `write` with `eof: true` to drop what is queued"
        ),
    })
}

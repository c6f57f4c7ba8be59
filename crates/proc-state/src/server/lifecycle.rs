//! Inputs about tasks' processes, and what follows the end of a run: exit notifications,
//! restarts, and the server's shutdown.
//!
//! Every change to a task goes through [`Server::with_task`], which carries out the task's
//! actions, re-arms the task's timer and moves on whoever waits on it, so none of those can be
//! forgotten by one code path.

use super::{Output, Server, Shutdown, ToolError};
use crate::process::{EscapedProcess, ExitStatus, RunId, Signal, Stream, Usage};
use crate::task::{Action, Progress, Question, StopCause, Task};
use crate::time::{Instant, Now};

impl Server {
    pub(super) fn spawned(&mut self, now: Now, run: RunId, pid: u32) {
        self.with_run(now, run, |task, out| task.on_spawned(pid, now, out));
    }

    pub(super) fn spawn_failed(&mut self, now: Now, run: RunId, error: String) {
        self.with_run(now, run, |task, out| task.on_spawn_failed(error, now, out));
    }

    pub(super) fn task_output(&mut self, now: Now, run: RunId, stream: Stream, bytes: &[u8]) {
        if let Some(key) = self.tasks.ingest(run, stream, bytes, now) {
            self.output_arrived(now, key);
            self.progress_task_waiters(now, key);
        }
    }

    pub(super) fn stream_closed(&mut self, now: Now, run: RunId, stream: Stream) {
        self.with_run(now, run, |task, out| task.on_stream_closed(stream, out));
    }

    pub(super) fn exited(&mut self, now: Now, run: RunId, status: ExitStatus, signalled: bool) {
        let drain = self.config.exit_drain;
        self.with_run(now, run, |task, out| {
            task.on_exited(status, signalled, now, drain, out)
        });
    }

    pub(super) fn stdin_written(&mut self, now: Now, run: RunId, result: Result<usize, String>) {
        self.with_run(now, run, |task, _| {
            task.stdin.written(result.map_err(drop));
            Progress::Unchanged
        });
    }

    pub(super) fn stdin_ready(&mut self, now: Now, run: RunId) {
        self.with_run(now, run, |task, _| {
            task.stdin.ready();
            Progress::Unchanged
        });
    }

    pub(super) fn escaped_found(&mut self, now: Now, run: RunId, found: Vec<EscapedProcess>) {
        if let Some(key) = self.tasks.of_current_run(run) {
            self.with_task(now, key, |task, out| task.on_escaped(found, out));
        }
    }

    pub(super) fn escaped_exited(&mut self, now: Now, run: RunId, pid: u32) {
        if let Some(key) = self.tasks.of_current_run(run) {
            self.with_task(now, key, |task, out| {
                task.on_escaped_exited(pid, out);
                Progress::Unchanged
            });
        }
    }

    /// The driver's answer to `Output::QueryInput`: kept with the task, and the waiters that
    /// wanted it are answered.
    pub(super) fn input_answered(&mut self, now: Now, run: RunId, wanted: Option<bool>) {
        let Some(key) = self.tasks.of_current_run(run) else {
            return;
        };
        if let Some(task) = self.tasks.get_mut(key) {
            task.input.answered(wanted);
        }
        self.progress_task_waiters(now, key);
    }

    /// Asks the driver whether task `key`'s foreground process waits for input, unless a
    /// question is out already; returns when the question (this one or the one out) was asked,
    /// or `None` when there is nothing to ask about (no stdin or terminal, or no process).
    pub(super) fn ask_input(&mut self, now: Now, key: u64) -> Option<Question> {
        let task = self.tasks.get_mut(key)?;
        if !task.interactive() || !task.is_live() || task.state().is_ended() {
            return None;
        }
        // A question out (not one the driver left unanswered too long) is answered for all.
        if let Some(question) = task.input.asked
            && now.instant
                < question
                    .at
                    .saturating_add(super::waiters::INPUT_QUERY_TIMEOUT)
        {
            return Some(question);
        }
        let question = task.input.ask(now.instant);
        let run = task.run();
        self.outputs.push_back(Output::QueryInput { run });
        Some(question)
    }

    /// The driver's answer to an `Output::Inspect`: kept with each task (a run it asked about
    /// and did not report has no process left), and the waiters that wanted it move on.
    pub(super) fn inspected(&mut self, now: Now, usage: Vec<(RunId, Usage)>) {
        for (key, usage) in self.tasks.inspected(usage) {
            self.with_task(now, key, |task, out| {
                task.on_usage(usage, now, out);
                Progress::Unchanged
            });
        }
    }

    /// The task a tool call names by id or name; the call refers to it, so its idle lease
    /// starts over.
    pub(super) fn lookup(&mut self, reference: &str, now: Now) -> Result<u64, ToolError> {
        let key = self.tasks.find(reference)?;
        if let Some(task) = self.tasks.get_mut(key) {
            task.touch(now.instant);
        }
        Ok(key)
    }

    /// Asks the driver to measure task `key` unless a measurement younger than
    /// [`USAGE_FRESH`](super::tools::USAGE_FRESH) is at hand; returns since when a measurement counts as the answer (the
    /// one asked for now, or the one out already), or `None` when there is nothing to wait for
    /// (a fresh one, or no live process).
    pub(super) fn measure(&mut self, now: Now, key: u64) -> Option<Instant> {
        let task = self.tasks.get(key)?;
        if !task.is_live() {
            return None;
        }
        if let Some(asked) = task.usage.asked {
            return Some(asked);
        }
        let inspect = self.tasks.inspect(&[key], super::tools::USAGE_FRESH, now)?;
        self.outputs.push_back(inspect);
        Some(now.instant)
    }

    pub(super) fn task_timeout(&mut self, now: Now, key: u64) {
        self.with_task(now, key, |task, out| task.on_timeout(now, out));
    }

    /// Applies `f` to the task of `run`, if the core still knows the run.
    pub(super) fn with_run(
        &mut self,
        now: Now,
        run: RunId,
        f: impl FnOnce(&mut Task, &mut Vec<Action>) -> Progress,
    ) {
        if let Some(key) = self.tasks.of_run(run) {
            self.with_task(now, key, f);
        }
    }

    /// Applies `f` to task `key`, then carries out its actions (and feeds its stdin), re-arms
    /// its timer, follows up a finished run, and moves on whoever waits on it.
    pub(super) fn with_task(
        &mut self,
        now: Now,
        key: u64,
        f: impl FnOnce(&mut Task, &mut Vec<Action>) -> Progress,
    ) {
        let Some(applied) = self.tasks.apply(key, f) else {
            return;
        };
        self.outputs.extend(applied.commands);
        if applied.progress == Progress::Finished {
            self.run_finished(now, key);
        }
        self.settle(now, key, applied.run);
        self.progress_task_waiters(now, key);
    }

    /// The run of task `key` ended and was released: tell whoever listens.
    fn run_finished(&mut self, now: Now, key: u64) {
        if self
            .tasks
            .get(key)
            .is_some_and(|t| t.command.options.notify_on_exit)
        {
            self.notify_exit(key, now);
        }
        self.resource_changed(now, key, true);
    }

    /// Once task `key`'s run `old` has ended and its escaped processes are gone: start it again
    /// if the latest request was a `restart` (never once the server is shutting down), and
    /// resolve the `restart` requests that waited on `old`.
    fn settle(&mut self, now: Now, key: u64, old: RunId) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        if !task.is_settled() {
            return;
        }
        let new = if task.take_restart() {
            self.respawn(now, key)
        } else {
            None
        };
        self.restarts_resolved(now, key, old, new);
    }

    /// Starts the ended task `key` again as a new run; `None` if it is not ended (or gone).
    pub(super) fn respawn(&mut self, now: Now, key: u64) -> Option<RunId> {
        if self.shutdown != Shutdown::Serving {
            return None;
        }
        let (run, spawn) = self.tasks.respawn(key, now)?;
        self.outputs.push_back(spawn);
        Some(run)
    }

    /// Keeps the task count under `max_tasks` by forgetting the oldest ended task.
    pub(super) fn make_room(&mut self, now: Now) -> Result<(), ToolError> {
        if self.tasks.len() < self.config.max_tasks {
            return Ok(());
        }
        match self.tasks.oldest_settled() {
            Some(key) => {
                self.forget(now, key);
                Ok(())
            }
            None => Err(ToolError(format!(
                "too many tasks: all {} are running; stop some first",
                self.config.max_tasks
            ))),
        }
    }

    /// Removes an ended task and everything that refers to it; whoever still waited on it is
    /// told so.
    pub(super) fn forget(&mut self, now: Now, key: u64) {
        self.tasks.remove(key);
        self.subscriptions.forget(key);
        self.session.owed.updated.remove(&key);
        self.waiters.forget_writes_of(key);
        self.resources_list_changed(now);
        self.progress_task_waiters(now, key);
    }

    /// Stops every task (SIGTERM, then SIGKILL after the shutdown grace); nothing starts or
    /// restarts from now on.
    pub(super) fn begin_shutdown(&mut self, now: Now) {
        if self.shutdown != Shutdown::Serving {
            return;
        }
        self.shutdown = Shutdown::Stopping;
        let grace = self.config.shutdown_grace;
        let keys = self.tasks.keys();
        for key in keys {
            self.with_task(now, key, |task, out| {
                task.stop(Signal::Term, grace, StopCause::Shutdown, now, out);
                Progress::Unchanged
            });
        }
    }

    /// SIGTERM/SIGINT: the first begins the shutdown, the second kills every group at once.
    pub(super) fn terminate(&mut self, now: Now) {
        match self.shutdown {
            Shutdown::Serving => self.begin_shutdown(now),
            Shutdown::Stopping => {
                self.shutdown = Shutdown::Killing;
                let keys = self.tasks.keys();
                for key in keys {
                    self.with_task(now, key, |task, out| {
                        task.kill_now(now, out);
                        Progress::Unchanged
                    });
                }
            }
            Shutdown::Killing | Shutdown::Done => {}
        }
    }
}

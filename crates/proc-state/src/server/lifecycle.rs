//! Inputs about tasks' processes, and what follows the end of a run: exit notifications,
//! restarts, and the server's shutdown.
//!
//! Every change to a task goes through [`Server::with_task`], which carries out the task's
//! actions, re-arms the task's timer and moves on whoever waits on it, so none of those can be
//! forgotten by one code path.

use super::{Output, Server, Shutdown, Timer};
use crate::escaped;
use crate::process::{EscapedProcess, ExitStatus, RunId, Signal, Stream};
use crate::stdin::StdinAction;
use crate::task::{Action, Progress, Task};
use crate::time::Now;

impl Server {
    pub(super) fn spawned(&mut self, now: Now, run: RunId, pid: u32) {
        self.with_run(now, run, |task, out| task.on_spawned(pid, now, out));
    }

    pub(super) fn spawn_failed(&mut self, now: Now, run: RunId, error: String) {
        self.with_run(now, run, |task, out| task.on_spawn_failed(error, now, out));
    }

    pub(super) fn task_output(&mut self, now: Now, run: RunId, stream: Stream, bytes: &[u8]) {
        let Some(&key) = self.runs.get(&run) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        let before = task.log.allocated_bytes();
        task.on_output(stream, bytes);
        let after = task.log.allocated_bytes();
        self.output_bytes = self.output_bytes + after - before;
        self.keep_total_budget();
        self.output_arrived(now, key);
        self.progress_task_waiters(now, key);
    }

    /// Keeps the output of all tasks within [`Config::output_budget_total_bytes`]: while it
    /// is over, the oldest lines of the task holding the most memory are evicted (so the
    /// largest pay first, and equal floods end up with equal shares). Evicted lines count in
    /// that task's `dropped_lines`, like its own budget's evictions.
    ///
    /// Memory is freed a block at a time, so a task may lose a little more than the excess.
    /// A task with no complete line left (only its partial lines, which cannot go) is passed
    /// over for the next largest; the total stays above the budget only when every task is in
    /// that state, by at most their partial lines.
    ///
    /// [`Config::output_budget_total_bytes`]: super::Config::output_budget_total_bytes
    pub(super) fn keep_total_budget(&mut self) {
        let total = self.config.output_budget_total_bytes;
        let mut exhausted = Vec::new();
        while self.output_bytes > total {
            let Some((&key, largest)) = self
                .tasks
                .iter_mut()
                .filter(|(key, _)| !exhausted.contains(*key))
                .max_by_key(|(_, task)| task.log.allocated_bytes())
            else {
                return;
            };
            let before = largest.log.allocated_bytes();
            let excess = self.output_bytes - total;
            let keep = largest.log.retained_cost().saturating_sub(excess);
            // Each turn evicts at least one line, or passes the task over for good.
            largest.log.evict_to(keep);
            let after = largest.log.allocated_bytes();
            self.output_bytes = self.output_bytes + after - before;
            if largest.log.retained_cost() == 0 {
                exhausted.push(key);
            }
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
        if let Some(key) = self.task_of(run) {
            self.with_task(now, key, |task, out| task.on_escaped(found, out));
        }
    }

    pub(super) fn escaped_exited(&mut self, now: Now, run: RunId, pid: u32) {
        if let Some(key) = self.task_of(run) {
            self.with_task(now, key, |task, out| {
                task.on_escaped_exited(pid, out);
                Progress::Unchanged
            });
        }
    }

    /// The task whose current run is `run`, released or not (escaped processes outlive the
    /// release of their run; a task starts a new run only once they are gone).
    fn task_of(&self, run: RunId) -> Option<u64> {
        if let Some(&key) = self.runs.get(&run) {
            return Some(key);
        }
        self.tasks
            .iter()
            .find(|(_, t)| t.run() == run)
            .map(|(key, _)| *key)
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
        if let Some(&key) = self.runs.get(&run) {
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
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        let mut actions = Vec::new();
        let before = task.log.allocated_bytes();
        let progress = f(task, &mut actions);
        task.pump_stdin(&mut actions);
        let after = task.log.allocated_bytes();
        let (run, pid, deadline) = (task.run(), task.pid(), task.next_deadline());
        self.output_bytes = self.output_bytes + after - before;
        self.keep_total_budget();
        self.carry_out(run, pid, actions);
        self.timers.set(Timer::Task(key), deadline);
        if progress == Progress::Finished {
            self.run_finished(now, key);
        }
        self.settle(now, key, run);
        self.progress_task_waiters(now, key);
    }

    fn carry_out(&mut self, run: RunId, pid: Option<u32>, actions: Vec<Action>) {
        for action in actions {
            let output = match action {
                Action::Signal(signal) => Output::Signal { run, signal },
                Action::Stdin(StdinAction::Write(data)) => Output::WriteStdin { run, data },
                Action::Stdin(StdinAction::Close) => Output::CloseStdin { run },
                Action::Escaped(escaped::Action::Sweep) => match pid {
                    Some(pgid) => Output::Sweep { run, pgid },
                    None => continue,
                },
                Action::Escaped(escaped::Action::Signal(signal)) => {
                    Output::SignalEscaped { run, signal }
                }
                Action::Release => {
                    self.runs.remove(&run);
                    Output::Release { run }
                }
            };
            self.outputs.push_back(output);
        }
    }

    /// The run of task `key` ended and was released: tell whoever listens.
    fn run_finished(&mut self, now: Now, key: u64) {
        if self
            .tasks
            .get(&key)
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
        let Some(task) = self.tasks.get_mut(&key) else {
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
        let run = RunId(self.next_run);
        let task = self.tasks.get_mut(&key)?;
        if !task.respawn(run, now) {
            return None;
        }
        self.next_run += 1;
        let spec = task.command.spec.clone();
        self.runs.insert(run, key);
        self.outputs.push_back(Output::Spawn { run, spec });
        self.timers.set(Timer::Task(key), None);
        Some(run)
    }

    /// Stops every task (SIGTERM, then SIGKILL after the shutdown grace); nothing starts or
    /// restarts from now on.
    pub(super) fn begin_shutdown(&mut self, now: Now) {
        if self.shutdown != Shutdown::Serving {
            return;
        }
        self.shutdown = Shutdown::Stopping;
        let grace = self.config.shutdown_grace;
        let keys: Vec<u64> = self.tasks.keys().copied().collect();
        for key in keys {
            self.with_task(now, key, |task, out| {
                task.stop(Signal::Term, grace, now, out);
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
                let keys: Vec<u64> = self.tasks.keys().copied().collect();
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

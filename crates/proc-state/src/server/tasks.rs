//! [`Tasks`], the task registry: a sub-machine of the server that owns every task not yet
//! removed, the runs they own, their ids, the memory of all their output, and their timers
//! (one deadline per task: escalation, max runtime, drain).
//!
//! A change to a task goes through [`Tasks::apply`], which runs the task's own transition,
//! feeds its stdin, keeps the total output budget, re-arms the task's deadline and turns the
//! task's narrow actions into the driver commands ([`Output`]) of its run, releasing the run
//! when the task says so. What follows for the rest of the server (answers, notifications, a
//! respawn) is the server's to route.

use std::collections::{BTreeMap, VecDeque};

use super::ToolError;
use crate::escaped;
use crate::process::{RunId, SpawnSpec, Stream, Usage};
use crate::shared::{IdGenerator, Output};
use crate::stdin::StdinAction;
use crate::task::{Action, Progress, Task};
use core::time::Duration;

use crate::time::{Instant, Now};
use crate::timers::Timers;

/// Every task not yet removed, oldest first (keys only grow), and the runs they own.
pub(super) struct Tasks {
    all: BTreeMap<u64, Task>,
    next_task: u64,
    /// The task of every run not yet released.
    runs: BTreeMap<RunId, u64>,
    next_run: u64,
    ids: IdGenerator,
    /// One deadline per task.
    timers: Timers<u64>,
    /// Memory held by every task's output ([`LogBuffer::allocated_bytes`] summed), kept within
    /// `total_budget`.
    ///
    /// [`LogBuffer::allocated_bytes`]: crate::log::LogBuffer::allocated_bytes
    output_bytes: usize,
    total_budget: usize,
    /// The runs of each `Output::Inspect` not answered yet, oldest first (answers come in
    /// order).
    inspections: VecDeque<Vec<RunId>>,
}

/// What one [`Tasks::apply`] led to.
pub(super) struct Applied {
    /// The task's current run (after the change).
    pub(super) run: RunId,
    /// What the task's transition said.
    pub(super) progress: Progress,
    /// Commands for the driver, in order.
    pub(super) commands: Vec<Output>,
}

impl Tasks {
    /// No tasks yet; task ids come from `ids`, and all output together is kept within
    /// `total_budget` bytes.
    pub(super) fn new(ids: IdGenerator, total_budget: usize) -> Self {
        Self {
            all: BTreeMap::new(),
            next_task: 0,
            runs: BTreeMap::new(),
            next_run: 0,
            ids,
            timers: Timers::new(),
            output_bytes: 0,
            total_budget,
            inspections: VecDeque::new(),
        }
    }

    pub(super) fn get(&self, key: u64) -> Option<&Task> {
        self.all.get(&key)
    }

    /// For changes that neither print nor need a deadline re-armed (a `write` queueing bytes);
    /// everything else goes through [`Tasks::apply`].
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut Task> {
        self.all.get_mut(&key)
    }

    /// The task `key`; it must exist (a key just found).
    pub(super) fn task(&self, key: u64) -> &Task {
        &self.all[&key]
    }

    /// Every task, oldest first.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Task)> {
        self.all.iter().map(|(key, task)| (*key, task))
    }

    pub(super) fn keys(&self) -> Vec<u64> {
        self.all.keys().copied().collect()
    }

    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    /// Some run is not released yet.
    pub(super) fn has_runs(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Memory held by the output of every task, in bytes.
    pub(super) fn output_bytes(&self) -> usize {
        self.output_bytes
    }

    /// The task of `run`, while the run is not released.
    pub(super) fn of_run(&self, run: RunId) -> Option<u64> {
        self.runs.get(&run).copied()
    }

    /// The task whose current run is `run`, released or not (escaped processes outlive the
    /// release of their run; a task starts a new run only once they are gone).
    pub(super) fn of_current_run(&self, run: RunId) -> Option<u64> {
        self.of_run(run).or_else(|| {
            self.all
                .iter()
                .find(|(_, t)| t.run() == run)
                .map(|(key, _)| *key)
        })
    }

    /// Finds a task by id, or else by name (the newest task with that name).
    pub(super) fn find(&self, reference: &str) -> Result<u64, ToolError> {
        let by_id = self.iter().find(|(_, t)| t.id == reference);
        let by_name = || {
            self.iter()
                .rev()
                .find(|(_, t)| t.name.as_deref() == Some(reference))
        };
        by_id.or_else(by_name).map(|(k, _)| k).ok_or_else(|| {
            ToolError(format!(
                "no task with id or name {reference:?}; `list` shows the tasks there are"
            ))
        })
    }

    /// Refuses a `start` name that is empty, or that is another task's id or the name of a
    /// task that has not ended.
    pub(super) fn check_name(&self, name: &str) -> Result<(), ToolError> {
        if name.is_empty() {
            return Err(ToolError(
                "invalid arguments for `start`: `name` is empty".into(),
            ));
        }
        match self
            .all
            .values()
            .find(|t| t.id == name || (t.name.as_deref() == Some(name) && !t.state().is_ended()))
        {
            Some(other) => Err(ToolError(format!(
                "the name {name:?} is taken by task {} ({}); pick another name or stop that task first",
                other.id,
                other.state().as_str()
            ))),
            None => Ok(()),
        }
    }

    /// The oldest task that has ended and has nothing left to settle.
    pub(super) fn oldest_settled(&self) -> Option<u64> {
        self.iter().find(|(_, t)| t.is_settled()).map(|(k, _)| k)
    }

    /// A new id from the generator, unique among tasks' ids and names. A generator that keeps
    /// clashing (a broken one; nanoid clashes once in billions) gets a numeric suffix.
    pub(super) fn fresh_id(&mut self) -> String {
        let taken = |all: &BTreeMap<u64, Task>, id: &str| {
            id.is_empty()
                || all
                    .values()
                    .any(|t| t.id == id || t.name.as_deref() == Some(id))
        };
        let mut id = String::new();
        for _ in 0..16 {
            id = (self.ids)();
            if !taken(&self.all, &id) {
                return id;
            }
        }
        (self.next_task..)
            .map(|n| format!("{id}-{n}"))
            .find(|candidate| !taken(&self.all, candidate))
            .unwrap_or(id)
    }

    /// Adds the task `make` builds for its first run, and the command that spawns it.
    pub(super) fn add(&mut self, make: impl FnOnce(RunId) -> Task) -> (u64, Output) {
        let run = RunId(self.next_run);
        self.next_run += 1;
        let key = self.next_task;
        self.next_task += 1;
        let task = make(run);
        let spawn = Output::Spawn {
            run,
            spec: task.command.spec.clone(),
        };
        self.all.insert(key, task);
        self.runs.insert(run, key);
        (key, spawn)
    }

    /// Starts the ended task `key` again as a new run: the run and its spawn command, or
    /// `None` if it has not ended (or is gone).
    pub(super) fn respawn(&mut self, key: u64, now: Now) -> Option<(RunId, Output)> {
        let run = RunId(self.next_run);
        let task = self.all.get_mut(&key)?;
        if !task.respawn(run, now) {
            return None;
        }
        self.next_run += 1;
        let spec: SpawnSpec = task.command.spec.clone();
        self.runs.insert(run, key);
        self.timers.set(key, None);
        Some((run, Output::Spawn { run, spec }))
    }

    /// Forgets task `key` and frees its output.
    pub(super) fn remove(&mut self, key: u64) -> Option<Task> {
        let task = self.all.remove(&key)?;
        self.output_bytes -= task.log.allocated_bytes();
        self.timers.set(key, None);
        Some(task)
    }

    /// Output of `run` on `stream`: stored in its task's buffer within the budgets. The task,
    /// if the run is not released.
    pub(super) fn ingest(
        &mut self,
        run: RunId,
        stream: Stream,
        bytes: &[u8],
        now: Now,
    ) -> Option<u64> {
        let key = self.of_run(run)?;
        let task = self.all.get_mut(&key)?;
        let before = task.log.allocated_bytes();
        task.on_output(stream, bytes, now);
        let after = task.log.allocated_bytes();
        self.output_bytes = self.output_bytes + after - before;
        self.keep_total_budget();
        Some(key)
    }

    /// Applies `f` to task `key`, then feeds its stdin, keeps the budgets, re-arms its
    /// deadline and turns its actions into commands; `None` if the task is gone.
    pub(super) fn apply(
        &mut self,
        key: u64,
        f: impl FnOnce(&mut Task, &mut Vec<Action>) -> Progress,
    ) -> Option<Applied> {
        let task = self.all.get_mut(&key)?;
        let mut actions = Vec::new();
        let before = task.log.allocated_bytes();
        let progress = f(task, &mut actions);
        task.pump_stdin(&mut actions);
        let after = task.log.allocated_bytes();
        let (run, pid, deadline) = (task.run(), task.pid(), task.next_deadline());
        self.output_bytes = self.output_bytes + after - before;
        self.keep_total_budget();
        self.timers.set(key, deadline);
        let commands = actions
            .into_iter()
            .filter_map(|action| self.command(run, pid, action))
            .collect();
        Some(Applied {
            run,
            progress,
            commands,
        })
    }

    /// The driver command for one of a task's actions on its run.
    fn command(&mut self, run: RunId, pid: Option<u32>, action: Action) -> Option<Output> {
        Some(match action {
            Action::Signal(signal) => Output::Signal { run, signal },
            Action::Stdin(StdinAction::Write(data)) => Output::WriteStdin { run, data },
            Action::Stdin(StdinAction::Close) => Output::CloseStdin { run },
            Action::Escaped(escaped::Action::Sweep) => Output::Sweep { run, pgid: pid? },
            Action::Escaped(escaped::Action::Signal(signal)) => {
                Output::SignalEscaped { run, signal }
            }
            Action::Inspect => self.inspect_runs(vec![(run, pid?)])?,
            Action::Release => {
                self.runs.remove(&run);
                Output::Release { run }
            }
        })
    }

    /// Asks the driver to measure the live tasks among `keys` whose last measurement is older
    /// than `fresh` (and that have no measurement out already): one `Output::Inspect`, or
    /// `None` when there is nothing to ask.
    pub(super) fn inspect(&mut self, keys: &[u64], fresh: Duration, now: Now) -> Option<Output> {
        let mut runs = Vec::new();
        for key in keys {
            let Some(task) = self.all.get_mut(key) else {
                continue;
            };
            let (Some(pid), true) = (task.pid(), task.is_live()) else {
                continue;
            };
            let recent = task
                .usage
                .last
                .as_ref()
                .is_some_and(|(_, at)| now.instant.saturating_duration_since(*at) < fresh);
            if recent || task.usage.asked.is_some() {
                continue;
            }
            task.usage.asked = Some(now.instant);
            runs.push((task.run(), pid));
        }
        self.inspect_runs(runs)
    }

    fn inspect_runs(&mut self, runs: Vec<(RunId, u32)>) -> Option<Output> {
        if runs.is_empty() {
            return None;
        }
        self.inspections
            .push_back(runs.iter().map(|(run, _)| *run).collect());
        Some(Output::Inspect { runs })
    }

    /// The answer to the oldest `Output::Inspect`: each run asked about, with its usage
    /// (`None`: not measured), and the task whose current run it still is.
    pub(super) fn inspected(&mut self, usage: Vec<(RunId, Usage)>) -> Vec<(u64, Option<Usage>)> {
        let Some(asked) = self.inspections.pop_front() else {
            return Vec::new();
        };
        let mut usage: BTreeMap<RunId, Usage> = usage.into_iter().collect();
        asked
            .into_iter()
            .filter_map(|run| Some((self.of_run(run)?, usage.remove(&run))))
            .collect()
    }

    /// Keeps the output of all tasks within the total budget: while it is over, the oldest
    /// lines of the task holding the most memory are evicted (so the largest pay first, and
    /// equal floods end up with equal shares). Evicted lines count in that task's
    /// `dropped_lines`, like its own budget's evictions.
    ///
    /// Memory is freed a block at a time, so a task may lose a little more than the excess.
    /// A task with no complete line left (only its partial lines, which cannot go) is passed
    /// over for the next largest; the total stays above the budget only when every task is in
    /// that state, by at most their partial lines.
    fn keep_total_budget(&mut self) {
        let total = self.total_budget;
        let mut exhausted = Vec::new();
        while self.output_bytes > total {
            let Some((&key, largest)) = self
                .all
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

    /// The earliest deadline of any task.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// A task whose deadline is at or before `now`, earliest first (its deadline is cleared:
    /// the task's timeout re-arms it).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        self.timers.pop_due(now)
    }
}

//! The task registry's operations on the server: finding a task by id or name, making room,
//! fresh ids, and forgetting a task with everything that refers to it.

use super::{Server, Timer, ToolError};
use crate::task::Task;
use crate::time::Now;

impl Server {
    pub(super) fn check_name(&self, name: &str) -> Result<(), ToolError> {
        if name.is_empty() {
            return Err(ToolError(
                "invalid arguments for `start`: `name` is empty".into(),
            ));
        }
        match self
            .tasks
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

    /// Keeps the task count under `max_tasks` by forgetting the oldest ended task.
    pub(super) fn make_room(&mut self, now: Now) -> Result<(), ToolError> {
        if self.tasks.len() < self.config.max_tasks {
            return Ok(());
        }
        let oldest_ended = self
            .tasks
            .iter()
            .find(|(_, t)| t.is_settled())
            .map(|(k, _)| *k);
        match oldest_ended {
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
        if let Some(task) = self.tasks.remove(&key) {
            self.output_bytes -= task.log.allocated_bytes();
        }
        self.subscriptions.remove(&key);
        self.timers.set(Timer::Task(key), None);
        self.timers.set(Timer::Update(key), None);
        self.owed.updated.remove(&key);
        self.queued_writes.retain(|_, (task, _)| *task != key);
        self.resources_list_changed(now);
        self.progress_task_waiters(now, key);
    }

    /// A new id from the generator, unique among tasks' ids and names. A generator that keeps
    /// clashing (a broken one; nanoid clashes once in billions) gets a numeric suffix.
    pub(super) fn fresh_id(&mut self) -> String {
        let taken = |server: &Server, id: &str| {
            id.is_empty()
                || server
                    .tasks
                    .values()
                    .any(|t| t.id == id || t.name.as_deref() == Some(id))
        };
        let mut id = String::new();
        for _ in 0..16 {
            id = (self.ids)();
            if !taken(self, &id) {
                return id;
            }
        }
        (self.next_task..)
            .map(|n| format!("{id}-{n}"))
            .find(|candidate| !taken(self, candidate))
            .unwrap_or(id)
    }

    /// Finds a task by id, or else by name (the newest task with that name).
    pub(super) fn find(&self, reference: &str) -> Result<u64, ToolError> {
        let by_id = self.tasks.iter().find(|(_, t)| t.id == reference);
        let by_name = || {
            self.tasks
                .iter()
                .rev()
                .find(|(_, t)| t.name.as_deref() == Some(reference))
        };
        by_id.or_else(by_name).map(|(k, _)| *k).ok_or_else(|| {
            ToolError(format!(
                "no task with id or name {reference:?}; `list` shows the tasks there are"
            ))
        })
    }

    pub(super) fn task(&self, key: u64) -> &Task {
        &self.tasks[&key]
    }

    /// Keeps the map of cancellable `write`s to those whose bytes may still be queued.
    pub(super) fn prune_queued_writes(&mut self) {
        if self.queued_writes.len() <= 1024 {
            return;
        }
        let tasks = &self.tasks;
        self.queued_writes.retain(|_, (key, segment)| {
            tasks.get(key).is_some_and(|t| t.stdin.is_queued(*segment))
        });
    }
}

//! The driver's table of live runs: what the core's `Spawn`, `Signal` and `Release` outputs do,
//! and how SIGCHLD turns into `Exited` inputs.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::ChildStdin;

use nix::unistd::Pid;
use proc_state::{ExitStatus, RunId, Signal, SpawnSpec, Stream};
use smol::channel::Sender;
use smol::{LocalExecutor, Task};

use crate::event_loop::Event;
use crate::pipes::{self, Pool};
use crate::process;

/// One spawned process, from `Spawn` until `Release`.
struct Run {
    /// Also the process group id; stays reserved until we reap it in [`Runs::release`].
    pid: Pid,
    /// `Exited` was reported for it (the leader is a zombie now).
    exited: bool,
    /// The write end of its stdin, for [`proc_state::StdinMode::Piped`]; closed on release.
    _stdin: Option<ChildStdin>,
    /// The stdout and stderr pumps; dropping them cancels them and closes the pipes.
    _pumps: [Task<()>; 2],
}

/// Every run the core has not released yet, plus the output pumps that feed the event loop.
pub(crate) struct Runs<'ex> {
    executor: &'ex LocalExecutor<'static>,
    events: Sender<Event>,
    pool: Pool,
    live: BTreeMap<RunId, Run>,
    /// Released before they exited (a contract breach of the core): killed, reaped when they
    /// exit.
    orphans: Vec<Pid>,
}

impl<'ex> Runs<'ex> {
    /// An empty table whose pumps run on `executor`, read into `pool` and send to `events`.
    pub(crate) fn new(executor: &'ex LocalExecutor<'static>, events: Sender<Event>, pool: Pool) -> Self {
        Self {
            executor,
            events,
            pool,
            live: BTreeMap::new(),
            orphans: Vec::new(),
        }
    }

    /// Whether `run` was spawned and not released: events about other runs are stale.
    pub(crate) fn is_live(&self, run: RunId) -> bool {
        self.live.contains_key(&run)
    }

    /// Spawns `spec` for `run` (see [`process::spawn`]) and starts pumping its stdout and
    /// stderr. Returns the pid, which is also the process group id.
    ///
    /// # Errors
    /// The reason, for people, when the process could not be started.
    pub(crate) fn spawn(&mut self, run: RunId, spec: &SpawnSpec) -> Result<u32, String> {
        if self.live.contains_key(&run) {
            return Err(format!("internal error: {run} was spawned twice"));
        }
        let child = process::spawn(spec)?;
        let pumps = [
            (Stream::Stdout, OwnedFd::from(child.stdout)),
            (Stream::Stderr, OwnedFd::from(child.stderr)),
        ]
        .map(|(stream, pipe)| {
            self.executor.spawn(pipes::pump(
                run,
                stream,
                pipe,
                self.pool.clone(),
                self.events.clone(),
            ))
        });
        self.live.insert(
            run,
            Run {
                pid: child.pid,
                exited: false,
                _stdin: child.stdin,
                _pumps: pumps,
            },
        );
        // pid > 0 for a child, so it fits.
        Ok(child.pid.as_raw().unsigned_abs())
    }

    /// Sends `signal` to `run`'s process group; nothing for a run that was released or never
    /// started. Failures other than "already gone" are reported on stderr.
    pub(crate) fn signal(&self, run: RunId, signal: Signal) {
        let Some(entry) = self.live.get(&run) else {
            return;
        };
        if let Err(err) = process::signal_group(entry.pid, signal) {
            eprintln!(
                "proc-smol: cannot send {signal} to process group {} of {run}: {err}",
                entry.pid
            );
        }
    }

    /// After SIGCHLD: every live run whose process has exited since the last call, with its
    /// status, once per run, in run order. The processes are not reaped (waitid `WNOWAIT`).
    pub(crate) fn collect_exits(&mut self) -> Vec<(RunId, ExitStatus)> {
        self.orphans
            .retain(|&pid| matches!(process::try_reap(pid), Ok(false)));
        let mut exits = Vec::new();
        for (&run, entry) in self.live.iter_mut().filter(|(_, e)| !e.exited) {
            match process::exit_status(entry.pid) {
                Ok(None) => {}
                Ok(Some(status)) => {
                    entry.exited = true;
                    exits.push((run, status));
                }
                Err(err) => {
                    // Not our child any more (something else in this process reaped it, or set
                    // SIGCHLD to SIG_IGN): it is gone but its status is lost. Report exit code
                    // -1, which no real exit has (waitid(2) reports 0..=255), so the core does
                    // not wait for it forever.
                    eprintln!(
                        "proc-smol: cannot wait for process {} of {run}: {err}",
                        entry.pid
                    );
                    entry.exited = true;
                    exits.push((run, ExitStatus::Code(-1)));
                }
            }
        }
        exits
    }

    /// Forgets `run`: stops its pumps, closes its pipes and reaps its process, which frees its
    /// pid and process group id. Nothing for an unknown run (e.g. one that failed to spawn).
    pub(crate) fn release(&mut self, run: RunId) {
        let Some(entry) = self.live.remove(&run) else {
            return;
        };
        self.dispose(run, entry);
    }

    /// Releases every run still in the table, killing the process groups of those still
    /// running, and reaps them (blocking). For the end of the server: no process it started
    /// may outlive it.
    pub(crate) fn shutdown(&mut self) {
        for (run, entry) in std::mem::take(&mut self.live) {
            self.dispose(run, entry);
        }
        for pid in std::mem::take(&mut self.orphans) {
            let _ = process::reap(pid);
        }
    }

    fn dispose(&mut self, run: RunId, entry: Run) {
        let (pid, exited) = (entry.pid, entry.exited);
        // Cancels the pumps and closes our ends of its pipes.
        drop(entry);
        let still_running = if exited {
            Ok(false)
        } else {
            process::exit_status(pid).map(|status| status.is_none())
        };
        match still_running {
            Ok(false) => {
                if let Err(err) = process::reap(pid) {
                    eprintln!("proc-smol: cannot reap process {pid} of {run}: {err}");
                }
            }
            Ok(true) => {
                eprintln!(
                    "proc-smol: {run} was released while process {pid} still runs: \
                     killing its process group"
                );
                let _ = process::signal_group(pid, Signal::Kill);
                // Never block the loop on it: reap it after a later SIGCHLD (or at shutdown).
                self.orphans.push(pid);
            }
            // Not our child any more: nothing to reap.
            Err(_) => {}
        }
    }
}

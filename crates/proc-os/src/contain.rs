//! Keeping every process a task starts within reach, and ending them all when the server dies.
//!
//! Mechanisms, strongest first (each is used when available; [`Containment::describe`] says
//! which are in force):
//!
//! - **cgroup v2**: where the server runs in a delegated, writable cgroup v2 subtree, every run
//!   is started in a cgroup of its own ([`crate::cgroup`]); `SIGKILL` to a run's escaped
//!   processes is also `cgroup.kill`, which reaches processes that left the process group *and*
//!   cleared their environment, and the watchdog kills the server's whole cgroup.
//! - **an inherited tag**: every task gets `PROC_MCP_TAG=<server pid>.<start time>.<run>` in its
//!   environment, which its descendants inherit, so those that left the process group (setsid,
//!   double fork) are found through `/proc` ([`crate::tree::Scanner`]) and stopped through
//!   verified pidfds, never by a pid that could have been reused.
//! - **child subreaper** (prctl(2) `PR_SET_CHILD_SUBREAPER`): orphans of the tasks are
//!   re-parented to the server rather than to init, and reaped by it.
//! - **a watchdog** ([`crate::watchdog`]): one process per server that notices the server's
//!   death (`kill -9`, a crash) by end-of-file on a pipe and kills every watched process group,
//!   the server's cgroup and every process tagged by the server; at its start it also kills what
//!   servers that died before left behind.
//!
//! Finding a run's processes that left its process group (a *sweep*) reads `/proc` or a
//! cgroup: [`Containment::sweep`] does it at once, on the driver's loop, for the core's
//! `Sweep`; [`Containment::sweep_plan`] says what to look for, so that it can be done later on
//! another thread ([`SweepPlan::run`], as an inspection of what runs use does).
//!
//! Library users get the tag only ([`ContainOptions::default`]); the `proc-mcp` binary turns
//! everything on. Subreaping in particular is process-wide: only a process that is nothing but
//! a server should ask for it (it would reap children that other code in the process waits
//! for).

use std::path::PathBuf;

/// What [`Containment`] may use; see the [module docs](self).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ContainOptions {
    /// Run the watchdog: this executable with [`crate::watchdog::WATCHDOG_ARG`] (the server's
    /// own, e.g. `/proc/self/exe`, whose `main` calls
    /// [`crate::watchdog::run_if_requested`]).
    pub watchdog: Option<PathBuf>,
    /// Put every run in a cgroup of its own when the server can manage cgroup v2.
    pub cgroups: bool,
    /// Become a child subreaper and reap the tasks' orphans.
    pub subreaper: bool,
}

impl ContainOptions {
    /// Everything on, with `watchdog` as the watchdog's executable: what a server process
    /// wants.
    pub fn all(watchdog: PathBuf) -> Self {
        Self {
            watchdog: Some(watchdog),
            cgroups: true,
            subreaper: true,
        }
    }
}

#[cfg(target_os = "linux")]
pub use linux::{Containment, SweepPlan};

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::fd::{AsFd as _, OwnedFd};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use proc_state::RunId;

    use super::ContainOptions;
    use crate::cgroup::{self, Cgroup};
    use crate::process::SpawnPlacement;
    use crate::tree::{self, Instance, Scanner, TAG_VAR, TaggedProcess};
    use crate::watchdog::Watchdog;

    /// Servers started in this process so far: each gets a range of tag run ids of its own, so
    /// that two servers in one process (tests) never find each other's processes.
    static SESSIONS: AtomicU64 = AtomicU64::new(0);

    /// Tag run ids per session: run `n` of session `s` is tagged `s << 40 | n`.
    const SESSION_SHIFT: u32 = 40;

    /// Most empty cgroups kept for reuse.
    const FREE_CGROUPS: usize = 64;

    /// A cgroup for runs, with its directory and `cgroup.procs` open for spawning into it.
    struct Slot {
        cgroup: Cgroup,
        dir: OwnedFd,
        procs: OwnedFd,
        /// `cgroup.kill` was used on it: it is never used again. (Some kernels kill at birth
        /// every child created with `CLONE_INTO_CGROUP` in a cgroup killed before: its kill
        /// sequence no longer matches the creator's.)
        killed: bool,
    }

    /// How long a clean exit waits for the watchdog to acknowledge.
    const DISARM_TIMEOUT: Duration = Duration::from_secs(2);

    /// One server's containment: its identity for tags, its cgroups, its watchdog.
    pub struct Containment {
        instance: Option<Instance>,
        session: u64,
        scanner: Option<Scanner>,
        server_cgroup: Option<Cgroup>,
        /// The cgroup of each run that has one (until it is empty again).
        run_cgroups: BTreeMap<RunId, Slot>,
        /// Empty cgroups to use again: a cgroup that held processes before takes a new one far
        /// faster than a new cgroup (no creation, removal or first-use setup in the kernel).
        free_cgroups: Vec<Slot>,
        /// Cgroups made so far (they are named `slot-<n>`).
        slots: u64,
        watchdog: Option<Watchdog>,
        watchdog_exe: Option<PathBuf>,
        /// Live runs' process groups, to watch again with a new watchdog.
        groups: BTreeMap<RunId, i32>,
        subreaper: bool,
        /// Why the cgroup mechanism is not in force, when it was asked for.
        cgroup_unavailable: Option<String>,
    }

    impl Containment {
        /// Sets up what `options` ask for. Whatever cannot be set up is reported on stderr
        /// and left out (the tag always works where `/proc` does).
        pub fn start(options: &ContainOptions) -> Self {
            let instance = Instance::current()
                .map_err(|err| eprintln!("proc-mcp: cannot read this process's start time: {err}"))
                .ok();
            let scanner = Scanner::new()
                .map_err(|err| eprintln!("proc-mcp: cannot open /proc: {err}"))
                .ok();
            let subreaper = options.subreaper
                && tree::set_child_subreaper()
                    .map_err(|err| eprintln!("proc-mcp: cannot become a child subreaper: {err}"))
                    .is_ok();
            let mut cgroup_unavailable = None;
            let server_cgroup = match (&instance, options.cgroups) {
                (Some(instance), true) => match cgroup::detect() {
                    Ok(cgroups) => {
                        let _ = cgroups.remove_stale();
                        cgroups
                            .create_server(instance)
                            .map_err(|err| cgroup_unavailable = Some(err.to_string()))
                            .ok()
                    }
                    Err(reason) => {
                        cgroup_unavailable = Some(reason);
                        None
                    }
                },
                _ => None,
            };
            let watchdog = match (&options.watchdog, &instance) {
                (Some(exe), Some(instance)) => {
                    let parent = server_cgroup.as_ref().map(Cgroup::path);
                    Watchdog::spawn(exe, instance, parent)
                        .map_err(|err| eprintln!("proc-mcp: cannot start the watchdog: {err}"))
                        .ok()
                }
                _ => None,
            };
            Self {
                instance,
                session: SESSIONS.fetch_add(1, Ordering::Relaxed),
                scanner,
                server_cgroup,
                run_cgroups: BTreeMap::new(),
                free_cgroups: Vec::new(),
                slots: 0,
                watchdog,
                watchdog_exe: options.watchdog.clone(),
                groups: BTreeMap::new(),
                subreaper,
                cgroup_unavailable,
            }
        }

        /// One sentence on what is in force, for people (and the MCP `instructions`).
        pub fn describe(&self) -> String {
            let mut parts = Vec::new();
            if self.server_cgroup.is_some() {
                parts.push("a cgroup v2 per task (cgroup.kill)".to_owned());
            }
            if self.instance.is_some() {
                parts.push(format!("an inherited {TAG_VAR} tag"));
            }
            if self.subreaper {
                parts.push("child subreaping".to_owned());
            }
            if self.watchdog.is_some() {
                parts.push("a watchdog that ends every task if the server is killed".to_owned());
            }
            let mut text = if parts.is_empty() {
                "Process containment: process groups only.".to_owned()
            } else {
                format!("Process containment: process groups, {}.", parts.join(", "))
            };
            if let Some(reason) = &self.cgroup_unavailable {
                text.push_str(&format!(" (No cgroups: {reason}.)"));
            }
            text
        }

        /// The process id of the watchdog, which must never be reaped as an orphan.
        pub fn watchdog_pid(&self) -> Option<i32> {
            self.watchdog.as_ref().map(Watchdog::pid)
        }

        fn tag_run(&self, run: RunId) -> u64 {
            (self.session << SESSION_SHIFT) | (run.0 & ((1 << SESSION_SHIFT) - 1))
        }

        /// The variable that tags `run`'s processes.
        pub fn tag(&self, run: RunId) -> Option<(String, String)> {
            let instance = self.instance.as_ref()?;
            Some((TAG_VAR.to_owned(), instance.tag(self.tag_run(run))))
        }

        /// Gives `run` an empty cgroup of its own (one used before if there is one), where the
        /// spawn places the task: see [`Containment::placement`].
        pub fn prepare(&mut self, run: RunId) {
            let Some(server) = &self.server_cgroup else {
                return;
            };
            let slot = match self.free_cgroups.pop() {
                Some(slot) => slot,
                None => {
                    let made = server
                        .create_child(&format!("slot-{}", self.slots))
                        .and_then(|cgroup| {
                            Ok(Slot {
                                dir: cgroup.open_dir()?,
                                procs: cgroup.open_procs()?,
                                cgroup,
                                killed: false,
                            })
                        });
                    match made {
                        Ok(slot) => {
                            self.slots += 1;
                            slot
                        }
                        Err(err) => {
                            eprintln!("proc-mcp: cannot create a cgroup for {run}: {err}");
                            return;
                        }
                    }
                }
            };
            self.run_cgroups.insert(run, slot);
        }

        /// Where to spawn `run`: in its cgroup, if [`Containment::prepare`] gave it one.
        pub fn placement(&self, run: RunId) -> SpawnPlacement<'_> {
            self.run_cgroups
                .get(&run)
                .map_or_else(SpawnPlacement::default, |slot| {
                    SpawnPlacement::in_cgroup_dir(slot.dir.as_fd(), slot.procs.as_fd())
                })
        }

        /// `run` could not be spawned: its cgroup is free again.
        pub fn failed(&mut self, run: RunId) {
            self.remove_cgroup_if_empty(run);
        }

        /// `run` was spawned as process group `pgid`.
        pub fn spawned(&mut self, run: RunId, pgid: i32) {
            self.groups.insert(run, pgid);
            if let Some(watchdog) = &mut self.watchdog {
                let _ = watchdog.watch_group(pgid);
            }
        }

        /// `run` is about to be released (its leader reaped): its pgid may be reused, so the
        /// watchdog must forget it first.
        pub fn releasing(&mut self, run: RunId) {
            if let Some(pgid) = self.groups.remove(&run)
                && let Some(watchdog) = &mut self.watchdog
            {
                let _ = watchdog.unwatch_group(pgid);
            }
            self.remove_cgroup_if_empty(run);
        }

        /// Every process of one of `runs` (with its process group) that is not in that run's
        /// process group: the members of the run's cgroup where it has one (which finds even
        /// processes that cleared their environment, and costs a read of one file), else the
        /// processes carrying the run's tag (one scan of `/proc` for all such runs). This is
        /// [`Containment::sweep_plan`] carried out with the containment's own scanner.
        pub fn sweep(&mut self, runs: &BTreeMap<RunId, u32>) -> Vec<(RunId, TaggedProcess)> {
            let Some(plan) = self.sweep_plan(runs) else {
                return Vec::new();
            };
            let Some(scanner) = &mut self.scanner else {
                return Vec::new();
            };
            plan.run(scanner, |_| true)
        }

        /// What a sweep of `runs` (with their process groups) needs to know, to be carried out
        /// later, elsewhere, with a [`Scanner`] of the caller's (the driver's inspections run
        /// off its loop): the instance, and each run's cgroup or tag. `None` when nothing can
        /// be found (this process's identity, hence the tag, is unknown).
        pub fn sweep_plan(&self, runs: &BTreeMap<RunId, u32>) -> Option<SweepPlan> {
            let instance = self.instance?;
            let mut plan = SweepPlan {
                instance,
                runs: runs.clone(),
                cgroups: Vec::new(),
                by_tag: BTreeMap::new(),
            };
            for &run in runs.keys() {
                let tag_run = self.tag_run(run);
                match self.run_cgroups.get(&run) {
                    Some(slot) => plan.cgroups.push((run, tag_run, slot.cgroup.clone())),
                    None => {
                        plan.by_tag.insert(tag_run, run);
                    }
                }
            }
            Some(plan)
        }

        /// `SIGKILL` for everything in `run`'s cgroup, if it has one.
        pub fn kill_cgroup(&mut self, run: RunId) {
            if let Some(slot) = self.run_cgroups.get_mut(&run) {
                let _ = slot.cgroup.kill();
                slot.killed = true;
            }
        }

        /// Every escaped process of a released `run` is gone: its cgroup, once empty, is free
        /// for another run (or removed, beyond [`FREE_CGROUPS`] free ones).
        pub fn remove_cgroup_if_empty(&mut self, run: RunId) {
            if self.groups.contains_key(&run) {
                return;
            }
            let empty = self
                .run_cgroups
                .get(&run)
                .is_some_and(|slot| slot.cgroup.procs().is_ok_and(|pids| pids.is_empty()));
            if !empty {
                return;
            }
            if let Some(slot) = self.run_cgroups.remove(&run) {
                if !slot.killed && self.free_cgroups.len() < FREE_CGROUPS {
                    self.free_cgroups.push(slot);
                } else {
                    let _ = slot.cgroup.remove();
                }
            }
        }

        /// After SIGCHLD: reaps the tasks' orphans (never a run leader: `keep` says which
        /// those are, nor the watchdog), and replaces a watchdog that died.
        pub fn child_exited(&mut self, mut keep: impl FnMut(i32) -> bool) {
            let watchdog = self.watchdog_pid();
            if self.subreaper {
                let _ = tree::reap_orphans(|pid| Some(pid) == watchdog || keep(pid));
            }
            let died = match &mut self.watchdog {
                Some(watchdog) => matches!(watchdog.try_reap(), Ok(Some(_))),
                None => false,
            };
            if died {
                eprintln!("proc-mcp: the watchdog died; starting a new one");
                self.watchdog = None;
                if let (Some(exe), Some(instance)) = (&self.watchdog_exe, &self.instance) {
                    let parent = self.server_cgroup.as_ref().map(Cgroup::path);
                    self.watchdog = Watchdog::spawn(exe, instance, parent).ok();
                    if let Some(watchdog) = &mut self.watchdog {
                        for pgid in self.groups.values() {
                            let _ = watchdog.watch_group(*pgid);
                        }
                    }
                }
            }
        }

        /// A clean exit: every task was stopped. Removes the cgroups and dismisses the
        /// watchdog.
        pub fn finish(mut self) {
            let runs: BTreeSet<RunId> = self.run_cgroups.keys().copied().collect();
            for run in runs {
                self.kill_cgroup(run);
            }
            self.free_cgroups.clear();
            if let Some(server) = self.server_cgroup.take() {
                let _ = server.kill();
                let _ = server.wait_empty(Duration::from_secs(1));
                let _ = server.remove_tree();
            }
            if let Some(watchdog) = self.watchdog.take()
                && let Err(err) = watchdog.disarm(DISARM_TIMEOUT)
            {
                eprintln!("proc-mcp: the watchdog did not take its leave: {err}");
            }
        }
    }

    /// A sweep to carry out later ([`Containment::sweep_plan`]): which runs, with their
    /// process groups, and where their escaped processes are looked for (a cgroup's
    /// `cgroup.procs`, or the tag through `/proc`). It holds paths and numbers only, so it can
    /// be sent to another thread; a run released meanwhile is looked for all the same (its
    /// cgroup may hold another run by then), so what is found is only as current as the run.
    #[derive(Clone, Debug)]
    pub struct SweepPlan {
        instance: Instance,
        /// Every run, with its process group.
        runs: BTreeMap<RunId, u32>,
        /// The runs that have a cgroup: their tag run id and their cgroup.
        cgroups: Vec<(RunId, u64, Cgroup)>,
        /// The others, by tag run id.
        by_tag: BTreeMap<u64, RunId>,
    }

    impl SweepPlan {
        /// Carries out the sweep with `scanner` (see [`Containment::sweep`]): every process of
        /// a run that is not in the run's process group, described as [`Scanner`] describes
        /// it. `consider(pid)` is asked first about each candidate: a process it rejects is
        /// not read at all (a caller that knows it is in a run's group saves the reads).
        /// A run whose cgroup cannot be read (removed meanwhile) is looked for by its tag.
        pub fn run(
            &self,
            scanner: &mut Scanner,
            mut consider: impl FnMut(i32) -> bool,
        ) -> Vec<(RunId, TaggedProcess)> {
            let mut found = Vec::new();
            let mut by_tag = self.by_tag.clone();
            for (run, tag_run, cgroup) in &self.cgroups {
                match cgroup.procs() {
                    Ok(pids) => found.extend(
                        pids.into_iter()
                            .filter(|&pid| consider(pid))
                            .filter_map(|pid| scanner.describe(pid, self.instance, *tag_run))
                            .map(|process| (*run, process)),
                    ),
                    Err(_) => {
                        by_tag.insert(*tag_run, *run);
                    }
                }
            }
            if !by_tag.is_empty() {
                let instance = self.instance;
                found.extend(
                    scanner
                        .scan_where(&mut consider, |theirs, tag_run| {
                            *theirs == instance && by_tag.contains_key(&tag_run)
                        })
                        .into_iter()
                        .filter_map(|process| Some((*by_tag.get(&process.run)?, process))),
                );
            }
            found.retain(|(run, process)| {
                self.runs
                    .get(run)
                    .is_some_and(|&pgid| i64::from(process.pgid) != i64::from(pgid))
            });
            found
        }
    }
}

//! The processes a task started that left its process group (a child that called setsid(2),
//! a daemon's double fork): found by the driver on request ([`Action::Sweep`]), stopped with
//! the task's signal, grace and `SIGKILL` like the group, and reported.
//!
//! [`Escaped`] owns the list for one task, its stop sequence and its two timers (when `SIGKILL`
//! follows, and how long after it a survivor is declared). It emits [`Action`]s for the task to
//! pass on and never answers anyone: the server asks [`Escaped::is_settled`].

use core::time::Duration;
use std::collections::BTreeMap;

use crate::process::{EscapedProcess, Signal};
use crate::time::{Instant, Now};

/// How long after `SIGKILL` an escaped process may take to be reported gone before it is
/// declared a survivor (it is in uninterruptible sleep, or not ours to kill).
pub const KILL_SETTLE: Duration = Duration::from_millis(500);

/// Most escaped processes listed per task; the driver is asked to stop all of them regardless.
pub const MAX_LISTED: usize = 256;

/// What the task must ask of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Look for the run's escaped processes and report them.
    Sweep,
    /// Send this signal to every escaped process of the run the driver holds.
    Signal(Signal),
}

/// Where one escaped process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Found, not signalled yet.
    Running,
    /// Sent this signal; not gone yet.
    Signalled(Signal),
    /// Gone.
    Exited,
    /// Still there [`KILL_SETTLE`] after `SIGKILL`.
    Survived,
}

impl Fate {
    /// As the tools spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fate::Running => "running",
            Fate::Signalled(_) => "stopping",
            Fate::Exited => "exited",
            Fate::Survived => "survived_sigkill",
        }
    }

    fn is_over(self) -> bool {
        matches!(self, Fate::Exited | Fate::Survived)
    }
}

/// One escaped process, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escapee {
    /// Its pid.
    pub pid: u32,
    /// Its command line, shortened, for people.
    pub command: String,
    /// Where it stands.
    pub fate: Fate,
}

/// A stop of the escaped processes under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    signal: Signal,
    /// `SIGKILL` follows at this time (`None` once sent).
    kill_at: Option<Instant>,
    /// After `SIGKILL`: whoever is left at this time survived it.
    settle_at: Option<Instant>,
}

/// One task's escaped processes. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Escaped {
    listed: BTreeMap<u32, Escapee>,
    /// Found beyond [`MAX_LISTED`].
    unlisted: u64,
    /// A sweep was asked for and not answered yet.
    sweeping: bool,
    stop: Option<Stop>,
}

impl Escaped {
    /// The escaped processes found, by pid.
    pub fn listed(&self) -> impl Iterator<Item = &Escapee> {
        self.listed.values()
    }

    /// How many were found beyond the listed ones.
    pub fn unlisted(&self) -> u64 {
        self.unlisted
    }

    /// Nothing more will happen here: no sweep is under way and every escaped process found is
    /// gone or survived `SIGKILL`.
    pub fn is_settled(&self) -> bool {
        !self.sweeping && self.listed.values().all(|e| e.fate.is_over())
    }

    /// Whether any escaped process found is still alive (as far as is known).
    pub fn any_alive(&self) -> bool {
        self.listed.values().any(|e| !e.fate.is_over())
    }

    /// Asks the driver to look for escaped processes (once at a time).
    pub fn sweep(&mut self, out: &mut Vec<Action>) {
        if !self.sweeping {
            self.sweeping = true;
            out.push(Action::Sweep);
        }
    }

    /// The driver's answer to a sweep: the escaped processes it found that it had not
    /// reported before. Those are signalled at once if a stop is under way.
    pub fn on_found(&mut self, found: Vec<EscapedProcess>, out: &mut Vec<Action>) {
        self.sweeping = false;
        let mut new = false;
        for process in found {
            if self.listed.contains_key(&process.pid) {
                continue;
            }
            if self.listed.len() >= MAX_LISTED {
                self.unlisted += 1;
                continue;
            }
            new = true;
            self.listed.insert(
                process.pid,
                Escapee {
                    pid: process.pid,
                    command: process.command,
                    fate: Fate::Running,
                },
            );
        }
        if new && let Some(stop) = self.stop {
            // The signal goes to every escaped process the driver holds; re-sending it to the
            // ones signalled before is harmless.
            let signal = if stop.kill_at.is_none() {
                Signal::Kill
            } else {
                stop.signal
            };
            self.signal_all(signal, out);
        }
    }

    /// An escaped process is gone. When, during a stop, the last one known is gone, the driver
    /// is asked to look again: what they started while being stopped (a daemon that keeps
    /// forking) was not seen yet, and the stop is not over while it lives.
    pub fn on_exited(&mut self, pid: u32, out: &mut Vec<Action>) {
        let Some(escapee) = self.listed.get_mut(&pid) else {
            return;
        };
        escapee.fate = Fate::Exited;
        if self.stop.is_some() && !self.any_alive() {
            self.sweep(out);
        }
    }

    /// Stops the escaped processes: `signal` now, `SIGKILL` after `grace` (counted from
    /// `started`, so that they share the group's deadline). A second stop may only make things
    /// faster. Processes found later get the same sequence.
    pub fn stop(
        &mut self,
        signal: Signal,
        grace: Duration,
        started: Instant,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let deadline = started.saturating_add(grace);
        match &mut self.stop {
            None => {
                let kill_now = signal == Signal::Kill || deadline <= now.instant;
                self.stop = Some(Stop {
                    signal,
                    kill_at: (!kill_now).then_some(deadline),
                    settle_at: kill_now.then(|| now.instant.saturating_add(KILL_SETTLE)),
                });
                self.signal_all(if kill_now { Signal::Kill } else { signal }, out);
            }
            Some(stop) => match stop.kill_at {
                Some(_) if signal == Signal::Kill || deadline <= now.instant => {
                    stop.kill_at = None;
                    stop.settle_at = Some(now.instant.saturating_add(KILL_SETTLE));
                    self.signal_all(Signal::Kill, out);
                }
                Some(at) => stop.kill_at = Some(at.min(deadline)),
                None => {}
            },
        }
    }

    /// The earliest deadline of the escaped processes' stop.
    pub fn next_deadline(&self) -> Option<Instant> {
        let stop = self.stop?;
        if !self.any_alive() {
            return None;
        }
        stop.kill_at.or(stop.settle_at)
    }

    /// Fires the deadlines that passed; early calls are no-ops.
    pub fn on_timeout(&mut self, now: Now, out: &mut Vec<Action>) {
        let Some(stop) = &mut self.stop else {
            return;
        };
        if stop.kill_at.is_some_and(|at| at <= now.instant) {
            stop.kill_at = None;
            stop.settle_at = Some(now.instant.saturating_add(KILL_SETTLE));
            if self.any_alive() {
                self.signal_all(Signal::Kill, out);
            }
        } else if stop.settle_at.is_some_and(|at| at <= now.instant) {
            stop.settle_at = None;
            for escapee in self.listed.values_mut() {
                if !escapee.fate.is_over() {
                    escapee.fate = Fate::Survived;
                }
            }
        }
    }

    fn signal_all(&mut self, signal: Signal, out: &mut Vec<Action>) {
        let mut any = false;
        for escapee in self.listed.values_mut() {
            if !escapee.fate.is_over() {
                escapee.fate = Fate::Signalled(signal);
                any = true;
            }
        }
        if any || self.unlisted > 0 {
            out.push(Action::Signal(signal));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Now {
        Now::new(Instant::from_nanos(ms * 1_000_000), ms)
    }

    fn found(pids: &[u32]) -> Vec<EscapedProcess> {
        pids.iter()
            .map(|&pid| EscapedProcess {
                pid,
                command: format!("daemon {pid}"),
            })
            .collect()
    }

    #[test]
    fn escaped_processes_get_the_stop_signal_then_sigkill_then_are_declared_survivors() {
        let mut e = Escaped::default();
        let mut out = Vec::new();
        e.sweep(&mut out);
        e.sweep(&mut out);
        assert_eq!(out, [Action::Sweep], "one sweep at a time");
        assert!(!e.is_settled());
        e.stop(
            Signal::Term,
            Duration::from_secs(5),
            at(0).instant,
            at(0),
            &mut out,
        );
        out.clear();
        e.on_found(found(&[10, 11]), &mut out);
        assert_eq!(
            out,
            [Action::Signal(Signal::Term)],
            "found during a stop: signalled"
        );
        e.on_exited(10, &mut out);
        assert_eq!(e.next_deadline(), Some(at(5000).instant));
        out.clear();
        e.on_timeout(at(5000), &mut out);
        assert_eq!(out, [Action::Signal(Signal::Kill)]);
        assert_eq!(e.next_deadline(), Some(at(5500).instant));
        e.on_timeout(at(5500), &mut out);
        let fates: Vec<Fate> = e.listed().map(|x| x.fate).collect();
        assert_eq!(fates, [Fate::Exited, Fate::Survived]);
        assert!(e.is_settled());
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn nothing_found_settles_at_once() {
        let mut e = Escaped::default();
        let mut out = Vec::new();
        e.sweep(&mut out);
        e.on_found(Vec::new(), &mut out);
        assert!(e.is_settled());
        e.stop(
            Signal::Term,
            Duration::from_secs(5),
            at(0).instant,
            at(0),
            &mut out,
        );
        assert_eq!(out, [Action::Sweep], "no signal for nobody");
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn a_second_stop_only_makes_it_faster() {
        let mut e = Escaped::default();
        let mut out = Vec::new();
        e.on_found(found(&[7]), &mut out);
        e.stop(
            Signal::Term,
            Duration::from_secs(5),
            at(0).instant,
            at(0),
            &mut out,
        );
        e.stop(
            Signal::Term,
            Duration::from_secs(9),
            at(1).instant,
            at(1),
            &mut out,
        );
        assert_eq!(e.next_deadline(), Some(at(5000).instant));
        e.stop(Signal::Kill, Duration::ZERO, at(2).instant, at(2), &mut out);
        assert_eq!(
            out,
            [Action::Signal(Signal::Term), Action::Signal(Signal::Kill)]
        );
        assert_eq!(e.next_deadline(), Some(at(502).instant));
    }

    #[test]
    fn the_list_is_bounded() {
        let mut e = Escaped::default();
        let mut out = Vec::new();
        let pids: Vec<u32> = (0..(MAX_LISTED as u32 + 10)).collect();
        e.on_found(found(&pids), &mut out);
        assert_eq!(e.listed().count(), MAX_LISTED);
        assert_eq!(e.unlisted(), 10);
    }
}

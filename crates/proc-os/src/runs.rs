//! The table of live runs: what the core's `Spawn`, `Signal`, `WriteStdin` and `Release`
//! outputs do, and how SIGCHLD turns into `Exited` inputs. Runtime-agnostic: the driver says
//! how to start the tasks that serve a run's pipes, and gets them back to drop (which must
//! stop them).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use async_channel::{Receiver, Sender};
use nix::unistd::Pid;
use proc_state::{ExitStatus, RunId, Signal, SpawnSpec, Stream};

use crate::process;

/// One of a run's pipes, handed to the driver to start the task that serves it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Pipe {
    /// The read end of its stdout or stderr: read it until end-of-file
    /// ([`crate::pipes::pump`]).
    Output {
        /// Which one.
        stream: Stream,
        /// Our end of the pipe.
        pipe: OwnedFd,
    },
    /// The write end of its stdin ([`proc_state::StdinMode::Piped`]): write what arrives on
    /// `writes`, in order, and report each ([`crate::pipes::feed_stdin`]).
    Stdin {
        /// Our end of the pipe.
        pipe: OwnedFd,
        /// What to write, from [`RunTable::write_stdin`].
        writes: Receiver<StdinWrite>,
    },
}

/// One `WriteStdin` of the core: bytes for a run's stdin, then maybe end-of-file.
#[derive(Debug)]
pub struct StdinWrite {
    /// The bytes to write (all of them, waiting while the pipe is full).
    pub data: Vec<u8>,
    /// Close the pipe afterwards: the process reads end-of-file.
    pub close: bool,
}

/// One spawned process, from `Spawn` until `Release`.
struct Run<P> {
    /// Also the process group id; stays reserved until we reap it in [`RunTable::release`].
    pid: Pid,
    /// `Exited` was reported for it (the leader is a zombie now).
    exited: bool,
    /// Where its stdin writes go, and the task that makes them; `None` unless piped.
    stdin: Option<(Sender<StdinWrite>, P)>,
    /// What reads its stdout and its stderr; dropping them stops them and closes the pipes.
    _pumps: [P; 2],
}

/// Every run the core has not released yet. `P` is the driver's handle on the task that serves
/// one of a run's pipes (for example `smol::Task<()>`): dropping it must stop that task, and
/// the task must then drop the pipe.
pub struct RunTable<P> {
    live: BTreeMap<RunId, Run<P>>,
    /// Released before they exited (a contract breach of the core): killed, reaped when they
    /// exit.
    orphans: Vec<Pid>,
}

impl<P> Default for RunTable<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> RunTable<P> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            orphans: Vec::new(),
        }
    }

    /// Whether `run` was spawned and not released: events about other runs are stale.
    pub fn is_live(&self, run: RunId) -> bool {
        self.live.contains_key(&run)
    }

    /// How many runs are live (spawned and not released).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no run is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Spawns `spec` for `run` (see [`process::spawn`]) and starts serving its pipes with
    /// `serve(pipe)`: its stdout and its stderr, and its stdin when piped. `serve` returns a
    /// handle that stops the task when dropped. Returns the pid, which is also the process
    /// group id.
    ///
    /// # Errors
    /// The reason, for people, when the process could not be started (`serve` is not called).
    pub fn spawn(
        &mut self,
        run: RunId,
        spec: &SpawnSpec,
        mut serve: impl FnMut(Pipe) -> P,
    ) -> Result<u32, String> {
        if self.live.contains_key(&run) {
            return Err(format!("internal error: {run} was spawned twice"));
        }
        let child = process::spawn(spec)?;
        let pumps = [
            (Stream::Stdout, OwnedFd::from(child.stdout)),
            (Stream::Stderr, OwnedFd::from(child.stderr)),
        ]
        .map(|(stream, pipe)| serve(Pipe::Output { stream, pipe }));
        let stdin = child.stdin.map(|stdin| {
            let (tx, writes) = async_channel::unbounded();
            let pipe = OwnedFd::from(stdin);
            (tx, serve(Pipe::Stdin { pipe, writes }))
        });
        self.live.insert(
            run,
            Run {
                pid: child.pid,
                exited: false,
                stdin,
                _pumps: pumps,
            },
        );
        // pid > 0 for a child, so it fits.
        Ok(child.pid.as_raw().unsigned_abs())
    }

    /// Queues `data` for `run`'s stdin (then end-of-file if `close`); the task serving its
    /// [`Pipe::Stdin`] writes it and reports. Nothing for a run that was released.
    ///
    /// # Errors
    /// The report to give at once, for people: the run's stdin is not a pipe.
    pub fn write_stdin(&self, run: RunId, data: Vec<u8>, close: bool) -> Result<(), String> {
        let Some(entry) = self.live.get(&run) else {
            return Ok(());
        };
        let Some((writes, _)) = &entry.stdin else {
            return Err("the process's stdin is not a pipe".to_owned());
        };
        // Unbounded, and the receiver lives as long as the entry: this cannot fail.
        let _ = writes.try_send(StdinWrite { data, close });
        Ok(())
    }

    /// Sends `signal` to `run`'s process group; nothing for a run that was released or never
    /// started. Failures other than "already gone" are reported on stderr.
    pub fn signal(&self, run: RunId, signal: Signal) {
        let Some(entry) = self.live.get(&run) else {
            return;
        };
        if let Err(err) = process::signal_group(entry.pid, signal) {
            eprintln!(
                "proc-mcp: cannot send {signal} to process group {} of {run}: {err}",
                entry.pid
            );
        }
    }

    /// After SIGCHLD: every live run whose process has exited since the last call, with its
    /// status, once per run, in run order. The processes are not reaped (waitid `WNOWAIT`).
    /// Also reaps the orphans that have exited.
    pub fn collect_exits(&mut self) -> Vec<(RunId, ExitStatus)> {
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
                        "proc-mcp: cannot wait for process {} of {run}: {err}",
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
    ///
    /// A process that is still running (the core breached its contract) has its process group
    /// killed and is reaped after a later [`RunTable::collect_exits`] or at
    /// [`RunTable::shutdown`], never blocking the caller.
    pub fn release(&mut self, run: RunId) {
        let Some(entry) = self.live.remove(&run) else {
            return;
        };
        self.dispose(run, entry);
    }

    /// Releases every run still in the table, killing the process groups of those still
    /// running, and reaps them (blocking). For the end of the server: no process it started
    /// may outlive it.
    pub fn shutdown(&mut self) {
        for (run, entry) in std::mem::take(&mut self.live) {
            self.dispose(run, entry);
        }
        for pid in std::mem::take(&mut self.orphans) {
            let _ = process::reap(pid);
        }
    }

    fn dispose(&mut self, run: RunId, entry: Run<P>) {
        let (pid, exited) = (entry.pid, entry.exited);
        // Stops the tasks serving its pipes, which close our ends.
        drop(entry);
        let still_running = if exited {
            Ok(false)
        } else {
            process::exit_status(pid).map(|status| status.is_none())
        };
        match still_running {
            Ok(false) => {
                if let Err(err) = process::reap(pid) {
                    eprintln!("proc-mcp: cannot reap process {pid} of {run}: {err}");
                }
            }
            Ok(true) => {
                eprintln!(
                    "proc-mcp: {run} was released while process {pid} still runs: \
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use async_channel::{Receiver, Sender};
    use async_executor::{LocalExecutor, Task};
    use async_io::Timer;
    use async_signal::{Signal as OsSignal, Signals};
    use futures_lite::StreamExt as _;
    use proc_state::{ExitStatus, RunId, Signal, SpawnSpec, Stream};

    use super::RunTable;
    use crate::driver::Event;
    use crate::pipes::{self, Pool};
    use crate::testutil::{group_members, sh, spec, stat, wait_terminated};

    /// The table as a driver uses it: pumps on a local executor, into a small pool.
    struct Runs<'ex> {
        table: RunTable<Task<()>>,
        executor: &'ex LocalExecutor<'static>,
        events: Sender<Event>,
        pool: Pool,
    }

    impl Runs<'_> {
        fn spawn(&mut self, run: RunId, spec: &SpawnSpec) -> Result<u32, String> {
            let (executor, events, pool) = (self.executor, &self.events, &self.pool);
            self.table.spawn(run, spec, |pipe| {
                executor.spawn(pipes::serve(run, pipe, pool.clone(), events.clone()))
            })
        }
    }

    impl std::ops::Deref for Runs<'_> {
        type Target = RunTable<Task<()>>;
        fn deref(&self) -> &Self::Target {
            &self.table
        }
    }

    impl std::ops::DerefMut for Runs<'_> {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.table
        }
    }

    /// What the event loop would have fed the core for one run.
    #[derive(Debug, Default)]
    struct Seen {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        closed: Vec<Stream>,
        exit: Option<ExitStatus>,
        chunks: usize,
        /// Every `StdinWritten` report, in order.
        written: Vec<Result<usize, String>>,
    }

    impl Seen {
        fn done(&self) -> bool {
            self.closed.len() == 2 && self.exit.is_some()
        }
    }

    /// The loop's event sources without the core: events and SIGCHLD.
    struct Harness {
        events: Receiver<Event>,
        signals: Signals,
        seen: BTreeMap<RunId, Seen>,
    }

    impl Harness {
        /// Waits for the next event (or SIGCHLD) and records it; panics after 30 s.
        async fn step(&mut self, runs: &mut Runs<'_>) {
            enum Woke {
                Event(Event),
                Child,
            }
            let woke = futures_lite::future::or(
                async { Woke::Event(self.events.recv().await.expect("channel open")) },
                async {
                    self.signals.next().await;
                    Woke::Child
                },
            );
            let woke = futures_lite::future::or(woke, async {
                Timer::after(Duration::from_secs(30)).await;
                panic!("no event within 30 s");
            })
            .await;
            match woke {
                Woke::Child => {
                    for (run, status) in runs.collect_exits() {
                        let seen = self.seen.entry(run).or_default();
                        assert_eq!(seen.exit, None, "{run} exited twice");
                        seen.exit = Some(status);
                    }
                }
                Woke::Event(Event::Output { run, stream, chunk }) => {
                    let seen = self.seen.entry(run).or_default();
                    seen.chunks += 1;
                    match stream {
                        Stream::Stdout => seen.stdout.extend_from_slice(chunk.bytes()),
                        Stream::Stderr => seen.stderr.extend_from_slice(chunk.bytes()),
                    }
                }
                Woke::Event(Event::StreamClosed { run, stream }) => {
                    self.seen.entry(run).or_default().closed.push(stream);
                }
                Woke::Event(Event::StdinWritten { run, result }) => {
                    self.seen.entry(run).or_default().written.push(result);
                }
                Woke::Event(other) => panic!("unexpected {other:?}"),
            }
        }

        async fn until(&mut self, runs: &mut Runs<'_>, done: impl Fn(&Self) -> bool) {
            while !done(self) {
                self.step(runs).await;
            }
        }
    }

    /// Runs `test` with a fresh table of runs on a local executor.
    fn with_runs(test: impl AsyncFnOnce(&mut Runs<'_>, &mut Harness)) {
        let executor = LocalExecutor::new();
        let signals = Signals::new([OsSignal::Child]).expect("SIGCHLD handler");
        let (tx, rx) = async_channel::bounded(4);
        let mut harness = Harness {
            events: rx,
            signals,
            seen: BTreeMap::new(),
        };
        async_io::block_on(executor.run(async {
            let mut runs = Runs {
                table: RunTable::new(),
                executor: &executor,
                events: tx,
                pool: Pool::new(2),
            };
            test(&mut runs, &mut harness).await;
            runs.shutdown();
        }));
    }

    #[test]
    fn output_closes_and_exit_are_reported_then_release_reaps() {
        with_runs(async |runs, h| {
            let run = RunId(1);
            let pid = runs
                .spawn(run, &sh("echo out; echo err >&2; exit 3"))
                .expect("spawn");
            let pid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            assert_eq!(seen.stdout, b"out\n");
            assert_eq!(seen.stderr, b"err\n");
            assert_eq!(seen.exit, Some(ExitStatus::Code(3)));
            // Exited but not reaped: the zombie holds pid and pgid until release.
            assert!(runs.is_live(run));
            assert_eq!(stat(pid).map(|s| s.state), Some('Z'));
            runs.release(run);
            assert!(!runs.is_live(run));
            assert_eq!(stat(pid), None);
            // Released: no signal reaches anything any more.
            runs.signal(run, Signal::Kill);
        });
    }

    #[test]
    fn stop_reaches_the_whole_group_and_is_reported_once() {
        with_runs(async |runs, h| {
            let run = RunId(7);
            let pid = runs
                .spawn(run, &sh("sleep 1000 & sleep 1000 & echo ready; wait"))
                .expect("spawn");
            let pgid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"ready\n")
            })
            .await;
            let members = group_members(pgid);
            assert_eq!(members.len(), 3, "{members:?}");
            runs.signal(run, Signal::Term);
            h.until(runs, |h| h.seen[&run].done()).await;
            assert_eq!(h.seen[&run].exit, Some(ExitStatus::Signaled(Signal::Term)));
            for (pid, _) in members {
                assert!(
                    wait_terminated(pid, Duration::from_secs(10)),
                    "{pid} survived"
                );
            }
            runs.release(run);
            assert!(group_members(pgid).iter().all(|(_, state)| *state == 'Z'));
        });
    }

    #[test]
    fn a_spawn_failure_leaves_nothing_behind() {
        with_runs(async |runs, _| {
            let mut bad = spec("true", &[]);
            bad.cwd = Some("/nonexistent".to_owned());
            let err = runs.spawn(RunId(1), &bad).expect_err("fails");
            assert_eq!(err, "working directory \"/nonexistent\" does not exist");
            assert!(!runs.is_live(RunId(1)));
            // The core releases failed runs too: a no-op.
            runs.release(RunId(1));
            runs.signal(RunId(1), Signal::Term);
        });
    }

    #[test]
    fn a_flood_arrives_complete_in_bounded_chunks() {
        with_runs(async |runs, h| {
            let run = RunId(2);
            // 10 MB on stdout and 1 MB on stderr at once, through 2 pooled buffers.
            runs.spawn(
                run,
                &sh("head -c 1000000 /dev/zero >&2 & head -c 10000000 /dev/zero; wait"),
            )
            .expect("spawn");
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            assert_eq!(
                (seen.stdout.len(), seen.stderr.len()),
                (10_000_000, 1_000_000)
            );
            assert!(seen.stdout.iter().chain(&seen.stderr).all(|&b| b == 0));
            assert!(seen.chunks >= 11_000_000 / pipes::CHUNK_BYTES);
            assert_eq!(seen.exit, Some(ExitStatus::Code(0)));
            runs.release(run);
        });
    }

    #[test]
    fn many_runs_exit_each_reported_once() {
        with_runs(async |runs, h| {
            let ids: Vec<_> = (0..20u64).map(RunId).collect();
            for &run in &ids {
                runs.spawn(run, &sh(&format!("exit {}", run.0)))
                    .expect("spawn");
            }
            h.until(runs, |h| {
                ids.iter().all(|r| h.seen.get(r).is_some_and(Seen::done))
            })
            .await;
            for &run in &ids {
                let code = i32::try_from(run.0).expect("small");
                assert_eq!(h.seen[&run].exit, Some(ExitStatus::Code(code)));
                runs.release(run);
            }
        });
    }

    #[test]
    fn releasing_a_running_process_kills_its_group() {
        with_runs(async |runs, _| {
            let run = RunId(3);
            let pid = runs.spawn(run, &spec("sleep", &["1000"])).expect("spawn");
            let pid = i32::try_from(pid).expect("pid");
            runs.release(run);
            assert!(wait_terminated(pid, Duration::from_secs(10)));
            // Reaped at shutdown (or after the next SIGCHLD), never blocking the loop.
        });
    }

    #[test]
    fn release_closes_pipes_held_by_an_escaped_grandchild() {
        with_runs(async |runs, h| {
            let run = RunId(4);
            let pid = runs
                .spawn(run, &sh("sleep 1000 & echo started"))
                .expect("spawn");
            let pgid = i32::try_from(pid).expect("pid");
            h.until(runs, |h| h.seen.get(&run).is_some_and(|s| s.exit.is_some()))
                .await;
            // The sleep still holds stdout and stderr open.
            assert!(h.seen[&run].closed.is_empty());
            runs.release(run);
            let sleepers: Vec<_> = group_members(pgid)
                .into_iter()
                .filter(|(_, state)| *state != 'Z')
                .collect();
            assert_eq!(sleepers.len(), 1, "{sleepers:?}");
            // Clean up the orphan (the core would have signalled the group before release).
            // SAFETY: plain syscall on a process group we created.
            unsafe { nix::libc::killpg(pgid, nix::libc::SIGKILL) };
            assert!(wait_terminated(sleepers[0].0, Duration::from_secs(10)));
        });
    }

    /// `spec` with stdin piped.
    fn piped(mut spec: SpawnSpec) -> SpawnSpec {
        spec.stdin = proc_state::StdinMode::Piped;
        spec
    }

    #[test]
    fn stdin_writes_arrive_in_order_and_eof_ends_the_reader() {
        with_runs(async |runs, h| {
            let run = RunId(5);
            runs.spawn(run, &piped(spec("cat", &[]))).expect("spawn");
            runs.write_stdin(run, b"hello\n".to_vec(), false)
                .expect("piped");
            runs.write_stdin(run, b"bye\n".to_vec(), true)
                .expect("piped");
            // After the close: reported, in order, as an error.
            runs.write_stdin(run, b"late\n".to_vec(), false)
                .expect("piped");
            h.until(runs, |h| {
                h.seen
                    .get(&run)
                    .is_some_and(|s| s.done() && s.written.len() == 3)
            })
            .await;
            let seen = &h.seen[&run];
            assert_eq!(seen.stdout, b"hello\nbye\n");
            assert_eq!(
                seen.written,
                [
                    Ok(6),
                    Ok(4),
                    Err("the process's stdin was already closed".to_owned())
                ]
            );
            // cat saw end-of-file and exited on its own.
            assert_eq!(seen.exit, Some(ExitStatus::Code(0)));
            runs.release(run);
        });
    }

    #[test]
    fn a_write_bigger_than_the_pipe_waits_without_blocking_the_loop() {
        with_runs(async |runs, h| {
            let run = RunId(6);
            runs.spawn(run, &piped(spec("cat", &[]))).expect("spawn");
            // 4 MiB: far more than a pipe holds (64 KiB); cat can only take it in as fast as
            // its output is read, by this same loop.
            let data = vec![b'x'; 4 << 20];
            runs.write_stdin(run, data, true).expect("piped");
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            let seen = &h.seen[&run];
            assert_eq!(seen.stdout.len(), 4 << 20);
            assert_eq!(seen.written, [Ok(4 << 20)]);
            runs.release(run);
        });
    }

    #[test]
    fn writing_to_a_process_that_closed_stdin_is_an_error() {
        with_runs(async |runs, h| {
            let run = RunId(7);
            runs.spawn(run, &piped(sh("exec 0<&-; echo closed; sleep 1000")))
                .expect("spawn");
            h.until(runs, |h| {
                h.seen.get(&run).is_some_and(|s| s.stdout == b"closed\n")
            })
            .await;
            runs.write_stdin(run, b"anyone?\n".to_vec(), false)
                .expect("piped");
            h.until(runs, |h| !h.seen[&run].written.is_empty()).await;
            assert_eq!(
                h.seen[&run].written,
                [Err("the process closed its stdin (or exited)".to_owned())]
            );
            runs.signal(run, Signal::Kill);
            h.until(runs, |h| h.seen[&run].done()).await;
            runs.release(run);
        });
    }

    #[test]
    fn stdin_that_is_not_a_pipe_is_refused_at_once() {
        with_runs(async |runs, h| {
            let run = RunId(8);
            runs.spawn(run, &sh("exit 0")).expect("spawn");
            assert_eq!(
                runs.write_stdin(run, b"x".to_vec(), false),
                Err("the process's stdin is not a pipe".to_owned())
            );
            // Released or unknown runs: nothing to report.
            assert_eq!(runs.write_stdin(RunId(99), b"x".to_vec(), true), Ok(()));
            h.until(runs, |h| h.seen.get(&run).is_some_and(Seen::done))
                .await;
            runs.release(run);
            assert_eq!(runs.write_stdin(run, b"x".to_vec(), true), Ok(()));
        });
    }
}

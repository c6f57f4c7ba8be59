//! Process trees with real processes: tags found through `/proc` and pidfds (`tree`), cgroups
//! (`cgroup`), and the watchdog's logic run in-process (`watchdog`). Linux only.
//!
//! These spawn many processes and read much of `/proc`, so they live in a test binary of their
//! own: run next to the unit tests in one process, every spawn briefly copies the other tests'
//! descriptors (until the child execs), which unit tests that wait for a pipe's end-of-file or
//! list their own descriptors would notice.

#![cfg(target_os = "linux")]

use std::io::BufReader;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use proc_os::process;
use proc_os::testutil::{
    Task, cmdline, is_alive, pipe, recv_within, sh, spec, stat, wait_exited, wait_terminated,
    wait_until, within,
};
use proc_os::tree::{Instance, PidFd, TAG_VAR};
use proc_state::{ExitStatus, Signal, SpawnSpec};

const LONG: Duration = Duration::from_secs(20);

/// `sh -c script` tagged as run `run` of `instance`.
fn tagged_sh(instance: &Instance, run: u64, script: &str) -> SpawnSpec {
    let mut spec = sh(script);
    spec.env = vec![(TAG_VAR.to_owned(), instance.tag(run))];
    spec
}

/// Sends SIGKILL to `pid` if it still is the process that started at `start_time`.
fn kill_verified(pid: i32, start_time: u64) {
    if let Ok(Some(pidfd)) = PidFd::open_verified(pid, start_time) {
        let _ = pidfd.send_signal(Signal::Kill);
    }
}

/// A live process standing for a server instance: a `sleep` of our own, so every test has an
/// instance no other test uses, alive (never stale) until dropped.
struct FakeServer {
    pid: Pid,
    /// Its pid and start time.
    instance: Instance,
}

impl FakeServer {
    fn start() -> Self {
        let child = process::spawn(&spec("sleep", &["1000"])).expect("spawn");
        let instance = Instance::of(child.pid.as_raw()).expect("its stat");
        Self {
            pid: child.pid,
            instance,
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = process::signal_group(self.pid, Signal::Kill);
        wait_exited(self.pid);
        let _ = process::reap(self.pid);
    }
}

/// Held by the tests that run the watchdog's `serve` or leave processes of a dead server
/// around: the stale cleanup at the start of `serve` would kill another test's stale processes.
static STALE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    STALE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod tree {
    use proc_os::tree::{Scanner, children, reap_orphans, set_child_subreaper};

    use super::*;

    /// Set for the copy of this test binary that runs [`orphans_in_a_subreaper`].
    const SUBREAPER_CHILD: &str = "PROC_OS_TREE_SUBREAPER";

    #[test]
    fn an_instance_is_alive_only_with_its_own_start_time() {
        let ours = Instance::current().expect("our instance");
        assert!(ours.is_alive());
        let reused = Instance {
            start_time: ours.start_time + 1,
            ..ours
        };
        assert!(
            !reused.is_alive(),
            "same pid, other start time: another process"
        );
        assert!(
            !Instance {
                pid: 0,
                start_time: 1
            }
            .is_alive()
        );

        let child = process::spawn(&spec("sleep", &["1000"])).expect("spawn");
        let instance = Instance::of(child.pid.as_raw()).expect("its stat");
        assert!(instance.is_alive());
        process::signal_group(child.pid, Signal::Kill).expect("kill");
        wait_exited(child.pid);
        assert!(!instance.is_alive(), "a zombie has ended");
        process::reap(child.pid).expect("reap");
        assert!(!instance.is_alive(), "gone");
        // The pidfd check refuses the wrong start time, and a process that has exited.
        assert!(
            PidFd::open_verified(ours.pid, ours.start_time + 1)
                .expect("pidfd")
                .is_none()
        );
        assert!(
            PidFd::open_verified(ours.pid, ours.start_time)
                .expect("pidfd")
                .is_some()
        );
        assert!(
            PidFd::open_verified(instance.pid, instance.start_time)
                .expect("pidfd")
                .is_none()
        );
    }

    #[test]
    fn a_daemon_that_left_the_group_is_found_by_its_tag_and_killed_by_pidfd() {
        let server = FakeServer::start();
        let mut task = Task::spawn(&tagged_sh(
            &server.instance,
            7,
            "setsid sh -c 'sleep 1000 & echo $!'; echo started; exec sleep 1000",
        ));
        let daemon_pid = task.parsed_line::<i32>(LONG);
        assert_eq!(task.line(LONG), "started");
        let leader = task.pid.as_raw();
        // While a process is inside execve(2) its environment cannot be read; scan once the
        // daemon runs `sleep`.
        assert!(
            wait_until(Duration::from_secs(10), || {
                cmdline(daemon_pid).starts_with("sleep")
            }),
            "the daemon never ran sleep: {}",
            cmdline(daemon_pid)
        );

        let mut scanner = Scanner::new().expect("scanner");
        let found = scanner.scan_instance(&server.instance);
        let daemon = found
            .iter()
            .find(|p| p.pid == daemon_pid)
            .unwrap_or_else(|| panic!("daemon {daemon_pid} not in {found:#?}"))
            .clone();
        assert!(found.iter().any(|p| p.pid == leader), "{found:#?}");
        assert!(
            found
                .iter()
                .all(|p| p.instance == server.instance && p.run == 7)
        );
        assert_ne!(daemon.pgid, leader, "left the task's process group");
        assert_ne!(daemon.session, leader, "left the task's session");
        // `sh -c ...` until the forked shell has exec'd `sleep`.
        assert!(daemon.command.contains("sleep 1000"), "{}", daemon.command);
        assert!(daemon.in_our_pid_ns);
        assert_eq!(
            Instance::of(daemon_pid).ok().map(|i| i.start_time),
            Some(daemon.start_time)
        );
        // Other filters: everything tagged sees it; nothing of a live instance is stale.
        assert!(scanner.scan_all().iter().any(|p| p.pid == daemon_pid));
        assert!(
            scanner
                .scan_stale()
                .iter()
                .all(|p| p.instance != server.instance)
        );

        let pidfd = daemon
            .open_pidfd()
            .expect("pidfd")
            .expect("still that process");
        assert_eq!(pidfd.pid(), daemon_pid);
        assert!(!pidfd.has_exited().expect("poll"));
        assert!(pidfd.send_signal(Signal::Kill).expect("signal"));
        let exited = async_io::block_on(futures_lite::future::or(
            async { pidfd.exited().await.map(|()| true) },
            async {
                async_io::Timer::after(LONG).await;
                Ok(false)
            },
        ));
        assert!(exited.expect("exited"), "no exit within {LONG:?}");
        // A zombie still takes signals (and ignores them); ESRCH once reaped.
        pidfd.send_signal(Signal::Kill).expect("signal");
        assert!(
            scanner
                .scan_instance(&server.instance)
                .iter()
                .all(|p| p.pid != daemon_pid)
        );
    }

    #[test]
    fn children_lists_every_thread_s_children_zombies_included() {
        let exited = process::spawn(&spec("true", &[])).expect("spawn");
        wait_exited(exited.pid);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        // A child of another thread (its parent-death signal is tied to that thread).
        let thread = std::thread::spawn(move || {
            let child = process::spawn(&spec("sleep", &["1000"])).expect("spawn");
            pid_tx.send(child.pid).expect("send");
            let _ = rx.recv();
            process::signal_group(child.pid, Signal::Kill).expect("kill");
            wait_exited(child.pid);
            process::reap(child.pid).expect("reap");
        });
        let other = recv_within(&pid_rx, LONG, "the other thread's child");
        let listed = children().expect("children");
        assert!(listed.contains(&exited.pid.as_raw()), "{listed:?}");
        assert!(listed.contains(&other.as_raw()), "{listed:?}");
        tx.send(()).expect("send");
        thread.join().expect("thread");
        process::reap(exited.pid).expect("reap");
        // Reaped, and the other thread's child gone: neither is listed any more.
        let listed = children().expect("children");
        assert!(!listed.contains(&other.as_raw()), "{listed:?}");
        assert!(!listed.contains(&exited.pid.as_raw()), "{listed:?}");
    }

    /// Subreaper and reaping are process-wide: they would take other tests' children. Checked in
    /// a copy of this test binary that runs this one test.
    #[test]
    fn orphans_are_reaped_and_kept_children_left_alone() {
        let mut copy = std::process::Command::new(std::env::current_exe().expect("test binary"));
        copy.args(["--exact", "tree::orphans_in_a_subreaper", "--nocapture"])
            .env(SUBREAPER_CHILD, "1")
            .stdin(std::process::Stdio::null());
        let out = within(LONG, "the copy of the test binary", move || copy.output())
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("orphan reaped, kept child left"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Does the work of [`orphans_are_reaped_and_kept_children_left_alone`] in its copy only.
    #[test]
    fn orphans_in_a_subreaper() {
        if std::env::var_os(SUBREAPER_CHILD).is_none() {
            return;
        }
        let us = nix::unistd::getpid().as_raw();
        set_child_subreaper().expect("subreaper");
        assert!(nix::sys::prctl::get_child_subreaper().expect("prctl"));
        // A task leader the caller keeps as a zombie on purpose.
        let kept = process::spawn(&spec("sh", &["-c", "exit 3"]))
            .expect("spawn")
            .pid;
        assert_eq!(wait_exited(kept), ExitStatus::Code(3));
        // A task that leaves an orphan behind: re-parented to us, not to init.
        let mut task = Task::spawn(&sh("sleep 1000 & echo $!"));
        let orphan = task.parsed_line::<i32>(LONG);
        let task_pid = task.pid;
        assert_eq!(wait_exited(task_pid), ExitStatus::Code(0));
        std::mem::forget(task);
        assert_eq!(stat(orphan).map(|s| s.ppid), Some(us));
        let listed = children().expect("children");
        for pid in [kept.as_raw(), task_pid.as_raw(), orphan] {
            assert!(listed.contains(&pid), "{pid} not in {listed:?}");
        }
        let pidfd = PidFd::open(orphan).expect("pidfd");
        assert!(pidfd.send_signal(Signal::Kill).expect("kill"));
        assert!(pidfd.wait_timeout(LONG).expect("poll"));

        let mut reaped = reap_orphans(|pid| pid == kept.as_raw()).expect("reap");
        reaped.sort_unstable_by_key(|(pid, _)| *pid);
        let mut expected = vec![
            (orphan, ExitStatus::Signaled(Signal::Kill)),
            (task_pid.as_raw(), ExitStatus::Code(0)),
        ];
        expected.sort_unstable_by_key(|(pid, _)| *pid);
        assert_eq!(reaped, expected);
        assert_eq!(stat(orphan), None, "reaped");
        assert_eq!(
            stat(kept.as_raw()).map(|s| s.state),
            Some('Z'),
            "left alone"
        );
        assert_eq!(children().expect("children"), vec![kept.as_raw()]);
        assert_eq!(
            reap_orphans(|pid| pid == kept.as_raw()).expect("reap"),
            vec![]
        );
        process::reap(kept).expect("reap kept");
        println!("orphan reaped, kept child left");
    }

    /// The cost of a scan with about 300 processes on the system: `cargo test -p proc-os --
    /// --ignored --nocapture scan_cost`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn scan_cost() {
        let server = FakeServer::start();
        let count = || {
            std::fs::read_dir("/proc")
                .expect("proc")
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        };
        let mut tasks = Vec::new();
        while count() < 300 {
            let run = u64::try_from(tasks.len()).expect("run");
            let spec = if tasks.len() % 10 == 0 {
                tagged_sh(&server.instance, run, "exec sleep 1000")
            } else {
                sh("exec sleep 1000")
            };
            tasks.push(Task::spawn(&spec));
        }
        let processes = count();
        let mut scanner = Scanner::new().expect("scanner");
        let rounds = 50;
        for (name, filter) in [("all", None), ("instance", Some(server.instance))] {
            let start = std::time::Instant::now();
            let mut found = 0;
            for _ in 0..rounds {
                found = match filter {
                    Some(instance) => scanner.scan_instance(&instance).len(),
                    None => scanner.scan_all().len(),
                };
            }
            let each = start.elapsed() / rounds;
            println!("scan {name}: {processes} processes, {found} tagged: {each:?} per scan");
        }
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            scanner.scan_stale();
        }
        println!("scan stale: {:?} per scan", start.elapsed() / rounds);
        drop(tasks);
    }
}

mod cgroup {
    use proc_os::cgroup::{Cgroup, Cgroups, detect};
    use proc_os::process::SpawnPlacement;

    use super::*;

    /// Removes a test's cgroup tree even when the test fails.
    struct Cleanup(Cgroup);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if self.0.path().exists() {
                let _ = self.0.kill();
                let _ = self.0.wait_empty(LONG);
                let _ = self.0.remove_tree();
            }
        }
    }

    /// The cgroups we may manage here, or `None` with a note on stdout (the test then checks
    /// nothing more).
    fn cgroups_or_skip() -> Option<Cgroups> {
        match detect() {
            Ok(cgroups) => Some(cgroups),
            Err(reason) => {
                println!("skipped: cgroups v2 cannot be managed here: {reason}");
                None
            }
        }
    }

    #[test]
    fn a_task_and_its_setsid_daemon_start_in_the_run_cgroup_and_die_with_it() {
        let Some(cgroups) = cgroups_or_skip() else {
            return;
        };
        let server = FakeServer::start();
        let parent = cgroups
            .create_server(&server.instance)
            .expect("server cgroup");
        let _cleanup = Cleanup(parent.clone());
        let run = parent.create_run(3).expect("run cgroup");
        assert_eq!(run.path(), parent.path().join("run-3"));
        let procs = run.open_procs().expect("cgroup.procs");
        let spawned = process::spawn_placed(
            &tagged_sh(
                &server.instance,
                3,
                "setsid sh -c 'sleep 1000 & echo $!'; echo started; exec sleep 1000",
            ),
            SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&procs)),
        )
        .expect("spawn into the cgroup");
        let mut task = Task::from(spawned);
        let daemon = task.parsed_line::<i32>(LONG);
        assert_eq!(task.line(LONG), "started");
        let leader = task.pid.as_raw();
        let mut members = run.procs().expect("procs");
        members.sort_unstable();
        assert!(members.contains(&leader), "{members:?}");
        assert!(members.contains(&daemon), "{members:?}");
        let own = std::fs::read_to_string(format!("/proc/{leader}/cgroup")).expect("cgroup");
        assert!(own.contains("/proc-mcp-"), "{own}");
        assert!(run.populated().expect("events"));
        assert!(parent.populated().expect("events"), "counts descendants");
        // Not empty yet: rmdir refuses.
        assert_eq!(
            run.remove().map_err(|e| e.raw_os_error()),
            Err(Some(libc::EBUSY))
        );

        run.kill().expect("cgroup.kill");
        assert!(run.wait_empty(LONG).expect("wait"), "still populated");
        assert!(wait_terminated(daemon, LONG), "daemon {daemon} survived");
        assert_eq!(wait_exited(task.pid), ExitStatus::Signaled(Signal::Kill));
        // The leader is an unreaped zombie of ours: it does not keep the cgroup populated.
        assert!(!run.populated().expect("events"));
        run.remove().expect("rmdir with a zombie left");
        drop(task);
        parent.remove_tree().expect("rmdir the server's cgroup");
        assert!(!parent.path().exists());
    }

    #[test]
    fn a_task_is_born_in_its_cgroup_and_an_emptied_cgroup_takes_the_next() {
        let Some(cgroups) = cgroups_or_skip() else {
            return;
        };
        let server = FakeServer::start();
        let parent = cgroups
            .create_server(&server.instance)
            .expect("server cgroup");
        let _cleanup = Cleanup(parent.clone());
        let slot = parent.create_child("slot-0").expect("cgroup");
        let dir = slot.open_dir().expect("directory");
        let procs = slot.open_procs().expect("cgroup.procs");
        for round in 0..2 {
            // clone3 CLONE_INTO_CGROUP where the kernel has it, else a move: either way the task
            // is there before it can run anything.
            let spawned = process::spawn_placed(
                &sh("echo started; exec sleep 1000"),
                SpawnPlacement::in_cgroup_dir(
                    std::os::fd::AsFd::as_fd(&dir),
                    std::os::fd::AsFd::as_fd(&procs),
                ),
            )
            .expect("spawn into the cgroup");
            let mut task = Task::from(spawned);
            assert_eq!(task.line(LONG), "started", "round {round}");
            let leader = task.pid.as_raw();
            assert_eq!(slot.procs().expect("procs"), [leader], "round {round}");
            // Not cgroup.kill: a child created with CLONE_INTO_CGROUP in a cgroup killed
            // before is killed at birth on some kernels (Linux 6.18 here), so the server never
            // reuses a cgroup it killed.
            process::signal_group(task.pid, Signal::Kill).expect("killpg");
            assert_eq!(wait_exited(task.pid), ExitStatus::Signaled(Signal::Kill));
            assert!(!slot.populated().expect("events"), "round {round}");
            drop(task);
        }
        slot.remove().expect("rmdir");
        parent.remove_tree().expect("rmdir the server's cgroup");
    }

    #[test]
    fn a_task_still_starts_in_a_cgroup_that_was_killed_before() {
        let Some(cgroups) = cgroups_or_skip() else {
            return;
        };
        let server = FakeServer::start();
        let parent = cgroups
            .create_server(&server.instance)
            .expect("server cgroup");
        let _cleanup = Cleanup(parent.clone());
        let slot = parent.create_child("killed").expect("cgroup");
        let dir = slot.open_dir().expect("directory");
        let procs = slot.open_procs().expect("cgroup.procs");
        let placement = || {
            SpawnPlacement::in_cgroup_dir(
                std::os::fd::AsFd::as_fd(&dir),
                std::os::fd::AsFd::as_fd(&procs),
            )
        };
        let first = process::spawn_placed(&spec("sleep", &["1000"]), placement()).expect("spawn");
        slot.kill().expect("cgroup.kill");
        assert_eq!(wait_exited(first.pid), ExitStatus::Signaled(Signal::Kill));
        process::reap(first.pid).expect("reap");
        // Where the kernel kills such a child at birth, the spawn moves it in instead.
        let mut task = Task::from(
            process::spawn_placed(&sh("echo started; exec sleep 1000"), placement())
                .expect("spawn after a kill"),
        );
        assert_eq!(task.line(LONG), "started");
        assert_eq!(slot.procs().expect("procs"), [task.pid.as_raw()]);
        process::signal_group(task.pid, Signal::Kill).expect("killpg");
        assert_eq!(wait_exited(task.pid), ExitStatus::Signaled(Signal::Kill));
        drop(task);
        slot.remove().expect("rmdir");
        parent.remove_tree().expect("rmdir the server's cgroup");
    }

    #[test]
    fn spawning_into_a_removed_cgroup_fails_at_the_cgroup_step() {
        let Some(cgroups) = cgroups_or_skip() else {
            return;
        };
        let server = FakeServer::start();
        let parent = cgroups
            .create_server(&server.instance)
            .expect("server cgroup");
        let _cleanup = Cleanup(parent.clone());
        let run = parent.create_run(1).expect("run cgroup");
        let procs = run.open_procs().expect("cgroup.procs");
        run.remove().expect("rmdir");
        let err = process::spawn_placed(
            &spec("true", &[]),
            SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&procs)),
        )
        .expect_err("no such cgroup any more");
        assert!(err.contains("cgroup.procs"), "{err}");
        assert!(matches!(
            parent.create_child("a/b").map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidInput)
        ));
    }

    #[test]
    fn stale_server_cgroups_are_killed_and_removed_live_ones_kept() {
        let _one = one_at_a_time();
        let Some(cgroups) = cgroups_or_skip() else {
            return;
        };
        let server = FakeServer::start();
        let live = cgroups
            .create_server(&server.instance)
            .expect("live cgroup");
        let _live_cleanup = Cleanup(live.clone());
        // Same pid, another start time: a server that died and whose pid was reused.
        let dead = Instance {
            start_time: server.instance.start_time + 1,
            ..server.instance
        };
        let stale = cgroups.create_server(&dead).expect("stale cgroup");
        let _stale_cleanup = Cleanup(stale.clone());
        let run = stale.create_run(1).expect("run");
        let procs = run.open_procs().expect("procs");
        let placement = SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&procs));
        let left =
            Task::from(process::spawn_placed(&spec("sleep", &["1000"]), placement).expect("spawn"));
        let kept_run = live.create_run(1).expect("run");
        let kept_procs = kept_run.open_procs().expect("procs");
        let placement = SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&kept_procs));
        let kept =
            Task::from(process::spawn_placed(&spec("sleep", &["1000"]), placement).expect("spawn"));

        assert!(cgroups.remove_stale() >= 1);
        assert!(!stale.path().exists(), "stale cgroup removed");
        assert_eq!(wait_exited(left.pid), ExitStatus::Signaled(Signal::Kill));
        assert!(live.path().exists(), "live cgroup kept");
        assert_eq!(kept_run.procs().expect("procs"), vec![kept.pid.as_raw()]);
        drop((left, kept));
    }

    /// What moving into a cgroup adds to a spawn: `cargo test -p proc-os -- --ignored
    /// --nocapture spawn_cost`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn spawn_cost() {
        let Some(cgroups) = cgroups_or_skip() else {
            return;
        };
        let server = FakeServer::start();
        let parent = cgroups
            .create_server(&server.instance)
            .expect("server cgroup");
        let _cleanup = Cleanup(parent.clone());
        let run = parent.create_run(1).expect("run");
        let procs = run.open_procs().expect("procs");
        let rounds = 50;
        for placed in [false, true, false, true] {
            let placement = if placed {
                SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&procs))
            } else {
                SpawnPlacement::default()
            };
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                let start = Instant::now();
                let task = Task::from(
                    process::spawn_placed(&spec("true", &[]), placement).expect("spawn"),
                );
                total += start.elapsed();
                drop(task);
            }
            println!("spawn (in a cgroup: {placed}): {:?} each", total / rounds);
        }
    }
}

mod watchdog {
    use std::fs::File;
    use std::io::Write as _;

    use proc_os::cgroup;
    use proc_os::watchdog::{Config, Message, Outcome, serve};

    use super::*;

    /// Runs [`serve`] on a thread, fed through a pipe: (what to write to, its result, to be
    /// taken with [`outcome`]).
    fn serve_on_thread(config: Config) -> (File, std::sync::mpsc::Receiver<Outcome>) {
        let (read, write) = pipe();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(serve(BufReader::new(read), &config)));
        (write, rx)
    }

    /// What [`serve`] returned (within [`LONG`]).
    #[track_caller]
    fn outcome(watchdog: &std::sync::mpsc::Receiver<Outcome>) -> Outcome {
        recv_within(watchdog, LONG, "the watchdog's outcome")
    }

    fn send(pipe: &mut File, message: &Message) {
        let mut line = Vec::new();
        message.encode(&mut line).expect("encode");
        pipe.write_all(&line).expect("write");
    }

    #[test]
    fn end_of_file_kills_the_watched_group_and_the_tagged_daemon() {
        let _one = one_at_a_time();
        let server = FakeServer::start();
        let mut task = Task::spawn(&tagged_sh(
            &server.instance,
            1,
            "env -u PROC_MCP_TAG sleep 1000 & echo $!; \
             setsid sh -c 'sleep 1000 & echo $!'; echo started; exec sleep 1000",
        ));
        let untagged = task.parsed_line::<i32>(LONG);
        let daemon = task.parsed_line::<i32>(LONG);
        assert_eq!(task.line(LONG), "started");
        let (mut input, watchdog) = serve_on_thread(Config::new(server.instance, None));
        send(&mut input, &Message::WatchGroup(task.pid.as_raw()));
        // A group that was released is not killed.
        let other = Task::spawn(&sh("exec sleep 1000"));
        send(&mut input, &Message::WatchGroup(other.pid.as_raw()));
        send(&mut input, &Message::UnwatchGroup(other.pid.as_raw()));
        drop(input);

        let Outcome::CleanedUp(report) = outcome(&watchdog) else {
            panic!("not cleaned up");
        };
        assert_eq!(report.groups, 1, "{report:?}");
        assert_eq!(report.survivors, 0, "{report:?}");
        assert!(report.tagged_killed >= 1, "the daemon: {report:?}");
        assert!(
            wait_terminated(untagged, LONG),
            "group member {untagged} survived"
        );
        assert!(wait_terminated(daemon, LONG), "daemon {daemon} survived");
        assert_eq!(wait_exited(task.pid), ExitStatus::Signaled(Signal::Kill));
        assert!(
            is_alive(other.pid.as_raw()),
            "an unwatched group was killed"
        );
    }

    #[test]
    fn disarm_kills_nothing() {
        let _one = one_at_a_time();
        let server = FakeServer::start();
        let mut task = Task::spawn(&tagged_sh(
            &server.instance,
            2,
            "setsid sh -c 'sleep 1000 & echo $!'; exec sleep 1000",
        ));
        let daemon = task.parsed_line::<i32>(LONG);
        let (mut input, watchdog) = serve_on_thread(Config::new(server.instance, None));
        send(&mut input, &Message::WatchGroup(task.pid.as_raw()));
        send(&mut input, &Message::Disarm);
        drop(input);
        assert!(matches!(outcome(&watchdog), Outcome::Disarmed { .. }));
        assert!(is_alive(task.pid.as_raw()));
        assert!(is_alive(daemon));
        let start = Instance::of(daemon).expect("daemon").start_time;
        kill_verified(daemon, start);
        assert!(wait_terminated(daemon, LONG));
    }

    #[test]
    fn processes_of_dead_servers_are_killed_at_startup_and_live_ones_left() {
        let _one = one_at_a_time();
        let live = FakeServer::start();
        // Same pid as a live process, another start time: a server that died.
        let dead = Instance {
            start_time: live.instance.start_time + 1,
            ..live.instance
        };
        let mut stale_task = Task::spawn(&tagged_sh(
            &dead,
            5,
            "setsid sh -c 'sleep 1000 & echo $!'; exec sleep 1000",
        ));
        let stale_daemon = stale_task.parsed_line::<i32>(LONG);
        let live_task = Task::spawn(&tagged_sh(&live.instance, 5, "exec sleep 1000"));
        // The watchdog of yet another server, disarmed at once: only the startup cleanup runs.
        let own = FakeServer::start();
        let (mut input, watchdog) = serve_on_thread(Config::new(own.instance, None));
        send(&mut input, &Message::Disarm);
        let Outcome::Disarmed { stale_killed } = outcome(&watchdog) else {
            panic!("not disarmed");
        };
        assert!(stale_killed >= 2, "{stale_killed}");
        assert!(wait_terminated(stale_daemon, LONG), "stale daemon survived");
        assert_eq!(
            wait_exited(stale_task.pid),
            ExitStatus::Signaled(Signal::Kill)
        );
        assert!(
            is_alive(live_task.pid.as_raw()),
            "a live server's task was killed"
        );
    }

    #[test]
    fn end_of_file_kills_and_removes_the_server_cgroup() {
        let _one = one_at_a_time();
        let cgroups = match cgroup::detect() {
            Ok(cgroups) => cgroups,
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        };
        let server = FakeServer::start();
        let parent = cgroups.create_server(&server.instance).expect("cgroup");
        let run = parent.create_run(1).expect("run");
        let procs = run.open_procs().expect("procs");
        // Untagged, and out of its group: only the cgroup holds it.
        let mut task = Task::from(
            process::spawn_placed(
                &sh("setsid sh -c 'sleep 1000 & echo $!'; exec sleep 1000"),
                process::SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(&procs)),
            )
            .expect("spawn"),
        );
        let daemon = task.parsed_line::<i32>(LONG);
        let config = Config::new(server.instance, Some(parent.path().to_path_buf()));
        let (input, watchdog) = serve_on_thread(config);
        drop(input);
        let Outcome::CleanedUp(report) = outcome(&watchdog) else {
            panic!("not cleaned up");
        };
        assert_eq!((report.cgroups, report.cgroups_left), (1, 0), "{report:?}");
        assert!(wait_terminated(daemon, LONG), "daemon survived");
        assert_eq!(wait_exited(task.pid), ExitStatus::Signaled(Signal::Kill));
        assert!(!parent.path().exists(), "server cgroup removed");
    }
}

//! The watchdog end to end: a server (this binary, re-executed) starts its watchdog (this
//! binary again, with the hidden argument) and a task that leaves a process in its group without
//! the tag and a tagged daemon in a session of its own; the server is SIGKILLed; the watchdog
//! must end them all, then exit 0. Once with cgroups (where they can be used here), once with
//! process groups and tags only; and a clean exit that disarms it. Linux only; no libtest
//! harness (`harness = false`): `main` must call `run_if_requested` first, like the server's.

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use proc_os::testutil::{Lines, proc_entry_exists, stat, tag, wait_child};

    use proc_os::cgroup;
    use proc_os::process::{self, SpawnPlacement};
    use proc_os::tree::{self, Instance, PidFd, TAG_VAR};
    use proc_os::watchdog::Watchdog;
    use proc_state::{ExitStatus, Signal, SpawnSpec, StdinMode};

    /// Which part this copy of the binary plays.
    const ROLE: &str = "PROC_OS_WATCHDOG_E2E_ROLE";
    const LONG: Duration = Duration::from_secs(20);

    fn sh(script: &str, env: Vec<(String, String)>) -> SpawnSpec {
        SpawnSpec {
            program: "/bin/sh".to_owned(),
            args: vec!["-c".to_owned(), script.to_owned()],
            cwd: None,
            env,
            stdio: proc_state::Stdio::Pipes {
                stdin: StdinMode::Null,
            },
        }
    }

    pub fn main() {
        match std::env::var(ROLE).as_deref() {
            Ok("server") => server(false),
            Ok("server-cgroup") => server(true),
            Ok("clean") => clean_server(),
            _ => {
                // Orphans of the servers (the watchdogs above all) come to us: we can reap them
                // and see how they exited.
                tree::set_child_subreaper().expect("subreaper");
                killed_server_is_cleaned_up_after(false);
                killed_server_is_cleaned_up_after(true);
                clean_exit_disarms_the_watchdog();
                println!("watchdog end to end: ok");
            }
        }
    }

    /// A server that starts its watchdog and one task, says what it started, and waits to be
    /// killed.
    fn server(use_cgroup: bool) {
        let instance = Instance::current().expect("instance");
        tree::set_child_subreaper().expect("subreaper");
        let parent = if use_cgroup {
            match cgroup::detect() {
                Ok(cgroups) => Some(cgroups.create_server(&instance).expect("server cgroup")),
                Err(reason) => {
                    eprintln!("cgroups cannot be used here: {reason}");
                    None
                }
            }
        } else {
            None
        };
        let mut watchdog = Watchdog::spawn(
            Path::new("/proc/self/exe"),
            &instance,
            parent.as_ref().map(cgroup::Cgroup::path),
        )
        .expect("watchdog");
        let run = parent
            .as_ref()
            .map(|p| p.create_run(1).expect("run cgroup"));
        let procs = run.as_ref().map(|run| run.open_procs().expect("procs"));
        let placement = procs
            .as_ref()
            .map_or_else(SpawnPlacement::default, |procs| {
                SpawnPlacement::in_cgroup(std::os::fd::AsFd::as_fd(procs))
            });
        let task = process::spawn_placed(
            &sh(
                "env -u PROC_MCP_TAG sleep 1000 & echo $!; \
                 setsid sh -c 'sleep 1000 & echo $!'; exec sleep 1000",
                vec![(TAG_VAR.to_owned(), instance.tag(1))],
            ),
            placement,
        )
        .expect("spawn");
        watchdog.watch_group(task.pid.as_raw()).expect("watch");
        let mut lines = BufReader::new(task.stdout.expect("stdout piped")).lines();
        let untagged = lines.next().expect("line").expect("read");
        let daemon = lines.next().expect("line").expect("read");
        let cgroup_dir = parent
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| p.path().display().to_string());
        println!(
            "{} {untagged} {daemon} {} {cgroup_dir}",
            task.pid,
            watchdog.pid()
        );
        std::io::stdout().flush().expect("flush");
        loop {
            std::thread::park();
        }
    }

    /// A server that stops its task itself and disarms its watchdog before exiting.
    fn clean_server() {
        let instance = Instance::current().expect("instance");
        let mut watchdog =
            Watchdog::spawn(Path::new("/proc/self/exe"), &instance, None).expect("watchdog");
        let task = process::spawn(&sh(
            "exec sleep 1000",
            vec![(TAG_VAR.to_owned(), instance.tag(1))],
        ))
        .expect("spawn");
        watchdog.watch_group(task.pid.as_raw()).expect("watch");
        process::signal_group(task.pid, Signal::Kill).expect("kill");
        watchdog.unwatch_group(task.pid.as_raw()).expect("unwatch");
        process::reap(task.pid).expect("reap");
        let pid = watchdog.pid();
        watchdog.disarm(LONG).expect("disarm");
        println!("disarmed {pid}");
    }

    /// Starts this binary as `role`; its first line of output (within [`LONG`]), split on
    /// spaces.
    fn start(role: &str) -> (std::process::Child, Vec<String>) {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("stdout");
        let line = Lines::new(stdout, &format!("the {role}'s stdout")).line(LONG);
        (child, line.split_whitespace().map(str::to_owned).collect())
    }

    /// SIGKILLs whatever is left of the test's processes if it fails.
    struct Guard(Vec<PidFd>);

    impl Drop for Guard {
        fn drop(&mut self) {
            for pidfd in &self.0 {
                let _ = pidfd.send_signal(Signal::Kill);
            }
        }
    }

    fn killed_server_is_cleaned_up_after(use_cgroup: bool) {
        let (mut server, fields) = start(if use_cgroup {
            "server-cgroup"
        } else {
            "server"
        });
        let pids: Vec<i32> = fields[..4]
            .iter()
            .map(|f| f.parse().expect("pid"))
            .collect();
        let (task, untagged, daemon, watchdog) = (pids[0], pids[1], pids[2], pids[3]);
        let guard = Guard(
            pids.iter()
                .map(|&pid| PidFd::open(pid).expect("pidfd"))
                .collect(),
        );
        // The watchdog: its own session, stdout on /dev/null, stdin a pipe, no tag.
        let session = stat(watchdog).expect("the watchdog's stat").session;
        assert_eq!(session, watchdog, "the watchdog leads a session of its own");
        let fd = |n: u32| std::fs::read_link(format!("/proc/{watchdog}/fd/{n}")).expect("fd");
        assert_eq!(fd(1), PathBuf::from("/dev/null"));
        assert!(fd(0).to_string_lossy().starts_with("pipe:"), "{:?}", fd(0));
        assert_eq!(tag(watchdog), None, "the watchdog is tagged");

        server.kill().expect("SIGKILL the server");
        wait_child(&mut server, LONG, "the killed server");
        for (pidfd, what) in guard
            .0
            .iter()
            .zip(["task", "untagged", "daemon", "watchdog"])
        {
            assert!(
                pidfd.wait_timeout(LONG).expect("poll"),
                "{what} ({}) survived the server (cgroup: {use_cgroup})",
                pidfd.pid()
            );
        }
        // The watchdog and the task's processes were re-parented to us (a subreaper).
        let reaped = tree::reap_orphans(|_| false).expect("reap");
        let status = reaped
            .iter()
            .find(|(pid, _)| *pid == watchdog)
            .map(|(_, s)| *s);
        assert_eq!(status, Some(ExitStatus::Code(0)), "{reaped:?}");
        for pid in [task, untagged, daemon] {
            assert!(!proc_entry_exists(pid), "{pid} is left");
        }
        if let Some(dir) = fields.get(4).filter(|dir| *dir != "-") {
            assert!(!Path::new(dir).exists(), "{dir} was not removed");
        }
        drop(guard);
    }

    fn clean_exit_disarms_the_watchdog() {
        let (mut server, fields) = start("clean");
        assert_eq!(fields.first().map(String::as_str), Some("disarmed"));
        let status = wait_child(&mut server, LONG, "the clean server");
        assert!(status.success(), "{status}");
        let watchdog: i32 = fields[1].parse().expect("pid");
        assert!(!proc_entry_exists(watchdog), "the watchdog was not reaped");
    }
}

fn main() {
    #[cfg(target_os = "linux")]
    {
        proc_os::watchdog::run_if_requested();
        linux::main();
    }
}

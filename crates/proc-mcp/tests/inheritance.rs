//! What a task inherits from the server, checked on the real binary: only descriptors 0, 1 and
//! 2 (never ones leaked to the server), the soft `RLIMIT_NOFILE` the server was started with
//! (although the server raises its own); and it dies with the server.

mod support;

use std::time::Duration;

use proc_testkit::{id_of, is_alive, nofile_limits, open_fds, pid_of, wait_terminated};
use serde_json::json;
use support::Server;

/// The descriptors (by number) the leaking parent hands the server besides 0, 1 and 2.
const LEAKED: [i32; 2] = [100, 700];

#[test]
fn a_task_inherits_only_stdin_stdout_and_stderr() {
    for runtime in support::RUNTIMES {
        // A parent that leaks: the server starts with LEAKED open and not close-on-exec.
        let mut server = Server::start_with(runtime, &[], || {
            for fd in LEAKED {
                // SAFETY: dup2(2) between fork and exec; fd 0 is /dev/null here. The copy does
                // not have FD_CLOEXEC.
                if unsafe { nix::libc::dup2(0, fd) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
        let server_fds = open_fds(server.pid());
        for fd in LEAKED {
            assert!(
                server_fds.contains(&fd),
                "{runtime}: the server should have inherited fd {fd}: {server_fds:?}"
            );
        }

        // Looked at once it is settled: while a program starts, the dynamic loader briefly
        // holds descriptors of its own. (The trailing `exit` keeps the shell from exec'ing
        // `sleep`, which would start loading again.)
        let task = server.call("start", json!({"command": "echo ready; sleep 1000; exit"}));
        let pid = pid_of(&task);
        server.wait_for_line(&id_of(&task), "ready");
        assert_eq!(open_fds(pid), vec![0, 1, 2], "{runtime}: fds of task {pid}");

        // The same through a shell, from the inside: `ls` lists its own fds plus the
        // directory it reads, which is the lowest free number, 3.
        let task = server.call("start", json!({"command": "ls /proc/self/fd"}));
        let id = id_of(&task);
        server.wait_exited(&id);
        assert_eq!(
            server.log_texts(&id),
            vec!["0", "1", "2", "3"],
            "{runtime}: `ls /proc/self/fd` in a task"
        );
        server.finish();
    }
}

#[test]
fn a_task_gets_the_open_files_limit_the_server_was_started_with() {
    let (_, hard) = nofile_limits(i32::try_from(std::process::id()).expect("pid"));
    // A soft limit the server must raise to run the many tasks below.
    let soft = 256.min(hard / 2);
    for runtime in support::RUNTIMES {
        let mut server = Server::start_with(runtime, &[], move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
                .map_err(std::io::Error::from)
        });
        assert_eq!(
            nofile_limits(server.pid()),
            (hard, hard),
            "{runtime}: the server raises its soft limit to the hard one"
        );

        let task = server.call("start", json!({"command": "ulimit -n; ulimit -Hn"}));
        let id = id_of(&task);
        server.wait_exited(&id);
        assert_eq!(
            server.log_texts(&id),
            vec![soft.to_string(), hard.to_string()],
            "{runtime}: `ulimit -n; ulimit -Hn` in a task"
        );

        // More pipes than the original soft limit allows descriptors: every task starts.
        if hard >= 1024 {
            let count = usize::try_from(soft).expect("small");
            let pids: Vec<i32> = (0..count)
                .map(|_| {
                    let task = server.call("start", json!({"command": "sleep", "args": ["1000"]}));
                    pid_of(&task)
                })
                .collect();
            assert_eq!(pids.len(), count);
            let fds = open_fds(server.pid()).len();
            assert!(
                fds > usize::try_from(soft).expect("small"),
                "{runtime}: {fds} descriptors open"
            );
        }
        server.finish();
    }
}

#[test]
fn tasks_die_with_the_server() {
    for runtime in support::RUNTIMES {
        let mut server = Server::start(runtime);
        let task = server.call("start", json!({"command": "sleep", "args": ["1000"]}));
        let pid = pid_of(&task);
        assert!(is_alive(pid));
        // SIGKILL: the server cannot stop anything itself; its watchdog does.
        server.kill();
        assert!(
            wait_terminated(pid, Duration::from_secs(10)),
            "{runtime}: task {pid} outlived its server"
        );
    }
}

//! Inspections with real processes (`inspect`): what runs use, their listening sockets, and the
//! processes that left their group. Linux only; the tasks are small Python programs
//! (`python3` on the `PATH`).
//!
//! In a test binary of their own, as the process tree tests: they spawn many processes and read
//! much of `/proc`.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proc_os::contain::{ContainOptions, Containment};
use proc_os::inspect::{Inspector, Request};
use proc_os::testutil::{Task, sh, spec, wait_exited, wait_until};
use proc_state::{Listener, Protocol, RunId, Signal, Usage};

const LONG: Duration = Duration::from_secs(20);

/// `python3 -c program`.
fn python(program: &str) -> Task {
    Task::spawn(&spec("python3", &["-c", program]))
}

/// Inspects `runs` (with their process groups) without looking for escaped processes.
fn inspect(runs: &[(RunId, u32)]) -> Vec<(RunId, Usage)> {
    Inspector::new().inspect(&Request {
        runs: runs.to_vec(),
        escaped: None,
    })
}

/// The usage of the one run asked about.
#[track_caller]
fn usage_of(task: &Task) -> Usage {
    let run = RunId(1);
    let mut answer = inspect(&[(run, task.pgid())]);
    assert_eq!(answer.len(), 1, "{answer:?}");
    let (answered, usage) = answer.pop().expect("one");
    assert_eq!(answered, run);
    usage
}

fn tcp(address: [u8; 4], port: u16) -> Listener {
    Listener {
        protocol: Protocol::Tcp,
        address: IpAddr::from(address),
        port,
    }
}

/// A Python program that listens on `kind` (`"tcp"` or `"udp"`) at `host`, any port, prints
/// the port, then sleeps.
fn listen(kind: &str, family: &str, host: &str) -> String {
    let socket_type = if kind == "tcp" {
        "SOCK_STREAM"
    } else {
        "SOCK_DGRAM"
    };
    let listen = if kind == "tcp" { "s.listen()" } else { "pass" };
    format!(
        "import socket, time\n\
         s = socket.socket(socket.{family}, socket.{socket_type})\n\
         s.bind(('{host}', 0))\n\
         {listen}\n\
         print(s.getsockname()[1], flush=True)\n\
         time.sleep(1000)\n"
    )
}

#[test]
fn a_tcp_listener_is_reported_with_its_address_and_port() {
    let mut task = python(&listen("tcp", "AF_INET", "127.0.0.1"));
    let port = task.parsed_line::<u16>(LONG);
    let usage = usage_of(&task);
    assert_eq!(usage.processes, 1, "{usage:?}");
    assert_eq!(
        usage.listening,
        vec![tcp([127, 0, 0, 1], port)],
        "{usage:?}"
    );
    assert!(
        usage.rss_bytes > 1_000_000,
        "a Python has some memory: {usage:?}"
    );
}

#[test]
fn a_bound_udp_socket_and_an_ipv6_listener_are_reported() {
    let mut udp = python(&listen("udp", "AF_INET", "0.0.0.0"));
    let udp_port = udp.parsed_line::<u16>(LONG);
    let usage = usage_of(&udp);
    assert_eq!(
        usage.listening,
        vec![Listener {
            protocol: Protocol::Udp,
            address: IpAddr::from([0, 0, 0, 0]),
            port: udp_port,
        }],
        "{usage:?}"
    );

    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("no IPv6 loopback here: the IPv6 part is skipped");
        return;
    }
    let mut tcp6 = python(&listen("tcp", "AF_INET6", "::1"));
    let tcp6_port = tcp6.parsed_line::<u16>(LONG);
    let usage = usage_of(&tcp6);
    assert_eq!(
        usage.listening,
        vec![Listener {
            protocol: Protocol::Tcp,
            address: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            port: tcp6_port,
        }],
        "{usage:?}"
    );
}

#[test]
fn a_connected_socket_does_not_listen() {
    // A client connected to a server of ours: its socket is established, not listening.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let mut task = python(&format!(
        "import socket, time\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         u.connect(('127.0.0.1', {port}))\n\
         print('connected', flush=True)\n\
         time.sleep(1000)\n"
    ));
    let (_accepted, _) = server.accept().expect("accept");
    assert_eq!(task.line(LONG), "connected");
    let usage = usage_of(&task);
    assert_eq!(usage.processes, 1);
    assert_eq!(usage.listening, vec![], "{usage:?}");
}

#[test]
fn two_processes_of_a_group_with_a_port_each_report_both_sorted() {
    let program = listen("tcp", "AF_INET", "127.0.0.1").replace('\n', "; ");
    let mut task = Task::spawn(&sh(&format!(
        "python3 -c \"{program}\" & python3 -c \"{program}\" & wait"
    )));
    let mut ports = [task.parsed_line::<u16>(LONG), task.parsed_line::<u16>(LONG)];
    ports.sort_unstable();
    let usage = usage_of(&task);
    // The shell and its two Pythons.
    assert_eq!(usage.processes, 3, "{usage:?}");
    assert_eq!(
        usage.listening,
        vec![tcp([127, 0, 0, 1], ports[0]), tcp([127, 0, 0, 1], ports[1])],
        "{usage:?}"
    );
}

#[test]
fn forked_workers_sharing_a_socket_report_it_once() {
    let mut task = python(
        "import os, socket, time\n\
         s = socket.socket()\n\
         s.bind(('127.0.0.1', 0))\n\
         s.listen()\n\
         for _ in range(3):\n\
         \x20   if os.fork() == 0:\n\
         \x20       time.sleep(1000)\n\
         print(s.getsockname()[1], flush=True)\n\
         time.sleep(1000)\n",
    );
    let port = task.parsed_line::<u16>(LONG);
    let usage = usage_of(&task);
    assert_eq!(usage.processes, 4, "{usage:?}");
    assert_eq!(
        usage.listening,
        vec![tcp([127, 0, 0, 1], port)],
        "{usage:?}"
    );
}

#[test]
fn resident_memory_is_counted() {
    let mut task = python(
        "import time\n\
         x = bytearray(50_000_000)\n\
         print('allocated', flush=True)\n\
         time.sleep(1000)\n",
    );
    assert_eq!(task.line(LONG), "allocated");
    let usage = usage_of(&task);
    let vm_rss = proc_os::testutil::vm_kib(task.pgid(), "VmRSS") * 1024;
    assert!(usage.rss_bytes >= 45_000_000, "{usage:?}");
    // The same counter as VmRSS, read a moment apart.
    let apart = usage.rss_bytes.abs_diff(vm_rss);
    assert!(
        apart < 5_000_000,
        "{} bytes, VmRSS {vm_rss}",
        usage.rss_bytes
    );
}

#[test]
fn cpu_time_grows_while_a_process_is_busy() {
    let mut task = python("print('busy', flush=True)\nwhile True: pass\n");
    assert_eq!(task.line(LONG), "busy");
    let first = usage_of(&task).cpu_ms;
    let mut last = first;
    assert!(
        wait_until(LONG, || {
            last = usage_of(&task).cpu_ms;
            last >= first + 200
        }),
        "CPU time from {first} ms to only {last} ms"
    );
    // An idle process stays near zero.
    let idle = Task::spawn(&spec("sleep", &["1000"]));
    assert!(usage_of(&idle).cpu_ms < 100);
}

#[test]
fn runs_are_answered_in_order_and_those_with_nothing_left_are_left_out() {
    let first = Task::spawn(&spec("sleep", &["1000"]));
    let gone = Task::spawn(&spec("true", &[]));
    // Exited, not reaped: its group id stays reserved, and has no live process.
    wait_exited(gone.pid);
    let second = Task::spawn(&sh("sleep 1000 & sleep 1000 & wait"));
    assert!(
        wait_until(LONG, || proc_os::testutil::group_members(
            second.pid.as_raw()
        )
        .len()
            == 3),
        "the shell's two sleeps did not start"
    );
    let runs = [
        (RunId(9), second.pgid()),
        (RunId(4), gone.pgid()),
        (RunId(2), first.pgid()),
    ];
    let answer = inspect(&runs);
    let order: Vec<(RunId, u32)> = answer
        .iter()
        .map(|(run, usage)| (*run, usage.processes))
        .collect();
    assert_eq!(order, vec![(RunId(9), 3), (RunId(2), 1)], "{answer:?}");
}

#[test]
fn processes_that_left_the_group_count_for_their_run() {
    let mut containment = Containment::start(&ContainOptions::default());
    let run = RunId(5);
    let mut task_spec = sh(&format!(
        "setsid python3 -c \"{}\" & echo started; exec sleep 1000",
        listen("tcp", "AF_INET", "127.0.0.1").replace('\n', "; ")
    ));
    task_spec
        .env
        .push(containment.tag(run).expect("this process's instance"));
    let mut task = Task::spawn(&task_spec);
    // The shell's line and the daemon's port, in either order.
    let lines = [task.line(LONG), task.line(LONG)];
    assert!(lines.contains(&"started".to_owned()), "{lines:?}");
    let port: u16 = lines
        .iter()
        .find_map(|line| line.parse().ok())
        .unwrap_or_else(|| panic!("no port in {lines:?}"));
    let runs = vec![(run, task.pgid())];

    // Without looking for them, only the group.
    let alone = inspect(&runs);
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].1.processes, 1, "{alone:?}");
    assert_eq!(alone[0].1.listening, vec![], "{alone:?}");

    // With the sweep's plan, the daemon too, with its port.
    let plan = containment.sweep_plan(&runs.iter().copied().collect::<BTreeMap<_, _>>());
    assert!(plan.is_some());
    let answer = Inspector::new().inspect(&Request {
        runs: runs.clone(),
        escaped: plan,
    });
    assert_eq!(answer.len(), 1);
    let usage = &answer[0].1;
    assert_eq!(usage.processes, 2, "{usage:?}");
    assert_eq!(
        usage.listening,
        vec![tcp([127, 0, 0, 1], port)],
        "{usage:?}"
    );

    // The sweep finds the same daemon.
    let swept = containment.sweep(&runs.iter().copied().collect());
    assert_eq!(swept.len(), 1, "{swept:?}");
    let daemon = swept[0].1.open_pidfd().expect("pidfd").expect("alive");
    drop(task);
    daemon.send_signal(Signal::Kill).expect("kill the daemon");
    assert!(
        daemon.wait_timeout(LONG).expect("poll"),
        "the daemon lives on"
    );
}

/// What an inspection of 300 runs of one `sleep` each costs: `cargo test -p proc-os --release
/// --test inspect -- --ignored --nocapture inspection_cost`.
#[test]
#[ignore = "a measurement, not a test"]
fn inspection_cost() {
    let containment = Containment::start(&ContainOptions::default());
    let tasks: Vec<Task> = (0..300)
        .map(|run| {
            let mut sleep = spec("sleep", &["1000"]);
            sleep.env.extend(containment.tag(RunId(run)));
            Task::spawn(&sleep)
        })
        .collect();
    let runs: Vec<(RunId, u32)> = tasks
        .iter()
        .zip(0..)
        .map(|(task, run)| (RunId(run), task.pgid()))
        .collect();
    let processes = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    // Someone listening, so that every run's descriptors are read too.
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut inspector = Inspector::new();
    for escaped in [false, true] {
        let request = Request {
            runs: runs.clone(),
            escaped: escaped
                .then(|| containment.sweep_plan(&runs.iter().copied().collect()))
                .flatten(),
        };
        let rounds = 20;
        let start = Instant::now();
        let cpu = thread_cpu_time();
        let mut answered = 0;
        for _ in 0..rounds {
            answered = inspector.inspect(&request).len();
        }
        println!(
            "inspection of {} runs ({answered} answered, {processes} processes on the system, \
             escaped processes looked for: {escaped}): {:?} each, {:?} of CPU",
            runs.len(),
            start.elapsed() / rounds,
            (thread_cpu_time() - cpu) / rounds,
        );
    }
    drop(tasks);
}

/// The CPU time this thread has used (clock_gettime(2) `CLOCK_THREAD_CPUTIME_ID`): what an
/// inspection costs whatever else the machine does.
fn thread_cpu_time() -> Duration {
    use nix::libc;
    // SAFETY: an all-zero timespec is valid, and clock_gettime(2) only writes it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Duration::new(now.tv_sec.unsigned_abs(), now.tv_nsec.unsigned_abs() as u32)
}

//! # proc-os: the OS side of proc-mcp, shared by its drivers
//!
//! Everything the drivers (`proc-smol`, `proc-async-std`) need that does not depend on which
//! async runtime runs them:
//!
//! - [`process`]: spawning a task as the leader of its own session and process group
//!   (setsid(2)), with default signal dispositions, only descriptors 0, 1 and 2, and the
//!   original open-files limit, its standard streams on pipes or on a new pseudo-terminal
//!   (pty(7)) that is its controlling terminal, with glibc's posix_spawn(3) (and a small child of our own,
//!   confined to one module, only to start a task inside a cgroup, which glibc before 2.41
//!   cannot);
//!   signalling its group (killpg(3), `ESRCH` is not an error); seeing its exit without reaping
//!   it (waitid(2) `WNOWAIT`), and reaping it (waitpid(2)).
//! - [`fd`]: marking every inherited descriptor from 3 up close-on-exec in a forked child
//!   (close_range(2) `CLOSE_RANGE_CLOEXEC`, with fallbacks).
//! - [`rlimit`]: raising the server's soft `RLIMIT_NOFILE` to the hard limit at startup, and
//!   giving each task the original soft limit back, as Go's os/exec does.
//! - [`signal`]: the core's [`proc_state::Signal`] names and the platform's numbers.
//! - [`runs`]: the table of live runs behind the core's `Spawn`, `Signal` and `Release`
//!   outputs and its `Exited` inputs.
//! - [`input`]: whether a run's foreground process waits for input (the core's
//!   `QueryInput`): on Linux, the system calls its threads are blocked in, through `/proc`
//!   (proc(5)), and the terminal's foreground process group (tcgetpgrp(3)).
//! - [`probe`]: the core's `Probe`s: a TCP connection to a local port on the reactor, or an
//!   HTTP/1.1 `GET` of an `http://` URL (RFC 9110) with [`ureq`] on the blocking thread pool
//!   ([`blocking`]), no proxy, no redirect followed, the status code as the answer.
//! - `inspect` (Linux): the core's `Inspect`: what each run's processes (its process group and
//!   those that left it, found as sweeps find them) use now: how many, CPU time, resident
//!   memory, listening TCP and UDP sockets, read from `/proc` (proc(5)) with [`procfs`], once
//!   per inspection for all the runs asked about, off the loop.
//! - [`pipes`]: reading tasks' pipes (and terminals' master sides, where `EIO` is
//!   end-of-file) with bounded memory (a pool of 64 KiB buffers).
//! - [`stdio`]: the client's side: stdin read by one blocking thread, stdout written with
//!   blocking writes (neither is made non-blocking: both are shared with the client).
//! - `tree` (Linux): what a task spawned even after it left its process group: the inherited
//!   tag `PROC_MCP_TAG` found through `/proc`, pidfds that never hit a reused pid, the child
//!   subreaper role and the reaping of orphans.
//! - `cgroup` (Linux): one cgroup v2 per run where the server's cgroup is writable (detection,
//!   `cgroup.kill`, starting a task in its cgroup with [`process::spawn_placed`]).
//! - `watchdog` (Linux): the process, one per server, that kills everything the server started
//!   when the server dies without cleaning up.
//! - [`driver`]: the event loop of the proc-state driver contract, written once; a driver crate
//!   only implements [`driver::Runtime`] (spawn a task, sleep until a deadline, block on a
//!   future) and calls [`driver::serve_stdio`] with it.
//!
//! The async parts use [`async_io`] for pipes (the reactor under both smol and async-std),
//! [`async_channel`] for channels, [`async_signal`] for signals and [`blocking`] for the work
//! that can only block (HTTP probes, inspections), none of which ties them to an executor.
//! Diagnostics go to stderr, prefixed `proc-mcp:`; nothing here writes to stdout except
//! [`stdio::ClientWriter`].
//!
//! Linux with glibc 2.34 or later (posix_spawn's `POSIX_SPAWN_SETSID`, `addchdir_np` and
//! `addclosefrom_np`).

#![warn(missing_docs)]

#[cfg(target_os = "linux")]
pub mod cgroup;
mod cgroup_child;
#[cfg(target_os = "linux")]
pub mod contain;
pub mod driver;
pub mod fd;
pub mod input;
#[cfg(target_os = "linux")]
pub mod inspect;
pub mod pipes;
pub mod probe;
pub mod process;
pub mod rlimit;
pub mod runs;
pub mod signal;
pub mod stdio;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
#[cfg(target_os = "linux")]
pub mod tree;
#[cfg(target_os = "linux")]
pub mod watchdog;

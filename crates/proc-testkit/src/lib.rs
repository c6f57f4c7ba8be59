//! # proc-testkit: the test kit of proc-mcp
//!
//! What the tests of every layer need to look at processes from the outside and to wait without
//! hanging, written once: the unit and integration tests of `proc-os` (through its `testutil`),
//! the binary's tests in `proc-mcp`, and the end-to-end tests and benches of the suite. Not
//! published; not a stable API. Linux only: it reads `/proc` (proc(5)) and uses pidfds
//! (pidfd_open(2), Linux 5.3).
//!
//! - [`procfs`]: processes as `/proc` shows them: the fields of `/proc/<pid>/stat`, process
//!   groups, a process named for good by its pid and start time ([`Proc`]), the tag
//!   `PROC_MCP_TAG` a task's processes inherit, a server's watchdog, open descriptors, limits,
//!   memory.
//! - [`wait`]: every wait bounded by a timeout, so that a bug fails the test with a message
//!   instead of hanging it: a process's termination (by pidfd, an event, not a poll), a process
//!   group emptying, a child's exit, a channel, a blocking call run on a thread, the lines of a
//!   pipe, and polling a condition that has no event to wait on.
//! - [`json`]: the fields of tool results the tests read (`pid`, `id`, the texts of `logs`).

pub mod json;
pub mod procfs;
pub mod wait;

pub use json::{id_of, pid_of, texts};
pub use procfs::{
    Proc, Stat, TAG_VAR, WATCHDOG_ARG, cmdline, describe, environ_var, group_exists, group_members,
    is_alive, live_group_members, nofile_limits, open_fds, proc_entry_exists, processes, stat, tag,
    tagged_by, vm_kib, watchdog_of,
};
pub use wait::{
    Lines, POLL_INTERVAL, eventually, recv_within, wait_child, wait_for, wait_group_gone,
    wait_terminated, wait_until, within,
};

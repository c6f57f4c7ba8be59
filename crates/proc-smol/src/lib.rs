//! # proc-smol: the smol driver of proc-mcp
//!
//! Runs the sans-IO core ([`proc_state::Server`]) against the real world on the
//! [smol](https://docs.rs/smol) runtime, the primary runtime of proc-mcp: it reads MCP messages
//! from stdin and writes the core's lines to stdout, spawns each task in its own session and
//! process group, pumps the tasks' stdout and stderr into the core, reports their exits,
//! signals their process groups, and keeps the core's one timer. The whole API is
//! [`serve_stdio`].
//!
//! The work is shared with the other drivers through `proc-os` (spawning, signals, reaping,
//! descriptor and rlimit hygiene, pipes, the event loop itself); this crate supplies smol's
//! parts: a [`smol::LocalExecutor`] on the calling thread for the loop and the tasks that read
//! pipes, and [`smol::Timer`] for the core's timer.
//!
//! ## How the OS is used
//! - **Spawning** (posix_spawn(3) with `POSIX_SPAWN_SETSID`): each task is the leader of a new
//!   session and process group (pid == pgid), with stdin `/dev/null` (or a pipe), stdout and
//!   stderr pipes, and default signal dispositions; the watchdog ends it if the server dies.
//! - **Descriptors and limits** (close_range(2), setrlimit(2)): a task inherits fds 0, 1 and 2
//!   only; every other descriptor is marked close-on-exec in the child before exec, including
//!   any that were leaked to the server by whoever started it. The server raises its soft
//!   `RLIMIT_NOFILE` to the hard limit at startup and gives each task the original soft limit
//!   back (as Go's os/exec does).
//! - **Output**: both pipes are read concurrently in 64 KiB chunks into a small shared pool of
//!   buffers; when the core falls behind, readers wait for a buffer and a flooding child blocks
//!   on its full pipe (bounded memory, no thread per task).
//! - **Exits** (waitid(2)): on SIGCHLD each live run is checked with
//!   `WEXITED | WNOHANG | WNOWAIT`: the exit is reported but the zombie is kept, so its pid and
//!   process group id stay reserved and killpg(3) can never reach a stranger. The process is
//!   reaped (waitpid(2)) only when the core releases the run.
//! - **Client**: stdin is read by one blocking thread and stdout written with blocking writes;
//!   neither is made non-blocking, as both are shared with the parent. Nothing but the core's
//!   lines goes to stdout; diagnostics go to stderr.
//! - **Signals to the server**: SIGTERM and SIGINT become [`proc_state::Input::Terminate`],
//!   each time.

#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::rc::Rc;

pub use proc_os::contain::ContainOptions;
use proc_os::driver::{self, Runtime};
use smol::{LocalExecutor, Task, Timer};

/// Serves MCP over this process's stdin and stdout until the core has stopped every task (after
/// the client closed stdin, or after SIGTERM/SIGINT): [`proc_os::driver::serve_stdio`], whose
/// documentation gives the behaviour, the errors and what `contain` means, run on a
/// [`smol::LocalExecutor`] on the calling thread (the loop and the tasks that read pipes) with
/// [`smol::Timer`].
///
/// # Errors
/// Only for failures to set up (see [`proc_os::driver::serve_stdio`]).
pub fn serve_stdio(config: proc_state::Config, contain: ContainOptions) -> io::Result<()> {
    driver::serve_stdio(config, contain, Smol::default())
}

/// smol's parts for the shared loop: tasks on a local executor on the loop's thread (a
/// [`smol::Task`] cancels its future when dropped), [`smol::Timer`], and [`smol::block_on`]
/// running that executor.
#[derive(Clone, Default)]
struct Smol(Rc<LocalExecutor<'static>>);

impl Runtime for Smol {
    type Task = Task<()>;

    fn spawn<F>(&self, future: F) -> Task<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(future)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> impl Future<Output = ()> + use<> {
        async move {
            Timer::at(deadline).await;
        }
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        smol::block_on(self.0.run(future))
    }
}

#[cfg(test)]
mod tests {
    proc_os::driver_tests!(super::Smol::default);
}

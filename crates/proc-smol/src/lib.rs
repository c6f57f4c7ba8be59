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
//! - **Spawning** (setsid(2), prctl(2)): each task is the leader of a new session and process
//!   group (pid == pgid), with stdin `/dev/null` (or a pipe), stdout and stderr pipes, default
//!   signal dispositions, and on Linux `SIGKILL` as its parent-death signal.
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
use std::io::{self, Write};

pub use proc_os::contain::ContainOptions;
use proc_os::driver::{self, Runtime, Session};
use smol::{LocalExecutor, Task, Timer};

/// Serves MCP over this process's stdin and stdout until the core has stopped every task and
/// says [`proc_state::Output::Exit`] (after the client closed stdin, or after SIGTERM/SIGINT).
///
/// While it runs it handles SIGCHLD, SIGTERM and SIGINT (registered through `async-signal`,
/// removed on return), runs on the calling thread (which must live until it returns: on Linux
/// the tasks' parent-death signal is tied to it), and reads stdin on one extra thread, which
/// ends at its next read after this returns. Task ids come from `nanoid` (6 characters).
/// A `config.cwd` of `"."` (the default) is replaced by the real working directory.
///
/// At startup it raises this process's soft limit on open files (`RLIMIT_NOFILE`) to the hard
/// limit, so that about a thousand tasks with their pipes fit; every task gets the original
/// soft limit back, and inherits no file descriptor but 0, 1 and 2.
///
/// # Errors
/// Only for failures to set up: the signal handlers or the stdin thread could not be created.
/// Everything that goes wrong later (a task that cannot be spawned, a client that goes away)
/// is handled by the core or reported on stderr.
///
/// `contain` says how the tasks' processes are kept within reach (see `proc_os::contain`): a
/// server process wants [`ContainOptions::all`].
pub fn serve_stdio(config: proc_state::Config, contain: ContainOptions) -> io::Result<()> {
    let session = Session::open(io::stdin())?.contain(contain);
    run(session, driver::startup(config), io::stdout())
}

#[cfg(test)]
/// Serves MCP with the client's messages read from `input` and the core's lines written to
/// `output`, on a local executor on the calling thread.
fn serve<R, W>(config: proc_state::Config, input: R, output: W) -> io::Result<()>
where
    R: std::io::Read + Send + 'static,
    W: Write + Send + 'static,
{
    run(Session::open(input)?, config, output)
}

/// Runs `session` on a local executor on the calling thread.
fn run<W>(session: Session, config: proc_state::Config, output: W) -> io::Result<()>
where
    W: Write + Send + 'static,
{
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(session.serve(config, output, Smol(&executor))))
}

/// smol's parts for the shared loop: tasks on the loop's local executor (a [`smol::Task`]
/// cancels its future when dropped), and [`smol::Timer`].
struct Smol<'ex>(&'ex LocalExecutor<'static>);

impl Runtime for Smol<'_> {
    type Task = Task<()>;

    fn spawn<F>(&self, future: F) -> Task<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(future)
    }

    async fn sleep_until(&self, deadline: std::time::Instant) {
        Timer::at(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    proc_os::driver_tests!(super::serve);
}

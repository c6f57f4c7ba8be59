//! # proc-async-std: the async-std driver of proc-mcp
//!
//! The same server as `proc-smol`, with the same API ([`serve_stdio`]), on
//! [async-std](https://docs.rs/async-std). async-std is discontinued upstream (its maintainers
//! recommend smol), so this crate is kept a thin adapter: everything but the executor and the
//! timer is `proc-os`, shared with `proc-smol` — spawning tasks in their own session and
//! process group, descriptor and rlimit hygiene, killpg, waitid(`WNOWAIT`), reaping, reading
//! pipes with bounded memory, the client's stdin and stdout, and the event loop of the
//! proc-state driver contract. The behaviour, the diagnostics on stderr and the guarantees are
//! those described in `proc-smol`'s documentation.
//!
//! What async-std supplies:
//! - the loop runs in [`async_std::task::block_on`] on the calling thread (where tasks are
//!   spawned, which ties their parent-death signal to it);
//! - the tasks that read pipes and forward signals run on async-std's global executor
//!   ([`async_std::task::spawn`]); as its `JoinHandle` detaches when dropped, each is wrapped
//!   with [`proc_os::driver::abort_on_drop`] so that releasing a run stops its readers;
//! - the core's timer is [`async_std::task::sleep`].
//!
//! Pipes are watched by `async-io`, which is async-std's own reactor, so no second reactor
//! runs.

#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, Write};
use std::time::Instant;

pub use proc_os::contain::ContainOptions;
use proc_os::driver::{self, AbortOnDrop, Runtime, Session};

/// Serves MCP over this process's stdin and stdout until the core has stopped every task and
/// says [`proc_state::Output::Exit`] (after the client closed stdin, or after SIGTERM/SIGINT).
///
/// Behaves as `proc_smol::serve_stdio`: while it runs it handles SIGCHLD, SIGTERM and SIGINT
/// (registered through `async-signal`, removed on return), runs its loop on the calling thread
/// (which must live until it returns: on Linux the tasks' parent-death signal is tied to it),
/// and reads stdin on one extra thread, which ends at its next read after this returns; the
/// tasks that read the tasks' pipes run on async-std's global executor threads. Task ids come
/// from `nanoid` (6 characters). A `config.cwd` of `"."` (the default) is replaced by the real
/// working directory.
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
/// `output`, with the loop on the calling thread.
fn serve<R, W>(config: proc_state::Config, input: R, output: W) -> io::Result<()>
where
    R: std::io::Read + Send + 'static,
    W: Write + Send + 'static,
{
    run(Session::open(input)?, config, output)
}

/// Runs `session` with its loop on the calling thread.
fn run<W>(session: Session, config: proc_state::Config, output: W) -> io::Result<()>
where
    W: Write + Send + 'static,
{
    async_std::task::block_on(session.serve(config, output, AsyncStd))
}

/// async-std's parts for the shared loop.
struct AsyncStd;

impl Runtime for AsyncStd {
    type Task = AbortOnDrop;

    fn spawn<F>(&self, future: F) -> AbortOnDrop
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (future, abort) = driver::abort_on_drop(future);
        // Dropping the JoinHandle detaches the task; `abort` is what stops it.
        drop(async_std::task::spawn(future));
        abort
    }

    async fn sleep_until(&self, deadline: Instant) {
        async_std::task::sleep(deadline.saturating_duration_since(Instant::now())).await;
    }
}

#[cfg(test)]
mod tests {
    proc_os::driver_tests!(super::serve);
}

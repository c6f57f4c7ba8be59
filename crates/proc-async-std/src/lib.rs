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
//!   spawned);
//! - the tasks that read pipes and forward signals run on async-std's global executor
//!   ([`async_std::task::spawn`]); as its `JoinHandle` detaches when dropped, each is wrapped
//!   with [`proc_os::driver::abort_on_drop`] so that releasing a run stops its readers;
//! - the core's timer is [`async_std::task::sleep`].
//!
//! Pipes are watched by `async-io`, which is async-std's own reactor, so no second reactor
//! runs.

#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::time::Instant;

pub use proc_os::contain::ContainOptions;
use proc_os::driver::{self, AbortOnDrop, Runtime};

/// Serves MCP over this process's stdin and stdout until the core has stopped every task (after
/// the client closed stdin, or after SIGTERM/SIGINT): [`proc_os::driver::serve_stdio`], whose
/// documentation gives the behaviour, the errors and what `contain` means, with the loop in
/// [`async_std::task::block_on`] on the calling thread and the tasks that read the tasks'
/// pipes on async-std's global executor threads.
///
/// # Errors
/// Only for failures to set up (see [`proc_os::driver::serve_stdio`]).
pub fn serve_stdio(config: proc_state::Config, contain: ContainOptions) -> io::Result<()> {
    driver::serve_stdio(config, contain, AsyncStd)
}

/// async-std's parts for the shared loop.
#[derive(Clone, Copy, Default)]
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

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + use<> {
        async move {
            async_std::task::sleep(deadline.saturating_duration_since(Instant::now())).await;
        }
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        async_std::task::block_on(future)
    }
}

#[cfg(test)]
mod tests {
    proc_os::driver_tests!(super::AsyncStd::default);
}

//! # proc-state: the sans-IO core of proc-mcp
//!
//! proc-mcp is an MCP server that starts, watches and stops background processes for AI
//! assistants. This crate is all of its behaviour and none of its I/O: the MCP session and its
//! JSON-RPC framing, the tools, every task's lifecycle and its output buffer. It never reads a
//! clock, draws a random number, touches a file descriptor or starts a thread; a *driver*
//! (`proc-smol`, `proc-async-std`) does those things and feeds what happened into one
//! [`Server`]. The same inputs (and the same id generator) always give byte-identical outputs,
//! which is what makes the core testable on virtual time, fuzzable, and buildable for
//! `wasm32-wasip1`.
//!
//! ## The driver contract
//!
//! 1. Wait for one event: bytes from the client, a task's output, a task's exit, a line written
//!    to the client, the timer. A deadline that has already passed is that event: handle it
//!    before waiting for anything else, so timers fire on time however busy the other sources
//!    are.
//! 2. Feed exactly that event with [`Server::handle_input`] (or [`Server::handle_timeout`]) and
//!    the current [`Now`].
//! 3. Drain [`Server::poll_output`] until it returns [`Output::Timeout`], carrying out each
//!    output in order (queue a line for the client, spawn, signal a process group, write to a
//!    stdin, look for escaped processes, release a run). Nothing in this step may block on the
//!    client or on a task: lines are written to the client by a writer of their own, stdin
//!    writes take only what the pipe holds now.
//! 4. Arm the one timer at the returned deadline (none if `None`) and go to 1.
//!
//! Backpressure, both ways, is explicit. The driver reports every line it wrote to the client
//! ([`Input::Transmitted`]); while the client is behind by more than
//! [`Config::max_client_backlog_bytes`], [`Server::wants_client_bytes`] is `false` and the
//! driver stops reading the client (task output, exits, timers and signals go on). A task's
//! stdin gets only what its pipe takes at once ([`Output::WriteStdin`]); the rest waits in the
//! core, bounded, until the driver says the pipe has room ([`Input::StdinReady`]).
//!
//! Before it signals a run's process group, the driver checks whether the leader has already
//! exited (`waitid(WNOWAIT)`); if so, it reports that exit at once, saying no signal reached the
//! leader alive ([`Input::Exited`]'s `signalled`), so a task that ended on its own is never
//! reported as stopped.
//!
//! Inputs about runs the core no longer knows (a late exit after [`Output::Release`], output from
//! a process that was restarted) are expected races: they are ignored, never a panic. A timeout
//! that fires early or twice is a no-op.
//!
//! ```no_run
//! use proc_state::{Config, Input, Instant, Now, Output, Server};
//! # enum Event { Client(Vec<u8>), Written(usize), Timer }
//! # fn clock() -> Now { unimplemented!() }
//! # fn next_event(_deadline: Option<Instant>, _read_client: bool) -> Event { unimplemented!() }
//! # fn queue_for_client(_line: Vec<u8>) {}
//! let mut server = Server::new(Config::default(), Box::new(|| "abc123".to_owned()));
//! let mut deadline: Option<Instant> = None;
//! loop {
//!     // 1. one event: a deadline that has passed first, else whatever comes (client bytes
//!     //    only while the core wants them)
//!     let event = if deadline.is_some_and(|at| at <= clock().instant) {
//!         Event::Timer
//!     } else {
//!         next_event(deadline, server.wants_client_bytes())
//!     };
//!     // 2. feed it
//!     let now = clock();
//!     match event {
//!         Event::Client(bytes) => server.handle_input(now, Input::ClientBytes(&bytes)),
//!         Event::Written(bytes) => server.handle_input(now, Input::Transmitted { bytes }),
//!         Event::Timer => server.handle_timeout(now),
//!     }
//!     // 3. drain
//!     loop {
//!         match server.poll_output() {
//!             Output::Transmit(line) => queue_for_client(line),
//!             Output::Exit => return,
//!             Output::Timeout(next) => {
//!                 // 4. arm the timer
//!                 deadline = next;
//!                 break;
//!             }
//!             _other => { /* spawn, signal, stdin, sweeps, release: the driver's job */ }
//!         }
//!     }
//! }
//! ```
//!
//! ## Writing a driver
//!
//! A driver owns one [`Server`] and everything the core does not: clocks, processes, pipes,
//! signals, the client's stdio. Two exist. `proc-os` is the production one, on any async
//! runtime (`proc-smol`, `proc-async-std`). `examples/std_driver.rs`, at the workspace root, is
//! a complete driver in one file on std threads, channels and poll(2), with no async runtime,
//! written to be read next to this section (`cargo run --example std_driver` serves MCP over
//! stdio; `tests/embedding.rs` runs the end-to-end suite's main scenario against it).
//!
//! **The loop.** One thread owns the `Server`. Everything that may block (reading the client,
//! writing to it, reading a pipe, waiting for an exit, connecting a probe) runs elsewhere (a
//! thread, a reactor) and reaches the loop as an event. Each turn feeds exactly one input:
//! 1. pick it: first the inputs the driver produced itself while carrying out the last outputs
//!    (`Spawned`, `StdinWritten`, `Escaped`, an `Exited` found before a signal), one per turn,
//!    in order; then the timer, if its deadline has passed; then whatever comes first, waiting
//!    no longer than the deadline, and reading the client only while
//!    [`Server::wants_client_bytes`] is `true` (bytes already read stay with the driver until
//!    it is `true` again);
//! 2. feed it, with [`Now`]: an [`Instant`] on a monotonic clock from an origin of the
//!    driver's choice, and wall-clock milliseconds;
//! 3. drain [`Server::poll_output`] until [`Output::Timeout`], carrying out each output;
//! 4. keep that deadline as the one timer (it replaces the previous one; `None`: no timer).
//!
//! **Inputs, and when to feed them** (the [`Input`] variants):
//! - `ClientBytes`: what a read of the client gave, in any chunking. `ClientEof`: end-of-file
//!   or a read error on the client's input, or its output can no longer be written; once.
//! - `Terminate`: each SIGTERM or SIGINT (the second kills every group at once).
//! - `Transmitted`: the length of each `Transmit` line once written and flushed, in order.
//! - `Spawned` or `SpawnFailed`: the answer to each `Spawn`, before any other input about
//!   that run.
//! - `ProcessOutput` and `StreamClosed`: what each pipe of a run gives, until its `Release`.
//! - `Exited`: once per run, when the leader has exited, seen without reaping it
//!   (`waitid(2)` with `WNOWAIT`); [`ExitStatus::Lost`] when its status cannot be had.
//! - `StdinWritten`: the answer to each `WriteStdin`, fed next. `StdinReady`: after a short
//!   write, once the pipe has room (or its reader is gone, so that the next write fails).
//! - `Probed`: the answer to each `Probe`, within [`PROBE_TIMEOUT`] or [`HTTP_PROBE_TIMEOUT`].
//! - `Inspected`: the answer to each `Inspect`, in order.
//! - `Escaped`: the answer to each `Sweep`, possibly empty. `EscapedExited`: when an escaped
//!   process reported there is gone.
//!
//! **Outputs, and what the driver does** (the [`Output`] variants):
//! - `Transmit`: hand the line to the client's writer (never write it from the loop).
//! - `Spawn`: start the process as [`SpawnSpec`] says (new session, piped stdout and stderr,
//!   stdin as asked, never outliving the server, never the server's own stdout), start reading its
//!   pipes and watching for its exit, and queue `Spawned` or `SpawnFailed`.
//! - `Signal`: unless its exit was reported, check the leader (`waitid` with
//!   `WNOHANG | WNOWAIT`): if it has exited, queue that `Exited` (not `signalled` by this
//!   signal); otherwise note that a signal reached it alive. Then `killpg(2)`: the leader,
//!   alive or a zombie, holds the group id, so the signal reaches no stranger.
//! - `WriteStdin`: write what the non-blocking pipe takes now, queue `StdinWritten`, and after
//!   a short write watch the pipe for room. `CloseStdin`: close our end.
//! - `Sweep`: find the run's processes that left its group, hold a handle on each that
//!   survives pid reuse (a pidfd), queue `Escaped` with those not reported before, and report
//!   each one's end. A driver that does not track them answers every sweep with none, as the
//!   example does. `SignalEscaped`: signal the ones held.
//! - `Probe`: connect to `127.0.0.1:port`, or send an HTTP `GET`, elsewhere, giving up after
//!   [`PROBE_TIMEOUT`] or [`HTTP_PROBE_TIMEOUT`].
//! - `Inspect`: measure the runs' processes (count, CPU time, resident memory, listening
//!   sockets) elsewhere and answer with one `Inspected`.
//! - `Release`: stop reading the run's pipes and close them, reap the process (`waitpid(2)`,
//!   at once: it is a zombie by now), forget the run.
//! - `Exit`: stop the loop, give the client's writer a bounded moment for the lines already
//!   transmitted, exit with status 0.
//!
//! **What a driver must guarantee.**
//! - The loop never blocks on the client or on a task: lines go through a writer of their own,
//!   stdin writes take what the pipe holds now, reads and waits happen off the loop.
//! - An exit is reported without reaping the process; only `Release` reaps it. Until then its
//!   pid and process group id cannot be reused, so no signal meant for the task reaches another
//!   process.
//! - The leader is checked before each `killpg`, so a task that ended on its own just before a
//!   stop is not reported as stopped.
//! - Every request-like output is answered: `Spawn`, `WriteStdin`, `Probe`, `Sweep`, `Inspect`. An
//!   unanswered one leaves something waiting for good: a task that never starts (nor stops), a
//!   stdin queue that never moves, a port that is never seen open, a task that never settles
//!   (so `Exit` never comes).
//! - One input per turn, the driver's own first: so `Spawned` comes before any output or exit
//!   of its run (the core drops output and ignores an exit for a run it has not seen start),
//!   and `StdinWritten` before anything else about the run. The core sends at most one
//!   `WriteStdin` per run until it is answered.
//! - A run's pipes are read after its exit too, until `Release`: output often arrives after
//!   the exit, and the core waits for both ends-of-file (at most [`Config::exit_drain`]).
//! - A deadline that has passed is handled before anything else is waited for.
//!
//! **The races it may see**, all harmless to the core:
//! - Events about a run after its `Release` (output, end-of-file, an exit, `StdinReady`, from
//!   threads that had not seen the release yet): ignored, whether the driver feeds or drops them.
//! - Output and end-of-file after `Exited`: the usual order.
//! - An exit seen twice (by the check before a signal and by the exit watcher): the driver
//!   reports it once; a second `Exited` would be ignored.
//! - The leader exits between the check and `killpg`: the signal reaches only the zombie's
//!   group, and the exit is reported as `signalled` although the signal came too late (`proc-os`
//!   narrows that window with `/proc`; the example does not).
//! - The process prints or exits before the driver has fed `Spawned`: hold those events until
//!   after it (both drivers spawn in the loop and feed `Spawned` before any new event).
//! - A timer that fires early (timer slack) or twice: `handle_timeout` is then a no-op.
//! - A run released between an `Inspect` and its answer: the driver may have measured its old
//!   group id (free for reuse once reaped); the core drops what the answer says of a run it
//!   released.
//! - `StdinReady` after `CloseStdin` or a failed write; `Probed` for a `wait` that was
//!   cancelled or timed out; `Escaped` after `Release` (sweeps outlive their run): ignored or
//!   handled as usual.
//!
//! ## Modules
//!
//! Public, for embedders: [`Server`] and the contract it shares with its driver ([`Config`],
//! [`Input`], [`Output`], ids and constants, all in one leaf module that every other module
//! may name), [`tools`] (the tool definitions as `tools/list` shows them), [`log`] (a task's
//! output buffer: byte ring, line index, cursors, eviction; usable on its own), [`process`]
//! and [`time`] (the types the contract speaks in), and [`limits`].
//!
//! Inside, the server is composed of sub-machines that own their fields and their deadlines,
//! and that it drives in a fixed order, taking the earliest deadline of all:
//! - the task registry (tasks, runs, ids, all output memory, one deadline per task), whose
//!   tasks each run one enum of phases (starting → running → stopping → draining → exited, or
//!   failed) with their stdin queue and their escaped processes as sub-machines of their own,
//!   returning narrow actions that the registry maps to [`Output`]s;
//! - the waiters (requests answered when something happens to a task: `start` with
//!   `wait_for`, `stop`, `restart`, `wait`, `write`), with their timeouts, progress and probes;
//! - the subscriptions (subscribed outputs, listen streams) and the coalesced notifications;
//! - the session itself in the server: both protocol eras (the `initialize` handshake of
//!   2024-11-05 to 2025-11-25, and the stateless 2026-07-28 requests that carry their own
//!   `_meta` envelope), batches, backpressure, and the tools, one module each.

mod escaped;
pub mod log;
mod mcp;
pub mod process;
mod server;
mod shared;
mod stdin;
mod task;
pub mod terminal;
pub mod time;
mod timers;
mod urls;

/// Bounds and intervals that are part of the tools' contract (`docs/tools.md` states them; its
/// test reads them here).
pub mod limits {
    pub use crate::escaped::{
        KILL_SETTLE as ESCAPED_KILL_SETTLE, MAX_LISTED as ESCAPED_MAX_LISTED,
    };
    pub use crate::log::{DEFAULT_MAX_BYTES, DEFAULT_TAIL_LINES, INDEX_ENTRY_BYTES};
    pub use crate::stdin::CHUNK_BYTES as STDIN_CHUNK_BYTES;
    pub use crate::task::{
        BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET, CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW,
        MEMORY_CHECK_INTERVAL, MEMORY_STRIKES,
    };
    pub use crate::urls::{MAX_URL_BYTES, MAX_URLS};
}

pub use mcp::protocol::ProtocolVersion;
pub use process::{
    EscapedProcess, ExitStatus, Listener, Protocol, RunId, Signal, SpawnSpec, StdinMode, Stdio,
    Stream, Usage, WindowSize,
};
pub use server::Server;
pub use server::tools;
pub use shared::{
    BATCH_REPLY_FACTOR, Config, HTTP_PROBE_TIMEOUT, IdGenerator, Input, Output, PROBE_TIMEOUT,
    ProbeId, ProbeOutcome, ProbeTarget,
};
pub use time::{Instant, Now};

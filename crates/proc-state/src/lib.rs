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
//! ## Modules
//! - [`log`]: a task's output buffer (byte ring, line index, cursors, eviction).
//! - [`task`]: one task's lifecycle, one enum of phases (starting → running → stopping →
//!   draining → exited, or failed), with [`stdin`] (its input queue) and [`escaped`] (the
//!   processes that left its process group) as sub-machines with their own timers.
//! - [`mcp`]: framing, JSON-RPC, protocol versions, paging and the tool definitions.
//! - [`Server`] ties them together: the session in both protocol eras (the `initialize`
//!   handshake of 2024-11-05 to 2025-11-25, and the stateless 2026-07-28 requests that carry
//!   their own `_meta` envelope), the tool handlers, the requests that wait on tasks (`start`
//!   with `wait_for`, `stop`, `restart`, `wait`, `write`), resources and notifications.

pub mod escaped;
pub mod log;
pub mod mcp;
pub mod process;
mod server;
pub mod stdin;
pub mod task;
pub mod time;
mod timers;

pub use process::{EscapedProcess, ExitStatus, RunId, Signal, SpawnSpec, StdinMode, Stream};
pub use server::{
    BATCH_REPLY_FACTOR, Config, IdGenerator, Input, Output, PROBE_TIMEOUT, ProbeId, Server,
};
pub use time::{Instant, Now};

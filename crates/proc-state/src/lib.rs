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
//! 1. Wait for one event: bytes from the client, a task's output, a task's exit, the timer.
//! 2. Feed exactly that event with [`Server::handle_input`] (or [`Server::handle_timeout`]) and
//!    the current [`Now`].
//! 3. Drain [`Server::poll_output`] until it returns [`Output::Timeout`], carrying out each
//!    output in order (write a line to stdout, spawn, signal a process group, release a run).
//! 4. Arm the one timer at the returned deadline (none if `None`) and go to 1.
//!
//! Inputs about runs the core no longer knows (a late exit after [`Output::Release`], output from
//! a process that was restarted) are expected races: they are ignored, never a panic. A timeout
//! that fires early or twice is a no-op.
//!
//! ```no_run
//! use proc_state::{Config, Input, Now, Output, Server};
//! # fn wait_for_event(_deadline: Option<proc_state::Instant>) -> (Now, Option<Vec<u8>>) { unimplemented!() }
//! # fn write_stdout(_line: &[u8]) {}
//! let mut server = Server::new(Config::default(), Box::new(|| "abc123".to_owned()));
//! let mut deadline = None;
//! loop {
//!     // 1. one event (here: client bytes, or the timer when `None`)
//!     let (now, event) = wait_for_event(deadline);
//!     // 2. feed it
//!     match event {
//!         Some(bytes) => server.handle_input(now, Input::ClientBytes(&bytes)),
//!         None => server.handle_timeout(now),
//!     }
//!     // 3. drain
//!     loop {
//!         match server.poll_output() {
//!             Output::Transmit(line) => write_stdout(&line),
//!             Output::Exit => return,
//!             Output::Timeout(next) => {
//!                 // 4. arm the timer
//!                 deadline = next;
//!                 break;
//!             }
//!             _other => { /* spawn, signal, release: the driver's job */ }
//!         }
//!     }
//! }
//! ```
//!
//! ## Modules
//! - [`log`]: a task's output buffer (byte ring, line index, cursors, eviction).
//! - [`task`]: one task's lifecycle (starting → running → stopping → exited | failed).
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

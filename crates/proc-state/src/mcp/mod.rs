//! The MCP side of the core: turning client bytes into messages and results into lines.
//!
//! - [`framing`]: stdio framing, one JSON message per `\n`-terminated line, bounded in length.
//! - [`jsonrpc`]: JSON-RPC 2.0 envelopes, classified the way MCP needs them.
//! - [`paging`]: opaque cursors for list results.
//! - [`protocol`]: protocol versions and what each one changes on the wire.
//!
//! The session itself (handshake state, pending requests) lives in the [`Server`](crate::Server),
//! because answering a call needs the tasks too, and so do the tools ([`crate::tools`]). Nothing
//! here performs I/O.

pub mod framing;
pub mod jsonrpc;
pub mod paging;
pub mod protocol;

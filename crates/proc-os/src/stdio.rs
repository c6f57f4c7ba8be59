//! The client's side: its messages come in on our stdin, the core's lines go out on our stdout.
//!
//! Neither descriptor is ever made non-blocking: fd 0 and fd 1 are shared with our parent (the
//! MCP client), and `O_NONBLOCK` is a property of the open file that it would see too. Stdin is
//! read by one blocking thread; stdout is written with blocking writes from the event loop.

use std::io::{self, Read, Write};
use std::thread;

use async_channel::Sender;

use crate::driver::Event;
use crate::pipes::Pool;

/// Buffers for client input in flight (each [`crate::pipes::CHUNK_BYTES`]).
const CLIENT_BUFFERS: usize = 2;

/// Starts the thread that reads `input` in chunks and sends [`Event::ClientBytes`], then
/// [`Event::ClientEof`] at end-of-file or on a read error (reported on stderr).
///
/// The thread ends after end-of-file, or at its first read after the event loop has gone; a
/// read that blocks keeps it alive until then (a blocking read cannot be cancelled).
///
/// # Errors
/// The thread could not be created.
pub fn spawn_client_reader<R>(input: R, events: Sender<Event>) -> io::Result<()>
where
    R: Read + Send + 'static,
{
    thread::Builder::new()
        .name("proc-mcp-client".to_owned())
        .stack_size(64 << 10)
        .spawn(move || read_client(input, &Pool::new(CLIENT_BUFFERS), &events))?;
    Ok(())
}

fn read_client<R: Read>(mut input: R, pool: &Pool, events: &Sender<Event>) {
    loop {
        let mut buf = pool.take_blocking();
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => {
                if events
                    .send_blocking(Event::ClientBytes(pool.chunk(buf, len)))
                    .is_err()
                {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => pool.put_back(buf),
            Err(err) => {
                eprintln!("proc-mcp: reading from the client (stdin): {err}");
                break;
            }
        }
    }
    let _ = events.send_blocking(Event::ClientEof);
}

/// Writes the core's lines to the client, flushing each.
pub struct ClientWriter<W> {
    out: W,
    open: bool,
}

impl<W: Write> ClientWriter<W> {
    /// A writer to `out`, which must be blocking (never `O_NONBLOCK`).
    pub fn new(out: W) -> Self {
        Self { out, open: true }
    }

    /// Writes `line` (a complete message ending in `\n`) and flushes it, blocking while the
    /// client does not read. Returns `false` if the client can no longer be written to (broken
    /// pipe, or any other write error, reported on stderr); later lines are then dropped.
    pub fn transmit(&mut self, line: &[u8]) -> bool {
        if self.open {
            if let Err(err) = self.out.write_all(line).and_then(|()| self.out.flush()) {
                if err.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("proc-mcp: writing to the client (stdout): {err}");
                }
                self.open = false;
            }
        }
        self.open
    }
}

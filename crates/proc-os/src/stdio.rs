//! The client's side: its messages come in on our stdin, the core's lines go out on our stdout.
//!
//! Neither descriptor is ever made non-blocking: fd 0 and fd 1 are shared with our parent (the
//! MCP client), and `O_NONBLOCK` is a property of the open file that it would see too. So each
//! has a thread of its own, and the event loop never blocks on either:
//!
//! - the **reader** reads stdin in chunks into a bounded channel. The loop takes from that
//!   channel only while the core wants more ([`proc_state::Server::wants_client_bytes`]); when
//!   it stops taking, the reader blocks on the full channel, stops reading, and the client's
//!   writes block in turn: backpressure on a client that does not read our answers.
//! - the **writer** writes the core's lines in order, flushing each, and reports every line
//!   written ([`Event::Transmitted`]), so the core knows how far behind the client is. Its queue
//!   holds what the core transmitted and the client has not read yet; the core bounds that by
//!   pausing request handling ([`proc_state::Config::max_client_backlog_bytes`]).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::Duration;

use async_channel::{Receiver, Sender};

use crate::driver::Event;
use crate::pipes::{Chunk, Pool};

/// Buffers for client input in flight (each [`crate::pipes::CHUNK_BYTES`]).
const CLIENT_BUFFERS: usize = 2;

/// What the reader thread sends the loop.
#[derive(Debug)]
pub enum ClientInput {
    /// Bytes from the client.
    Bytes(Chunk),
    /// End-of-file (or a read error, reported on stderr).
    Eof,
}

/// Starts the thread that reads `input` in chunks and sends [`ClientInput::Bytes`], then
/// [`ClientInput::Eof`] at end-of-file or on a read error (reported on stderr). The channel it
/// returns is bounded: while nobody takes from it, the thread stops reading.
///
/// The thread ends after end-of-file, or at its first read after the receiver is gone; a read
/// that blocks keeps it alive until then (a blocking read cannot be cancelled).
///
/// # Errors
/// The thread could not be created.
pub fn spawn_client_reader<R>(input: R) -> io::Result<Receiver<ClientInput>>
where
    R: Read + Send + 'static,
{
    let (tx, rx) = async_channel::bounded(1);
    thread::Builder::new()
        .name("proc-mcp-stdin".to_owned())
        .stack_size(64 << 10)
        .spawn(move || read_client(input, &Pool::new(CLIENT_BUFFERS), &tx))?;
    Ok(rx)
}

fn read_client<R: Read>(mut input: R, pool: &Pool, client: &Sender<ClientInput>) {
    loop {
        let mut buf = pool.take_blocking();
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => {
                if client
                    .send_blocking(ClientInput::Bytes(pool.chunk(buf, len)))
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
    let _ = client.send_blocking(ClientInput::Eof);
}

/// The thread that writes the core's lines to the client.
pub struct ClientWriter {
    lines: Sender<Vec<u8>>,
    done: std::sync::mpsc::Receiver<()>,
    /// Lines written so far, to tell a slow client from one that stopped reading.
    written: Arc<AtomicUsize>,
}

impl ClientWriter {
    /// Starts the writer thread on `out`, which must be blocking (never `O_NONBLOCK`). After
    /// each line is written and flushed it sends [`Event::Transmitted`] on `events`; when the
    /// client can no longer be written to (broken pipe, or any other write error, reported on
    /// stderr) it sends [`Event::ClientGone`] and drops every later line.
    ///
    /// # Errors
    /// The thread could not be created.
    pub fn spawn<W>(out: W, events: Sender<Event>) -> io::Result<Self>
    where
        W: Write + Send + 'static,
    {
        let (lines, queue) = async_channel::unbounded::<Vec<u8>>();
        let (finished, done) = std::sync::mpsc::channel();
        let written = Arc::new(AtomicUsize::new(0));
        let counter = written.clone();
        thread::Builder::new()
            .name("proc-mcp-stdout".to_owned())
            .stack_size(64 << 10)
            .spawn(move || {
                write_client(out, &queue, &events, &counter);
                let _ = finished.send(());
            })?;
        Ok(Self {
            lines,
            done,
            written,
        })
    }

    /// Queues `line` (a complete message ending in `\n`) for the client; never blocks.
    pub fn transmit(&self, line: Vec<u8>) {
        // The receiver lives until the thread ends, which needs this sender dropped first.
        let _ = self.lines.try_send(line);
    }

    /// Lets the thread write what is queued, then end. Waits as long as the client keeps
    /// reading, but gives up once `patience` passes without a line written: a client that
    /// stopped reading does not hold the server up (its lines are abandoned).
    pub fn finish(self, patience: Duration) {
        let Self {
            lines,
            done,
            written,
        } = self;
        drop(lines);
        let mut seen = written.load(Ordering::Relaxed);
        loop {
            match done.recv_timeout(patience) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    let now = written.load(Ordering::Relaxed);
                    if now == seen {
                        eprintln!(
                            "proc-mcp: the client has not read for {patience:?}; exiting without writing the rest"
                        );
                        return;
                    }
                    seen = now;
                }
            }
        }
    }
}

fn write_client<W: Write>(
    mut out: W,
    queue: &Receiver<Vec<u8>>,
    events: &Sender<Event>,
    written: &AtomicUsize,
) {
    let mut open = true;
    while let Ok(line) = queue.recv_blocking() {
        if !open {
            continue;
        }
        match out.write_all(&line).and_then(|()| out.flush()) {
            Ok(()) => {
                written.fetch_add(1, Ordering::Relaxed);
                if events
                    .send_blocking(Event::Transmitted { bytes: line.len() })
                    .is_err()
                {
                    // The loop is gone: keep writing what is queued (the exit's last answers).
                    continue;
                }
            }
            Err(err) => {
                if err.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("proc-mcp: writing to the client (stdout): {err}");
                }
                open = false;
                let _ = events.send_blocking(Event::ClientGone);
            }
        }
    }
}

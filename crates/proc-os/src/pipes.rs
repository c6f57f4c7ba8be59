//! A run's pipes: reading its output with bounded memory (a small pool of reusable read
//! buffers, and the task that pumps one output pipe into the event loop), and waiting for its
//! stdin to have room again after a short write ([`stdin_ready`]).
//!
//! Runtime-agnostic: pipes are watched by [`async_io::Async`] (the reactor that smol and
//! async-std both run on) and buffers travel in [`async_channel`] channels; any executor can
//! run [`pump`].
//!
//! The pool is the backpressure: a reader takes a buffer only once its pipe is readable, and the
//! buffer comes back when the event loop has handed the bytes to the core. With every buffer in
//! flight, readers wait, the pipes fill up, and a child that floods output blocks in `write(2)`
//! instead of growing the server's memory. Idle tasks hold no buffer at all.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use async_io::Async;
use proc_state::{RunId, Stream};

use crate::driver::Event;

/// Bytes per read, from a child's pipe or from the client: 64 KiB.
pub const CHUNK_BYTES: usize = 64 << 10;

/// A fixed number of [`CHUNK_BYTES`] buffers, allocated on first use and then reused.
#[derive(Clone, Debug)]
pub struct Pool {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
}

impl Pool {
    /// A pool of `buffers` buffers (at least one) of [`CHUNK_BYTES`] bytes each.
    pub fn new(buffers: usize) -> Self {
        let buffers = buffers.max(1);
        let (free_tx, free_rx) = async_channel::bounded(buffers);
        for _ in 0..buffers {
            // Capacity 0: memory is only taken when a buffer is first used.
            let _ = free_tx.try_send(Vec::new());
        }
        Self { free_tx, free_rx }
    }

    /// Waits for a free buffer.
    pub async fn take(&self) -> Vec<u8> {
        let buf = self.free_rx.recv().await.unwrap_or_default();
        Self::ready(buf)
    }

    /// Blocks the calling thread until a buffer is free (for the client reader thread).
    pub fn take_blocking(&self) -> Vec<u8> {
        let buf = self.free_rx.recv_blocking().unwrap_or_default();
        Self::ready(buf)
    }

    fn ready(mut buf: Vec<u8>) -> Vec<u8> {
        if buf.len() < CHUNK_BYTES {
            buf.resize(CHUNK_BYTES, 0);
        }
        buf
    }

    /// Wraps `len` bytes read into `buf` as a chunk that returns `buf` here when dropped.
    pub fn chunk(&self, buf: Vec<u8>, len: usize) -> Chunk {
        Chunk {
            len: len.min(buf.len()),
            buf,
            home: self.free_tx.clone(),
        }
    }

    /// Gives back a buffer that was taken but not filled (a [`Chunk`] goes back by itself).
    pub fn put_back(&self, buf: Vec<u8>) {
        let _ = self.free_tx.try_send(buf);
    }
}

/// Bytes read from a pipe, in a pooled buffer that goes back to its [`Pool`] on drop.
#[derive(Debug)]
pub struct Chunk {
    buf: Vec<u8>,
    len: usize,
    home: Sender<Vec<u8>>,
}

impl Chunk {
    /// The bytes that were read.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The pool has room for every buffer it ever handed out, so this only fails once the
        // pool itself is gone; then the buffer is simply freed.
        let _ = self.home.try_send(std::mem::take(&mut self.buf));
    }
}

/// Reads one of `run`'s output pipes until end-of-file, sending [`Event::Output`] for each read
/// and [`Event::StreamClosed`] at the end (also after a read error, which is reported on
/// stderr). For [`Stream::Tty`], `pipe` is the master side of the run's terminal, where `EIO`
/// is end-of-file: Linux reports it once no process holds the slave side open (pty(7)), after
/// the data written before that has been read. Returns early if the event loop is gone. Cancel it by dropping its task.
pub async fn pump(run: RunId, stream: Stream, pipe: OwnedFd, pool: Pool, events: Sender<Event>) {
    if let Err(err) = pump_until_eof(run, stream, pipe, &pool, &events).await {
        eprintln!("proc-mcp: reading {} of {run}: {err}", stream.as_str());
    }
    let _ = events.send(Event::StreamClosed { run, stream }).await;
}

async fn pump_until_eof(
    run: RunId,
    stream: Stream,
    pipe: OwnedFd,
    pool: &Pool,
    events: &Sender<Event>,
) -> io::Result<()> {
    // Async::new makes our end of the pipe non-blocking; the child's end is unaffected.
    let pipe = Async::new(File::from(pipe))?;
    loop {
        pipe.readable().await?;
        let mut buf = pool.take().await;
        match pipe.get_ref().read(&mut buf) {
            Ok(0) => {
                pool.put_back(buf);
                return Ok(());
            }
            Ok(len) => {
                let chunk = pool.chunk(buf, len);
                if events
                    .send(Event::Output { run, stream, chunk })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                pool.put_back(buf);
            }
            // No process holds the terminal's slave side open any more: its end-of-file.
            Err(err) if stream == Stream::Tty && err.raw_os_error() == Some(nix::libc::EIO) => {
                pool.put_back(buf);
                return Ok(());
            }
            Err(err) => {
                pool.put_back(buf);
                return Err(err);
            }
        }
    }
}

/// Waits until `run`'s stdin `pipe` can take more bytes (after a short write), then sends
/// [`Event::StdinReady`]. Cancel it by dropping its task.
pub async fn stdin_ready(run: RunId, pipe: Arc<Async<File>>, events: Sender<Event>) {
    // An error here (the reactor lost the descriptor) is reported as ready too: the next write
    // then fails and says why.
    let _ = pipe.writable().await;
    let _ = events.send(Event::StdinReady { run }).await;
}

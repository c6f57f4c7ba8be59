//! The event loop: one [`Server`] driven exactly as the proc-state crate docs say.
//!
//! 1. Wait for one event: a result of our own last outputs (spawned, failed, exited), else the
//!    next [`Event`] from the channel (client bytes, a task's output, SIGCHLD, SIGTERM/SIGINT),
//!    or the timer.
//! 2. Feed it with [`Server::handle_input`] / [`Server::handle_timeout`] and the current [`Now`].
//! 3. Drain [`Server::poll_output`] until [`Output::Timeout`], carrying out each output.
//! 4. Arm the one timer and go to 1.
//!
//! Everything runs on the calling thread in a [`LocalExecutor`]; only client stdin has a thread
//! of its own. The event channel is bounded, and output bytes travel in pooled buffers
//! ([`crate::pipes`]), so the memory in flight is fixed however fast the tasks print.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_signal::{Signal as OsSignal, Signals};
use proc_state::{Config, ExitStatus, Input, Instant, Now, Output, RunId, Server, Stream};
use smol::channel::{Receiver, Sender};
use smol::stream::StreamExt as _;
use smol::{LocalExecutor, Timer};

use crate::pipes::{Chunk, Pool};
use crate::runs::Runs;
use crate::stdio::{self, ClientWriter};

/// Buffers for task output in flight, shared by all tasks (each [`crate::pipes::CHUNK_BYTES`]).
const OUTPUT_BUFFERS: usize = 8;

/// Capacity of the event channel into the loop.
const EVENT_QUEUE: usize = 32;

/// Something that happened outside the loop, sent to it over a bounded channel.
#[derive(Debug)]
pub(crate) enum Event {
    /// Bytes from the client.
    ClientBytes(Chunk),
    /// The client closed its end (or reading it failed).
    ClientEof,
    /// Bytes from one of a task's pipes.
    Output {
        run: RunId,
        stream: Stream,
        chunk: Chunk,
    },
    /// End-of-file on one of a task's pipes.
    StreamClosed { run: RunId, stream: Stream },
    /// SIGCHLD: some child changed state.
    ChildSignal,
    /// SIGTERM or SIGINT.
    Terminate,
}

/// An input that our own handling of an output produced; fed before anything new.
enum Pending {
    Spawned { run: RunId, pid: u32 },
    SpawnFailed { run: RunId, error: String },
    Exited { run: RunId, status: ExitStatus },
    ClientEof,
}

/// What woke the loop up.
enum Wake {
    Pending(Pending),
    Event(Event),
    Timer,
}

/// Serves MCP on `input`/`output` until the core says [`Output::Exit`].
///
/// Registers handlers for SIGCHLD, SIGTERM and SIGINT for as long as it runs.
pub(crate) fn serve<R, W>(config: Config, input: R, output: W) -> io::Result<()>
where
    R: Read + Send + 'static,
    W: Write,
{
    let clock = Clock::new();
    // Before the first spawn, so that no SIGCHLD is missed.
    let signals = Signals::new([OsSignal::Child, OsSignal::Term, OsSignal::Int])?;
    let (events_tx, events_rx) = smol::channel::bounded(EVENT_QUEUE);
    let executor = LocalExecutor::new();
    stdio::spawn_client_reader(input, events_tx.clone())?;
    smol::block_on(executor.run(async {
        let _signals = executor.spawn(forward_signals(signals, events_tx.clone()));
        let mut driver = Driver {
            server: Server::new(config, Box::new(|| nanoid::nanoid!(6))),
            runs: Runs::new(&executor, events_tx, Pool::new(OUTPUT_BUFFERS)),
            client: ClientWriter::new(output),
            pending: VecDeque::new(),
            client_eof: false,
            clock,
        };
        driver.run(&events_rx).await;
        driver.runs.shutdown();
    }));
    // Give back every pooled buffer still queued, so the client reader is never stuck waiting
    // for one, and let it see the channel closed.
    events_rx.close();
    while events_rx.try_recv().is_ok() {}
    Ok(())
}

/// Turns the signals the server handles into events, each time one arrives.
async fn forward_signals(mut signals: Signals, events: Sender<Event>) {
    while let Some(signal) = signals.next().await {
        let event = match signal {
            Ok(OsSignal::Child) => Event::ChildSignal,
            Ok(OsSignal::Term | OsSignal::Int) => Event::Terminate,
            Ok(_) => continue,
            Err(err) => {
                eprintln!("proc-smol: waiting for signals: {err}");
                return;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

struct Driver<'ex, W> {
    server: Server,
    runs: Runs<'ex>,
    client: ClientWriter<W>,
    pending: VecDeque<Pending>,
    /// `ClientEof` was fed: client input is over.
    client_eof: bool,
    clock: Clock,
}

impl<W: Write> Driver<'_, W> {
    /// Runs the loop until the core says [`Output::Exit`].
    async fn run(&mut self, events: &Receiver<Event>) {
        let mut timer = Timer::never();
        loop {
            // 1. Wait for one event.
            let wake = match self.pending.pop_front() {
                Some(pending) => Wake::Pending(pending),
                None => {
                    smol::future::or(
                        async {
                            match events.recv().await {
                                Ok(event) => Wake::Event(event),
                                // Unreachable while we hold a sender; as if the client left.
                                Err(_) => Wake::Pending(Pending::ClientEof),
                            }
                        },
                        async {
                            (&mut timer).await;
                            Wake::Timer
                        },
                    )
                    .await
                }
            };
            // 2. Feed it.
            let now = self.clock.now();
            match wake {
                Wake::Pending(pending) => self.feed_pending(now, pending),
                Wake::Event(event) => self.feed_event(now, event),
                Wake::Timer => self.server.handle_timeout(now),
            }
            // 3. Drain the outputs; 4. arm the timer.
            match self.drain() {
                Some(deadline) => timer = deadline.map_or_else(Timer::never, Timer::at),
                None => return,
            }
        }
    }

    fn feed_pending(&mut self, now: Now, pending: Pending) {
        let input = match pending {
            Pending::Spawned { run, pid } => Input::Spawned { run, pid },
            Pending::SpawnFailed { run, error } => Input::SpawnFailed { run, error },
            Pending::Exited { run, status } => Input::Exited { run, status },
            Pending::ClientEof => {
                if self.client_eof {
                    return;
                }
                self.client_eof = true;
                Input::ClientEof
            }
        };
        self.server.handle_input(now, input);
    }

    fn feed_event(&mut self, now: Now, event: Event) {
        match event {
            Event::ClientBytes(chunk) => {
                if !self.client_eof {
                    self.server
                        .handle_input(now, Input::ClientBytes(chunk.bytes()));
                }
            }
            Event::ClientEof => self.feed_pending(now, Pending::ClientEof),
            Event::Output { run, stream, chunk } => {
                if self.runs.is_live(run) {
                    let bytes = chunk.bytes();
                    self.server
                        .handle_input(now, Input::Output { run, stream, bytes });
                }
            }
            Event::StreamClosed { run, stream } => {
                if self.runs.is_live(run) {
                    self.server
                        .handle_input(now, Input::StreamClosed { run, stream });
                }
            }
            Event::ChildSignal => {
                // Possibly several exits: each is one input of its own, fed before anything
                // new. The first one now, so that this wake-up feeds exactly one input.
                let mut exits = self.runs.collect_exits().into_iter();
                if let Some((run, status)) = exits.next() {
                    self.pending
                        .extend(exits.map(|(run, status)| Pending::Exited { run, status }));
                    self.server.handle_input(now, Input::Exited { run, status });
                }
            }
            Event::Terminate => self.server.handle_input(now, Input::Terminate),
        }
    }

    /// Carries out every output up to the next [`Output::Timeout`] and returns its deadline as
    /// a point on the clock; `None` for [`Output::Exit`].
    fn drain(&mut self) -> Option<Option<std::time::Instant>> {
        loop {
            match self.server.poll_output() {
                Output::Transmit(line) => {
                    if !self.client.transmit(&line) && !self.client_eof {
                        // The client is gone for writing: as if it closed stdin.
                        if !self
                            .pending
                            .iter()
                            .any(|pending| matches!(pending, Pending::ClientEof))
                        {
                            self.pending.push_back(Pending::ClientEof);
                        }
                    }
                }
                Output::Spawn { run, spec } => {
                    let pending = match self.runs.spawn(run, &spec) {
                        Ok(pid) => Pending::Spawned { run, pid },
                        Err(error) => Pending::SpawnFailed { run, error },
                    };
                    self.pending.push_back(pending);
                }
                Output::Signal { run, signal } => self.runs.signal(run, signal),
                Output::Release { run } => self.runs.release(run),
                Output::Exit => return None,
                Output::Timeout(deadline) => {
                    return Some(deadline.and_then(|deadline| self.clock.to_std(deadline)));
                }
                other => {
                    eprintln!("proc-smol: ignoring an output this driver does not know: {other:?}")
                }
            }
        }
    }
}

/// The driver's clocks: [`Instant`]s count nanoseconds since the driver started.
struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// Both clocks now.
    fn now(&self) -> Now {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        Now::new(Instant::from_nanos(nanos), unix_ms)
    }

    /// `deadline` on std's clock; `None` if it is too far away to represent (never fires).
    fn to_std(&self, deadline: Instant) -> Option<std::time::Instant> {
        self.origin
            .checked_add(Duration::from_nanos(deadline.as_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor, Read, Write};
    use std::time::Duration;

    use proc_state::Config;

    use super::serve;

    const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#;

    /// Client input that never ends (the thread reading it is left blocked).
    struct Endless(Cursor<Vec<u8>>);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.read(buf)? {
                0 => loop {
                    std::thread::park();
                },
                n => Ok(n),
            }
        }
    }

    /// A client that closed its end of our stdout.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_eof_ends_the_server() {
        let mut out = Vec::new();
        serve(Config::default(), Cursor::new(Vec::new()), &mut out).expect("serve");
        assert_eq!(out, b"");
    }

    #[test]
    fn answers_in_lines_then_ends_at_eof() {
        let input = format!("{INITIALIZE}\n").into_bytes();
        let mut out = Vec::new();
        serve(Config::default(), Cursor::new(input), &mut out).expect("serve");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        assert!(
            text.starts_with(r#"{"jsonrpc":"2.0","id":0,"result":"#),
            "{text}"
        );
    }

    #[test]
    fn tasks_are_stopped_and_reaped_before_the_server_ends() {
        let input = [
            INITIALIZE,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"start","arguments":{"command":"sleep","args":["1000"]}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"start","arguments":{"command":"sleep 1000 & sleep 1000 & wait"}}}"#,
            "",
        ]
        .join("\n");
        let mut out = Vec::new();
        serve(Config::default(), Cursor::new(input.into_bytes()), &mut out).expect("serve");
        let text = String::from_utf8(out).expect("utf-8");
        let pids: Vec<i32> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON line"))
            .filter_map(|message| message["result"]["structuredContent"]["pid"].as_i64())
            .map(|pid| i32::try_from(pid).expect("pid"))
            .collect();
        assert_eq!(pids.len(), 2, "{text}");
        for pid in pids {
            // Reaped: gone from /proc; and everything in its process group was signalled
            // (grandchildren may take a moment to die: wait for that, by pidfd).
            assert_eq!(crate::testutil::stat(pid), None, "{pid} not reaped");
            for (member, _) in crate::testutil::group_members(pid) {
                let dead = crate::testutil::wait_terminated(member, Duration::from_secs(10));
                assert!(dead, "{member} of group {pid} survives");
            }
        }
    }

    #[test]
    fn a_closed_stdout_counts_as_client_eof() {
        let input = format!("{INITIALIZE}\n").into_bytes();
        // Returns although stdin never ends: the failed write ended the session.
        serve(Config::default(), Endless(Cursor::new(input)), Closed).expect("serve");
    }
}

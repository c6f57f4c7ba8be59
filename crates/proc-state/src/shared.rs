//! What the core and its driver share, and nothing else: the [`Config`], the [`Input`]s a
//! driver feeds, the [`Output`]s it carries out, and the ids and constants of that contract (the
//! leaf every other module of the core may name, as quinn-proto's `shared.rs`).

use core::time::Duration;

#[cfg(doc)]
use crate::Server;
use crate::process::{EscapedProcess, ExitStatus, RunId, SpawnSpec, Stream, Usage};
use crate::time::Instant;

/// Makes task ids: short strings, unique for the server's life (the core retries on a clash).
/// Production drivers pass a nanoid generator (6 characters, URL-safe alphabet); tests pass a
/// seeded one so runs are reproducible.
pub type IdGenerator = Box<dyn FnMut() -> String + Send>;

/// Limits and defaults. Every size is in bytes, every duration a [`Duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Bytes of output (text plus per-line bookkeeping) kept per task; older lines are evicted.
    /// Default 4 MiB.
    pub output_budget_bytes: usize,
    /// Bytes of output kept for all tasks together (their buffers' memory, partial lines
    /// included). Past it, the oldest lines of the task that holds the most are evicted first,
    /// so a task that prints little keeps its output while floods share what is left. Default
    /// 256 MiB.
    pub output_budget_total_bytes: usize,
    /// Longest line stored as one line; longer ones are split into several. Default 64 KiB.
    pub max_line_bytes: usize,
    /// Longest client message (one line of stdin); longer ones are answered with an error and
    /// discarded without being buffered. Default 1 MiB. A JSON-RPC batch's reply is bounded
    /// by [`BATCH_REPLY_FACTOR`] times this.
    pub max_message_bytes: usize,
    /// Bytes sent to the client but not yet reported written ([`Input::Transmitted`]) above
    /// which the server stops handling client requests and holds back notifications, until
    /// the client reads. Default 4 MiB.
    pub max_client_backlog_bytes: usize,
    /// Bytes `write` may queue for one task's stdin while the task does not read. Default
    /// 1 MiB.
    pub max_stdin_queue_bytes: usize,
    /// How long `stop` waits after the first signal before it sends SIGKILL. Default 5 s.
    pub default_grace: Duration,
    /// The same for the stop of every task at shutdown (stdin EOF, SIGTERM, SIGINT). Default 1 s.
    pub shutdown_grace: Duration,
    /// How long after a task's exit its pipes may stay open (held by an escaped grandchild)
    /// before the core stops reading them. Default 1 s.
    pub exit_drain: Duration,
    /// Most tasks kept at once (running or not yet removed). Default 1024.
    pub max_tasks: usize,
    /// The server's working directory, shown as a task's `cwd` when none is given and used to
    /// resolve relative ones. Default `"."`; drivers set the real path.
    pub cwd: String,
    /// Most items on one page of `tools/list` and `resources/list`. Default 100.
    pub page_size: usize,
    /// `serverInfo.name`.
    pub server_name: String,
    /// `serverInfo.version`.
    pub server_version: String,
    /// One sentence on how the driver keeps tasks' processes contained, appended to the
    /// `instructions` (empty: nothing said).
    pub containment: String,
    /// Whether `wait`'s `url` may name any host; otherwise only loopback addresses and
    /// `localhost`. Default `false`.
    pub probe_any_host: bool,
}

/// A JSON-RPC batch's reply holds at most this many times [`Config::max_message_bytes`];
/// the responses past that bound are replaced by an error each.
pub const BATCH_REPLY_FACTOR: usize = 4;

impl Default for Config {
    fn default() -> Self {
        Self {
            output_budget_bytes: 4 << 20,
            output_budget_total_bytes: 256 << 20,
            max_line_bytes: 64 << 10,
            max_message_bytes: 1 << 20,
            max_client_backlog_bytes: 4 << 20,
            max_stdin_queue_bytes: 1 << 20,
            default_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
            exit_drain: Duration::from_secs(1),
            max_tasks: 1024,
            cwd: ".".to_owned(),
            page_size: 100,
            server_name: "proc-mcp".to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            containment: String::new(),
            probe_any_host: false,
        }
    }
}

/// Something that happened, fed to [`Server::handle_input`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// Bytes read from the client (stdin), in any chunking; the core finds the lines. Feed them
    /// only while [`Server::wants_client_bytes`] says so: that is the client's backpressure.
    ClientBytes(&'a [u8]),
    /// The client closed stdin: stop every task, then [`Output::Exit`]. Lines not handled yet
    /// (held back while the client did not read) are dropped.
    ClientEof,
    /// The server was asked to terminate (SIGTERM, SIGINT): as `ClientEof`. A second one
    /// while shutting down kills every process group at once.
    Terminate,
    /// `bytes` more of the [`Output::Transmit`] lines were written to the client, in order.
    Transmitted { bytes: usize },
    /// The process for `run` was started; `pid` is also its process group and session id.
    Spawned { run: RunId, pid: u32 },
    /// The process for `run` could not be started; `error` says why, for people.
    SpawnFailed { run: RunId, error: String },
    /// Bytes the process wrote to one of its pipes, in any chunking.
    ProcessOutput {
        run: RunId,
        stream: Stream,
        bytes: &'a [u8],
    },
    /// End-of-file on one of the process's pipes.
    StreamClosed { run: RunId, stream: Stream },
    /// The process (the group leader) exited. The driver reports this **without reaping** it
    /// (`waitid(WNOWAIT)`), so its pid and process group id stay reserved until
    /// [`Output::Release`] and signals to the group can never reach a stranger.
    ///
    /// `signalled`: some [`Output::Signal`] for this run was carried out while the leader was
    /// still alive. Before each `killpg` the driver checks the leader with `waitid(WNOWAIT)`;
    /// when it has already exited, the driver sends nothing and the exit is reported with
    /// `signalled: false`, so a task that ended on its own just before a stop is not reported
    /// as stopped.
    Exited {
        run: RunId,
        status: ExitStatus,
        signalled: bool,
    },
    /// The result of one [`Output::WriteStdin`]: `Ok(n)` bytes were written at once (`n` may
    /// be less than asked, even 0: the pipe is full, and [`Input::StdinReady`] follows when it
    /// has room), or `Err(reason)` (the process closed its stdin). Exactly one per
    /// `WriteStdin`, before any other input about the run.
    StdinWritten {
        run: RunId,
        result: Result<usize, String>,
    },
    /// The stdin pipe of `run` can take more bytes after a short write.
    StdinReady { run: RunId },
    /// The answer to [`Output::Probe`], within [`PROBE_TIMEOUT`] (a TCP connection) or
    /// [`HTTP_PROBE_TIMEOUT`] (an HTTP request).
    Probed {
        probe: ProbeId,
        outcome: ProbeOutcome,
    },
    /// The answer to one [`Output::Sweep`]: the escaped processes of `run` found that were
    /// not reported before (possibly none).
    Escaped {
        run: RunId,
        processes: Vec<EscapedProcess>,
    },
    /// An escaped process of `run` reported by [`Input::Escaped`] is gone.
    EscapedExited { run: RunId, pid: u32 },
    /// The answer to [`Output::QueryInput`].
    InputWanted { run: RunId, wanted: Option<bool> },
    /// The answer to one [`Output::Inspect`]: what each run asked about uses now. A run left
    /// out could not be measured (it has no process left, or the driver cannot tell); its
    /// usage is then unknown. Exactly one per `Inspect`, in order.
    Inspected { usage: Vec<(RunId, Usage)> },
}

/// What an [`Output::Probe`] tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    /// A TCP connection to `127.0.0.1:port`, closed at once.
    Port(u16),
    /// An HTTP/1.1 `GET` of this absolute `http://` URL (RFC 9110 §9.3.1), without following
    /// redirects and without a proxy; the status code is the answer. The core only asks for
    /// URLs whose host is a loopback address or `localhost` unless
    /// [`Config::probe_any_host`] is set.
    Http(String),
}

/// What an [`Output::Probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The TCP connection was accepted.
    Open,
    /// The HTTP request was answered with this status code.
    Http(u16),
    /// No connection, or no answer in time (refused, unreachable, reset, timed out, not
    /// HTTP); the reason, for people.
    Failed(String),
}

/// Identifies one [`Output::Probe`] so its answer finds its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u64);

/// What the driver must do next, from [`Server::poll_output`]. Not `#[non_exhaustive]`: a
/// driver must carry out every command, so a new one breaks every driver's build instead of
/// being dropped.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Write this line to the client (stdout) and flush it, then report the bytes with
    /// [`Input::Transmitted`]. It is one compact JSON-RPC message ending in `\n`. Lines must be
    /// written in order; the driver must not block its loop on a client that does not read.
    Transmit(Vec<u8>),
    /// Start a process as [`SpawnSpec`] describes and answer with [`Input::Spawned`] or
    /// [`Input::SpawnFailed`].
    Spawn { run: RunId, spec: SpawnSpec },
    /// Send `signal` to the run's whole process group (`killpg(2)`), if its leader has not
    /// exited yet (see [`Input::Exited`]). Never emitted after [`Output::Release`] for that
    /// run.
    Signal {
        run: RunId,
        signal: crate::process::Signal,
    },
    /// Write as much of `data` to the run's stdin pipe as it takes *without waiting*
    /// (`O_NONBLOCK`) and report at once with [`Input::StdinWritten`]; after a short write,
    /// report [`Input::StdinReady`] once the pipe is writable again. One at a time per run.
    /// Only for runs spawned with [`StdinMode::Piped`](crate::StdinMode::Piped) or on a
    /// terminal (then to its master side).
    WriteStdin { run: RunId, data: Vec<u8> },
    /// Close the run's stdin pipe: the process reads end-of-file. Never for a terminal run
    /// (the core writes the terminal's end-of-file character instead).
    CloseStdin { run: RunId },
    /// Set the window size of the run's terminal ([`Stdio::Terminal`](crate::Stdio::Terminal))
    /// with `TIOCSWINSZ` on its master side (tty_ioctl(4)); the kernel sends `SIGWINCH` to the
    /// terminal's foreground process group. Ignored once the run is released.
    Resize {
        run: RunId,
        size: crate::process::WindowSize,
    },
    /// Find the processes `run` started that left its process group `pgid` (they carry the
    /// run's tag, or are in its cgroup, and are in another process group), keep a handle on
    /// each that stays valid if its pid is reused (a pidfd), and report those not reported
    /// before with one [`Input::Escaped`]; report each one's end with
    /// [`Input::EscapedExited`]. Also after [`Output::Release`] of the run.
    Sweep { run: RunId, pgid: u32 },
    /// Send `signal` to every escaped process of `run` found so far that is still alive.
    SignalEscaped {
        run: RunId,
        signal: crate::process::Signal,
    },
    /// Try `target` elsewhere (never on the loop) and report with [`Input::Probed`]: a TCP
    /// connection gives up after [`PROBE_TIMEOUT`], an HTTP request after
    /// [`HTTP_PROBE_TIMEOUT`].
    Probe { probe: ProbeId, target: ProbeTarget },
    /// Measure what each run's processes use now (see [`Usage`]) and answer with one
    /// [`Input::Inspected`]. A run's processes are those in its process group `pgid` and those
    /// it started that left the group (the ones [`Output::Sweep`] finds). Done off the loop: it
    /// reads `/proc` (proc(5)).
    Inspect { runs: Vec<(RunId, u32)> },
    /// Find out whether the run's foreground process is blocked waiting to read its terminal
    /// (or, for pipes, its stdin) and answer at once with [`Input::InputWanted`]. Best effort,
    /// and never a guess: `Some(true)` only when a thread of a process in the terminal's
    /// foreground process group (`tcgetpgrp(3)` on the master; for pipes, the run's process
    /// group) is blocked in a read of that terminal or pipe, or in `select`/`poll` on nothing
    /// else (Linux: `/proc/<pid>/task/<tid>/syscall`, proc(5)); `Some(false)` when every such
    /// thread is running or blocked in a call that reads neither; `None` when it cannot be
    /// known (another platform, `/proc` unreadable, a wait on several descriptors).
    QueryInput { run: RunId },
    /// The core is done with this run: reap the process (`waitpid(2)`), close its pipes and
    /// forget it. Later events for it are ignored.
    Release { run: RunId },
    /// Every task is stopped and released: exit the server with status 0 (after writing the
    /// lines already transmitted, if the client reads them).
    Exit,
    /// Nothing more to do now: wake up at this deadline (or never, for `None`) and call
    /// [`Server::handle_timeout`]. A deadline that has already passed must be handled at once,
    /// before waiting for any other event.
    Timeout(Option<Instant>),
}

/// How long a TCP probe ([`ProbeTarget::Port`]) may take before the driver reports it failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an HTTP probe ([`ProbeTarget::Http`]) may take, connection and answer's head
/// together, before the driver reports it failed: a dev server may compile a page on its first
/// request.
pub const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

//! Helpers for tests, here and in the driver crates (feature `testutil`): spawn specs, waiting
//! for a child by event (pidfd, then waitid), client ends for a driver, and
//! [`driver_tests!`](crate::driver_tests), the tests every driver's `serve` must pass. Looking
//! at processes through `/proc` and bounded waits come from the test kit shared by every
//! crate's tests (`proc-testkit`), re-exported here. Linux only (they read `/proc`). Not a
//! stable API.

use std::io::{self, Cursor, Read, Write};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use proc_state::{ExitStatus, SpawnSpec, StdinMode, Stdio};

use crate::process;

pub use proc_testkit::{
    Lines, Stat, cmdline, group_members, is_alive, open_fds, proc_entry_exists, recv_within, stat,
    tag, vm_kib, wait_child, wait_for, wait_terminated, wait_until, within,
};

/// A spec for `program args...` with stdin `/dev/null`, no cwd, no env.
pub fn spec(program: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        program: program.to_owned(),
        args: args.iter().map(|&arg| arg.to_owned()).collect(),
        cwd: None,
        env: Vec::new(),
        stdio: Stdio::Pipes {
            stdin: StdinMode::Null,
        },
    }
}

/// `sh -c script`.
pub fn sh(script: &str) -> SpawnSpec {
    spec("/bin/sh", &["-c", script])
}

/// A spawned task (the leader of its own process group) that kills its group and reaps its
/// leader when dropped, and its stdout read line by line.
pub struct Task {
    /// Its pid, also its process group id.
    pub pid: Pid,
    /// Its stdout, line by line.
    pub stdout: Lines,
}

impl Task {
    /// Spawns `spec` (its stdout must be piped, as [`spec`] makes it).
    pub fn spawn(spec: &SpawnSpec) -> Self {
        Self::from(process::spawn(spec).expect("spawn"))
    }

    /// The next line of its stdout, without the newline (within `within`).
    #[track_caller]
    pub fn line(&mut self, within: Duration) -> String {
        self.stdout.line(within)
    }

    /// The next line of its stdout, parsed as a `T` (a pid, a port).
    #[track_caller]
    pub fn parsed_line<T: core::str::FromStr>(&mut self, within: Duration) -> T {
        let line = self.line(within);
        line.parse()
            .unwrap_or_else(|_| panic!("not a {}: {line:?}", core::any::type_name::<T>()))
    }

    /// Its process group id, as the core names it.
    pub fn pgid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }
}

impl From<process::Spawned> for Task {
    fn from(spawned: process::Spawned) -> Self {
        Self {
            pid: spawned.pid,
            stdout: Lines::new(spawned.stdout.expect("stdout piped"), "the task's stdout"),
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = process::signal_group(self.pid, proc_state::Signal::Kill);
        wait_exited(self.pid);
        let _ = process::reap(self.pid);
    }
}

/// Blocks until our child `pid` has exited (without reaping it) and returns how: its pidfd
/// first (bounded by [`CHILD_TIMEOUT`]), then waitid(2) with `WEXITED | WNOWAIT`, which then
/// returns at once.
///
/// # Panics
/// If it does not exit within [`CHILD_TIMEOUT`], or waitid(2) fails.
#[track_caller]
pub fn wait_exited(pid: Pid) -> ExitStatus {
    assert!(
        wait_terminated(pid.as_raw(), CHILD_TIMEOUT),
        "child {pid} did not exit within {CHILD_TIMEOUT:?}"
    );
    // SAFETY: zeroed siginfo_t is valid; waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw().unsigned_abs(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        match Errno::result(rc) {
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            Err(errno) => panic!("waitid({pid}): {errno}"),
        }
    }
    process::exit_status(pid)
        .expect("exit_status")
        .expect("exited after waitid")
}

/// How long [`wait_exited`] waits for a child, and the driver tests for a server to end.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// Client input that never ends: its bytes, then a read that blocks forever (the thread
/// reading it is left parked).
pub struct Endless(pub Cursor<Vec<u8>>);

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

/// A client that closed its end of our stdout: every write is `BrokenPipe`.
pub struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A pipe: (read end, write end), both blocking and close-on-exec.
///
/// # Panics
/// If pipe(2) fails.
pub fn pipe() -> (std::fs::File, std::fs::File) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2");
    (read.into(), write.into())
}

/// An `initialize` request (id 0, protocol version 2025-06-18), one line without newline.
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"0"}}}"#;

#[doc(hidden)]
pub use serde_json;

/// The tests every driver must pass, as `#[test]` functions in the module that invokes it.
/// `$runtime` makes a fresh [`driver::Runtime`](crate::driver::Runtime) (a `fn() -> Rt` with
/// `Rt: Runtime + Clone`); each test serves MCP with it through
/// [`driver::run`](crate::driver::run), the client's messages read from a reader of the test's
/// and the core's lines written to a writer of the test's, under [`CHILD_TIMEOUT`].
#[macro_export]
macro_rules! driver_tests {
    ($runtime:path) => {
        /// Serves MCP on a fresh runtime: the client's messages read from `input`, the core's
        /// lines written to `output`.
        fn serve<R, W>(
            config: ::proc_state::Config,
            input: R,
            output: W,
        ) -> ::std::io::Result<()>
        where
            R: ::std::io::Read + Send + 'static,
            W: ::std::io::Write + Send + 'static,
        {
            let session = $crate::driver::Session::open(input)?;
            $crate::driver::run(session, config, output, $runtime())
        }

        #[test]
        fn client_eof_ends_the_server() {
            let out = $crate::testutil::Sink::default();
            let sink = out.clone();
            $crate::testutil::within($crate::testutil::CHILD_TIMEOUT, "serve", move || {
                serve(
                    ::proc_state::Config::default(),
                    ::std::io::Cursor::new(Vec::new()),
                    sink,
                )
            })
            .expect("serve");
            assert_eq!(out.bytes(), b"");
        }

        #[test]
        fn answers_in_lines_then_ends_at_eof() {
            let input = format!("{}\n", $crate::testutil::INITIALIZE).into_bytes();
            let out = $crate::testutil::Sink::default();
            let sink = out.clone();
            $crate::testutil::within($crate::testutil::CHILD_TIMEOUT, "serve", move || {
                serve(
                    ::proc_state::Config::default(),
                    ::std::io::Cursor::new(input),
                    sink,
                )
            })
            .expect("serve");
            let text = String::from_utf8(out.bytes()).expect("utf-8");
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.ends_with('\n'));
            assert!(
                text.starts_with(r#"{"jsonrpc":"2.0","id":0,"result":"#),
                "{text}"
            );
        }

        #[test]
        fn tasks_are_stopped_and_reaped_before_the_server_ends() {
            use $crate::testutil::serde_json::{self, Value};
            let input = [
                $crate::testutil::INITIALIZE,
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"start","arguments":{"command":"sleep","args":["1000"]}}}"#,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"start","arguments":{"command":"sleep 1000 & sleep 1000 & wait"}}}"#,
                "",
            ]
            .join("\n");
            let out = $crate::testutil::Sink::default();
            let sink = out.clone();
            $crate::testutil::within($crate::testutil::CHILD_TIMEOUT, "serve", move || {
                serve(
                    ::proc_state::Config::default(),
                    ::std::io::Cursor::new(input.into_bytes()),
                    sink,
                )
            })
            .expect("serve");
            let text = String::from_utf8(out.bytes()).expect("utf-8");
            let pids: Vec<i32> = text
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).expect("JSON line"))
                .filter_map(|message| message["result"]["structuredContent"]["pid"].as_i64())
                .map(|pid| i32::try_from(pid).expect("pid"))
                .collect();
            assert_eq!(pids.len(), 2, "{text}");
            for pid in pids {
                // Reaped: gone from /proc; and everything in its process group was signalled
                // (grandchildren may take a moment to die: wait for that, by pidfd).
                assert_eq!($crate::testutil::stat(pid), None, "{pid} not reaped");
                for (member, _) in $crate::testutil::group_members(pid) {
                    let dead = $crate::testutil::wait_terminated(
                        member,
                        ::std::time::Duration::from_secs(10),
                    );
                    assert!(dead, "{member} of group {pid} survives");
                }
            }
        }

        #[test]
        fn a_closed_stdout_counts_as_client_eof() {
            let input = format!("{}\n", $crate::testutil::INITIALIZE).into_bytes();
            // Returns although stdin never ends: the failed write ended the session.
            $crate::testutil::within($crate::testutil::CHILD_TIMEOUT, "serve", move || {
                serve(
                    ::proc_state::Config::default(),
                    $crate::testutil::Endless(::std::io::Cursor::new(input)),
                    $crate::testutil::Closed,
                )
            })
            .expect("serve");
        }

        #[test]
        fn output_of_a_task_reaches_its_logs() {
            use $crate::testutil::serde_json::{self, Value};
            // `wait` is not a tool: stop waits for the exit, then logs reads what it printed.
            let input = [
                $crate::testutil::INITIALIZE,
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"start","arguments":{"command":"echo out; echo err >&2; sleep 1000","name":"t"}}}"#,
            ]
            .join("\n")
                + "\n";
            let (reader, mut writer) = $crate::testutil::pipe();
            ::std::io::Write::write_all(&mut writer, input.as_bytes()).expect("write");
            let (lines_tx, lines_rx) = ::std::sync::mpsc::channel::<Value>();
            /// Sends every line it is given to the test, parsed.
            struct Lines(::std::sync::mpsc::Sender<Value>, Vec<u8>);
            impl ::std::io::Write for Lines {
                fn write(&mut self, buf: &[u8]) -> ::std::io::Result<usize> {
                    self.1.extend_from_slice(buf);
                    while let Some(end) = self.1.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.1.drain(..=end).collect();
                        let _ = self.0.send(serde_json::from_slice(&line).expect("JSON line"));
                    }
                    Ok(buf.len())
                }
                fn flush(&mut self) -> ::std::io::Result<()> {
                    Ok(())
                }
            }
            let (done_tx, done_rx) = ::std::sync::mpsc::channel();
            ::std::thread::spawn(move || {
                let served =
                    serve(::proc_state::Config::default(), reader, Lines(lines_tx, Vec::new()));
                let _ = done_tx.send(served);
            });
            let timeout = ::std::time::Duration::from_secs(20);
            let deadline = ::std::time::Instant::now() + timeout;
            let mut next_id = 2;
            let texts = loop {
                let request = format!(
                    r#"{{"jsonrpc":"2.0","id":{next_id},"method":"tools/call","params":{{"name":"logs","arguments":{{"id":"t"}}}}}}"#
                );
                ::std::io::Write::write_all(&mut writer, format!("{request}\n").as_bytes())
                    .expect("write");
                let response = loop {
                    let message =
                        $crate::testutil::recv_within(&lines_rx, timeout, "a response to logs");
                    if message["id"] == next_id {
                        break message;
                    }
                };
                next_id += 1;
                let mut texts: Vec<String> = response["result"]["structuredContent"]["lines"]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .map(|line| line["text"].as_str().expect("text").to_owned())
                    .collect();
                texts.sort();
                if texts.len() == 2 {
                    break texts;
                }
                assert!(::std::time::Instant::now() < deadline, "logs: {response}");
                ::std::thread::sleep(::std::time::Duration::from_millis(10));
            };
            assert_eq!(texts, ["err", "out"]);
            // EOF: the server stops the task and ends.
            drop(writer);
            $crate::testutil::recv_within(&done_rx, timeout, "the server's end after EOF")
                .expect("serve");
        }
    };
}

/// A `Write` that keeps everything written, shared between its clones (the server writes
/// from a thread of its own).
#[derive(Clone, Debug, Default)]
pub struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Sink {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A descriptor open on /dev/null *without* `FD_CLOEXEC`, as a careless parent would leak it;
/// closed on drop.
#[derive(Debug)]
pub struct Leaked(pub libc::c_int);

impl Leaked {
    /// Opens one (always fd 3 or above: 0-2 are taken).
    ///
    /// # Panics
    /// If open(2) fails.
    pub fn new() -> Self {
        // SAFETY: a NUL-terminated path; no O_CLOEXEC on purpose.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 3, "open: {}", std::io::Error::last_os_error());
        Self(fd)
    }

    /// Whether it is marked close-on-exec now.
    ///
    /// # Panics
    /// If fcntl(2) fails.
    pub fn cloexec(&self) -> bool {
        // SAFETY: F_GETFD on our own descriptor.
        let flags = unsafe { libc::fcntl(self.0, libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }
}

impl Default for Leaked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Leaked {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

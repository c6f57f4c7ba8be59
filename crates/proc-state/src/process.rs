//! The vocabulary the core and a driver share about processes: what to spawn, which stream,
//! which signal, how a process ended. POSIX names throughout (see signal(7), wait(2)).

use core::fmt;

/// Identifies one spawned process of a task (one *run*). A task that is restarted gets a new
/// `RunId`, so late events of the old process can never be mistaken for the new one.
///
/// Run ids are never reused for the life of a [`Server`](crate::Server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run#{}", self.0)
    }
}

/// Where a line of output came from: one of a process's two output pipes, or its terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// File descriptor 1, a pipe.
    Stdout,
    /// File descriptor 2, a pipe.
    Stderr,
    /// The master side of the task's pseudo-terminal ([`Stdio::Terminal`]): everything the
    /// task wrote to its terminal, stdout and stderr alike, and the terminal's echo of what
    /// was written to it.
    Tty,
}

impl Stream {
    /// `"stdout"`, `"stderr"` or `"tty"`, as the tools spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Tty => "tty",
        }
    }
}

/// The size of a terminal window in character cells: `ws_row` and `ws_col` of
/// `struct winsize` (tty_ioctl(4)); the pixel fields are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowSize {
    /// Rows (lines), at least 1.
    pub rows: u16,
    /// Columns, at least 1.
    pub cols: u16,
}

/// How the child's standard streams are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// stdout and stderr to pipes the driver reads ([`Stream::Stdout`], [`Stream::Stderr`]);
    /// stdin as [`StdinMode`] says.
    Pipes { stdin: StdinMode },
    /// stdin, stdout and stderr all on the slave side of a new pseudo-terminal (pty(7)) of this
    /// size, which becomes the controlling terminal of the child's new session (opened by the
    /// session leader without `O_NOCTTY`, as in credentials(7)). The driver reads the master
    /// side as [`Stream::Tty`] (`EIO` there, once no process holds the slave open, is its
    /// end-of-file), writes to it for [`Output::WriteStdin`](crate::Output::WriteStdin), and
    /// sets its size for [`Output::Resize`](crate::Output::Resize). The terminal starts in the
    /// kernel's default mode (canonical input, echo, `ONLCR`).
    Terminal(WindowSize),
}

/// What to do with the child's standard input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StdinMode {
    /// Connect it to `/dev/null`: reads see end-of-file at once.
    Null,
    /// Keep a pipe open so the core can write to it.
    Piped,
}

/// Everything a driver needs to start one process.
///
/// The driver must put the process in a new session and process group (`setsid(2)`), connect
/// its standard streams as [`Stdio`] says, and make sure the
/// process does not outlive the server (proc-os: a watchdog process kills every task's group
/// when the server dies). It must never let the child inherit the server's own stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Program to execute, looked up in `PATH` when it has no `/`.
    pub program: String,
    /// Arguments after the program name (`argv[1..]`).
    pub args: Vec<String>,
    /// Working directory; `None` keeps the server's.
    pub cwd: Option<String>,
    /// Variables set on top of the server's environment, in order.
    pub env: Vec<(String, String)>,
    /// The child's standard streams.
    pub stdio: Stdio,
}

/// A POSIX signal, named as in signal(7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Ill,
    Trap,
    Abrt,
    Bus,
    Fpe,
    Kill,
    Usr1,
    Segv,
    Usr2,
    Pipe,
    Alrm,
    Term,
    Chld,
    Cont,
    Stop,
    Tstp,
    Ttin,
    Ttou,
    Urg,
    Xcpu,
    Xfsz,
    Vtalrm,
    Prof,
    Winch,
    Io,
    Sys,
    /// A signal without a portable name (e.g. a real-time signal), by its platform number.
    Other(i32),
}

const NAMED: [(Signal, &str); 29] = [
    (Signal::Hup, "SIGHUP"),
    (Signal::Int, "SIGINT"),
    (Signal::Quit, "SIGQUIT"),
    (Signal::Ill, "SIGILL"),
    (Signal::Trap, "SIGTRAP"),
    (Signal::Abrt, "SIGABRT"),
    (Signal::Bus, "SIGBUS"),
    (Signal::Fpe, "SIGFPE"),
    (Signal::Kill, "SIGKILL"),
    (Signal::Usr1, "SIGUSR1"),
    (Signal::Segv, "SIGSEGV"),
    (Signal::Usr2, "SIGUSR2"),
    (Signal::Pipe, "SIGPIPE"),
    (Signal::Alrm, "SIGALRM"),
    (Signal::Term, "SIGTERM"),
    (Signal::Chld, "SIGCHLD"),
    (Signal::Cont, "SIGCONT"),
    (Signal::Stop, "SIGSTOP"),
    (Signal::Tstp, "SIGTSTP"),
    (Signal::Ttin, "SIGTTIN"),
    (Signal::Ttou, "SIGTTOU"),
    (Signal::Urg, "SIGURG"),
    (Signal::Xcpu, "SIGXCPU"),
    (Signal::Xfsz, "SIGXFSZ"),
    (Signal::Vtalrm, "SIGVTALRM"),
    (Signal::Prof, "SIGPROF"),
    (Signal::Winch, "SIGWINCH"),
    (Signal::Io, "SIGIO"),
    (Signal::Sys, "SIGSYS"),
];

impl Signal {
    /// The signal's name with the `SIG` prefix (`"SIGTERM"`); `"SIG<n>"` for [`Signal::Other`].
    pub fn name(self) -> String {
        match self {
            Signal::Other(n) => format!("SIG{n}"),
            named => NAMED
                .iter()
                .find(|(s, _)| *s == named)
                .map(|(_, name)| (*name).to_owned())
                .unwrap_or_default(),
        }
    }

    /// Parses a name with the `SIG` prefix (`"SIGTERM"`), as the tools accept it.
    pub fn from_name(name: &str) -> Option<Signal> {
        NAMED.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A process that a task started and that left the task's process group (setsid(2),
/// setpgid(2)), as the driver found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscapedProcess {
    /// Its pid.
    pub pid: u32,
    /// Its command line, for people: arguments joined by spaces, at most
    /// [`EscapedProcess::COMMAND_CHARS`] characters (ending in `…` when cut).
    pub command: String,
}

impl EscapedProcess {
    /// The most characters of [`EscapedProcess::command`]: what `stop` and `status` show of an
    /// escaped process.
    pub const COMMAND_CHARS: usize = 120;
}

/// A transport protocol of a socket (see [`Listener`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`, as the tools spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A socket a process listens on: a TCP socket in the `LISTEN` state, or an unconnected bound
/// UDP socket (Linux: `/proc/net/{tcp,tcp6,udp,udp6}`, proc(5), matched to the socket inodes
/// among the process's file descriptors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub protocol: Protocol,
    /// The local address it is bound to (`0.0.0.0` or `::` for every interface).
    pub address: core::net::IpAddr,
    pub port: u16,
}

/// What a run's live processes use, summed over them (see
/// [`Output::Inspect`](crate::Output::Inspect)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many processes: the group's and those that left it.
    pub processes: u32,
    /// CPU time, user plus system, in milliseconds (`utime + stime` of proc(5)'s
    /// `/proc/<pid>/stat`), of the processes alive now (children already reaped are not
    /// counted).
    pub cpu_ms: u64,
    /// Resident set size in bytes (`VmRSS`), summed; pages shared between the processes count
    /// once per process.
    pub rss_bytes: u64,
    /// The sockets they listen on, each once, sorted.
    pub listening: Vec<Listener>,
}

/// How a process ended, as `waitid(2)` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code (`WIFEXITED`, `WEXITSTATUS`).
    Code(i32),
    /// A signal ended it (`WIFSIGNALED`, `WTERMSIG`).
    Signaled(Signal),
    /// It is gone, but its status could not be had: something else reaped it (`ECHILD` from
    /// `waitid(2)`), or the kernel reported a state that is neither of the above.
    Lost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        for (signal, name) in NAMED {
            assert_eq!(signal.name(), name);
            assert_eq!(Signal::from_name(name), Some(signal));
        }
        assert_eq!(Signal::Other(34).name(), "SIG34");
        assert_eq!(Signal::from_name("TERM"), None);
    }
}

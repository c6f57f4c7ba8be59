//! Whether a run's foreground process waits for input, the answer to proc-state's
//! `Output::QueryInput`: best effort, and never a guess.
//!
//! On Linux, through `/proc` (proc(5)): the processes of the group that reads the input (the
//! terminal's foreground process group, tcgetpgrp(3) on the master; for a stdin pipe, the
//! run's process group), found by their `/proc/<pid>/stat`; for each of their threads, the
//! system call it is blocked in (`/proc/<pid>/task/<tid>/syscall`), its arguments, and, for
//! `poll`/`select`, the descriptor sets it passed (`/proc/<pid>/mem`). A thread waits for the
//! input when it is blocked in a read of a descriptor that is the input (compared by device
//! and inode, through `/proc/<pid>/fd/<n>`), or in `select`/`poll` on that descriptor alone.
//! Elsewhere the answer is always unknown.
//!
//! It runs in the driver loop on each query: a scan of `/proc/<pid>/stat` and a few reads per
//! thread of the group, bounded by [`MAX_PROCESSES`] and [`MAX_THREADS`] (beyond them the
//! answer is unknown unless a waiting thread was found).

use std::os::fd::BorrowedFd;

/// The most processes of the group looked at; a bigger group is unknown unless one of the
/// first ones waits for the input.
pub const MAX_PROCESSES: usize = 64;

/// The most threads of one process looked at; more are unknown unless one of the first ones
/// waits for the input.
pub const MAX_THREADS: usize = 64;

/// What a run reads as its input, and so which processes may be waiting for it.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// The master side of the run's terminal (pty(7)): the input is the slave side (also as
    /// `/dev/tty`, for a process whose controlling terminal it is), read by the terminal's
    /// foreground process group (tcgetpgrp(3) on the master).
    Terminal(BorrowedFd<'a>),
    /// Our write end of the run's stdin pipe: the input is that pipe (its read end has the
    /// same inode), read by the run's process group `pgid`.
    Pipe {
        /// The write end, which we hold.
        write_end: BorrowedFd<'a>,
        /// The run's process group (its leader's pid).
        pgid: i32,
    },
}

/// Whether a process of `source`'s reading group waits for that input: `Some(true)` when a
/// thread of one of them is blocked in `read`/`readv`/`pread64`/`preadv`/`preadv2` of it, or in
/// `select`/`pselect6` with `nfds` 1 on descriptor 0 that is it, or in `poll`/`ppoll` on that
/// one descriptor; `Some(false)` when every thread of the group is running, or blocked in a
/// call that cannot be reading it (sleeps, waits for children or signals, futexes, writes, and
/// `select`/`poll` on no descriptor at all); `None` otherwise: a read or a wait on other or
/// several descriptors (`epoll`, `select` on more), any other call, a stopped or traced
/// process, no process in the group, `/proc` unreadable (permissions: a process that is not
/// dumpable), or another platform than Linux.
pub fn input_wanted(source: Source<'_>) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        linux::input_wanted(source)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = source;
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd as _, BorrowedFd};
    use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _};

    use nix::libc;

    use super::{MAX_PROCESSES, MAX_THREADS, Source};

    /// The input, as a descriptor found in `/proc/<pid>/fd/<n>` shows it once followed (stat).
    struct Target {
        /// Device and inode of the pipe or of the terminal's slave side.
        dev: u64,
        ino: u64,
        /// For a terminal: the slave's device number, to recognise `/dev/tty` opened by a
        /// process whose controlling terminal it is.
        tty: Option<u64>,
    }

    /// One member of the group, from its `/proc/<pid>/stat`.
    struct Member {
        pid: i32,
        state: u8,
        /// `tty_nr`, field 7: its controlling terminal's device number, as the kernel encodes
        /// it.
        tty_nr: u64,
    }

    /// What one thread does, as far as the input goes.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Thread {
        /// Blocked waiting to read the input.
        Waiting,
        /// Running, or blocked in a call that cannot read the input.
        NotReading,
        /// Anything else.
        Unknown,
    }

    pub(super) fn input_wanted(source: Source<'_>) -> Option<bool> {
        let (target, pgid) = match source {
            Source::Terminal(master) => {
                // SAFETY: tcgetpgrp(3) on a descriptor we hold; it returns -1 on error.
                let pgid = unsafe { libc::tcgetpgrp(master.as_raw_fd()) };
                (slave(master).ok()?, pgid)
            }
            Source::Pipe { write_end, pgid } => {
                let stat = nix::sys::stat::fstat(write_end).ok()?;
                let target = Target {
                    dev: stat.st_dev,
                    ino: stat.st_ino,
                    tty: None,
                };
                (target, pgid)
            }
        };
        if pgid <= 0 {
            return None;
        }
        let (members, complete) = group(pgid)?;
        let mut all_known = complete;
        let mut any = false;
        for member in &members {
            match member.state {
                // Exited (its threads are gone or going): reads nothing.
                b'Z' | b'X' | b'x' => continue,
                // Stopped or traced: it might read once resumed.
                b'T' | b't' => {
                    all_known = false;
                    continue;
                }
                _ => {}
            }
            any = true;
            match process(member, &target) {
                Some(true) => return Some(true),
                Some(false) => {}
                None => all_known = false,
            }
        }
        (any && all_known).then_some(false)
    }

    /// The slave side of the terminal whose master is `master`: its path (ptsname_r(3)), then
    /// stat(2) of that path.
    fn slave(master: BorrowedFd<'_>) -> io::Result<Target> {
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: a writable buffer of the length given; ptsname_r NUL-terminates it.
        let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: NUL-terminated by ptsname_r, within `name`.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        let stat = nix::sys::stat::stat(path)?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFCHR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the terminal's slave side is not a character device",
            ));
        }
        Ok(Target {
            dev: stat.st_dev,
            ino: stat.st_ino,
            tty: Some(stat.st_rdev),
        })
    }

    /// The processes in process group `pgid` (field 5 of `/proc/<pid>/stat`), at most
    /// [`MAX_PROCESSES`], and whether that is all of them. `None` when `/proc` cannot be
    /// listed.
    fn group(pgid: i32) -> Option<(Vec<Member>, bool)> {
        let mut members = Vec::new();
        let mut complete = true;
        for entry in std::fs::read_dir("/proc").ok()? {
            let Ok(entry) = entry else {
                complete = false;
                continue;
            };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // Gone meanwhile, or unreadable (then not ours to read anyway).
            let Ok(text) = std::fs::read(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((state, pgrp, tty_nr)) = parse_stat(&text) else {
                complete = false;
                continue;
            };
            if pgrp != pgid {
                continue;
            }
            if members.len() == MAX_PROCESSES {
                complete = false;
                break;
            }
            members.push(Member { pid, state, tty_nr });
        }
        Some((members, complete))
    }

    /// State (field 3), process group (field 5) and controlling terminal (field 7) of a
    /// `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may contain
    /// anything, spaces and parentheses too: the fields that follow start after the last ')'.
    fn parse_stat(text: &[u8]) -> Option<(u8, i32, u64)> {
        let close = text.iter().rposition(|&b| b == b')')?;
        let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
        let mut fields = rest.split_ascii_whitespace();
        let state = *fields.next()?.as_bytes().first()?;
        let _ppid = fields.next()?;
        let pgrp = fields.next()?.parse().ok()?;
        let _session = fields.next()?;
        // A signed int in the kernel, printed as such; its bits are the device number.
        let tty_nr = fields.next()?.parse::<i64>().ok()?;
        Some((state, pgrp, tty_nr as u64 & 0xffff_ffff))
    }

    /// Whether a thread of `member` waits for the input: `Some(true)` as soon as one does,
    /// `Some(false)` when none can be reading it, `None` when that cannot be known.
    fn process(member: &Member, target: &Target) -> Option<bool> {
        let pid = member.pid;
        let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(tasks) => tasks,
            // Gone since the scan: reads nothing any more.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
        };
        let mut all_known = true;
        let mut seen = 0;
        for task in tasks {
            let Some(tid) = task
                .ok()
                .and_then(|t| t.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            else {
                all_known = false;
                continue;
            };
            if seen == MAX_THREADS {
                all_known = false;
                break;
            }
            seen += 1;
            match thread(member, tid, target) {
                Thread::Waiting => return Some(true),
                Thread::NotReading => {}
                Thread::Unknown => all_known = false,
            }
        }
        all_known.then_some(false)
    }

    /// What thread `tid` of `member` does: its `/proc/<pid>/task/<tid>/syscall` (proc(5)),
    /// "running", or the number of the call it is blocked in and its six arguments in hex
    /// (then its stack and instruction pointers), or -1 when it is blocked outside a call.
    fn thread(member: &Member, tid: i32, target: &Target) -> Thread {
        let pid = member.pid;
        let text = match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) {
            Ok(text) => text,
            // Ended since it was listed.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Thread::NotReading,
            Err(_) => return Thread::Unknown,
        };
        let Some(call) = parse_syscall(&text) else {
            return Thread::Unknown;
        };
        let Some((nr, args)) = call else {
            return Thread::NotReading;
        };
        classify(nr, args, member, target)
    }

    /// A `syscall` file: `Some(None)` for "running", `Some(Some((number, arguments)))` for a
    /// blocked call; `None` for anything else (-1: blocked outside a call).
    fn parse_syscall(text: &str) -> Option<Option<(i64, [u64; 6])>> {
        let text = text.trim();
        if text == "running" {
            return Some(None);
        }
        let mut fields = text.split_ascii_whitespace();
        let nr = fields.next()?.parse::<i64>().ok().filter(|&nr| nr >= 0)?;
        let mut args = [0; 6];
        for arg in &mut args {
            let hex = fields.next()?;
            *arg = u64::from_str_radix(hex.strip_prefix("0x").unwrap_or(hex), 16).ok()?;
        }
        Some(Some((nr, args)))
    }

    /// What a thread blocked in call `nr` with `args` does, as far as the input goes.
    fn classify(nr: i64, args: [u64; 6], member: &Member, target: &Target) -> Thread {
        let waits_on = |fd: u64| match i32::try_from(fd).map(|fd| is_input(member, fd, target)) {
            Ok(Some(true)) => Thread::Waiting,
            _ => Thread::Unknown,
        };
        match nr {
            libc::SYS_read
            | libc::SYS_readv
            | libc::SYS_pread64
            | libc::SYS_preadv
            | libc::SYS_preadv2 => waits_on(args[0]),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_select => select(args, member, target),
            libc::SYS_pselect6 => select(args, member, target),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_poll => poll(args, member, target),
            libc::SYS_ppoll => poll(args, member, target),
            // Sleeps, waits for children or signals, futexes (a thread waiting for another,
            // which is looked at on its own), writes: none of them reads anything.
            libc::SYS_nanosleep
            | libc::SYS_clock_nanosleep
            | libc::SYS_wait4
            | libc::SYS_waitid
            | libc::SYS_rt_sigsuspend
            | libc::SYS_rt_sigtimedwait
            | libc::SYS_futex
            | libc::SYS_write
            | libc::SYS_writev
            | libc::SYS_pwrite64
            | libc::SYS_pwritev
            | libc::SYS_pwritev2 => Thread::NotReading,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_pause => Thread::NotReading,
            _ => Thread::Unknown,
        }
    }

    /// `select(nfds, readfds, ...)` or `pselect6`: no descriptor is a sleep; one (`nfds` 1:
    /// only descriptor 0 can be in the sets) is waiting for the input when descriptor 0 is
    /// the input and is in `readfds` (read from `/proc/<pid>/mem`; when that cannot be read,
    /// a non-null `readfds` is taken as watching it); more are unknown.
    fn select(args: [u64; 6], member: &Member, target: &Target) -> Thread {
        let [nfds, readfds, ..] = args;
        match nfds {
            0 => Thread::NotReading,
            1 if readfds != 0 => {
                let mut set = [0u8; 1];
                let watched =
                    read_memory(member.pid, readfds, &mut set).map_or(true, |()| set[0] & 1 != 0);
                if watched && is_input(member, 0, target) == Some(true) {
                    Thread::Waiting
                } else {
                    Thread::Unknown
                }
            }
            _ => Thread::Unknown,
        }
    }

    /// `poll(fds, nfds, ...)` or `ppoll`: no descriptor is a sleep; one is waiting for the
    /// input when its `struct pollfd` (read from `/proc/<pid>/mem`) is the input, watched for
    /// reading; more, or a `pollfd` that cannot be read, are unknown.
    fn poll(args: [u64; 6], member: &Member, target: &Target) -> Thread {
        let [fds, nfds, ..] = args;
        match nfds {
            0 => Thread::NotReading,
            1 => {
                // struct pollfd { int fd; short events; short revents; }
                let mut pollfd = [0u8; 8];
                if read_memory(member.pid, fds, &mut pollfd).is_err() {
                    return Thread::Unknown;
                }
                let fd = i32::from_ne_bytes([pollfd[0], pollfd[1], pollfd[2], pollfd[3]]);
                let events = i16::from_ne_bytes([pollfd[4], pollfd[5]]);
                let reading = libc::POLLIN | libc::POLLPRI | libc::POLLRDNORM | libc::POLLRDBAND;
                if fd < 0 {
                    // Ignored: a sleep.
                    Thread::NotReading
                } else if events & reading != 0 && is_input(member, fd, target) == Some(true) {
                    Thread::Waiting
                } else {
                    Thread::Unknown
                }
            }
            _ => Thread::Unknown,
        }
    }

    /// Reads `buf.len()` bytes at `address` of `pid`'s memory (`/proc/<pid>/mem`).
    fn read_memory(pid: i32, address: u64, buf: &mut [u8]) -> io::Result<()> {
        std::fs::File::open(format!("/proc/{pid}/mem"))?.read_exact_at(buf, address)
    }

    /// Whether descriptor `fd` of `member` is the input: stat(2) of `/proc/<pid>/fd/<fd>` (the
    /// open file itself) has the input's device and inode, or, for a terminal, it is
    /// `/dev/tty` and the terminal is the process's controlling terminal. `Some(false)` when
    /// the descriptor is not open; `None` when it cannot be looked at.
    fn is_input(member: &Member, fd: i32, target: &Target) -> Option<bool> {
        let pid = member.pid;
        let stat = match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            Ok(stat) => stat,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
        };
        if (stat.dev(), stat.ino()) == (target.dev, target.ino) {
            return Some(true);
        }
        let controlling = |tty: u64| {
            // `tty_nr`: minor in bits 31..20 and 7..0, major in bits 15..8.
            let nr = member.tty_nr;
            let (major, minor) = ((nr >> 8) & 0xfff, (nr & 0xff) | ((nr >> 12) & 0xf_ff00));
            u64::from(libc::major(tty)) == major && u64::from(libc::minor(tty)) == minor
        };
        Some(target.tty.is_some_and(|tty| {
            stat.file_type().is_char_device()
                && stat.rdev() == libc::makedev(5, 0)
                && controlling(tty)
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::{parse_stat, parse_syscall};

        #[test]
        fn stat_fields_come_after_the_last_parenthesis() {
            let text = b"42 (a) b (c)) S 1 40 40 34816 40 4194304 0";
            assert_eq!(parse_stat(text), Some((b'S', 40, 34816)));
            assert_eq!(parse_stat(b"42 (x"), None);
        }

        #[test]
        fn syscall_lines_are_running_or_a_call_with_six_arguments() {
            assert_eq!(parse_syscall("running\n"), Some(None));
            assert_eq!(
                parse_syscall("0 0x0 0x7ffc 0x1 0x0 0x0 0x0 0x7ffd 0x7f00\n"),
                Some(Some((0, [0, 0x7ffc, 1, 0, 0, 0])))
            );
            // Blocked outside a system call.
            assert_eq!(parse_syscall("-1 0x7ffd 0x7f00\n"), None);
            assert_eq!(parse_syscall("7 0x1\n"), None);
        }
    }
}

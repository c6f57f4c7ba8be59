//! Processes as `/proc` shows them (proc(5)). Every reader returns `None` (or an empty list)
//! for a process that is gone, since any process may end between two reads; the ones that
//! must find something panic with the path they could not read.

use std::collections::BTreeMap;
use std::fs;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The variable every process of a task inherits: `<server pid>.<server start time>.<run>`
/// (proc-os's `tree::TAG_VAR`).
pub const TAG_VAR: &str = "PROC_MCP_TAG";

/// The hidden argument that makes the binary a watchdog:
/// `<exe> __proc-mcp-watchdog <server pid>.<server start time> [<cgroup>]` (proc-os's
/// `watchdog::WATCHDOG_ARG`).
pub const WATCHDOG_ARG: &str = "__proc-mcp-watchdog";

/// The fields of `/proc/<pid>/stat` the tests look at, named as in proc(5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The process id.
    pub pid: i32,
    /// `R` running, `S` sleeping, `D` disk sleep, `T` stopped, `Z` zombie, `X` dead...
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group id.
    pub pgrp: i32,
    /// The session id.
    pub session: i32,
    /// `starttime`: clock ticks after boot when the process started. With the pid, it names
    /// one process for good (a reused pid has another start time).
    pub start_time: u64,
}

impl Stat {
    /// Neither a zombie (`Z`) nor dead (`X`): running, sleeping or stopped.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// The [`Stat`] of `pid`; `None` once it is gone (reaped), or if `/proc/<pid>/stat` cannot be
/// parsed.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `pid (comm) state ppid pgrp session tty_nr ... starttime(22) ...`. The command name
/// may hold anything, spaces and parentheses included: fields are read after the last `)`.
fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // After `comm`, `state` is field 3 of proc(5): field n is at index n - 3.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        pid,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Every process in `/proc` now (those that ended while it was read left out).
pub fn processes() -> Vec<Stat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.is_live())
}

/// True while `/proc/<pid>` exists: running or a zombie, that is, not reaped yet.
pub fn proc_entry_exists(pid: i32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// Every process in process group `pgid`, zombies included, as `(pid, state)`, by pid.
pub fn group_members(pgid: i32) -> Vec<(i32, char)> {
    processes()
        .into_iter()
        .filter(|s| s.pgrp == pgid)
        .map(|s| (s.pid, s.state))
        .collect()
}

/// The live (non-zombie) members of process group `pgid`, each as [`describe`] shows it.
pub fn live_group_members(pgid: i32) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|s| s.pgrp == pgid && s.is_live())
        .map(|s| describe(s.pid))
        .collect()
}

/// `kill(-pgid, 0)` (kill(2)): true while any process, zombies included, is in group `pgid`.
///
/// # Panics
/// On an error other than `ESRCH` (e.g. `EPERM`: a group of another user).
pub fn group_exists(pgid: i32) -> bool {
    match kill(Pid::from_raw(-pgid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(errno) => panic!("kill(-{pgid}, 0): {errno}"),
    }
}

/// The command line of `pid`, its arguments joined by spaces; empty once it is gone (and for
/// a zombie).
pub fn cmdline(pid: i32) -> String {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .replace('\0', " ")
        .trim()
        .to_owned()
}

/// `pid state cmdline`, for failure messages (`?` for the state of a process that is gone).
pub fn describe(pid: i32) -> String {
    let state = stat(pid).map_or('?', |s| s.state);
    format!("{pid} {state} {}", cmdline(pid))
}

/// The value of `name` in the environment `pid` started with (`/proc/<pid>/environ`); `None`
/// if it has none, or is gone or not ours to read.
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The [`TAG_VAR`] `pid` inherited, if any.
pub fn tag(pid: i32) -> Option<String> {
    environ_var(pid, TAG_VAR)
}

/// One process, named for good by its pid and start time: a process that reuses the pid later
/// is another [`Proc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its [`Stat::start_time`].
    pub start_time: u64,
}

impl Proc {
    /// The live process `pid` now; `None` if it is gone or a zombie.
    pub fn of(pid: i32) -> Option<Proc> {
        stat(pid).filter(Stat::is_live).map(|s| Proc {
            pid,
            start_time: s.start_time,
        })
    }

    /// Running, sleeping or stopped: not a zombie, not gone, and not replaced by a process that
    /// reused the pid.
    pub fn is_alive(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_time == self.start_time && s.is_live())
    }

    /// `pid state cmdline` ([`describe`]).
    pub fn describe(self) -> String {
        describe(self.pid)
    }
}

/// The live processes tagged by server `server` (their [`TAG_VAR`] starts with `<server>.`),
/// with their tags.
pub fn tagged_by(server: u32) -> BTreeMap<Proc, String> {
    let prefix = format!("{server}.");
    processes()
        .into_iter()
        .filter(Stat::is_live)
        .filter_map(|s| {
            let tag = tag(s.pid)?;
            tag.starts_with(&prefix).then_some((
                Proc {
                    pid: s.pid,
                    start_time: s.start_time,
                },
                tag,
            ))
        })
        .collect()
}

/// The live watchdog of server `server`: the process whose arguments are [`WATCHDOG_ARG`]
/// then `<server>.<start time>`.
pub fn watchdog_of(server: u32) -> Option<Proc> {
    let instance = format!("{server}.");
    processes()
        .into_iter()
        .filter(Stat::is_live)
        .find(|s| {
            let argv = fs::read(format!("/proc/{}/cmdline", s.pid)).unwrap_or_default();
            let mut args = argv.split(|&b| b == 0);
            args.any(|arg| arg == WATCHDOG_ARG.as_bytes())
                && args
                    .next()
                    .is_some_and(|arg| arg.starts_with(instance.as_bytes()))
        })
        .and_then(|s| Proc::of(s.pid))
}

/// The open descriptors of process `pid`, in order (`/proc/<pid>/fd`).
///
/// # Panics
/// If the directory cannot be read (no such process, or not ours to look at).
pub fn open_fds(pid: i32) -> Vec<i32> {
    let mut fds: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/fd: {err}"))
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The soft and hard limits on open files (`RLIMIT_NOFILE`) of `pid`: the `Max open files`
/// line of `/proc/<pid>/limits`.
///
/// # Panics
/// If the file cannot be read or has no such line with two numbers (`unlimited` included).
pub fn nofile_limits(pid: i32) -> (u64, u64) {
    let path = format!("/proc/{pid}/limits");
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no `Max open files` in {path}"));
    let mut numbers = line
        .split_whitespace()
        .filter_map(|word| word.parse::<u64>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(soft), Some(hard)) => (soft, hard),
        _ => panic!("no soft and hard limit in {path}: {line:?}"),
    }
}

/// A `Vm*` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`...), in KiB.
///
/// # Panics
/// If the file cannot be read or has no such field.
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    fn our_pid() -> i32 {
        i32::try_from(std::process::id()).expect("pid fits")
    }

    #[test]
    fn stat_is_read_after_the_last_parenthesis() {
        let text = "77 (a) b) (c) S 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(
            parse_stat(77, text),
            Some(Stat {
                pid: 77,
                state: 'S',
                ppid: 1,
                pgrp: 77,
                session: 77,
                start_time: 123_456,
            })
        );
        assert_eq!(parse_stat(77, "77 (a) S 1 77"), None, "truncated");
    }

    #[test]
    fn our_own_process_is_seen() {
        let ours = stat(our_pid()).expect("our stat");
        assert!(ours.is_live());
        assert!(is_alive(our_pid()));
        assert!(proc_entry_exists(our_pid()));
        assert!(group_exists(ours.pgrp));
        assert!(processes().iter().any(|s| s.pid == our_pid()));
        let me = Proc::of(our_pid()).expect("live");
        assert!(me.is_alive());
        let reused = Proc {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive(), "another start time is another process");
        assert!(open_fds(our_pid()).starts_with(&[0, 1, 2]));
        let (soft, hard) = nofile_limits(our_pid());
        assert!(soft <= hard);
        assert!(vm_kib(std::process::id(), "VmRSS") > 0);
    }

    #[test]
    fn a_childs_tag_group_and_command_line_are_seen_until_it_is_reaped() {
        let mut child = Command::new("sleep")
            .arg("1000")
            .env(TAG_VAR, "1.2.3")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid fits");
        // Until execve(2) has set up the new program's stack, its environment and command line
        // read empty (spawn returns once exec is past the point of no return).
        let seen = crate::wait::wait_until(Duration::from_secs(10), || {
            tag(pid).is_some() && !cmdline(pid).is_empty()
        });
        assert!(seen, "the child's environment never became readable");
        assert_eq!(tag(pid).as_deref(), Some("1.2.3"));
        assert_eq!(environ_var(pid, "NO_SUCH_VARIABLE_HERE"), None);
        assert_eq!(cmdline(pid), "sleep 1000");
        assert!(describe(pid).starts_with(&format!("{pid} ")));
        let ours = stat(our_pid()).expect("our stat");
        assert!(group_members(ours.pgrp).contains(&(pid, stat(pid).expect("stat").state)));
        assert!(tagged_by(1).keys().any(|p| p.pid == pid));
        assert!(!tagged_by(11).keys().any(|p| p.pid == pid), "1. is not 11.");

        child.kill().expect("kill");
        assert!(crate::wait_terminated(
            pid,
            std::time::Duration::from_secs(20)
        ));
        assert!(!is_alive(pid), "a zombie is not alive");
        assert!(proc_entry_exists(pid), "a zombie is not reaped");
        child.wait().expect("reap");
        assert_eq!(stat(pid), None);
        assert!(!proc_entry_exists(pid));
    }
}

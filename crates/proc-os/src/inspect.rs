//! What runs use now, the answer to proc-state's `Output::Inspect`: for each run, how many
//! processes it has, the CPU time and resident memory they use, and the sockets they listen
//! on ([`proc_state::Usage`]). Linux only: everything comes from `/proc` (proc(5)), read with
//! the [`procfs`] crate.
//!
//! A run's processes are the live members of its process group and the live processes it
//! started that left the group, found as the driver's sweeps find them (its cgroup when it has
//! one, else the inherited tag: [`SweepPlan`], carried out with a [`Scanner`] of the
//! inspector's own). One inspection of any number of runs reads:
//!
//! - `/proc/<pid>/stat` of every process on the system once, which places each in its process
//!   group (field 5, `pgrp`) and gives its state (field 3), CPU time (fields 14 and 15, `utime`
//!   and `stime`, in clock ticks, all its threads together) and resident set (field 24, `rss`,
//!   in pages: the counter that `/proc/<pid>/status` shows as `VmRSS` in kB, read here without
//!   a second file per process);
//! - what the sweep reads ([`SweepPlan::run`]), skipping every process already placed in a
//!   run's group;
//! - for the runs' processes only, the symbolic links in `/proc/<pid>/fd`: a socket shows as
//!   `socket:[<inode>]`;
//! - only if one of those is a socket at all, the socket tables `/proc/net/{tcp,tcp6,udp,udp6}`,
//!   once, to tell which of those sockets listen, and where (they are costly: the kernel walks
//!   its whole TCP hash table for each read, about 1.5 ms on a machine with a large one). They
//!   are the server's network namespace's: a task that moved to another namespace has its
//!   sockets there, and they are not seen.
//!
//! The cost is system calls: about 7 per process of a run and 3 per other process on the
//! system (and the tables, when read). On a virtual machine where one costs about 1.5 µs, 300
//! runs of one `sleep` each among 400 processes took 6 to 7 ms of CPU time (`cargo test -p
//! proc-os --release --test inspect -- --ignored --nocapture inspection_cost`).
//!
//! Zombies and dead processes (state `Z`, `X`) are not counted: a run whose leader has exited
//! and whose processes are all gone has no usage, and is left out of the answer. A process that
//! exits while it is read, or that cannot be read (another user's, for the file descriptors),
//! counts with what could be read of it. What is read is a snapshot taken over some time, not
//! an atomic one.
//!
//! It blocks (it reads `/proc`) and must run off the driver's loop: the driver keeps one
//! [`Inspector`] on a blocking thread and answers the inspections one after the other, in the
//! order they were asked for.
//!
//! A run released between the request and its inspection is still looked for by its process
//! group (and cgroup), which may have been given to others meanwhile; the core ignores the
//! answer about a run it has released, so nothing wrong reaches it.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::str::FromStr as _;

use proc_state::{Listener, Protocol, RunId, Usage};
use procfs::FromRead as _;
use procfs::net::{TcpState, UdpState};
use procfs::process::{FDTarget, Stat};

use crate::contain::SweepPlan;
use crate::tree::Scanner;

/// One `Output::Inspect` to carry out.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The runs asked about, each with its process group id (its leader's pid).
    pub runs: Vec<(RunId, u32)>,
    /// How to find the processes that left the runs' groups
    /// ([`crate::contain::Containment::sweep_plan`]); with `None`, only the groups count.
    pub escaped: Option<SweepPlan>,
}

/// Carries out inspections ([`Inspector::inspect`]), keeping what serves again from one to the
/// next (a [`Scanner`] for the escaped processes, buffers, the clock's tick rate, the page
/// size).
#[derive(Debug)]
pub struct Inspector {
    /// Opened at the first inspection that needs it; `None` also when `/proc` cannot be
    /// opened (then no escaped process is found).
    scanner: Option<Scanner>,
    /// Clock ticks per second (sysconf(3) `_SC_CLK_TCK`), the unit of `utime` and `stime`.
    ticks_per_second: u64,
    /// Bytes per page (sysconf(3) `_SC_PAGESIZE`), the unit of `rss`.
    page_size: u64,
    /// A file's contents, reused.
    buf: Vec<u8>,
    /// A path being built, reused.
    path: String,
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new()
    }
}

/// What one live process adds to its run's [`Usage`], from its `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Field 5, `pgrp`.
    pgrp: i32,
    /// Fields 14 and 15, `utime + stime`, in clock ticks.
    ticks: u64,
    /// Field 24, `rss`, in pages.
    rss_pages: u64,
}

/// One run's usage being summed.
#[derive(Debug, Default)]
struct Sum {
    processes: u32,
    ticks: u64,
    rss_pages: u64,
    /// The inodes of the sockets among its processes' descriptors (a socket that several
    /// processes share, several times).
    sockets: Vec<u64>,
}

impl Sum {
    fn add(&mut self, sample: Sample) {
        self.processes = self.processes.saturating_add(1);
        self.ticks = self.ticks.saturating_add(sample.ticks);
        self.rss_pages = self.rss_pages.saturating_add(sample.rss_pages);
    }
}

impl Inspector {
    /// An inspector; nothing is opened yet.
    pub fn new() -> Self {
        Self {
            scanner: None,
            ticks_per_second: procfs::ticks_per_second().max(1),
            page_size: procfs::page_size(),
            buf: Vec::with_capacity(1024),
            path: String::with_capacity(64),
        }
    }

    /// What each run of `request` uses now (see the [module docs](self)), in the order of
    /// `request.runs`; a run with no live process is left out. Blocks while it reads `/proc`.
    pub fn inspect(&mut self, request: &Request) -> Vec<(RunId, Usage)> {
        if request.runs.is_empty() {
            return Vec::new();
        }
        // Each run's place in `sums`, by run and by process group.
        let mut by_run: HashMap<RunId, usize> = HashMap::with_capacity(request.runs.len());
        let mut by_group: HashMap<i32, usize> = HashMap::with_capacity(request.runs.len());
        for (index, &(run, pgid)) in request.runs.iter().enumerate() {
            by_run.entry(run).or_insert(index);
            if let Ok(pgid) = i32::try_from(pgid) {
                by_group.entry(pgid).or_insert(index);
            }
        }
        let mut sums: Vec<Sum> = request.runs.iter().map(|_| Sum::default()).collect();

        // Every process once: the groups' members are measured now, the others kept (by pid)
        // for the sweep, which may claim some of them.
        let Ok(proc_dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut others: HashMap<i32, Sample> = HashMap::new();
        for entry in proc_dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Some(sample) = self.sample(pid) else {
                continue;
            };
            match by_group.get(&sample.pgrp) {
                Some(&index) => {
                    sums[index].add(sample);
                    self.sockets(pid, &mut sums[index].sockets);
                }
                None => {
                    others.insert(pid, sample);
                }
            }
        }

        if let Some(plan) = &request.escaped
            && let Some(mut scanner) = self.scanner.take().or_else(|| Scanner::new().ok())
        {
            for (run, process) in plan.run(&mut scanner, |pid| others.contains_key(&pid)) {
                if let (Some(&index), Some(sample)) =
                    (by_run.get(&run), others.remove(&process.pid))
                {
                    sums[index].add(sample);
                    self.sockets(process.pid, &mut sums[index].sockets);
                }
            }
            self.scanner = Some(scanner);
        }

        // The socket tables only when a socket was seen: they are costly to read (the kernel
        // walks its whole TCP hash for them).
        let listening = if sums.iter().any(|sum| !sum.sockets.is_empty()) {
            listening_sockets()
        } else {
            HashMap::new()
        };
        request
            .runs
            .iter()
            .zip(sums)
            .filter(|(_, sum)| sum.processes > 0)
            .map(|(&(run, _), sum)| {
                let listening: BTreeSet<Listener> = sum
                    .sockets
                    .iter()
                    .filter_map(|inode| listening.get(inode).copied())
                    .collect();
                let usage = Usage {
                    processes: sum.processes,
                    cpu_ms: ticks_to_ms(sum.ticks, self.ticks_per_second),
                    rss_bytes: sum.rss_pages.saturating_mul(self.page_size),
                    listening: listening.into_iter().collect(),
                };
                (run, usage)
            })
            .collect()
    }

    /// Process `pid` as its `/proc/<pid>/stat` shows it (parsed by [`procfs`]); `None` if it
    /// is gone or unreadable, or a zombie or dead (state `Z`, `X`).
    fn sample(&mut self, pid: i32) -> Option<Sample> {
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/stat");
        read_proc_file(&self.path, &mut self.buf).ok()?;
        let stat = Stat::from_read(self.buf.as_slice()).ok()?;
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            return None;
        }
        Some(Sample {
            pgrp: stat.pgrp,
            ticks: stat.utime.saturating_add(stat.stime),
            rss_pages: stat.rss,
        })
    }

    /// Adds to `found` the inode of every socket among process `pid`'s descriptors: each
    /// `/proc/<pid>/fd/<n>` that links to `socket:[<inode>]` (parsed by [`procfs`]'s
    /// [`FDTarget`]). Nothing if they cannot be read (gone, or another user's).
    fn sockets(&mut self, pid: i32, found: &mut Vec<u64>) {
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/fd");
        let Ok(fds) = std::fs::read_dir(&self.path) else {
            return;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(Ok(FDTarget::Socket(inode))) = link.to_str().map(FDTarget::from_str) {
                found.push(inode);
            }
        }
    }
}

/// Reads all of the `/proc` file `path` into `buf` (cleared first, capacity kept) with plain
/// read(2)s: `File::read_to_end` would first ask for its size and position (two more system
/// calls per file, for a size `/proc` reports as 0), and the files read here are read by the
/// hundred.
fn read_proc_file(path: &str, buf: &mut Vec<u8>) -> std::io::Result<()> {
    const CHUNK: usize = 1024;
    buf.clear();
    let mut file = File::open(path)?;
    let mut len = 0;
    loop {
        buf.resize(len + CHUNK, 0);
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            // A one-line file (`stat`) is complete once its newline is in: no read for the
            // end-of-file.
            Ok(read) => {
                len += read;
                if buf[len - 1] == b'\n' && !buf[..len - 1].contains(&b'\n') {
                    break;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                buf.truncate(len);
                return Err(err);
            }
        }
    }
    buf.truncate(len);
    Ok(())
}

/// Clock ticks as milliseconds.
fn ticks_to_ms(ticks: u64, ticks_per_second: u64) -> u64 {
    let ms = u128::from(ticks) * 1000 / u128::from(ticks_per_second.max(1));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The sockets that listen, by inode: from `/proc/net/tcp` and `tcp6` those in the `LISTEN`
/// state, from `/proc/net/udp` and `udp6` those bound to a port and not connected (state
/// `CLOSE`, no remote port), as proc(5) lists them for this process's network namespace (parsed
/// by [`procfs`]). A table that cannot be read or parsed adds nothing.
pub fn listening_sockets() -> HashMap<u64, Listener> {
    let mut sockets = HashMap::new();
    for table in [procfs::net::tcp(), procfs::net::tcp6()] {
        for entry in table.into_iter().flatten() {
            if entry.state == TcpState::Listen && entry.inode != 0 {
                sockets.insert(
                    entry.inode,
                    Listener {
                        protocol: Protocol::Tcp,
                        address: entry.local_address.ip(),
                        port: entry.local_address.port(),
                    },
                );
            }
        }
    }
    for table in [procfs::net::udp(), procfs::net::udp6()] {
        for entry in table.into_iter().flatten() {
            if entry.state == UdpState::Close
                && entry.remote_address.port() == 0
                && entry.local_address.port() != 0
                && entry.inode != 0
            {
                sockets.insert(
                    entry.inode,
                    Listener {
                        protocol: Protocol::Udp,
                        address: entry.local_address.ip(),
                        port: entry.local_address.port(),
                    },
                );
            }
        }
    }
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_become_milliseconds() {
        assert_eq!(ticks_to_ms(250, 100), 2500);
        assert_eq!(ticks_to_ms(1, 100), 10);
        assert_eq!(ticks_to_ms(7, 1000), 7);
        assert_eq!(ticks_to_ms(u64::MAX, 1), u64::MAX);
        assert_eq!(ticks_to_ms(5, 0), 5000);
    }

    #[test]
    fn nothing_asked_nothing_answered() {
        assert!(Inspector::new().inspect(&Request::default()).is_empty());
    }

    #[test]
    fn our_own_listener_is_in_the_tables() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let connected = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        connected
            .connect(udp.local_addr().expect("addr"))
            .expect("connect");
        let sockets = listening_sockets();
        let listeners: BTreeSet<Listener> = sockets.values().copied().collect();
        let tcp_port = tcp.local_addr().expect("addr").port();
        let udp_port = udp.local_addr().expect("addr").port();
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        assert!(listeners.contains(&Listener {
            protocol: Protocol::Tcp,
            address: loopback,
            port: tcp_port,
        }));
        assert!(listeners.contains(&Listener {
            protocol: Protocol::Udp,
            address: loopback,
            port: udp_port,
        }));
        // A connected UDP socket does not listen.
        let connected_port = connected.local_addr().expect("addr").port();
        assert!(
            !listeners
                .iter()
                .any(|l| l.protocol == Protocol::Udp && l.port == connected_port),
            "{listeners:?}"
        );
        // And ours are found among our descriptors.
        let mut inspector = Inspector::new();
        let mut inodes = Vec::new();
        inspector.sockets(std::process::id().cast_signed(), &mut inodes);
        let ours: BTreeSet<Listener> = inodes
            .iter()
            .filter_map(|inode| sockets.get(inode).copied())
            .collect();
        assert!(ours.iter().any(|l| l.port == tcp_port), "{ours:?}");
        assert!(ours.iter().any(|l| l.port == udp_port), "{ours:?}");
    }
}

//! One cgroup (v2) per run, where the server may make them: the stronger way to find and end
//! everything a task started. A process cannot leave its cgroup on its own unless it may write
//! elsewhere in the hierarchy, whatever it does with its session, process group or environment,
//! and `cgroup.kill` (Linux 5.14) ends a whole cgroup tree with SIGKILL, new forks included.
//! Where cgroups cannot be used (cgroup v1 only, a cgroup not writable by us, an older kernel)
//! the tags of [`crate::tree`] remain.
//!
//! Layout, under the server's own cgroup `<ours>` (from `/proc/self/cgroup`):
//!
//! ```text
//! <ours>/proc-mcp-<pid>.<start time>/     one per server instance (Cgroups::create_server)
//!        proc-mcp-<pid>.<start time>/run-<id>/     one per run (Cgroup::create_run)
//! ```
//!
//! The server itself (and its watchdog) stays in `<ours>`. References: cgroups(7), the kernel's
//! Documentation/admin-guide/cgroup-v2.rst ("cgroup.procs", "cgroup.kill", "cgroup.events",
//! "Delegation Containment": moving a process needs write access to the `cgroup.procs` of the
//! common ancestor of its old and new cgroups, here `<ours>`).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::tree::Instance;

/// The name of a server instance's cgroup starts with this, followed by `<pid>.<start time>`.
pub const SERVER_PREFIX: &str = "proc-mcp-";

/// A run's cgroup is named `run-<id>`.
pub const RUN_PREFIX: &str = "run-";

/// How long [`Cgroups::remove_stale`] waits for a killed stale cgroup to empty.
const STALE_WAIT: Duration = Duration::from_secs(2);

/// The server's own cgroup v2, checked to be one where it can make child cgroups, move its
/// tasks into them and kill them ([`detect`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroups {
    /// Our cgroup's directory, e.g. `/sys/fs/cgroup/user.slice/.../proc-mcp.scope`.
    dir: PathBuf,
}

/// Checks whether this process can manage cgroups v2 below its own cgroup: finds the cgroup2
/// mount in `/proc/self/mountinfo` (proc(5)) and our cgroup in `/proc/self/cgroup` (the
/// `0::<path>` line, cgroups(7)), checks that we may write its `cgroup.procs` (needed to move a
/// process from it into a child), and creates and removes a probe child, which must have a
/// `cgroup.kill` (Linux 5.14).
///
/// # Errors
/// Why not, for a diagnostic: no cgroup2 mount (cgroup v1 only), our cgroup outside the
/// mounted tree (another cgroup namespace), not writable (not delegated to us), no
/// `cgroup.kill` (kernel older than 5.14), or a failed probe.
pub fn detect() -> Result<Cgroups, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|err| format!("cannot read /proc/self/cgroup: {err}"))?;
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 (cgroup v1 only)")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|err| format!("cannot read /proc/self/mountinfo: {err}"))?;
    let dir = cgroup_dir(&mountinfo, path)
        .ok_or_else(|| format!("no mounted cgroup2 file system shows our cgroup {path:?}"))?;
    let procs = dir.join("cgroup.procs");
    if !writable(&procs) {
        return Err(format!(
            "{} is not writable by us: the cgroup is not delegated to this user",
            procs.display()
        ));
    }
    // Unique per call: threads of one process may probe at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let probe_id = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = Cgroup {
        path: dir.join(format!(
            "{SERVER_PREFIX}probe-{}-{probe_id}",
            std::process::id()
        )),
    };
    std::fs::create_dir(&probe.path)
        .or_else(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(err),
        })
        .map_err(|err| format!("cannot create a cgroup in {}: {err}", dir.display()))?;
    let kill = probe.path.join("cgroup.kill").exists();
    let probe_procs = writable(&probe.path.join("cgroup.procs"));
    let removed = probe.remove();
    if !kill {
        return Err("no cgroup.kill (Linux 5.14 and later have it)".to_owned());
    }
    if !probe_procs {
        return Err(format!(
            "{} is not writable",
            probe.path.join("cgroup.procs").display()
        ));
    }
    removed.map_err(|err| format!("cannot remove {}: {err}", probe.path.display()))?;
    Ok(Cgroups { dir })
}

impl Cgroups {
    /// The cgroup at `dir`, taken to be one [`detect`] accepted (by a process that was told
    /// so, like the watchdog); nothing is checked.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Our cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates (or takes, if it exists) the cgroup of server `instance`:
    /// `<ours>/proc-mcp-<pid>.<start time>`.
    ///
    /// # Errors
    /// mkdir(2) failed (`EACCES`, `ENOSPC`: `cgroup.max.descendants` or depth reached).
    pub fn create_server(&self, instance: &Instance) -> io::Result<Cgroup> {
        let cgroup = Cgroup {
            path: self.dir.join(server_cgroup_name(instance)),
        };
        cgroup.create()?;
        Ok(cgroup)
    }

    /// Kills and removes the cgroups that servers left behind: every `proc-mcp-<pid>.<start>`
    /// in our cgroup whose instance is verified dead ([`Instance::is_alive`]). A cgroup is left
    /// alone if it is not owned by our effective uid, or if one of its processes is outside our
    /// pid namespace (`cgroup.procs` shows those as 0): a server there has pids we cannot check.
    /// Returns how many were removed.
    pub fn remove_stale(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        // SAFETY: geteuid(2) cannot fail.
        let euid = unsafe { libc::geteuid() };
        let mut removed = 0;
        for entry in entries.flatten() {
            let Some(instance) = parse_server_cgroup_name(&entry.file_name()) else {
                continue;
            };
            let owned = entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && m.uid() == euid);
            if !owned || instance.is_alive() {
                continue;
            }
            let cgroup = Cgroup { path: entry.path() };
            if cgroup.procs().is_ok_and(|pids| pids.contains(&0)) {
                continue;
            }
            if cgroup.populated().unwrap_or(false) {
                let _ = cgroup.kill();
                let _ = cgroup.wait_empty(STALE_WAIT);
            }
            if cgroup.remove_tree().is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The name of `instance`'s cgroup: `proc-mcp-<pid>.<start time>`.
pub fn server_cgroup_name(instance: &Instance) -> String {
    format!("{SERVER_PREFIX}{instance}")
}

/// The instance a cgroup named by [`server_cgroup_name`] belongs to.
pub fn parse_server_cgroup_name(name: &OsStr) -> Option<Instance> {
    let name = name.to_str()?.strip_prefix(SERVER_PREFIX)?;
    name.parse().ok()
}

/// One cgroup v2 directory. Nothing is checked when it is named ([`Cgroup::at`]); each
/// operation reports what the kernel says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// The cgroup at `path` (a directory of the cgroup2 file system).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (or takes, if it exists) the child cgroup `name`.
    ///
    /// # Errors
    /// `InvalidInput` for a name with `/` or a `..`/`.`/empty name; mkdir(2) failed.
    pub fn create_child(&self, name: &str) -> io::Result<Self> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a cgroup name: {name:?}"),
            ));
        }
        let child = Self {
            path: self.path.join(name),
        };
        child.create()?;
        Ok(child)
    }

    /// Creates (or takes) run `run`'s child cgroup, `run-<id>`.
    ///
    /// # Errors
    /// mkdir(2) failed.
    pub fn create_run(&self, run: u64) -> io::Result<Self> {
        self.create_child(&format!("{RUN_PREFIX}{run}"))
    }

    /// mkdir(2), an existing directory being fine.
    fn create(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.path) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => Err(err),
            _ => Ok(()),
        }
    }

    /// Its directory, open (close-on-exec): what clone3(2) `CLONE_INTO_CGROUP` takes to create
    /// a task here ([`crate::process::SpawnPlacement::in_cgroup_dir`]).
    ///
    /// # Errors
    /// open(2) failed (`ENOENT`: no such cgroup; `EACCES`).
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        let dir = std::fs::File::open(&self.path)?;
        Ok(dir.into())
    }

    /// Its `cgroup.procs`, open for writing and close-on-exec: what
    /// [`crate::process::SpawnPlacement::in_cgroup`] takes to start a task here. Keep it while
    /// the run may spawn (it does not keep the cgroup from being removed).
    ///
    /// # Errors
    /// open(2) failed (`ENOENT`: no such cgroup; `EACCES`).
    pub fn open_procs(&self) -> io::Result<OwnedFd> {
        let file = OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// The pids of the processes in this cgroup (not its descendants), from `cgroup.procs`;
    /// a process outside our pid namespace shows as 0. Unordered; it may list a pid twice
    /// while the process moves (cgroup-v2.rst).
    ///
    /// # Errors
    /// Reading failed (`ENOENT`/`ENODEV`: the cgroup was removed).
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        let text = std::fs::read_to_string(self.path.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|line| line.parse().ok()).collect())
    }

    /// Whether a live process is in this cgroup or below it: `populated` of `cgroup.events`.
    /// Zombies do not count.
    ///
    /// # Errors
    /// Reading failed (`ENOENT`: no such cgroup).
    pub fn populated(&self) -> io::Result<bool> {
        let mut text = String::new();
        File::open(self.path.join("cgroup.events"))?.read_to_string(&mut text)?;
        populated(&text)
    }

    /// Waits until no live process is left in this cgroup or below (`populated 0` in
    /// `cgroup.events`, which the kernel signals with `POLLPRI` on every change; cgroup-v2.rst);
    /// `true` if it emptied within `timeout`.
    ///
    /// # Errors
    /// `cgroup.events` cannot be opened or read (`ENOENT`: no such cgroup), poll(2) failed.
    pub fn wait_empty(&self, timeout: Duration) -> io::Result<bool> {
        let events = File::open(self.path.join("cgroup.events"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0_u8; 256];
        loop {
            // Reading also re-arms the notification: poll(2) waits for the next change.
            let len = events.read_at(&mut buf, 0)?;
            let text = std::str::from_utf8(&buf[..len])
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            if !populated(text)? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut pollfd = libc::pollfd {
                fd: events.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            let millis = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd on a descriptor we hold.
            match Errno::result(unsafe { libc::poll(&raw mut pollfd, 1, millis) }) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// SIGKILLs every process in this cgroup and all its descendants: `1` to `cgroup.kill`
    /// (Linux 5.14). The kernel deals with processes forking meanwhile: none escapes. The
    /// processes may take a moment to exit ([`Cgroup::wait_empty`]).
    ///
    /// # Errors
    /// Writing failed (`ENOENT`: no such cgroup, or a kernel before 5.14; `EOPNOTSUPP` in a
    /// threaded cgroup).
    pub fn kill(&self) -> io::Result<()> {
        std::fs::write(self.path.join("cgroup.kill"), "1")
    }

    /// Removes this cgroup (rmdir(2)); one that is already gone is fine.
    ///
    /// # Errors
    /// `EBUSY` while it has live processes or child cgroups (retrying once it is empty is the
    /// caller's job, see [`Cgroup::wait_empty`]); `EACCES`.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Removes this cgroup and every cgroup below it, deepest first (rmdir(2) only: the files
    /// of a cgroup go with its directory).
    ///
    /// # Errors
    /// The first failure, after trying every other cgroup (`EBUSY` where processes are left).
    pub fn remove_tree(&self) -> io::Result<()> {
        let mut first_error = None;
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Err(err) = Self::at(entry.path()).remove_tree()
                {
                    first_error.get_or_insert(err);
                }
            }
        }
        match (self.remove(), first_error) {
            (Err(err), _) | (Ok(()), Some(err)) => Err(err),
            (Ok(()), None) => Ok(()),
        }
    }
}

/// The `populated` value of a `cgroup.events` text.
fn populated(events: &str) -> io::Result<bool> {
    match events
        .lines()
        .find_map(|line| line.strip_prefix("populated "))
    {
        Some("0") => Ok(false),
        Some(_) => Ok(true),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no populated line in cgroup.events",
        )),
    }
}

/// Whether we may write `path` (faccessat(2) with the effective ids, as open(2) checks).
fn writable(path: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; faccessat(2) reads nothing else.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` shows it) under a cgroup2 mount
/// listed in `mountinfo` (proc(5): field 4 is the mount's root within the hierarchy, field 5
/// its mount point, and the file system type follows the ` - ` separator). The first mount
/// whose root contains `path` and whose directory exists.
fn cgroup_dir(mountinfo: &str, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split(' ');
        let root = unescape(fields.nth(3)?);
        let mount_point = unescape(fields.next()?);
        let relative = if root == "/" {
            path.strip_prefix('/')?
        } else {
            let rest = path.strip_prefix(root.as_str())?;
            if rest.is_empty() {
                rest
            } else {
                rest.strip_prefix('/')?
            }
        };
        let mount_point = Path::new(&mount_point);
        let dir = if relative.is_empty() {
            mount_point.to_path_buf()
        } else {
            mount_point.join(relative)
        };
        dir.is_dir().then_some(dir)
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space, `\011`, `\012`, `\134`)
/// decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes
            .get(at + 1..at + 4)
            .filter(|d| bytes[at] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0_u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                at += 4;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_cgroup_directory_is_found_under_its_mount() {
        let base = std::env::temp_dir().join(format!("proc-os-cg {}", std::process::id()));
        std::fs::create_dir_all(base.join("a/b")).expect("mkdir");
        let escaped = base.display().to_string().replace(' ', "\\040");
        let mountinfo = format!(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n\
             41 31 0:38 / {escaped} rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(cgroup_dir(&mountinfo, "/a/b"), Some(base.join("a/b")));
        assert_eq!(cgroup_dir(&mountinfo, "/"), Some(base.clone()));
        assert_eq!(cgroup_dir(&mountinfo, "/missing"), None);
        // A mount of a subtree: its root is cut from our path, on component boundaries.
        let sub = format!("41 31 0:38 /x/y {escaped} rw - cgroup2 cgroup2 rw\n");
        assert_eq!(cgroup_dir(&sub, "/x/y/a"), Some(base.join("a")));
        assert_eq!(cgroup_dir(&sub, "/x/y"), Some(base.clone()));
        assert_eq!(cgroup_dir(&sub, "/x/yz/a"), None);
        assert_eq!(cgroup_dir(&sub, "/elsewhere"), None);
        // cgroup v1 mounts are not it.
        let v1 = format!("32 31 0:29 / {escaped} rw - cgroup cgroup rw,cpu\n");
        assert_eq!(cgroup_dir(&v1, "/a"), None);
        std::fs::remove_dir_all(&base).expect("clean up");

        assert_eq!(unescape(r"a\040b\134c\011"), "a b\\c\t");
        assert_eq!(unescape(r"\04"), r"\04");
        assert_eq!(populated("populated 1\nfrozen 0\n").ok(), Some(true));
        assert_eq!(populated("populated 0\nfrozen 0\n").ok(), Some(false));
        assert!(populated("frozen 0\n").is_err());
        let instance = Instance {
            pid: 12,
            start_time: 34,
        };
        assert_eq!(server_cgroup_name(&instance), "proc-mcp-12.34");
        assert_eq!(
            parse_server_cgroup_name(OsStr::new("proc-mcp-12.34")),
            Some(instance)
        );
        assert_eq!(
            parse_server_cgroup_name(OsStr::new("proc-mcp-probe-1")),
            None
        );
    }

    #[test]
    fn detection_gives_a_reason_or_a_usable_cgroup() {
        match detect() {
            Ok(cgroups) => {
                println!("cgroups v2 usable at {}", cgroups.dir().display());
                assert!(cgroups.dir().join("cgroup.procs").exists());
            }
            Err(reason) => {
                println!("cgroups v2 not usable: {reason}");
                assert!(!reason.is_empty());
            }
        }
    }
}

//! The limit on open files (`RLIMIT_NOFILE`, getrlimit(2)): raised for the server, restored
//! for its tasks.
//!
//! Each task costs the server two or three descriptors (its stdout and stderr pipes, and its
//! stdin pipe when asked for), so a thousand tasks do not fit in the common soft limit of 1024.
//! [`raise_nofile_limit`] raises the soft limit to the hard one at startup; [`spawn`] then gives
//! every child the original soft limit back (lowering the server's own for the instant of the
//! spawn, `with_original_limit`), as Go's os/exec does since Go 1.19: a task that
//! uses select(2), whose `FD_SETSIZE` is 1024, or that sizes a table by the limit, sees what it
//! would see when started from a shell.
//!
//! [`spawn`]: crate::process::spawn

use std::io;
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::libc;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The limits (soft, hard) this process had before [`raise_nofile_limit`] raised the soft one;
/// unset when nothing was raised (children then inherit the limit as it is).
static ORIGINAL: OnceLock<(libc::rlim_t, libc::rlim_t)> = OnceLock::new();

/// The server's limits on open files, in descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with, which every task gets.
    pub original: libc::rlim_t,
    /// The soft limit now.
    pub soft: libc::rlim_t,
    /// The hard limit (never changed).
    pub hard: libc::rlim_t,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and remembers the original
/// soft limit, which [`spawn`](crate::process::spawn) restores in every child. Call it once at
/// startup, before the first spawn; later calls change nothing and report the same original.
///
/// # Errors
/// getrlimit(2) or setrlimit(2) failed (for example on a system that refuses a soft limit as
/// high as an unlimited hard one); the limit is then unchanged and children inherit it as is.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if let Some(&(original, _)) = ORIGINAL.get() {
        return Ok(NofileLimit {
            original,
            soft,
            hard,
        });
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        // Two racing first calls both saw the same original: whichever is kept is right.
        let _ = ORIGINAL.set((soft, hard));
    }
    Ok(NofileLimit {
        original: soft,
        soft: hard,
        hard,
    })
}

/// What a child must get back, read in the parent before forking: `None` if nothing was
/// raised.
pub(crate) fn original() -> Option<(libc::rlim_t, libc::rlim_t)> {
    ORIGINAL.get().copied()
}

/// Serialises [`with_original_limit`]: one spawn's restoring must not raise the limit while
/// another spawn is creating its child.
static LOWERED: Mutex<()> = Mutex::new(());

/// Runs `create` (which creates a child process) with this process's soft `RLIMIT_NOFILE`
/// set back to the original one, if [`raise_nofile_limit`] raised it, and raises it again
/// afterwards: the child inherits the original limit at its creation (setrlimit(2), fork(2)),
/// without a line of code in the child and without a window in which it runs with the raised
/// limit.
///
/// posix_spawn(3) cannot set resource limits, and prlimit(2) on the child after the spawn
/// would race with the task, which is already running then (a `sh -c 'ulimit -n'` could see
/// the raised limit whenever the spawning thread is preempted after posix_spawn returns).
/// Lowering instead costs two setrlimit(2) calls (about 1 µs) and is process-wide: for the
/// duration of `create` (a posix_spawn(3), some 100 µs), another thread of this process that
/// opens a descriptor while more than the original soft limit are open gets `EMFILE`. In the
/// server only the thread that spawns opens descriptors, so nothing can hit that window; a
/// library user that opens descriptors on other threads while spawning should know it.
/// Calls are serialised by a lock; `create` must not call this again (it would deadlock).
pub(crate) fn with_original_limit<R>(create: impl FnOnce() -> R) -> R {
    let Some((original, hard)) = original() else {
        return create();
    };
    let _one_at_a_time = LOWERED.lock().unwrap_or_else(PoisonError::into_inner);
    // Failing to lower (it cannot: lowering the soft limit is always allowed) leaves the
    // child with the raised limit, nothing worse.
    let lowered = setrlimit(Resource::RLIMIT_NOFILE, original, hard).is_ok();
    let result = create();
    if lowered && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        eprintln!("proc-mcp: cannot raise the open-files limit again after a spawn: {err}");
    }
    result
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::process::{reap, spawn};
    use crate::testutil::{sh, wait_exited};

    /// Set for the copy of this test binary that [`children_get_the_original_soft_limit`]
    /// starts with a low soft limit.
    const CHILD: &str = "PROC_OS_RLIMIT_CHILD";

    /// The soft limit the copy starts with.
    const LOW: libc::rlim_t = 128;

    /// Raising changes the limit of the whole process, which would disturb the other tests: it
    /// is checked in a copy of this test binary that runs only `raise_in_a_fresh_process`.
    #[test]
    fn children_get_the_original_soft_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        if hard <= LOW {
            eprintln!("hard limit {hard} too low to test raising");
            return;
        }
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([
                "--exact",
                "rlimit::tests::raise_in_a_fresh_process",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdin(Stdio::null());
        // SAFETY: setrlimit(2) only, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, LOW, hard).map_err(io::Error::from)
            });
        }
        let out = command.output().expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("raised and restored"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Does the work of [`children_get_the_original_soft_limit`] in its copy; nothing elsewhere.
    #[test]
    fn raise_in_a_fresh_process() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(soft, LOW);
        let limit = raise_nofile_limit().expect("raise");
        let expected = NofileLimit {
            original: LOW,
            soft: hard,
            hard,
        };
        assert_eq!(limit, expected);
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"),
            (hard, hard)
        );
        // Again: nothing changes, the original is remembered.
        assert_eq!(raise_nofile_limit().expect("raise again"), expected);

        let mut child = spawn(&sh("ulimit -n; ulimit -Hn")).expect("spawn");
        let mut text = String::new();
        child
            .stdout
            .as_mut()
            .expect("stdout piped")
            .read_to_string(&mut text)
            .expect("read");
        wait_exited(child.pid);
        reap(child.pid).expect("reap");
        assert_eq!(text, format!("{LOW}\n{hard}\n"));
        println!("raised and restored");
    }
}

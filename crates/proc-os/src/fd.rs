//! File descriptor hygiene: a task inherits descriptors 0, 1 and 2 and nothing else.
//!
//! Rust opens everything close-on-exec, but a server does not only hold what it opened: whoever
//! started it (an editor, a shell, a CI runner) may have leaked descriptors to it, and without
//! care each task would inherit them, keep pipes of the client's open, and hold files the user
//! thinks are closed. [`crate::process::spawn`] has glibc's posix_spawn(3) close them in the
//! child (`posix_spawn_file_actions_addclosefrom_np`); where a task starts in a cgroup, the
//! child made for that runs [`mark_cloexec_from`] before `exec`, which marks every descriptor
//! from 3 up close-on-exec (close_range(2), fcntl(2)).
//!
//! Everything here may run in such a child, which shares the server's memory
//! (`CLONE_VM`) or is a fork of a multi-threaded process: system calls only, no cancellation
//! points, no allocation, and no panics (no indexing, no `unwrap`: checked by the lints below).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects
    )
)]

use std::io;

use nix::errno::Errno;
use nix::libc;

/// Marks every open file descriptor from `first` up close-on-exec, so that exec(2) closes it;
/// `fd_limit` (one more than the highest possible descriptor, see [`fd_limit`]) bounds the
/// last-resort loop. Async-signal-safe and allocation-free: meant for the child between `fork`
/// (or a `CLONE_VM` clone(2), which shares the parent's memory) and `exec`, where descriptors
/// must not be closed outright (std still needs its close-on-exec pipe that reports a failed
/// exec, and an exec that fails must leave the child's setup intact).
///
/// Linux 5.11 and later do it in one call, `close_range(first, ~0U, CLOSE_RANGE_CLOEXEC)`.
/// Where that is missing (`ENOSYS` before 5.9, `EINVAL` for the flag before 5.11, `EPERM` from
/// a seccomp filter) the descriptors listed in `/proc/self/fd` are marked one by one
/// ([`mark_cloexec_listed`]); without `/proc`, and on other systems, every number below
/// `fd_limit` is tried ([`mark_cloexec_each`]; fcntl(2) on a closed one is a cheap `EBADF`).
///
/// # Errors
/// fcntl(2) failed on an open descriptor.
pub fn mark_cloexec_from(first: libc::c_int, fd_limit: libc::c_int) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let first_u = libc::c_uint::try_from(first).unwrap_or(0);
        // SAFETY: close_range(2) only changes descriptor flags here; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first_u,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if rc == 0 || mark_cloexec_listed(first)? {
            return Ok(());
        }
    }
    mark_cloexec_each(first, fd_limit)
}

/// Marks the descriptors from `first` up that `/proc/self/fd` lists close-on-exec, reading the
/// directory with getdents64(2) into a buffer on the stack (async-signal-safe, no allocation).
/// `Ok(false)` if `/proc/self/fd` cannot be read; nothing may have been marked then.
///
/// # Errors
/// fcntl(2) failed on a listed descriptor.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn mark_cloexec_listed(first: libc::c_int) -> io::Result<bool> {
    /// Room for `struct linux_dirent64` records, aligned for their 8-byte fields.
    #[repr(C, align(8))]
    struct Buf([u8; 2048]);
    /// Offset of `d_name`: after `d_ino` (8), `d_off` (8), `d_reclen` (2) and `d_type` (1).
    const NAME: usize = 19;

    // SAFETY: a NUL-terminated path; the flags ask for a directory, closed on exec anyway.
    // openat(2) and close(2) through syscall(2), not glibc's open() and close(), which are
    // cancellation points: they touch the calling thread's data, which in a `CLONE_VM` child
    // is the suspended parent's.
    let dir = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let Ok(dir) = libc::c_int::try_from(dir) else {
        return Ok(false);
    };
    if dir < 0 {
        return Ok(false);
    }
    let mut buf = Buf([0; 2048]);
    let mut result = Ok(true);
    'read: loop {
        // SAFETY: `buf` is writable for its whole length; `dir` is an open directory.
        let len =
            unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.0.as_mut_ptr(), buf.0.len()) };
        let Ok(len) = usize::try_from(len) else {
            result = Ok(false);
            break;
        };
        if len == 0 {
            break;
        }
        // The records read; never indexed directly: a malformed record ends the listing
        // instead of panicking in a child.
        let mut records = buf.0.get(..len).unwrap_or_default();
        while let Some(&[low, high]) = records.get(16..18) {
            let reclen = usize::from(u16::from_ne_bytes([low, high]));
            let (Some(name), Some(rest)) = (records.get(NAME..reclen), records.get(reclen..))
            else {
                result = Ok(false);
                break 'read;
            };
            if let Some(fd) = parse_fd(name)
                && fd >= first
                && fd != dir
                && let Err(err) = set_cloexec(fd)
            {
                result = Err(err);
                break 'read;
            }
            records = rest;
        }
    }
    // SAFETY: `dir` was opened above and is closed once.
    unsafe { libc::syscall(libc::SYS_close, dir) };
    result
}

/// A descriptor number from a NUL-terminated directory entry name; `None` for `.`, `..` and
/// anything else that is not a number.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn parse_fd(name: &[u8]) -> Option<libc::c_int> {
    let name = name.get(..name.iter().position(|&b| b == 0)?)?;
    if name.is_empty() {
        return None;
    }
    let mut fd: libc::c_int = 0;
    for &digit in name {
        if !digit.is_ascii_digit() {
            return None;
        }
        fd = fd
            .checked_mul(10)?
            .checked_add(libc::c_int::from(digit.checked_sub(b'0')?))?;
    }
    Some(fd)
}

/// Marks every descriptor from `first` below `limit` close-on-exec, skipping closed numbers:
/// the last resort of [`mark_cloexec_from`], one fcntl(2) per number. Async-signal-safe.
///
/// # Errors
/// fcntl(2) failed on an open descriptor.
pub fn mark_cloexec_each(first: libc::c_int, limit: libc::c_int) -> io::Result<()> {
    for fd in first..limit {
        match set_cloexec(fd) {
            Err(err) if err.raw_os_error() == Some(libc::EBADF) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Sets `FD_CLOEXEC` on `fd` (fcntl(2)), keeping its other descriptor flags.
fn set_cloexec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl(2) with F_GETFD/F_SETFD only reads and sets descriptor flags.
    let flags = Errno::result(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above.
        Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    }
    Ok(())
}

/// One more than the highest descriptor number this process can open now: its soft
/// `RLIMIT_NOFILE` (getrlimit(2)), `c_int::MAX` if that is unlimited or unreadable. Read it
/// before forking, to bound [`mark_cloexec_each`].
pub fn fd_limit() -> libc::c_int {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .and_then(|(soft, _)| libc::c_int::try_from(soft).ok())
        .unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Leaked;

    /// Marking works on the whole test process: one test at a time, or one test's marks would
    /// spoil another's "not marked" check.
    static MARKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Two leaked descriptors, and the lower one: marking from there touches nothing the
    /// harness relies on (std opens its own close-on-exec anyway).
    fn two_leaked() -> (Leaked, Leaked, libc::c_int) {
        let (first, second) = (Leaked::new(), Leaked::new());
        let low = first.0.min(second.0);
        (first, second, low)
    }

    #[test]
    fn close_range_marks_every_descriptor_from_first() {
        let _one_at_a_time = MARKING.lock().unwrap_or_else(|e| e.into_inner());
        let (first, second, low) = two_leaked();
        mark_cloexec_from(low, fd_limit()).expect("mark");
        assert!(first.cloexec() && second.cloexec());
    }

    #[test]
    fn the_proc_listing_fallback_marks_them_too() {
        let _one_at_a_time = MARKING.lock().unwrap_or_else(|e| e.into_inner());
        let (first, second, low) = two_leaked();
        assert!(mark_cloexec_listed(low).expect("listed"));
        assert!(first.cloexec() && second.cloexec());
    }

    #[test]
    fn the_loop_fallback_marks_them_too() {
        let _one_at_a_time = MARKING.lock().unwrap_or_else(|e| e.into_inner());
        let (first, second, low) = two_leaked();
        mark_cloexec_each(low, fd_limit()).expect("each");
        assert!(first.cloexec() && second.cloexec());
    }

    #[test]
    fn marking_leaves_lower_descriptors_alone() {
        let _one_at_a_time = MARKING.lock().unwrap_or_else(|e| e.into_inner());
        let (first, second, _) = two_leaked();
        let (low, high) = (first.0.min(second.0), first.0.max(second.0));
        mark_cloexec_from(high, fd_limit()).expect("mark");
        let lower = if first.0 == low { &first } else { &second };
        assert!(!lower.cloexec());
    }

    #[test]
    fn descriptor_names_parse() {
        assert_eq!(parse_fd(b"0\0"), Some(0));
        assert_eq!(parse_fd(b"1234\0\0\0"), Some(1234));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"\0"), None);
        assert_eq!(parse_fd(b"99999999999\0"), None);
        assert_eq!(parse_fd(b"12"), None);
    }

    #[test]
    fn the_limit_is_the_soft_rlimit() {
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        assert_eq!(u64::try_from(fd_limit()).ok(), Some(soft));
    }
}

//! The one piece of child code of its own that spawning keeps: starting a task **inside a
//! cgroup v2**, before it can run anything, which glibc's posix_spawn(3) cannot do before
//! glibc 2.41 (`posix_spawnattr_setcgroup_np`; this system has glibc 2.36). Every other
//! spawn is glibc's posix_spawn(3) (see [`crate::process::spawn_placed`]).
//!
//! The child is born in the cgroup with clone3(2) `CLONE_INTO_CGROUP` (Linux 5.7), or, where
//! that is refused or where the kernel kills a child born in a cgroup that was killed before
//! (Linux 6.18), it writes `0` to the cgroup's `cgroup.procs` before exec, which moves the
//! writing process (cgroups(7)). Either way nothing the task runs, and nothing it forks, is
//! ever outside the cgroup. Moving costs the spawning thread an RCU grace period, being born
//! there costs nothing (cgroup-v2.rst, "cgroup.procs").
//!
//! # Why the child borrows the server's memory
//! Like glibc's posix_spawn, the child is made with `CLONE_VM | CLONE_VFORK` on a stack of its
//! own (x86_64, aarch64, riscv64: the few instructions that start it there are in [`vm`]);
//! elsewhere, or where that is refused, it is a fork running the same code. A fork costs the
//! page-table copy, and then a copy-on-write fault for every page the server writes until the
//! child has exec'd. Measured with `cargo bench --bench figures`, "tools/call start `true`
//! round trip (median of 200)", whose tasks all start in a cgroup here; the median of 8
//! interleaved runs of each binary on the 2-core machine shared with other builds (load 4-9,
//! so far above the 0.65 ms of an idle machine): 1.81 ms with the former hand-written
//! `vfork` module, **2.81 ms with a fork-based child, 1.66 ms with this one**. A whole
//! millisecond per start under load is a cost users see in every `start`, so the child code
//! stays, confined to this module.
//!
//! # The rules of the child
//! Between clone and exec it does the steps posix_spawn(3) does for the other spawns, in the
//! same order: default signal dispositions, setsid(2), (the move into the cgroup), dup2(2) of
//! stdin, stdout and stderr (for a terminal, the slave, then ioctl(2) `TIOCSCTTY` to make it
//! the session's controlling terminal, where posix_spawn opens it by its path), descriptors from 3 up marked close-on-exec ([`fd`]), chdir(2),
//! an empty signal mask, execve(2). It makes system calls only: through glibc wrappers that
//! are plain system calls (as glibc's own posix_spawn child does), through syscall(2) where
//! glibc's wrapper is a cancellation point (write, open, close: those touch the calling
//! thread's data, the suspended parent's). It allocates nothing, takes no lock (another
//! thread may hold the allocator's), uses no kernel structure written by hand (`clone_args`
//! and `sigset_t` are libc's), and is linted against panics, indexing and unchecked
//! arithmetic (below; `fd` likewise). All it reads was prepared by the parent, whose
//! thread is suspended until the exec (`CLONE_VFORK`). The parent blocks every signal around
//! the clone, so no handler of the server runs in the child before its dispositions are the
//! defaults.
//!
//! It reports to the parent through a close-on-exec pipe: one byte when it starts, then, if a
//! step fails, the step and its errno. End-of-file after the first byte means the exec
//! succeeded; end-of-file before it means the child never ran its code (killed at birth).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects,
        clippy::unreachable
    )
)]

use std::ffi::{CStr, c_char, c_int};
use std::fmt;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::unistd::Pid;

use crate::fd;

/// Everything the child needs, prepared by the parent (the child allocates nothing).
pub(crate) struct Exec<'a> {
    /// The file to execute.
    pub path: &'a CStr,
    /// NULL-terminated `argv`.
    pub argv: &'a [*const c_char],
    /// NULL-terminated `envp`.
    pub envp: &'a [*const c_char],
    /// Descriptors to put on 0, 1 and 2; all 3 or above, so no dup2(2) overwrites another's
    /// source.
    pub stdio: [RawFd; 3],
    /// `stdio` is the slave side of a pseudo-terminal (three times), to become the controlling
    /// terminal of the child's new session (ioctl `TIOCSCTTY` on 0 after the dup2s).
    pub controlling_terminal: bool,
    /// The working directory, or `None` to keep the server's.
    pub cwd: Option<&'a CStr>,
    /// The directory of the cgroup to be born in (clone3 `CLONE_INTO_CGROUP`), or -1.
    pub cgroup_dir: RawFd,
    /// The cgroup's `cgroup.procs`, open for writing: the child moves itself there when it
    /// was not born there.
    pub cgroup_procs: RawFd,
    /// The highest signal number whose disposition is reset.
    pub last_signal: c_int,
    /// Bounds the last-resort loop of [`fd::mark_cloexec_from`].
    pub fd_limit: c_int,
}

/// What the child does before exec; a failure is reported with the step it happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// setsid(2).
    Setsid,
    /// write(2) of `0` to `cgroup.procs` (moving into the cgroup).
    Cgroup,
    /// dup2(2) onto 0, 1 and 2.
    Stdio,
    /// ioctl(2) `TIOCSCTTY`: making the terminal on 0 the controlling terminal.
    Terminal,
    /// Marking descriptors from 3 up close-on-exec.
    Cloexec,
    /// chdir(2) to the working directory.
    Chdir,
    /// execve(2).
    Exec,
}

impl Step {
    const ALL: [Self; 7] = [
        Self::Setsid,
        Self::Cgroup,
        Self::Stdio,
        Self::Terminal,
        Self::Cloexec,
        Self::Chdir,
        Self::Exec,
    ];

    fn code(self) -> u8 {
        match self {
            Self::Setsid => 1,
            Self::Cgroup => 2,
            Self::Stdio => 3,
            Self::Cloexec => 4,
            Self::Chdir => 5,
            Self::Exec => 6,
            Self::Terminal => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.code() == code)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Setsid => "setsid",
            Self::Cgroup => "moving into its cgroup (writing cgroup.procs)",
            Self::Stdio => "dup2 of stdin, stdout and stderr",
            Self::Terminal => "making the terminal its controlling terminal (TIOCSCTTY)",
            Self::Cloexec => "marking descriptors close-on-exec",
            Self::Chdir => "chdir",
            Self::Exec => "execve",
        })
    }
}

/// Why [`spawn`] started nothing.
#[derive(Debug)]
pub(crate) enum Error {
    /// The parent could not start a child (pipe2(2), clone3(2) or fork(2) failed).
    Create(io::Error),
    /// The child failed at this step (it has been reaped).
    Child(Step, Errno),
    /// The child ended before it could report anything, twice (killed; it has been reaped).
    Vanished,
}

/// Starts `exec` as a child of the calling thread, in its cgroup; returns once the child has
/// exec'd (or failed and been reaped). [`crate::rlimit::with_original_limit`] is applied to
/// the fork itself.
pub(crate) fn spawn(exec: &Exec<'_>) -> Result<Pid, Error> {
    // Born in the cgroup where the kernel allows; else, and if such a child is killed at birth
    // (Linux 6.18 does that in a cgroup that was killed before), forked and moved.
    let born = exec.cgroup_dir >= 0;
    match spawn_once(exec, born) {
        Err(Error::Vanished) if born => spawn_once(exec, false),
        other => other,
    }
}

/// One attempt: born in the cgroup (`born`) or moved there.
fn spawn_once(exec: &Exec<'_>, born: bool) -> Result<Pid, Error> {
    let (read, write) = report_pipe().map_err(Error::Create)?;
    let created = crate::rlimit::with_original_limit(|| create(exec, born, &write));
    drop(write);
    let pid = created.map_err(Error::Create)?;
    let mut report = [0_u8; 8];
    let len = read_to_end(read, &mut report);
    let failure = match report.get(..len) {
        // Started, then exec'd (which closed its end of the pipe).
        Some([1]) => return Ok(pid),
        Some(&[1, step, a, b, c, d]) => Step::from_code(step)
            .map(|step| Error::Child(step, Errno::from_raw(i32::from_ne_bytes([a, b, c, d])))),
        _ => None,
    };
    // It failed or ended: reap it (its pid is in no run table yet).
    let _ = crate::process::reap(pid);
    Err(failure.unwrap_or(Error::Vanished))
}

/// Creates the child with every signal blocked in this thread (the child inherits the mask
/// and unblocks only once every disposition is the default: no handler of the server runs in
/// it). Returns in the parent only.
fn create(exec: &Exec<'_>, born: bool, report: &OwnedFd) -> io::Result<Pid> {
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // The child borrows this thread's memory (CLONE_VM | CLONE_VFORK) where we can give it
    // a stack of its own; else, or where that is refused, it is a fork.
    #[cfg(vm_child)]
    if !vm::REFUSED.load(std::sync::atomic::Ordering::Relaxed) && !forced_fork() {
        let refused = |created: &io::Result<Pid>| {
            created
                .as_ref()
                .is_err_and(|err| !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM)))
        };
        let mut created = vm::create(exec, born, report.as_raw_fd());
        if born && refused(&created) {
            // No CLONE_INTO_CGROUP here, or a cgroup that cannot take the child: move it
            // there instead, which reports a real problem of the cgroup at that step.
            created = vm::create(exec, false, report.as_raw_fd());
        }
        match &created {
            Err(_) if refused(&created) => {
                // clone3 or CLONE_VM refused (no clone3, a seccomp filter, an emulator).
                vm::REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {
                // Cannot fail with a mask that pthread_sigmask(3) itself returned.
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                return created;
            }
        }
    }
    // SAFETY (both calls): clone3 without CLONE_VM or a stack is a fork, like fork(2): the
    // child returns here with a copy of this thread's stack and of the server's memory, and
    // runs only `child`, which makes system calls and never returns.
    let mut pid = if born {
        unsafe { clone3_into(exec.cgroup_dir) }
    } else {
        -1
    };
    let placed = born && pid >= 0;
    // Without clone3 or CLONE_INTO_CGROUP (or refused by a seccomp filter, or a cgroup that
    // cannot take it): fork, and move into the cgroup, which reports any real error of the
    // cgroup at that step. Out of processes or memory is an error either way.
    if !born || (pid < 0 && !matches!(Errno::last(), Errno::EAGAIN | Errno::ENOMEM)) {
        pid = unsafe { libc::fork() };
    }
    if pid == 0 {
        child(exec, placed, report.as_raw_fd());
    }
    let created = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(Pid::from_raw(pid))
    };
    // Cannot fail with a mask that pthread_sigmask(3) itself returned.
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    created
}

/// Tests set it to check the fork path where the `CLONE_VM` one works (both keep the same
/// promises, so other tests that meanwhile take the fork path are not disturbed).
#[cfg(test)]
pub(crate) static FORCE_FORK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether the `CLONE_VM` child was given up for good (tests check that a bad cgroup does
/// not do that).
#[cfg(all(test, vm_child))]
pub(crate) fn vm_refused() -> bool {
    vm::REFUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether a test asked for the fork path (`FORCE_FORK`); never outside tests.
#[cfg(vm_child)]
fn forced_fork() -> bool {
    #[cfg(test)]
    return FORCE_FORK.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(test))]
    false
}

/// `CLONE_INTO_CGROUP` of linux/sched.h (Linux 5.7); libc 0.2's constant is a `c_int`, which
/// cannot hold it (rust-lang/libc#3584).
const CLONE_INTO_CGROUP: u64 = 1 << 33;

/// clone3(2) with `CLONE_INTO_CGROUP` into the cgroup whose directory is `cgroup_dir`, exit
/// signal `SIGCHLD`, nothing shared: a fork born in that cgroup. Returns the pid (0 in the
/// child), or -1 with errno set (`ENOSYS`, `E2BIG`: no clone3 or no `CLONE_INTO_CGROUP`;
/// `EPERM`: a seccomp filter; `EOPNOTSUPP`, `EBUSY`: the cgroup cannot take processes).
///
/// # Safety
/// As fork(2): in the child, only async-signal-safe calls until exec.
unsafe fn clone3_into(cgroup_dir: RawFd) -> libc::pid_t {
    let Ok(cgroup) = u64::try_from(cgroup_dir) else {
        Errno::set(Errno::EBADF);
        return -1;
    };
    // SAFETY: clone_args is plain data; all zeroes is "no flags, nothing to share".
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup;
    // SAFETY: `args` is a valid clone_args of the size given; see the caller for the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    libc::pid_t::try_from(rc).unwrap_or(-1)
}

/// The child: sets itself up and execs, or reports the step that failed and `_exit`s.
fn child(exec: &Exec<'_>, placed: bool, report: RawFd) -> ! {
    // SAFETY: write(2) of a byte from a local to our own pipe. (Through syscall(2): glibc's
    // write() is a cancellation point, which touches the calling thread's data, the
    // suspended parent's in a CLONE_VM child.)
    unsafe { libc::syscall(libc::SYS_write, report, [1_u8].as_ptr(), 1) };
    let (step, errno) = setup_and_exec(exec, placed);
    let [a, b, c, d] = errno.to_ne_bytes();
    let record = [step.code(), a, b, c, d];
    // SAFETY: as above; the parent reads it once this process has exited.
    unsafe { libc::syscall(libc::SYS_write, report, record.as_ptr(), record.len()) };
    // SAFETY: _exit(2) ends the child without running the server's atexit handlers.
    unsafe { libc::_exit(127) }
}

/// The steps, in posix_spawn(3)'s order; returns only on failure, with the step and errno.
fn setup_and_exec(exec: &Exec<'_>, placed: bool) -> (Step, c_int) {
    let failed = |step| (step, Errno::last_raw());
    // Default dispositions for every signal, before any is unblocked: signals the server
    // ignores would stay ignored across exec (signal(7)), and a handler of the server must not
    // run here. (glibc keeps 32 and 33 for itself and refuses them.) signal(3) is a plain
    // rt_sigaction(2), as in glibc's own posix_spawn child.
    for signo in 1..=exec.last_signal {
        if signo != libc::SIGKILL
            && signo != libc::SIGSTOP
            && !(32..libc::SIGRTMIN()).contains(&signo)
        {
            // SAFETY: signal(2) is async-signal-safe; SIG_DFL is a valid disposition.
            unsafe { libc::signal(signo, libc::SIG_DFL) };
        }
    }
    // New session, hence new process group: pgid == sid == pid (setsid(2)).
    // SAFETY: system calls on this process's own state, below likewise.
    if unsafe { libc::setsid() } < 0 {
        return failed(Step::Setsid);
    }
    if !placed
        && exec.cgroup_procs >= 0
        && unsafe { libc::syscall(libc::SYS_write, exec.cgroup_procs, c"0".as_ptr(), 1) } < 0
    {
        return failed(Step::Cgroup);
    }
    for (target, source) in (0..).zip(exec.stdio) {
        // SAFETY: dup2(2) on descriptors of this process; the copy is not close-on-exec.
        if unsafe { libc::dup2(source, target) } < 0 {
            return failed(Step::Stdio);
        }
    }
    // The leader of a new session without a controlling terminal takes the one on 0
    // (tty_ioctl(4) TIOCSCTTY; arg 0: never steal one that is another session's).
    // SAFETY: ioctl(2) on our own descriptor 0; a plain system call.
    if exec.controlling_terminal && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return failed(Step::Terminal);
    }
    if let Err(err) = fd::mark_cloexec_from(3, exec.fd_limit) {
        return (Step::Cloexec, err.raw_os_error().unwrap_or(libc::EINVAL));
    }
    if let Some(cwd) = exec.cwd
        && unsafe { libc::chdir(cwd.as_ptr()) } < 0
    {
        return failed(Step::Chdir);
    }
    // SAFETY: sigset_t is plain data; sigemptyset(3) initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&raw mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
    }
    // SAFETY: NUL-terminated path, NULL-terminated arrays of NUL-terminated strings, all owned
    // by the parent's frame (copied into this process).
    unsafe { libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr()) };
    failed(Step::Exec)
}

/// The report pipe, both ends close-on-exec and 3 or above (a descriptor below 3 would be
/// overwritten by the child's dup2 onto 0, 1 and 2).
fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((
        crate::process::above_stdio(read)?,
        crate::process::above_stdio(write)?,
    ))
}

/// Reads `read` until end-of-file into `buf`; the number of bytes read (reading stops when
/// `buf` is full).
fn read_to_end(read: OwnedFd, buf: &mut [u8]) -> usize {
    let mut file = std::fs::File::from(read);
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..)
        && !rest.is_empty()
    {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => len = len.saturating_add(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    len
}

/// The child on borrowed memory: clone3(2) `CLONE_VM | CLONE_VFORK` (as glibc's posix_spawn
/// does), on a stack of its own, running the same [`child`]. This thread is suspended until
/// the child has exec'd or exited, so everything `child` reads outlives its use; `child`
/// allocates nothing, takes no lock and calls no cancellation point, so it touches no state
/// of the server but the suspended thread's `errno`. The one piece of assembly per
/// architecture is the clone3 call itself: libc has no wrapper that starts a function on a
/// new stack with clone3's arguments (glibc's clone(3) takes no `CLONE_INTO_CGROUP`).
#[cfg(vm_child)]
mod vm {
    use std::cell::Cell;
    use std::ffi::{c_int, c_void};
    use std::io;
    use std::os::fd::RawFd;
    use std::ptr;
    use std::sync::atomic::AtomicBool;

    use nix::unistd::Pid;

    use super::{CLONE_INTO_CGROUP, Exec, child};

    /// Set once clone3(2) refused `CLONE_VM | CLONE_VFORK` (a seccomp filter, an emulator):
    /// children are forks from then on.
    pub(super) static REFUSED: AtomicBool = AtomicBool::new(false);

    /// Bytes of the child's stack, besides the guard page. The child needs a few KiB (the
    /// largest frame is the 2 KiB directory buffer of `fd::mark_cloexec_listed`); debug builds
    /// more.
    const STACK_BYTES: usize = 64 * 1024;

    /// What the child is given through its one argument.
    struct Args<'a> {
        exec: &'a Exec<'a>,
        placed: bool,
        report: RawFd,
    }

    /// Creates the child (born in the cgroup with `born`), every signal blocked by the caller.
    /// Returns once it has exec'd or exited.
    pub(super) fn create(exec: &Exec<'_>, born: bool, report: RawFd) -> io::Result<Pid> {
        let args = Args {
            exec,
            placed: born,
            report,
        };
        let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
        let mut cgroup = 0;
        if born {
            flags |= CLONE_INTO_CGROUP;
            cgroup = u64::try_from(exec.cgroup_dir).unwrap_or(u64::MAX);
        }
        let arg = ptr::from_ref(&args).cast_mut().cast::<c_void>();
        // SAFETY: `args` and all it points to live in this frame and the caller's, suspended
        // until the child has exec'd or exited (CLONE_VFORK); the stack is used by nothing
        // else meanwhile; `entry` runs `child`, which never returns.
        let rc = with_stack(|stack| unsafe { clone3(stack, flags, cgroup, arg) })?;
        if rc < 0 {
            let errno = c_int::try_from(rc.unsigned_abs()).unwrap_or(libc::EINVAL);
            return Err(io::Error::from_raw_os_error(errno));
        }
        let pid =
            libc::pid_t::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(Pid::from_raw(pid))
    }

    /// The child's entry point on its own stack.
    extern "C" fn entry(arg: *mut c_void) -> c_int {
        // SAFETY: `arg` is the `Args` of `create`, alive while its thread is suspended.
        let args = unsafe { &*arg.cast::<Args<'_>>() };
        child(args.exec, args.placed, args.report)
    }

    /// clone3(2) with `flags` (and `cgroup` for `CLONE_INTO_CGROUP`), the child running
    /// [`entry`]`(arg)` on `stack`. Returns the child's pid or `-errno`, in the parent only.
    ///
    /// libc has no clone3 wrapper that runs a function in the child, so the system call is
    /// made here: the child comes back from it on the new stack, where no Rust frame exists,
    /// and calls [`entry`] at once (which never returns; should it, the child exits).
    ///
    /// # Safety
    /// Every signal blocked in this thread; `arg` valid until this returns; `stack` used by
    /// nothing else; `flags` include `CLONE_VFORK`.
    unsafe fn clone3(stack: &Stack, flags: u64, cgroup: u64, arg: *mut c_void) -> i64 {
        // SAFETY: clone_args is plain data; all zeroes is "nothing more".
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.flags = flags;
        args.exit_signal = libc::SIGCHLD as u64;
        args.stack = stack.lowest() as u64;
        args.stack_size = stack.usable() as u64;
        args.cgroup = cgroup;
        let entry: extern "C" fn(*mut c_void) -> c_int = entry;
        let ret: i64;
        // SAFETY: the caller's contract; the asm only returns in the parent. The registers
        // holding `entry` and `arg` are preserved across the system call (callee-saved), so the
        // child finds them there on its new, 16-byte aligned stack.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            core::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r12",
                "call r13",
                "mov edi, eax",
                "mov eax, {exit}",
                "syscall",
                "ud2",
                "2:",
                exit = const libc::SYS_exit,
                inlateout("rax") libc::SYS_clone3 => ret,
                in("rdi") &raw const args,
                in("rsi") core::mem::size_of::<libc::clone_args>(),
                in("r12") arg,
                in("r13") entry,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        #[cfg(target_arch = "aarch64")]
        unsafe {
            core::arch::asm!(
                "svc 0",
                "cbnz x0, 2f",
                "mov x29, xzr",
                "mov x0, x21",
                "blr x22",
                "mov x8, {exit}",
                "svc 0",
                "brk #0",
                "2:",
                exit = const libc::SYS_exit,
                in("x8") libc::SYS_clone3,
                inlateout("x0") &raw const args => ret,
                in("x1") core::mem::size_of::<libc::clone_args>(),
                in("x21") arg,
                in("x22") entry,
                options(nostack),
            );
        }
        #[cfg(target_arch = "riscv64")]
        unsafe {
            core::arch::asm!(
                "ecall",
                "bnez a0, 2f",
                "mv s0, zero",
                "mv a0, s2",
                "jalr s3",
                "li a7, {exit}",
                "ecall",
                "unimp",
                "2:",
                exit = const libc::SYS_exit,
                in("a7") libc::SYS_clone3,
                inlateout("a0") &raw const args => ret,
                in("a1") core::mem::size_of::<libc::clone_args>(),
                in("s2") arg,
                in("s3") entry,
                options(nostack),
            );
        }
        ret
    }

    /// A stack for the child: a private mapping with a guard page below it (a child that
    /// overflowed would fault, not write over the server's heap). Kept per thread and reused:
    /// once the child has exec'd or exited (when clone(2) returns) it no longer uses it.
    struct Stack {
        /// Start of the mapping (the guard page).
        base: *mut c_void,
        /// Length of the mapping.
        len: usize,
        /// Length of the guard page.
        guard: usize,
    }

    impl Stack {
        fn new() -> io::Result<Self> {
            // SAFETY: sysconf(3) has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
                .ok()
                .filter(|&page| page > 0)
                .unwrap_or(4096);
            let len = STACK_BYTES
                .checked_next_multiple_of(page)
                .and_then(|usable| usable.checked_add(page))
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: a new anonymous private mapping; no existing memory is affected.
            let base = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = Self {
                base,
                len,
                guard: page,
            };
            // SAFETY: the lowest page of our own mapping becomes inaccessible: the guard.
            if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }

        /// The lowest usable address: just above the guard page.
        fn lowest(&self) -> *mut c_void {
            // SAFETY: within the mapping: one page above its start.
            unsafe { self.base.cast::<u8>().add(self.guard).cast() }
        }

        /// Bytes usable above the guard page (clone3 starts the child at the top of them).
        fn usable(&self) -> usize {
            self.len.saturating_sub(self.guard)
        }
    }

    impl Drop for Stack {
        fn drop(&mut self) {
            // SAFETY: our own mapping, unmapped once, and no child runs on it any more.
            unsafe { libc::munmap(self.base, self.len) };
        }
    }

    thread_local! {
        /// This thread's [`Stack`], made at its first spawn.
        static STACK: Cell<Option<Stack>> = const { Cell::new(None) };
    }

    /// Runs `f` with this thread's stack (made now if there is none; a fresh one, dropped after,
    /// while the thread's locals are being destroyed).
    fn with_stack<R>(f: impl FnOnce(&Stack) -> R) -> io::Result<R> {
        let stack = match STACK.try_with(Cell::take).ok().flatten() {
            Some(stack) => stack,
            None => Stack::new()?,
        };
        let result = f(&stack);
        // Fails only while the thread's locals are destroyed; the stack is unmapped then.
        let _ = STACK.try_with(|kept| kept.set(Some(stack)));
        Ok(result)
    }
}

//! The one place with `unsafe`: closing file descriptors we do not own,
//! resetting signal dispositions, `sigqueue` (which nix does not wrap), and
//! asking a terminal for its size, and forking the supervisor out of a
//! single-threaded `bgt run`.
//!
//! The supervisor is exec'd by `bgt run` and inherits every descriptor that
//! `bgt run`'s own caller leaked to it without close-on-exec (a CI runner's
//! pipe, a shell's fd 3). Holding one would keep that pipe open for the
//! task's whole life and hang whoever waits for its EOF. No Rust object owns
//! those numbers, so safe code cannot close them; this module can.
#![allow(unsafe_code)]

/// Closes every descriptor numbered 3 or above. Call it first thing in the
/// supervisor, before any `File` or `OwnedFd` exists, so no live Rust
/// object owns one of the closed numbers. (In a supervisor made by
/// [`fork_with_fds`], the caller's objects still exist in the stack frames
/// below the fork, but those frames never run again: the child leaves by
/// `_exit` from inside `fork_with_fds`, so nothing of them is used or dropped.)
pub fn close_inherited_fds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: close_range only closes descriptors; per the contract above
        // no Rust value owns any of them, so nothing is double-closed later.
        if unsafe { nix::libc::close_range(3, u32::MAX, 0) } == 0 {
            return;
        }
    }
    // Portable fallback: list the open descriptors, then close them.
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    let fds: Vec<i32> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= 3)
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in fds {
        // SAFETY: as above; closing the (already closed) fd of the directory
        // listing fails harmlessly with EBADF.
        unsafe {
            nix::libc::close(fd);
        }
    }
}

/// Sends `sig` to `pid` with a 64-bit value the receiver reads from its
/// signalfd (`ssi_ptr`); the kernel marks it `SI_QUEUE` with our pid. This is
/// how `bgt stop` carries its request without writing a file.
#[cfg(target_os = "linux")]
pub fn sigqueue(
    pid: nix::unistd::Pid,
    sig: nix::sys::signal::Signal,
    value: u64,
) -> std::io::Result<()> {
    let sigval = nix::libc::sigval {
        sival_ptr: value as usize as *mut nix::libc::c_void,
    };
    // SAFETY: a plain system call; the value is an integer carried in the
    // pointer slot, never dereferenced by anyone.
    let rc = unsafe { nix::libc::sigqueue(pid.as_raw(), sig as i32, sigval) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets every catchable signal back to its default action. The supervisor
/// blocks them all and reads them from a signalfd, so their actions never
/// run; but actions inherited from `bgt run`'s caller still matter: an
/// ignored SIGCHLD makes the kernel reap children before we read their
/// status, and ignored signals stay ignored in the child across exec.
/// Call it only with every signal blocked, or a default action could fire.
pub fn reset_signal_dispositions() {
    use nix::libc;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        set_default_action(sig);
    }
}

/// The raw system call: glibc refuses to touch its two internal real-time
/// signals (32 and 33), yet its posix_spawn leaves them ignored in the
/// process it starts (that is how `bgt run` starts us), and ignored they
/// would stay in the child.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn set_default_action(sig: i32) {
    /// The kernel's `struct sigaction` on these architectures.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let action = KernelSigaction {
        handler: nix::libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: the struct matches the kernel's layout for these
    // architectures; SIG_DFL installs no handler; the kernel only reads it.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_rt_sigaction,
            sig,
            &action as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        );
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn set_default_action(sig: i32) {
    // SAFETY: SIG_DFL installs no handler; errors (reserved or out-of-range
    // signals) are harmless.
    unsafe {
        nix::libc::signal(sig, nix::libc::SIG_DFL);
    }
}

/// Makes `command`'s child start with no signal blocked. The supervisor
/// blocks every signal, and a blocked mask survives fork and exec; std's
/// spawn does not reset it (checked: the child's SigBlk was all ones).
pub fn unblock_signals_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs between fork and exec; pthread_sigmask is
    // async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        });
    }
}

/// The width in columns of the terminal on `fd`, if it is one and knows.
/// std has no call for it; `stty size` would cost a process per question.
pub fn terminal_columns(fd: &impl std::os::fd::AsFd) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes one `winsize` into `size`, which lives
    // for the call; the descriptor is borrowed, so it is open throughout.
    let rc = unsafe {
        nix::libc::ioctl(
            fd.as_fd().as_raw_fd(),
            nix::libc::TIOCGWINSZ,
            &mut size as *mut nix::libc::winsize,
        )
    };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// True when this process runs exactly one thread (Linux: `/proc/self/task`
/// lists one entry). Then no other thread can appear before a `fork` this
/// thread makes next, since only this thread could create one. Elsewhere
/// it answers false, so callers take the path that is safe with threads.
pub fn single_threaded() -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.take(2).count() == 1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Forks this process, if it is single-threaded, into a child that runs
/// `body` with `fds` as its descriptors 0, 1 and 2 and every signal blocked,
/// and exits with `body`'s code; it never returns into the caller's code.
/// Every other descriptor is still open when `body` starts: `body` closes
/// them (`close_inherited_fds`). Returns the child's pid to the parent, or
/// `None` without doing anything when this process has more than one thread
/// (the caller then re-execs instead). The parent's signal mask is restored
/// after the fork; its copies of `fds` stay open (the caller drops them).
///
/// The child must leave no trace of the parent's state: Rust's stdout
/// buffer is flushed first (a copy of unwritten output would otherwise be
/// written again by the child), and the child exits with `_exit`, so no
/// destructor, atexit handler or stdio flush of the copied state runs.
pub fn fork_with_fds(
    fds: [std::os::fd::BorrowedFd<'_>; 3],
    body: impl FnOnce() -> i32,
) -> std::io::Result<Option<nix::unistd::Pid>> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    use nix::unistd::ForkResult;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    if !single_threaded() {
        return Ok(None);
    }
    let _ = std::io::stdout().flush();
    // Born with every signal blocked: nothing (a Ctrl-C to the caller's
    // process group, say) can end the child before it has detached.
    let caller_mask = SigSet::all().thread_swap_mask(SigmaskHow::SIG_SETMASK)?;
    // SAFETY: `fork` is unsafe because in a multi-threaded process the child
    // gets a copy of memory that other threads may have left mid-update
    // (a malloc arena, a lock held), so it may only make async-signal-safe
    // calls until it execs. This process was just seen to have one thread,
    // and no other can have appeared since (only this thread could have
    // made one). A single-threaded child is a complete, consistent copy of
    // the parent, with no lock held by anyone but this thread, which holds
    // none here (we are not inside stdout's or any other guard): it may run
    // ordinary Rust code (allocate, format, open files, spawn), as any
    // single-threaded program may after fork. The child never returns into
    // the caller's frames: it runs `body` and `_exit`s, and a panic in
    // `body` is caught here, so no object of the parent is dropped twice
    // (once per process) or used after `body` closed its descriptors.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            let _ = caller_mask.thread_set_mask();
            Err(e.into())
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = caller_mask.thread_set_mask();
            Ok(Some(child))
        }
        Ok(ForkResult::Child) => {
            let raw = fds.map(|fd| fd.as_raw_fd());
            let code = if onto_stdio(raw) {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101)
            } else {
                1
            };
            // SAFETY: ends this process at once, running nothing of the
            // copied state (no destructors, no atexit handlers, no flush).
            unsafe { nix::libc::_exit(code) }
        }
    }
}

/// Makes `fds` descriptors 0, 1 and 2 (without close-on-exec), whatever
/// numbers they have now: each is first copied to a number above 2, so
/// placing one cannot overwrite another still to be placed. False on error.
fn onto_stdio(fds: [std::os::fd::RawFd; 3]) -> bool {
    use nix::libc;
    let mut high = [0; 3];
    for (slot, fd) in high.iter_mut().zip(fds) {
        // SAFETY: plain descriptor calls on numbers this process holds; the
        // copies are left for `close_inherited_fds`.
        *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD, 3) };
        if *slot < 0 {
            return false;
        }
    }
    (0..3).all(|target| {
        // SAFETY: as above; 0, 1 and 2 are owned by no Rust object that will
        // run again in this process.
        unsafe { libc::dup2(high[target as usize], target) == target }
    })
}

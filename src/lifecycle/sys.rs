//! The one place with `unsafe`: closing file descriptors we do not own,
//! resetting signal dispositions, `sigqueue` (which nix does not wrap), and
//! asking a terminal for its size.
//!
//! The supervisor is exec'd by `bgt run` and inherits every descriptor that
//! `bgt run`'s own caller leaked to it without close-on-exec (a CI runner's
//! pipe, a shell's fd 3). Holding one would keep that pipe open for the
//! task's whole life and hang whoever waits for its EOF. No Rust object owns
//! those numbers, so safe code cannot close them; this module can.
#![allow(unsafe_code)]

/// Closes every descriptor numbered 3 or above. Call it first thing in the
/// supervisor, before any `File` or `OwnedFd` exists, so no live Rust
/// object owns one of the closed numbers.
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
pub fn sigqueue(pid: u32, sig: nix::sys::signal::Signal, value: u64) -> std::io::Result<()> {
    let sigval = nix::libc::sigval {
        sival_ptr: value as usize as *mut nix::libc::c_void,
    };
    // SAFETY: a plain system call; the value is an integer carried in the
    // pointer slot, never dereferenced by anyone.
    let rc = unsafe { nix::libc::sigqueue(pid as nix::libc::pid_t, sig as i32, sigval) };
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

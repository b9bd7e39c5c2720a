//! The one place with `unsafe`: closing file descriptors we do not own,
//! resetting signal dispositions, and `sigqueue` (which nix does not wrap).
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
    #[cfg(target_os = "linux")]
    let last = libc::SIGRTMAX();
    #[cfg(not(target_os = "linux"))]
    let last = 31;
    for sig in 1..=last {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no Rust code can run in
        // signal context; failures (signals reserved by libc) are harmless.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

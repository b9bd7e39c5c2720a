//! The one place with `unsafe`: closing file descriptors we do not own,
//! and asking a terminal for its size.
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

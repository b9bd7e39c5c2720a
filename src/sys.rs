//! The one place with `unsafe`: closing file descriptors we do not own,
//! resetting signal dispositions, `sigqueue` and a spawn's change of
//! directory (which nix does not wrap),
//! asking a terminal for its size, forking the supervisor out of a
//! single-threaded `bgt run`, and mapping logs so that one shrinking under
//! the reader is an error, not a SIGBUS ([`LogMap`]).
//!
//! The supervisor, forked or exec'd by `bgt run`, inherits descriptors it
//! must not keep: those `bgt run`'s own caller leaked to it without
//! close-on-exec (a CI runner's pipe, a shell's fd 3) and, when forked,
//! every one `run` itself had open. Holding one would keep that pipe open for the
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

/// Starts `argv` in a new process group with no signal blocked, `stdio`
/// as its descriptors 0, 1 and 2 and `cwd` as its directory; `program` is
/// a path (a relative one is taken from `cwd`).
/// Returns its pid once it has exec'd, or the error of the failed exec:
/// glibc's posix_spawn shares our memory until the exec, as vfork does,
/// and hands the child's errno back.
///
/// Not std's `Command`: it leaves the signal mask alone, and the
/// supervisor blocks every signal (it reads them from a signalfd), so a
/// `pre_exec` would have to empty it in the child, and with one std forks
/// a copy of the supervisor instead (measured: 480 of the ~1,500 µs from
/// `bgt run`'s start to its answer, against ~120 µs for this).
pub fn spawn(
    program: &std::ffi::CStr,
    argv: &[std::ffi::CString],
    envp: &[std::ffi::CString],
    cwd: &std::ffi::CStr,
    stdio: [std::os::fd::BorrowedFd<'_>; 3],
) -> std::io::Result<nix::unistd::Pid> {
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    use std::os::fd::AsRawFd;
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_pgroup(nix::unistd::Pid::from_raw(0))?;
    attr.set_sigmask(&nix::sys::signal::SigSet::empty())?;
    attr.set_sigdefault(&every_signal())?;
    let mut actions = PosixSpawnFileActions::init()?;
    // A source numbered 0 to 2 is copied above 2 first (a queued
    // supervisor has closed its fd 1, so a log may have taken it), so that
    // placing one cannot overwrite another still to be placed; the copies
    // live until the spawn is done.
    let mut copies = Vec::new();
    for (target, fd) in stdio.iter().enumerate() {
        let source = if fd.as_raw_fd() < 3 {
            let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
            let raw = copy.as_raw_fd();
            copies.push(copy);
            raw
        } else {
            fd.as_raw_fd()
        };
        actions.add_dup2(source, target as i32)?;
    }
    // SAFETY: nix's file actions are a `repr(transparent)` wrapper of the
    // libc object, so the pointer is to an initialised
    // `posix_spawn_file_actions_t`, borrowed mutably for the call; glibc
    // copies `cwd`. nix does not wrap this call (a GNU and BSD extension).
    let rc = unsafe {
        nix::libc::posix_spawn_file_actions_addchdir_np(
            (&mut actions as *mut PosixSpawnFileActions).cast(),
            cwd.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(nix::spawn::posix_spawn(
        program, &actions, &attr, argv, envp,
    )?)
}

/// Every signal, glibc's two internal ones (32 and 33) included: its
/// posix_spawn ignores those in the child while it shares our memory, and
/// leaves them ignored across the exec unless they are in the set reset to
/// their default action, a set `sigfillset` and `sigaddset` will not put
/// them in.
fn every_signal() -> nix::sys::signal::SigSet {
    #[allow(unused_mut)]
    let mut raw = *nix::sys::signal::SigSet::all().as_ref();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::libc::{c_ulong, sigset_t};
        let bits = 8 * std::mem::size_of::<c_ulong>();
        let words = std::mem::size_of::<sigset_t>() / std::mem::size_of::<c_ulong>();
        // SAFETY: glibc's sigset_t is an array of unsigned longs in which
        // bit (n - 1) % bits of word (n - 1) / bits stands for signal n; the
        // slice covers exactly `raw`, which lives on our stack for the call.
        let set = unsafe {
            std::slice::from_raw_parts_mut((&mut raw as *mut sigset_t).cast::<c_ulong>(), words)
        };
        for sig in [32usize, 33] {
            set[(sig - 1) / bits] |= 1 << ((sig - 1) % bits);
        }
    }
    // SAFETY: `raw` came from sigfillset; only signal bits were added.
    unsafe { nix::sys::signal::SigSet::from_sigset_t_unchecked(raw) }
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

/// A read-only mapping of part of a log, for reading large ranges without
/// copying them out of the page cache (`read(2)` spends a third of a 1 GiB
/// filter in that copy). A log can shrink while it is mapped (a user
/// truncates it, a program rewrites it): touching a page past the new end
/// raises SIGBUS, which would kill the process. [`LogMap`] registers its
/// range with a SIGBUS handler that maps a page of zeros over the faulting
/// address and marks the mapping [`LogMap::shrank`]; the reader checks that
/// and reports the shrink as `read(2)` would have (a short read).
///
/// Bytes rewritten in place under a mapping (not shrunk) are seen as they
/// change, as `rg` sees them; the log reader maps only logs that nobody
/// but a user at the keyboard still writes (see `logs::read`).
///
/// Up to [`MAP_SLOTS`] mappings may be live at once (the MCP server reads
/// on several threads); [`LogMap::new`] fails when none is free, or when
/// SIGBUS is blocked in this thread (the supervisor blocks every signal: a
/// blocked SIGBUS would kill it anyway), and the caller then reads.
pub struct LogMap {
    addr: std::ptr::NonNull<nix::libc::c_void>,
    len: usize,
    /// Bytes mapped before the requested offset (to a page boundary).
    skip: usize,
    slot: &'static MapSlot,
}

// SAFETY: a `LogMap` owns a read-only mapping that stays valid until it is
// dropped, and its slot is static atomics: reading the bytes from several
// threads reads shared, never-written memory, and a shrink is answered by the
// process-wide SIGBUS handler whichever thread touches the page (the log
// reader searches a mapping ahead on a second thread).
unsafe impl Send for LogMap {}
// SAFETY: as for `Send`: `&LogMap` gives only reads of the mapping and of atomics.
unsafe impl Sync for LogMap {}

/// How many mappings may be live at once.
pub const MAP_SLOTS: usize = 64;

/// One live mapping's range, as the SIGBUS handler sees it: `start` is
/// claimed first (0 = free), `end` set last; a fault in `[start, end)` is ours.
pub struct MapSlot {
    start: std::sync::atomic::AtomicUsize,
    end: std::sync::atomic::AtomicUsize,
    faulted: std::sync::atomic::AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array below
const FREE_SLOT: MapSlot = MapSlot {
    start: std::sync::atomic::AtomicUsize::new(0),
    end: std::sync::atomic::AtomicUsize::new(0),
    faulted: std::sync::atomic::AtomicBool::new(false),
};
static MAP_SLOTS_IN_USE: [MapSlot; MAP_SLOTS] = [FREE_SLOT; MAP_SLOTS];
static PAGE_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl LogMap {
    /// Maps `len` bytes of `file` from `offset`.
    pub fn new(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<LogMap> {
        use nix::libc;
        use std::os::fd::AsRawFd;
        use std::sync::atomic::Ordering;
        let unavailable = |why: &str| std::io::Error::other(why.to_string());
        if len == 0 || !install_sigbus_handler() || sigbus_blocked() {
            return Err(unavailable("no mapping here"));
        }
        let page = PAGE_SIZE.load(Ordering::Relaxed) as u64;
        let skip = (offset % page) as usize;
        let (offset, len) = (offset - skip as u64, len + skip);
        // SAFETY: a fresh read-only private mapping of an open file; the
        // kernel picks the address, so it overlaps nothing of ours.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let addr = std::ptr::NonNull::new(addr).expect("mmap does not return null");
        // SAFETY: advice on the mapping just made; failure is harmless.
        unsafe { libc::madvise(addr.as_ptr(), len, libc::MADV_SEQUENTIAL) };
        let start = addr.as_ptr() as usize;
        let Some(slot) = MAP_SLOTS_IN_USE.iter().find(|s| {
            s.start
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            // SAFETY: unmapping what was mapped above, never handed out.
            unsafe { libc::munmap(addr.as_ptr(), len) };
            return Err(unavailable("every mapping slot is in use"));
        };
        slot.faulted.store(false, Ordering::Release);
        slot.end.store(start + len, Ordering::Release);
        Ok(LogMap {
            addr,
            len,
            skip,
            slot,
        })
    }

    /// The bytes asked for. Where the file has shrunk since, they read as
    /// zeros and [`LogMap::shrank`] is true.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable at `addr` for as long as self
        // lives; pages the file no longer covers are replaced with zeros by
        // the SIGBUS handler instead of faulting.
        let all = unsafe { std::slice::from_raw_parts(self.addr.as_ptr() as *const u8, self.len) };
        &all[self.skip..]
    }

    /// Touches the mapping's last byte, so a shrink that happened before
    /// shows in [`LogMap::shrank`] before the bytes are used, not after. One
    /// page tells for all: a file shrinks from its end, so if any page of
    /// the mapping now lies past the end, the last one does. (Touching every
    /// page cost a seventh of a filter: a cache miss per page, one after the
    /// other, before the scan.)
    pub fn touch(&self) {
        if let Some(last) = self.bytes().last() {
            std::hint::black_box(*last);
        }
    }

    /// Whether a page past the file's end was touched: the bytes read from
    /// it were zeros, not the log.
    pub fn shrank(&self) -> bool {
        self.slot.faulted.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for LogMap {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.slot.end.store(0, Ordering::Release);
        // SAFETY: the mapping made in `new`; no slice of it outlives self.
        unsafe { nix::libc::munmap(self.addr.as_ptr(), self.len) };
        self.slot.start.store(0, Ordering::Release);
    }
}

/// Installs the SIGBUS handler once per process; false if it could not be.
fn install_sigbus_handler() -> bool {
    use nix::libc;
    use std::sync::OnceLock;
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf is a plain query.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page <= 0 {
            return false;
        }
        PAGE_SIZE.store(page as usize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: a zeroed sigaction is a valid starting value; the handler
        // is an `extern "C"` function with the SA_SIGINFO signature.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
        }
    })
}

/// Whether SIGBUS is blocked in the calling thread.
fn sigbus_blocked() -> bool {
    use nix::sys::signal::{SigSet, Signal};
    SigSet::thread_get_mask().is_ok_and(|mask| mask.contains(Signal::SIGBUS))
}

/// The SIGBUS handler. Async-signal-safe: atomic loads and stores, one
/// `mmap` (errno kept), `signal` and `raise`. A fault (`BUS_ADRERR`) inside
/// a registered mapping gets a page of zeros (the faulting access is
/// retried and succeeds) and marks the mapping; any other SIGBUS is fatal,
/// as it was before: the default action is restored and the signal raised
/// again (a sent one) or the access retried (a fault).
extern "C" fn on_sigbus(
    _signal: nix::libc::c_int,
    info: *mut nix::libc::siginfo_t,
    _context: *mut nix::libc::c_void,
) {
    use nix::libc;
    use std::sync::atomic::Ordering;
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    let ours = if code == libc::BUS_ADRERR {
        &MAP_SLOTS_IN_USE[..]
    } else {
        &[] // sent by someone (`kill -BUS`), not a fault
    };
    for slot in ours {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Acquire);
        // The same start before and after reading the end: not the start of
        // one mapping with the end of the next, should the slot change hands.
        if start != 0 && slot.start.load(Ordering::Acquire) == start && (start..end).contains(&addr)
        {
            // SAFETY: reading and later restoring this thread's errno.
            let errno = unsafe { *libc::__errno_location() };
            // SAFETY: replaces one page inside our own registered mapping
            // (which stays mapped while registered) with anonymous zeros.
            let zeros = unsafe {
                libc::mmap(
                    (addr & !(page - 1)) as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            if zeros != libc::MAP_FAILED {
                slot.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    // SAFETY: both are async-signal-safe. A sent SIGBUS is raised again (it
    // is delivered with the default action once this handler returns); a
    // fault is retried and ends the process the same way.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        if code != libc::BUS_ADRERR {
            libc::raise(libc::SIGBUS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_outlives_the_file_shrinking_under_it() {
        let path = std::env::temp_dir().join(format!("bgt-logmap-{}", std::process::id()));
        std::fs::write(&path, vec![b'x'; 3 << 16]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let map = LogMap::new(&file, 100, (3 << 16) - 100).unwrap();
        assert_eq!(map.bytes().len(), (3 << 16) - 100);
        assert!(map.bytes()[..10].iter().all(|&b| b == b'x'));
        assert!(!map.shrank());
        let cut = |len| {
            std::fs::File::options()
                .write(true)
                .open(&path)?
                .set_len(len)
        };
        cut(1 << 16).unwrap();
        // Past the new end: zeros instead of a fatal SIGBUS, and it is said.
        assert_eq!(map.bytes()[(2 << 16) - 100], 0);
        assert!(map.shrank());
        drop(map);
        // A new mapping in the same slot starts clean.
        let again = LogMap::new(&file, 0, 1 << 16).unwrap();
        assert!(!again.shrank());
        std::fs::remove_file(&path).unwrap();
    }
}

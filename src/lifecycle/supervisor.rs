//! The per-task supervisor, a single-threaded process. A single-threaded
//! caller (the CLI) forks it (`sys::fork_with_fds`: no second exec of the
//! bgt binary, the cost that made `run` three times slower than `nq`); a
//! caller with threads (the MCP server) re-execs its own binary as
//! `bgt __supervise <task-dir>` instead, since a fork of a threaded process
//! may run nothing but async-signal-safe calls. Both enter [`main`] with
//! the same three descriptors.
//!
//! It blocks every signal first and reads them from a signalfd, so nothing
//! the task sends it (`kill -USR1 $PPID`, a stray SIGPIPE, ...) can end it;
//! the child still starts with an empty mask and default dispositions
//! (`sys::unblock_signals_in_child`, `sys::reset_signal_dispositions`). It detaches (new session, every inherited fd closed,
//! stdin/stdout on /dev/null), keeps the task's lock (handed over as fd 0)
//! for its whole life, reserves a spare record file (see `meta.rs`), spawns
//! the child in its own process group with the caller's umask, the
//! `BGT_TASK_ID` marker and stdout/stderr opened straight onto the log
//! files, reports [`REPORT_OK`] or [`REPORT_ERR`] to `bgt run` over a pipe
//! (fd 1), then waits. On Linux it is a child subreaper, so it also reaps
//! every descendant that outlives the main process, and it ends (writing the
//! final record) only when the last one is gone.
//!
//! Ending the tree: `--timeout`, a [`StopRequest`] from `bgt stop` (carried
//! in the signal itself by sigqueue, so stopping needs no disk space), or a
//! plain SIGTERM/SIGINT from outside the task (kept: `kill <supervisor>`
//! stops the task). A SIGTERM/SIGINT sent by one of the task's own processes
//! is ignored: a child cannot fake a stop. Each ends with the requested
//! signal, then SIGKILL after the grace period, repeated until every process
//! is gone; one that cannot be killed (EPERM) keeps the task running.
//!
//! Known limit: a task process that sends SIGTERM and is reaped by its own
//! parent before the supervisor reads the signal can no longer be told from
//! an outside sender, and is honoured as a stop.

use crate::dirfd::{Access, DirFd};
use crate::meta::{Exit, State, TaskMeta};
use crate::process;
use crate::store::{STDERR_LOG, STDOUT_LOG};
use anyhow::{Context, Result};
use chrono::Utc;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand name; not part of the CLI surface.
pub const SUBCOMMAND: &str = "__supervise";

/// Grace period before SIGKILL when the supervisor ends a task on its own (timeout).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The start handshake, one line from the supervisor to `bgt run`:
/// `ok <child pid>` once the child runs and is recorded...
pub const REPORT_OK: &str = "ok";
/// ...or `err <message>` when it could not start (the task is removed).
pub const REPORT_ERR: &str = "err";

/// How `bgt stop` asks the supervisor to end the task. It travels as the
/// value of a sigqueue'd SIGTERM: 16 bits of tag, 8 of signal number, 40 of
/// grace in milliseconds (capped at about 34 years).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopRequest {
    pub signal: Signal,
    pub grace: Duration,
}

const REQUEST_TAG: u64 = 0xb67e;
const GRACE_BITS: u64 = (1 << 40) - 1;

impl StopRequest {
    /// The request as a signal value.
    pub fn encode(&self) -> u64 {
        let grace = (self.grace.as_millis() as u64).min(GRACE_BITS);
        (REQUEST_TAG << 48) | ((self.signal as u64 & 0xff) << 40) | grace
    }

    /// The request a signal value carries, if it is one.
    pub fn decode(value: u64) -> Option<StopRequest> {
        if value >> 48 != REQUEST_TAG {
            return None;
        }
        Some(StopRequest {
            signal: Signal::try_from(((value >> 40) & 0xff) as i32).ok()?,
            grace: Duration::from_millis(value & GRACE_BITS),
        })
    }

    /// Delivers the request to a live supervisor. Allocates nothing on disk
    /// on Linux; elsewhere (no signalfd) a `stop` file carries it.
    pub fn send(&self, dir: &Path, supervisor: u32) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            let _ = dir;
            crate::sys::sigqueue(supervisor, Signal::SIGTERM, self.encode())
                .map_err(|e| anyhow::anyhow!("cannot signal the supervisor: {e}"))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let path = dir.join(crate::store::STOP);
            crate::meta::write_atomic(&path, self.encode().to_string().as_bytes(), false)?;
            let _ = nix::sys::signal::kill(Pid::from_raw(supervisor as i32), Signal::SIGTERM);
            Ok(())
        }
    }
}

/// Why the supervisor is ending the tree.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Stop,
    Timeout,
}

/// Entry point of `bgt __supervise <dir>` (`meta`: `None`, read from the
/// task directory) and of a forked supervisor (`meta`: the record `run` has
/// just written, already in memory); returns the process exit code.
pub fn main(dir: &Path, meta: Option<TaskMeta>) -> i32 {
    // Before anything else: no signal may end us (they are read from a
    // signalfd in `watch`). Blocked, not ignored: an ignored disposition
    // would be inherited by the child across exec; the mask is emptied
    // between fork and exec.
    let _ = SigSet::all().thread_block();
    crate::sys::reset_signal_dispositions();
    // Detach: own session (no controlling terminal, no SIGHUP from the
    // caller's; its id names the task's processes once we are gone), and
    // none of the caller's descriptors kept open.
    let _ = nix::unistd::setsid();
    crate::sys::close_inherited_fds();
    // Do not keep the caller's directory busy (an unmount would fail); the
    // child gets its own cwd from the record.
    let _ = std::env::set_current_dir("/");
    // fd 0: the task's lock, held; fd 1: the report pipe to `bgt run`;
    // fd 2: the task directory, opened and checked by `bgt run` (so the
    // directory we use is the one it created, whatever the path names now).
    let (Ok(lock), Ok(report), Ok(task_dir)) = (
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
        std::io::stderr().as_fd().try_clone_to_owned(),
    ) else {
        return 1;
    };
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let task_dir = DirFd::from_fd(task_dir, dir.to_path_buf());
    let mut report = Some(File::from(report));
    let _lock = lock; // held until this process exits: the task's liveness

    match supervise(&task_dir, &mut report, meta) {
        Ok(()) => 0,
        Err(err) => {
            // Before the child started: the task never existed. Tell `bgt
            // run`, which removes it, prints the error and exits 1.
            if let Some(mut report) = report {
                let message = format!("{err:#}").replace('\n', " ");
                let _ = report.write_all(format!("{REPORT_ERR} {message}\n").as_bytes());
            }
            1
        }
    }
}

fn supervise(dir: &DirFd, report: &mut Option<File>, meta: Option<TaskMeta>) -> Result<()> {
    let mut meta = match meta {
        Some(meta) => meta,
        None => TaskMeta::load_in(dir)?,
    };

    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Now, while nothing runs yet: the final record must not need free space.
    meta.reserve_spare(dir)?;

    let open_log = |name: &str| {
        dir.open_file(name, Access::Append).map_err(|e| {
            anyhow::anyhow!(
                "cannot open log {}: {}",
                dir.path().join(name).display(),
                crate::error::io_message(&e)
            )
        })
    };
    let program = meta.command.argv.first().context("empty command")?.clone();
    let mut command = Command::new(&program);
    command
        .args(&meta.command.argv[1..])
        .current_dir(&meta.cwd)
        .envs(&meta.env)
        .env(process::TASK_ID_VAR, &meta.id)
        .stdin(Stdio::null())
        .stdout(open_log(STDOUT_LOG)?)
        .stderr(open_log(STDERR_LOG)?)
        .process_group(0);
    crate::sys::unblock_signals_in_child(&mut command);
    // The child gets the caller's umask; ours stays 077 (single-threaded, so
    // swapping it around the spawn is safe).
    let ours = meta.umask.map(process::set_umask);
    let spawned = command.spawn();
    if let Some(ours) = ours {
        process::set_umask(ours);
    }
    let child = spawned.map_err(|e| {
        anyhow::anyhow!("cannot start '{program}': {}", crate::error::io_message(&e))
    })?;
    drop(command); // closes our copies of the log descriptors

    let me = std::process::id();
    let pid = child.id();
    meta.state = State::Running;
    meta.started = Some(Utc::now());
    meta.supervisor_pid = Some(me);
    meta.supervisor_start = process::start_ticks(me);
    meta.sid = nix::unistd::getsid(None)
        .ok()
        .map(|sid| sid.as_raw() as u32);
    meta.pid = Some(pid);
    meta.pgid = Some(pid);
    meta.pid_start = process::start_ticks(pid);
    if let Err(err) = meta.store_in(dir) {
        process::signal_tree(me, Some(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid as i32), None);
        return Err(err);
    }
    if let Some(mut pipe) = report.take() {
        // One write (`bgt run` reads a line); closing the pipe lets it return.
        let _ = pipe.write_all(format!("{REPORT_OK} {pid}\n").as_bytes());
    }

    let ending = watch(dir, &mut meta, pid);
    meta.state = match (ending, &meta.exit) {
        (Some(Ending::Stop), _) => State::Stopped,
        (Some(Ending::Timeout), _) => State::TimedOut,
        (None, Some(Exit::Signal(_))) => State::Signaled,
        (None, _) => State::Exited,
    };
    meta.ended = Some(Utc::now());
    // Nobody is left to report to; a failed final write shows as `lost`.
    let _ = meta.store_final(dir);
    Ok(())
}

/// Reaps until no child is left, ending the tree on timeout or request.
/// Returns why it was ended early, if it was.
fn watch(dir: &DirFd, meta: &mut TaskMeta, pid: u32) -> Option<Ending> {
    let me = std::process::id();
    let pgid = meta.pgid;
    let timeout_at = meta
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    let mut signals = Signals::new(dir.path());
    let mut reaped = HashSet::new();

    loop {
        // Signals first, reaping second: a task process that signalled us
        // and exited is then still visible (a zombie, or in `reaped`).
        let request = signals.drain(me, &reaped);
        reaped.clear();
        let (main_exit, children_left) = reap(pid, &mut reaped);
        if let Some(exit) = main_exit {
            meta.exit = Some(exit);
            if children_left {
                // Descendants outlive the main process: say so, keep reaping.
                let _ = meta.store_in(dir);
            }
        }
        if !children_left {
            return ending;
        }

        let now = Instant::now();
        let mut begin = |why: Ending, sig: Signal, grace: Duration| {
            if ending.is_none() {
                ending = Some(why);
                process::signal_tree(me, pgid, sig);
                kill_at = Some(now + grace);
            }
        };
        if let Some(request) = request {
            begin(Ending::Stop, request.signal, request.grace);
        }
        if timeout_at.is_some_and(|at| now >= at) {
            begin(Ending::Timeout, Signal::SIGTERM, DEFAULT_GRACE);
        }
        let mut next = timeout_at.filter(|_| ending.is_none());
        if let Some(at) = kill_at {
            if now >= at {
                // Past the grace period: SIGKILL, and again every half second
                // for anything forked in the meantime (or that we may not
                // kill: it keeps the task running, never falsely ended).
                process::signal_tree(me, pgid, Signal::SIGKILL);
                kill_at = Some(now + Duration::from_millis(500));
            }
            next = kill_at;
        }
        signals.wait(next.map(|at| at.saturating_duration_since(Instant::now())));
    }
}

/// Reaps every exited child without blocking, noting their pids. Returns
/// the main process's exit (if it was among them) and whether any child is left.
fn reap(main: u32, reaped: &mut HashSet<i32>) -> (Option<Exit>, bool) {
    let mut main_exit = None;
    loop {
        let status = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG));
        if let Ok(status) = &status
            && let Some(p) = status.pid()
        {
            reaped.insert(p.as_raw());
        }
        match status {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == main as i32 => {
                main_exit = Some(Exit::Code(code))
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == main as i32 => {
                main_exit = Some(Exit::Signal(sig.as_str().to_string()))
            }
            Ok(WaitStatus::StillAlive) => return (main_exit, true),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (main_exit, false), // ECHILD: nobody left
        }
    }
}

/// The supervisor's signals: all blocked, read from a signalfd (Linux), or
/// short naps and a `stop` file elsewhere.
struct Signals {
    #[cfg(target_os = "linux")]
    fd: Option<nix::sys::signalfd::SignalFd>,
    #[cfg(not(target_os = "linux"))]
    dir: std::path::PathBuf,
}

impl Signals {
    fn new(dir: &Path) -> Signals {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::signalfd::{SfdFlags, SignalFd};
            let _ = dir;
            let fd = SignalFd::with_flags(
                &SigSet::all(),
                SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
            )
            .ok();
            Signals { fd }
        }
        #[cfg(not(target_os = "linux"))]
        Signals {
            dir: dir.to_path_buf(),
        }
    }

    /// Reads every pending signal; returns the stop request among them, if
    /// any. SIGCHLD only wakes us to reap; anything but TERM and INT is
    /// ignored; TERM or INT from a task process (`reaped` holds children
    /// reaped since the last drain) is ignored too.
    #[cfg(target_os = "linux")]
    fn drain(&mut self, me: u32, reaped: &HashSet<i32>) -> Option<StopRequest> {
        let fd = self.fd.as_ref()?;
        let mut request = None;
        while let Ok(Some(info)) = fd.read_signal() {
            let Ok(Signal::SIGTERM | Signal::SIGINT) = Signal::try_from(info.ssi_signo as i32)
            else {
                continue;
            };
            if info.ssi_code == nix::libc::SI_QUEUE
                && let Some(asked) = StopRequest::decode(info.ssi_ptr)
            {
                // From `bgt stop` (wherever it runs, even inside the task).
                request = Some(asked);
                continue;
            }
            let sender = info.ssi_pid as i32;
            if sender > 0 && (reaped.contains(&sender) || process::is_task_process(sender, me)) {
                continue;
            }
            request.get_or_insert(StopRequest {
                signal: Signal::SIGTERM,
                grace: DEFAULT_GRACE,
            });
        }
        request
    }

    #[cfg(not(target_os = "linux"))]
    fn drain(&mut self, _me: u32, _reaped: &HashSet<i32>) -> Option<StopRequest> {
        let text = std::fs::read_to_string(self.dir.join(crate::store::STOP)).ok()?;
        StopRequest::decode(text.trim().parse().ok()?)
    }

    /// Sleeps until a signal arrives or the timeout passes.
    #[cfg(target_os = "linux")]
    fn wait(&mut self, timeout: Option<Duration>) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let Some(fd) = &self.fd else {
            std::thread::sleep(
                timeout
                    .unwrap_or(Duration::from_millis(100))
                    .min(Duration::from_millis(100)),
            );
            return;
        };
        let timeout = match timeout {
            // Round up so we never wake a hair before a deadline and spin.
            Some(d) => PollTimeout::try_from(d.as_millis() as u64 + 1).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, timeout);
    }

    #[cfg(not(target_os = "linux"))]
    fn wait(&mut self, timeout: Option<Duration>) {
        let nap = Duration::from_millis(50);
        std::thread::sleep(timeout.map_or(nap, |t| t.min(nap)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_requests_round_trip_through_a_signal_value() {
        let request = StopRequest {
            signal: Signal::SIGINT,
            grace: Duration::from_millis(1500),
        };
        assert_eq!(StopRequest::decode(request.encode()), Some(request));
        assert_eq!(StopRequest::decode(0), None);
        assert_eq!(StopRequest::decode(42), None);
    }
}

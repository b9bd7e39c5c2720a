//! The per-task supervisor: `bgt run` re-execs its own binary as
//! `bgt __supervise <task-dir>`, a fresh single-threaded process (so starting
//! tasks is safe even from the multi-threaded MCP server).
//!
//! It detaches (new session, every inherited fd closed, stdin/stdout on
//! /dev/null), keeps the task's lock (handed over as fd 0) for its whole
//! life, spawns the child in its own process group with stdout/stderr opened
//! straight onto the log files, reports "ok" or the start error to `bgt run`
//! over a pipe (fd 1), then waits. On Linux it is a child subreaper, so it
//! also reaps every descendant that outlives the main process, and it ends
//! only when the last one is gone. `--timeout`, `bgt stop` (a `stop` request
//! file plus SIGTERM) and a plain SIGTERM all end the whole tree: the
//! requested signal, then SIGKILL after the grace period.

use crate::meta::{Exit, State, TaskMeta};
use crate::process;
use crate::store::{META, STOP};
use anyhow::{Context, Result};
use chrono::Utc;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand name; not part of the CLI surface.
pub const SUBCOMMAND: &str = "__supervise";

/// Grace period before SIGKILL when the supervisor ends a task on its own (timeout).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How `bgt stop` asks the supervisor to end the task: written to the task's
/// `stop` file before the supervisor is sent SIGTERM.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StopRequest {
    pub signal: String,
    pub grace_ms: u64,
}

/// Signals the supervisor handles itself (SIGHUP only to ignore it).
const WATCHED: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Why the supervisor is ending the tree.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Stop,
    Timeout,
}

/// Entry point of `bgt __supervise <dir>`; returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    // Detach first: own session (no controlling terminal, no SIGHUP from
    // the caller's), and none of the caller's descriptors kept open.
    let _ = nix::unistd::setsid();
    crate::sys::close_inherited_fds();
    // Do not keep the caller's directory busy (an unmount would fail); the
    // child gets its own cwd from the record.
    let _ = std::env::set_current_dir("/");
    let (Ok(lock), Ok(report)) = (
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        return 1;
    };
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let mut report = Some(File::from(report));
    let _lock = lock; // held until this process exits: the task's liveness

    match supervise(dir, &mut report) {
        Ok(()) => 0,
        Err(err) => {
            // Before the child started: the task never existed. Remove it and
            // tell `bgt run`, which prints the error and exits 1.
            let _ = std::fs::remove_dir_all(dir);
            if let Some(mut report) = report {
                let _ = writeln!(report, "err {}", format!("{err:#}").replace('\n', " "));
            }
            1
        }
    }
}

fn supervise(dir: &Path, report: &mut Option<File>) -> Result<()> {
    let meta_path = dir.join(META);
    let mut meta = TaskMeta::load(&meta_path)?;

    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);

    let open_log = |path: &Path| {
        OpenOptions::new()
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("cannot open log {}", path.display()))
    };
    let program = meta.command.argv.first().context("empty command")?.clone();
    let mut command = Command::new(&program);
    command
        .args(&meta.command.argv[1..])
        .current_dir(&meta.cwd)
        .envs(&meta.env)
        .env("BGT_TASK_ID", &meta.id)
        .stdin(Stdio::null())
        .stdout(open_log(&meta.stdout_log)?)
        .stderr(open_log(&meta.stderr_log)?)
        .process_group(0);
    let child = command.spawn().map_err(|e| {
        anyhow::anyhow!("cannot start '{program}': {}", crate::error::io_message(&e))
    })?;
    drop(command); // closes our copies of the log descriptors

    // From here on signals arrive through a signalfd (Linux), so they are
    // blocked. Only now: a blocked mask would be inherited by the child. A
    // SIGCHLD lost before this point does not matter (we reap by polling
    // waitpid before every sleep). SIGHUP stays blocked: ignored.
    let mut mask = SigSet::empty();
    for sig in WATCHED {
        mask.add(sig);
    }
    mask.thread_block().context("cannot block signals")?;

    let pid = child.id();
    meta.state = State::Running;
    meta.started = Some(Utc::now());
    meta.supervisor_pid = Some(std::process::id());
    meta.pid = Some(pid);
    meta.pgid = Some(pid);
    meta.pid_start = process::start_ticks(pid);
    if let Err(err) = meta.store(&meta_path) {
        process::signal_tree(std::process::id(), Some(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid as i32), None);
        return Err(err);
    }
    if let Some(mut pipe) = report.take() {
        let _ = writeln!(pipe, "ok {pid}"); // and closing the pipe lets `bgt run` return
    }

    let ending = watch(dir, &mut meta, &meta_path, pid);
    meta.state = match (ending, &meta.exit) {
        (Some(Ending::Stop), _) => State::Stopped,
        (Some(Ending::Timeout), _) => State::TimedOut,
        (None, Some(Exit::Signal(_))) => State::Signaled,
        (None, _) => State::Exited,
    };
    meta.ended = Some(Utc::now());
    // Nobody is left to report to; a failed final write shows as `lost`.
    let _ = meta.store(&meta_path);
    Ok(())
}

/// Reaps until no child is left, ending the tree on timeout or request.
/// Returns why it was ended early, if it was.
fn watch(dir: &Path, meta: &mut TaskMeta, meta_path: &Path, pid: u32) -> Option<Ending> {
    let me = std::process::id();
    let pgid = meta.pgid;
    let timeout_at = meta
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    let mut wakeup = Wakeup::new();

    loop {
        let (main_exit, children_left) = reap(pid);
        if let Some(exit) = main_exit {
            meta.exit = Some(exit);
            if children_left {
                // Descendants outlive the main process: say so, keep reaping.
                let _ = meta.store(meta_path);
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
        if wakeup.terminate_requested || dir.join(STOP).exists() {
            let request = read_stop_request(dir);
            begin(Ending::Stop, request.0, request.1);
        }
        if timeout_at.is_some_and(|at| now >= at) {
            begin(Ending::Timeout, Signal::SIGTERM, DEFAULT_GRACE);
        }
        let mut next = timeout_at.filter(|_| ending.is_none());
        if let Some(at) = kill_at {
            if now >= at {
                // Past the grace period: SIGKILL, and again every half second
                // for anything that was forked in the meantime.
                process::signal_tree(me, pgid, Signal::SIGKILL);
                kill_at = Some(now + Duration::from_millis(500));
            }
            next = kill_at;
        }
        wakeup.wait(next.map(|at| at.saturating_duration_since(Instant::now())));
    }
}

/// Reaps every exited child without blocking. Returns the main process's
/// exit (if it was among them) and whether any child is left.
fn reap(main: u32) -> (Option<Exit>, bool) {
    let mut main_exit = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
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

/// The stop request's signal and grace, or SIGTERM and the default grace.
fn read_stop_request(dir: &Path) -> (Signal, Duration) {
    std::fs::read(dir.join(STOP))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<StopRequest>(&bytes).ok())
        .map(|r| {
            (
                process::parse_signal(&r.signal).unwrap_or(Signal::SIGTERM),
                Duration::from_millis(r.grace_ms),
            )
        })
        .unwrap_or((Signal::SIGTERM, DEFAULT_GRACE))
}

/// Sleeps until a signal arrives or the timeout passes.
struct Wakeup {
    #[cfg(target_os = "linux")]
    fd: Option<nix::sys::signalfd::SignalFd>,
    terminate_requested: bool,
}

impl Wakeup {
    fn new() -> Wakeup {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::signalfd::{SfdFlags, SignalFd};
            let mut mask = SigSet::empty();
            for sig in WATCHED {
                mask.add(sig);
            }
            let fd =
                SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
            Wakeup {
                fd,
                terminate_requested: false,
            }
        }
        #[cfg(not(target_os = "linux"))]
        Wakeup {
            terminate_requested: false,
        }
    }

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
        while let Ok(Some(info)) = fd.read_signal() {
            if matches!(
                Signal::try_from(info.ssi_signo as i32),
                Ok(Signal::SIGTERM | Signal::SIGINT)
            ) {
                self.terminate_requested = true;
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn wait(&mut self, timeout: Option<Duration>) {
        // Without signalfd: short naps; stop requests are seen via the stop file.
        let nap = Duration::from_millis(50);
        std::thread::sleep(timeout.map_or(nap, |t| t.min(nap)));
    }
}

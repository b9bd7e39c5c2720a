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
//! for its whole life, reserves its record files (see `meta.rs`), spawns
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

use crate::lifecycle::launch::launch;
use crate::lifecycle::queue::{Queue, Ticket};
use crate::procs;
use crate::task::dirfd::{Access, DirFd};
use crate::task::meta::{Exit, NEXT, State, TaskMeta};
use crate::task::store::{STDERR_LOG, STDOUT_LOG};
use anyhow::{Context, Result};
use chrono::Utc;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The hidden subcommand name; not part of the CLI surface.
pub const SUBCOMMAND: &str = "__supervise";

/// Grace period before SIGKILL when the supervisor ends a task on its own (timeout).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The start handshake, one line from the supervisor to `bgt run`:
/// `ok <child pid>` once the child runs and is recorded...
pub const REPORT_OK: &str = "ok";
/// ...or `err <message>` when it could not start (the task is removed)...
pub const REPORT_ERR: &str = "err";
/// ...or `queued` once a task that waits for its turn is recorded as such
/// (and, in a queue, holds its ticket: FIFO follows the order of `bgt run`s).
pub const REPORT_QUEUED: &str = "queued";

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
    pub fn send(&self, dir: &Path, supervisor: procs::Pid) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            let _ = dir;
            crate::sys::sigqueue(supervisor.nix(), Signal::SIGTERM, self.encode())
                .map_err(|e| anyhow::anyhow!("cannot signal the supervisor: {e}"))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let stop = self.encode().to_string();
            DirFd::open(dir)
                .and_then(|dir| dir.write_atomic(crate::task::store::STOP, stop.as_bytes(), false))
                .map_err(|e| anyhow::anyhow!("cannot write the stop request: {e}"))?;
            let _ = nix::sys::signal::kill(supervisor.nix(), Signal::SIGTERM);
            Ok(())
        }
    }
}

/// How `bgt pause` / `bgt resume` ask the supervisor to stop or continue
/// the tree: a sigqueue'd SIGUSR1 (which a supervisor of an older bgt
/// ignores, unlike SIGTERM) whose value carries a tag and the wish. Only
/// honoured from outside the task, so a task process cannot forge it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PauseRequest {
    Pause,
    Resume,
}

const PAUSE_TAG: u64 = 0xb680;

impl PauseRequest {
    pub fn encode(self) -> u64 {
        (PAUSE_TAG << 48) | matches!(self, PauseRequest::Pause) as u64
    }

    pub fn decode(value: u64) -> Option<PauseRequest> {
        match (value >> 48 == PAUSE_TAG, value & 0xff) {
            (true, 1) => Some(PauseRequest::Pause),
            (true, 0) => Some(PauseRequest::Resume),
            _ => None,
        }
    }

    /// Delivers the request to a live supervisor (Linux only: it rides in the signal).
    pub fn send(self, supervisor: procs::Pid) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            crate::sys::sigqueue(supervisor.nix(), Signal::SIGUSR1, self.encode())
                .map_err(|e| anyhow::anyhow!("cannot signal the supervisor: {e}"))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = supervisor;
            anyhow::bail!("pause and resume need Linux")
        }
    }
}

/// What the supervisor was asked since it last looked.
#[derive(Default)]
struct Requests {
    stop: Option<StopRequest>,
    pause: Option<PauseRequest>,
}

/// Why the supervisor is ending the tree.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Stop,
    Timeout,
}

/// At its end, the supervisor counts at most this many bytes of its logs
/// not yet in the line index (a few milliseconds); larger logs are left
/// for `status` to count when asked.
const COUNT_AT_END: u64 = 16 << 20;

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

/// Writes a record of the running task through a reserved next file while
/// more than `keep` are reserved (see `TaskMeta::store_next`), and reserves
/// it again for the records after.
fn record(dir: &DirFd, meta: &TaskMeta, keep: usize) -> Result<()> {
    meta.store_next(dir, keep)?;
    let _ = meta.reserve_next(dir, NEXT.len());
    Ok(())
}

/// Records who supervises the task (pid, start time, session).
fn record_supervisor(meta: &mut TaskMeta) {
    let me = procs::Pid::this();
    meta.supervisor_pid = Some(me);
    meta.supervisor_start = procs::start_ticks(me);
    meta.sid = nix::unistd::getsid(None).ok().map(procs::Pid::from_nix);
}

/// Writes a final record for a task that never started.
fn end_unstarted(dir: &DirFd, meta: &mut TaskMeta, state: State) {
    meta.state = state;
    meta.ended = Some(Utc::now());
    let _ = meta.store_final(dir);
}

/// How waiting for the task's turn ended.
enum Turn {
    /// Start now, holding this queue slot (if in a queue) until the end;
    /// leave the line once started.
    Go(Option<(File, Queue, Ticket)>),
    Skip(String),
    Stop,
}

/// Records the task as queued, lets `bgt run` return, and waits for its
/// turn in a helper thread (blocked on locks or inotify) while this thread
/// keeps answering `bgt stop`.
fn wait_turn(
    dir: &DirFd,
    meta: &mut TaskMeta,
    report: &mut Option<File>,
    signals: &mut Signals,
) -> Result<Turn> {
    let state_dir = dir
        .open_dir("..")
        .map_err(|e| anyhow::anyhow!("cannot open the state directory: {e}"))?;
    let queue = match &meta.queue {
        Some(name) => Some(
            Queue::open(&state_dir, name)
                .map_err(|e| anyhow::anyhow!("cannot use queue '{name}': {e}"))?,
        ),
        None => None,
    };
    // Nothing else to wait for: take the place in line before `bgt run`
    // returns, so tasks queued one after another start in that order.
    let ticket = match (&queue, meta.after.is_empty()) {
        (Some(q), true) => Some(
            q.take_ticket()
                .map_err(|e| anyhow::anyhow!("cannot queue in '{}': {e}", q.name))?,
        ),
        // The place in line is taken once the `--after` tasks end: make
        // sure then that it needs no free space.
        (Some(q), false) => {
            q.prepare()
                .map_err(|e| anyhow::anyhow!("cannot queue in '{}': {e}", q.name))?;
            None
        }
        (None, _) => None,
    };
    meta.state = State::Queued;
    record_supervisor(meta);
    meta.store_in(dir)?;
    if let Some(mut pipe) = report.take() {
        let _ = pipe.write_all(format!("{REPORT_QUEUED}\n").as_bytes());
    }

    let (wake_read, wake_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (after, ok) = (meta.after.clone(), meta.after_ok);
    let helper = std::thread::spawn(move || {
        let turn = (|| {
            if let Err(reason) = crate::lifecycle::queue::wait_after(&state_dir, &after, ok) {
                return Turn::Skip(reason);
            }
            let Some(queue) = queue else {
                return Turn::Go(None);
            };
            let waited = match ticket {
                Some(ticket) => Ok(ticket),
                None => queue.take_ticket(),
            }
            .and_then(|ticket| Ok((queue.wait(&ticket)?, ticket)));
            match waited {
                Ok((slot, ticket)) => Turn::Go(Some((slot, queue, ticket))),
                Err(e) => Turn::Skip(format!("cannot wait in queue '{}': {e}", queue.name)),
            }
        })();
        let _ = tx.send(turn);
        let _ = nix::unistd::write(&wake_write, b"x");
    });
    let me = procs::Pid::this();
    loop {
        if let Ok(turn) = rx.try_recv() {
            // Single-threaded again before the child is spawned (umask swap).
            let _ = helper.join();
            return Ok(turn);
        }
        if signals.drain(me, &HashSet::new()).stop.is_some() {
            return Ok(Turn::Stop);
        }
        signals.wait(None, Some(wake_read.as_fd()));
    }
}

fn supervise(dir: &DirFd, report: &mut Option<File>, meta: Option<TaskMeta>) -> Result<()> {
    let mut meta = match meta {
        Some(meta) => meta,
        None => TaskMeta::load_in(dir)?,
    };

    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Now, while nothing runs yet: no record written once the child runs
    // may need free space (the child may fill the disk at once, and a task
    // queued now may start on a disk filled while it waited).
    meta.reserve_spare(dir)?;
    meta.reserve_next(dir, 1)?;
    let mut signals = Signals::new(dir.path());
    // A queue slot, held until nothing of the task is left (kill -9 frees it too).
    let mut slot = None;
    let mut line = None;
    if meta.waits() {
        match wait_turn(dir, &mut meta, report, &mut signals)? {
            Turn::Go(Some((held, queue, ticket))) => {
                slot = Some(held);
                line = Some((queue, ticket));
            }
            Turn::Go(None) => {}
            Turn::Skip(reason) => {
                end_unstarted(dir, &mut meta, State::Skipped { reason });
                return Ok(());
            }
            Turn::Stop => {
                end_unstarted(dir, &mut meta, State::Stopped { exit: None });
                return Ok(());
            }
        }
    }

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
    let null = File::open("/dev/null").context("cannot open /dev/null")?;
    let (stdout, stderr) = (open_log(STDOUT_LOG)?, open_log(STDERR_LOG)?);
    // The child gets the caller's umask; ours stays 077 (single-threaded, so
    // swapping it around the spawn is safe).
    let ours = meta.umask.map(procs::set_umask);
    let spawned = launch(&meta, [null.as_fd(), stdout.as_fd(), stderr.as_fd()]);
    if let Some(ours) = ours {
        procs::set_umask(ours);
    }
    // Our copies of the log descriptors close here.
    drop((null, stdout, stderr));
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            let message = format!("cannot start '{program}': {}", crate::error::io_message(&e));
            if report.is_some() {
                return Err(anyhow::anyhow!(message));
            }
            // Queued: `bgt run` has returned long ago. Say it where the
            // task's errors go and end like a shell would (127).
            if let Ok(mut log) = dir.open_file(STDERR_LOG, Access::Append) {
                let _ = writeln!(log, "bgt: {message}");
            }
            end_unstarted(dir, &mut meta, State::ended(Exit::Code(127)));
            return Ok(());
        }
    };

    let me = procs::Pid::this();
    meta.state = State::Running { exit: None };
    meta.started = Some(Utc::now());
    record_supervisor(&mut meta);
    meta.pid = Some(pid);
    meta.pgid = Some(pid);
    meta.pid_start = procs::start_ticks(pid);
    if let Err(err) = meta.store_next(dir, 0) {
        procs::signal_tree(me, Some(pid), Signal::SIGKILL);
        let _ = waitpid(pid.nix(), None);
        return Err(err);
    }
    if let Some(mut pipe) = report.take() {
        // One write (`bgt run` reads a line); closing the pipe lets it return.
        let _ = pipe.write_all(format!("{REPORT_OK} {pid}\n").as_bytes());
    }
    // No next file is reserved again here: a pause reserves its own (most
    // tasks are never paused, and each file made and freed slows later
    // creations on some file systems).
    if let Some((queue, ticket)) = line.take() {
        queue.leave(ticket); // started: the next in line moves up
    }

    let (ending, exit) = watch(dir, &mut meta, pid, &mut signals);
    meta.state = match (ending, exit) {
        (Some(Ending::Stop), exit) => State::Stopped { exit },
        (Some(Ending::Timeout), exit) => State::TimedOut { exit },
        (None, Some(exit)) => State::ended(exit),
        // Reaping found no exit for the main process (cannot happen: it is
        // our child); say "lost" rather than invent a status.
        (None, None) => return Ok(()),
    };
    meta.ended = Some(Utc::now());
    // Every process of the task is gone: the next in the queue may start
    // now, not after the final record's fsync. Readers must see this task
    // ended first (a queue never shows more running tasks than slots), so
    // the record is renamed into place before the slot is let go, and made
    // durable after. Outside a queue, the one durable write below is all.
    if let Some(slot) = slot {
        let _ = meta.store_next(dir, 0);
        drop(slot);
    }
    // The logs are final now: their counts go into the durable record, so
    // `status` need not open this directory again (a log that dropped
    // output keeps being read through its record of what was dropped).
    meta.logs_at_end = crate::logs::marks::log_ends_within(dir, COUNT_AT_END).filter(|ends| {
        crate::logs::bounded::Record::load_if_over(dir, meta.max_log_size, ends)
            == Default::default()
    });
    // Nobody is left to report to; a failed final write shows as `lost`.
    crate::logs::bounded::release(dir);
    let _ = meta.store_final(dir);
    Ok(())
}

/// Reaps until no child is left, ending the tree on timeout or request,
/// pausing and continuing it when asked, and keeping the logs within
/// `max_log_size`. Returns why it was ended early, if it was, and how the
/// main process ended.
fn watch(
    dir: &DirFd,
    meta: &mut TaskMeta,
    pid: procs::Pid,
    signals: &mut Signals,
) -> (Option<Ending>, Option<Exit>) {
    let me = procs::Pid::this();
    let pgid = meta.pgid;
    let mut timeout_at = meta
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    let mut paused_at: Option<Instant> = None;
    let mut reaped = HashSet::new();
    let mut exit: Option<Exit> = None;
    let mut logs = meta
        .max_log_size
        .and_then(|max| crate::logs::bounded::Limiter::new(dir, max));
    // Log sizes are looked at this often (see `logs::bounded`).
    const LOG_CHECK_EVERY: Duration = Duration::from_secs(1);
    let mut log_check_at = Instant::now() + LOG_CHECK_EVERY;

    loop {
        // Signals first, reaping second: a task process that signalled us
        // and exited is then still visible (a zombie, or in `reaped`).
        let requests = signals.drain(me, &reaped);
        reaped.clear();
        let (main_exit, children_left) = reap(pid, &mut reaped);
        if let Some(main_exit) = main_exit {
            exit = Some(main_exit);
            meta.state = match &meta.state {
                State::Paused { paused_since, .. } => State::Paused {
                    paused_since: *paused_since,
                    exit: exit.clone(),
                },
                _ => State::Running { exit: exit.clone() },
            };
            if children_left {
                // Descendants outlive the main process: say so (not with
                // the resume's reserve: the final record tells the exit
                // anyway), keep reaping.
                let _ = record(dir, meta, usize::from(paused_at.is_some()));
            }
        }
        let now = Instant::now();
        if let Some(logs) = &mut logs
            && (!children_left || now >= log_check_at)
        {
            logs.enforce(dir);
            log_check_at = now + LOG_CHECK_EVERY;
        }
        if !children_left {
            if let Some(at) = paused_at {
                meta.paused_ms += at.elapsed().as_millis() as u64;
            }
            return (ending, exit);
        }

        match requests.pause {
            // A change the record cannot show is not made (`bgt pause`
            // then says the supervisor did not answer): stopped first and
            // continued again if the record fails, so a running task is
            // never recorded as paused; recorded first when resuming. A
            // pause is made only once both next files are reserved, so its
            // resume has one whatever fills the disk meanwhile.
            Some(PauseRequest::Pause)
                if paused_at.is_none()
                    && ending.is_none()
                    && meta.reserve_next(dir, NEXT.len()).is_ok() =>
            {
                procs::stop_tree(me, pgid);
                meta.state = State::Paused {
                    paused_since: Utc::now(),
                    exit: exit.clone(),
                };
                if record(dir, meta, 0).is_ok() {
                    paused_at = Some(now);
                } else {
                    meta.state = State::Running { exit: exit.clone() };
                    procs::signal_tree(me, pgid, Signal::SIGCONT);
                }
            }
            Some(PauseRequest::Resume) if paused_at.is_some() => {
                let paused_state =
                    std::mem::replace(&mut meta.state, State::Running { exit: exit.clone() });
                let paused = paused_at.map(|at| at.elapsed()).unwrap_or_default();
                meta.paused_ms += paused.as_millis() as u64;
                if record(dir, meta, 0).is_ok() {
                    procs::signal_tree(me, pgid, Signal::SIGCONT);
                    paused_at = None;
                    // Paused time does not count against --timeout.
                    timeout_at = timeout_at.map(|at| at + paused);
                } else {
                    meta.paused_ms -= paused.as_millis() as u64;
                    meta.state = paused_state;
                }
            }
            _ => {}
        }
        // A stop request wins over a timeout due at the same moment.
        let timed_out = paused_at.is_none() && timeout_at.is_some_and(|at| now >= at);
        let begin = match requests.stop {
            Some(request) => Some((Ending::Stop, request.signal, request.grace)),
            None => timed_out.then_some((Ending::Timeout, Signal::SIGTERM, DEFAULT_GRACE)),
        };
        if let Some((why, sig, grace)) = begin
            && ending.is_none()
        {
            ending = Some(why);
            procs::signal_tree(me, pgid, sig);
            if let Some(at) = paused_at.take() {
                // A stopped process acts on the signal once continued: the
                // pause ends here, and the record says so (through the
                // resume's reserve) while the grace period runs.
                procs::signal_tree(me, pgid, Signal::SIGCONT);
                meta.paused_ms += at.elapsed().as_millis() as u64;
                meta.state = State::Running { exit: exit.clone() };
                let _ = record(dir, meta, 0);
            }
            kill_at = Some(now + grace);
        }
        let mut next = timeout_at.filter(|_| ending.is_none() && paused_at.is_none());
        if let Some(at) = kill_at {
            if now >= at {
                // Past the grace period: SIGKILL, and again every half second
                // for anything forked in the meantime (or that we may not
                // kill: it keeps the task running, never falsely ended).
                procs::signal_tree(me, pgid, Signal::SIGKILL);
                kill_at = Some(now + Duration::from_millis(500));
            }
            next = kill_at;
        }
        if logs.is_some() {
            next = Some(next.map_or(log_check_at, |n| n.min(log_check_at)));
        }
        signals.wait(
            next.map(|at| at.saturating_duration_since(Instant::now())),
            None,
        );
    }
}

/// Reaps every exited child without blocking, noting their pids. Returns
/// the main process's exit (if it was among them) and whether any child is left.
fn reap(main: procs::Pid, reaped: &mut HashSet<procs::Pid>) -> (Option<Exit>, bool) {
    let mut main_exit = None;
    loop {
        let status = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG));
        if let Ok(status) = &status
            && let Some(p) = status.pid()
        {
            reaped.insert(procs::Pid::from_nix(p));
        }
        match status {
            Ok(WaitStatus::Exited(p, code)) if p == main.nix() => {
                main_exit = Some(Exit::Code(code))
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == main.nix() => {
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

    /// Reads every pending signal; returns the stop and pause requests
    /// among them. SIGCHLD only wakes us to reap; anything but TERM, INT and
    /// a queued USR1 is ignored; TERM or INT from a task process (`reaped`
    /// holds children reaped since the last drain) is ignored too, and so
    /// is a pause request from one.
    #[cfg(target_os = "linux")]
    fn drain(&mut self, me: procs::Pid, reaped: &HashSet<procs::Pid>) -> Requests {
        let mut requests = Requests::default();
        let Some(fd) = self.fd.as_ref() else {
            return requests;
        };
        while let Ok(Some(info)) = fd.read_signal() {
            let sender = procs::Pid::from(info.ssi_pid);
            let from_task = || {
                sender.raw() > 0 && (reaped.contains(&sender) || procs::is_task_process(sender, me))
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM | Signal::SIGINT) => {}
                Ok(Signal::SIGUSR1) if info.ssi_code == nix::libc::SI_QUEUE => {
                    if let Some(asked) = PauseRequest::decode(info.ssi_ptr)
                        && !from_task()
                    {
                        requests.pause = Some(asked);
                    }
                    continue;
                }
                _ => continue,
            }
            if info.ssi_code == nix::libc::SI_QUEUE
                && let Some(asked) = StopRequest::decode(info.ssi_ptr)
            {
                // From `bgt stop` (wherever it runs, even inside the task).
                requests.stop = Some(asked);
                continue;
            }
            if from_task() {
                continue;
            }
            requests.stop.get_or_insert(StopRequest {
                signal: Signal::SIGTERM,
                grace: DEFAULT_GRACE,
            });
        }
        requests
    }

    #[cfg(not(target_os = "linux"))]
    fn drain(&mut self, _me: procs::Pid, _reaped: &HashSet<procs::Pid>) -> Requests {
        let stop = std::fs::read_to_string(self.dir.join(crate::task::store::STOP))
            .ok()
            .and_then(|text| StopRequest::decode(text.trim().parse().ok()?));
        Requests { stop, pause: None }
    }

    /// Sleeps until a signal arrives, `extra` is readable or the timeout passes.
    #[cfg(target_os = "linux")]
    fn wait(&mut self, timeout: Option<Duration>, extra: Option<std::os::fd::BorrowedFd<'_>>) {
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
        let mut fds = vec![PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if let Some(extra) = extra {
            fds.push(PollFd::new(extra, PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, timeout);
    }

    #[cfg(not(target_os = "linux"))]
    fn wait(&mut self, timeout: Option<Duration>, _extra: Option<std::os::fd::BorrowedFd<'_>>) {
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

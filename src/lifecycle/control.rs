//! Starting and stopping tasks: the operations behind `run`, `stop`,
//! `restart`, `cleanup` and the MCP tools, shared so no behaviour exists twice.
//!
//! The promises kept here: `run` either prints the id of a recorded task or
//! leaves no process of it behind; `stop` needs no disk space (the request
//! rides in a signal) and records `stopped` only once no process of the
//! task remains, naming any survivor otherwise; `cleanup` removes a task only
//! when its lock is free and no process of it remains (see
//! `process::TaskMark` for how a lost task's processes are found).

use crate::error::{io_message, usage};
use crate::meta::{CommandSpec, State, TaskMeta};
use crate::process::{self, ProcInfo, ProcTable, TaskMark};
use crate::store::{Phase, Store, Task};
use crate::supervisor::{self, REPORT_ERR, REPORT_OK, REPORT_QUEUED, StopRequest};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything needed to start a task.
#[derive(Clone, Debug)]
pub struct StartSpec {
    pub command: CommandSpec,
    pub label: Option<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// Stop the active task holding `label` first, instead of refusing.
    pub replace: bool,
    /// Start once these tasks (ids) have ended...
    pub after: Vec<String>,
    /// ...and only if they all exited 0 (else the task ends `skipped`).
    pub after_ok: bool,
    /// Run in this queue, at most its slot limit at once, in order.
    pub queue: Option<String>,
    /// Set the queue's slot limit first.
    pub slots: Option<usize>,
    /// Per-stream log size kept on disk; `None` = unlimited.
    pub max_log_size: Option<u64>,
}

impl StartSpec {
    /// A spec with no ordering and the default log limit.
    pub fn new(command: CommandSpec, cwd: PathBuf) -> StartSpec {
        StartSpec {
            command,
            label: None,
            cwd,
            env: BTreeMap::new(),
            timeout: None,
            replace: false,
            after: Vec::new(),
            after_ok: false,
            queue: None,
            slots: None,
            max_log_size: Some(crate::logs::bounded::DEFAULT_MAX_LOG_SIZE),
        }
    }
}

/// A task that is running under its supervisor.
#[derive(Debug)]
pub struct Started {
    pub id: String,
    pub label: Option<String>,
    /// The command's pid; `None` while the task is queued.
    pub pid: Option<u32>,
    pub dir: PathBuf,
    /// The supervisor process. A short-lived CLI just drops it (the
    /// supervisor is re-parented); a long-lived caller should `wait()` on it
    /// in the background so it does not linger as a zombie.
    pub supervisor: Supervisor,
}

/// The supervisor as its starter holds it: forked (single-threaded caller)
/// or a fresh `bgt __supervise` (caller with threads).
#[derive(Debug)]
pub enum Supervisor {
    Forked(u32),
    Spawned(Child),
}

impl Supervisor {
    pub fn id(&self) -> u32 {
        match self {
            Supervisor::Forked(pid) => *pid,
            Supervisor::Spawned(child) => child.id(),
        }
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&mut self) {
        match self {
            Supervisor::Forked(pid) => loop {
                let pid = nix::unistd::Pid::from_raw(*pid as i32);
                match nix::sys::wait::waitpid(pid, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => break,
                }
            },
            Supervisor::Spawned(child) => {
                let _ = child.wait();
            }
        }
    }
}

impl Started {
    /// What `run` reports.
    pub fn report(&self) -> crate::report::RunReport {
        crate::report::RunReport {
            task_id: self.id.clone(),
            id: self.id.clone(),
            label: self.label.clone(),
            pid: self.pid,
            dir: self.dir.clone(),
            replaces: None,
        }
    }
}

/// Turns the words after `--` into a command: one word with shell syntax
/// runs through `sh -c`, anything else is exec'd as argv without a shell.
pub fn command_from_words(words: &[String]) -> Result<CommandSpec> {
    if words.is_empty() || words[0].is_empty() {
        return Err(usage("empty command: give the program to run after `--`"));
    }
    if words.iter().any(|w| w.contains('\0')) {
        return Err(usage("the command contains a NUL byte"));
    }
    if words.len() == 1 && has_shell_syntax(&words[0]) {
        return shell_command(&words[0]);
    }
    Ok(CommandSpec {
        argv: words.to_vec(),
        display: words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
        shell: false,
    })
}

/// A script for `sh -c` (the MCP `bg_run` tool always uses this).
pub fn shell_command(script: &str) -> Result<CommandSpec> {
    if script.trim().is_empty() {
        return Err(usage("empty command"));
    }
    if script.contains('\0') {
        return Err(usage("the command contains a NUL byte"));
    }
    Ok(CommandSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        display: script.into(),
        shell: true,
    })
}

fn has_shell_syntax(word: &str) -> bool {
    word.chars()
        .any(|c| " \t\n|&;<>()$`\\\"'*?[]#~={}!".contains(c))
}

/// Quotes a word for display so it can be pasted back into a shell.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Checks `--cwd` (or the current directory) before anything is created,
/// so the error names the directory, not the state directory it would
/// otherwise surface from.
pub fn resolve_cwd(cwd: Option<&Path>) -> Result<PathBuf> {
    let here = std::env::current_dir().context("cannot read the current directory")?;
    let Some(dir) = cwd else {
        return utf8_dir(here, "the current directory");
    };
    let full = here.join(dir);
    match std::fs::metadata(&full) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("cannot use --cwd '{}': Not a directory", dir.display()),
        Err(e) => bail!("cannot use --cwd '{}': {}", dir.display(), io_message(&e)),
    }
    // Executable bit on a directory = may enter it.
    if nix::unistd::access(&full, nix::unistd::AccessFlags::X_OK).is_err() {
        bail!("cannot use --cwd '{}': Permission denied", dir.display());
    }
    let what = format!("--cwd '{}'", dir.display());
    utf8_dir(std::fs::canonicalize(&full).unwrap_or(full), &what)
}

/// The task record (JSON) stores the working directory as text, so a path
/// that is not UTF-8 cannot be recorded faithfully; refuse it up front.
fn utf8_dir(dir: PathBuf, what: &str) -> Result<PathBuf> {
    if dir.to_str().is_none() {
        bail!(
            "cannot run in {what} ({}): its path is not valid UTF-8; use --cwd with a UTF-8 path",
            dir.display()
        );
    }
    Ok(dir)
}

/// Starts a task. A label names at most one active task: the label's lock
/// is held from the check until the new task exists (as `starting`, so the
/// next check sees it), which makes concurrent `run --label`/`--replace`
/// calls leave exactly one task running.
pub fn start(store: &Store, spec: StartSpec) -> Result<Started> {
    if let (Some(name), Some(slots)) = (&spec.queue, spec.slots) {
        set_slots(store, name, slots)?;
    }
    let _label_lock = match &spec.label {
        Some(label) => {
            let lock = store.lock_label(label)?;
            if let Some(holder) = store.active_with_label(label)? {
                if !spec.replace {
                    return Err(crate::error::fail(
                        crate::error::ErrorKind::LabelInUse,
                        format!(
                            "label '{label}' is in use by {} task {}; stop it first or use --replace",
                            holder.phase().name(),
                            holder.id
                        ),
                    ));
                }
                stop_label(store, label)?;
            }
            Some(lock)
        }
        None => None,
    };
    let label = spec.label.clone();
    let started = spawn_supervised(store, spec).map_err(|e| match crate::error::kind_of(&e) {
        crate::error::ErrorKind::Runtime => crate::error::fail(
            crate::error::ErrorKind::StartFailed,
            crate::error::one_line(&e),
        ),
        _ => e,
    })?;
    if let Some(label) = label {
        // Still under the label's lock: the index names the newest holder.
        store.index_label(&label, &started.id)?;
    }
    Ok(started)
}

/// Creates the task and starts its supervisor; returns once the child runs,
/// or fails with the reason it could not start (no task is left behind).
fn spawn_supervised(store: &Store, spec: StartSpec) -> Result<Started> {
    let mut meta = TaskMeta {
        schema: crate::meta::SCHEMA,
        id: String::new(),
        label: spec.label.clone(),
        command: spec.command,
        cwd: spec.cwd,
        env: spec.env,
        timeout_ms: spec.timeout.map(|d| d.as_millis() as u64),
        created: Utc::now(),
        started: None,
        ended: None,
        supervisor_pid: None,
        supervisor_start: None,
        sid: None,
        pid: None,
        pgid: None,
        pid_start: None,
        umask: Some(process::caller_umask()),
        state: State::Starting,
        stdout_log: PathBuf::new(),
        stderr_log: PathBuf::new(),
        after: spec.after,
        after_ok: spec.after_ok,
        queue: spec.queue,
        paused_ms: 0,
        max_log_size: spec.max_log_size.filter(|n| *n > 0),
    };
    let (task, lock) = store.create(&mut meta)?;
    // The held lock becomes the supervisor's stdin: the same open file
    // description, so the lock is never released between us and it.
    // The task directory, opened through the checked state directory: the
    // supervisor works in it by descriptor (handed over as its fd 2).
    let task_dir = match task.open_dir() {
        Ok(dir) => dir,
        Err(e) => {
            let _ = task.remove();
            return Err(e);
        }
    };
    let (mut supervisor, pipe) = match start_supervisor(&task, meta, lock, task_dir) {
        Ok(started) => started,
        Err(e) => {
            let _ = task.remove();
            bail!("cannot start the supervisor: {}", io_message(&e));
        }
    };
    let mut line = String::new();
    let _ = BufReader::new(pipe).read_line(&mut line);
    let (word, rest) = line
        .trim_end()
        .split_once(' ')
        .unwrap_or((line.trim_end(), ""));
    let pid = match word {
        REPORT_OK => rest.parse().ok().map(Some),
        REPORT_QUEUED => Some(None),
        _ => None,
    };
    if let Some(pid) = pid {
        return Ok(Started {
            id: task.id,
            label: spec.label,
            pid,
            dir: task.dir,
            supervisor,
        });
    }
    if word == REPORT_ERR {
        supervisor.wait();
        let _ = task.remove();
        bail!("{rest}");
    }
    // The supervisor died without a word (kill -9, OOM). It may have
    // started the child already: end every process of the task before
    // saying it did not start. Its pid is ours until we reap it, so its
    // session id and the fresh task id identify them without a start time.
    let mark = TaskMark {
        id: task.id.clone(),
        sid: Some(supervisor.id()),
        since: None,
    };
    let survivors = kill_all(&mark, true, Instant::now() + Duration::from_secs(5));
    supervisor.wait();
    if survivors.is_empty() {
        let _ = task.remove();
        bail!("the supervisor died before starting the task");
    }
    bail!(
        "the supervisor of task {} died while starting it and {}; the task is kept (lost)",
        task.id,
        describe_survivors(&survivors)
    )
}

/// Starts the supervisor with the task's lock, the write end of the report
/// pipe and the task directory as its fds 0, 1 and 2; returns it with the
/// read end. A single-threaded caller forks it: no exec of the bgt binary,
/// no dynamic loading, no second read of the record. A caller with threads
/// (the MCP server) re-execs the binary, as does a `bgt run` inside a task
/// (its environment names that task, and a fork would show that marker in
/// `/proc/<supervisor>/environ`, making the supervisor look like a process of
/// the outer task; an exec'd one carries its own task's marker instead).
fn start_supervisor(
    task: &Task,
    meta: TaskMeta,
    lock: std::fs::File,
    dir: crate::dirfd::DirFd,
) -> std::io::Result<(Supervisor, std::fs::File)> {
    use std::os::fd::{AsFd, OwnedFd};
    let dir = OwnedFd::from(dir);
    if std::env::var_os(process::TASK_ID_VAR).is_none() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let path = task.dir.clone();
        let fds = [lock.as_fd(), write.as_fd(), dir.as_fd()];
        // A child it forks carries no marker until its exec; if the
        // supervisor dies then, `spawn_supervised` finds that child by the
        // supervisor's session (set before any child exists).
        if let Some(pid) = crate::sys::fork_with_fds(fds, || supervisor::main(&path, Some(meta)))? {
            // Our copies of the three close here: the lock stays held by the
            // supervisor, and its death now ends the pipe.
            return Ok((Supervisor::Forked(pid), std::fs::File::from(read)));
        }
    }
    let exe = std::env::current_exe()?;
    // The supervisor carries the task's marker too, so a child it forked
    // but has not exec'd yet is marked (used by `spawn_supervised` when the
    // supervisor dies).
    let mut child = Command::new(exe)
        .arg(supervisor::SUBCOMMAND)
        .arg(&task.dir)
        .env(process::TASK_ID_VAR, &task.id)
        .stdin(Stdio::from(lock))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(dir))
        .spawn()?;
    let pipe = child.stdout.take().expect("stdout is piped");
    Ok((Supervisor::Spawned(child), OwnedFd::from(pipe).into()))
}

/// What `stop` did.
#[derive(Clone, Debug, PartialEq)]
pub enum StopOutcome {
    /// The task was running and is now dead.
    Stopped,
    /// The task had already ended; nothing was signalled.
    AlreadyEnded(Phase),
    /// The supervisor was gone, but its child provably lived on and was killed.
    KilledOrphan,
    /// The supervisor was gone and its processes cannot be identified safely.
    LostUnverifiable,
}

/// Stops a task's whole tree: `sig` first, SIGKILL after `grace`. Returns
/// when no process of the task is left; fails naming the survivors when one
/// cannot be killed (the task then stays running, or lost). Idempotent.
pub fn stop(task: &Task, sig: Signal, grace: Duration) -> Result<StopOutcome> {
    let mut phase = task.phase();
    if phase == Phase::Starting {
        // `bgt run` is still handing over; give the supervisor a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while phase == Phase::Starting && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            phase = task.reload().phase();
        }
    }
    match phase {
        Phase::Running { .. } | Phase::Queued | Phase::Paused => {}
        Phase::Lost => return stop_lost(task, sig, grace),
        Phase::Starting => bail!("task {} is still starting; try again", task.id),
        Phase::Broken(reason) if task.is_locked() => {
            bail!("task {} cannot be stopped safely: {reason}", task.id)
        }
        other => return Ok(StopOutcome::AlreadyEnded(other)),
    }
    let meta = task
        .reload()
        .meta
        .map_err(|e| anyhow::anyhow!("task {} is broken: {e}", task.id))?;
    let supervisor_pid = meta
        .supervisor_pid
        .context("running task has no supervisor pid")?;
    // The lock is held, so the supervisor lives and its pid is not reused.
    if task.is_locked() {
        let request = StopRequest { signal: sig, grace };
        // A failure is fine if the supervisor has just exited by itself.
        if let Err(err) = request.send(&task.dir, supervisor_pid)
            && task.is_locked()
        {
            return Err(err);
        }
    }
    // The supervisor sends SIGKILL once the grace period ends; give it a
    // second beyond that to reap everything and write the record.
    if wait_unlocked(task, Some(Instant::now() + grace + Duration::from_secs(1))) {
        return Ok(StopOutcome::Stopped);
    }
    // Still running: a process survives SIGKILL (not ours to kill), or the
    // supervisor does not react (stopped with SIGSTOP?). Kill the tree
    // ourselves; give up if only processes we may not kill are left.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let tree = process::descendants(supervisor_pid);
        let denied = process::signal_each(&tree, Signal::SIGKILL);
        if !denied.is_empty() && denied.len() == tree.len() {
            bail!(
                "task {} is still running: {}",
                task.id,
                describe_denied(&denied)
            );
        }
        let next = (Instant::now() + Duration::from_millis(250)).min(deadline);
        if wait_unlocked(task, Some(next)) {
            return Ok(StopOutcome::Stopped);
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    // Nothing of the tree is left, yet the supervisor holds on: end it and
    // write the record for it, once no process of the task remains.
    if task.is_locked() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor_pid as i32),
            Signal::SIGKILL,
        );
    }
    if !wait_unlocked(task, Some(Instant::now() + Duration::from_secs(5))) {
        bail!("task {} did not stop", task.id)
    }
    let survivors = kill_all(
        &TaskMark::of(&meta),
        false,
        Instant::now() + Duration::from_secs(2),
    );
    if !survivors.is_empty() {
        bail!(
            "task {} is lost and {}",
            task.id,
            describe_survivors(&survivors)
        );
    }
    if !task.reload().meta.is_ok_and(|m| m.state.is_final()) {
        record_stopped(task, &meta, Signal::SIGKILL)?;
    }
    Ok(StopOutcome::Stopped)
}

/// Writes the final record of a task whose supervisor cannot (it is gone).
/// Only call with the lock free (nobody else writes the record then) and no
/// process of the task left.
fn record_stopped(task: &Task, meta: &TaskMeta, killed_by: Signal) -> Result<()> {
    let mut updated = meta.clone();
    let exit = meta
        .state
        .exit()
        .cloned()
        .unwrap_or_else(|| crate::meta::Exit::Signal(killed_by.as_str().to_string()));
    updated.state = State::Stopped { exit: Some(exit) };
    updated.ended = Some(Utc::now());
    updated.store_final(&task.open_dir()?)
}

/// A lost task's processes may still run: find them by session and marker
/// with their start times as proof (`TaskMark`), `sig` them, SIGKILL what
/// is left after `grace`, and record `stopped` only once none remains.
fn stop_lost(task: &Task, sig: Signal, grace: Duration) -> Result<StopOutcome> {
    let meta = task.meta()?;
    let mark = TaskMark::of(meta);
    if mark.since.is_none() {
        return Ok(StopOutcome::LostUnverifiable);
    }
    let procs = ProcTable::read().of_task(&mark, false);
    if procs.is_empty() {
        return Ok(StopOutcome::AlreadyEnded(Phase::Lost));
    }
    process::signal_each(&procs, sig);
    let deadline = Instant::now() + grace;
    let mut left = procs;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = ProcTable::read().of_task(&mark, false);
    }
    let mut killed_by = sig;
    if !left.is_empty() {
        killed_by = Signal::SIGKILL;
        let survivors = kill_all(&mark, false, Instant::now() + Duration::from_secs(2));
        if !survivors.is_empty() {
            bail!(
                "task {} is lost and {}",
                task.id,
                describe_survivors(&survivors)
            );
        }
    }
    // Record the end, so the task no longer shows as lost.
    record_stopped(task, meta, killed_by)?;
    Ok(StopOutcome::KilledOrphan)
}

/// SIGKILLs the task's processes until none is left or the deadline
/// passes; returns the survivors with the error of the last attempt
/// (`None`: the signal was delivered, yet the process lives on).
fn kill_all(
    mark: &TaskMark,
    unproven: bool,
    deadline: Instant,
) -> Vec<(ProcInfo, Option<nix::errno::Errno>)> {
    loop {
        let left = ProcTable::read().of_task(mark, unproven);
        if left.is_empty() {
            return Vec::new();
        }
        let denied = process::signal_each(&left, Signal::SIGKILL);
        if Instant::now() >= deadline {
            return left
                .into_iter()
                .map(|p| {
                    let err = denied.iter().find(|(pid, _)| *pid == p.pid).map(|d| d.1);
                    (p, err)
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pid 1234 (sleep) survives: Operation not permitted; ...`
fn describe_survivors(survivors: &[(ProcInfo, Option<nix::errno::Errno>)]) -> String {
    survivors
        .iter()
        .map(|(p, err)| {
            let why = err.map_or("still running after SIGKILL", |e| e.desc());
            format!("pid {} ({}) survives: {why}", p.pid, process::name(p.pid))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_denied(denied: &[(i32, nix::errno::Errno)]) -> String {
    denied
        .iter()
        .map(|(pid, e)| format!("pid {pid} ({}) survives: {}", process::name(*pid), e.desc()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Blocks until the task's lock is free (its supervisor has exited) or the
/// deadline passes. Without a deadline it is a blocking flock: it wakes the
/// moment the supervisor exits and costs no CPU while waiting.
pub fn wait_unlocked(task: &Task, deadline: Option<Instant>) -> bool {
    let Some(file) = task.open_lock() else {
        return true; // no lock file: the task is gone
    };
    let Some(deadline) = deadline else {
        return file.lock_shared().is_ok();
    };
    // With a deadline: poll with back-off (no thread left blocked behind a
    // timed-out wait in a long-lived MCP server).
    let mut backoff = Backoff::new(Duration::from_millis(1));
    loop {
        if !matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        ) {
            return true;
        }
        if !backoff.sleep_until(deadline) {
            return false;
        }
    }
}

/// Polling intervals that start short (a quick answer stays quick) and
/// grow: to 250 ms, and to 1 s once the wait has lasted 5 s, so a long wait
/// costs a few milliseconds of CPU per minute.
pub struct Backoff {
    nap: Duration,
    started: Instant,
}

impl Backoff {
    pub fn new(first: Duration) -> Backoff {
        Backoff {
            nap: first,
            started: Instant::now(),
        }
    }

    /// The next interval.
    pub fn next_nap(&mut self) -> Duration {
        let cap = if self.started.elapsed() < Duration::from_secs(5) {
            250
        } else {
            1000
        };
        let nap = self.nap;
        self.nap = (self.nap * 2).min(Duration::from_millis(cap));
        nap
    }

    /// Starts over from `first` (something happened).
    pub fn reset(&mut self, first: Duration) {
        self.nap = first;
    }

    /// Sleeps the next interval, but not past `deadline`; false once it has passed.
    pub fn sleep_until(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(self.next_nap().min(deadline - now));
        true
    }
}

/// Sets the slot limit of queue `name` (creating the queue).
pub fn set_slots(store: &Store, name: &str, slots: usize) -> Result<()> {
    if !(1..=crate::queue::MAX_SLOTS).contains(&slots) {
        return Err(usage(format!(
            "invalid --slots {slots}: use 1 to {}",
            crate::queue::MAX_SLOTS
        )));
    }
    crate::queue::Queue::open(store.dir(), name)
        .and_then(|q| q.set_slots(slots))
        .map_err(|e| anyhow::anyhow!("cannot set the slots of queue '{name}': {}", io_message(&e)))
}

/// Resolves `--after` names to task ids (each must exist now).
pub fn resolve_after(store: &Store, names: &[String]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for name in names {
        let id = store.resolve(name)?.id;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Pauses (SIGSTOP) or resumes (SIGCONT) every process of a running task,
/// through its supervisor, which records `paused` and keeps paused time out
/// of `--timeout`. Returns once the record shows the new state.
pub fn pause(task: &Task, pause: bool) -> Result<()> {
    use crate::supervisor::PauseRequest;
    let phase = task.phase();
    let matches_wanted = |p: &Phase| {
        matches!(
            (p, pause),
            (Phase::Paused, true) | (Phase::Running { .. }, false)
        )
    };
    if matches_wanted(&phase) {
        return Ok(());
    }
    match phase {
        Phase::Running { .. } | Phase::Paused => {}
        Phase::Queued => bail!(
            "task {} is queued, not running; `bgt pause --queue NAME` holds a queue's next starts",
            task.id
        ),
        other => bail!("task {} is not running ({})", task.id, other.name()),
    }
    let meta = task.meta()?;
    let supervisor = meta
        .supervisor_pid
        .context("running task has no supervisor pid")?;
    // The lock is held: the supervisor lives and the pid is its own.
    if !task.is_locked() {
        bail!("task {} has ended", task.id);
    }
    let request = if pause {
        PauseRequest::Pause
    } else {
        PauseRequest::Resume
    };
    request.send(supervisor)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut backoff = Backoff::new(Duration::from_millis(1));
    loop {
        let now = task.reload().phase();
        if matches_wanted(&now) {
            return Ok(());
        }
        if !now.is_active() {
            bail!("task {} ended ({})", task.id, now.name());
        }
        if !backoff.sleep_until(deadline) {
            bail!("task {}'s supervisor did not answer", task.id);
        }
    }
}

/// Stops every active task with `label` (for `run --replace`).
fn stop_label(store: &Store, label: &str) -> Result<usize> {
    let running: Vec<Task> = store
        .list()?
        .into_iter()
        .filter(|t| {
            t.meta
                .as_ref()
                .is_ok_and(|m| m.label.as_deref() == Some(label))
        })
        .filter(|t| t.phase().is_active())
        .collect();
    for task in &running {
        stop(task, Signal::SIGTERM, supervisor::DEFAULT_GRACE)?;
    }
    Ok(running.len())
}

/// Removes half-built task directories left by a `bgt run` that died mid-way.
pub fn remove_stale_temp_dirs(store: &Store) {
    let Ok(entries) = store.dir().entries() else {
        return;
    };
    for name in entries {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(crate::store::NEW_PREFIX) {
            continue;
        }
        let stale = store.dir().stat_at(name).is_ok_and(|m| {
            let age = chrono::Utc::now().timestamp() - m.st_mtime;
            age > 60
        });
        if stale {
            let _ = store.dir().remove_tree(name);
        }
    }
}

/// What `cleanup` did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Removed tasks, as they were just before removal.
    pub removed: Vec<crate::info::TaskInfo>,
    /// Tasks left alone because their supervisor or a process of theirs still runs.
    pub kept_running: Vec<crate::info::TaskInfo>,
    /// Tasks stopped first (`--all`), as they were before.
    pub stopped: Vec<crate::info::TaskInfo>,
    /// Nothing was changed: the lists say what would have happened.
    pub dry_run: bool,
}

/// Removes finished (and broken) tasks that ended longer ago than
/// `older_than`. A task is removable only when its lock is free (checked
/// for every task, broken ones included) and no process of it remains;
/// `stop_running` stops such tasks first (lost ones included).
pub fn cleanup(store: &Store, older_than: Option<Duration>, stop_running: bool) -> Result<Cleanup> {
    remove_stale_temp_dirs(store);
    cleanup_tasks(store.list()?, older_than, stop_running, false)
}

/// What [`cleanup`] would do, changing nothing.
pub fn cleanup_dry_run(
    store: &Store,
    older_than: Option<Duration>,
    stop_running: bool,
) -> Result<Cleanup> {
    cleanup_tasks(store.list()?, older_than, stop_running, true)
}

/// [`cleanup`] of the given tasks only (`bg_stop action=cleanup task_id=...`).
pub fn cleanup_tasks(
    tasks: Vec<Task>,
    older_than: Option<Duration>,
    stop_running: bool,
    dry_run: bool,
) -> Result<Cleanup> {
    let cutoff = older_than.map(crate::duration::cutoff);
    let mut report = Cleanup {
        dry_run,
        ..Cleanup::default()
    };
    let mut table = ProcTable::read();
    for task in tasks {
        let phase = task.phase();
        if stop_running
            && (phase.is_active() || (phase == Phase::Lost && has_processes(&table, &task)))
        {
            report.stopped.push(crate::info::TaskInfo::of(&task));
            if dry_run {
                // Stopped now, it would have ended now: removed only without a cutoff.
                if cutoff.is_none() {
                    report.removed.push(crate::info::TaskInfo::of(&task));
                }
                continue;
            }
            stop(&task, Signal::SIGTERM, supervisor::DEFAULT_GRACE)?;
            table = ProcTable::read();
        }
        let task = task.reload();
        let info = crate::info::TaskInfo::of(&task);
        if task.is_locked() || has_processes(&table, &task) {
            report.kept_running.push(info);
            continue;
        }
        if let (Some(cutoff), Some(ended)) = (cutoff, info.ended.or(info.created))
            && ended > cutoff
        {
            continue;
        }
        if !dry_run {
            task.remove()?;
        }
        report.removed.push(info);
    }
    Ok(report)
}

/// Whether some process of the task still runs. Only keeps tasks, never
/// signals, so an unreadable record is searched by its id alone.
fn has_processes(table: &ProcTable, task: &Task) -> bool {
    let mark = match &task.meta {
        Ok(meta) => TaskMark::of(meta),
        Err(_) => TaskMark {
            id: task.id.clone(),
            sid: None,
            since: None,
        },
    };
    !table.of_task(&mark, true).is_empty()
}

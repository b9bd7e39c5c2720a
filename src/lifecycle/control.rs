//! Starting and stopping tasks: the operations behind `run`, `stop`,
//! `restart` and the MCP tools, shared so no behaviour exists twice.

use crate::error::{io_message, usage};
use crate::meta::{CommandSpec, State, TaskMeta};
use crate::process;
use crate::store::{Phase, STOP, Store, Task};
use crate::supervisor::{self, StopRequest};
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
}

/// A task that is running under its supervisor.
#[derive(Debug)]
pub struct Started {
    pub id: String,
    pub label: Option<String>,
    pub pid: u32,
    pub dir: PathBuf,
    /// The supervisor process. A short-lived CLI just drops it (the
    /// supervisor is re-parented); a long-lived caller should `wait()` on it
    /// in the background so it does not linger as a zombie.
    pub supervisor: Child,
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
        pid: None,
        pgid: None,
        pid_start: None,
        state: State::Starting,
        exit: None,
        stdout_log: PathBuf::new(),
        stderr_log: PathBuf::new(),
    };
    let (task, lock) = store.create(&mut meta)?;
    let exe = std::env::current_exe().context("cannot find the bgt executable")?;
    // The held lock becomes the supervisor's stdin: the same open file
    // description, so the lock is never released between us and it.
    let spawned = Command::new(exe)
        .arg(supervisor::SUBCOMMAND)
        .arg(&task.dir)
        .stdin(Stdio::from(lock))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = task.remove();
            bail!("cannot start the supervisor: {}", io_message(&e));
        }
    };
    let mut line = String::new();
    let pipe = child.stdout.take().expect("stdout is piped");
    let _ = BufReader::new(pipe).read_line(&mut line);
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("ok ").and_then(|p| p.parse().ok()) {
        return Ok(Started {
            id: task.id,
            label: spec.label,
            pid,
            dir: task.dir,
            supervisor: child,
        });
    }
    let _ = child.wait();
    let _ = task.remove();
    match line.strip_prefix("err ") {
        Some(message) => bail!("{message}"),
        None => bail!("the supervisor died before starting the task"),
    }
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
/// when the task is dead. Idempotent.
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
        Phase::Running { .. } => {}
        Phase::Lost => return stop_orphan(task, sig, grace),
        Phase::Starting => bail!("task {} is still starting; try again", task.id),
        other => return Ok(StopOutcome::AlreadyEnded(other)),
    }
    let meta = task
        .reload()
        .meta
        .map_err(|e| anyhow::anyhow!("task {} is broken: {e}", task.id))?;
    let supervisor_pid = meta
        .supervisor_pid
        .context("running task has no supervisor pid")?;
    let request = StopRequest {
        signal: sig.as_str().to_string(),
        grace_ms: grace.as_millis() as u64,
    };
    task.open_dir()?
        .write_atomic(STOP, &serde_json::to_vec(&request)?, false)
        .map_err(|e| anyhow::anyhow!("cannot write the stop request: {}", io_message(&e)))?;
    // The lock is held, so the supervisor lives and its pid is not reused.
    if task.is_locked() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor_pid as i32),
            Signal::SIGTERM,
        );
    }
    if wait_unlocked(task, Some(Instant::now() + grace + Duration::from_secs(5))) {
        return Ok(StopOutcome::Stopped);
    }
    // The supervisor does not react (stopped with SIGSTOP?): kill the tree ourselves.
    if task.is_locked() {
        process::signal_tree(supervisor_pid, meta.pgid, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor_pid as i32),
            Signal::SIGKILL,
        );
    }
    if wait_unlocked(task, Some(Instant::now() + Duration::from_secs(5))) {
        // The supervisor died before writing its record: write it for it.
        if !task.reload().meta.is_ok_and(|m| m.state.is_final()) {
            record_stopped(task, &meta, Signal::SIGKILL)?;
        }
        return Ok(StopOutcome::Stopped);
    }
    bail!("task {} did not stop", task.id)
}

/// Writes the final record of a task whose supervisor cannot (it is gone).
/// Only call with the lock free: nobody else writes the record then.
fn record_stopped(task: &Task, meta: &TaskMeta, killed_by: Signal) -> Result<()> {
    let mut updated = meta.clone();
    updated.state = State::Stopped;
    updated.ended = Some(Utc::now());
    if updated.exit.is_none() {
        updated.exit = Some(crate::meta::Exit::Signal(killed_by.as_str().to_string()));
    }
    updated.store_in(&task.open_dir()?)
}

/// A lost task's child may still run. Signal it only when the kernel's start
/// time proves the pid is the very process we started.
fn stop_orphan(task: &Task, sig: Signal, grace: Duration) -> Result<StopOutcome> {
    let meta = task.meta()?;
    let (Some(pid), Some(pgid)) = (meta.pid, meta.pgid) else {
        return Ok(StopOutcome::LostUnverifiable);
    };
    if !process::is_same_process(pid, meta.pid_start) {
        return Ok(StopOutcome::LostUnverifiable);
    }
    let group = nix::unistd::Pid::from_raw(pgid as i32);
    let _ = nix::sys::signal::killpg(group, sig);
    let deadline = Instant::now() + grace;
    while process::is_same_process(pid, meta.pid_start) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed_by = sig;
    if process::is_same_process(pid, meta.pid_start) {
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        killed_by = Signal::SIGKILL;
    }
    // Record the end, so the task no longer shows as lost.
    record_stopped(task, meta, killed_by)?;
    Ok(StopOutcome::KilledOrphan)
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

/// True when a lost task's main process provably still runs.
pub fn orphan_alive(task: &Task) -> bool {
    task.meta.as_ref().is_ok_and(|m| {
        m.pid
            .is_some_and(|pid| process::is_same_process(pid, m.pid_start))
    })
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
    /// Tasks left alone because they still run.
    pub kept_running: Vec<crate::info::TaskInfo>,
}

/// Removes finished (and broken) tasks that ended longer ago than
/// `older_than`; never a running one, unless `stop_running` stops it first.
pub fn cleanup(store: &Store, older_than: Option<Duration>, stop_running: bool) -> Result<Cleanup> {
    remove_stale_temp_dirs(store);
    let cutoff = older_than.map(crate::duration::cutoff);
    let mut report = Cleanup::default();
    for task in store.list()? {
        if stop_running && task.phase().is_active() {
            stop(&task, Signal::SIGTERM, supervisor::DEFAULT_GRACE)?;
        }
        let task = task.reload();
        let phase = task.phase();
        let info = crate::info::TaskInfo::of(&task);
        if phase.is_active() || (phase == Phase::Lost && orphan_alive(&task)) {
            report.kept_running.push(info);
            continue;
        }
        if let (Some(cutoff), Some(ended)) = (cutoff, info.ended.or(info.created))
            && ended > cutoff
        {
            continue;
        }
        task.remove()?;
        report.removed.push(info);
    }
    Ok(report)
}

//! Starting a task: the label claim, the task directory, the supervisor
//! (forked from a single-threaded caller, re-exec'd otherwise) and the start
//! handshake. `run` either prints the id of a recorded task or leaves no
//! process of it behind.

use crate::error::{io_message, usage};
use crate::lifecycle::supervisor::{self, REPORT_ERR, REPORT_OK, REPORT_QUEUED};
use crate::procs::{self, TaskMark};
use crate::task::meta::{CommandSpec, State, TaskMeta};
use crate::task::store::{Store, Task};
use anyhow::{Result, bail};
use chrono::Utc;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
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
    Forked(procs::Pid),
    Spawned(Child),
}

impl Supervisor {
    pub fn id(&self) -> procs::Pid {
        match self {
            Supervisor::Forked(pid) => *pid,
            Supervisor::Spawned(child) => procs::Pid::of(child),
        }
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&mut self) {
        match self {
            Supervisor::Forked(pid) => {
                while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(pid.nix(), None) {
                }
            }
            Supervisor::Spawned(child) => {
                let _ = child.wait();
            }
        }
    }
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
    spawn_supervised(store, spec).map_err(|e| match crate::error::kind_of(&e) {
        crate::error::ErrorKind::Runtime => crate::error::fail(
            crate::error::ErrorKind::StartFailed,
            crate::error::one_line(&e),
        ),
        _ => e,
    })
}

/// Fails when the state directory's disk has no room for a new task: said
/// before a task is stopped to be replaced (`--replace`, `restart`), which
/// would otherwise leave neither the old task nor a new one running. A
/// task takes about a dozen blocks and inodes; a disk filled between this
/// look and the start still fails the start, as on any full disk.
pub fn ensure_room(store: &Store) -> Result<()> {
    const ROOM: u64 = 16;
    let Some(free) = store.dir().free_space() else {
        return Ok(());
    };
    if free.blocks < ROOM || free.inodes < ROOM {
        return Err(crate::error::fail(
            crate::error::ErrorKind::StartFailed,
            format!(
                "no room for a new task on the disk of {} ({} KiB, {} inodes free): nothing was stopped",
                store.root().display(),
                free.bytes / 1024,
                free.inodes
            ),
        ));
    }
    Ok(())
}

/// Creates the task and starts its supervisor; returns once the child runs,
/// or fails with the reason it could not start (no task is left behind).
fn spawn_supervised(store: &Store, spec: StartSpec) -> Result<Started> {
    let mut meta = TaskMeta {
        schema: crate::task::meta::SCHEMA,
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
        umask: Some(procs::caller_umask()),
        state: State::Starting,
        stdout_log: PathBuf::new(),
        stderr_log: PathBuf::new(),
        after: spec.after,
        after_ok: spec.after_ok,
        queue: spec.queue,
        paused_ms: 0,
        max_log_size: spec.max_log_size.filter(|n| *n > 0),
        logs_at_end: None,
    };
    let (task, lock) = store.create(&mut meta)?;
    // The label's index names the new task before its child runs (still
    // under the label's lock): the child may fill the disk at once, and
    // `run` must not then fail for a command that runs. A start that fails
    // leaves an index naming no task, which lookups pass over.
    if let Some(label) = &meta.label
        && let Err(e) = store.index_label(label, &task.id)
    {
        let _ = task.remove();
        return Err(e);
    }
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
    let survivors =
        crate::lifecycle::stop::kill_all(&mark, true, Instant::now() + Duration::from_secs(5));
    supervisor.wait();
    if survivors.is_empty() {
        let _ = task.remove();
        bail!("the supervisor died before starting the task");
    }
    bail!(
        "the supervisor of task {} died while starting it and {}; the task is kept (lost)",
        task.id,
        crate::lifecycle::stop::describe_survivors(&survivors)
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
    dir: crate::task::dirfd::DirFd,
) -> std::io::Result<(Supervisor, std::fs::File)> {
    use std::os::fd::{AsFd, OwnedFd};
    let dir = OwnedFd::from(dir);
    if std::env::var_os(procs::TASK_ID_VAR).is_none() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let path = task.dir.clone();
        let fds = [lock.as_fd(), write.as_fd(), dir.as_fd()];
        // A child it forks carries no marker until its exec; if the
        // supervisor dies then, `spawn_supervised` finds that child by the
        // supervisor's session (set before any child exists).
        if let Some(pid) = crate::sys::fork_with_fds(fds, || supervisor::main(&path, Some(meta)))? {
            // Our copies of the three close here: the lock stays held by the
            // supervisor, and its death now ends the pipe.
            return Ok((
                Supervisor::Forked(procs::Pid::from_nix(pid)),
                std::fs::File::from(read),
            ));
        }
    }
    let exe = std::env::current_exe()?;
    // The supervisor carries the task's marker too, so a child it forked
    // but has not exec'd yet is marked (used by `spawn_supervised` when the
    // supervisor dies).
    let mut child = Command::new(exe)
        .arg(supervisor::SUBCOMMAND)
        .arg(&task.dir)
        .env(procs::TASK_ID_VAR, &task.id)
        .stdin(Stdio::from(lock))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(dir))
        .spawn()?;
    let pipe = child.stdout.take().expect("stdout is piped");
    Ok((Supervisor::Spawned(child), OwnedFd::from(pipe).into()))
}

/// Sets the slot limit of queue `name` (creating the queue).
pub fn set_slots(store: &Store, name: &str, slots: usize) -> Result<()> {
    if !(1..=crate::lifecycle::queue::MAX_SLOTS).contains(&slots) {
        return Err(usage(format!(
            "invalid --slots {slots}: use 1 to {}",
            crate::lifecycle::queue::MAX_SLOTS
        )));
    }
    crate::lifecycle::queue::Queue::open(store.dir(), name)
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

/// Stops every active task with `label` (for `run --replace`).
fn stop_label(store: &Store, label: &str) -> Result<usize> {
    ensure_room(store)?;
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
        crate::lifecycle::stop::stop(task, Signal::SIGTERM, supervisor::DEFAULT_GRACE)?;
    }
    Ok(running.len())
}

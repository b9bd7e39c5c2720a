//! `TaskInfo`: the one description of a task that `status` (table, detail,
//! JSON) and the MCP tools all show, so they can never disagree.

use crate::logs::bounded::Record;
use crate::logs::marks::log_ends;
use crate::procs::{LazyProcTree, Pid};
use crate::task::meta::{Exit, LogsAtEnd, TaskMeta};
use crate::task::store::{Phase, Task, TaskState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;

/// A task as a reader sees it now. Field names are the documented JSON schema.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(schemars::JsonSchema))]
pub struct TaskInfo {
    /// The task's id: the name to use (`id` is the same, kept for old readers).
    pub task_id: String,
    pub id: String,
    pub label: Option<String>,
    pub state: TaskState,
    /// Exit code of the main process (128+n when killed by signal n).
    pub exit_code: Option<i32>,
    /// Signal that killed the main process, if one did.
    pub signal: Option<String>,
    /// Live descendants of a task whose main process has already exited.
    pub descendants: usize,
    pub command: Option<String>,
    pub argv: Option<Vec<String>>,
    pub cwd: Option<PathBuf>,
    pub pid: Option<u32>,
    pub supervisor_pid: Option<u32>,
    pub created: Option<DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    /// Time from start to end (or to now while running).
    pub runtime_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    /// Time until the supervisor stops a running task for its timeout.
    pub timeout_left_ms: Option<u64>,
    pub stdout_lines: u64,
    pub stderr_lines: u64,
    pub dir: PathBuf,
    /// Why a broken task cannot be read.
    pub error: Option<String>,
    /// The queue the task runs in (`run --queue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Tasks it starts after (`run --after`/`--after-ok`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// True when it starts only if every `after` task exited 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_ok: bool,
    /// What a queued task waits for, e.g. `t-3f9a2c to end`, `a slot in queue build (2/2 running)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Why a skipped task did not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time spent paused (the current pause included).
    pub paused_ms: u64,
    /// Per-stream log size kept on disk; null = unlimited.
    pub max_log_size: Option<u64>,
    /// Bytes of the oldest stdout freed to keep the limit (reads start there).
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
    /// Lines those dropped bytes held.
    pub stdout_dropped_lines: u64,
    pub stderr_dropped_lines: u64,
    /// Set when the limit cannot be kept (the filesystem cannot punch holes; logs are never truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_limit_note: Option<String>,
}

impl TaskInfo {
    /// Gathers everything about `task` as of now.
    pub fn of(task: &Task) -> TaskInfo {
        TaskInfo::of_with(task, &LazyProcTree::default())
    }

    /// [`TaskInfo::of`] for one of many tasks, sharing one look at `/proc`.
    pub fn of_with(task: &Task, procs: &LazyProcTree) -> TaskInfo {
        let phase = task.phase_with(procs);
        let now = Utc::now();
        let meta = task.meta.as_ref().ok();
        let exit = meta.and_then(|m| m.state.exit().cloned());
        let (exit_code, signal) = match &exit {
            Some(e @ Exit::Code(_)) => (Some(e.status()), None),
            Some(e @ Exit::Signal(name)) => (Some(e.status()), Some(name.clone())),
            None => (None, None),
        };
        let started = meta.and_then(|m| m.started);
        let ended = meta.and_then(|m| m.ended);
        let runtime_ms =
            started.map(|s| (ended.unwrap_or(now) - s).num_milliseconds().max(0) as u64);
        let timeout_left_ms = match (phase.is_active(), meta.and_then(|m| m.timeout_ms), started) {
            (true, Some(limit), Some(s)) => {
                Some(limit.saturating_sub((now - s).num_milliseconds().max(0) as u64))
            }
            _ => None,
        };
        let (descendants, error) = match &phase {
            Phase::Running { descendants, .. } => (*descendants, None),
            Phase::Broken(reason) => (0, Some(reason.clone())),
            _ => (0, None),
        };
        let (logs, dropped) = meta.map(|m| logs_of(task, m)).unwrap_or_default();
        let waiting_for = match (&phase, meta) {
            (Phase::Queued, Some(m)) => Some(waiting_for(task, m)),
            _ => None,
        };
        let reason = match meta.map(|m| &m.state) {
            Some(crate::task::meta::State::Skipped { reason }) => Some(reason.clone()),
            _ => None,
        };
        TaskInfo {
            task_id: task.id.clone(),
            id: task.id.clone(),
            label: meta.and_then(|m| m.label.clone()),
            state: phase.state(),
            exit_code,
            signal,
            descendants,
            command: meta.map(|m| m.command.display.clone()),
            argv: meta.map(|m| m.command.argv.clone()),
            cwd: meta.map(|m| m.cwd.clone()),
            pid: meta.and_then(|m| m.pid).map(Pid::raw),
            supervisor_pid: meta.and_then(|m| m.supervisor_pid).map(Pid::raw),
            created: meta.map(|m| m.created),
            started,
            ended,
            runtime_ms,
            timeout_ms: meta.and_then(|m| m.timeout_ms),
            timeout_left_ms,
            stdout_lines: logs.stdout.lines,
            stderr_lines: logs.stderr.lines,
            dir: task.dir.clone(),
            error,
            queue: meta.and_then(|m| m.queue.clone()),
            after: meta.map(|m| m.after.clone()).unwrap_or_default(),
            after_ok: meta.is_some_and(|m| m.after_ok),
            waiting_for,
            reason,
            paused_ms: meta.map_or(0, |m| m.paused_total_ms(now)),
            max_log_size: meta.and_then(|m| m.max_log_size),
            stdout_dropped_bytes: dropped.stdout.bytes,
            stderr_dropped_bytes: dropped.stderr.bytes,
            stdout_dropped_lines: dropped.stdout.lines,
            stderr_dropped_lines: dropped.stderr.lines,
            log_limit_note: dropped.unsupported.then(|| {
                "log size limit not kept: this filesystem cannot punch holes (logs are never truncated)"
                    .to_string()
            }),
        }
    }

    /// `running`, `exited 0`, `exited 0 (+2 descendants running)`, `signaled SIGKILL`,
    /// `queued: t-3f9a2c to end`, `skipped: t-3f9a2c exited 1`, ...
    pub fn state_text(&self) -> String {
        let mut text = self.state.to_string();
        if let Some(why) = self.waiting_for.as_ref().or(self.reason.as_ref()) {
            text = format!("{text}: {why}");
        }
        match (self.state, &self.signal, self.exit_code) {
            (TaskState::Exited, _, Some(code)) => text = format!("exited {code}"),
            (TaskState::Signaled, Some(sig), _) => text = format!("signaled {sig}"),
            (TaskState::Running, Some(sig), _) => text = format!("exited {sig}"),
            (TaskState::Running, None, Some(code)) => text = format!("exited {code}"),
            _ => {}
        }
        if self.descendants > 0 {
            let s = if self.descendants == 1 { "" } else { "s" };
            text.push_str(&format!(" (+{} descendant{s} running)", self.descendants));
        }
        text
    }
}

impl TaskInfo {
    /// The task's outcome as a shell exit status: its exit code, 128+n for a
    /// signal, 124 for a timeout (like timeout(1)), 1 when lost or broken.
    pub fn exit_status(&self) -> i32 {
        match self.state {
            TaskState::TimedOut => 124,
            TaskState::Lost | TaskState::Broken | TaskState::Skipped => 1,
            _ => self.exit_code.unwrap_or(0),
        }
    }
}

/// What a queued task waits for: the `after` tasks still active, else a
/// slot in its queue.
fn waiting_for(task: &Task, meta: &crate::task::meta::TaskMeta) -> String {
    let state = task.state_dir();
    let active: Vec<&str> = meta
        .after
        .iter()
        .filter(|id| {
            state
                .open_dir(id)
                .and_then(|d| {
                    d.open_file(crate::task::store::LOCK, crate::task::dirfd::Access::Read)
                })
                .is_ok_and(|f| {
                    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
                })
        })
        .map(String::as_str)
        .collect();
    if !active.is_empty() {
        return format!("{} to end", active.join(", "));
    }
    match meta.queue.as_deref() {
        Some(name) => match crate::lifecycle::queue::Queue::existing(state, name) {
            Some(queue) => {
                let q = queue.state();
                let paused = if q.paused { ", queue paused" } else { "" };
                format!(
                    "a slot in queue {name} ({}/{} running{paused})",
                    q.running, q.slots
                )
            }
            None => format!("a slot in queue {name}"),
        },
        None => "its turn".into(),
    }
}

/// Every task of the store, as `status` shows them: read with both cores
/// (each task costs a few small reads), one shared look at `/proc`.
/// A task's logs now and what a bounded log dropped. A finished task whose
/// logs are still the files and lengths its supervisor recorded at the end
/// costs two stats; any other is read through its directory and index.
fn logs_of(task: &Task, meta: &TaskMeta) -> (LogsAtEnd, Record) {
    if let Some(ends) = meta.logs_at_end
        && meta.state.is_final()
        && task.logs_still_are(&ends)
    {
        return (ends, Record::default());
    }
    let Ok(dir) = task.open_dir() else {
        return Default::default();
    };
    let logs = log_ends(&dir);
    let dropped = Record::load_if_over(&dir, meta.max_log_size, &logs);
    (logs, dropped)
}

pub fn all(tasks: &[Task]) -> Vec<TaskInfo> {
    let procs = LazyProcTree::default();
    crate::parallel::map(tasks, 256, |t| TaskInfo::of_with(t, &procs))
}

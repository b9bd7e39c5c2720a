//! Typed results: what each operation reports, serialized as-is by every
//! face (the CLI's `--json`, MCP structured content, the Amp toolbox).
//! Field names are the documented JSON schema: fields are only ever added,
//! never renamed; `task_id` is the one name of a task everywhere (`id` and
//! `task` stay beside it for readers of earlier versions).

use crate::info::TaskInfo;
use crate::lifecycle::cleanup::{self, Cleanup, CleanupPlan};
use crate::lifecycle::start::Started;
use crate::lifecycle::stop::StopOutcome;
use crate::task::store::{Store, Task, TaskState};
use serde::Serialize;
use std::path::PathBuf;

#[cfg(feature = "mcp")]
use schemars::JsonSchema;

/// `run` (and `restart`): the task that was started.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct RunReport {
    pub task_id: String,
    /// Same as `task_id` (the name used before `task_id`).
    pub id: String,
    pub label: Option<String>,
    /// The command's process id (null while the task is queued).
    pub pid: Option<u32>,
    /// The task's directory (logs, record).
    pub dir: PathBuf,
    /// For `restart`: the task this one replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

impl RunReport {
    /// What `run` reports about the task it started.
    pub fn of(started: &Started) -> RunReport {
        RunReport {
            task_id: started.id.clone(),
            id: started.id.clone(),
            label: started.label.clone(),
            pid: started.pid,
            dir: started.dir.clone(),
            replaces: None,
        }
    }
}

/// `status`: every task, oldest first.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct StatusReport {
    pub tasks: Vec<TaskInfo>,
}

/// What `stop` did to one task.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum StopResult {
    /// It ran and nothing of it is left.
    Stopped,
    /// It had already ended; nothing was signalled.
    AlreadyEnded,
    /// Its supervisor is gone and its processes could not be found safely.
    Lost,
    /// It could not be stopped (see `message`); exit 1.
    Error,
    /// `--dry-run`: it would be stopped; nothing was signalled.
    WouldStop,
}

/// One task in a [`StopReport`].
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct StopItem {
    pub task_id: String,
    pub id: String,
    pub result: StopResult,
    /// The task's state after the stop.
    pub state: TaskState,
    pub message: String,
}

impl StopItem {
    fn of(task: &Task, outcome: anyhow::Result<StopOutcome>) -> StopItem {
        let info = TaskInfo::of(&task.reload());
        let id = &task.id;
        let (result, message) = match outcome {
            Ok(StopOutcome::Stopped) => (StopResult::Stopped, format!("{id} stopped")),
            Ok(StopOutcome::AlreadyEnded(_)) => (
                StopResult::AlreadyEnded,
                format!("{id} already ended ({})", info.state_text()),
            ),
            Ok(StopOutcome::KilledOrphan) => (
                StopResult::Stopped,
                format!("{id} stopped (its supervisor was gone; killed its orphaned processes)"),
            ),
            Ok(StopOutcome::LostUnverifiable) => (
                StopResult::Lost,
                format!(
                    "{id} is lost and its processes cannot be identified safely; nothing signalled"
                ),
            ),
            Err(err) => (
                StopResult::Error,
                format!("{id}: {}", crate::error::one_line(&err)),
            ),
        };
        StopItem {
            task_id: id.clone(),
            id: id.clone(),
            result,
            state: info.state,
            message,
        }
    }
}

/// `stop`: one item per task asked for.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct StopReport {
    pub tasks: Vec<StopItem>,
}

impl StopReport {
    /// Says what happened to each of `targets` (`outcomes` in the same
    /// order): the one mapping from a [`StopOutcome`] to what every face prints.
    pub fn of(targets: &[Task], outcomes: Vec<anyhow::Result<StopOutcome>>) -> StopReport {
        let tasks = targets
            .iter()
            .zip(outcomes)
            .map(|(task, outcome)| StopItem::of(task, outcome))
            .collect();
        StopReport { tasks }
    }

    /// True when some task could not be stopped.
    pub fn failed(&self) -> bool {
        self.tasks.iter().any(|t| t.result == StopResult::Error)
    }
}

/// A task named with its state (cleanup lists).
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct TaskBrief {
    pub task_id: String,
    pub id: String,
    pub state: TaskState,
    /// `exited 0`, `signaled SIGKILL`, `broken: meta.json is empty`, ...
    pub state_text: String,
}

impl TaskBrief {
    /// A task as it stands now.
    pub fn of_task(task: &Task) -> TaskBrief {
        TaskBrief::of(&TaskInfo::of(task))
    }

    pub fn of(info: &TaskInfo) -> TaskBrief {
        TaskBrief {
            task_id: info.task_id.clone(),
            id: info.id.clone(),
            state: info.state,
            state_text: match &info.error {
                Some(reason) => format!("broken: {reason}"),
                None => info.state_text(),
            },
        }
    }
}

/// `cleanup`: what was removed, and what was kept because it still runs.
#[derive(Serialize, Debug, Clone, Default)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct CleanupReport {
    pub removed: Vec<TaskBrief>,
    pub kept_running: Vec<TaskBrief>,
    /// Tasks stopped first (`cleanup --all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<TaskBrief>,
    /// True for `--dry-run`: nothing was changed, the lists say what would be.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl CleanupReport {
    /// Cleans up as `plan` says; each task is described as it was just
    /// before anything was done to it.
    pub fn run(store: &Store, plan: CleanupPlan) -> anyhow::Result<CleanupReport> {
        cleanup::cleanup(store, plan, TaskBrief::of_task).map(CleanupReport::from)
    }

    /// [`CleanupReport::run`] of the given tasks only.
    pub fn run_on(tasks: Vec<Task>, plan: CleanupPlan) -> anyhow::Result<CleanupReport> {
        cleanup::cleanup_tasks(tasks, plan, TaskBrief::of_task).map(CleanupReport::from)
    }
}

impl From<Cleanup<TaskBrief>> for CleanupReport {
    fn from(done: Cleanup<TaskBrief>) -> CleanupReport {
        CleanupReport {
            removed: done.removed,
            kept_running: done.kept_running,
            stopped: done.stopped,
            dry_run: done.dry_run,
        }
    }
}

/// `bg_run` on the agent faces: the started task, and how it stood after
/// the short start window (see `tools::START_WINDOW`).
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct StartReport {
    #[serde(flatten)]
    pub run: RunReport,
    /// `running`, or how it ended at once (`exited`).
    pub state: TaskState,
    /// Set when the task finished within the start window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Its last output lines, when it finished within the start window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Vec<String>>,
}

/// One returned log line (`bgt output --json`'s `lines`).
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct LineReport {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// 1-based line number in the log.
    pub line: u64,
    pub text: String,
    /// How many following lines were collapsed into this one.
    pub similar: u64,
    /// A last line without its newline yet.
    pub partial: bool,
    /// Shown as part of a match's stack trace or context, not as a match.
    pub context: bool,
    /// A marker (`… 6 library frames`) standing for this many log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<u64>,
}

/// What a read found in one log (`stdout_meta` / `stderr_meta`).
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct StreamMeta {
    /// Complete lines in the whole log.
    pub total_lines: u64,
    /// Line after which the next `since` read starts.
    pub cursor: u64,
    pub cursor_offset: u64,
    /// Log lines accounted for by the returned lines.
    pub returned: u64,
    /// Lines in range that passed exclude and filter (null for a plain tail).
    pub matched: Option<u64>,
    pub truncated: bool,
    /// Matching lines that were not returned.
    pub remaining: Option<u64>,
    /// The log shrank or was replaced, so the cursor started over.
    pub cursor_reset: bool,
    /// Bytes and complete lines a bounded log dropped from its start
    /// (`--max-log-size`); line numbers still count them.
    pub dropped_bytes: u64,
    pub dropped_lines: u64,
    /// Lines of the range read that were dropped before this read could
    /// see them (a read from the start, a tail reaching back past the kept
    /// part, a cursor left behind); absent when the range kept them all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_unseen_lines: Option<u64>,
}

impl StreamMeta {
    pub fn of(s: &crate::logs::read::StreamResult) -> StreamMeta {
        StreamMeta {
            total_lines: s.total_lines,
            cursor: s.cursor.line,
            cursor_offset: s.cursor.offset,
            returned: s.returned,
            matched: s.matched,
            truncated: s.truncated,
            remaining: s.remaining,
            cursor_reset: s.cursor_reset,
            dropped_bytes: s.dropped.offset,
            dropped_lines: s.dropped.line,
            dropped_unseen_lines: s.missed.map(|m| m.line),
        }
    }
}

/// A read of a task's logs: the same document as `bgt output --json`,
/// with `task_id` beside `task`.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct OutputReport {
    pub task_id: String,
    /// Same as `task_id`.
    pub task: String,
    pub label: Option<String>,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub lines: Vec<LineReport>,
    /// Null when stdout was not read.
    pub stdout_meta: Option<StreamMeta>,
    /// Null when stderr was not read.
    pub stderr_meta: Option<StreamMeta>,
}

impl OutputReport {
    pub fn of(info: &TaskInfo, result: &crate::logs::read::ReadResult) -> OutputReport {
        use crate::logs::read::Stream;
        let lines = result
            .streams
            .iter()
            .flat_map(|s| &s.entries)
            .map(|e| LineReport {
                stream: e.stream.name().into(),
                line: e.line,
                text: e.text.clone(),
                similar: e.similar,
                partial: e.partial,
                context: e.context,
                folded: (e.folded > 0).then_some(e.folded),
            })
            .collect();
        let meta = |stream: Stream| {
            result
                .streams
                .iter()
                .find(|s| s.stream == stream)
                .map(StreamMeta::of)
        };
        OutputReport {
            task_id: info.task_id.clone(),
            task: info.id.clone(),
            label: info.label.clone(),
            state: info.state,
            exit_code: info.exit_code,
            lines,
            stdout_meta: meta(Stream::Stdout),
            stderr_meta: meta(Stream::Stderr),
        }
    }
}

/// How a wait ended.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum WaitResult {
    /// The task ended (no condition was given).
    Ended,
    /// The condition holds.
    Ready,
    /// The task ended before the condition held.
    TaskEnded,
    /// The time ran out; the task still runs.
    Timeout,
}

/// The last lines of a log, shown when a wait ends badly.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct LastLines {
    pub stream: String,
    pub lines: Vec<String>,
}

/// `bg_wait`: what happened to one task.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct WaitReport {
    pub task_id: String,
    pub result: WaitResult,
    /// The task's exit status; 0 when ready, 124 on timeout.
    pub exit_code: i32,
    /// Why a port that answered did not count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The line that matched `for_line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// The task's last stderr (else stdout) lines, when it failed or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_lines: Option<LastLines>,
}

/// The tasks of a `bgt wait --json` document: their full descriptions once
/// they ended, their ids otherwise (the shapes the CLI has always printed).
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
#[serde(untagged)]
pub enum WaitTasks {
    Ended(Vec<TaskInfo>),
    Ids(Vec<String>),
}

/// `bgt wait --json`: how a wait on one or more tasks ended.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct WaitAllReport {
    pub result: WaitResult,
    /// The exit status `bgt wait` exits with.
    pub exit_code: i32,
    /// Every task waited for.
    pub task_ids: Vec<String>,
    /// Absent when one task ended before the condition held (see `task`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<WaitTasks>,
    /// `ready` with `--for-line`: the first matching line of each task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
    /// `task-ended`: the task that ended first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskInfo>,
    /// Why a port that answered did not count (`task-ended`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `queue`, `pause --queue`, `resume --queue`: how a queue stands.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct QueueReport {
    pub queue: String,
    /// How many of its tasks may run at once.
    pub slots: usize,
    /// Its tasks running now (held slots).
    pub running: usize,
    /// Its tasks waiting for a slot, in line.
    pub waiting: usize,
    /// True while new starts are held (`bgt pause --queue`).
    pub paused: bool,
}

impl QueueReport {
    pub fn of(queue: &crate::lifecycle::queue::Queue) -> QueueReport {
        let state = queue.state();
        QueueReport {
            queue: queue.name.clone(),
            slots: state.slots,
            running: state.running,
            waiting: state.waiting,
            paused: state.paused,
        }
    }

    /// `queue build: 2/3 running, 5 waiting, paused`
    pub fn text(&self) -> String {
        let paused = if self.paused { ", paused" } else { "" };
        format!(
            "queue {}: {}/{} running, {} waiting{paused}",
            self.queue, self.running, self.slots, self.waiting
        )
    }
}

/// `pause` / `resume` of tasks: one item per task.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct PauseReport {
    pub tasks: Vec<PauseItem>,
}

#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct PauseItem {
    pub task_id: String,
    /// The task's state afterwards.
    pub state: TaskState,
    /// Time spent paused so far.
    pub paused_ms: u64,
    /// Set when it could not be paused or resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

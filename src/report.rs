//! Typed results: what each operation reports, serialized as-is by every
//! face (the CLI's `--json`, MCP structured content, the Amp toolbox).
//! Field names are the documented JSON schema: fields are only ever added,
//! never renamed; `task_id` is the one name of a task everywhere (`id` and
//! `task` stay beside it for readers of earlier versions).

use crate::info::TaskInfo;
use crate::store::TaskState;
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
    /// The command's process id.
    pub pid: u32,
    /// The task's directory (logs, record).
    pub dir: PathBuf,
    /// For `restart`: the task this one replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
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

/// `stop`: one item per task asked for.
#[derive(Serialize, Debug, Clone)]
#[cfg_attr(feature = "mcp", derive(JsonSchema))]
pub struct StopReport {
    pub tasks: Vec<StopItem>,
}

impl StopReport {
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
}

impl From<&crate::control::Cleanup> for CleanupReport {
    fn from(done: &crate::control::Cleanup) -> CleanupReport {
        CleanupReport {
            removed: done.removed.iter().map(TaskBrief::of).collect(),
            kept_running: done.kept_running.iter().map(TaskBrief::of).collect(),
        }
    }
}

//! Removing finished tasks: only when a task's lock is free (checked for
//! every task, broken ones included) and no process of it remains.

use crate::lifecycle::process::{ProcTable, TaskMark};
use crate::lifecycle::supervisor;
use crate::task::store::{Phase, Store, Task};
use anyhow::Result;
use nix::sys::signal::Signal;
use std::time::Duration;

/// Removes half-built task directories left by a `bgt run` that died mid-way.
pub fn remove_stale_temp_dirs(store: &Store) {
    let Ok(entries) = store.dir().entries() else {
        return;
    };
    for name in entries {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(crate::task::store::NEW_PREFIX) {
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
            crate::lifecycle::stop::stop(&task, Signal::SIGTERM, supervisor::DEFAULT_GRACE)?;
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

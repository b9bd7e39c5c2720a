//! Removing finished tasks: only when a task's lock is free (checked for
//! every task, broken ones included) and no process of it remains.

use crate::lifecycle::supervisor;
use crate::procs::{ProcTable, TaskMark};
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

/// What `cleanup` did, each task described by the caller's `describe`
/// (called before the task is removed, while its directory still exists).
#[derive(Debug)]
pub struct Cleanup<T> {
    /// Removed tasks, as they were just before removal.
    pub removed: Vec<T>,
    /// Tasks left alone because their supervisor or a process of theirs still runs.
    pub kept_running: Vec<T>,
    /// Tasks stopped first (`--all`), as they were before.
    pub stopped: Vec<T>,
    /// Nothing was changed: the lists say what would have happened.
    pub dry_run: bool,
}

/// What to clean up and how.
#[derive(Clone, Copy, Debug, Default)]
pub struct CleanupPlan {
    /// Only tasks that ended (or, never started, were created) longer ago.
    pub older_than: Option<Duration>,
    /// Stop running tasks (lost ones with processes included) first.
    pub stop_running: bool,
    /// Change nothing; report what would be done.
    pub dry_run: bool,
}

/// Removes finished (and broken) tasks of the store, as `plan` says. A
/// task is removable only when its lock is free (checked for every task,
/// broken ones included) and no process of it remains.
pub fn cleanup<T>(
    store: &Store,
    plan: CleanupPlan,
    describe: impl Fn(&Task) -> T,
) -> Result<Cleanup<T>> {
    if !plan.dry_run {
        remove_stale_temp_dirs(store);
    }
    cleanup_tasks(store.list()?, plan, describe)
}

/// [`cleanup`] of the given tasks only (`bg_stop action=cleanup task_id=...`).
pub fn cleanup_tasks<T>(
    tasks: Vec<Task>,
    plan: CleanupPlan,
    describe: impl Fn(&Task) -> T,
) -> Result<Cleanup<T>> {
    let cutoff = plan.older_than.map(crate::duration::cutoff);
    let mut report = Cleanup {
        removed: Vec::new(),
        kept_running: Vec::new(),
        stopped: Vec::new(),
        dry_run: plan.dry_run,
    };
    let mut table = ProcTable::read();
    for task in tasks {
        let phase = task.phase();
        if plan.stop_running
            && (phase.is_active() || (phase == Phase::Lost && has_processes(&table, &task)))
        {
            report.stopped.push(describe(&task));
            if plan.dry_run {
                // Stopped now, it would have ended now: removed only without a cutoff.
                if cutoff.is_none() {
                    report.removed.push(describe(&task));
                }
                continue;
            }
            crate::lifecycle::stop::stop(&task, Signal::SIGTERM, supervisor::DEFAULT_GRACE)?;
            table = ProcTable::read();
        }
        let task = task.reload();
        let seen = describe(&task);
        if task.is_locked() || has_processes(&table, &task) {
            report.kept_running.push(seen);
            continue;
        }
        let ended = task
            .meta
            .as_ref()
            .ok()
            .map(|m| m.ended.unwrap_or(m.created));
        if let (Some(cutoff), Some(ended)) = (cutoff, ended)
            && ended > cutoff
        {
            continue;
        }
        if !plan.dry_run {
            task.remove()?;
        }
        report.removed.push(seen);
    }
    Ok(report)
}

/// Whether some process of the task still runs. Only keeps tasks, never
/// signals, so an unreadable record is searched by its id alone. Asked
/// once the task's lock is free, so its supervisor has closed the lock on
/// its way out: the supervisor itself, still exiting (not yet a zombie; a
/// loaded machine can hold it there after `bgt stop` has returned), is not
/// counted.
fn has_processes(table: &ProcTable, task: &Task) -> bool {
    let (mark, supervisor) = match &task.meta {
        Ok(meta) => (meta.mark(), meta.supervisor_pid.zip(meta.supervisor_start)),
        Err(_) => (
            TaskMark {
                id: task.id.clone(),
                sid: None,
                since: None,
            },
            None,
        ),
    };
    table
        .of_task(&mark, true)
        .iter()
        .any(|p| supervisor != Some((p.pid, p.start_ticks)))
}

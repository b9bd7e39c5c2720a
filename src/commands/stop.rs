//! `bgt stop`: end tasks' process trees, in parallel, idempotently.

use crate::cli::StopArgs;
use crate::lifecycle::stopping::stop_tasks;
use crate::report::StopResult;
use crate::store::{Store, Task};
use anyhow::Result;

pub fn run(args: StopArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let targets: Vec<Task> = if args.all || args.older_than.is_some() {
        let cutoff = args.older_than.map(crate::duration::cutoff);
        store
            .list()?
            .into_iter()
            .filter(|t| t.phase().is_active())
            .filter(
                |t| match (cutoff, t.meta.as_ref().ok().and_then(|m| m.started)) {
                    (Some(cutoff), Some(started)) => started < cutoff,
                    (Some(_), None) => false,
                    (None, _) => true,
                },
            )
            .collect()
    } else {
        let mut found = Vec::new();
        for query in &args.tasks {
            found.push(store.resolve(query)?);
        }
        found
    };
    if args.dry_run {
        return dry_run(&targets, args.json);
    }
    let report = stop_tasks(&targets, args.signal, args.grace);
    if args.json {
        super::print_json(&report)?;
    } else {
        for item in &report.tasks {
            if item.result == StopResult::Error {
                eprintln!("bgt: {}", item.message);
            } else {
                println!("{}", item.message);
            }
        }
        if targets.is_empty() {
            println!("no running tasks to stop");
        }
    }
    Ok(if report.failed() { 1 } else { 0 })
}

/// `stop --dry-run`: what would be stopped; nothing is signalled.
fn dry_run(targets: &[Task], json: bool) -> Result<i32> {
    use crate::info::TaskInfo;
    use crate::report::{StopItem, StopReport};
    let tasks = targets
        .iter()
        .map(|task| {
            let info = TaskInfo::of(task);
            let active = task.phase().is_active();
            let (result, message) = if active {
                (
                    StopResult::WouldStop,
                    format!("would stop {} ({})", task.id, info.state_text()),
                )
            } else {
                (
                    StopResult::AlreadyEnded,
                    format!("{} already ended ({})", task.id, info.state_text()),
                )
            };
            StopItem {
                task_id: task.id.clone(),
                id: task.id.clone(),
                result,
                state: info.state,
                message,
            }
        })
        .collect();
    let report = StopReport { tasks };
    if json {
        super::print_json(&report)?;
    } else {
        for item in &report.tasks {
            println!("{}", item.message);
        }
        if targets.is_empty() {
            println!("no running tasks to stop");
        }
    }
    Ok(0)
}

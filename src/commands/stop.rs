//! `bgt stop`: end tasks' process trees, in parallel, idempotently.

use crate::cli::StopArgs;
use crate::lifecycle::stop::stop_tasks;
use crate::report::{StopReport, StopResult};
use crate::task::store::{Store, Task};
use crate::term::{self, LatestLine, LiveLine};
use anyhow::{Result, anyhow};
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

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
    let report = stop_showing_progress(&targets, &args)?;
    if args.json {
        super::print_json(&report)?;
    } else {
        for item in &report.tasks {
            if item.result == StopResult::Error {
                eprintln!("bgt: {}", item.message);
            } else {
                writeln!(std::io::stdout().lock(), "{}", item.message)?;
            }
        }
        if targets.is_empty() {
            writeln!(std::io::stdout().lock(), "no running tasks to stop")?;
        }
    }
    Ok(if report.failed() { 1 } else { 0 })
}

/// Stops `targets`; when that runs long (a task that ignores the signal
/// and waits out its grace period), a live line says what is going on, as
/// `wait` does: `stopping api · 3s of 5s grace · <its latest log line>`.
fn stop_showing_progress(targets: &[Task], args: &StopArgs) -> Result<StopReport> {
    let (done, report) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let outcomes = stop_tasks(targets, args.signal, args.grace);
            let _ = done.send(StopReport::of(targets, outcomes));
        });
        let mut live = LiveLine::new(false, Duration::from_secs(1));
        let mut latest = LatestLine::new(targets);
        let grace = crate::duration::short(args.grace);
        let every = live.every().unwrap_or(Duration::MAX);
        loop {
            match report.recv_timeout(every) {
                Ok(report) => return Ok(report),
                Err(mpsc::RecvTimeoutError::Timeout) => live.tick(|elapsed| {
                    let name = |t: Task| match t.meta.ok().and_then(|m| m.label) {
                        Some(label) => label,
                        None => t.id,
                    };
                    let mut left: Vec<String> = targets
                        .iter()
                        .map(Task::reload)
                        .filter(|t| t.phase().is_active())
                        .map(name)
                        .collect();
                    if left.is_empty() {
                        left = targets.iter().map(|t| name(t.reload())).collect();
                    }
                    let time = term::seconds(elapsed);
                    let time = match elapsed < args.grace {
                        true => format!("{time} of {grace} grace"),
                        false => format!("{time}, SIGKILL sent"),
                    };
                    (
                        format!("stopping {} · {time}", left.join(", ")),
                        latest.get(),
                    )
                }),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(anyhow!("stopping failed unexpectedly"));
                }
            }
        }
    })
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
            writeln!(std::io::stdout().lock(), "{}", item.message)?;
        }
        if targets.is_empty() {
            writeln!(std::io::stdout().lock(), "no running tasks to stop")?;
        }
    }
    Ok(0)
}

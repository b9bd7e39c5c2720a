//! `bgt stop`: end tasks' process trees, in parallel, idempotently.

use crate::cli::StopArgs;
use crate::control::{self, StopOutcome};
use crate::info::TaskInfo;
use crate::store::{Store, Task, resolve_in};
use anyhow::Result;
use chrono::Utc;
use serde_json::json;

pub fn run(args: StopArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let targets: Vec<Task> = if args.all || args.older_than.is_some() {
        let cutoff = args
            .older_than
            .map(|d| Utc::now() - chrono::Duration::from_std(d).unwrap_or_default());
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
            found.push(resolve_in(store.list()?, query)?);
        }
        found
    };

    let outcomes: Vec<Result<StopOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|task| scope.spawn(|| control::stop(task, args.signal, args.grace)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stop thread panicked"))
            .collect()
    });

    let mut failed = false;
    let mut report = Vec::new();
    for (task, outcome) in targets.iter().zip(outcomes) {
        let info = TaskInfo::of(&task.reload());
        let (result, text) = match outcome {
            Ok(StopOutcome::Stopped) => ("stopped", format!("{} stopped", task.id)),
            Ok(StopOutcome::AlreadyEnded(_)) => (
                "already-ended",
                format!("{} already ended ({})", task.id, info.state_text()),
            ),
            Ok(StopOutcome::KilledOrphan) => (
                "stopped",
                format!(
                    "{} stopped (its supervisor was gone; killed its orphaned processes)",
                    task.id
                ),
            ),
            Ok(StopOutcome::LostUnverifiable) => (
                "lost",
                format!(
                    "{} is lost and its processes cannot be identified safely; nothing signalled",
                    task.id
                ),
            ),
            Err(err) => {
                failed = true;
                ("error", format!("{}: {err:#}", task.id))
            }
        };
        report
            .push(json!({ "id": task.id, "result": result, "state": info.state, "message": text }));
        if !args.json {
            if result == "error" {
                eprintln!("bgt: {text}");
            } else {
                println!("{text}");
            }
        }
    }
    if args.json {
        super::print_json(&json!({ "tasks": report }))?;
    } else if targets.is_empty() {
        println!("no running tasks to stop");
    }
    Ok(if failed { 1 } else { 0 })
}

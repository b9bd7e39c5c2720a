//! `bgt stop`: end tasks' process trees, in parallel, idempotently.

use crate::cli::StopArgs;
use crate::lifecycle::stopping::stop_tasks;
use crate::report::StopResult;
use crate::store::{Store, Task};
use anyhow::Result;
use std::io::Write;

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
    let report = stop_tasks(&targets, args.signal, args.grace);
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

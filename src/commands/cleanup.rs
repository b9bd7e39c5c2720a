//! `bgt cleanup`: remove finished tasks' directories, never a running one.

use crate::cli::CleanupArgs;
use crate::lifecycle::cleanup::CleanupPlan;
use crate::report::CleanupReport;
use crate::task::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: CleanupArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let report = CleanupReport::run(
        &store,
        CleanupPlan {
            older_than: args.older_than,
            stop_running: args.all,
            dry_run: args.dry_run,
        },
    )?;
    if args.json {
        super::print_json(&report)?;
        return Ok(0);
    }
    let (stop_word, remove_word) = if args.dry_run {
        ("would stop", "would remove")
    } else {
        ("stopped", "removed")
    };
    let mut out = std::io::stdout().lock();
    for (word, tasks) in [(stop_word, &report.stopped), (remove_word, &report.removed)] {
        for task in tasks {
            writeln!(out, "{word} {} ({})", task.task_id, task.state_text)?;
        }
    }
    if report.removed.is_empty() {
        writeln!(std::io::stdout().lock(), "nothing to remove")?;
    }
    if !report.kept_running.is_empty() {
        eprintln!(
            "kept {} running task(s); `bgt cleanup --all` stops and removes them",
            report.kept_running.len()
        );
    }
    Ok(0)
}

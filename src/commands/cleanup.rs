//! `bgt cleanup`: remove finished tasks' directories, never a running one.

use crate::cli::CleanupArgs;
use crate::control;
use crate::report::CleanupReport;
use crate::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: CleanupArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let report = CleanupReport::from(&control::cleanup(&store, args.older_than, args.all)?);
    if args.json {
        super::print_json(&report)?;
        return Ok(0);
    }
    for task in &report.removed {
        writeln!(
            std::io::stdout().lock(),
            "removed {} ({})",
            task.task_id,
            task.state_text
        )?;
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

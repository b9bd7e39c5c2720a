//! `bgt cleanup`: remove finished tasks' directories, never a running one.

use crate::cli::CleanupArgs;
use crate::control;
use crate::store::Store;
use anyhow::Result;
use serde_json::json;

pub fn run(args: CleanupArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let report = control::cleanup(&store, args.older_than, args.all)?;
    if args.json {
        let brief = |infos: &[crate::info::TaskInfo]| -> Vec<serde_json::Value> {
            infos
                .iter()
                .map(|i| json!({ "id": i.id, "state": i.state }))
                .collect()
        };
        super::print_json(
            &json!({ "removed": brief(&report.removed), "kept_running": brief(&report.kept_running) }),
        )?;
        return Ok(0);
    }
    for info in &report.removed {
        let state = match &info.error {
            Some(reason) => format!("broken: {reason}"),
            None => info.state_text(),
        };
        println!("removed {} ({state})", info.id);
    }
    if report.removed.is_empty() {
        println!("nothing to remove");
    }
    if !report.kept_running.is_empty() {
        eprintln!(
            "kept {} running task(s); `bgt cleanup --all` stops and removes them",
            report.kept_running.len()
        );
    }
    Ok(0)
}

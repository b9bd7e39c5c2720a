//! `bgt cleanup`: remove finished tasks' directories, never a running one.

use crate::cli::CleanupArgs;
use crate::control::{self, StopOutcome};
use crate::info::TaskInfo;
use crate::store::{Phase, Store};
use anyhow::Result;
use chrono::Utc;
use serde_json::json;

pub fn run(args: CleanupArgs) -> Result<i32> {
    let store = Store::open_default()?;
    control::remove_stale_temp_dirs(&store);
    let cutoff = args
        .older_than
        .map(|d| Utc::now() - chrono::Duration::from_std(d).unwrap_or_default());
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for task in store.list()? {
        let mut phase = task.phase();
        if phase.is_active() && args.all {
            let outcome = control::stop(
                &task,
                nix::sys::signal::Signal::SIGTERM,
                crate::supervisor::DEFAULT_GRACE,
            )?;
            if outcome == StopOutcome::Stopped {
                phase = task.reload().phase();
            }
        }
        let info = TaskInfo::of(&task.reload());
        if phase.is_active() || (phase == Phase::Lost && control::orphan_alive(&task)) {
            kept.push(json!({ "id": task.id, "state": info.state }));
            continue;
        }
        let ended = info.ended.or(info.created);
        if let (Some(cutoff), Some(ended)) = (cutoff, ended)
            && ended > cutoff
        {
            continue;
        }
        control::remove_task(&task)?;
        if !args.json {
            println!(
                "removed {} ({})",
                task.id,
                info.error
                    .as_deref()
                    .map_or_else(|| info.state_text(), |e| format!("broken: {e}"))
            );
        }
        removed.push(json!({ "id": task.id, "state": info.state }));
    }
    if args.json {
        super::print_json(&json!({ "removed": removed, "kept_running": kept }))?;
    } else {
        if removed.is_empty() {
            println!("nothing to remove");
        }
        if !kept.is_empty() {
            eprintln!(
                "kept {} running task(s); `bgt cleanup --all` stops and removes them",
                kept.len()
            );
        }
    }
    Ok(0)
}

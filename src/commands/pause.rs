//! `bgt pause` / `bgt resume`: stop and continue every process of tasks
//! (through their supervisors), or hold and release a queue's next starts.
use crate::cli::PauseArgs;
use crate::info::TaskInfo;
use crate::lifecycle::queue::Queue;
use crate::report::{PauseItem, PauseReport, QueueReport};
use crate::task::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: PauseArgs, pause: bool) -> Result<i32> {
    let store = Store::open_default()?;
    if let Some(name) = &args.queue {
        let queue = Queue::open(store.dir(), name)
            .and_then(|q| q.set_paused(pause).map(|_| q))
            .map_err(|e| anyhow::anyhow!("cannot change queue '{name}': {e}"))?;
        let report = QueueReport::of(&queue);
        if args.json {
            super::print_json(&report)?;
        } else {
            writeln!(std::io::stdout().lock(), "{}", report.text())?;
        }
        return Ok(0);
    }
    let mut tasks = Vec::new();
    for query in &args.tasks {
        tasks.push(store.resolve(query)?);
    }
    let mut items = Vec::new();
    for task in &tasks {
        let result = crate::lifecycle::stop::pause(task, pause);
        let info = TaskInfo::of(&task.reload());
        items.push(PauseItem {
            task_id: task.id.clone(),
            state: info.state,
            paused_ms: info.paused_ms,
            error: result.err().map(|e| crate::error::one_line(&e)),
        });
    }
    let report = PauseReport { tasks: items };
    let failed = report.tasks.iter().any(|t| t.error.is_some());
    if args.json {
        super::print_json(&report)?;
    } else {
        for item in &report.tasks {
            match &item.error {
                Some(e) => eprintln!("bgt: {e}"),
                None => println!("{} {}", item.task_id, item.state),
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

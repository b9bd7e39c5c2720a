//! `bgt wait`: the CLI face of `waiting::wait`.

use crate::cli::WaitArgs;
use crate::info::TaskInfo;
use crate::store::{Store, Task};
use crate::waiting::{self, Condition, Outcome, TIMED_OUT};
use anyhow::Result;
use serde_json::json;
use std::time::Instant;

pub fn run(args: WaitArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let mut tasks = Vec::new();
    for query in &args.tasks {
        tasks.push(store.resolve(query)?);
    }
    let condition = if let Some(re) = &args.for_line {
        Condition::line(re, args.stream.streams())?
    } else if let Some(port) = args.for_port {
        Condition::port(port, args.host.as_deref())?
    } else if let Some(url) = &args.for_http {
        Condition::http(url)?
    } else {
        Condition::Exit
    };
    let timeout = crate::duration::limit(args.timeout);
    let deadline = timeout.map(|t| Instant::now() + t);
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let (code, doc) = match waiting::wait(&tasks, &condition, deadline)? {
        Outcome::Ended { exit_code } => {
            let infos: Vec<TaskInfo> = tasks.iter().map(|t| TaskInfo::of(&t.reload())).collect();
            (
                exit_code,
                json!({ "result": "ended", "exit_code": exit_code, "tasks": infos }),
            )
        }
        Outcome::Ready { lines } => {
            if !args.json {
                for (task, line) in tasks.iter().zip(&lines) {
                    eprintln!("bgt: {} ready: {line}", task.id);
                }
            }
            (
                0,
                json!({ "result": "ready", "exit_code": 0, "tasks": ids, "lines": lines }),
            )
        }
        Outcome::TaskEnded {
            task,
            exit_code,
            reason,
        } => {
            let info = TaskInfo::of(&tasks[task].reload());
            eprintln!(
                "bgt: task {} ended ({}) before {}{}",
                info.id,
                info.state_text(),
                condition.describe(),
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            show_last_lines(&tasks[task]);
            (
                exit_code,
                json!({ "result": "task-ended", "exit_code": exit_code, "task": info, "reason": reason }),
            )
        }
        Outcome::TimedOut { reason } => {
            let after = timeout.map(crate::duration::short).unwrap_or_default();
            eprintln!(
                "bgt: timed out after {after} waiting for {}{}",
                condition.describe(),
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            for task in &tasks {
                show_last_lines(task);
            }
            (
                TIMED_OUT,
                json!({ "result": "timeout", "exit_code": TIMED_OUT, "tasks": ids, "reason": reason }),
            )
        }
    };
    if args.json {
        super::print_json(&doc)?;
    }
    Ok(code)
}

fn show_last_lines(task: &Task) {
    if let Some((stream, lines)) = waiting::last_lines(task, 20) {
        eprintln!(
            "-- last {} lines of {} {}:",
            lines.len(),
            task.id,
            stream.name()
        );
        for line in lines {
            eprintln!("{line}");
        }
    }
}

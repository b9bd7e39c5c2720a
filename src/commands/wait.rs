//! `bgt wait`: the CLI face of `waiting::wait`.

use crate::cli::WaitArgs;
use crate::info::TaskInfo;
use crate::lifecycle::waiting::{self, Condition, Outcome, Progress, TIMED_OUT};
use crate::report::{WaitAllReport, WaitResult, WaitTasks};
use crate::task::store::{Store, Task};
use crate::term::{self, LatestLine, LiveLine};
use anyhow::Result;
use std::time::{Duration, Instant};

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
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let report = |result, exit_code| WaitAllReport {
        result,
        exit_code,
        task_ids: ids.clone(),
        tasks: None,
        lines: None,
        task: None,
        reason: None,
    };
    let names = names(&tasks);
    let mut live = LiveLine::new(args.quiet, Duration::from_millis(250));
    let outcome = {
        let what = format!("waiting for {names} {}", goal(&condition));
        let limit = timeout.map(crate::duration::short);
        let mut latest = LatestLine::new(&tasks);
        let every = live.every();
        let mut tick = || {
            live.tick(|elapsed| {
                let time = term::seconds(elapsed);
                let time = match &limit {
                    Some(limit) => format!("{time} of {limit}"),
                    None => time,
                };
                (format!("{what} · {time}"), latest.get())
            })
        };
        let progress = every.map(|every| Progress {
            every,
            tick: &mut tick,
        });
        waiting::wait_with(&tasks, &condition, deadline, progress)?
    };
    live.clear();
    let took = crate::duration::took(live.elapsed());
    let quiet = args.quiet || args.json;
    let (code, doc) = match outcome {
        Outcome::Ended { exit_code } => {
            let infos: Vec<TaskInfo> = tasks.iter().map(|t| TaskInfo::of(&t.reload())).collect();
            if !quiet {
                let states: Vec<String> = infos
                    .iter()
                    .map(|i| format!("{} {}", name(i), i.state_text()))
                    .collect();
                eprintln!("bgt: {} after {took}", states.join(", "));
            }
            (
                exit_code,
                WaitAllReport {
                    tasks: Some(WaitTasks::Ended(infos)),
                    ..report(WaitResult::Ended, exit_code)
                },
            )
        }
        Outcome::Ready { lines } => {
            if !quiet {
                match lines.is_empty() {
                    true => eprintln!("bgt: {names} ready after {took}"),
                    false => {
                        for (task, line) in tasks.iter().zip(&lines) {
                            let info = TaskInfo::of(task);
                            let name = name(&info);
                            eprintln!("bgt: {name} ready after {took}: {line}");
                        }
                    }
                }
            }
            (
                0,
                WaitAllReport {
                    tasks: Some(WaitTasks::Ids(ids.clone())),
                    lines: Some(lines),
                    ..report(WaitResult::Ready, 0)
                },
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
                WaitAllReport {
                    task: Some(info),
                    reason,
                    ..report(WaitResult::TaskEnded, exit_code)
                },
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
                WaitAllReport {
                    tasks: Some(WaitTasks::Ids(ids.clone())),
                    reason,
                    ..report(WaitResult::Timeout, TIMED_OUT)
                },
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

/// A task as people call it: its label, else its id.
fn name(info: &TaskInfo) -> &str {
    info.label.as_deref().unwrap_or(&info.id)
}

/// The tasks waited for, by name: `api`, `api, web`.
fn names(tasks: &[Task]) -> String {
    let infos: Vec<TaskInfo> = tasks.iter().map(TaskInfo::of).collect();
    let names: Vec<&str> = infos.iter().map(name).collect();
    names.join(", ")
}

/// What the live line says is awaited: `waiting for api <goal>`.
fn goal(condition: &Condition) -> String {
    match condition {
        Condition::Exit => "to end".into(),
        Condition::Line(_, pattern) => format!("to print a line matching '{pattern}'"),
        Condition::Port(_, port) => format!("to listen on :{port}"),
        Condition::Http(_, url, _) => format!("to answer {url}"),
    }
}

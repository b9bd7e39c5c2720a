//! `bgt wait`: block until tasks end, or until they are ready (a log line,
//! an open port, an answering URL), failing fast when a task dies first.

use crate::cli::WaitArgs;
use crate::info::TaskInfo;
use crate::logread::{self, Marks, Request, Stream, Window};
use crate::pattern::{Case, LineMatch};
use crate::store::{Store, Task, resolve_in};
use anyhow::Result;
use serde_json::json;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Exit status for a wait that ran out of time, like timeout(1).
const TIMED_OUT: i32 = 124;

enum Condition {
    Exit,
    Line(Request),
    Port(Vec<SocketAddr>, String),
    Http(ureq::Agent, String),
}

pub fn run(args: WaitArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let mut tasks = Vec::new();
    for query in &args.tasks {
        tasks.push(resolve_in(store.list()?, query)?);
    }
    let condition = condition(&args)?;
    let deadline = args.timeout.map(|t| Instant::now() + t);
    if let Condition::Exit = condition {
        // Plain wait: block on each task's lock, no polling.
        for task in &tasks {
            if !crate::control::wait_unlocked(task, deadline) {
                return timed_out(&args, &tasks, &condition);
            }
        }
    }
    let mut positions: Vec<Marks> = vec![Marks::default(); tasks.len()];
    let mut ready = vec![false; tasks.len()];
    let mut nap = Duration::from_millis(20);
    loop {
        let mut ended = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let active = task.reload().phase().is_active();
            if let Condition::Line(req) = &condition
                && !ready[i]
            {
                let mut req = req.clone();
                req.include_partial = !active;
                let found = logread::read_from(&task.dir, &req, &mut positions[i])?;
                if let Some(line) = found.streams.iter().flat_map(|s| &s.entries).next() {
                    ready[i] = true;
                    if !args.json {
                        eprintln!("bgt: {} ready: {}", task.id, line.text);
                    }
                }
            }
            if !active && !ready[i] {
                ended.push(i);
            }
        }
        match &condition {
            Condition::Exit if ended.len() == tasks.len() => {
                let infos: Vec<TaskInfo> =
                    tasks.iter().map(|t| TaskInfo::of(&t.reload())).collect();
                let code = infos
                    .iter()
                    .map(TaskInfo::exit_status)
                    .find(|c| *c != 0)
                    .unwrap_or(0);
                if args.json {
                    super::print_json(
                        &json!({ "result": "ended", "exit_code": code, "tasks": infos }),
                    )?;
                }
                return Ok(code);
            }
            Condition::Exit => {}
            _ if ready.iter().all(|r| *r) => return done(&args, &tasks, "ready"),
            Condition::Port(addrs, _) if port_open(addrs) => return done(&args, &tasks, "ready"),
            Condition::Http(agent, url) if http_ok(agent, url) => {
                return done(&args, &tasks, "ready");
            }
            _ => {
                if let Some(&i) = ended.first() {
                    return died(&args, &tasks[i], &condition);
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return timed_out(&args, &tasks, &condition);
        }
        let mut sleep = nap;
        if let Some(d) = deadline {
            sleep = sleep.min(d.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(sleep);
        nap = (nap * 3 / 2).min(Duration::from_millis(250));
    }
}

fn condition(args: &WaitArgs) -> Result<Condition> {
    if let Some(re) = &args.for_line {
        return Ok(Condition::Line(Request {
            streams: args.stream.streams(),
            matcher: LineMatch::build(Some(re), None, &[], Case::Smart).map_err(|e| {
                crate::error::usage(e.to_string().replace("--filter", "--for-line"))
            })?,
            clean: true,
            max_line_chars: 0,
            window: Window::Head(1),
            max_lines: Some(1),
            since: None,
            reset_cursor: false,
            include_partial: false,
        }));
    }
    if let Some(port) = args.for_port {
        let hosts: Vec<String> = match &args.host {
            Some(h) => vec![h.clone()],
            // Node 17+ dev servers bound to `localhost` often listen on ::1 only.
            None => vec!["127.0.0.1".into(), "::1".into()],
        };
        let mut addrs = Vec::new();
        for host in &hosts {
            match (host.as_str(), port).to_socket_addrs() {
                Ok(found) => addrs.extend(found),
                Err(e) if args.host.is_some() => {
                    return Err(crate::error::usage(format!(
                        "cannot resolve --host '{host}': {e}"
                    )));
                }
                Err(_) => {}
            }
        }
        return Ok(Condition::Port(addrs, format!("port {port}")));
    }
    if let Some(url) = &args.for_http {
        if !url.starts_with("http://") {
            return Err(crate::error::usage(format!(
                "unsupported --for-http URL '{url}': use http://HOST:PORT/PATH"
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(2)))
            .build();
        return Ok(Condition::Http(
            ureq::Agent::new_with_config(config),
            url.clone(),
        ));
    }
    Ok(Condition::Exit)
}

fn port_open(addrs: &[SocketAddr]) -> bool {
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok())
}

fn http_ok(agent: &ureq::Agent, url: &str) -> bool {
    agent
        .get(url)
        .call()
        .is_ok_and(|r| (200..400).contains(&r.status().as_u16()))
}

fn describe(condition: &Condition, args: &WaitArgs) -> String {
    match condition {
        Condition::Exit => "the task to end".into(),
        Condition::Line(_) => format!(
            "a line matching '{}'",
            args.for_line.as_deref().unwrap_or_default()
        ),
        Condition::Port(_, what) => what.clone(),
        Condition::Http(_, url) => url.clone(),
    }
}

fn done(args: &WaitArgs, tasks: &[Task], result: &str) -> Result<i32> {
    if args.json {
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        super::print_json(&json!({ "result": result, "exit_code": 0, "tasks": ids }))?;
    }
    Ok(0)
}

/// A task ended before it was ready: say so, show why, exit non-zero.
fn died(args: &WaitArgs, task: &Task, condition: &Condition) -> Result<i32> {
    let info = TaskInfo::of(&task.reload());
    let code = match info.exit_status() {
        0 => 1,
        c => c,
    };
    eprintln!(
        "bgt: task {} ended ({}) before {}",
        task.id,
        info.state_text(),
        describe(condition, args)
    );
    show_last_lines(task);
    if args.json {
        super::print_json(&json!({ "result": "task-ended", "exit_code": code, "task": info }))?;
    }
    Ok(code)
}

fn timed_out(args: &WaitArgs, tasks: &[Task], condition: &Condition) -> Result<i32> {
    let after = args.timeout.map(crate::duration::short).unwrap_or_default();
    eprintln!(
        "bgt: timed out after {after} waiting for {}",
        describe(condition, args)
    );
    for task in tasks {
        show_last_lines(task);
    }
    if args.json {
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        super::print_json(&json!({ "result": "timeout", "exit_code": TIMED_OUT, "tasks": ids }))?;
    }
    Ok(TIMED_OUT)
}

/// The last lines of a task's stderr (or stdout when stderr is empty) on our stderr.
pub fn show_last_lines(task: &Task) {
    for stream in [Stream::Stderr, Stream::Stdout] {
        let req = Request {
            streams: vec![stream],
            matcher: LineMatch::default(),
            clean: true,
            max_line_chars: crate::clean::DEFAULT_MAX_LINE_CHARS,
            window: Window::Tail(20),
            max_lines: Some(20),
            since: None,
            reset_cursor: false,
            include_partial: true,
        };
        let Ok(result) = logread::read(&task.dir, &req) else {
            continue;
        };
        let lines: Vec<&str> = result
            .streams
            .iter()
            .flat_map(|s| &s.entries)
            .map(|e| e.text.as_str())
            .collect();
        if lines.is_empty() {
            continue;
        }
        eprintln!(
            "-- last {} lines of {} {}:",
            lines.len(),
            task.id,
            stream.name()
        );
        for line in lines {
            eprintln!("{line}");
        }
        return;
    }
}

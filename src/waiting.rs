//! Waiting for tasks: until they end, or until they are ready (a log line,
//! an open port, an answering URL), failing fast when a task dies first.
//! Shared by `bgt wait` and the MCP `bg_wait` tool.

use crate::control;
use crate::error::usage;
use crate::info::TaskInfo;
use crate::logread::{self, Marks, Request, Stream, Window};
use crate::pattern::{Case, LineMatch};
use crate::store::Task;
use anyhow::Result;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Exit status for a wait that ran out of time, like timeout(1).
pub const TIMED_OUT: i32 = 124;

/// What counts as done.
pub enum Condition {
    /// Every task has ended.
    Exit,
    /// Each task printed a line matching the request's filter.
    Line(Box<Request>, String),
    /// A TCP connect to one of these addresses works.
    Port(Vec<SocketAddr>, u16),
    /// A GET answers 2xx or 3xx.
    Http(Box<ureq::Agent>, String),
}

impl Condition {
    /// A line matching `pattern` (same rules as `--filter`) in `streams`.
    pub fn line(pattern: &str, streams: Vec<Stream>) -> Result<Condition> {
        let matcher = LineMatch::build("--for-line", Some(pattern), None, &[], Case::Smart)?;
        // A line still without newline counts too ("ready on :3000" then
        // silence); the reader resumes after it rather than reading it again.
        let request = Request {
            matcher,
            window: Window::Head(1),
            max_lines: Some(1),
            ..Request::all(streams)
        };
        Ok(Condition::Line(Box::new(request), pattern.to_string()))
    }

    /// A TCP port; without a host both 127.0.0.1 and ::1 are tried, since
    /// Node 17+ dev servers bound to `localhost` often listen on ::1 only.
    pub fn port(port: u16, host: Option<&str>) -> Result<Condition> {
        let hosts = match host {
            Some(h) => vec![h],
            None => vec!["127.0.0.1", "::1"],
        };
        let mut addrs = Vec::new();
        for h in hosts {
            match (h, port).to_socket_addrs() {
                Ok(found) => addrs.extend(found),
                Err(e) if host.is_some() => {
                    return Err(usage(format!("cannot resolve --host '{h}': {e}")));
                }
                Err(_) => {}
            }
        }
        Ok(Condition::Port(addrs, port))
    }

    /// An HTTP URL (plain http; this is for local dev servers).
    pub fn http(url: &str) -> Result<Condition> {
        if !url.starts_with("http://") {
            return Err(usage(format!(
                "unsupported --for-http URL '{url}': use http://HOST:PORT/PATH"
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(2)))
            .build();
        Ok(Condition::Http(
            Box::new(ureq::Agent::new_with_config(config)),
            url.to_string(),
        ))
    }

    /// What is awaited, for messages.
    pub fn describe(&self) -> String {
        match self {
            Condition::Exit => "the task to end".into(),
            Condition::Line(_, pattern) => format!("a line matching '{pattern}'"),
            Condition::Port(_, port) => format!("port {port}"),
            Condition::Http(_, url) => url.clone(),
        }
    }

    fn holds(&self) -> bool {
        match self {
            Condition::Port(addrs, _) => addrs
                .iter()
                .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok()),
            Condition::Http(agent, url) => agent
                .get(url)
                .call()
                .is_ok_and(|r| (200..400).contains(&r.status().as_u16())),
            _ => false,
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All tasks ended (plain wait): the first non-zero exit status, else 0.
    Ended { exit_code: i32 },
    /// The condition holds; for `Line`, the first matching line of each task.
    Ready { lines: Vec<String> },
    /// Task number `task` ended before the condition held.
    TaskEnded { task: usize, exit_code: i32 },
    /// The deadline passed.
    TimedOut,
}

/// Waits for `condition` on `tasks` until `deadline`. Polls with back-off
/// (a plain wait blocks on the supervisors' locks instead), so a long wait
/// costs a few milliseconds of CPU.
pub fn wait(tasks: &[Task], condition: &Condition, deadline: Option<Instant>) -> Result<Outcome> {
    if let Condition::Exit = condition {
        for task in tasks {
            if !control::wait_unlocked(task, deadline) {
                return Ok(Outcome::TimedOut);
            }
        }
        let code = tasks
            .iter()
            .map(|t| TaskInfo::of(&t.reload()).exit_status())
            .find(|c| *c != 0);
        return Ok(Outcome::Ended {
            exit_code: code.unwrap_or(0),
        });
    }
    let mut positions: Vec<Marks> = vec![Marks::default(); tasks.len()];
    let mut found: Vec<Option<String>> = vec![None; tasks.len()];
    let mut backoff = control::Backoff::new(Duration::from_millis(20));
    loop {
        let mut ended = None;
        for (i, task) in tasks.iter().enumerate() {
            let active = task.reload().phase().is_active();
            if let Condition::Line(req, _) = condition
                && found[i].is_none()
            {
                let result = logread::read_from(&task.dir, req, &mut positions[i])?;
                found[i] = result
                    .streams
                    .iter()
                    .flat_map(|s| &s.entries)
                    .next()
                    .map(|e| e.text.clone());
            }
            if !active && found[i].is_none() && ended.is_none() {
                ended = Some(i);
            }
        }
        let ready = match condition {
            Condition::Line(..) => found.iter().all(Option::is_some),
            _ => condition.holds(),
        };
        if ready {
            return Ok(Outcome::Ready {
                lines: found.into_iter().flatten().collect(),
            });
        }
        if let Some(i) = ended {
            let status = TaskInfo::of(&tasks[i].reload()).exit_status();
            // Ending without becoming ready is a failure even with exit 0.
            return Ok(Outcome::TaskEnded {
                task: i,
                exit_code: if status == 0 { 1 } else { status },
            });
        }
        match deadline {
            Some(deadline) if !backoff.sleep_until(deadline) => return Ok(Outcome::TimedOut),
            Some(_) => {}
            None => std::thread::sleep(backoff.next_nap()),
        }
    }
}

/// The last `n` cleaned lines of a task's stderr, or of stdout when stderr is
/// empty: what a CI log should show when a task failed.
pub fn last_lines(task: &Task, n: usize) -> Option<(Stream, Vec<String>)> {
    for stream in [Stream::Stderr, Stream::Stdout] {
        let req = Request {
            window: Window::Tail(n),
            max_lines: Some(n),
            ..Request::all(vec![stream])
        };
        let Ok(result) = logread::read(&task.dir, &req) else {
            continue;
        };
        let lines: Vec<String> = result
            .streams
            .into_iter()
            .flat_map(|s| s.entries)
            .map(|e| e.text)
            .collect();
        if !lines.is_empty() {
            return Some((stream, lines));
        }
    }
    None
}

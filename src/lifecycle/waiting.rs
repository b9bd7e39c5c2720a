//! Waiting for tasks: until they end, or until they are ready (a log line,
//! an open port, an answering URL), failing fast when a task dies first.
//! Shared by `bgt wait` and the MCP `bg_wait` tool.

use crate::error::usage;
use crate::lifecycle::listeners::{self, Holder};
use crate::logs::marks::Marks;
use crate::logs::pattern::{Case, LineMatch};
use crate::logs::read::{self as logread, Request, Stream, Window};
use crate::task::store::Task;
use anyhow::Result;
use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError};
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
    /// A GET answers 2xx or 3xx; the port, when the URL's host is this machine.
    Http(Box<ureq::Agent>, String, Option<u16>),
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
        let local_port = url.parse::<ureq::http::Uri>().ok().and_then(|uri| {
            let port = uri.port_u16().unwrap_or(80);
            let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
            is_local(&addrs).then_some(port)
        });
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(2)))
            .build();
        Ok(Condition::Http(
            Box::new(ureq::Agent::new_with_config(config)),
            url.to_string(),
            local_port,
        ))
    }

    /// What is awaited, for messages.
    pub fn describe(&self) -> String {
        match self {
            Condition::Exit => "the task to end".into(),
            Condition::Line(_, pattern) => format!("a line matching '{pattern}'"),
            Condition::Port(_, port) => format!("port {port}"),
            Condition::Http(_, url, _) => url.clone(),
        }
    }

    /// The port whose listener must be the task's: only for addresses on this
    /// machine, the only ones whose sockets `/proc` shows.
    fn local_port(&self) -> Option<u16> {
        match self {
            Condition::Port(addrs, port) if is_local(addrs) => Some(*port),
            Condition::Http(_, _, port) => *port,
            _ => None,
        }
    }

    fn holds(&self) -> bool {
        match self {
            Condition::Port(addrs, _) => addrs
                .iter()
                .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok()),
            Condition::Http(agent, url, _) => agent
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
    /// Task number `task` ended before the condition held; `reason` says
    /// why a port that answered did not count (another process held it).
    TaskEnded {
        task: usize,
        exit_code: i32,
        reason: Option<String>,
    },
    /// The deadline passed (`reason` as for `TaskEnded`).
    TimedOut { reason: Option<String> },
}

/// True when every address is this machine's (loopback or unspecified).
fn is_local(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty()
        && addrs
            .iter()
            .all(|a| a.ip().is_loopback() || a.ip().is_unspecified())
}

/// Tells a task's own listener from one that was there before it: a stale
/// server on the port answers connects, but the task will die with
/// EADDRINUSE, so it must not count as ready (see `listeners`). A listener
/// counts when it appeared after the wait began, when the process holding it
/// started no earlier than the task (`docker run -p` tasks are served by a
/// new docker-proxy, not by the task itself), or when its holder cannot be
/// seen (another user's process, no `/proc`): then the port alone decides.
struct PortOwner {
    port: u16,
    /// Sockets listening on the port when the wait began.
    before: HashSet<u64>,
    /// The holder of the last listener that predates the tasks.
    stale: Option<Holder>,
    /// Sockets already found to predate the tasks: not looked up again (an
    /// inode names one socket for its whole life), so waiting behind a stale
    /// server does not walk every process's descriptors at each poll.
    stale_inodes: HashSet<u64>,
}

impl PortOwner {
    fn new(condition: &Condition) -> Option<PortOwner> {
        let port = condition.local_port()?;
        Some(PortOwner {
            port,
            before: listeners::listening_inodes(port)?,
            stale: None,
            stale_inodes: HashSet::new(),
        })
    }

    /// Whether a listener on the port may be the tasks' own.
    fn may_be_tasks(&mut self, tasks: &[Task]) -> bool {
        // The earliest task start: a listener older than every task is no task's.
        let Some(since) = tasks.iter().filter_map(start_ticks).min() else {
            return true;
        };
        let Some(inodes) = listeners::listening_inodes(self.port) else {
            return true;
        };
        if inodes.is_empty() || inodes.iter().any(|i| !self.before.contains(i)) {
            return true;
        }
        if inodes.is_subset(&self.stale_inodes) {
            return false;
        }
        let holders = listeners::holders(&inodes);
        for inode in &inodes {
            match holders.get(inode) {
                Some(holder) if holder.start_ticks < since => {
                    self.stale = Some(holder.clone());
                    self.stale_inodes.insert(*inode);
                }
                _ => return true,
            }
        }
        false
    }

    /// Why a port that answered did not count, for the failure message.
    fn reason(&self) -> Option<String> {
        self.stale.as_ref().map(|h| {
            format!(
                "port {} was already held by pid {} ({}) before this task started",
                self.port, h.pid, h.name
            )
        })
    }
}

/// Kernel start time of a task: of its main process as recorded at spawn,
/// else of its supervisor while that provably lives.
fn start_ticks(task: &Task) -> Option<u64> {
    let task = task.reload();
    let meta = task.meta.as_ref().ok()?;
    meta.pid_start.or_else(|| {
        let supervisor = meta.supervisor_pid?;
        task.is_locked()
            .then(|| crate::procs::start_ticks(supervisor))?
    })
}

/// Waits for `condition` on `tasks` until `deadline`. Polls with back-off
/// (a plain wait blocks on the supervisors' locks instead), so a long wait
/// costs a few milliseconds of CPU.
pub fn wait(tasks: &[Task], condition: &Condition, deadline: Option<Instant>) -> Result<Outcome> {
    wait_with(tasks, condition, deadline, None)
}

/// A call a wait makes about every `every` while it goes on (between
/// polls, never delaying them): the CLI's live line.
pub struct Progress<'a> {
    pub every: Duration,
    pub tick: &'a mut dyn FnMut(),
}

impl Progress<'_> {
    /// Sleeps until `until`, making the calls that fall due meanwhile.
    fn sleep_until(&mut self, next: &mut Instant, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= *next {
                (self.tick)();
                *next = now + self.every;
            }
            if now >= until {
                return;
            }
            std::thread::sleep(until.min(*next) - now);
        }
    }
}

/// [`wait`], calling `progress` while it goes on.
pub fn wait_with(
    tasks: &[Task],
    condition: &Condition,
    deadline: Option<Instant>,
    mut progress: Option<Progress>,
) -> Result<Outcome> {
    if let Condition::Exit = condition {
        let wait_all = || tasks.iter().all(|t| wait_unlocked(t, deadline));
        let ended = match progress.as_mut() {
            None => wait_all(),
            // The locks are waited on as without progress (a blocking
            // flock costs nothing); the calls are made meanwhile.
            Some(p) => std::thread::scope(|scope| {
                let (done, ended) = mpsc::channel();
                scope.spawn(move || done.send(wait_all()));
                loop {
                    match ended.recv_timeout(p.every) {
                        Ok(all) => break all,
                        Err(RecvTimeoutError::Timeout) => (p.tick)(),
                        Err(RecvTimeoutError::Disconnected) => break false,
                    }
                }
            }),
        };
        if !ended {
            return Ok(Outcome::TimedOut { reason: None });
        }
        let code = tasks
            .iter()
            .map(|t| t.reload().phase().exit_status())
            .find(|c| *c != 0);
        return Ok(Outcome::Ended {
            exit_code: code.unwrap_or(0),
        });
    }
    let mut next_tick = Instant::now();
    let mut owner = PortOwner::new(condition);
    let reason = |owner: &Option<PortOwner>| owner.as_ref().and_then(PortOwner::reason);
    let mut positions: Vec<Marks> = vec![Marks::default(); tasks.len()];
    let mut found: Vec<Option<String>> = vec![None; tasks.len()];
    let mut backoff = Backoff::new(Duration::from_millis(20));
    loop {
        let mut ended = None;
        for (i, task) in tasks.iter().enumerate() {
            let active = task.reload().phase().is_active();
            if let Condition::Line(req, _) = condition
                && found[i].is_none()
            {
                let result = logread::read_from(&task.open_dir()?, req, &mut positions[i])?;
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
            // Checked after the liveness check above: a port can answer
            // because of a stale server while the task dies of EADDRINUSE.
            _ if ended.is_some() => false,
            _ => {
                condition.holds()
                    && owner.as_mut().is_none_or(|o| o.may_be_tasks(tasks))
                    // ... and again after it held: a task that has ended is never ready.
                    && match tasks.iter().position(|t| !t.reload().phase().is_active()) {
                        Some(i) => {
                            ended = Some(i);
                            false
                        }
                        None => true,
                    }
            }
        };
        if ready {
            return Ok(Outcome::Ready {
                lines: found.into_iter().flatten().collect(),
            });
        }
        if let Some(i) = ended {
            let status = tasks[i].reload().phase().exit_status();
            // Ending without becoming ready is a failure even with exit 0.
            return Ok(Outcome::TaskEnded {
                task: i,
                exit_code: if status == 0 { 1 } else { status },
                reason: reason(&owner),
            });
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(Outcome::TimedOut {
                reason: reason(&owner),
            });
        }
        let until = now + backoff.next_nap();
        let until = deadline.map_or(until, |d| until.min(d));
        match progress.as_mut() {
            Some(p) => p.sleep_until(&mut next_tick, until),
            None => std::thread::sleep(until - now),
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
        let Ok(result) = task.open_dir().and_then(|dir| logread::read(&dir, &req)) else {
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

/// Blocks until the task's lock is free (its supervisor has exited) or the
/// deadline passes. Without a deadline it is a blocking flock: it wakes the
/// moment the supervisor exits and costs no CPU while waiting.
pub fn wait_unlocked(task: &Task, deadline: Option<Instant>) -> bool {
    let Some(file) = task.open_lock() else {
        return true; // no lock file: the task is gone
    };
    let Some(deadline) = deadline else {
        return file.lock_shared().is_ok();
    };
    // With a deadline: poll with back-off (no thread left blocked behind a
    // timed-out wait in a long-lived MCP server).
    let mut backoff = Backoff::new(Duration::from_millis(1));
    loop {
        if !matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        ) {
            return true;
        }
        if !backoff.sleep_until(deadline) {
            return false;
        }
    }
}

/// Polling intervals that start short (a quick answer stays quick) and
/// grow: to 250 ms, and to 1 s once the wait has lasted 5 s, so a long wait
/// costs a few milliseconds of CPU per minute.
pub struct Backoff {
    nap: Duration,
    started: Instant,
}

impl Backoff {
    pub fn new(first: Duration) -> Backoff {
        Backoff {
            nap: first,
            started: Instant::now(),
        }
    }

    /// The next interval.
    pub fn next_nap(&mut self) -> Duration {
        let cap = if self.started.elapsed() < Duration::from_secs(5) {
            250
        } else {
            1000
        };
        let nap = self.nap;
        self.nap = (self.nap * 2).min(Duration::from_millis(cap));
        nap
    }

    /// Starts over from `first` (something happened).
    pub fn reset(&mut self, first: Duration) {
        self.nap = first;
    }

    /// Sleeps the next interval, but not past `deadline`; false once it has passed.
    pub fn sleep_until(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(self.next_nap().min(deadline - now));
        true
    }
}

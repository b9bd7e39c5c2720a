//! The machine's processes as bgt needs them, below every task notion:
//! pids, signal names, the process table and trees, proof of identity, umask.
//!
//! bgt never signals a bare pid it read from a file: a pid is trusted only
//! while the task's supervisor provably lives (its lock is held), or when
//! the kernel's start time proves it belongs to the task. On Linux the
//! supervisor is a child subreaper, so every process the task ever forked
//! (even one that called setsid) stays its descendant while it lives;
//! walking `/proc` from the supervisor finds them all.
//!
//! Once the supervisor is gone (kill -9, OOM) its orphans are re-parented to
//! init, so a tree walk no longer works. Then a task's processes are found by
//! [`TaskMark`]: the session the supervisor created, and the `BGT_TASK_ID`
//! marker every task process inherits in its environment (the supervisor
//! carries it too, so even a child forked but not yet exec'd has it).

use nix::sys::signal::{self, Signal};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable naming a task in each of its processes.
pub const TASK_ID_VAR: &str = "BGT_TASK_ID";

/// The umask bgt had when it started, before `restrict_umask`.
static CALLER_UMASK: OnceLock<u32> = OnceLock::new();

/// Sets bgt's own umask to 077 (every file and directory it creates is
/// private even where an explicit mode is missing) and remembers the
/// caller's, which the task's child gets back. Call first thing.
pub fn restrict_umask() {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o077));
    let _ = CALLER_UMASK.set(old.bits() as u32);
}

/// The caller's umask (the current one if `restrict_umask` was not called).
pub fn caller_umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    *CALLER_UMASK.get_or_init(|| {
        let now = umask(Mode::from_bits_truncate(0o077));
        umask(now);
        now.bits() as u32
    })
}

/// Sets the umask, returning the previous one (the supervisor gives the
/// child the caller's around spawn; it is single-threaded).
pub fn set_umask(mask: u32) -> u32 {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(mask as nix::libc::mode_t)).bits() as u32
}

/// Parses `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let bad = || format!("unknown signal '{text}' (use e.g. TERM, INT, KILL, HUP or a number)");
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// Number of a signal given by name (`SIGKILL` -> 9), for 128+n exit codes.
pub fn signal_number(name: &str) -> Option<i32> {
    Signal::from_str(name).ok().map(|s| s as i32)
}

/// A process id. One type for every pid bgt handles (recorded in
/// `meta.json` as a plain number, read from `/proc`, handed to the kernel),
/// so the conversion to the kernel's signed `pid_t` happens here only.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Pid(u32);

impl Pid {
    /// This process.
    pub fn this() -> Pid {
        Pid(std::process::id())
    }

    /// A child this process spawned.
    pub fn of(child: &std::process::Child) -> Pid {
        Pid(child.id())
    }

    /// The number, as shown in JSON and messages.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The kernel's view, for signals and waits.
    pub fn nix(self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0 as i32)
    }

    /// From the kernel's view (a waitpid result, a session id).
    pub fn from_nix(pid: nix::unistd::Pid) -> Pid {
        Pid(pid.as_raw() as u32)
    }
}

impl From<u32> for Pid {
    fn from(pid: u32) -> Pid {
        Pid(pid)
    }
}

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One row of the process table.
#[derive(Clone, Copy, Debug)]
pub struct ProcInfo {
    pub pid: Pid,
    pub ppid: Pid,
    pub pgid: Pid,
    pub session: Pid,
    pub zombie: bool,
    /// Stopped by a signal (or a tracer).
    pub stopped: bool,
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses.
#[cfg(target_os = "linux")]
fn read_stat(pid: Pid) -> Option<ProcInfo> {
    use std::io::Read;
    // One open and (usually) one read: `status` reads this for every
    // process on the machine, and the file's size reads as 0, which makes a
    // generic read-to-end probe several times. The line ends with a newline
    // and is a few hundred bytes (the fields used come first anyway).
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5); starttime is field 22.
    Some(ProcInfo {
        pid,
        ppid: Pid(fields.get(1)?.parse().ok()?),
        pgid: Pid(fields.get(2)?.parse().ok()?),
        session: Pid(fields.get(3)?.parse().ok()?),
        zombie: matches!(*fields.first()?, "Z" | "X"),
        stopped: matches!(*fields.first()?, "T" | "t"),
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Every process id `/proc` lists now (empty where it cannot be read).
pub fn pids() -> impl Iterator<Item = Pid> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok().map(Pid))
}

/// Kernel start time of a live process, used as its identity next to the pid.
pub fn start_ticks(pid: Pid) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        read_stat(pid).filter(|p| !p.zombie).map(|p| p.start_ticks)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Live (non-zombie) descendants of `root`, excluding `root` itself.
/// Empty where the OS has no `/proc`. Reads `/proc` afresh: to ask about
/// many roots at once, read a [`ProcTree`] once instead.
pub fn descendants(root: Pid) -> Vec<ProcInfo> {
    ProcTree::read().descendants(root)
}

/// The parent/child relation of every process, read from `/proc` once and
/// asked about any number of roots (`status` of many tasks walks `/proc`
/// once per call, not once per task).
#[derive(Default)]
pub struct ProcTree {
    children: HashMap<Pid, Vec<ProcInfo>>,
}

impl ProcTree {
    /// Reads the tree; empty where there is no `/proc`.
    pub fn read() -> ProcTree {
        let mut tree = ProcTree::default();
        #[cfg(target_os = "linux")]
        for info in pids().filter_map(read_stat) {
            tree.children.entry(info.ppid).or_default().push(info);
        }
        tree
    }

    /// Live descendants of `root`, excluding `root` itself.
    pub fn descendants(&self, root: Pid) -> Vec<ProcInfo> {
        let mut found = Vec::new();
        let mut queue = vec![root];
        while let Some(parent) = queue.pop() {
            for child in self.children.get(&parent).into_iter().flatten() {
                queue.push(child.pid);
                if !child.zombie {
                    found.push(*child);
                }
            }
        }
        found
    }
}

/// A [`ProcTree`] read on first use: callers that look at many tasks share
/// one, and those that never need it never read `/proc`.
#[derive(Default)]
pub struct LazyProcTree(std::sync::OnceLock<ProcTree>);

impl LazyProcTree {
    pub fn get(&self) -> &ProcTree {
        self.0.get_or_init(ProcTree::read)
    }
}

/// Sends `sig` to a task's whole tree: its process group and, where `/proc`
/// shows them, every descendant of the supervisor (those that left the group
/// with setsid included). Returns how many processes were signalled.
///
/// Only call this while the supervisor provably lives (lock held, or from
/// the supervisor itself): then `supervisor` and `pgid` cannot be reused numbers.
pub fn signal_tree(supervisor: Pid, pgid: Option<Pid>, sig: Signal) -> usize {
    let tree = descendants(supervisor);
    let mut count = 0;
    if let Some(pgid) = pgid {
        // The group id is ours only while a member of it is our descendant (or
        // /proc is unavailable and we cannot tell, in which case the group
        // leader is our unreaped child and the id cannot have been reused).
        let group_alive = tree.is_empty() || tree.iter().any(|p| p.pgid == pgid);
        if group_alive && signal::killpg(pgid.nix(), sig).is_ok() {
            count += 1;
        }
    }
    for proc in &tree {
        if signal::kill(proc.pid.nix(), sig).is_ok() {
            count += 1;
        }
    }
    count
}

/// Stops a task's whole tree ([`signal_tree`] with SIGSTOP), then walks it
/// from the supervisor through each process's `children` list (its own
/// tree only, not all of `/proc`), stopping every process as soon as it is
/// found, until two walks in a row find the same processes, all stopped.
/// One pass of `signal_tree` signals what `/proc` showed a moment before: a
/// chain of processes that each fork the next and exit, outside the task's
/// group, would run on in a "paused" task. A walk can miss a chain's new
/// process (its parent gone, it is being handed to the supervisor, the
/// subreaper), but not without a change the next walk sees: the caller
/// reaps nothing meanwhile, so every process that exited stays listed, as
/// a zombie. Gives up after a bounded number of walks (a process we may
/// not signal never stops); says whether all stopped.
pub fn stop_tree(supervisor: Pid, pgid: Option<Pid>) -> bool {
    signal_tree(supervisor, pgid, Signal::SIGSTOP);
    #[cfg(target_os = "linux")]
    {
        let mut seen: Option<Vec<Pid>> = None;
        for walk in 0..500u64 {
            let mut all_stopped = true;
            let mut found = Vec::new();
            let mut stack = vec![supervisor];
            while let Some(parent) = stack.pop() {
                for child in children(parent) {
                    let _ = signal::kill(child.nix(), Signal::SIGSTOP);
                    found.push(child);
                    match read_stat(child) {
                        Some(p) if p.zombie => continue,
                        Some(p) => all_stopped &= p.stopped,
                        None => continue,
                    }
                    stack.push(child);
                }
            }
            found.sort_unstable();
            if all_stopped && seen.as_ref() == Some(&found) {
                return true;
            }
            seen = Some(found);
            // A signalled process stops once it runs again: let it.
            std::thread::sleep(std::time::Duration::from_micros(100 * walk.clamp(1, 10)));
        }
    }
    #[cfg(not(target_os = "linux"))]
    return true;
    #[cfg(target_os = "linux")]
    false
}

/// The children of `pid`, from the `children` list of each of its threads.
#[cfg(target_os = "linux")]
fn children(pid: Pid) -> Vec<Pid> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|n| n.parse().ok().map(Pid))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Identifies a task's processes without its supervisor:
///
/// - candidates are the live processes in the task's session (the
///   supervisor called setsid, so `sid` = its pid) or whose environment
///   holds `BGT_TASK_ID=<id>`;
/// - a candidate counts only if its kernel start time is at or after the
///   supervisor's (every task process was forked after it), which a process
///   that merely reuses an old pid, or got a reused session id, cannot have
///   unless it was also started after the task; for the session, a live
///   leader with another start time shows the id was reused and the session
///   criterion is dropped (a session id cannot be reused while any member
///   lives, so old members and a new session never mix).
///
/// What cannot be found: a process that left the session (setsid) AND
/// replaced its environment (exec with a clean env, as `env -i` or a
/// sudo/su/setpriv-style helper may do) while the supervisor was not
/// watching; while the supervisor lives, the subreaper tree finds those
/// too. A process outside the task that forges `BGT_TASK_ID` with a task's
/// id is taken for one of its processes (it can only be one of the user's).
#[derive(Clone, Debug)]
pub struct TaskMark {
    pub id: String,
    pub sid: Option<Pid>,
    /// The supervisor's start time; `None` for records from before it was
    /// kept, where the child's start time is the best lower bound.
    pub since: Option<u64>,
}

/// One look at `/proc`: every process with its task marker, if any.
pub struct ProcTable {
    procs: Vec<(ProcInfo, Option<String>)>,
}

impl ProcTable {
    /// Reads the table; empty where there is no `/proc`.
    pub fn read() -> ProcTable {
        let mut procs = Vec::new();
        #[cfg(target_os = "linux")]
        for info in pids().filter_map(read_stat) {
            procs.push((info, task_marker(info.pid)));
        }
        ProcTable { procs }
    }

    /// The live processes of the task `mark` names (never this process).
    /// Without a start time to check against (`since` unknown) nothing is
    /// proven, and nothing is returned unless `unproven` is set (for
    /// decisions that only keep things, like cleanup).
    pub fn of_task(&self, mark: &TaskMark, unproven: bool) -> Vec<ProcInfo> {
        let me = Pid::this();
        if mark.since.is_none() && !unproven {
            return Vec::new();
        }
        let reused_session = mark.sid.is_some_and(|sid| {
            self.procs.iter().any(|(p, _)| {
                p.pid == sid && !p.zombie && mark.since.is_some_and(|since| p.start_ticks != since)
            })
        });
        self.procs
            .iter()
            .filter(|(p, marker)| {
                let in_session = !reused_session && mark.sid == Some(p.session);
                let marked = marker.as_deref() == Some(mark.id.as_str());
                p.pid != me
                    && !p.zombie
                    && (in_session || marked)
                    && mark.since.is_none_or(|since| p.start_ticks >= since)
            })
            .map(|(p, _)| *p)
            .collect()
    }
}

/// The `BGT_TASK_ID` in a process's initial environment, if readable.
#[cfg(target_os = "linux")]
fn task_marker(pid: Pid) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TASK_ID_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|id| String::from_utf8_lossy(id).into_owned())
}

/// The command name of a process (`comm`), for messages.
pub fn name(pid: Pid) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// True when `pid` (alive or a zombie) belongs to the task of the calling
/// supervisor `me`: it is in the task's session or descends from `me`.
pub fn is_task_process(pid: Pid, me: Pid) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut current = pid;
        for _ in 0..256 {
            let Some(info) = read_stat(current) else {
                return false;
            };
            if info.session == me || info.ppid == me {
                return true;
            }
            if info.ppid.0 <= 1 {
                return false;
            }
            current = info.ppid;
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, me);
        false
    }
}

/// Sends `sig` to each process; returns those that could not be signalled
/// (other than already gone), with the reason.
pub fn signal_each(procs: &[ProcInfo], sig: Signal) -> Vec<(Pid, nix::errno::Errno)> {
    procs
        .iter()
        .filter_map(|p| match signal::kill(p.pid.nix(), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => None,
            Err(e) => Some((p.pid, e)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(signal_number("SIGKILL"), Some(9));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_start_time_is_stable() {
        let me = Pid::this();
        assert!(start_ticks(me).is_some());
        assert_eq!(start_ticks(me), start_ticks(me));
    }
}

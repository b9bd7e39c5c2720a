//! Process control: signal names, process trees, proof of identity, umask.
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

use crate::meta::TaskMeta;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
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

/// One row of the process table.
#[derive(Clone, Copy, Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub session: i32,
    pub zombie: bool,
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses.
#[cfg(target_os = "linux")]
fn read_stat(pid: i32) -> Option<ProcInfo> {
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
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        zombie: matches!(*fields.first()?, "Z" | "X"),
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Kernel start time of a live process, used as its identity next to the pid.
pub fn start_ticks(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        read_stat(pid as i32)
            .filter(|p| !p.zombie)
            .map(|p| p.start_ticks)
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
pub fn descendants(root: u32) -> Vec<ProcInfo> {
    ProcTree::read().descendants(root)
}

/// The parent/child relation of every process, read from `/proc` once and
/// asked about any number of roots (`status` of many tasks walks `/proc`
/// once per call, not once per task).
#[derive(Default)]
pub struct ProcTree {
    children: HashMap<i32, Vec<ProcInfo>>,
}

impl ProcTree {
    /// Reads the tree; empty where there is no `/proc`.
    pub fn read() -> ProcTree {
        let mut tree = ProcTree::default();
        #[cfg(target_os = "linux")]
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if let Some(info) = read_stat(pid) {
                    tree.children.entry(info.ppid).or_default().push(info);
                }
            }
        }
        tree
    }

    /// Live descendants of `root`, excluding `root` itself.
    pub fn descendants(&self, root: u32) -> Vec<ProcInfo> {
        let mut found = Vec::new();
        let mut queue = vec![root as i32];
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
pub fn signal_tree(supervisor: u32, pgid: Option<u32>, sig: Signal) -> usize {
    let tree = descendants(supervisor);
    let mut count = 0;
    if let Some(pgid) = pgid {
        // The group id is ours only while a member of it is our descendant (or
        // /proc is unavailable and we cannot tell, in which case the group
        // leader is our unreaped child and the id cannot have been reused).
        let group_alive = tree.is_empty() || tree.iter().any(|p| p.pgid == pgid as i32);
        if group_alive && signal::killpg(Pid::from_raw(pgid as i32), sig).is_ok() {
            count += 1;
        }
    }
    for proc in &tree {
        if signal::kill(Pid::from_raw(proc.pid), sig).is_ok() {
            count += 1;
        }
    }
    count
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
    pub sid: Option<u32>,
    /// The supervisor's start time; `None` for records from before it was
    /// kept, where the child's start time is the best lower bound.
    pub since: Option<u64>,
}

impl TaskMark {
    pub fn of(meta: &TaskMeta) -> TaskMark {
        TaskMark {
            id: meta.id.clone(),
            sid: meta.sid,
            since: meta.supervisor_start.or(meta.pid_start),
        }
    }
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
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if let Some(info) = read_stat(pid) {
                    procs.push((info, task_marker(pid)));
                }
            }
        }
        ProcTable { procs }
    }

    /// The live processes of the task `mark` names (never this process).
    /// Without a start time to check against (`since` unknown) nothing is
    /// proven, and nothing is returned unless `unproven` is set (for
    /// decisions that only keep things, like cleanup).
    pub fn of_task(&self, mark: &TaskMark, unproven: bool) -> Vec<ProcInfo> {
        let me = std::process::id() as i32;
        if mark.since.is_none() && !unproven {
            return Vec::new();
        }
        let reused_session = mark.sid.is_some_and(|sid| {
            self.procs.iter().any(|(p, _)| {
                p.pid == sid as i32
                    && !p.zombie
                    && mark.since.is_some_and(|since| p.start_ticks != since)
            })
        });
        self.procs
            .iter()
            .filter(|(p, marker)| {
                let in_session = !reused_session && mark.sid == Some(p.session as u32);
                let marked = marker.as_deref() == Some(mark.id.as_str());
                p.pid != me
                    && !p.zombie
                    && (in_session || marked)
                    && mark.since.is_none_or(|since| p.start_ticks >= since)
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Every live process carrying a task marker, with the task id.
    pub fn marked(&self) -> impl Iterator<Item = (&ProcInfo, &str)> {
        self.procs
            .iter()
            .filter(|(p, _)| !p.zombie)
            .filter_map(|(p, m)| Some((p, m.as_deref()?)))
    }
}

/// The `BGT_TASK_ID` in a process's initial environment, if readable.
#[cfg(target_os = "linux")]
fn task_marker(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TASK_ID_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|id| String::from_utf8_lossy(id).into_owned())
}

/// The command name of a process (`comm`), for messages.
pub fn name(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// True when `pid` (alive or a zombie) belongs to the task of the calling
/// supervisor `me`: it is in the task's session or descends from `me`.
pub fn is_task_process(pid: i32, me: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut current = pid;
        for _ in 0..256 {
            let Some(info) = read_stat(current) else {
                return false;
            };
            if info.session == me as i32 || info.ppid == me as i32 {
                return true;
            }
            if info.ppid <= 1 {
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
pub fn signal_each(procs: &[ProcInfo], sig: Signal) -> Vec<(i32, nix::errno::Errno)> {
    procs
        .iter()
        .filter_map(|p| match signal::kill(Pid::from_raw(p.pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => None,
            Err(e) => Some((p.pid, e)),
        })
        .collect()
}

/// True when `pid` is alive and is the same process that started at `ticks`.
pub fn is_same_process(pid: u32, ticks: Option<u64>) -> bool {
    match (start_ticks(pid), ticks) {
        (Some(now), Some(then)) => now == then,
        _ => false,
    }
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
        let me = std::process::id();
        assert!(start_ticks(me).is_some());
        assert!(is_same_process(me, start_ticks(me)));
        assert!(!is_same_process(me, Some(0)));
    }
}

//! Process control: signal names, process trees, and proof of identity.
//!
//! bgt never signals a bare pid it read from a file: a pid is trusted only
//! while the task's supervisor provably lives (its lock is held), or when
//! the kernel's start time for that pid matches the one recorded at spawn.
//! On Linux the supervisor is a child subreaper, so every process the task
//! ever forked (even one that called setsid) stays its descendant; walking
//! `/proc` from the supervisor finds them all.

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::str::FromStr;

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
    pub zombie: bool,
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses.
#[cfg(target_os = "linux")]
fn read_stat(pid: i32) -> Option<ProcInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5); starttime is field 22.
    Some(ProcInfo {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
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
/// Empty where the OS has no `/proc`.
pub fn descendants(root: u32) -> Vec<ProcInfo> {
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut children: HashMap<i32, Vec<ProcInfo>> = HashMap::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(info) = read_stat(pid) {
                children.entry(info.ppid).or_default().push(info);
            }
        }
        let mut found = Vec::new();
        let mut queue = vec![root as i32];
        while let Some(parent) = queue.pop() {
            for child in children.remove(&parent).unwrap_or_default() {
                queue.push(child.pid);
                if !child.zombie {
                    found.push(child);
                }
            }
        }
        found
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        Vec::new()
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

//! Who holds a listening TCP port, from `/proc` (Linux).
//!
//! `wait --for-port` must not call a task ready because a server left over
//! from an earlier run answers on its port: the task then dies with
//! EADDRINUSE while `wait` says "ready". A connect cannot tell the two
//! apart; the kernel can. `/proc/net/tcp{,6}` lists each listening socket
//! with its inode, `/proc/PID/fd` links name the processes holding it, and
//! `/proc/PID/stat` says when each of them started, in the same clock ticks
//! as the task's recorded `pid_start`. Where any of this is unreadable (no
//! `/proc`, another user's processes) the answer is "unknown" and callers
//! fall back to the port alone.

use std::collections::{HashMap, HashSet};

/// A process holding a listening socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: crate::procs::Pid,
    /// The process name (`/proc/PID/comm`), e.g. `python3`.
    pub name: String,
    /// Kernel start time in clock ticks since boot (see `procs::start_ticks`).
    pub start_ticks: u64,
}

/// Inodes of the sockets listening on TCP `port` (any local address, IPv4
/// and IPv6). `None` when the socket tables cannot be read.
pub fn listening_inodes(port: u16) -> Option<HashSet<u64>> {
    let mut found = HashSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        found.extend(text.lines().skip(1).filter_map(|l| listener_inode(l, port)));
    }
    readable.then_some(found)
}

/// The inode of one `/proc/net/tcp` row if it is a socket listening on `port`.
fn listener_inode(row: &str, port: u16) -> Option<u64> {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    let fields: Vec<&str> = row.split_whitespace().collect();
    let local_port = fields.get(1)?.rsplit_once(':')?.1;
    let listening = *fields.get(3)? == "0A";
    if !listening || u16::from_str_radix(local_port, 16).ok()? != port {
        return None;
    }
    fields.get(9)?.parse().ok().filter(|inode| *inode != 0)
}

/// For each of `inodes`, the holder that started first (the socket is at
/// least as old as it). Sockets held only by processes whose descriptors we
/// may not read are missing from the map.
pub fn holders(inodes: &HashSet<u64>) -> HashMap<u64, Holder> {
    let mut found: HashMap<u64, Holder> = HashMap::new();
    for pid in crate::procs::pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue; // gone, or another user's
        };
        for fd in fds.flatten() {
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l))
            else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let Some(start_ticks) = crate::procs::start_ticks(pid) else {
                continue;
            };
            if found
                .get(&inode)
                .is_some_and(|h| h.start_ticks <= start_ticks)
            {
                continue;
            }
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|n| n.trim_end().to_string())
                .unwrap_or_else(|_| "?".into());
            found.insert(
                inode,
                Holder {
                    pid,
                    name,
                    start_ticks,
                },
            );
        }
    }
    found
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &std::path::Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_rows_only() {
        let listen = "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        let established = "   1: 0100007F:1F40 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1";
        let v6 = "   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener_inode(listen, 8000), Some(4242));
        assert_eq!(listener_inode(listen, 8001), None);
        assert_eq!(listener_inode(established, 8000), None);
        assert_eq!(listener_inode(v6, 8000), Some(77));
        assert_eq!(
            socket_inode(std::path::Path::new("socket:[4242]")),
            Some(4242)
        );
        assert_eq!(socket_inode(std::path::Path::new("pipe:[4242]")), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let inodes = listening_inodes(port).unwrap();
        assert_eq!(inodes.len(), 1);
        let holders = holders(&inodes);
        let holder = holders.values().next().unwrap();
        assert_eq!(holder.pid, crate::procs::Pid::this());
    }
}

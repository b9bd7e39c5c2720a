//! Queues and dependencies without a server: each waiting task's own
//! supervisor blocks on file locks or inotify until its turn comes.
//!
//! ```text
//! $BGT_HOME/.queues/<name>/       0700, name validated like a label
//!   lock                          flock'd while a ticket is numbered
//!   seq                           the last ticket number handed out
//!   slots                         how many tasks may run at once (absent: 1)
//!   paused                        present while `bgt pause --queue` holds new starts
//!   ticket-0000000000000042       flock'd by the supervisor waiting with number 42
//!   slot-0, slot-1, ...           flock'd by the supervisor of a running task
//! ```
//!
//! FIFO: flock wakes waiters in no particular order, so order comes from
//! tickets. A ticket is numbered under the queue's lock (numbers are never
//! reused) and appears already locked (created under a temporary name and
//! renamed). A waiter blocks on the lock of the nearest older ticket that
//! is still held; when that one goes (it started, or its supervisor died:
//! the lock dies with the process), it looks again. The oldest waiter
//! alone takes slots: it try-locks `slot-N` files and, while none is free,
//! sleeps in inotify until a slot file is closed (its holder exited, even
//! by kill -9), the limit changes or the queue is resumed. Nothing polls,
//! and a killed waiter or runner frees its place because its locks die with it.

use crate::task::dirfd::{Access, DirFd};
use crate::task::store::QUEUES_DIR;
use crate::task::store::validate_name;
use std::fs::{File, TryLockError};
use std::io;
use std::os::fd::{AsFd, AsRawFd};

const LOCK: &str = "lock";
const SEQ: &str = "seq";
const SLOTS: &str = "slots";
const PAUSED: &str = "paused";
const TICKET_PREFIX: &str = "ticket-";
const SLOT_PREFIX: &str = "slot-";
/// Most slots a queue may have (one lock file each).
pub const MAX_SLOTS: usize = 1024;

/// One queue's directory, held open.
pub struct Queue {
    dir: DirFd,
    pub name: String,
}

/// A place in line: the held lock of `ticket-N`.
pub struct Ticket {
    number: u64,
    _file: File,
}

/// A queue's state as `bgt queue` shows it.
#[derive(Debug, Clone)]
pub struct QueueState {
    pub slots: usize,
    pub running: usize,
    pub waiting: usize,
    pub paused: bool,
}

fn ticket_name(number: u64) -> String {
    format!("{TICKET_PREFIX}{number:016}")
}

/// Checks a queue name (it becomes a directory name).
pub fn validate(name: &str) -> Result<(), String> {
    validate_name("queue name", name)
}

impl Queue {
    /// Opens queue `name` in the state directory `state`, creating it (0700).
    pub fn open(state: &DirFd, name: &str) -> io::Result<Queue> {
        validate(name).map_err(io::Error::other)?;
        let queues = open_or_create(state, QUEUES_DIR)?;
        Ok(Queue {
            dir: open_or_create(&queues, name)?,
            name: name.to_string(),
        })
    }

    /// Opens queue `name` only if it exists.
    pub fn existing(state: &DirFd, name: &str) -> Option<Queue> {
        validate(name).ok()?;
        Some(Queue {
            dir: state.open_dir(QUEUES_DIR).ok()?.open_dir(name).ok()?,
            name: name.to_string(),
        })
    }

    fn lock(&self) -> io::Result<File> {
        let file = self.dir.open_file(LOCK, Access::CreateOrOpen)?;
        file.lock()?;
        Ok(file)
    }

    /// How many of the queue's tasks may run at once (default 1).
    pub fn slots(&self) -> usize {
        self.dir
            .read(SLOTS)
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
            .filter(|n| (1..=MAX_SLOTS).contains(n))
            .unwrap_or(1)
    }

    /// Changes the limit; the waiting head sees it at once (inotify).
    pub fn set_slots(&self, slots: usize) -> io::Result<()> {
        self.dir
            .write_atomic(SLOTS, format!("{slots}\n").as_bytes(), false)
    }

    pub fn paused(&self) -> bool {
        self.dir.exists(PAUSED)
    }

    /// Holds (or allows again) new starts; running tasks are not touched.
    pub fn set_paused(&self, paused: bool) -> io::Result<()> {
        if paused {
            self.dir.write_atomic(PAUSED, b"paused\n", false)
        } else {
            match self.dir.remove_file(PAUSED) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }

    /// Makes the ticket counter exist, so that taking a ticket later
    /// rewrites it in place and needs no free space: a task waiting for
    /// `--after` tasks takes its place in line when they end, maybe on a
    /// disk one of them filled.
    pub fn prepare(&self) -> io::Result<()> {
        let _lock = self.lock()?;
        if self.dir.exists(SEQ) {
            return Ok(());
        }
        self.dir.write_atomic(SEQ, b"0\n", false)
    }

    /// Takes the next place in line. The ticket exists, locked, before this returns.
    pub fn take_ticket(&self) -> io::Result<Ticket> {
        let _lock = self.lock()?;
        let last: u64 = self
            .dir
            .read(SEQ)
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok())
            .unwrap_or(0);
        let number = last + 1;
        self.dir
            .rewrite_locked(SEQ, format!("{number}\n").as_bytes())?;
        let tmp = format!(".{TICKET_PREFIX}new-{}", std::process::id());
        let _ = self.dir.remove_file(&tmp);
        let file = self.dir.open_file(&tmp, Access::CreateNew)?;
        file.lock()?;
        self.dir.rename(&tmp, &ticket_name(number))?;
        Ok(Ticket {
            number,
            _file: file,
        })
    }

    /// Numbers of the tickets in the directory, smallest first.
    fn tickets(&self) -> io::Result<Vec<u64>> {
        let mut numbers: Vec<u64> = self
            .dir
            .entries()?
            .iter()
            .filter_map(|n| n.to_str()?.strip_prefix(TICKET_PREFIX)?.parse().ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Blocks until no older ticket is held: its turn is next.
    fn wait_for_turn(&self, ticket: &Ticket) -> io::Result<()> {
        loop {
            let older: Vec<u64> = self
                .tickets()?
                .into_iter()
                .filter(|n| *n < ticket.number)
                .collect();
            let mut blocker = None;
            for number in older.into_iter().rev() {
                let name = ticket_name(number);
                let Ok(file) = self.dir.open_file(&name, Access::Read) else {
                    continue; // gone meanwhile
                };
                match file.try_lock_shared() {
                    Err(TryLockError::WouldBlock) => {
                        blocker = Some(file);
                        break;
                    }
                    Ok(()) => {
                        // Its waiter died: the number is never reused, so
                        // the name still means that dead ticket.
                        let _ = self.dir.remove_file(&name);
                    }
                    Err(TryLockError::Error(e)) => return Err(e),
                }
            }
            match blocker {
                // Blocks (no CPU) until that waiter starts or dies.
                Some(file) => file.lock_shared()?,
                None => return Ok(()),
            }
        }
    }

    /// Waits for a free slot while this is the oldest ticket; returns the
    /// held slot lock (keep it for the task's life). Keep the ticket until
    /// the task has started, then [`Queue::leave`]: the next waiter moves
    /// up only then, so tasks start in queue order, not just take slots in it.
    pub fn wait(&self, ticket: &Ticket) -> io::Result<File> {
        self.wait_for_turn(ticket)?;
        self.take_slot()
    }

    /// Gives up a place in line (the task started, or will never).
    pub fn leave(&self, ticket: Ticket) {
        let _ = self.dir.remove_file(&ticket_name(ticket.number));
        drop(ticket);
    }

    /// Blocks in inotify until a slot under the limit is free and the queue
    /// is not paused. Where inotify cannot be had (the per-user limit on
    /// instances, 128 by default, is reached when that many tasks watch
    /// their logs) it looks again with a growing nap instead: slower to
    /// notice, never a task skipped for it.
    fn take_slot(&self) -> io::Result<File> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        // Watch before looking, so nothing that happens in between is missed.
        // Only write-closes: our own read-only opens (slots, paused) must not wake us.
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).ok().filter(|inotify| {
            inotify
                .add_watch(
                    format!("/proc/self/fd/{}", self.dir.as_fd().as_raw_fd()).as_str(),
                    AddWatchFlags::IN_CLOSE_WRITE
                        | AddWatchFlags::IN_CREATE
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_MOVED_TO,
                )
                .is_ok()
        });
        let mut backoff =
            crate::lifecycle::waiting::Backoff::new(std::time::Duration::from_millis(10));
        // Slot files stay open here: closing one would wake ourselves.
        let mut open: std::collections::BTreeMap<usize, File> = Default::default();
        loop {
            if !self.paused()
                && let Some(slot) = self.try_slot(&mut open)?
            {
                return Ok(slot);
            }
            match &inotify {
                Some(inotify) => {
                    inotify.read_events().map_err(io::Error::from)?;
                }
                None => std::thread::sleep(backoff.next_nap()),
            }
        }
    }

    /// One look: a free slot under the limit, if the running count allows it.
    fn try_slot(
        &self,
        open: &mut std::collections::BTreeMap<usize, File>,
    ) -> io::Result<Option<File>> {
        let limit = self.slots();
        let mut indices: Vec<usize> = self
            .dir
            .entries()?
            .iter()
            .filter_map(|n| n.to_str()?.strip_prefix(SLOT_PREFIX)?.parse().ok())
            .filter(|i| *i < MAX_SLOTS)
            .collect();
        indices.extend(0..limit);
        indices.sort_unstable();
        indices.dedup();
        let mut held = 0;
        let mut free = Vec::new();
        for i in indices {
            let file = match open.entry(i) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let access = if i < limit {
                        Access::CreateOrOpen
                    } else {
                        Access::ReadWrite
                    };
                    match self.dir.open_file(&format!("{SLOT_PREFIX}{i}"), access) {
                        Ok(file) => entry.insert(file),
                        Err(_) => continue,
                    }
                }
            };
            match file.try_lock() {
                Ok(()) => free.push(i),
                Err(TryLockError::WouldBlock) => held += 1,
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        let chosen = (held < limit)
            .then(|| free.iter().copied().find(|i| *i < limit))
            .flatten();
        for i in &free {
            if Some(*i) != chosen {
                let _ = open[i].unlock();
            }
        }
        Ok(chosen.and_then(|i| open.remove(&i)))
    }

    /// Slots, running tasks (held slots), waiting tickets, paused.
    pub fn state(&self) -> QueueState {
        let held = |name: &str| {
            self.dir
                .open_file(name, Access::Read)
                .is_ok_and(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)))
        };
        let names: Vec<String> = self
            .dir
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        QueueState {
            slots: self.slots(),
            running: names
                .iter()
                .filter(|n| n.starts_with(SLOT_PREFIX) && held(n))
                .count(),
            waiting: names
                .iter()
                .filter(|n| n.starts_with(TICKET_PREFIX) && held(n))
                .count(),
            paused: self.paused(),
        }
    }
}

fn open_or_create(parent: &DirFd, name: &str) -> io::Result<DirFd> {
    match parent.create_dir(name) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    parent.open_dir(name)
}

/// Blocks until every task in `after` has ended (a blocking shared lock on
/// each one's `lock`: it is granted the moment its supervisor exits). With
/// `ok`, fails with the reason as soon as one did not exit 0.
pub fn wait_after(state: &DirFd, after: &[String], ok: bool) -> Result<(), String> {
    use crate::task::meta::{Exit, State, TaskMeta};
    for id in after {
        let Ok(dir) = state.open_dir(id) else {
            if ok {
                return Err(format!("{id} was removed before it ended"));
            }
            continue;
        };
        if let Ok(lock) = dir.open_file(crate::task::store::LOCK, Access::Read) {
            let _ = lock.lock_shared();
        }
        if !ok {
            continue;
        }
        let why = match TaskMeta::load_in(&dir) {
            Ok(meta) => match &meta.state {
                State::Exited {
                    exit: Exit::Code(0),
                } => continue,
                State::Exited { exit } => format!("exited {exit}"),
                State::Signaled { exit } => format!("was killed by {exit}"),
                State::Stopped { .. } => "was stopped".into(),
                State::TimedOut { .. } => "timed out".into(),
                State::Skipped { .. } => "was skipped".into(),
                _ => "was lost".into(),
            },
            Err(_) => "is broken".into(),
        };
        return Err(format!("{id} {why}"));
    }
    Ok(())
}

//! The state directory: one directory per task, named by its id.
//!
//! ```text
//! $BGT_HOME/                 0700, owned by the user, else refused
//!   t-3f9a2c/
//!     meta.json              the record (see meta.rs), replaced atomically
//!     lock                   flock'd by the supervisor for its whole life
//!     stdout.log stderr.log  the child's fds 1 and 2, written directly
//!     stop                   a stop request (signal, grace) for the supervisor
//!     index.json, index.lock line-count index and its lock (logread.rs)
//!     cursors/<name>.json    persisted `--since` positions (and <name>.lock)
//! ```
//!
//! A task directory is assembled under a hidden temporary name, with its
//! lock already held, and renamed into place: readers never see a task
//! without its record or a starting task without a live lock.

use crate::error::{io_message, usage};
use crate::meta::{Exit, State, TaskMeta};
use anyhow::{Context, Result, bail};
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File names inside a task directory.
pub const META: &str = "meta.json";
pub const LOCK: &str = "lock";
pub const STOP: &str = "stop";
pub const STDOUT_LOG: &str = "stdout.log";
pub const STDERR_LOG: &str = "stderr.log";
pub const INDEX: &str = "index.json";
pub const INDEX_LOCK: &str = "index.lock";
pub const CURSORS: &str = "cursors";

/// The resolved, checked state directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// Picks the state directory: `$BGT_HOME`, `$XDG_STATE_HOME/bgt`, `~/.local/state/bgt`.
pub fn default_root() -> Result<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = nonempty("BGT_HOME") {
        return Ok(PathBuf::from(home));
    }
    if let Some(state) = nonempty("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(state.join("bgt"));
    }
    if let Some(state) = dirs::state_dir() {
        return Ok(state.join("bgt"));
    }
    let home = dirs::home_dir().context("cannot find the home directory; set BGT_HOME")?;
    Ok(home.join(".local/state/bgt"))
}

impl Store {
    /// Opens (creating if needed) the default state directory.
    pub fn open_default() -> Result<Store> {
        Store::open(default_root()?)
    }

    /// Opens a state directory, creating it 0700; refuses one that another
    /// user owns or that others may write, since tasks run commands from it.
    pub fn open(root: PathBuf) -> Result<Store> {
        // Absolute, so paths handed to supervisors (which chdir to /) stay valid.
        let root = std::path::absolute(&root).unwrap_or(root);
        match fs::symlink_metadata(&root) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&root)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot create state directory {}: {}",
                            root.display(),
                            io_message(&e)
                        )
                    })?;
            }
            Err(e) => bail!(
                "cannot use state directory {}: {}",
                root.display(),
                io_message(&e)
            ),
        }
        let info = fs::metadata(&root).map_err(|e| {
            anyhow::anyhow!(
                "cannot use state directory {}: {}",
                root.display(),
                io_message(&e)
            )
        })?;
        if !info.is_dir() {
            bail!("state directory {} is not a directory", root.display());
        }
        if info.uid() != nix::unistd::geteuid().as_raw() {
            bail!(
                "refusing state directory {}: owned by uid {}, not by you",
                root.display(),
                info.uid()
            );
        }
        let mode = info.mode() & 0o777;
        if mode & 0o022 != 0 {
            bail!(
                "refusing state directory {}: writable by others (mode {:o}); chmod 700 it",
                root.display(),
                mode
            );
        }
        if mode != 0o700 {
            // Ours and not writable by others: tighten quietly (may fail on a read-only fs).
            let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o700));
        }
        Ok(Store { root })
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a task directory for `meta` (its id and log paths are filled
    /// in here) and returns it with its lock held exclusively.
    pub fn create(&self, meta: &mut TaskMeta) -> Result<(Task, File)> {
        for _ in 0..32 {
            let id = new_id()?;
            let dir = self.root.join(&id);
            if fs::symlink_metadata(&dir).is_ok() {
                continue;
            }
            let tmp = self.root.join(format!(".new-{id}-{}", std::process::id()));
            meta.id = id.clone();
            meta.stdout_log = dir.join(STDOUT_LOG);
            meta.stderr_log = dir.join(STDERR_LOG);
            let lock = match assemble(&tmp, meta) {
                Ok(lock) => lock,
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(
                        e.context(format!("cannot create a task in {}", self.root.display()))
                    );
                }
            };
            match rename_noreplace(&tmp, &dir) {
                Ok(()) => return Ok((Task::at(id, dir), lock)),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EEXIST | nix::libc::ENOTEMPTY)
                    ) =>
                {
                    let _ = fs::remove_dir_all(&tmp);
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    bail!(
                        "cannot create a task in {}: {}",
                        self.root.display(),
                        io_message(&e)
                    );
                }
            }
        }
        bail!("cannot find a free task id in {}", self.root.display())
    }

    /// All tasks, oldest first; unreadable ones are included as broken.
    pub fn list(&self) -> Result<Vec<Task>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) => bail!(
                "cannot read state directory {}: {}",
                self.root.display(),
                io_message(&e)
            ),
        };
        let mut tasks: Vec<Task> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                (!name.starts_with('.')).then(|| Task::at(name, entry.path()))
            })
            .collect();
        tasks.sort_by_key(|a| a.sort_key());
        Ok(tasks)
    }

    /// Finds a task by exact id, label (newest wins) or unique id prefix.
    pub fn resolve(&self, query: &str) -> Result<Task> {
        let tasks = self.list()?;
        resolve_in(tasks, query)
    }
}

/// Resolution over an already-listed set of tasks (used by commands taking many).
pub fn resolve_in(tasks: Vec<Task>, query: &str) -> Result<Task> {
    if query.is_empty() {
        return Err(usage("empty task name"));
    }
    if let Some(pos) = tasks.iter().position(|t| t.id == query) {
        return Ok(tasks.into_iter().nth(pos).expect("position is in range"));
    }
    if let Some(pos) = tasks.iter().rposition(|t| {
        t.meta
            .as_ref()
            .is_ok_and(|m| m.label.as_deref() == Some(query))
    }) {
        return Ok(tasks.into_iter().nth(pos).expect("position is in range"));
    }
    let prefixed = format!("t-{query}");
    let mut found: Vec<Task> = tasks
        .into_iter()
        .filter(|t| t.id.starts_with(query) || t.id.starts_with(&prefixed))
        .collect();
    match found.len() {
        0 => bail!("no task matches '{query}' (see `bgt status`)"),
        1 => Ok(found.remove(0)),
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(
                    |t| match t.meta.as_ref().ok().and_then(|m| m.label.clone()) {
                        Some(label) => format!("{} ({label})", t.id),
                        None => t.id.clone(),
                    },
                )
                .collect();
            bail!("'{query}' is ambiguous: {}", names.join(", "))
        }
    }
}

/// Builds the task directory under its temporary name; returns the held lock.
fn assemble(tmp: &Path, meta: &TaskMeta) -> Result<File> {
    DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .map_err(|e| anyhow::anyhow!(io_message(&e)))?;
    let lock = create_private(&tmp.join(LOCK))?;
    lock.lock()
        .map_err(|e| anyhow::anyhow!("cannot lock: {}", io_message(&e)))?;
    for log in [STDOUT_LOG, STDERR_LOG] {
        create_private(&tmp.join(log))?;
    }
    meta.store(&tmp.join(META))?;
    Ok(lock)
}

/// Creates a new file with mode 0600 whatever the umask; never follows a planted symlink.
pub fn create_private(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), io_message(&e)))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
        .map_err(std::io::Error::from)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    // rename(2) refuses a non-empty target; task directories are never empty.
    if fs::symlink_metadata(to).is_ok() {
        return Err(std::io::Error::from_raw_os_error(nix::libc::EEXIST));
    }
    fs::rename(from, to)
}

/// A short random id such as `t-3f9a2c` (24 bits; creation retries on collision).
fn new_id() -> Result<String> {
    let mut bytes = [0u8; 3];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(format!(
        "t-{:02x}{:02x}{:02x}",
        bytes[0], bytes[1], bytes[2]
    ))
}

/// Checks a user-chosen name (label, cursor): it may end up in a path or a
/// shell script, so only a safe alphabet is accepted.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} {name:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        ))
    }
}

/// One task directory and its record (or why the record cannot be read).
#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub dir: PathBuf,
    pub meta: Result<TaskMeta, String>,
}

/// What a reader can tell about a task right now.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Created; the supervisor is starting the child.
    Starting,
    /// Supervised and running. `exit` is set when the main process has ended
    /// but `descendants` of it still run.
    Running {
        exit: Option<Exit>,
        descendants: usize,
    },
    /// Finished with a final record.
    Done(State),
    /// The supervisor vanished without a final record (kill -9, OOM, reboot).
    Lost,
    /// The task directory or its record is unusable.
    Broken(String),
}

impl Phase {
    /// Whether the task may still be doing something.
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Starting | Phase::Running { .. })
    }

    /// Short machine-friendly name used in JSON and tables.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running { .. } => "running",
            Phase::Done(State::Exited) => "exited",
            Phase::Done(State::Signaled) => "signaled",
            Phase::Done(State::Stopped) => "stopped",
            Phase::Done(State::TimedOut) => "timed-out",
            Phase::Done(State::Starting | State::Running) => "lost",
            Phase::Lost => "lost",
            Phase::Broken(_) => "broken",
        }
    }
}

impl Task {
    /// Reads the task at `dir`; never fails, a bad record becomes `Err(reason)`.
    pub fn at(id: String, dir: PathBuf) -> Task {
        let meta = match fs::symlink_metadata(&dir) {
            Ok(info) if info.is_dir() => {
                TaskMeta::load(&dir.join(META)).map_err(|e| format!("{e:#}"))
            }
            Ok(_) => Err("not a task directory".to_string()),
            Err(e) => Err(io_message(&e)),
        };
        Task { id, dir, meta }
    }

    /// Re-reads the record (after waiting or stopping).
    pub fn reload(&self) -> Task {
        Task::at(self.id.clone(), self.dir.clone())
    }

    fn sort_key(&self) -> (i64, String) {
        let created = match &self.meta {
            Ok(meta) => meta.created.timestamp_millis(),
            Err(_) => fs::symlink_metadata(&self.dir)
                .map(|m| m.mtime() * 1000)
                .unwrap_or(0),
        };
        (created, self.id.clone())
    }

    /// The record, or an error naming the task and what is wrong with it.
    pub fn meta(&self) -> Result<&TaskMeta> {
        self.meta
            .as_ref()
            .map_err(|reason| anyhow::anyhow!("task {} is broken: {reason}", self.id))
    }

    /// True while some process (the supervisor) holds the task's lock.
    pub fn is_locked(&self) -> bool {
        let Ok(file) = File::open(self.dir.join(LOCK)) else {
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }

    /// The phase as of now. Liveness comes from the lock, never from a pid.
    pub fn phase(&self) -> Phase {
        let meta = match &self.meta {
            Ok(meta) => meta,
            Err(reason) => return Phase::Broken(reason.clone()),
        };
        if meta.state.is_final() {
            return Phase::Done(meta.state.clone());
        }
        if !self.is_locked() {
            // The lock is free, but the supervisor may have written its final
            // record between our read and the lock probe: look once more.
            let fresh = self.reload();
            return match fresh.meta {
                Ok(m) if m.state.is_final() => Phase::Done(m.state),
                _ => Phase::Lost,
            };
        }
        match meta.state {
            State::Starting => Phase::Starting,
            _ => Phase::Running {
                exit: meta.exit.clone(),
                descendants: match (&meta.exit, meta.supervisor_pid) {
                    (Some(_), Some(sup)) => crate::process::descendants(sup).len(),
                    _ => 0,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("label", "web-1.dev_x").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            "a\0b",
            "a\nb",
            ".hidden",
            "-x",
            &"x".repeat(65),
        ] {
            assert!(
                validate_name("label", bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn ids_look_right() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 8);
        assert!(id.starts_with("t-"));
    }
}

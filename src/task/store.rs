//! The state directory: one directory per task, named by its id.
//!
//! ```text
//! $BGT_HOME/                 0700, owned by the user, else refused
//!   t-3f9a2c/
//!     meta.json              the record (see meta.rs), replaced atomically
//!     lock                   flock'd by the supervisor for its whole life
//!     stdout.log stderr.log  the child's fds 1 and 2, written directly
//!     .meta.json.spare       space reserved for the final record (meta.rs)
//!     .meta.json.next.{0,1} space reserved for the supervisor's other records
//!     stop                   a stop request, only where there is no signalfd
//!     index.json, index.lock line-count index and its lock (logs/read.rs)
//!     cursors/<name>.json    persisted `--since` positions (and <name>.lock)
//! ```
//!
//! A task directory is assembled under a hidden temporary name, with its
//! lock already held, and renamed into place: readers never see a task
//! without its record or a starting task without a live lock.

use crate::error::{ErrorKind, fail, io_message, usage};
use crate::task::dirfd::{Access, DirFd};
use crate::task::meta::{Exit, LogsAtEnd, State, TaskMeta};
use anyhow::{Context, Result, bail};
use std::fs::{DirBuilder, File, TryLockError};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names inside a task directory.
pub const META: &str = "meta.json";
pub const LOCK: &str = "lock";
#[cfg_attr(target_os = "linux", allow(dead_code))] // only where there is no signalfd
pub const STOP: &str = "stop";
pub const STDOUT_LOG: &str = "stdout.log";
pub const STDERR_LOG: &str = "stderr.log";
pub const INDEX: &str = "index.json";
pub const INDEX_LOCK: &str = "index.lock";
pub const CURSORS: &str = "cursors";

/// The file that marks a directory as bgt's state directory. bgt only ever
/// lists, changes or removes things inside a directory that carries it.
pub const MARKER: &str = ".bgt";
/// What the marker says (for a person who finds it).
const MARKER_TEXT: &str =
    "bgt state directory (layout 1): task directories t-XXXXXX, managed by bgt\n";
/// Prefix of a task directory still being assembled by `bgt run`.
pub const NEW_PREFIX: &str = ".new-";
/// The directory of all queues (see `lifecycle::queue`).
pub const QUEUES_DIR: &str = ".queues";
/// Prefix of the per-label lock files that serialise `run --label`.
const LABEL_LOCK_PREFIX: &str = ".label.lock-";
/// Prefix of the per-label index files (the id of the task that last
/// claimed the label). Labels never start with `.` or `-`, so the two
/// prefixes cannot produce the same name.
const LABEL_INDEX_PREFIX: &str = ".label-";

/// The resolved, checked state directory, held open: every later operation
/// is relative to this descriptor (see `dirfd.rs`).
#[derive(Clone, Debug)]
pub struct Store {
    root: Arc<DirFd>,
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

/// True for a name bgt gives task directories: `t-` and lowercase hex.
pub fn is_task_id(name: &str) -> bool {
    name.strip_prefix("t-")
        .is_some_and(|hex| (6..=32).contains(&hex.len()) && is_lower_hex(hex))
}

/// Only the digits of an id: `0-9` and `a-f`.
fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// Opens (creating if needed) the default state directory.
    pub fn open_default() -> Result<Store> {
        Store::open(default_root()?)
    }

    /// Opens a state directory, creating it 0700 if it does not exist.
    ///
    /// It is opened once without following a symlink, and checked on that
    /// descriptor: owned by us and not writable by others (tasks run
    /// commands from it). An existing directory is used only if it is bgt's:
    /// it carries the marker, or is empty, or holds nothing but task
    /// directories of an earlier bgt (then it is marked, so upgrades never
    /// strand anyone's tasks). bgt never changes its mode.
    pub fn open(root: PathBuf) -> Result<Store> {
        Store::open_checked(root).map_err(|e| fail(ErrorKind::StateDir, crate::error::one_line(&e)))
    }

    fn open_checked(root: PathBuf) -> Result<Store> {
        // Absolute, so paths shown and handed to supervisors stay valid.
        let root = std::path::absolute(&root).unwrap_or(root);
        let shown = root.display();
        let dir = match DirFd::open(&root) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&root)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot create state directory {shown}: {}", io_message(&e))
                    })?;
                DirFd::open(&root).map_err(|e| {
                    anyhow::anyhow!("cannot use state directory {shown}: {}", io_message(&e))
                })?
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
                ) =>
            {
                // Only for the message: the open already refused it.
                if std::fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink()) {
                    bail!(
                        "state directory {shown} is a symlink; point BGT_HOME at the directory itself"
                    )
                }
                bail!("state directory {shown} is not a directory")
            }
            Err(e) => bail!("cannot use state directory {shown}: {}", io_message(&e)),
        };
        let info = dir.stat().map_err(|e| {
            anyhow::anyhow!("cannot use state directory {shown}: {}", io_message(&e))
        })?;
        if info.st_uid != nix::unistd::geteuid().as_raw() {
            bail!(
                "refusing state directory {shown}: owned by uid {}, not by you",
                info.st_uid
            );
        }
        let mode = info.st_mode & 0o777;
        if mode & 0o022 != 0 {
            bail!(
                "refusing state directory {shown}: writable by others (mode {mode:o}); chmod 700 it"
            );
        }
        adopt(&dir)?;
        Ok(Store {
            root: Arc::new(dir),
        })
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The open state directory.
    pub fn dir(&self) -> &DirFd {
        &self.root
    }

    /// Creates a task directory for `meta` (its id and log paths are filled
    /// in here) and returns it with its lock held exclusively.
    pub fn create(&self, meta: &mut TaskMeta) -> Result<(Task, File)> {
        let failed = |e: &std::io::Error| {
            anyhow::anyhow!(
                "cannot create a task in {}: {}",
                self.root().display(),
                io_message(e)
            )
        };
        for _ in 0..32 {
            let id = new_id()?;
            if self.root.exists(&id) {
                continue;
            }
            let tmp = format!("{NEW_PREFIX}{id}-{}", std::process::id());
            let dir = self.root().join(&id);
            meta.id = id.clone();
            meta.stdout_log = dir.join(STDOUT_LOG);
            meta.stderr_log = dir.join(STDERR_LOG);
            let lock = match self.assemble(&tmp, meta) {
                Ok(lock) => lock,
                Err(e) => {
                    let _ = self.root.remove_tree(&tmp);
                    return Err(
                        e.context(format!("cannot create a task in {}", self.root().display()))
                    );
                }
            };
            match self.root.rename_noreplace(&tmp, &id) {
                // The record just written is the one in memory: no read back.
                Ok(()) => {
                    let task = Task {
                        dir,
                        id,
                        root: self.root.clone(),
                        meta: Ok(meta.clone()),
                    };
                    return Ok((task, lock));
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EEXIST | nix::libc::ENOTEMPTY)
                    ) =>
                {
                    let _ = self.root.remove_tree(&tmp);
                }
                Err(e) => {
                    let _ = self.root.remove_tree(&tmp);
                    return Err(failed(&e));
                }
            }
        }
        bail!("cannot find a free task id in {}", self.root().display())
    }

    /// Builds the task directory under its temporary name; returns the held lock.
    fn assemble(&self, tmp: &str, meta: &TaskMeta) -> Result<File> {
        let err = |e: std::io::Error| anyhow::anyhow!(io_message(&e));
        self.root.create_dir(tmp).map_err(err)?;
        let dir = self.root.open_dir(tmp).map_err(err)?;
        let lock = dir.open_file(LOCK, Access::CreateNew).map_err(err)?;
        lock.lock()
            .map_err(|e| anyhow::anyhow!("cannot lock: {}", io_message(&e)))?;
        for log in [STDOUT_LOG, STDERR_LOG] {
            dir.open_file(log, Access::CreateNew).map_err(err)?;
        }
        meta.store_first(&dir)?;
        Ok(lock)
    }

    /// The task with this id (which need not exist).
    pub fn task(&self, id: String) -> Task {
        Task::at(self.root.clone(), id)
    }

    /// All tasks, oldest first; unreadable ones are included as broken.
    /// Only entries named like task ids are tasks: nothing else is listed.
    ///
    /// Records are read on up to four threads (each is a few syscalls and a
    /// small parse, and a busy machine keeps thousands).
    pub fn list(&self) -> Result<Vec<Task>> {
        let ids = self.task_ids()?;
        let mut tasks: Vec<Task> = crate::parallel::map(&ids, 512, |id| self.task(id.clone()));
        tasks.sort_by_cached_key(|a| a.sort_key());
        Ok(tasks)
    }

    /// Finds a task by exact id, label or unique id prefix.
    ///
    /// Costs do not grow with history: an id opens its directory directly,
    /// a label reads its index file (`.label-L`, the task that last claimed
    /// it), a prefix reads directory names only. The whole store is read
    /// only when the index is stale (its task was removed) or the name
    /// matches nothing.
    pub fn resolve(&self, query: &str) -> Result<Task> {
        if query.is_empty() {
            return Err(usage("empty task name"));
        }
        if is_task_id(query) && self.root.exists(query) {
            return Ok(self.task(query.to_string()));
        }
        if validate_name("label", query).is_ok() {
            if let Some(task) = self.indexed_label(query) {
                return Ok(task);
            }
            if !self.root.exists(&label_index(query)) {
                // Not a label: a prefix, judged on names alone.
                let found: Vec<Task> = self
                    .ids_with_prefix(query)?
                    .into_iter()
                    .map(|id| self.task(id))
                    .collect();
                if !found.is_empty() {
                    return resolve_in(found, query);
                }
            }
        }
        resolve_in(self.list()?, query)
    }

    /// The ids that start with `query` (with or without its `t-`).
    ///
    /// A prefix that leaves one or two hex digits of a bgt id open can name
    /// at most 256 ids ([`new_id`] makes six digits): each is looked up by
    /// name, which costs the same among ten tasks or ten thousand (reading
    /// ten thousand names took 5 ms). A shorter prefix reads every name, as
    /// does one that matches no such id, so an id of another length (which
    /// bgt never made) is found when nothing else is.
    fn ids_with_prefix(&self, query: &str) -> Result<Vec<String>> {
        let hex = query.strip_prefix("t-").unwrap_or(query);
        if let Some(open @ 1..=2) = ID_DIGITS.checked_sub(hex.len())
            && is_lower_hex(hex)
        {
            let found: Vec<String> = (0..16usize.pow(open as u32))
                .map(|n| format!("t-{hex}{n:0open$x}"))
                .filter(|id| self.root.exists(id))
                .collect();
            if !found.is_empty() {
                return Ok(found);
            }
        }
        let prefixed = format!("t-{query}");
        Ok(self
            .task_ids()?
            .into_iter()
            .filter(|id| id.starts_with(query) || id.starts_with(&prefixed))
            .collect())
    }

    /// The task a label's index names, if it still exists and holds the label.
    fn indexed_label(&self, label: &str) -> Option<Task> {
        let id = String::from_utf8(self.root.read(&label_index(label)).ok()?).ok()?;
        let id = id.trim();
        if !is_task_id(id) {
            return None;
        }
        let task = self.task(id.to_string());
        (task.label() == Some(label)).then_some(task)
    }

    /// Records that `id` now holds `label` (under the label's lock).
    pub fn index_label(&self, label: &str, id: &str) -> Result<()> {
        self.root
            .write_atomic(&label_index(label), id.as_bytes(), false)
            .map_err(|e| anyhow::anyhow!("cannot index label '{label}': {}", io_message(&e)))
    }

    /// Ids of every task directory, unsorted, without reading any record.
    fn task_ids(&self) -> Result<Vec<String>> {
        let entries = self.root.entries().map_err(|e| {
            anyhow::anyhow!(
                "cannot read state directory {}: {}",
                self.root().display(),
                io_message(&e)
            )
        })?;
        Ok(entries
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .filter(|name| is_task_id(name))
            .collect())
    }

    /// Serialises everything that decides which task a label names (`run
    /// --label`, `--replace`): held until the returned file is dropped.
    pub fn lock_label(&self, label: &str) -> Result<File> {
        let name = format!("{LABEL_LOCK_PREFIX}{label}");
        let file = self
            .root
            .open_file(&name, Access::CreateOrOpen)
            .map_err(|e| anyhow::anyhow!("cannot lock label '{label}': {}", io_message(&e)))?;
        file.lock()
            .map_err(|e| anyhow::anyhow!("cannot lock label '{label}': {}", io_message(&e)))?;
        Ok(file)
    }

    /// The active task (queued, starting, running) that holds `label`, if any.
    pub fn active_with_label(&self, label: &str) -> Result<Option<Task>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|t| t.label() == Some(label))
            .rfind(|t| t.phase().is_active()))
    }
}

/// Builds the label index for the tasks of an adopted directory (an earlier
/// bgt kept none): each label names its active task, else its newest one.
fn index_labels(dir: &DirFd) {
    let Ok(dir) = dir.try_clone() else { return };
    let store = Store {
        root: Arc::new(dir),
    };
    let Ok(tasks) = store.list() else { return };
    let mut best: std::collections::BTreeMap<String, (bool, usize)> = Default::default();
    for (i, task) in tasks.iter().enumerate() {
        if let Some(label) = task.label() {
            let active = task.phase().is_active();
            let entry = best.entry(label.to_string()).or_insert((active, i));
            if active || !entry.0 {
                *entry = (active, i);
            }
        }
    }
    for (label, (_, i)) in best {
        let _ = store.index_label(&label, &tasks[i].id);
    }
}

/// The label index file of `label`: the id of the task that last claimed it.
fn label_index(label: &str) -> String {
    format!("{LABEL_INDEX_PREFIX}{label}")
}

/// Accepts `dir` as a state directory or refuses it (see [`Store::open`]).
fn adopt(dir: &DirFd) -> Result<()> {
    if dir.exists(MARKER) {
        return Ok(());
    }
    let entries = dir.entries().map_err(|e| {
        anyhow::anyhow!(
            "cannot read state directory {}: {}",
            dir.path().display(),
            io_message(&e)
        )
    })?;
    // Empty, or an earlier bgt's: nothing but task directories (and its
    // own half-built or lock files).
    let ours = entries.iter().all(|name| {
        name.to_str().is_some_and(|name| {
            (is_task_id(name)
                && dir
                    .stat_at(name)
                    .is_ok_and(|s| s.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR))
                || name.starts_with(NEW_PREFIX)
                || name.starts_with(LABEL_LOCK_PREFIX)
                || name.starts_with(LABEL_INDEX_PREFIX)
                || name == QUEUES_DIR
                // another bgt marking it right now (`.bgt` and its temp file)
                || name.starts_with(MARKER)
                || name.starts_with(&format!(".{MARKER}"))
        })
    });
    if !ours {
        bail!(
            "{} is not a bgt state directory (no {MARKER} marker); point BGT_HOME at an empty or new directory",
            dir.path().display()
        );
    }
    index_labels(dir);
    // Marking needs a writable directory; a read-only one is still read.
    if let Err(e) = dir.write_atomic(MARKER, MARKER_TEXT.as_bytes(), true)
        && !matches!(
            e.raw_os_error(),
            Some(nix::libc::EROFS | nix::libc::EACCES | nix::libc::EPERM)
        )
    {
        bail!(
            "cannot mark state directory {}: {}",
            dir.path().display(),
            io_message(&e)
        );
    }
    Ok(())
}

/// Resolution over an already-listed set of tasks (used by commands taking many).
pub fn resolve_in(tasks: Vec<Task>, query: &str) -> Result<Task> {
    if query.is_empty() {
        return Err(usage("empty task name"));
    }
    if let Some(pos) = tasks.iter().position(|t| t.id == query) {
        return Ok(tasks.into_iter().nth(pos).expect("position is in range"));
    }
    // A label names its active task if it has one, else its newest one.
    let labelled = |t: &Task| t.label() == Some(query);
    let pos = tasks
        .iter()
        .rposition(|t| labelled(t) && t.phase().is_active())
        .or_else(|| tasks.iter().rposition(labelled));
    if let Some(pos) = pos {
        return Ok(tasks.into_iter().nth(pos).expect("position is in range"));
    }
    let prefixed = format!("t-{query}");
    let mut found: Vec<Task> = tasks
        .into_iter()
        .filter(|t| t.id.starts_with(query) || t.id.starts_with(&prefixed))
        .collect();
    match found.len() {
        0 => Err(fail(
            ErrorKind::UnknownTask,
            format!("no task matches '{query}' (see `bgt status`)"),
        )),
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
            Err(fail(
                ErrorKind::AmbiguousTask,
                format!("'{query}' is ambiguous: {}", names.join(", ")),
            ))
        }
    }
}

/// How many hex digits follow the `t-` of the ids bgt makes.
const ID_DIGITS: usize = 6;

/// A short random id such as `t-3f9a2c` (24 bits; creation retries on collision).
fn new_id() -> Result<String> {
    let mut bytes = [0u8; ID_DIGITS / 2];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes
        .iter()
        .fold("t-".to_string(), |id, b| format!("{id}{b:02x}")))
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
    /// Where it is, for messages and JSON; files are reached through `root`.
    pub dir: PathBuf,
    root: Arc<DirFd>,
    pub meta: Result<TaskMeta, String>,
}

/// What a reader can tell about a task right now.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Created; the supervisor is starting the child.
    Starting,
    /// The supervisor lives and waits for the task's turn (no child yet).
    Queued,
    /// Every process of the task is stopped by `bgt pause`.
    Paused,
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
        matches!(
            self,
            Phase::Starting | Phase::Queued | Phase::Paused | Phase::Running { .. }
        )
    }

    /// The state word shown in tables and JSON.
    pub fn state(&self) -> TaskState {
        match self {
            Phase::Starting => TaskState::Starting,
            Phase::Queued => TaskState::Queued,
            Phase::Paused => TaskState::Paused,
            Phase::Running { .. } => TaskState::Running,
            Phase::Done(State::Exited { .. }) => TaskState::Exited,
            Phase::Done(State::Signaled { .. }) => TaskState::Signaled,
            Phase::Done(State::Stopped { .. }) => TaskState::Stopped,
            Phase::Done(State::TimedOut { .. }) => TaskState::TimedOut,
            Phase::Done(State::Skipped { .. }) => TaskState::Skipped,
            Phase::Done(
                State::Starting | State::Queued | State::Running { .. } | State::Paused { .. },
            ) => TaskState::Lost,
            Phase::Lost => TaskState::Lost,
            Phase::Broken(_) => TaskState::Broken,
        }
    }

    /// The task's outcome as a shell exit status: its exit code, 128+n for
    /// signal n, 124 for a timeout (like timeout(1)), 1 when it never ran
    /// (skipped), is lost or broken; 0 while it is still active.
    pub fn exit_status(&self) -> i32 {
        match self {
            Phase::Done(State::TimedOut { .. }) => 124,
            Phase::Done(State::Skipped { .. }) | Phase::Lost | Phase::Broken(_) => 1,
            Phase::Done(state) => state.exit().map_or(0, Exit::status),
            _ => 0,
        }
    }

    /// Short machine-friendly name used in JSON and tables.
    pub fn name(&self) -> &'static str {
        self.state().name()
    }
}

/// The state of a task as every face shows it: the one list of state words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "mcp", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Created; the supervisor is starting the child.
    Starting,
    /// Waiting for `--after` tasks to end or a `--queue` slot; no process but its supervisor.
    Queued,
    /// Stopped with SIGSTOP by `bgt pause` until `bgt resume`.
    Paused,
    /// Supervised and running (the main process may have exited while descendants run).
    Running,
    /// The main process exited by itself and nothing of the task is left.
    Exited,
    /// Killed by a signal nobody in bgt sent.
    Signaled,
    /// Ended by `bgt stop`.
    Stopped,
    /// Ended by the supervisor because `--timeout` passed.
    TimedOut,
    /// Never started: a task it ran `--after-ok` did not succeed.
    Skipped,
    /// The supervisor vanished without recording an end (kill -9, OOM, reboot).
    Lost,
    /// The task's record cannot be read.
    Broken,
}

impl TaskState {
    /// Every state, in lifecycle order (for `status --state` and its help).
    pub const ALL: [TaskState; 11] = [
        TaskState::Starting,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Paused,
        TaskState::Exited,
        TaskState::Signaled,
        TaskState::Stopped,
        TaskState::TimedOut,
        TaskState::Skipped,
        TaskState::Lost,
        TaskState::Broken,
    ];

    /// The state named `word` (as serialized).
    pub fn from_name(word: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.name() == word)
    }

    /// The word, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Queued => "queued",
            TaskState::Paused => "paused",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Signaled => "signaled",
            TaskState::Stopped => "stopped",
            TaskState::TimedOut => "timed-out",
            TaskState::Skipped => "skipped",
            TaskState::Lost => "lost",
            TaskState::Broken => "broken",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Task {
    /// Reads the task `id` in `root`; never fails, a bad record becomes `Err(reason)`.
    fn at(root: Arc<DirFd>, id: String) -> Task {
        // One open in the common case; the two-step path for every failure
        // (or a kernel without openat2) says precisely what is wrong.
        let meta = match root.read_beneath(&format!("{id}/{META}")) {
            Ok(bytes) => TaskMeta::parse(&bytes).map_err(|e| format!("{e:#}")),
            Err(_) => Task::load_slowly(&root, &id),
        };
        Task {
            dir: root.path().join(&id),
            id,
            root,
            meta,
        }
    }

    /// The record of `id` read through its opened directory.
    fn load_slowly(root: &DirFd, id: &str) -> Result<TaskMeta, String> {
        match root.open_dir(id) {
            Ok(dir) => TaskMeta::load_in(&dir).map_err(|e| format!("{e:#}")),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => {
                Err("not a task directory".to_string())
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                Err("a symlink, not a task directory".to_string())
            }
            Err(e) => Err(io_message(&e)),
        }
    }

    /// Opens the task's directory, never through a symlink.
    pub fn open_dir(&self) -> Result<DirFd> {
        self.root
            .open_dir(&self.id)
            .map_err(|e| anyhow::anyhow!("cannot open task {}: {}", self.id, io_message(&e)))
    }

    /// True when both logs are still the files and lengths in `ends`
    /// (a missing log counts as empty). Stats through the state directory
    /// (one call, no open): a task directory swapped for a symlink could
    /// point these stats elsewhere, but then at best a file of the same
    /// inode and length elsewhere makes the recorded counts (bgt's own)
    /// show; nothing is read through the link, and otherwise the caller
    /// reads through [`Task::open_dir`], which refuses it.
    pub fn logs_still_are(&self, ends: &LogsAtEnd) -> bool {
        [(STDOUT_LOG, ends.stdout), (STDERR_LOG, ends.stderr)]
            .into_iter()
            .all(
                |(name, end)| match self.root.stat_at(&format!("{}/{name}", self.id)) {
                    Ok(st) => {
                        st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG
                            && st.st_size as u64 == end.bytes
                            && (end.bytes == 0 || st.st_ino == end.ino)
                    }
                    Err(_) => end.bytes == 0,
                },
            )
    }

    /// The state directory the task lives in (queues and other tasks are reached from it).
    pub fn state_dir(&self) -> &DirFd {
        &self.root
    }

    /// Re-reads the record (after waiting or stopping).
    pub fn reload(&self) -> Task {
        Task::at(self.root.clone(), self.id.clone())
    }

    /// The task's label, if its record can be read and has one.
    pub fn label(&self) -> Option<&str> {
        self.meta.as_ref().ok().and_then(|m| m.label.as_deref())
    }

    /// Removes the task directory and everything in it (never through a
    /// symlink). The caller has checked that nothing of the task runs.
    pub fn remove(&self) -> Result<()> {
        self.root.remove_tree(&self.id).map_err(|e| {
            anyhow::anyhow!("cannot remove {}: {}", self.dir.display(), io_message(&e))
        })
    }

    fn sort_key(&self) -> (i64, String) {
        let created = match &self.meta {
            Ok(meta) => meta.created.timestamp_millis(),
            Err(_) => self
                .root
                .stat_at(&self.id)
                .map(|m| m.st_mtime * 1000)
                .unwrap_or(0),
        };
        (created, self.id.clone())
    }

    /// The record, or an error naming the task and what is wrong with it.
    pub fn meta(&self) -> Result<&TaskMeta> {
        self.meta.as_ref().map_err(|reason| {
            fail(
                ErrorKind::BrokenTask,
                format!("task {} is broken: {reason}", self.id),
            )
        })
    }

    /// The task's lock file, opened for probing or waiting.
    pub fn open_lock(&self) -> Option<File> {
        self.root
            .open_dir(&self.id)
            .and_then(|dir| dir.open_file(LOCK, Access::Read))
            .ok()
    }

    /// True while some process (the supervisor) holds the task's lock.
    pub fn is_locked(&self) -> bool {
        let Some(file) = self.open_lock() else {
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }

    /// The phase as of now. Liveness comes from the lock, never from a pid.
    pub fn phase(&self) -> Phase {
        self.phase_with(&crate::procs::LazyProcTree::default())
    }

    /// [`Task::phase`], sharing one look at the process tree with other tasks.
    pub fn phase_with(&self, procs: &crate::procs::LazyProcTree) -> Phase {
        let meta = match &self.meta {
            Ok(meta) => meta,
            // A held lock means the supervisor lives whatever the record
            // says (e.g. rewritten by a newer bgt): say so.
            Err(reason) if self.is_locked() => {
                return Phase::Broken(format!("{reason}; its supervisor still runs"));
            }
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
            State::Queued => Phase::Queued,
            State::Paused { .. } => Phase::Paused,
            _ => Phase::Running {
                exit: meta.state.exit().cloned(),
                descendants: match (meta.state.exit(), meta.supervisor_pid) {
                    (Some(_), Some(sup)) => procs.get().descendants(sup).len(),
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
        assert_eq!(id.len(), 2 + ID_DIGITS);
        assert!(is_task_id(&id));
        assert!(id.starts_with("t-"));
    }
}

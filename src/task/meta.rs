//! `meta.json`: the single record of a task, written only by its creator and
//! its supervisor (and by `bgt stop` for a task whose supervisor is gone).
//!
//! Writes are atomic (temp file, fsync, rename), so a reader sees either the
//! old or the new record, never half of one. No record the supervisor
//! writes once the child runs may need free disk space (the child may fill
//! the disk the moment it starts: `run` would fail for a command that runs,
//! and the task end `lost`): before the spawn the supervisor reserves a
//! spare for the final record and a next file for the running one (two for
//! a pause, see `NEXT`), and writes each record into a reserved file's already
//! allocated blocks before renaming it over `meta.json` (see `store_final`,
//! `store_next`). The state is an enum whose
//! variants carry their own data, so a finished task without an exit status
//! cannot be represented.

use crate::error::io_message;
use crate::procs::Pid;
use crate::task::dirfd::{Access, DirFd};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// The spare record file for the final record, next to `meta.json`
/// (hidden: readers never list it).
pub const SPARE: &str = ".meta.json.spare";

/// The reserved files for the supervisor's records before the final one;
/// the supervisor alone writes them. The first is reserved before the
/// spawn, for the running record. A pause first reserves both and is made
/// only while both are there, so that its resume has one whatever fills
/// the disk meanwhile; each is reserved again after its use (when it can
/// be: each write frees the old record's block, unless a reader holds it
/// or another writer takes it first).
pub const NEXT: [&str; 2] = [".meta.json.next.0", ".meta.json.next.1"];

/// Version of the `meta.json` layout; bumped on incompatible changes.
pub const SCHEMA: u32 = 1;

/// What to execute: the argv that is exec'd, and how the user wrote it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CommandSpec {
    /// Exactly what is passed to execvp (for shell commands: `sh -c <script>`).
    pub argv: Vec<String>,
    /// The command as the user typed it, for tables and messages.
    pub display: String,
    /// True when the command runs through `sh -c`.
    pub shell: bool,
}

/// How a process ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// Normal exit with this status code.
    Code(i32),
    /// Killed by this signal (name such as `SIGKILL`).
    Signal(String),
}

impl Exit {
    /// Shell-style exit status: the code, or 128 + signal number.
    pub fn status(&self) -> i32 {
        match self {
            Exit::Code(code) => *code,
            Exit::Signal(name) => 128 + crate::procs::signal_number(name).unwrap_or(0),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "{code}"),
            Exit::Signal(name) => f.write_str(name),
        }
    }
}

/// The recorded lifecycle state. `lost` is never written: readers derive it
/// from a free lock and a non-final state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum State {
    /// Created by `bgt run`; the supervisor has not started the child yet.
    Starting,
    /// The supervisor waits for the task's turn (`--after`, `--queue`):
    /// no child exists yet.
    Queued,
    /// The supervisor is watching the task. `exit` is set once the main
    /// process has ended while descendants live on.
    Running {
        #[serde(default)]
        exit: Option<Exit>,
    },
    /// Every process of the task was stopped (SIGSTOP) by `bgt pause` at
    /// `paused_since`; `exit` as for `Running`.
    Paused {
        paused_since: DateTime<Utc>,
        #[serde(default)]
        exit: Option<Exit>,
    },
    /// The main process exited by itself (an exit code) and no descendant is left.
    Exited { exit: Exit },
    /// The main process was killed by a signal nobody in bgt sent.
    Signaled { exit: Exit },
    /// Ended by `bgt stop` (or a SIGTERM to the supervisor); `exit` is how
    /// the main process ended, absent when it never started.
    Stopped {
        #[serde(default)]
        exit: Option<Exit>,
    },
    /// Ended by the supervisor because `--timeout` passed.
    TimedOut {
        #[serde(default)]
        exit: Option<Exit>,
    },
    /// Never started: a task it ran `--after-ok` did not succeed (no exit code).
    Skipped { reason: String },
}

impl State {
    /// True once the supervisor has written its final record.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            State::Starting | State::Queued | State::Running { .. } | State::Paused { .. }
        )
    }

    /// How the main process ended, where the state says it has.
    pub fn exit(&self) -> Option<&Exit> {
        match self {
            State::Exited { exit } | State::Signaled { exit } => Some(exit),
            State::Running { exit }
            | State::Paused { exit, .. }
            | State::Stopped { exit }
            | State::TimedOut { exit } => exit.as_ref(),
            State::Starting | State::Queued | State::Skipped { .. } => None,
        }
    }

    /// The state of a task that ended by itself: the exit decides which.
    pub fn ended(exit: Exit) -> State {
        match exit {
            Exit::Code(_) => State::Exited { exit },
            Exit::Signal(_) => State::Signaled { exit },
        }
    }
}

/// The whole record.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TaskMeta {
    pub schema: u32,
    pub id: String,
    pub label: Option<String>,
    pub command: CommandSpec,
    pub cwd: PathBuf,
    /// Only the `--env` overrides; the rest of the environment is inherited.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub supervisor_pid: Option<Pid>,
    /// Kernel start time of the supervisor (clock ticks since boot, Linux).
    /// Every process of the task started at or after it, which is what makes
    /// a lost task's leftovers identifiable despite pid reuse (see
    /// `procs::TaskMark`).
    #[serde(default)]
    pub supervisor_start: Option<u64>,
    /// The task's session id: the supervisor calls setsid, so it equals
    /// `supervisor_pid`; every task process stays in it unless it calls setsid.
    #[serde(default)]
    pub sid: Option<Pid>,
    pub pid: Option<Pid>,
    pub pgid: Option<Pid>,
    /// Kernel start time of `pid` (clock ticks since boot, Linux): proves a
    /// live pid is still our child and not a reused number.
    pub pid_start: Option<u64>,
    /// The umask of the `bgt run` caller, given back to the child (bgt itself
    /// runs with 077 so its own files are private whatever the caller's).
    #[serde(default)]
    pub umask: Option<u32>,
    #[serde(flatten)]
    pub state: State,
    pub stdout_log: PathBuf,
    pub stderr_log: PathBuf,
    /// Task ids this one starts after (`--after`, `--after-ok`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Start only if every task in `after` exited 0; else end `skipped`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_ok: bool,
    /// The queue whose slots limit how many of its tasks run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Time spent paused in finished pauses (the current one is in `State::Paused`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paused_ms: u64,
    /// Per-stream log size kept on disk (oldest blocks are freed); none = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size: Option<u64>,
    /// The logs as the supervisor left them once every process of the task
    /// was gone; absent while it runs, and when a bounded log dropped
    /// output. `status` of a finished task trusts these counts while each
    /// file still is that file at that length (two stats), instead of
    /// opening the task's directory and line index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_at_end: Option<LogsAtEnd>,
}

/// Both logs of an ended task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogsAtEnd {
    pub stdout: LogAtEnd,
    pub stderr: LogAtEnd,
}

/// One log: its length, the file it was, and its complete lines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogAtEnd {
    pub bytes: u64,
    pub ino: u64,
    pub lines: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TaskMeta {
    /// Whether the task waits for its turn before it starts.
    pub fn waits(&self) -> bool {
        !self.after.is_empty() || self.queue.is_some()
    }

    /// Total time paused, the current pause included.
    pub fn paused_total_ms(&self, now: DateTime<Utc>) -> u64 {
        let current = match &self.state {
            State::Paused { paused_since, .. } => {
                (now - *paused_since).num_milliseconds().max(0) as u64
            }
            _ => 0,
        };
        self.paused_ms + current
    }

    /// What identifies the task's processes once its supervisor is gone.
    pub fn mark(&self) -> crate::procs::TaskMark {
        crate::procs::TaskMark {
            id: self.id.clone(),
            sid: self.sid,
            since: self.supervisor_start.or(self.pid_start),
        }
    }
}

impl TaskMeta {
    /// Loads and validates the record of the task directory `dir`; errors
    /// are short enough for a table cell.
    pub fn load_in(dir: &DirFd) -> Result<TaskMeta> {
        let bytes = dir
            .read(crate::task::store::META)
            .map_err(|e| anyhow::anyhow!("cannot read meta.json: {}", io_message(&e)))?;
        TaskMeta::parse(&bytes)
    }

    /// Parses and validates a record. The record is parsed straight into a
    /// `TaskMeta`; only when that fails, or the schema is not ours, is it
    /// parsed again through a `serde_json::Value` to tell which it was (no
    /// JSON, no or an unknown schema, a malformed field). Both accept the
    /// same records.
    pub(crate) fn parse(bytes: &[u8]) -> Result<TaskMeta> {
        match serde_json::from_slice::<TaskMeta>(bytes) {
            Ok(meta) if meta.schema == SCHEMA => Ok(meta),
            _ => TaskMeta::parse_slowly(bytes),
        }
    }

    fn parse_slowly(bytes: &[u8]) -> Result<TaskMeta> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            anyhow::bail!("meta.json is empty");
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("meta.json is not valid JSON ({e})"))?;
        match value.get("schema").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(SCHEMA) => {}
            Some(v) => anyhow::bail!("meta.json has unknown schema version {v}"),
            None => anyhow::bail!("meta.json has no schema version"),
        }
        // Records written before the exit moved into the state carry an
        // `"exit": null` beside states that have none: not an error.
        let mut value = value;
        if let Some(map) = value.as_object_mut()
            && map.get("exit").is_some_and(|e| e.is_null())
        {
            map.remove("exit");
        }
        serde_json::from_value(value).map_err(|e| anyhow::anyhow!("meta.json is malformed ({e})"))
    }

    /// Writes the record atomically into the task directory `dir`. Only a
    /// final record is fsync'd: the starting ones are rewritten within
    /// milliseconds and a crash before the end makes the task `lost` anyway,
    /// so their fsync would only slow down `bgt run`.
    pub fn store_in(&self, dir: &DirFd) -> Result<()> {
        self.write_in(dir, self.state.is_final())
    }

    fn write_in(&self, dir: &DirFd, durable: bool) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        dir.write_atomic(crate::task::store::META, &json, durable)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot write {}: {}",
                    dir.path().join(crate::task::store::META).display(),
                    io_message(&e)
                )
            })
    }

    /// Writes the first record of a task whose directory no reader can see
    /// yet (it is renamed into place afterwards): no temp file is needed.
    pub fn store_first(&self, dir: &DirFd) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        dir.open_file(crate::task::store::META, Access::CreateNew)
            .and_then(|mut file| file.write_all(&json))
            .map_err(|e| anyhow::anyhow!("cannot write the task record: {}", io_message(&e)))
    }

    /// Allocates the spare record file in the task directory, big enough for
    /// this record's final form twice over (the final one adds only a few fields).
    pub fn reserve_spare(&self, dir: &DirFd) -> Result<()> {
        let size = serde_json::to_vec_pretty(self)?.len() * 2 + 4096;
        reserve(dir, SPARE, size)
    }

    /// Allocates the first `count` next record files, where not there:
    /// this record's size and room for the fields the next records add, in
    /// whole blocks (on a full disk, the block the old `meta.json` frees
    /// when a next is renamed over it is then enough to reserve it again).
    /// Fails when one could not be.
    pub fn reserve_next(&self, dir: &DirFd, count: usize) -> Result<()> {
        let size = serde_json::to_vec_pretty(self)?.len() + 1024;
        NEXT[..count]
            .iter()
            .filter(|name| !dir.exists(name))
            .try_for_each(|name| reserve(dir, name, size))
    }

    /// Writes a non-final record (or a final one a durable write will
    /// follow) the way `store_final` writes the last: into a reserved next
    /// file, renamed over `meta.json`, no fsync; but only while more than
    /// `keep` are reserved (a record that may be lost leaves the resume's).
    /// Else, or when it is too small, the normal atomic write, which needs
    /// free space.
    pub fn store_next(&self, dir: &DirFd, keep: usize) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        let reserved: Vec<&str> = NEXT.into_iter().filter(|name| dir.exists(name)).collect();
        if reserved.len() > keep
            && let Ok(true) = dir.replace_with(reserved[0], crate::task::store::META, &json, false)
        {
            return Ok(());
        }
        self.write_in(dir, false)
    }

    /// Writes a final record into the spare's already allocated blocks (cut
    /// to size, fsync'd) and renames it over `meta.json`: atomic for
    /// readers, and it needs no free space, so a task that filled the disk
    /// still ends with its status. The spare is first renamed to a name of
    /// this writer's own ([`crate::task::dirfd::writer_tag`]), so of two
    /// writers at once (two `bgt stop` of a task whose supervisor is gone)
    /// one takes it and the other writes a temp file: never both into one
    /// file, one of them already renamed over `meta.json` under a reader.
    /// Taken so, the spare has never been seen by a reader, and writing it
    /// in place tears no read; and it takes no new inode (a temp file would,
    /// and free the spare's too: on an ext4 without a journal, every freed
    /// inode slows the next creations for a minute). Without a spare (a
    /// task started by an older bgt, or taken by another writer), the
    /// normal atomic write.
    pub fn store_final(&self, dir: &DirFd) -> Result<()> {
        // No record comes after this one: the next files' blocks go back
        // (first, which also helps the fallback write below).
        for name in NEXT {
            let _ = dir.remove_file(name);
        }
        let json = serde_json::to_vec_pretty(self)?;
        let taken = format!("{SPARE}.{}", crate::task::dirfd::writer_tag());
        let reused = dir
            .rename(SPARE, &taken)
            .and_then(|()| dir.replace_with(&taken, crate::task::store::META, &json, true));
        if reused.is_ok_and(|done| done) {
            return Ok(());
        }
        self.store_in(dir)?;
        let _ = dir.remove_file(&taken);
        Ok(())
    }
}

/// Creates the reserved record file `name` (see [`DirFd::reserve`]).
fn reserve(dir: &DirFd, name: &str, size: usize) -> Result<()> {
    dir.reserve(name, size).map_err(|e| {
        anyhow::anyhow!(
            "cannot reserve space for the task record: {}",
            io_message(&e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: State) -> TaskMeta {
        let mut meta: TaskMeta = serde_json::from_value(serde_json::json!({
            "schema": SCHEMA, "id": "t-000001", "label": null,
            "command": {"argv": ["true"], "display": "true", "shell": false},
            "cwd": "/", "timeout_ms": null, "created": "2026-01-01T00:00:00Z",
            "started": null, "ended": null, "supervisor_pid": null, "pid": null,
            "pgid": null, "pid_start": null, "state": "starting",
            "stdout_log": "stdout.log", "stderr_log": "stderr.log"
        }))
        .unwrap();
        meta.state = state;
        meta
    }

    /// Two final writers at once (two `bgt stop` of a task whose supervisor
    /// is gone): the second must not write into the spare the first has
    /// taken, which may be `meta.json` already when it writes.
    #[test]
    fn a_spare_taken_by_one_final_writer_is_not_written_by_another() {
        let root = tempfile::tempdir().unwrap();
        let dir = DirFd::open(root.path()).unwrap();
        let first = record(State::Starting);
        first.store_in(&dir).unwrap();
        first.reserve_spare(&dir).unwrap();
        // Another writer has taken the spare and is writing into it.
        dir.rename(SPARE, ".meta.json.spare.1.0").unwrap();
        let taken = std::fs::read(root.path().join(".meta.json.spare.1.0")).unwrap();
        let ended = record(State::ended(Exit::Code(0)));
        ended.store_final(&dir).unwrap();
        assert_eq!(
            std::fs::read(root.path().join(".meta.json.spare.1.0")).unwrap(),
            taken,
            "the other writer's file was written"
        );
        let stored = TaskMeta::load_in(&dir).unwrap();
        assert!(stored.state.is_final());
        // With the spare there, it is used and is gone after.
        first.store_in(&dir).unwrap();
        first.reserve_spare(&dir).unwrap();
        ended.store_final(&dir).unwrap();
        assert!(!dir.exists(SPARE));
        assert!(TaskMeta::load_in(&dir).unwrap().state.is_final());
    }

    fn next_reserved(dir: &DirFd) -> usize {
        NEXT.into_iter().filter(|name| dir.exists(name)).count()
    }

    /// Each next file is used once and renamed away; a record that must
    /// keep some for later, one too big for them, or one written without
    /// any takes the normal atomic write; the final record frees them.
    #[test]
    fn next_files_are_used_once_kept_when_asked_and_freed_by_the_final_record() {
        let root = tempfile::tempdir().unwrap();
        let dir = DirFd::open(root.path()).unwrap();
        let starting = record(State::Starting);
        starting.store_in(&dir).unwrap();
        starting.reserve_next(&dir, 1).unwrap();
        assert_eq!(next_reserved(&dir), 1);
        let reserved = root.path().join(NEXT[0]).metadata().unwrap().len();
        let running = record(State::Running { exit: None });
        running.store_next(&dir, 0).unwrap();
        assert_eq!(next_reserved(&dir), 0);
        assert_eq!(
            TaskMeta::load_in(&dir).unwrap().state,
            State::Running { exit: None }
        );
        // Asked to keep as many as there are: none is used, still written.
        starting.reserve_next(&dir, NEXT.len()).unwrap();
        assert_eq!(next_reserved(&dir), NEXT.len());
        let exited = record(State::Running {
            exit: Some(Exit::Code(4)),
        });
        exited.store_next(&dir, NEXT.len()).unwrap();
        assert_eq!(next_reserved(&dir), NEXT.len());
        assert_eq!(TaskMeta::load_in(&dir).unwrap().state, exited.state);
        // Used in turn; none left: still written.
        for left in (0..NEXT.len()).rev() {
            running.store_next(&dir, 0).unwrap();
            assert_eq!(next_reserved(&dir), left);
        }
        let paused = record(State::Paused {
            paused_since: Utc::now(),
            exit: None,
        });
        paused.store_next(&dir, 0).unwrap();
        assert!(matches!(
            TaskMeta::load_in(&dir).unwrap().state,
            State::Paused { .. }
        ));
        // Smaller than the record: left for the next reserve, and the
        // record is written all the same.
        starting.reserve_next(&dir, NEXT.len()).unwrap();
        let mut long = record(State::Running { exit: None });
        long.label = Some("x".repeat(reserved as usize));
        long.store_next(&dir, 0).unwrap();
        assert_eq!(TaskMeta::load_in(&dir).unwrap().label, long.label);
        assert_eq!(next_reserved(&dir), NEXT.len());
        // The final record: no next file is left.
        record(State::ended(Exit::Code(0)))
            .store_final(&dir)
            .unwrap();
        assert_eq!(next_reserved(&dir), 0);
    }

    #[test]
    fn state_serializes_flat() {
        let json = serde_json::to_value(State::TimedOut { exit: None }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "timed-out", "exit": null})
        );
        let json = serde_json::to_value(State::ended(Exit::Code(3))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "exited", "exit": {"code": 3}})
        );
        let exit = serde_json::to_value(Exit::Signal("SIGKILL".into())).unwrap();
        assert_eq!(exit, serde_json::json!({"signal": "SIGKILL"}));
        let skipped = State::Skipped {
            reason: "t-1 exited 1".into(),
        };
        let json = serde_json::to_value(&skipped).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "skipped", "reason": "t-1 exited 1"})
        );
    }
}

//! Where a reader is in a log, and what it may trust: positions (a byte
//! offset and a line count), marks that tie a position to one particular
//! file (inode and a fingerprint of the bytes before it), the persisted
//! line-count index and the named cursors built from them, and the floor
//! below which a bounded log was freed. The scans in [`crate::logs::read`]
//! move these; nothing here looks at what a line says.

use crate::logs::read::{CHUNK, Carry, Stream};
use crate::task::dirfd::{Access, DirFd};
use crate::task::meta::{LogAtEnd, LogsAtEnd};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// How many newlines `bytes` holds. Every line a read returns carries its
/// number, so reads count the newlines of everything they pass over.
pub(crate) fn newlines(bytes: &[u8]) -> u64 {
    bytecount::count(bytes, b'\n') as u64
}

/// A place in a log: just after `line` complete lines, at byte `offset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub offset: u64,
    pub line: u64,
}

impl Pos {
    /// The later of two places in the same log.
    pub(super) fn max_with(self, other: Pos) -> Pos {
        if other.offset > self.offset {
            other
        } else {
            self
        }
    }
}

/// A position in one particular file, so a replaced or rewritten log is
/// noticed: the inode, and a fingerprint of the bytes just before the
/// position (not of the file's start, which a later feature may free).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Mark {
    #[serde(flatten)]
    pub(super) pos: Pos,
    #[serde(default)]
    pub(super) ino: u64,
    /// Hash of the up to 64 bytes before `pos`; missing in files written by
    /// older versions, which are trusted as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tag: Option<u64>,
    /// In memory only: an unfinished last line already read past `pos`.
    #[serde(skip)]
    pub(super) carry: Option<Box<Carry>>,
}

const TAG_BYTES: u64 = 64;

/// FNV-1a of the bytes before `offset`; `None` if they cannot be read.
fn fingerprint(file: &File, offset: u64) -> Option<u64> {
    let from = offset.saturating_sub(TAG_BYTES);
    let mut bytes = [0; TAG_BYTES as usize];
    let bytes = &mut bytes[..(offset - from) as usize];
    read_exact_at(file, bytes, from).ok()?;
    Some(bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }))
}

impl Mark {
    pub(super) fn at(file: &File, pos: Pos, ino: u64) -> Mark {
        Mark {
            pos,
            ino,
            tag: fingerprint(file, pos.offset),
            carry: None,
        }
    }

    /// Whether this position is still valid in the log `file` (`len`
    /// bytes, inode `ino`): a shorter, replaced, or rewritten log
    /// (truncated in place and regrown) is not. Bytes before `floor` may
    /// have been freed (they read as zeros), so a position whose
    /// fingerprint covers any of them is trusted on inode and length alone.
    pub(super) fn holds(&self, file: &File, len: u64, ino: u64, floor: u64) -> bool {
        let in_hole = floor > 0 && self.pos.offset.saturating_sub(TAG_BYTES) < floor;
        self.pos.offset <= len
            && (self.ino == 0 || self.ino == ino)
            && (in_hole
                || self
                    .tag
                    .is_none_or(|tag| fingerprint(file, self.pos.offset) == Some(tag)))
    }
}

/// Where the kept part of a bounded log starts (see [`crate::logs::bounded`]):
/// nothing before `floor` is ever read (it may be a hole of zeros), and
/// line numbers continue from `floor.line`, so line N stays line N.
pub(super) struct Hole<'d> {
    pub(super) dir: &'d DirFd,
    pub(super) stream: Stream,
    pub(super) floor: Pos,
    /// Bytes and lines of this read's range that were dropped before it
    /// could read them (`None`: the range did not reach dropped data).
    pub(super) missed: Option<Pos>,
}

impl<'d> Hole<'d> {
    pub(super) fn load(dir: &'d DirFd, stream: Stream) -> Hole<'d> {
        let mut hole = Hole {
            dir,
            stream,
            floor: Pos::default(),
            missed: None,
        };
        hole.reload();
        hole
    }

    /// Reads the record again (the supervisor may have freed more since);
    /// whether the floor moved.
    pub(super) fn reload(&mut self) -> bool {
        let d = crate::logs::bounded::dropped(self.dir, self.stream);
        let floor = Pos {
            offset: d.bytes,
            line: d.lines,
        };
        let moved = floor.offset > self.floor.offset;
        if moved {
            self.floor = floor;
        }
        moved
    }

    /// A read that wanted to start at `from` starts at the floor instead if
    /// `from` lies before it; the difference is remembered as missed.
    pub(super) fn lift(&mut self, from: Pos) -> Pos {
        if from.offset >= self.floor.offset {
            return from;
        }
        let missed = self.missed.get_or_insert_default();
        missed.offset += self.floor.offset - from.offset;
        missed.line += self.floor.line.saturating_sub(from.line);
        self.floor
    }

    /// After reading `bytes` at `at` (bytes that were on disk a moment ago):
    /// if they hold zeros the supervisor may just have freed them (the
    /// record is written before the punch), so the record is read again.
    /// Whether the read must continue at the (new) floor instead.
    pub(super) fn freed_under(&mut self, bytes: &[u8], at: u64) -> bool {
        // A freed range is whole aligned units of zeros: it shows at the
        // first byte or at a unit's start, so a 1 MiB chunk costs 256 looks.
        let unit = crate::logs::bounded::PUNCH_UNIT;
        let first_unit = (at.next_multiple_of(unit) - at) as usize;
        let zeros = bytes.first() == Some(&0)
            || (first_unit..bytes.len())
                .step_by(unit as usize)
                .any(|i| bytes[i] == 0);
        zeros && self.reload() && self.floor.offset > at
    }

    /// Whether this read's range reached dropped data.
    pub(super) fn touched(&mut self) {
        if self.floor.offset > 0 {
            self.missed.get_or_insert(self.floor);
        }
    }
}

/// Per-stream positions: a reader's cursor, or the line-count index.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Marks {
    #[serde(default)]
    pub(super) stdout: Mark,
    #[serde(default)]
    pub(super) stderr: Mark,
}

impl Marks {
    pub(super) fn get(&self, stream: Stream) -> &Mark {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    pub(super) fn set(&mut self, stream: Stream, mark: Mark) {
        match stream {
            Stream::Stdout => self.stdout = mark,
            Stream::Stderr => self.stderr = mark,
        }
    }

    /// Reads a cursor or index file; a missing, unreadable or planted
    /// (symlinked) one reads as "from the start".
    pub(super) fn load(dir: &DirFd, name: &str) -> Marks {
        dir.read(name)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }
}

/// Opens a log without following a planted symlink; a missing log reads as empty.
pub(super) fn open_log(dir: &DirFd, name: &str) -> Result<Option<(File, u64, u64)>> {
    match dir.open_file(name, Access::Read) {
        Ok(file) => {
            let info = file.metadata()?;
            Ok(Some((file, info.len(), info.ino())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read {}: {}",
            dir.path().join(name).display(),
            crate::error::io_message(&e)
        )),
    }
}

/// What a read says when the log lost bytes it was reading (a short
/// `pread`, a vanished mapped page, a file shorter than its span).
pub(super) const SHRANK: &str = "log shrank while reading";

/// `pread` of exactly `buf.len()` bytes; a log that ends sooner shrank
/// under the reader (every read stays below a length seen before).
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => std::io::Error::new(e.kind(), SHRANK),
        _ => e,
    })
}

/// Brings the line-count index (`index`, as last read from `index.json`) up
/// to `len`: only new bytes are read, unless the log was rewritten under
/// it (see [`Mark::holds`]); then it is counted again. Counting starts no
/// earlier than the kept part of a bounded log, from the lines recorded
/// as dropped, so the freed range is never read.
pub(super) fn refresh_index(
    file: &File,
    len: u64,
    ino: u64,
    index: &Mark,
    hole: &mut Hole,
) -> Result<Pos> {
    let (task_dir, stream) = (hole.dir, hole.stream);
    let valid = index.ino == ino
        && (index.holds(file, len, ino, hole.floor.offset)
            || (hole.reload() && index.holds(file, len, ino, hole.floor.offset)));
    let from = if valid { index.pos } else { Pos::default() };
    let mut pos = from.max_with(hole.floor);
    if pos.offset < len || pos != from || !valid {
        let mut buf = vec![0; CHUNK.min(len.saturating_sub(pos.offset) as usize)];
        let mut at = pos.offset;
        while at < len {
            let want = buf.len().min((len - at) as usize);
            read_exact_at(file, &mut buf[..want], at)?;
            if hole.freed_under(&buf[..want], at) {
                pos = pos.max_with(hole.floor);
                at = pos.offset;
                continue;
            }
            if let Some(last) = memchr::memrchr(b'\n', &buf[..want]) {
                pos.line += newlines(&buf[..want]);
                pos.offset = at + last as u64 + 1;
            }
            at += want as u64;
        }
        store_index(task_dir, stream, file, len, pos, ino);
    }
    Ok(pos)
}

/// Saves an index mark unless the stored one is still valid and ahead.
/// Best effort: a reader that cannot write the index (read-only state dir)
/// still answers correctly.
pub(super) fn store_index(
    task_dir: &DirFd,
    stream: Stream,
    file: &File,
    len: u64,
    pos: Pos,
    ino: u64,
) {
    let Ok(lock) = task_dir.open_file(crate::task::store::INDEX_LOCK, Access::CreateOrOpen) else {
        return;
    };
    if lock.lock().is_err() {
        return;
    }
    let mut marks = Marks::load(task_dir, crate::task::store::INDEX);
    let old = marks.get(stream);
    let floor = crate::logs::bounded::dropped(task_dir, stream).bytes;
    if old.ino == ino && old.pos.offset >= pos.offset && old.holds(file, len, ino, floor) {
        return;
    }
    marks.set(stream, Mark::at(file, pos, ino));
    if let Ok(bytes) = serde_json::to_vec(&marks) {
        let _ = task_dir.write_atomic(crate::task::store::INDEX, &bytes, false);
    }
}

/// Takes the named cursor's lock, held for the whole read-modify-write;
/// returns the cursors directory (created 0700, never through a symlink).
pub(super) fn lock_cursor(task_dir: &DirFd, name: &str) -> Result<(DirFd, File)> {
    crate::task::store::validate_name("cursor name", name).map_err(crate::error::usage)?;
    let shown = || task_dir.path().join(crate::task::store::CURSORS);
    match task_dir.create_dir(crate::task::store::CURSORS) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {}", shown().display()));
        }
    }
    let dir = task_dir
        .open_dir(crate::task::store::CURSORS)
        .with_context(|| format!("refusing {}: not a directory", shown().display()))?;
    let lock = dir
        .open_file(&format!("{name}.lock"), Access::CreateOrOpen)
        .with_context(|| format!("cannot open the lock of cursor '{name}'"))?;
    lock.lock().context("cannot lock the cursor")?;
    Ok((dir, lock))
}

/// Saves the cursor `file` in the cursors directory `dir`, its lock held
/// (every reader and writer of a cursor file holds it): rewritten in place,
/// so a poll on a full disk still moves its cursor, and no inode is made
/// and freed per poll ([`DirFd::rewrite_locked`]).
pub(super) fn save_cursor(dir: &DirFd, file: &str, marks: &Marks) -> std::io::Result<()> {
    dir.rewrite_locked(file, &serde_json::to_vec(marks)?)
}

/// Each log's length, file and complete lines now, from the line index
/// (brought up to date when the log grew since): what `status` shows and
/// what the supervisor records when a task ends.
pub fn log_ends(task_dir: &DirFd) -> LogsAtEnd {
    log_ends_within(task_dir, u64::MAX).expect("no limit on counting")
}

/// [`log_ends`], or `None` when bringing the index up to date would mean
/// counting more than `budget` new bytes (the supervisor, recording a
/// task's end, does not hold up its durable record to count a huge log
/// nobody has read: `status` counts it when asked, as before).
pub fn log_ends_within(task_dir: &DirFd, budget: u64) -> Option<LogsAtEnd> {
    // Read only when a log is not empty (a queued or silent task has no index).
    let index = std::cell::OnceCell::new();
    let end = |stream: Stream| -> Option<LogAtEnd> {
        let Ok(info) = task_dir.stat_at(stream.file()) else {
            return Some(LogAtEnd::default());
        };
        let (len, ino) = (info.st_size as u64, info.st_ino);
        let at = |lines| LogAtEnd {
            bytes: len,
            ino,
            lines,
        };
        if len == 0 {
            return Some(at(0));
        }
        let known = index
            .get_or_init(|| Marks::load(task_dir, crate::task::store::INDEX))
            .get(stream);
        let regular = info.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
        if regular && known.ino == ino && known.pos.offset == len {
            return Some(at(known.pos.line));
        }
        let counted = if known.ino == ino {
            known.pos.offset.min(len)
        } else {
            0
        };
        if len - counted > budget {
            return None;
        }
        Some(match open_log(task_dir, stream.file()) {
            Ok(Some((file, len, ino))) => {
                let mut hole = Hole::load(task_dir, stream);
                let lines = refresh_index(&file, len, ino, known, &mut hole).map_or(0, |p| p.line);
                LogAtEnd {
                    bytes: len,
                    ino,
                    lines,
                }
            }
            _ => at(0),
        })
    };
    Some(LogsAtEnd {
        stdout: end(Stream::Stdout)?,
        stderr: end(Stream::Stderr)?,
    })
}

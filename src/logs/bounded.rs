//! Bounded logs: a task left running for days must not fill the disk.
//!
//! The child writes its logs directly (no copy in between), so the
//! supervisor cannot cap them in the write path. Instead it looks at their
//! sizes once a second (an fstat each; not inotify, whose per-user limit of
//! 128 instances a machine full of tasks would use up, taking file watching
//! away from the user's editor and `tail -f`) and, once a log holds more
//! than `max_log_size` bytes on disk, frees its
//! oldest whole blocks in place with `fallocate(PUNCH_HOLE|KEEP_SIZE)`.
//! The file keeps its size, so byte offsets, cursors and `--since` stay
//! valid; the freed range reads as zeros, which readers must skip by the
//! recorded offset, never by treating zeros as text.
//!
//! Before punching, the supervisor records in `dropped.json` where reads
//! must now start (just after the first newline past the punched range, so
//! reading starts on a whole line) and how many lines lie before that
//! point, so line numbers stay consistent. The record is written first and
//! the hole punched second: a reader that sees the record never reads the
//! hole. A filesystem that cannot punch holes is recorded (`unsupported`),
//! and the log then grows: bgt never truncates a log.
//!
//! Freeing must work best when the disk is full, but writing the record
//! needs a block: once a log is past half its limit, the supervisor
//! reserves one ([`DROPPED_SPARE`]), writes the record into it and renames
//! it over, and reserves it again after the punch has freed space.

use crate::logs::read::Stream;
use crate::task::dirfd::{Access, DirFd};
use crate::task::meta::LogsAtEnd;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

/// The record of what was freed, in the task directory.
pub const DROPPED: &str = "dropped.json";

/// Space reserved for the next record of what was freed (hidden: readers
/// never list it).
pub const DROPPED_SPARE: &str = ".dropped.json.spare";

/// Default per-stream limit: a laptop survives a forgotten chatty server.
pub const DEFAULT_MAX_LOG_SIZE: u64 = 256 << 20;

/// Holes are punched in whole units of this many bytes, aligned to it, so
/// a reader finds any freed range by looking at one byte per unit.
pub const PUNCH_UNIT: u64 = 4096;

/// What was freed from one log.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Reads must start at this offset: everything before it is dropped.
    /// It is the start of a line unless one line alone outgrew the limit.
    pub bytes: u64,
    /// Complete lines before `bytes`: the first line read from there is line `lines + 1`.
    pub lines: u64,
    /// Bytes actually freed on disk (whole blocks from the start, at most `bytes`).
    pub freed: u64,
}

/// The whole record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    #[serde(default)]
    pub stdout: Dropped,
    #[serde(default)]
    pub stderr: Dropped,
    /// The filesystem refused to punch holes: the limit is not enforced.
    #[serde(default)]
    pub unsupported: bool,
}

impl Record {
    /// The record of the task directory `dir` (all zeros when nothing was dropped).
    pub fn load(dir: &DirFd) -> Record {
        dir.read(DROPPED)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn get(&self, stream: Stream) -> Dropped {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    /// The record of `dir` for `logs` under a limit of `max`. Nothing is
    /// ever freed from a log no longer than its limit (see `Limiter::plan`),
    /// so for such logs the file is not opened: `status` of many small
    /// tasks opens one file less per task.
    pub fn load_if_over(dir: &DirFd, max: Option<u64>, logs: &LogsAtEnd) -> Record {
        match max {
            Some(max) if logs.stdout.bytes > max || logs.stderr.bytes > max => Record::load(dir),
            _ => Record::default(),
        }
    }

    fn get_mut(&mut self, stream: Stream) -> &mut Dropped {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }
}

/// Where reads of `stream` must start and how many lines lie before that
/// (for the log reader).
pub fn dropped(dir: &DirFd, stream: Stream) -> Dropped {
    Record::load(dir).get(stream)
}

/// Parses a size: `0`, `1048576`, `512K`, `1M`, `256MiB`, `2G`, `1.5GB`
/// (K/M/G/T are powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size '{text}': use a number of bytes or K, M, G, T (e.g. 256M; 0 = unlimited)"
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 || (unit.is_empty() && number.fract() != 0.0)
    {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The limit from `BGT_MAX_LOG_SIZE`, else the default; a mistyped value is a usage error.
pub fn max_from_env() -> anyhow::Result<u64> {
    match std::env::var("BGT_MAX_LOG_SIZE") {
        Ok(text) if !text.is_empty() => {
            parse_size(&text).map_err(|e| crate::error::usage(format!("BGT_MAX_LOG_SIZE: {e}")))
        }
        _ => Ok(DEFAULT_MAX_LOG_SIZE),
    }
}

/// `1.2 GiB`, `512 KiB`, `300 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The supervisor's side: watches both logs and frees their oldest blocks.
pub struct Limiter {
    max: u64,
    logs: Vec<(Stream, File)>,
    record: Record,
    /// Whether [`DROPPED_SPARE`] is there (reserved by this limiter).
    spare: bool,
}

impl Limiter {
    /// Watches the logs of the task directory `dir`, keeping each near `max` bytes.
    pub fn new(dir: &DirFd, max: u64) -> Option<Limiter> {
        let logs: Vec<(Stream, File)> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            // Punching a hole needs a descriptor open for writing.
            .filter_map(|s| Some((s, dir.open_file(s.file(), Access::ReadWrite).ok()?)))
            .collect();
        Some(Limiter {
            max,
            logs,
            record: Record::load(dir),
            spare: false,
        })
    }

    /// Frees what exceeds the limit in each log.
    pub fn enforce(&mut self, dir: &DirFd) {
        if self.record.unsupported || self.max == 0 {
            return;
        }
        for i in 0..self.logs.len() {
            let stream = self.logs[i].0;
            let Ok(size) = self.logs[i].1.metadata().map(|info| info.len()) else {
                continue;
            };
            if size > self.max / 2 {
                self.reserve(dir);
            }
            let Some(next) = self.plan(i, size) else {
                continue;
            };
            let before = self.record.get(stream);
            *self.record.get_mut(stream) = next;
            if self.save(dir).is_err() {
                *self.record.get_mut(stream) = before;
                continue;
            }
            let file = &self.logs[i].1;
            let punched = nix::fcntl::fallocate(
                file.as_fd(),
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                before.freed as i64,
                (next.freed - before.freed) as i64,
            );
            if punched.is_ok() {
                // Now, while the space just freed is there.
                self.reserve(dir);
            }
            if let Err(e) = punched {
                // Nothing was freed: reads may start where they did.
                *self.record.get_mut(stream) = before;
                if matches!(
                    e,
                    nix::errno::Errno::EOPNOTSUPP
                        | nix::errno::Errno::ENOSYS
                        | nix::errno::Errno::EINVAL
                ) {
                    self.record.unsupported = true;
                }
                let _ = self.save(dir);
                if self.record.unsupported {
                    return;
                }
            }
        }
    }

    /// What log `i`, `size` bytes long, should look like after freeing, if
    /// anything is to be freed.
    fn plan(&self, i: usize, size: u64) -> Option<Dropped> {
        let (stream, file) = &self.logs[i];
        let now = self.record.get(*stream);
        // Some slack, so a steady writer does not cause a punch per block.
        let slack = (self.max / 8).max(64 << 10);
        if size.saturating_sub(now.freed) <= self.max + slack {
            return None;
        }
        let freed = (size - self.max) / PUNCH_UNIT * PUNCH_UNIT;
        if freed <= now.freed {
            return None;
        }
        // Start reading on a whole line: just after the first newline at or
        // past the freed range (the bytes in between count as dropped).
        let bytes = match find_newline(file, freed.max(now.bytes), size) {
            Some(at) => at + 1,
            None => freed.max(now.bytes),
        };
        let lines = now.lines + count_newlines(file, now.bytes, bytes)?;
        Some(Dropped {
            bytes,
            lines,
            freed,
        })
    }

    /// Reserves the block for the next record, unless it is there.
    fn reserve(&mut self, dir: &DirFd) {
        if !self.spare {
            self.spare = dir.reserve(DROPPED_SPARE, 4096).is_ok();
        }
    }

    /// Writes the record through the reserved space when there is one (it
    /// is reserved again after the punch that follows, which frees space if
    /// the disk was full), else through a temp file.
    fn save(&mut self, dir: &DirFd) -> std::io::Result<()> {
        let json = serde_json::to_vec(&self.record).map_err(std::io::Error::other)?;
        if std::mem::take(&mut self.spare)
            && let Ok(true) = dir.replace_with(DROPPED_SPARE, DROPPED, &json, false)
        {
            return Ok(());
        }
        dir.write_atomic(DROPPED, &json, false)
    }
}

/// Removes the reserved record space of the task directory `dir`, if any
/// (the task has ended).
pub fn release(dir: &DirFd) {
    let _ = dir.remove_file(DROPPED_SPARE);
}

/// Offset of the first newline in `[from, to)`.
fn find_newline(file: &File, from: u64, to: u64) -> Option<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = from;
    while at < to {
        let want = ((to - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Some(at + i as u64);
        }
        at += n as u64;
    }
    None
}

/// Newlines in `[from, to)`.
fn count_newlines(file: &File, from: u64, to: u64) -> Option<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut at = from;
    let mut count = 0;
    while at < to {
        let want = ((to - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at).ok()?;
        if n == 0 {
            break;
        }
        count += crate::logs::marks::newlines(&buf[..n]);
        at += n as u64;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2k"), Ok(2048));
        for bad in ["", "M", "1X", "-1", "1.5", "abc"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(300), "300 B");
        assert_eq!(human(1288490189), "1.2 GiB");
    }
}

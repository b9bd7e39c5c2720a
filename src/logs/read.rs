//! Finding lines in task logs: ranges, cursors, filters, tail, caps.
//! Nothing here prints: every read hands its entries to a sink, in order
//! (collecting them is one sink, printing another; `render.rs` formats).
//!
//! Positions are a byte offset plus a line count ([`Pos`]), so an
//! incremental `--since` read costs only the new bytes. A persisted index
//! remembers how many complete lines a log has, so `--tail` reads only the
//! end of the file. Cursors are files updated under a lock: two readers with
//! the same cursor name never get the same line twice, and a cap never
//! skips a line (the cursor stops right after the last one returned).
//! Cursors and the index carry the log's inode and a fingerprint of the
//! bytes before their position, so a log replaced, truncated or rewritten
//! in place is noticed and read again from the start.
//!
//! Memory stays bounded whatever the log: reads go in 1 MiB chunks, and a
//! line longer than [`keep_bytes`] is kept only in part (the rest counted).
//! Every path (forward, backward tail, since, follow) builds entries with
//! the same selection ([`select`]) and the same [`Collector`].

use crate::clean;
use crate::dirfd::{Access, DirFd};
use crate::pattern::LineMatch;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// One of a task's two logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The log's file name in the task directory.
    pub fn file(self) -> &'static str {
        match self {
            Stream::Stdout => crate::store::STDOUT_LOG,
            Stream::Stderr => crate::store::STDERR_LOG,
        }
    }
}

/// A place in a log: just after `line` complete lines, at byte `offset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub offset: u64,
    pub line: u64,
}

/// A position in one particular file, so a replaced or rewritten log is
/// noticed: the inode, and a fingerprint of the bytes just before the
/// position (not of the file's start, which a later feature may free).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Mark {
    #[serde(flatten)]
    pos: Pos,
    #[serde(default)]
    ino: u64,
    /// Hash of the up to 64 bytes before `pos`; missing in files written by
    /// older versions, which are trusted as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<u64>,
    /// In memory only: an unfinished last line already read past `pos`.
    #[serde(skip)]
    carry: Option<Box<Carry>>,
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
    fn at(file: &File, pos: Pos, ino: u64) -> Mark {
        Mark {
            pos,
            ino,
            tag: fingerprint(file, pos.offset),
            carry: None,
        }
    }

    /// Whether this position is still valid in the log `file` (`len`
    /// bytes, inode `ino`): a shorter, replaced, or rewritten log
    /// (truncated in place and regrown) is not.
    fn holds(&self, file: &File, len: u64, ino: u64) -> bool {
        self.pos.offset <= len
            && (self.ino == 0 || self.ino == ino)
            && self
                .tag
                .is_none_or(|tag| fingerprint(file, self.pos.offset) == Some(tag))
    }
}

/// Per-stream positions: a reader's cursor, or the line-count index.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Marks {
    #[serde(default)]
    stdout: Mark,
    #[serde(default)]
    stderr: Mark,
}

impl Marks {
    fn get(&self, stream: Stream) -> &Mark {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    fn set(&mut self, stream: Stream, mark: Mark) {
        match stream {
            Stream::Stdout => self.stdout = mark,
            Stream::Stderr => self.stderr = mark,
        }
    }

    /// Reads a cursor or index file; a missing, unreadable or planted
    /// (symlinked) one reads as "from the start".
    fn load(dir: &DirFd, name: &str) -> Marks {
        dir.read(name)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }
}

/// Which part of the selected lines to return.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Window {
    All,
    Head(usize),
    Tail(usize),
}

/// The default `--max-lines`: the cap on one read's entries.
pub const DEFAULT_MAX_LINES: usize = 200;

/// What a read asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub streams: Vec<Stream>,
    pub matcher: LineMatch,
    /// Clean lines (escapes, `\r`, blanks, pnpm paths, long lines, collapsing).
    pub clean: bool,
    pub max_line_chars: usize,
    pub window: Window,
    /// Total cap on returned entries across streams; `None` = no cap.
    pub max_lines: Option<usize>,
    /// Read only past this named cursor, and advance it.
    pub since: Option<String>,
    /// Rewind the named cursor to the start first.
    pub reset_cursor: bool,
    /// Return a trailing line that has no newline yet (`--follow` waits for it).
    pub include_partial: bool,
}

impl Request {
    /// Every line of `streams`, cleaned, uncapped: the base that callers
    /// adjust with struct update syntax.
    pub fn all(streams: Vec<Stream>) -> Request {
        Request {
            streams,
            matcher: LineMatch::default(),
            clean: true,
            max_line_chars: clean::DEFAULT_MAX_LINE_CHARS,
            window: Window::All,
            max_lines: None,
            since: None,
            reset_cursor: false,
            include_partial: true,
        }
    }
}

/// One returned line. A run of 4 or more similar lines becomes two
/// entries: its first line, standing for the hidden lines after it
/// (`similar`), and its last line.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub stream: Stream,
    /// 1-based line number in the log.
    pub line: u64,
    pub text: String,
    /// How many following lines are hidden behind this one.
    pub similar: u64,
    /// Position just after the last log line this entry stands for.
    pub end: Pos,
    /// A trailing line without its newline yet (shown, never consumed).
    pub partial: bool,
}

/// What a read found in one stream.
#[derive(Clone, Debug)]
pub struct StreamResult {
    pub stream: Stream,
    /// The entries, when the read collected them ([`read`], [`read_from`]);
    /// empty when they went to a sink ([`read_with`]).
    pub entries: Vec<Entry>,
    /// Complete lines in the whole log.
    pub total_lines: u64,
    /// Matching lines in the range read; `None` when a `--tail` read stopped
    /// early without looking at the whole range.
    pub matched: Option<u64>,
    /// Log lines accounted for by the entries (a collapsed run counts whole,
    /// an unfinished last line counts one).
    pub returned: u64,
    /// An unfinished last line (no newline yet) is among the entries.
    pub partial: bool,
    /// The cap cut the result short.
    pub truncated: bool,
    /// Matching lines after the last returned one that were not returned.
    pub remaining: Option<u64>,
    /// Where the next `--since` read starts.
    pub cursor: Pos,
    /// The log shrank or was rewritten, so the cursor started over.
    pub cursor_reset: bool,
}

/// The result of a read, one element per requested stream.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub streams: Vec<StreamResult>,
}

/// Receives entries in order; an error (closed pipe) stops the read.
pub type Sink<'a> = &'a mut dyn FnMut(Entry) -> std::io::Result<()>;

/// Reads a task's logs as `req` says (with `since`, under the cursor's lock)
/// and collects the entries: [`read_with`] and a sink that keeps them.
pub fn read(task_dir: &DirFd, req: &Request) -> Result<ReadResult> {
    collect(|sink| read_with(task_dir, req, None, sink))
}

/// Reads the lines after `from` (per stream) and moves `from` to where the
/// next incremental read should start; collects the entries.
pub fn read_from(task_dir: &DirFd, req: &Request, from: &mut Marks) -> Result<ReadResult> {
    collect(|sink| read_with(task_dir, req, Some(from), sink))
}

fn collect(read: impl FnOnce(Sink) -> Result<ReadResult>) -> Result<ReadResult> {
    let mut got = Vec::new();
    let mut result = read(&mut |entry| {
        got.push(entry);
        Ok(())
    })?;
    for s in &mut result.streams {
        s.entries = got.extract_if(.., |e| e.stream == s.stream).collect();
    }
    Ok(result)
}

/// The one read path: hands every entry to `sink`, in order. Positions come
/// from `from` (a poller's own), else the `since` cursor, else the start.
/// An uncapped read hands entries over as they are found, so reading a
/// 1 GiB log needs no 1 GiB of memory and a closed pipe stops the scan; a
/// capped one hands them over once the cap is shared between the streams.
pub fn read_with(
    task_dir: &DirFd,
    req: &Request,
    from: Option<&mut Marks>,
    sink: Sink,
) -> Result<ReadResult> {
    if let Some(from) = from {
        return engine(task_dir, req, from, sink);
    }
    let Some(name) = &req.since else {
        return engine(task_dir, req, &mut Marks::default(), sink);
    };
    let (cursor_dir, _lock) = lock_cursor(task_dir, name)?;
    let file = format!("{name}.json");
    let mut cursors = if req.reset_cursor {
        Marks::default()
    } else {
        Marks::load(&cursor_dir, &file)
    };
    let result = engine(task_dir, req, &mut cursors, sink);
    // Saved even if the sink failed part-way: the cursor only moved past
    // entries that were handed over.
    cursor_dir
        .write_atomic(&file, &serde_json::to_vec(&cursors)?, false)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot save cursor '{name}': {}",
                crate::error::io_message(&e)
            )
        })?;
    result
}

/// The caller's sink, remembering per stream the end of the last complete
/// line handed over (where a cursor may stop if the sink fails).
struct Out<'a, 's> {
    sink: &'a mut Sink<'s>,
    handed: [Option<Pos>; 2],
}

impl Out<'_, '_> {
    fn give(&mut self, entry: Entry) -> std::io::Result<()> {
        let (slot, end, partial) = (entry.stream as usize, entry.end, entry.partial);
        (self.sink)(entry)?;
        if !partial {
            self.handed[slot] = Some(end);
        }
        Ok(())
    }

    /// After a failure: each stream's position moves only past what was handed over.
    fn keep_handed(&self, from: &mut Marks) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(pos) = self.handed[stream as usize] {
                from.set(
                    stream,
                    Mark {
                        pos,
                        ..Mark::default()
                    },
                );
            }
        }
    }
}

fn engine(task_dir: &DirFd, req: &Request, from: &mut Marks, mut sink: Sink) -> Result<ReadResult> {
    let mut out = Out {
        sink: &mut sink,
        handed: [None; 2],
    };
    let capped = req.max_lines.is_some();
    let mut scans = Vec::new();
    for &stream in &req.streams {
        let start = from.get(stream).clone();
        match scan_stream(task_dir, stream, start, req, (!capped).then_some(&mut out)) {
            Ok(scan) => scans.push(scan),
            Err(err) => {
                out.keep_handed(from);
                return Err(err);
            }
        }
    }
    // Share the cap between streams: each gets half, and what one does not
    // use goes to the other.
    let wants: Vec<usize> = scans.iter().map(|s| s.found.entries.len()).collect();
    let budgets = share(req.max_lines.unwrap_or(usize::MAX), &wants);
    let mut results = Vec::new();
    for (scan, budget) in scans.into_iter().zip(budgets) {
        let (result, entries, mark) = scan.finish(budget, req);
        for entry in entries {
            if let Err(err) = out.give(entry) {
                out.keep_handed(from);
                return Err(err.into());
            }
        }
        from.set(result.stream, mark);
        results.push(result);
    }
    Ok(ReadResult { streams: results })
}

/// Splits `cap` entries fairly between streams wanting `wants` entries.
fn share(cap: usize, wants: &[usize]) -> Vec<usize> {
    let mut budgets = vec![0; wants.len()];
    let mut left = cap;
    let mut open: Vec<usize> = (0..wants.len()).collect();
    while left > 0 && !open.is_empty() {
        let each = (left / open.len()).max(1);
        for &i in &open {
            let give = each.min(wants[i] - budgets[i]).min(left);
            budgets[i] += give;
            left -= give;
        }
        open.retain(|&i| budgets[i] < wants[i]);
    }
    budgets
}

/// A stream's scan before the cap is applied.
struct Scan {
    stream: Stream,
    found: Found,
    /// `None` for a plain tail, which stops early.
    matched: Option<u64>,
    /// Where the read started, and the end of the complete lines it covered.
    start: Pos,
    scanned: Pos,
    cursor_reset: bool,
    /// The open log (`None`: missing), to fingerprint the next position.
    log: Option<(File, u64)>,
    /// An unfinished last line read past `scanned`.
    carry: Option<Carry>,
}

impl Scan {
    fn new(stream: Stream, found: Found, from: Pos, to: Pos, cursor_reset: bool) -> Scan {
        Scan {
            stream,
            matched: Some(found.matched),
            found,
            start: from,
            scanned: to,
            cursor_reset,
            log: None,
            carry: None,
        }
    }

    /// Applies the stream's share of the cap: the result, the entries to
    /// hand over, and where the next read of this stream starts.
    fn finish(self, budget: usize, req: &Request) -> (StreamResult, Vec<Entry>, Mark) {
        let found = self.found;
        let mut entries = found.entries;
        let truncated = entries.len() > budget;
        let cut = entries.len().saturating_sub(budget);
        // A plain --tail keeps the newest lines; anything else keeps the
        // oldest, so a cursor can continue right after them.
        let dropped: Vec<Entry> = match (req.window, &req.since) {
            (Window::Tail(_), None) => entries.drain(..cut).collect(),
            _ => entries.drain(budget.min(entries.len())..).collect(),
        };
        let lines = |e: &Entry| 1 + e.similar;
        let dropped_lines: u64 = dropped.iter().map(lines).sum();
        let returned = entries.iter().map(lines).sum::<u64>() + found.handed;
        let cut_short = truncated || found.uncollected > 0;
        let cursor = match entries.iter().rev().find(|e| !e.partial) {
            Some(last) if cut_short => last.end,
            None if cut_short => found.handed_end.unwrap_or(self.start),
            _ => self.scanned,
        };
        let partial = found.handed_partial || entries.iter().any(|e| e.partial);
        let mark = match self.log {
            Some((file, ino)) => Mark {
                carry: self.carry.filter(|_| cursor == self.scanned).map(Box::new),
                ..Mark::at(&file, cursor, ino)
            },
            None => Mark::default(),
        };
        let result = StreamResult {
            stream: self.stream,
            entries: Vec::new(),
            total_lines: self.scanned.line,
            matched: self.matched,
            returned,
            partial,
            truncated: truncated || found.stopped_by_cap,
            remaining: Some(dropped_lines + found.uncollected),
            cursor,
            cursor_reset: self.cursor_reset,
        };
        (result, entries, mark)
    }
}

/// Opens a log without following a planted symlink; a missing log reads as empty.
fn open_log(dir: &DirFd, name: &str) -> Result<Option<(File, u64, u64)>> {
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

fn scan_stream(
    task_dir: &DirFd,
    stream: Stream,
    start: Mark,
    req: &Request,
    out: Option<&mut Out>,
) -> Result<Scan> {
    let plain_tail = match (req.window, &req.since) {
        (Window::Tail(n), None) => Some(n),
        _ => None,
    };
    let window = if plain_tail.is_some() {
        Window::All // tail_backward already picked the lines
    } else {
        req.window
    };
    let mut collector = Collector::new(req, stream, window, out);
    let Some((file, len, ino)) = open_log(task_dir, stream.file())? else {
        let reset = start.pos.offset > 0;
        return Ok(Scan::new(
            stream,
            collector.finish()?,
            Pos::default(),
            Pos::default(),
            reset,
        ));
    };
    let (start, cursor_reset) = match start.holds(&file, len, ino) {
        true => (start, false),
        false => (Mark::default(), true),
    };
    let mut scan = if let Some(n) = plain_tail {
        // Read backwards from the end, never the whole file.
        let index = Marks::load(task_dir, crate::store::INDEX)
            .get(stream)
            .clone();
        let total = refresh_index(task_dir, stream, &file, len, ino, &index)?;
        for entry in tail_backward(&file, len, total, n, stream, req)? {
            collector.add(entry);
        }
        let mut scan = Scan::new(
            stream,
            collector.finish()?,
            Pos::default(),
            total,
            cursor_reset,
        );
        scan.matched = None;
        scan
    } else {
        let (scanned, carry) = scan_forward(&file, &start, len, req, &mut collector)?;
        store_index(task_dir, stream, &file, len, scanned, ino);
        let mut scan = Scan::new(
            stream,
            collector.finish()?,
            start.pos,
            scanned,
            cursor_reset,
        );
        scan.carry = carry;
        scan
    };
    scan.log = Some((file, ino));
    Ok(scan)
}

/// A line that passed cleaning, exclude and filter.
struct Line<'a> {
    line: u64,
    text: Cow<'a, str>,
    /// Characters of a very long line that were not kept (see [`LineAcc`]).
    unseen: u64,
    end: Pos,
    partial: bool,
}

impl Line<'_> {
    /// The entry showing this line, cut at `max_chars`.
    fn entry(self, stream: Stream, max_chars: usize) -> Entry {
        Entry {
            stream,
            line: self.line,
            text: match clean::cut(&self.text, max_chars, self.unseen) {
                Cow::Owned(cut) => cut,
                Cow::Borrowed(_) => self.text.into_owned(),
            },
            similar: 0,
            end: self.end,
            partial: self.partial,
        }
    }
}

/// Bytes of one line kept in memory: beyond this, a line is only counted,
/// and a filter sees the kept part. `--max-line-chars 0` asks for whole
/// lines, so then memory grows with the longest line.
fn keep_bytes(req: &Request) -> usize {
    match req.max_line_chars {
        0 => usize::MAX,
        max => max.saturating_mul(16).max(64 << 10),
    }
}

/// Applies cleaning and the matcher to one raw line (without its newline);
/// a line longer than [`keep_bytes`] goes through a [`LineAcc`] so it is
/// treated the same whichever path read it.
fn select<'a>(raw: &'a [u8], req: &Request, keep: usize) -> Option<(Cow<'a, str>, u64)> {
    if raw.len() > keep {
        let mut acc = LineAcc::default();
        acc.absorb(raw, keep, req.clean);
        return acc.select(req);
    }
    let text = if req.clean {
        clean::clean(raw)?
    } else {
        String::from_utf8_lossy(raw)
    };
    req.matcher.keeps(text.as_bytes()).then_some((text, 0))
}

/// One line being read piece by piece, in bounded memory: the first
/// `keep` bytes are kept, the rest only counted. When cleaning, a `\r`
/// starts the line over (a progress bar shows what follows its last `\r`).
#[derive(Clone, Debug, Default)]
struct LineAcc {
    kept: Vec<u8>,
    /// Characters after `kept` that were counted, not kept.
    unseen: u64,
    /// Bytes absorbed so far (0: no line in progress).
    bytes: u64,
    /// The last byte absorbed was a `\r`: it redraws only if more follows.
    cr: bool,
}

impl LineAcc {
    fn absorb(&mut self, mut bytes: &[u8], keep: usize, clean: bool) {
        if bytes.is_empty() {
            return;
        }
        self.bytes += bytes.len() as u64;
        if clean {
            if std::mem::take(&mut self.cr) {
                self.restart();
            }
            if let Some(rest) = bytes.strip_suffix(b"\r") {
                self.cr = true;
                bytes = rest;
            }
            if let Some(at) = memchr::memrchr(b'\r', bytes) {
                self.restart();
                bytes = &bytes[at + 1..];
            }
        }
        let room = keep.saturating_sub(self.kept.len()).min(bytes.len());
        self.kept.extend_from_slice(&bytes[..room]);
        self.unseen += clean::count_chars(&bytes[room..], clean);
    }

    fn restart(&mut self) {
        self.kept.clear();
        self.unseen = 0;
    }

    fn in_line(&self) -> bool {
        self.bytes > 0
    }

    /// The line's text if selected. Consumes the line so that a whole line
    /// (`--max-line-chars 0`) becomes its text without a copy when clean.
    fn select(self, req: &Request) -> Option<(Cow<'static, str>, u64)> {
        let changed = match req.clean {
            true => match clean::clean(&self.kept)? {
                Cow::Borrowed(same) if same.len() == self.kept.len() => None,
                text => Some(text.into_owned()),
            },
            false => None,
        };
        let text = changed.unwrap_or_else(|| {
            String::from_utf8(self.kept)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        });
        req.matcher
            .keeps(text.as_bytes())
            .then_some((Cow::Owned(text), self.unseen))
    }
}

/// An unfinished last line a poller has read already: its next read
/// resumes at `at` instead of reading the line again (a `\r` progress bar
/// can be a single line of hundreds of MB).
#[derive(Clone, Debug)]
struct Carry {
    at: u64,
    line: LineAcc,
}

const CHUNK: usize = 1 << 20;

/// Reads from `start` to `len`, handing every selected line to `collector`
/// in order (an unfinished last line as partial). Returns the position
/// after the last complete line, and the unfinished line's state.
fn scan_forward(
    file: &File,
    start: &Mark,
    len: u64,
    req: &Request,
    collector: &mut Collector,
) -> Result<(Pos, Option<Carry>)> {
    let keep = keep_bytes(req);
    let mut pos = start.pos;
    let (mut at, mut acc) = match start.carry.as_deref() {
        Some(c) if c.at >= pos.offset && c.at <= len => (c.at, c.line.clone()),
        _ => (pos.offset, LineAcc::default()),
    };
    // One pread(2) per chunk into a buffer zeroed once.
    let mut buf = vec![0; CHUNK.min((len - at) as usize)];
    while at < len && !collector.failed() {
        let want = CHUNK.min((len - at) as usize);
        read_exact_at(file, &mut buf[..want], at).context("log shrank while reading")?;
        let chunk_at = at;
        at += want as u64;
        let mut body = &buf[..want];
        if acc.in_line() {
            let Some(nl) = memchr::memchr(b'\n', body) else {
                acc.absorb(body, keep, req.clean);
                continue;
            };
            acc.absorb(&body[..nl], keep, req.clean);
            pos.line += 1;
            pos.offset = chunk_at + nl as u64 + 1;
            if let Some((text, unseen)) = std::mem::take(&mut acc).select(req) {
                collector.push(Line {
                    line: pos.line,
                    text,
                    unseen,
                    end: pos,
                    partial: false,
                });
            }
            body = &body[nl + 1..];
        }
        let Some(last_nl) = memchr::memrchr(b'\n', body) else {
            acc.absorb(body, keep, req.clean);
            continue;
        };
        scan_lines(&body[..=last_nl], &mut pos, req, keep, collector);
        acc.absorb(&body[last_nl + 1..], keep, req.clean);
    }
    if !acc.in_line() {
        return Ok((pos, None));
    }
    // The carry is bounded by keep_bytes; whole lines are not carried.
    let carry = (keep != usize::MAX).then(|| acc.clone());
    if req.include_partial
        && let Some((text, unseen)) = acc.select(req)
    {
        collector.push(Line {
            line: pos.line + 1,
            text,
            unseen,
            end: pos,
            partial: true,
        });
    }
    Ok((pos, carry.map(|line| Carry { at, line })))
}

/// Hands the selected lines of `complete` (whole lines, ending in a
/// newline) to `collector`, advancing `pos` over all of them. With a filter
/// the matcher finds candidate lines in the whole chunk first, when
/// cleaning cannot change what the filter sees.
fn scan_lines(complete: &[u8], pos: &mut Pos, req: &Request, keep: usize, c: &mut Collector) {
    let mut from = 0;
    let unchanged = !req.clean || clean::is_plain(complete);
    if let Some(mut search) = req.matcher.candidates(complete, unchanged) {
        while let Some(at) = search.next_candidate(complete, from) {
            if at >= complete.len() {
                break; // an empty match after the last line
            }
            let line_start = memchr::memrchr(b'\n', &complete[..at]).map_or(0, |i| i + 1);
            let line_end = at + memchr::memchr(b'\n', &complete[at..]).expect("ends in newline");
            pos.line += memchr::memchr_iter(b'\n', &complete[from..line_start]).count() as u64 + 1;
            pos.offset += (line_end + 1 - from) as u64;
            from = line_end + 1;
            if let Some((text, unseen)) = select(&complete[line_start..line_end], req, keep) {
                c.push(Line {
                    line: pos.line,
                    text,
                    unseen,
                    end: *pos,
                    partial: false,
                });
            }
            if c.failed() {
                return;
            }
        }
        pos.line += memchr::memchr_iter(b'\n', &complete[from..]).count() as u64;
        pos.offset += (complete.len() - from) as u64;
        return;
    }
    for nl in memchr::memchr_iter(b'\n', complete) {
        pos.line += 1;
        pos.offset += (nl + 1 - from) as u64;
        if let Some((text, unseen)) = select(&complete[from..nl], req, keep) {
            c.push(Line {
                line: pos.line,
                text,
                unseen,
                end: *pos,
                partial: false,
            });
            if c.failed() {
                return;
            }
        }
        from = nl + 1;
    }
}

/// What a collector gathered from one stream.
#[derive(Default)]
struct Found {
    entries: Vec<Entry>,
    /// Selected lines in the range.
    matched: u64,
    /// Selected lines past a `--head` window or the cap, not collected.
    uncollected: u64,
    /// The cap (not `--head`) stopped the collection.
    stopped_by_cap: bool,
    /// Log lines handed straight to the sink, the end of the last complete
    /// one, and whether an unfinished line was among them.
    handed: u64,
    handed_end: Option<Pos>,
    handed_partial: bool,
}

/// Turns selected lines into entries: the `--head`/`--since --tail`
/// window, collapsing of similar lines (the one implementation every path
/// uses), the collection limit, and hand-over to the sink when uncapped.
struct Collector<'o, 'a, 's> {
    stream: Stream,
    max_chars: usize,
    collapse: bool,
    head: Option<usize>,
    /// The last `n` lines (a `--since --tail n` read), collapsed at the end.
    tail: Option<(usize, VecDeque<Entry>)>,
    /// Entries to collect before the cap stops the collection.
    cap: usize,
    taken: u64,
    /// The current run of similar lines: all of it while it is 3 lines or
    /// shorter, else its first line (counting the hidden ones) and its last.
    run: Vec<Entry>,
    run_key: Option<String>,
    run_len: u64,
    found: Found,
    out: Option<&'o mut Out<'a, 's>>,
    failed: Option<std::io::Error>,
}

impl<'o, 'a, 's> Collector<'o, 'a, 's> {
    fn new(
        req: &Request,
        stream: Stream,
        window: Window,
        out: Option<&'o mut Out<'a, 's>>,
    ) -> Self {
        Collector {
            stream,
            max_chars: req.max_line_chars,
            collapse: req.clean && !req.matcher.has_filter(),
            head: match window {
                Window::Head(n) => Some(n),
                _ => None,
            },
            tail: match window {
                Window::Tail(n) => Some((n, VecDeque::new())),
                _ => None,
            },
            // A plain tail keeps its newest entries when the cap is shared.
            cap: match (req.window, &req.since) {
                (Window::Tail(_), None) => usize::MAX,
                _ => req.max_lines.unwrap_or(usize::MAX),
            },
            taken: 0,
            run: Vec::new(),
            run_key: None,
            run_len: 0,
            found: Found::default(),
            out,
            failed: None,
        }
    }

    fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Takes one selected line.
    fn push(&mut self, line: Line) {
        self.found.matched += 1;
        if let Some((n, lines)) = &mut self.tail {
            if *n > 0 {
                lines.push_back(line.entry(self.stream, self.max_chars));
                if lines.len() > *n {
                    lines.pop_front();
                }
            }
            return;
        }
        let head_full = self.head.is_some_and(|n| self.taken >= n as u64);
        let cap_full = self.found.entries.len() >= self.cap;
        if head_full || cap_full {
            self.found.stopped_by_cap |= cap_full && !head_full;
            self.found.uncollected += 1;
            return;
        }
        self.taken += 1;
        self.add(line.entry(self.stream, self.max_chars));
    }

    /// Adds an entry (one line) to the current run of similar lines, or
    /// starts a new run. An unfinished line never joins a run: it is not
    /// consumed, so the next read must show it again as itself.
    fn add(&mut self, entry: Entry) {
        let key = (self.collapse && !entry.partial).then(|| clean::similarity_key(&entry.text));
        if key.is_none() || key != self.run_key || self.run.is_empty() {
            self.flush();
            self.run_key = key;
            self.run_len = 1;
            self.run.push(entry);
            return;
        }
        self.run_len += 1;
        if self.run_len <= 3 {
            self.run.push(entry);
            return;
        }
        // Four or more: the first line stands for all but the last.
        let before = self.run.pop().expect("a run has lines");
        let middle = self.run.drain(1..).count() as u64;
        let first = &mut self.run[0];
        first.similar += middle + 1;
        first.end = before.end;
        self.run.push(entry);
    }

    fn flush(&mut self) {
        // Drained, not taken: the run's buffer is reused for every line.
        let Collector {
            run,
            out,
            found,
            failed,
            ..
        } = self;
        for entry in run.drain(..) {
            let Some(out) = out else {
                found.entries.push(entry);
                continue;
            };
            if failed.is_some() {
                continue;
            }
            let (lines, end, partial) = (1 + entry.similar, entry.end, entry.partial);
            match out.give(entry) {
                Ok(()) => {
                    found.handed += lines;
                    found.handed_partial |= partial;
                    if !partial {
                        found.handed_end = Some(end);
                    }
                }
                Err(err) => *failed = Some(err),
            }
        }
    }

    fn finish(mut self) -> Result<Found> {
        if let Some((_, lines)) = self.tail.take() {
            for entry in lines {
                self.add(entry);
            }
        }
        self.flush();
        match self.failed {
            Some(err) => Err(err.into()),
            None => Ok(self.found),
        }
    }
}

/// The last `n` selected lines, oldest first, reading blocks backwards from
/// the end. A line longer than [`keep_bytes`] is not held: its start is
/// found by scanning back, then it is read forward like any long line.
fn tail_backward(
    file: &File,
    len: u64,
    total: Pos,
    n: usize,
    stream: Stream,
    req: &Request,
) -> Result<Vec<Entry>> {
    let keep = keep_bytes(req);
    let mut found: Vec<Entry> = Vec::new(); // newest first
    let mut offer = |selected: Option<(Cow<str>, u64)>, line: u64, end: Pos, partial: bool| {
        if let Some((text, unseen)) = selected {
            let line = Line {
                line,
                text,
                unseen,
                end,
                partial,
            };
            found.push(line.entry(stream, req.max_line_chars));
        }
        found.len() < n
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut more = true;
    if len > total.offset && req.include_partial {
        let acc = read_line(file, total.offset, len, keep, req.clean)?;
        more = offer(acc.select(req), total.line + 1, total, true);
    }
    // `buf` holds file bytes [end - buf.len(), end): the unsplit part of
    // the window, ending just after the newline of line `line`.
    let mut end = total.offset;
    let mut line = total.line;
    let mut buf: Vec<u8> = Vec::new();
    let mut block = 64 << 10;
    while more && end > 0 {
        let buf_start = end - buf.len() as u64;
        if buf.len() > keep && buf_start > 0 {
            // A very long line: find its start without keeping it.
            let line_start = newline_before(file, buf_start)?;
            let acc = read_line(file, line_start, end - 1, keep, req.clean)?;
            more = offer(acc.select(req), line, Pos { offset: end, line }, false);
            end = line_start;
            line = line.saturating_sub(1);
            buf.clear();
            continue;
        }
        let read = (block as u64).min(buf_start);
        let mut fresh = vec![0; read as usize];
        read_exact_at(file, &mut fresh, buf_start - read)?;
        fresh.extend_from_slice(&buf);
        buf = fresh;
        let at_file_start = buf_start == read;
        // Split complete lines off the end of `buf`: its last byte is a newline.
        loop {
            let body = &buf[..buf.len() - 1];
            let line_start = match memchr::memrchr(b'\n', body) {
                Some(i) => i + 1,
                None if at_file_start => 0,
                None => break,
            };
            let selected = select(&body[line_start..], req, keep);
            more = offer(selected, line, Pos { offset: end, line }, false);
            end -= (buf.len() - line_start) as u64;
            line = line.saturating_sub(1);
            buf.truncate(line_start);
            if !more || buf.is_empty() {
                break;
            }
        }
        if buf.len() > block / 2 {
            block *= 2; // a long line: read bigger blocks, not quadratic copies
        }
    }
    found.reverse();
    Ok(found)
}

fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

/// Offset just after the last newline before `at` (0 if none).
fn newline_before(file: &File, mut at: u64) -> Result<u64> {
    let mut block = vec![0; 64 << 10];
    while at > 0 {
        let read = (block.len() as u64).min(at);
        read_exact_at(file, &mut block[..read as usize], at - read)?;
        if let Some(i) = memchr::memrchr(b'\n', &block[..read as usize]) {
            return Ok(at - read + i as u64 + 1);
        }
        at -= read;
    }
    Ok(0)
}

/// Reads the line in bytes [from, to) forward, in bounded memory.
fn read_line(file: &File, from: u64, to: u64, keep: usize, clean: bool) -> Result<LineAcc> {
    let mut acc = LineAcc::default();
    acc.kept.reserve_exact(keep.min((to - from) as usize));
    let mut buf = vec![0; CHUNK.min((to - from) as usize)];
    let mut at = from;
    while at < to {
        let want = buf.len().min((to - at) as usize);
        read_exact_at(file, &mut buf[..want], at)?;
        acc.absorb(&buf[..want], keep, clean);
        at += want as u64;
    }
    Ok(acc)
}

/// Brings the line-count index (`index`, as last read from `index.json`) up
/// to `len`: only new bytes are read, unless the log was rewritten under
/// it (see [`Mark::holds`]); then it is counted again.
fn refresh_index(
    task_dir: &DirFd,
    stream: Stream,
    file: &File,
    len: u64,
    ino: u64,
    index: &Mark,
) -> Result<Pos> {
    let valid = index.ino == ino && index.holds(file, len, ino);
    let mut pos = if valid { index.pos } else { Pos::default() };
    if pos.offset < len || !valid {
        let mut buf = vec![0; CHUNK.min((len - pos.offset) as usize)];
        let mut at = pos.offset;
        while at < len {
            let want = buf.len().min((len - at) as usize);
            read_exact_at(file, &mut buf[..want], at)?;
            if let Some(last) = memchr::memrchr(b'\n', &buf[..want]) {
                pos.line += memchr::memchr_iter(b'\n', &buf[..want]).count() as u64;
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
fn store_index(task_dir: &DirFd, stream: Stream, file: &File, len: u64, pos: Pos, ino: u64) {
    let Ok(lock) = task_dir.open_file(crate::store::INDEX_LOCK, Access::CreateOrOpen) else {
        return;
    };
    if lock.lock().is_err() {
        return;
    }
    let mut marks = Marks::load(task_dir, crate::store::INDEX);
    let old = marks.get(stream);
    if old.ino == ino && old.pos.offset >= pos.offset && old.holds(file, len, ino) {
        return;
    }
    marks.set(stream, Mark::at(file, pos, ino));
    if let Ok(bytes) = serde_json::to_vec(&marks) {
        let _ = task_dir.write_atomic(crate::store::INDEX, &bytes, false);
    }
}

/// Takes the named cursor's lock, held for the whole read-modify-write;
/// returns the cursors directory (created 0700, never through a symlink).
fn lock_cursor(task_dir: &DirFd, name: &str) -> Result<(DirFd, File)> {
    crate::store::validate_name("cursor name", name).map_err(crate::error::usage)?;
    let shown = || task_dir.path().join(crate::store::CURSORS);
    match task_dir.create_dir(crate::store::CURSORS) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {}", shown().display()));
        }
    }
    let dir = task_dir
        .open_dir(crate::store::CURSORS)
        .with_context(|| format!("refusing {}: not a directory", shown().display()))?;
    let lock = dir
        .open_file(&format!("{name}.lock"), Access::CreateOrOpen)
        .with_context(|| format!("cannot open the lock of cursor '{name}'"))?;
    lock.lock().context("cannot lock the cursor")?;
    Ok((dir, lock))
}

/// Complete lines in a task's stdout and stderr logs, via the index: a log
/// the index already covers is only stat'ed, never opened (`status` of a
/// thousand tasks stays fast); new bytes are counted and remembered.
pub fn line_counts(task_dir: &DirFd) -> (u64, u64) {
    let index = Marks::load(task_dir, crate::store::INDEX);
    let count = |stream: Stream| -> u64 {
        let Ok(info) = task_dir.stat_at(stream.file()) else {
            return 0;
        };
        let known = index.get(stream);
        let (len, ino) = (info.st_size as u64, info.st_ino);
        if len == 0 {
            return 0;
        }
        let regular = info.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
        if regular && known.ino == ino && known.pos.offset == len {
            return known.pos.line;
        }
        match open_log(task_dir, stream.file()) {
            Ok(Some((file, len, ino))) => {
                refresh_index(task_dir, stream, &file, len, ino, known).map_or(0, |p| p.line)
            }
            _ => 0,
        }
    };
    (count(Stream::Stdout), count(Stream::Stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_shared_fairly() {
        assert_eq!(share(10, &[100, 100]), vec![5, 5]);
        assert_eq!(share(10, &[2, 100]), vec![2, 8]);
        assert_eq!(share(10, &[3, 4]), vec![3, 4]);
        assert_eq!(share(1, &[5, 5]), vec![1, 0]);
        assert_eq!(share(usize::MAX, &[5, 5]), vec![5, 5]);
    }

    #[test]
    fn a_long_line_keeps_what_follows_its_last_redraw() {
        let mut acc = LineAcc::default();
        for piece in [&b"10%\r"[..], b"\r50", b"% done\r"] {
            acc.absorb(piece, 4, true);
        }
        assert_eq!(acc.kept, b"50% ");
        assert_eq!(acc.unseen, 4);
    }
}

//! Finding lines in task logs: ranges, cursors, filters, tail, caps.
//! Nothing here prints: every read hands its entries to a sink, in order
//! (collecting them is one sink, printing another; `render.rs` formats).
//!
//! Positions are a byte offset plus a line count ([`Pos`], with the index,
//! cursors and the bounded-log floor in [`crate::logs::marks`]), so an
//! incremental `--since` read costs only the new bytes. A persisted index
//! remembers how many complete lines a log has, so `--tail` reads only the
//! end of the file. Cursors are files updated under a lock: two readers with
//! the same cursor name never get the same line twice, and a cap never
//! skips a line (the cursor stops right after the last one returned).
//! Cursors and the index carry the log's inode and a fingerprint of the
//! bytes before their position, so a log replaced, truncated or rewritten
//! in place is noticed and read again from the start.
//!
//! A bounded log (`--max-log-size`) has its start freed by the supervisor
//! (see [`crate::logs::bounded`]): every path reads from the recorded floor
//! on, counting lines from the recorded number, and says when the range it
//! was asked for reached what was dropped ([`Hole`]).
//!
//! Memory stays bounded whatever the log: reads go in 1 MiB chunks, and a
//! line longer than [`keep_bytes`] is kept only in part (the rest counted).
//! Every path (forward, backward tail, since, follow) builds entries with
//! the same selection ([`select`]) and the same [`Collector`].

use crate::logs::marks::{
    Hole, Mark, Marks, Pos, SHRANK, lock_cursor, open_log, read_exact_at, refresh_index,
    save_cursor, store_index,
};
use crate::logs::pattern::LineMatch;
use crate::logs::tidy;
use crate::sys::LogMap;
use crate::task::dirfd::DirFd;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;

mod ahead;
mod around;
use ahead::{Claims, LineSearch, Windows};
use around::{Around, scan_lines_around};

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
            Stream::Stdout => crate::task::store::STDOUT_LOG,
            Stream::Stderr => crate::task::store::STDERR_LOG,
        }
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
    /// What a match of the filter brings with it.
    pub context: MatchContext,
}

/// What a match of a filter brings with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchContext {
    /// A match inside a stack trace or compiler error brings the whole
    /// event (see [`crate::logs::blocks`]); `false` is plain grep.
    pub blocks: bool,
    /// Lines of the log shown before and after each match, as GNU grep's
    /// `-B`/`-A` count them.
    pub before: usize,
    pub after: usize,
}

impl MatchContext {
    /// The match alone.
    pub const NONE: MatchContext = MatchContext {
        blocks: false,
        before: 0,
        after: 0,
    };

    fn any(&self) -> bool {
        *self != MatchContext::NONE
    }
}

impl Request {
    /// Every line of `streams`, cleaned, uncapped: the base that callers
    /// adjust with struct update syntax.
    pub fn all(streams: Vec<Stream>) -> Request {
        Request {
            streams,
            matcher: LineMatch::default(),
            clean: true,
            max_line_chars: tidy::DEFAULT_MAX_LINE_CHARS,
            window: Window::All,
            max_lines: None,
            since: None,
            reset_cursor: false,
            include_partial: true,
            context: MatchContext::NONE,
        }
    }

    /// Whether matches bring lines around them (blocks or context).
    fn around(&self) -> bool {
        self.matcher.has_filter() && self.context.any()
    }

    /// The same read without blocks or context: what finds the matches.
    fn plain(&self) -> Request {
        Request {
            context: MatchContext::NONE,
            ..self.clone()
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
    /// Shown as part of a match's block or context, not as a match itself.
    pub context: bool,
    /// The first line of a new group of lines around matches: text output
    /// puts a `--` line before it, as grep does.
    pub gap: bool,
    /// A marker line (`… 6 library frames`, `… 23 more frames`) standing
    /// for this many log lines; 0 for a log line.
    pub folded: u64,
}

impl Entry {
    /// Log lines this entry accounts for.
    pub fn lines(&self) -> u64 {
        if self.folded > 0 {
            self.folded
        } else {
            1 + self.similar
        }
    }
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
    /// Where the kept part of a bounded log starts: the bytes and lines
    /// before it were dropped (zeros when nothing was).
    pub dropped: Pos,
    /// Bytes and lines of the range read that were dropped before this
    /// read could see them (`None`: the range did not reach dropped data).
    pub missed: Option<Pos>,
}

/// The result of a read, one element per requested stream.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub streams: Vec<StreamResult>,
}

impl ReadResult {
    /// Matching lines not returned, over both streams (what a summary
    /// says is left to page through).
    pub fn remaining(&self) -> u64 {
        self.streams.iter().filter_map(|s| s.remaining).sum()
    }
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
    save_cursor(&cursor_dir, &file, &cursors).map_err(|e| {
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
    let wants: Vec<usize> = scans
        .iter()
        .map(|s| s.found.entries.len().saturating_sub(s.found.again))
        .collect();
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
    /// See [`StreamResult::dropped`] and [`StreamResult::missed`].
    dropped: Pos,
    missed: Option<Pos>,
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
            dropped: Pos::default(),
            missed: None,
        }
    }

    /// Applies the stream's share of the cap: the result, the entries to
    /// hand over, and where the next read of this stream starts.
    fn finish(self, budget: usize, req: &Request) -> (StreamResult, Vec<Entry>, Mark) {
        let found = self.found;
        let budget = budget.saturating_add(found.again);
        let mut entries = found.entries;
        let truncated = entries.len() > budget;
        let cut = entries.len().saturating_sub(budget);
        // A plain --tail keeps the newest lines; anything else keeps the
        // oldest, so a cursor can continue right after them.
        let dropped: Vec<Entry> = match (req.window, &req.since) {
            (Window::Tail(_), None) => entries.drain(..cut).collect(),
            _ => entries.drain(budget.min(entries.len())..).collect(),
        };
        // Block and context lines the cap dropped are no "more matching"
        // lines, but they do stop the cursor (`cut_short`).
        let dropped_lines: u64 = dropped
            .iter()
            .filter(|e| !e.context)
            .map(Entry::lines)
            .sum();
        let returned = entries.iter().map(Entry::lines).sum::<u64>() + found.handed;
        let cut_short = truncated || found.uncollected > 0 || found.stopped_by_cap;
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
            dropped: self.dropped,
            missed: self.missed,
        };
        (result, entries, mark)
    }
}

fn scan_stream(
    task_dir: &DirFd,
    stream: Stream,
    start: Mark,
    req: &Request,
    out: Option<&mut Out>,
) -> Result<Scan> {
    // With blocks or context, `--tail N` is the last N matches, each with
    // the lines around it: found first, then read forward.
    let around_tail = match req.window {
        Window::Tail(n) if req.around() => Some(n),
        _ => None,
    };
    let plain_tail = match (req.window, &req.since) {
        (Window::Tail(n), None) if around_tail.is_none() => Some(n),
        _ => None,
    };
    let window = if plain_tail.is_some() || around_tail.is_some() {
        Window::All // the tail's lines are picked apart
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
    let mut hole = Hole::load(task_dir, stream);
    // A fingerprint that does not match may have been read just after the
    // supervisor freed more: ask the record again before calling it a rewrite.
    let holds = start.holds(&file, len, ino, hole.floor.offset)
        || (hole.reload() && start.holds(&file, len, ino, hole.floor.offset));
    let (start, cursor_reset) = match holds {
        true => (start, false),
        false => (Mark::default(), true),
    };
    // Every read starts at or after the floor.
    let start = match hole.lift(start.pos) {
        lifted if lifted == start.pos => start,
        lifted => Mark {
            pos: lifted,
            ..Mark::default()
        },
    };
    if plain_tail.is_some() || (around_tail.is_some() && req.since.is_none()) {
        // A tail does not read from the start: it reaches dropped data only
        // if it wants more lines than were kept (see [`tail_backward`]).
        hole.missed = None;
    }
    collector.floor = hole.floor;
    let mut scan = if let Some(n) = around_tail {
        let plain = req.plain();
        let (first, matched, end) = if req.since.is_none() {
            let index = Marks::load(task_dir, crate::task::store::INDEX)
                .get(stream)
                .clone();
            let total = refresh_index(&file, len, ino, &index, &mut hole)?;
            let found = tail_backward(&file, len, total, n, stream, &plain, &mut hole)?;
            (found.into_iter().next(), None, total)
        } else {
            let mut finder = Collector::new(&plain, stream, Window::Tail(n), None);
            let (scanned, _) = scan_forward(&file, &start, len, &plain, &mut finder, &mut hole)?;
            let found = finder.finish()?;
            (
                found.entries.into_iter().next(),
                Some(found.matched),
                scanned,
            )
        };
        let from = match &first {
            Some(e) if e.partial => e.end,
            Some(e) => Pos {
                offset: newline_before(&file, e.end.offset - 1, hole.floor.offset)?,
                line: e.line - 1,
            },
            None => end,
        };
        let from = if from == start.pos {
            start.clone()
        } else {
            Mark {
                pos: from,
                ..Mark::default()
            }
        };
        let (scanned, carry) = scan_forward(&file, &from, len, req, &mut collector, &mut hole)?;
        let begin = if req.since.is_some() {
            start.pos
        } else {
            hole.floor
        };
        let mut scan = Scan::new(stream, collector.finish()?, begin, scanned, cursor_reset);
        scan.matched = matched;
        scan.carry = carry;
        scan
    } else if let Some(n) = plain_tail {
        // Read backwards from the end, never the whole file.
        let index = Marks::load(task_dir, crate::task::store::INDEX)
            .get(stream)
            .clone();
        let total = refresh_index(&file, len, ino, &index, &mut hole)?;
        for entry in tail_backward(&file, len, total, n, stream, req, &mut hole)? {
            collector.add(entry);
        }
        let mut scan = Scan::new(stream, collector.finish()?, hole.floor, total, cursor_reset);
        scan.matched = None;
        scan
    } else {
        let (scanned, carry) = scan_forward(&file, &start, len, req, &mut collector, &mut hole)?;
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
    scan.dropped = hole.floor;
    scan.missed = hole.missed;
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
            text: match tidy::cut(&self.text, max_chars, self.unseen) {
                Cow::Owned(cut) => cut,
                Cow::Borrowed(_) => self.text.into_owned(),
            },
            similar: 0,
            end: self.end,
            partial: self.partial,
            context: false,
            gap: false,
            folded: 0,
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
    let (text, unseen, keeps) = look(raw, req, keep)?;
    keeps.then_some((text, unseen))
}

/// A line as cleaning leaves it (`None`: cleaning drops it), its unseen
/// characters, and whether the matcher keeps it: what the reader needs of
/// lines around matches, which are shown even when they do not match.
type Looked<'a> = Option<(Cow<'a, str>, u64, bool)>;

/// [`select`] without the verdict applied.
fn look<'a>(raw: &'a [u8], req: &Request, keep: usize) -> Looked<'a> {
    if raw.len() > keep {
        let mut acc = LineAcc::default();
        acc.absorb(raw, keep, req.clean);
        return acc.look(req);
    }
    let text = if req.clean {
        tidy::clean(raw)?
    } else {
        tidy::utf8(raw)
    };
    let keeps = req.matcher.keeps(text.as_bytes());
    Some((text, 0, keeps))
}

/// [`look`] at a line known not to match the filter (the chunk search
/// passed over it): only cleaning is applied.
fn look_unmatched<'a>(raw: &'a [u8], req: &Request, keep: usize) -> Looked<'a> {
    if raw.len() > keep {
        return look(raw, req, keep).map(|(text, unseen, _)| (text, unseen, false));
    }
    let text = match req.clean {
        true => tidy::clean(raw)?,
        false => tidy::utf8(raw),
    };
    Some((text, 0, false))
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
        self.unseen += tidy::count_chars(&bytes[room..], clean);
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
        let (text, unseen, keeps) = self.look(req)?;
        keeps.then_some((text, unseen))
    }

    /// The line's text, unseen characters and the matcher's verdict.
    fn look(self, req: &Request) -> Looked<'static> {
        let changed = match req.clean {
            true => match tidy::clean(&self.kept)? {
                Cow::Borrowed(same) if same.len() == self.kept.len() => None,
                text => Some(text.into_owned()),
            },
            false => None,
        };
        let text = changed.unwrap_or_else(|| tidy::utf8_owned(self.kept));
        let keeps = req.matcher.keeps(text.as_bytes());
        Some((Cow::Owned(text), self.unseen, keeps))
    }
}

/// An unfinished last line a poller has read already: its next read
/// resumes at `at` instead of reading the line again (a `\r` progress bar
/// can be a single line of hundreds of MB).
#[derive(Clone, Debug)]
pub(crate) struct Carry {
    at: u64,
    line: LineAcc,
}

pub(crate) const CHUNK: usize = 1 << 20;

/// Bytes a forward scan reads at a time. Small enough that the kernel's
/// copy lands in cache the scan then reads from: on the 2-core VM a
/// filter over 1 GiB spends ~35% less system time than with 1 MiB reads
/// (as GNU grep's 96 KiB reads do); the chunk search and the replay
/// around a match work within each read as before.
const SCAN_READ: usize = 64 << 10;

/// A forward scan over at least this many bytes maps the log instead of
/// reading it: below it the mapping's set-up costs more than the copy.
const MAP_AT_LEAST: u64 = 4 << 20;

/// Whether no supervisor can free part of this task's logs during a read
/// begun after this call: the task has ended, or its logs have no size
/// limit. A mapped page that a hole punch frees reads as zeros in place,
/// under a scan already past its check for freed ranges
/// (`Hole::freed_under`); a `pread` copy is a snapshot, so a log that may
/// be punched is read, not mapped.
fn cannot_be_freed_while_read(task_dir: &DirFd) -> bool {
    crate::task::meta::TaskMeta::load_in(task_dir)
        .is_ok_and(|meta| meta.state.is_final() || meta.max_log_size.is_none())
}

/// Held entries (see [`Collector::hold`]) go out in batches of about this
/// many bytes, each once the log is seen to reach past what it was made of:
/// holding a whole window's entries (a read without a filter holds every
/// line) cost memory and page faults, and a reader piped to `head` saw its
/// first line only after a window.
const HOLD_BYTES: usize = 256 << 10;

/// What a scan of a mapped window checks before handing on what it holds.
struct Intact<'a> {
    file: &'a File,
    map: Option<&'a LogMap>,
}

impl<'a> Intact<'a> {
    fn of(file: &'a File, map: Option<&'a LogMap>) -> Intact<'a> {
        Intact { file, map }
    }

    /// Hands on the held entries if the log still reaches `to` (the end of
    /// the last line read through the mapping).
    fn release(&self, c: &mut Collector, to: u64) -> Result<()> {
        if let Some(map) = self.map {
            span_intact(self.file, map, to)?;
        }
        c.release();
        Ok(())
    }

    /// [`Intact::release`] once a batch is full; holding goes on.
    fn release_batch(&self, c: &mut Collector, to: u64) -> Result<()> {
        if c.held.bytes >= HOLD_BYTES {
            self.release(c, to)?;
            c.hold();
        }
        Ok(())
    }
}

/// After a mapped window was read: the file still reaches its end. A file cut
/// inside a page already mapped raises no SIGBUS (the kernel zeroes the rest
/// of that page in place), so the length is checked too; checked after the
/// reading, a pass means the bytes were intact while they were read.
fn span_intact(file: &File, span: &LogMap, to: u64) -> Result<()> {
    if span.shrank() || file.metadata().map_or(true, |m| m.len() < to) {
        anyhow::bail!(SHRANK);
    }
    Ok(())
}

/// How much of a log is mapped at once, in one window: large enough that
/// mapping costs little per byte, small enough that the windows mapped at
/// once (the reader's and those searched ahead, see `ahead`) keep the pages
/// counted in our resident size bounded.
const MAP_WINDOW: usize = 4 << 20;

/// Reads from `start` to `len`, handing every selected line to `collector`
/// in order (an unfinished last line as partial). Returns the position
/// after the last complete line, and the unfinished line's state.
fn scan_forward(
    file: &File,
    start: &Mark,
    len: u64,
    req: &Request,
    collector: &mut Collector,
    hole: &mut Hole,
) -> Result<(Pos, Option<Carry>)> {
    let keep = keep_bytes(req);
    let mut pos = start.pos;
    let (mut at, mut acc) = match start.carry.as_deref() {
        Some(c) if c.at >= pos.offset && c.at <= len => (c.at, c.line.clone()),
        _ => (pos.offset, LineAcc::default()),
    };
    if collector.around.is_some() {
        // Blocks and context may begin before the range: replay the lines
        // just before it (shown only as context of matches in the range).
        collector.start_around(file, pos, req, keep)?;
    }
    // A large range is read through mappings of MAP_WINDOW bytes at a time
    // (no copy out of the page cache, see `LogMap`), and with a filter the
    // windows are searched on two cores (see `ahead`); otherwise, or where no
    // mapping can be made, one pread(2) per SCAN_READ bytes into a buffer
    // zeroed once.
    let frozen = len - at >= MAP_AT_LEAST && cannot_be_freed_while_read(hole.dir);
    let claims = Claims::new(file, (at, len), MAP_WINDOW, &req.matcher, req.clean);
    std::thread::scope(|scope| {
        let mut windows = match frozen && req.matcher.searches_chunks() {
            true => Windows::start(scope, &claims),
            false => None,
        };
        let mut mapping = frozen;
        // Freeing only ever cuts a prefix of the log: once a window passed the
        // look for freed ranges after the log was seen frozen, none can follow.
        // (One look per page of every window, each a cache miss of its own,
        // cost a sixth of a filter.)
        let mut look_for_holes = true;
        let mut map: Option<(LogMap, u64)> = None;
        let mut buf = Vec::new();
        while at < len && !collector.failed() {
            let mut found = None;
            if mapping {
                if let Some((done, to)) = map.take() {
                    Intact::of(file, Some(&done)).release(collector, to)?;
                }
                let want = MAP_WINDOW.min((len - at) as usize);
                map = match Windows::take(&mut windows, at) {
                    Some(window) => {
                        found = window.found;
                        Some(window.map)
                    }
                    None => LogMap::new(file, at, want).ok(),
                }
                .map(|window| (window, at + want as u64));
                mapping = map.is_some();
                if mapping {
                    collector.hold();
                }
            }
            let window: &[u8] = match &map {
                Some((window, _)) => {
                    // Mapped, a window is larger: nothing is copied, and the
                    // chunk search starts fewer times.
                    window.touch();
                    if window.shrank() {
                        anyhow::bail!(SHRANK);
                    }
                    window.bytes()
                }
                None => {
                    let want = SCAN_READ.min((len - at) as usize);
                    if buf.len() < want {
                        buf = vec![0; want]; // once: later reads are no larger
                    }
                    read_exact_at(file, &mut buf[..want], at)?;
                    &buf[..want]
                }
            };
            let want = window.len();
            if look_for_holes && hole.freed_under(window, at) {
                // Freed while this read went on: continue where the log now starts.
                pos = hole.lift(pos);
                at = pos.offset;
                acc = LineAcc::default();
                continue;
            }
            look_for_holes = !frozen;
            let chunk_at = at;
            at += want as u64;
            let mut body = window;
            if acc.in_line() {
                let Some(nl) = memchr::memchr(b'\n', body) else {
                    acc.absorb(body, keep, req.clean);
                    continue;
                };
                acc.absorb(&body[..nl], keep, req.clean);
                let line_start = pos;
                pos.line += 1;
                pos.offset = chunk_at + nl as u64 + 1;
                let looked = std::mem::take(&mut acc).look(req);
                let line = (pos.line, pos, false);
                collector.offer_unsearched(file, line_start, line, looked, (req, keep))?;
                body = &body[nl + 1..];
            }
            let Some(last_nl) = memchr::memrchr(b'\n', body) else {
                acc.absorb(body, keep, req.clean);
                continue;
            };
            let complete = &body[..=last_nl];
            let search = LineSearch::new(found.as_ref(), &req.matcher, complete, pos, req.clean);
            let intact = Intact::of(file, map.as_ref().map(|(window, _)| window));
            if collector.around.is_some() {
                scan_lines_around(complete, &mut pos, search, (req, keep), collector, &intact)?;
            } else {
                scan_lines(complete, &mut pos, search, (req, keep), collector, &intact)?;
            }
            acc.absorb(&body[last_nl + 1..], keep, req.clean);
        }
        let (done, to) = map.map_or((None, 0), |(done, to)| (Some(done), to));
        Intact::of(file, done.as_ref()).release(collector, to)?;
        if !acc.in_line() {
            collector.finish_around(pos);
            return Ok((pos, None));
        }
        // The carry is bounded by keep_bytes; whole lines are not carried.
        let carry = (keep != usize::MAX).then(|| acc.clone());
        if req.include_partial {
            let line = (pos.line + 1, pos, true);
            collector.offer_unsearched(file, pos, line, acc.look(req), (req, keep))?;
        }
        collector.finish_around(pos);
        Ok((pos, carry.map(|line| Carry { at, line })))
    })
}

/// Hands the selected lines of `complete` (whole lines, ending in a
/// newline) to `collector`, advancing `pos` over all of them. With a filter
/// the matcher finds candidate lines in the whole chunk first, when
/// cleaning cannot change what the filter sees.
fn scan_lines(
    complete: &[u8],
    pos: &mut Pos,
    search: Option<LineSearch>,
    (req, keep): (&Request, usize),
    c: &mut Collector,
    intact: &Intact,
) -> Result<()> {
    let mut from = 0;
    if let Some(mut search) = search {
        while let Some(start) = search.next_line(complete, from, pos) {
            // `complete` ends in a newline when it was cut; a mapped log cut
            // short since may have lost it (the shrink is reported after).
            let Some(end) = memchr::memchr(b'\n', &complete[start..]).map(|n| start + n) else {
                return Ok(());
            };
            pos.line += 1;
            pos.offset += (end + 1 - start) as u64;
            from = end + 1;
            if !offer_whole(&complete[start..end], *pos, req, keep, c) {
                return Ok(());
            }
            intact.release_batch(c, pos.offset)?;
        }
        return Ok(());
    }
    for nl in memchr::memchr_iter(b'\n', complete) {
        pos.line += 1;
        pos.offset += (nl + 1 - from) as u64;
        if !offer_whole(&complete[from..nl], *pos, req, keep, c) {
            return Ok(());
        }
        intact.release_batch(c, pos.offset)?;
        from = nl + 1;
    }
    Ok(())
}

/// Hands one whole line (ending just before `end`) to the collector if it
/// is selected; false once the collector can take no more.
fn offer_whole(raw: &[u8], end: Pos, req: &Request, keep: usize, c: &mut Collector) -> bool {
    if let Some((text, unseen)) = select(raw, req, keep) {
        c.push(Line {
            line: end.line,
            text,
            unseen,
            end,
            partial: false,
        });
    }
    !c.failed()
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
    /// Entries for lines before the range, shown again as context: not
    /// counted against the cap.
    again: usize,
    /// Log lines handed straight to the sink, the end of the last complete
    /// one, and whether an unfinished line was among them.
    handed: u64,
    handed_end: Option<Pos>,
    handed_partial: bool,
}

/// Gives one entry to the caller's sink, counting what was handed over
/// (where a cursor may stop); after a failure, gives nothing more.
fn hand_over(out: &mut Out, found: &mut Found, failed: &mut Option<std::io::Error>, entry: Entry) {
    if failed.is_some() {
        return;
    }
    let (lines, end, partial) = (entry.lines(), entry.end, entry.partial);
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

/// Entries held back while the mapped bytes they came from are not known
/// to be intact: a log cut short under a mapping reads as zeros, which must
/// never reach the caller as lines.
#[derive(Default)]
struct Held {
    entries: Vec<Entry>,
    /// Entries are being held (a mapped window is being read).
    on: bool,
    /// About how much memory the held entries take.
    bytes: usize,
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
    /// Scratch for the next line's key.
    next_key: String,
    run_len: u64,
    found: Found,
    out: Option<&'o mut Out<'a, 's>>,
    failed: Option<std::io::Error>,
    /// Entries waiting for the mapped bytes they came from to be checked
    /// (see [`Collector::hold`]).
    held: Held,
    /// Blocks and context around matches, when the read asks for them.
    around: Option<Around>,
    /// Where the log's kept part starts: lines replayed before a range
    /// never come from before it (see [`Hole`]).
    floor: Pos,
}

impl<'o, 'a, 's> Collector<'o, 'a, 's> {
    fn new(
        req: &Request,
        stream: Stream,
        window: Window,
        out: Option<&'o mut Out<'a, 's>>,
    ) -> Self {
        let head = match window {
            Window::Head(n) => Some(n),
            _ => None,
        };
        let around = req.around().then(|| Around::new(req, head));
        Collector {
            stream,
            max_chars: req.max_line_chars,
            collapse: req.clean && !req.matcher.has_filter(),
            // With blocks or context, `--head` counts matches (in `Around`).
            head: head.filter(|_| around.is_none()),
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
            next_key: String::new(),
            run_len: 0,
            found: Found::default(),
            out,
            failed: None,
            held: Held::default(),
            around,
            floor: Pos::default(),
        }
    }

    /// [`Collector::offer`] for a line the chunk search did not see (one
    /// across two reads, an unfinished last line), starting at `start`:
    /// with blocks or context it is passed over as the lines the search
    /// passes over are, or, if it matches, caught up to like a candidate
    /// (its context, its block).
    fn offer_unsearched(
        &mut self,
        file: &File,
        start: Pos,
        (n, end, partial): (u64, Pos, bool),
        looked: Looked,
        (req, keep): (&Request, usize),
    ) -> Result<()> {
        let around = self.around.is_some() && !self.hot(start);
        match looked {
            Some((_, _, false)) | None if around => {}
            looked => {
                if around {
                    self.catch_up(file, start, &[], req, keep)?;
                }
                self.offer(n, end, partial, looked);
            }
        }
        Ok(())
    }

    /// Takes one line of the range, `looked` at (see [`look`]): a match
    /// is collected, and with blocks or context so are lines around it.
    fn offer(&mut self, n: u64, end: Pos, partial: bool, looked: Looked) {
        match self.around.take() {
            Some(mut around) => {
                around.take(self, n, end, partial, looked);
                self.around = Some(around);
            }
            None => {
                if let Some((text, unseen, true)) = looked {
                    self.push(Line {
                        line: n,
                        text,
                        unseen,
                        end,
                        partial,
                    });
                }
            }
        }
    }

    /// Takes an entry from [`Around`]: a match or a line shown around one.
    /// Lines from before the range (`again`) do not count against the cap,
    /// so a page always makes progress.
    fn give(&mut self, entry: Entry, again: bool) {
        if again {
            self.found.again += 1;
        } else if self.found.entries.len().saturating_sub(self.found.again) >= self.cap {
            self.found.stopped_by_cap = true;
            self.found.uncollected += u64::from(!entry.context);
            return;
        }
        self.run.push(entry);
        self.flush();
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
        let keyed = self.collapse && !entry.partial;
        if keyed {
            tidy::similarity_key_into(&entry.text, &mut self.next_key);
        }
        let same = keyed && self.run_key.as_ref() == Some(&self.next_key);
        if !same || self.run.is_empty() {
            self.flush();
            // The buffers trade places: no key is allocated per line.
            match (&mut self.run_key, keyed) {
                (Some(run_key), true) => std::mem::swap(run_key, &mut self.next_key),
                (run_key, true) => *run_key = Some(std::mem::take(&mut self.next_key)),
                (run_key, false) => *run_key = None,
            }
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
            held,
            ..
        } = self;
        for entry in run.drain(..) {
            match out.as_deref_mut() {
                None => found.entries.push(entry),
                Some(_) if held.on => {
                    held.bytes += entry.text.len() + std::mem::size_of::<Entry>();
                    held.entries.push(entry);
                }
                Some(out) => hand_over(out, found, failed, entry),
            }
        }
    }

    /// Entries from now on wait for [`Collector::release`]: they come from
    /// a mapped window whose bytes are not known to be intact yet.
    fn hold(&mut self) {
        self.held.on = self.out.is_some();
    }

    /// Hands over the entries held: the window they came from was intact
    /// while it was read.
    fn release(&mut self) {
        let held = &mut self.held;
        (held.on, held.bytes) = (false, 0);
        if let Some(out) = self.out.as_deref_mut() {
            // Drained, not taken: the buffer is reused for the next batch.
            for entry in held.entries.drain(..) {
                hand_over(out, &mut self.found, &mut self.failed, entry);
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
    hole: &mut Hole,
) -> Result<Vec<Entry>> {
    let keep = keep_bytes(req);
    let floor = hole.floor.offset;
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
    while more && end > floor {
        let buf_start = end - buf.len() as u64;
        if buf.len() > keep && buf_start > floor {
            // A very long line: find its start without keeping it.
            let line_start = newline_before(file, buf_start, floor)?;
            let acc = read_line(file, line_start, end - 1, keep, req.clean)?;
            more = offer(acc.select(req), line, Pos { offset: end, line }, false);
            end = line_start;
            line = line.saturating_sub(1);
            buf.clear();
            continue;
        }
        let read = (block as u64).min(buf_start - floor);
        let mut fresh = vec![0; read as usize];
        read_exact_at(file, &mut fresh, buf_start - read)?;
        fresh.extend_from_slice(&buf);
        buf = fresh;
        let at_file_start = buf_start - read == floor;
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
    if more && end <= floor {
        // The tail would reach before the kept part of the log.
        hole.touched();
    }
    // Freed while this read went on: what it read there may be zeros.
    if hole.reload() {
        let floor = hole.floor.offset;
        let before = found.len();
        found.retain(|e| e.partial || e.end.offset > floor);
        if found.len() < before {
            hole.touched();
        }
    }
    found.reverse();
    Ok(found)
}

/// Offset just after the last newline before `at` (`low` if none after it).
fn newline_before(file: &File, mut at: u64, low: u64) -> Result<u64> {
    let mut block = vec![0; 64 << 10];
    while at > low {
        let read = (block.len() as u64).min(at - low);
        read_exact_at(file, &mut block[..read as usize], at - read)?;
        if let Some(i) = memchr::memrchr(b'\n', &block[..read as usize]) {
            return Ok(at - read + i as u64 + 1);
        }
        at -= read;
    }
    Ok(at)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file cut inside a page already mapped raises no SIGBUS (the rest of
    /// the page turns to zeros in place): the length check still sees it.
    #[test]
    fn a_span_cut_inside_its_last_page_is_not_intact() {
        let path = std::env::temp_dir().join(format!("bgt-span-{}", std::process::id()));
        std::fs::write(&path, vec![b'y'; 10_000]).unwrap();
        let file = File::open(&path).unwrap();
        let span = crate::sys::LogMap::new(&file, 0, 10_000).unwrap();
        span.touch();
        assert!(span_intact(&file, &span, 10_000).is_ok());
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(9_000))
            .unwrap();
        assert!(!span.shrank(), "no fault: the page was there");
        assert!(span_intact(&file, &span, 10_000).is_err());
        std::fs::remove_file(&path).unwrap();
    }

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

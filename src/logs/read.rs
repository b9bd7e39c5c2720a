//! Finding lines in task logs: ranges, cursors, filters, tail, caps.
//! Nothing here prints; `render.rs` turns a [`ReadResult`] into text or JSON.
//!
//! Positions are a byte offset plus a line count ([`Pos`]), so an
//! incremental `--since` read costs only the new bytes. A persisted index
//! remembers how many complete lines a log has, so `--tail` reads only the
//! end of the file. Cursors are files updated under a lock: two readers with
//! the same cursor name never get the same line twice, and a cap never
//! skips a line (the cursor stops right after the last one returned).

use crate::clean;
use crate::meta::write_atomic;
use crate::pattern::LineMatch;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

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

    fn file(self) -> &'static str {
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

/// A position in one particular file (inode), so a replaced log is noticed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Mark {
    #[serde(flatten)]
    pos: Pos,
    #[serde(default)]
    ino: u64,
}

/// Per-stream positions: a reader's cursor, or the line-count index.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Marks {
    #[serde(default)]
    stdout: Mark,
    #[serde(default)]
    stderr: Mark,
}

impl Marks {
    fn get(&self, stream: Stream) -> Mark {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    fn set(&mut self, stream: Stream, mark: Mark) {
        match stream {
            Stream::Stdout => self.stdout = mark,
            Stream::Stderr => self.stderr = mark,
        }
    }

    fn load(path: &Path) -> Marks {
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
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

/// One returned line, or the first of a run of similar lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub stream: Stream,
    /// 1-based line number in the log.
    pub line: u64,
    pub text: String,
    /// How many following lines were collapsed into this one.
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
    pub entries: Vec<Entry>,
    /// Complete lines in the whole log.
    pub total_lines: u64,
    /// Matching lines in the range read; `None` when a `--tail` read stopped
    /// early without looking at the whole range.
    pub matched: Option<u64>,
    /// Log lines accounted for by the entries (a collapsed run counts whole).
    pub returned: u64,
    /// The cap cut the result short.
    pub truncated: bool,
    /// Matching lines after the last returned one that were not returned.
    pub remaining: Option<u64>,
    /// Where the next `--since` read starts.
    pub cursor: Pos,
    /// The log shrank or was replaced, so the cursor started over.
    pub cursor_reset: bool,
}

/// The result of a read, one element per requested stream.
#[derive(Clone, Debug)]
pub struct ReadResult {
    pub streams: Vec<StreamResult>,
}

/// Receives entries as they are found (see [`read_with`]).
pub type Sink<'a> = &'a mut dyn FnMut(&Entry) -> std::io::Result<()>;

/// Lends the sink out for a shorter time (`as_deref_mut` cannot shorten the
/// trait object's lifetime; this coercion can).
fn lend<'a>(sink: &'a mut Option<Sink<'_>>) -> Option<Sink<'a>> {
    match sink {
        Some(s) => Some(&mut **s),
        None => None,
    }
}

/// Reads a task's logs as `req` says; with `since`, under the cursor's lock.
pub fn read(task_dir: &Path, req: &Request) -> Result<ReadResult> {
    read_with(task_dir, req, None)
}

/// Like [`read`], but an uncapped whole-range read (`--max-lines 0`, no
/// tail/head) hands its entries to `sink` as they are found instead of
/// collecting them, so reading a 1 GiB log needs no 1 GiB of memory and a
/// closed pipe stops the scan. Other reads ignore the sink.
pub fn read_with(task_dir: &Path, req: &Request, mut sink: Option<Sink>) -> Result<ReadResult> {
    let Some(name) = &req.since else {
        return read_from_sink(task_dir, req, &mut Marks::default(), sink);
    };
    let _lock = lock_cursor(task_dir, name)?;
    let path = task_dir.join("cursors").join(format!("{name}.json"));
    let mut cursors = if req.reset_cursor {
        Marks::default()
    } else {
        Marks::load(&path)
    };
    let result = read_from_sink(task_dir, req, &mut cursors, lend(&mut sink));
    // Advance the cursor even if the sink failed part-way: it only moves
    // past entries that were handed over.
    write_atomic(&path, &serde_json::to_vec(&cursors)?, false)?;
    result
}

/// Reads the lines after `from` (per stream) and moves `from` to where the
/// next incremental read should start.
pub fn read_from(task_dir: &Path, req: &Request, from: &mut Marks) -> Result<ReadResult> {
    read_from_sink(task_dir, req, from, None)
}

fn read_from_sink(
    task_dir: &Path,
    req: &Request,
    from: &mut Marks,
    mut sink: Option<Sink>,
) -> Result<ReadResult> {
    let streaming = req.window == Window::All && req.max_lines.is_none();
    let mut scans = Vec::new();
    for &stream in &req.streams {
        let sink = if streaming { lend(&mut sink) } else { None };
        let scan = scan_stream(task_dir, stream, from.get(stream), req, sink);
        match scan {
            Ok(scan) => scans.push(scan),
            Err(err) => {
                // A sink error (closed pipe): keep what was handed over.
                for scan in &scans {
                    from.set(
                        scan.stream,
                        Mark {
                            pos: scan.scanned,
                            ino: scan.ino,
                        },
                    );
                }
                return Err(err);
            }
        }
    }

    // Share the cap between streams: each gets half, and what one does not
    // use goes to the other.
    let cap = req.max_lines.unwrap_or(usize::MAX);
    let wants: Vec<usize> = scans.iter().map(|s| s.entries.len()).collect();
    let budgets = share(cap, &wants);

    let mut results = Vec::new();
    for (scan, budget) in scans.into_iter().zip(budgets) {
        let ino = scan.ino;
        let result = finish(scan, budget, req);
        from.set(
            result.stream,
            Mark {
                pos: result.cursor,
                ino,
            },
        );
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
    entries: Vec<Entry>,
    matched: Option<u64>,
    /// Matching lines in entries that were not collected (past a head/cap).
    uncollected: u64,
    /// End of the complete lines scanned (forward) or of the log (tail).
    scanned: Pos,
    start: Pos,
    total_lines: u64,
    cursor_reset: bool,
    ino: u64,
    /// Lines handed to a sink instead of being collected.
    streamed: u64,
}

fn finish(scan: Scan, budget: usize, req: &Request) -> StreamResult {
    let mut entries = scan.entries;
    let truncated = entries.len() > budget;
    let cut = entries.len().saturating_sub(budget);
    // A plain --tail keeps the newest lines; anything else keeps the oldest,
    // so a cursor can continue right after them.
    let dropped: Vec<Entry> = match (req.window, &req.since) {
        (Window::Tail(_), None) => entries.drain(..cut).collect(),
        _ => entries.drain(budget.min(entries.len())..).collect(),
    };
    let dropped_lines: u64 = dropped.iter().map(|e| 1 + e.similar).sum();
    let returned = entries.iter().map(|e| 1 + e.similar).sum::<u64>() + scan.streamed;
    let cut_short = truncated || scan.uncollected > 0;
    let cursor = match entries.iter().rev().find(|e| !e.partial) {
        Some(last) if cut_short => last.end,
        None if cut_short => scan.start,
        _ => scan.scanned,
    };
    // The cap (not --head) stopped the collection early.
    let capped_early = scan.uncollected > 0
        && match req.window {
            Window::Head(n) => req.max_lines.is_some_and(|cap| cap < n),
            _ => true,
        };
    StreamResult {
        stream: scan.stream,
        entries,
        total_lines: scan.total_lines,
        matched: scan.matched,
        returned,
        truncated: truncated || capped_early,
        remaining: Some(dropped_lines + scan.uncollected),
        cursor,
        cursor_reset: scan.cursor_reset,
    }
}

/// Opens a log without following a planted symlink; a missing log reads as empty.
fn open_log(path: &Path) -> Result<Option<(File, u64, u64)>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => {
            let info = file.metadata()?;
            Ok(Some((file, info.len(), info.ino())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read {}: {}",
            path.display(),
            crate::error::io_message(&e)
        )),
    }
}

fn scan_stream(
    task_dir: &Path,
    stream: Stream,
    start: Mark,
    req: &Request,
    sink: Option<Sink>,
) -> Result<Scan> {
    let Some((mut file, len, ino)) = open_log(&task_dir.join(stream.file()))? else {
        return Ok(Scan {
            stream,
            entries: Vec::new(),
            matched: Some(0),
            uncollected: 0,
            scanned: Pos::default(),
            start: Pos::default(),
            total_lines: 0,
            cursor_reset: start.pos.offset > 0,
            ino: 0,
            streamed: 0,
        });
    };
    let mut start_pos = start.pos;
    let mut cursor_reset = false;
    if start_pos.offset > len || (start.ino != 0 && start.ino != ino) {
        start_pos = Pos::default();
        cursor_reset = true;
    }
    let collapse = req.clean && req.matcher.filter.is_none();
    let mut collector = Collector::new(
        stream,
        req.window,
        req.max_lines,
        collapse,
        req.clean,
        req.max_line_chars,
        sink,
    );

    if let (Window::Tail(n), None) = (req.window, &req.since) {
        // Plain tail: read backwards from the end, never the whole file.
        let index = Marks::load(&task_dir.join("index.json")).get(stream);
        let total = refresh_index(task_dir, stream, &mut file, len, ino, index)?;
        let entries = tail_backward(&mut file, len, total, n, stream, req)?;
        return Ok(Scan {
            stream,
            entries,
            matched: None,
            uncollected: 0,
            scanned: total,
            start: Pos::default(),
            total_lines: total.line,
            cursor_reset,
            ino,
            streamed: 0,
        });
    }

    file.seek(SeekFrom::Start(start_pos.offset))?;
    let scanned = scan_forward(&mut file, start_pos, len, req, &mut |kept| {
        collector.push(kept)
    })?;
    let (entries, matched, uncollected, streamed) = collector.finish()?;
    store_index(task_dir, stream, scanned, ino);
    Ok(Scan {
        stream,
        entries,
        matched: Some(matched),
        uncollected,
        scanned,
        start: start_pos,
        total_lines: scanned.line,
        cursor_reset,
        ino,
        streamed,
    })
}

/// A line that passed cleaning, exclude and filter.
struct Kept<'a> {
    line: u64,
    text: Cow<'a, str>,
    end: Pos,
    partial: bool,
}

/// Applies cleaning and the matcher to one raw line.
fn select<'a>(raw: &'a [u8], req: &Request) -> Option<Cow<'a, str>> {
    let text = if req.clean {
        clean::clean(raw)?
    } else {
        String::from_utf8_lossy(raw.strip_suffix(b"\n").unwrap_or(raw))
    };
    req.matcher.keeps(text.as_bytes()).then_some(text)
}

const CHUNK: usize = 1 << 20;

/// Reads from `start` to `len`, calling `on_kept` for every selected line in
/// order (a final line without newline is passed as partial). Returns the
/// position after the last complete line.
fn scan_forward(
    file: &mut File,
    start: Pos,
    len: u64,
    req: &Request,
    on_kept: &mut dyn FnMut(Kept) -> bool,
) -> Result<Pos> {
    let mut pos = start;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK.min((len - start.offset) as usize + 1));
    let mut left = len - start.offset;
    // Whole-chunk search is exact only if cleaning cannot change what the
    // filter sees; every candidate line is still confirmed on its own.
    let filter = req.matcher.chunk_filter.as_ref();
    loop {
        let want = (CHUNK.max(buf.len() * 2) - buf.len()).min(left as usize);
        let old = buf.len();
        // read_to_end fills spare capacity without zeroing it first.
        (&mut *file).take(want as u64).read_to_end(&mut buf)?;
        if buf.len() - old != want {
            anyhow::bail!("log shrank while reading");
        }
        left -= want as u64;
        let Some(last_nl) = memchr::memrchr(b'\n', &buf) else {
            if left == 0 {
                break;
            }
            continue; // one line longer than the buffer: read more
        };
        let complete = &buf[..=last_nl];
        match filter {
            Some(re)
                if (!req.clean || clean::is_plain(complete))
                    && (!req.matcher.chunk_needs_utf8 || std::str::from_utf8(complete).is_ok()) =>
            {
                let mut from = 0;
                let mut next_literal =
                    vec![None; req.matcher.literals.as_ref().map_or(0, Vec::len)];
                while let Some(at) = next_candidate(
                    re,
                    req.matcher.literals.as_deref(),
                    &mut next_literal,
                    complete,
                    from,
                ) {
                    if at >= complete.len() {
                        break; // an empty match after the last line
                    }
                    let line_start = memchr::memrchr(b'\n', &complete[..at]).map_or(0, |i| i + 1);
                    let line_end =
                        at + memchr::memchr(b'\n', &complete[at..]).expect("chunk ends in newline");
                    pos.line +=
                        memchr::memchr_iter(b'\n', &complete[from..line_start]).count() as u64 + 1;
                    pos.offset += (line_end + 1 - from) as u64;
                    from = line_end + 1;
                    if let Some(text) = select(&complete[line_start..line_end], req)
                        && !on_kept(Kept {
                            line: pos.line,
                            text,
                            end: pos,
                            partial: false,
                        })
                    {
                        return Ok(pos); // the consumer gave up (closed pipe)
                    }
                }
                pos.line += memchr::memchr_iter(b'\n', &complete[from..]).count() as u64;
                pos.offset += (complete.len() - from) as u64;
            }
            _ => {
                let mut line_start = 0;
                for nl in memchr::memchr_iter(b'\n', complete) {
                    pos.line += 1;
                    pos.offset += (nl + 1 - line_start) as u64;
                    if let Some(text) = select(&complete[line_start..nl], req)
                        && !on_kept(Kept {
                            line: pos.line,
                            text,
                            end: pos,
                            partial: false,
                        })
                    {
                        return Ok(pos);
                    }
                    line_start = nl + 1;
                }
            }
        }
        buf.drain(..=last_nl);
        if left == 0 {
            break;
        }
    }
    if !buf.is_empty()
        && req.include_partial
        && let Some(text) = select(&buf, req)
    {
        on_kept(Kept {
            line: pos.line + 1,
            text,
            end: pos,
            partial: true,
        });
    }
    Ok(pos)
}

/// Start of the next possible match at or after `from`. Candidates are
/// confirmed line by line afterwards, so a match spanning lines never counts.
/// With plain words, each word's next position is remembered and searched
/// again only once passed, so a rare word is not re-scanned for every
/// occurrence of a frequent one.
fn next_candidate(
    re: &regex::bytes::Regex,
    literals: Option<&[memchr::memmem::Finder<'static>]>,
    next: &mut [Option<usize>],
    hay: &[u8],
    from: usize,
) -> Option<usize> {
    let Some(finders) = literals else {
        return re.find_at(hay, from).map(|m| m.start());
    };
    for (finder, slot) in finders.iter().zip(next.iter_mut()) {
        if slot.is_none_or(|at| at < from) {
            *slot = Some(finder.find(&hay[from..]).map_or(usize::MAX, |at| at + from));
        }
    }
    next.iter()
        .flatten()
        .copied()
        .min()
        .filter(|&at| at != usize::MAX)
}

/// Builds entries from kept lines: collapsing, head/tail window, collection
/// limit, or hand-over to a sink.
struct Collector<'s> {
    stream: Stream,
    window: Window,
    limit: usize,
    collapse: bool,
    cut: Option<usize>,
    entries: VecDeque<Entry>,
    pending: Option<(Entry, String)>,
    matched: u64,
    uncollected: u64,
    sink: Option<Sink<'s>>,
    streamed: u64,
    failed: Option<std::io::Error>,
}

impl<'s> Collector<'s> {
    fn new(
        stream: Stream,
        window: Window,
        cap: Option<usize>,
        collapse: bool,
        clean: bool,
        max_chars: usize,
        sink: Option<Sink<'s>>,
    ) -> Self {
        let cap = cap.unwrap_or(usize::MAX);
        let limit = match window {
            Window::All => cap,
            Window::Head(n) => n.min(cap),
            Window::Tail(n) => n,
        };
        Collector {
            stream,
            window,
            limit,
            collapse,
            cut: clean.then_some(max_chars),
            entries: VecDeque::new(),
            pending: None,
            matched: 0,
            uncollected: 0,
            sink,
            streamed: 0,
            failed: None,
        }
    }

    fn full(&self) -> bool {
        !matches!(self.window, Window::Tail(_)) && self.entries.len() >= self.limit
    }

    /// Takes one kept line; false once the sink has failed (stop scanning).
    fn push(&mut self, kept: Kept) -> bool {
        self.matched += 1;
        if self.full() {
            self.uncollected += 1;
            return true;
        }
        // A partial line is never folded into a run: it is not consumed, so
        // the next read must show it again as itself.
        let key = if self.collapse && !kept.partial {
            clean::similarity_key(&kept.text)
        } else {
            String::new()
        };
        if let Some((entry, pending_key)) = &mut self.pending
            && self.collapse
            && !kept.partial
            && *pending_key == key
        {
            entry.similar += 1;
            entry.end = kept.end;
            return true;
        }
        self.flush();
        if self.full() {
            self.uncollected += 1;
            return true;
        }
        let text = match self.cut {
            Some(max) => clean::cut(&kept.text, max).into_owned(),
            None => kept.text.into_owned(),
        };
        let entry = Entry {
            stream: self.stream,
            line: kept.line,
            text,
            similar: 0,
            end: kept.end,
            partial: kept.partial,
        };
        self.pending = Some((entry, key));
        self.failed.is_none()
    }

    fn flush(&mut self) {
        let Some((entry, _)) = self.pending.take() else {
            return;
        };
        if let Some(sink) = &mut self.sink {
            if self.failed.is_none() {
                match sink(&entry) {
                    Ok(()) => self.streamed += 1 + entry.similar,
                    Err(err) => self.failed = Some(err),
                }
            }
            return;
        }
        self.entries.push_back(entry);
        if let Window::Tail(n) = self.window {
            while self.entries.len() > n {
                self.entries.pop_front();
            }
        }
    }

    /// Entries, matched lines, uncollected lines, streamed lines.
    fn finish(mut self) -> Result<(Vec<Entry>, u64, u64, u64)> {
        self.flush();
        if let Some(err) = self.failed {
            return Err(err.into());
        }
        Ok((
            self.entries.into(),
            self.matched,
            self.uncollected,
            self.streamed,
        ))
    }
}

/// The last `n` selected entries, reading blocks backwards from the end.
fn tail_backward(
    file: &mut File,
    len: u64,
    total: Pos,
    n: usize,
    stream: Stream,
    req: &Request,
) -> Result<Vec<Entry>> {
    let collapse = req.clean && req.matcher.filter.is_none();
    let mut found: Vec<Entry> = Vec::new(); // newest first
    let mut pending: Option<(Entry, String)> = None;
    let mut offer =
        |raw: &[u8], line: u64, end: Pos, partial: bool, found: &mut Vec<Entry>| -> bool {
            let Some(text) = select(raw, req) else {
                return found.len() < n;
            };
            // A partial line gets a key no line has: it never joins a run.
            let key = if collapse && !partial {
                clean::similarity_key(&text)
            } else {
                "\0".to_string()
            };
            let text = if req.clean {
                clean::cut(&text, req.max_line_chars).into_owned()
            } else {
                text.into_owned()
            };
            if let Some((entry, pending_key)) = &mut pending
                && collapse
                && *pending_key == key
            {
                // Walking backwards: the earlier line becomes the one shown.
                entry.similar += 1;
                entry.line = line;
                entry.text = text;
                return true;
            }
            if let Some((entry, _)) = pending.take() {
                found.push(entry);
                if found.len() >= n {
                    return false;
                }
            }
            pending = Some((
                Entry {
                    stream,
                    line,
                    text,
                    similar: 0,
                    end,
                    partial,
                },
                key,
            ));
            true
        };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut more = true;
    if len > total.offset && req.include_partial {
        // A line still being written can be huge (a `\r` progress bar that
        // never ends its line): its last MiB is what a reader needs.
        let from = total.offset.max(len.saturating_sub(1 << 20));
        let mut partial = vec![0; (len - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut partial)?;
        more = offer(&partial, total.line + 1, total, true, &mut found);
    }
    // `buf` holds file bytes [buf_start, end) not yet split into lines.
    let mut end = total.offset;
    let mut line = total.line;
    let mut buf: Vec<u8> = Vec::new();
    let mut block = 64 << 10;
    while more && end > 0 {
        let buf_start = end - buf.len() as u64;
        let read = (block as u64).min(buf_start);
        let mut fresh = vec![0; read as usize];
        file.seek(SeekFrom::Start(buf_start - read))?;
        file.read_exact(&mut fresh)?;
        fresh.extend_from_slice(&buf);
        buf = fresh;
        let at_file_start = buf_start - read == 0;
        // Split complete lines off the end of `buf`: the last byte is a newline.
        loop {
            let body = &buf[..buf.len() - 1];
            let line_start = match memchr::memrchr(b'\n', body) {
                Some(i) => i + 1,
                None if at_file_start => 0,
                None => break,
            };
            let entry_end = Pos { offset: end, line };
            more = offer(&body[line_start..], line, entry_end, false, &mut found);
            end -= (buf.len() - line_start) as u64;
            line -= 1;
            buf.truncate(line_start);
            if !more || buf.is_empty() {
                break;
            }
        }
        if buf.len() as u64 > block as u64 / 2 {
            block *= 2; // a very long line: read bigger blocks, not quadratic copies
        }
    }
    if let Some((entry, _)) = pending.take()
        && found.len() < n
    {
        found.push(entry);
    }
    found.reverse();
    Ok(found)
}

/// Brings the line-count index (`index`, as last read from `index.json`) up
/// to `len`: only new bytes are read.
fn refresh_index(
    task_dir: &Path,
    stream: Stream,
    file: &mut File,
    len: u64,
    ino: u64,
    index: Mark,
) -> Result<Pos> {
    let mut pos = if index.ino == ino && index.pos.offset <= len {
        index.pos
    } else {
        Pos::default()
    };
    if pos.offset < len {
        file.seek(SeekFrom::Start(pos.offset))?;
        let mut buf = vec![0; CHUNK.min((len - pos.offset) as usize)];
        let mut at = pos.offset;
        while at < len {
            let want = buf.len().min((len - at) as usize);
            file.read_exact(&mut buf[..want])?;
            if let Some(last) = memchr::memrchr(b'\n', &buf[..want]) {
                pos.line += memchr::memchr_iter(b'\n', &buf[..want]).count() as u64;
                pos.offset = at + last as u64 + 1;
            }
            at += want as u64;
        }
        store_index(task_dir, stream, pos, ino);
    }
    Ok(pos)
}

/// Saves an index mark if it moved forward. Best effort: a reader that
/// cannot write the index (read-only state dir) still answers correctly.
fn store_index(task_dir: &Path, stream: Stream, pos: Pos, ino: u64) {
    let path = task_dir.join("index.json");
    let Ok(lock) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(task_dir.join("index.lock"))
    else {
        return;
    };
    if lock.lock().is_err() {
        return;
    }
    let mut marks = Marks::load(&path);
    let old = marks.get(stream);
    if old.ino == ino && old.pos.offset >= pos.offset {
        return;
    }
    marks.set(stream, Mark { pos, ino });
    if let Ok(bytes) = serde_json::to_vec(&marks) {
        let _ = write_atomic(&path, &bytes, false);
    }
}

/// Takes the named cursor's lock, held for the whole read-modify-write.
fn lock_cursor(task_dir: &Path, name: &str) -> Result<File> {
    crate::store::validate_name("cursor name", name).map_err(crate::error::usage)?;
    let dir = task_dir.join("cursors");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(dir.join(format!("{name}.lock")))
        .with_context(|| format!("cannot open the lock of cursor '{name}'"))?;
    lock.lock().context("cannot lock the cursor")?;
    Ok(lock)
}

/// Complete lines in a task's stdout and stderr logs, via the index: a log
/// the index already covers is only stat'ed, never opened (`status` of a
/// thousand tasks stays fast); new bytes are counted and remembered.
pub fn line_counts(task_dir: &Path) -> (u64, u64) {
    let index = Marks::load(&task_dir.join("index.json"));
    let count = |stream: Stream| -> u64 {
        let path = task_dir.join(stream.file());
        let Ok(info) = fs::symlink_metadata(&path) else {
            return 0;
        };
        let known = index.get(stream);
        if info.len() == 0 {
            return 0;
        }
        if info.is_file() && known.ino == info.ino() && known.pos.offset == info.len() {
            return known.pos.line;
        }
        match open_log(&path) {
            Ok(Some((mut file, len, ino))) => {
                refresh_index(task_dir, stream, &mut file, len, ino, known).map_or(0, |p| p.line)
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
}

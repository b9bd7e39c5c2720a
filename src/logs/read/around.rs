//! What a match brings with it: the stack trace or compiler error it sits
//! in ([`crate::logs::blocks`]) and grep-style lines before and after it.
//! The read engine's chunk search jumps from candidate to candidate; here
//! the lines just before each one are replayed through a fresh block
//! tracker (only when one of them may open a block), lines after a match
//! are followed until its block and after-context end, and each line is
//! held until it is known whether it is shown.

use super::ahead::LineSearch;
use super::{Collector, Intact, Line, Looked, MatchContext, Request, look, look_unmatched};
use crate::logs::blocks::{self, Block, BlockLine, BlockTracker, Place, Role, Shown};
use crate::logs::marks::{Pos, newlines, read_exact_at};
use anyhow::Result;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;

/// The collector's side of [`Around`]: each call lends it the collector.
impl Collector<'_, '_, '_> {
    /// Replays the lines before a range that starts at `pos`.
    pub(super) fn start_around(
        &mut self,
        file: &File,
        pos: Pos,
        req: &Request,
        keep: usize,
    ) -> Result<()> {
        let Some(mut around) = self.around.take() else {
            return Ok(());
        };
        around.first = pos.line + 1;
        let back = around.preroll.max(around.after as usize);
        let done = around.catch_up(self, (file, &[]), pos, self.floor, back, false, req, keep);
        self.around = Some(around);
        done
    }

    /// Feeds the skipped lines just before `pos` (a candidate match).
    /// `seen` holds the log's bytes just before `pos` that are already in
    /// memory (the current chunk): the replay reads the file only for what
    /// lies before them.
    pub(super) fn catch_up(
        &mut self,
        file: &File,
        pos: Pos,
        seen: &[u8],
        req: &Request,
        keep: usize,
    ) -> Result<()> {
        let Some(mut around) = self.around.take() else {
            return Ok(());
        };
        let floor = around.fed_end.unwrap_or(pos);
        let back = around.preroll;
        let done = around.catch_up(self, (file, seen), pos, floor, back, true, req, keep);
        self.around = Some(around);
        done
    }

    /// Whether lines before `pos` were skipped, not fed, and `pos` is not
    /// hot: the next line fed one by one must catch up first.
    pub(super) fn gap(&self, pos: Pos) -> bool {
        self.around
            .as_ref()
            .is_some_and(|a| a.fed_end.is_some_and(|end| end != pos) && !a.hot(pos.line + 1))
    }

    /// Whether the line after `pos` must be looked at even if the filter
    /// cannot match it (it may belong to a wanted block or context).
    pub(super) fn hot(&self, pos: Pos) -> bool {
        self.around.as_ref().is_some_and(|a| a.hot(pos.line + 1))
    }

    /// The range ends at `pos`: an open block is complete as far as this
    /// read knows.
    pub(super) fn finish_around(&mut self, pos: Pos) {
        if let Some(mut around) = self.around.take() {
            around.close(self, pos);
            self.around = Some(around);
        }
    }
}

/// Facts about a line held back (in the open block or the ring of recent
/// lines) until the reader knows whether it is shown.
#[derive(Clone, Copy, Debug)]
struct Meta {
    end: Pos,
    unseen: u64,
    partial: bool,
    matched: bool,
    /// In the after-context of a match: shown whatever its block becomes.
    window: bool,
}

/// A recent line, kept for the before-context of a match to come.
struct Held {
    n: u64,
    text: String,
    meta: Meta,
}

/// The open block's part past [`blocks::MAX_BLOCK_LINES`]: its kept part is
/// already resolved; the rest is shown as one `… N more frames` marker.
struct CutRun {
    /// Some match wants the block (`Some(true)`: one in the range).
    wanted: Option<bool>,
    first_n: u64,
    lines: u64,
    end: Pos,
    /// The marker stands for the whole cut part (so the tracker's frame
    /// count applies).
    whole: bool,
}

/// Lines around matches: the blocks they belong to and grep-style
/// context, for one stream. Lines come in order through [`Around::take`];
/// a line is shown at once when its fate is known, or held (the open block,
/// a ring of `before` recent lines) until it is. Lines before the range
/// (`first`) are replayed to find blocks and windows that reach into it,
/// and are shown only as context of a match inside the range. Memory: one
/// block (at most 60 lines) and `before` lines.
pub(super) struct Around {
    tracker: Option<BlockTracker>,
    /// Fold library frames (not with `--raw`).
    fold: bool,
    before: u64,
    after: u64,
    /// Context was asked for: every new group gets a `--`.
    context: bool,
    /// Lines to replay before a candidate match the fast path jumped to.
    preroll: usize,
    /// `--head`: matches to take, and taken so far.
    head: Option<usize>,
    taken: usize,
    /// The range's first line number.
    first: u64,
    ring: VecDeque<Held>,
    /// Facts about the open block's kept lines (the tracker keeps their text).
    open: Vec<Meta>,
    /// A match wants the open block (`Some(true)`: one in the range).
    wanted: Option<bool>,
    /// Some line of the open block is in an after-context window.
    open_window: bool,
    cut: Option<CutRun>,
    /// Lines up to this one are after-context.
    after_until: u64,
    /// Last line shown (or stood for by a marker): nothing is shown twice.
    emitted_to: u64,
    emitted_any: bool,
    /// End of the current group of lines around matches.
    covered_to: Option<u64>,
    /// The current group holds a block.
    group_block: bool,
    /// The next line shown starts a group that gets a `--`.
    gap: bool,
    /// Just after the last line fed: where replaying may continue from.
    fed_end: Option<Pos>,
}

/// Replaying before a match reads at most this much of the log.
const PREROLL_BYTES: u64 = 4 << 20;

/// Bytes before a candidate match checked at once for a possible block
/// start (see `Around::quiet_before`): enough for `REPLAY_LINES` typical
/// log lines; longer lines take the line-by-line walk.
const QUIET_PROBE: usize = 8 << 10;

impl Around {
    pub(super) fn new(req: &Request, head: Option<usize>) -> Around {
        let MatchContext {
            blocks,
            before,
            after,
        } = req.context;
        Around {
            tracker: blocks.then(BlockTracker::new),
            fold: req.clean,
            before: before as u64,
            after: after as u64,
            context: before > 0 || after > 0,
            preroll: before.max(if blocks { blocks::REPLAY_LINES } else { 0 }),
            head,
            taken: 0,
            first: 1,
            ring: VecDeque::new(),
            open: Vec::new(),
            wanted: None,
            open_window: false,
            cut: None,
            after_until: 0,
            emitted_to: 0,
            emitted_any: false,
            covered_to: None,
            group_block: false,
            gap: false,
            fed_end: None,
        }
    }

    /// Whether line `next` must be looked at even if it cannot match.
    fn hot(&self, next: u64) -> bool {
        next <= self.after_until
            || self.wanted.is_some()
            || self.open_window
            || self.cut.as_ref().is_some_and(|c| c.wanted.is_some())
    }

    /// Forgets what was held: the lines fed next do not follow the last ones.
    fn reset(&mut self) {
        if self.tracker.is_some() {
            self.tracker = Some(BlockTracker::new());
        }
        self.ring.clear();
        self.open.clear();
        self.wanted = None;
        self.open_window = false;
        self.cut = None;
    }

    /// Feeds up to `back` lines before `to` (not before `floor`), so that a
    /// match at `to` finds its block's start and its before-context.
    /// `skipped`: the chunk search passed over these lines, so none matches
    /// the filter; then they are not matched again, and when none of them
    /// can open a block (and none is open), only the before-context is fed:
    /// a match far from any block costs no replay.
    #[allow(clippy::too_many_arguments)]
    fn catch_up(
        &mut self,
        c: &mut Collector,
        (file, seen): (&File, &[u8]),
        to: Pos,
        floor: Pos,
        back: usize,
        skipped: bool,
        req: &Request,
        keep: usize,
    ) -> Result<()> {
        // Far from any block (the common case), only the before-context is
        // fed: found without walking back `back` lines one by one.
        let back = match skipped && self.quiet_before(seen, to, floor, back) {
            true => self.before as usize,
            false => back,
        };
        let mut from = match back_lines_in(seen, to, floor, back) {
            Some(from) => from,
            None => back_lines(file, to, floor, back)?,
        };
        let want = (to.offset - from.offset) as usize;
        let read;
        let mut bytes = match seen.len() >= want {
            true => &seen[seen.len() - want..],
            false => {
                let mut buf = vec![0; want];
                read_exact_at(file, &mut buf, from.offset)?;
                read = buf;
                &read[..]
            }
        };
        let contiguous = self.fed_end == Some(from);
        let quiet = self
            .tracker
            .as_ref()
            .is_some_and(|t| !contiguous || (t.open_lines().is_empty() && self.cut.is_none()));
        if skipped && quiet && !blocks::may_start_in(bytes) {
            let near = back_lines_in(bytes, to, from, self.before as usize).unwrap_or(from);
            bytes = &bytes[(near.offset - from.offset) as usize..];
            if contiguous {
                self.fed_end = Some(near);
            }
            from = near;
        }
        if self.fed_end != Some(from) {
            self.reset();
        }
        let mut pos = from;
        let mut at = 0;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            pos.line += 1;
            pos.offset += (nl + 1 - at) as u64;
            let raw = &bytes[at..nl];
            let looked = match skipped {
                true => look_unmatched(raw, req, keep),
                false => look(raw, req, keep),
            };
            self.take(c, pos.line, pos, false, looked);
            at = nl + 1;
        }
        self.fed_end = Some(to);
        Ok(())
    }

    /// Whether the `back` lines before `to` (not before `floor`) certainly
    /// hold no block start and follow no line fed: they lie within the last
    /// [`QUIET_PROBE`] bytes of `seen`, which come after the last line fed
    /// and of which none may open a block. One vectorised count and one
    /// search of those bytes stand for finding the window's exact start.
    fn quiet_before(&self, seen: &[u8], to: Pos, floor: Pos, back: usize) -> bool {
        let span = QUIET_PROBE
            .min(seen.len())
            .min(to.offset.saturating_sub(floor.offset) as usize);
        let probe_start = to.offset - span as u64;
        if span == 0
            || self.tracker.is_none()
            || self.fed_end.is_none_or(|e| e.offset >= probe_start)
        {
            return false;
        }
        let probe = &seen[seen.len() - span..];
        // The probe's last byte is the newline that ends the line before `to`;
        // `back` newlines before it put the window's start inside the probe.
        newlines(&probe[..span - 1]) >= back as u64 && !blocks::may_start_in(probe)
    }

    /// Takes line `n` (`looked`: `None` when cleaning drops it).
    pub(super) fn take(
        &mut self,
        c: &mut Collector,
        n: u64,
        end: Pos,
        partial: bool,
        looked: Looked,
    ) {
        if !partial {
            self.fed_end = Some(end);
        }
        let Some((text, unseen, keeps)) = looked else {
            return;
        };
        // `--raw` keeps blank lines: inside a block they are not shown.
        let in_block = self
            .tracker
            .as_ref()
            .is_some_and(|t| !t.open_lines().is_empty());
        if in_block && text.trim().is_empty() {
            return;
        }
        let in_range = n >= self.first;
        let mut matched = keeps;
        if matched && in_range {
            c.found.matched += 1;
            if self.head.is_some_and(|h| self.taken >= h) {
                c.found.uncollected += 1;
                matched = false;
            } else {
                self.taken += 1;
            }
        }
        let meta = Meta {
            end,
            unseen,
            partial,
            matched,
            window: false,
        };
        let held = (self.before > 0).then(|| Held {
            n,
            text: text.to_string(),
            meta,
        });
        match self.tracker.take() {
            Some(mut tracker) => {
                let step = tracker.push(n, &text);
                if let Some(block) = step.closed {
                    self.resolve_closed(c, &block);
                }
                match step.place {
                    Place::Outside => self.plain(c, n, text, meta),
                    Place::Start | Place::Inside { .. } => {
                        let start = step.place.block_start(n).unwrap_or(n);
                        let mut meta = meta;
                        if matched {
                            self.want(c, n, start, in_range);
                        } else if n <= self.after_until {
                            meta.window = true;
                            self.open_window = true;
                        }
                        self.open.push(meta);
                    }
                    Place::Cut { .. } => {
                        if self.cut.is_none() {
                            let wanted = self.wanted;
                            self.resolve_kept(c, tracker.open_lines(), wanted);
                            self.cut = Some(CutRun {
                                wanted,
                                first_n: n,
                                lines: 0,
                                end,
                                whole: true,
                            });
                        }
                        self.cut_line(c, n, text, meta, in_range);
                    }
                }
                self.tracker = Some(tracker);
            }
            None => self.plain(c, n, text, meta),
        }
        if let Some(held) = held {
            self.ring.push_back(held);
            if self.ring.len() as u64 > self.before {
                self.ring.pop_front();
            }
        }
    }

    /// A line outside any block: a match with its context, or context.
    fn plain(&mut self, c: &mut Collector, n: u64, text: Cow<str>, meta: Meta) {
        if meta.matched {
            self.cover(n.saturating_sub(self.before), n + self.after, false);
            self.after_until = self.after_until.max(n + self.after);
            if n >= self.first {
                self.emit_ring(c, n.saturating_sub(self.before), n);
                self.emit(c, n, n, text, meta, false, 0);
            }
        } else if n <= self.after_until && n >= self.first {
            self.emit(c, n, n, text, meta, true, 0);
        }
    }

    /// A match inside the open block (which started at `start`).
    fn want(&mut self, c: &mut Collector, n: u64, start: u64, in_range: bool) {
        self.wanted = Some(self.wanted == Some(true) || in_range);
        let from = n.saturating_sub(self.before).min(start);
        self.cover(from, n + self.after, true);
        self.after_until = self.after_until.max(n + self.after);
        if in_range {
            self.emit_ring(c, n.saturating_sub(self.before), start);
        }
    }

    /// A line of the open block past its kept part.
    fn cut_line(&mut self, c: &mut Collector, n: u64, text: Cow<str>, meta: Meta, in_range: bool) {
        let Some(cut) = self.cut.as_mut() else {
            return;
        };
        if let Some(wanted) = cut.wanted {
            if n >= self.first || wanted {
                if cut.lines == 0 {
                    cut.first_n = n;
                }
                cut.lines += 1;
                cut.end = meta.end;
            }
            if meta.matched {
                cut.wanted = Some(wanted || in_range);
                self.cover(n.saturating_sub(self.before), n + self.after, true);
                self.after_until = self.after_until.max(n + self.after);
            }
            return;
        }
        let matched = meta.matched;
        self.plain(c, n, text, meta);
        if matched && let Some(cut) = self.cut.as_mut() {
            // The block's head is behind us; the rest of it folds.
            *cut = CutRun {
                wanted: Some(in_range),
                first_n: n + 1,
                lines: 0,
                end: meta.end,
                whole: false,
            };
        }
    }

    /// Shows what a block that just ended holds back.
    fn resolve_closed(&mut self, c: &mut Collector, block: &Block) {
        match self.cut.take() {
            Some(cut) => {
                if cut.wanted.is_some() && cut.lines > 0 {
                    let whole = cut.whole && cut.lines == block.cut_lines;
                    let marker = Block {
                        lines: Vec::new(),
                        cut_lines: cut.lines,
                        cut_frames: if whole { block.cut_frames } else { 0 },
                        end: block.end,
                    }
                    .more_marker()
                    .unwrap_or_default();
                    let meta = Meta {
                        end: cut.end,
                        unseen: 0,
                        partial: false,
                        matched: false,
                        window: false,
                    };
                    let last = block.end;
                    self.emit(c, cut.first_n, last, marker.into(), meta, true, cut.lines);
                }
            }
            None => {
                let wanted = self.wanted;
                self.resolve_kept(c, &block.lines, wanted);
            }
        }
        self.wanted = None;
        self.open.clear();
        self.open_window = false;
    }

    /// Shows the kept lines of a block: all of them, library frames folded,
    /// when a match wants it; else only those in after-context windows.
    fn resolve_kept(&mut self, c: &mut Collector, lines: &[BlockLine], wanted: Option<bool>) {
        let metas = std::mem::take(&mut self.open);
        self.open_window = false;
        let (Some(first_line), Some(last_line)) = (lines.first(), lines.last()) else {
            return;
        };
        let Some(in_range) = wanted else {
            for (line, meta) in lines.iter().zip(&metas) {
                if meta.window && line.n >= self.first {
                    self.emit(c, line.n, line.n, line.text.as_str().into(), *meta, true, 0);
                }
            }
            return;
        };
        self.cover(first_line.n, last_line.n, true);
        let first = self.first;
        let shown_ok = |n: u64| n >= first || in_range;
        let shown = if self.fold {
            blocks::fold(lines)
        } else {
            (0..lines.len()).map(Shown::Line).collect()
        };
        for s in shown {
            match s {
                Shown::Line(i) => {
                    let (line, meta) = (&lines[i], metas[i]);
                    if shown_ok(line.n) {
                        let context = !meta.matched || line.n < first;
                        self.emit(
                            c,
                            line.n,
                            line.n,
                            line.text.as_str().into(),
                            meta,
                            context,
                            0,
                        );
                    }
                }
                Shown::Library { from, to, .. } => {
                    let Some(k) = (from..to).find(|&k| shown_ok(lines[k].n)) else {
                        continue;
                    };
                    let frames = lines[k..to]
                        .iter()
                        .filter(|l| matches!(l.role, Role::Frame { .. }))
                        .count();
                    let meta = Meta {
                        unseen: 0,
                        partial: false,
                        ..metas[to - 1]
                    };
                    let marker = blocks::library_marker(frames.max(1));
                    let (n, last) = (lines[k].n, lines[to - 1].n);
                    self.emit(c, n, last, marker.into(), meta, true, (to - k) as u64);
                }
            }
        }
    }

    /// The range ended: the open block is complete as far as this read knows.
    fn close(&mut self, c: &mut Collector, _end: Pos) {
        if let Some(block) = self.tracker.as_mut().and_then(BlockTracker::finish) {
            self.resolve_closed(c, &block);
        }
    }

    /// Lines `from..to` enter the current group of lines around matches,
    /// or start a new one (with a `--` before it when context was asked
    /// for or a block is involved).
    fn cover(&mut self, from: u64, to: u64, block: bool) {
        let new = self.covered_to.is_none_or(|end| from > end + 1);
        if new {
            self.gap = self.context || block || self.group_block;
            self.group_block = block;
        } else {
            self.group_block |= block;
        }
        self.covered_to = Some(self.covered_to.map_or(to, |end| end.max(to)));
    }

    /// Shows the held recent lines numbered `from..to` not shown yet.
    fn emit_ring(&mut self, c: &mut Collector, from: u64, to: u64) {
        let lines: Vec<(u64, String, Meta)> = self
            .ring
            .iter()
            .filter(|h| h.n >= from && h.n < to && h.n > self.emitted_to)
            .map(|h| (h.n, h.text.clone(), h.meta))
            .collect();
        for (n, text, meta) in lines {
            self.emit(c, n, n, text.into(), meta, true, 0);
        }
    }

    /// Hands one entry (a line, or a marker for lines `n..=last`) over.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        c: &mut Collector,
        n: u64,
        last: u64,
        text: Cow<str>,
        meta: Meta,
        context: bool,
        folded: u64,
    ) {
        if n <= self.emitted_to && self.emitted_any {
            return;
        }
        let gap = std::mem::take(&mut self.gap) && self.emitted_any;
        self.emitted_any = true;
        self.emitted_to = last;
        let line = Line {
            line: n,
            text,
            unseen: meta.unseen,
            end: meta.end,
            partial: meta.partial,
        };
        let mut entry = line.entry(c.stream, if folded > 0 { 0 } else { c.max_chars });
        entry.context = context;
        entry.gap = gap;
        entry.folded = folded;
        c.give(entry, n < self.first);
    }
}

/// [`back_lines`] answered from `seen`, the bytes just before `to` already
/// in memory; `None` when the answer lies before them. Most candidates of a
/// chunk search have their replay inside the chunk, so they cost no read.
fn back_lines_in(seen: &[u8], to: Pos, floor: Pos, back: usize) -> Option<Pos> {
    if back == 0 || to.offset <= floor.offset {
        return Some(to);
    }
    if seen.is_empty() {
        return None;
    }
    let low = floor.offset.max(to.offset.saturating_sub(PREROLL_BYTES));
    let base = to.offset - seen.len() as u64;
    let start = low.max(base);
    // As in back_lines: bytes [start, to - 1) are searched, the newline at
    // `to - 1` ends the line just before `to`.
    let mut rest = &seen[(start - base) as usize..seen.len() - 1];
    let mut found = to;
    let mut lines = 0;
    while let Some(i) = memchr::memrchr(b'\n', rest) {
        lines += 1;
        found = Pos {
            offset: start + i as u64 + 1,
            line: to.line - lines as u64,
        };
        if lines == back {
            return Some(found);
        }
        rest = &rest[..i];
    }
    if start > low {
        return None; // the answer lies before what is in memory
    }
    Some(if low == floor.offset { floor } else { found })
}

/// The position `back` lines before `to` (a line start), but not before
/// `floor` and not more than [`PREROLL_BYTES`] before `to`.
fn back_lines(file: &File, to: Pos, floor: Pos, back: usize) -> Result<Pos> {
    if back == 0 || to.offset <= floor.offset {
        return Ok(to);
    }
    let low = floor.offset.max(to.offset.saturating_sub(PREROLL_BYTES));
    let mut block = vec![0; 64 << 10];
    // Bytes [low, at) are still to search; the newline at `to - 1` ends
    // the line just before `to`.
    let mut at = to.offset - 1;
    let mut found = to;
    let mut lines = 0;
    while at > low {
        let read = (block.len() as u64).min(at - low);
        read_exact_at(file, &mut block[..read as usize], at - read)?;
        let mut rest = &block[..read as usize];
        while let Some(i) = memchr::memrchr(b'\n', rest) {
            lines += 1;
            found = Pos {
                offset: at - read + i as u64 + 1,
                line: to.line - lines as u64,
            };
            if lines == back {
                return Ok(found);
            }
            rest = &rest[..i];
        }
        at -= read;
    }
    Ok(if low == floor.offset { floor } else { found })
}

/// [`scan_lines`] when matches bring blocks or context: the filter's
/// chunk search still skips lines far from any match; around a candidate
/// the lines just before it are replayed, and after a match every line is
/// looked at until its block and after-context end.
pub(super) fn scan_lines_around(
    complete: &[u8],
    pos: &mut Pos,
    mut search: Option<LineSearch>,
    (req, keep): (&Request, usize),
    c: &mut Collector,
    intact: &Intact,
) -> Result<()> {
    let file = intact.file;
    let mut from = 0;
    while from < complete.len() && !c.failed() {
        if let Some(search) = search.as_mut()
            && !c.hot(*pos)
        {
            let Some(start) = search.next_line(complete, from, pos) else {
                return Ok(());
            };
            from = start;
            c.catch_up(file, *pos, &complete[..from], req, keep)?;
        } else if c.gap(*pos) {
            // Read line by line after lines that were skipped (the end of
            // a chunk searched, a line across reads): replay them first.
            c.catch_up(file, *pos, &complete[..from], req, keep)?;
        }
        // As in `scan_lines`: a mapped log cut short may have lost the newline.
        let Some(nl) = memchr::memchr(b'\n', &complete[from..]).map(|n| from + n) else {
            return Ok(());
        };
        pos.line += 1;
        pos.offset += (nl + 1 - from) as u64;
        c.offer(pos.line, *pos, false, look(&complete[from..nl], req, keep));
        intact.release_batch(c, pos.offset)?;
        from = nl + 1;
    }
    Ok(())
}

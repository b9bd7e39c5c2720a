//! Searching a mapped log on two cores.
//!
//! A filter over a large log spends most of its time mapping the log in,
//! finding candidate lines and counting the newlines between them (every
//! line returned has a number), and the rest on what each match brings
//! (blocks, context, cleaning, output). Only the second part has to go in
//! order. So the log is cut into windows that the reader and one helper
//! thread claim in turn: the helper maps and searches each window it claims
//! and hands it over with its candidate lines and their newline counts
//! ([`Found`]); the reader, arriving at a window nobody claimed yet, claims
//! and searches it itself. Neither waits for the other unless the reader
//! arrives at a window the helper is still searching.
//!
//! The helper only saves work: the reader uses a window's [`Found`] only
//! when it describes the very run of lines the reader is at, and searches
//! itself otherwise, or once the helper stopped (no mapping slot, the end).
//! A shrink shows the same whichever thread touched the page first (see
//! [`crate::sys::LogMap`]): the reader's checks run on every window.

use crate::logs::marks::{Pos, newlines, read_exact_at};
use crate::logs::pattern::{Candidates, LineMatch};
use crate::logs::tidy;
use crate::sys::LogMap;
use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

/// How many windows the helper may have searched before the reader takes
/// them, and how many the reader may search ahead while it waits for the
/// helper: enough to ride over a run of matches, few enough to bound what
/// is mapped at once (the pages a read touched count in its resident size
/// until they are unmapped, and mapping slots are shared by all reads).
const WINDOWS_AHEAD: usize = 2;

/// The candidate lines of one run of whole lines (a window without the
/// line it starts inside and the line it ends inside).
pub(super) struct Found {
    /// Where the run starts in the log, and its length.
    at: u64,
    len: usize,
    /// Per line holding a candidate, in order: its start in the run and
    /// the newlines before it in the run.
    lines: Vec<(u32, u32)>,
    /// The newlines of the whole run.
    newlines: u64,
}

/// A window mapped and searched before the reader reached it.
pub(super) struct Window {
    pub map: LogMap,
    /// Its run of whole lines searched, unless the filter cannot search it
    /// at once (the reader then goes line by line, as it would have).
    pub found: Option<Found>,
}

/// What searching a window needs; shared by the reader and the helper.
pub(super) struct Claims<'s> {
    file: &'s File,
    matcher: &'s LineMatch,
    clean: bool,
    /// The windows: every `size` bytes of `[start, len)`.
    start: u64,
    len: u64,
    size: u64,
    /// The first window nobody claimed yet (window 0 is the reader's).
    next: AtomicU64,
}

impl<'s> Claims<'s> {
    /// The windows of `[start, len)`, `size` bytes each.
    pub(super) fn new(
        file: &'s File,
        (start, len): (u64, u64),
        size: usize,
        matcher: &'s LineMatch,
        clean: bool,
    ) -> Claims<'s> {
        Claims {
            file,
            matcher,
            clean,
            start,
            len,
            size: size as u64,
            next: AtomicU64::new(1),
        }
    }

    /// Claims the next window: its number, unless none is left.
    fn claim(&self) -> Option<u64> {
        let k = self
            .next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| k.checked_add(1))
            .ok()?;
        let at = k.checked_mul(self.size)?.checked_add(self.start)?;
        (at < self.len).then_some(k)
    }

    /// Maps and searches window `k` (not window 0: it reads the byte
    /// before the window, which says whether it starts inside a line;
    /// read, not mapped with it, since a mapping at an offset the window's
    /// own does not share loses the kernel's large-folio mappings).
    fn prepare(&self, k: u64) -> Option<Window> {
        let at = self.start + k * self.size;
        let len = self.size.min(self.len - at) as usize;
        let mut before = [0];
        read_exact_at(self.file, &mut before, at.checked_sub(1)?).ok()?;
        let map = LogMap::new(self.file, at, len).ok()?;
        // A window already cut short is the reader's to report, not to search.
        map.touch();
        if map.shrank() {
            return None;
        }
        let in_line = before[0] != b'\n';
        let found = search_window(map.bytes(), at, in_line, self.matcher, self.clean);
        Some(Window { map, found })
    }
}

/// The reader's side: windows the helper sent or the reader searched ahead.
pub(super) struct Windows<'s> {
    claims: &'s Claims<'s>,
    receive: Option<Receiver<(u64, Window)>>,
    /// Windows at hand before their turn (`None`: claimed by the reader,
    /// which could not map it: to read when its turn comes).
    early: VecDeque<(u64, Option<Window>)>,
}

impl<'s> Windows<'s> {
    /// Starts the helper on `scope`. `None` on one core, where it would
    /// only take turns with the reader.
    pub(super) fn start(
        scope: &'s std::thread::Scope<'s, '_>,
        claims: &'s Claims<'s>,
    ) -> Option<Windows<'s>> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return None;
        }
        let (send, receive) = std::sync::mpsc::sync_channel(WINDOWS_AHEAD);
        std::thread::Builder::new()
            .name("bgt-search".into())
            .spawn_scoped(scope, move || help(claims, send))
            .ok()?;
        Some(Windows {
            claims,
            receive: Some(receive),
            early: VecDeque::new(),
        })
    }

    /// The window at `at`, mapped and searched, or `None` when the reader
    /// is to map and search it as it goes. Waiting for a window the helper
    /// is still searching, the reader searches the next unclaimed one. A
    /// reader that left the windows' grid (it skipped what a bounded log
    /// freed) stops the helper.
    pub(super) fn take(this: &mut Option<Windows>, at: u64) -> Option<Window> {
        let windows = this.as_mut()?;
        let claims = windows.claims;
        let offset = at
            .checked_sub(claims.start)
            .filter(|o| o % claims.size == 0);
        let Some(k) = offset.map(|o| o / claims.size) else {
            *this = None;
            return None;
        };
        windows.early.retain(|(i, _)| *i >= k);
        if let Some(at) = windows.early.iter().position(|(i, _)| *i == k) {
            return windows.early.remove(at).and_then(|(_, w)| w);
        }
        let own = k == 0
            || claims
                .next
                .compare_exchange(k, k + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if own {
            return None;
        }
        // The helper claimed it (or went past it, stopping): wait for it.
        while let Some(receive) = &windows.receive {
            let received = match receive.try_recv() {
                Err(TryRecvError::Empty) => {
                    let searched = windows.early.iter().filter(|(_, w)| w.is_some()).count();
                    if searched < WINDOWS_AHEAD
                        && let Some(j) = claims.claim()
                    {
                        windows.early.push_back((j, claims.prepare(j)));
                        continue;
                    }
                    receive.recv().map_err(|_| TryRecvError::Disconnected)
                }
                received => received,
            };
            match received {
                Ok((i, window)) if i == k => return Some(window),
                Ok((i, window)) => windows.early.push_back((i, Some(window))),
                Err(_) => windows.receive = None, // the helper stopped
            }
        }
        None
    }
}

impl Drop for Windows<'_> {
    fn drop(&mut self) {
        // No more claims; a helper blocked on a full channel gets an error
        // as soon as the receiver goes.
        self.claims.next.store(u64::MAX, Ordering::Relaxed);
    }
}

/// The helper: claims, maps, searches and sends windows, until the end, a
/// window it cannot map, or a reader that stops listening.
fn help(claims: &Claims, send: SyncSender<(u64, Window)>) {
    while let Some(k) = claims.claim() {
        let Some(window) = claims.prepare(k) else {
            return;
        };
        if send.send((k, window)).is_err() {
            return;
        }
    }
}

/// The run of whole lines of `window` (at `at`) the reader will search,
/// searched: without the end of a line begun before it (`in_line`) and
/// without the start of one it does not finish.
fn search_window(
    window: &[u8],
    at: u64,
    in_line: bool,
    matcher: &LineMatch,
    clean: bool,
) -> Option<Found> {
    let first = match in_line {
        true => memchr::memchr(b'\n', window)? + 1,
        false => 0,
    };
    let body = &window[first..];
    let complete = &body[..=memchr::memrchr(b'\n', body)?];
    // Numbered from the run's start, as the reader's search would go.
    let mut pos = Pos::default();
    let mut search = LineSearch::new(None, matcher, complete, pos, clean)?;
    let mut lines = Vec::new();
    let mut from = 0;
    while let Some(start) = search.next_line(complete, from, &mut pos) {
        lines.push((u32::try_from(start).ok()?, u32::try_from(pos.line).ok()?));
        // `complete` ends in a newline, so every line in it ends.
        from = start + memchr::memchr(b'\n', &complete[start..])? + 1;
        pos = Pos {
            offset: from as u64,
            line: pos.line + 1,
        };
    }
    Some(Found {
        at: at + first as u64,
        len: complete.len(),
        lines,
        newlines: pos.line,
    })
}

/// Where a scan of a run of whole lines finds its next candidate line:
/// searching as it goes, or in what the helper found.
pub(super) enum LineSearch<'a> {
    Here(Candidates<'a>),
    Found {
        found: &'a Found,
        next: usize,
        /// Where the run starts: the newline counts are from there.
        base: Pos,
    },
}

impl<'a> LineSearch<'a> {
    /// The search over `complete` (starting at `base`), or `None` when its
    /// lines must be matched one at a time.
    pub(super) fn new(
        found: Option<&'a Found>,
        matcher: &'a LineMatch,
        complete: &[u8],
        base: Pos,
        clean: bool,
    ) -> Option<LineSearch<'a>> {
        match found.filter(|f| f.at == base.offset && f.len == complete.len()) {
            Some(found) => Some(LineSearch::Found {
                found,
                next: 0,
                base,
            }),
            // Without a filter to search for, no look at the run at all.
            None if !matcher.searches_chunks() => None,
            None => {
                let unchanged = !clean || tidy::is_plain(complete);
                matcher
                    .candidates(complete, unchanged)
                    .map(LineSearch::Here)
            }
        }
    }

    /// The start of the first line at or after `from` (a line start) that
    /// holds a candidate, with `pos` (at `from`) moved there; `None` with
    /// `pos` moved to the run's end when there is none.
    pub(super) fn next_line(
        &mut self,
        complete: &[u8],
        from: usize,
        pos: &mut Pos,
    ) -> Option<usize> {
        let next = match self {
            LineSearch::Here(search) => search
                .next_candidate(complete, from)
                .filter(|&at| at < complete.len())
                .map(|at| {
                    // `max`: bytes zeroed by a shrink under the search could
                    // put a line's start before `from`; the read fails anyway.
                    let start = memchr::memrchr(b'\n', &complete[..at])
                        .map_or(0, |i| i + 1)
                        .max(from);
                    pos.line += newlines(&complete[from..start]);
                    start
                }),
            LineSearch::Found { found, next, base } => {
                let lines = &found.lines[*next..];
                let skip = lines.partition_point(|&(start, _)| (start as usize) < from);
                *next += skip;
                lines.get(skip).map(|&(start, before)| {
                    *next += 1;
                    pos.line = base.line + before as u64;
                    start as usize
                })
            }
        };
        if next.is_none() {
            pos.line = match self {
                LineSearch::Here(_) => pos.line + newlines(&complete[from..]),
                LineSearch::Found { found, base, .. } => base.line + found.newlines,
            };
        }
        pos.offset += (next.unwrap_or(complete.len()) - from) as u64;
        next
    }
}

//! Multi-line events in logs: stack traces, panics and compiler errors.
//!
//! A filter that finds `KeyError: 42` is of little use without the
//! traceback above it, and a filter for `app.py` is of little use without
//! the exception below it. So when a filter is given, a matching line that
//! belongs to an event brings the whole event. This module finds events by
//! the *shape* of lines (indentation and frame patterns), one stream at a
//! time, and folds the frames of installed libraries and runtimes so that
//! the project's own frames stand out.
//!
//! # How the reader drives it
//!
//! Feed every cleaned line of one stream, in order, to
//! [`BlockTracker::push`] with its line number. Each call returns a [`Step`]:
//!
//! - `step.closed`: the block that ended just *before* this line (the line
//!   did not continue it), with its kept lines (at most
//!   [`MAX_BLOCK_LINES`]) and how many lines were cut after those;
//! - `step.place`: where this line is: [`Place::Outside`] any block,
//!   [`Place::Start`] of a new block, [`Place::Inside`] the open block (and
//!   kept), or [`Place::Cut`] (inside, but past the cap: counted, not kept).
//!
//! At the end of the range call [`BlockTracker::finish`] for the block still
//! open. A simple forward reader marks a block as wanted when any of its
//! lines matches the filter and prints wanted blocks when they close:
//! [`Block::shown`] gives the lines to print with library frames folded,
//! and [`Block::more_marker`] the `… N more frames` line for a cut block.
//! A reader that prints as it goes (`--follow`) can instead, on the first
//! matching line of a block, print [`BlockTracker::open_lines`] (the lines
//! of the block so far, this one included) and then every further `Inside`
//! line until `closed`; it then shows library frames unfolded.
//!
//! Memory is bounded: the tracker keeps only the open block's lines, never
//! more than [`MAX_BLOCK_LINES`], and copies nothing for lines outside
//! blocks. Classifying a line costs a few byte comparisons and, for lines
//! that start with the right bytes, a regex. A reader with a chunk fast path
//! (skipping regions with no filter match) can replay only the lines around
//! a match through a fresh tracker: [`REPLAY_LINES`] lines before it are
//! enough to see the start of any block that still has room for the match.
//!
//! Lines given here should be cleaned ([`crate::clean::clean`]); blank
//! lines are expected to have been dropped, so a blank line does not end a
//! block.

use regex::Regex;
use std::sync::LazyLock;

/// A block keeps at most this many lines; the rest is counted and shown as
/// `… N more frames`, so one runaway trace cannot fill the reader's budget.
pub const MAX_BLOCK_LINES: usize = 60;

/// How many lines before a match a replaying reader must feed to a fresh
/// tracker to find the start of the match's block (a block is at most
/// [`MAX_BLOCK_LINES`] kept lines; one more block's worth lets the replay
/// start inside an earlier block and still resynchronise).
pub const REPLAY_LINES: usize = 2 * MAX_BLOCK_LINES;

/// What a line is inside its block; decides what folding may hide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The first line, an exception or panic message, a chained header
    /// (`Caused by:`, `During handling of…`): never folded.
    Header,
    /// The first line of a stack frame. `library` is true for code of
    /// installed packages and runtimes (site-packages, node_modules,
    /// `/rustc/`, `java.base/`, GOROOT, …).
    Frame { library: bool },
    /// A line that belongs to the frame above it: Python's source and
    /// marker lines, Rust's and Go's `file:line` lines. Folded with it.
    FrameBody,
    /// Any other line of the block: a code frame, error properties,
    /// `... 4 more`, notes. Never folded.
    Detail,
}

/// One kept line of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLine {
    /// The line number the reader gave.
    pub n: u64,
    pub text: String,
    pub role: Role,
}

/// Where a pushed line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Not part of any block.
    Outside,
    /// Starts a new block (and is its first kept line).
    Start,
    /// Continues the block that started at line `start`; kept.
    Inside { start: u64 },
    /// Continues the block that started at line `start`, past
    /// [`MAX_BLOCK_LINES`]: counted in the block's cut, not kept.
    Cut { start: u64 },
}

impl Place {
    /// The first line of the block this line belongs to, if any.
    pub fn block_start(self, n: u64) -> Option<u64> {
        match self {
            Place::Outside => None,
            Place::Start => Some(n),
            Place::Inside { start } | Place::Cut { start } => Some(start),
        }
    }
}

/// What [`BlockTracker::push`] says about one line.
#[derive(Debug)]
pub struct Step {
    /// The block that ended just before this line, if one did.
    pub closed: Option<Block>,
    pub place: Place,
}

/// A whole event, as kept: its first [`MAX_BLOCK_LINES`] lines and the count
/// of lines cut after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub lines: Vec<BlockLine>,
    /// Lines of the block after the kept ones.
    pub cut_lines: u64,
    /// Stack frames among the cut lines (a Python or Rust frame is two lines).
    pub cut_frames: u64,
    /// Number of the block's last line, cut lines included.
    pub end: u64,
}

impl Block {
    /// Number of the block's first line.
    pub fn start(&self) -> u64 {
        self.lines.first().map_or(self.end, |l| l.n)
    }

    /// The kept lines to show, runs of library frames folded: see [`fold`].
    pub fn shown(&self) -> Vec<Shown> {
        fold(&self.lines)
    }

    /// The line that stands for the cut part, e.g. `… 23 more frames`.
    pub fn more_marker(&self) -> Option<String> {
        match (self.cut_lines, self.cut_frames) {
            (0, _) => None,
            (_, 0) => Some(format!("… {} more lines", self.cut_lines)),
            (_, 1) => Some("… 1 more frame".to_string()),
            (_, frames) => Some(format!("… {frames} more frames")),
        }
    }
}

/// One entry of a folded block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// Show `lines[i]` as it is.
    Line(usize),
    /// `lines[from..to]` are `frames` library frames, shown as one line
    /// ([`library_marker`]).
    Library {
        from: usize,
        to: usize,
        frames: usize,
    },
}

/// The text that stands for folded library frames.
pub fn library_marker(frames: usize) -> String {
    if frames == 1 {
        "… 1 library frame".to_string()
    } else {
        format!("… {frames} library frames")
    }
}

/// Folds each run of consecutive library frames (a frame with its body
/// lines) into one [`Shown::Library`] entry; every other line is kept, so
/// the project's own frames always show with their file and line. A run
/// folds only when it hides at least two lines: one marker in place of one
/// frame line would save nothing.
pub fn fold(lines: &[BlockLine]) -> Vec<Shown> {
    let mut shown = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let (from, mut to, mut frames) = (i, i, 0);
        while let Some(Role::Frame { library: true }) = lines.get(to).map(|l| l.role) {
            to += 1;
            while lines.get(to).is_some_and(|l| l.role == Role::FrameBody) {
                to += 1;
            }
            frames += 1;
        }
        if to - from >= 2 {
            shown.push(Shown::Library { from, to, frames });
            i = to;
        } else {
            shown.push(Shown::Line(i));
            i += 1;
        }
    }
    shown
}

/// Where inside an event the last line left the tracker: decides which
/// line shapes continue the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Django's `Internal Server Error: /path`, Python's `Exception in
    /// thread x:`: a `Traceback` line may follow.
    PyHeader,
    /// Inside a Python traceback: frames until an unindented line, which is
    /// the exception line.
    PyFrames,
    /// After a Python exception line: a chained header may follow.
    PyDone,
    /// After a chained header: a `Traceback` line follows.
    PyChain,
    /// Node's throw site (`/app/x.js:7`), after this many of its source and
    /// caret lines; the `Error:` line follows.
    JsSite(u8),
    /// A JS or JVM stack: `at` frames, causes, properties, code frames.
    Stack,
    /// Ruby: `from file:line:in` frames.
    Ruby,
    /// After Rust's `panicked at`: message lines until a backtrace or note.
    RustMessage,
    /// Rust `stack backtrace:` frames.
    RustFrames,
    /// After Rust's closing `note:`: nothing more belongs to the panic.
    RustDone,
    /// Go's `panic:` and goroutine dumps.
    Go,
    /// A compiler or bundler diagnostic with its code frame.
    Compiler,
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("valid regex")
}

/// Exception lines: `TypeError: x`, `json.decoder.JSONDecodeError: x`,
/// `java.lang.IllegalStateException: x`, `Error [ERR_X]: x`, Next's
/// `⨯ TypeError: x`, a bare `KeyError`, Vite's `[vite] Internal server
/// error: x`.
static EXCEPTION: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\s*(?:⨯ |Uncaught (?:exception )?|Unhandled \w+: )?(?:[\w$]+\.)*(?:[A-Z][\w$]*)?(?:Error|Exception|Throwable|Panic)(?: \[[\w-]+\])?(?::(?: |$)|$| \{$)|(?:Internal server|Pre-transform|Transform|Build) error: ")
});

/// Compiler diagnostics: tsc (plain and pretty), rustc/cargo, esbuild,
/// webpack.
static COMPILER: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^(?:\S+\(\d+,\d+\): (?:error|warning) TS\d+: |\S+:\d+:\d+ - (?:error|warning) TS\d+: |(?:error|warning)(?:\[\w+\])?: |[✘▲] \[(?:ERROR|WARNING)\] |(?:ERROR|WARNING) in )")
});

/// Ruby's first line `file:line:in 'meth': message (Class)` and Rails' bare
/// frames `app/x.rb:21:in 'meth'`.
static RUBY_FRAME: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*(?:from )?\S+:\d+:in [`']"));

/// Rails' exception line: `NoMethodError (undefined method …`.
static RAILS_HEADER: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:[A-Z]\w*::)*[A-Z]\w*(?:Error|Exception|NotFound|Invalid) \("));

/// Node's throw site: a path and line number alone on a line.
static JS_SITE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:/|file://|[A-Za-z]:\\|\./)\S*\.[cm]?[jt]sx?:\d+$"));

/// A Python frame line: `  File "x.py", line 3, in f` (or without `in`
/// for a SyntaxError).
static PY_FRAME: LazyLock<Regex> = LazyLock::new(|| re(r#"^\s*File "[^"]*", line \d+"#));

/// A code frame line: `  12 |`, `> 3 |`, `    |  ^`, esbuild's `│`.
static CODE_FRAME: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*>?\s*\d*\s*[|│╵]"));

/// Paths and names of code the project did not write: Python's stdlib and
/// packages, node_modules and Node's internals, the Rust standard library
/// and cargo registry, the JVM's modules, GOROOT and the Go module cache,
/// Ruby's stdlib and gems.
static LIBRARY: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"site-packages/|dist-packages/|/lib/python\d+(?:\.\d+)?/|<frozen |",
        r"node_modules/|\(node:|at node:|\(internal/|\(<anonymous>\)|\(index \d+\)$|",
        r"/rustc/[0-9a-f]+/|\.cargo/(?:registry|git)/|/library/(?:std|core|alloc)/|",
        r"java\.base/|jdk\.internal|\bat (?:java|javax|jdk|sun|kotlin|kotlinx|scala)\.|",
        r"/usr/(?:local/)?(?:lib/)?go[^/]*/src/|/pkg/mod/|",
        r"/usr/lib/ruby/|/gems/|<internal:"
    ))
});

/// Rust frames named after the standard library (seen when a frame has no
/// `at` line).
static RUST_LIBRARY_SYMBOL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\s*\d+: (?:0x[0-9a-f]+ - )?<?(?:std|core|alloc|__rustc|panic_unwind|backtrace)::|rust_begin_unwind$|__libc_start")
});

fn indented(text: &str) -> bool {
    text.starts_with([' ', '\t'])
}

fn library(text: &str) -> bool {
    LIBRARY.is_match(text)
}

/// The line opens a block: its phase and role.
fn start(text: &str) -> Option<(Phase, Role)> {
    let trimmed = text.trim_start();
    let header = |phase| Some((phase, Role::Header));
    if trimmed == "Traceback (most recent call last):" {
        return header(Phase::PyFrames);
    }
    if text.starts_with("Internal Server Error: ")
        || (text.starts_with("Exception in thread ") && !text.contains('"') && text.ends_with(':'))
    {
        return header(Phase::PyHeader);
    }
    if trimmed.starts_with("File \"") && PY_FRAME.is_match(text) {
        return Some((
            Phase::PyFrames,
            Role::Frame {
                library: library(text),
            },
        ));
    }
    if text.starts_with("thread '") && text.contains(" panicked at ") {
        return header(Phase::RustMessage);
    }
    if text.starts_with("panic: ")
        || text.starts_with("fatal error: ")
        || (text.starts_with("goroutine ") && text.ends_with("]:"))
    {
        return header(Phase::Go);
    }
    if text.starts_with("Exception in thread \"") {
        return header(Phase::Stack);
    }
    if JS_SITE.is_match(text) {
        return header(Phase::JsSite(0));
    }
    if RUBY_FRAME.is_match(text) || RAILS_HEADER.is_match(text) {
        return header(Phase::Ruby);
    }
    if COMPILER.is_match(text) {
        return header(Phase::Compiler);
    }
    if EXCEPTION.is_match(text) {
        return header(Phase::Stack);
    }
    None
}

/// The line continues a block in `phase`: the next phase and its role.
/// `None` ends the block.
fn next(phase: Phase, text: &str) -> Option<(Phase, Role)> {
    let trimmed = text.trim_start();
    let stay = |role| Some((phase, role));
    match phase {
        Phase::PyHeader | Phase::PyChain => {
            (trimmed == "Traceback (most recent call last):")
                .then_some((Phase::PyFrames, Role::Header))
        }
        Phase::PyFrames => {
            if trimmed.starts_with("File \"") {
                stay(Role::Frame {
                    library: library(text),
                })
            } else if indented(text) {
                stay(Role::FrameBody)
            } else {
                // Python ends a traceback with the unindented exception line.
                Some((Phase::PyDone, Role::Header))
            }
        }
        Phase::PyDone => (text
            == "The above exception was the direct cause of the following exception:"
            || text == "During handling of the above exception, another exception occurred:")
            .then_some((Phase::PyChain, Role::Header)),
        Phase::JsSite(seen) => {
            if EXCEPTION.is_match(text) {
                Some((Phase::Stack, Role::Header))
            } else if seen < 2 {
                // The source line and the caret under the throw.
                Some((Phase::JsSite(seen + 1), Role::Detail))
            } else {
                None
            }
        }
        Phase::Stack => {
            if trimmed.starts_with("at ") {
                stay(Role::Frame {
                    library: library(text),
                })
            } else if trimmed.starts_with("Caused by: ")
                || trimmed.starts_with("Suppressed: ")
                || trimmed.starts_with("[cause]: ")
            {
                stay(Role::Header)
            } else if indented(text)
                || trimmed.starts_with('}')
                || trimmed.starts_with(']')
                || text.starts_with("Node.js v")
                || CODE_FRAME.is_match(text)
            {
                // Node's error properties (`code: 'ENOENT',`) and closing
                // braces, Java's `... 4 more`, Vite's `Plugin:`/`File:` and
                // code frames.
                stay(Role::Detail)
            } else {
                None
            }
        }
        Phase::Ruby => {
            if RUBY_FRAME.is_match(text) {
                stay(Role::Frame {
                    library: library(text),
                })
            } else if indented(text) && start(text).is_none() {
                // Rails: the source line and caret under the exception.
                stay(Role::Detail)
            } else {
                None
            }
        }
        Phase::RustMessage => {
            if text == "stack backtrace:" {
                Some((Phase::RustFrames, Role::Header))
            } else if text.starts_with("note: ") {
                Some((Phase::RustDone, Role::Detail))
            } else if start(text).is_some() {
                None
            } else {
                stay(Role::Header)
            }
        }
        Phase::RustFrames => {
            let number = trimmed.split_once(": ").map(|(n, _)| n);
            if number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                stay(Role::Frame {
                    library: RUST_LIBRARY_SYMBOL.is_match(text),
                })
            } else if trimmed.starts_with("at ") {
                stay(Role::FrameBody)
            } else if text.starts_with("note: ") {
                Some((Phase::RustDone, Role::Detail))
            } else {
                None
            }
        }
        Phase::RustDone => None,
        Phase::Go => {
            if text.starts_with('\t') {
                stay(Role::FrameBody)
            } else if text.starts_with("goroutine ")
                || text.starts_with("[signal ")
                || text.starts_with("panic: ")
                || text.starts_with("\tpanic: ")
            {
                stay(Role::Header)
            } else if text.starts_with("created by ")
                || (text.ends_with(')')
                    && text.find('(').is_some_and(|at| !text[..at].contains(' ')))
            {
                stay(Role::Frame { library: false })
            } else if text.starts_with("...") || text.starts_with("exit status ") {
                stay(Role::Detail)
            } else {
                None
            }
        }
        Phase::Compiler => {
            if start(text).is_some() && !indented(text) {
                // The next diagnostic is an event of its own.
                None
            } else if indented(text)
                || CODE_FRAME.is_match(text)
                || text.starts_with("help: ")
                || text.starts_with("note: ")
                || text.split_once(' ').is_some_and(|(n, _)| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                })
            {
                // rustc's `-->`, `|` and `= note:` lines, esbuild's indented
                // frame, tsc's `10 source` lines and related information.
                stay(Role::Detail)
            } else {
                None
            }
        }
    }
}

/// Follows one stream's lines and groups them into blocks; see the module
/// documentation for how a reader drives it.
#[derive(Debug, Default)]
pub struct BlockTracker {
    /// The open block's phase; `None` when no block is open.
    phase: Option<Phase>,
    lines: Vec<BlockLine>,
    cut_lines: u64,
    cut_frames: u64,
    end: u64,
    /// Index in `lines` of the last frame line, so a body line naming a
    /// library path (Rust's and Go's `file:line`) marks its frame.
    last_frame: Option<usize>,
}

impl BlockTracker {
    pub fn new() -> BlockTracker {
        BlockTracker::default()
    }

    /// Takes the next line of the stream (cleaned, non-blank) and says
    /// where it stands; see [`Step`].
    pub fn push(&mut self, n: u64, text: &str) -> Step {
        let mut closed = None;
        if let Some(phase) = self.phase {
            if let Some((phase, role)) = next(phase, text) {
                self.phase = Some(phase);
                let start = self.lines.first().map_or(n, |l| l.n);
                let place = self.keep(n, text, role);
                return Step {
                    closed: None,
                    place: if place {
                        Place::Inside { start }
                    } else {
                        Place::Cut { start }
                    },
                };
            }
            closed = self.finish();
        }
        let place = match start(text) {
            Some((phase, role)) => {
                self.phase = Some(phase);
                self.keep(n, text, role);
                Place::Start
            }
            None => Place::Outside,
        };
        Step { closed, place }
    }

    /// Closes the open block, if any (end of the range read).
    pub fn finish(&mut self) -> Option<Block> {
        self.phase.take()?;
        self.last_frame = None;
        Some(Block {
            lines: std::mem::take(&mut self.lines),
            cut_lines: std::mem::take(&mut self.cut_lines),
            cut_frames: std::mem::take(&mut self.cut_frames),
            end: self.end,
        })
    }

    /// The kept lines of the open block so far (empty when none is open).
    pub fn open_lines(&self) -> &[BlockLine] {
        &self.lines
    }

    /// Keeps a line of the open block, or counts it once the block is full.
    /// Returns whether it was kept.
    fn keep(&mut self, n: u64, text: &str, role: Role) -> bool {
        self.end = n;
        if self.lines.len() >= MAX_BLOCK_LINES {
            self.cut_lines += 1;
            if matches!(role, Role::Frame { .. }) {
                self.cut_frames += 1;
            }
            return false;
        }
        match role {
            Role::Frame { .. } => self.last_frame = Some(self.lines.len()),
            Role::FrameBody => {
                if let Some(frame) = self.last_frame.map(|i| &mut self.lines[i])
                    && let Role::Frame { library: false } = frame.role
                    && library(text)
                    && !frame.text.trim_start().starts_with("File \"")
                {
                    frame.role = Role::Frame { library: true };
                }
            }
            Role::Header | Role::Detail => self.last_frame = None,
        }
        self.lines.push(BlockLine {
            n,
            text: text.to_string(),
            role,
        });
        true
    }
}

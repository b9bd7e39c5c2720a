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
//! Lines given here should be cleaned ([`crate::logs::tidy::clean`]); blank
//! lines are expected to have been dropped, so a blank line does not end a
//! block.

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
    #[cfg(test)]
    pub fn start(&self) -> u64 {
        self.lines.first().map_or(self.end, |l| l.n)
    }

    /// The kept lines to show, runs of library frames folded: see [`fold`].
    #[cfg(test)]
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

/// A block pattern, matched on a line's bytes with ASCII classes (`\w`,
/// `\d`, `\s`; `\S` is any byte but ASCII space): Unicode's `\w` alone
/// compiles to thousands of states, which every read with blocks on paid
/// before its first line (the patterns took 2 of the 5 ms of a `bgt output`
/// of a one-line log). Numbers and indentation are ASCII; a name may not be
/// (`com.société.PaymentException`): see [`NAME_CHAR`]. Non-ASCII literals
/// match their UTF-8 bytes.
struct Pattern(regex::bytes::Regex);

impl Pattern {
    fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text.as_bytes())
    }
}

/// A character of a class or package name (`@W` in the patterns): an ASCII
/// word character or `$`, or a letter of the Latin, Greek, Cyrillic,
/// Hebrew and Arabic blocks (UTF-8 lead bytes C3 to DF) or a CJK ideograph
/// (E4 to E9). Not any non-ASCII byte: a no-break space, an arrow, a dash,
/// CJK punctuation or an emoji before `Error:` would make a header of an
/// ordinary line (`API调用失败，Error: 500`).
const NAME_CHAR: &str = r"(?:[\w$]|[\xC3-\xDF][\x80-\xBF]|[\xE4-\xE9][\x80-\xBF]{2})";

fn re(pattern: &str) -> Pattern {
    Pattern(
        regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .build()
            .expect("valid regex"),
    )
}

/// Exception lines: `TypeError: x`, `json.decoder.JSONDecodeError: x`,
/// `java.lang.IllegalStateException: x`, `Error [ERR_X]: x`, Next's
/// `⨯ TypeError: x`, a bare `KeyError`, Vite's `[vite] Internal server
/// error: x`.
static EXCEPTION: LazyLock<Pattern> = LazyLock::new(|| {
    re(
        &r"^\s*(?:⨯ |Uncaught (?:exception )?|Unhandled @W+: )?(?:@W+\.)*(?:[A-Z]@W*)?(?:Error|Exception|Throwable|Panic)(?: \[[\w-]+\])?(?::(?: |$)|$| \{$)|(?:Internal server|Pre-transform|Transform|Build) error: "
            .replace("@W", NAME_CHAR),
    )
});

/// Compiler diagnostics: tsc (plain and pretty), rustc/cargo, esbuild,
/// webpack.
static COMPILER: LazyLock<Pattern> = LazyLock::new(|| {
    re(
        r"^(?:\S+\(\d+,\d+\): (?:error|warning) TS\d+: |\S+:\d+:\d+ - (?:error|warning) TS\d+: |(?:error|warning)(?:\[\w+\])?: |(?:✘|▲) \[(?:ERROR|WARNING)\] |(?:ERROR|WARNING) in )",
    )
});

/// Ruby's first line `file:line:in 'meth': message (Class)` and Rails' bare
/// frames `app/x.rb:21:in 'meth'`.
static RUBY_FRAME: LazyLock<Pattern> = LazyLock::new(|| re(r"^\s*(?:from )?\S+:\d+:in [`']"));

/// Rails' exception line: `NoMethodError (undefined method …`.
static RAILS_HEADER: LazyLock<Pattern> = LazyLock::new(|| {
    re(
        &r"^(?:[A-Z]@W*::)*[A-Z]@W*(?:Error|Exception|NotFound|Invalid) \("
            .replace("@W", NAME_CHAR),
    )
});

/// Node's throw site: a path and line number alone on a line.
static JS_SITE: LazyLock<Pattern> =
    LazyLock::new(|| re(r"^(?:/|file://|[A-Za-z]:\\|\./)\S*\.[cm]?[jt]sx?:\d+$"));

/// A Python frame line: `  File "x.py", line 3, in f` (or without `in`
/// for a SyntaxError).
static PY_FRAME: LazyLock<Pattern> = LazyLock::new(|| re(r#"^\s*File "[^"]*", line \d+"#));

/// A code frame line: `  12 |`, `> 3 |`, `    |  ^`, esbuild's `│`.
static CODE_FRAME: LazyLock<Pattern> = LazyLock::new(|| re(r"^\s*>?\s*\d*\s*(?:\||│|╵)"));

/// Paths and names of code the project did not write: Python's stdlib and
/// packages, node_modules and Node's internals, the Rust standard library
/// and cargo registry, the JVM's modules, GOROOT and the Go module cache,
/// Ruby's stdlib and gems.
static LIBRARY: LazyLock<Pattern> = LazyLock::new(|| {
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
static RUST_LIBRARY_SYMBOL: LazyLock<Pattern> = LazyLock::new(|| {
    re(
        r"^\s*\d+: (?:0x[0-9a-f]+ - )?<?(?:std|core|alloc|__rustc|panic_unwind|backtrace)::|rust_begin_unwind$|__libc_start",
    )
});

fn indented(text: &str) -> bool {
    text.starts_with([' ', '\t'])
}

/// Vite compiles the project's own `vite.config.js` into
/// `node_modules/.vite-temp/`: those frames are the project's.
fn library(text: &str) -> bool {
    LIBRARY.is_match(text) && !text.contains("node_modules/.vite-temp/")
}

/// Words of which every line that [`start`] opens a block with contains one
/// (checked on every call in debug builds): a run of lines without any of
/// them opens no block, so the reader need not replay it around a match,
/// and a line without any is no start without running the start patterns.
/// Plain words, so one vectorised multi-word search (Teddy) looks for all
/// of them at once: twice as fast as the same alternation compiled as a
/// regex, whose `[jt]sx?:\d` expanded into forty literals and a slower
/// search. Looser words only mean "look" more often (`sx:` covers `jsx:`
/// and `tsx:`, `panic` covers `panicked` and `panic: `).
static MAY_START: LazyLock<aho_corasick::AhoCorasick> = LazyLock::new(|| {
    // Leftmost-first: only the leftmost kinds get the Teddy prefilter.
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build([
            "Traceback",
            "Error",
            "Exception",
            "Throwable",
            "Panic",
            "NotFound",
            "Invalid",
            "File \"",
            "panic",
            "goroutine ",
            "error",
            "warning",
            "ERROR",
            "WARNING",
            ":in `",
            ":in '",
            "js:",
            "ts:",
            "sx:",
        ])
        .expect("valid words")
});

/// Whether some line of `lines` (raw bytes that cleaning leaves as they
/// are) may open a block. `false` is certain; `true` means "look".
pub fn may_start_in(lines: &[u8]) -> bool {
    MAY_START.is_match(lines)
}

/// The line opens a block: its phase and role.
fn start(text: &str) -> Option<(Phase, Role)> {
    if !may_start_in(text.as_bytes()) {
        debug_assert!(
            start_unchecked(text).is_none(),
            "MAY_START misses a block start: {text:?}"
        );
        return None;
    }
    start_unchecked(text)
}

fn start_unchecked(text: &str) -> Option<(Phase, Role)> {
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
    if might_be_exception(text) && EXCEPTION.is_match(text) {
        return header(Phase::Stack);
    }
    None
}

/// Words one of which every [`EXCEPTION`] line contains. The regex is
/// unanchored and Unicode-aware, so a lazy DFA walks the whole line; most
/// lines (access logs) contain none of these, and the reader classifies
/// every line it replays around a match.
fn might_be_exception(text: &str) -> bool {
    ["Error", "Exception", "Throwable", "Panic", "error: "]
        .iter()
        .any(|word| text.contains(word))
}

/// The line continues a block in `phase`: the next phase and its role.
/// `None` ends the block.
fn next(phase: Phase, text: &str) -> Option<(Phase, Role)> {
    let trimmed = text.trim_start();
    let stay = |role| Some((phase, role));
    match phase {
        Phase::PyHeader | Phase::PyChain => (trimmed == "Traceback (most recent call last):")
            .then_some((Phase::PyFrames, Role::Header)),
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
                || text.split_once(' ').is_some_and(|(n, rest)| {
                    !n.is_empty()
                        && n.bytes().all(|b| b.is_ascii_digit())
                        && !rest.starts_with("error")
                        && !rest.starts_with("warning")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A captured log under tests/data/logs/.
    fn captured(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/logs")
            .join(name);
        std::fs::read(&path).unwrap()
    }

    /// The blocks of a captured log (path under tests/data/logs/), fed the
    /// way the reader feeds them: cleaned lines numbered as in the file.
    fn blocks_of(name: &str) -> (Vec<Block>, Vec<(u64, Place)>) {
        let bytes = captured(name);
        let mut tracker = BlockTracker::new();
        let (mut blocks, mut places) = (Vec::new(), Vec::new());
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let Some(text) = crate::logs::tidy::clean(raw) else {
                continue;
            };
            let step = tracker.push(i as u64 + 1, &text);
            blocks.extend(step.closed);
            places.push((i as u64 + 1, step.place));
        }
        blocks.extend(tracker.finish());
        (blocks, places)
    }

    /// The block that holds line `n`.
    fn block_at(blocks: &[Block], n: u64) -> &Block {
        blocks
            .iter()
            .find(|b| (b.start()..=b.end).contains(&n))
            .unwrap_or_else(|| panic!("no block holds line {n}: {blocks:#?}"))
    }

    /// What the reader would print for a block: folded lines and markers.
    fn shown_texts(block: &Block) -> Vec<String> {
        let mut texts: Vec<String> = block
            .shown()
            .into_iter()
            .map(|s| match s {
                Shown::Line(i) => block.lines[i].text.clone(),
                Shown::Library { frames, .. } => library_marker(frames),
            })
            .collect();
        texts.extend(block.more_marker());
        texts
    }

    fn outside(places: &[(u64, Place)], lines: &[u64]) {
        for n in lines {
            let place = places.iter().find(|(m, _)| m == n).map(|(_, p)| *p);
            assert_eq!(place, Some(Place::Outside), "line {n}");
        }
    }

    /// Checks a captured failure: the block holding `line` spans exactly
    /// `start..=end`, its folded form shows every string of `shows` (app
    /// frames with file and line, markers) in order, and `outside` lines
    /// around it belong to no block.
    fn check(name: &str, line: u64, (start, end): (u64, u64), shows: &[&str], around: &[u64]) {
        let (blocks, places) = blocks_of(name);
        let block = block_at(&blocks, line);
        assert_eq!((block.start(), block.end), (start, end), "{name}");
        let texts = shown_texts(block);
        let mut at = 0;
        for want in shows {
            match texts[at..].iter().position(|t| t.contains(want)) {
                Some(i) => at += i + 1,
                None => panic!("{name}: {want:?} not shown (in order) in {texts:#?}"),
            }
        }
        outside(&places, around);
    }

    /// The blocks of `text`, fed line by line as the reader feeds them.
    fn blocks_in(text: &str) -> Vec<Block> {
        let mut tracker = BlockTracker::new();
        let mut blocks = Vec::new();
        for (i, line) in text.lines().enumerate() {
            blocks.extend(tracker.push(i as u64 + 1, line).closed);
        }
        blocks.extend(tracker.finish());
        blocks
    }

    /// The patterns' classes are ASCII for speed; names need not be.
    #[test]
    fn names_with_non_ascii_letters_open_blocks() {
        for (text, (start, end)) in [
            (
                "starting\ncom.société.paiement.PaymentException: refusé\n\tat com.société.paiement.Service.pay(Service.java:10)\n\tat com.société.Main.main(Main.java:3)\ndone",
                (2, 4),
            ),
            (
                "com.example.DonnéesInvalidesException: bad\n\tat com.example.Main.main(Main.java:3)\nnext",
                (1, 2),
            ),
            (
                "DonnéesError: x\n    at ƒoo (/home/josé/app.js:7:11)\n    at Object.<anonymous> (/home/josé/app.js:9:1)\nnext",
                (1, 3),
            ),
            (
                "Pagamento::CartãoInvalid (bad card):\n  app/x.rb:21:in 'meth'\nnext",
                (1, 2),
            ),
        ] {
            let blocks = blocks_in(text);
            let block = block_at(&blocks, start);
            assert_eq!((block.start(), block.end), (start, end), "{text}");
        }
        // Non-ASCII that is no letter before the word does not make a
        // header of an ordinary line (nor did Unicode's `\w`).
        for line in [
            "API调用失败，Error: 500",
            "Fatal\u{a0}Error: disk full",
            "Build\u{3000}Error: x",
            "Parse→Error: x",
            "Retrying…Error: timeout",
            "“java.lang.IllegalStateException: bad",
            "🔥.Error: x",
            "GET→NotFound (404)",
            "Token\u{a0}Invalid (expired)",
        ] {
            let text = format!("{line}\n  retrying in 5s\n  request id 42\nnext");
            assert!(blocks_in(&text).is_empty(), "{line} opened a block");
        }
    }

    #[test]
    fn python_chained_traceback_is_one_block_with_stdlib_frames_folded() {
        check(
            "errors/python-chained.stderr.log",
            22,
            (6, 47),
            &[
                "Traceback (most recent call last):",
                r#"File "/tmp/errcap/shop/orders.py", line 17, in load_order"#,
                "return parse_order(raw)",
                r#"File "/tmp/errcap/shop/orders.py", line 12, in parse_order"#,
                "… 3 library frames",
                "json.decoder.JSONDecodeError: Expecting property name",
                "The above exception was the direct cause",
                r#"File "/tmp/errcap/shop/app.py", line 18, in report"#,
                "orders.OrderError: order payload is not JSON",
                "During handling of the above exception",
                r#"File "/tmp/errcap/shop/app.py", line 22, in report"#,
                "KeyError: '{not json'",
            ],
            &[1, 2, 3, 4, 5, 48],
        );
    }

    #[test]
    fn python_syntax_error_keeps_its_column_pointer() {
        check(
            "errors/python-syntax.stderr.log",
            5,
            (2, 5),
            &[
                r#"File "/tmp/errcap/shop/bad/views.py", line 3"#,
                "def broken(:",
                "               ^",
                "SyntaxError: invalid syntax",
            ],
            &[1, 6],
        );
    }

    #[test]
    fn django_500_starts_at_internal_server_error_and_folds_site_packages() {
        let name = "django.stderr.log";
        check(
            name,
            52,
            (38, 52),
            &[
                "Internal Server Error: /boom",
                "Traceback",
                "… 2 library frames",
                r#"File "/tmp/capture/django/web/views.py", line 34, in boom"#,
                r#"File "/tmp/capture/django/web/views.py", line 30, in _load_order"#,
                "KeyError: 42",
            ],
            &[37, 53, 54],
        );
        // The reloader crash: 20 django/stdlib/<frozen> frames fold into one line.
        check(
            name,
            100,
            (72, 123),
            &[
                "Exception in thread django-main-thread:",
                "… 20 library frames",
                r#"File "/tmp/capture/django/mysite/urls.py", line 4, in <module>"#,
                r#"File "/tmp/capture/django/web/views.py", line 48"#,
                "SyntaxError: invalid syntax",
            ],
            &[124],
        );
    }

    #[test]
    fn node_error_with_cause_keeps_throw_site_cause_and_code() {
        check(
            "errors/node-cause.stderr.log",
            20,
            (4, 26),
            &[
                "/tmp/errcap/node-api/config.js:7",
                "throw new Error(",
                "Error: could not load config",
                "at readConfig (/tmp/errcap/node-api/config.js:7:11)",
                "… 2 library frames",
                "[cause]: Error: ENOENT",
                "at Object.readFileSync (node:fs:448:20)",
                "at readConfig (/tmp/errcap/node-api/config.js:5:26)",
                "… 2 library frames",
                "code: 'ENOENT',",
                "}",
                "Node.js v20.20.2",
            ],
            &[1, 2, 3, 27],
        );
    }

    #[test]
    fn express_handler_stack_folds_node_modules() {
        check(
            "express.stderr.log",
            5,
            (1, 11),
            &[
                "TypeError: Cannot read properties of undefined (reading 'total')",
                "at loadOrder (/tmp/capture/express/app.js:26:21)",
                "at /tmp/capture/express/app.js:30:21",
                "… 8 library frames",
            ],
            &[12, 13],
        );
    }

    #[test]
    fn java_caused_by_chain_keeps_app_frames_and_more_lines() {
        check(
            "errors/java-caused-by.stderr.log",
            15,
            (4, 32),
            &[
                "Exception in thread \"billing-worker\" java.lang.IllegalStateException",
                "at com.acme.billing.InvoiceService.bill(InvoiceService.java:19)",
                "at java.base/java.lang.Iterable.forEach",
                "Caused by: java.time.format.DateTimeParseException",
                "… 4 library frames",
                "at com.acme.billing.InvoiceService.dueDate(InvoiceService.java:12)",
                "... 4 more",
                "Caused by: java.time.DateTimeException",
                "… 13 library frames",
                "... 8 more",
            ],
            &[1, 2, 3, 33],
        );
    }

    #[test]
    fn rust_panic_backtrace_folds_std_and_keeps_main_rs() {
        check(
            "errors/rust-panic.stderr.log",
            6,
            (5, 36),
            &[
                "thread 'main' (9821) panicked at main.rs:5:11:",
                "sku has a price",
                "stack backtrace:",
                "… 5 library frames",
                "5: main::price_of",
                "at ./main.rs:5:11",
                "6: main::main::{{closure}}",
                "… 5 library frames",
                "12: main::main",
                "… 1 library frame",
                "note: Some details are omitted",
            ],
            &[1, 2, 3, 37],
        );
    }

    #[test]
    fn go_panic_keeps_goroutine_and_app_frames() {
        check(
            "errors/go-panic.stderr.log",
            3,
            (3, 14),
            &[
                "panic: runtime error: invalid memory address",
                "[signal SIGSEGV",
                "goroutine 1 [running]:",
                "main.(*store).handleOrder(",
                "/tmp/errcap/goapp/main.go:19 +0x31",
                "… 2 library frames",
                "main.main()",
                "/tmp/errcap/goapp/main.go:29 +0x225",
            ],
            &[1, 2, 15],
        );
    }

    #[test]
    fn ruby_uncaught_error_keeps_from_frames() {
        check(
            "errors/ruby-error.stderr.log",
            6,
            (3, 7),
            &[
                "(JSON::ParserError)",
                "from /tmp/errcap/rubyapp/lib/order_parser.rb:5:in `parse'",
                "from worker.rb:9:in `<main>'",
            ],
            &[1, 2, 8],
        );
    }

    #[test]
    fn rustc_error_keeps_code_frame_with_its_marker() {
        let name = "errors/cargo-error.stderr.log";
        check(
            name,
            6,
            (2, 8),
            &[
                "error[E0308]: mismatched types",
                "--> src/main.rs:2:22",
                "2 |     let count: u32 = \"three\";",
                "^^^^^^^ expected `u32`, found `&str`",
                "expected due to this",
            ],
            &[1, 10, 12],
        );
        check(name, 11, (11, 11), &["error: could not compile"], &[12]);
    }

    #[test]
    fn tsc_errors_are_one_block_each() {
        let name = "errors/tsc.stderr.log";
        check(
            name,
            2,
            (2, 2),
            &["src/cart.ts(10,14): error TS2322"],
            &[1, 4],
        );
        check(name, 3, (3, 3), &["src/cart.ts(10,53): error TS2322"], &[4]);
        let pretty = "errors/tsc-pretty.stderr.log";
        check(
            pretty,
            2,
            (2, 4),
            &["src/cart.ts:10:14 - error TS2322", "10 export const label"],
            &[1],
        );
        check(
            pretty,
            12,
            (7, 13),
            &[
                "src/cart.ts:10:53 - error TS2322",
                "src/cart.ts:3:3 - The expected type comes from",
                "3   price: number;",
            ],
            &[17, 19],
        );
    }

    #[test]
    fn esbuild_and_vite_errors_keep_their_code_frames() {
        check(
            "errors/esbuild.stderr.log",
            1,
            (1, 6),
            &[
                "✘ [ERROR] Expected \")\" but found \";\"",
                "src/main.ts:4:35:",
                "4 │ console.log(`total ${total(items)}`;",
                "│                                    ^",
            ],
            &[8, 9],
        );
        check(
            "vite.stderr.log",
            55,
            (49, 66),
            &[
                "[vite] Internal server error: Failed to resolve import",
                "File: /tmp/capture/vite/src/main.js:3:23",
                "3  |  import { track } from './analytics.js';",
                "|                         ^",
                "… 9 library frames",
            ],
            &[12, 13],
        );
        // Vite's compiled copy of the project's vite.config.js is the project's code.
        check(
            "vite.stderr.log",
            2,
            (1, 11),
            &["at loadOrder (file:///tmp/capture/vite/node_modules/.vite-temp/"],
            &[12],
        );
    }

    #[test]
    fn next_error_keeps_code_frame_and_digest() {
        check(
            "next.stderr.log",
            9,
            (4, 15),
            &[
                "⨯ TypeError: Cannot read properties of undefined",
                "at loadOrder (app/boom/page.js:3:21)",
                "> 3 |   return orders[id].total;",
                "digest: '185686999'",
                "}",
            ],
            &[3, 25, 26],
        );
    }

    #[test]
    fn a_block_is_cut_at_60_lines_and_counts_the_rest() {
        let (blocks, places) = blocks_of("errors/java-deep.stderr.log");
        let block = block_at(&blocks, 2);
        assert_eq!((block.start(), block.end), (2, 84));
        assert_eq!(block.lines.len(), MAX_BLOCK_LINES);
        assert_eq!(block.lines.last().unwrap().n, 61);
        assert_eq!((block.cut_lines, block.cut_frames), (23, 23));
        assert_eq!(block.more_marker().as_deref(), Some("… 23 more frames"));
        for n in 62..=84 {
            assert!(places.contains(&(n, Place::Cut { start: 2 })), "line {n}");
        }
        outside(&places, &[1, 85]);
    }

    /// The forward reader's case (a): a match deep inside a block sees the
    /// block's earlier lines in `open_lines`, and the block's later lines
    /// arrive as `Inside` until it closes.
    #[test]
    fn a_match_inside_a_block_can_bring_the_lines_before_and_after_it() {
        let bytes = captured("errors/python-chained.stderr.log");
        let mut tracker = BlockTracker::new();
        let mut emitted: Vec<u64> = Vec::new();
        let mut emitting = None;
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let Some(text) = crate::logs::tidy::clean(raw) else {
                continue;
            };
            let n = i as u64 + 1;
            let step = tracker.push(n, &text);
            if step.closed.is_some() {
                emitting = None;
            }
            let block = step.place.block_start(n);
            if block.is_some() && block == emitting {
                emitted.push(n);
            } else if text.contains("app.py\", line 18") {
                emitted.extend(tracker.open_lines().iter().map(|l| l.n));
                emitting = block;
            }
        }
        assert_eq!(emitted.first(), Some(&6));
        assert_eq!(emitted.last(), Some(&47));
        assert!(emitted.contains(&27) && emitted.contains(&45));
        // Caret lines were dropped by cleaning, so never emitted.
        assert!(!emitted.contains(&9) && !emitted.contains(&46));
    }

    #[test]
    fn caret_only_lines_are_dropped_by_cleaning() {
        let bytes = captured("errors/python-chained.stderr.log");
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // `           ^^^^^^^^^^^^^^^^` and `           ~~~~~^^^^^`
        for n in [9, 12, 15, 18, 21, 29, 32, 46] {
            assert!(crate::logs::tidy::clean(lines[n - 1]).is_none(), "line {n}");
        }
        let (blocks, _) = blocks_of("errors/tsc-pretty.stderr.log");
        assert!(
            blocks
                .iter()
                .flat_map(|b| &b.lines)
                .all(|l| !l.text.trim().starts_with('~'))
        );
    }

    #[test]
    fn a_single_library_frame_line_is_not_folded() {
        let lines: Vec<BlockLine> = [
            ("Error: boom", Role::Header),
            (
                "    at JSON.parse (<anonymous>)",
                Role::Frame { library: true },
            ),
            (
                "    at GET (app/route.js:2:23)",
                Role::Frame { library: false },
            ),
        ]
        .iter()
        .zip(1..)
        .map(|(&(text, role), n)| BlockLine {
            n,
            text: text.to_string(),
            role,
        })
        .collect();
        assert_eq!(
            fold(&lines),
            vec![Shown::Line(0), Shown::Line(1), Shown::Line(2)]
        );
    }
}

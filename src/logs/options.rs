//! `ReadOptions`: what a reader of a task's logs asks for, in the words
//! every face shares (filter, exclude, presets, case, since and its cursor,
//! tail/head, caps, raw, stream, blocks, context), turned into the engine's [`Request`] in
//! one place. The CLI's flags and the agent tools' parameters both map onto
//! it, so a rule such as "a cap of 0 means no cap" exists once.

use crate::logs::pattern::{Case, LineMatch};
use crate::logs::read::{MatchContext, Request, Stream, Window};
use anyhow::Result;

/// The reader's choices; [`Default`] is what a bare read gets.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Which logs, in order.
    pub streams: Vec<Stream>,
    pub filter: Option<String>,
    pub exclude: Option<String>,
    /// Preset names (`next`, `vite`, ...).
    pub presets: Vec<String>,
    pub case: Case,
    /// Only lines after the cursor named `cursor`, then advance it.
    pub since: bool,
    pub cursor: String,
    /// Rewind the cursor to the start of the logs first.
    pub reset_cursor: bool,
    pub tail: Option<usize>,
    pub head: Option<usize>,
    /// Cap on returned lines in total; 0 means no cap.
    pub max_lines: usize,
    /// Cut cleaned lines longer than this (0: never).
    pub max_line_chars: usize,
    /// No cleaning at all (and blocks shown unfolded).
    pub raw: bool,
    /// What a match of the filter brings with it.
    pub context: MatchContext,
}

/// The cap a read gets unless it asks otherwise.
pub use crate::logs::read::DEFAULT_MAX_LINES;

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions {
            streams: vec![Stream::Stdout, Stream::Stderr],
            filter: None,
            exclude: None,
            presets: Vec::new(),
            case: Case::Smart,
            since: false,
            cursor: "default".into(),
            reset_cursor: false,
            tail: None,
            head: None,
            max_lines: DEFAULT_MAX_LINES,
            max_line_chars: crate::logs::tidy::DEFAULT_MAX_LINE_CHARS,
            raw: false,
            context: MatchContext {
                blocks: true,
                ..MatchContext::NONE
            },
        }
    }
}

impl ReadOptions {
    /// The engine request; bad patterns, presets or a tail with a head are
    /// usage errors.
    pub fn request(&self) -> Result<Request> {
        let window = match (self.tail, self.head) {
            (Some(_), Some(_)) => {
                return Err(crate::error::usage("give tail or head, not both"));
            }
            (Some(n), None) => Window::Tail(n),
            (None, Some(n)) => Window::Head(n),
            (None, None) => Window::All,
        };
        Ok(Request {
            streams: self.streams.clone(),
            matcher: LineMatch::build(
                "--filter",
                self.filter.as_deref(),
                self.exclude.as_deref(),
                &self.presets,
                self.case,
            )?,
            clean: !self.raw,
            max_line_chars: self.max_line_chars,
            window,
            max_lines: (self.max_lines > 0).then_some(self.max_lines),
            since: self.since.then(|| self.cursor.clone()),
            reset_cursor: self.reset_cursor,
            include_partial: true,
            context: self.context,
        })
    }
}

//! The terminal, for people: whether a stream gets colour, the few styles
//! bgt uses, how wide the screen is, and the live line of a long wait.
//!
//! It follows the habits people already have. Colour is decided per stream,
//! as grep and ripgrep do (`--color auto|always|never`; `auto` colours a
//! stream only when it is a terminal, `TERM` is not `dumb` and `NO_COLOR` is
//! unset or empty), so `bgt status | less` or a CI log never carries escape
//! sequences unless asked. A live line is redrawn only on a terminal; in a
//! pipe it becomes a plain line every 10 s, so a CI log shows life without
//! a carriage return in it. JSON is never coloured: it never passes here.

use crate::logs::pattern::{Case, LineMatch};
use crate::logs::read::{self as logread, Request, Stream, Window};
use crate::task::dirfd::DirFd;
use crate::task::store::Task;
use regex::bytes::Regex;
use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `--color` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour a stream only when it is a terminal (and `NO_COLOR` is unset, `TERM` not dumb).
    #[default]
    Auto,
    /// Colour even in a pipe.
    Always,
    /// Never colour.
    Never,
}

/// The process's choice: one command line, one answer for every printer.
static CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Records the command line's `--color` (first call wins).
pub fn set_choice(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

/// The two streams people read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Stdout,
    Stderr,
}

impl Out {
    fn is_terminal(self) -> bool {
        match self {
            Out::Stdout => std::io::stdout().is_terminal(),
            Out::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// True when the terminal can do more than print characters.
fn capable_terminal() -> bool {
    std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Whether text written to `out` may carry colour.
pub fn colored(out: Out) -> bool {
    match CHOICE.get().copied().unwrap_or_default() {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            out.is_terminal()
                && capable_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// The terminal's width in columns when `out` is a terminal (`None` in a
/// pipe: nothing is cut there). Falls back to `COLUMNS`, then 80.
pub fn width(out: Out) -> Option<usize> {
    if !out.is_terminal() {
        return None;
    }
    let columns = match out {
        Out::Stdout => crate::sys::terminal_columns(&std::io::stdout()),
        Out::Stderr => crate::sys::terminal_columns(&std::io::stderr()),
    };
    columns
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .filter(|w| *w > 0)
        .or(Some(80))
}

/// `text` in at most `width` characters, cut with `…` when longer.
pub fn cut(text: &str, width: usize) -> Cow<'_, str> {
    if text.chars().count() <= width {
        return Cow::Borrowed(text);
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    Cow::Owned(out)
}

/// The styles bgt uses: few, each with one meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    /// Success, and things going well (running).
    Good,
    /// Failure.
    Bad,
    /// Ended by someone, or unknown: worth a look, not a failure.
    Warn,
    /// Task ids: one steady style wherever they appear.
    Id,
    /// Labels: likewise.
    Label,
    /// What a filter matched, as grep shows it.
    Match,
    /// Secondary text: summaries, stream markers, the log line of a live line.
    Dim,
}

impl Style {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Good => Some("\x1b[32m"),
            Style::Bad => Some("\x1b[31m"),
            Style::Warn => Some("\x1b[33m"),
            Style::Id => Some("\x1b[1m"),
            Style::Label => Some("\x1b[36m"),
            Style::Match => Some("\x1b[1;31m"),
            Style::Dim => Some("\x1b[2m"),
        }
    }
}

const RESET: &str = "\x1b[0m";

/// A pen for one stream: paints only when that stream takes colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Paint {
    pub on: bool,
}

impl Paint {
    /// The pen for `out`, as `--color` and the environment decide.
    pub fn of(out: Out) -> Paint {
        Paint { on: colored(out) }
    }

    /// `text` in `style`.
    pub fn paint<'a>(self, style: Style, text: &'a str) -> Cow<'a, str> {
        match style.sgr() {
            Some(sgr) if self.on && !text.is_empty() => Cow::Owned(format!("{sgr}{text}{RESET}")),
            _ => Cow::Borrowed(text),
        }
    }

    /// `text` in `style`, padded with spaces to `width` characters (the
    /// padding stays outside the escapes, so columns line up).
    pub fn padded(self, style: Style, text: &str, width: usize) -> String {
        let pad = width.saturating_sub(text.chars().count());
        format!("{}{:pad$}", self.paint(style, text), "")
    }

    /// `text` with every non-empty match of `re` highlighted, as grep does.
    pub fn highlight<'a>(self, text: &'a str, re: Option<&Regex>) -> Cow<'a, str> {
        let Some(re) = re.filter(|_| self.on) else {
            return Cow::Borrowed(text);
        };
        let mut out = String::new();
        let mut last = 0;
        for m in re.find_iter(text.as_bytes()).filter(|m| !m.is_empty()) {
            // Matches of a UTF-8 regex on valid UTF-8 fall on char boundaries;
            // `get` keeps a surprise from panicking.
            let (Some(before), Some(matched)) =
                (text.get(last..m.start()), text.get(m.start()..m.end()))
            else {
                continue;
            };
            out.push_str(before);
            out.push_str(&self.paint(Style::Match, matched));
            last = m.end();
        }
        if last == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }
}

/// How log lines are printed: the stream's pen and the filter whose matches
/// are highlighted (the very regex that selected the lines, so what is
/// highlighted is exactly what matched).
#[derive(Clone, Debug, Default)]
pub struct Highlight {
    pub paint: Paint,
    pub filter: Option<Regex>,
}

impl Highlight {
    /// Highlighting for stdout; `filter` is kept only when stdout takes colour.
    pub fn stdout(filter: Option<&Regex>) -> Highlight {
        let paint = Paint::of(Out::Stdout);
        Highlight {
            paint,
            filter: filter.filter(|_| paint.on).cloned(),
        }
    }

    /// A line's text with its matches highlighted.
    pub fn line<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.paint.highlight(text, self.filter.as_ref())
    }
}

/// `0s`, `12s`, `2m04s`: whole seconds, for a clock that ticks.
pub fn seconds(d: Duration) -> String {
    match d.as_secs() {
        0 => "0s".into(),
        s => crate::duration::short(Duration::from_secs(s)),
    }
}

/// How a live line shows itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// On a terminal: one line on stderr, redrawn in place.
    Redraw,
    /// In a pipe or a CI log: a plain line now and then.
    Periodic,
    /// `--quiet`.
    Silent,
}

/// Redraws on a terminal at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// In a pipe, a line at most this often.
const PERIODIC_EVERY: Duration = Duration::from_secs(10);

/// One status line on stderr while something takes time (`wait`, `stop`):
/// redrawn in place on a terminal, a line every 10 s in a pipe, nothing
/// when quiet. The redraw uses only `\r` and spaces (no escapes), and the
/// line is cut to the terminal's width so it never wraps. Dropping it
/// erases it, so whatever is printed next starts on a clean line.
pub struct LiveLine {
    mode: Mode,
    started: Instant,
    /// When the next line is due.
    due: Instant,
    /// Characters now on screen (redraw mode).
    shown: usize,
    /// The line now on screen, not written again while it stays the same.
    drawn: String,
    paint: Paint,
}

impl LiveLine {
    /// A live line that first shows itself after `first` (a quick wait never
    /// flickers), or after 10 s in a pipe.
    pub fn new(quiet: bool, first: Duration) -> LiveLine {
        let mode = if quiet {
            Mode::Silent
        } else if Out::Stderr.is_terminal() && capable_terminal() {
            Mode::Redraw
        } else {
            Mode::Periodic
        };
        let started = Instant::now();
        let first = if mode == Mode::Periodic {
            PERIODIC_EVERY
        } else {
            first
        };
        LiveLine {
            mode,
            started,
            due: started + first,
            shown: 0,
            drawn: String::new(),
            paint: Paint::of(Out::Stderr),
        }
    }

    /// How often [`LiveLine::tick`] should be called; `None` when silent.
    pub fn every(&self) -> Option<Duration> {
        match self.mode {
            Mode::Redraw => Some(REDRAW_EVERY),
            Mode::Periodic => Some(PERIODIC_EVERY),
            Mode::Silent => None,
        }
    }

    /// Time since the live line was made.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Shows the line if one is due: `text` gets the elapsed time and
    /// returns the status and, dimmed after it, a log line. Nothing is
    /// computed when nothing is due.
    pub fn tick(&mut self, text: impl FnOnce(Duration) -> (String, Option<String>)) {
        let now = Instant::now();
        if self.mode == Mode::Silent || now < self.due {
            return;
        }
        let (status, log) = text(now - self.started);
        let log = log.map(|l| crate::render::one_line(&l.replace('\t', " ")));
        match self.mode {
            Mode::Redraw => {
                self.due = now + REDRAW_EVERY;
                let room = width(Out::Stderr).unwrap_or(80).saturating_sub(1);
                let status = cut(&status, room);
                let mut len = status.chars().count();
                let mut line = status.into_owned();
                if let Some(log) = log.filter(|l| !l.is_empty() && len + 3 < room) {
                    let log = cut(&log, room - len - 3);
                    len += 3 + log.chars().count();
                    line.push_str(" · ");
                    line.push_str(&self.paint.paint(Style::Dim, &log));
                }
                if line == self.drawn {
                    return;
                }
                let pad = self.shown.saturating_sub(len);
                self.shown = len;
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{line}{:pad$}", "");
                let _ = err.flush();
                self.drawn = line;
            }
            Mode::Periodic => {
                self.due = now + PERIODIC_EVERY;
                match log.filter(|l| !l.is_empty()) {
                    Some(log) => eprintln!("bgt: {status} · {log}"),
                    None => eprintln!("bgt: {status}"),
                }
            }
            Mode::Silent => {}
        }
    }

    /// Erases the line (on a terminal), leaving the cursor at its start.
    pub fn clear(&mut self) {
        if self.mode == Mode::Redraw && self.shown > 0 {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:w$}\r", "", w = self.shown);
            let _ = err.flush();
            self.shown = 0;
            self.drawn.clear();
        }
    }
}

impl Drop for LiveLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The latest line any of some tasks wrote, for a live line: the log
/// written last (by modification time) is read with a one-line tail, and
/// only again when it has grown, so a long wait costs next to nothing.
pub struct LatestLine {
    /// The tasks' directories, held open (see `dirfd.rs`).
    dirs: Vec<DirFd>,
    /// Each log as (index into `dirs`, stream).
    logs: Vec<(usize, Stream)>,
    /// Tail(1) of the lines with something in them; a filter also keeps the
    /// reader from folding the last line into a run of similar ones
    /// (`line 1` standing for `line 1`..`line 400`).
    request: Request,
    /// The log read last, its length then, and the line found.
    last: Option<(usize, u64, Option<String>)>,
    /// Logs are looked at no more often than this.
    next_look: Instant,
}

/// How often [`LatestLine`] looks at the logs: often enough to feel live,
/// rarely enough that a busy log costs little to follow.
const LOOK_EVERY: Duration = Duration::from_millis(500);

impl LatestLine {
    pub fn new(tasks: &[Task]) -> LatestLine {
        let dirs: Vec<DirFd> = tasks.iter().filter_map(|t| t.open_dir().ok()).collect();
        let logs = (0..dirs.len())
            .flat_map(|i| [(i, Stream::Stdout), (i, Stream::Stderr)])
            .collect();
        let request = Request {
            matcher: LineMatch::build("--filter", Some("."), None, &[], Case::Smart)
                .expect("a valid regex"),
            window: Window::Tail(1),
            max_lines: Some(1),
            ..Request::all(vec![])
        };
        LatestLine {
            dirs,
            logs,
            request,
            last: None,
            next_look: Instant::now(),
        }
    }

    /// The newest line, cleaned; `None` before anything was written.
    pub fn get(&mut self) -> Option<String> {
        let now = Instant::now();
        if now < self.next_look {
            return self.last.as_ref().and_then(|(_, _, line)| line.clone());
        }
        self.next_look = now + LOOK_EVERY;
        let newest = self
            .logs
            .iter()
            .enumerate()
            .filter_map(|(i, (dir, stream))| {
                let name = stream.file();
                let meta = self.dirs[*dir].stat_at(name).ok()?;
                let len = meta.st_size as u64;
                (len > 0).then(|| {
                    let when = (meta.st_mtime, meta.st_mtime_nsec);
                    (when, i, len)
                })
            })
            .max_by_key(|(when, i, _)| (*when, *i))?;
        let (_, i, len) = newest;
        if let Some((j, seen, line)) = &self.last
            && *j == i
            && *seen == len
        {
            return line.clone();
        }
        let (dir, stream) = self.logs[i];
        self.request.streams = vec![stream];
        let line = logread::read(&self.dirs[dir], &self.request)
            .ok()
            .and_then(|r| {
                r.streams
                    .into_iter()
                    .flat_map(|s| s.entries)
                    .next_back()
                    .map(|e| e.text)
            });
        self.last = Some((i, len, line.clone()));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_marks_what_it_drops() {
        assert_eq!(cut("npm run dev", 20), "npm run dev");
        assert_eq!(cut("npm run dev", 11), "npm run dev");
        assert_eq!(cut("npm run dev", 7), "npm ru…");
        assert_eq!(cut("café au lait", 5), "café…");
        assert_eq!(cut("abc", 1), "…");
        assert_eq!(cut("abc", 0), "");
    }

    #[test]
    fn paint_is_plain_when_off() {
        let off = Paint { on: false };
        assert_eq!(off.paint(Style::Bad, "exited 1"), "exited 1");
        assert_eq!(off.padded(Style::Bad, "x", 3), "x  ");
        let on = Paint { on: true };
        assert_eq!(on.paint(Style::Bad, "exited 1"), "\x1b[31mexited 1\x1b[0m");
        assert_eq!(on.padded(Style::Good, "ok", 4), "\x1b[32mok\x1b[0m  ");
        assert_eq!(on.paint(Style::Plain, "x"), "x");
    }

    #[test]
    fn highlight_marks_exactly_each_match() {
        let re = crate::logs::pattern::compile("--filter", "err(or)?", true).unwrap();
        let on = Paint { on: true };
        assert_eq!(
            on.highlight("an Error, then err", Some(&re)),
            "an \x1b[1;31mError\x1b[0m, then \x1b[1;31merr\x1b[0m"
        );
        assert_eq!(on.highlight("fine", Some(&re)), "fine");
        assert_eq!(Paint { on: false }.highlight("error", Some(&re)), "error");
        // Empty matches highlight nothing.
        let empty = crate::logs::pattern::compile("--filter", "^", true).unwrap();
        assert_eq!(on.highlight("error", Some(&empty)), "error");
    }

    #[test]
    fn seconds_tick_in_whole_seconds() {
        assert_eq!(seconds(Duration::from_millis(300)), "0s");
        assert_eq!(seconds(Duration::from_millis(12_900)), "12s");
        assert_eq!(seconds(Duration::from_secs(124)), "2m04s");
    }
}

//! `bgt output`: the smart log reader's command line (and `--follow`).

use crate::cli::OutputArgs;
use crate::info::TaskInfo;
use crate::logs::marks::Marks;
use crate::logs::options::{DEFAULT_MAX_LINES, ReadOptions};
use crate::logs::pattern::{Case, PRESETS};
use crate::logs::read::{self as logread, Entry, MatchContext, Request};
use crate::render;
use crate::report::OutputReport;
use crate::task::store::{Store, Task};
use crate::term::{Highlight, Out, Paint, Style};
use anyhow::Result;
use std::io::{BufWriter, Write};
use std::time::Duration;

/// The command line's read options (the agent tools build the same type).
pub fn options(args: &OutputArgs) -> ReadOptions {
    ReadOptions {
        streams: args.stream.streams(),
        filter: args.filter.clone(),
        exclude: args.exclude.clone(),
        presets: args.preset.clone(),
        case: if args.case_sensitive {
            Case::Sensitive
        } else if args.ignore_case {
            Case::Insensitive
        } else {
            Case::Smart
        },
        since: args.since,
        cursor: args.cursor.clone(),
        reset_cursor: args.reset_cursor,
        tail: args.tail,
        head: args.head,
        max_lines: args.max_lines.unwrap_or(DEFAULT_MAX_LINES),
        max_line_chars: args.max_line_chars,
        raw: args.raw,
        context: MatchContext {
            blocks: !args.no_blocks,
            before: args.before_context.or(args.context).unwrap_or(0),
            after: args.after_context.or(args.context).unwrap_or(0),
        },
    }
}

/// Builds a log request from the command line.
pub fn request(args: &OutputArgs) -> Result<Request> {
    options(args).request()
}

pub fn run(args: OutputArgs) -> Result<i32> {
    if args.list_presets {
        let mut out = std::io::stdout().lock();
        for p in PRESETS {
            writeln!(out, "{:<8} {}\n         {}", p.name, p.about, p.exclude)?;
        }
        return Ok(0);
    }
    let req = request(&args)?;
    let store = Store::open_default()?;
    let task = store.resolve(args.task.as_deref().unwrap_or_default())?;
    task.meta()?;
    if args.follow {
        // Uncapped unless --max-lines is given: then it caps the whole follow.
        let cap = args.max_lines.filter(|&n| n > 0);
        return follow(&task, req, cap);
    }
    if args.json {
        let result = logread::read(&task.open_dir()?, &req)?;
        super::print_json(&OutputReport::of(&TaskInfo::of(&task), &result))?;
        return Ok(0);
    }
    // Block-buffered: std's stdout is line-buffered, one write(2) per line.
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let marked = req.streams.len() > 1;
    let hl = Highlight::stdout(req.matcher.filter.as_ref());
    let mut print = |entry: Entry| render::output_entry(&mut out, &entry, marked, &hl);
    let result = logread::read_with(&task.open_dir()?, &req, None, &mut print)?;
    out.flush()?;
    summary(&render::output_summary(
        &result,
        args.filter.as_deref(),
        args.since,
    ));
    Ok(0)
}

/// The summary line on stderr, dimmed where stderr takes colour.
fn summary(text: &str) {
    eprintln!("{}", Paint::of(Out::Stderr).paint(Style::Dim, text));
}

/// Prints new matching lines as they arrive until the task ends and its
/// last byte is read; returns its exit status. With `cap`, stops after that
/// many entries and says so.
fn follow(task: &Task, mut req: Request, cap: Option<usize>) -> Result<i32> {
    let hl = Highlight::stdout(req.matcher.filter.as_ref());
    let mut positions = Marks::default();
    let mut backoff = crate::lifecycle::waiting::Backoff::new(Duration::from_millis(50));
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout());
    let marked = req.streams.len() > 1;
    let mut printed = 0;
    loop {
        // Look at liveness first: a read after the task ended sees all it wrote.
        let active = task.reload().phase().is_active();
        req.include_partial = !active;
        req.max_lines = cap.map(|cap| cap - printed);
        let mut got = 0;
        let mut print = |entry: Entry| {
            got += 1;
            render::output_entry(&mut out, &entry, marked, &hl)
        };
        let from = req.since.is_none().then_some(&mut positions);
        let result = logread::read_with(&task.open_dir()?, &req, from, &mut print)?;
        req.reset_cursor = false; // rewind once, not on every poll
        out.flush()?;
        for note in result.streams.iter().filter_map(render::dropped_note) {
            summary(&format!("-- {note}"));
        }
        printed += got;
        if let Some(cap) = cap
            && printed >= cap
            && result.streams.iter().any(|s| s.truncated)
        {
            summary(&format!(
                "-- stopped after {printed} lines: --max-lines {cap}"
            ));
            return Ok(0);
        }
        if !active {
            return Ok(task.reload().phase().exit_status());
        }
        if got > 0 {
            backoff.reset(Duration::from_millis(50));
        }
        std::thread::sleep(backoff.next_nap());
    }
}

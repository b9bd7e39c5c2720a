//! `bgt output`: the smart log reader's command line (and `--follow`).

use crate::cli::OutputArgs;
use crate::info::TaskInfo;
use crate::logread::{self, Entry, Marks, Request, Window};
use crate::pattern::{Case, LineMatch, PRESETS};
use crate::render;
use crate::store::{Store, Task};
use crate::term::{Highlight, Out, Paint, Style};
use anyhow::Result;
use std::io::{BufWriter, Write};
use std::time::Duration;

/// Builds a log request from the command line (also used by `wait`).
pub fn request(args: &OutputArgs) -> Result<Request> {
    let case = if args.case_sensitive {
        Case::Sensitive
    } else if args.ignore_case {
        Case::Insensitive
    } else {
        Case::Smart
    };
    let window = match (args.tail, args.head) {
        (Some(n), _) => Window::Tail(n),
        (_, Some(n)) => Window::Head(n),
        _ => Window::All,
    };
    Ok(Request {
        streams: args.stream.streams(),
        matcher: LineMatch::build(
            args.filter.as_deref(),
            args.exclude.as_deref(),
            &args.preset,
            case,
        )?,
        clean: !args.raw,
        max_line_chars: args.max_line_chars,
        window,
        max_lines: (args.max_lines > 0).then_some(args.max_lines),
        since: args.since.then(|| args.cursor.clone()),
        reset_cursor: args.reset_cursor,
        include_partial: true,
    })
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
        return follow(&task, req);
    }
    if args.json {
        let result = logread::read(&task.dir, &req)?;
        super::print_json(&render::output_json(&TaskInfo::of(&task), &result))?;
        return Ok(0);
    }
    // Block-buffered: std's stdout is line-buffered, one write(2) per line.
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let marked = req.streams.len() > 1;
    let hl = Highlight::stdout(req.matcher.filter.as_ref());
    let mut print = |entry: &Entry| render::output_entry(&mut out, entry, marked, &hl);
    let result = logread::read_with(&task.dir, &req, Some(&mut print))?;
    render::output_lines(&mut out, &result, &hl)?;
    out.flush()?;
    let summary = render::output_summary(&result, args.filter.as_deref(), args.since);
    eprintln!("{}", Paint::of(Out::Stderr).paint(Style::Dim, &summary));
    Ok(0)
}

/// Prints new matching lines as they arrive until the task ends; returns its exit status.
fn follow(task: &Task, mut req: Request) -> Result<i32> {
    let hl = Highlight::stdout(req.matcher.filter.as_ref());
    let mut positions = Marks::default();
    let mut backoff = crate::control::Backoff::new(Duration::from_millis(50));
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout());
    loop {
        // Look at liveness first: a read after the task ended sees all it wrote.
        let active = task.reload().phase().is_active();
        req.include_partial = !active;
        let result = match req.since {
            Some(_) => logread::read(&task.dir, &req)?,
            None => logread::read_from(&task.dir, &req, &mut positions)?,
        };
        req.reset_cursor = false; // rewind once, not on every poll
        let got = result.streams.iter().any(|s| !s.entries.is_empty());
        render::output_lines(&mut out, &result, &hl)?;
        out.flush()?;
        if !active {
            return Ok(TaskInfo::of(&task.reload()).exit_status());
        }
        if got {
            backoff.reset(Duration::from_millis(50));
        }
        std::thread::sleep(backoff.next_nap());
    }
}

//! Printing: aligned tables and detail views for people, JSON for programs.
//! Selecting lines happens in `logread`; this module only formats.

use crate::info::TaskInfo;
use crate::logs::read::{Entry, ReadResult, Stream};
use crate::task::store::TaskState;
use crate::term::{self, Highlight, Paint, Style};
use chrono::{DateTime, Local, Utc};
use std::io::{self, Write};
use std::time::Duration;

/// `48210` -> `48,210`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text from a task (its command, cwd, error) on one line, safe for a
/// terminal: newlines, `\r`, tabs, escape sequences and other control
/// characters are shown escaped (`\n`, `\r`, `\t`, `\e`, `\x07`,
/// `\u{9b}`), so a command cannot break the table, redraw the screen or
/// recolour it. Every text face uses this; JSON keeps the exact text.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(
        || "-".into(),
        |v| crate::duration::short(Duration::from_millis(v)),
    )
}

/// The style of a task's state word: green when it runs or exited 0, red
/// when it failed, yellow when someone ended it or its end is unknown.
pub fn state_style(t: &TaskInfo) -> Style {
    if t.error.is_some() {
        return Style::Bad;
    }
    match t.state {
        TaskState::Starting | TaskState::Queued => Style::Plain,
        TaskState::Paused | TaskState::Skipped => Style::Warn,
        // The main process may have exited while descendants run.
        TaskState::Running if t.exit_code.is_some_and(|c| c != 0) => Style::Warn,
        TaskState::Running => Style::Good,
        TaskState::Exited if t.exit_code == Some(0) => Style::Good,
        TaskState::Exited | TaskState::Signaled | TaskState::TimedOut | TaskState::Broken => {
            Style::Bad
        }
        TaskState::Stopped | TaskState::Lost => Style::Warn,
    }
}

/// A moment as a person scans a list: `12:03` today, `Nov 24` within the
/// last half year, `2023-11-24` before.
pub fn clock(when: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let (local, today) = (when.with_timezone(&Local), now.with_timezone(&Local));
    if local.date_naive() == today.date_naive() {
        local.format("%H:%M").to_string()
    } else if when <= now && now - when < chrono::Duration::days(183) {
        local.format("%b %-d").to_string()
    } else {
        local.format("%Y-%m-%d").to_string()
    }
}

/// The task table of `bgt status`, oldest first, columns aligned. With a
/// `width` (a terminal's), the command is cut with `…` so no row wraps;
/// `paint` colours state words by meaning and ids and labels steadily.
pub fn task_table(
    out: &mut dyn Write,
    tasks: &[TaskInfo],
    paint: Paint,
    width: Option<usize>,
) -> io::Result<()> {
    if tasks.is_empty() {
        return writeln!(out, "no tasks");
    }
    const HEADER: [&str; 10] = [
        "ID", "LABEL", "STATE", "EXIT", "STARTED", "RUNTIME", "LEFT", "PID", "LINES", "COMMAND",
    ];
    let now = Utc::now();
    let rows: Vec<([String; 10], Style)> = tasks
        .iter()
        .map(|t| {
            let state = match &t.error {
                Some(reason) => format!("broken: {}", one_line(reason)),
                None => t.state_text(),
            };
            let cells = [
                t.id.clone(),
                t.label.clone().unwrap_or_else(|| "-".into()),
                state,
                t.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                t.started.map_or_else(|| "-".into(), |s| clock(s, now)),
                ms(t.runtime_ms),
                ms(t.timeout_left_ms),
                t.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                format!("{}/{}", t.stdout_lines, t.stderr_lines),
                one_line(t.command.as_deref().unwrap_or_default()),
            ];
            (cells, state_style(t))
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for (cells, _) in &rows {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // LEFT says something only when some task has a timeout: without one,
    // its room goes to the command.
    const LEFT: usize = 6;
    // (Decided once: asked per cell, it made the table quadratic in its rows.)
    let left_shown = rows.iter().any(|(cells, _)| cells[LEFT] != "-");
    let shown = |i: usize| i != LEFT || left_shown;
    // Everything before the command, then what is left of the line for it.
    let before: usize = (0..9).filter(|i| shown(*i)).map(|i| widths[i] + 2).sum();
    let room = width.map(|w| w.saturating_sub(before).max(1));
    // Styles of the first columns (id, label, state); the rest is plain.
    let line = |cells: [&str; 10], styles: [Style; 3]| {
        let mut text = String::new();
        for (i, cell) in cells[..9].iter().enumerate().filter(|(i, _)| shown(*i)) {
            let style = styles.get(i).copied().unwrap_or(Style::Plain);
            text.push_str(&paint.padded(style, cell, widths[i] + 2));
        }
        let command = match room {
            Some(room) => term::cut(cells[9], room),
            None => cells[9].into(),
        };
        text.push_str(&command);
        text.trim_end().to_string()
    };
    writeln!(out, "{}", line(HEADER, [Style::Plain; 3]))?;
    for (cells, state) in &rows {
        let label = if cells[1] == "-" {
            Style::Plain
        } else {
            Style::Label
        };
        writeln!(
            out,
            "{}",
            line(
                cells.each_ref().map(String::as_str),
                [Style::Id, label, *state]
            )
        )?;
    }
    Ok(())
}

/// The detail view of `bgt status TASK`: the full command, and times in
/// local time with how long ago they were.
pub fn task_detail(out: &mut dyn Write, t: &TaskInfo, paint: Paint) -> io::Result<()> {
    let now = Utc::now();
    let time = |v: &Option<DateTime<Utc>>| {
        v.map_or_else(
            || "-".into(),
            |d| {
                let local = d.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
                match (now - d).to_std() {
                    Ok(ago) => format!("{local} ({} ago)", term::seconds(ago)),
                    Err(_) => local.to_string(),
                }
            },
        )
    };
    let label = t
        .label
        .as_deref()
        .map_or("-".into(), |l| paint.paint(Style::Label, l));
    let mut rows: Vec<(&str, String)> = vec![
        ("id", paint.paint(Style::Id, &t.id).into_owned()),
        ("label", label.into_owned()),
        (
            "state",
            paint.paint(state_style(t), &t.state_text()).into_owned(),
        ),
    ];
    if let Some(reason) = &t.error {
        rows.push(("error", one_line(reason)));
    }
    rows.extend([
        (
            "exit code",
            t.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
        ),
        (
            "command",
            one_line(t.command.as_deref().unwrap_or_default()),
        ),
        (
            "cwd",
            t.cwd
                .as_ref()
                .map_or_else(|| "-".into(), |p| one_line(&p.display().to_string())),
        ),
        ("pid", t.pid.map_or_else(|| "-".into(), |p| p.to_string())),
        (
            "supervisor",
            t.supervisor_pid
                .map_or_else(|| "-".into(), |p| p.to_string()),
        ),
        ("created", time(&t.created)),
        ("started", time(&t.started)),
        ("ended", time(&t.ended)),
        ("runtime", ms(t.runtime_ms)),
        ("timeout", ms(t.timeout_ms)),
        ("timeout left", ms(t.timeout_left_ms)),
        ("stdout", format!("{} lines", thousands(t.stdout_lines))),
        ("stderr", format!("{} lines", thousands(t.stderr_lines))),
        ("dir", one_line(&t.dir.display().to_string())),
    ]);
    for (key, value) in rows {
        writeln!(out, "{key:<13} {value}")?;
    }
    Ok(())
}

/// The selected lines as text: stderr lines marked when both streams show,
/// collapsed runs followed by `… N similar lines`, `--` between groups of
/// lines around matches (markers such as `… 6 library frames` are text).
pub fn output_lines(out: &mut dyn Write, result: &ReadResult, hl: &Highlight) -> io::Result<()> {
    let marked = result.streams.len() > 1;
    for s in &result.streams {
        for e in &s.entries {
            output_entry(out, e, marked, hl)?;
        }
    }
    Ok(())
}

/// One entry as text (see [`output_lines`]): the filter's matches
/// highlighted and the `stderr│` marker dim when stdout takes colour.
pub fn output_entry(
    out: &mut dyn Write,
    e: &Entry,
    marked: bool,
    hl: &Highlight,
) -> io::Result<()> {
    let prefix = if marked && e.stream == Stream::Stderr {
        hl.paint.paint(Style::Dim, "stderr│ ")
    } else {
        "".into()
    };
    if e.gap {
        writeln!(out, "{prefix}--")?;
    }
    // Written, not formatted: this runs once per line of every read.
    out.write_all(prefix.as_bytes())?;
    out.write_all(hl.line(&e.text).as_bytes())?;
    out.write_all(b"\n")?;
    if e.similar > 0 {
        let s = if e.similar == 1 { "" } else { "s" };
        let note = format!("  … {} similar line{s}", thousands(e.similar));
        writeln!(out, "{prefix}{}", hl.paint.paint(Style::Dim, &note))?;
    }
    Ok(())
}

/// `earlier output dropped: 1.2 GiB (12,345 lines of stdout)` when a read's
/// range reached what a bounded log freed (`--max-log-size`): the one
/// wording of the CLI summary and the MCP text.
pub fn dropped_note(s: &crate::logs::read::StreamResult) -> Option<String> {
    let missed = s.missed?;
    Some(format!(
        "earlier output dropped: {} ({} lines of {})",
        crate::logs::bounded::human(missed.offset),
        thousands(missed.line),
        s.stream.name()
    ))
}

/// The one-line summary printed on stderr after `bgt output`, e.g.
/// `-- 12 of 48,210 lines (stdout) · filter ERROR|WARN · cursor 48,210 · 3 more matching, run again with --since`.
pub fn output_summary(result: &ReadResult, filter: Option<&str>, since: bool) -> String {
    let mut parts = Vec::new();
    let counts: Vec<String> = result
        .streams
        .iter()
        .map(|s| {
            // `total_lines` counts complete lines: an unfinished last line
            // shown is said apart, so the counts never exceed the total.
            let unfinished = if s.partial {
                " + 1 unfinished line"
            } else {
                ""
            };
            format!(
                "{} of {} lines{unfinished} ({})",
                thousands(s.returned - u64::from(s.partial)),
                thousands(s.total_lines),
                s.stream.name()
            )
        })
        .collect();
    parts.push(counts.join(", "));
    if let Some(f) = filter {
        parts.push(format!("filter {f}"));
    }
    if since {
        let cursors: Vec<String> = result
            .streams
            .iter()
            .map(|s| thousands(s.cursor.line))
            .collect();
        parts.push(format!("cursor {}", cursors.join("/")));
    }
    parts.extend(paging_notes(result, since, &CLI_WORDS));
    format!("-- {}", parts.join(" · "))
}

/// How a face names paging and cursors: the CLI speaks in flags, the agent
/// tools in their parameters; what is said, and when, is the same.
pub struct PagingWords {
    /// Follows the count of matching lines not returned.
    pub more: &'static str,
    /// How to read the rest when the read was a `since` read...
    pub again: &'static str,
    /// ...and when it was not.
    pub narrow: &'static str,
    /// Follows a stream's name when its cursor started over.
    pub reset: &'static str,
}

const CLI_WORDS: PagingWords = PagingWords {
    more: "more matching,",
    again: "run again with --since",
    narrow: "narrow with --filter, or page with --since",
    reset: "log was truncated or replaced: cursor reset",
};

/// The notes after a read's counts: cursors that started over, output a
/// bounded log dropped before it was read, and matching lines left unread.
pub fn paging_notes(result: &ReadResult, since: bool, words: &PagingWords) -> Vec<String> {
    let mut notes: Vec<String> = result
        .streams
        .iter()
        .filter(|s| s.cursor_reset)
        .map(|s| format!("{} {}", s.stream.name(), words.reset))
        .collect();
    notes.extend(result.streams.iter().filter_map(dropped_note));
    let more = result.remaining();
    if more > 0 {
        let hint = if since { words.again } else { words.narrow };
        notes.push(format!("{} {} {hint}", thousands(more), words.more));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(48210), "48,210");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn clock_shows_the_time_today_and_the_date_before() {
        let now = Local::now();
        let at = |h, m| {
            now.with_time(chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap())
                .unwrap()
                .with_timezone(&Utc)
        };
        let now = now.with_timezone(&Utc);
        assert_eq!(clock(at(12, 0), now), "12:00");
        let days = |n| now - chrono::Duration::days(n);
        let month_day = days(10).with_timezone(&Local).format("%b %-d").to_string();
        assert_eq!(clock(days(10), now), month_day);
        assert!(
            !month_day.contains("  ") && month_day.len() <= 6,
            "{month_day}"
        );
        let old = days(400)
            .with_timezone(&Local)
            .format("%Y-%m-%d")
            .to_string();
        assert_eq!(clock(days(400), now), old);
    }

    #[test]
    fn state_words_are_coloured_by_meaning() {
        use crate::task::store::TaskState::*;
        for (state, code, style) in [
            (Running, None, Style::Good),
            (Running, Some(1), Style::Warn),
            (Starting, None, Style::Plain),
            (Exited, Some(0), Style::Good),
            (Exited, Some(2), Style::Bad),
            (Signaled, Some(137), Style::Bad),
            (TimedOut, Some(143), Style::Bad),
            (Stopped, Some(143), Style::Warn),
            (Lost, None, Style::Warn),
        ] {
            let mut t = seed();
            t.state = state;
            t.exit_code = code;
            assert_eq!(state_style(&t), style, "{state:?} {code:?}");
        }
        let mut broken = seed();
        broken.error = Some("meta.json is empty".into());
        assert_eq!(state_style(&broken), Style::Bad);
    }

    #[test]
    fn the_table_cuts_the_command_to_the_width_and_only_colours_with_paint() {
        let mut t = seed();
        t.command = Some(format!("echo {}", "x".repeat(100)));
        t.label = Some("api".into());
        let table = |paint, width| {
            let mut out = Vec::new();
            task_table(&mut out, std::slice::from_ref(&t), paint, width).unwrap();
            String::from_utf8(out).unwrap()
        };
        let cut = table(Paint { on: false }, Some(60));
        for line in cut.lines() {
            assert!(line.chars().count() <= 60, "{cut}");
        }
        assert!(cut.lines().nth(1).unwrap().ends_with("ec…"), "{cut}");
        let full = table(Paint { on: false }, None);
        assert!(full.contains(&"x".repeat(100)) && !full.contains('\x1b'));
        let coloured = table(Paint { on: true }, Some(60));
        assert!(coloured.contains("\x1b[32mrunning\x1b[0m"), "{coloured:?}");
        assert!(coloured.contains("\x1b[36mapi\x1b[0m"), "{coloured:?}");
        // Escapes do not shift the columns.
        let strip = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
        assert_eq!(strip.replace_all(&coloured, ""), cut);
    }

    fn seed() -> TaskInfo {
        TaskInfo {
            task_id: "t-1".into(),
            id: "t-1".into(),
            label: None,
            state: TaskState::Running,
            exit_code: None,
            signal: None,
            descendants: 0,
            command: None,
            argv: None,
            cwd: None,
            pid: None,
            supervisor_pid: None,
            created: None,
            started: None,
            ended: None,
            runtime_ms: None,
            timeout_ms: None,
            timeout_left_ms: None,
            stdout_lines: 0,
            stderr_lines: 0,
            dir: "/nowhere".into(),
            error: None,
            queue: None,
            after: Vec::new(),
            after_ok: false,
            waiting_for: None,
            reason: None,
            paused_ms: 0,
            max_log_size: None,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            stdout_dropped_lines: 0,
            stderr_dropped_lines: 0,
            log_limit_note: None,
        }
    }

    #[test]
    fn one_line_escapes_control_characters() {
        assert_eq!(one_line("npm run dev"), "npm run dev");
        assert_eq!(
            one_line("a\nb\rc\td\x1b[31me\x07f\u{9b}g\u{7f}"),
            "a\\nb\\rc\\td\\e[31me\\x07f\\u{9b}g\\x7f"
        );
        assert_eq!(one_line("grep 'a\\|b' café"), "grep 'a\\|b' café");
    }
}

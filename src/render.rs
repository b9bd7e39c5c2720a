//! Printing: aligned tables and detail views for people, JSON for programs.
//! Selecting lines happens in `logread`; this module only formats.

use crate::info::TaskInfo;
use crate::logread::{Entry, ReadResult, Stream, StreamResult};
use serde_json::{Value, json};
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

/// The task table of `bgt status`, oldest first, columns aligned.
pub fn task_table(out: &mut dyn Write, tasks: &[TaskInfo]) -> io::Result<()> {
    if tasks.is_empty() {
        return writeln!(out, "no tasks");
    }
    let header = [
        "ID", "LABEL", "STATE", "EXIT", "RUNTIME", "LEFT", "PID", "LINES", "COMMAND",
    ];
    let rows: Vec<[String; 9]> = tasks
        .iter()
        .map(|t| {
            let state = match &t.error {
                Some(reason) => format!("broken: {}", one_line(reason)),
                None => t.state_text(),
            };
            [
                t.id.clone(),
                t.label.clone().unwrap_or_else(|| "-".into()),
                state,
                t.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                ms(t.runtime_ms),
                ms(t.timeout_left_ms),
                t.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                format!("{}/{}", t.stdout_lines, t.stderr_lines),
                one_line(t.command.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text.trim_end().to_string()
    };
    writeln!(out, "{}", line(&header.map(String::from)))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

/// The detail view of `bgt status TASK`.
pub fn task_detail(out: &mut dyn Write, t: &TaskInfo) -> io::Result<()> {
    let time = |v: &Option<chrono::DateTime<chrono::Utc>>| {
        v.map_or_else(
            || "-".into(),
            |d| {
                d.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            },
        )
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("id", t.id.clone()),
        ("label", t.label.clone().unwrap_or_else(|| "-".into())),
        ("state", t.state_text()),
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

/// Per-stream metadata in JSON (documented schema).
pub fn stream_meta(s: &StreamResult) -> Value {
    json!({
        "total_lines": s.total_lines,
        "cursor": s.cursor.line,
        "cursor_offset": s.cursor.offset,
        "returned": s.returned,
        "matched": s.matched,
        "truncated": s.truncated,
        "remaining": s.remaining,
        "cursor_reset": s.cursor_reset,
    })
}

/// The whole `bgt output --json` document.
pub fn output_json(info: &TaskInfo, result: &ReadResult) -> Value {
    let mut lines = Vec::new();
    for s in &result.streams {
        for e in &s.entries {
            let mut line = json!({
                "stream": e.stream.name(),
                "line": e.line,
                "text": e.text,
                "similar": e.similar,
                "partial": e.partial,
                "context": e.context,
            });
            if e.folded > 0 {
                line["folded"] = json!(e.folded);
            }
            lines.push(line);
        }
    }
    let meta = |stream: Stream| {
        result
            .streams
            .iter()
            .find(|s| s.stream == stream)
            .map(stream_meta)
    };
    json!({
        "task": info.id,
        "label": info.label,
        "state": info.state,
        "exit_code": info.exit_code,
        "lines": lines,
        "stdout_meta": meta(Stream::Stdout),
        "stderr_meta": meta(Stream::Stderr),
    })
}

/// The selected lines as text: stderr lines marked when both streams show,
/// collapsed runs followed by `… N similar lines`, `--` between groups of
/// lines around matches (markers such as `… 6 library frames` are text).
pub fn output_lines(out: &mut dyn Write, result: &ReadResult) -> io::Result<()> {
    let marked = result.streams.len() > 1;
    for s in &result.streams {
        for e in &s.entries {
            output_entry(out, e, marked)?;
        }
    }
    Ok(())
}

/// One entry as text (see [`output_lines`]).
pub fn output_entry(out: &mut dyn Write, e: &Entry, marked: bool) -> io::Result<()> {
    let prefix = if marked && e.stream == Stream::Stderr {
        "stderr│ "
    } else {
        ""
    };
    if e.gap {
        writeln!(out, "{prefix}--")?;
    }
    writeln!(out, "{prefix}{}", e.text)?;
    if e.similar > 0 {
        let s = if e.similar == 1 { "" } else { "s" };
        writeln!(out, "{prefix}  … {} similar line{s}", thousands(e.similar))?;
    }
    Ok(())
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
    for s in result.streams.iter().filter(|s| s.cursor_reset) {
        parts.push(format!(
            "{} log was truncated or replaced: cursor reset",
            s.stream.name()
        ));
    }
    let more: u64 = result.streams.iter().filter_map(|s| s.remaining).sum();
    if more > 0 {
        let hint = if since {
            "run again with --since"
        } else {
            "narrow with --filter, or page with --since"
        };
        parts.push(format!("{} more matching, {hint}", thousands(more)));
    }
    format!("-- {}", parts.join(" · "))
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
    fn one_line_escapes_control_characters() {
        assert_eq!(one_line("npm run dev"), "npm run dev");
        assert_eq!(
            one_line("a\nb\rc\td\x1b[31me\x07f\u{9b}g\u{7f}"),
            "a\\nb\\rc\\td\\e[31me\\x07f\\u{9b}g\\x7f"
        );
        assert_eq!(one_line("grep 'a\\|b' café"), "grep 'a\\|b' café");
    }
}

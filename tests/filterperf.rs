//! The filter's fast path (a chunk search that skips lines far from any
//! match, and replays only what a match's block or context needs) reads
//! exactly what reading every line one by one reads.

use crate::util::{Env, whole_stdout};

/// Reads `content` twice with `args`: once as it is (plain chunks: the fast
/// path) and once with every line starting with a colour reset (cleaning
/// changes every chunk, so every line is read one by one, whatever read it
/// falls in). After cleaning both logs are the same text, so the outputs
/// must be the same. `--raw` reads no cleaning, so it always takes the fast
/// path: it is not a case here.
fn fast_path_agrees(content: &str, arg_sets: &[&[&str]]) {
    for args in arg_sets {
        agrees_with(content, args);
    }
}

fn agrees_with(content: &str, args: &[&str]) {
    let env = Env::new();
    assert!(
        !args.contains(&"--raw"),
        "a raw read has no line-by-line twin"
    );
    let fast = env.task_printing(format!("boot\n{content}"));
    let slow = env.task_printing(
        format!("boot\n{content}")
            .split_inclusive('\n')
            .map(|line| format!("\x1b[0m{line}"))
            .collect::<String>(),
    );
    let read = |id: &str, json: bool| {
        let mut all = whole_stdout(id, args);
        if json {
            all.push("--json");
        }
        env.ok(&all)
    };
    let text = read(&fast, false);
    assert_eq!(text, read(&slow, false), "{args:?}");
    assert!(text.contains("ERROR"), "the case has matches: {text}");
    // Line numbers too (the text shows them only through the `--` marks).
    let lines = |id: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&read(id, true)).unwrap()["lines"].clone()
    };
    assert_eq!(lines(&fast), lines(&slow), "{args:?} (JSON)");
}

fn quiet(lines: usize, tag: &str) -> String {
    (0..lines)
        .map(|i| format!("GET /api/{tag}/{i} 200 1.0 ms - 12\n"))
        .collect()
}

#[test]
fn a_match_far_from_any_block_reads_as_line_by_line() {
    let log = format!(
        "{}ERROR one\n{}ERROR two\n{}",
        quiet(500, "a"),
        quiet(300, "b"),
        quiet(50, "c")
    );
    fast_path_agrees(
        &log,
        &[
            &[],
            &["--filter", "ERROR"],
            &["--filter", "ERROR", "-B", "3"],
            &["--filter", "ERROR", "-C", "2"],
        ],
    );
}

#[test]
fn a_match_inside_a_block_that_began_in_skipped_lines_reads_as_line_by_line() {
    // The block opens 40 lines before the match (an exception, frames):
    // the replay must see its start although nothing there matches.
    let frames: String = (0..40)
        .map(|i| format!("    at f{i} (/app/src/x.js:{i}:1)\n"))
        .collect();
    let log = format!(
        "{}TypeError: boom\n{frames}    at ERROR handler (/app/src/y.js:1:1)\n{}ERROR alone\n{}",
        quiet(400, "a"),
        quiet(200, "b"),
        quiet(20, "c")
    );
    fast_path_agrees(
        &log,
        &[
            &["--filter", "ERROR"],
            &["--filter", "error", "-B", "2"],
            &["--filter", "ERROR"],
        ],
    );
}

#[test]
fn matches_close_together_read_as_line_by_line() {
    let mut log = String::new();
    for i in 0..30 {
        log += &quiet(i % 7, "q");
        log += &format!("ERROR {i}\n");
        if i % 5 == 0 {
            log += "Error: down\n    at g (/app/src/z.ts:3:4)\n";
        }
    }
    log += &quiet(130, "t");
    fast_path_agrees(
        &log,
        &[
            &["--filter", "ERROR"],
            &["--filter", "ERROR", "-A", "1"],
            &["--filter", "ERROR|down", "-B", "4"],
        ],
    );
}

#[test]
fn a_match_just_after_a_line_across_two_reads_keeps_its_before_context() {
    // 100-byte lines: one crosses each 64 KiB (and 1 MiB) read boundary,
    // and the line after it matches. The crossing line and the one before
    // it (skipped by the chunk search) are its before-context.
    let line = |i: usize| format!("GET /api/q/{i:06} 200 {}\n", "x".repeat(100 - 23));
    let crossing = [65536 / 100, (1 << 20) / 100];
    let mut log = String::new();
    for i in 0..(crossing[1] + 50) {
        if crossing.iter().any(|&c| i == c + 1) {
            log += &format!("ERROR {i:06} {}\n", "y".repeat(100 - 14));
        } else {
            log += &line(i);
        }
    }
    assert_eq!(log.len() % 100, 0);
    let env = Env::new();
    let id = env.task_printing(&log);
    let out = env.ok(&whole_stdout(&id, &["--filter", "ERROR", "-B", "2"]));
    for c in crossing {
        for i in [c - 1, c] {
            assert!(out.contains(line(i).trim_end()), "line {i} missing:\n{out}");
        }
    }
}

#[test]
fn block_starts_at_the_edge_of_the_replay_window_read_as_line_by_line() {
    // A match far after the previous one looks at the bytes before it at
    // once (about 8 KiB) before walking back line by line. A match inside a
    // trace whose header lies just inside or outside the lines replayed,
    // in short lines (the probe holds them all) and in long ones (it does
    // not), must read as a line-by-line read does; so must a match whose
    // previous one lies inside the probe, and one after a closed trace.
    let padded = |lines: usize, width: usize| -> String {
        (0..lines)
            .map(|i| format!("GET /p/{i:05} 200 {}\n", "x".repeat(width)))
            .collect()
    };
    let frames = |lines: usize, width: usize| -> String {
        (0..lines)
            .map(|i| format!("    at f{i}{} (/app/src/x.js:{i}:1)\n", "y".repeat(width)))
            .collect()
    };
    let mut log = String::new();
    for (i, depth) in [30, 59, 60, 61, 100, 118, 119, 120, 121, 150]
        .into_iter()
        .enumerate()
    {
        for width in [10, 40, 120] {
            log += &padded(300, width);
            log += &format!("TypeError: boom {i}\n{}", frames(depth, width));
            log += &format!("    at ERROR handler {i} {width} (/app/src/y.js:1:1)\n");
            log += &padded(20, width);
            log += &format!("ERROR near {i} {width}\n");
            log += &padded(depth, width);
            log += &format!("ERROR after {i} {width}\n");
        }
    }
    fast_path_agrees(
        &log,
        &[
            // Case-sensitive: the trace's header does not match, its frame does.
            &["--filter", "ERROR", "--case-sensitive"],
            &["--filter", "ERROR", "--case-sensitive", "-B", "3"],
            &["--filter", "ERROR", "--case-sensitive", "-C", "1"],
            &["--filter", "ERROR"],
        ],
    );
}

#[test]
fn a_match_deep_in_a_trace_of_long_lines_without_block_words_reads_as_line_by_line() {
    // Go frames hold none of the words that may open a block, and at 300+
    // bytes the 8 KiB before the match hold fewer lines than the replay
    // needs: the window must be found line by line, and it reaches the
    // panic that opens the block. The prefix puts it past the first read.
    let prefix: String = (0..5000)
        .map(|i| format!("GET /pre/{i} 200 ok\n"))
        .collect();
    let frames: String = (0..25)
        .map(|i| {
            format!(
                "main.handler{i}{}()\n\t/app/main.go:{i} +0x1d\n",
                "z".repeat(300)
            )
        })
        .collect();
    let log = format!(
        "{prefix}{}panic: runtime error: index out of range\n\ngoroutine 1 [running]:\n{frames}main.ERROR()\n\t/app/main.go:99 +0x1d\n{}",
        quiet(400, "a"),
        quiet(400, "b")
    );
    fast_path_agrees(
        &log,
        &[
            &["--filter", "ERROR", "--case-sensitive"],
            &["--filter", "ERROR", "--case-sensitive", "-B", "2"],
        ],
    );
}

#[test]
fn a_large_log_searched_on_two_cores_reads_as_line_by_line() {
    // Past 4 MiB an ended task's log is mapped in 4 MiB windows, and with
    // a filter a second thread searches windows ahead of the reader (on a
    // machine with two cores or more). At the window edges: a matching line
    // across one, a matching line starting exactly at one, and a trace
    // whose header lies before one and whose matching frame lies after it.
    const WINDOW: usize = 4 << 20;
    let mut log = String::from("boot\n");
    let mut i = 0;
    // Quiet lines up to exactly `to` bytes (`to` a line start).
    let mut pad_to = |log: &mut String, to: usize| {
        while log.len() + 200 < to {
            log.push_str(&format!("GET /api/q/{i} 200 1.0 ms - 12\n"));
            i += 1;
        }
        let fill = to - log.len() - "GET /fill \n".len();
        log.push_str(&format!("GET /fill {}\n", "x".repeat(fill)));
        assert_eq!(log.len(), to);
    };
    pad_to(&mut log, WINDOW - 30);
    log.push_str(&format!("ERROR across the first edge {}\n", "y".repeat(60)));
    pad_to(&mut log, 2 * WINDOW);
    log.push_str("ERROR at the second edge\n");
    pad_to(&mut log, 3 * WINDOW - 400);
    log.push_str("TypeError: boom\n");
    for f in 0..20 {
        log.push_str(&format!("    at f{f} (/app/src/x.js:{f}:1)\n"));
    }
    log.push_str("    at ERROR handler (/app/src/y.js:1:1)\n");
    let end = log.len() + 300_000;
    pad_to(&mut log, end);
    log.push_str("ERROR last\n");
    log.push_str(&quiet(10, "end"));
    assert!(log.len() > 3 * WINDOW);
    fast_path_agrees(
        &log,
        &[
            &["--filter", "ERROR", "--case-sensitive", "-B", "2"],
            &["--filter", "error"],
        ],
    );
}

#[test]
fn an_unfinished_matching_last_line_brings_its_context() {
    // The last line has no newline yet: read apart from the chunk search,
    // it must still catch up to the lines before it.
    let log = format!("{}X\nY1\nY2\npartial ERROR", quiet(300, "a"));
    fast_path_agrees(&log, &[&["--filter", "ERROR", "-B", "3"]]);
    let env = Env::new();
    let id = env.task_printing(&log);
    let out = env.ok(&[
        "output", &id, "--stream", "stdout", "--filter", "ERROR", "-B", "3",
    ]);
    assert!(out.starts_with("X\nY1\nY2\npartial ERROR\n"), "{out}");
}

#[test]
fn a_filter_anchored_with_multi_line_off_still_matches_every_line() {
    // `(?-m)^` anchors at the start of a run of lines searched at once;
    // such a filter is matched line by line, where `^` is each line's start.
    let env = Env::new();
    let log: String = (0..50)
        .map(|i| format!("2026 line {i}\nother {i}\n"))
        .collect();
    let id = env.task_printing(&log);
    let doc = env.output_json(&[&id, "--max-lines", "0", "--filter", "(?-m)^2026", "--raw"]);
    assert_eq!(doc["lines"].as_array().unwrap().len(), 50, "{doc}");
}

#[test]
fn concurrent_filtered_reads_of_a_large_log_agree() {
    // Each read maps windows and searches them on a helper thread; eight at
    // once share the mapping slots and the SIGBUS handler, and each must
    // still give the whole answer.
    let mut log = String::new();
    let mut i = 0;
    while log.len() < 9 << 20 {
        log += &quiet(500, "q");
        log += &format!("ERROR {i}\nError: down {i}\n    at g (/app/src/z.ts:3:4)\n");
        i += 1;
    }
    let env = Env::new();
    let id = env.task_printing(&log);
    let args = whole_stdout(&id, &["--filter", "ERROR"]);
    let alone = env.ok(&args);
    assert_eq!(alone.matches("ERROR ").count(), i, "{alone}");
    let readers: Vec<_> = (0..8)
        .map(|_| {
            env.cmd()
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for reader in readers {
        let out = reader.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), alone);
    }
}

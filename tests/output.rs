//! The smart log reader on real task logs.

use crate::util::{Env, poll_until};
use std::io::Write;
use std::time::Duration;

/// Distinct lines `line 1 b`, `line 2 c`, ... (letters differ, so cleaning
/// does not collapse them as near-identical).
fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("{}\n", line(i))).collect()
}

fn line(i: usize) -> String {
    let mut word = String::new();
    let mut k = i;
    loop {
        word.insert(0, (b'a' + (k % 26) as u8) as char);
        k /= 26;
        if k == 0 {
            break;
        }
    }
    format!("line {i} {word}")
}

/// A running task that copies `input.txt` to its stdout as it grows.
fn growing(env: &Env) -> (String, std::path::PathBuf) {
    let input = env.work().join("input.txt");
    std::fs::write(&input, "").unwrap();
    let id = env.start(&["tail", "-n", "+1", "-f", input.to_str().unwrap()]);
    (id, input)
}

fn append(env: &Env, id: &str, input: &std::path::Path, text: &str) {
    let before = env.status(id)["stdout_lines"].as_u64().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(input)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let want = before + text.matches('\n').count() as u64;
    poll_until(Duration::from_secs(10), || {
        env.status(id)["stdout_lines"].as_u64().unwrap() >= want
    });
}

#[test]
fn filter_is_case_insensitive_and_understands_grep_pipes() {
    let env = Env::new();
    let id = env.task_printing("ok\nERROR one\nError: two\nwarn three\ninfo\n");
    let doc = env.output_json(&[&id, "--filter", r"ERROR\|WARN"]);
    assert_eq!(Env::texts(&doc), ["ERROR one", "Error: two", "warn three"]);
    let doc = env.output_json(&[&id, "--filter", "ERROR", "--case-sensitive"]);
    assert_eq!(Env::texts(&doc), ["ERROR one"]);
}

#[test]
fn exclude_applies_before_filter_and_is_case_sensitive() {
    let env = Env::new();
    let id = env.task_printing("ERROR real\nERROR deprecated thing\nerror DEPRECATED\n");
    let doc = env.output_json(&[&id, "--filter", "error", "--exclude", "deprecated"]);
    assert_eq!(Env::texts(&doc), ["ERROR real", "error DEPRECATED"]);
    let doc = env.output_json(&[
        &id,
        "--filter",
        "error",
        "--exclude",
        "deprecated",
        "--ignore-case",
    ]);
    assert_eq!(Env::texts(&doc), ["ERROR real"]);
}

#[test]
fn invalid_regex_is_a_usage_error_naming_it() {
    let env = Env::new();
    let id = env.task_printing("x\n");
    let err = env.fails(&["output", &id, "--filter", "ERROR("], 2);
    assert_eq!(
        err.trim(),
        "bgt: invalid --filter regex 'ERROR(': unclosed group at position 5"
    );
    let err = env.fails(&["output", &id, "--exclude", "a[b"], 2);
    assert!(
        err.starts_with("bgt: invalid --exclude regex 'a[b'"),
        "{err}"
    );
    let err = env.fails(&["output", &id, "--preset", "nosuch"], 2);
    assert!(err.contains("unknown preset 'nosuch'"), "{err}");
}

#[test]
fn unknown_task_is_a_clear_error() {
    let env = Env::new();
    let err = env.fails(&["output", "t-000000"], 1);
    assert_eq!(
        err.trim(),
        "bgt: no task matches 't-000000' (see `bgt status`)"
    );
}

#[test]
fn since_twice_returns_only_new_lines() {
    let env = Env::new();
    let (id, input) = growing(&env);
    append(&env, &id, &input, "a\nb\n");
    assert_eq!(Env::texts(&env.output_json(&[&id, "--since"])), ["a", "b"]);
    assert!(Env::texts(&env.output_json(&[&id, "--since"])).is_empty());
    append(&env, &id, &input, "c\n");
    let doc = env.output_json(&[&id, "--since"]);
    assert_eq!(Env::texts(&doc), ["c"]);
    assert_eq!(doc["stdout_meta"]["total_lines"], 3);
    assert_eq!(doc["stdout_meta"]["cursor"], 3);
}

#[test]
fn since_with_a_cap_continues_without_loss() {
    let env = Env::new();
    let id = env.task_printing(numbered(25));
    let mut seen = Vec::new();
    for call in 0..3 {
        let doc = env.output_json(&[&id, "--since", "--max-lines", "10", "--stream", "stdout"]);
        let meta = &doc["stdout_meta"];
        seen.extend(Env::texts(&doc));
        match call {
            0 => {
                assert_eq!(meta["truncated"], true);
                assert_eq!(meta["remaining"], 15);
                assert_eq!(meta["cursor"], 10);
                assert_eq!(meta["matched"], 25);
            }
            1 => assert_eq!(meta["remaining"], 5),
            _ => {
                assert_eq!(meta["truncated"], false);
                assert_eq!(meta["remaining"], 0);
                assert_eq!(meta["cursor"], 25);
            }
        }
    }
    let expected: Vec<String> = (1..=25).map(line).collect();
    assert_eq!(seen, expected);
}

#[test]
fn capped_filtered_since_resumes_after_the_last_returned_line() {
    let env = Env::new();
    let text: String = (1..=30)
        .map(|i| {
            if i % 3 == 0 {
                format!("ERROR {i}\n")
            } else {
                format!("info {i}\n")
            }
        })
        .collect();
    let id = env.task_printing(text);
    let first = env.output_json(&[&id, "--since", "--filter", "ERROR", "--max-lines", "4"]);
    assert_eq!(
        Env::texts(&first),
        ["ERROR 3", "ERROR 6", "ERROR 9", "ERROR 12"]
    );
    assert_eq!(first["stdout_meta"]["cursor"], 12);
    assert_eq!(first["stdout_meta"]["remaining"], 6);
    let second = env.output_json(&[&id, "--since", "--filter", "ERROR", "--max-lines", "0"]);
    assert_eq!(
        Env::texts(&second),
        [
            "ERROR 15", "ERROR 18", "ERROR 21", "ERROR 24", "ERROR 27", "ERROR 30"
        ]
    );
}

#[test]
fn partial_trailing_line_is_shown_but_not_consumed() {
    let env = Env::new();
    let id = env.task_printing("one\ntwo\npart");
    let doc = env.output_json(&[&id, "--since", "--stream", "stdout"]);
    assert_eq!(Env::texts(&doc), ["one", "two", "part"]);
    assert_eq!(doc["lines"][2]["partial"], true);
    assert_eq!(doc["stdout_meta"]["total_lines"], 2);
    assert_eq!(doc["stdout_meta"]["cursor"], 2);
    let again = env.output_json(&[&id, "--since", "--stream", "stdout"]);
    assert_eq!(Env::texts(&again), ["part"]);
}

#[test]
fn truncated_log_resets_the_cursor_and_says_so() {
    let env = Env::new();
    let id = env.task_printing(numbered(5));
    env.output_json(&[&id, "--since"]);
    let log = env.task_dir(&id).join("stdout.log");
    std::fs::write(&log, "fresh\n").unwrap();
    let doc = env.output_json(&[&id, "--since"]);
    assert_eq!(Env::texts(&doc), ["fresh"]);
    assert_eq!(doc["stdout_meta"]["cursor_reset"], true);
    let out = env.run(&["output", &id, "--since"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cursor"),
        "summary mentions the cursor"
    );
}

#[test]
fn named_cursors_are_independent_and_resettable() {
    let env = Env::new();
    let id = env.task_printing(numbered(3));
    assert_eq!(
        Env::texts(&env.output_json(&[&id, "--since", "--cursor", "a"])).len(),
        3
    );
    assert_eq!(
        Env::texts(&env.output_json(&[&id, "--since", "--cursor", "b"])).len(),
        3
    );
    assert!(Env::texts(&env.output_json(&[&id, "--since", "--cursor", "a"])).is_empty());
    let doc = env.output_json(&[&id, "--since", "--cursor", "a", "--reset-cursor"]);
    assert_eq!(Env::texts(&doc).len(), 3);
    env.fails(&["output", &id, "--since", "--cursor", "../evil"], 2);
}

#[test]
fn tail_and_head() {
    let env = Env::new();
    let id = env.task_printing(numbered(100));
    let doc = env.output_json(&[&id, "--tail", "3"]);
    assert_eq!(Env::texts(&doc), [line(98), line(99), line(100)]);
    assert_eq!(doc["lines"][0]["line"], 98);
    assert_eq!(doc["stdout_meta"]["total_lines"], 100);
    let doc = env.output_json(&[&id, "--head", "2"]);
    assert_eq!(Env::texts(&doc), [line(1), line(2)]);
    let doc = env.output_json(&[&id, "--tail", "2", "--filter", "^line [1-5] "]);
    assert_eq!(Env::texts(&doc), [line(4), line(5)]);
    assert_eq!(
        env.ok(&["output", &id, "--tail", "1", "--raw"]),
        format!("{}\n", line(100))
    );
}

#[test]
fn since_with_tail_returns_the_last_new_lines_and_consumes_all() {
    let env = Env::new();
    let id = env.task_printing(numbered(10));
    let doc = env.output_json(&[&id, "--since", "--tail", "2"]);
    assert_eq!(Env::texts(&doc), [line(9), line(10)]);
    assert_eq!(doc["stdout_meta"]["cursor"], 10);
    assert!(Env::texts(&env.output_json(&[&id, "--since"])).is_empty());
}

#[test]
fn stream_selection_and_markers() {
    let env = Env::new();
    let id = env.start(&["echo out; echo err >&2"]);
    env.wait_done(&id);
    assert_eq!(env.ok(&["output", &id]), "out\nstderr│ err\n");
    let doc = env.output_json(&[&id, "--stream", "stderr"]);
    assert_eq!(Env::texts(&doc), ["err"]);
    assert_eq!(doc["lines"][0]["stream"], "stderr");
    assert!(doc["stdout_meta"].is_null());
}

#[test]
fn cleaning_strips_ansi_progress_blanks_and_pnpm_paths() {
    let env = Env::new();
    let id = env.task_printing(
        "\x1b[32m✓\x1b[39m ready\n\n   \n10%\r50%\r100% done\n[1;31mremnant[0m\n\
         at x (/a/node_modules/.pnpm/vite@5.0.0_@types+node@20.1.0/node_modules/vite/dist/n.js:1:2)\n\x1b]0;title\x07osc\n",
    );
    let doc = env.output_json(&[&id]);
    assert_eq!(
        Env::texts(&doc),
        [
            "✓ ready",
            "100% done",
            "remnant",
            "at x (/a/node_modules/vite@5.0.0/dist/n.js:1:2)",
            "osc"
        ]
    );
    let raw = env.output_json(&[&id, "--raw"]);
    assert_eq!(Env::texts(&raw)[0], "\x1b[32m✓\x1b[39m ready");
    assert_eq!(Env::texts(&raw).len(), 7);
}

#[test]
fn similar_lines_collapse_but_not_under_a_filter() {
    let env = Env::new();
    let gets: String = (1..=5)
        .map(|i| format!("GET /api/{i} 200 in {i}ms\n"))
        .collect();
    let id = env.task_printing(format!("start\n{gets}ERROR x 1\nERROR x 2\nend\n"));
    let doc = env.output_json(&[&id]);
    // A run of 4 or more shows its first and last line; shorter runs show whole.
    assert_eq!(
        Env::texts(&doc),
        [
            "start",
            "GET /api/1 200 in 1ms",
            "GET /api/5 200 in 5ms",
            "ERROR x 1",
            "ERROR x 2",
            "end"
        ]
    );
    assert_eq!(doc["lines"][1]["similar"], 3);
    assert_eq!(doc["lines"][2]["similar"], 0);
    assert_eq!(doc["stdout_meta"]["returned"], 9);
    assert!(
        env.ok(&["output", &id])
            .contains("GET /api/1 200 in 1ms\n  … 3 similar lines\nGET /api/5 200 in 5ms\n")
    );
    let doc = env.output_json(&[&id, "--filter", "GET"]);
    assert_eq!(Env::texts(&doc).len(), 5);
}

#[test]
fn long_lines_are_cut_with_a_marker() {
    let env = Env::new();
    let id = env.task_printing(format!("{}\n", "x".repeat(1200)));
    let text = &Env::texts(&env.output_json(&[&id]))[0];
    assert_eq!(text, &format!("{}…[+700 chars]", "x".repeat(500)));
    let text = &Env::texts(&env.output_json(&[&id, "--max-line-chars", "10"]))[0];
    assert_eq!(text, &format!("{}…[+1190 chars]", "x".repeat(10)));
}

#[test]
fn invalid_utf8_and_nul_bytes_are_shown_lossily() {
    let env = Env::new();
    let id = env.task_printing(b"bad \xff\xfe bytes\nnul\x00byte\n");
    let texts = Env::texts(&env.output_json(&[&id]));
    assert_eq!(texts, ["bad \u{fffd}\u{fffd} bytes", "nulbyte"]);
    let raw = Env::texts(&env.output_json(&[&id, "--raw"]));
    assert_eq!(raw[1], "nul\u{0}byte");
}

#[test]
fn json_meta_counts_are_exact() {
    let env = Env::new();
    let text: String = (1..=50)
        .map(|i| {
            if i % 10 == 0 {
                format!("WARN {i}\n")
            } else {
                format!("ok {i}\n")
            }
        })
        .collect();
    let id = env.task_printing(text);
    let doc = env.output_json(&[
        &id,
        "--filter",
        "warn",
        "--max-lines",
        "3",
        "--stream",
        "stdout",
    ]);
    let meta = &doc["stdout_meta"];
    assert_eq!(meta["total_lines"], 50);
    assert_eq!(meta["matched"], 5);
    assert_eq!(meta["returned"], 3);
    assert_eq!(meta["truncated"], true);
    assert_eq!(meta["remaining"], 2);
    assert_eq!(doc["lines"][0]["line"], 10);
    assert_eq!(doc["task"], id.as_str());
    assert_eq!(doc["state"], "exited");
    assert_eq!(doc["exit_code"], 0);
}

#[test]
fn cap_is_shared_between_streams() {
    let env = Env::new();
    let id = env.start(&["seq 1 100; seq 1 100 >&2"]);
    env.wait_done(&id);
    let doc = env.output_json(&[&id, "--max-lines", "10", "--raw"]);
    assert_eq!(doc["stdout_meta"]["returned"], 5);
    assert_eq!(doc["stderr_meta"]["returned"], 5);
    assert_eq!(doc["lines"].as_array().unwrap().len(), 10);
}

#[test]
fn human_summary_goes_to_stderr() {
    let env = Env::new();
    let text: String = (1..=300).map(|i| format!("ERROR {i}\n")).collect();
    let id = env.task_printing(text);
    let out = env.run(&[
        "output",
        &id,
        "--filter",
        "ERROR",
        "--since",
        "--max-lines",
        "12",
        "--stream",
        "stdout",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 12);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "-- 12 of 300 lines (stdout) · filter ERROR · cursor 12 · 288 more matching, run again with --since"
    );
}

#[test]
fn reading_works_while_the_task_writes() {
    let env = Env::new();
    let id =
        env.start(&["i=0; while [ $i -lt 2000 ]; do echo \"tick $i\"; i=$((i+1)); done; sleep 30"]);
    let mut seen = 0u64;
    poll_until(Duration::from_secs(20), || {
        let doc = env.output_json(&[
            &id,
            "--since",
            "--max-lines",
            "0",
            "--raw",
            "--stream",
            "stdout",
        ]);
        for line in doc["lines"].as_array().unwrap() {
            if line["partial"] == false {
                assert_eq!(line["text"], format!("tick {seen}"));
                seen += 1;
            }
        }
        seen == 2000
    });
}

#[test]
fn broken_pipe_exits_quietly() {
    let env = Env::new();
    let id = env.task_printing(numbered(100_000));
    let out = env
        .sh(&format!("$BGT output {id} --max-lines 0 --raw | head -1"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", line(1))
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("bgt:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn list_presets_prints_them() {
    let env = Env::new();
    let out = env.ok(&["output", "--list-presets"]);
    for name in ["next", "express", "django", "rails", "vite", "general"] {
        assert!(out.contains(name), "{name}");
    }
}

#[test]
fn case_sensitive_word_alternation_finds_every_line_once() {
    let env = Env::new();
    let id = env.task_printing("WARN a\nx ERRORS\nERROR b\nERROR WARN c\nwarn lower\nWAR N\n");
    let doc = env.output_json(&[
        &id,
        "--filter",
        r"ERROR\|WARN",
        "--case-sensitive",
        "--raw",
        "--stream",
        "stdout",
    ]);
    assert_eq!(
        Env::texts(&doc),
        ["WARN a", "x ERRORS", "ERROR b", "ERROR WARN c"]
    );
    let lines: Vec<u64> = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 2, 3, 4]);
    assert_eq!(doc["stdout_meta"]["total_lines"], 6);
}

// Regressions found in review.

#[test]
fn regression_a_capped_tail_keeps_the_newest_lines() {
    let env = Env::new();
    let id = env.task_printing(numbered(400));
    let doc = env.output_json(&[
        &id,
        "--tail",
        "300",
        "--max-lines",
        "200",
        "--stream",
        "stdout",
    ]);
    let texts = Env::texts(&doc);
    assert_eq!(texts.len(), 200);
    assert_eq!(texts[0], line(201));
    assert_eq!(texts[199], line(400));
    assert_eq!(doc["stdout_meta"]["truncated"], true);
    assert_eq!(doc["stdout_meta"]["remaining"], 100);
}

#[test]
fn regression_head_above_the_cap_reports_truncation() {
    let env = Env::new();
    let id = env.task_printing(numbered(300));
    let doc = env.output_json(&[
        &id,
        "--head",
        "250",
        "--max-lines",
        "100",
        "--stream",
        "stdout",
    ]);
    assert_eq!(Env::texts(&doc).len(), 100);
    assert_eq!(doc["stdout_meta"]["truncated"], true);
    let doc = env.output_json(&[&id, "--head", "10", "--stream", "stdout"]);
    assert_eq!(
        doc["stdout_meta"]["truncated"], false,
        "--head itself is not a truncation"
    );
}

#[test]
fn regression_follow_with_reset_cursor_rewinds_once() {
    let env = Env::new();
    let id = env.task_printing("one\ntwo\n");
    env.output_json(&[&id, "--since"]);
    let out = env.ok(&[
        "output",
        &id,
        "--follow",
        "--since",
        "--reset-cursor",
        "--stream",
        "stdout",
    ]);
    assert_eq!(out, "one\ntwo\n");
}

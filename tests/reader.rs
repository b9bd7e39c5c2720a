//! The log reader's promises under stress: it never loses or invents a line,
//! notices a rewritten log, shows the newest lines, and stays in bounded
//! memory and CPU on pathological lines.

use crate::util::{BGT, Env, poll_until, succeeded, whole_stdout};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// Runs bgt under `/usr/bin/time`; returns (stdout, stderr without the
/// timing line, the timing line's fields).
fn timed(env: &Env, format: &str, args: &[&str]) -> (String, String, Vec<f64>) {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg(format!("TIMED {format}"))
        .arg(BGT)
        .args(args)
        .env("BGT_HOME", env.home())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let (rest, line) = stderr.rsplit_once("TIMED ").expect("time(1) output");
    let fields = line
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        rest.to_string(),
        fields,
    )
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

// Item: --follow never loses a line.

#[test]
fn follow_prints_every_line_of_a_finished_task() {
    let env = Env::new();
    let id = env.start(&["seq 1 1000"]);
    env.wait_done(&id);
    let out = env.ok(&["output", &id, "--follow", "--raw"]);
    let want: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out, want);
}

#[test]
fn follow_keeps_up_with_a_fast_writer_until_the_last_byte() {
    let env = Env::new();
    let id = env.start(&[
        "seq 1 100000; sleep 0.3; seq 100001 200000; sleep 0.3; seq 200001 300000; printf end",
    ]);
    let out = env.ok(&["output", &id, "--follow", "--raw", "--stream", "stdout"]);
    let mut want: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    want.push_str("end\n");
    assert!(out == want, "follow printed {} lines", out.lines().count());
}

#[test]
fn follow_with_an_explicit_cap_stops_there_and_says_so() {
    let env = Env::new();
    let id = env.start(&["seq 1 1000"]);
    env.wait_done(&id);
    let out = env.run(&["output", &id, "--follow", "--raw", "--max-lines", "10"]);
    let stdout = succeeded("follow --max-lines 10", out.clone());
    assert_eq!(stdout.lines().count(), 10);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-lines 10"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Item: a log truncated in place and regrown is noticed.

#[test]
fn a_log_truncated_and_regrown_past_the_cursor_resets_it() {
    let env = Env::new();
    let id = env.task_printing("old 1 a\nold 2 b\nold 3 c\n");
    let first = env.output_json(&[&id, "--since", "--stream", "stdout"]);
    assert_eq!(first["stdout_meta"]["cursor"], 3);
    assert_eq!(env.status(&id)["stdout_lines"], 3);
    // copytruncate: same inode, shorter, then regrown past the old cursor.
    let log = env.task_dir(&id).join("stdout.log");
    let fresh: String = (1..=10).map(|i| format!("fresh line {i}\n")).collect();
    std::fs::write(&log, &fresh).unwrap();
    let doc = env.output_json(&[&id, "--since", "--stream", "stdout", "--raw"]);
    let want: Vec<String> = (1..=10).map(|i| format!("fresh line {i}")).collect();
    assert_eq!(Env::texts(&doc), want);
    assert_eq!(doc["stdout_meta"]["cursor_reset"], true);
    assert_eq!(doc["stdout_meta"]["total_lines"], 10);
    // The line-count index was rebuilt too.
    assert_eq!(env.status(&id)["stdout_lines"], 10);
    let tail = env.output_json(&[&id, "--tail", "1", "--stream", "stdout"]);
    assert_eq!(tail["lines"][0]["line"], 10);
    assert_eq!(tail["lines"][0]["text"], "fresh line 10");
}

#[test]
fn cursors_written_before_fingerprints_are_still_trusted() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let id = env.task_printing("a 1\nb 2\nc 3\n");
    let dir = env.task_dir(&id);
    let ino = std::fs::metadata(dir.join("stdout.log")).unwrap().ino();
    std::fs::create_dir(dir.join("cursors")).unwrap();
    let old = format!(
        r#"{{"stdout":{{"offset":4,"line":1,"ino":{ino}}},"stderr":{{"offset":0,"line":0,"ino":0}}}}"#
    );
    std::fs::write(dir.join("cursors/default.json"), old).unwrap();
    let doc = env.output_json(&[&id, "--since", "--stream", "stdout"]);
    assert_eq!(Env::texts(&doc), ["b 2", "c 3"]);
    assert_eq!(doc["stdout_meta"]["cursor_reset"], false);
}

#[test]
fn a_rewritten_log_rebuilds_the_index_for_tail() {
    let env = Env::new();
    let id = env.task_printing("a 1\nb 2\nc 3\nd 4\n");
    let doc = env.output_json(&[&id, "--tail", "1", "--stream", "stdout"]);
    assert_eq!(doc["stdout_meta"]["total_lines"], 4);
    let log = env.task_dir(&id).join("stdout.log");
    std::fs::write(&log, "x one\ny two\nz three\nw four\nv five\nu six\n").unwrap();
    let doc = env.output_json(&[&id, "--tail", "2", "--stream", "stdout"]);
    assert_eq!(Env::texts(&doc), ["v five", "u six"]);
    assert_eq!(doc["stdout_meta"]["total_lines"], 6);
    assert_eq!(doc["lines"][0]["line"], 5);
}

// Item: --tail shows the newest lines; a collapsed run shows first and last.

#[test]
fn tail_shows_the_current_state_of_a_progress_counter() {
    let env = Env::new();
    let id = env.start(&["for i in $(seq 1 1000); do echo \"Downloaded $i of 1000 files\"; done"]);
    env.wait_done(&id);
    assert_eq!(
        env.ok(&["output", &id, "--tail", "1"]),
        "Downloaded 1000 of 1000 files\n"
    );
    assert_eq!(
        env.ok(&["output", &id]),
        "Downloaded 1 of 1000 files\n  … 998 similar lines\nDownloaded 1000 of 1000 files\n"
    );
}

#[test]
fn tail_counts_log_lines_and_short_runs_are_shown_whole() {
    let env = Env::new();
    let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
    let id = env.task_printing(text);
    assert_eq!(
        env.ok(&["output", &id, "--tail", "3"]),
        "line 18\nline 19\nline 20\n"
    );
    assert_eq!(
        env.ok(&["output", &id, "--tail", "4"]),
        "line 17\n  … 2 similar lines\nline 20\n"
    );
    let doc = env.output_json(&[&id]);
    assert_eq!(Env::texts(&doc), ["line 1", "line 20"]);
    assert_eq!(doc["lines"][0]["similar"], 18);
    assert_eq!(doc["lines"][1]["similar"], 0);
    assert_eq!(doc["lines"][1]["line"], 20);
    assert_eq!(doc["stdout_meta"]["returned"], 20);
}

// Item: bounded memory on a huge line.

const HUGE_MB: usize = 100;

fn huge_line_task(env: &Env, newline: bool) -> String {
    let end = if newline { "; echo; echo after" } else { "" };
    let id = env.start(&[&format!(
        "head -c {}000000 /dev/zero | tr '\\0' x{end}",
        HUGE_MB
    )]);
    env.wait_done(&id);
    id
}

/// 100 MB, not more: the test runs the debug build, which counts the
/// unkept characters slowly. (The release build was measured on 1 GB.)
#[test]
fn a_huge_line_is_read_in_bounded_memory() {
    let env = Env::new();
    let cases: [(bool, &[&str]); 4] = [
        (false, &["--tail", "2"]),
        (false, &["--max-lines", "0"]),
        (true, &["--tail", "2"]),
        (true, &["--since", "--filter", "x", "--raw", "--json"]),
    ];
    let unfinished = huge_line_task(&env, false);
    let finished = huge_line_task(&env, true);
    for (newline, args) in cases {
        let id = if newline { &finished } else { &unfinished };
        let mut all = vec!["output", id.as_str(), "--stream", "stdout"];
        all.extend(args.iter().copied());
        let (stdout, _, f) = timed(&env, "%M", &all);
        let rss_mb = f[0] / 1024.0;
        assert!(rss_mb < 64.0, "{args:?} (newline {newline}): {rss_mb} MB");
        let cut = format!("{}…[+{} chars]", "x".repeat(500), HUGE_MB * 1_000_000 - 500);
        assert!(
            stdout.contains(&cut),
            "{args:?}: {}",
            &stdout[..stdout.len().min(700)]
        );
    }
}

// Item: wait --for-line sees a line without newline, cheaply.

#[test]
fn wait_for_line_sees_a_line_without_newline() {
    let env = Env::new();
    let id = env.start(&["printf 'server ready on :3000'; sleep 100"]);
    let out = env.ok(&[
        "wait",
        &id,
        "--for-line",
        "ready",
        "--timeout",
        "10s",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["lines"][0], "server ready on :3000");
}

#[test]
fn wait_for_line_reads_a_huge_progress_line_once() {
    let env = Env::new();
    // ~100 MB of `\r`-redrawn progress, never a newline.
    let id = env.start(&[
        "yes 'progress 50%' | head -c 100000000 | tr '\\n' '\\r'; printf done; sleep 100",
    ]);
    poll_until(Duration::from_secs(20), || {
        let doc = env.output_json(&[&id, "--tail", "1", "--stream", "stdout"]);
        doc["lines"][0]["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("done"))
    });
    let (_, _, f) = timed(
        &env,
        "%U %S",
        &["wait", &id, "--for-line", "never there", "--timeout", "8s"],
    );
    // Reading the line once costs a fraction of a second (debug build);
    // reading it again on every poll costs that many times over.
    let cpu = f[0] + f[1];
    assert!(cpu < 1.2, "wait used {cpu} s of CPU");
}

// Item: summaries count exactly.

#[test]
fn summary_counts_an_unfinished_line_apart() {
    let env = Env::new();
    let id = env.task_printing("one\ntwo\npart");
    let out = env.run(&["output", &id, "--stream", "stdout"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "-- 2 of 2 lines + 1 unfinished line (stdout)"
    );
    let id = env.task_printing("x");
    let out = env.run(&["output", &id, "--stream", "stdout"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "-- 0 of 0 lines + 1 unfinished line (stdout)"
    );
}

// Item: the reader's own files are private and never followed.

#[test]
fn reader_files_are_private_whatever_the_umask() {
    let env = Env::new();
    let id = env.task_printing("a\nb\n");
    let dir = env.task_dir(&id);
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("umask 000; {BGT} output {id} --since; {BGT} output {id} --tail 1"),
        ])
        .env("BGT_HOME", env.home())
        .output()
        .unwrap();
    succeeded("output under umask 000", out);
    assert_eq!(mode(&dir.join("cursors")), 0o700);
    assert_eq!(mode(&dir.join("cursors/default.json")), 0o600);
    assert_eq!(mode(&dir.join("cursors/default.lock")), 0o600);
    assert_eq!(mode(&dir.join("index.json")), 0o600);
    assert_eq!(mode(&dir.join("index.lock")), 0o600);
}

#[test]
fn planted_symlinks_are_never_followed() {
    let env = Env::new();
    let id = env.task_printing("a 1\nb 2\nc 3\n");
    let dir = env.task_dir(&id);
    let outside = env.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A cursor and an index elsewhere that would skip lines if believed.
    let bait = r#"{"stdout":{"offset":4,"line":1,"ino":0},"stderr":{"offset":0,"line":0,"ino":0}}"#;
    std::fs::write(outside.join("default.json"), bait).unwrap();
    std::fs::write(outside.join("index.json"), bait).unwrap();
    std::fs::write(outside.join("index.lock"), "").unwrap();
    for name in ["index.json", "index.lock"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    std::os::unix::fs::symlink(outside.join("index.json"), dir.join("index.json")).unwrap();
    std::os::unix::fs::symlink(outside.join("index.lock"), dir.join("index.lock")).unwrap();
    std::fs::create_dir(dir.join("cursors")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("default.json"),
        dir.join("cursors/default.json"),
    )
    .unwrap();
    let doc = env.output_json(&[&id, "--since", "--stream", "stdout", "--raw"]);
    assert_eq!(Env::texts(&doc), ["a 1", "b 2", "c 3"]);
    let tail = env.output_json(&[&id, "--tail", "1", "--stream", "stdout"]);
    assert_eq!(tail["stdout_meta"]["total_lines"], 3);
    assert_eq!(tail["lines"][0]["line"], 3);
    for name in ["default.json", "index.json"] {
        assert_eq!(std::fs::read_to_string(outside.join(name)).unwrap(), bait);
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("index.lock")).unwrap(),
        ""
    );

    // A cursor file hard-linked elsewhere (a backup made with `cp -al`) is
    // replaced, not written through: the copy keeps what it had.
    std::fs::remove_file(dir.join("cursors/default.json")).unwrap();
    let first = [&id, "--since", "--stream", "stdout", "--max-lines", "1"];
    assert_eq!(Env::texts(&env.output_json(&first)), ["a 1"]);
    let copy = env.work().join("copy.json");
    std::fs::hard_link(dir.join("cursors/default.json"), &copy).unwrap();
    let kept = std::fs::read(&copy).unwrap();
    assert_eq!(Env::texts(&env.output_json(&first)), ["b 2"]);
    assert_eq!(std::fs::read(&copy).unwrap(), kept);

    // A planted cursors directory is refused, not written through.
    let id = env.task_printing("d\n");
    let dir = env.task_dir(&id);
    std::os::unix::fs::symlink(&outside, dir.join("cursors")).unwrap();
    let out = env.run(&["output", &id, "--since"]);
    assert!(!out.status.success());
    let mut names: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["default.json", "index.json", "index.lock"]);
}

// The engine's paths agree: one request through every read path.

/// An entry as JSON shows it: line, text, similar, partial, context (a
/// block or context line, not a match), folded (a marker's log lines).
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    line: u64,
    text: String,
    similar: u64,
    partial: bool,
    context: bool,
    folded: u64,
}

impl Seen {
    /// Log lines the entry accounts for.
    fn lines(&self) -> u64 {
        if self.folded > 0 {
            self.folded
        } else {
            1 + self.similar
        }
    }
}

fn entries(doc: &serde_json::Value) -> Vec<Seen> {
    doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| Seen {
            line: l["line"].as_u64().unwrap(),
            text: l["text"].as_str().unwrap().to_string(),
            similar: l["similar"].as_u64().unwrap(),
            partial: l["partial"].as_bool().unwrap(),
            context: l["context"].as_bool().unwrap(),
            folded: l["folded"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// What the text output of `seen` is (one stream, so no markers), without
/// the `--` lines between groups.
fn as_text(seen: &[Seen]) -> String {
    let mut text = String::new();
    for e in seen {
        text.push_str(&format!("{}\n", e.text));
        if e.similar > 0 {
            let s = if e.similar == 1 { "" } else { "s" };
            text.push_str(&format!("  … {} similar line{s}\n", e.similar));
        }
    }
    text
}

/// Text output without the `--` lines between groups.
fn ungrouped(text: String) -> String {
    text.lines()
        .filter(|l| *l != "--")
        .map(|l| format!("{l}\n"))
        .collect()
}

/// In the spirit of ripgrep's `SearcherTester`: runs the read `args` asks
/// for over a finished task printing `content` through every path of the
/// reader (whole forward read, text and JSON, `--since` in one go and paged
/// by a cap, `--follow`, backward `--tail`, forward `--since --tail`,
/// `--head`) and checks they agree.
fn paths_agree(content: &[u8], args: &[&str]) {
    let env = Env::new();
    let id = env.task_printing(content);
    let case = format!("{args:?} on {:?}", String::from_utf8_lossy(content));
    paths_agree_on(&env, &id, &case, args);
}

/// [`paths_agree`] over the stdout of the finished task `id`.
fn paths_agree_on(env: &Env, id: &str, case: &str, args: &[&str]) {
    let run = |extra: &[&str]| -> Vec<String> {
        let mut all = vec![id, "--stream", "stdout"];
        all.extend_from_slice(args);
        all.extend_from_slice(extra);
        all.into_iter().map(String::from).collect()
    };
    let json = |extra: &[&str]| {
        let all = run(extra);
        env.output_json(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let text = |extra: &[&str]| {
        let mut all = vec!["output".to_string()];
        all.extend(run(extra));
        ungrouped(env.ok(&all.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let whole_doc = json(&["--max-lines", "0"]);
    let whole = entries(&whole_doc);
    let total = whole_doc["stdout_meta"]["total_lines"].clone();
    let case = format!("{case} {args:?}");

    assert_eq!(text(&["--max-lines", "0"]), as_text(&whole), "text: {case}");
    assert_eq!(text(&["--follow"]), as_text(&whole), "follow: {case}");
    let since = json(&["--since", "--cursor", "whole", "--max-lines", "0"]);
    assert_eq!(entries(&since), whole, "since: {case}");
    assert_eq!(
        since["stdout_meta"]["cursor"], total,
        "since cursor: {case}"
    );
    for window in ["--tail", "--head"] {
        let doc = json(&[window, "1000000", "--max-lines", "0"]);
        assert_eq!(entries(&doc), whole, "{window} all: {case}");
        assert_eq!(doc["stdout_meta"]["total_lines"], total, "{window}: {case}");
    }
    for k in 1..=6 {
        let k = k.to_string();
        let backward = json(&["--tail", &k, "--max-lines", "0"]);
        let cursor = format!("tail{k}");
        let forward = json(&[
            "--since",
            "--cursor",
            &cursor,
            "--tail",
            &k,
            "--max-lines",
            "0",
        ]);
        assert_eq!(
            entries(&backward),
            entries(&forward),
            "--tail {k} vs --since --tail {k}: {case}"
        );
    }
    // Paged by a cap: every complete line once, in order, none invented;
    // lines before a page's cursor come again only as context.
    let mut paged = Vec::new();
    let mut returned = 0;
    let mut cursor = 0;
    for _ in 0..200 {
        let page = json(&["--since", "--cursor", "paged", "--max-lines", "2"]);
        let meta = &page["stdout_meta"];
        for e in entries(&page) {
            assert!(
                e.line > cursor || e.context,
                "{e:?} again as a match: {case}"
            );
            if e.line > cursor && !e.partial {
                returned += e.lines();
                paged.push(e);
            }
        }
        cursor = meta["cursor"].as_u64().unwrap();
        if meta["cursor"] == total {
            break;
        }
    }
    let complete: Vec<Seen> = whole.iter().filter(|e| !e.partial).cloned().collect();
    let lines = |seen: &[Seen]| seen.iter().map(Seen::lines).sum::<u64>();
    assert_eq!(returned, lines(&complete), "paged lines: {case}");
    if args.contains(&"--raw") || args.contains(&"--filter") {
        assert_eq!(paged, complete, "paged: {case}");
    }
}

#[test]
fn every_read_path_agrees_on_plain_and_similar_lines() {
    let numbered: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let mixed = "start\nGET /a 200 in 1ms\nGET /b 200 in 2ms\nGET /c 200 in 3ms\n\
                 GET /d 200 in 4ms\nERROR x 1\nERROR x 2\n\n   \nend\n";
    for content in [numbered.as_str(), mixed] {
        paths_agree(content.as_bytes(), &[]);
        paths_agree(content.as_bytes(), &["--raw"]);
        paths_agree(content.as_bytes(), &["--filter", "1|ERROR"]);
    }
}

#[test]
fn every_read_path_agrees_on_unfinished_lines() {
    // Formerly regression_a_partial_line_is_never_folded_into_a_run.
    paths_agree(
        b"job 1 done\njob 2 done\njob 3 done\njob 4 done\njob 5 do",
        &[],
    );
    paths_agree(b"a\nb\npart", &["--raw"]);
    paths_agree(b"only an unfinished line", &[]);
}

#[test]
fn every_read_path_agrees_on_anchored_and_empty_filters() {
    // Formerly regression_anchored_filters_match_every_line_in_whole_log_reads
    // and regression_filters_matching_the_empty_string_do_not_crash.
    let numbered: String = (1..=40).map(|i| format!("line {i} x\n")).collect();
    for filter in ["^line [1-5] ", " x$", "", ".*", "error|", "$", "(x)?"] {
        paths_agree(numbered.as_bytes(), &["--filter", filter, "--raw"]);
    }
    paths_agree(
        b"ERROR a\nWARN b\nok\nERRORS c\n",
        &["--filter", r"ERROR\|WARN", "--case-sensitive"],
    );
}

#[test]
fn every_read_path_agrees_on_awkward_bytes() {
    let long = format!("{}\nshort\n{}\n", "y".repeat(70_000), "z".repeat(1_000));
    paths_agree(long.as_bytes(), &[]);
    paths_agree(long.as_bytes(), &["--raw", "--max-line-chars", "20"]);
    paths_agree(
        b"10%\r50%\r100% done\n\x1b[32mok\x1b[0m\nbad \xff byte\nnul\x00\n",
        &[],
    );
    paths_agree(
        b"10%\r50%\r100% done\n\x1b[32mok\x1b[0m\nbad \xff byte\n",
        &["--raw"],
    );
    let progress = format!("{}\r", "progress 5%\r".repeat(10_000));
    paths_agree(progress.as_bytes(), &[]);
}

#[test]
fn every_read_path_agrees_on_blocks_and_context() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/logs/errors");
    let python = std::fs::read(dir.join("python-chained.stderr.log")).unwrap();
    let java = std::fs::read(dir.join("java-deep.stderr.log")).unwrap();
    for args in [
        &["--filter", "error"][..],
        &["--filter", "error", "--raw"],
        &["--filter", "order", "-C", "2"],
        &["--filter", "json", "-B", "3", "--no-blocks"],
    ] {
        paths_agree(&python, args);
    }
    paths_agree(&java, &["--filter", "exception|exited"]);
    let numbered: String = (1..=60)
        .map(|i| match i % 9 {
            0 => format!("hit {i}\n"),
            4 => "\n".to_string(),
            _ => format!("line {i}\n"),
        })
        .collect();
    paths_agree(numbered.as_bytes(), &["--filter", "hit", "-C", "2"]);
    paths_agree(
        numbered.as_bytes(),
        &["--filter", "hit", "-A", "5", "-B", "1"],
    );
}

#[test]
fn every_read_path_agrees_on_a_log_whose_start_was_dropped() {
    // A real bounded log: the supervisor punched a hole at its start and
    // recorded where reads begin. No path reads the hole's zeros, and all
    // count lines as they were written.
    let env = Env::new();
    let script = "for i in $(seq 1 400); do \
                  if [ $((i % 9)) = 0 ]; then echo \"hit $i\"; else echo \"line $i $(printf %01000d 0)\"; fi; \
                  done";
    let id = env.start_with(&["--max-log-size", "64K"], &["sh", "-c", script]);
    let done = env.wait_done(&id);
    let dropped = done["stdout_dropped_lines"].as_u64().unwrap();
    assert!(dropped > 100, "a hole was punched: {done}");
    assert_eq!(
        done["stdout_lines"], 400,
        "status counts every line written"
    );
    let doc = env.output_json(&[&id, "--raw", "--max-lines", "0"]);
    let seen = entries(&doc);
    assert_eq!(
        seen[0].line,
        dropped + 1,
        "reads start after the dropped lines"
    );
    for e in &seen {
        let n = e.text.split(' ').nth(1).unwrap();
        assert_eq!(n, e.line.to_string(), "line numbers as written: {e:?}");
    }
    assert_eq!(doc["stdout_meta"]["dropped_lines"], dropped);
    assert_eq!(doc["stdout_meta"]["dropped_unseen_lines"], dropped);
    let case = format!("a log with {dropped} lines dropped");
    for args in [
        &[][..],
        &["--raw"],
        &["--filter", "hit", "-C", "2"],
        &["--filter", "hit", "-B", "40", "--raw"],
    ] {
        // Each round pages its cursors from the start.
        let _ = std::fs::remove_dir_all(env.task_dir(&id).join("cursors"));
        paths_agree_on(&env, &id, &case, args);
    }
}

/// An ended task's bounded log, large enough past its dropped start to be
/// read through a mapping: the reader looks for freed ranges only where it
/// starts (nothing can be freed any more), and must still begin after the
/// dropped lines, number every line as written and never show the hole.
#[test]
fn a_mapped_read_of_an_ended_bounded_log_starts_after_its_dropped_lines() {
    let env = Env::new();
    let script = "awk 'BEGIN { for (i = 1; i <= 200000; i++) printf \"line %d %0100d\\n\", i, 0 }'";
    let id = env.start_with(&["--max-log-size", "6M"], &["sh", "-c", script]);
    let done = env.wait_done(&id);
    let dropped = done["stdout_dropped_lines"].as_u64().unwrap();
    assert!(dropped > 0, "a hole was punched: {done}");
    let out = env.ok(&whole_stdout(&id, &["--raw"]));
    assert!(!out.contains('\0'), "the hole's zeros were shown");
    let numbers: Vec<u64> = out
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.len() as u64 * 112 >= 4 << 20,
        "kept part too small to be mapped: {} lines",
        numbers.len()
    );
    assert_eq!(
        numbers[0],
        dropped + 1,
        "reads start after the dropped lines"
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a line is missing"
    );
    assert_eq!(*numbers.last().unwrap(), 200_000);
    let doc = env.output_json(&[&id, "--raw", "--max-lines", "0", "--filter", "line 199999 "]);
    let seen = entries(&doc);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line, 199_999, "numbered as written");
}

//! Readers of bounded logs (`--max-log-size`): the supervisor frees the
//! oldest blocks while readers read, and no reader ever shows the hole's
//! zeros, repeats a line, or loses one that was on disk when it read.

use crate::util::{Env, poll_until};
use serde_json::Value;
use std::time::{Duration, Instant};

/// 50 bursts of ~1 MiB of numbered 100-byte lines (`N xxx…`), a little
/// apart, so a poller reads while the supervisor punches.
const WRITER: &str = "i=0; while [ $i -lt 50 ]; do \
     seq -f '%.0f xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' \
     $((i * 10486 + 1)) $((i * 10486 + 10486)); i=$((i + 1)); sleep 0.1; done";
const LINES: u64 = 50 * 10486;

/// The number a line of [`WRITER`] starts with.
fn number(text: &str) -> u64 {
    text.split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("not a numbered line (zeros read as text?): {text:?}"))
}

#[test]
fn a_since_poller_of_a_bounded_log_loses_only_what_was_dropped_and_says_so() {
    let env = Env::new();
    let id = env.start_with(&["--max-log-size", "1M"], &["sh", "-c", WRITER]);
    let mut last = 0u64; // the last line number returned
    let mut cursor = 0u64; // where the poller's cursor stood
    let mut polls = 0; // reads while the task wrote
    let mut gaps = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ended = !matches!(env.state(&id).as_str(), "running" | "starting");
        let doc = env.output_json(&[
            &id,
            "--stream",
            "stdout",
            "--since",
            "--max-lines",
            "0",
            "--raw",
        ]);
        polls += u64::from(!ended);
        let meta = &doc["stdout_meta"];
        let lines = doc["lines"].as_array().unwrap();
        let complete: Vec<&Value> = lines.iter().filter(|l| l["partial"] != true).collect();
        for l in &complete {
            let (n, text) = (l["line"].as_u64().unwrap(), l["text"].as_str().unwrap());
            assert_eq!(number(text), n, "line {n} has its own text");
            assert!(n > last, "line {n} after {last}: never twice, in order");
            last = n;
        }
        // The cursor moved over the lines returned and the lines that were
        // dropped before this read could see them, which it says: nothing
        // else is skipped.
        let unseen = meta["dropped_unseen_lines"].as_u64().unwrap_or(0);
        let moved = meta["cursor"].as_u64().unwrap() - cursor;
        assert_eq!(
            moved,
            complete.len() as u64 + unseen,
            "a gap only where dropped, and said so: from {cursor}: {meta}"
        );
        cursor += moved;
        gaps += u64::from(unseen > 0);
        // A tail reaching back past the kept part, racing the punches:
        // consecutive true lines, never the hole's zeros.
        let tail = env.output_json(&[&id, "--tail", "15000", "--raw", "--max-lines", "0"]);
        let numbers: Vec<u64> = tail["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["partial"] != true)
            .map(|l| {
                let n = l["line"].as_u64().unwrap();
                assert_eq!(number(l["text"].as_str().unwrap()), n, "tail line {n}");
                n
            })
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "a tail has no gaps"
        );
        // Everything on disk when it read was returned: the cursor is at the end.
        assert_eq!(meta["cursor"], meta["total_lines"], "{meta}");
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last, LINES, "the poller saw the last line");
    assert!(
        polls >= 2,
        "the poller read while the task wrote ({polls} polls)"
    );
    let done = env.wait_done(&id);
    assert_eq!(
        done["stdout_lines"], LINES,
        "status counts are exact: {done}"
    );
    let dropped = done["stdout_dropped_lines"].as_u64().unwrap();
    assert!(dropped > LINES - 20_000, "{done}");
    eprintln!("{polls} polls, {gaps} with dropped lines");

    let tail = env.output_json(&[&id, "--tail", "5", "--raw"]);
    let numbers: Vec<u64> = tail["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let n = l["line"].as_u64().unwrap();
            assert_eq!(number(l["text"].as_str().unwrap()), n);
            n
        })
        .collect();
    assert_eq!(numbers, (LINES - 4..=LINES).collect::<Vec<_>>());
    assert!(
        tail["stdout_meta"]["dropped_unseen_lines"].is_null(),
        "a short tail does not reach the dropped part: {}",
        tail["stdout_meta"]
    );
    assert_eq!(tail["stdout_meta"]["dropped_lines"], dropped);
}

#[test]
fn reads_that_reach_dropped_output_say_so() {
    let env = Env::new();
    let id = env.start_with(
        &["--max-log-size", "64K"],
        &[
            "sh",
            "-c",
            "seq -f '%.0f yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy' 1 20000",
        ],
    );
    let done = env.wait_done(&id);
    let dropped = done["stdout_dropped_lines"].as_u64().unwrap();
    assert!(dropped > 15_000, "{done}");
    // A read from the start: the summary line, and the first line read is
    // the first one kept, with its true number.
    let out = env.run(&["output", &id, "--raw", "--head", "1"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(number(&stdout), dropped + 1, "{stdout}");
    assert!(stderr.contains("earlier output dropped: "), "{stderr}");
    // A tail within what was kept does not; one reaching past it does.
    let out = env.run(&["output", &id, "--tail", "3"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("dropped"),
        "{out:?}"
    );
    let doc = env.output_json(&[&id, "--tail", "100000", "--raw", "--max-lines", "0"]);
    assert_eq!(doc["lines"][0]["line"], dropped + 1);
    assert_eq!(doc["stdout_meta"]["dropped_unseen_lines"], dropped);
    assert_eq!(doc["stdout_meta"]["total_lines"], 20000);
    // A cursor left inside the dropped part moves to where the log now
    // starts, says how many lines it could not see, and is no rewrite.
    let cursors = env.task_dir(&id).join("cursors");
    std::fs::create_dir_all(&cursors).unwrap();
    let dropped_at = done["stdout_dropped_bytes"].as_u64().unwrap();
    // The cursor a reader saved after line 10, fingerprint included (FNV-1a
    // of the 64 bytes before it, as they were written).
    let written: String = (1..=10)
        .map(|i| format!("{i} yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n"))
        .collect();
    let tag = written.as_bytes()[written.len() - 64..]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let ino = std::fs::metadata(env.task_dir(&id).join("stdout.log")).unwrap();
    let behind = serde_json::json!({
        "stdout": {"offset": written.len(), "line": 10, "ino": std::os::unix::fs::MetadataExt::ino(&ino), "tag": tag},
        "stderr": {"offset": 0, "line": 0},
    });
    std::fs::write(cursors.join("old.json"), behind.to_string()).unwrap();
    let doc = env.output_json(&[&id, "--since", "--cursor", "old", "--raw", "--head", "1"]);
    let meta = &doc["stdout_meta"];
    assert_eq!(meta["cursor_reset"], false, "{meta}");
    assert_eq!(meta["dropped_unseen_lines"], dropped - 10, "{meta}");
    assert_eq!(doc["lines"][0]["line"], dropped + 1);
    assert!(dropped_at > written.len() as u64);
    // Status agrees, and keeps agreeing once the index is built.
    poll_until(Duration::from_secs(5), || {
        env.status(&id)["stdout_lines"] == 20000
    });
}

#[test]
fn a_follower_of_a_bounded_log_starts_where_it_was_kept() {
    let env = Env::new();
    let id = env.start_with(
        &["--max-log-size", "64K"],
        &[
            "sh",
            "-c",
            "seq -f '%.0f zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz' 1 20000",
        ],
    );
    let done = env.wait_done(&id);
    let dropped = done["stdout_dropped_lines"].as_u64().unwrap();
    let out = env.run(&["output", &id, "--raw", "--follow"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text.lines().map(number).collect();
    assert_eq!(numbers, (dropped + 1..=20000).collect::<Vec<_>>());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("earlier output dropped: "),
        "{out:?}"
    );
}

#[cfg(feature = "mcp")]
#[tokio::test]
async fn bg_output_says_when_a_read_reaches_dropped_output() {
    use crate::mcp::{call, connect, ok};
    let env = Env::new();
    let id = env.start_with(
        &["--max-log-size", "64K"],
        &[
            "sh",
            "-c",
            "seq -f '%.0f wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww' 1 20000",
        ],
    );
    let done = env.wait_done(&id);
    let dropped = done["stdout_dropped_lines"].as_u64().unwrap();
    let client = connect(&env).await;
    let args = serde_json::json!({"task_id": id, "stream": "stdout", "head": 2});
    let (text, doc) = ok(call(&client, "bg_output", args).await);
    assert!(text.contains("earlier output dropped: "), "{text}");
    let meta = &doc["stdout_meta"];
    assert_eq!(meta["dropped_lines"], dropped, "{meta}");
    assert_eq!(meta["dropped_unseen_lines"], dropped, "{meta}");
    assert_eq!(meta["total_lines"], 20000, "{meta}");
    assert!(meta["dropped_bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["lines"][0]["line"], dropped + 1);
    let args = serde_json::json!({"task_id": id, "stream": "stdout", "tail": 2});
    let (text, doc) = ok(call(&client, "bg_output", args).await);
    assert!(!text.contains("dropped"), "{text}");
    assert_eq!(doc["lines"][1]["line"], 20000);
    client.cancel().await.unwrap();
}

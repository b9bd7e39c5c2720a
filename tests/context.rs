//! Errors come with their context: a filter match inside a stack trace or
//! compiler error brings the whole event (library frames folded), `-A/-B/-C`
//! select the lines GNU grep selects, and `--since` never returns a match
//! twice nor skips one (bgt issue 12).

use crate::util::{Env, poll_until};
use std::process::Command;
use std::time::Duration;

fn captured(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/logs")
        .join(name)
        .display()
        .to_string()
}

/// `bgt output` of a task that `cat`s a captured log (to stdout).
fn read_captured(env: &Env, name: &str, args: &[&str]) -> String {
    let id = env.start(&["cat", &captured(name)]);
    env.wait_done(&id);
    let mut all = vec!["output", id.as_str(), "--stream", "stdout"];
    all.extend_from_slice(args);
    env.ok(&all)
}

/// Each captured failure, the filter an agent would use, what the read must
/// show (the exception line, the first frame of the app's own code with
/// its file and line) and the routine lines it must not show.
const FAILURES: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "errors/python-chained.stderr.log",
        "error",
        &[
            "KeyError: '{not json'",
            r#"File "/tmp/errcap/shop/orders.py", line 17, in load_order"#,
            "… 3 library frames",
        ],
        &["worker started", "processed order"],
    ),
    (
        "errors/python-syntax.stderr.log",
        "error",
        &["SyntaxError: invalid syntax", "line 3"],
        &["still watching"],
    ),
    (
        "django.stderr.log",
        "error",
        &["KeyError: 42", r#"web/views.py", line 30, in _load_order"#],
        &["\"GET /static"],
    ),
    (
        "errors/node-cause.stderr.log",
        "error",
        &[
            "Error: could not load config",
            "at readConfig (/tmp/errcap/node-api/config.js:7:11)",
            "[cause]: Error: ENOENT",
        ],
        &["listening"],
    ),
    (
        "errors/java-caused-by.stderr.log",
        "exception",
        &[
            "IllegalStateException",
            "Caused by:",
            "InvoiceService.java:",
        ],
        &[],
    ),
    (
        "errors/rust-panic.stderr.log",
        "panicked",
        &["panicked at main.rs:5:11:", "at ./main.rs:"],
        &[],
    ),
    (
        "errors/go-panic.stderr.log",
        "panic",
        &["panic: runtime error", "main.go:"],
        &[],
    ),
    (
        "errors/ruby-error.stderr.log",
        "error",
        &["JSON::ParserError", "worker.rb:"],
        &[],
    ),
    (
        "errors/tsc-pretty.stderr.log",
        "error",
        &["error TS2322", "src/cart.ts"],
        &["change detected"],
    ),
    (
        "errors/esbuild.stderr.log",
        "error",
        &["[ERROR]", "src/main.ts:"],
        &[],
    ),
];

#[test]
fn a_filtered_read_of_each_captured_failure_shows_the_exception_and_the_app_frame() {
    let env = Env::new();
    for (name, filter, shows, hides) in FAILURES {
        let text = read_captured(&env, name, &["--filter", filter]);
        let plain = read_captured(&env, name, &["--filter", filter, "--no-blocks"]);
        for want in *shows {
            assert!(text.contains(want), "{name}: {want:?} not in\n{text}");
        }
        for noise in *hides {
            assert!(!text.contains(noise), "{name}: {noise:?} in\n{text}");
        }
        let whole = std::fs::read_to_string(captured(name)).unwrap();
        assert!(
            text.len() < whole.len() * 9 / 10 || text.len() < 2500,
            "{name}: {} chars of {}",
            text.len(),
            whole.len()
        );
        assert!(text.len() >= plain.len(), "{name}");
    }
}

#[test]
fn no_blocks_is_plain_grep() {
    let env = Env::new();
    let name = "errors/python-chained.stderr.log";
    let text = read_captured(&env, name, &["--filter", "error", "--no-blocks", "--raw"]);
    let grep = Command::new("grep")
        .args(["-i", "error", &captured(name)])
        .output()
        .unwrap();
    assert_eq!(text, String::from_utf8_lossy(&grep.stdout));
}

/// A log with matches at irregular distances, and blank lines that
/// cleaning drops.
fn generated_log() -> String {
    let mut seed = 7u32;
    (1..=300)
        .map(|i| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            match (seed >> 16) % 13 {
                0 | 1 => format!("request {i} failed: boom\n"),
                2 => "\n".to_string(),
                _ => format!("request {i} ok\n"),
            }
        })
        .collect()
}

/// Line numbers GNU grep prints for `args` on `path` (`-n`), without the
/// lines that are blank (cleaning drops them, so bgt does not show them).
fn grep_lines(path: &str, args: &[&str], content: &str) -> Vec<u64> {
    let out = Command::new("grep")
        .args(["-n"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    let lines: Vec<&str> = content.lines().collect();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l != "--")
        .map(|l| {
            let end = l.find([':', '-']).unwrap();
            l[..end].parse::<u64>().unwrap()
        })
        .filter(|n| !lines[*n as usize - 1].trim().is_empty())
        .collect()
}

#[test]
fn context_selects_the_lines_gnu_grep_selects() {
    let env = Env::new();
    let content = generated_log();
    let path = env.file("generated.log", &content);
    let id = env.start(&["cat", &path]);
    env.wait_done(&id);
    for n in ["1", "2", "3", "7"] {
        for flag in ["-C", "-A", "-B"] {
            let doc = env.output_json(&[
                &id,
                "--stream",
                "stdout",
                "--filter",
                "failed",
                flag,
                n,
                "--max-lines",
                "0",
            ]);
            let got: Vec<u64> = doc["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["line"].as_u64().unwrap())
                .collect();
            let want = grep_lines(&path, &[flag, n, "failed"], &content);
            assert_eq!(got, want, "{flag} {n}");
            // Matches are not context; `matched` counts matches only.
            let matches = doc["lines"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["context"] == false)
                .count();
            assert_eq!(doc["stdout_meta"]["matched"], matches as u64);
        }
    }
    // Text output separates groups with `--`, as grep does.
    let text = env.ok(&[
        "output", &id, "--stream", "stdout", "--filter", "failed", "-C", "2", "--raw", "-m", "0",
    ]);
    let grep = Command::new("grep")
        .args(["-C", "2", "failed", &path])
        .output()
        .unwrap();
    assert_eq!(text, String::from_utf8_lossy(&grep.stdout));
}

#[test]
fn since_polling_across_a_block_written_in_two_halves_returns_every_match_once() {
    let env = Env::new();
    let log = std::fs::read_to_string(captured("errors/python-chained.stderr.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = env.file("first", lines[..30].join("\n") + "\n");
    let second = env.file("second", lines[30..].join("\n") + "\n");
    let go = format!("{}/go", env.home().display());
    let script = format!("cat {first}; while [ ! -e {go} ]; do sleep 0.02; done; cat {second}");
    let id = env.start(&[&script]);
    poll_until(Duration::from_secs(10), || {
        env.status(&id)["stdout_lines"].as_u64() == Some(30)
    });
    let poll = |env: &Env| {
        env.output_json(&[
            &id,
            "--stream",
            "stdout",
            "--since",
            "--filter",
            "error|exception",
        ])
    };
    let one = poll(&env);
    std::fs::write(&go, "").unwrap();
    env.wait_done(&id);
    let two = poll(&env);
    let matches = |doc: &serde_json::Value| -> Vec<u64> {
        doc["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["context"] == false)
            .map(|l| l["line"].as_u64().unwrap())
            .collect()
    };
    let mut seen = matches(&one);
    seen.extend(matches(&two));
    let grep = Command::new("grep")
        .args([
            "-n",
            "-i",
            "-E",
            "error|exception",
            &captured("errors/python-chained.stderr.log"),
        ])
        .output()
        .unwrap();
    let want: Vec<u64> = String::from_utf8_lossy(&grep.stdout)
        .lines()
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seen, want);
    // The second poll shows the block's first half again, as context.
    let texts = Env::texts(&two);
    assert!(texts.iter().any(|t| t.contains("KeyError")), "{texts:?}");
    assert!(
        two["lines"][0]["context"] == true && two["lines"][0]["line"].as_u64() < Some(31),
        "{two}"
    );
}

#[test]
fn tail_with_a_filter_gives_the_last_matches_with_their_blocks() {
    let env = Env::new();
    let text = read_captured(
        &env,
        "errors/python-chained.stderr.log",
        &["--filter", "KeyError", "--tail", "1"],
    );
    assert!(text.starts_with("Traceback"), "{text}");
    assert!(text.contains(r#"app.py", line 22, in report"#), "{text}");
    assert!(text.trim_end().ends_with("KeyError: '{not json'"), "{text}");
}

#[test]
fn the_cap_counts_block_lines_and_says_when_it_cuts_one() {
    let env = Env::new();
    let id = env.start(&["cat", &captured("errors/python-chained.stderr.log")]);
    env.wait_done(&id);
    let doc = env.output_json(&[&id, "--stream", "stdout", "--filter", "KeyError", "-m", "5"]);
    assert_eq!(doc["lines"].as_array().unwrap().len(), 5);
    assert_eq!(doc["stdout_meta"]["truncated"], true);
    assert_eq!(doc["stdout_meta"]["remaining"], 1);
}

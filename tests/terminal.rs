//! The terminal experience, driven in a real pseudo-terminal (a private
//! tmux server per test, read back with `capture-pane -e`) and in pipes:
//! colour only on a terminal (or with `--color always`), NO_COLOR obeyed,
//! filter matches highlighted exactly, a live line while waiting that is
//! redrawn in place and leaves one final line, and no carriage return ever
//! written into a pipe.

use crate::util::{BGT, Env, free_port, poll_until};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command running in its own tmux server (so tests never share one),
/// on a screen of a known size. Dropping it kills the server.
struct Pane {
    dir: tempfile::TempDir,
}

impl Pane {
    /// Runs `script` (sh) in a `width`-column pane with the test's
    /// BGT_HOME and without NO_COLOR; `[exit N]` is printed when it ends.
    fn run(env: &Env, width: u16, script: &str) -> Pane {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script.sh");
        let body = format!(
            "unset NO_COLOR\nexport BGT_HOME='{}'\ncd '{}'\nbgt() {{ '{BGT}' \"$@\"; }}\n{script}\necho \"[exit $?]\"\nexec sleep 600\n",
            env.home().display(),
            env.work().display(),
        );
        std::fs::write(&file, body).unwrap();
        let pane = Pane { dir };
        let status = pane
            .tmux()
            .args(["new-session", "-d", "-x", &width.to_string(), "-y", "40"])
            .arg(format!("sh '{}'", file.display()))
            .status()
            .expect("tmux is needed for the terminal tests (apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        pane
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S")
            .arg(self.socket())
            .args(["-f", "/dev/null"])
            .stdin(Stdio::null());
        cmd
    }

    /// The screen now, with its colours as SGR escapes.
    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-e"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until the script has ended; returns the last one.
    fn finished(&self) -> String {
        let mut screen = String::new();
        poll_until(Duration::from_secs(30), || {
            screen = self.screen();
            screen.contains("[exit ")
        });
        screen
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// Text attributes in force at a character of a captured screen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Attr {
    fg: Option<u8>,
    bold: bool,
    dim: bool,
}

/// A captured line as (character, attributes) pairs, escapes interpreted.
fn styled(line: &str) -> Vec<(char, Attr)> {
    let mut out = Vec::new();
    let mut attr = Attr::default();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push((c, attr));
            continue;
        }
        assert_eq!(
            chars.next(),
            Some('['),
            "only CSI escapes expected: {line:?}"
        );
        let mut params = String::new();
        for c in chars.by_ref() {
            if c.is_ascii_alphabetic() {
                assert_eq!(c, 'm', "only SGR expected: {line:?}");
                break;
            }
            params.push(c);
        }
        let mut codes = params.split(';').map(|p| p.parse::<u8>().unwrap_or(0));
        while let Some(code) = codes.next() {
            match code {
                0 => attr = Attr::default(),
                1 => attr.bold = true,
                2 => attr.dim = true,
                22 => (attr.bold, attr.dim) = (false, false),
                30..=37 | 90..=97 => attr.fg = Some(code),
                39 => attr.fg = None,
                38 | 48 => {
                    // 38;5;n / 38;2;r;g;b
                    let skip = match codes.next() {
                        Some(5) => 1,
                        Some(2) => 3,
                        _ => 0,
                    };
                    codes.by_ref().take(skip).for_each(|_| {});
                }
                _ => {}
            }
        }
    }
    out
}

/// The attributes of the first character of `word` on the screen.
fn attr_of(screen: &str, word: &str) -> Attr {
    for line in screen.lines() {
        let cells = styled(line);
        let text: String = cells.iter().map(|(c, _)| c).collect();
        if let Some(at) = text.find(word) {
            let index = text[..at].chars().count();
            let attr = cells[index].1;
            // The whole word has one style.
            for (_, a) in &cells[index..index + word.chars().count()] {
                assert_eq!(*a, attr, "{word:?} is not in one style: {line:?}");
            }
            return attr;
        }
    }
    panic!("{word:?} is not on the screen:\n{screen}");
}

/// The screen without its escapes.
fn plain(screen: &str) -> String {
    screen
        .lines()
        .map(|l| styled(l).into_iter().map(|(c, _)| c).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

const RED: Option<u8> = Some(31);
const GREEN: Option<u8> = Some(32);

/// Three tasks: one exited 0, one exited 3, one labelled `api` running.
fn three_tasks(env: &Env) -> (String, String, String) {
    let ok = env.task_printing("fine\n");
    let failed = env.start(&["sh", "-c", "echo oops >&2; exit 3"]);
    env.wait_done(&failed);
    let running = env.start_with(&["--label", "api"], &["sleep", "300"]);
    (ok, failed, running)
}

#[test]
fn status_on_a_terminal_colours_state_words_by_meaning_and_ids_steadily() {
    let env = Env::new();
    let (ok, _, running) = three_tasks(&env);
    let pane = Pane::run(&env, 200, "bgt status");
    let screen = pane.finished();
    assert_eq!(attr_of(&screen, "exited 3").fg, RED, "{screen}");
    assert_eq!(attr_of(&screen, "exited 0").fg, GREEN, "{screen}");
    assert_eq!(attr_of(&screen, "running").fg, GREEN, "{screen}");
    assert!(attr_of(&screen, &ok).bold, "ids are bold: {screen}");
    assert!(attr_of(&screen, &running).bold, "{screen}");
    assert_eq!(attr_of(&screen, "api").fg, Some(36), "labels are cyan");
    // The rest is plain.
    assert_eq!(attr_of(&screen, "COMMAND"), Attr::default());
    assert_eq!(attr_of(&screen, "sleep 300"), Attr::default());
}

#[test]
fn no_colour_on_a_terminal_with_no_color_or_a_dumb_terminal_or_color_never() {
    let env = Env::new();
    let (_, failed, _) = three_tasks(&env);
    let script = format!(
        "NO_COLOR=1 bgt status\nTERM=dumb bgt status\nbgt status --color never\n\
         NO_COLOR=1 bgt status {failed}\nNO_COLOR=1 bgt output {failed} --filter oops"
    );
    let pane = Pane::run(&env, 200, &script);
    let screen = pane.finished();
    assert!(!screen.contains('\x1b'), "{screen:?}");
    assert_eq!(plain(&screen).matches("exited 3").count(), 4, "{screen}");
    assert!(screen.contains("1 of 1 lines (stderr)"), "{screen}");
    // An empty NO_COLOR does not count.
    let pane = Pane::run(&env, 200, "NO_COLOR= bgt status");
    assert_eq!(attr_of(&pane.finished(), "exited 3").fg, RED);
}

#[test]
fn piped_output_carries_no_escapes_unless_color_always() {
    let env = Env::new();
    let (_, failed, _) = three_tasks(&env);
    let id = env.task_printing("an error here\nERROR twice error\nfine\n");
    for args in [
        vec!["status"],
        vec!["status", &failed],
        vec!["output", &id, "--filter", "error"],
        vec![
            "output", &id, "--filter", "error", "--json", "--color", "always",
        ],
        vec!["status", "--json", "--color", "always"],
    ] {
        let out = env.run(&args);
        assert!(out.status.success(), "{args:?}");
        let all = [out.stdout, out.stderr].concat();
        assert!(!all.contains(&b'\x1b'), "{args:?}: {all:?}");
    }
    // --color always wins over NO_COLOR and the pipe.
    let out = env
        .cmd()
        .args(["status", "--color", "always"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("\x1b[31mexited 3\x1b[0m"), "{table:?}");
    let out = env
        .cmd()
        .args(["output", &id, "--filter", "error", "--color=always"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "an \x1b[1;31merror\x1b[0m here\n\x1b[1;31mERROR\x1b[0m twice \x1b[1;31merror\x1b[0m\n"
    );
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(summary.starts_with("\x1b[2m-- 2 of 3 lines"), "{summary:?}");
}

#[test]
fn a_filtered_read_on_a_terminal_highlights_exactly_the_matched_text() {
    let env = Env::new();
    let id = env.start(&[
        "sh",
        "-c",
        "echo 'an error here'; echo 'ERROR twice error'; echo fine; echo 'no luck: Errors' >&2",
    ]);
    env.wait_done(&id);
    let pane = Pane::run(&env, 200, &format!("bgt output {id} --filter 'error'"));
    let screen = pane.finished();
    let highlight = Attr {
        fg: RED,
        bold: true,
        dim: false,
    };
    let mut runs = Vec::new();
    for line in screen.lines() {
        let mut run = String::new();
        for (c, attr) in styled(line) {
            if attr == highlight {
                run.push(c);
            } else if !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
    }
    assert_eq!(runs, ["error", "ERROR", "error", "Error"], "{screen:?}");
    assert_eq!(attr_of(&screen, "an ").fg, None);
    assert!(attr_of(&screen, "stderr│").dim, "{screen:?}");
    assert!(attr_of(&screen, "-- 2 of 3 lines").dim, "{screen:?}");
}

/// A task labelled `api` that logs for `delay` seconds, then serves `port`.
fn slow_server(env: &Env, port: u16, delay: &str) -> String {
    let script = format!(
        "echo compiling step 1; sleep 1; echo compiling ./src/app.tsx; sleep {delay}; \
         exec python3 -m http.server {port} --bind 127.0.0.1"
    );
    env.start_with(&["--label", "api"], &["sh", "-c", &script])
}

/// The elapsed seconds in a live line (`... · 12s of 1m · ...`).
fn elapsed_of(line: &str) -> u64 {
    let time = line.split(" · ").nth(1).unwrap_or_default();
    time.split('s').next().unwrap().parse().unwrap_or(u64::MAX)
}

#[test]
fn wait_on_a_terminal_redraws_one_live_line_then_leaves_one_final_line() {
    let env = Env::new();
    let port = free_port();
    slow_server(&env, port, "2");
    let pane = Pane::run(
        &env,
        120,
        &format!("bgt wait api --for-port {port} --timeout 60s"),
    );
    // Every distinct live line seen, with the screen row it was on.
    let mut seen: Vec<(usize, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let screen = pane.screen();
        for (row, line) in plain(&screen).lines().enumerate() {
            if line.starts_with("waiting for") && seen.last().is_none_or(|(_, l)| l != line) {
                seen.push((row, line.trim_end().to_string()));
            }
        }
        if screen.contains("[exit ") {
            break screen;
        }
        assert!(Instant::now() < deadline, "wait did not end:\n{screen}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(seen.len() >= 2, "{seen:#?}");
    assert!(
        seen.iter().all(|(row, _)| *row == 0),
        "redrawn in place: {seen:#?}"
    );
    let times: Vec<u64> = seen.iter().map(|(_, l)| elapsed_of(l)).collect();
    assert!(times.is_sorted(), "{seen:#?}");
    assert!(times.last() > times.first(), "the clock ticks: {seen:#?}");
    for (_, line) in &seen {
        assert!(
            line.starts_with(&format!("waiting for api to listen on :{port} · ")),
            "{line}"
        );
        assert!(line.contains("s of 1m"), "{line}");
        assert!(line.chars().count() < 120, "cut to the width: {line}");
    }
    assert!(
        seen.iter()
            .any(|(_, l)| l.ends_with(" · compiling ./src/app.tsx")),
        "the task's latest log line: {seen:#?}"
    );
    // Erased, and replaced by one final line.
    let lines: Vec<String> = plain(&last)
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("bgt: api ready after "), "{lines:#?}");
    assert_eq!(lines[1], "[exit 0]");
}

#[test]
fn wait_in_a_pipe_writes_no_carriage_return_and_one_final_line() {
    let env = Env::new();
    let port = free_port();
    slow_server(&env, port, "0.5");
    let args = [
        "wait",
        "api",
        "--for-port",
        &port.to_string(),
        "--timeout",
        "30s",
    ];
    let out = env.run(&args);
    assert!(out.status.success());
    let all = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(!all.contains(&b'\r'), "{all:?}");
    assert!(!all.contains(&b'\x1b'), "{all:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("bgt: api ready after "), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    // --quiet: nothing at all on success.
    let mut quiet = args.to_vec();
    quiet.push("--quiet");
    let out = env.run(&quiet);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// CPU time (user + system) a live process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; fields[0] is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_long_wait_in_a_pipe_shows_a_line_every_10s_cheaply_and_quiet_silences_it() {
    let env = Env::new();
    let id = env.start_with(
        &["--label", "slow"],
        &["sh", "-c", "echo still working; sleep 12"],
    );
    let spawn = |extra: &[&str]| {
        env.cmd()
            .args(["wait", &id, "--timeout", "60s"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let loud = spawn(&[]);
    let quiet = spawn(&["--quiet"]);
    std::thread::sleep(Duration::from_secs(11));
    let ticks = cpu_ticks(loud.id());
    let (loud, quiet) = (
        loud.wait_with_output().unwrap(),
        quiet.wait_with_output().unwrap(),
    );
    assert_eq!(loud.status.code(), Some(0));
    let stderr = String::from_utf8(loud.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(
        lines[0],
        "bgt: waiting for slow to end · 10s of 1m · still working"
    );
    assert!(
        lines[1].starts_with("bgt: slow exited 0 after 1"),
        "{stderr}"
    );
    assert!(!stderr.contains('\r'));
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    // A liveness bound, not a benchmark: 11 s of waiting in a pipe costs
    // next to nothing (ticks are 10 ms).
    assert!(ticks <= 5, "{ticks} ticks of CPU");
}

#[test]
fn stop_on_a_terminal_shows_a_live_line_while_the_grace_period_runs() {
    let env = Env::new();
    env.start_with(
        &["--label", "stubborn"],
        &[
            "sh",
            "-c",
            "trap 'echo ignoring TERM' TERM; while :; do echo tick; sleep 0.2; done",
        ],
    );
    let pane = Pane::run(&env, 120, "bgt stop stubborn --grace 3s");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        assert!(Instant::now() < deadline, "stop did not end: {seen:#?}");
        let screen = plain(&pane.screen());
        if let Some(line) = screen.lines().find(|l| l.starts_with("stopping ")) {
            seen.push(line.trim_end().to_string());
        }
        if screen.contains("[exit ") {
            break screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        seen.iter()
            .any(|l| l.starts_with("stopping stubborn · 1s of 3s grace · ")),
        "{seen:#?}"
    );
    let lines: Vec<&str> = last
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].ends_with(" stopped"), "{lines:#?}");
}

#[test]
fn status_fits_the_terminal_and_cuts_only_the_command() {
    let env = Env::new();
    let long = format!("echo {}; sleep 300", "x".repeat(150));
    let id = env.start(&["sh", "-c", &long]);
    let pane = Pane::run(&env, 80, "bgt status");
    let screen = plain(&pane.finished());
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "no row wraps: {screen}");
    assert!(lines[1].starts_with(&id), "{screen}");
    assert!(lines[1].ends_with('…'), "{screen}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80), "{screen}");
    // Pipes, `status TASK` and --json keep the whole command.
    let full = format!("sh -c '{long}'");
    assert!(env.ok(&["status"]).contains(&full));
    assert!(env.ok(&["status", &id]).contains(&full));
    assert_eq!(env.status(&id)["command"], full.as_str());
}

#[test]
fn status_shows_when_tasks_started_and_short_runtimes() {
    let env = Env::new();
    let id = env.task_printing("x\n");
    let table = env.ok(&["status"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "LABEL", "STATE", "EXIT", "STARTED", "RUNTIME", "PID", "LINES", "COMMAND"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], id);
    // Started today: the time of day.
    let started = row[5];
    assert!(
        started.len() == 5 && started.as_bytes()[2] == b':',
        "{table}"
    );
    // Absolute local times with their age in the detail view.
    let detail = env.ok(&["status", &id]);
    let line = detail.lines().find(|l| l.starts_with("started")).unwrap();
    assert!(line.ends_with(" ago)"), "{detail}");
    // LEFT shows once some task has a timeout.
    env.start_with(&["--timeout", "1h"], &["sleep", "300"]);
    let table = env.ok(&["status"]);
    assert!(table.lines().next().unwrap().contains(" LEFT "), "{table}");
    assert!(table.contains(" 59m"), "{table}");
}

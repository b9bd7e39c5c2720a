//! Fault injection: killed supervisors and children, stubborn processes,
//! daemons, full and read-only disks, corrupt records, logs changing under
//! a reader. Status must never lie and nothing may hang or be lost.

use crate::util::{Env, alive, kill, poll_until, read_pid, whole_stdout};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn killed_supervisor_leaves_readable_logs() {
    let env = Env::new();
    let id = env.start(&["echo before; echo err >&2; sleep 300"]);
    poll_until(Duration::from_secs(5), || {
        env.status(&id)["stdout_lines"] == 1
    });
    kill(
        env.status(&id)["supervisor_pid"].as_i64().unwrap() as i32,
        "KILL",
    );
    poll_until(Duration::from_secs(5), || env.state(&id) == "lost");
    assert_eq!(env.ok(&["output", &id]), "before\nstderr│ err\n");
    let table = env.ok(&["status"]);
    assert!(table.contains("lost"), "{table}");
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    let env = Env::new();
    let ready = env.work().join("ready");
    let id = env.start(&[&format!(
        "trap '' TERM; touch {}; sleep 300",
        ready.display()
    )]);
    poll_until(Duration::from_secs(5), || ready.exists());
    let started = Instant::now();
    env.ok(&["stop", &id, "--grace", "1s"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    let done = env.status(&id);
    assert_eq!(done["state"], "stopped");
    assert_eq!(done["signal"], "SIGKILL");
}

#[test]
fn a_double_forked_daemon_is_found_and_killed() {
    let env = Env::new();
    let pidfile = env.work().join("daemon.pid");
    // The main process exits at once; the daemon re-parents to the supervisor.
    let script = format!(
        "(setsid sh -c 'sleep 300 & echo $! > {}' &) ; exit 0",
        pidfile.display()
    );
    let id = env.start(&[&script]);
    let daemon = read_pid(&pidfile);
    poll_until(Duration::from_secs(5), || env.status(&id)["exit_code"] == 0);
    let status = env.status(&id);
    assert_eq!(
        status["state"], "running",
        "a task with a live daemon is not done"
    );
    assert!(status["descendants"].as_u64().unwrap() >= 1);
    env.ok(&["stop", &id, "--grace", "1s"]);
    poll_until(Duration::from_secs(5), || !alive(daemon));
    let supervisor = status["supervisor_pid"].as_i64().unwrap() as i32;
    // The lock is released while the supervisor's exit is still under way.
    poll_until(Duration::from_secs(5), || !alive(supervisor));
}

/// A small tmpfs for the state directory, unmounted on drop.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is free with a file named `name`.
    pub(crate) fn fill(&self, name: &str) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k", "count=10000"])
            .arg(format!("of={}/{name}", self.path().display()))
            .output();
    }

    pub(crate) fn free_blocks(&self) -> u64 {
        nix::sys::statvfs::statvfs(self.path())
            .unwrap()
            .blocks_available()
    }

    fn remount(&self, opts: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    /// Unmounts, waiting a little for processes killed just before to let
    /// go of their files (a busy tmpfs cannot be unmounted), then detaching
    /// it lazily rather than leaving it mounted.
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(self.dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        for _ in 0..50 {
            if umount(false) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(40));
        }
        umount(true);
    }
}

#[test]
fn a_full_disk_fails_run_cleanly_and_readers_keep_working() {
    let Some(fs) = Tmpfs::mount("256k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let env = Env::at(fs.path().join("state"));
    let first = env.run(&["run", "--", "echo", "kept"]);
    assert!(first.status.success());
    let id = String::from_utf8(first.stdout).unwrap().trim().to_string();
    poll_until(Duration::from_secs(5), || {
        String::from_utf8_lossy(&env.run(&["status", &id]).stdout).contains("exited")
    });
    // A poller whose cursor exists before the disk fills.
    let flag = env.work().join("go");
    let script = format!(
        "echo one; while [ ! -e {} ]; do sleep 0.05; done; echo two",
        flag.display()
    );
    let poller = String::from_utf8(env.run(&["run", "--", &script]).stdout)
        .unwrap()
        .trim()
        .to_string();
    poll_until(Duration::from_secs(5), || {
        env.run(&["output", &poller]).stdout == b"one\n"
    });
    assert_eq!(env.ok(&["output", &poller, "--since"]), "one\n");
    fs.fill("fill");
    let out = env.run(&["run", "--", "echo", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let entries: Vec<String> = std::fs::read_dir(env.home())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .filter(|name: &String| !name.starts_with('.'))
        .collect();
    let mut kept = vec![id.clone(), poller.clone()];
    kept.sort();
    let mut entries = entries;
    entries.sort();
    assert_eq!(entries, kept, "no half-written task is left");
    assert!(env.run(&["status"]).status.success());
    assert_eq!(
        String::from_utf8_lossy(&env.run(&["output", &id]).stdout),
        "kept\n"
    );
    // Its line fits the log's block; its cursor moves on the full disk.
    std::fs::write(&flag, "").unwrap();
    poll_until(Duration::from_secs(5), || {
        env.ok(&["status", &poller]).contains("exited 0")
    });
    // What its end gave back (the spare's unused block, ...) is taken again.
    fs.fill("fill2");
    assert_eq!(env.ok(&["output", &poller, "--since"]), "two\n");
    assert_eq!(env.ok(&["output", &poller, "--since"]), "");
    // A new cursor needs a block: one line naming it, the lines still shown.
    let out = env.run(&["output", &poller, "--since", "--cursor", "new"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot save cursor 'new': No space left on device"),
        "{err}"
    );
    assert_eq!(out.stdout, b"one\ntwo\n");
}

#[test]
fn a_read_only_state_dir_fails_run_and_readers_keep_working() {
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let env = Env::at(fs.path().join("state"));
    let id = String::from_utf8(env.run(&["run", "--", "echo", "kept"]).stdout)
        .unwrap()
        .trim()
        .to_string();
    poll_until(Duration::from_secs(5), || {
        String::from_utf8_lossy(&env.run(&["status", &id]).stdout).contains("exited")
    });
    fs.remount("ro");
    let out = env.run(&["run", "--", "echo", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(String::from_utf8_lossy(&env.run(&["status"]).stdout).contains("exited 0"));
    assert_eq!(
        String::from_utf8_lossy(&env.run(&["output", &id]).stdout),
        "kept\n"
    );
    fs.remount("rw");
}

#[test]
fn corrupt_records_are_per_task_errors() {
    let env = Env::new();
    let good = env.start(&["echo fine"]);
    let broken: Vec<String> = (0..5).map(|_| env.start(&["true"])).collect();
    for id in broken.iter().chain([&good]) {
        env.wait_done(id);
    }
    let dirs: Vec<PathBuf> = broken.iter().map(|id| env.task_dir(id)).collect();
    let full = std::fs::read_to_string(dirs[0].join("meta.json")).unwrap();
    std::fs::write(dirs[0].join("meta.json"), &full[..full.len() / 2]).unwrap();
    std::fs::write(dirs[1].join("meta.json"), "").unwrap();
    std::fs::write(dirs[2].join("meta.json"), "[1, 2").unwrap();
    std::fs::write(
        dirs[3].join("meta.json"),
        full.replace("\"schema\": 1", "\"schema\": 99"),
    )
    .unwrap();
    std::fs::remove_file(dirs[4].join("meta.json")).unwrap();
    // A file named like a task is a broken task; anything else is not bgt's.
    std::fs::write(env.home().join("t-0000aa"), "hello").unwrap();
    std::fs::write(env.home().join("notes.txt"), "mine").unwrap();

    let table = env.ok(&["status"]);
    for reason in [
        "meta.json is not valid JSON",
        "meta.json is empty",
        "unknown schema version 99",
        "No such file or directory",
        "not a task directory",
    ] {
        assert!(table.contains(reason), "{reason} missing in:\n{table}");
    }
    assert!(table.contains(&good) && table.contains("exited 0"));
    assert_eq!(env.ok(&["output", &good]), "fine\n");
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let broken_count = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "broken")
        .count();
    assert_eq!(broken_count, 6);
    assert!(!table.contains("notes.txt"), "{table}");
    env.ok(&["cleanup"]);
    let mut left: Vec<String> = std::fs::read_dir(env.home())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["notes.txt"],
        "cleanup removes broken tasks, never what is not bgt's"
    );
}

#[test]
fn a_log_deleted_or_truncated_under_a_reader() {
    let env = Env::new();
    let id = env.start(&["i=0; while true; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done"]);
    poll_until(Duration::from_secs(5), || {
        env.status(&id)["stdout_lines"].as_u64().unwrap() > 20
    });
    env.output_json(&[&id, "--since"]);
    let log = env.task_dir(&id).join("stdout.log");
    // Truncate while the task keeps writing: the next read resets, no error.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    let doc = env.output_json(&[&id, "--since"]);
    assert_eq!(doc["stdout_meta"]["cursor_reset"], true);
    // Delete it: reads still succeed (an empty log), status too.
    std::fs::remove_file(&log).unwrap();
    let doc = env.output_json(&[&id, "--since"]);
    assert_eq!(doc["stdout_meta"]["total_lines"], 0);
    env.ok(&["status", &id]);
    // A follower keeps running through it and ends with the task.
    let mut follow = env
        .cmd()
        .args(["output", &id, "--follow"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    env.ok(&["stop", &id]);
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(143));
}

#[test]
fn a_supervisor_killed_at_any_moment_never_leaves_a_corrupt_record() {
    let env = Env::new();
    // Kill supervisors at staggered moments around their final write.
    for i in 0..30u64 {
        let id = env.start(&["true"]);
        let sup = env.status(&id)["supervisor_pid"].as_i64();
        std::thread::sleep(Duration::from_micros(i * 150));
        if let Some(sup) = sup {
            let _ = Command::new("kill")
                .args(["-KILL", &sup.to_string()])
                .status();
        }
        let state = env.wait_done(&id)["state"].as_str().unwrap().to_string();
        assert!(state == "exited" || state == "lost", "task {i}: {state}");
    }
    // Leftover temp files from an interrupted write do not confuse readers.
    let id = env.start(&["true"]);
    env.wait_done(&id);
    std::fs::write(env.task_dir(&id).join(".meta.json.4242.tmp"), "{garbage").unwrap();
    assert_eq!(env.state(&id), "exited");
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(doc["tasks"].as_array().unwrap().len(), 31);
    assert!(
        doc["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] != "broken")
    );
}

#[test]
fn a_planted_symlink_log_is_not_followed() {
    let env = Env::new();
    let id = env.task_printing("mine\n");
    let secret = env.file("secret.txt", "top secret\n");
    let log = env.task_dir(&id).join("stdout.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let out = env.run(&["output", &id, "--stream", "stdout"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("top secret"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symbolic links"), "{err}");
}

#[test]
fn a_50_mb_single_line_is_read_and_cut() {
    let env = Env::new();
    let id = env.start(&["head -c 52428800 /dev/zero | tr '\\0' a; echo; echo after"]);
    env.wait_done(&id);
    let doc = env.output_json(&[&id, "--stream", "stdout"]);
    let texts = Env::texts(&doc);
    assert_eq!(texts.len(), 2);
    assert!(
        texts[0].ends_with("…[+52428300 chars]"),
        "{}",
        &texts[0][490..]
    );
    assert_eq!(texts[1], "after");
    let tail = env.output_json(&[&id, "--tail", "2", "--stream", "stdout"]);
    assert_eq!(Env::texts(&tail), texts);
}

/// Large reads map the log instead of copying it; a log cut short while a
/// reader is inside it must end that read with an error (or a complete
/// answer, when the cut came late), never kill the reader with SIGBUS, and
/// never print the zeros that stand in for the vanished pages as lines.
#[test]
fn a_log_cut_short_under_a_mapped_reader_is_an_error_not_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let line = "GET /api/users/12345 200 in 13ms - ERROR maybe, WARN maybe, plain text\n";
    let big: String = line.repeat((48 << 20) / line.len());
    let source = env.file("big.log", &big);
    let id = env.start(&["cat", &source]);
    env.wait_done(&id);
    let log = env.task_dir(&id).join("stdout.log");
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..16u64 {
        std::fs::copy(&source, &log).unwrap();
        let reader = env
            .cmd()
            .args(whole_stdout(&id, &["--raw"]))
            .args(match round % 4 {
                0 => &["--filter", "ERROR"][..],
                // Searched on two cores, with context after each match.
                2 => &["--filter", "WARN", "--case-sensitive", "-C", "1"][..],
                _ => &[][..],
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + round * 7));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = reader.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            None,
            "round {round}: killed by a signal"
        );
        assert!(
            !out.stdout.contains(&0),
            "round {round}: zeros printed as text"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(1) => assert!(stderr.contains("log shrank while reading"), "{stderr}"),
            other => panic!("round {round}: exit {other:?}: {stderr}"),
        }
        *outcomes.entry(out.status.code()).or_insert(0) += 1;
    }
    eprintln!("outcomes (exit code: rounds): {outcomes:?}");
}

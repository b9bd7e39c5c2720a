//! The task lifecycle against an adversary: supervisors killed at any
//! moment, records rewritten under a live task, a full disk, a child that
//! signals its supervisor or turns into another user, odd umasks. Every
//! test checks the promise on real processes and kills what it started.

use crate::faults::Tmpfs;
use crate::util::{BGT, Env, alive, kill, poll_until, read_pid, succeeded};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// SIGKILLs the given pids when dropped (for processes the `Env` guard
/// cannot stop: a broken record, another state directory).
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .output();
            }
        }
    }
}

/// SIGKILLs, when dropped, every process of the tasks of a state directory
/// the `Env` guard does not know (found by their marker, see `marked_processes`).
struct KillTasksOnDrop(PathBuf);

impl Drop for KillTasksOnDrop {
    fn drop(&mut self) {
        let pids = marked_processes(&self.0).into_iter().map(|(pid, _)| pid);
        drop(KillOnDrop(pids.collect()));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// `bgt` with `args` against the state directory `home`.
fn bgt_at(home: &Path, args: &[&str]) -> Output {
    Command::new(BGT)
        .args(args)
        .env("BGT_HOME", home)
        .output()
        .unwrap()
}

/// Task ids of the live processes that carry a `BGT_TASK_ID` marker and
/// belong to the state directory `home`, with their pids.
fn marked_processes(home: &Path) -> Vec<(i32, String)> {
    let home_var = format!("BGT_HOME={}", home.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A supervisor forked by `bgt run` has the caller's environment (no
        // marker): it is known by the task lock it holds as fd 0.
        if let Some(id) = supervisor_of(home, pid) {
            if alive(pid) {
                found.push((pid, id));
            }
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&home_var) || !alive(pid) {
            continue;
        }
        if let Some(id) = vars.iter().find_map(|v| v.strip_prefix("BGT_TASK_ID=")) {
            found.push((pid, id.to_string()));
        }
    }
    found
}

/// The task whose supervisor `pid` is, if it is one of `home`'s: a
/// supervisor, forked or exec'd, holds its task's lock as fd 0.
fn supervisor_of(home: &Path, pid: i32) -> Option<String> {
    let lock = std::fs::read_link(format!("/proc/{pid}/fd/0")).ok()?;
    let dir = lock
        .strip_prefix(home)
        .ok()?
        .to_str()?
        .strip_suffix("/lock")?;
    Some(dir.to_string())
}

#[test]
fn cleanup_never_removes_a_running_task_whose_record_is_unreadable() {
    let env = Env::new();
    let id = env.start(&["sleep", "300"]);
    let status = env.status(&id);
    let supervisor = status["supervisor_pid"].as_i64().unwrap() as i32;
    let child = status["pid"].as_i64().unwrap() as i32;
    let _guard = KillOnDrop(vec![child, supervisor]);
    // A newer bgt rewrote the record.
    let meta = env.task_dir(&id).join("meta.json");
    let original = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, original.replace("\"schema\": 1", "\"schema\": 2")).unwrap();

    let shown = env.status(&id);
    assert_eq!(shown["state"], "broken");
    let reason = shown["error"].as_str().unwrap();
    assert!(reason.contains("supervisor still runs"), "{reason}");
    env.ok(&["cleanup"]);
    assert!(
        env.task_dir(&id).exists(),
        "a task with a live supervisor is kept"
    );
    assert!(alive(supervisor) && alive(child));
    let out = env.run(&["stop", &id]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a live broken task is not 'already ended'"
    );

    std::fs::write(&meta, original).unwrap();
    env.ok(&["stop", &id, "--grace", "200ms"]);
    assert!(!alive(child));
}

#[test]
fn a_lost_tasks_leftover_processes_are_kept_by_cleanup_and_killed_by_stop() {
    let env = Env::new();
    let in_session = env.work().join("in-session.pid");
    let left_session = env.work().join("left-session.pid");
    // The main process exits at once; one leftover stays in the task's
    // session, the other leaves it (setsid) but keeps the marker.
    let script = format!(
        "sleep 101 & echo $! > {}; setsid sleep 102 & echo $! > {}; exit 0",
        in_session.display(),
        left_session.display()
    );
    let id = env.start(&[&script]);
    let leftovers = [read_pid(&in_session), read_pid(&left_session)];
    let _guard = KillOnDrop(leftovers.to_vec());
    poll_until(Duration::from_secs(5), || env.status(&id)["exit_code"] == 0);
    kill(
        env.status(&id)["supervisor_pid"].as_i64().unwrap() as i32,
        "KILL",
    );
    poll_until(Duration::from_secs(5), || env.state(&id) == "lost");

    let report: serde_json::Value = serde_json::from_str(&env.ok(&["cleanup", "--json"])).unwrap();
    assert_eq!(report["removed"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["kept_running"][0]["id"], id.as_str());
    assert!(leftovers.iter().all(|p| alive(*p)));

    let out = env.ok(&["stop", &id, "--grace", "1s"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(
        leftovers.iter().all(|p| !alive(*p)),
        "every leftover is killed"
    );
    assert_eq!(env.state(&id), "stopped");
    // The final record gave back the space reserved for records.
    let reserved: Vec<_> = std::fs::read_dir(env.home().join(&id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".meta.json"))
        .collect();
    assert!(reserved.is_empty(), "{reserved:?}");
    env.ok(&["cleanup"]);
    assert!(!env.home().join(&id).exists());
}

/// Several `bgt stop` of a task whose supervisor is gone each write its
/// final record at once, as do several threads of one `bgt stop`; a reader polling `meta.json` meanwhile must only
/// ever see a whole record (the spare is taken by one writer alone: two
/// writing into it tore the record in 2 of 200 rounds).
#[test]
fn concurrent_stops_of_a_lost_task_never_show_a_torn_record() {
    let env = Env::new();
    let mut torn = Vec::new();
    for round in 0..20 {
        // Deaf to the stop signals: every stop waits out the same grace,
        // then all kill and write their records at about the same moment.
        let id = env.start(&["sh", "-c", "trap '' INT TERM; sleep 300"]);
        let status = env.status(&id);
        let child = status["pid"].as_i64().unwrap() as i32;
        let _guard = KillOnDrop(vec![child]);
        kill(status["supervisor_pid"].as_i64().unwrap() as i32, "KILL");
        poll_until(Duration::from_secs(5), || env.state(&id) == "lost");
        let meta = env.home().join(&id).join("meta.json");
        let mut stops: Vec<_> = ["INT", "TERM", "INT", "TERM"]
            .iter()
            .map(|signal| {
                env.cmd()
                    .args(["stop", "--grace", "200ms", "--signal", signal, &id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        while stops.iter_mut().any(|p| p.try_wait().unwrap().is_none()) {
            if let Ok(bytes) = std::fs::read(&meta)
                && serde_json::from_slice::<serde_json::Value>(&bytes).is_err()
            {
                torn.push((round, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        // Killed; reaped by whoever adopted it once the supervisor died.
        poll_until(Duration::from_secs(5), || !alive(child));
        assert_eq!(env.state(&id), "stopped", "round {round}");
    }
    assert!(torn.is_empty(), "torn reads: {torn:?}");
    // Several writers in one process (the same task named four times;
    // likewise two bg_stop calls at once in the MCP server) share no file.
    for round in 0..5 {
        let id = env.start(&["sleep", "300"]);
        let status = env.status(&id);
        let _guard = KillOnDrop(vec![status["pid"].as_i64().unwrap() as i32]);
        kill(status["supervisor_pid"].as_i64().unwrap() as i32, "KILL");
        poll_until(Duration::from_secs(5), || env.state(&id) == "lost");
        env.ok(&["stop", &id, &id, &id, &id]);
        assert_eq!(env.state(&id), "stopped", "round {round}");
    }
}

#[test]
fn a_process_older_than_the_task_is_never_taken_for_one_of_its_processes() {
    let env = Env::new();
    let pidfile = env.work().join("child.pid");
    let id = env.start(&[&format!("echo $$ > {}; exec sleep 300", pidfile.display())]);
    let child = read_pid(&pidfile);
    let _guard = KillOnDrop(vec![child]);
    kill(
        env.status(&id)["supervisor_pid"].as_i64().unwrap() as i32,
        "KILL",
    );
    poll_until(Duration::from_secs(5), || env.state(&id) == "lost");
    // Pretend the task started after its child: as if the pid and session
    // had been reused by a newer process.
    let meta = env.task_dir(&id).join("meta.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    let later = record["supervisor_start"].as_u64().unwrap() + 1_000_000;
    record["supervisor_start"] = later.into();
    std::fs::write(&meta, serde_json::to_vec(&record).unwrap()).unwrap();

    let out = env.ok(&["stop", &id]);
    assert!(out.contains("already ended (lost)"), "{out}");
    assert!(alive(child), "an unproven process is not signalled");
}

/// A 1 MiB-scale tmpfs holding a state directory, whose tasks are killed
/// when the test ends, however it ends: before it is unmounted (fields drop
/// in order, and a busy tmpfs cannot be).
struct SmallDisk {
    _guard: KillTasksOnDrop,
    fs: Tmpfs,
    state: PathBuf,
}

impl SmallDisk {
    /// None where no tmpfs can be mounted (not root): the test is skipped.
    fn mount(size: &str) -> Option<SmallDisk> {
        let Some(fs) = Tmpfs::mount(size) else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        };
        let state = fs.path().join("state");
        let _guard = KillTasksOnDrop(state.clone());
        Some(SmallDisk { _guard, fs, state })
    }

    /// Runs bgt on this state directory; its stdout, failing the test if it fails.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(&format!("bgt {args:?}"), bgt_at(&self.state, args))
    }

    fn status(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", id, "--json"])).unwrap()
    }
}

/// On a disk a task filled the moment it started (racing its own running
/// record, which failed `run` in CI): `run` answers, and records written
/// into space reserved earlier (running, final; paused, resumed and a main
/// process's exit under live descendants for a task whose reserves a pause
/// made while there was room) and every stop work. A pause is made only
/// with its resume's reserve in hand: with a reader holding old records
/// open and the disk refilled between the steps, a resume still works, and
/// a task never paused before is refused, not half paused. A restart, which
/// could stop the task but not start its successor, stops nothing. A task
/// queued behind another takes its place in line on the full disk.
#[test]
fn records_and_stops_need_no_free_disk_space() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let env = Env::new();
    let flag = env.work().join("go");
    let start = |script: &str| disk.ok(&["run", "--", script]).trim().to_string();
    let status = |id: &str| disk.status(id);
    let pause_and_resume = |id: &str, round: &str| {
        disk.ok(&["pause", id]);
        assert_eq!(status(id)["state"], "paused", "{round}");
        disk.ok(&["resume", id]);
        assert_eq!(status(id)["state"], "running", "{round}");
    };
    let wait_flag = format!("while [ ! -e {} ]; do sleep 0.05; done", flag.display());
    let ends = start(&format!("{wait_flag}; exit 3"));
    let pausable = start(&format!("sleep 300 & {wait_flag}; exit 4"));
    pause_and_resume(&pausable, "while there is room");
    // Its place in a queue is taken once `ends` ends, on the full disk.
    let queued = disk.ok(&["run", "--after", &ends, "--queue", "q", "--", "exit 7"]);
    let queued = queued.trim();

    let spammer = start("yes spam; sleep 300");
    let spammer_child = status(&spammer)["pid"].as_i64().unwrap() as i32;
    poll_until(Duration::from_secs(20), || disk.fs.free_blocks() == 0);
    // Each write frees the old record's block for the next reserve.
    for round in 0..3 {
        pause_and_resume(&pausable, &format!("full disk, round {round}"));
    }
    std::fs::write(&flag, "").unwrap();
    poll_until(Duration::from_secs(20), || {
        status(&ends)["state"] != "running"
    });
    let done = status(&ends);
    assert_eq!(done["state"], "exited", "{done}");
    assert_eq!(done["exit_code"], 3);
    poll_until(Duration::from_secs(20), || {
        !matches!(status(queued)["state"].as_str(), Some("queued" | "running"))
    });
    let done = status(queued);
    assert_eq!(done["state"], "exited", "{done}");
    assert_eq!(done["exit_code"], 7);
    poll_until(Duration::from_secs(20), || {
        status(&pausable)["exit_code"] == 4
    });
    assert_eq!(status(&pausable)["state"], "running");

    // A reader holds the old record open, so nothing is freed, and the disk
    // is refilled between the steps: the resume uses the pause's reserve.
    let meta = disk.state.join(&pausable).join("meta.json");
    let reader = std::fs::File::open(&meta).unwrap();
    disk.ok(&["pause", &pausable]);
    drop(reader);
    disk.fs.fill("refill1");
    let reader = std::fs::File::open(&meta).unwrap();
    disk.ok(&["resume", &pausable]);
    assert_eq!(status(&pausable)["state"], "running");
    drop(reader);
    disk.fs.fill("refill2");
    // The spammer was never paused: it has no reserve for a resume.
    let out = bgt_at(&disk.state, &["pause", &spammer]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not answer: its disk is full"), "{err}");
    assert_eq!(status(&spammer)["state"], "running");
    assert!(
        !std::fs::read_to_string(format!("/proc/{spammer_child}/stat"))
            .unwrap()
            .contains(") T "),
        "a refused pause stopped nothing"
    );

    // A restart would stop the task and then fail to start its successor.
    let out = bgt_at(&disk.state, &["restart", &pausable]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no room for a new task"), "{err}");
    assert!(err.contains("nothing was stopped"), "{err}");
    assert_eq!(status(&pausable)["state"], "running");

    for id in [&spammer, &pausable] {
        disk.ok(&["stop", id, "--grace", "1s"]);
        let stopped = status(id);
        assert_eq!(stopped["state"], "stopped", "{stopped}");
    }
    assert_eq!(status(&spammer)["signal"], "SIGTERM");
    assert_eq!(status(&pausable)["exit_code"], 4);
    assert!(!alive(spammer_child));
}

/// A bounded log over its limit on a disk its task filled is still freed:
/// the record of what is dropped must be written before the punch, and it
/// goes into space reserved once the log grew past half its limit.
#[test]
fn a_bounded_log_is_freed_on_a_disk_its_task_filled() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let env = Env::new();
    let flag = env.work().join("go");
    // 1.2 MB of log (reserved for, and freed while there is room), then on
    // the flag 1 MB more and the disk filled at once.
    let script = format!(
        "head -c 1200000 /dev/zero | tr '\\0' x | fold -w 99; \
         while [ ! -e {flag} ]; do sleep 0.05; done; \
         head -c 1000000 /dev/zero | tr '\\0' y | fold -w 99; \
         cat /dev/zero > {fill} 2>/dev/null; exec sleep 300",
        flag = flag.display(),
        fill = disk.fs.path().join("fill").display()
    );
    let id = disk.ok(&["run", "--max-log-size", "512K", "--", &script]);
    let id = id.trim();
    let dropped = || disk.status(id)["stdout_dropped_bytes"].as_u64().unwrap();
    poll_until(Duration::from_secs(20), || dropped() > 0);
    let before = dropped();
    std::fs::write(&flag, "").unwrap();
    poll_until(Duration::from_secs(20), || dropped() > before);
    assert!(disk.fs.free_blocks() > 0, "the punch gave space back");
    // 1,000,000 bytes folded at 99: the last line holds the last byte.
    assert_eq!(disk.ok(&["output", id, "--tail", "1", "--raw"]), "y\n");
}

#[test]
fn signals_from_the_task_neither_end_nor_stop_its_supervisor() {
    let env = Env::new();
    // Every signal whose default action would end or suspend the
    // supervisor, and the two that stop the task when they come from
    // outside, sent by the child itself and by a grandchild.
    let signals = "HUP INT QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM TERM \
                   STKFLT TSTP TTIN TTOU XCPU XFSZ VTALRM PROF IO PWR SYS";
    let script = format!(
        "for s in {signals}; do kill -$s $PPID; sh -c 'kill -$1 $2; sleep 0.05' x $s $PPID; done; \
         sleep 0.5; exit 0"
    );
    let id = env.start(&[&script]);
    let done = env.wait_done(&id);
    assert_eq!(done["state"], "exited", "{done}");
    assert_eq!(done["exit_code"], 0);
}

#[test]
fn a_stop_request_from_bgt_inside_the_task_is_honoured() {
    let env = Env::new();
    let id = env.start_with(
        &["--env", &format!("BGT={BGT}")],
        &["\"$BGT\" stop \"$BGT_TASK_ID\" --grace 1s; sleep 300"],
    );
    let done = env.wait_done(&id);
    assert_eq!(done["state"], "stopped", "{done}");
}

#[test]
fn sigterm_to_the_supervisor_from_outside_stops_the_task() {
    let env = Env::new();
    let id = env.start(&["sleep", "300"]);
    kill(
        env.status(&id)["supervisor_pid"].as_i64().unwrap() as i32,
        "TERM",
    );
    let done = env.wait_done(&id);
    assert_eq!(done["state"], "stopped", "{done}");
    assert_eq!(done["signal"], "SIGTERM");
}

#[test]
fn the_child_starts_with_no_blocked_or_ignored_signals() {
    let env = Env::new();
    // A caller that ignores SIGHUP and SIGCHLD (nohup-like) must not pass it on.
    let out = Command::new("sh")
        .args([
            "-c",
            "trap '' HUP CHLD; exec \"$0\" run -- cat /proc/self/status",
            BGT,
        ])
        .env("BGT_HOME", env.home())
        .output()
        .unwrap();
    let id = succeeded("run", out).trim().to_string();
    assert_eq!(env.wait_done(&id)["exit_code"], 0);
    let status = env.ok(&["output", &id]);
    for field in ["SigBlk", "SigIgn"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
}

#[test]
fn run_never_reports_a_failed_start_for_a_command_that_runs() {
    let env = Env::new();
    let home = env.home().to_path_buf();
    let mut printed = HashSet::new();
    let mut failed = 0;
    for round in 0..20u64 {
        // A killer that SIGKILLs this state directory's supervisors as soon
        // as they appear, after a varying delay.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = {
            let stop = stop.clone();
            let home = home.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                            continue;
                        };
                        if supervisor_of(&home, pid).is_some() {
                            std::thread::sleep(Duration::from_micros(round * 50));
                            let _ = Command::new("kill")
                                .args(["-KILL", &entry.file_name().to_string_lossy()])
                                .output();
                        }
                    }
                }
            })
        };
        let out = env.run(&["run", "--", "sleep", "300"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        killer.join().unwrap();
        if out.status.success() {
            printed.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
        } else {
            failed += 1;
        }
    }
    let untracked: Vec<_> = marked_processes(&home)
        .into_iter()
        .filter(|(_, id)| !printed.contains(id))
        .collect();
    let _guard = KillOnDrop(untracked.iter().map(|(pid, _)| *pid).collect());
    eprintln!("{failed} of 20 runs failed; {} printed", printed.len());
    assert!(untracked.is_empty(), "untracked processes: {untracked:?}");
}

#[test]
fn stop_does_not_claim_success_while_a_process_it_may_not_kill_survives() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (to switch users and make a setuid helper)");
        return;
    }
    // bgt runs as one unprivileged user; its child becomes another through
    // a setuid-root copy of setpriv, so bgt gets EPERM when it signals it.
    let (runner, other) = ("65533", "65534");
    let base = tempfile::tempdir().unwrap();
    let chown = |path: &Path, uid: &str| {
        assert!(
            Command::new("chown")
                .arg(format!("{uid}:{uid}"))
                .arg(path)
                .status()
                .unwrap()
                .success()
        );
    };
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper = base.path().join("setpriv-suid");
    std::fs::copy("/usr/bin/setpriv", &helper).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let home = base.path().join("state");
    let work = base.path().join("work");
    for dir in [&home, &work] {
        std::fs::create_dir(dir).unwrap();
        chown(dir, runner);
    }
    let as_runner = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .args([
                &format!("--reuid={runner}"),
                &format!("--regid={runner}"),
                "--clear-groups",
                BGT,
            ])
            .args(args)
            .env("BGT_HOME", &home)
            .output()
            .unwrap()
    };
    let _tasks = KillTasksOnDrop(home.clone());
    let pidfile = work.join("pid");
    let script = format!(
        "echo $$ > {}; exec {} --reuid={other} --regid={other} --clear-groups sleep 300",
        pidfile.display(),
        helper.display()
    );
    let id = succeeded("run", as_runner(&["run", "--", &script]))
        .trim()
        .to_string();
    let child = read_pid(&pidfile);
    let status = |id: &str| -> serde_json::Value {
        serde_json::from_str(&succeeded("status", as_runner(&["status", id, "--json"]))).unwrap()
    };
    let supervisor = status(&id)["supervisor_pid"].as_i64().unwrap() as i32;
    let _guard = KillOnDrop(vec![child, supervisor]);
    poll_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{child}/status")).is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.contains(other))
        })
    });

    let out = as_runner(&["stop", &id, "--grace", "200ms"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "pid {child} (sleep) survives: Operation not permitted"
        )),
        "{err}"
    );
    assert_eq!(status(&id)["state"], "running");
    assert!(alive(child));

    // Once it is gone (root may kill it), the supervisor records the stop.
    kill(child, "KILL");
    poll_until(Duration::from_secs(10), || {
        status(&id)["state"] == "stopped"
    });
}

/// Modes of everything under `dir`, as `(path, mode)`.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        found.push((entry.path(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            found.extend(modes(&entry.path()));
        }
    }
    found
}

#[test]
fn files_are_private_whatever_the_umask_and_the_child_gets_the_callers() {
    let env = Env::new();
    for umask in ["000", "0277"] {
        let home = env.home().join(format!("state-{umask}"));
        let in_umask = |args: &str| -> String {
            let out = Command::new("sh")
                .args(["-c", &format!("umask {umask}; exec \"$0\" {args}"), BGT])
                .env("BGT_HOME", &home)
                .current_dir(env.work())
                .output()
                .unwrap();
            succeeded(args, out)
        };
        let id = in_umask("run -- sh -c umask").trim().to_string();
        let _ = in_umask(&format!("wait {id}"));
        let _ = in_umask(&format!("output {id} --since"));
        let shown = in_umask(&format!("output {id}"));
        assert_eq!(
            shown.trim(),
            format!("{:0>4}", umask.trim_start_matches('0'))
        );
        let root_mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o7777;
        assert_eq!(root_mode, 0o700, "state directory under umask {umask}");
        for (path, mode) in modes(&home) {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{} under umask {umask}", path.display());
        }
    }
}

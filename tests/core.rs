//! The process model: run, status, stop, cleanup, states, resolution.

use crate::util::{Env, alive, kill, poll_until, read_pid, succeeded};
use std::time::{Duration, Instant};

#[test]
fn exit_codes_are_recorded() {
    let env = Env::new();
    let ok = env.start(&["sh", "-c", "exit 0"]);
    let bad = env.start(&["sh", "-c", "exit 7"]);
    let ok = env.wait_done(&ok);
    let bad = env.wait_done(&bad);
    assert_eq!(ok["state"], "exited");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(bad["state"], "exited");
    assert_eq!(bad["exit_code"], 7);
}

#[test]
fn several_words_are_argv_not_shell() {
    let env = Env::new();
    let id = env.start(&["printf", "%s\\n", "a b", "$HOME"]);
    env.wait_done(&id);
    assert_eq!(
        env.ok(&["output", &id, "--stream", "stdout", "--raw"]),
        "a b\n$HOME\n"
    );
}

#[test]
fn one_word_with_shell_syntax_runs_through_sh() {
    let env = Env::new();
    let id = env.start(&["echo $((1+2)) | tr 3 x"]);
    env.wait_done(&id);
    assert_eq!(env.ok(&["output", &id, "--stream", "stdout"]), "x\n");
    assert_eq!(env.status(&id)["argv"][0], "sh");
}

#[test]
fn captured_run_returns_at_once() {
    let env = Env::new();
    let started = Instant::now();
    let out = env
        .sh("id=$($BGT run -- sleep 30); echo $id")
        .output()
        .unwrap();
    // The task sleeps 30 s; the capture must not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(id.starts_with("t-"), "{id}");
    assert_eq!(env.state(&id), "running");
}

#[test]
fn task_survives_the_calling_shell() {
    let env = Env::new();
    let out = env
        .sh("$BGT run --label keep -- sleep 30; exit 0")
        .output()
        .unwrap();
    assert!(out.status.success());
    // The shell is gone; the task still runs, in its own session.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.state("keep"), "running");
    let pid = env.status("keep")["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
    let sid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = sid.rsplit(')').next().unwrap().split_whitespace().collect();
    assert_ne!(
        fields[3],
        std::process::id().to_string(),
        "task must not share our session"
    );
}

#[test]
fn task_survives_a_hangup_of_its_caller() {
    let env = Env::new();
    let id = env.start(&["sleep", "30"]);
    let supervisor = env.status(&id)["supervisor_pid"].as_i64().unwrap() as i32;
    kill(supervisor, "HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.state(&id), "running");
}

#[test]
fn stdout_and_stderr_land_in_separate_logs() {
    let env = Env::new();
    let id = env.start(&["echo out; echo err >&2"]);
    env.wait_done(&id);
    assert_eq!(env.ok(&["output", &id, "--stream", "stdout"]), "out\n");
    assert_eq!(env.ok(&["output", &id, "--stream", "stderr"]), "err\n");
    let dir = env.task_dir(&id);
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
        "out\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr.log")).unwrap(),
        "err\n"
    );
}

#[test]
fn env_and_cwd_apply_to_the_child() {
    let env = Env::new();
    let cwd = env.work().to_str().unwrap().to_string();
    let id = env.start_with(
        &["--cwd", &cwd, "--env", "GREETING=hi there"],
        &["pwd; echo \"$GREETING\""],
    );
    env.wait_done(&id);
    let out = env.ok(&["output", &id, "--stream", "stdout"]);
    let real = std::fs::canonicalize(&cwd).unwrap();
    assert_eq!(out, format!("{}\nhi there\n", real.display()));
}

#[test]
fn start_errors_reach_the_caller_and_leave_no_task() {
    let env = Env::new();
    let err = env.fails(&["run", "--", "nosuchprog-xyz"], 1);
    assert_eq!(
        err.trim(),
        "bgt: cannot start 'nosuchprog-xyz': No such file or directory"
    );
    let err = env.fails(&["run", "--cwd", "/no/such/dir", "--", "true"], 1);
    assert_eq!(
        err.trim(),
        "bgt: cannot use --cwd '/no/such/dir': No such file or directory"
    );
    let script = env.file("not-exec.sh", "echo hi\n");
    let err = env.fails(&["run", "--", &script], 1);
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(err.lines().count(), 1);
    assert_eq!(env.ok(&["status"]).trim(), "no tasks");
}

/// The command starts as a shell's `execvp` would start it: its own PATH
/// searched, a relative program found from its working directory, a script
/// without `#!` run by `sh`, a directory or a missing program refused.
#[test]
fn commands_start_as_execvp_would_start_them() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let bin = env.work().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = |name: &str, text: &str| {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    tool("bgt-test-tool", "#!/bin/sh\necho tool \"$@\" in \"$PWD\"\n");
    tool("bgt-test-plain", "echo plain \"$1\"\n");
    let task_path = format!("PATH={}:/usr/bin:/bin", bin.display());
    let bin_dir = bin.to_str().unwrap();
    let output = |options: &[&str], words: &[&str]| {
        let id = env.start_with(options, words);
        assert_eq!(env.wait_done(&id)["exit_code"], 0, "{words:?}");
        env.ok(&["output", &id, "--raw"])
    };
    let real = std::fs::canonicalize(&bin).unwrap();
    let work = env.work().to_str().unwrap();
    assert_eq!(
        output(
            &["--env", &task_path, "--cwd", work],
            &["bgt-test-tool", "a b"]
        ),
        format!(
            "tool a b in {}\n",
            env.work().canonicalize().unwrap().display()
        )
    );
    assert_eq!(
        output(&["--cwd", bin_dir], &["./bgt-test-tool", "x"]),
        format!("tool x in {}\n", real.display())
    );
    assert_eq!(
        output(&[], &[bin.join("bgt-test-plain").to_str().unwrap(), "y"]),
        "plain y\n"
    );
    assert_eq!(
        output(&["--env", &task_path], &["bgt-test-plain", "z"]),
        "plain z\n"
    );
    // Not on the caller's PATH: only the task's own PATH finds it.
    let err = env.fails(&["run", "--", "bgt-test-tool"], 1);
    assert_eq!(
        err.trim(),
        "bgt: cannot start 'bgt-test-tool': No such file or directory"
    );
    let err = env.fails(&["run", "--", bin_dir], 1);
    assert!(err.contains("Permission denied"), "{err}");
    let err = env.fails(&["run", "--env", "PATH=/nowhere", "--", "true"], 1);
    assert_eq!(
        err.trim(),
        "bgt: cannot start 'true': No such file or directory"
    );

    // As execvp: a file whose `#!` names a missing interpreter is passed
    // over for the next directory's, and the `#!`-less one found there is
    // the one the shell runs, whichever PATH (the caller's or the task's).
    let other = env.work().join("bin2");
    std::fs::create_dir(&other).unwrap();
    tool("bgt-test-twice", "#!/nonexistent/interpreter\necho wrong\n");
    std::fs::write(other.join("bgt-test-twice"), "echo right \"$1\"\n").unwrap();
    std::fs::set_permissions(
        other.join("bgt-test-twice"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let both = format!("{}:{}:/usr/bin:/bin", bin.display(), other.display());
    assert_eq!(
        output(
            &["--env", &format!("PATH={both}")],
            &["bgt-test-twice", "a"]
        ),
        "right a\n"
    );
    let out = env
        .cmd()
        .env("PATH", &both)
        .args(["run", "--", "bgt-test-twice", "b"])
        .output()
        .unwrap();
    let id = succeeded("run", out).trim().to_string();
    env.wait_done(&id);
    assert_eq!(env.ok(&["output", &id, "--raw"]), "right b\n");
    // A file that is there but not executable is "permission denied".
    std::fs::write(bin.join("bgt-test-plain-file"), "echo no\n").unwrap();
    let err = env.fails(
        &["run", "--env", &task_path, "--", "bgt-test-plain-file"],
        1,
    );
    assert!(err.contains("Permission denied"), "{err}");
    // Any other error ends the search, as in execvp: a symlink loop
    // earlier in PATH is not passed over for /usr/bin's program.
    let looping = env.work().join("loop");
    std::fs::create_dir(&looping).unwrap();
    std::os::unix::fs::symlink(looping.join("true"), looping.join("true")).unwrap();
    let err = env.fails(
        &[
            "run",
            "--env",
            &format!("PATH={}:/usr/bin:/bin", looping.display()),
            "--",
            "true",
        ],
        1,
    );
    assert!(err.contains("symbolic links"), "{err}");
    // The task's marker is its own, whatever --env says (its processes are
    // found by it).
    let id = env.start_with(
        &["--env", "BGT_TASK_ID=not-mine"],
        &["sh", "-c", "env | grep -c ^BGT_TASK_ID=; echo $BGT_TASK_ID"],
    );
    env.wait_done(&id);
    assert_eq!(env.ok(&["output", &id, "--raw"]), format!("1\n{id}\n"));
}

#[test]
fn stop_kills_the_whole_tree_including_a_setsid_grandchild() {
    let env = Env::new();
    let gc = env.work().join("gc.pid");
    let main = env.work().join("main.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {gc}; exec sleep 300' & echo $$ > {main}; sleep 300",
        gc = gc.display(),
        main = main.display()
    );
    let id = env.start(&[&script]);
    let (gc, main) = (read_pid(&gc), read_pid(&main));
    assert!(alive(gc) && alive(main));
    let out = env.ok(&["stop", &id, "--grace", "2s"]);
    assert!(out.contains("stopped"), "{out}");
    poll_until(Duration::from_secs(5), || !alive(gc) && !alive(main));
    assert_eq!(env.state(&id), "stopped");
}

#[test]
fn stop_is_idempotent() {
    let env = Env::new();
    let id = env.start(&["sleep", "30"]);
    env.ok(&["stop", &id]);
    let again = env.ok(&["stop", &id]);
    assert!(again.contains("already ended"), "{again}");
    assert_eq!(env.state(&id), "stopped");
}

#[test]
fn killing_the_supervisor_makes_the_task_lost_and_stop_still_kills_the_child() {
    let env = Env::new();
    let id = env.start(&["sleep", "300"]);
    let status = env.status(&id);
    let supervisor = status["supervisor_pid"].as_i64().unwrap() as i32;
    let child = status["pid"].as_i64().unwrap() as i32;
    kill(supervisor, "KILL");
    poll_until(Duration::from_secs(5), || env.state(&id) == "lost");
    assert!(alive(child), "the orphan keeps running until stopped");
    let out = env.ok(&["stop", &id, "--grace", "1s"]);
    assert!(out.contains("orphan"), "{out}");
    poll_until(Duration::from_secs(5), || !alive(child));
    assert_eq!(env.state(&id), "stopped");
}

#[test]
fn killing_the_child_is_signaled_sigkill() {
    let env = Env::new();
    let id = env.start(&["sleep", "300"]);
    let child = env.status(&id)["pid"].as_i64().unwrap() as i32;
    kill(child, "KILL");
    let done = env.wait_done(&id);
    assert_eq!(done["state"], "signaled");
    assert_eq!(done["signal"], "SIGKILL");
    assert_eq!(done["exit_code"], 137);
}

#[test]
fn descendants_keep_a_task_running_and_are_shown() {
    let env = Env::new();
    let id = env.start(&["sleep 300 & exit 0"]);
    poll_until(Duration::from_secs(5), || env.status(&id)["exit_code"] == 0);
    let status = env.status(&id);
    assert_eq!(status["state"], "running");
    assert_eq!(status["descendants"], 1);
    let table = env.ok(&["status"]);
    assert!(
        table.contains("exited 0 (+1 descendant running)"),
        "{table}"
    );
    env.ok(&["stop", &id]);
    assert_eq!(env.state(&id), "stopped");
}

#[test]
fn timeout_stops_the_tree() {
    let env = Env::new();
    let id = env.start_with(&["--timeout", "500ms"], &["sleep", "30"]);
    let status = env.status(&id);
    assert_eq!(status["timeout_ms"], 500);
    let done = env.wait_done(&id);
    assert_eq!(done["state"], "timed-out");
}

#[test]
fn cleanup_removes_finished_tasks_only() {
    let env = Env::new();
    let done = env.start(&["true"]);
    let running = env.start(&["sleep", "30"]);
    env.wait_done(&done);
    let out = env.ok(&["cleanup"]);
    assert!(out.contains(&format!("removed {done}")), "{out}");
    let left = env.ok(&["status"]);
    assert!(!left.contains(&done) && left.contains(&running), "{left}");
}

#[test]
fn tasks_resolve_by_label_prefix_and_report_ambiguity() {
    let env = Env::new();
    let first = env.start_with(&["--label", "web"], &["true"]);
    env.wait_done(&first);
    let second = env.start_with(&["--label", "web"], &["true"]);
    env.wait_done(&second);
    assert_eq!(
        env.status("web")["id"],
        second.as_str(),
        "label resolves to the newest"
    );
    assert_eq!(
        env.status(&first[2..6])["id"],
        first.as_str(),
        "id prefix without t-"
    );
    let err = env.fails(&["status", "t-"], 1);
    assert!(
        err.contains("ambiguous") && err.contains(&first) && err.contains(&second),
        "{err}"
    );
    let err = env.fails(&["status", "nope"], 1);
    assert_eq!(err.trim(), "bgt: no task matches 'nope' (see `bgt status`)");
}

/// A copy of finished task `id`'s directory under the name `new` (which bgt
/// would not choose itself): its record renamed with it.
fn clone_task(env: &Env, id: &str, new: &str) {
    let (from, to) = (env.task_dir(id), env.home().join(new));
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    let meta = to.join("meta.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    doc["id"] = new.into();
    std::fs::write(&meta, doc.to_string()).unwrap();
}

#[test]
fn a_prefix_leaving_two_digits_open_is_looked_up_among_its_completions() {
    // Four or five of an id's six digits are looked up as the at most 256
    // ids they can start; every task those name counts, so ambiguity is
    // still seen. An id of another length (never made by bgt) is found
    // when no six-digit id matches.
    let env = Env::new();
    let seed = env.start(&["true"]);
    env.wait_done(&seed);
    for id in ["t-12345a", "t-12345b", "t-1234ff", "t-abcdef01"] {
        clone_task(&env, &seed, id);
    }
    assert_eq!(env.status("12345a")["id"], "t-12345a");
    assert_eq!(env.status("t-1234f")["id"], "t-1234ff");
    for (prefix, ids) in [
        ("12345", &["t-12345a", "t-12345b"][..]),
        ("1234", &["t-12345a", "t-12345b", "t-1234ff"]),
        ("t-1234", &["t-12345a", "t-12345b", "t-1234ff"]),
    ] {
        let err = env.fails(&["status", prefix], 1);
        assert!(err.contains("ambiguous"), "{prefix}: {err}");
        for id in ids {
            assert!(err.contains(id), "{prefix} names {id}: {err}");
        }
    }
    assert_eq!(env.status("abcde")["id"], "t-abcdef01", "a longer id");
    let err = env.fails(&["status", "ABCDE"], 1);
    assert!(err.contains("no task matches"), "ids are lowercase: {err}");
}

#[test]
fn path_traversal_labels_are_rejected() {
    let env = Env::new();
    for label in ["../x", "a/b", "", ".hidden", "a\nb"] {
        let err = env.fails(&["run", "--label", label, "--", "true"], 2);
        assert!(err.contains("invalid label"), "{label:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn corrupt_meta_shows_as_broken_and_others_still_list() {
    let env = Env::new();
    let good = env.start(&["true"]);
    let bad = env.start(&["true"]);
    env.wait_done(&good);
    env.wait_done(&bad);
    std::fs::write(env.task_dir(&bad).join("meta.json"), "{ not json").unwrap();
    let table = env.ok(&["status"]);
    assert!(
        table.contains(&good) && table.contains("exited 0"),
        "{table}"
    );
    assert!(
        table.contains(&bad) && table.contains("broken: meta.json is not valid JSON"),
        "{table}"
    );
    let err = env.fails(&["output", &bad], 1);
    assert!(err.contains("broken"), "{err}");
    env.ok(&["cleanup"]);
    assert!(!env.home().join(&bad).exists());
}

#[test]
fn status_json_has_the_documented_fields() {
    let env = Env::new();
    let id = env.start_with(&["--label", "j", "--timeout", "1h"], &["sleep", "30"]);
    let s = env.status(&id);
    for key in [
        "id",
        "label",
        "state",
        "exit_code",
        "signal",
        "descendants",
        "command",
        "argv",
        "cwd",
        "pid",
        "supervisor_pid",
        "created",
        "started",
        "ended",
        "runtime_ms",
        "timeout_ms",
        "timeout_left_ms",
        "stdout_lines",
        "stderr_lines",
        "dir",
        "error",
    ] {
        assert!(s.get(key).is_some(), "missing {key}");
    }
    assert!(s["timeout_left_ms"].as_u64().unwrap() > 3_500_000);
    let all: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(all["tasks"][0]["id"], id.as_str());
}

#[test]
fn run_json_prints_id_pid_and_dir() {
    let env = Env::new();
    let out = env.ok(&["run", "--json", "--label", "x", "--", "sleep", "30"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["id"].as_str().unwrap().starts_with("t-"));
    assert_eq!(doc["label"], "x");
    assert!(doc["pid"].as_u64().unwrap() > 0);
    assert!(
        std::path::Path::new(doc["dir"].as_str().unwrap())
            .join("meta.json")
            .exists()
    );
}

#[test]
fn stop_older_than_and_all() {
    let env = Env::new();
    let a = env.start(&["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(1200));
    let b = env.start(&["sleep", "30"]);
    env.ok(&["stop", "--older-than", "1s"]);
    assert_eq!(env.state(&a), "stopped");
    assert_eq!(env.state(&b), "running");
    env.ok(&["stop", "--all"]);
    assert_eq!(env.state(&b), "stopped");
}

#[test]
fn state_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // bgt never changes the mode of a state directory it did not create.
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = env.start(&["echo hi"]);
    env.wait_done(&id);
    let dir = env.task_dir(&id);
    assert_eq!(mode(env.home()), 0o755);
    assert_eq!(mode(&dir), 0o700);
    for f in ["meta.json", "stdout.log", "stderr.log", "lock"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

#[test]
fn a_relative_state_dir_works_and_the_supervisor_leaves_the_callers_directory() {
    let env = Env::new();
    // BGT_HOME as a relative path that names the test's own state directory,
    // so the drop guard still stops the task.
    let parent = env.home().parent().unwrap().to_path_buf();
    let relative = env.home().file_name().unwrap().to_owned();
    let out = env
        .cmd()
        .args(["run", "--", "sleep", "30"])
        .env("BGT_HOME", &relative)
        .current_dir(&parent)
        .output()
        .unwrap();
    let id = crate::util::succeeded("bgt run", out).trim().to_string();
    let status = env.status(&id);
    assert_eq!(status["state"], "running");
    assert!(std::path::Path::new(status["dir"].as_str().unwrap()).is_absolute());
    let supervisor = status["supervisor_pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{supervisor}/cwd")).unwrap(),
        std::path::Path::new("/")
    );
}

#[test]
fn the_supervisor_is_one_small_thread_holding_no_caller_fds() {
    let env = Env::new();
    // The caller leaks an fd (as a CI runner's pipe would be) to bgt run.
    let leaked = env.work().join("leaked");
    let out = env
        .sh(&format!(
            "exec 7>{}; $BGT run -- sleep 30",
            leaked.display()
        ))
        .output()
        .unwrap();
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let supervisor = env.status(&id)["supervisor_pid"].as_i64().unwrap();
    let child = env.status(&id)["pid"].as_i64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap();
    assert!(
        proc_status.lines().any(|l| l == "Threads:\t1"),
        "no async runtime, no threads"
    );
    // stdin/stdout/stderr on /dev/null, then the lock, the signalfd and the task directory only.
    let fds = crate::util::supervisor_fds(supervisor);
    assert_eq!(
        fds.iter().filter(|f| *f == "/dev/null").count(),
        3,
        "{fds:?}"
    );
    assert!(fds.iter().any(|f| f.ends_with("/lock")), "{fds:?}");
    // ... and the task directory it works in by descriptor.
    assert!(fds.iter().any(|f| f.ends_with(&id)), "{fds:?}");
    // ... and, for the log size limit, both logs (to free their oldest blocks).
    // None of `bgt run`'s own descriptors either (a forked supervisor starts
    // with all of them): the state directory, the report pipe's read end.
    let home = env.home().canonicalize().unwrap();
    assert!(
        !fds.iter()
            .any(|f| std::path::Path::new(f) == home || f.starts_with("pipe:")),
        "{fds:?}"
    );
    assert_eq!(fds.len(), 8, "{fds:?}");
    for pid in [supervisor, child] {
        let holds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .any(|e| std::fs::read_link(e.unwrap().path()).is_ok_and(|t| t == leaked));
        assert!(!holds, "process {pid} holds the caller's fd");
    }
}

//! Ordering without a daemon: `--after`/`--after-ok` dependencies, queues
//! with slots (FIFO, kill -9 frees a place), pause/resume, bounded logs,
//! dry runs and status filters. Real processes, fresh BGT_HOME each.

use crate::util::{Env, alive, kill, poll_until};
use serde_json::Value;
use std::time::Duration;

fn tasks(env: &Env, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(filter);
    let doc: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    doc["tasks"].as_array().unwrap().clone()
}

fn wait_state(env: &Env, task: &str, state: &str) {
    poll_until(Duration::from_secs(20), || env.state(task) == state);
}

fn supervisor_pid(env: &Env, task: &str) -> i32 {
    env.status(task)["supervisor_pid"].as_i64().unwrap() as i32
}

#[test]
fn a_chain_of_after_tasks_runs_in_order() {
    let env = Env::new();
    let log = env.work().join("order");
    let log = log.to_str().unwrap();
    let a = env.start(&[&format!("sleep 0.3; echo a >> {log}")]);
    let b = env.start_with(&["--after", &a], &[&format!("sleep 0.2; echo b >> {log}")]);
    let c = env.start_with(&["--after", &b], &[&format!("echo c >> {log}")]);
    assert_eq!(env.state(&c), "queued");
    assert!(
        env.status(&c)["waiting_for"].as_str().unwrap().contains(&b),
        "a queued task says what it waits for"
    );
    // `wait` on a queued task works: it returns when the task has run.
    env.ok(&["wait", &c, "--timeout", "20s"]);
    assert_eq!(std::fs::read_to_string(log).unwrap(), "a\nb\nc\n");
    let ended = |t: &str| env.status(t)["ended"].as_str().unwrap().to_string();
    let started = |t: &str| env.status(t)["started"].as_str().unwrap().to_string();
    assert!(started(&b) >= ended(&a));
    assert!(started(&c) >= ended(&b));
}

#[test]
fn after_ok_skips_after_a_failure() {
    let env = Env::new();
    let marker = env.work().join("ran");
    let a = env.start(&["sh -c 'sleep 0.2; exit 3'"]);
    let b = env.start_with(
        &["--after-ok", &a],
        &[&format!("touch {}", marker.display())],
    );
    let ok = env.start(&["true"]);
    env.wait_done(&ok);
    let c = env.start_with(&["--after-ok", &ok], &["true"]);
    poll_until(Duration::from_secs(20), || env.state(&b) == "skipped");
    let status = env.status(&b);
    assert_eq!(status["exit_code"], Value::Null, "skipped has no exit code");
    assert_eq!(status["pid"], Value::Null);
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("{a} exited 3")),
        "{status}"
    );
    assert!(!marker.exists(), "a skipped task never runs");
    assert!(
        env.ok(&["status"])
            .contains(&format!("skipped: {a} exited 3"))
    );
    env.wait_done(&c);
    assert_eq!(env.state(&c), "exited");
}

#[test]
fn a_queue_with_three_slots_never_runs_more_and_keeps_order() {
    let env = Env::new();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(env.start_with(&["--queue", "q", "--slots", "3"], &["sleep", "0.3"]));
    }
    let mut max_running = 0;
    poll_until(Duration::from_secs(60), || {
        let all = tasks(&env, &["--queue", "q"]);
        let running = all.iter().filter(|t| t["state"] == "running").count();
        max_running = max_running.max(running);
        all.iter().all(|t| t["state"] == "exited")
    });
    assert!(max_running <= 3, "saw {max_running} running at once");
    assert!(max_running >= 2, "slots were used in parallel");
    let mut by_start: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            (
                env.status(id)["started"].as_str().unwrap().to_string(),
                id.clone(),
            )
        })
        .collect();
    by_start.sort();
    let order: Vec<String> = by_start.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, ids, "tasks start in the order they were queued");
}

#[test]
fn kill_9_of_a_queued_supervisor_frees_its_place() {
    let env = Env::new();
    let a = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    let b = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    let c = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    assert_eq!(env.state(&b), "queued");
    kill(supervisor_pid(&env, &b), "KILL");
    wait_state(&env, &b, "lost");
    env.ok(&["stop", &a, "--grace", "200ms"]);
    wait_state(&env, &c, "running");
}

#[test]
fn kill_9_of_a_running_supervisor_frees_its_slot() {
    let env = Env::new();
    let a = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    let b = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    assert_eq!(env.state(&b), "queued");
    kill(supervisor_pid(&env, &a), "KILL");
    wait_state(&env, &b, "running");
}

#[test]
fn queued_tasks_can_be_stopped_and_hold_their_label() {
    let env = Env::new();
    let a = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    let b = env.start_with(&["--queue", "q", "--label", "web"], &["sleep", "30"]);
    assert_eq!(env.state(&b), "queued");
    let err = env.fails(&["run", "--label", "web", "--", "true"], 1);
    assert!(err.contains("in use by queued task"), "{err}");
    env.ok(&["stop", "web"]);
    assert_eq!(env.state(&b), "stopped");
    // `run` answers as soon as a queued task's supervisor has its place in
    // line: `a` takes the free slot just after, and keeps running.
    wait_state(&env, &a, "running");
}

#[test]
fn slots_raised_later_start_waiting_tasks_and_paused_queues_hold_them() {
    let env = Env::new();
    let ids: Vec<String> = (0..3)
        .map(|_| env.start_with(&["--queue", "q"], &["sleep", "30"]))
        .collect();
    env.ok(&["pause", "--queue", "q"]);
    env.ok(&["queue", "q", "--slots", "2"]);
    wait_state(&env, &ids[0], "running");
    // Held: no new start while paused.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.state(&ids[1]), "queued");
    assert!(
        env.ok(&["queue", "q"])
            .contains("1/2 running, 2 waiting, paused")
    );
    env.ok(&["resume", "--queue", "q"]);
    wait_state(&env, &ids[1], "running");
    env.ok(&["queue", "q", "--slots", "3"]);
    wait_state(&env, &ids[2], "running");
}

fn stdout_lines(env: &Env, task: &str) -> u64 {
    env.status(task)["stdout_lines"].as_u64().unwrap()
}

#[test]
fn pause_stops_a_counter_and_resume_continues_it() {
    let env = Env::new();
    let t = env.start(&["i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"]);
    poll_until(Duration::from_secs(10), || stdout_lines(&env, &t) > 2);
    env.ok(&["pause", &t]);
    assert_eq!(env.state(&t), "paused");
    let before = stdout_lines(&env, &t);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stdout_lines(&env, &t), before, "no new line while paused");
    env.ok(&["resume", &t]);
    poll_until(Duration::from_secs(10), || {
        stdout_lines(&env, &t) > before + 2
    });
    assert!(env.status(&t)["paused_ms"].as_u64().unwrap() >= 1000);
    // Stop of a paused task works (continue, then terminate).
    env.ok(&["pause", &t]);
    env.ok(&["stop", &t, "--grace", "2s"]);
    assert_eq!(env.state(&t), "stopped");
}

/// A process that keeps forking its successor and exiting, in a session of
/// its own, is always one generation ahead of a snapshot of `/proc`: the
/// pause walks the task's tree until every process in it is stopped.
#[test]
fn pause_stops_a_chain_of_processes_forking_ahead_of_it() {
    let env = Env::new();
    let t = env.start(&[r#"W='echo x; sh -c "$W" &'; export W; setsid sh -c "$W"; sleep 300"#]);
    poll_until(Duration::from_secs(10), || stdout_lines(&env, &t) > 20);
    for round in 0..3 {
        env.ok(&["pause", &t]);
        let before = stdout_lines(&env, &t);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            stdout_lines(&env, &t),
            before,
            "round {round}: a line while paused"
        );
        env.ok(&["resume", &t]);
        poll_until(Duration::from_secs(10), || {
            stdout_lines(&env, &t) > before + 20
        });
    }
    env.ok(&["stop", &t]);
    assert_eq!(env.state(&t), "stopped");
}

/// A stop of a paused task continues it: from then on the record says
/// running (not paused while its processes run out their grace period),
/// and the grace period is not counted as paused time.
#[test]
fn a_stopped_pause_ends_when_its_processes_continue() {
    let env = Env::new();
    let t = env.start(&["trap '' TERM; while true; do echo tick; sleep 0.05; done"]);
    poll_until(Duration::from_secs(10), || stdout_lines(&env, &t) > 2);
    env.ok(&["pause", &t]);
    let mut stop = env
        .cmd()
        .args(["stop", &t, "--grace", "2s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    poll_until(Duration::from_secs(5), || env.state(&t) != "paused");
    assert_eq!(env.state(&t), "running", "during the grace period");
    assert!(stop.wait().unwrap().success());
    let done = env.status(&t);
    assert_eq!(done["state"], "stopped", "{done}");
    assert!(done["paused_ms"].as_u64().unwrap() < 1500, "{done}");
}

#[test]
fn paused_time_does_not_count_against_the_timeout() {
    let env = Env::new();
    let t = env.start_with(&["--timeout", "1s"], &["sleep", "30"]);
    env.ok(&["pause", &t]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.state(&t), "paused", "a paused task does not time out");
    env.ok(&["resume", &t]);
    assert_eq!(env.state(&t), "running");
    let done = env.wait_done(&t);
    assert_eq!(done["state"], "timed-out");
    assert!(done["runtime_ms"].as_u64().unwrap() >= 2400, "{done}");
}

#[test]
fn a_bounded_log_keeps_about_its_limit_on_disk() {
    let env = Env::new();
    let t = env.start_with(
        &["--max-log-size", "1M"],
        &["head -c 49999950 /dev/zero | tr '\\0' 'x' | fold -w 99"],
    );
    let done = env.wait_done(&t);
    assert_eq!(done["state"], "exited");
    let log = env.task_dir(&t).join("stdout.log");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&log).unwrap();
    assert!(meta.len() > 49_000_000, "the size (offsets) is kept");
    let on_disk = meta.blocks() * 512;
    assert!(on_disk <= 1_400_000, "{on_disk} bytes on disk");
    let dropped = done["stdout_dropped_bytes"].as_u64().unwrap();
    let lines = done["stdout_dropped_lines"].as_u64().unwrap();
    assert!(dropped >= 48_000_000, "{done}");
    assert_eq!(
        lines,
        dropped / 100,
        "whole lines of 100 bytes were dropped"
    );
    let tail = env.output_json(&[&t, "--tail", "2", "--raw"]);
    assert_eq!(Env::texts(&tail), vec!["x".repeat(99), "x".repeat(99)]);
}

#[test]
fn a_mistyped_max_log_size_is_a_usage_error() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["run", "--", "true"])
        .env("BGT_MAX_LOG_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("bgt: "), "{err}");
    env.fails(&["run", "--max-log-size", "12Q", "--", "true"], 2);
}

#[test]
fn dry_runs_change_nothing() {
    let env = Env::new();
    let done = env.start(&["true"]);
    env.wait_done(&done);
    let running = env.start(&["sleep", "30"]);
    let out = env.ok(&["cleanup", "--dry-run", "--all"]);
    assert!(out.contains(&format!("would remove {done}")), "{out}");
    assert!(out.contains(&format!("would stop {running}")), "{out}");
    let out = env.ok(&["stop", "--older-than", "0s", "--dry-run"]);
    assert!(out.contains(&format!("would stop {running}")), "{out}");
    assert_eq!(env.state(&running), "running");
    assert_eq!(env.state(&done), "exited");
    let doc: Value = serde_json::from_str(&env.ok(&["cleanup", "--dry-run", "--json"])).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["removed"][0]["task_id"], done.as_str());
    assert_eq!(env.state(&done), "exited");
}

#[test]
fn status_filters_by_state_label_and_queue() {
    let env = Env::new();
    let a = env.start_with(&["--label", "web"], &["sleep", "30"]);
    let b = env.start(&["true"]);
    env.wait_done(&b);
    let c = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    let d = env.start_with(&["--queue", "q"], &["sleep", "30"]);
    wait_state(&env, &c, "running");
    let ids = |filter: &[&str]| -> Vec<String> {
        tasks(&env, filter)
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--state", "queued"]), vec![d.clone()]);
    assert_eq!(
        ids(&["--state", "running,queued"]),
        vec![a.clone(), c.clone(), d.clone()]
    );
    assert_eq!(ids(&["--label", "web"]), vec![a]);
    assert_eq!(ids(&["--queue", "q"]), vec![c, d]);
    assert_eq!(ids(&["--state", "exited"]), vec![b]);
    env.fails(&["status", "--state", "sleeping"], 2);
}

#[test]
fn a_queued_command_that_cannot_start_ends_with_127() {
    let env = Env::new();
    let a = env.start(&["sleep", "0.2"]);
    let b = env.start_with(&["--after", &a], &["/nonexistent/program"]);
    let done = env.wait_done(&b);
    assert_eq!(done["exit_code"], 127, "{done}");
    let out = env.output_json(&[&b]);
    assert!(Env::texts(&out).iter().any(|l| l.contains("cannot start")));
    assert!(alive(std::process::id() as i32));
}

/// `bg_run` through the toolbox face (the same tools layer MCP uses).
fn bg_run(env: &Env, args: Value) -> Value {
    let mut cmd = env.cmd();
    cmd.args(["toolbox", "bg_run"]);
    crate::toolbox::drive(cmd, "bg_run", "execute", args).1
}

#[test]
fn agents_queue_and_chain_tasks_through_bg_run() {
    let env = Env::new();
    let first = env.start_with(&["--queue", "ci"], &["sleep", "0.5"]);
    let doc = bg_run(
        &env,
        serde_json::json!({"command": "echo second", "queue": "ci", "slots": "1", "label": "two"}),
    );
    assert!(doc.to_string().contains("queued"), "{doc}");
    let doc = bg_run(
        &env,
        serde_json::json!({"command": "echo third", "after_ok": "two"}),
    );
    assert!(doc.to_string().contains("queued"), "{doc}");
    env.ok(&["wait", &first, "two", "--timeout", "20s"]);
    let all = tasks(&env, &[]);
    let third = all.last().unwrap()["id"].as_str().unwrap().to_string();
    env.wait_done(&third);
    assert_eq!(env.state(&third), "exited");
    assert_eq!(Env::texts(&env.output_json(&[&third])), vec!["third"]);
}

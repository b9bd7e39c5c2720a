//! The CI / dev-server workflow: wait, follow, replace, restart, completions.

use crate::util::{BGT, Env, alive, free_port, poll_until, succeeded};
use std::time::{Duration, Instant};

fn http_server(env: &Env, port: u16, bind: &str) -> String {
    let dir = env.work().to_str().unwrap().to_string();
    env.start(&[
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        bind,
        "--directory",
        &dir,
    ])
}

/// `bgt wait ID --for-port PORT` (no --host: 127.0.0.1 and ::1), asserting success.
fn wait_for_port(env: &Env, id: &str, port: u16) {
    succeeded(
        "wait",
        env.wait_for(id, "--for-port", &port.to_string(), &[]),
    );
}

#[test]
fn wait_for_port_succeeds_once_the_server_listens() {
    let env = Env::new();
    let port = free_port();
    let id = http_server(&env, port, "127.0.0.1");
    wait_for_port(&env, &id, port);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}

#[test]
fn wait_for_port_finds_a_server_listening_on_ipv6_only() {
    let env = Env::new();
    let port = free_port();
    let id = http_server(&env, port, "::1");
    wait_for_port(&env, &id, port);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server is on ::1 only"
    );
}

#[test]
fn wait_for_http_gets_a_success_status() {
    let env = Env::new();
    let port = free_port();
    std::fs::write(env.work().join("index.html"), "hello").unwrap();
    let id = http_server(&env, port, "127.0.0.1");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let out = succeeded("wait", env.wait_for(&id, "--for-http", &url, &["--json"]));
    assert!(out.contains("\"ready\""), "{out}");
}

#[test]
fn waiting_for_a_port_nobody_opens_times_out_with_124() {
    let env = Env::new();
    let id = env.start(&["sleep", "30"]);
    let port = free_port();
    let err = env.fails(
        &[
            "wait",
            &id,
            "--for-port",
            &port.to_string(),
            "--timeout",
            "700ms",
        ],
        124,
    );
    assert!(
        err.contains(&format!("timed out after 700ms waiting for port {port}")),
        "{err}"
    );
    assert_eq!(env.state(&id), "running");
}

#[test]
fn wait_for_line_sees_a_delayed_ready() {
    let env = Env::new();
    let id = env.start(&["echo booting; sleep 0.5; echo 'Server READY on 3000'; sleep 30"]);
    let out = env.run(&[
        "wait",
        &id,
        "--for-line",
        r"ready\|listening",
        "--timeout",
        "20s",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Server READY on 3000"));
}

#[test]
fn a_task_that_dies_before_ready_fails_fast_with_its_stderr() {
    let env = Env::new();
    let id = env.start(&["echo 'Error: EADDRINUSE :3000' >&2; exit 3"]);
    let started = Instant::now();
    let err = env.fails(&["wait", &id, "--for-line", "ready", "--timeout", "60s"], 3);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "must not wait for the timeout"
    );
    assert!(
        err.contains("ended (exited 3) before a line matching 'ready'"),
        "{err}"
    );
    assert!(err.contains("Error: EADDRINUSE :3000"), "{err}");
    let port = free_port().to_string();
    let id = env.start(&["sh", "-c", "exit 0"]);
    env.fails(&["wait", &id, "--for-port", &port, "--timeout", "60s"], 1);
}

#[test]
fn wait_returns_the_exit_code() {
    let env = Env::new();
    let five = env.start(&["sleep 0.3; exit 5"]);
    let zero = env.start(&["true"]);
    assert_eq!(env.run(&["wait", &five]).status.code(), Some(5));
    assert_eq!(env.run(&["wait", &zero, &five]).status.code(), Some(5));
    assert_eq!(env.run(&["wait", &zero]).status.code(), Some(0));
    let killed = env.start(&["sleep", "30"]);
    let pid = env.status(&killed)["pid"].as_i64().unwrap() as i32;
    crate::util::kill(pid, "KILL");
    assert_eq!(env.run(&["wait", &killed]).status.code(), Some(137));
}

#[test]
fn wait_for_exit_times_out_with_124() {
    let env = Env::new();
    let id = env.start(&["sleep", "30"]);
    env.fails(&["wait", &id, "--timeout", "300ms"], 124);
}

#[test]
fn follow_prints_lines_as_they_arrive_and_returns_the_exit_code() {
    let env = Env::new();
    let trigger = env.work().join("go");
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second; exit 4",
        trigger.display()
    );
    let id = env.start(&[&script]);
    let mut child = env
        .cmd()
        .args(["output", &id, "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // "first" arrives while the task is still blocked, before "second" exists.
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("first\n") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "follow ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    std::fs::write(&trigger, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "second\n");
    assert_eq!(child.wait().unwrap().code(), Some(4));
}

#[test]
fn follow_with_since_starts_at_the_cursor() {
    let env = Env::new();
    let id = env.task_printing("old\nnew one\n");
    env.output_json(&[&id, "--since", "--head", "1", "--stream", "stdout"]);
    assert_eq!(
        env.ok(&["output", &id, "--follow", "--since", "--stream", "stdout"]),
        "new one\n"
    );
}

#[test]
fn replace_leaves_exactly_one_running_task_with_the_label() {
    let env = Env::new();
    let pidfile = env.work().join("child.pid");
    let first = env.start_with(
        &["--label", "dev"],
        &[&format!(
            "sleep 300 & echo $! > {}; wait",
            pidfile.display()
        )],
    );
    let grandchild = crate::util::read_pid(&pidfile);
    let second = env.start_with(&["--label", "dev", "--replace"], &["sleep", "300"]);
    assert_eq!(env.state(&first), "stopped");
    poll_until(Duration::from_secs(5), || !alive(grandchild));
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let running: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["label"] == "dev" && t["state"] == "running")
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(running, [second.as_str()]);
    env.fails(&["run", "--replace", "--", "true"], 2);
}

#[test]
fn restart_keeps_label_cwd_and_env() {
    let env = Env::new();
    let cwd = env.work().to_str().unwrap().to_string();
    let first = env.start_with(
        &["--label", "svc", "--cwd", &cwd, "--env", "MODE=blue"],
        &["pwd; echo $MODE"],
    );
    env.wait_done(&first);
    let second = env.ok(&["restart", "svc"]).trim().to_string();
    assert_ne!(first, second);
    env.wait_done(&second);
    let a = env.ok(&["output", &first, "--stream", "stdout"]);
    let b = env.ok(&["output", &second, "--stream", "stdout"]);
    assert_eq!(a, b);
    assert!(b.ends_with("blue\n"), "{b}");
    assert_eq!(env.status(&second)["label"], "svc");
    assert_eq!(env.status("svc")["id"], second.as_str());
}

#[test]
fn completions_are_generated() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.ok(&["completions", shell]);
        assert!(out.contains("bgt") && out.contains("output"), "{shell}");
    }
    env.fails(&["completions", "tcsh"], 2);
}

#[test]
fn the_readme_ci_example_runs() {
    let env = Env::new();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ci-example.sh");
    let bin_dir = std::path::Path::new(BGT).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("BGT_HOME", env.home())
        .env("PATH", path)
        .env("PORT", free_port().to_string())
        .current_dir(env.work())
        .output()
        .unwrap();
    let stdout = crate::util::succeeded("scripts/ci-example.sh", out);
    assert!(stdout.contains("tests passed"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(
        doc["tasks"][0]["state"], "stopped",
        "the example stops its server"
    );
}

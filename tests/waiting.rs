//! `wait --for-port` / `--for-http` never call a dead task ready, nor a
//! server that held the port before the task started; one meaning of a
//! zero timeout; and the smaller truths of `run` and `status` (a non-UTF-8
//! working directory, commands with control characters).

use crate::util::{Env, free_port, poll_until, succeeded};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A python http.server started by the test itself, not by bgt (a server
/// left over from an earlier run, or a docker-proxy); killed when dropped.
struct Server(Child);

impl Server {
    fn start(env: &Env, port: u16) -> Server {
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(env.work())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server(child);
        poll_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A task that serves `port` after `delay` seconds (and dies if it cannot).
fn delayed_server(env: &Env, port: u16, delay: &str) -> String {
    let script = format!("sleep {delay}; exec python3 -m http.server {port} --bind 127.0.0.1");
    env.start(&["sh", "-c", &script])
}

fn stale_message(port: u16, server: &Server) -> String {
    format!(
        "port {port} was already held by pid {} (python3) before this task started",
        server.pid()
    )
}

#[test]
fn wait_for_port_is_not_fooled_by_a_server_that_held_the_port_before_the_task() {
    let env = Env::new();
    let port = free_port();
    let stale = Server::start(&env, port);
    // The wait is under way while the task lives, then the task dies of EADDRINUSE.
    let id = delayed_server(&env, port, "0.5");
    let stderr = env.fails(
        &[
            "wait",
            &id,
            "--for-port",
            &port.to_string(),
            "--timeout",
            "30s",
        ],
        1,
    );
    assert!(stderr.contains(&stale_message(port, &stale)), "{stderr}");
    assert!(stderr.contains("before port"), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert_eq!(env.state(&id), "exited");
}

#[test]
fn wait_for_http_is_not_fooled_by_a_server_that_held_the_port_before_the_task() {
    let env = Env::new();
    let port = free_port();
    let stale = Server::start(&env, port);
    let id = delayed_server(&env, port, "0.5");
    let url = format!("http://localhost:{port}/");
    let out = env.wait_for(&id, "--for-http", &url, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["result"], "task-ended");
    assert_eq!(doc["reason"], stale_message(port, &stale));
}

#[test]
fn a_task_that_has_ended_is_never_ready_even_when_its_port_answers() {
    let env = Env::new();
    let port = free_port();
    let _stale = Server::start(&env, port);
    let id = env.start(&["true"]);
    env.wait_done(&id);
    let stderr = env.fails(&["wait", &id, "--for-port", &port.to_string()], 1);
    assert!(
        stderr.contains(&format!("ended (exited 0) before port {port}")),
        "{stderr}"
    );
}

#[test]
fn wait_for_port_succeeds_when_the_tasks_server_starts_after_a_delay() {
    let env = Env::new();
    let port = free_port();
    // Not exec'd: the listener belongs to a child of the task's shell.
    let script = format!("sleep 1; python3 -m http.server {port} --bind 127.0.0.1");
    let id = env.start(&["sh", "-c", &script]);
    succeeded(
        "wait",
        env.wait_for(&id, "--for-port", &port.to_string(), &[]),
    );
    assert_eq!(env.state(&id), "running");
}

#[test]
fn a_listener_another_process_opens_after_the_task_started_counts() {
    // Like `docker run -p`: the port is served by docker-proxy, not the task.
    let env = Env::new();
    let port = free_port();
    let id = env.start(&["sleep", "300"]);
    std::thread::sleep(Duration::from_millis(30)); // a later clock tick than the task's start
    let _proxy = Server::start(&env, port);
    succeeded(
        "wait",
        env.wait_for(&id, "--for-port", &port.to_string(), &[]),
    );
    let url = format!("http://127.0.0.1:{port}/");
    env.ok(&["wait", &id, "--for-http", &url, "--timeout", "30s"]);
}

#[test]
fn run_timeout_zero_means_no_timeout() {
    let env = Env::new();
    let id = env.start_with(&["--timeout", "0s"], &["sleep", "300"]);
    // Still running a second later (a zero timeout used to kill at once).
    env.fails(&["wait", &id, "--timeout", "1s"], 124);
    let status = env.status(&id);
    assert_eq!(status["state"], "running");
    assert!(status["timeout_ms"].is_null(), "{status}");
}

#[test]
fn wait_timeout_zero_means_no_timeout() {
    let env = Env::new();
    let id = env.start(&["sh", "-c", "sleep 0.5; echo up; sleep 300"]);
    env.ok(&["wait", &id, "--for-line", "up", "--timeout", "0"]);
    let id = env.start(&["sh", "-c", "sleep 0.5; exit 3"]);
    env.fails(&["wait", &id, "--timeout", "0s"], 3);
    let help = env.ok(&["wait", "--help"]);
    assert!(help.contains("0 = never"), "{help}");
    let help = env.ok(&["run", "--help"]);
    assert!(help.contains("0 = never"), "{help}");
}

#[test]
fn a_non_utf8_working_directory_is_named_in_a_one_line_error() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let dir = env.work().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&dir).unwrap();
    let out = env
        .cmd()
        .args(["run", "--", "true"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("bgt: cannot run in the current directory (")
            && stderr.contains("caf")
            && stderr.contains("not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot create a task"), "{stderr}");
    // The same directory as --cwd, and a UTF-8 --cwd from inside it.
    let out = env
        .cmd()
        .args(["run", "--cwd", ".", "--", "true"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot run in --cwd '.' ("), "{stderr}");
    let out = env
        .cmd()
        .args(["run", "--cwd", "/", "--", "true"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(env.ok(&["status", "--json"]).matches("\"id\"").count(), 1);
}

#[test]
fn status_shows_commands_on_one_line_with_control_characters_escaped() {
    let env = Env::new();
    let script = "echo one\necho two\r\t\x1b[31mred\x07 # done";
    let id = env.start(&[script]);
    let table = env.ok(&["status"]);
    assert_eq!(table.lines().count(), 2, "{table:?}");
    let shown = "echo one\\necho two\\r\\t\\e[31mred\\x07 # done";
    assert!(table.lines().nth(1).unwrap().ends_with(shown), "{table:?}");
    let detail = env.ok(&["status", &id]);
    assert!(
        detail
            .lines()
            .any(|l| l == format!("command       {shown}")),
        "{detail:?}"
    );
    assert!(!table.contains('\x1b') && !detail.contains('\x1b') && !detail.contains('\r'));
    assert_eq!(
        env.status(&id)["command"],
        script,
        "JSON keeps the exact command"
    );
}

//! Test harness: a fresh `BGT_HOME` per test, the real binary, polling with
//! deadlines, and a drop guard that stops every task the test started.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BGT: &str = env!("CARGO_BIN_EXE_bgt");

/// One test's private state directory. Dropping it stops every task in it.
pub struct Env {
    home: PathBuf,
    /// The temporary directories this Env made (removed on drop).
    _home_dir: Option<tempfile::TempDir>,
    pub work: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let home = tempfile::tempdir().unwrap();
        Env {
            home: home.path().to_path_buf(),
            _home_dir: Some(home),
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// An Env whose state directory is `home` (on a test filesystem, or a
    /// directory a test prepared); it is not removed on drop, but every task
    /// in it is still stopped.
    pub fn at(home: impl Into<PathBuf>) -> Env {
        Env {
            home: home.into(),
            _home_dir: None,
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A scratch directory for files the test's commands use.
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BGT);
        cmd.env("BGT_HOME", self.home())
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null());
        cmd
    }

    /// `sh -c script` with this Env's state directory, for the pipelines and
    /// `$(...)` a shell user writes around bgt (`$BGT` is the binary).
    pub fn sh(&self, script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .env("BGT", BGT)
            .env("BGT_HOME", self.home())
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs bgt with `args` and returns its output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs bgt, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(&format!("bgt {args:?}"), self.run(args))
    }

    /// Runs bgt expecting failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "bgt {args:?}: stderr {stderr}"
        );
        stderr
    }

    /// `bgt wait TASK CONDITION TARGET --timeout 30s EXTRA...`, whatever
    /// the exit code (e.g. `--for-port`, `3000`, `["--json"]`).
    pub fn wait_for(&self, task: &str, condition: &str, target: &str, extra: &[&str]) -> Output {
        let mut args = vec!["wait", task, condition, target, "--timeout", "30s"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `bgt run -- <words>`; returns the task id.
    pub fn start(&self, words: &[&str]) -> String {
        let mut args = vec!["run", "--"];
        args.extend_from_slice(words);
        self.ok(&args).trim().to_string()
    }

    /// `bgt run` with extra options before `--`.
    pub fn start_with(&self, options: &[&str], words: &[&str]) -> String {
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.push("--");
        args.extend_from_slice(words);
        self.ok(&args).trim().to_string()
    }

    pub fn status(&self, task: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", task, "--json"])).unwrap()
    }

    pub fn state(&self, task: &str) -> String {
        self.status(task)["state"].as_str().unwrap().to_string()
    }

    /// Polls until the task is no longer running; returns its final status.
    pub fn wait_done(&self, task: &str) -> Value {
        poll_until(Duration::from_secs(20), || {
            !matches!(
                self.state(task).as_str(),
                "running" | "starting" | "queued" | "paused"
            )
        });
        // The final record is written just before the supervisor exits:
        // wait for its lock too, so a test that then edits or removes the
        // task never races the supervisor's last moments.
        let _ = self.run(&["wait", task, "--timeout", "20s"]);
        self.status(task)
    }

    pub fn output_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["output"];
        all.extend_from_slice(args);
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Texts of the lines in an `output --json` document.
    pub fn texts(doc: &Value) -> Vec<String> {
        doc["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn task_dir(&self, task: &str) -> PathBuf {
        PathBuf::from(self.status(task)["dir"].as_str().unwrap())
    }

    /// Writes a file in the scratch directory; returns its path.
    pub fn file(&self, name: &str, content: impl AsRef<[u8]>) -> String {
        let path = self.work().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// A finished task whose stdout is exactly `content`.
    pub fn task_printing(&self, content: impl AsRef<[u8]>) -> String {
        let path = self.file(&format!("content-{}", rand_suffix()), content);
        let id = self.start(&["cat", &path]);
        self.wait_done(&id);
        id
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Drop for Env {
    fn drop(&mut self) {
        // Stop whatever the test left running, even when it failed; lost
        // tasks included (stop kills a provably orphaned child).
        let Ok(out) = self.cmd().args(["status", "--json"]).output() else {
            return;
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&out.stdout) else {
            return;
        };
        for task in doc["tasks"].as_array().into_iter().flatten() {
            if matches!(
                task["state"].as_str(),
                Some("running" | "starting" | "queued" | "paused" | "lost")
            ) {
                let id = task["id"].as_str().unwrap_or_default();
                let _ = self.cmd().args(["stop", id, "--grace", "200ms"]).output();
            }
        }
    }
}

/// `bgt output ID`'s arguments for the whole of its stdout, then `args`.
pub fn whole_stdout<'a>(id: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["output", id, "--stream", "stdout", "--max-lines", "0"];
    all.extend_from_slice(args);
    all
}

/// Asserts that a finished command (`what`) succeeded; returns its stdout.
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed with {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `cond` until it holds or `limit` passes (then panics).
pub fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_millis(5);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(100));
    }
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Reads a pid that a task wrote to a file, waiting for it to appear.
pub fn read_pid(path: &Path) -> i32 {
    let mut pid = 0;
    poll_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    pid
}

pub fn kill(pid: i32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The descriptors a supervisor holds (their link targets), once it has
/// settled: its own descriptors of the logs (to keep them within the size
/// limit) are the last it opens, after `bgt run` has returned.
pub fn supervisor_fds(pid: i64) -> Vec<String> {
    let read = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .collect()
    };
    poll_until(Duration::from_secs(10), || {
        let fds = read();
        ["/stdout.log", "/stderr.log"]
            .iter()
            .all(|log| fds.iter().any(|f| f.ends_with(log)))
    });
    read()
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

//! How `run` starts the supervisor: a fork from the single-threaded CLI (no
//! second exec of bgt), a fresh exec from a caller with threads (the MCP
//! server) or from inside a task. Either way the supervisor is one thread
//! in its own session, with every signal blocked and none ignored, holding
//! its three descriptors and nothing of its caller's.

use crate::util::{Env, succeeded};

/// What a test needs to know about a live supervisor.
struct Supervisor {
    pid: i64,
    cmdline: String,
    environ: Vec<String>,
    status: String,
    fds: Vec<String>,
}

impl Supervisor {
    fn of(env: &Env, id: &str) -> Supervisor {
        let pid = env.status(id)["supervisor_pid"].as_i64().unwrap();
        let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
        let fds = crate::util::supervisor_fds(pid);
        Supervisor {
            pid,
            cmdline: String::from_utf8_lossy(&read("cmdline")).replace('\0', " "),
            environ: read("environ")
                .split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            status: String::from_utf8_lossy(&read("status")).into_owned(),
            fds,
        }
    }

    fn field(&self, name: &str) -> &str {
        self.status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap_or_else(|| panic!("no {name} in {}", self.status))
    }

    fn exec_d(&self) -> bool {
        self.cmdline.contains(" __supervise ")
    }

    /// The promises both ways of starting keep.
    fn assert_detached_and_clean(&self, env: &Env, id: &str) {
        assert_eq!(self.field("Threads"), "1", "no async runtime, no threads");
        // Every signal blocked (read from a signalfd), none ignored (an
        // ignored one would pass to the child; the CLI ignores SIGPIPE).
        let blocked = u64::from_str_radix(self.field("SigBlk"), 16).unwrap();
        for sig in [1, 2, 13, 15, 17] {
            assert!(blocked & (1 << (sig - 1)) != 0, "signal {sig} not blocked");
        }
        assert_eq!(self.field("SigIgn"), "0000000000000000");
        // Own session (no terminal, no SIGHUP from the caller's).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let after_name: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(after_name[3], self.pid.to_string(), "session id: {stat}");
        // /dev/null as 0, 1, 2; the lock, the signalfd, the task directory
        // and the two logs.
        let home = env.home().canonicalize().unwrap();
        let fds = &self.fds;
        assert_eq!(
            fds.iter().filter(|f| *f == "/dev/null").count(),
            3,
            "{fds:?}"
        );
        assert!(
            fds.contains(&format!("{}/{id}/lock", home.display())),
            "{fds:?}"
        );
        assert!(fds.contains(&format!("{}/{id}", home.display())), "{fds:?}");
        assert!(fds.iter().any(|f| f.contains("signalfd")), "{fds:?}");
        // Both logs: the log size limit.
        assert_eq!(fds.len(), 8, "{fds:?}");
    }
}

#[test]
fn the_cli_forks_the_supervisor_instead_of_executing_bgt_again() {
    let env = Env::new();
    let id = env.start(&["sleep", "30"]);
    let supervisor = Supervisor::of(&env, &id);
    assert!(
        !supervisor.exec_d(),
        "forked: it still shows `run`'s command line: {}",
        supervisor.cmdline
    );
    supervisor.assert_detached_and_clean(&env, &id);
    assert_eq!(env.state(&id), "running");

    // And it supervises: output captured, exit recorded.
    let id = env.start(&["sh", "-c", "echo forked; exit 3"]);
    assert_eq!(env.wait_done(&id)["exit_code"], 3);
    assert_eq!(env.ok(&["output", &id, "--raw"]), "forked\n");
}

#[test]
fn a_run_inside_a_task_executes_a_supervisor_carrying_its_own_marker() {
    // A forked supervisor would show the outer task's marker in its
    // environment and pass for one of that task's processes.
    let env = Env::new();
    let out = env
        .cmd()
        .env("BGT_TASK_ID", "t-0000aa")
        .args(["run", "--", "sleep", "30"])
        .output()
        .unwrap();
    let id = succeeded("run", out).trim().to_string();
    let supervisor = Supervisor::of(&env, &id);
    assert!(supervisor.exec_d(), "{}", supervisor.cmdline);
    assert!(
        supervisor.environ.contains(&format!("BGT_TASK_ID={id}")),
        "{:?}",
        supervisor.environ
    );
    supervisor.assert_detached_and_clean(&env, &id);
}

#[cfg(feature = "mcp")]
#[tokio::test]
async fn a_caller_with_threads_executes_a_fresh_supervisor() {
    use crate::util::BGT;
    use rmcp::{
        ServiceExt,
        model::CallToolRequestParams,
        transport::{ConfigureCommandExt, TokioChildProcess},
    };
    // The MCP server runs tools on a thread of its runtime's blocking pool:
    // a fork there could copy a lock held by another thread.
    let env = Env::new();
    let home = env.home().to_path_buf();
    let transport = TokioChildProcess::new(tokio::process::Command::new(BGT).configure(|cmd| {
        cmd.arg("mcp").env("BGT_HOME", &home);
    }))
    .unwrap();
    let client = ().serve(transport).await.unwrap();
    let serde_json::Value::Object(args) = serde_json::json!({"command": "sleep 30"}) else {
        unreachable!()
    };
    let result = client
        .call_tool(CallToolRequestParams::new("bg_run").with_arguments(args))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let id = result.structured_content.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let supervisor = Supervisor::of(&env, &id);
    assert!(supervisor.exec_d(), "{}", supervisor.cmdline);
    // No descriptor of the server's either (its stdio pipes).
    supervisor.assert_detached_and_clean(&env, &id);
    assert_eq!(env.state(&id), "running");
    let _ = client.cancel().await;
}

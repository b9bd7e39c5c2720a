//! The Amp toolbox face (`bgt toolbox`) driven as Amp drives it, and the
//! packaging checked by parsing it: the Claude Code plugin and `bgt man`.

use crate::util::{Env, poll_until};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Installs the tools into a fresh directory; returns it.
fn install(env: &Env) -> PathBuf {
    let dir = env.work().join("amp-tools");
    let listed = env.ok(&["toolbox", "install", dir.to_str().unwrap()]);
    assert_eq!(listed.lines().count(), 5, "{listed}");
    dir
}

/// Runs a tool script as Amp does; returns (exit code, stdout JSON).
fn amp(env: &Env, dir: &Path, tool: &str, action: &str, args: Value) -> (i32, Value) {
    let mut cmd = Command::new(dir.join(tool));
    cmd.env("BGT_HOME", env.home())
        .env("AMP_THREAD_ID", "T-1234-abcd");
    drive(cmd, tool, action, args)
}

/// Runs a toolbox command (a tool script, or `bgt toolbox TOOL`) with
/// `TOOLBOX_ACTION=action` and `args` on stdin; returns (exit code, stdout JSON).
pub(crate) fn drive(mut cmd: Command, tool: &str, action: &str, args: Value) -> (i32, Value) {
    let mut child = cmd
        .env("TOOLBOX_ACTION", action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `describe` never reads stdin and may have exited already: a closed
    // pipe is not the tool's failure.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(args.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{tool}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), doc)
}

fn exec(env: &Env, dir: &Path, tool: &str, args: Value) -> Value {
    let (code, doc) = amp(env, dir, tool, "execute", args);
    assert_eq!(code, 0, "{tool}: {doc}");
    doc
}

#[test]
fn every_tool_describes_itself_with_the_mcp_input_schema() {
    let env = Env::new();
    let dir = install(&env);
    for tool in ["bg_run", "bg_status", "bg_output", "bg_stop", "bg_wait"] {
        let (code, doc) = amp(&env, &dir, tool, "describe", Value::Null);
        assert_eq!(code, 0);
        assert_eq!(doc["name"], tool);
        assert!(doc["description"].as_str().unwrap().len() > 40);
        assert_eq!(doc["inputSchema"]["type"], "object", "{doc}");
        assert!(doc["inputSchema"]["properties"]["task_id"].is_object() || tool == "bg_run");
    }
    let (_, doc) = amp(&env, &dir, "bg_output", "describe", Value::Null);
    assert_eq!(doc["inputSchema"]["properties"]["tail"]["type"], "integer");
}

#[test]
fn the_seed_monorepo_flow_through_the_amp_toolbox() {
    let env = Env::new();
    let dir = install(&env);
    let backend = "i=0; while true; do i=$((i+1)); echo \"GET /api 200 $i\"; \
        if [ $((i % 5)) -eq 0 ]; then echo \"ERROR db timeout $i\"; fi; sleep 0.02; done";
    let run = exec(
        &env,
        &dir,
        "bg_run",
        serde_json::json!({"command": backend, "label": "backend"}),
    );
    assert!(run["text"].as_str().unwrap().contains("started"), "{run}");
    let backend_id = run["task_id"].as_str().unwrap().to_string();
    let run = exec(
        &env,
        &dir,
        "bg_run",
        serde_json::json!({"command": "echo 'Error: Cannot find module' >&2; sleep 300", "label": "frontend", "timeout": "30"}),
    );
    let frontend_id = run["task_id"].as_str().unwrap().to_string();
    poll_until(Duration::from_secs(10), || {
        env.status(&backend_id)["stdout_lines"].as_u64().unwrap() > 20
    });
    let status = exec(&env, &dir, "bg_status", serde_json::json!({}));
    assert_eq!(status["tasks"].as_array().unwrap().len(), 2);
    let since = serde_json::json!({"task_id": "backend", "since": true, "filter": "ERROR", "exclude": "GET 200"});
    let first = exec(&env, &dir, "bg_output", since.clone());
    assert!(!Env::texts(&first).is_empty(), "{first}");
    let cursor = first["stdout_meta"]["cursor"].as_u64().unwrap();
    poll_until(Duration::from_secs(10), || {
        env.status(&backend_id)["stdout_lines"].as_u64().unwrap() > cursor + 10
    });
    let second = exec(&env, &dir, "bg_output", since.clone());
    let lines: Vec<u64> = second["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|n| *n > cursor),
        "{second}"
    );
    // The thread's cursor is not the terminal's.
    assert!(
        env.output_json(&["backend", "--since", "--filter", "ERROR"])["lines"][0]["line"]
            .as_u64()
            .unwrap()
            <= cursor
    );
    let errors = exec(
        &env,
        &dir,
        "bg_output",
        serde_json::json!({"task_id": frontend_id, "stream": "stderr", "tail": 5}),
    );
    assert_eq!(Env::texts(&errors), ["Error: Cannot find module"]);
    let ready = exec(
        &env,
        &dir,
        "bg_wait",
        serde_json::json!({"task_id": "backend", "for_line": "ERROR db", "timeout_s": 10}),
    );
    assert_eq!(ready["result"], "ready");
    let stopped = exec(
        &env,
        &dir,
        "bg_stop",
        serde_json::json!({"task_id": "backend"}),
    );
    assert_eq!(stopped["result"], "stopped");
    exec(
        &env,
        &dir,
        "bg_stop",
        serde_json::json!({"task_id": "frontend", "action": "kill"}),
    );
    let cleaned = exec(
        &env,
        &dir,
        "bg_stop",
        serde_json::json!({"action": "cleanup"}),
    );
    assert_eq!(cleaned["removed"].as_array().unwrap().len(), 2, "{cleaned}");
    assert_eq!(env.ok(&["status"]).trim(), "no tasks");
    // Failures: {"error": ...} on stdout and a non-zero exit.
    let (code, doc) = amp(
        &env,
        &dir,
        "bg_status",
        "execute",
        serde_json::json!({"task_id": "gone"}),
    );
    assert_ne!(code, 0);
    assert_eq!(doc["error"]["kind"], "unknown_task", "{doc}");
    let (code, doc) = amp(
        &env,
        &dir,
        "bg_run",
        "execute",
        serde_json::json!({"command": "true", "bogus_flag": 1}),
    );
    assert_eq!(code, 2);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown argument 'bogus_flag'")
    );
}

#[test]
fn the_claude_code_plugin_runs_bgt_mcp_and_ships_the_skill() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(path)).unwrap()).unwrap()
    };
    let plugin = read(".claude-plugin/plugin.json");
    assert_eq!(plugin["name"], "bgt");
    assert_eq!(plugin["version"], env!("CARGO_PKG_VERSION"));
    let mcp = read(plugin["mcpServers"].as_str().unwrap());
    assert_eq!(mcp["mcpServers"]["bgt"]["command"], "bgt");
    assert_eq!(mcp["mcpServers"]["bgt"]["args"], serde_json::json!(["mcp"]));
    let skills = root.join(plugin["skills"].as_str().unwrap());
    let skill = std::fs::read_to_string(skills.join("background-tasks/SKILL.md")).unwrap();
    assert!(
        skill.starts_with("---\nname: background-tasks\n"),
        "{skill}"
    );
}

#[test]
fn bgt_man_prints_a_man_page() {
    let env = Env::new();
    let page = env.ok(&["man"]);
    assert!(page.starts_with(".ie"), "{}", &page[..page.len().min(200)]);
    assert!(
        page.contains(".TH bgt") && page.contains("toolbox"),
        "man page"
    );
}

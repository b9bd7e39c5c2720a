//! `bgt mcp` driven by a real MCP client (rmcp) over stdio: the seed's
//! monorepo flow with a backend and a frontend stand-in.

use crate::util::{BGT, Env, poll_until};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult},
    service::RunningService,
    transport::{ConfigureCommandExt, TokioChildProcess},
};
use serde_json::Value;
use std::time::Duration;

type Client = RunningService<RoleClient, ()>;

async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(map))
        .await
        .unwrap()
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ok(result: CallToolResult) -> (String, Value) {
    assert_ne!(
        result.is_error,
        Some(true),
        "tool error: {}",
        text_of(&result)
    );
    (
        text_of(&result),
        result.structured_content.clone().unwrap_or(Value::Null),
    )
}

/// Line numbers of the returned lines of one stream.
fn line_numbers(doc: &Value, stream: &str) -> Vec<u64> {
    doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stream"] == stream)
        .map(|l| l["line"].as_u64().unwrap())
        .collect()
}

/// Starts `bgt mcp` on the test's state directory and connects a client.
async fn connect(env: &Env) -> Client {
    let home = env.home().to_path_buf();
    let transport = TokioChildProcess::new(tokio::process::Command::new(BGT).configure(|cmd| {
        cmd.arg("mcp").env("BGT_HOME", &home);
    }))
    .unwrap();
    ().serve(transport).await.unwrap()
}

#[tokio::test]
async fn the_seed_monorepo_flow_over_mcp() {
    let env = Env::new();
    let client = connect(&env).await;

    // tools/list: the seed's four tools (plus bg_wait) with their parameters.
    let tools = client.list_all_tools().await.unwrap();
    let schema = |name: &str| -> Value {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(tool.description.as_ref().is_some_and(|d| !d.is_empty()));
        Value::Object((*tool.input_schema).clone())
    };
    let props = |name: &str| -> Vec<String> {
        let mut keys: Vec<String> = schema(name)["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(props("bg_run"), ["command", "cwd", "label", "timeout"]);
    assert_eq!(props("bg_status"), ["task_id"]);
    assert_eq!(
        props("bg_output"),
        [
            "exclude",
            "filter",
            "max_lines",
            "preset",
            "raw",
            "since",
            "stream",
            "tail",
            "task_id"
        ]
    );
    assert_eq!(props("bg_stop"), ["action", "task_id"]);
    assert_eq!(
        props("bg_wait"),
        ["for_line", "for_port", "task_id", "timeout_s"]
    );
    assert_eq!(schema("bg_run")["required"], serde_json::json!(["command"]));
    assert_eq!(
        schema("bg_output")["required"],
        serde_json::json!(["task_id"])
    );
    assert!(
        schema("bg_run")["properties"]["timeout"]["description"]
            .as_str()
            .unwrap()
            .contains("120")
    );

    // Step 1: start both services.
    let backend_script = "i=0; while true; do i=$((i+1)); echo \"GET /api/items 200 in ${i}ms\"; \
        echo \"healthcheck ok $i\"; if [ $((i % 5)) -eq 0 ]; then echo \"ERROR db timeout $i\"; \
        echo \"WARN slow query $i\" >&2; fi; sleep 0.02; done";
    let (text, run) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": backend_script, "label": "backend"}),
    )
    .await);
    let backend = run["task_id"].as_str().unwrap().to_string();
    assert!(
        text.starts_with(&format!("task {backend} started (label backend, pid ")),
        "{text}"
    );
    assert_eq!(run["label"], "backend");
    assert!(run["pid"].as_u64().unwrap() > 0);
    let frontend_script = "for i in $(seq 1 40); do echo \"[HMR] updated ./src/App.tsx $i\"; \
        echo \"GET /_next/static/chunk-$i.js 200\"; done; echo 'Error: Cannot find module ./Nav' >&2; sleep 300";
    let (_, run) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": frontend_script, "label": "frontend", "cwd": "/"}),
    )
    .await);
    let frontend = run["task_id"].as_str().unwrap().to_string();
    poll_until(Duration::from_secs(10), || {
        env.status(&backend)["stdout_lines"].as_u64().unwrap() > 40
    });
    poll_until(Duration::from_secs(10), || {
        env.status(&frontend)["stderr_lines"] == 1
    });

    // Step 3: errors only, noise excluded, capped by tail.
    let (text, doc) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": "backend", "filter": "ERROR|WARN|Exception", "exclude": "GET 200|healthcheck", "tail": 3}),
    )
    .await);
    let texts = Env::texts(&doc);
    assert!(!texts.is_empty() && texts.len() <= 6, "{texts:?}");
    assert!(
        texts
            .iter()
            .all(|t| t.starts_with("ERROR db timeout") || t.starts_with("WARN slow query")),
        "{texts:?}"
    );
    assert!(
        text.contains("stdout_meta: {") && text.contains("\"total_lines\""),
        "{text}"
    );
    let (_, doc) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": frontend, "filter": "ERROR|error|FAIL", "exclude": "HMR|webpack|static|favicon", "tail": 30}),
    )
    .await);
    let texts = Env::texts(&doc);
    assert_eq!(texts, ["Error: Cannot find module ./Nav"]);

    // Step 4: since=true twice returns only new lines, never the same line twice.
    let since = serde_json::json!({"task_id": "backend", "since": true, "filter": "ERROR", "stream": "stdout", "max_lines": 1000});
    let (_, first) = ok(call(&client, "bg_output", since.clone()).await);
    let first_lines = line_numbers(&first, "stdout");
    let cursor = first["stdout_meta"]["cursor"].as_u64().unwrap();
    poll_until(Duration::from_secs(10), || {
        env.status(&backend)["stdout_lines"].as_u64().unwrap() > cursor + 20
    });
    let (_, second) = ok(call(&client, "bg_output", since.clone()).await);
    let second_lines = line_numbers(&second, "stdout");
    assert!(!first_lines.is_empty() && !second_lines.is_empty());
    assert!(
        second_lines.iter().all(|n| *n > cursor),
        "{second_lines:?} after cursor {cursor}"
    );
    assert!(first_lines.iter().all(|n| !second_lines.contains(n)));
    // The agent's cursor is its own: a person's default cursor still sees everything.
    let person = env.output_json(&[
        "backend",
        "--since",
        "--filter",
        "ERROR",
        "--stream",
        "stdout",
        "--max-lines",
        "0",
    ]);
    assert!(
        person["stdout_meta"]["returned"].as_u64().unwrap()
            >= (first_lines.len() + second_lines.len()) as u64
    );

    // Step 5: more context from stderr.
    let (_, doc) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": backend, "stream": "stderr", "tail": 5}),
    )
    .await);
    assert!(doc["stdout_meta"].is_null());
    assert!(
        doc["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["stream"] == "stderr")
    );

    // Presets and bad input: a tool error, and the server keeps serving.
    let (_, doc) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": frontend, "preset": "next", "max_lines": 50}),
    )
    .await);
    assert_eq!(
        doc["lines"].as_array().unwrap().len(),
        1,
        "only the error survives the next preset"
    );
    let bad = call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": backend, "filter": "ERROR("}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    assert!(
        text_of(&bad).contains("invalid --filter regex 'ERROR(': unclosed group"),
        "{}",
        text_of(&bad)
    );
    let unknown = call(
        &client,
        "bg_status",
        serde_json::json!({"task_id": "no-such-task"}),
    )
    .await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(text_of(&unknown).contains("no task matches 'no-such-task'"));

    // bg_status: all tasks, and one.
    let (table, all) = ok(call(&client, "bg_status", serde_json::json!({})).await);
    assert!(
        table.contains("backend") && table.contains("frontend"),
        "{table}"
    );
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2);
    let (_, one) = ok(call(
        &client,
        "bg_status",
        serde_json::json!({"task_id": "frontend"}),
    )
    .await);
    assert_eq!(one["state"], "running");
    assert_eq!(one["stderr_lines"], 1);
    assert!(
        one["timeout_left_ms"].as_u64().unwrap() > 100 * 60 * 1000,
        "the 2-hour default timeout applies"
    );

    // bg_wait for a line that is already there.
    let (text, waited) = ok(call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "backend", "for_line": "ERROR db", "timeout_s": 10}),
    )
    .await);
    assert_eq!(waited["result"], "ready", "{text}");

    // Step 6: stop both, then clean up.
    let (text, stopped) =
        ok(call(&client, "bg_stop", serde_json::json!({"task_id": backend})).await);
    assert_eq!(stopped["result"], "stopped", "{text}");
    ok(call(
        &client,
        "bg_stop",
        serde_json::json!({"task_id": "frontend", "action": "stop"}),
    )
    .await);
    assert_eq!(env.state(&backend), "stopped");
    assert_eq!(env.state(&frontend), "stopped");
    let (text, cleaned) =
        ok(call(&client, "bg_stop", serde_json::json!({"action": "cleanup"})).await);
    assert_eq!(cleaned["removed"].as_array().unwrap().len(), 2, "{text}");
    assert_eq!(env.ok(&["status"]).trim(), "no tasks");

    client.cancel().await.unwrap();
}

#[tokio::test]
async fn tasks_outlive_the_server() {
    let env = Env::new();
    let client = connect(&env).await;
    let (_, run) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 300", "label": "long", "timeout": 0}),
    )
    .await);
    client.cancel().await.unwrap();
    let id = run["task_id"].as_str().unwrap();
    assert_eq!(
        env.state(id),
        "running",
        "no daemon owns the task; the server is gone, it runs on"
    );
    assert!(
        env.status(id)["timeout_ms"].is_null(),
        "timeout 0 means never"
    );
}

/// `bgt mcp` driven by hand over its stdin/stdout, for what a well-behaved
/// client never sends. Killed when dropped.
struct RawMcp {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl RawMcp {
    /// Starts the server and completes the MCP handshake.
    fn start(env: &Env) -> RawMcp {
        use std::io::BufRead;
        let mut child = env
            .cmd()
            .arg("mcp")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut mcp = RawMcp {
            stdin: child.stdin.take(),
            child,
            lines,
        };
        mcp.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#);
        assert_eq!(mcp.reply()["id"], 0);
        mcp.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        mcp
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line the server writes, as JSON.
    fn reply(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a reply from bgt mcp");
        serde_json::from_str(&line).unwrap()
    }

    fn call(&mut self, id: u32, tool: &str, args: Value) -> Value {
        let request = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}});
        self.send(&request.to_string());
        let reply = self.reply();
        assert_eq!(reply["id"], id, "{reply}");
        reply["result"].clone()
    }
}

impl Drop for RawMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn malformed_messages_get_json_rpc_errors_and_the_server_keeps_serving() {
    let env = Env::new();
    let mut mcp = RawMcp::start(&env);
    let error = |reply: &Value, id: Value, code: i64| {
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
    };
    mcp.send("this is not json {");
    error(&mcp.reply(), Value::Null, -32700);
    mcp.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":[1,2]}"#);
    error(&mcp.reply(), 2.into(), -32602);
    mcp.send(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"bg_status","arguments":5}}"#);
    error(&mcp.reply(), 3.into(), -32602);
    mcp.send(r#"{"jsonrpc":"2.0","id":"four","method":"no/such/method"}"#);
    error(&mcp.reply(), "four".into(), -32601);
    mcp.send(r#"[1, 2]"#);
    error(&mcp.reply(), Value::Null, -32600);
    // A bad notification gets no reply; the next answer is the ping's.
    mcp.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":[1]}"#);
    mcp.send(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
    let pong = mcp.reply();
    assert_eq!(pong["id"], 5, "{pong}");
    assert!(pong["result"].is_object(), "{pong}");
}

#[test]
fn bg_status_text_escapes_control_characters_and_its_json_keeps_them() {
    let env = Env::new();
    let script = "echo a\necho b\r\x1b[2J";
    let id = env.start(&[script]);
    let mut mcp = RawMcp::start(&env);
    for args in [serde_json::json!({}), serde_json::json!({"task_id": id})] {
        let result = mcp.call(1, "bg_status", args);
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("echo a\\necho b\\r\\e[2J"), "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        let json = &result["structuredContent"];
        let command = json["tasks"][0]["command"]
            .as_str()
            .or(json["command"].as_str());
        assert_eq!(command, Some(script));
    }
}

#[test]
fn bg_wait_timeout_zero_means_no_timeout() {
    let env = Env::new();
    let id = env.start(&["sh", "-c", "sleep 1; exit 3"]);
    let mut mcp = RawMcp::start(&env);
    let result = mcp.call(
        1,
        "bg_wait",
        serde_json::json!({"task_id": id, "timeout_s": 0}),
    );
    assert_eq!(result["structuredContent"]["result"], "ended", "{result}");
    assert_eq!(result["structuredContent"]["exit_code"], 3, "{result}");
}

#[test]
fn the_server_exits_promptly_when_stdin_closes_during_a_bg_wait() {
    let env = Env::new();
    let id = env.start(&["sleep", "300"]);
    let mut mcp = RawMcp::start(&env);
    mcp.send(
        &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "bg_wait", "arguments": {"task_id": id, "timeout_s": 60}}})
        .to_string(),
    );
    // Give the call time to be under way (no reply can come: the task runs on).
    assert!(mcp.lines.recv_timeout(Duration::from_millis(300)).is_err());
    let closed = std::time::Instant::now();
    drop(mcp.stdin.take());
    // A liveness bound, not a performance figure: it used to take 6 s.
    poll_until(Duration::from_secs(2), || {
        mcp.child.try_wait().unwrap().is_some()
    });
    eprintln!("bgt mcp exited {:?} after stdin closed", closed.elapsed());
    assert_eq!(env.state(&id), "running", "the task is not the server's");
}

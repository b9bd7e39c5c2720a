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

pub(crate) async fn call(client: &Client, tool: &'static str, args: Value) -> CallToolResult {
    call_as(client, tool, args).await
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

pub(crate) fn ok(result: CallToolResult) -> (String, Value) {
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
pub(crate) async fn connect(env: &Env) -> Client {
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
    assert_eq!(
        props("bg_run"),
        [
            "after", "after_ok", "command", "cwd", "env", "label", "queue", "replace", "slots",
            "timeout"
        ]
    );
    assert_eq!(props("bg_status"), ["task_id"]);
    assert_eq!(
        props("bg_output"),
        [
            "after_context",
            "before_context",
            "blocks",
            "case_sensitive",
            "context",
            "cursor",
            "exclude",
            "filter",
            "head",
            "max_lines",
            "preset",
            "raw",
            "reset_cursor",
            "since",
            "stream",
            "tail",
            "task_id"
        ]
    );
    assert_eq!(props("bg_stop"), ["action", "older_than", "task_id"]);
    assert_eq!(
        props("bg_wait"),
        [
            "for_http",
            "for_line",
            "for_port",
            "host",
            "task_id",
            "timeout_s"
        ]
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
    assert!(text.contains(" in the logs"), "{text}");
    assert!(
        !text.contains("stdout_meta"),
        "the meta is structured only: {text}"
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
        text_of(&bad).contains("invalid filter regex 'ERROR(': unclosed group"),
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

/// A client that names itself and records the progress notifications it gets.
#[derive(Clone, Default)]
struct Named {
    name: String,
    progress: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
}

impl rmcp::ClientHandler for Named {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            Default::default(),
            rmcp::model::Implementation::new(self.name.clone(), "1"),
        )
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params.progress);
    }
}

async fn connect_as(env: &Env, client: Named) -> RunningService<RoleClient, Named> {
    let home = env.home().to_path_buf();
    let transport = TokioChildProcess::new(tokio::process::Command::new(BGT).configure(|cmd| {
        cmd.arg("mcp").env("BGT_HOME", &home);
    }))
    .unwrap();
    client.serve(transport).await.unwrap()
}

async fn call_as<S: rmcp::service::Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
    tool: &'static str,
    args: Value,
) -> CallToolResult {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(map))
        .await
        .unwrap()
}

fn failed(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "{}", text_of(result));
    text_of(result)
}

/// Every `"type"` in a schema, wherever it is.
fn types(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if let Some(t) = map.get("type") {
                out.push(t.clone());
            }
            map.values().for_each(|v| types(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| types(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn an_empty_poll_is_one_short_line_and_a_one_error_poll_adds_little() {
    let env = Env::new();
    let client = connect(&env).await;
    let gate = env.work().join("gate");
    let script = format!(
        "for i in $(seq 1 30); do echo \"GET /api 200 $i\"; done; \
         while [ ! -e {g} ]; do sleep 0.05; done; echo 'ERROR db timeout' >&2; sleep 300",
        g = gate.display()
    );
    let (_, run) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": script, "label": "api"}),
    )
    .await);
    let id = run["task_id"].as_str().unwrap().to_string();
    poll_until(Duration::from_secs(10), || {
        env.status(&id)["stdout_lines"] == 30
    });
    let poll = serde_json::json!({"task_id": "api", "since": true, "filter": "ERROR|WARN"});
    let (empty, doc) = ok(call(&client, "bg_output", poll.clone()).await);
    assert!(Env::texts(&doc).is_empty());
    assert!(empty.chars().count() <= 80, "{empty:?}");
    assert!(!empty.contains('\n'), "{empty:?}");
    assert!(empty.starts_with("no new matching lines"), "{empty:?}");
    assert!(
        !empty.contains("--") && !empty.contains(" of "),
        "{empty:?}"
    );
    std::fs::write(&gate, "").unwrap();
    poll_until(Duration::from_secs(10), || {
        env.status(&id)["stderr_lines"] == 1
    });
    let (one, doc) = ok(call(&client, "bg_output", poll.clone()).await);
    assert_eq!(Env::texts(&doc), ["ERROR db timeout"]);
    let line = "stderr│ ERROR db timeout";
    assert!(one.starts_with(line), "{one:?}");
    assert!(
        one.chars().count() <= line.chars().count() + 1 + 160,
        "{one:?}"
    );
    assert!(one.contains("1 new matching line (stderr)"), "{one:?}");
    // The full meta is structured content only.
    assert_eq!(doc["stderr_meta"]["total_lines"], 1);
    // Counts read right: "N new lines; M in the log", never "N of M".
    let (text, _) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": "api", "since": true, "reset_cursor": true, "stream": "stdout", "max_lines": 10, "raw": true}),
    )
    .await);
    let summary = text.lines().last().unwrap();
    assert_eq!(
        summary,
        "10 new lines; 30 in the log · 20 more: call again with since=true"
    );
    client.cancel().await.unwrap();
}

/// Closing number of the issue: characters per poll of a filtered 5-poll
/// sequence on a task printing a few lines between polls (run with
/// --nocapture to see it). Before this change the same scenario cost
/// 2,154 characters, 1,940 of them boilerplate.
#[tokio::test]
async fn a_filtered_five_poll_sequence_is_mostly_lines() {
    let env = Env::new();
    let client = connect(&env).await;
    let gate = env.work().join("step");
    let script = format!(
        "n=0; while [ $n -lt 5 ]; do while [ ! -e {g}$n ]; do sleep 0.02; done; \
         echo \"GET /a 200\"; echo \"GET /b 200\"; \
         if [ $((n % 2)) -eq 1 ]; then echo \"ERROR step $n failed\" >&2; fi; n=$((n+1)); done; sleep 300",
        g = gate.display()
    );
    let (_, run) = ok(call(&client, "bg_run", serde_json::json!({"command": script})).await);
    let id = run["task_id"].as_str().unwrap().to_string();
    let (mut total, mut lines) = (0, 0);
    for n in 0..5 {
        std::fs::write(format!("{}{n}", gate.display()), "").unwrap();
        poll_until(Duration::from_secs(10), || {
            env.status(&id)["stdout_lines"].as_u64().unwrap() == 2 * (n + 1)
        });
        let (text, doc) = ok(call(
            &client,
            "bg_output",
            serde_json::json!({"task_id": id, "since": true, "filter": "ERROR|WARN"}),
        )
        .await);
        total += text.chars().count();
        lines += Env::texts(&doc)
            .iter()
            .map(|t| t.chars().count() + 1)
            .sum::<usize>();
    }
    eprintln!("5 filtered polls: {total} characters, {lines} of them log lines");
    assert!(total < 400, "{total}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn schemas_are_portable_and_every_result_validates_against_its_output_schema() {
    let env = Env::new();
    let client = connect(&env).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 5);
    let mut validators = std::collections::HashMap::new();
    for tool in &tools {
        let mut all = Vec::new();
        types(&Value::Object((*tool.input_schema).clone()), &mut all);
        let output = Value::Object((*tool.output_schema.clone().expect("outputSchema")).clone());
        assert_eq!(output["type"], "object", "{}", tool.name);
        types(&output, &mut all);
        assert!(all.iter().all(Value::is_string), "{}: {all:?}", tool.name);
        let text = serde_json::to_string(&Value::Object((*tool.input_schema).clone())).unwrap();
        assert!(!text.contains("uint"), "{}: {text}", tool.name);
        let hints = tool.annotations.clone().expect("annotations");
        let read_only = matches!(tool.name.as_ref(), "bg_status" | "bg_output" | "bg_wait");
        assert_eq!(hints.read_only_hint, Some(read_only), "{}", tool.name);
        assert_eq!(
            hints.destructive_hint,
            Some(tool.name == "bg_stop"),
            "{}",
            tool.name
        );
        assert!(hints.idempotent_hint.is_some(), "{}", tool.name);
        validators.insert(
            tool.name.to_string(),
            jsonschema::validator_for(&output).unwrap(),
        );
    }
    let check = |tool: &str, doc: &Value| {
        let errors: Vec<String> = validators[tool]
            .iter_errors(doc)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{tool}: {errors:?}\n{doc}");
    };
    // Strings for integers and booleans; every tool, every result shape.
    let (_, doc) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "echo ERROR x >&2; sleep 300", "label": "s", "timeout": "5"}),
    )
    .await);
    check("bg_run", &doc);
    let (_, doc) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "echo done"}),
    )
    .await);
    check("bg_run", &doc);
    poll_until(Duration::from_secs(10), || {
        env.status("s")["stderr_lines"] == 1
    });
    assert!(env.status("s")["timeout_ms"] == 300_000);
    let (_, doc) = ok(call(&client, "bg_status", serde_json::json!({})).await);
    check("bg_status", &doc);
    let (_, doc) = ok(call(&client, "bg_status", serde_json::json!({"task_id": "s"})).await);
    check("bg_status", &doc);
    let (_, doc) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": "s", "since": "true", "tail": "5", "stream": "stderr"}),
    )
    .await);
    check("bg_output", &doc);
    assert_eq!(Env::texts(&doc), ["ERROR x"]);
    let (_, doc) = ok(call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": "s", "tail": 3}),
    )
    .await);
    check("bg_output", &doc);
    let (_, doc) = ok(call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "s", "for_line": "ERROR", "timeout_s": "5"}),
    )
    .await);
    check("bg_wait", &doc);
    let (_, doc) = ok(call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "s", "timeout_s": 1}),
    )
    .await);
    assert_eq!(doc["result"], "timeout");
    check("bg_wait", &doc);
    let (_, doc) = ok(call(&client, "bg_stop", serde_json::json!({"task_id": "s"})).await);
    check("bg_stop", &doc);
    let (_, doc) = ok(call(&client, "bg_stop", serde_json::json!({"older_than": "1h"})).await);
    check("bg_stop", &doc);
    let (_, doc) = ok(call(&client, "bg_stop", serde_json::json!({"action": "cleanup"})).await);
    check("bg_stop", &doc);
    // Unknown arguments are refused by name, and nothing is started.
    let bad = call(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 300", "bogus_flag": true}),
    )
    .await;
    assert!(failed(&bad).contains("unknown argument 'bogus_flag'"));
    let bad = call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": "s", "tail": "many"}),
    )
    .await;
    assert!(failed(&bad).contains("expected a whole number"));
    assert_eq!(env.ok(&["status"]).trim(), "no tasks");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn long_waits_fit_client_limits_with_progress_and_failed_tasks_show_stderr() {
    let env = Env::new();
    let named = Named {
        name: "waiter".into(),
        ..Named::default()
    };
    let progress = named.progress.clone();
    let client = connect_as(&env, named).await;
    let tools = client.list_all_tools().await.unwrap();
    let wait = tools.iter().find(|t| t.name == "bg_wait").unwrap();
    let timeout = wait.input_schema["properties"]["timeout_s"]["description"]
        .as_str()
        .unwrap();
    assert!(
        timeout.contains("default 45") && timeout.contains("60 s"),
        "{timeout}"
    );
    let (_, run) = ok(call_as(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 2.5; echo 'fatal: config missing' >&2; exit 3"}),
    )
    .await);
    let id = run["task_id"].as_str().unwrap().to_string();
    let mut params = CallToolRequestParams::new("bg_wait").with_arguments(
        serde_json::json!({"task_id": id})
            .as_object()
            .unwrap()
            .clone(),
    );
    params.meta = Some(rmcp::model::RequestMetaObject::with_progress_token(
        rmcp::model::ProgressToken(rmcp::model::NumberOrString::Number(7)),
    ));
    let result = client.call_tool(params).await.unwrap();
    let (text, doc) = ok(result);
    assert_eq!(doc["result"], "ended");
    assert_eq!(doc["exit_code"], 3);
    assert_eq!(
        doc["last_lines"]["lines"][0], "fatal: config missing",
        "{doc}"
    );
    assert!(text.contains("fatal: config missing"), "{text}");
    let seen = progress.lock().unwrap().clone();
    assert!(seen.len() >= 2, "progress notifications: {seen:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_parameters_the_cli_has() {
    let env = Env::new();
    let client = connect(&env).await;
    // bg_run: env, replace, timeout.
    let (_, first) = ok(call(&client, "bg_run", serde_json::json!({"command": "echo \"port=$PORT\"; sleep 300", "label": "web", "env": {"PORT": "3001"}, "timeout": 1})).await);
    poll_until(Duration::from_secs(10), || {
        env.status("web")["stdout_lines"] == 1
    });
    assert_eq!(Env::texts(&env.output_json(&["web"])), ["port=3001"]);
    assert_eq!(env.status("web")["timeout_ms"], 60_000);
    let taken = call(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 300", "label": "web"}),
    )
    .await;
    assert!(failed(&taken).contains("web"));
    let (_, second) = ok(call(&client, "bg_run", serde_json::json!({"command": "printf 'a\\nB\\nb\\nc\\n'; sleep 300", "label": "web", "replace": true})).await);
    assert_eq!(env.state(first["task_id"].as_str().unwrap()), "stopped");
    let web = second["task_id"].as_str().unwrap().to_string();
    poll_until(Duration::from_secs(10), || {
        env.status(&web)["stdout_lines"] == 4
    });
    // bg_output: head, case_sensitive, cursor, reset_cursor.
    let read = |args: Value| {
        let client = &client;
        async move { Env::texts(&ok(call(client, "bg_output", args).await).1) }
    };
    assert_eq!(
        read(serde_json::json!({"task_id": "web", "head": 2})).await,
        ["a", "B"]
    );
    assert_eq!(
        read(serde_json::json!({"task_id": "web", "filter": "b"})).await,
        ["B", "b"]
    );
    assert_eq!(
        read(serde_json::json!({"task_id": "web", "filter": "b", "case_sensitive": true})).await,
        ["b"]
    );
    let named = serde_json::json!({"task_id": "web", "since": true, "cursor": "mine"});
    assert_eq!(read(named.clone()).await.len(), 4);
    assert!(read(named.clone()).await.is_empty());
    assert_eq!(read(serde_json::json!({"task_id": "web", "since": true, "cursor": "mine", "reset_cursor": true})).await.len(), 4);
    let both = call(
        &client,
        "bg_output",
        serde_json::json!({"task_id": "web", "head": 1, "tail": 1}),
    )
    .await;
    assert!(failed(&both).contains("tail or head"));
    // bg_wait: one condition, a real port, for_http.
    let two = call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "web", "for_line": "a", "for_port": 8080}),
    )
    .await;
    assert!(failed(&two).contains("give one condition, not for_line and for_port"));
    let zero = call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "web", "for_port": 0}),
    )
    .await;
    assert!(failed(&zero).contains("for_port must be a port number"));
    let host = call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "web", "host": "::1"}),
    )
    .await;
    assert!(failed(&host).contains("host needs for_port"));
    let (_, doc) = ok(call(
        &client,
        "bg_wait",
        serde_json::json!({"task_id": "web", "for_http": "http://127.0.0.1:9/", "timeout_s": 1}),
    )
    .await);
    assert_eq!(doc["result"], "timeout");
    // bg_stop: kill is stop; cleanup with task_id removes only that task.
    let (_, done) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 0.3", "label": "done1"}),
    )
    .await);
    let (_, other) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 0.3", "label": "done2"}),
    )
    .await);
    let (_, doc) = ok(call(
        &client,
        "bg_stop",
        serde_json::json!({"task_id": "web", "action": "kill"}),
    )
    .await);
    assert_eq!(doc["result"], "stopped");
    env.wait_done(done["task_id"].as_str().unwrap());
    env.wait_done(other["task_id"].as_str().unwrap());
    let (text, doc) = ok(call(
        &client,
        "bg_stop",
        serde_json::json!({"task_id": "done1", "action": "cleanup"}),
    )
    .await);
    assert_eq!(doc["removed"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(doc["removed"][0]["task_id"], done["task_id"]);
    assert_eq!(env.state(other["task_id"].as_str().unwrap()), "exited");
    // older_than: recent finished tasks are kept.
    let (_, doc) = ok(call(
        &client,
        "bg_stop",
        serde_json::json!({"action": "cleanup", "older_than": "1h"}),
    )
    .await);
    assert!(doc["removed"].as_array().unwrap().is_empty());
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn start_failures_are_told_at_once() {
    let env = Env::new();
    let client = connect(&env).await;
    let bad = call(
        &client,
        "bg_run",
        serde_json::json!({"command": "definitely-not-a-command"}),
    )
    .await;
    let text = failed(&bad);
    assert!(
        text.contains("failed at once") && text.contains("127"),
        "{text}"
    );
    assert!(
        text.contains("definitely-not-a-command: not found"),
        "{text}"
    );
    let (text, doc) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "echo hello"}),
    )
    .await);
    assert!(
        text.contains("finished at once") && text.ends_with("hello"),
        "{text}"
    );
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["output"], serde_json::json!(["hello"]));
    let (text, doc) = ok(call(
        &client,
        "bg_run",
        serde_json::json!({"command": "sleep 300"}),
    )
    .await);
    assert!(text.contains("started"), "{text}");
    assert_eq!(doc["state"], "running");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn each_connection_has_its_own_cursor_and_a_named_cursor_survives_reconnects() {
    let env = Env::new();
    let gate = env.work().join("more");
    let script = format!(
        "echo one; while [ ! -e {g} ]; do sleep 0.02; done; echo two; sleep 300",
        g = gate.display()
    );
    let id = env.start(&[&script]);
    poll_until(Duration::from_secs(10), || {
        env.status(&id)["stdout_lines"] == 1
    });
    let as_client = |name: &str| Named {
        name: name.into(),
        ..Named::default()
    };
    let a = connect_as(&env, as_client("claude code")).await;
    let b = connect_as(&env, as_client("claude-code")).await;
    let poll = serde_json::json!({"task_id": id, "since": true});
    let texts = |r: CallToolResult| Env::texts(&ok(r).1);
    assert_eq!(texts(call_as(&a, "bg_output", poll.clone()).await), ["one"]);
    assert_eq!(
        texts(call_as(&b, "bg_output", poll.clone()).await),
        ["one"],
        "b's lines were not stolen by a"
    );
    let named = serde_json::json!({"task_id": id, "since": true, "cursor": "agent-1"});
    assert_eq!(
        texts(call_as(&a, "bg_output", named.clone()).await),
        ["one"]
    );
    a.cancel().await.unwrap();
    std::fs::write(&gate, "").unwrap();
    poll_until(Duration::from_secs(10), || {
        env.status(&id)["stdout_lines"] == 2
    });
    let a = connect_as(&env, as_client("claude code")).await;
    assert_eq!(
        texts(call_as(&a, "bg_output", named.clone()).await),
        ["two"],
        "the named cursor lives on"
    );
    assert_eq!(texts(call_as(&b, "bg_output", poll.clone()).await), ["two"]);
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

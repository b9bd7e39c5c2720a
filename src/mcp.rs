//! `bgt mcp`: the background-task tools over the Model Context Protocol
//! (stdio), with the tool names and parameters agents know from the
//! background-tasks skill: `bg_run`, `bg_status`, `bg_output`, `bg_stop`,
//! plus `bg_wait`.
//!
//! Every tool calls the same library functions as the CLI (`control`,
//! `logread`, `waiting`, `info`, `render`); nothing here re-implements a
//! behaviour. Tasks are started by re-exec'd supervisors, so they outlive
//! this server. Only this module starts a tokio runtime. stdout is the
//! protocol channel: nothing here prints to it.

use crate::cli::{OutputArgs, StreamChoice};
use crate::control::{self, StartSpec, StopOutcome};
use crate::info::TaskInfo;
use crate::logread;
use crate::render;
use crate::store::{Store, Task};
use crate::waiting::{self, Condition, Outcome};
use anyhow::Result;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt,
    handler::server::wrapper::Parameters,
    model::{CallToolResult, ClientRequest, ConstString, ContentBlock, JsonRpcMessage},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    tool, tool_handler, tool_router,
    transport::Transport,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Default `bg_run` timeout in minutes: agents forget dev servers.
const DEFAULT_TIMEOUT_MINUTES: u64 = 120;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunParams {
    /// Shell command to run (through `sh -c`), e.g. "cd apps/api && npm run dev".
    pub command: String,
    /// Descriptive name to refer to the task later (letters, digits, '.', '_', '-').
    pub label: Option<String>,
    /// Working directory for the command.
    pub cwd: Option<String>,
    /// Stop the task after this many minutes (default 120; 0 = never).
    pub timeout: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusParams {
    /// Task id, id prefix or label; omit to list all tasks.
    pub task_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamParam {
    Stdout,
    Stderr,
    Both,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OutputParams {
    /// Task id, id prefix or label.
    pub task_id: String,
    /// Only lines matching this regex (case-insensitive; `ERROR|WARN` or grep-style `ERROR\|WARN`).
    pub filter: Option<String>,
    /// Drop lines matching this regex first (case-sensitive), e.g. "GET 200|HMR|healthcheck".
    pub exclude: Option<String>,
    /// Only lines added since your last since=true read of this task (incremental polling).
    pub since: Option<bool>,
    /// Only the last N matching lines.
    pub tail: Option<u64>,
    /// Cap on returned lines (default 200); nothing is skipped: with since=true the next read continues after the last returned line.
    pub max_lines: Option<u64>,
    /// "stdout", "stderr" or "both" (default both).
    pub stream: Option<StreamParam>,
    /// Noise preset(s), comma-separated: next, express, django, rails, vite, general, webpack, jest, pytest, cargo.
    pub preset: Option<String>,
    /// Return lines exactly as written (no ANSI stripping, collapsing or cutting).
    pub raw: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StopAction {
    Stop,
    Cleanup,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StopParams {
    /// Task id, id prefix or label to stop (with its whole process tree).
    pub task_id: Option<String>,
    /// "stop" (default) or "cleanup" (remove all finished tasks and their logs).
    pub action: Option<StopAction>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitParams {
    /// Task id, id prefix or label.
    pub task_id: String,
    /// Return as soon as a log line matches this regex (e.g. "ready|listening").
    pub for_line: Option<String>,
    /// Return as soon as this TCP port accepts connections (127.0.0.1 and ::1).
    pub for_port: Option<u16>,
    /// Give up after this many seconds (default 60; 0 = never).
    pub timeout_s: Option<u64>,
}

/// The MCP server; stateless, every call reads the state directory.
#[derive(Debug, Clone, Default)]
pub struct BgtServer;

/// What a tool returns: text for the model, structured JSON for programs.
type Reply = (String, Value);

/// Runs blocking library code off the runtime thread and turns its error
/// into a tool error (the server keeps serving).
async fn call(
    f: impl FnOnce() -> Result<Reply> + Send + 'static,
) -> Result<CallToolResult, McpError> {
    let outcome = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| McpError::internal_error(format!("tool failed: {e}"), None))?;
    Ok(match outcome {
        Ok((text, structured)) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(structured);
            result
        }
        Err(err) => CallToolResult::error(vec![ContentBlock::text(format!("bgt: {err:#}"))]),
    })
}

#[tool_router]
impl BgtServer {
    /// Start a shell command in the background and return its task id at once.
    /// Give it a descriptive label. The task runs in its own session with its
    /// own supervisor and survives this server. It is stopped automatically
    /// after `timeout` minutes (default 120, 0 = never), so a forgotten dev
    /// server does not run overnight.
    #[tool]
    async fn bg_run(
        &self,
        Parameters(p): Parameters<RunParams>,
    ) -> Result<CallToolResult, McpError> {
        call(move || run(p)).await
    }

    /// List all background tasks, or show one: id, label, state (running,
    /// exited, signaled, stopped, timed-out, lost), exit code, runtime and
    /// stdout/stderr line counts. Check line counts before reading output.
    #[tool]
    async fn bg_status(
        &self,
        Parameters(p): Parameters<StatusParams>,
    ) -> Result<CallToolResult, McpError> {
        call(move || status(p)).await
    }

    /// Read a task's output without flooding your context. NEVER read a dev
    /// server's raw log: always pass `filter` (e.g. "error|warn|exception|fail")
    /// or `tail`. Use `exclude` or `preset` (next, express, django, rails, vite,
    /// general) to drop noise, `since=true` when polling (only new lines), and
    /// `max_lines` when unsure. The reply ends with stdout_meta/stderr_meta:
    /// total_lines says how much exists; if it is large, filter harder.
    /// Lines are cleaned (colours stripped, repeated lines collapsed).
    #[tool]
    async fn bg_output(
        &self,
        Parameters(p): Parameters<OutputParams>,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let cursor = cursor_name(&peer);
        call(move || output(p, cursor)).await
    }

    /// Stop a task and its whole process tree (SIGTERM, SIGKILL after 5 s),
    /// or with action="cleanup" remove all finished tasks and their logs.
    #[tool]
    async fn bg_stop(
        &self,
        Parameters(p): Parameters<StopParams>,
    ) -> Result<CallToolResult, McpError> {
        call(move || stop(p)).await
    }

    /// Wait until a task is ready (a log line matches `for_line`, or `for_port`
    /// accepts connections) or, with neither, until it ends. Fails fast with
    /// the task's last error lines if it dies first.
    #[tool]
    async fn bg_wait(
        &self,
        Parameters(p): Parameters<WaitParams>,
    ) -> Result<CallToolResult, McpError> {
        call(move || wait(p)).await
    }
}

#[tool_handler(
    name = "bgt",
    instructions = "Background tasks with a smart log reader. Start long-running commands (dev servers, \
test suites, builds) with bg_run and a label, keep working, then check on them with bg_status and read \
their logs with bg_output. Keep your context clean: filter dev-server logs (filter=\"error|warn\"), drop \
noise with exclude/preset, poll with since=true, cap with max_lines, and watch total_lines in the meta. \
Stop what you started with bg_stop, and bg_stop action=\"cleanup\" when done."
)]
impl ServerHandler for BgtServer {}

/// How long calls still running when the client closes stdin may take to
/// finish (their replies are written if they do). rmcp alone would wait 5 s,
/// and a `bg_wait` can block for minutes; the tasks themselves never depend
/// on this server, so nothing is lost by leaving.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Serves MCP on stdio until the client closes it. Returns the exit code.
pub fn serve() -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let (lines, writer) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_lines(writer));
        let (closed, stdin_closed) = tokio::sync::oneshot::channel();
        let service = BgtServer.serve(StdioLines::new(lines, closed)).await?;
        tokio::select! {
            done = service.waiting() => {
                done?;
            }
            _ = async {
                let _ = stdin_closed.await;
                tokio::time::sleep(CLOSE_GRACE).await;
            } => {}
        }
        anyhow::Ok(0)
    });
    // Blocking calls still in flight (a long `bg_wait`) and the stdin
    // reader cannot be cancelled: do not wait for them.
    runtime.shutdown_background();
    result
}

/// A line for stdout, and who wants to know it was written.
type OutLine = (
    Vec<u8>,
    Option<tokio::sync::oneshot::Sender<std::io::Result<()>>>,
);

/// The one writer of stdout: replies from rmcp and protocol errors from
/// [`StdioLines`] go through it whole, so lines never interleave.
async fn write_lines(mut lines: tokio::sync::mpsc::UnboundedReceiver<OutLine>) {
    use tokio::io::AsyncWriteExt;
    let mut stdout = tokio::io::stdout();
    while let Some((line, written)) = lines.recv().await {
        let result = async {
            stdout.write_all(&line).await?;
            stdout.flush().await
        }
        .await;
        if let Some(written) = written {
            let _ = written.send(result);
        }
    }
}

/// MCP's stdio transport (one JSON-RPC message per line) with the error
/// replies JSON-RPC 2.0 requires, which rmcp's own does not give: it drops
/// a line that is not JSON without a word, and answers bad params with
/// -32601 or an id-less -32600. Here a line that is not JSON gets -32700
/// Parse error (id null), one that is not a request object -32600 Invalid
/// Request, a known method with bad params -32602 Invalid params, an
/// unknown one -32601; a notification never gets a reply. Only well-formed
/// messages reach rmcp. It also tells [`serve`] when stdin closes.
struct StdioLines {
    input: tokio::io::BufReader<tokio::io::Stdin>,
    /// The line being read; kept across calls, since rmcp may cancel a
    /// `receive` between two reads of the same line.
    line: Vec<u8>,
    output: tokio::sync::mpsc::UnboundedSender<OutLine>,
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The client-to-server methods with typed params: if one of them arrives
/// as rmcp's catch-all `CustomRequest`, its params did not fit.
const TYPED_METHODS: &[&str] = &[
    rmcp::model::InitializeResultMethod::VALUE,
    rmcp::model::PingRequestMethod::VALUE,
    rmcp::model::CallToolRequestMethod::VALUE,
    rmcp::model::ListToolsRequestMethod::VALUE,
    rmcp::model::ListPromptsRequestMethod::VALUE,
    rmcp::model::GetPromptRequestMethod::VALUE,
    rmcp::model::ListResourcesRequestMethod::VALUE,
    rmcp::model::ListResourceTemplatesRequestMethod::VALUE,
    rmcp::model::ReadResourceRequestMethod::VALUE,
    rmcp::model::SubscribeRequestMethod::VALUE,
    rmcp::model::UnsubscribeRequestMethod::VALUE,
    rmcp::model::SetLevelRequestMethod::VALUE,
    rmcp::model::CompleteRequestMethod::VALUE,
];

impl StdioLines {
    fn new(
        output: tokio::sync::mpsc::UnboundedSender<OutLine>,
        closed: tokio::sync::oneshot::Sender<()>,
    ) -> StdioLines {
        StdioLines {
            input: tokio::io::BufReader::new(tokio::io::stdin()),
            line: Vec::new(),
            output,
            closed: Some(closed),
        }
    }
}

/// A JSON-RPC error response.
fn error_reply(id: Option<Value>, code: i32, message: String) -> Vec<u8> {
    let reply = json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    });
    let mut line = reply.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// One input line: a message for rmcp, an error reply to send back, or
/// nothing (blank lines, bad notifications, stray responses).
fn classify(line: &[u8]) -> Option<Result<RxJsonRpcMessage<RoleServer>, Vec<u8>>> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return Some(Err(error_reply(None, -32700, "Parse error".into())));
    };
    let Some(object) = value.as_object() else {
        return Some(Err(error_reply(None, -32600, "Invalid Request".into())));
    };
    let id = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned();
    let method = object.get("method").and_then(Value::as_str);
    let version_ok = object.get("jsonrpc").is_some_and(|v| v == "2.0");
    let bad_params = |method: &str, why: String| {
        let message = format!("Invalid params for {method}{why}");
        Some(Err(error_reply(id.clone(), -32602, message)))
    };
    match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value.clone()) {
        Ok(JsonRpcMessage::Request(request)) => match &request.request {
            ClientRequest::CustomRequest(custom)
                if TYPED_METHODS.contains(&custom.method.as_str()) =>
            {
                bad_params(&custom.method, String::new())
            }
            _ => Some(Ok(JsonRpcMessage::Request(request))),
        },
        Ok(message) => Some(Ok(message)),
        // A notification never gets a reply, and a bad response has nobody to go to.
        Err(_) if !object.contains_key("id") && method.is_some() => None,
        Err(_)
            if method.is_none()
                && (object.contains_key("result") || object.contains_key("error")) =>
        {
            None
        }
        Err(_) => match (method, &id) {
            (Some(method), Some(_)) if version_ok && TYPED_METHODS.contains(&method) => {
                let why = match object.get("params") {
                    Some(params) if !params.is_object() => ": params must be an object".into(),
                    _ => String::new(),
                };
                bad_params(method, why)
            }
            (Some(method), Some(_)) if version_ok => Some(Err(error_reply(
                id.clone(),
                -32601,
                format!("Method not found: {method}"),
            ))),
            _ => Some(Err(error_reply(
                id.clone(),
                -32600,
                "Invalid Request".into(),
            ))),
        },
    }
}

impl Transport<RoleServer> for StdioLines {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let output = self.output.clone();
        let line = serde_json::to_vec(&item).map(|mut line| {
            line.push(b'\n');
            line
        });
        async move {
            let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdout is closed");
            let (written, done) = tokio::sync::oneshot::channel();
            output
                .send((line.map_err(std::io::Error::other)?, Some(written)))
                .map_err(|_| closed())?;
            done.await.map_err(|_| closed())?
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        use tokio::io::AsyncBufReadExt;
        loop {
            // Cancel-safe: a partial read stays in `self.line`.
            let read = self.input.read_until(b'\n', &mut self.line).await;
            let at_end = !matches!(read, Ok(n) if n > 0);
            let line = std::mem::take(&mut self.line);
            match classify(&line) {
                Some(Ok(message)) if !at_end => return Some(message),
                Some(Err(reply)) => {
                    let _ = self.output.send((reply, None));
                }
                _ => {}
            }
            if at_end {
                if let Some(closed) = self.closed.take() {
                    let _ = closed.send(());
                }
                return None;
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The `since` cursor of this client: named after it, so an agent's polling
/// does not move a person's terminal cursor (or another agent's).
fn cursor_name(peer: &Peer<RoleServer>) -> String {
    let client = peer
        .peer_info()
        .map(|info| info.client_info.name.clone())
        .unwrap_or_default();
    let safe: String = client
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if safe.is_empty() {
        "mcp".into()
    } else {
        format!("mcp-{safe}")
    }
}

fn resolve(task_id: &str) -> Result<(Store, Task)> {
    let store = Store::open_default()?;
    let task = store.resolve(task_id)?;
    Ok((store, task))
}

fn run(p: RunParams) -> Result<Reply> {
    if let Some(label) = &p.label {
        crate::store::validate_name("label", label).map_err(crate::error::usage)?;
    }
    let store = Store::open_default()?;
    let cwd = control::resolve_cwd(p.cwd.as_deref().map(Path::new))?;
    let minutes = p.timeout.unwrap_or(DEFAULT_TIMEOUT_MINUTES);
    let started = control::start(
        &store,
        StartSpec {
            command: control::shell_command(&p.command)?,
            label: p.label,
            cwd,
            env: BTreeMap::new(),
            timeout: crate::duration::limit(Some(crate::duration::clamp(Duration::from_secs(
                minutes.saturating_mul(60),
            )))),
            replace: false,
        },
    )?;
    // This server lives on: reap the supervisor when it exits, no zombie.
    let mut supervisor = started.supervisor;
    std::thread::spawn(move || supervisor.wait());
    let label = started.label.clone().unwrap_or_else(|| "none".into());
    let text = format!(
        "task {} started (label {label}, pid {})",
        started.id, started.pid
    );
    Ok((
        text,
        json!({ "task_id": started.id, "label": started.label, "pid": started.pid }),
    ))
}

fn status(p: StatusParams) -> Result<Reply> {
    let mut text = Vec::new();
    match p.task_id {
        Some(id) => {
            let info = TaskInfo::of(&resolve(&id)?.1);
            render::task_detail(&mut text, &info, Default::default())?;
            Ok((
                String::from_utf8_lossy(&text).into_owned(),
                serde_json::to_value(info)?,
            ))
        }
        None => {
            let infos: Vec<TaskInfo> = Store::open_default()?
                .list()?
                .iter()
                .map(TaskInfo::of)
                .collect();
            render::task_table(&mut text, &infos, Default::default(), None)?;
            Ok((
                String::from_utf8_lossy(&text).into_owned(),
                json!({ "tasks": infos }),
            ))
        }
    }
}

fn output(p: OutputParams, cursor: String) -> Result<Reply> {
    let args = OutputArgs {
        task: Some(p.task_id.clone()),
        stream: match p.stream {
            Some(StreamParam::Stdout) => StreamChoice::Stdout,
            Some(StreamParam::Stderr) => StreamChoice::Stderr,
            Some(StreamParam::Both) | None => StreamChoice::Both,
        },
        filter: p.filter.clone(),
        exclude: p.exclude,
        preset: p
            .preset
            .iter()
            .flat_map(|s| s.split([',', ' ']))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        since: p.since.unwrap_or(false),
        cursor,
        reset_cursor: false,
        tail: p.tail.map(|n| n as usize),
        head: None,
        max_lines: p.max_lines.map_or(200, |n| n as usize),
        max_line_chars: crate::clean::DEFAULT_MAX_LINE_CHARS,
        raw: p.raw.unwrap_or(false),
        case_sensitive: false,
        ignore_case: false,
        follow: false,
        json: true,
        list_presets: false,
    };
    let req = crate::commands::output::request(&args)?;
    let (_, task) = resolve(&p.task_id)?;
    task.meta()?;
    let result = logread::read(&task.dir, &req)?;
    let doc = render::output_json(&TaskInfo::of(&task), &result);
    let mut text = Vec::new();
    render::output_lines(&mut text, &result, &Default::default())?;
    let mut text = String::from_utf8_lossy(&text).into_owned();
    text.push_str(&render::output_summary(
        &result,
        p.filter.as_deref(),
        args.since,
    ));
    for key in ["stdout_meta", "stderr_meta"] {
        if !doc[key].is_null() {
            text.push_str(&format!("\n{key}: {}", doc[key]));
        }
    }
    Ok((text, doc))
}

fn stop(p: StopParams) -> Result<Reply> {
    if let Some(StopAction::Cleanup) = p.action {
        let report = control::cleanup(&Store::open_default()?, None, false)?;
        let removed: Vec<&str> = report.removed.iter().map(|i| i.id.as_str()).collect();
        let kept: Vec<&str> = report.kept_running.iter().map(|i| i.id.as_str()).collect();
        let mut text = format!("removed {} finished task(s)", removed.len());
        if !removed.is_empty() {
            text.push_str(&format!(": {}", removed.join(", ")));
        }
        if !kept.is_empty() {
            text.push_str(&format!(
                "; still running (stop them first): {}",
                kept.join(", ")
            ));
        }
        return Ok((text, json!({ "removed": removed, "kept_running": kept })));
    }
    let id = p
        .task_id
        .ok_or_else(|| crate::error::usage("task_id is required to stop a task"))?;
    let (_, task) = resolve(&id)?;
    let outcome = control::stop(
        &task,
        nix::sys::signal::Signal::SIGTERM,
        crate::supervisor::DEFAULT_GRACE,
    )?;
    let info = TaskInfo::of(&task.reload());
    let (result, text) = match outcome {
        StopOutcome::Stopped | StopOutcome::KilledOrphan => {
            ("stopped", format!("task {} stopped", task.id))
        }
        StopOutcome::AlreadyEnded(_) => (
            "already-ended",
            format!("task {} had already ended ({})", task.id, info.state_text()),
        ),
        StopOutcome::LostUnverifiable => (
            "lost",
            format!(
                "task {} is lost; its processes cannot be identified safely",
                task.id
            ),
        ),
    };
    Ok((
        text,
        json!({ "task_id": task.id, "result": result, "state": info.state }),
    ))
}

fn wait(p: WaitParams) -> Result<Reply> {
    let (_, task) = resolve(&p.task_id)?;
    let condition = match (&p.for_line, p.for_port) {
        (Some(re), _) => Condition::line(re, StreamChoice::Both.streams())?,
        (None, Some(port)) => Condition::port(port, None)?,
        (None, None) => Condition::Exit,
    };
    let timeout = Duration::from_secs(p.timeout_s.unwrap_or(60));
    let deadline =
        crate::duration::limit(Some(crate::duration::clamp(timeout))).map(|t| Instant::now() + t);
    let tasks = [task];
    let outcome = waiting::wait(&tasks, &condition, deadline)?;
    let task = &tasks[0];
    let (result, code, mut text) = match &outcome {
        Outcome::Ended { exit_code } => (
            "ended",
            *exit_code,
            format!("task {} ended with exit code {exit_code}", task.id),
        ),
        Outcome::Ready { lines } => {
            let mut text = format!("task {} is ready", task.id);
            if let Some(line) = lines.first() {
                text.push_str(&format!(": {line}"));
            }
            ("ready", 0, text)
        }
        Outcome::TaskEnded {
            exit_code, reason, ..
        } => (
            "task-ended",
            *exit_code,
            format!(
                "task {} ended (exit code {exit_code}) before {}{}",
                task.id,
                condition.describe(),
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
        Outcome::TimedOut { reason } => (
            "timeout",
            waiting::TIMED_OUT,
            format!(
                "timed out waiting for {} (task {} still running){}",
                condition.describe(),
                task.id,
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
    };
    let reason = match &outcome {
        Outcome::TaskEnded { reason, .. } | Outcome::TimedOut { reason } => reason.clone(),
        _ => None,
    };
    if matches!(
        outcome,
        Outcome::TaskEnded { .. } | Outcome::TimedOut { .. }
    ) && let Some((stream, lines)) = waiting::last_lines(task, 20)
    {
        text.push_str(&format!(
            "\nlast {} lines of {}:\n{}",
            lines.len(),
            stream.name(),
            lines.join("\n")
        ));
    }
    Ok((
        text,
        json!({ "task_id": task.id, "result": result, "exit_code": code, "reason": reason }),
    ))
}

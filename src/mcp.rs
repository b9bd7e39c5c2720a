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
    model::{CallToolResult, ContentBlock},
    tool, tool_handler, tool_router,
    transport::stdio,
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
    /// Give up after this many seconds (default 60).
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

/// Serves MCP on stdio until the client closes it. Returns the exit code.
pub fn serve() -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let service = BgtServer.serve(stdio()).await?;
        service.waiting().await?;
        anyhow::Ok(0)
    });
    // The stdin reader cannot be cancelled; do not wait for it forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
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
            timeout: (minutes > 0)
                .then(|| crate::duration::clamp(Duration::from_secs(minutes.saturating_mul(60)))),
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
            render::task_detail(&mut text, &info)?;
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
            render::task_table(&mut text, &infos)?;
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
        max_lines: p.max_lines.map(|n| n as usize),
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
    render::output_lines(&mut text, &result)?;
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
    let deadline =
        Instant::now() + crate::duration::clamp(Duration::from_secs(p.timeout_s.unwrap_or(60)));
    let tasks = [task];
    let outcome = waiting::wait(&tasks, &condition, Some(deadline))?;
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
        Outcome::TaskEnded { exit_code, .. } => (
            "task-ended",
            *exit_code,
            format!(
                "task {} ended (exit code {exit_code}) before {}",
                task.id,
                condition.describe()
            ),
        ),
        Outcome::TimedOut => (
            "timeout",
            waiting::TIMED_OUT,
            format!(
                "timed out waiting for {} (task {} still running)",
                condition.describe(),
                task.id
            ),
        ),
    };
    if matches!(outcome, Outcome::TaskEnded { .. } | Outcome::TimedOut)
        && let Some((stream, lines)) = waiting::last_lines(task, 20)
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
        json!({ "task_id": task.id, "result": result, "exit_code": code }),
    ))
}

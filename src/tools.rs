//! The `bg_*` tools that agents call, once for every agent face: MCP
//! (`bgt mcp`, see `mcp.rs`) and the Amp toolbox (`bgt toolbox`, see
//! `toolbox.rs`) only move JSON in and out; the parameters, their schemas,
//! the mapping onto the core (`control`, `logread`, `waiting`, `info`) and
//! the text an agent reads all live here, so the faces cannot drift.
//!
//! The text is lean on purpose: an agent polls `bg_output` many times, and
//! every character of boilerplate is paid for at each poll. The lines come
//! first, then one short summary in the tools' own words (`since=true`,
//! never a CLI flag); the full numbers are in the structured result.

use crate::error::{ErrorKind, fail, usage};
use crate::info::TaskInfo;
use crate::lifecycle::stop::stop_tasks;
use crate::lifecycle::waiting::{self, Condition, Outcome};
use crate::lifecycle::{cleanup::CleanupPlan, command, start, start::StartSpec};
use crate::logs::options::{DEFAULT_MAX_LINES, ReadOptions};
use crate::logs::pattern::Case;
use crate::logs::read::{self as logread, MatchContext, Stream};
use crate::render::{self, thousands};
use crate::report::{
    CleanupReport, LastLines, OutputReport, RunReport, StartReport, StatusReport, StopReport,
    TaskBrief, WaitReport, WaitResult,
};
use crate::task::store::{Store, Task, TaskState, validate_name};
use anyhow::Result;
use lenient::{Count, Flag, count, flag};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Default `bg_run` timeout in minutes: agents forget dev servers.
pub const DEFAULT_TIMEOUT_MINUTES: u64 = 120;

/// Default `bg_wait` time limit in seconds. Clients built on the MCP
/// TypeScript SDK give up on a tool call after 60 s, so the default stays
/// well under that; longer waits are several calls.
pub const DEFAULT_WAIT_SECONDS: u64 = 45;

/// How long `bg_run` watches a new task before answering: a command that
/// cannot start (`sh: foo: not found`) exits within it, and is reported as
/// a failure instead of "started".
pub const START_WINDOW: Duration = Duration::from_millis(200);

/// Paging in the tools' own parameters.
const TOOL_WORDS: render::PagingWords = render::PagingWords {
    more: "more:",
    again: "call again with since=true",
    narrow: "filter harder, or page with since=true",
    reset: "log was replaced: read from its start",
};

/// How many lines of a task a start failure or a bad wait shows.
const LAST_LINES: usize = 20;

/// Parameters that are numbers or booleans also accept their string forms
/// (`"5"`, `"true"`): some clients send every argument as a string.
mod lenient {
    use schemars::{JsonSchema, Schema, SchemaGenerator};
    use serde::{Deserialize, Deserializer, de::Error};
    use serde_json::Value;
    use std::borrow::Cow;

    /// A whole-number parameter.
    #[derive(Debug, Clone, Copy)]
    pub struct Count(pub u64);

    /// A boolean parameter.
    #[derive(Debug, Clone, Copy)]
    pub struct Flag(pub bool);

    /// The number a parameter holds, if it was given.
    pub fn count(v: Option<Count>) -> Option<u64> {
        v.map(|Count(n)| n)
    }

    /// The value of a flag, or `default` when it was not given.
    pub fn flag(v: Option<Flag>, default: bool) -> bool {
        v.map_or(default, |Flag(b)| b)
    }

    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let bad = |v: &dyn std::fmt::Display| {
                D::Error::custom(format!("expected a whole number, got {v}"))
            };
            match Value::deserialize(d)? {
                Value::Number(n) => n.as_u64().map(Count).ok_or_else(|| bad(&n)),
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map(Count)
                    .map_err(|_| bad(&format!("{s:?}"))),
                other => Err(bad(&other)),
            }
        }
    }

    impl<'de> Deserialize<'de> for Flag {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let bad = |v: &dyn std::fmt::Display| {
                D::Error::custom(format!("expected true or false, got {v}"))
            };
            match Value::deserialize(d)? {
                Value::Bool(b) => Ok(Flag(b)),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(Flag(true)),
                    "false" | "0" => Ok(Flag(false)),
                    _ => Err(bad(&format!("{s:?}"))),
                },
                other => Err(bad(&other)),
            }
        }
    }

    /// The schemas say what a client should send (a number, a boolean):
    /// each type's schema is its plain type's; the string forms are a
    /// courtesy, not advertised.
    macro_rules! schema_of_plain {
        ($lenient:ty, $plain:ty) => {
            impl JsonSchema for $lenient {
                fn inline_schema() -> bool {
                    true
                }
                fn schema_name() -> Cow<'static, str> {
                    <$plain>::schema_name()
                }
                fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                    <$plain>::json_schema(generator)
                }
            }
        };
    }
    schema_of_plain!(Count, u64);
    schema_of_plain!(Flag, bool);
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunParams {
    /// Shell command to run (through `sh -c`), e.g. "cd apps/api && npm run dev".
    pub command: String,
    /// Descriptive name to refer to the task later (letters, digits, '.', '_', '-').
    pub label: Option<String>,
    /// Working directory for the command.
    pub cwd: Option<String>,
    /// Environment variables for the command, e.g. {"PORT": "3001"}.
    pub env: Option<BTreeMap<String, String>>,
    /// Stop the running task with the same label first (without it, a label in use is an error).
    pub replace: Option<Flag>,
    /// Stop the task after this many minutes (default 120; 0 = never).
    pub timeout: Option<Count>,
    /// Start only when these tasks have ended (ids or labels, comma-separated); the task is `queued` until then.
    pub after: Option<String>,
    /// Like `after`, but start only if they all exited 0; otherwise the task ends `skipped`.
    pub after_ok: Option<String>,
    /// Run in this named queue: at most `slots` of its tasks at once, in the order they were queued.
    pub queue: Option<String>,
    /// How many tasks of `queue` may run at once (default 1; changes the queue's limit).
    pub slots: Option<Count>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusParams {
    /// Task id, id prefix or label; omit to list all tasks.
    pub task_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamParam {
    Stdout,
    Stderr,
    Both,
}

impl StreamParam {
    fn streams(self) -> Vec<Stream> {
        match self {
            StreamParam::Stdout => vec![Stream::Stdout],
            StreamParam::Stderr => vec![Stream::Stderr],
            StreamParam::Both => vec![Stream::Stdout, Stream::Stderr],
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OutputParams {
    /// The task whose logs to read: its id, an id prefix or its label.
    pub task_id: String,
    /// Only lines matching this regex (case-insensitive unless case_sensitive; `ERROR|WARN` or grep-style `ERROR\|WARN`).
    pub filter: Option<String>,
    /// Drop lines matching this regex first (case-sensitive unless case_sensitive=false), e.g. "GET 200|HMR|healthcheck".
    pub exclude: Option<String>,
    /// Noise preset(s), comma-separated: next, express, django, rails, vite, general, webpack, jest, pytest, cargo.
    pub preset: Option<String>,
    /// true: every pattern matches case-sensitively; false: every pattern ignores case (default: filter ignores case, exclude does not).
    pub case_sensitive: Option<Flag>,
    /// Only lines added since your last since=true read of this task (incremental polling).
    pub since: Option<Flag>,
    /// Name of the since cursor; a named cursor survives reconnects (default: one per connection).
    pub cursor: Option<String>,
    /// Rewind the since cursor to the start of the logs before reading.
    pub reset_cursor: Option<Flag>,
    /// Only the last N matching lines (per stream).
    pub tail: Option<Count>,
    /// Only the first N matching lines (per stream).
    pub head: Option<Count>,
    /// Cap on returned lines (default 200; 0 = no cap); nothing is skipped: with since=true the next read continues after the last returned line.
    pub max_lines: Option<Count>,
    /// "stdout", "stderr" or "both" (default both).
    pub stream: Option<StreamParam>,
    /// Return lines exactly as written (no ANSI stripping, collapsing or cutting; stack traces unfolded).
    pub raw: Option<Flag>,
    /// With filter: a match inside a stack trace or compiler error brings the whole trace, library frames folded (default true; false = plain grep).
    pub blocks: Option<Flag>,
    /// With filter: N log lines before and after each match (grep -C).
    pub context: Option<Count>,
    /// With filter: N log lines before each match (grep -B; overrides context).
    pub before_context: Option<Count>,
    /// With filter: N log lines after each match (grep -A; overrides context).
    pub after_context: Option<Count>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StopAction {
    Stop,
    /// The seed skill's word for stop.
    Kill,
    Cleanup,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StopParams {
    /// Task id, id prefix or label: the task to stop, or with action="cleanup" the one finished task to remove.
    pub task_id: Option<String>,
    /// "stop" (default; "kill" is the same) or "cleanup" (remove finished tasks and their logs: task_id's, else all).
    pub action: Option<StopAction>,
    /// Instead of task_id: all running tasks started longer ago than this (e.g. "30m", "2h"); with cleanup, finished tasks that ended longer ago.
    pub older_than: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WaitParams {
    /// The task to wait for: its id, an id prefix or its label.
    pub task_id: String,
    /// Return as soon as a log line matches this regex (e.g. "ready|listening").
    pub for_line: Option<String>,
    /// Return as soon as this TCP port accepts connections (127.0.0.1 and ::1, or host).
    pub for_port: Option<Count>,
    /// Host for for_port (default: try 127.0.0.1 and ::1).
    pub host: Option<String>,
    /// Return as soon as a GET on this http:// URL answers 2xx or 3xx.
    pub for_http: Option<String>,
    /// Give up after this many seconds (default 45; 0 = never). Many clients cancel a tool call after 60 s: wait longer with several calls.
    pub timeout_s: Option<Count>,
}

/// A tool as every face lists it.
#[cfg_attr(not(feature = "mcp"), allow(dead_code))] // the hints are MCP annotations
pub struct Tool {
    pub name: &'static str,
    pub description: &'static str,
    /// Only reads (MCP `readOnlyHint`).
    pub read_only: bool,
    /// May end work that cannot be brought back (`destructiveHint`).
    pub destructive: bool,
    /// Calling it twice with the same arguments does no more (`idempotentHint`).
    pub idempotent: bool,
    input: fn() -> Value,
    #[cfg(feature = "mcp")]
    output: fn() -> Value,
}

impl Tool {
    /// The JSON schema of the arguments: plain types, no `null` variants.
    pub fn input_schema(&self) -> Value {
        (self.input)()
    }

    /// The JSON schema of the structured result.
    #[cfg(feature = "mcp")]
    pub fn output_schema(&self) -> Value {
        (self.output)()
    }
}

pub const TOOLS: [Tool; 5] = [
    Tool {
        name: "bg_run",
        description: "Start a shell command in the background and return its task id. Give it a \
descriptive label. The task survives this session; it is stopped after `timeout` minutes (default \
120, 0 = never) so a forgotten dev server does not run overnight. bg_run watches the command for \
200 ms: a command that fails at once is reported as an error with its stderr, one that finishes \
at once with its output. To order work: `after`/`after_ok` (start when other tasks end; \
after_ok skips it unless they exited 0) and `queue` with `slots` (at most N at once, in order).",
        read_only: false,
        destructive: false,
        idempotent: false,
        input: || input_schema::<RunParams>(),
        #[cfg(feature = "mcp")]
        output: || output_schema(&[schema_of::<StartReport>]),
    },
    Tool {
        name: "bg_status",
        description: "List all background tasks, or show one: id, label, state (queued, running, \
paused, exited, signaled, stopped, timed-out, skipped, lost), what a queued task waits for, exit \
code, runtime and stdout/stderr line counts. Check line counts before reading output.",
        read_only: true,
        destructive: false,
        idempotent: true,
        input: || input_schema::<StatusParams>(),
        #[cfg(feature = "mcp")]
        output: || output_schema(&[schema_of::<TaskInfo>, schema_of::<StatusReport>]),
    },
    Tool {
        name: "bg_output",
        description: "Read a task's output without flooding your context. NEVER read a dev \
server's raw log: pass `filter` (e.g. \"error|warn|exception|fail\") or `tail`. Drop noise with \
`exclude` or `preset` (next, express, django, rails, vite, general), poll with `since=true` (only \
new lines), cap with `max_lines`. The reply is the lines and one summary line (how many are new, \
how many are in the log, how many more match); stdout_meta/stderr_meta in the structured result \
have the exact counts. Lines are cleaned (colours stripped, repeats collapsed).",
        read_only: true,
        destructive: false,
        idempotent: false,
        input: || input_schema::<OutputParams>(),
        #[cfg(feature = "mcp")]
        output: || output_schema(&[schema_of::<OutputReport>]),
    },
    Tool {
        name: "bg_stop",
        description: "Stop a task and its whole process tree (SIGTERM, SIGKILL after 5 s), or \
every running task older than `older_than`. With action=\"cleanup\": remove the finished task \
task_id, or all finished tasks (older than `older_than`), with their logs.",
        read_only: false,
        destructive: true,
        idempotent: true,
        input: || input_schema::<StopParams>(),
        #[cfg(feature = "mcp")]
        output: || {
            output_schema(&[
                schema_of::<crate::report::StopItem>,
                schema_of::<crate::report::StopReport>,
                schema_of::<CleanupReport>,
            ])
        },
    },
    Tool {
        name: "bg_wait",
        description: "Wait until a task is ready (a log line matches `for_line`, `for_port` accepts \
connections, or `for_http` answers) or, with no condition, until it ends. Fails fast with the \
task's last stderr lines if it dies first. Waits at most `timeout_s` (default 45 s): clients \
often cancel tool calls after 60 s, so wait longer by calling again.",
        read_only: true,
        destructive: false,
        idempotent: true,
        input: || input_schema::<WaitParams>(),
        #[cfg(feature = "mcp")]
        output: || output_schema(&[schema_of::<WaitReport>]),
    },
];

/// The tool named `name`.
pub fn tool(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

/// What the server tells agents when they connect (MCP `instructions`).
#[cfg_attr(not(feature = "mcp"), allow(dead_code))] // MCP server instructions
pub const INSTRUCTIONS: &str = "Background tasks with a smart log reader. Start long-running \
commands (dev servers, test suites, builds) with bg_run and a label, keep working, then check on \
them with bg_status and read their logs with bg_output. Keep your context clean: filter dev-server \
logs (filter=\"error|warn\"), drop noise with exclude/preset, poll with since=true, cap with \
max_lines. Stop what you started with bg_stop, and bg_stop action=\"cleanup\" when done.";

/// Who is calling: what a face knows that the tools need.
#[derive(Debug, Clone)]
pub struct Context {
    /// The `since` cursor used when the call names none.
    pub cursor: String,
}

/// A tool's answer: text for the model, structured JSON for programs.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    pub structured: Value,
}

impl Reply {
    /// `text` for the model and `report` as the structured result.
    fn of(text: String, report: &impl serde::Serialize) -> Result<Reply> {
        Ok(Reply {
            text,
            structured: serde_json::to_value(report)?,
        })
    }
}

/// A cursor name for a caller: `prefix-who-unique`, with `who` folded to
/// lowercase words joined by '-' (so "Claude Code" and "claude-code" are
/// one name) and always a valid cursor name.
pub fn cursor_name(prefix: &str, who: &str, unique: Option<&str>) -> String {
    let fold = |text: &str, max: usize| {
        let mut out = String::new();
        for c in text.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(max);
        out.trim_end_matches('-').to_string()
    };
    let mut name = prefix.to_string();
    for part in [
        fold(who, 32),
        unique.map(|u| fold(u, 20)).unwrap_or_default(),
    ] {
        if !part.is_empty() {
            name.push('-');
            name.push_str(&part);
        }
    }
    name
}

/// Calls tool `name` with JSON `args`. Errors are one message for the
/// model, naming parameters as the tools do.
pub fn call(name: &str, args: Option<Map<String, Value>>, ctx: &Context) -> Result<Reply> {
    let tool = tool(name).ok_or_else(|| usage(format!("unknown tool '{name}'")))?;
    let args = args.unwrap_or_default();
    let schema = tool.input_schema();
    let known = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(bad) = args.keys().find(|k| !known.contains_key(*k)) {
        let names: Vec<&str> = known.keys().map(String::as_str).collect();
        return Err(usage(format!(
            "unknown argument '{bad}' ({name} takes {})",
            names.join(", ")
        )));
    }
    let args = Value::Object(args);
    let parse = |err: serde_json::Error| usage(format!("invalid arguments for {name}: {err}"));
    let reply = match name {
        "bg_run" => run(serde_json::from_value(args).map_err(parse)?),
        "bg_status" => status(serde_json::from_value(args).map_err(parse)?),
        "bg_output" => output(serde_json::from_value(args).map_err(parse)?, ctx),
        "bg_stop" => stop(serde_json::from_value(args).map_err(parse)?),
        "bg_wait" => wait(serde_json::from_value(args).map_err(parse)?),
        _ => unreachable!("every tool in TOOLS is dispatched"),
    };
    reply.map_err(param_words)
}

/// Usage errors written for the CLI name flags (`invalid --filter regex`);
/// an agent knows parameters (`invalid filter regex`).
fn param_words(err: anyhow::Error) -> anyhow::Error {
    if crate::error::kind_of(&err) != ErrorKind::Usage {
        return err;
    }
    let text = crate::error::one_line(&err);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push_str("--");
        } else {
            out.push_str(&after[..len].replace('-', "_"));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    usage(out)
}

fn to_json(value: &impl serde::Serialize) -> Result<Value> {
    Ok(serde_json::to_value(value)?)
}

fn resolve(task_id: &str) -> Result<Task> {
    Store::open_default()?.resolve(task_id)
}

/// The last `n` lines of both logs as text (stderr lines marked).
fn last_output(task: &Task, n: usize) -> Vec<String> {
    let opts = ReadOptions {
        tail: Some(n),
        max_lines: n,
        ..ReadOptions::default()
    };
    let Ok(result) = opts
        .request()
        .and_then(|req| logread::read(&task.open_dir()?, &req))
    else {
        return Vec::new();
    };
    let mut text = Vec::new();
    let _ = render::output_lines(&mut text, &result, &Default::default());
    String::from_utf8_lossy(&text)
        .lines()
        .map(String::from)
        .collect()
}

fn run(p: RunParams) -> Result<Reply> {
    if let Some(label) = &p.label {
        validate_name("label", label).map_err(usage)?;
    }
    let replace = flag(p.replace, false);
    if replace && p.label.is_none() {
        return Err(usage("replace=true needs a label"));
    }
    let env = p.env.unwrap_or_default();
    if let Some((key, _)) = env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err(usage(format!("invalid env variable name {key:?}")));
    }
    if p.after.is_some() && p.after_ok.is_some() {
        return Err(usage("give after or after_ok, not both"));
    }
    if let Some(queue) = &p.queue {
        crate::lifecycle::queue::validate(queue).map_err(usage)?;
    }
    if p.slots.is_some() && p.queue.is_none() {
        return Err(usage("slots needs a queue"));
    }
    let slots = count(p.slots).map(|n| n.min(usize::MAX as u64) as usize);
    let max_log_size = crate::logs::bounded::max_from_env()?;
    let store = Store::open_default()?;
    let cwd = command::resolve_cwd(p.cwd.as_deref().map(Path::new))?;
    let after_ok = p.after_ok.is_some();
    let names: Vec<String> = p
        .after
        .as_deref()
        .or(p.after_ok.as_deref())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    let after = start::resolve_after(&store, &names)?;
    let minutes = count(p.timeout).unwrap_or(DEFAULT_TIMEOUT_MINUTES);
    let started = start::start(
        &store,
        StartSpec {
            label: p.label,
            env,
            timeout: crate::duration::limit(Some(crate::duration::clamp(Duration::from_secs(
                minutes.saturating_mul(60),
            )))),
            replace,
            after,
            after_ok,
            queue: p.queue,
            slots,
            max_log_size: Some(max_log_size),
            ..StartSpec::new(command::shell_command(&p.command)?, cwd)
        },
    )?;
    let run = RunReport::of(&started);
    // A long-lived face (MCP) reaps the supervisor when it exits; a
    // one-shot face exits first and the supervisor is re-parented.
    let mut supervisor = started.supervisor;
    std::thread::spawn(move || supervisor.wait());
    let task = store.task(run.task_id.clone());
    let label = run.label.clone().unwrap_or_else(|| "none".into());
    // Queued, or still running after the start window: say so and return.
    let (text, state) = if run.pid.is_none() {
        let info = TaskInfo::of(&task);
        let text = format!(
            "task {} queued (label {label}): waits for {}",
            run.task_id,
            info.waiting_for.as_deref().unwrap_or("its turn")
        );
        (text, info.state)
    } else {
        let ended = waiting::wait_unlocked(&task, Some(Instant::now() + START_WINDOW));
        let task = task.reload();
        if !ended || task.phase().is_active() {
            let text = format!(
                "task {} started (label {label}, pid {})",
                run.task_id,
                run.pid.unwrap_or_default()
            );
            (text, TaskInfo::of(&task).state)
        } else {
            return ended_at_once(run, &task, &label);
        }
    };
    let report = StartReport {
        run,
        state,
        exit_code: None,
        output: None,
    };
    Reply::of(text, &report)
}

/// `bg_run` of a task that ended within the start window: its last lines,
/// and an error when it failed.
fn ended_at_once(run: RunReport, task: &Task, label: &str) -> Result<Reply> {
    let info = TaskInfo::of(task);
    let lines = last_output(task, LAST_LINES);
    let last: String = lines.iter().map(|line| format!("\n{line}")).collect();
    if info.exit_status() != 0 {
        let message = format!(
            "task {} failed at once: {}{last}",
            run.task_id,
            info.state_text()
        );
        return Err(fail(ErrorKind::StartFailed, message));
    }
    let text = format!(
        "task {} finished at once: {} (label {label}){last}",
        run.task_id,
        info.state_text()
    );
    let report = StartReport {
        run,
        state: info.state,
        exit_code: info.exit_code,
        output: Some(lines),
    };
    Reply::of(text, &report)
}

fn status(p: StatusParams) -> Result<Reply> {
    let mut text = Vec::new();
    let structured = match p.task_id {
        Some(id) => {
            let info = TaskInfo::of(&resolve(&id)?);
            render::task_detail(&mut text, &info, Default::default())?;
            to_json(&info)?
        }
        None => {
            let tasks = crate::info::all(&Store::open_default()?.list()?);
            render::task_table(&mut text, &tasks, Default::default(), None)?;
            to_json(&StatusReport { tasks })?
        }
    };
    Ok(Reply {
        text: String::from_utf8_lossy(&text).into_owned(),
        structured,
    })
}

fn output(p: OutputParams, ctx: &Context) -> Result<Reply> {
    let cursor = match p.cursor {
        Some(name) => {
            validate_name("cursor name", &name).map_err(usage)?;
            name
        }
        None => ctx.cursor.clone(),
    };
    let size = |n: Option<Count>| count(n).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let opts = ReadOptions {
        streams: p.stream.unwrap_or(StreamParam::Both).streams(),
        filter: p.filter,
        exclude: p.exclude,
        presets: p
            .preset
            .iter()
            .flat_map(|s| s.split([',', ' ']))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        case: match p.case_sensitive {
            Some(Flag(true)) => Case::Sensitive,
            Some(Flag(false)) => Case::Insensitive,
            None => Case::Smart,
        },
        since: flag(p.since, false),
        cursor,
        reset_cursor: flag(p.reset_cursor, false),
        tail: size(p.tail),
        head: size(p.head),
        max_lines: size(p.max_lines).unwrap_or(DEFAULT_MAX_LINES),
        raw: flag(p.raw, false),
        context: MatchContext {
            blocks: flag(p.blocks, true),
            before: size(p.before_context.or(p.context)).unwrap_or(0),
            after: size(p.after_context.or(p.context)).unwrap_or(0),
        },
        ..ReadOptions::default()
    };
    let req = opts.request()?;
    let task = resolve(&p.task_id)?;
    task.meta()?;
    let result = logread::read(&task.open_dir()?, &req)?;
    let info = TaskInfo::of(&task);
    let mut text = Vec::new();
    render::output_lines(&mut text, &result, &Default::default())?;
    let mut text = String::from_utf8_lossy(&text).into_owned();
    let filtered = opts.filter.is_some() || opts.exclude.is_some() || !opts.presets.is_empty();
    text.push_str(&read_summary(&result, &info, opts.since, filtered));
    Reply::of(text, &OutputReport::of(&info, &result))
}

/// The one summary line after the lines of a read, e.g.
/// `2 new matching lines (stderr); 1,502 in the logs · 150 more: call again with since=true`.
/// Counts say what they count ("new", "matching", "in the log"), never
/// "N of M", which reads wrong for a since read.
pub fn read_summary(
    result: &logread::ReadResult,
    info: &TaskInfo,
    since: bool,
    filtered: bool,
) -> String {
    let returned: u64 = result.streams.iter().map(|s| s.returned).sum();
    let total: u64 = result.streams.iter().map(|s| s.total_lines).sum();
    let new = if since { "new " } else { "" };
    let matching = if filtered { "matching " } else { "" };
    let mut text = if returned == 0 {
        format!("no {new}{matching}lines")
    } else {
        let s = if returned == 1 { "" } else { "s" };
        format!("{} {new}{matching}line{s}", thousands(returned))
    };
    let with_lines: Vec<String> = result
        .streams
        .iter()
        .filter(|s| s.returned > 0)
        .map(
            |s| match result.streams.iter().filter(|s| s.returned > 0).count() {
                1 => s.stream.name().to_string(),
                _ => format!("{} {}", s.stream.name(), thousands(s.returned)),
            },
        )
        .collect();
    if result.streams.len() > 1 && !with_lines.is_empty() {
        text.push_str(&format!(" ({})", with_lines.join(", ")));
    }
    let logs = if result.streams.len() > 1 {
        "logs"
    } else {
        "log"
    };
    text.push_str(&format!("; {} in the {logs}", thousands(total)));
    for note in render::paging_notes(result, since, &TOOL_WORDS) {
        text.push_str(&format!(" · {note}"));
    }
    if !matches!(info.state, TaskState::Running | TaskState::Starting) {
        text.push_str(&format!(" · task {}", info.state_text()));
    }
    text
}

fn stop(p: StopParams) -> Result<Reply> {
    let older_than = p
        .older_than
        .as_deref()
        .map(|text| {
            crate::duration::parse(text).map_err(|e| usage(format!("invalid older_than: {e}")))
        })
        .transpose()?;
    if p.task_id.is_some() && older_than.is_some() {
        return Err(usage("give task_id or older_than, not both"));
    }
    let store = Store::open_default()?;
    if p.action == Some(StopAction::Cleanup) {
        let report = match &p.task_id {
            Some(id) => cleanup_one(&store, id)?,
            None => CleanupReport::run(
                &store,
                CleanupPlan {
                    older_than,
                    ..CleanupPlan::default()
                },
            )?,
        };
        return Reply::of(cleanup_text(&report), &report);
    }
    let sig = nix::sys::signal::Signal::SIGTERM;
    let grace = crate::lifecycle::supervisor::DEFAULT_GRACE;
    if let Some(id) = &p.task_id {
        let task = store.resolve(id)?;
        let targets = std::slice::from_ref(&task);
        let report = StopReport::of(targets, stop_tasks(targets, sig, grace));
        let item = report.tasks.into_iter().next().expect("one task, one item");
        if item.result == crate::report::StopResult::Error {
            return Err(fail(ErrorKind::StopFailed, item.message));
        }
        return Reply::of(item.message.clone(), &item);
    }
    let Some(age) = older_than else {
        return Err(usage(
            "task_id is required to stop a task (or older_than, or action=\"cleanup\")",
        ));
    };
    let cutoff = crate::duration::cutoff(age);
    let targets: Vec<Task> = store
        .list()?
        .into_iter()
        .filter(|t| t.phase().is_active())
        .filter(|t| {
            t.meta
                .as_ref()
                .ok()
                .and_then(|m| m.started)
                .is_some_and(|started| started < cutoff)
        })
        .collect();
    let report = StopReport::of(&targets, stop_tasks(&targets, sig, grace));
    let mut text: Vec<String> = report.tasks.iter().map(|t| t.message.clone()).collect();
    if text.is_empty() {
        text.push(format!(
            "no running task is older than {}",
            p.older_than.unwrap_or_default()
        ));
    }
    Reply::of(text.join("\n"), &report)
}

/// Removes one finished task (bg_stop action=cleanup task_id=...).
fn cleanup_one(store: &Store, id: &str) -> Result<CleanupReport> {
    let task = store.resolve(id)?;
    CleanupReport::run_on(vec![task], CleanupPlan::default())
}

fn cleanup_text(report: &CleanupReport) -> String {
    let ids = |tasks: &[TaskBrief]| {
        tasks
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let n = report.removed.len();
    let mut text = format!("removed {n} finished task{}", if n == 1 { "" } else { "s" });
    if n > 0 {
        text.push_str(&format!(": {}", ids(&report.removed)));
    }
    if !report.kept_running.is_empty() {
        text.push_str(&format!(
            "; still running (stop first): {}",
            ids(&report.kept_running)
        ));
    }
    text
}

fn wait(p: WaitParams) -> Result<Reply> {
    let given: Vec<&str> = [
        ("for_line", p.for_line.is_some()),
        ("for_port", p.for_port.is_some()),
        ("for_http", p.for_http.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if given.len() > 1 {
        return Err(usage(format!(
            "give one condition, not {}",
            given.join(" and ")
        )));
    }
    if p.host.is_some() && p.for_port.is_none() {
        return Err(usage("host needs for_port"));
    }
    let task = resolve(&p.task_id)?;
    let condition = if let Some(re) = &p.for_line {
        Condition::line(re, StreamParam::Both.streams())?
    } else if let Some(port) = count(p.for_port) {
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            usage(format!(
                "for_port must be a port number 1-65535, not {port}"
            ))
        })?;
        Condition::port(port, p.host.as_deref())?
    } else if let Some(url) = &p.for_http {
        Condition::http(url)?
    } else {
        Condition::Exit
    };
    let seconds = count(p.timeout_s).unwrap_or(DEFAULT_WAIT_SECONDS);
    let deadline =
        crate::duration::limit(Some(crate::duration::clamp(Duration::from_secs(seconds))))
            .map(|t| Instant::now() + t);
    let tasks = [task];
    let outcome = waiting::wait(&tasks, &condition, deadline)?;
    let task = &tasks[0];
    let id = &task.id;
    let because = |reason: &Option<String>| {
        reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    };
    let (result, exit_code, reason, line, mut text) = match outcome {
        Outcome::Ended { exit_code } => (
            WaitResult::Ended,
            exit_code,
            None,
            None,
            format!("task {id} ended with exit code {exit_code}"),
        ),
        Outcome::Ready { lines } => {
            let line = lines.into_iter().next();
            let text = match &line {
                Some(line) => format!("task {id} is ready: {line}"),
                None => format!("task {id} is ready"),
            };
            (WaitResult::Ready, 0, None, line, text)
        }
        Outcome::TaskEnded {
            exit_code, reason, ..
        } => {
            let text = format!(
                "task {id} ended (exit code {exit_code}) before {}{}",
                condition.describe(),
                because(&reason)
            );
            (WaitResult::TaskEnded, exit_code, reason, None, text)
        }
        Outcome::TimedOut { reason } => {
            let text = format!(
                "timed out after {seconds} s waiting for {} (task {id} still running){}",
                condition.describe(),
                because(&reason)
            );
            (WaitResult::Timeout, waiting::TIMED_OUT, reason, None, text)
        }
    };
    let last_lines = match result {
        WaitResult::Ready => None,
        WaitResult::Ended if exit_code == 0 => None,
        _ => waiting::last_lines(task, LAST_LINES).map(|(stream, lines)| LastLines {
            stream: stream.name().into(),
            lines,
        }),
    };
    if let Some(last) = &last_lines {
        text.push_str(&format!(
            "\nlast {} lines of {}:\n{}",
            last.lines.len(),
            last.stream,
            last.lines.join("\n")
        ));
    }
    let report = WaitReport {
        task_id: id.clone(),
        result,
        exit_code,
        reason,
        line,
        last_lines,
    };
    Reply::of(text, &report)
}

/// Schemas every client accepts: no list-valued `type` (an optional input
/// is its plain type; a nullable output field is an `anyOf` with null),
/// and no `format` words outside JSON Schema's own (`uint64`).
fn portable(value: &mut Value, input: bool) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get("type").cloned() {
                let kept: Vec<Value> = types
                    .iter()
                    .filter(|t| !(input && *t == "null"))
                    .cloned()
                    .collect();
                map.remove("type");
                match kept.as_slice() {
                    [one] => {
                        map.insert("type".into(), one.clone());
                    }
                    many => {
                        let any: Vec<Value> = many
                            .iter()
                            .map(|t| serde_json::json!({ "type": t }))
                            .collect();
                        map.insert("anyOf".into(), Value::Array(any));
                    }
                }
            }
            if input && let Some(Value::Array(any)) = map.get("anyOf").cloned() {
                let kept: Vec<Value> = any
                    .into_iter()
                    .filter(|s| s.get("type") != Some(&Value::from("null")))
                    .collect();
                map.remove("anyOf");
                if let [Value::Object(one)] = kept.as_slice() {
                    for (k, v) in one {
                        map.entry(k.clone()).or_insert(v.clone());
                    }
                } else {
                    map.insert("anyOf".into(), Value::Array(kept));
                }
            }
            if map.get("format").and_then(Value::as_str).is_some_and(|f| {
                f.starts_with("int") || f.starts_with("uint") || f == "double" || f == "float"
            }) {
                map.remove("format");
            }
            for v in map.values_mut() {
                portable(v, input);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| portable(v, input)),
        _ => {}
    }
}

fn input_schema<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Value::Object(map) = &mut schema {
        map.remove("title");
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    portable(&mut schema, true);
    schema
}

#[cfg(feature = "mcp")]
type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

#[cfg(feature = "mcp")]
fn schema_of<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<T>()
}

/// An output schema: an object of one of `shapes`.
#[cfg(feature = "mcp")]
fn output_schema(shapes: &[SchemaFn]) -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.meta_schema = None;
    });
    let mut generator = settings.into_generator();
    let variants: Vec<Value> = shapes
        .iter()
        .map(|f| f(&mut generator).to_value())
        .collect();
    let defs = generator.take_definitions(true);
    let mut schema = serde_json::json!({ "type": "object" });
    if let [one] = variants.as_slice() {
        schema["$ref"] = one["$ref"].clone();
    } else {
        schema["anyOf"] = Value::Array(variants);
    }
    schema["$defs"] = Value::Object(defs);
    portable(&mut schema, false);
    schema
}

//! The command line, declared with clap. Values are parsed into types here
//! (durations, signals, labels, env pairs), so bad input is a usage error
//! (exit 2) before anything runs.

use crate::logs::read::Stream;
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "bgt",
    version,
    about = "Run commands in the background and read their logs smartly - no daemon",
    after_help = "Tasks are named by id (t-3f9a2c), unique id prefix (3f9a) or label (its active task, else its newest).\n\
                  State lives in $BGT_HOME, else $XDG_STATE_HOME/bgt, else ~/.local/state/bgt."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colour: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), always, never
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value = "auto"
    )]
    pub color: crate::term::ColorChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a command in the background and print its task id
    Run(RunArgs),
    /// List tasks, or show one task in detail
    Status(StatusArgs),
    /// Read a task's logs: filter, exclude, presets, --since cursors, tail
    Output(OutputArgs),
    /// Stop tasks: signal the whole process tree, SIGKILL after a grace period
    Stop(StopArgs),
    /// Remove finished tasks and their logs
    Cleanup(CleanupArgs),
    /// Block until tasks end, a log line appears, a port opens or a URL answers
    Wait(WaitArgs),
    /// Run a task's command again (same cwd, env and label) as a new task
    Restart(RestartArgs),
    /// Show a queue, or change how many of its tasks run at once
    Queue(QueueArgs),
    /// Stop (SIGSTOP) every process of tasks, or hold a queue's next starts
    Pause(PauseArgs),
    /// Continue paused tasks (SIGCONT), or let a paused queue start tasks again
    Resume(PauseArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Serve the bg_* tools over the Model Context Protocol on stdio
    #[cfg(feature = "mcp")]
    Mcp,
    /// Serve the bg_* tools to Amp as toolbox executables (`toolbox install DIR` writes them)
    Toolbox(ToolboxArgs),
    /// Print the man page (roff)
    Man,
}

#[derive(Args, Debug)]
pub struct ToolboxArgs {
    #[command(subcommand)]
    pub action: ToolboxAction,
}

#[derive(Subcommand, Debug)]
pub enum ToolboxAction {
    /// Write the tools (bg_run, bg_status, bg_output, bg_stop, bg_wait) into DIR; point AMP_TOOLBOX at it
    Install { dir: PathBuf },
    /// Serve one tool: `bgt toolbox bg_run` with TOOLBOX_ACTION=describe or execute
    #[command(external_subcommand)]
    Tool(Vec<String>),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Name the task, to refer to it later instead of its id
    #[arg(short, long, value_parser = parse_label)]
    pub label: Option<String>,
    /// Working directory of the command
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable for the command (repeatable)
    #[arg(short, long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Stop the whole task tree after this long (e.g. 30m, 2h; 0 = never); state `timed-out`
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub timeout: Option<Duration>,
    /// Stop the active task with the same --label first (without it, a label in use is an error)
    #[arg(long, requires = "label")]
    pub replace: bool,
    /// Start when these tasks have ended (comma-separated or repeated); `queued` until then
    #[arg(
        long,
        value_name = "TASK",
        value_delimiter = ',',
        conflicts_with = "after_ok"
    )]
    pub after: Vec<String>,
    /// Start when these tasks have ended, only if all exited 0 (else the task ends `skipped`)
    #[arg(long, value_name = "TASK", value_delimiter = ',')]
    pub after_ok: Vec<String>,
    /// Run in queue NAME: at most --slots of its tasks at once, in the order they were queued
    #[arg(long, value_name = "NAME", value_parser = parse_queue)]
    pub queue: Option<String>,
    /// Set the queue's limit of tasks running at once (default 1)
    #[arg(long, value_name = "N", requires = "queue")]
    pub slots: Option<usize>,
    /// Keep at most SIZE of each log on disk, freeing the oldest blocks (K, M, G; 0 = unlimited)
    #[arg(long, value_name = "SIZE", env = "BGT_MAX_LOG_SIZE", default_value = "256M",
          value_parser = parse_size, hide_env_values = true)]
    pub max_log_size: u64,
    /// Print {"id","label","pid","dir"} as JSON
    #[arg(long)]
    pub json: bool,
    /// The command. One word with shell syntax runs through `sh -c`;
    /// several words are exec'd directly, without a shell.
    #[arg(required = true, num_args = 1.., last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Show one task in detail
    pub task: Option<String>,
    /// Only tasks in these states (comma-separated: running,queued,paused,exited,...)
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_state,
          conflicts_with = "task")]
    pub state: Vec<crate::task::store::TaskState>,
    /// Only tasks with this label
    #[arg(long, value_name = "LABEL", conflicts_with = "task")]
    pub label: Option<String>,
    /// Only tasks of this queue
    #[arg(long, value_name = "NAME", conflicts_with = "task")]
    pub queue: Option<String>,
    /// Print JSON ({"tasks": [...]}, or one task object with TASK)
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum StreamChoice {
    Stdout,
    Stderr,
    Both,
}

impl StreamChoice {
    pub fn streams(self) -> Vec<Stream> {
        match self {
            StreamChoice::Stdout => vec![Stream::Stdout],
            StreamChoice::Stderr => vec![Stream::Stderr],
            StreamChoice::Both => vec![Stream::Stdout, Stream::Stderr],
        }
    }
}

#[derive(Args, Debug)]
#[command(
    after_help = "Order: lines in range -> drop --exclude/--preset matches -> keep --filter matches \
-> --tail/--head -> cap at --max-lines.\n\
Regexes use Rust syntax; grep-style `\\|` also means alternation, a literal pipe is `[|]`.\n\
--filter ignores case by default; --exclude and presets do not.\n\
--since with --tail N returns the last N new matching lines and moves the cursor to the end of what was scanned.\n\
With --filter, a match inside a stack trace or compiler error brings the whole event, library frames folded \
(--no-blocks: plain grep; --raw: unfolded); -A/-B/-C add the log lines grep would show, `--` between groups."
)]
pub struct OutputArgs {
    /// Task id, id prefix or label
    #[arg(required_unless_present = "list_presets")]
    pub task: Option<String>,
    /// Which log to read
    #[arg(long, value_enum, default_value = "both")]
    pub stream: StreamChoice,
    /// Keep only lines matching this regex (case-insensitive unless --case-sensitive)
    #[arg(short, long, value_name = "RE")]
    pub filter: Option<String>,
    /// Drop lines matching this regex before filtering (case-sensitive unless --ignore-case)
    #[arg(short = 'x', long, value_name = "RE")]
    pub exclude: Option<String>,
    /// Drop a stack's known noise (repeatable); see --list-presets
    #[arg(short, long, value_name = "NAME")]
    pub preset: Vec<String>,
    /// Only lines after this reader's cursor, then advance it
    #[arg(short, long)]
    pub since: bool,
    /// Name of the --since cursor, so readers do not steal each other's lines
    #[arg(long, value_name = "NAME", default_value = "default", value_parser = parse_cursor)]
    pub cursor: String,
    /// Rewind the cursor to the start of the logs before reading
    #[arg(long)]
    pub reset_cursor: bool,
    /// Only the last N selected lines (per stream)
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "head")]
    pub tail: Option<usize>,
    /// Only the first N selected lines (per stream)
    #[arg(long, value_name = "N")]
    pub head: Option<usize>,
    /// Cap on lines returned in total [default: 200; with --follow: no cap]; 0 means no cap
    #[arg(short, long, value_name = "N")]
    pub max_lines: Option<usize>,
    /// Cut lines longer than this many characters (0: never)
    #[arg(long, value_name = "N", default_value_t = crate::logs::tidy::DEFAULT_MAX_LINE_CHARS)]
    pub max_line_chars: usize,
    /// No cleaning: keep escapes, `\r`, blank lines; no collapsing; no folding in blocks
    #[arg(long)]
    pub raw: bool,
    /// Show N lines of the log after each match, as grep -A
    #[arg(short = 'A', long, value_name = "N")]
    pub after_context: Option<usize>,
    /// Show N lines of the log before each match, as grep -B
    #[arg(short = 'B', long, value_name = "N")]
    pub before_context: Option<usize>,
    /// Show N lines of the log before and after each match, as grep -C
    #[arg(short = 'C', long, value_name = "N")]
    pub context: Option<usize>,
    /// Plain grep: a match in a stack trace or compiler error does not bring the whole event
    #[arg(long)]
    pub no_blocks: bool,
    /// All patterns match case-sensitively
    #[arg(long, conflicts_with = "ignore_case")]
    pub case_sensitive: bool,
    /// All patterns ignore case
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    /// Keep printing new matching lines until the task ends; exit with its code
    #[arg(short = 'F', long, conflicts_with_all = ["tail", "head", "json"])]
    pub follow: bool,
    /// Print JSON: lines plus stdout_meta/stderr_meta
    #[arg(long)]
    pub json: bool,
    /// List the presets and their patterns
    #[arg(long)]
    pub list_presets: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Tasks to stop (id, prefix or label)
    #[arg(required_unless_present_any = ["all", "older_than"])]
    pub tasks: Vec<String>,
    /// Stop every running task
    #[arg(long, conflicts_with_all = ["tasks", "older_than"])]
    pub all: bool,
    /// Stop running tasks started longer ago than DUR
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse, conflicts_with = "tasks")]
    pub older_than: Option<Duration>,
    /// First signal sent to the tree
    #[arg(long, value_name = "SIG", default_value = "TERM", value_parser = crate::procs::parse_signal)]
    pub signal: Signal,
    /// Time between the signal and SIGKILL
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = crate::duration::parse)]
    pub grace: Duration,
    /// Print what would be stopped; stop nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CleanupArgs {
    /// Only tasks that ended longer ago than DUR
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub older_than: Option<Duration>,
    /// Also stop running tasks first, then remove them
    #[arg(long)]
    pub all: bool,
    /// Print what would be removed (and stopped); change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Tasks to wait for
    #[arg(required = true)]
    pub tasks: Vec<String>,
    /// Give up after DUR with exit code 124 (0 = never)
    #[arg(long, value_name = "DUR", value_parser = crate::duration::parse)]
    pub timeout: Option<Duration>,
    /// Succeed when a log line matches RE (case-insensitive; `\|` works)
    #[arg(long, value_name = "RE", conflicts_with_all = ["for_port", "for_http"])]
    pub for_line: Option<String>,
    /// Succeed when a TCP connect to PORT works
    #[arg(long, value_name = "PORT", conflicts_with = "for_http")]
    pub for_port: Option<u16>,
    /// Host for --for-port (default: try 127.0.0.1 and ::1)
    #[arg(long, requires = "for_port")]
    pub host: Option<String>,
    /// Succeed when a GET on URL answers 2xx or 3xx
    #[arg(long, value_name = "URL")]
    pub for_http: Option<String>,
    /// Log searched by --for-line
    #[arg(long, value_enum, default_value = "both")]
    pub stream: StreamChoice,
    /// No progress on stderr: no live line, no line every 10 s, no "ready" line (failures still show)
    #[arg(short, long)]
    pub quiet: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// The task to run again
    pub task: String,
    /// Accepted for compatibility: a task that still runs is always stopped first
    #[arg(long, hide = true)]
    pub stop: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    /// The queue
    #[arg(value_parser = parse_queue)]
    pub name: String,
    /// How many of its tasks may run at once (for tasks not yet started)
    #[arg(long, value_name = "N")]
    pub slots: Option<usize>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    /// Tasks (id, prefix or label)
    #[arg(required_unless_present = "queue", conflicts_with = "queue")]
    pub tasks: Vec<String>,
    /// A queue instead: hold (or allow again) its next starts; running tasks are not touched
    #[arg(long, value_name = "NAME", value_parser = parse_queue)]
    pub queue: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_queue(text: &str) -> Result<String, String> {
    crate::lifecycle::queue::validate(text).map(|_| text.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    crate::logs::bounded::parse_size(text)
}

fn parse_state(text: &str) -> Result<crate::task::store::TaskState, String> {
    crate::task::store::TaskState::from_name(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = crate::task::store::TaskState::ALL
            .iter()
            .map(|s| s.name())
            .collect();
        format!("unknown state '{text}' (use {})", names.join(", "))
    })
}

fn parse_label(text: &str) -> Result<String, String> {
    crate::task::store::validate_name("label", text).map(|_| text.to_string())
}

fn parse_cursor(text: &str) -> Result<String, String> {
    crate::task::store::validate_name("cursor name", text).map(|_| text.to_string())
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains('\0') && !value.contains('\0') => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("invalid --env '{text}': expected KEY=VALUE")),
    }
}

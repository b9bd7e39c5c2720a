//! bgt runs commands in the background and reads their logs smartly, with
//! no server: each task has a tiny supervisor of its own, and every other
//! command only reads and writes files under the state directory, with
//! locks and persisted cursors. README "How it works" tells the story; this
//! is the map.
//!
//! Layers, bottom-up; a module imports only from its own layer and those
//! listed before it.
//!
//! Foundations, importing nothing of bgt:
//! - `error`    error kinds and exit codes
//! - `duration` parsing and showing durations
//! - `parallel` per-item work on every core (status, listing)
//!
//! The operating system:
//! - `sys`    the one module with `unsafe` (closing inherited fds, signal actions, sigqueue, fork,
//!   posix_spawn, a terminal's size, log mappings that survive a shrinking file)
//! - `procs`  pids, signal names, the process table, a task's processes and proof of their identity
//!
//! The task as stored (`task/`):
//! - `task::dirfd`   directories held open; every file operation relative to them, never through a symlink
//! - `task::store`   the state directory (marker, adoption), task ids, names and labels, the file names, `Task` and its `Phase`
//! - `task::meta`    `meta.json`: the record, written atomically, with a spare for a full disk
//!
//! Reading logs (`logs/`):
//! - `logs::read`     the read engine: ranges, filters, tail, caps, collapsing, one sink
//! - `logs::read::around` what a match brings: its block replayed and followed, grep-style context
//! - `logs::marks`    where a reader is: positions, the line index, cursors, a bounded log's floor
//! - `logs::options`  what a read asks for, in the words every face shares
//! - `logs::pattern`  filters, excludes and presets, with a literal fast path
//! - `logs::tidy`     cleaning a line (escapes, `\r` redraws, pnpm paths, long lines)
//! - `logs::blocks`   stack traces and compiler errors as blocks; library frames folded
//! - `logs::bounded`  keeping a long-lived task's logs within a size by punching holes at their start
//!
//! A task's life (`lifecycle/`):
//! - `lifecycle::command`    what to run: argv or `sh -c`, shell quoting, the working directory
//! - `lifecycle::start`      starting: the label claim, the supervisor (forked or exec'd), the start handshake
//! - `lifecycle::launch`     the task's command as execvp would start it: environment, PATH, `#!`-less scripts
//! - `lifecycle::supervisor` the per-task supervisor: waits its turn, spawns the child, reaps everything, records the end
//! - `lifecycle::queue`      dependencies and queues: tickets, slots, waiting on locks and inotify
//! - `lifecycle::stop`       stopping and pausing tasks (what each stop did)
//! - `lifecycle::cleanup`    removing finished tasks, never one with a process left
//! - `lifecycle::waiting`    waiting for an end, a line, a port or a URL; the polling back-off
//! - `lifecycle::listeners`  who listens on a port (`/proc/net/tcp*`), so a stale server is not "ready"
//!
//! What every face shows:
//! - `info`    a task as a reader sees it now (`TaskInfo`)
//! - `report`  typed results of every operation, serialized as-is by every face
//!
//! The faces:
//! - `cli` + `commands/`  the command line (one file per subcommand), printed by `render` (text) and `term` (colour, width, live line)
//! - `tools`              the bg_* tools, shared by the agent faces
//! - `mcp`                the tools over MCP (stdio); the only module with an async runtime
//! - `toolbox`            the tools as Amp toolbox executables

pub(crate) mod cli;
pub(crate) mod commands;
pub(crate) mod duration;
pub(crate) mod error;
pub(crate) mod info;
pub(crate) mod lifecycle;
pub(crate) mod logs;
#[cfg(feature = "mcp")]
pub(crate) mod mcp;
pub(crate) mod parallel;
pub(crate) mod procs;
pub(crate) mod render;
pub(crate) mod report;
pub(crate) mod sys;
pub(crate) mod task;
pub(crate) mod term;
pub(crate) mod toolbox;
pub(crate) mod tools;

// The library surface: `run`, and line cleaning (tests check presets with it).
pub use logs::tidy;

use clap::Parser;

/// Runs bgt with the given arguments; returns the exit code. Errors are
/// printed as one line, `bgt: <message>`.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    // Private files whatever the caller's umask; the child gets it back.
    procs::restrict_umask();
    if args
        .get(1)
        .is_some_and(|a| a == lifecycle::supervisor::SUBCOMMAND)
    {
        return match args.get(2) {
            Some(dir) => lifecycle::supervisor::main(std::path::Path::new(dir), None),
            None => 2,
        };
    }
    let json = wants_json(&args);
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => return clap_error(err, json),
    };
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) if error::is_broken_pipe(&err) => 0,
        Err(err) => report_error(&err, json),
    }
}

/// True when the command line asks for JSON (`--json` before any `--`):
/// then an error is a JSON document on stdout too, so a program reading
/// stdout always gets one document.
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Prints an error as one line on stderr (and as JSON on stdout when asked);
/// returns its exit code.
fn report_error(err: &anyhow::Error, json: bool) -> i32 {
    eprintln!("bgt: {}", error::one_line(err));
    if json && let Ok(doc) = serde_json::to_string_pretty(&error::ErrorReport::of(err)) {
        // A closed stdout is not worth a second error.
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{doc}");
    }
    error::exit_code(err)
}

/// Help and version go to stdout with exit 0; usage errors become one line and exit 2.
fn clap_error(err: clap::Error, json: bool) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return 0;
    }
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = err.print();
        return 2;
    }
    // clap's message may span lines (a value with a newline, a tip, usage):
    // keep the message up to the first blank line, on one line.
    let text = err.render().to_string();
    let message = text
        .split("\n\n")
        .next()
        .unwrap_or("invalid arguments")
        .trim();
    let message = message
        .strip_prefix("error: ")
        .unwrap_or(message)
        .replace('\n', " ");
    report_error(&error::usage(format!("{message} (see bgt --help)")), json)
}

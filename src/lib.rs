//! bgt runs commands in the background and reads their logs smartly, with
//! no server process.
//!
//! `bgt run` creates a task directory (under a temporary name, renamed into
//! place once complete) holding `meta.json` and a `lock` file that it locks,
//! then forks a tiny supervisor (or, from a multi-threaded caller, re-execs
//! itself as one) and hands the locked file over as its stdin. The supervisor detaches (setsid, closes inherited fds),
//! spawns the child in its own process group with stdout/stderr opened
//! straight onto `stdout.log`/`stderr.log`, reports success or the start
//! error back over a pipe, then waits. On Linux it is a child subreaper, so
//! it reaps (and can kill) every descendant; it ends when the last one is
//! gone, writing the final state to `meta.json` atomically.
//!
//! bgt runs with umask 077 (its files are private whatever the caller's);
//! the child gets the caller's umask back.
//!
//! Liveness is the lock, never a pid: a reader that can take the lock knows
//! the supervisor is gone; if the record is not final then, the task is
//! `lost`. Every other command only reads and writes files under the state
//! directory: `logread` keeps byte+line cursors and a line-count index so
//! incremental reads cost only the new bytes.

pub mod cli;
pub mod commands;
pub mod duration;
pub mod error;
pub mod info;
pub mod lifecycle;
pub mod logs;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod render;
pub mod report;
pub mod task;
pub mod toolbox;
pub mod tools;

// Short paths used across the crate while the layers settle.
pub(crate) use lifecycle::sys;
pub use lifecycle::{control, listeners, process, supervisor, waiting};
pub use logs::{blocks, pattern, read as logread, tidy as clean};
pub use task::{dirfd, meta, store};

use clap::Parser;

/// Runs bgt with the given arguments; returns the exit code. Errors are
/// printed as one line, `bgt: <message>`.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    // Private files whatever the caller's umask; the child gets it back.
    process::restrict_umask();
    if args.get(1).is_some_and(|a| a == supervisor::SUBCOMMAND) {
        return match args.get(2) {
            Some(dir) => supervisor::main(std::path::Path::new(dir), None),
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
        println!("{doc}");
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

//! Errors that map to exit codes.
//!
//! Most failures are runtime errors (exit 1) carried by `anyhow`. Bad input
//! is a usage error (exit 2), the same code clap uses, so scripts can tell
//! "you called me wrong" from "the task failed".

use std::fmt;

/// A usage error: the caller's input is wrong, not the world. Exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a usage error from a function returning `anyhow::Result`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Exit code for an error: 2 for usage errors, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if kind_of(err) == ErrorKind::Usage {
        2
    } else {
        1
    }
}

/// True when the error is a closed stdout (`bgt output | head`), which is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An `io::Error` rendered without Rust's ` (os error N)` suffix, for one-line messages.
pub fn io_message(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// What kind of failure an error is: the stable `kind` of a JSON error
/// (`{"error": {"kind": "unknown_task", "message": "..."}}`) on every face.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "mcp", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input: a flag, parameter, pattern, duration or name (exit 2).
    Usage,
    /// No task matches the name.
    UnknownTask,
    /// The name matches several tasks.
    AmbiguousTask,
    /// The task's record cannot be read.
    BrokenTask,
    /// `run --label L` while another active task holds L.
    LabelInUse,
    /// The command could not be started (no task is left behind).
    StartFailed,
    /// The state directory cannot be used (not bgt's, a symlink, others may write it).
    StateDir,
    /// Some process of the task could not be stopped.
    StopFailed,
    /// Anything else that went wrong at run time (I/O, a full disk, ...).
    Runtime,
}

/// A runtime error that knows its [`ErrorKind`].
#[derive(Debug)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Shorthand for an error of a known kind (exit 1).
pub fn fail(kind: ErrorKind, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        kind,
        message: msg.into(),
    })
}

/// The kind of an error, from the outermost cause that knows it.
pub fn kind_of(err: &anyhow::Error) -> ErrorKind {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return ErrorKind::Usage;
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.kind;
        }
    }
    ErrorKind::Runtime
}

/// The JSON form of an error: what `--json` prints on stdout and what the
/// agent faces put in structured content.
#[derive(Debug, serde::Serialize)]
#[cfg_attr(feature = "mcp", derive(schemars::JsonSchema))]
pub struct ErrorReport {
    pub error: ErrorBody,
}

/// See [`ErrorReport`].
#[derive(Debug, serde::Serialize)]
#[cfg_attr(feature = "mcp", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// The same one line the CLI prints after `bgt: `.
    pub message: String,
}

impl ErrorReport {
    pub fn of(err: &anyhow::Error) -> ErrorReport {
        ErrorReport {
            error: ErrorBody {
                kind: kind_of(err),
                message: one_line(err),
            },
        }
    }
}

/// An error with its causes, on one line.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

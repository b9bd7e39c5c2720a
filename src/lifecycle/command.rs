//! What to run: the words after `--` as a command (exec'd argv, or `sh -c`
//! for one word with shell syntax), shell quoting for display, and the
//! working directory checked before anything is created.

use crate::error::{io_message, usage};
use crate::task::meta::CommandSpec;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Turns the words after `--` into a command: one word with shell syntax
/// runs through `sh -c`, anything else is exec'd as argv without a shell.
pub fn command_from_words(words: &[String]) -> Result<CommandSpec> {
    if words.is_empty() || words[0].is_empty() {
        return Err(usage("empty command: give the program to run after `--`"));
    }
    if words.iter().any(|w| w.contains('\0')) {
        return Err(usage("the command contains a NUL byte"));
    }
    if words.len() == 1 && has_shell_syntax(&words[0]) {
        return shell_command(&words[0]);
    }
    Ok(CommandSpec {
        argv: words.to_vec(),
        display: words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
        shell: false,
    })
}

/// A script for `sh -c` (the MCP `bg_run` tool always uses this).
pub fn shell_command(script: &str) -> Result<CommandSpec> {
    if script.trim().is_empty() {
        return Err(usage("empty command"));
    }
    if script.contains('\0') {
        return Err(usage("the command contains a NUL byte"));
    }
    Ok(CommandSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        display: script.into(),
        shell: true,
    })
}

fn has_shell_syntax(word: &str) -> bool {
    word.chars()
        .any(|c| " \t\n|&;<>()$`\\\"'*?[]#~={}!".contains(c))
}

/// Quotes a word for display so it can be pasted back into a shell.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Checks `--cwd` (or the current directory) before anything is created,
/// so the error names the directory, not the state directory it would
/// otherwise surface from.
pub fn resolve_cwd(cwd: Option<&Path>) -> Result<PathBuf> {
    let here = std::env::current_dir().context("cannot read the current directory")?;
    let Some(dir) = cwd else {
        return utf8_dir(here, "the current directory");
    };
    let full = here.join(dir);
    match std::fs::metadata(&full) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("cannot use --cwd '{}': Not a directory", dir.display()),
        Err(e) => bail!("cannot use --cwd '{}': {}", dir.display(), io_message(&e)),
    }
    // Executable bit on a directory = may enter it.
    if nix::unistd::access(&full, nix::unistd::AccessFlags::X_OK).is_err() {
        bail!("cannot use --cwd '{}': Permission denied", dir.display());
    }
    let what = format!("--cwd '{}'", dir.display());
    utf8_dir(std::fs::canonicalize(&full).unwrap_or(full), &what)
}

/// The task record (JSON) stores the working directory as text, so a path
/// that is not UTF-8 cannot be recorded faithfully; refuse it up front.
fn utf8_dir(dir: PathBuf, what: &str) -> Result<PathBuf> {
    if dir.to_str().is_none() {
        bail!(
            "cannot run in {what} ({}): its path is not valid UTF-8; use --cwd with a UTF-8 path",
            dir.display()
        );
    }
    Ok(dir)
}

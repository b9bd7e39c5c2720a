//! Starting the task's command from its supervisor, as `execvp` from a
//! shell would: the environment it gets, where its program is found, and a
//! script without `#!` run by `/bin/sh`. The process itself is made by
//! [`crate::sys::spawn`] (vfork and exec in one call).

use crate::procs::{self, Pid};
use crate::task::meta::TaskMeta;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where `execvp` looks when `PATH` is not set (glibc's default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The shell that runs an executable file that is no program.
const SHELL: &str = "/bin/sh";

/// Starts the task's command with `stdio` as its descriptors 0, 1 and 2;
/// returns its pid once it has exec'd.
///
/// The search is execvp's, made here rather than by posix_spawnp (which
/// would search our `PATH`, not the task's, and tell a file without `#!`
/// only by ENOEXEC, without saying which file): each directory of the
/// task's `PATH` in turn, skipping a name that is not there (one stat, where
/// a failed exec in the child costs several times more), going on after a
/// file that cannot be exec'd for a missing interpreter or a denied
/// permission, and failing with "permission denied" rather than "not found"
/// when a denied one was met.
pub fn launch(meta: &TaskMeta, stdio: [BorrowedFd<'_>; 3]) -> io::Result<Pid> {
    let words = &meta.command.argv;
    let program = words
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let envp = c_strings(environment(meta).into_iter().map(|(mut pair, value)| {
        pair.push("=");
        pair.push(value);
        pair
    }))?;
    let cwd = c_string(meta.cwd.as_os_str())?;
    let argv = c_strings(words)?;
    let spawn = |file: &OsStr, argv: &[CString]| {
        crate::sys::spawn(&c_string(file)?, argv, &envp, &cwd, stdio).map(Pid::from_nix)
    };
    // An executable file that is no program (a script without `#!`): a
    // shell runs it, as execvp does.
    let exec = |file: &OsStr| match spawn(file, &argv) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) => {
            let mut shell_words = vec![OsStr::new(SHELL), file];
            shell_words.extend(words[1..].iter().map(OsStr::new));
            spawn(OsStr::new(SHELL), &c_strings(shell_words)?)
        }
        other => other,
    };
    if program.contains('/') {
        return exec(OsStr::new(program));
    }
    let path = match meta.env.get("PATH") {
        Some(path) => OsString::from(path),
        None => std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    };
    let mut denied = false;
    for dir in path.as_bytes().split(|b| *b == b':') {
        // An empty entry is the task's directory.
        let file = Path::new(OsStr::from_bytes(dir)).join(program);
        // A relative one is the child's to resolve, from its directory.
        match std::fs::metadata(meta.cwd.join(&file)) {
            Ok(found) if found.is_file() => {}
            Ok(_) => {
                denied = true; // execve refuses a directory with EACCES
                continue;
            }
            Err(e) if passed_over(&e, &mut denied) => continue,
            Err(e) => return Err(e),
        }
        match exec(file.as_os_str()) {
            Err(e) if passed_over(&e, &mut denied) => {}
            started => return started,
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        nix::libc::EACCES
    } else {
        nix::libc::ENOENT
    }))
}

/// Whether execvp goes on to the next directory after this error (a
/// denied one is remembered); any other (a symlink loop, a name too long)
/// ends the search with it.
fn passed_over(e: &io::Error, denied: &mut bool) -> bool {
    use nix::libc::{EACCES, ENODEV, ENOENT, ENOTDIR, ESTALE, ETIMEDOUT};
    match e.raw_os_error() {
        Some(EACCES) => {
            *denied = true;
            true
        }
        Some(ENOENT | ENOTDIR | ESTALE | ENODEV | ETIMEDOUT) => true,
        _ => false,
    }
}

/// Ours, with the task's own variables and its marker (which names the
/// task, so its processes can be found) set over it.
fn environment(meta: &TaskMeta) -> Vec<(OsString, OsString)> {
    let own = |key: &OsStr| {
        key == procs::TASK_ID_VAR || key.to_str().is_some_and(|k| meta.env.contains_key(k))
    };
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().filter(|(k, _)| !own(k)).collect();
    // The marker is the task's own whatever `--env` says: a second one
    // ahead of it would be the one `getenv` and bgt's search for the
    // task's processes read.
    env.extend(
        meta.env
            .iter()
            .filter(|(k, _)| *k != procs::TASK_ID_VAR)
            .map(|(k, v)| (k.into(), v.into())),
    );
    env.push((procs::TASK_ID_VAR.into(), meta.id.clone().into()));
    env
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command or its environment contains a NUL byte",
        )
    })
}

fn c_strings<S: AsRef<OsStr>>(items: impl IntoIterator<Item = S>) -> io::Result<Vec<CString>> {
    items.into_iter().map(|s| c_string(s.as_ref())).collect()
}

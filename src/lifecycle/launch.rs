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
use std::path::{Path, PathBuf};

/// Where `execvp` looks when `PATH` is not set (glibc's default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Starts the task's command with `stdio` as its descriptors 0, 1 and 2;
/// returns its pid once it has exec'd.
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
    let spawn = |file: &OsStr, search: bool, argv: &[CString]| {
        crate::sys::spawn(&c_string(file)?, search, argv, &envp, &cwd, stdio).map(Pid::from_nix)
    };
    // The child's PATH is searched: posix_spawnp searches ours, so a task
    // that sets its own is looked up here.
    let task_path = meta.env.get("PATH").map(OsStr::new);
    let lookup = || match task_path {
        Some(path) => find_in_path(program, Some(path), &meta.cwd),
        None => find_in_path(program, std::env::var_os("PATH").as_deref(), &meta.cwd),
    };
    let argv = c_strings(words)?;
    let result = match (program.contains('/'), task_path) {
        (true, _) => spawn(OsStr::new(program), false, &argv),
        (false, None) => spawn(OsStr::new(program), true, &argv),
        (false, Some(_)) => match lookup() {
            Some(file) => spawn(file.as_os_str(), false, &argv),
            None => Err(io::Error::from_raw_os_error(nix::libc::ENOENT)),
        },
    };
    match result {
        // An executable file that is no program (a script without `#!`):
        // a shell runs it, as execvp does.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) => {
            let file = match program.contains('/') {
                true => PathBuf::from(program),
                false => lookup().ok_or(e)?,
            };
            let mut shell_words = vec![OsString::from("sh"), file.into_os_string()];
            shell_words.extend(words[1..].iter().map(OsString::from));
            spawn(OsStr::new("/bin/sh"), false, &c_strings(shell_words)?)
        }
        other => other,
    }
}

/// Ours, with the task's own variables and its marker (which names the
/// task, so its processes can be found) set over it.
fn environment(meta: &TaskMeta) -> Vec<(OsString, OsString)> {
    let own =
        |key: &OsStr| key == procs::TASK_ID_VAR || meta.env.keys().any(|k| OsStr::new(k) == key);
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().filter(|(k, _)| !own(k)).collect();
    env.extend(meta.env.iter().map(|(k, v)| (k.into(), v.into())));
    env.push((procs::TASK_ID_VAR.into(), meta.id.clone().into()));
    env
}

/// The first executable regular file named `program` in the directories of
/// `path` (glibc's default when unset); relative ones are taken from `cwd`,
/// where the child starts.
fn find_in_path(program: &str, path: Option<&OsStr>, cwd: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    path.as_bytes().split(|b| *b == b':').find_map(|dir| {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let file = cwd.join(OsStr::from_bytes(dir)).join(program);
        let meta = std::fs::metadata(&file).ok()?;
        (meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
            && nix::unistd::access(&file, nix::unistd::AccessFlags::X_OK).is_ok())
        .then_some(file)
    })
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

//! `bgt restart`: the same command, cwd, env, label and timeout as a new task.

use crate::cli::RestartArgs;
use crate::control::{self, StartSpec};
use crate::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: RestartArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let old = store.resolve(&args.task)?;
    let meta = old.meta()?.clone();
    // Restarting a task that runs means replacing it (`--stop` is the old spelling).
    if old.phase().is_active() {
        control::stop(
            &old,
            nix::sys::signal::Signal::SIGTERM,
            crate::supervisor::DEFAULT_GRACE,
        )?;
    }
    let started = control::start(
        &store,
        StartSpec {
            command: meta.command,
            label: meta.label,
            cwd: meta.cwd,
            env: meta.env,
            timeout: meta.timeout_ms.map(std::time::Duration::from_millis),
            replace: false,
        },
    )?;
    if args.json {
        let mut report = started.report();
        report.replaces = Some(old.id.clone());
        super::print_json(&report)?;
    } else {
        writeln!(std::io::stdout().lock(), "{}", started.id)?;
    }
    Ok(0)
}

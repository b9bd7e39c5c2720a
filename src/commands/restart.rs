//! `bgt restart`: the same command, cwd, env, label and timeout as a new task.

use crate::cli::RestartArgs;
use crate::lifecycle::{start, start::StartSpec, stop};
use crate::task::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: RestartArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let old = store.resolve(&args.task)?;
    let meta = old.meta()?.clone();
    // Restarting a task that runs means replacing it (`--stop` is the old spelling).
    if old.phase().is_active() {
        start::ensure_room(&store)?;
        stop::stop(
            &old,
            nix::sys::signal::Signal::SIGTERM,
            crate::lifecycle::supervisor::DEFAULT_GRACE,
        )?;
    }
    let started = start::start(
        &store,
        StartSpec {
            label: meta.label,
            env: meta.env,
            timeout: meta.timeout_ms.map(std::time::Duration::from_millis),
            // Same queue, same log limit; its `--after` tasks have ended.
            queue: meta.queue,
            max_log_size: meta.max_log_size,
            ..StartSpec::new(meta.command, meta.cwd)
        },
    )?;
    if args.json {
        let mut report = crate::report::RunReport::of(&started);
        report.replaces = Some(old.id.clone());
        super::print_json(&report)?;
    } else {
        writeln!(std::io::stdout().lock(), "{}", started.id)?;
    }
    Ok(0)
}

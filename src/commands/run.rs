//! `bgt run`: validate, optionally replace a labelled task, start, print the id.

use crate::cli::RunArgs;
use crate::lifecycle::{command, start, start::StartSpec};
use crate::task::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: RunArgs) -> Result<i32> {
    let command = command::command_from_words(&args.command)?;
    let cwd = command::resolve_cwd(args.cwd.as_deref())?;
    let store = Store::open_default()?;
    let after_ok = !args.after_ok.is_empty();
    let after = if after_ok {
        &args.after_ok
    } else {
        &args.after
    };
    let after = start::resolve_after(&store, after)?;
    let started = start::start(
        &store,
        StartSpec {
            label: args.label,
            env: args.env.into_iter().collect(),
            timeout: crate::duration::limit(args.timeout),
            replace: args.replace,
            after,
            after_ok,
            queue: args.queue,
            slots: args.slots,
            max_log_size: Some(args.max_log_size),
            ..StartSpec::new(command, cwd)
        },
    )?;
    if args.json {
        super::print_json(&crate::report::RunReport::of(&started))?;
    } else {
        writeln!(std::io::stdout().lock(), "{}", started.id)?;
    }
    Ok(0)
}

//! `bgt run`: validate, optionally replace a labelled task, start, print the id.

use crate::cli::RunArgs;
use crate::control::{self, StartSpec};
use crate::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: RunArgs) -> Result<i32> {
    let command = control::command_from_words(&args.command)?;
    let cwd = control::resolve_cwd(args.cwd.as_deref())?;
    let store = Store::open_default()?;
    let started = control::start(
        &store,
        StartSpec {
            command,
            label: args.label,
            cwd,
            env: args.env.into_iter().collect(),
            timeout: crate::duration::limit(args.timeout),
            replace: args.replace,
        },
    )?;
    if args.json {
        super::print_json(&started.report())?;
    } else {
        writeln!(std::io::stdout().lock(), "{}", started.id)?;
    }
    Ok(0)
}

//! `bgt status`: the task table, or one task in detail.

use crate::cli::StatusArgs;
use crate::info::TaskInfo;
use crate::render;
use crate::report::StatusReport;
use crate::task::store::Store;
use crate::term::{self, Out, Paint};
use anyhow::Result;
use std::io::Write;

pub fn run(args: StatusArgs) -> Result<i32> {
    let store = Store::open_default()?;
    let mut out = super::stdout();
    match args.task {
        Some(query) => {
            let info = TaskInfo::of(&store.resolve(&query)?);
            if args.json {
                super::print_json(&info)?;
            } else {
                render::task_detail(&mut out, &info, Paint::of(Out::Stdout))?;
            }
        }
        None => {
            let mut tasks = store.list()?;
            // Filters on the record first, so unread tasks cost nothing more.
            if let Some(label) = &args.label {
                tasks.retain(|t| t.label() == Some(label.as_str()));
            }
            if let Some(queue) = &args.queue {
                tasks.retain(|t| {
                    t.meta
                        .as_ref()
                        .is_ok_and(|m| m.queue.as_deref() == Some(queue.as_str()))
                });
            }
            let mut infos = crate::info::all(&tasks);
            if !args.state.is_empty() {
                infos.retain(|i| args.state.contains(&i.state));
            }
            if args.json {
                super::print_json(&StatusReport { tasks: infos })?;
            } else {
                render::task_table(
                    &mut out,
                    &infos,
                    Paint::of(Out::Stdout),
                    term::width(Out::Stdout),
                )?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

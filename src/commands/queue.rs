//! `bgt queue NAME [--slots N]`: show a queue, or change its limit for the
//! tasks not yet started (the waiting head sees the change at once).
use crate::cli::QueueArgs;
use crate::lifecycle::queue::Queue;
use crate::report::QueueReport;
use crate::task::store::Store;
use anyhow::Result;
use std::io::Write;

pub fn run(args: QueueArgs) -> Result<i32> {
    let store = Store::open_default()?;
    if let Some(slots) = args.slots {
        crate::lifecycle::start::set_slots(&store, &args.name, slots)?;
    }
    let queue = Queue::open(store.dir(), &args.name)
        .map_err(|e| anyhow::anyhow!("cannot open queue '{}': {e}", args.name))?;
    let report = QueueReport::of(&queue);
    if args.json {
        super::print_json(&report)?;
    } else {
        writeln!(std::io::stdout().lock(), "{}", report.text())?;
    }
    Ok(0)
}

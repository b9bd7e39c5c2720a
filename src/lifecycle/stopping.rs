//! Stopping several tasks at once and saying what happened to each: the
//! one mapping from [`StopOutcome`] to a [`StopReport`] that every face prints.

use crate::control::{self, StopOutcome};
use crate::info::TaskInfo;
use crate::report::{StopItem, StopReport, StopResult};
use crate::store::Task;
use nix::sys::signal::Signal;
use std::time::Duration;

/// Stops `targets` in parallel (each waits out its own grace period).
pub fn stop_tasks(targets: &[Task], sig: Signal, grace: Duration) -> StopReport {
    let outcomes: Vec<anyhow::Result<StopOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|task| scope.spawn(move || control::stop(task, sig, grace)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stop thread panicked"))
            .collect()
    });
    let tasks = targets
        .iter()
        .zip(outcomes)
        .map(|(task, outcome)| item(task, outcome))
        .collect();
    StopReport { tasks }
}

fn item(task: &Task, outcome: anyhow::Result<StopOutcome>) -> StopItem {
    let info = TaskInfo::of(&task.reload());
    let id = &task.id;
    let (result, message) = match outcome {
        Ok(StopOutcome::Stopped) => (StopResult::Stopped, format!("{id} stopped")),
        Ok(StopOutcome::AlreadyEnded(_)) => (
            StopResult::AlreadyEnded,
            format!("{id} already ended ({})", info.state_text()),
        ),
        Ok(StopOutcome::KilledOrphan) => (
            StopResult::Stopped,
            format!("{id} stopped (its supervisor was gone; killed its orphaned processes)"),
        ),
        Ok(StopOutcome::LostUnverifiable) => (
            StopResult::Lost,
            format!(
                "{id} is lost and its processes cannot be identified safely; nothing signalled"
            ),
        ),
        Err(err) => (
            StopResult::Error,
            format!("{id}: {}", crate::error::one_line(&err)),
        ),
    };
    StopItem {
        task_id: id.clone(),
        id: id.clone(),
        result,
        state: info.state,
        message,
    }
}

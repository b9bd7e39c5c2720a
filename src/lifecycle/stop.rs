//! Stopping (and pausing) tasks, and what happened to each ([`StopOutcome`];
//! `report::StopReport` says it in every face's words). A stop needs no disk space (the request
//! rides in a signal) and records `stopped` only once no process of the task
//! remains, naming any survivor otherwise; a lost task's processes are found
//! by `procs::TaskMark`.

use crate::lifecycle::supervisor::StopRequest;
use crate::lifecycle::waiting::{Backoff, wait_unlocked};
use crate::procs::{self, ProcInfo, ProcTable, TaskMark};
use crate::task::meta::{State, TaskMeta};
use crate::task::store::{Phase, Task};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// What `stop` did.
#[derive(Clone, Debug, PartialEq)]
pub enum StopOutcome {
    /// The task was running and is now dead.
    Stopped,
    /// The task had already ended; nothing was signalled.
    AlreadyEnded(Phase),
    /// The supervisor was gone, but its child provably lived on and was killed.
    KilledOrphan,
    /// The supervisor was gone and its processes cannot be identified safely.
    LostUnverifiable,
}

/// Stops a task's whole tree: `sig` first, SIGKILL after `grace`. Returns
/// when no process of the task is left; fails naming the survivors when one
/// cannot be killed (the task then stays running, or lost). Idempotent.
pub fn stop(task: &Task, sig: Signal, grace: Duration) -> Result<StopOutcome> {
    let mut phase = task.phase();
    if phase == Phase::Starting {
        // `bgt run` is still handing over; give the supervisor a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while phase == Phase::Starting && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            phase = task.reload().phase();
        }
    }
    match phase {
        Phase::Running { .. } | Phase::Queued | Phase::Paused => {}
        Phase::Lost => return stop_lost(task, sig, grace),
        Phase::Starting => bail!("task {} is still starting; try again", task.id),
        Phase::Broken(reason) if task.is_locked() => {
            bail!("task {} cannot be stopped safely: {reason}", task.id)
        }
        other => return Ok(StopOutcome::AlreadyEnded(other)),
    }
    let meta = task
        .reload()
        .meta
        .map_err(|e| anyhow::anyhow!("task {} is broken: {e}", task.id))?;
    let supervisor_pid = meta
        .supervisor_pid
        .context("running task has no supervisor pid")?;
    // The lock is held, so the supervisor lives and its pid is not reused.
    if task.is_locked() {
        let request = StopRequest { signal: sig, grace };
        // A failure is fine if the supervisor has just exited by itself.
        if let Err(err) = request.send(&task.dir, supervisor_pid)
            && task.is_locked()
        {
            return Err(err);
        }
    }
    // The supervisor sends SIGKILL once the grace period ends; give it a
    // second beyond that to reap everything and write the record.
    if wait_unlocked(task, Some(Instant::now() + grace + Duration::from_secs(1))) {
        return Ok(StopOutcome::Stopped);
    }
    // Still running: a process survives SIGKILL (not ours to kill), or the
    // supervisor does not react (stopped with SIGSTOP?). Kill the tree
    // ourselves; give up if only processes we may not kill are left.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let tree = procs::descendants(supervisor_pid);
        let denied = procs::signal_each(&tree, Signal::SIGKILL);
        if !denied.is_empty() && denied.len() == tree.len() {
            bail!(
                "task {} is still running: {}",
                task.id,
                describe_denied(&denied)
            );
        }
        let next = (Instant::now() + Duration::from_millis(250)).min(deadline);
        if wait_unlocked(task, Some(next)) {
            return Ok(StopOutcome::Stopped);
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    // Nothing of the tree is left, yet the supervisor holds on: end it and
    // write the record for it, once no process of the task remains.
    if task.is_locked() {
        let _ = nix::sys::signal::kill(supervisor_pid.nix(), Signal::SIGKILL);
    }
    if !wait_unlocked(task, Some(Instant::now() + Duration::from_secs(5))) {
        bail!("task {} did not stop", task.id)
    }
    let survivors = kill_all(&meta.mark(), false, Instant::now() + Duration::from_secs(2));
    if !survivors.is_empty() {
        bail!(
            "task {} is lost and {}",
            task.id,
            describe_survivors(&survivors)
        );
    }
    if !task.reload().meta.is_ok_and(|m| m.state.is_final()) {
        record_stopped(task, &meta, Signal::SIGKILL)?;
    }
    Ok(StopOutcome::Stopped)
}

/// Writes the final record of a task whose supervisor cannot (it is gone).
/// Only call with the lock free (nobody else writes the record then) and no
/// process of the task left.
fn record_stopped(task: &Task, meta: &TaskMeta, killed_by: Signal) -> Result<()> {
    let mut updated = meta.clone();
    let exit = meta
        .state
        .exit()
        .cloned()
        .unwrap_or_else(|| crate::task::meta::Exit::Signal(killed_by.as_str().to_string()));
    updated.state = State::Stopped { exit: Some(exit) };
    updated.ended = Some(Utc::now());
    let dir = task.open_dir()?;
    crate::logs::bounded::release(&dir);
    updated.store_final(&dir)
}

/// A lost task's processes may still run: find them by session and marker
/// with their start times as proof (`TaskMark`), `sig` them, SIGKILL what
/// is left after `grace`, and record `stopped` only once none remains.
fn stop_lost(task: &Task, sig: Signal, grace: Duration) -> Result<StopOutcome> {
    let meta = task.meta()?;
    let mark = meta.mark();
    if mark.since.is_none() {
        return Ok(StopOutcome::LostUnverifiable);
    }
    let procs = ProcTable::read().of_task(&mark, false);
    if procs.is_empty() {
        return Ok(StopOutcome::AlreadyEnded(Phase::Lost));
    }
    procs::signal_each(&procs, sig);
    let deadline = Instant::now() + grace;
    let mut left = procs;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = ProcTable::read().of_task(&mark, false);
    }
    let mut killed_by = sig;
    if !left.is_empty() {
        killed_by = Signal::SIGKILL;
        let survivors = kill_all(&mark, false, Instant::now() + Duration::from_secs(2));
        if !survivors.is_empty() {
            bail!(
                "task {} is lost and {}",
                task.id,
                describe_survivors(&survivors)
            );
        }
    }
    // Record the end, so the task no longer shows as lost.
    record_stopped(task, meta, killed_by)?;
    Ok(StopOutcome::KilledOrphan)
}

/// SIGKILLs the task's processes until none is left or the deadline
/// passes; returns the survivors with the error of the last attempt
/// (`None`: the signal was delivered, yet the process lives on).
pub(crate) fn kill_all(
    mark: &TaskMark,
    unproven: bool,
    deadline: Instant,
) -> Vec<(ProcInfo, Option<nix::errno::Errno>)> {
    loop {
        let left = ProcTable::read().of_task(mark, unproven);
        if left.is_empty() {
            return Vec::new();
        }
        let denied = procs::signal_each(&left, Signal::SIGKILL);
        if Instant::now() >= deadline {
            return left
                .into_iter()
                .map(|p| {
                    let err = denied.iter().find(|(pid, _)| *pid == p.pid).map(|d| d.1);
                    (p, err)
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pid 1234 (sleep) survives: Operation not permitted; ...`
pub(crate) fn describe_survivors(survivors: &[(ProcInfo, Option<nix::errno::Errno>)]) -> String {
    survivors
        .iter()
        .map(|(p, err)| {
            let why = err.map_or("still running after SIGKILL", |e| e.desc());
            format!("pid {} ({}) survives: {why}", p.pid, procs::name(p.pid))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_denied(denied: &[(procs::Pid, nix::errno::Errno)]) -> String {
    denied
        .iter()
        .map(|(pid, e)| format!("pid {pid} ({}) survives: {}", procs::name(*pid), e.desc()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Pauses (SIGSTOP) or resumes (SIGCONT) every process of a running task,
/// through its supervisor, which records `paused` and keeps paused time out
/// of `--timeout`. Returns once the record shows the new state.
pub fn pause(task: &Task, pause: bool) -> Result<()> {
    use crate::lifecycle::supervisor::PauseRequest;
    let phase = task.phase();
    let matches_wanted = |p: &Phase| {
        matches!(
            (p, pause),
            (Phase::Paused, true) | (Phase::Running { .. }, false)
        )
    };
    if matches_wanted(&phase) {
        return Ok(());
    }
    match phase {
        Phase::Running { .. } | Phase::Paused => {}
        Phase::Queued => bail!(
            "task {} is queued, not running; `bgt pause --queue NAME` holds a queue's next starts",
            task.id
        ),
        other => bail!("task {} is not running ({})", task.id, other.name()),
    }
    let meta = task.meta()?;
    let supervisor = meta
        .supervisor_pid
        .context("running task has no supervisor pid")?;
    // The lock is held: the supervisor lives and the pid is its own.
    if !task.is_locked() {
        bail!("task {} has ended", task.id);
    }
    let request = if pause {
        PauseRequest::Pause
    } else {
        PauseRequest::Resume
    };
    request.send(supervisor)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut backoff = Backoff::new(Duration::from_millis(1));
    loop {
        let now = task.reload().phase();
        if matches_wanted(&now) {
            return Ok(());
        }
        if !now.is_active() {
            bail!("task {} ended ({})", task.id, now.name());
        }
        if !backoff.sleep_until(deadline) {
            // A supervisor makes no change it cannot record (see `watch`).
            let full = task
                .open_dir()
                .ok()
                .and_then(|dir| dir.free_space())
                .is_some_and(|free| free.blocks == 0 || free.inodes == 0);
            let why = if full { ": its disk is full" } else { "" };
            bail!("task {}'s supervisor did not answer{why}", task.id);
        }
    }
}

/// Stops `targets` in parallel (each waits out its own grace period);
/// one outcome per target, in order.
pub fn stop_tasks(targets: &[Task], sig: Signal, grace: Duration) -> Vec<Result<StopOutcome>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|task| scope.spawn(move || stop(task, sig, grace)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stop thread panicked"))
            .collect()
    })
}

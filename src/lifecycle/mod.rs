//! A task's life: starting it under its supervisor, stopping it, waiting
//! for it, cleaning it up, and the process-level tools these need.

pub mod cleanup;
pub mod command;
pub mod launch;
pub mod listeners;
pub mod queue;
pub mod start;
pub mod stop;
pub mod supervisor;
pub mod waiting;

//! Integration tests: the real `bgt` binary, real processes, a fresh
//! `BGT_HOME` per test, and no process left behind (see `util::Env`).

mod util;

mod badinput;
mod concurrency;
mod core;
mod faults;
#[cfg(feature = "mcp")]
mod mcp;
mod output;
mod presets;
mod statedir;
mod terminal;
mod waiting;
mod workflow;

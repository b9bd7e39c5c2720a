//! Integration tests: the real `bgt` binary, real processes, a fresh
//! `BGT_HOME` per test, and no process left behind (see `util::Env`).

mod util;

mod badinput;
mod bounded;
mod concurrency;
mod context;
mod core;
mod faults;
mod filterperf;
mod fork;
mod layers;
mod lifecycle;
#[cfg(feature = "mcp")]
mod mcp;
mod output;
mod presets;
mod queues;
mod reader;
mod statedir;
mod stateperf;
mod terminal;
mod toolbox;
mod waiting;
mod workflow;

//! Integration tests: the real `bgt` binary, real processes, a fresh
//! `BGT_HOME` per test, and no process left behind (see `util::Env`).

mod util;

mod core;
mod output;
mod presets;
mod workflow;

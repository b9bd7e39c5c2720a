//! Reading task logs: the read engine (`read`: ranges, cursors, index,
//! tail), what a read asks for (`options`), the matcher and presets
//! (`pattern`), line tidying (`tidy`) and stack-trace blocks (`blocks`).

pub mod blocks;
pub mod bounded;
pub mod options;
pub mod pattern;
pub mod read;
pub mod tidy;

//! Reading task logs: the read engine (`read`: ranges, cursors, index,
//! tail), the matcher and presets (`pattern`), and line tidying (`tidy`).

pub mod options;
pub mod pattern;
pub mod read;
pub mod tidy;

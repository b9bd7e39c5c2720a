//! Reading task logs: the read engine (`read`: ranges, filters, tail,
//! caps), where a reader is (`marks`: positions, the line index, cursors,
//! the floor of a bounded log), the log size limit (`bounded`), what a
//! read asks for (`options`), the matcher and presets (`pattern`), line
//! tidying (`tidy`) and stack-trace blocks (`blocks`).

pub mod blocks;
pub mod bounded;
pub mod marks;
pub mod options;
pub mod pattern;
pub mod read;
pub mod tidy;

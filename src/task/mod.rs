//! The task as stored: the state directory and its task directories
//! (`store`), the record (`meta`), and descriptor-relative file access
//! (`dirfd`).

pub mod dirfd;
pub mod meta;
pub mod store;

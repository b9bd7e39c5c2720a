//! The `bgt` binary: everything lives in the library; this maps it to an exit code.

fn main() {
    std::process::exit(bgt::run(std::env::args_os().collect()));
}

//! One file per subcommand: each resolves its arguments and calls the
//! shared core (`control`, `logread`, `info`), then prints via `render`.

mod cleanup;
pub(crate) mod output;
mod pause;
mod queue;
mod restart;
mod run;
mod status;
mod stop;
mod wait;

use crate::cli::{Cli, Command};
use anyhow::Result;
use std::io::Write;

/// Runs a parsed command line; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    crate::term::set_choice(cli.color);
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Status(args) => status::run(args),
        Command::Output(args) => output::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Cleanup(args) => cleanup::run(args),
        Command::Wait(args) => wait::run(args),
        Command::Restart(args) => restart::run(args),
        Command::Queue(args) => queue::run(args),
        Command::Pause(args) => pause::run(args, true),
        Command::Resume(args) => pause::run(args, false),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "bgt", &mut std::io::stdout());
            Ok(0)
        }
        #[cfg(feature = "mcp")]
        Command::Mcp => crate::mcp::serve(),
        Command::Toolbox(args) => match args.action {
            crate::cli::ToolboxAction::Install { dir } => crate::toolbox::install(&dir),
            crate::cli::ToolboxAction::Tool(words) => match words.as_slice() {
                [tool] => crate::toolbox::serve(tool),
                _ => Err(crate::error::usage("bgt toolbox takes one tool name")),
            },
        },
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().lock().write_all(&page)?;
            Ok(0)
        }
    }
}

/// Prints one JSON document on stdout (in one write: std's stdout is
/// line-buffered, and pretty JSON has a line per field).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut doc = serde_json::to_vec_pretty(value)?;
    doc.push(b'\n');
    std::io::stdout().lock().write_all(&doc)?;
    Ok(())
}

/// Block-buffered stdout for commands that print many lines.
fn stdout() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

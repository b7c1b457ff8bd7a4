//! `device-agent`: argument parsing and wiring only; everything else is in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    device_agent::run(device_agent::cli::Cli::parse())
}

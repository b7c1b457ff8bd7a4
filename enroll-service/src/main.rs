//! The `enroll-service` binary. The server, `init` and `demo` commands are wired up later; the
//! library (`enroll_service`) holds the logic.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("enroll-service: not yet implemented");
    ExitCode::from(2)
}

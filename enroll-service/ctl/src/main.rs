//! `enrollctl`, the operator and factory-MES command line. All logic is in
//! the `enrollctl` library; this file only hands it the process's arguments and streams.
#![forbid(unsafe_code)]

use std::process::ExitCode;

// One thread is plenty for a client making one call at a time, and keeps start-up cheap.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Unlocked handles: indicatif draws on stderr from its own code paths, and a lock held
    // here for the whole run would make those writes wait.
    let exit = enrollctl::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await;
    exit.into()
}

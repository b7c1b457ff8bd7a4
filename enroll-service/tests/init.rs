//! `enroll-service init --admin-out DIR`: the first platform admin's profile can be written
//! off the server (a removable disk), and then nothing of it rests in the state directory; the
//! profile works against `serve`. An existing profile is refused before anything is created.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use clap::Parser;
use common::process::{init_command, start};
use enrollctl::{self as ctl, Cli, Exit, Options};

fn init(state: &Path, admin_out: &Path) -> Output {
    init_command(state)
        .arg("--admin-out")
        .arg(admin_out)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_first_admin_profile_can_be_written_off_the_server() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let removable = work.path().join("usb");

    // A profile already there: refused, and the state directory is not created.
    std::fs::create_dir_all(&removable).unwrap();
    std::fs::write(removable.join("root.pem"), "keep me").unwrap();
    let clash = init(&state, &removable);
    assert!(!clash.status.success());
    assert!(
        String::from_utf8_lossy(&clash.stderr).contains("already exists"),
        "{clash:?}"
    );
    assert!(!state.join("ca").exists());
    assert_eq!(
        std::fs::read_to_string(removable.join("root.pem")).unwrap(),
        "keep me"
    );
    std::fs::remove_file(removable.join("root.pem")).unwrap();

    let done = init(&state, &removable);
    assert!(done.status.success(), "{done:?}");
    assert!(!state.join("admin").exists());
    let mode = std::fs::metadata(removable.join("operator.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The profile authenticates against the service.
    let service = start(&state);
    let url = service.url.clone();
    let cli = Cli::try_parse_from([
        "enrollctl",
        "--service",
        &url,
        "--profile",
        removable.to_str().unwrap(),
        "--json",
        "whoami",
    ])
    .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = ctl::run_cli(cli, Options::default(), &mut out, &mut err).await;
    drop(service);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        exit,
        Exit::Success,
        "{out}{}",
        String::from_utf8_lossy(&err)
    );
    assert!(out.contains("\"owner\":\"*\""), "{out}");
}

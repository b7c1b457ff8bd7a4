//! `enroll-service init --admin-out DIR`: the first platform admin's profile can be written
//! off the server (a removable disk), and then nothing of it rests in the state directory; the
//! profile works against `serve`. An existing profile is refused before anything is created.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use enroll_service::ctl::{self, Cli, Exit, Options};

use clap::Parser;

const PASSPHRASE: &str = "init test passphrase";

fn init(state: &Path, admin_out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enroll-service"))
        .args(["init", "--state-dir"])
        .arg(state)
        .arg("--admin-out")
        .arg(admin_out)
        .env("OXROOT_CA_PASSPHRASE", PASSPHRASE)
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
    let mut serve = Command::new(env!("CARGO_BIN_EXE_enroll-service"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(&state)
        .env("OXROOT_CA_PASSPHRASE", PASSPHRASE)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("listening on ") {
            break rest.trim_end_matches(" (TLS)").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("https://{addr}");
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
    serve.kill().unwrap();
    serve.wait().unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        exit,
        Exit::Success,
        "{out}{}",
        String::from_utf8_lossy(&err)
    );
    assert!(out.contains("\"owner\":\"*\""), "{out}");
}

//! The `enrollctl` binary as a process: what a shell script or an MES wrapper sees of it
//! (exit codes, which stream carries what). The commands themselves are tested in-process
//! against a real service in enroll-service's `ctl_e2e`.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::process::{Command, Output};

fn enrollctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enrollctl"))
        .args(args)
        .env_remove("OXROOT_SERVICE")
        .env_remove("OXROOT_PROFILE")
        .env_remove("OXROOT_CA")
        .env_remove("OXROOT_CERT")
        .env_remove("OXROOT_KEY")
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_commands_and_exits_0() {
    let output = enrollctl(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for command in [
        "whoami", "policy", "batch", "device", "export", "crl", "audit", "operator",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn a_missing_service_is_a_usage_error_naming_the_variable() {
    let output = enrollctl(&["whoami"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("OXROOT_SERVICE"), "{stderr}");
}

#[test]
fn in_json_mode_an_error_is_one_json_object_on_stderr() {
    let output = enrollctl(&["--json", "whoami"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let error: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"]["exit_code"], 2, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OXROOT_SERVICE")
    );
}

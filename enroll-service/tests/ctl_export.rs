//! `enrollctl export` of cloud artefacts against the real service: the AWS JITP registration
//! config is complete (`--aws-role-arn`) or not written at all, the IoT policy says when it is
//! only a template, and a Mosquitto policy's TLS versions reach the broker configuration.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::path::Path;

use common::{Harness, ctl};
use enroll_service::pki::Role;
use enrollctl::Exit;
use serde_json::Value;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_exports_are_complete_or_say_what_is_missing() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let acme = work.path().join("acme");
    harness
        .write_profile(&acme, "alice", "acme", Role::Admin)
        .await;
    let root = work.path().join("amazon-root.pem");
    std::fs::write(&root, &harness.server.root_pem).unwrap();
    let root = root.to_str().unwrap();

    // No region or account: the IoT policy is a template, and without a role ARN there is no
    // registration config.
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &[
            "policy",
            "create",
            "--name",
            "aws",
            "--aws-endpoint",
            "abc123-ats.iot.eu-west-1.amazonaws.com",
            "--aws-root-ca",
            root,
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let plain = work.path().join("plain");
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &["export", "aws", "--out", plain.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(
        files(&plain),
        ["aws-iot-policy.template.json", "ca-certificate.pem"]
    );
    let template: Value =
        serde_json::from_slice(&std::fs::read(plain.join("aws-iot-policy.template.json")).unwrap())
            .unwrap();
    assert!(
        template["oxroot:template"]
            .as_str()
            .unwrap()
            .starts_with("TEMPLATE"),
        "{template}"
    );

    // With the role: the complete registration config AWS takes.
    let jitp = work.path().join("jitp");
    let role = "arn:aws:iam::123456789012:role/oxroot-jitp";
    let (exit, exported, log) = ctl(
        &harness,
        &acme,
        &[
            "export",
            "aws",
            "--aws-role-arn",
            role,
            "--out",
            jitp.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(exported["paths"].as_array().unwrap().len(), 3, "{exported}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(jitp.join("jitp-template.json")).unwrap()).unwrap();
    assert_eq!(config["roleArn"], role);
    let body: Value = serde_json::from_str(config["templateBody"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["Resources"]["policy"]["Properties"]["PolicyName"],
        "aws"
    );

    // A malformed role: INVALID_ARGUMENT, a usage error, and nothing written.
    let refused = work.path().join("refused");
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &[
            "export",
            "aws",
            "--aws-role-arn",
            "JITPRole",
            "--out",
            refused.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(exit, Exit::Usage, "{log}");
    assert!(
        log.contains("INVALID_ARGUMENT") && log.contains("aws_role_arn"),
        "{log}"
    );
    assert!(files(&refused).is_empty());

    // Region and account given: the ready policy file.
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &[
            "policy",
            "create",
            "--name",
            "aws-exact",
            "--aws-endpoint",
            "abc123-ats.iot.eu-west-1.amazonaws.com",
            "--aws-root-ca",
            root,
            "--aws-region",
            "eu-west-1",
            "--aws-account",
            "123456789012",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let exact = work.path().join("exact");
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &["export", "aws-exact", "--out", exact.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    assert_eq!(files(&exact), ["aws-iot-policy.json", "ca-certificate.pem"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_policy_names_the_tls_versions_of_its_broker() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let acme = work.path().join("acme");
    harness
        .write_profile(&acme, "alice", "acme", Role::Admin)
        .await;
    let (exit, created, log) = ctl(
        &harness,
        &acme,
        &[
            "policy",
            "create",
            "--name",
            "broker13",
            "--mosquitto-host",
            "127.0.0.1",
            "--mosquitto-tls",
            "1.3",
        ],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    // The proto3 JSON mapping names enum values.
    assert_eq!(
        created["policy"]["mosquitto"]["tls_versions"],
        serde_json::json!(["TLS_VERSION_1_3"]),
        "{created}"
    );
    let out = work.path().join("broker");
    let (exit, _, log) = ctl(
        &harness,
        &acme,
        &["export", "broker13", "--out", out.to_str().unwrap()],
    )
    .await;
    assert_eq!(exit, Exit::Success, "{log}");
    let conf = std::fs::read_to_string(out.join("mosquitto.conf")).unwrap();
    assert!(conf.lines().any(|l| l == "tls_version tlsv1.3"), "{conf}");
}

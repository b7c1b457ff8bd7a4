//! What goes wrong says so: missing state, corrupted helper data, a wrong root, a wrong or
//! absent service, a dropped connection (retried), repeated reconstruction failures (lockout),
//! a crash's leftover temporary file.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Agent, Harness, free_port, policy_and_batch};
use oxroot_proto::v1;

fn emulated(seed: u8) -> String {
    format!("emulated:{}", hex::encode([seed; 32]))
}

/// A self-signed CA certificate in `dir`, standing in for a root that is not the service's.
fn some_root(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("other-root.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

#[tokio::test]
async fn missing_state_is_named_with_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("never-created"), &emulated(1));
    for command in [
        &["id"][..],
        &["status"],
        &["unlock"],
        &["register", "--export", "-"],
    ] {
        let run = agent.run(command).await;
        let message = run.fails(2);
        assert!(message.contains("not enrolled"), "{command:?}: {message}");
        assert!(
            message.contains("device-agent enroll"),
            "{command:?}: {message}"
        );
    }
    // The service is not contacted for a device that has no state.
    let root = some_root(work.path());
    let run = agent
        .run(&[
            "onboard",
            "--service",
            "https://127.0.0.1:1",
            "--ca",
            root.to_str().unwrap(),
        ])
        .await;
    assert!(run.fails(2).contains("not enrolled"), "{run:#?}");
    let run = agent.run(&["connect"]).await;
    assert!(run.fails(2).contains("no credential"), "{run:#?}");
    // No silicon given at all.
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
        .args(["--state", work.path().to_str().unwrap(), "enroll"])
        .env_remove("OXROOT_SILICON")
        .output()
        .await
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no silicon"));
}

#[tokio::test]
async fn corrupted_helper_data_is_refused_before_any_reconstruction() {
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("state"), &emulated(2));
    agent.run(&["enroll"]).await.ok();
    let path = agent.state.join("helper-data.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let run = agent.run(&["id"]).await;
    let message = run.fails(2);
    assert!(message.contains("helper-data.bin"), "{message}");
    assert!(message.contains("corrupted"), "{message}");
    // Rejected by its integrity check, so no oracle query was made and none was counted.
    let counter = std::fs::read_to_string(agent.state.join("reconstruct-failures")).unwrap();
    assert_eq!(counter.trim(), "0");

    std::fs::write(&path, b"garbage").unwrap();
    let message = agent.run(&["status"]).await.fails(2).to_owned();
    assert!(message.contains("helper data"), "{message}");
}

#[tokio::test]
async fn repeated_reconstruction_failures_lock_the_agent() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    Agent::new(&state, &emulated(3)).run(&["enroll"]).await.ok();
    // Another chip's cells under this helper data: every reconstruction fails.
    let wrong = Agent::new(&state, &emulated(4));
    for attempt in 1..=5 {
        let run = wrong.run(&["id"]).await;
        let message = run.fails(5);
        assert!(
            message.contains(&format!("key reconstruction failed ({attempt} consecutive")),
            "{message}"
        );
    }
    let right = Agent::new(&state, &emulated(3));
    let locked = right.run(&["id"]).await;
    assert!(locked.fails(5).contains("locked"), "{locked:#?}");
    assert!(locked.stderr.contains("device-agent unlock"));
    right.run(&["unlock"]).await.ok();
    right.run(&["id"]).await.ok();
    // A success resets the counter: four more failures are not yet a lockout.
    for _ in 0..4 {
        wrong.run(&["id"]).await.fails(5);
    }
    right.run(&["id"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_root_or_an_absent_service_fail_clearly() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("state"), &emulated(5));
    agent.run(&["enroll"]).await.ok();

    // A root that did not sign the service's certificate: refused at once, not retried.
    let other_root = some_root(work.path());
    let run = agent
        .run(&[
            "register",
            "--service",
            &harness.url(),
            "--ca",
            other_root.to_str().unwrap(),
        ])
        .await;
    let message = run.fails(4);
    assert!(message.contains("not trusted"), "{message}");
    assert!(message.contains("--ca"), "{message}");
    assert!(!run.stderr.contains("retrying"), "{run:#?}");

    // A CA file that is no certificate at all.
    let run = agent
        .run(&["register", "--service", &harness.url(), "--ca", "/dev/null"])
        .await;
    assert!(run.fails(2).contains("no PEM certificate"), "{run:#?}");

    // Nobody listening: bounded retries, each reported, then unavailable.
    let nowhere = format!("https://127.0.0.1:{}", free_port());
    let run = agent
        .run(&[
            "register",
            "--service",
            &nowhere,
            "--ca",
            harness.root_file.to_str().unwrap(),
            "--retries",
            "2",
            "--backoff-ms",
            "10",
        ])
        .await;
    let message = run.fails(4);
    assert!(message.contains("cannot reach"), "{message}");
    assert_eq!(run.stderr.matches("retrying in").count(), 2, "{run:#?}");

    // Not a TLS URL.
    let run = agent
        .run(&[
            "register",
            "--service",
            "http://127.0.0.1:1",
            "--ca",
            harness.root_file.to_str().unwrap(),
        ])
        .await;
    assert!(run.fails(2).contains("TLS only"), "{run:#?}");
}

/// A loopback proxy to the service that drops the first connection it accepts.
async fn flaky_proxy(service: std::net::SocketAddr) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(service).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_with_backoff() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("state"), &emulated(6));
    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(
        &mut operator,
        "broker",
        v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
            host: "127.0.0.1".into(),
            ..Default::default()
        }),
    )
    .await;
    agent.join_batch(&harness, &mut operator, &batch).await;

    let (port, accepted) = flaky_proxy(harness.server.addr).await;
    let run = agent
        .run(&[
            "onboard",
            "--service",
            &format!("https://127.0.0.1:{port}"),
            "--ca",
            harness.root_file.to_str().unwrap(),
            "--retries",
            "3",
            "--backoff-ms",
            "20",
        ])
        .await;
    assert!(run.ok().starts_with("onboarded"), "{run:#?}");
    assert_eq!(run.stderr.matches("retrying in").count(), 1, "{run:#?}");
    assert!(accepted.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_prints_the_reason_and_reference() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("state"), &emulated(7));
    agent.run(&["enroll"]).await.ok();
    // Registered but in no batch.
    agent.run_with_service(&["register"], &harness).await.ok();
    let run = agent.run_with_service(&["onboard"], &harness).await;
    let message = run.fails(3);
    assert!(message.contains("NOT_PROVISIONED"), "{message}");
    assert!(message.contains("(reference "), "{message}");
    assert!(!agent.state.join("credential.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_temp_file_never_replaces_a_good_credential() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::new(&work.path().join("state"), &emulated(8));
    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(
        &mut operator,
        "aws",
        v1::policy::Params::AwsIot(v1::AwsIotPolicyParams {
            endpoint_host: "abc123-ats.iot.eu-west-1.amazonaws.com".into(),
            server_root_ca_pem: harness.server.root_pem.clone(),
            ..Default::default()
        }),
    )
    .await;
    agent.join_batch(&harness, &mut operator, &batch).await;
    let onboarded = agent.json(&["onboard"], Some(&harness)).await;
    let good = std::fs::read(agent.state.join("credential.json")).unwrap();

    // What a crash between writing and renaming leaves: a half-written temporary file.
    let leftover = agent.state.join(".credential.json.tmp.4242.0");
    std::fs::write(&leftover, &good[..good.len() / 2]).unwrap();
    let status = agent.json(&["status"], None).await;
    assert_eq!(status["serial"], onboarded["serial"]);
    agent.run(&["connect"]).await.ok();
    assert_eq!(
        std::fs::read(agent.state.join("credential.json")).unwrap(),
        good
    );
    // The next write of the credential removes the leftover.
    agent
        .run_with_service(&["renew", "--rotate"], &harness)
        .await
        .ok();
    assert!(!leftover.exists());
}

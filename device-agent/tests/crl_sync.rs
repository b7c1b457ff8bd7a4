//! `enrollctl crl sync` keeping a real Mosquitto broker's CRL file current: with CRLs that
//! live 12 seconds (a week, compressed), good devices keep connecting for three lifetimes
//! although the CRL the broker started with has gone stale, and a device revoked while the
//! sync runs is refused within seconds, with no manual step.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, Broker, Harness, free_port, policy_and_batch, revoke};
use enroll_service::service::ServiceConfig;
use oxroot_proto::v1;

/// What the in-process enrollctl prints, shared with the test.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `enrollctl crl sync …` on a thread of its own (its own runtime), until the test ends.
fn start_sync(args: Vec<String>) -> (Log, Log) {
    let (out, err) = (Log::default(), Log::default());
    let (mut stdout, mut stderr) = (out.clone(), err.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let exit = runtime.block_on(enrollctl::run(args, &mut stdout, &mut stderr));
        let _ = writeln!(stderr, "crl sync exited: {exit:?}");
    });
    (out, err)
}

async fn connects(agent: &Agent) -> bool {
    agent.run(&["connect", "--timeout", "5"]).await.code == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_sync_keeps_a_broker_serving_across_crl_lifetimes_and_applies_a_revocation() {
    const CRL_VALIDITY: Duration = Duration::from_secs(12);
    let harness = Harness::start_with(ServiceConfig {
        crl_validity: CRL_VALIDITY,
        ..ServiceConfig::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let broker_dir = work.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let port = free_port();
    let mut operator = harness.operator("acme").await;
    let batch = policy_and_batch(
        &mut operator,
        "broker",
        v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            ..Default::default()
        }),
    )
    .await;
    let mut agents = Vec::new();
    for seed in [0x51_u8, 0x52] {
        let agent = Agent::new(
            &work.path().join(format!("state-{seed}")),
            &format!("emulated:{}", hex::encode([seed; 32])),
        );
        let id = agent.join_batch(&harness, &mut operator, &batch).await;
        agent.run_with_service(&["onboard"], &harness).await.ok();
        agents.push((agent, id));
    }
    let mut platform = harness.operator("*").await;
    let broker = Broker::start(&mut platform, "acme", "broker", &broker_dir, port).await;
    // The CRL the broker starts with: stale after CRL_VALIDITY without the sync.
    let started = Instant::now();
    let first_crl = std::fs::read(broker_dir.join("crl.pem")).unwrap();
    // Once refused under a loaded CI machine (no cause recorded): up to three attempts, and the
    // agent's own words if all fail.
    let mut first = agents[0].0.run(&["connect", "--timeout", "5"]).await;
    for _ in 0..2 {
        if first.code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        first = agents[0].0.run(&["connect", "--timeout", "5"]).await;
    }
    assert_eq!(first.code, 0, "before the sync: {first:#?}");

    let profile = work.path().join("profile");
    harness.write_profile(&profile, "acme").await;
    let (log, errors) = start_sync(vec![
        "enrollctl".into(),
        "--service".into(),
        harness.url(),
        "--profile".into(),
        profile.display().to_string(),
        "crl".into(),
        "sync".into(),
        "--out".into(),
        broker_dir.join("crl.pem").display().to_string(),
        "--trust".into(),
        broker_dir.join("ca.pem").display().to_string(),
        "--exec".into(),
        format!("kill -HUP {}", broker.pid()),
        "--interval".into(),
        "3s".into(),
    ]);

    // Three CRL lifetimes: the broker's first CRL went stale long ago, and the good device
    // still connects, because the sync replaced the file with fresh CRLs as they were signed.
    while started.elapsed() < CRL_VALIDITY * 3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            connects(&agents[0].0).await,
            "refused at {:?}; sync log:\n{}{}",
            started.elapsed(),
            log.text(),
            errors.text()
        );
    }
    assert_ne!(
        std::fs::read(broker_dir.join("crl.pem")).unwrap(),
        first_crl
    );
    let written = log.text().matches(" wrote ").count();
    assert!(written >= 3, "{}", log.text());
    assert!(log.text().contains("signed: wrote"), "{}", log.text());
    assert!(
        log.text()
            .contains(&format!("ran `kill -HUP {}`", broker.pid())),
        "{}",
        log.text()
    );

    // A device revoked while the sync runs is refused within seconds; the other is not.
    let (bob, bob_id) = &agents[1];
    assert!(connects(bob).await);
    revoke(&mut operator, bob_id).await;
    let revoked_at = Instant::now();
    loop {
        if !connects(bob).await {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "still accepted after the revocation; sync log:\n{}{}",
            log.text(),
            errors.text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "revocation applied by the broker after {:?}",
        revoked_at.elapsed()
    );
    assert!(
        connects(&agents[0].0).await,
        "the good device after the revocation"
    );
    assert!(errors.text().is_empty(), "{}", errors.text());
}

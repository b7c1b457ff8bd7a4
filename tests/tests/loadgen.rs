//! The load generator end to end at a tiny size: against a service in this process (the
//! `--service` + `--profile` path), and as the README runs it, the `loadgen` binary starting
//! its own `enroll-service` process. Every phase runs and the report adds up. No timing is
//! asserted; the figures belong in the README, measured on an idle machine.

mod built;

use std::sync::Arc;

use enroll_service::fleet::DeviceSigner;
use enroll_service::metrics::Metrics;
use enroll_service::pki::{CaNames, CertificateAuthority, OperatorKey, Role, Validity};
use enroll_service::server::RunningServer;
use enroll_service::service::{ServiceConfig, ServiceCore, issue_operator_certificate};
use enroll_service::store::{Registry, SledRegistry};
use oxroot_tests::loadgen::{self, Options, Target};

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_onboards_and_the_report_adds_up() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let now = time::OffsetDateTime::now_utc();
    let ca = Arc::new(
        CertificateAuthority::initialise(&CaNames::default(), now - time::Duration::minutes(1))
            .expect("CA"),
    );
    let registry = SledRegistry::open(&dir.path().join("registry")).expect("registry");
    let core = ServiceCore::new(
        registry,
        ca.clone(),
        ServiceConfig::default(),
        Arc::new(Metrics::new()),
    );
    let server = RunningServer::start(core.clone()).await.expect("server");

    let admin = issue_operator_certificate(
        &core,
        &OperatorKey::Generate,
        (
            "loadgen-admin",
            enroll_service::pki::PLATFORM_OWNER,
            Role::Admin,
        ),
        Validity::starting(now - time::Duration::minutes(1), time::Duration::hours(1))
            .expect("validity"),
        "system:test",
    )
    .await
    .expect("operator certificate");
    let profile = dir.path().join("profile");
    std::fs::create_dir_all(&profile).expect("profile directory");
    std::fs::write(profile.join("root.pem"), ca.root_pem()).expect("root");
    std::fs::write(
        profile.join("operator.pem"),
        format!("{}{}", admin.certificate.pem, ca.certificate_pem()),
    )
    .expect("certificate");
    let key = admin.private_key.as_ref().expect("generated key").to_pem();
    std::fs::write(profile.join("operator.key"), key.as_bytes()).expect("key");

    for connection_per_device in [false, true] {
        let report = loadgen::run(&Options {
            devices: 24,
            connections: 2,
            connection_per_device,
            concurrency: 8,
            target: Target::Existing {
                url: server.url(),
                profile: profile.clone(),
                pid: Some(std::process::id()),
            },
            owner: "smoke".into(),
            floor_iterations: 50,
            device_signer: DeviceSigner::AwsLc,
            perf_record: None,
            idle_connections: if connection_per_device { 0 } else { 6 },
            service_cpus: None,
            service_cpu_quota: None,
            progress: false,
        })
        .await
        .expect("the load test runs");
        // With a connection per device the floor carries the server's handshake too.
        let floor = report.crypto_floor;
        assert!(floor.handshake_us > 0.0);
        let expected_floor = if connection_per_device {
            floor.per_onboarding_us + floor.handshake_us
        } else {
            floor.per_onboarding_us
        };
        assert!(
            (report.crypto_floor_us_per_device - expected_floor).abs() < 1e-9,
            "{report:?}"
        );
        assert_eq!(
            report.service_kib_per_idle_connection.is_some(),
            !connection_per_device,
            "idle connections are measured only when asked for: {report:?}"
        );
        assert_eq!(report.onboarded, 24, "{:?}", report.first_problem);
        assert_eq!((report.refused, report.failed), (0, 0));
        assert_eq!(report.batch_onboarded, 24);
        assert!(report.latency_ms_p50 <= report.latency_ms_p99);
        assert!(report.crypto_floor_us_per_device > 0.0);
        assert!(report.device_us_per_onboarding > 0.0);
        assert!(report.service_cpu_us_per_device.is_some());
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("json");
        for field in [
            "devices",
            "devices_per_s",
            "latency_ms_p50",
            "latency_ms_p99",
            "service_cpu_us_per_device",
            "service_peak_rss_mb",
            "crypto_floor_us_per_device",
            "ratio_to_floor",
            "device_us_per_onboarding",
        ] {
            assert!(!json[field].is_null(), "{field} is missing");
        }
        let mut summary = Vec::new();
        report.write_summary(&mut summary).expect("summary");
        assert!(
            String::from_utf8(summary)
                .expect("text")
                .contains("devices/s")
        );
    }
    server.stop().await.expect("server stops");
}

/// The README's command at a tiny size: `loadgen --json` runs `enroll-service init` and
/// `serve` itself, reads the service's CPU and memory from `/proc`, stops it, and prints one
/// line of JSON whose ratio is the service's CPU over the floor measured in the same run.
#[tokio::test]
async fn the_binary_starts_its_own_service_and_prints_one_json_line() {
    let state = tempfile::tempdir().expect("temporary directory");
    let state_dir = state.path().join("state");
    // The service on CPU 0 and the load generator on the others, where there are others.
    let pinnable = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) > 1;
    let mut loadgen = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
    loadgen
        .args(["--devices", "16", "--connections", "2"])
        .args(["--concurrency", "8", "--floor-iterations", "20", "--json"])
        .args(["--idle-connections", "8"])
        .arg("--service-bin")
        .arg(built::bin_dir().join("enroll-service"))
        .arg("--state-dir")
        .arg(&state_dir);
    if pinnable {
        loadgen.args(["--pin-service", "0"]);
    }
    // The loop under a CPU quota where a cgroup can be made (as root).
    let quota = oxroot_tests::postgres::running_as_root();
    if quota {
        loadgen.args(["--service-cpu-quota", "0.5"]);
    }
    let child = loadgen
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("loadgen runs");
    let cgroup_name = format!("oxroot-loadgen-{}", child.id());
    let output = child.wait_with_output().expect("loadgen runs");
    let stdout = String::from_utf8(output.stdout).expect("text");
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "--json prints only the JSON object: {stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    assert_eq!(report["devices"], 16);
    assert_eq!(report["onboarded"], 16, "{report}");
    assert_eq!(report["batch_onboarded"], 16, "{report}");
    let number = |field: &str| {
        report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is not a number: {report}"))
    };
    // The service is another process here, so its CPU and memory come from /proc.
    assert!(number("service_cpu_us_per_device") >= 0.0);
    assert!(number("service_peak_rss_mb") > 1.0, "{report}");
    assert_cpu_by_thread(&report);
    // Serving a device means waiting for its next message at least once.
    assert!(
        number("service_context_switches_per_device") > 0.0,
        "{report}"
    );
    assert!(number("service_cpus_busy") >= 0.0);
    if quota {
        assert_eq!(report["service_cpu_quota"], 0.5, "{report}");
        // cgroup v2, or v1's cpu controller.
        for hierarchy in ["", "cpu", "cpu,cpuacct"] {
            let cgroup = std::path::Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(&cgroup_name);
            assert!(!cgroup.exists(), "{} is removed", cgroup.display());
        }
    } else {
        assert!(report["service_cpu_quota"].is_null(), "{report}");
    }
    assert_eq!(report["idle_connections"], 8);
    assert!(number("service_kib_per_idle_connection") >= 0.0);
    if pinnable {
        let pinned = &report["pinned"];
        assert_eq!(pinned["service_cpus"], serde_json::json!([0]), "{report}");
        let loadgen_cpus = pinned["loadgen_cpus"].as_array().expect("a list");
        assert!(
            !loadgen_cpus.is_empty() && !loadgen_cpus.contains(&serde_json::json!(0)),
            "the load generator runs on the other CPUs: {report}"
        );
    } else {
        assert!(report["pinned"].is_null(), "{report}");
    }
    let floor = number("crypto_floor_us_per_device");
    assert!(floor > 0.0);
    let ratio = number("ratio_to_floor");
    assert!(
        (ratio - number("service_cpu_us_per_device") / floor).abs() < 1e-6,
        "ratio_to_floor is the service's CPU over the floor: {report}"
    );
    // Its log is plain text: no terminal colour codes in a file.
    let log = std::fs::read_to_string(state_dir.join("serve-0.log")).expect("the service's log");
    assert!(log.contains("credential sent"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the log file: {log:?}"
    );
    // The service it started has stopped (sled's lock on the registry is free) and left every
    // credential it sent in its durable registry.
    let registry = SledRegistry::open(&state_dir.join("registry"))
        .expect("the registry opens: the started service is gone");
    assert_eq!(registry.credential_count().await.expect("count"), 16);
}

/// The service's CPU by thread pool names the gRPC workers and the registry's single writer
/// at least.
fn assert_cpu_by_thread(report: &serde_json::Value) {
    let by_thread = report["service_cpu_us_per_device_by_thread"]
        .as_object()
        .unwrap_or_else(|| panic!("no CPU by thread: {report}"));
    for pool in ["tokio-rt-worker", "registry-writer"] {
        assert!(
            by_thread.get(pool).and_then(serde_json::Value::as_f64) >= Some(0.0),
            "{pool} missing: {report}"
        );
    }
}

/// `--ca-backend both`: the same fleet against a service with sealed CA keys, then one with
/// its CA keys in a throwaway SoftHSM2 token, side by side in one JSON object. The rate ratio
/// is reported, not asserted (it belongs in the README, measured on an idle machine).
#[test]
fn both_ca_backends_run_side_by_side() {
    // Pinned where there is a CPU to spare: the second run starts from every CPU again.
    let pinnable = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) > 1;
    let mut loadgen = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
    loadgen
        .args([
            "--devices",
            "12",
            "--connections",
            "2",
            "--ca-backend",
            "both",
        ])
        .args(["--concurrency", "6", "--floor-iterations", "20", "--json"])
        .arg("--service-bin")
        .arg(built::bin_dir().join("enroll-service"));
    if pinnable {
        loadgen.args(["--pin-service", "0"]);
    }
    let output = loadgen.output().expect("loadgen runs");
    let stdout = String::from_utf8(output.stdout).expect("text");
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "--json prints only the JSON object: {stdout}"
    );
    let both: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    for backend in ["sealed", "pkcs11"] {
        assert_eq!(both[backend]["ca_backend"], backend, "{both}");
        assert_eq!(both[backend]["onboarded"], 12, "{both}");
        assert_eq!(both[backend]["batch_onboarded"], 12, "{both}");
        assert_eq!(
            both[backend]["pinned"]["service_cpus"],
            if pinnable {
                serde_json::json!([0])
            } else {
                serde_json::Value::Null
            },
            "{both}"
        );
    }
    let ratio = both["pkcs11_rate_to_sealed"].as_f64().expect("a ratio");
    let expected = both["pkcs11"]["devices_per_s"].as_f64().expect("rate")
        / both["sealed"]["devices_per_s"].as_f64().expect("rate");
    assert!((ratio - expected).abs() < 1e-9, "{both}");
}

//! The QEMU fleet end to end: `qemu/run-fleet` boots four emulated chips as QEMU guests (TCG)
//! against a real enrolment service and a real Mosquitto broker, both on loopback.
//!
//! - First boot: every chip enrols, its registration record is imported into a Mosquitto
//!   batch, it onboards, and it publishes and reads back through the broker over mutual TLS
//!   with a key derived from its silicon.
//! - Second boot: every chip reconstructs the same DeviceId from the same helper data, and
//!   neither enrols nor onboards again; it publishes with the stored credential.
//! - Corner: chip 1 boots at -40 °C, 0.9 V, 10 years and still reconstructs its DeviceId.
//! - The service's batch holds exactly four devices, all onboarded.
//! - An update over the air (`--update`): every guest refuses a tampered release; a rollout
//!   at 50 % reaches exactly the guests whose cohort is below 50, which install it, reboot
//!   into it, renew (the certificate names the new firmware) and report; at 100 % the others
//!   follow. A rollout of an older image (a lower security counter) is refused by every
//!   guest that checks, and halts when its failures reach the threshold.
//!
//! `tests/run` builds the guest image (`qemu/build-image`) before the test suites, so this
//! test only boots. `.config/nextest.toml` gives it the machine to itself.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use enroll_service::firmware::rollout::cohort;
use rot_core::keys::DeviceId;
use serde_json::Value;

const CHIPS: usize = 4;

fn phase<'a>(summary: &'a Value, name: &str) -> &'a [Value] {
    summary["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|p| p["phase"] == name)
        .unwrap_or_else(|| panic!("no {name} phase in {summary}"))["vms"]
        .as_array()
        .expect("vms")
}

fn result(vm: &Value) -> &Value {
    assert_eq!(vm["ok"], true, "a boot failed: {vm}");
    assert!(vm["result"]["error"].is_null(), "{vm}");
    &vm["result"]
}

/// Runs `qemu/run-fleet` and returns its JSON summary and the seconds it took with set-up.
fn run_fleet() -> (Value, f64) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let work = tempfile::tempdir().expect("a temporary directory");
    let summary_path = work.path().join("summary.json");
    // The update's payload: 64 KiB of a fixed pattern (any bytes make an image).
    let payload = work.path().join("fleet-app-2.0.bin");
    let bytes: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(131) >> 3) as u8)
        .collect();
    std::fs::write(&payload, bytes).expect("the payload is written");
    let started = Instant::now();
    // dev: the suites have just built enroll-service and enrollctl in the dev profile.
    let output = Command::new(repo.join("qemu/run-fleet"))
        .arg(CHIPS.to_string())
        .args(["--jobs", "2", "--timeout", "150"])
        .args(["--reboot", "--corner", "--fresh"])
        .arg("--update")
        .arg(&payload)
        .arg("--fleet")
        .arg(work.path().join("fleet"))
        .arg("--json")
        .arg(&summary_path)
        .env("OXROOT_HOST_PROFILE", "dev")
        .output()
        .expect("qemu/run-fleet runs");
    let wall = started.elapsed().as_secs_f64();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "run-fleet: {}", output.status);
    let text = std::fs::read_to_string(&summary_path).expect("run-fleet wrote its summary");
    (
        serde_json::from_str(&text).expect("the summary is JSON"),
        wall,
    )
}

/// The certificate names the firmware the guest runs: the measurement of its agent binary.
fn check_firmware(r: &Value) {
    let running = r["firmware_running"].as_str().unwrap_or_default();
    assert!(
        running.len() == 64 && running.bytes().all(|b| b.is_ascii_hexdigit()),
        "{r}"
    );
    assert_eq!(
        r["firmware_certified"], r["firmware_running"],
        "the certificate names the firmware that runs: {r}"
    );
}

/// First boot: every chip enrolled, registered, onboarded and published; all are distinct.
fn check_first_boot(boot: &[Value]) {
    assert_eq!(boot.len(), CHIPS);
    let mut ids = Vec::new();
    for vm in boot {
        let r = result(vm);
        let id = r["device_id"].as_str().expect("a DeviceId");
        let hex = id.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(id.len() == 64 && hex, "{id}");
        for field in [
            "enrolled_now",
            "registered_now",
            "onboarded_now",
            "connected",
            "identity_stable",
        ] {
            assert_eq!(r[field], true, "first boot, {field}: {r}");
        }
        assert_eq!(r["policy_kind"], "mosquitto");
        check_firmware(r);
        ids.push(id.to_owned());
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), CHIPS, "one device per chip: {ids:?}");
}

/// Second boot: same DeviceId from the same helper data, no enrolment, no onboarding, and
/// the stored credential still publishes.
fn check_reboot(reboot: &[Value], boot: &[Value]) {
    assert_eq!(reboot.len(), CHIPS);
    for (vm, first) in reboot.iter().zip(boot) {
        let r = result(vm);
        let before = &first["result"];
        assert_eq!(vm["vm"], first["vm"]);
        assert_eq!(r["device_id"], before["device_id"], "same DeviceId");
        // The same firmware after the power cycle: the same alias key, the same certificate.
        check_firmware(r);
        assert_eq!(r["firmware_certified"], before["firmware_certified"]);
        assert_eq!(
            r["helper_sha256"], before["helper_sha256"],
            "same helper data"
        );
        for field in ["enrolled_now", "registered_now", "onboarded_now"] {
            assert_eq!(r[field], false, "second boot, {field}: {r}");
        }
        assert_eq!(r["connected"], true, "the stored credential works: {r}");
    }
}

/// Corner: chip 1 at -40 °C, 10 years reconstructs its DeviceId and publishes.
fn check_corner(corner: &[Value], boot: &[Value]) {
    assert_eq!(corner.len(), 1);
    let r = result(&corner[0]);
    assert_eq!(r["temperature"], -40);
    assert_eq!(r["age"], 10);
    assert_eq!(r["device_id"], boot[0]["result"]["device_id"]);
    assert_eq!(r["enrolled_now"], false);
    assert_eq!(r["connected"], true);
}

/// The update over the air, phase by phase (see the module text).
fn check_update(summary: &Value, boot: &[Value]) {
    let rollouts = &summary["rollouts"];
    let new = rollouts["measurement"]
        .as_str()
        .expect("the update's measurement");
    let rollout = rollouts["update"]["id"].as_str().expect("the rollout id");
    let factory = boot[0]["result"]["firmware_running"].clone();
    let in_first_stage: Vec<bool> = boot
        .iter()
        .map(|vm| {
            let id: DeviceId = result(vm)["device_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("a DeviceId");
            cohort(rollout, &id) < 50
        })
        .collect();

    // Stage 1 (50 %): the tampered release is refused everywhere; the cohort installs.
    for (vm, first_stage) in phase(summary, "update").iter().zip(&in_first_stage) {
        let r = result(vm);
        assert_eq!(r["tampered"], "refused", "{r}");
        let expected = if *first_stage { "installed" } else { "none" };
        assert_eq!(r["firmware_update"], expected, "{r}");
        // Still the factory firmware until the reboot.
        assert_eq!(r["firmware_running"], factory, "{r}");
        check_firmware(r);
    }
    // Stage 2 (100 %): the first stage runs 2.0 with a certificate naming it, and reports;
    // the others install.
    for (vm, first_stage) in phase(summary, "updated").iter().zip(&in_first_stage) {
        let r = result(vm);
        if *first_stage {
            assert_eq!(r["renewed_now"], true, "{r}");
            assert_eq!(r["firmware_running"], new, "{r}");
            assert_eq!(r["update_reported"], "installed", "{r}");
            assert_eq!(
                r["firmware_update"], "none",
                "reported devices are not offered again"
            );
        } else {
            assert_eq!(r["firmware_update"], "installed", "{r}");
            assert_eq!(r["firmware_running"], factory, "{r}");
        }
        assert_eq!(r["connected"], true, "{r}");
        check_firmware(r);
    }
    // The rollback: every guest runs 2.0 and refuses 1.5 until the rollout halts.
    let mut refused = 0;
    for (vm, first_stage) in phase(summary, "rollback").iter().zip(&in_first_stage) {
        let r = result(vm);
        assert_eq!(r["firmware_running"], new, "{r}");
        assert_eq!(r["renewed_now"], !first_stage, "{r}");
        check_firmware(r);
        match r["firmware_update"].as_str() {
            Some("refused") => {
                refused += 1;
                let reason = r["update_reason"].as_str().unwrap_or_default();
                assert!(reason.contains("rollback"), "{r}");
            }
            Some("none") => {}
            other => panic!("a rollback was {other:?}: {r}"),
        }
    }
    assert_eq!(rollouts["update"]["installed"], CHIPS, "{rollouts}");
    assert_eq!(rollouts["update"]["failed"], 0, "{rollouts}");
    let rollback = &rollouts["rollback"];
    assert_eq!(
        rollback["standing"], "ROLLOUT_STANDING_HALTED",
        "{rollouts}"
    );
    assert_eq!(rollback["installed"], 0, "{rollouts}");
    assert_eq!(rollback["failed"], refused, "{rollouts}");
    assert!(refused >= 2, "the threshold is 2: {rollouts}");
    assert_eq!(rollouts["halts_audited"], 1, "{rollouts}");
}

#[test]
fn qemu_fleet_onboards_to_mosquitto_and_keeps_its_identities_across_reboots() {
    let (summary, wall) = run_fleet();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["policy_kind"], "mosquitto");
    let boot = phase(&summary, "boot");
    check_first_boot(boot);
    check_reboot(phase(&summary, "reboot"), boot);
    check_corner(phase(&summary, "corner"), boot);
    check_update(&summary, boot);
    // The service's view: a chip that had enrolled again would be a fifth device.
    assert_eq!(summary["batch"]["total"], CHIPS, "{summary}");
    assert_eq!(summary["batch"]["onboarded"], CHIPS, "{summary}");
    println!(
        "QEMU fleet: {} s for {CHIPS} chips booted twice, one corner boot and three update \
         boots each; {wall:.1} s with set-up",
        summary["fleet_seconds"]
    );
}

//! `enrollctl console` in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver), against the real service with emulated devices onboarding over
//! gRPC, as an operator at a programming house would use it.
//!
//! - `an_admin_follows_a_batch_live_then_finds_and_revokes_a_device`: log in by the printed
//!   link; a batch page reaches 100 % while devices onboard, with no reload, and shows a
//!   refusal with its precise cause linked to the device; search by prefix, open the device,
//!   revoke it with a reason; the CA page shows the serial on the CRL of the owner's active
//!   issuing CA, whose key verifies it, as `enrollctl crl --owner --issuer` and `/crl.pem` do;
//!   a platform auditor's console lists the owners, shows the same CRL for the one it picks and
//!   the platform CA with its own CRL; the evidence export verifies. Screenshots of the
//!   overview, the live batch and the device.
//! - `an_auditor_console_is_read_only_and_guards_its_forms`: a wrong and a spent login token
//!   are refused; the auditor sees no revoke control, and a forged revoke POST is refused by
//!   the service (and audited); a POST without the CSRF token is refused by the console; the
//!   audit verify action; a device's `<script>`, event handlers and quotes show as text, and
//!   the service refuses control and bidi characters in a registration (the console's unit
//!   tests show them as visible escapes, for records that hold them anyway).
//!
//! Set `OXROOT_CONSOLE_SCREENSHOTS=DIR` to keep the screenshots (the README's come from here).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Harness, fleet, register};
use enroll_service::fleet::EmulatedDevice;
use enroll_service::pki::Role;
use enrollctl::args::ConnectionArgs;
use enrollctl::console::{CONTENT_SECURITY_POLICY, ConsoleOptions, RunningConsole};
use fantoccini::{Client, ClientBuilder, Locator};
use oxroot_proto::v1;
use oxroot_proto::v1::operator_client::OperatorClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// How long a page may take to show what the test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Some`, for at most [`PATIENCE`].
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// chromedriver on a free loopback port, and one headless Chromium session through it.
struct Browser {
    client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, which the Chromium it starts joins: see Drop.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/run installs it)");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--disable-crash-reporter", "--disable-breakpad", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually("chromedriver to accept a session", || {
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(capabilities.clone());
            let url = url.clone();
            async move { builder.connect(&url).await.ok() }
        })
        .await;
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Ends the session (Chromium quits); dropping `self` then ends chromedriver's group.
    async fn stop(self) {
        let _ = self.client.clone().close().await;
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The text of the element `css` selects. An element the page replaced between finding it
    /// and reading it (a reload, a live update) is looked up again.
    async fn text(&self, css: &str) -> String {
        for _ in 0..10 {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.text().await {
                Ok(text) => return text,
                // Chromium reports an element of the document being replaced either way.
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        || e.message.contains("does not belong to the document") => {}
                Err(e) => panic!("{css}: {e}"),
            }
        }
        panic!("{css}: replaced ten times in a row")
    }

    async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap()
    }

    /// GET or POST from the page's own origin (the CSP allows it), with its cookies.
    async fn fetch(&self, url: &str, init: Value) -> Value {
        self.client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(arguments[0], arguments[1]).then(r => r.text().then(body => done({
                     status: r.status,
                     type: r.headers.get('content-type'),
                     disposition: r.headers.get('content-disposition'),
                     csp: r.headers.get('content-security-policy'),
                     body,
                 }))).catch(e => done({ error: String(e) }));",
                vec![url.into(), init],
            )
            .await
            .unwrap()
    }

    /// Submits a form built by script, as a page of this origin could: the forged requests.
    async fn submit_form(&self, action: &str, fields: Value) {
        self.run(
            "const form = document.createElement('form');
             form.method = 'post';
             form.action = arguments[0];
             for (const [name, value] of Object.entries(arguments[1])) {
                 const input = document.createElement('input');
                 input.type = 'hidden'; input.name = name; input.value = value;
                 form.appendChild(input);
             }
             document.body.appendChild(form);
             form.submit();",
            vec![action.into(), fields],
        )
        .await;
        eventually("the form's answer", || async move {
            (self.path().await == action).then_some(())
        })
        .await;
    }

    async fn screenshot(&self, name: &str, dir: &Path) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// chromedriver and every Chromium process it started are killed with their process group,
/// after [`Browser::stop`] and when a failing test never reaches it: nothing outlives a test.
impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(group) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where screenshots go: `OXROOT_CONSOLE_SCREENSHOTS`, or a directory that goes with the test.
fn screenshot_dir(scratch: &Path) -> PathBuf {
    let dir = std::env::var_os("OXROOT_CONSOLE_SCREENSHOTS")
        .map_or_else(|| scratch.join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A service with a Mosquitto policy and a batch of `devices` listed (not registered), made by
/// an admin of `acme` over the Operator API.
struct Scene {
    harness: Harness,
    work: tempfile::TempDir,
    admin: OperatorClient<Channel>,
    batch_id: String,
    devices: std::sync::Arc<Vec<EmulatedDevice>>,
}

async fn scene(devices: u32, seed: u8) -> Scene {
    let harness = Harness::start().await;
    let mut admin = harness.operator("setup", "acme", Role::Admin).await;
    admin
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "line-mqtt".into(),
                description: "Mosquitto on line 1".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let devices = fleet(devices, seed);
    let batch = admin
        .create_batch(v1::CreateBatchRequest {
            name: "line 1, lot 2025-17".into(),
            policy_name: "line-mqtt".into(),
            description: "PCBA rev C".into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Scene {
        harness,
        work: tempfile::tempdir().unwrap(),
        admin,
        batch_id: batch.batch.unwrap().batch_id,
        devices: std::sync::Arc::new(devices),
    }
}

impl Scene {
    /// The console of a fresh operator (name, role) of `acme`, re-reading devices every second.
    async fn console(&self, name: &str, role: Role) -> RunningConsole {
        self.console_of(name, "acme", role).await
    }

    /// The console of a fresh operator (name, owner, role); owner "*" is the platform.
    async fn console_of(&self, name: &str, owner: &str, role: Role) -> RunningConsole {
        let profile = self.work.path().join(name);
        self.harness
            .write_profile(&profile, name, owner, role)
            .await;
        let connection = ConnectionArgs {
            service: Some(self.harness.server.url()),
            profile: Some(profile),
            ..ConnectionArgs::default()
        };
        enrollctl::console::start(
            &connection,
            ConsoleOptions {
                fleet_refresh: Duration::from_secs(1),
                ..ConsoleOptions::default()
            },
        )
        .await
        .unwrap()
    }

    async fn device(&self, device_id: &str) -> v1::Device {
        self.admin
            .clone()
            .get_device(v1::GetDeviceRequest {
                device_id: device_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .device
            .unwrap()
    }
}

/// Registers `device` as a programming station does, with where and what it was programmed.
async fn register_at_station(
    client: &mut v1::device_enrollment_client::DeviceEnrollmentClient<Channel>,
    device: &EmulatedDevice,
    station: &str,
) {
    let mut request = device.registration(b"station-1").unwrap();
    request.context = Some(v1::RegistrationContext {
        site: "Shenzhen 2".into(),
        station: station.into(),
        firmware_version: "1.4.2".into(),
        labels: [("lot".to_owned(), "2025-17".to_owned())].into(),
    });
    client.register(request).await.unwrap();
}

/// `http://127.0.0.1:PORT` of a console.
fn origin(console: &RunningConsole) -> String {
    format!("http://{}", console.address())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_follows_a_batch_live_then_finds_and_revokes_a_device() {
    let scene = scene(16, 61).await;
    let console = scene.console("alice", Role::Admin).await;
    let base = origin(&console);
    let shots = screenshot_dir(scene.work.path());
    let session = Browser::start().await;
    let browser = &session;

    // Log in by the printed link; the browser lands on the overview without the token.
    assert!(
        console
            .login_url()
            .starts_with(&format!("{base}/login?token="))
    );
    browser.goto(console.login_url()).await;
    assert_eq!(browser.path().await, "/");
    assert!(
        !browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("token")
    );
    assert_eq!(browser.text("h1").await, "Fleet overview");
    assert!(
        browser
            .text("#operator")
            .await
            .starts_with("alice · admin of acme")
    );
    let page = browser.fetch("/", json!({})).await;
    assert_eq!(page["csp"], CONTENT_SECURITY_POLICY, "{page}");

    // The batch page, before anything happened: 0 %, waiting for its devices.
    let batch_page = format!("{base}/batches/{}", scene.batch_id);
    browser.goto(&batch_page).await;
    assert_eq!(browser.text("#batch-percent").await, "0 %");
    eventually("the live view to connect", || async move {
        browser
            .text("#live-status")
            .await
            .starts_with("live")
            .then_some(())
    })
    .await;
    // Marks this document: after a reload the mark would be gone.
    browser
        .run(
            "document.documentElement.dataset.mark = 'loaded once'",
            vec![],
        )
        .await;

    // The devices go to work: the first tries to onboard before registering (refused), then
    // all register and onboard one after another.
    let devices = scene.devices.clone();
    let channel = scene.harness.channel().await;
    let line = {
        let devices = devices.clone();
        tokio::spawn(async move {
            let mut client = v1::device_enrollment_client::DeviceEnrollmentClient::new(channel);
            let early = devices[0].onboard(&mut client).await.unwrap();
            assert!(early.credentials().is_none(), "refused before registering");
            for (i, device) in devices.iter().enumerate() {
                register_at_station(
                    &mut client,
                    device,
                    &format!("line 1 / programmer {}", i % 4),
                )
                .await;
            }
            for device in devices.iter() {
                let outcome = device.onboard(&mut client).await.unwrap();
                assert!(outcome.credentials().is_some());
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        })
    };
    let seen = &std::sync::Mutex::new(Vec::<String>::new());
    eventually("the batch page to reach 100 % live", || async move {
        let percent = browser.text("#batch-percent").await;
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&percent) {
            seen.push(percent.clone());
        }
        (percent == "100 %").then_some(())
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    line.await.unwrap();
    assert!(seen.len() >= 2, "progress moved through {seen:?}");
    let mark = browser
        .run("return document.documentElement.dataset.mark", vec![])
        .await;
    assert_eq!(mark, "loaded once", "the page was not reloaded");
    assert_eq!(browser.text("[data-count=onboarded]").await, "16");
    // The refusal, with its precise cause, linked to the device's record.
    let refused = eventually("the refusal event", || async move {
        let rows = browser
            .client
            .find_all(Locator::Css("#events tr.refused"))
            .await
            .unwrap();
        match rows.first() {
            Some(row) => Some(row.text().await.unwrap()),
            None => None,
        }
    })
    .await;
    let first_id = devices[0].device_id().to_string();
    assert!(
        refused.contains("refused") && refused.contains("unregistered"),
        "{refused}"
    );
    assert!(refused.contains(&first_id), "{refused}");
    browser.screenshot("console-batch-live", &shots).await;
    browser.click("#events tr.refused a").await;
    assert_eq!(browser.path().await, format!("/devices/{first_id}"));
    assert_eq!(browser.text("#device-id").await, first_id);

    // The batches page: the batch at 100 %, its one refusal among 17 attempts.
    browser.goto(&format!("{base}/batches")).await;
    let row = browser.text("table.batches tbody tr").await;
    assert!(row.contains("100 %") && row.contains("16 / 16"), "{row}");
    assert!(
        row.contains("5.9 %"),
        "error rate of 1 refusal in 17 attempts: {row}"
    );

    // Without JavaScript's help, the batch page lists the refused device and its cause.
    browser.goto(&batch_page).await;
    let first_prefix = &first_id[..16];
    eventually("the refused device and its cause", || async move {
        browser.client.refresh().await.unwrap();
        if !browser.exists("table.refusals").await {
            return None;
        }
        let text = browser.text("table.refusals").await;
        (text.contains(first_prefix) && text.contains("unregistered")).then_some(())
    })
    .await;

    // The overview counts all sixteen once the device list is read again.
    browser.goto(&format!("{base}/")).await;
    eventually(
        "the overview to count the onboarded devices",
        || async move {
            browser.client.refresh().await.unwrap();
            let onboarded = browser.text("[data-standing=onboarded] .figure").await;
            (onboarded == "16").then_some(())
        },
    )
    .await;
    let rate: u64 = browser
        .run(
            "return [...document.querySelectorAll('figure.chart')[0].querySelectorAll('rect')]
                 .reduce((sum, bar) => sum + Number(bar.dataset.value), 0)",
            vec![],
        )
        .await
        .as_u64()
        .unwrap();
    assert_eq!(rate, 16, "onboardings per minute add up to the batch");
    browser.screenshot("console-overview", &shots).await;

    // Search by a DeviceId prefix, open the device, revoke it with a reason.
    let victim = devices[5].device_id().to_string();
    browser.goto(&format!("{base}/devices")).await;
    let search = browser.client.find(Locator::Css("#q")).await.unwrap();
    search.send_keys(&victim[..10]).await.unwrap();
    browser.click("form.search button").await;
    eventually("the search results page", || async move {
        let url = browser.client.current_url().await.unwrap();
        url.query().is_some_and(|q| q.contains("q=")).then_some(())
    })
    .await;
    eventually("the search results", || async move {
        browser
            .text("#result-count")
            .await
            .starts_with("1 device")
            .then_some(())
    })
    .await;
    browser
        .click(&format!("table.devices a[href='/devices/{victim}']"))
        .await;
    assert_eq!(browser.text("#device-id").await, victim);
    assert_eq!(browser.text("#state").await, "onboarded");
    browser.click("#revoke").await;
    assert_eq!(browser.text("h1").await, "Revoke a device");
    browser
        .click("input[name=reason][value=REVOCATION_REASON_KEY_COMPROMISE]")
        .await;
    browser
        .client
        .find(Locator::Css("#comment"))
        .await
        .unwrap()
        .send_keys("board scrapped at rework")
        .await
        .unwrap();
    browser.click("#revoke-form button[type=submit]").await;
    eventually("the revoked device", || async move {
        (browser.exists("#revoked-notice").await).then_some(())
    })
    .await;
    assert_eq!(browser.text("#state").await, "revoked");
    assert_eq!(browser.text("#revocation-reason").await, "key-compromise");
    let record = scene.device(&victim).await;
    let serial = record.credential_history[0].serial.clone();
    assert_eq!(
        record.revocation.as_ref().unwrap().comment,
        "board scrapped at rework"
    );
    let crl_number = browser.text("#crl-status #crl-number").await;
    assert!(
        browser.exists("#crl-status code[data-listed=true]").await,
        "the device page says the CRL lists {serial}"
    );
    browser.screenshot("console-device", &shots).await;

    // The serial is on the CRL of acme's active issuing CA, which the device page names.
    let issuer = scene.harness.issuer("acme").await;
    assert_eq!(browser.text("#crl-status #crl-issuer").await, issuer);
    browser.goto(&format!("{base}/ca")).await;
    assert_eq!(
        browser
            .client
            .find(Locator::Css("#health"))
            .await
            .unwrap()
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("serving")
    );
    assert_eq!(browser.text("#owner h2").await, "Owner acme");
    assert!(
        !browser.exists("#owners").await && !browser.exists("#platform").await,
        "an owner's operator sees its own CAs only"
    );
    let active = format!("section.issuing-ca[data-ca-id='{issuer}']");
    assert_eq!(browser.text(&format!("{active} .state")).await, "active");
    assert!(
        browser
            .text(&format!("{active} .key-location"))
            .await
            .starts_with("sealed")
    );
    assert!(
        browser
            .text(&format!("{active} .certified"))
            .await
            .ends_with("its key verifies this certificate")
    );
    assert_eq!(
        browser.text(&format!("{active} .signs-crl")).await,
        "yes: its key verifies the CRL's signature"
    );
    assert_eq!(
        browser.text(&format!("{active} .crl-number")).await,
        crl_number
    );
    assert!(
        browser
            .exists(&format!("{active} table.crl tr[data-serial='{serial}']"))
            .await
    );
    // The owner's CRLs as downloaded from the console, and as `enrollctl crl` writes the
    // active issuing CA's: the same CRL, listing the serial, signed by that CA.
    let download = browser.fetch("/crl.pem", json!({})).await;
    assert_eq!(download["status"], 200, "{download}");
    assert_eq!(
        download["disposition"], "attachment; filename=\"crl-acme.pem\"",
        "{download}"
    );
    let downloaded = crl_facts(download["body"].as_str().unwrap().as_bytes());
    let crl_file = scene.work.path().join("crl.pem");
    let (exit, printed, output) = common::ctl(
        &scene.harness,
        &scene.work.path().join("alice"),
        &[
            "crl",
            "--owner",
            "acme",
            "--issuer",
            &issuer,
            "--out",
            crl_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(exit, enrollctl::Exit::Success, "{output}");
    assert_eq!(printed["crl_number"].as_str().unwrap(), crl_number);
    assert_eq!(printed["issuer_ids"], json!([issuer]));
    let written = crl_facts(&std::fs::read(&crl_file).unwrap());
    assert_eq!(written.len(), 1);
    assert_eq!(
        downloaded[0], written[0],
        "the console's first CRL is the active CA's"
    );
    assert!(
        written[0].1.contains(&serial),
        "enrollctl crl lists {serial}"
    );
    let owner = scene
        .admin
        .clone()
        .get_owner(v1::GetOwnerRequest::default())
        .await
        .unwrap()
        .into_inner()
        .owner
        .unwrap();
    let issuing_pem = &owner
        .issuing_cas
        .iter()
        .find(|ca| ca.id == issuer)
        .unwrap()
        .certificate_pem;
    assert!(crl_verifies(
        &std::fs::read(&crl_file).unwrap(),
        issuing_pem
    ));

    // A platform auditor's console lists the owners; the one it picks shows the same CRL, and
    // the platform CA signs the platform's own CRL (operator certificates).
    let platform = scene.console_of("pat", "*", Role::Auditor).await;
    browser.goto(platform.login_url()).await;
    let platform_base = origin(&platform);
    browser.goto(&format!("{platform_base}/ca")).await;
    assert!(!browser.exists("#owner").await, "no owner picked yet");
    let owners = browser.text("table.owners").await;
    assert!(
        owners.contains("acme") && owners.contains(&issuer),
        "{owners}"
    );
    let platform_ca = browser.text("#platform").await;
    assert_eq!(
        platform_ca
            .matches("yes: its key verifies the CRL's signature")
            .count(),
        1,
        "{platform_ca}"
    );
    assert!(
        !browser
            .exists(&format!("#platform tr[data-serial='{serial}']"))
            .await,
        "a device's serial is not on the platform's CRL"
    );
    browser.click("table.owners a[href='/ca?owner=acme']").await;
    let active_ref = &active;
    eventually("acme's CAs", || async move {
        browser.exists(active_ref).await.then_some(())
    })
    .await;
    assert_eq!(
        browser.text(&format!("{active} .signs-crl")).await,
        "yes: its key verifies the CRL's signature"
    );
    assert!(
        browser
            .exists(&format!("{active} table.crl tr[data-serial='{serial}']"))
            .await
    );
    let platform_crl = browser.fetch("/crl.pem?owner=%2A", json!({})).await;
    assert_eq!(
        platform_crl["disposition"], "attachment; filename=\"crl-platform.pem\"",
        "{platform_crl}"
    );
    assert!(crl_verifies(
        platform_crl["body"].as_str().unwrap().as_bytes(),
        &scene.harness.core.ca().certificate_pem()
    ));
    platform.stop().await;
    browser.goto(&format!("{base}/")).await;

    // The evidence export: one JSON download whose audit entries verify.
    let evidence = browser
        .fetch(&format!("/devices/{victim}/evidence"), json!({}))
        .await;
    assert_eq!(evidence["status"], 200, "{evidence}");
    assert_eq!(evidence["type"], "application/json");
    assert!(
        evidence["disposition"]
            .as_str()
            .unwrap()
            .starts_with("attachment;"),
        "{evidence}"
    );
    let document: Value = serde_json::from_str(evidence["body"].as_str().unwrap()).unwrap();
    assert_eq!(document["format"], "oxroot.device-evidence.v1");
    assert_eq!(document["registration"]["device_id"], victim.as_str());
    assert_eq!(document["batch"]["batch_id"], scene.batch_id.as_str());
    assert_eq!(document["policy"]["name"], "line-mqtt");
    assert!(
        document["certificates"][0]["certificate_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    // One firmware-history row per certificate; these devices proved no firmware.
    assert_eq!(
        document["firmware_history"].as_array().unwrap().len(),
        document["certificates"].as_array().unwrap().len()
    );
    assert!(document["firmware_history"][0]["measurement"].is_null());
    let actions: Vec<&str> = document["audit"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"device.register") && actions.contains(&"device.revoke"),
        "{actions:?}"
    );
    assert_eq!(
        document["verification"]["ok"], true,
        "{}",
        document["verification"]
    );
    assert_eq!(document["verification"]["local"]["ok"], true);
    assert_eq!(document["verification"]["service"]["ok"], true);
    assert_eq!(document["verification"]["service_last_hash_matches"], true);

    session.stop().await;
    console.stop().await;
}

/// Every CRL of a PEM text as (CRL number, revoked serials in lowercase hex).
fn crl_facts(pem_text: &[u8]) -> Vec<(String, Vec<String>)> {
    pem::parse_many(pem_text)
        .unwrap()
        .iter()
        .map(|block| {
            let (_, crl) = x509_parser::parse_x509_crl(block.contents()).unwrap();
            (
                crl.crl_number().unwrap().to_string(),
                crl.iter_revoked_certificates()
                    .map(|entry| entry.serial().to_str_radix(16))
                    .collect(),
            )
        })
        .collect()
}

/// True if the first CRL of `crl_pem` names `ca_pem`'s subject and its key verifies it.
fn crl_verifies(crl_pem: &[u8], ca_pem: &str) -> bool {
    let crl_der = pem::parse(crl_pem).unwrap().into_contents();
    let ca_der = pem::parse(ca_pem).unwrap().into_contents();
    let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    crl.issuer() == ca.subject() && crl.verify_signature(ca.public_key()).is_ok()
}

/// Text a device's registration carries that the service accepts (visible characters only):
/// markup, a script, event handlers, quotes that would end an attribute.
const HOSTILE_SITE: &str = "<script>alert(1)</script>\"'><svg onload=alert(3)>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_console_is_read_only_and_guards_its_forms() {
    let scene = scene(3, 62).await;
    let mut client = scene.harness.device_client().await;
    // Control and bidi characters never get in: the service refuses them where they enter, and
    // names the field and the character.
    for (site, lot, field, character) in [
        ("Shenzhen 2\u{1b}[31m", "2025-17", "context.site", "U+001B"),
        ("Shenzhen 2", "\u{202e}exe.fdp", "context.labels", "U+202E"),
    ] {
        let mut refused = scene.devices[0].registration(b"station-1").unwrap();
        refused.context = Some(v1::RegistrationContext {
            site: site.into(),
            labels: [("lot".to_owned(), lot.to_owned())].into(),
            ..Default::default()
        });
        let status = client
            .register(refused)
            .await
            .expect_err("control characters are refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(
            status.message().contains(field) && status.message().contains(character),
            "{status}"
        );
    }
    // One device registers with hostile markup in its context; all onboard.
    let mut hostile = scene.devices[0].registration(b"station-1").unwrap();
    hostile.context = Some(v1::RegistrationContext {
        site: HOSTILE_SITE.into(),
        station: "line 1 <b>bold</b>".into(),
        firmware_version: "1.0\"><iframe src=javascript:alert(4)>".into(),
        labels: [("lot".to_owned(), "<img src=x onerror=alert(2)>".to_owned())].into(),
    });
    client.register(hostile).await.unwrap();
    for device in &scene.devices[1..] {
        register(&mut client, device).await;
    }
    for device in scene.devices.iter() {
        assert!(
            device
                .onboard(&mut client)
                .await
                .unwrap()
                .credentials()
                .is_some()
        );
    }
    let console = scene.console("audrey", Role::Auditor).await;
    let base = origin(&console);
    let session = Browser::start().await;
    let browser = &session;

    // A made-up token is refused, the right one logs in once, and used again it is refused.
    browser
        .goto(&format!("{base}/login?token=0123456789abcdef"))
        .await;
    assert_eq!(browser.text("h1").await, "This login link is not valid");
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text("h1").await, "Not logged in");
    browser.goto(console.login_url()).await;
    assert_eq!(browser.text("h1").await, "Fleet overview");
    assert!(
        browser
            .text("#operator")
            .await
            .starts_with("audrey · auditor of acme")
    );
    browser.goto(console.login_url()).await;
    assert_eq!(browser.text("h1").await, "This login link is not valid");
    let without_cookie = browser.fetch("/", json!({ "credentials": "omit" })).await;
    assert_eq!(without_cookie["status"], 401, "{without_cookie}");

    // The hostile device's page: its text is text, and no script, element or handler of its own.
    let target = scene.devices[0].device_id().to_string();
    browser.goto(&format!("{base}/devices/{target}")).await;
    let registration = browser.text("#registration").await;
    for text in [
        HOSTILE_SITE,
        "line 1 <b>bold</b>",
        "1.0\"><iframe src=javascript:alert(4)>",
        "<img src=x onerror=alert(2)>",
    ] {
        assert!(registration.contains(text), "{text} in {registration}");
    }
    let scripts = browser
        .run(
            "return [...document.scripts].map(s => s.getAttribute('src'))
                 .concat([...document.querySelectorAll(
                     '#registration img, #registration b, #registration svg, #registration iframe, [onload], [onerror]'
                 )].map(e => e.tagName))",
            vec![],
        )
        .await;
    assert_eq!(
        scripts,
        json!(["/static/console.js"]),
        "only the console's own script"
    );
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no alert ran"
    );

    // No revoke control for an auditor, on the device page and on the confirmation page.
    assert!(!browser.exists("#revoke").await);
    browser
        .goto(&format!("{base}/devices/{target}/revoke"))
        .await;
    assert!(browser.exists("#cannot-revoke").await);
    assert!(!browser.exists("#revoke-form").await);

    // A forged revoke POST with the auditor's own session and CSRF token: the service refuses.
    let csrf = browser
        .run(
            "return document.querySelector('input[name=csrf]').value",
            vec![],
        )
        .await;
    let action = format!("/devices/{target}/revoke");
    browser
        .submit_form(
            &action,
            json!({ "csrf": csrf, "reason": "REVOCATION_REASON_KEY_COMPROMISE", "comment": "forged" }),
        )
        .await;
    assert_eq!(browser.text("h1").await, "Refused by the service");
    let refusal = browser
        .client
        .find(Locator::Css(".refusal"))
        .await
        .unwrap()
        .attr("data-grpc-code")
        .await
        .unwrap();
    assert_eq!(refusal.as_deref(), Some("PERMISSION_DENIED"));
    assert!(scene.device(&target).await.revocation.is_none());
    // The service wrote the denial to its audit log, which the auditor's console shows.
    browser
        .goto(&format!(
            "{base}/audit?action=access.denied&actor=operator%3Aacme%2Faudrey"
        ))
        .await;
    let denials = browser.text("table.audit").await;
    assert!(denials.contains("RevokeDevice"), "{denials}");

    // A POST without the CSRF token never reaches the service.
    browser.goto(&format!("{base}/devices/{target}")).await;
    browser
        .submit_form(
            &action,
            json!({ "reason": "REVOCATION_REASON_KEY_COMPROMISE", "comment": "no token" }),
        )
        .await;
    assert_eq!(
        browser.text("h1").await,
        "Refused: this request did not come from the console"
    );
    let wrong = browser
        .fetch(
            &action,
            json!({
                "method": "POST",
                "headers": { "content-type": "application/x-www-form-urlencoded" },
                "body": "csrf=00&reason=REVOCATION_REASON_KEY_COMPROMISE",
            }),
        )
        .await;
    assert_eq!(wrong["status"], 403, "{wrong}");
    let denials_after = scene
        .harness
        .registry()
        .audit(1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.decode().unwrap())
        .filter(|r| r.action == "access.denied")
        .count();
    assert_eq!(
        denials_after, 1,
        "only the forged POST with a token reached the service"
    );

    // The audit verify action.
    browser.goto(&format!("{base}/audit")).await;
    browser.click("#verify-form button[type=submit]").await;
    eventually("the verification result", || async move {
        (browser.exists("#verify-result").await).then_some(())
    })
    .await;
    assert_eq!(browser.text("#verify-result .verdict").await, "Chain: ok");
    let checked = browser.text("#verify-result dl").await;
    assert!(checked.contains("entries, seq 1 to"), "{checked}");

    session.stop().await;
    console.stop().await;
}

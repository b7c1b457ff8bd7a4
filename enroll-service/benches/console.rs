//! `enrollctl console` with a large registry: how long the fleet overview and a device search
//! take over HTTP, as a browser would load them.
//!
//! ```text
//! cargo bench -p enroll-service --bench console              # 100,000 devices
//! OXROOT_CONSOLE_BENCH_DEVICES=20000 cargo bench -p enroll-service --bench console
//! ```
//!
//! The registry is seeded through the store API (the service's own records: registrations,
//! batches, certificates of about 700 bytes of PEM each, revocations, and one audit entry per
//! device), then the real service
//! and the console run in this process, and a plain HTTP/1.1 client logs in with the one-time
//! link and times whole page loads (connect, request, the complete response). Printed, not
//! asserted: a figure to read, not a timed test.
//!
//! The console reads the device list once at start and then in the background (see
//! `enrollctl`'s `console::fleet_index`), so a page load never pages through the devices: the
//! first load after start waits for that first read, later loads do not. Both are printed.
#![allow(clippy::expect_used, reason = "a bench fails loudly")]

// The tests' in-process service (its module allows what test helpers need).
#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use enroll_service::audit::AuditDraft;
use enroll_service::model::{
    BatchCounts, BatchRecord, CountsDelta, CredentialRecord, CredentialStatus, CrlEntryRecord,
    DeviceRecord, Registration, RegistrationMetadata, RevocationRecord,
};
use enroll_service::pki::{RevocationReason, Role, Serial};
use enroll_service::policy::PolicySpec;
use enroll_service::store::{Change, Op, commit};
use enrollctl::args::ConnectionArgs;
use enrollctl::console::ConsoleOptions;
use oxroot_proto::v1;
use rot_core::keys::{DeviceId, PublicKey};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Devices unless `OXROOT_CONSOLE_BENCH_DEVICES` says otherwise.
const DEFAULT_DEVICES: u64 = 100_000;
/// Devices per registry commit while seeding.
const SEED_CHUNK: u64 = 2_000;
/// Batches the devices are spread over; every 20th device is in none.
const BATCHES: u64 = 20;
/// Timed loads of each page.
const LOADS: usize = 15;

fn main() {
    let devices = std::env::var("OXROOT_CONSOLE_BENCH_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_DEVICES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(devices));
}

async fn bench(devices: u64) {
    let harness = common::Harness::start().await;
    let seeding = Instant::now();
    seed(&harness, devices).await;
    println!(
        "seeded {devices} devices in {:.1} s (store API)",
        seeding.elapsed().as_secs_f64()
    );

    let work = tempfile::tempdir().expect("temporary directory");
    let profile = work.path().join("platform");
    harness
        .write_profile(&profile, "bench-admin", "*", Role::Admin)
        .await;
    let started = Instant::now();
    let console = enrollctl::console::start(
        &ConnectionArgs {
            service: Some(harness.server.url()),
            profile: Some(profile),
            ..ConnectionArgs::default()
        },
        ConsoleOptions {
            // Long enough that no background refresh runs during the warm measurements.
            fleet_refresh: Duration::from_secs(600),
            ..ConsoleOptions::default()
        },
    )
    .await
    .expect("console");
    let start_took = started.elapsed();
    let address = console.address();
    let cookie = login(address, console.login_url()).await;

    // The first load waits for the console's first read of the device list.
    let first = get(address, "/", &cookie).await;
    assert!(first.body.contains("Fleet overview"), "{}", first.body);
    println!(
        "console start {:.1} ms; first overview {:.1} ms after that (the page says: {})",
        ms(start_took),
        ms(first.elapsed),
        read_in(&first.body)
    );

    warm_loads(address, &cookie, devices / 2).await;
    console.stop().await;
    loads_while_refreshing(&harness, &work.path().join("platform")).await;
}

/// Times each page, warm: the device list has been read. Searches look for device `sample`.
async fn warm_loads(address: SocketAddr, cookie: &str, sample: u64) {
    let prefix = device_id(sample).to_string()[..5].to_owned();
    let serial_prefix = serial(sample).to_string()[..8].to_owned();
    let pages = [
        ("fleet overview", "/".to_owned()),
        ("search, DeviceId prefix", format!("/devices?q={prefix}")),
        (
            "search, serial prefix",
            format!("/devices?q={serial_prefix}"),
        ),
        ("search, 3-digit prefix", "/devices?q=abc".to_owned()),
        (
            "filter renewal due",
            "/devices?filter=renewal-due".to_owned(),
        ),
        (
            "search, whole DeviceId",
            format!("/devices?q={}", device_id(sample)),
        ),
        ("device page", format!("/devices/{}", device_id(sample))),
        ("batches", "/batches".to_owned()),
    ];
    println!(
        "{:<32}{:>10}{:>10}{:>10}   result",
        "warm page loads (ms)", "min", "median", "max"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(LOADS);
        let mut last = None;
        for _ in 0..LOADS {
            let page = get(address, &path, cookie).await;
            assert!(
                page.status == 200 || page.status == 303,
                "{path}: {}",
                page.status
            );
            times.push(page.elapsed);
            last = Some(page);
        }
        times.sort();
        let last = last.expect("loads");
        println!(
            "{name:<32}{:>10.1}{:>10.1}{:>10.1}   {}",
            ms(times[0]),
            ms(times[LOADS / 2]),
            ms(times[LOADS - 1]),
            summary(&last)
        );
    }
}

/// Times the overview while the console reads every device again beside it: a console that
/// re-reads the list whenever a page finds no read running.
async fn loads_while_refreshing(harness: &common::Harness, profile: &std::path::Path) {
    let busy = enrollctl::console::start(
        &ConnectionArgs {
            service: Some(harness.server.url()),
            profile: Some(profile.to_owned()),
            ..ConnectionArgs::default()
        },
        ConsoleOptions {
            fleet_refresh: Duration::ZERO,
            ..ConsoleOptions::default()
        },
    )
    .await
    .expect("console");
    let cookie = login(busy.address(), busy.login_url()).await;
    get(busy.address(), "/", &cookie).await;
    let mut times = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        times.push(get(busy.address(), "/", &cookie).await.elapsed);
        // Spread the loads over the reads.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    times.sort();
    println!(
        "{:<32}{:>10.1}{:>10.1}{:>10.1}   while every device is read again beside it",
        "fleet overview, refreshing",
        ms(times[0]),
        ms(times[LOADS / 2]),
        ms(times[LOADS - 1]),
    );
    busy.stop().await;
}

/// Milliseconds.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// "read in …" from the overview's freshness line.
fn read_in(body: &str) -> String {
    body.split_once("(read in ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map_or_else(
            || "?".to_owned(),
            |(figure, _)| format!("devices read in {figure}"),
        )
}

/// What a page answered, in a few words.
fn summary(page: &Page) -> String {
    if page.status == 303 {
        return "redirect to the device".to_owned();
    }
    page.body
        .split_once("<p id=\"result-count\">")
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map_or_else(
            || format!("{} KiB of HTML", page.body.len() / 1024),
            |(count, _)| count.to_owned(),
        )
}

/// One HTTP response and how long it took from connecting to its last byte.
struct Page {
    status: u16,
    headers: String,
    body: String,
    elapsed: Duration,
}

/// GET over a fresh connection (`Connection: close`, so the response ends with the stream).
async fn get(address: SocketAddr, path: &str, cookie: &str) -> Page {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("reads");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Page {
        status,
        headers: headers.to_owned(),
        body: body.to_owned(),
        elapsed,
    }
}

/// Spends the login link; returns the session cookie (`name=value`).
async fn login(address: SocketAddr, url: &str) -> String {
    let path = url
        .split_once(&address.to_string())
        .expect("a console URL")
        .1;
    let page = get(address, path, "").await;
    assert_eq!(page.status, 303, "{}", page.headers);
    page.headers
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

/// A DeviceId that looks like one (SHA-256 of the index).
fn device_id(index: u64) -> DeviceId {
    let hash = digest::digest(&digest::SHA256, &index.to_be_bytes());
    hex::encode(hash.as_ref()).parse().expect("a DeviceId")
}

fn serial(index: u64) -> Serial {
    let hash = digest::digest(&digest::SHA256, &(index ^ 0x005e_71a1).to_be_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    // Positive, nonzero, 127 bits: as the service's serials.
    Serial::new(u128::from_be_bytes(bytes) >> 1 | 1).expect("serial")
}

fn some_key() -> PublicKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    PublicKey::from_sec1(pair.public_key().as_ref()).expect("a P-256 point")
}

fn owner_of(index: u64) -> &'static str {
    if index % 10 == 9 { "globex" } else { "acme" }
}

fn batch_of(index: u64) -> Option<String> {
    (index % 20 != 19).then(|| format!("bt-bench-{:02}-{}", index % BATCHES, owner_of(index)))
}

/// The two owners' policy and batches.
async fn seed_setup(harness: &common::Harness, now: OffsetDateTime) {
    let mut setup = Change::new();
    for owner in ["acme", "globex"] {
        let policy = PolicySpec::from_proto(
            &v1::Policy {
                name: "line-mqtt".into(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            owner,
            "bench",
            now,
            time::Duration::days(3650),
        )
        .expect("policy");
        setup.op(Op::PutPolicy(Box::new(policy)));
        for batch in 0..BATCHES {
            setup.op(Op::PutBatch(BatchRecord {
                batch_id: format!("bt-bench-{batch:02}-{owner}"),
                owner: owner.into(),
                name: format!("line {batch}"),
                policy_name: "line-mqtt".into(),
                description: String::new(),
                created_at: now - time::Duration::days(30),
                created_by: "bench".into(),
                counts: BatchCounts::default(),
            }));
        }
    }
    commit(harness.registry(), setup).await.expect("setup");
}

/// Device `index` and, if it was onboarded, its certificate: every 25th device is listed but
/// not registered, every 20th in no batch, most others onboarded (every 50th then revoked),
/// with certificates expiring over the next 400 days and issued over the last hour.
fn device_records(
    index: u64,
    now: OffsetDateTime,
    key: PublicKey,
    pem: &str,
) -> (DeviceRecord, Option<CredentialRecord>) {
    let owner = owner_of(index);
    let id = device_id(index);
    let mut device = DeviceRecord::new(id);
    device.owner = Some(owner.into());
    device.batch_id = batch_of(index);
    if index % 25 != 3 {
        device.registration = Some(Registration {
            epk: key,
            registered_at: now - time::Duration::hours(2),
            proof_context_hex: String::new(),
            metadata: RegistrationMetadata {
                site: "Shenzhen 2".into(),
                station: format!("line {}", index % 8),
                firmware_version: "1.4.2".into(),
                ..RegistrationMetadata::default()
            },
        });
    }
    if device.registration.is_none() || device.batch_id.is_none() || index % 8 == 5 {
        return (device, None);
    }
    let serial = serial(index);
    let issued = now - time::Duration::seconds((index % 3_600) as i64);
    let revoked = index % 50 == 7;
    let credential = CredentialRecord {
        serial,
        device_id: id,
        key_slot: 1,
        dpk: key,
        owner: owner.into(),
        policy_name: "line-mqtt".into(),
        batch_id: device.batch_id.clone().unwrap_or_default(),
        assignment: 0,
        subject_cn: id.to_string(),
        issued_at: issued,
        not_before: issued,
        not_after: now + time::Duration::days((index % 400) as i64 + 1),
        renew_after: None,
        certificate_pem: pem.to_owned(),
        status: if revoked {
            CredentialStatus::Revoked
        } else {
            CredentialStatus::Active
        },
        revocation: revoked.then_some(CrlEntryRecord {
            revoked_at: now,
            reason: RevocationReason::CessationOfOperation,
        }),
    };
    device.slot_keys.insert(1, key);
    device.current_serial = Some(serial);
    device.serials.push(serial);
    device.credential_assignment = Some(0);
    device.onboarded_at = Some(issued);
    if revoked {
        device.revocation = Some(RevocationRecord {
            revoked_at: now,
            reason: RevocationReason::CessationOfOperation,
            comment: "scrapped".into(),
            revoked_by: "bench".into(),
        });
    }
    (device, Some(credential))
}

/// Seeds the policies, the batches and `count` devices, a chunk per commit.
async fn seed(harness: &common::Harness, count: u64) {
    let now = OffsetDateTime::now_utc();
    let key = some_key();
    // About the size of a P-256 leaf's PEM.
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        "MIIB".repeat(160)
    );
    seed_setup(harness, now).await;
    let mut start = 0;
    while start < count {
        let mut change = Change::new();
        for index in start..(start + SEED_CHUNK).min(count) {
            let (device, credential) = device_records(index, now, key, &pem);
            if let Some(credential) = credential {
                change.op(Op::PutCredential(Box::new(credential)));
            }
            if let Some(batch_id) = &device.batch_id {
                change
                    .op(Op::AdjustCounts {
                        batch_id: batch_id.clone(),
                        delta: CountsDelta::joined(device.state()),
                    })
                    .op(Op::AddToBatch {
                        batch_id: batch_id.clone(),
                        device_id: device.device_id,
                    });
            }
            // One audit entry per device, so that the device page's audit query has a log of
            // a realistic length to search.
            change.audit(AuditDraft::new(
                now - time::Duration::hours(2),
                format!("device:{}", device.device_id),
                owner_of(index),
                "device.register",
                format!("device:{}", device.device_id),
                "ok",
            ));
            change.op(Op::PutDevice(device));
        }
        commit(harness.registry(), change)
            .await
            .expect("seed chunk");
        start += SEED_CHUNK;
    }
}

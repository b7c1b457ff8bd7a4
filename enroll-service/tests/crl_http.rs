//! CRLs over plain HTTP, found by the distribution point in device certificates: a policy with
//! a `crl_base_url` gives its devices' certificates `<base>/<issuing CA id>.crl`, the service's
//! CRL endpoint answers it (DER, application/pkix-crl), and `openssl verify -crl_download`
//! fetches it by itself: a good device verifies, a revoked one fails as revoked.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use common::{Harness, bundle, fleet, register};
use oxroot_proto::v1;

/// A plain HTTP/1.0 GET on loopback: (status line, headers, body).
fn http_get(port: u16, path: &str) -> (String, String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        response[split + 4..].to_vec(),
    )
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_certificates_point_at_a_crl_that_openssl_downloads() {
    let harness = Harness::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(enroll_service::server::crl_http::serve(
        listener,
        harness.core.clone(),
        std::future::pending(),
    ));
    let base = format!("http://127.0.0.1:{port}/crl");

    let mut operator = harness
        .operator("alice", "acme", enroll_service::pki::Role::Admin)
        .await;
    operator
        .create_policy(v1::CreatePolicyRequest {
            policy: Some(v1::Policy {
                name: "broker".into(),
                crl_base_url: base.clone(),
                params: Some(v1::policy::Params::Mosquitto(v1::MosquittoPolicyParams {
                    host: "127.0.0.1".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let devices = fleet(2, 61);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    operator
        .create_batch(v1::CreateBatchRequest {
            name: "line".into(),
            policy_name: "broker".into(),
            device_ids: devices.iter().map(|d| d.device_id().to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut leaves = Vec::new();
    for device in &devices {
        let outcome = device.onboard(&mut client).await.unwrap();
        leaves.push(bundle(&outcome).clone());
    }
    let issuer = harness.issuer("acme").await;
    let url = format!("{base}/{issuer}.crl");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("leaf.pem"), &leaves[0].certificate_pem).unwrap();
    let (_, text) = openssl(
        d,
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-ext",
            "crlDistributionPoints",
        ],
    );
    assert!(text.contains(&format!("URI:{url}")), "{text}");

    // The endpoint: DER, the right media type, the issuer's current CRL; unknown CAs are 404.
    let (status, headers, body) = http_get(port, &format!("/crl/{issuer}.crl"));
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("content-type: application/pkix-crl"),
        "{headers}"
    );
    assert!(
        headers.contains("cache-control: public, max-age="),
        "{headers}"
    );
    std::fs::write(d.join("downloaded.crl"), &body).unwrap();
    let (ok, text) = openssl(
        d,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "downloaded.crl",
            "-noout",
            "-issuer",
        ],
    );
    assert!(ok && text.contains("acme"), "{text}");
    for missing in [
        "/crl/globex/1.crl",
        "/crl/acme/9.crl",
        "/crl/acme/1",
        "/metrics",
        "/crl/",
    ] {
        let (status, _, _) = http_get(port, missing);
        assert!(status.contains("404"), "{missing}: {status}");
    }

    // OpenSSL follows the distribution point by itself.
    let chain = format!(
        "{}{}",
        leaves[0].intermediate_pems.concat(),
        leaves[0].root_pem
    );
    std::fs::write(d.join("chain.pem"), &chain).unwrap();
    let verify = |leaf: &str| {
        std::fs::write(d.join("leaf.pem"), leaf).unwrap();
        openssl(
            d,
            &[
                "verify",
                "-x509_strict",
                "-crl_check",
                "-crl_download",
                "-CAfile",
                "chain.pem",
                "leaf.pem",
            ],
        )
    };
    let (ok, text) = verify(&leaves[0].certificate_pem);
    assert!(ok, "a good device with the downloaded CRL: {text}");

    operator
        .revoke_device(v1::RevokeDeviceRequest {
            device_id: devices[0].device_id().to_string(),
            reason: v1::RevocationReason::KeyCompromise.into(),
            comment: "lost".into(),
        })
        .await
        .unwrap();
    let (ok, text) = verify(&leaves[0].certificate_pem);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = verify(&leaves[1].certificate_pem);
    assert!(ok, "the other device: {text}");
}

/// Reads until the server closes the connection; how long that took (`None` if it was still
/// open after `limit`).
fn closed_within(
    stream: &mut std::net::TcpStream,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    let began = std::time::Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return Some(began.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(began.elapsed());
            }
            Err(_) => return None,
        }
        if began.elapsed() > limit {
            return None;
        }
    }
}

/// The CRL port is unauthenticated: a connection that sends nothing, or its headers too
/// slowly, is closed after `crl_request_timeout`; one request per connection; and connections
/// beyond the per-address cap are closed at once, while the port keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_excess_connections_are_closed() {
    use std::time::Duration;
    let harness = Harness::start_with(enroll_service::service::ServiceConfig {
        crl_request_timeout: Duration::from_secs(1),
        max_connections_per_peer: 3,
        ..Default::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(enroll_service::server::crl_http::serve(
        listener,
        harness.core.clone(),
        std::future::pending(),
    ));
    let outcome = tokio::task::spawn_blocking(move || {
        let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut idle = connect();
        let mut slow = connect();
        slow.write_all(b"GET /crl/platform.crl HTTP/1.1\r\nHost: 127.0.0")
            .unwrap();
        // A third connection fits the cap of 3 only while the other two are open: the
        // fourth is closed at once.
        let third = connect();
        std::thread::sleep(Duration::from_millis(200));
        let mut excess = connect();
        let excess_closed = closed_within(&mut excess, Duration::from_secs(1));
        drop(third);
        let idle_closed = closed_within(&mut idle, Duration::from_secs(5));
        let slow_closed = closed_within(&mut slow, Duration::from_secs(5));
        // Once they are gone the port answers again, one request per connection.
        let (status, headers, _) = http_get(port, "/crl/platform.crl");
        (excess_closed, idle_closed, slow_closed, status, headers)
    })
    .await
    .unwrap();
    let (excess_closed, idle_closed, slow_closed, status, headers) = outcome;
    assert!(excess_closed.is_some(), "the fourth connection stayed open");
    for (what, closed) in [("idle", idle_closed), ("slow", slow_closed)] {
        let after = closed.unwrap_or_else(|| panic!("the {what} connection stayed open"));
        assert!(
            after < Duration::from_secs(4),
            "{what}: closed after {after:?}"
        );
    }
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("application/pkix-crl"), "{headers}");
}

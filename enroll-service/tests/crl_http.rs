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
    let issuer = harness.issuer("acme");
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

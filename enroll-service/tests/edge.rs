//! The connection edge: connections that never become gRPC are closed, each address holds a
//! bounded number of connections, and a legitimate device onboards while hundreds of idle
//! connections from elsewhere are open.
//!
//! The idle connections come from 127.0.0.2 (all of 127/8 is loopback on Linux) and the device
//! from 127.0.0.1, so the per-address cap tells them apart as it would tell a scanner from a
//! programming station.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "scenario tests read top to bottom; a failed unwrap is a failed test"
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, bundle, fleet, register, seed_batch};
use enroll_service::service::ServiceConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Short enough for a test, long enough for a loaded CI machine to finish a real handshake.
const SETUP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the test waits for the server to close a connection it should close: far beyond
/// the timeout, so only a connection that is never closed fails the test.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

fn config(max_connections_per_peer: usize) -> ServiceConfig {
    ServiceConfig {
        tls_handshake_timeout: SETUP_TIMEOUT,
        http2_preface_timeout: SETUP_TIMEOUT,
        max_connections_per_peer,
        ..ServiceConfig::default()
    }
}

/// A TCP connection to `server` from `from`.
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server closes the connection (EOF or reset) within `wait`, reading and
/// discarding whatever it sends first.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A rustls client that trusts the service's root, for a handshake that then says nothing.
fn tls_connector(harness: &Harness) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let root = pem::parse(&harness.server.root_pem).unwrap();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            root.into_contents(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_become_grpc_are_closed() {
    let harness = Harness::start_with(config(64)).await;
    let server = harness.server.addr;

    // A TCP connection that never starts TLS.
    let mut silent = connect_from(Ipv4Addr::LOCALHOST, server).await;
    // A ClientHello cut short: a TLS record header promising more than ever comes.
    let mut partial = connect_from(Ipv4Addr::LOCALHOST, server).await;
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // A finished TLS handshake that never sends the HTTP/2 preface.
    let tcp = connect_from(Ipv4Addr::LOCALHOST, server).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut mute_tls = tls_connector(&harness)
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    // TLS, then HTTP/1.1 instead of HTTP/2.
    let tcp = connect_from(Ipv4Addr::LOCALHOST, server).await;
    let mut http1 = tls_connector(&harness).connect(name, tcp).await.unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();

    assert!(
        closed_within(&mut silent, CLOSE_WAIT).await,
        "a silent TCP connection stayed open"
    );
    assert!(
        closed_within(&mut partial, CLOSE_WAIT).await,
        "a partial ClientHello stayed open"
    );
    assert!(
        closed_within(&mut mute_tls, CLOSE_WAIT).await,
        "a TLS session without HTTP/2 stayed open"
    );
    assert!(
        closed_within(&mut http1, CLOSE_WAIT).await,
        "an HTTP/1.1 session stayed open"
    );

    // The server counts a drop just after the socket closes, so the peer can see the close a
    // moment before the counter moves: wait for the counters rather than read them once.
    let counted = |metrics: &str, reason: &str| {
        metrics.contains(&format!(
            "oxroot_connections_dropped_total{{reason=\"{reason}\"}}"
        ))
    };
    let reasons = ["handshake_timeout", "preface_timeout", "not_http2"];
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    let mut metrics = harness.core.metrics().render();
    while !reasons.iter().all(|reason| counted(&metrics, reason))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = harness.core.metrics().render();
    }
    for reason in reasons {
        assert!(
            counted(&metrics, reason),
            "{reason} not counted:\n{metrics}"
        );
    }

    // A client that speaks gRPC in time is unaffected.
    let devices = fleet(1, 31);
    let mut client = harness.device_client().await;
    register(&mut client, &devices[0]).await;
}

/// Devices never resume a TLS session (each agent command is a new process), so the service
/// issues no tickets: a client that kept everything from its first connection still gets a
/// full handshake on its second, and AES-128-GCM although it asks for AES-256 first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_a_full_handshake_on_the_servers_cipher_suite() {
    let harness = Harness::start_with(config(64)).await;
    let server = harness.server.addr;
    // One connector, hence one client session store, for both connections.
    let connector = tls_connector(&harness);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    for attempt in ["first", "second"] {
        let tcp = connect_from(Ipv4Addr::LOCALHOST, server).await;
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(
            session.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "{attempt} connection"
        );
        assert_eq!(
            session.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "{attempt} connection"
        );
        // The HTTP/2 preface, answered by the server's SETTINGS: anything the server sent
        // after its handshake (a ticket would come first) has been read by then.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut settings = [0u8; 9];
        tokio::time::timeout(CLOSE_WAIT, tls.read_exact(&mut settings))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(settings[3], 0x4, "an HTTP/2 SETTINGS frame first");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_onboards_while_hundreds_of_idle_connections_are_open() {
    const CAP: usize = 32;
    const IDLE: usize = 300;
    let harness = Harness::start_with(config(CAP)).await;
    let server = harness.server.addr;
    let devices = fleet(2, 32);
    let mut client = harness.device_client().await;
    for device in &devices {
        register(&mut client, device).await;
    }
    seed_batch(
        &harness,
        "acme",
        "b-edge",
        &devices.iter().collect::<Vec<_>>(),
    )
    .await;

    // Hundreds of connections from one other address that never say anything.
    let scanner = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(connect_from(scanner, server).await);
    }
    // Only CAP of them are held: the rest are closed at once, long before any timeout.
    let mut closed_at_once = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(200)).await {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= IDLE - CAP,
        "{closed_at_once} of {IDLE} idle connections closed by the per-address cap of {CAP}"
    );

    // Meanwhile a device, on a connection of its own, onboards.
    let mut own = harness.device_client().await;
    let outcome = devices[0].onboard(&mut own).await.unwrap();
    assert_eq!(
        bundle(&outcome).device_id,
        devices[0].device_id().to_string()
    );

    // And the held ones are closed by the handshake timeout in the end.
    let mut still_open = 0;
    for stream in &mut idle {
        if !closed_within(stream, CLOSE_WAIT).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "idle connections outlived the handshake timeout"
    );
    // With them gone the scanner's address may connect again (the slots were freed).
    let mut again = connect_from(scanner, server).await;
    assert!(!closed_within(&mut again, Duration::from_millis(200)).await);
    let outcome = devices[1].onboard(&mut client).await.unwrap();
    assert_eq!(
        bundle(&outcome).device_id,
        devices[1].device_id().to_string()
    );
}

//! The connection edge: every TCP connection is accepted here and reaches the gRPC server only
//! once it is a TLS session that has sent the HTTP/2 preface, each step bounded in time.
//!
//! ```text
//!  accept ─▶ per-address cap (IPv6: /64) ──full──▶ closed
//!         ─▶ TCP keepalive, TCP_NODELAY
//!         ─▶ TLS handshake ≤ tls_handshake_timeout ──slow/bad──▶ closed
//!         ─▶ HTTP/2 preface ≤ http2_preface_timeout ──slow/bad──▶ closed
//!         ─▶ tonic (HTTP/2 keepalive PINGs close a peer that stops answering)
//! ```
//!
//! Without it a TCP connection that never starts TLS, a partial ClientHello, or a TLS session
//! that never speaks HTTP/2 each held a descriptor for as long as the peer liked, and a few
//! hundred of them locked every client out. Handshakes run in their own tasks, so a slow peer
//! delays nobody else. The rustls configuration is the service's own (not tonic's): it prefers
//! TLS_AES_128_GCM_SHA256, whose key schedule (SHA-256) costs less than the SHA-384 one clients
//! otherwise pick.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::service::{ConnectionSlot, ServiceCore};

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Connections that finished their handshake but wait for tonic to take them.
const READY_QUEUE: usize = 1024;

/// The rustls configuration of the service: its certificate chain and key, client
/// certificates optional but verified against the root when presented (operators), HTTP/2
/// only, TLS_AES_128_GCM_SHA256 preferred.
///
/// # Errors
/// rustls refusing the key or the root.
pub(crate) fn tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    root: CertificateDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Server preference, AES-128 first: the same security as the client's usual first choice
    // (AES-256 with a SHA-384 key schedule) for every device that also offers it.
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root)?;
    // Devices have no client certificate; the Operator service requires one per call.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.ignore_client_order = true;
    // No session resumption: a device agent is a new process for every command and never
    // resumes, so tickets would cost every device connection two encrypted records and a
    // session stored in memory for nothing; a factory MES keeps its connection open instead.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// A connection ready for gRPC: TLS established, HTTP/2 preface read (and handed back to the
/// HTTP/2 server), a place under its address's cap held until it closes.
pub(crate) struct Connection {
    stream: TlsStream<TcpStream>,
    /// The preface bytes not yet handed to the HTTP/2 server.
    preface_left: usize,
    _slot: ConnectionSlot,
}

impl Connected for Connection {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.preface_left > 0 {
            let start = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(buf.remaining());
            buf.put_slice(&PREFACE[start..start + n]);
            self.preface_left -= n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Why a connection was closed before it reached gRPC (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its address has `max_connections_per_peer` open.
    PeerLimit,
    /// No finished TLS handshake in time.
    HandshakeTimeout,
    /// The TLS handshake failed.
    HandshakeFailed,
    /// No HTTP/2 preface in time.
    PrefaceTimeout,
    /// Something else than the HTTP/2 preface arrived.
    NotHttp2,
}

impl Dropped {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::PeerLimit => "peer_limit",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HandshakeFailed => "handshake_failed",
            Self::PrefaceTimeout => "preface_timeout",
            Self::NotHttp2 => "not_http2",
        }
    }
}

/// Accepts connections on `listener` until the returned receiver is dropped; yields each one
/// once it is ready for gRPC.
pub(crate) fn accept(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    core: Arc<ServiceCore>,
) -> mpsc::Receiver<io::Result<Connection>> {
    let (ready, incoming) = mpsc::channel(READY_QUEUE);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = ready.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning; the timeouts free
                        // descriptors.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = core.limits().open_connection(peer.ip()) else {
                core.metrics()
                    .connection_dropped(Dropped::PeerLimit.as_str());
                continue;
            };
            let (acceptor, ready, core) = (acceptor.clone(), ready.clone(), core.clone());
            tokio::spawn(async move {
                match establish(tcp, &acceptor, &core, slot).await {
                    Ok(connection) => {
                        let _ = ready.send(Ok(connection)).await;
                    }
                    Err(dropped) => {
                        tracing::debug!(%peer, reason = dropped.as_str(), "connection closed before gRPC");
                        core.metrics().connection_dropped(dropped.as_str());
                    }
                }
            });
        }
    });
    incoming
}

/// TLS and the HTTP/2 preface, each within its timeout.
async fn establish(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    core: &ServiceCore,
    slot: ConnectionSlot,
) -> Result<Connection, Dropped> {
    let config = core.config();
    configure_socket(&tcp, config.tcp_keepalive);
    let mut stream = tokio::time::timeout(config.tls_handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| Dropped::HandshakeTimeout)?
        .map_err(|_| Dropped::HandshakeFailed)?;
    let mut preface = [0u8; PREFACE.len()];
    tokio::time::timeout(
        config.http2_preface_timeout,
        stream.read_exact(&mut preface),
    )
    .await
    .map_err(|_| Dropped::PrefaceTimeout)?
    .map_err(|_| Dropped::NotHttp2)?;
    if &preface != PREFACE {
        return Err(Dropped::NotHttp2);
    }
    Ok(Connection {
        stream,
        preface_left: PREFACE.len(),
        _slot: slot,
    })
}

/// `TCP_NODELAY` (gRPC messages are small and latency-bound) and TCP keepalive.
fn configure_socket(tcp: &TcpStream, keepalive: Duration) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let _ = socket.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(keepalive));
}

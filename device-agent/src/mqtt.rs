//! MQTT 5 over mutual TLS: connect with the silicon-backed key, subscribe to a topic, publish a
//! message to it and read it back.
//!
//! MQTT 5 rather than 3.1.1 because a 3.1.1 broker drops a publish its ACL forbids without
//! telling the client; MQTT 5 answers it with a PUBACK reason code (`NotAuthorized`), so the
//! agent can say that the broker refused instead of timing out.

use std::sync::Arc;
use std::time::Duration;

use rot_core::keys::tls::TlsVersion;
use rumqttc::v5::mqttbytes::Error as MqttError;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};
use rustls::ClientConfig;

use crate::error::{AgentError, chain};
use crate::tls_failure;

/// Where to connect and what to send.
#[derive(Clone, Debug)]
pub struct RoundTrip {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client ID.
    pub client_id: String,
    /// The topic to subscribe and publish to.
    pub topic: String,
    /// The message.
    pub payload: Vec<u8>,
    /// Time allowed for the whole exchange.
    pub timeout: Duration,
    /// The TLS versions the client configuration offers (for what a failure says).
    pub tls_versions: Vec<TlsVersion>,
}

/// What the broker did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The MQTT protocol the connection used (the TLS version is the signer's to tell:
    /// [`crate::tls_signer::SiliconSigningKey::signed_version`]).
    pub connected: String,
    /// The topic the message went through.
    pub topic: String,
    /// Bytes read back.
    pub payload_len: usize,
}

/// Connects, subscribes, publishes and waits for the message to come back.
///
/// # Errors
/// [`AgentError::BrokerRefused`] for a refused connection, certificate, subscription or
/// publish; [`AgentError::Untrusted`] if the broker's certificate does not chain to the
/// endpoint's CA; [`AgentError::Unavailable`] if the broker cannot be reached or does not
/// answer within the timeout.
pub async fn round_trip(
    config: ClientConfig,
    exchange: &RoundTrip,
) -> Result<Delivered, AgentError> {
    let target = format!("mqtts://{}:{}", exchange.host, exchange.port);
    let mut options = MqttOptions::new(&exchange.client_id, &exchange.host, exchange.port);
    options
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )))
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_connection_timeout(exchange.timeout.as_secs().max(1));
    let (client, mut events) = AsyncClient::new(options, 10);
    let result = tokio::time::timeout(
        exchange.timeout,
        run(&client, &mut events, exchange, &target),
    )
    .await
    .unwrap_or_else(|_| {
        Err(AgentError::Unavailable {
            target: target.clone(),
            detail: format!("no answer within {} s", exchange.timeout.as_secs_f32()),
        })
    });
    // Best effort: a clean DISCONNECT, so the broker does not log an unexpected close.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(event) = events.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    result
}

async fn run(
    client: &AsyncClient,
    events: &mut EventLoop,
    exchange: &RoundTrip,
    target: &str,
) -> Result<Delivered, AgentError> {
    let connected = loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                break "MQTT 5".to_owned();
            }
            Ok(_) => {}
            Err(error) => return Err(connection_error(&error, target, &exchange.tls_versions)),
        }
    };
    let queue = |e: rumqttc::v5::ClientError| AgentError::Unavailable {
        target: target.to_owned(),
        detail: e.to_string(),
    };

    client
        .subscribe(&exchange.topic, QoS::AtLeastOnce)
        .await
        .map_err(queue)?;
    let subscribed = loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                break match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => Ok(()),
                    other => Err(format!(
                        "subscription to {} refused: {other:?}",
                        exchange.topic
                    )),
                };
            }
            Ok(_) => {}
            Err(error) => return Err(connection_error(&error, target, &exchange.tls_versions)),
        }
    };

    client
        .publish(
            &exchange.topic,
            QoS::AtLeastOnce,
            false,
            exchange.payload.clone(),
        )
        .await
        .map_err(queue)?;
    let (mut acknowledged, mut echoed) = (false, false);
    while !(acknowledged && (echoed || subscribed.is_err())) {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(ack))) => match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                    acknowledged = true;
                }
                reason => {
                    let also = subscribed
                        .as_ref()
                        .err()
                        .map(|s| format!("; {s}"))
                        .unwrap_or_default();
                    return Err(AgentError::BrokerRefused(format!(
                        "publish to {} refused: {reason:?}{also}",
                        exchange.topic
                    )));
                }
            },
            Ok(Event::Incoming(Packet::Publish(message)))
                if message.topic == exchange.topic.as_bytes()
                    && message.payload == exchange.payload =>
            {
                echoed = true;
            }
            Ok(_) => {}
            Err(error) => return Err(connection_error(&error, target, &exchange.tls_versions)),
        }
    }
    subscribed.map_err(AgentError::BrokerRefused)?;
    Ok(Delivered {
        connected,
        topic: exchange.topic.clone(),
        payload_len: exchange.payload.len(),
    })
}

/// Classifies a connection failure. A TLS failure is whatever rustls says it is
/// ([`tls_failure::classify`]): with TLS 1.3 the broker checks the client certificate after
/// the client has finished its side of the handshake, so a revoked certificate's alert arrives
/// while waiting for CONNACK, still as a rustls error.
fn connection_error(error: &ConnectionError, target: &str, offered: &[TlsVersion]) -> AgentError {
    if let ConnectionError::ConnectionRefused(code) = error {
        return AgentError::BrokerRefused(format!("CONNACK {code:?}"));
    }
    if let Some(tls) = rustls_error(error) {
        return tls_failure::classify(tls, target, offered);
    }
    let detail = chain(error);
    match error {
        ConnectionError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            AgentError::BrokerRefused(format!(
                "the connection was closed before the broker accepted it (a revoked or unknown \
                 certificate?): {detail}"
            ))
        }
        _ => AgentError::Unavailable {
            target: target.to_owned(),
            detail,
        },
    }
}

/// The rustls error behind a connection failure. A TLS 1.3 alert that arrives after the
/// handshake (a revoked certificate) is read while decoding MQTT, and rumqttc keeps it in a
/// `StateError::Deserialization`, which does not expose it as a `source()`.
fn rustls_error(error: &ConnectionError) -> Option<&rustls::Error> {
    if let ConnectionError::MqttState(StateError::Deserialization(MqttError::Io(io))) = error {
        return tls_failure::find_rustls_error(io);
    }
    tls_failure::find_rustls_error(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription;

    fn carried(alert: AlertDescription) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(alert),
        )
    }

    /// Where rumqttc puts a rustls error: the handshake's (inside its TLS error) and a TLS 1.3
    /// alert read with the CONNACK (inside a deserialization error). Both are found and said
    /// for what they are.
    #[test]
    fn tls_failures_are_found_wherever_rumqttc_keeps_them() {
        let target = "mqtts://127.0.0.1:8883";
        let handshake = ConnectionError::Tls(rumqttc::TlsError::Io(carried(
            AlertDescription::ProtocolVersion,
        )));
        let said = connection_error(&handshake, target, &[TlsVersion::Tls13]).to_string();
        assert!(said.contains("does not speak"), "{said}");
        assert!(said.contains("TLS 1.3 only"), "{said}");
        assert!(!said.contains("certificate"), "{said}");

        let direct = ConnectionError::Tls(rumqttc::TlsError::TLS(rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure,
        )));
        let said = connection_error(&direct, target, &[TlsVersion::Tls12]).to_string();
        assert!(said.contains("no TLS parameters in common"), "{said}");

        let after_handshake = ConnectionError::MqttState(StateError::Deserialization(
            MqttError::Io(carried(AlertDescription::CertificateRevoked)),
        ));
        let said = connection_error(&after_handshake, target, &[TlsVersion::Tls13]).to_string();
        assert!(said.contains("the broker refused"), "{said}");
        assert!(
            said.contains("revoked (TLS alert CertificateRevoked)"),
            "{said}"
        );
    }
}

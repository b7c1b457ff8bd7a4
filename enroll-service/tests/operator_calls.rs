//! Each operator has a bounded number of calls and streams open at once (the contract's
//! RESOURCE_EXHAUSTED), over real mutual TLS: one operator's open WatchBatch streams cannot
//! take the service from another, and a closed stream gives its place back.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

use std::time::Duration;

use common::{Harness, seed_batch};
use enroll_service::pki::Role;
use enroll_service::service::ServiceConfig;
use oxroot_proto::v1;

#[tokio::test]
async fn an_operator_with_too_many_open_streams_is_told_to_back_off() {
    let harness = Harness::start_with(ServiceConfig {
        max_calls_per_operator: 2,
        ..ServiceConfig::default()
    })
    .await;
    seed_batch(&harness, "acme", "b1", &[]).await;
    let mut ada = harness.operator("ada", "acme", Role::Admin).await;
    let watch = v1::WatchBatchRequest {
        batch_id: "b1".into(),
        ..Default::default()
    };

    // Two watches held open take both of ada's places...
    let mut first = ada.watch_batch(watch.clone()).await.unwrap().into_inner();
    let second = ada.watch_batch(watch.clone()).await.unwrap().into_inner();
    assert!(first.message().await.unwrap().is_some(), "snapshot");
    let refused = ada
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .expect_err("a third call is refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("retry"), "{refused}");

    // ...not another operator's, even of the same owner.
    let mut otto = harness.operator("otto", "acme", Role::Operator).await;
    assert_eq!(
        otto.who_am_i(v1::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner()
            .name,
        "otto"
    );

    // Closing a stream gives its place back (once the server sees the reset).
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ada.who_am_i(v1::WhoAmIRequest {}).await {
            Ok(me) => {
                assert_eq!(me.into_inner().name, "ada");
                break;
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed stream's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("unexpected {status}"),
        }
    }
    drop(first);
}

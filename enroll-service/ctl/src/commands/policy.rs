//! `policy create | get | list`.

use std::path::Path;

use oxroot_proto::v1::{
    AwsIotPolicyParams, AzureDpsPolicyParams, CreatePolicyRequest, GetPolicyRequest,
    ListPoliciesRequest, ListPoliciesResponse, MosquittoPolicyParams, Policy, PolicyKind,
    TlsVersion, policy::Params,
};

use super::{Ctx, PAGE_SIZE, all_pages, owner};
use crate::args::{PolicyCommand, PolicyCreateArgs};
use crate::connect::check_certificates;
use crate::duration::to_proto;
use crate::error::CtlError;
use crate::output::json;
use crate::view;

pub(super) async fn run(command: PolicyCommand, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    match command {
        PolicyCommand::Create(args) => create(*args, ctx).await,
        PolicyCommand::Get { name, owner: o } => {
            let response = ctx
                .client()
                .await?
                .get_policy(GetPolicyRequest {
                    owner: owner(o),
                    name,
                })
                .await
                .map_err(CtlError::rpc("GetPolicy"))?
                .into_inner();
            let policy = response
                .policy
                .as_ref()
                .ok_or_else(|| CtlError::BadAnswer("GetPolicy without a policy".into()))?;
            ctx.emit(
                || json::message(&response),
                |out| out.fields(&view::policy::fields(policy)),
            )
        }
        PolicyCommand::List { owner: o, kind } => {
            let client = ctx.client().await?;
            let request = ListPoliciesRequest {
                owner: owner(o),
                kind: kind.map_or(PolicyKind::Unspecified, PolicyKind::from) as i32,
                page_size: PAGE_SIZE,
                page_token: String::new(),
            };
            let policies = all_pages("ListPolicies", None, |page_token| {
                let mut client = client.clone();
                let request = ListPoliciesRequest {
                    page_token,
                    ..request.clone()
                };
                async move {
                    let page = client.list_policies(request).await?.into_inner();
                    Ok((page.policies, page.next_page_token))
                }
            })
            .await?;
            let all = ListPoliciesResponse {
                policies,
                next_page_token: String::new(),
            };
            ctx.emit(
                || json::message(&all),
                |out| out.table(&view::policy::table(&all.policies)),
            )
        }
    }
}

async fn create(args: PolicyCreateArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let policy = policy_from(args)?;
    let response = ctx
        .client()
        .await?
        .create_policy(CreatePolicyRequest {
            policy: Some(policy),
        })
        .await
        .map_err(CtlError::rpc("CreatePolicy"))?
        .into_inner();
    let created = response
        .policy
        .as_ref()
        .ok_or_else(|| CtlError::BadAnswer("CreatePolicy without a policy".into()))?;
    ctx.emit(
        || json::message(&response),
        |out| view::policy::created(out, created),
    )
}

/// The policy a `policy create` command line describes; PEM files are read and checked here
/// so that a wrong path is reported with its name rather than as the service's
/// "unparsable PEM".
fn policy_from(args: PolicyCreateArgs) -> Result<Policy, CtlError> {
    let port = |port: Option<u16>| port.map_or(0, u32::from);
    let PolicyCreateArgs {
        mosquitto,
        aws,
        azure,
        topic_root,
        ..
    } = args;
    let params = if let Some(host) = mosquitto.mosquitto_host {
        Params::Mosquitto(MosquittoPolicyParams {
            host,
            port: port(mosquitto.mosquitto_port),
            topic_root: topic_root.unwrap_or_default(),
            broker_ca_pem: read_pem(mosquitto.broker_ca.as_deref())?,
            tls_versions: mosquitto
                .mosquitto_tls
                .iter()
                .map(|version| match version.as_str() {
                    "1.2" => TlsVersion::TlsVersion12 as i32,
                    _ => TlsVersion::TlsVersion13 as i32,
                })
                .collect(),
        })
    } else if let Some(endpoint_host) = aws.aws_endpoint {
        Params::AwsIot(AwsIotPolicyParams {
            endpoint_host,
            port: port(aws.aws_port),
            server_root_ca_pem: read_pem(aws.aws_root_ca.as_deref())?,
            thing_name_template: aws.thing_name_template.unwrap_or_default(),
            topic_root: topic_root.unwrap_or_default(),
            aws_region: aws.aws_region.unwrap_or_default(),
            aws_account_id: aws.aws_account.unwrap_or_default(),
            alpn_protocols: aws.alpn,
        })
    } else if let Some(id_scope) = azure.azure_id_scope {
        Params::AzureDps(AzureDpsPolicyParams {
            id_scope,
            global_endpoint: azure.azure_endpoint.unwrap_or_default(),
            port: port(azure.azure_port),
            server_root_ca_pem: read_pem(azure.azure_root_ca.as_deref())?,
            enrollment_group_id: azure.enrollment_group_id.unwrap_or_default(),
            iot_hub_host_names: azure.iot_hub,
        })
    } else {
        // clap's required group makes this unreachable from the command line.
        return Err(CtlError::Usage(
            "choose a kind: --mosquitto-host, --aws-endpoint or --azure-id-scope".into(),
        ));
    };
    Ok(Policy {
        name: args.name,
        owner: owner(args.owner),
        description: args.description.unwrap_or_default(),
        certificate_lifetime: args.lifetime.map(to_proto),
        renew_window: args.renew_window.map(to_proto),
        superseded_grace: args.superseded_grace.map(to_proto),
        subject_cn_template: args.cn_template.unwrap_or_default(),
        crl_base_url: args.crl_base_url.unwrap_or_default(),
        firmware_measurements: args.firmware_measurements,
        params: Some(params),
        ..Policy::default()
    })
}

fn read_pem(path: Option<&Path>) -> Result<String, CtlError> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    let bytes = std::fs::read(path).map_err(CtlError::io(path))?;
    check_certificates(path, &bytes)?;
    String::from_utf8(bytes).map_err(|_| CtlError::Credential {
        path: path.to_owned(),
        problem: "not UTF-8 text".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;
    use std::time::Duration;

    fn create_args(extra: &[&str]) -> PolicyCreateArgs {
        let args = ["enrollctl", "policy", "create", "--name", "p"]
            .iter()
            .chain(extra)
            .copied();
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Policy(PolicyCommand::Create(args)) => *args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mosquitto_policy_from_the_command_line() {
        let policy = policy_from(create_args(&[
            "--mosquitto-host",
            "broker.local",
            "--mosquitto-port",
            "8884",
            "--topic-root",
            "t",
            "--lifetime",
            "90d",
            "--renew-window",
            "0s",
            "--superseded-grace",
            "3d",
            "--owner",
            "acme",
            "--firmware-measurement",
            &"ab".repeat(32),
            "--firmware-measurement",
            &"cd".repeat(32),
        ]))
        .expect("builds");
        assert_eq!(policy.owner, "acme");
        assert_eq!(
            policy.firmware_measurements,
            vec!["ab".repeat(32), "cd".repeat(32)]
        );
        assert_eq!(
            policy.certificate_lifetime,
            Some(to_proto(Duration::from_secs(90 * 86_400)))
        );
        // Zero is meaningful (auto-renew off), so it must be sent, not dropped.
        assert_eq!(policy.renew_window, Some(to_proto(Duration::ZERO)));
        assert_eq!(
            policy.superseded_grace,
            Some(to_proto(Duration::from_secs(3 * 86_400)))
        );
        assert_eq!(
            policy.params,
            Some(Params::Mosquitto(MosquittoPolicyParams {
                host: "broker.local".into(),
                port: 8884,
                topic_root: "t".into(),
                broker_ca_pem: String::new(),
                tls_versions: vec![],
            }))
        );
    }

    #[test]
    fn mosquitto_tls_versions_from_the_command_line() {
        let params = |extra: &[&str]| {
            let mut args = vec!["--mosquitto-host", "broker.local"];
            args.extend_from_slice(extra);
            match policy_from(create_args(&args)).expect("valid").params {
                Some(Params::Mosquitto(params)) => params.tls_versions,
                other => panic!("{other:?}"),
            }
        };
        // None given: the service's default (both).
        assert!(params(&[]).is_empty());
        assert_eq!(
            params(&["--mosquitto-tls", "1.3"]),
            [TlsVersion::TlsVersion13 as i32]
        );
        assert_eq!(
            params(&["--mosquitto-tls", "1.2", "--mosquitto-tls", "1.3"]),
            [
                TlsVersion::TlsVersion12 as i32,
                TlsVersion::TlsVersion13 as i32
            ]
        );
        let args = [
            "enrollctl",
            "policy",
            "create",
            "--name",
            "p",
            "--mosquitto-host",
            "h",
            "--mosquitto-tls",
            "1.1",
        ];
        assert!(Cli::try_parse_from(args).is_err());
    }

    #[test]
    fn unset_options_stay_unset_for_the_service_defaults() {
        let policy =
            policy_from(create_args(&["--azure-id-scope", "0ne00000000"])).expect("builds");
        assert_eq!(policy.certificate_lifetime, None);
        assert_eq!(policy.renew_window, None);
        assert_eq!(policy.superseded_grace, None);
        assert_eq!(policy.owner, "");
        let Some(Params::AzureDps(azure)) = policy.params else {
            panic!()
        };
        assert_eq!(azure.id_scope, "0ne00000000");
        assert_eq!(azure.port, 0);
    }

    #[test]
    fn a_missing_root_ca_file_names_the_file() {
        let error = policy_from(create_args(&[
            "--aws-endpoint",
            "x-ats.iot.eu-west-1.amazonaws.com",
            "--aws-root-ca",
            "/nonexistent/AmazonRootCA1.pem",
        ]))
        .expect_err("no file");
        assert!(
            error.to_string().contains("/nonexistent/AmazonRootCA1.pem"),
            "{error}"
        );
    }
}

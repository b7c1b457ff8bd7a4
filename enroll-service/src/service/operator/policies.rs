//! CreatePolicy, GetPolicy, ListPolicies.
//!
//! Policies are immutable; the per-cloud rules (defaults, templates, PEM checks) live in
//! [`crate::policy`]. This module adds what the service owns: who may create one, under which
//! owner, for at most how long (the issuing CA's remaining validity), and the audit entry.

use time::OffsetDateTime;

use oxroot_proto::v1;

use super::paging::Pager;
use super::{ADMINS, ANY_ROLE, OperatorService, operator_audit};
use crate::error::ServiceError;
use crate::pki::CertificateAuthority;
use crate::policy::PolicySpec;
use crate::service::{Caller, random_hex};
use crate::store::{Change, Guard, Op, StoreError, commit};

/// Policy names end up in registry keys (`p/<owner>/<name>`) and audit subjects, so the
/// contract's alphabet is enforced here whatever the policy module accepts.
pub(super) fn check_policy_name(field: &str, name: &str) -> Result<(), ServiceError> {
    let ok = (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            "a policy name is 1 to 63 characters of [a-z0-9-_.], starting with a letter or digit",
        ))
    }
}

impl OperatorService {
    /// What is left of an issuing CA's validity: no certificate may outlive its issuer.
    pub(super) fn ca_remaining(
        ca: &CertificateAuthority,
        now: OffsetDateTime,
    ) -> Result<time::Duration, ServiceError> {
        let remaining = ca.not_after() - now;
        if remaining <= time::Duration::ZERO {
            return Err(ServiceError::FailedPrecondition(
                "the issuing CA has expired".into(),
            ));
        }
        Ok(remaining)
    }

    /// CreatePolicy for an authenticated caller.
    pub(crate) async fn create_policy_as(
        &self,
        caller: &Caller,
        request: v1::CreatePolicyRequest,
    ) -> Result<v1::CreatePolicyResponse, ServiceError> {
        caller.require("CreatePolicy", ADMINS)?;
        let policy = request
            .policy
            .ok_or_else(|| ServiceError::invalid("policy", "is required"))?;
        let owner = caller.owner_for("policy.owner", &policy.owner)?;
        check_policy_name("policy.name", &policy.name)?;
        let now = OffsetDateTime::now_utc();
        // The owner's CA must exist before anything is issued under the policy (a platform
        // admin's first policy for a new owner creates it managed, as its first operator
        // does); its active issuing CA bounds the certificates' validity.
        if caller.is_platform() {
            self.core
                .authorities()
                .ensure_owner(&owner, &caller.actor())
                .await?;
        }
        let issuing = self.core.authorities().issuing(&owner).await?;
        let spec = PolicySpec::from_proto(
            &policy,
            &owner,
            &caller.qualified_name(),
            now,
            Self::ca_remaining(&issuing.ca, now)?,
        )?;
        let subject = format!("policy:{owner}/{}", spec.name);
        let mut change = Change::new();
        change
            .guard(Guard::PolicyAbsent {
                owner: owner.clone(),
                name: spec.name.clone(),
            })
            .op(Op::PutPolicy(Box::new(spec.clone())))
            .audit(
                operator_audit(
                    caller,
                    now,
                    &owner,
                    "policy.create",
                    subject,
                    &random_hex(12)?,
                )
                .detail("kind", spec.kind().as_str_name()),
            );
        match commit(self.core.registry.as_ref(), change).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::AlreadyExists(format!(
                    "policy {:?} of owner {owner:?}",
                    spec.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(operator = %caller.name, %owner, policy = %spec.name, "policy created");
        Ok(v1::CreatePolicyResponse {
            policy: Some(spec.to_proto()),
        })
    }

    /// GetPolicy for an authenticated caller.
    pub(crate) async fn get_policy_as(
        &self,
        caller: &Caller,
        request: &v1::GetPolicyRequest,
    ) -> Result<v1::GetPolicyResponse, ServiceError> {
        caller.require("GetPolicy", ANY_ROLE)?;
        let owner = caller.owner_for("owner", &request.owner)?;
        check_policy_name("name", &request.name)?;
        let policy = self
            .core
            .registry
            .policy(&owner, &request.name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("policy {:?}", request.name)))?;
        Ok(v1::GetPolicyResponse {
            policy: Some(policy.to_proto()),
        })
    }

    /// ListPolicies for an authenticated caller.
    pub(crate) async fn list_policies_as(
        &self,
        caller: &Caller,
        request: &v1::ListPoliciesRequest,
    ) -> Result<v1::ListPoliciesResponse, ServiceError> {
        caller.require("ListPolicies", ANY_ROLE)?;
        let owner = caller.owner_filter("owner", &request.owner)?;
        let kind = v1::PolicyKind::try_from(request.kind)
            .map_err(|_| ServiceError::invalid("kind", "is not a PolicyKind"))?;
        let pager = Pager::new(
            "ListPolicies",
            &[owner.as_deref().unwrap_or_default(), kind.as_str_name()],
            request.page_size,
        );
        let start: Option<(String, String)> = pager.resume(&request.page_token)?;
        let registry = self.core.registry.as_ref();
        let (policies, next) = pager
            .collect(
                start,
                |after: Option<(String, String)>, n| {
                    let owner = owner.as_deref();
                    async move {
                        let after = after.as_ref().map(|(o, p)| (o.as_str(), p.as_str()));
                        Ok(registry.policies(owner, after, n).await?)
                    }
                },
                |p: &PolicySpec| (p.owner.clone(), p.name.clone()),
                |p| kind == v1::PolicyKind::Unspecified || p.kind() == kind,
            )
            .await?;
        Ok(v1::ListPoliciesResponse {
            policies: policies.iter().map(PolicySpec::to_proto).collect(),
            next_page_token: pager.token(next.as_ref()),
        })
    }
}

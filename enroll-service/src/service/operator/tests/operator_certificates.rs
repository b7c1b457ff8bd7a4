//! Operator certificates: issued ones are recorded, listed per owner, and revoked ones stop
//! authenticating and appear on the CRL.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use x509_parser::x509::ReasonCode;

use oxroot_proto::v1;
use oxroot_proto::v1::issue_operator_certificate_request::Key;

use super::{Fixture, crl_serials, fixture};
use crate::error::ServiceError;
use crate::pki::{OperatorKey, Role, Validity};
use crate::service::Caller;

impl Fixture {
    /// A caller whose certificate is on record, as `init`, the API and the harnesses make them.
    async fn recorded_caller(&self, name: &str, owner: &str, role: Role) -> Caller {
        let now = time::OffsetDateTime::now_utc();
        let issued = crate::service::issue_operator_certificate(
            &self.core,
            &OperatorKey::Generate,
            (name, owner, role),
            Validity::new(
                now - time::Duration::minutes(1),
                now + time::Duration::days(1),
            )
            .expect("validity"),
            "system:test",
        )
        .await
        .expect("operator certificate");
        Caller::from_certificate_der(&issued.certificate.der).expect("caller")
    }

    /// An operator certificate issued through the API for a fresh key; returns the caller it
    /// authenticates as.
    async fn issued_through_the_api(&self, admin: &Caller, name: &str, owner: &str) -> Caller {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let response = self
            .svc
            .issue_operator_certificate_as(
                admin,
                v1::IssueOperatorCertificateRequest {
                    key: Some(Key::PublicKey(key.public_key().as_ref().to_vec())),
                    name: name.into(),
                    role: v1::Role::Operator as i32,
                    owner: owner.into(),
                    validity: None,
                },
            )
            .await
            .expect("issue");
        let pem = pem::parse(&response.certificate_pem).expect("PEM");
        let caller = Caller::from_certificate_der(pem.contents()).expect("caller");
        assert_eq!(caller.serial.to_string(), response.serial);
        caller
    }

    async fn revoke(
        &self,
        caller: &Caller,
        serial: &dyn std::fmt::Display,
    ) -> Result<v1::RevokeOperatorCertificateResponse, ServiceError> {
        let request = v1::RevokeOperatorCertificateRequest {
            serial: serial.to_string(),
            reason: v1::RevocationReason::KeyCompromise as i32,
            comment: "laptop stolen".into(),
        };
        let result = self
            .svc
            .revoke_operator_certificate_as(caller, &request)
            .await;
        self.checked(caller, "RevokeOperatorCertificate", result)
            .await
    }

    async fn listed(&self, caller: &Caller, owner: &str) -> Vec<String> {
        self.svc
            .list_operator_certificates_as(
                caller,
                &v1::ListOperatorCertificatesRequest {
                    owner: owner.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("list")
            .certificates
            .into_iter()
            .map(|c| c.name)
            .collect()
    }
}

#[tokio::test]
async fn a_revoked_operator_certificate_stops_authenticating_and_is_on_the_crl() {
    let f = fixture().await;
    let admin = f.recorded_caller("ada", "acme", Role::Admin).await;
    let otto = f.issued_through_the_api(&admin, "otto", "").await;
    assert_eq!(
        f.svc
            .check_still_valid(otto.clone())
            .await
            .expect("valid")
            .name,
        "otto"
    );

    let revoked = f
        .revoke(&admin, &otto.serial.to_string().to_uppercase())
        .await
        .expect("revoke")
        .certificate
        .expect("certificate");
    assert_eq!(revoked.serial, otto.serial.to_string());
    let revocation = revoked.revocation.clone().expect("revocation");
    assert_eq!(revocation.revoked_by, "acme/ada");
    assert_eq!(revocation.comment, "laptop stolen");

    match f.svc.check_still_valid(otto.clone()).await {
        Err(ServiceError::Unauthenticated(message)) => assert!(message.contains("revoked")),
        other => panic!("a revoked certificate authenticated: {other:?}"),
    }
    // The admin who revoked it still authenticates.
    f.svc.check_still_valid(admin.clone()).await.expect("admin");

    let crl = f
        .svc
        .get_crl_as(
            &admin,
            // Operator certificates are the platform CA's.
            &v1::GetCrlRequest {
                format: v1::CrlFormat::Der as i32,
                owner: "*".into(),
                ..v1::GetCrlRequest::default()
            },
        )
        .await
        .expect("CRL");
    assert_eq!(
        crl_serials(&crl.crl),
        vec![(otto.serial.to_string(), Some(ReasonCode::KeyCompromise))]
    );

    // Idempotent: the second call changes nothing, not even the time.
    let again = f
        .revoke(&admin, &otto.serial)
        .await
        .expect("again")
        .certificate
        .expect("certificate");
    assert_eq!(again.revocation, revoked.revocation);
    let actions = f.audit_actions().await;
    let count = |action: &str| actions.iter().filter(|(a, _, _)| a == action).count();
    assert_eq!(count("operator.revoke"), 1);
    // ada (harness) and otto (API) were both recorded with an audit entry.
    assert_eq!(count("operator.issue"), 2);
}

#[tokio::test]
async fn only_recorded_certificates_authenticate() {
    let f = fixture().await;
    // Issued by the CA but never recorded (as a certificate made with the CA key outside the
    // service would be): it chains to the root, and is still refused.
    let unrecorded = f.caller("mallory", "acme", Role::Admin);
    match f.svc.check_still_valid(unrecorded).await {
        Err(ServiceError::Unauthenticated(message)) => {
            assert!(
                message.contains("not on this service's record"),
                "{message}"
            );
        }
        other => panic!("an unrecorded certificate authenticated: {other:?}"),
    }
}

#[tokio::test]
async fn revocation_is_scoped_to_the_admins_owner() {
    let f = fixture().await;
    let acme_admin = f.recorded_caller("ada", "acme", Role::Admin).await;
    let globex_admin = f.recorded_caller("gus", "globex", Role::Admin).await;
    let platform = f.recorded_caller("root", "*", Role::Admin).await;
    let acme_operator = f.recorded_caller("otto", "acme", Role::Operator).await;
    let globex_operator = f.recorded_caller("gil", "globex", Role::Operator).await;

    // Another owner's operator, or a platform operator, looks absent.
    for serial in [globex_operator.serial, platform.serial] {
        assert!(matches!(
            f.revoke(&acme_admin, &serial).await,
            Err(ServiceError::NotFound(_))
        ));
    }
    // A serial nobody issued.
    assert!(matches!(
        f.revoke(&acme_admin, &"1234abcd").await,
        Err(ServiceError::NotFound(_))
    ));
    // Not an admin: refused and audited.
    assert!(matches!(
        f.revoke(&acme_operator, &globex_operator.serial).await,
        Err(ServiceError::PermissionDenied(_))
    ));
    assert!(
        f.audit_actions()
            .await
            .iter()
            .any(|(action, outcome, _)| action == "access.denied" && outcome == "denied")
    );
    // One's own certificate: another admin must do it.
    assert!(matches!(
        f.revoke(&acme_admin, &acme_admin.serial).await,
        Err(ServiceError::FailedPrecondition(_))
    ));
    for malformed in ["", "not-hex", "0", &"f".repeat(41)] {
        assert!(
            matches!(
                f.revoke(&acme_admin, &malformed).await,
                Err(ServiceError::InvalidArgument { .. })
            ),
            "{malformed:?}"
        );
    }
    f.svc
        .check_still_valid(globex_operator.clone())
        .await
        .expect("untouched");

    // The right admins can.
    f.revoke(&acme_admin, &acme_operator.serial)
        .await
        .expect("own owner");
    f.revoke(&platform, &globex_operator.serial)
        .await
        .expect("platform");
    f.revoke(&globex_admin, &acme_admin.serial)
        .await
        .expect_err("globex cannot reach acme");
}

#[tokio::test]
async fn listing_shows_each_owner_its_own_operators() {
    let f = fixture().await;
    let platform = f.recorded_caller("root", "*", Role::Admin).await;
    let acme_admin = f.recorded_caller("ada", "acme", Role::Admin).await;
    f.recorded_caller("otto", "acme", Role::Operator).await;
    f.recorded_caller("gil", "globex", Role::Operator).await;
    let acme_auditor = f.recorded_caller("audrey", "acme", Role::Auditor).await;

    let mut acme = f.listed(&acme_admin, "").await;
    acme.sort();
    assert_eq!(acme, ["ada", "audrey", "otto"]);
    assert_eq!(f.listed(&platform, "*").await, ["root"]);
    assert_eq!(f.listed(&platform, "").await.len(), 5);
    assert_eq!(f.listed(&platform, "globex").await, ["gil"]);
    assert!(matches!(
        f.svc
            .list_operator_certificates_as(
                &acme_admin,
                &v1::ListOperatorCertificatesRequest {
                    owner: "globex".into(),
                    ..Default::default()
                },
            )
            .await,
        Err(ServiceError::PermissionDenied(_))
    ));
    assert!(matches!(
        f.svc
            .list_operator_certificates_as(
                &acme_auditor,
                &v1::ListOperatorCertificatesRequest::default(),
            )
            .await,
        Err(ServiceError::PermissionDenied(_))
    ));

    // Paging walks every certificate once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = f
            .svc
            .list_operator_certificates_as(
                &platform,
                &v1::ListOperatorCertificatesRequest {
                    owner: String::new(),
                    page_size: 2,
                    page_token: token,
                },
            )
            .await
            .expect("page");
        assert!(page.certificates.len() <= 2);
        seen.extend(page.certificates.into_iter().map(|c| c.serial));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5));
}

#[tokio::test]
async fn operator_names_are_checked_once_and_qualified_by_owner_in_every_record() {
    let f = fixture().await;
    let platform = f.recorded_caller("admin", "*", Role::Admin).await;
    // A DeviceId-shaped name is a bad argument, not an internal error.
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
    let request = |name: &str| v1::IssueOperatorCertificateRequest {
        key: Some(Key::PublicKey(key.public_key().as_ref().to_vec())),
        name: name.into(),
        role: v1::Role::Operator as i32,
        owner: "acme".into(),
        validity: None,
    };
    let error = f
        .svc
        .issue_operator_certificate_as(&platform, request(&"ab".repeat(32)))
        .await
        .expect_err("DeviceId-shaped");
    assert!(
        matches!(error, ServiceError::InvalidArgument { ref field, .. } if field == "name"),
        "{error:?}"
    );
    // An owner's operator may be called `admin` like the platform's; the records say which.
    f.svc
        .issue_operator_certificate_as(&platform, request("admin"))
        .await
        .expect("an owner's operator named admin");
    let records = f
        .core
        .registry
        .operator_certificates(None, None, 100)
        .await
        .expect("list");
    let acme_named_admin = records
        .iter()
        .find(|r| r.owner == "acme" && r.name == "admin")
        .expect("recorded");
    assert_eq!(acme_named_admin.issued_by, "*/admin");
    let actors: Vec<String> = f
        .core
        .registry
        .audit(1, 1000)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.decode().expect("record"))
        .filter(|r| r.action == "operator.issue")
        .map(|r| r.actor)
        .collect();
    assert!(
        actors.contains(&"operator:*/admin".to_owned()),
        "{actors:?}"
    );
}

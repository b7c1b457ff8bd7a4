//! `GET /ca`: an owner's certificate authorities with their CRLs, the service's health, and for
//! platform operators the platform CA; `GET /crl.pem`, the CRLs to download.
//!
//! Every owner (tenant) has its own root and issuing CAs; the platform CA, which signs operator
//! certificates and the service's TLS certificate, is apart from them.
//!
//! ```text
//!  GET /ca[?owner=NAME]
//!   ├─ Health.Check("oxroot.v1.DeviceEnrollment")    NOT_SERVING while the CA key store is away
//!   ├─ GetOwner(NAME; empty: the operator's own)     root, issuing CAs (state, validity, key
//!   │    └─ per live issuing CA (active; retired       location, CSR pending)
//!   │       and unexpired): GetCrl(owner, issuer_id) number, times, serials; does that CA's
//!   │                                                key verify the CRL's signature?
//!   └─ platform operators: ListOwners (the picker), the platform CA from the profile's files
//!        and GetCrl(owner "*"), the CRL of operator certificates
//!  GET /crl.pem[?owner=NAME][&issuer=ID]             GetCrl PEM as the service signed it: the
//!                                                    owner's live CRLs, active first
//! ```
//!
//! Owner-scoped operators see their own owner (the service answers nothing else); platform
//! operators pick one. What the service says about a CA is not taken on trust: each CRL's
//! signature is checked here with the key of the CA certificate GetOwner returned, and each
//! issuing CA's certificate with its issuer's. A CRL or a health check that fails shows as
//! such on the page, beside everything that could be read.

mod facts;
mod view;

use std::path::Path;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::Markup;
use oxroot_proto::v1::{
    CrlFormat, GetCrlRequest, GetOwnerRequest, IssuingCa, IssuingCaState, ListOwnersRequest, Owner,
};
use serde::Deserialize;
use time::OffsetDateTime;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use super::page::{PageError, Section, page};
use super::{Console, SharedConsole};
use crate::error::CtlError;

pub(crate) use facts::{CertificateFacts, CrlFacts};

/// The service whose health says whether devices can get certificates (the CA key store).
const HEALTH_SERVICE: &str = "oxroot.v1.DeviceEnrollment";
/// How long the page waits for the health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Owners a platform operator's picker lists (ListOwners pages); more can be typed by name.
const MAX_OWNERS_LISTED: usize = 1_000;
/// GetCrl's `owner` for the platform's CRL.
const PLATFORM: &str = "*";

/// The platform CA's certificates from the operator's profile: the service has no RPC for its
/// own CA, and the profile holds exactly it (operator certificates are the platform's).
#[derive(Debug, Default)]
pub(crate) struct TrustFiles {
    /// The certificates of `operator.pem` after the operator's own (its issuers), then the
    /// root of `root.pem`.
    certificates: Vec<(String, Vec<u8>)>,
}

impl TrustFiles {
    /// Reads the CA certificates of the profile's chain file and root file.
    ///
    /// # Errors
    /// [`CtlError::Io`] if a file cannot be read (connecting has already checked them).
    pub(crate) fn read(chain: &Path, root: &Path) -> Result<Self, CtlError> {
        let mut certificates = Vec::new();
        for (path, skip_leaf) in [(chain, true), (root, false)] {
            let text = std::fs::read(path).map_err(CtlError::io(path))?;
            let blocks = pem::parse_many(&text).unwrap_or_default();
            let from = usize::from(skip_leaf);
            for block in blocks.into_iter().skip(from) {
                if block.tag() == "CERTIFICATE" {
                    certificates.push((path.display().to_string(), block.into_contents()));
                }
            }
        }
        Ok(Self { certificates })
    }
}

/// `?owner=NAME&issuer=ID` of `/ca` and `/crl.pem`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CaQuery {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    issuer: String,
}

/// The service's gRPC health for [`HEALTH_SERVICE`].
#[derive(Debug)]
pub(crate) enum Health {
    Serving,
    NotServing,
    /// Another status (UNKNOWN, SERVICE_UNKNOWN), or the check failed: what happened.
    Unknown(String),
}

/// Health.Check over the operator's connection (the health service needs no certificate).
async fn health(console: &Console) -> Health {
    let mut client = console.health();
    let check = client.check(HealthCheckRequest {
        service: HEALTH_SERVICE.into(),
    });
    match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
        Err(_) => Health::Unknown(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
        Ok(Err(status)) => Health::Unknown(PageError::rpc("Health.Check")(status).to_string()),
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => Health::Serving,
            ServingStatus::NotServing => Health::NotServing,
            other => Health::Unknown(other.as_str_name().to_owned()),
        },
    }
}

/// What a live issuing CA's CRL is, or why it has none.
#[derive(Debug)]
pub(crate) enum CrlOf {
    /// Pending: it has signed nothing yet.
    Pending,
    /// Retired and expired: its certificates have expired with it, and so has its CRL.
    Expired,
    /// GetCrl for it, parsed.
    Read(Result<CrlFacts, PageError>),
}

/// One issuing CA as the page shows it.
#[derive(Debug)]
pub(crate) struct IssuingView {
    pub(crate) ca: IssuingCa,
    /// Its certificate (none while pending).
    pub(crate) certificate: Option<Result<CertificateFacts, String>>,
    /// The first certificate of its chain: the one that certified it.
    pub(crate) certified_by: Option<Result<CertificateFacts, String>>,
    pub(crate) crl: CrlOf,
}

/// An owner and its CAs as the page shows them.
#[derive(Debug)]
pub(crate) struct OwnerView {
    pub(crate) owner: Owner,
    pub(crate) root: Option<Result<CertificateFacts, String>>,
    pub(crate) issuing: Vec<IssuingView>,
}

/// The platform CA (from the profile) and the platform's CRL.
#[derive(Debug)]
pub(crate) struct PlatformView {
    /// (file, certificate) for each CA certificate of the profile.
    pub(crate) certificates: Vec<(String, Result<CertificateFacts, String>)>,
    pub(crate) crl: Result<CrlFacts, PageError>,
}

/// Everything the CA page shows.
#[derive(Debug)]
pub(crate) struct CaPage {
    pub(crate) health: Health,
    /// Platform operators: the owners to pick from (None for owner-scoped operators).
    pub(crate) owners: Option<Result<Vec<Owner>, PageError>>,
    /// The owner asked for (`?owner=`), as typed.
    pub(crate) asked: String,
    /// The owner shown; None when a platform operator has not picked one.
    pub(crate) owner: Option<Result<OwnerView, PageError>>,
    pub(crate) platform: Option<PlatformView>,
    pub(crate) now: OffsetDateTime,
}

/// GetCrl PEM for `owner` (empty: the caller's; "*": the platform's) and `issuer_id` (empty:
/// every live one), as the service sent it.
async fn get_crl_pem(
    console: &Console,
    owner: &str,
    issuer_id: &str,
) -> Result<Vec<u8>, PageError> {
    let response = console
        .client()
        .get_crl(GetCrlRequest {
            format: CrlFormat::Pem as i32,
            owner: owner.to_owned(),
            issuer_id: issuer_id.to_owned(),
        })
        .await
        .map_err(PageError::rpc("GetCrl"))?
        .into_inner();
    Ok(response.crl)
}

fn unreadable_crl(problem: impl std::fmt::Display) -> PageError {
    PageError::Internal(format!("the service's CRL: {problem}"))
}

/// One issuing CA's CRL, parsed.
async fn crl_of(console: &Console, owner: &str, issuer_id: &str) -> Result<CrlFacts, PageError> {
    let pem = get_crl_pem(console, owner, issuer_id).await?;
    let mut crls = CrlFacts::parse_pem(&pem).map_err(unreadable_crl)?;
    if crls.len() != 1 {
        return Err(unreadable_crl(format!(
            "{} CRLs for one issuing CA",
            crls.len()
        )));
    }
    Ok(crls.remove(0))
}

/// The current CRLs of `owner`'s live issuing CAs (the device page), as (issuing CA id, CRL),
/// active first.
///
/// # Errors
/// GetCrl's refusal, or a CRL that does not parse.
pub(crate) async fn owner_crls(
    console: &Console,
    owner: &str,
) -> Result<Vec<(String, CrlFacts)>, PageError> {
    let response = console
        .client()
        .get_crl(GetCrlRequest {
            format: CrlFormat::Pem as i32,
            owner: owner.to_owned(),
            issuer_id: String::new(),
        })
        .await
        .map_err(PageError::rpc("GetCrl"))?
        .into_inner();
    let crls = CrlFacts::parse_pem(&response.crl).map_err(unreadable_crl)?;
    if crls.len() != response.issuer_ids.len() {
        return Err(unreadable_crl(format!(
            "{} CRLs for {} issuing CAs",
            crls.len(),
            response.issuer_ids.len()
        )));
    }
    Ok(response.issuer_ids.into_iter().zip(crls).collect())
}

/// True if the CA may have valid certificates out, so that the service signs its CRL.
fn is_live(ca: &IssuingCa, now: OffsetDateTime) -> bool {
    let state = IssuingCaState::try_from(ca.state).unwrap_or_default();
    let unexpired = ca
        .not_after
        .as_ref()
        .is_none_or(|t| t.seconds > now.unix_timestamp());
    matches!(state, IssuingCaState::Active | IssuingCaState::Retired) && unexpired
}

/// GetOwner, then each live issuing CA's CRL.
async fn owner_view(
    console: &Console,
    name: &str,
    now: OffsetDateTime,
) -> Result<OwnerView, PageError> {
    let owner = console
        .client()
        .get_owner(GetOwnerRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(PageError::rpc("GetOwner"))?
        .into_inner()
        .owner
        .ok_or_else(|| PageError::Internal("GetOwner without an owner".into()))?;
    let root = (!owner.root_pem.is_empty()).then(|| CertificateFacts::from_pem(&owner.root_pem));
    let mut issuing = Vec::with_capacity(owner.issuing_cas.len());
    for ca in &owner.issuing_cas {
        let crl = if IssuingCaState::try_from(ca.state) == Ok(IssuingCaState::Pending) {
            CrlOf::Pending
        } else if is_live(ca, now) {
            CrlOf::Read(crl_of(console, &owner.name, &ca.id).await)
        } else {
            CrlOf::Expired
        };
        issuing.push(IssuingView {
            certificate: (!ca.certificate_pem.is_empty())
                .then(|| CertificateFacts::from_pem(&ca.certificate_pem)),
            certified_by: ca
                .chain_pems
                .first()
                .map(|pem| CertificateFacts::from_pem(pem)),
            crl,
            ca: ca.clone(),
        });
    }
    Ok(OwnerView {
        owner,
        root,
        issuing,
    })
}

/// ListOwners, every page up to [`MAX_OWNERS_LISTED`].
async fn list_owners(console: &Console) -> Result<Vec<Owner>, PageError> {
    let mut owners = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = console
            .client()
            .list_owners(ListOwnersRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(PageError::rpc("ListOwners"))?
            .into_inner();
        owners.extend(response.owners);
        if response.next_page_token.is_empty() || owners.len() >= MAX_OWNERS_LISTED {
            owners.truncate(MAX_OWNERS_LISTED);
            return Ok(owners);
        }
        page_token = response.next_page_token;
    }
}

/// The platform CA of the profile and the platform's CRL.
async fn platform_view(console: &Console) -> PlatformView {
    let certificates = console
        .trust
        .certificates
        .iter()
        .map(|(file, der)| (file.clone(), CertificateFacts::from_der(der.clone())))
        .collect();
    PlatformView {
        certificates,
        crl: crl_of(console, PLATFORM, "").await,
    }
}

/// `GET /ca`.
pub(crate) async fn show(
    State(console): State<SharedConsole>,
    Query(query): Query<CaQuery>,
) -> Markup {
    let now = OffsetDateTime::now_utc();
    let platform_caller = console.me.owner == PLATFORM;
    let cas = async {
        let owners = if platform_caller {
            Some(list_owners(&console).await)
        } else {
            None
        };
        // A platform operator names an owner; everyone else gets their own (or the service's
        // refusal for the one they typed).
        let owner = if platform_caller && query.owner.is_empty() {
            None
        } else {
            Some(owner_view(&console, &query.owner, now).await)
        };
        let platform = if platform_caller {
            Some(platform_view(&console).await)
        } else {
            None
        };
        (owners, owner, platform)
    };
    let (health, (owners, owner, platform)) = tokio::join!(health(&console), cas);
    let shown = CaPage {
        health,
        owners,
        asked: query.owner,
        owner,
        platform,
        now,
    };
    page(&console, Section::Ca, "CAs and CRLs", &view::body(&shown))
}

/// `GET /crl.pem[?owner=NAME][&issuer=ID]`: the CRLs as the service signed them (the owner's
/// live ones, active first; one issuing CA's with `issuer`; the platform's with `owner=*`).
pub(crate) async fn crl_pem(
    State(console): State<SharedConsole>,
    Query(query): Query<CaQuery>,
) -> Result<Response, PageError> {
    let pem = get_crl_pem(&console, &query.owner, &query.issuer).await?;
    let name = download_name(&console.me.owner, &query.owner, &query.issuer);
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        pem,
    )
        .into_response())
}

/// The file name a CRL download gets: `crl-<issuing CA or owner>.pem`, `crl-platform.pem` for
/// the platform's; only `[a-z0-9-]` from what was asked, so it is safe in a header.
pub(crate) fn download_name(my_owner: &str, owner: &str, issuer: &str) -> String {
    let whose = if !issuer.is_empty() {
        issuer
    } else if owner == PLATFORM || (owner.is_empty() && my_owner == PLATFORM) {
        "platform"
    } else if owner.is_empty() {
        my_owner
    } else {
        owner
    };
    let safe: String = whose
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("crl-{safe}.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_say_whose_crl_and_carry_nothing_else() {
        assert_eq!(download_name("acme", "", ""), "crl-acme.pem");
        assert_eq!(download_name("acme", "", "acme/2"), "crl-acme-2.pem");
        assert_eq!(download_name("*", "", ""), "crl-platform.pem");
        assert_eq!(download_name("*", "*", ""), "crl-platform.pem");
        assert_eq!(download_name("*", "globex", ""), "crl-globex.pem");
        assert_eq!(
            download_name("*", "a\"; filename=x.exe\r\n", ""),
            "crl-a---filename-x-exe--.pem"
        );
        assert_eq!(download_name("*", &"x".repeat(500), "").len(), 72);
    }

    #[test]
    fn live_cas_are_active_or_retired_and_unexpired() {
        let now = OffsetDateTime::now_utc();
        let at = |seconds: i64| {
            Some(prost_types::Timestamp {
                seconds: now.unix_timestamp() + seconds,
                nanos: 0,
            })
        };
        let ca = |state: IssuingCaState, not_after| IssuingCa {
            state: state as i32,
            not_after,
            ..IssuingCa::default()
        };
        assert!(is_live(&ca(IssuingCaState::Active, at(60)), now));
        assert!(is_live(&ca(IssuingCaState::Retired, at(60)), now));
        assert!(!is_live(&ca(IssuingCaState::Retired, at(-60)), now));
        assert!(!is_live(&ca(IssuingCaState::Pending, None), now));
        assert!(!is_live(&ca(IssuingCaState::Unspecified, at(60)), now));
    }
}

//! `GET /ca`: the issuing CA the operator may see, with its current CRL (number, thisUpdate,
//! nextUpdate and every revoked serial), and `GET /crl.pem`, the same CRL to download.
//!
//! The contract has no CA listing yet: the CA certificates come from the operator's own profile
//! (the chain beside its certificate, and the root it pins), and the page checks which of them
//! signed the CRL the service hands out. Per-owner CAs and the HSM's health need the PKI
//! issue's RPCs.

use std::path::Path;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use oxroot_proto::v1::{CrlFormat, GetCrlRequest};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::page::{PageError, Section, page, shown, when_at};
use super::{Console, SharedConsole};
use crate::error::CtlError;
use crate::output::span;

/// The CA certificates of the operator's profile, as DER.
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

/// The current CRL as the pages show it.
#[derive(Debug)]
pub(crate) struct CrlFacts {
    pub(crate) number: String,
    pub(crate) this_update: String,
    pub(crate) next_update: String,
    next_update_at: Option<OffsetDateTime>,
    pub(crate) issuer: String,
    /// (serial in the contract's lowercase hex, revocation date, reason), in CRL order.
    pub(crate) revoked: Vec<(String, String, String)>,
    der: Vec<u8>,
    pem: Vec<u8>,
}

impl CrlFacts {
    /// True if the CRL lists `serial` (any case).
    pub(crate) fn lists(&self, serial: &str) -> bool {
        self.revoked
            .iter()
            .any(|(listed, _, _)| listed.eq_ignore_ascii_case(serial))
    }

    /// Parses a PEM CRL.
    fn parse(pem_text: Vec<u8>) -> Result<Self, PageError> {
        let bad = |problem: String| PageError::Internal(format!("the service's CRL: {problem}"));
        let der = pem::parse(&pem_text)
            .map_err(|e| bad(e.to_string()))?
            .into_contents();
        let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| bad(e.to_string()))?;
        let when = when_at;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|entry| {
                let reason = entry
                    .reason_code()
                    .map_or_else(|| "unspecified".to_owned(), |(_, code)| code.to_string());
                (
                    entry.serial().to_str_radix(16),
                    when(entry.revocation_date.to_datetime()),
                    reason,
                )
            })
            .collect();
        let next_update_at = crl.next_update().map(|t| t.to_datetime());
        Ok(Self {
            number: crl
                .crl_number()
                .map_or_else(|| "none".to_owned(), ToString::to_string),
            this_update: when(crl.last_update().to_datetime()),
            next_update: next_update_at.map(when).unwrap_or_default(),
            next_update_at,
            issuer: crl.issuer().to_string(),
            revoked,
            der: der.clone(),
            pem: pem_text,
        })
    }
}

/// GetCrl (PEM), parsed.
///
/// # Errors
/// GetCrl's refusal, or a CRL that does not parse.
pub(crate) async fn current_crl(console: &Console) -> Result<CrlFacts, PageError> {
    let response = console
        .client()
        .get_crl(GetCrlRequest {
            format: CrlFormat::Pem as i32,
            ..GetCrlRequest::default()
        })
        .await
        .map_err(PageError::rpc("GetCrl"))?
        .into_inner();
    CrlFacts::parse(response.crl)
}

/// One CA certificate of the profile, and whether it signed the CRL.
struct CaView {
    file: String,
    subject: String,
    issuer: String,
    not_before: String,
    not_after: String,
    fingerprint: String,
    signed_crl: bool,
}

fn ca_views(trust: &TrustFiles, crl: &CrlFacts) -> Vec<CaView> {
    let parsed_crl = CertificateRevocationList::from_der(&crl.der).ok();
    trust
        .certificates
        .iter()
        .filter_map(|(file, der)| {
            let (_, certificate) = X509Certificate::from_der(der).ok()?;
            let signed_crl = parsed_crl.as_ref().is_some_and(|(_, crl)| {
                crl.issuer() == certificate.subject()
                    && crl.verify_signature(certificate.public_key()).is_ok()
            });
            let when = |t: x509_parser::time::ASN1Time| when_at(t.to_datetime());
            Some(CaView {
                file: file.clone(),
                subject: certificate.subject().to_string(),
                issuer: certificate.issuer().to_string(),
                not_before: when(certificate.validity().not_before),
                not_after: when(certificate.validity().not_after),
                fingerprint: hex::encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    der,
                )),
                signed_crl,
            })
        })
        .collect()
}

/// `GET /ca`.
pub(crate) async fn show(State(console): State<SharedConsole>) -> Result<Markup, PageError> {
    let crl = current_crl(&console).await?;
    let cas = ca_views(&console.trust, &crl);
    let next_in = crl
        .next_update_at
        .map(|at| at - OffsetDateTime::now_utc())
        .map(|left| {
            if left.is_negative() {
                "overdue".to_owned()
            } else {
                format!("in {}", span(left.unsigned_abs()))
            }
        })
        .unwrap_or_default();
    let body = html! {
        section #cas {
            h2 { "Issuing CA" }
            p.muted { "From your profile's files; the service has no CA listing yet (per-owner CAs and the HSM's health come with the PKI work)." }
            @for ca in &cas {
                dl.fields .ca .issuer[ca.signed_crl] {
                    dt { "Subject" } dd { (shown(&ca.subject)) }
                    dt { "Issuer" } dd { (shown(&ca.issuer)) }
                    dt { "Valid" } dd { (ca.not_before) " to " (ca.not_after) }
                    dt { "SHA-256" } dd { code.wrap { (ca.fingerprint) } }
                    dt { "From" } dd { code { (shown(&ca.file)) } }
                    dt { "Signs the CRL" } dd { @if ca.signed_crl { strong { "yes: its key verifies the CRL's signature" } } @else { "no" } }
                }
            }
        }
        section #crl {
            h2 { "Certificate revocation list" }
            dl.fields {
                dt { "Issuer" } dd { (shown(&crl.issuer)) }
                dt { "CRL number" } dd #crl-number { (crl.number) }
                dt { "This update" } dd { (crl.this_update) }
                dt { "Next update" } dd #next-update { (crl.next_update) " (" (next_in) ")" }
                dt { "Revoked" } dd { (crl.revoked.len()) " certificate(s)" }
            }
            p { a.button href="/crl.pem" download="crl.pem" { "Download crl.pem" } }
            @if !crl.revoked.is_empty() {
                table.crl {
                    thead { tr { th { "Serial" } th { "Revoked" } th { "Reason" } } }
                    tbody {
                        @for (serial, date, reason) in &crl.revoked {
                            tr data-serial=(serial) { td { code { (serial) } } td { (date) } td { (reason) } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&console, Section::Ca, "CA and CRL", &body))
}

/// `GET /crl.pem`: the CRL as the service signed it.
pub(crate) async fn crl_pem(State(console): State<SharedConsole>) -> Result<Response, PageError> {
    let crl = current_crl(&console).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"crl.pem\"",
            ),
        ],
        crl.pem,
    )
        .into_response())
}

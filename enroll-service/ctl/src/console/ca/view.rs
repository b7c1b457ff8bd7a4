//! The CA page's HTML, from what [`super::show`] gathered: no I/O here, so that tests can
//! render any state (a token away, a forged CRL, hostile names) without a service.

use maud::{Markup, html};
use oxroot_proto::v1::{CaMode, IssuingCaState, Owner};
use time::OffsetDateTime;

use super::{
    CaPage, CertificateFacts, CrlFacts, CrlOf, HEALTH_SERVICE, Health, IssuingView, OwnerView,
    PlatformView, download_name,
};
use crate::console::devices::url_component;
use crate::console::page::{PageError, shown, shown_pem, when};
use crate::output::{ca_mode_name, issuing_ca_state_name};

/// The page's body.
pub(super) fn body(page: &CaPage) -> Markup {
    html! {
        (health(&page.health))
        @if let Some(owners) = &page.owners {
            (picker(owners, &page.asked, page.owner.is_none()))
        }
        @match &page.owner {
            None => "",
            Some(Ok(view)) => (owner(view, page.now)),
            Some(Err(error)) => section #owner {
                h2 { "Owner " (shown(&page.asked)) }
                p.warn { "The owner could not be read: " (shown(&error.to_string())) }
            },
        }
        @if let Some(platform) = &page.platform {
            (platform_ca(platform, page.now))
        }
    }
}

fn health(health: &Health) -> Markup {
    let status = match health {
        Health::Serving => "serving",
        Health::NotServing => "not-serving",
        Health::Unknown(_) => "unknown",
    };
    html! {
        section #health data-status=(status) {
            h2 { "Service health" }
            @match health {
                Health::Serving => p {
                    strong.good { "Serving" } ": the service's health check for "
                    code { (HEALTH_SERVICE) } " passes: its CA keys and its registry answer."
                },
                Health::NotServing => p.notice {
                    strong { "Not serving" } ": the service cannot sign now: its CA key store "
                    "(a PKCS#11 token) or its registry is away. Devices are refused "
                    code { "UNAVAILABLE" } " until it is back; the CRLs below are the last ones "
                    "it signed, and the page says so when one passes its next update."
                },
                Health::Unknown(why) => p.warn {
                    "Unknown: the health check of " code { (HEALTH_SERVICE) } " answered "
                    (shown(why))
                },
            }
        }
    }
}

/// A platform operator's choice of owner, and the owners when none is chosen yet.
fn picker(owners: &Result<Vec<Owner>, PageError>, asked: &str, list_them: bool) -> Markup {
    let names: &[Owner] = owners.as_deref().unwrap_or_default();
    html! {
        section #owners {
            h2 { "Owners" }
            form.search method="get" action="/ca" {
                label for="owner-name" { "Owner" }
                input #owner-name type="text" name="owner" list="owner-names" value=(shown(asked)) required;
                datalist #owner-names {
                    @for owner in names { option value=(shown(&owner.name)) {} }
                }
                button type="submit" { "Show its CAs" }
            }
            @if let Err(error) = owners {
                p.warn { "The owners could not be listed: " (shown(&error.to_string())) }
            }
            @if list_them && !names.is_empty() {
                table.owners {
                    thead { tr { th { "Owner" } th { "CA mode" } th { "Active issuing CA" } th { "Issuing CAs" } th { "Created" } } }
                    tbody {
                        @for owner in names {
                            tr data-owner=(shown(&owner.name)) {
                                td { a href={ "/ca?owner=" (url_component(&owner.name)) } { (shown(&owner.name)) } }
                                td { (ca_mode_name(owner.ca_mode)) }
                                td { code { (shown(&active_id(owner))) } }
                                td.num { (owner.issuing_cas.len()) }
                                td { (when(owner.created_at.as_ref())) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn active_id(owner: &Owner) -> String {
    owner
        .issuing_cas
        .iter()
        .find(|ca| ca.state == IssuingCaState::Active as i32)
        .map_or_else(|| "none".to_owned(), |ca| ca.id.clone())
}

fn owner(view: &OwnerView, now: OffsetDateTime) -> Markup {
    let owner = &view.owner;
    let query = format!("owner={}", url_component(&owner.name));
    let shared = owner.ca_mode == CaMode::SharedPlatform as i32;
    html! {
        section #owner data-owner=(shown(&owner.name)) {
            h2 { "Owner " (shown(&owner.name)) }
            dl.fields {
                dt { "CA mode" } dd #ca-mode { (ca_mode_name(owner.ca_mode)) }
                dt { "Created" } dd { (when(owner.created_at.as_ref())) " by " (shown(&owner.created_by)) }
            }
            h3 { "Root" }
            @match &view.root {
                None => p.muted { "None on record yet: the owner's own root certifies its issuing CA when it comes back signed." },
                Some(Err(problem)) => p.warn { "The root does not parse: " (shown(problem)) },
                Some(Ok(root)) => dl.fields.ca #root {
                    (certificate_fields(root))
                    dt { "Self-signed" } dd { @if root.is_signed_by(root) { "yes: its own key verifies it" } @else { strong.warn { "no" } } }
                    @if shared {
                        dt { "Note" } dd { "The platform's root: this owner came from the one-CA layout and keeps the platform CA until its first rotation." }
                    }
                },
            }
            h3 { "Issuing CAs, newest first" }
            p {
                a.button href={ "/crl.pem?" (query) } download=(download_name("", &owner.name, "")) {
                    "Download the CRLs of its live issuing CAs"
                }
            }
            @if view.issuing.is_empty() {
                p.muted { "None." }
            }
            @for ca in &view.issuing {
                (issuing(ca, &owner.name, now))
            }
        }
    }
}

/// Subject, issuer, validity and fingerprint.
fn certificate_fields(certificate: &CertificateFacts) -> Markup {
    html! {
        dt { "Subject" } dd.subject { (shown(&certificate.subject)) }
        dt { "Issuer" } dd { (shown(&certificate.issuer)) }
        dt { "Valid" } dd { (certificate.not_before) " to " (certificate.not_after) }
        dt { "SHA-256" } dd { code.wrap { (certificate.fingerprint) } }
    }
}

/// Where a CA key lives, as the service reports it (never key material).
fn key_location(id: &str, location: &str) -> Markup {
    html! {
        @if location == "sealed" {
            "sealed: encrypted in the service's state directory"
        } @else if location.starts_with("pkcs11:") {
            "in a PKCS#11 token: " code.wrap { (shown(location)) }
        } @else if location.is_empty() && id == "platform" {
            "the platform CA's key"
        } @else if location.is_empty() {
            span.muted { "not reported" }
        } @else {
            code.wrap { (shown(location)) }
        }
    }
}

fn issuing(view: &IssuingView, owner: &str, now: OffsetDateTime) -> Markup {
    let ca = &view.ca;
    let state = issuing_ca_state_name(ca.state);
    let certificate = view.certificate.as_ref().and_then(|c| c.as_ref().ok());
    let crl = match &view.crl {
        CrlOf::Read(Ok(crl)) => Some(crl),
        _ => None,
    };
    let signs = certificate.zip(crl).map(|(c, crl)| crl.is_signed_by(c));
    let download = format!(
        "/crl.pem?owner={}&issuer={}",
        url_component(owner),
        url_component(&ca.id)
    );
    html! {
        section.issuing-ca data-ca-id=(shown(&ca.id)) data-state=(state) {
            h3 { "Issuing CA " code { (shown(&ca.id)) } " · " span.state { (state) } }
            dl.fields.ca .issuer[signs == Some(true)] {
                dt { "State" } dd { (state_meaning(ca.state)) }
                @match &view.certificate {
                    None => {},
                    Some(Err(problem)) => { dt { "Certificate" } dd.warn { "does not parse: " (shown(problem)) } },
                    Some(Ok(certificate)) => {
                        (certificate_fields(certificate))
                        dt { "Certified by" } dd.certified { (certified(certificate, view.certified_by.as_ref())) }
                    },
                }
                @if view.certificate.is_none() && (ca.not_before.is_some() || ca.not_after.is_some()) {
                    dt { "Valid" } dd { (when(ca.not_before.as_ref())) " to " (when(ca.not_after.as_ref())) }
                }
                dt { "Key" } dd.key-location { (key_location(&ca.id, &ca.key_location)) }
                @if !ca.csr_pem.is_empty() {
                    dt { "CSR" } dd.csr {
                        "pending: waiting for the owner's root to sign it ("
                        code { "enrollctl owner import-ca" } " brings the certificate back)"
                        details { summary { "PEM of the request" } pre { (shown_pem(&ca.csr_pem)) } }
                    }
                }
                @if let Some(signs) = signs {
                    dt { "Signs its CRL" } dd.signs-crl {
                        @if signs { strong { "yes: its key verifies the CRL's signature" } }
                        @else { strong.warn { "no: its key does not verify the CRL's signature" } }
                    }
                }
            }
            @match &view.crl {
                CrlOf::Pending => p.muted { "No CRL: a pending CA has signed nothing." },
                CrlOf::Expired => p.muted { "No CRL: it has expired, and every certificate it issued with it." },
                CrlOf::Read(Err(error)) => p.warn { "Its CRL could not be read: " (shown(&error.to_string())) },
                CrlOf::Read(Ok(crl)) => (crl_facts(crl, now, &download, &download_name("", owner, &ca.id))),
            }
        }
    }
}

/// What each state means for the CA's certificates and its CRL.
fn state_meaning(state: i32) -> Markup {
    let name = issuing_ca_state_name(state);
    let meaning = match IssuingCaState::try_from(state).unwrap_or_default() {
        IssuingCaState::Active => "it issues the owner's device certificates",
        IssuingCaState::Retired => {
            "a newer CA issues; it signs its CRL until its last certificate expires"
        }
        IssuingCaState::Pending => "its key exists; its certificate has not come back yet",
        IssuingCaState::Unspecified => "not reported",
    };
    html! { strong { (name) } ": " (meaning) }
}

/// Whether the first certificate of the CA's chain certified it.
fn certified(
    certificate: &CertificateFacts,
    issuer: Option<&Result<CertificateFacts, String>>,
) -> Markup {
    html! {
        @match issuer {
            None => span.muted { "no chain on record" },
            Some(Err(problem)) => span.warn { "its chain does not parse: " (shown(problem)) },
            Some(Ok(issuer)) => {
                (shown(&issuer.subject)) ": "
                @if certificate.is_signed_by(issuer) { "its key verifies this certificate" }
                @else { strong.warn { "its key does not verify this certificate" } }
            },
        }
    }
}

/// A CRL's number, times and serials, and where to download it.
fn crl_facts(crl: &CrlFacts, now: OffsetDateTime, download: &str, file: &str) -> Markup {
    html! {
        div.crl {
            dl.fields {
                dt { "CRL issuer" } dd { (shown(&crl.issuer)) }
                dt { "CRL number" } dd.crl-number { (crl.number) }
                dt { "This update" } dd.this-update { (crl.this_update) }
                dt { "Next update" } dd.next-update { (crl.next_update) " (" (crl.next_in(now)) ")" }
                dt { "Revoked" } dd.revoked-count { (crl.revoked.len()) " certificate(s)" }
            }
            p { a.button href=(download) download=(file) { "Download this CRL" } }
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
    }
}

fn platform_ca(view: &PlatformView, now: OffsetDateTime) -> Markup {
    let crl = view.crl.as_ref().ok();
    html! {
        section #platform {
            h2 { "Platform CA" }
            p.muted {
                "It signs operator certificates and the service's TLS certificate, never a "
                "device's, and no owner's trust holds it. Its certificates are your profile's; "
                "its CRL lists revoked operator certificates."
            }
            @for (file, certificate) in &view.certificates {
                @match certificate {
                    Err(problem) => p.warn { (shown(file)) ": a certificate does not parse: " (shown(problem)) },
                    Ok(certificate) => {
                        @let signs = crl.is_some_and(|crl| crl.is_signed_by(certificate));
                        dl.fields.ca .issuer[signs] {
                            (certificate_fields(certificate))
                            dt { "From" } dd { code { (shown(file)) } }
                            dt { "Signs the CRL" } dd.signs-crl {
                                @if signs { strong { "yes: its key verifies the CRL's signature" } } @else { "no" }
                            }
                        }
                    },
                }
            }
            @match &view.crl {
                Err(error) => p.warn { "The platform's CRL could not be read: " (shown(&error.to_string())) },
                Ok(crl) => (crl_facts(crl, now, "/crl.pem?owner=%2A", "crl-platform.pem")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::tests::{CRL, FORGED_CRL, ISSUING, ROOT};
    use super::*;
    use oxroot_proto::v1::IssuingCa;

    const HOSTILE: &str = "<script>alert(1)</script>\u{1b}[2J\u{202e}exe.";

    fn crl(pem: &str) -> CrlFacts {
        CrlFacts::parse_pem(pem.as_bytes()).expect("CRL").remove(0)
    }

    fn acme(crl_pem: &str) -> OwnerView {
        let active = IssuingCa {
            id: "acme/1".into(),
            state: IssuingCaState::Active as i32,
            certificate_pem: ISSUING.into(),
            chain_pems: vec![ROOT.into()],
            key_location: "pkcs11:token=oxroot;object=acme%2F1;pin-source=file:/run/pin".into(),
            not_after: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            ..IssuingCa::default()
        };
        let pending = IssuingCa {
            id: "acme/2".into(),
            state: IssuingCaState::Pending as i32,
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
            key_location: "sealed".into(),
            ..IssuingCa::default()
        };
        OwnerView {
            owner: Owner {
                name: "acme".into(),
                ca_mode: CaMode::OwnCa as i32,
                root_pem: ROOT.into(),
                issuing_cas: vec![pending.clone(), active.clone()],
                created_by: HOSTILE.into(),
                ..Owner::default()
            },
            root: Some(CertificateFacts::from_pem(ROOT)),
            issuing: vec![
                IssuingView {
                    ca: pending,
                    certificate: None,
                    certified_by: None,
                    crl: CrlOf::Pending,
                },
                IssuingView {
                    ca: active,
                    certificate: Some(CertificateFacts::from_pem(ISSUING)),
                    certified_by: Some(CertificateFacts::from_pem(ROOT)),
                    crl: CrlOf::Read(Ok(crl(crl_pem))),
                },
            ],
        }
    }

    fn render(health: Health, owner: OwnerView) -> String {
        body(&CaPage {
            health,
            owners: None,
            asked: String::new(),
            owner: Some(Ok(owner)),
            platform: None,
            now: OffsetDateTime::now_utc(),
        })
        .into_string()
    }

    /// The `<section class="issuing-ca" data-ca-id=ID …>` of a page, up to the next one.
    fn section<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html
            .find(&format!("data-ca-id=\"{id}\""))
            .unwrap_or_else(|| panic!("no section for {id}: {html}"));
        let rest = &html[start..];
        let end = rest[1..].find("<section").map_or(rest.len(), |i| i + 1);
        &rest[..end]
    }

    #[test]
    fn each_issuing_ca_shows_its_state_key_and_crl_checked_with_its_own_key() {
        let html = render(Health::Serving, acme(CRL));
        let active = section(&html, "acme/1");
        assert!(active.contains("data-state=\"active\""), "{active}");
        assert!(active.contains("in a PKCS#11 token: "), "{active}");
        assert!(
            active.contains("pkcs11:token=oxroot;object=acme%2F1"),
            "{active}"
        );
        assert!(
            active.contains("yes: its key verifies the CRL's signature"),
            "{active}"
        );
        assert!(
            active.contains("its key verifies this certificate"),
            "{active}"
        );
        assert!(
            active.contains("<tr data-serial=\"5bac0432ef26\">"),
            "{active}"
        );
        assert!(active.contains("class=\"crl-number\">4096<"), "{active}");
        assert!(
            active.contains("href=\"/crl.pem?owner=acme&amp;issuer=acme%2F1\""),
            "{active}"
        );
        let pending = section(&html, "acme/2");
        assert!(pending.contains("sealed: encrypted"), "{pending}");
        assert!(
            pending.contains("waiting for the owner's root"),
            "{pending}"
        );
        assert!(pending.contains("BEGIN CERTIFICATE REQUEST"), "{pending}");
        assert!(pending.contains("No CRL: a pending CA"), "{pending}");
        assert!(!pending.contains("Signs its CRL"), "{pending}");
        assert!(html.contains("Self-signed</dt><dd>yes"), "{html}");
        assert!(html.contains("data-status=\"serving\""), "{html}");
    }

    #[test]
    fn a_crl_its_ca_did_not_sign_is_marked_no() {
        let html = render(Health::Serving, acme(FORGED_CRL));
        let active = section(&html, "acme/1");
        assert!(
            active.contains("no: its key does not verify the CRL's signature"),
            "{active}"
        );
        assert!(!active.contains("yes: its key"), "{active}");
    }

    #[test]
    fn a_key_store_away_is_said_at_the_top() {
        let html = render(Health::NotServing, acme(CRL));
        assert!(html.contains("data-status=\"not-serving\""), "{html}");
        assert!(html.contains("CA key store"), "{html}");
        assert!(html.find("id=\"health\"") < html.find("id=\"owner\""));
        let unknown = render(Health::Unknown(HOSTILE.into()), acme(CRL));
        assert!(unknown.contains("data-status=\"unknown\""), "{unknown}");
        assert!(unknown.contains("&lt;script&gt;alert(1)"), "{unknown}");
    }

    #[test]
    fn text_from_the_service_and_other_tenants_is_text_with_its_controls_visible() {
        let mut view = acme(CRL);
        view.owner.name = HOSTILE.into();
        view.issuing[0].ca.id = HOSTILE.into();
        view.issuing[0].ca.key_location = HOSTILE.into();
        view.issuing[0].ca.csr_pem = HOSTILE.into();
        let html = body(&CaPage {
            health: Health::Serving,
            owners: Some(Ok(vec![view.owner.clone()])),
            asked: HOSTILE.into(),
            owner: Some(Ok(view)),
            platform: None,
            now: OffsetDateTime::now_utc(),
        })
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            !html.contains('\u{1b}') && !html.contains('\u{202e}'),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\x1b[2J\\u{202e}exe."),
            "{html}"
        );
        // In attributes, maud's escaping of quotes and ampersands keeps the value one value.
        assert!(
            html.contains("download=\"crl--script-alert-1---script---2--exe-.pem\""),
            "{html}"
        );
        assert!(html.contains("/crl.pem?owner=%3Cscript%3E"), "{html}");
    }

    #[test]
    fn a_platform_operator_picks_an_owner_and_sees_the_platform_ca() {
        let owners = vec![acme(CRL).owner];
        let platform = PlatformView {
            certificates: vec![
                (
                    "/p/operator.pem".into(),
                    CertificateFacts::from_pem(ISSUING),
                ),
                ("/p/root.pem".into(), CertificateFacts::from_pem(ROOT)),
            ],
            crl: Ok(crl(CRL)),
        };
        let html = body(&CaPage {
            health: Health::Serving,
            owners: Some(Ok(owners)),
            asked: String::new(),
            owner: None,
            platform: Some(platform),
            now: OffsetDateTime::now_utc(),
        })
        .into_string();
        assert!(
            html.contains("<a href=\"/ca?owner=acme\">acme</a>"),
            "{html}"
        );
        assert!(html.contains("<option value=\"acme\">"), "{html}");
        assert!(html.contains("own-ca"), "{html}");
        let platform = &html[html.find("id=\"platform\"").expect("platform section")..];
        assert_eq!(
            platform
                .matches("yes: its key verifies the CRL's signature")
                .count(),
            1,
            "{platform}"
        );
        assert!(platform.contains("/crl.pem?owner=%2A"), "{platform}");
        assert!(!html.contains("id=\"owner\""), "no owner picked: {html}");
    }
}

//! What a CA certificate and a CRL say, read and checked on this side: the page does not take
//! the service's word that a CRL is its CA's, it verifies the signature with the CA's key.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;

use crate::console::page::when_at;
use crate::output::span;

/// A CA certificate as the pages show it.
#[derive(Debug)]
pub(crate) struct CertificateFacts {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    /// SHA-256 of the DER, lowercase hex.
    pub(crate) fingerprint: String,
    der: Vec<u8>,
}

impl CertificateFacts {
    /// The first certificate of a PEM text.
    ///
    /// # Errors
    /// What is wrong with it, for the page to say.
    pub(crate) fn from_pem(text: &str) -> Result<Self, String> {
        let block = pem::parse_many(text)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|block| block.tag() == "CERTIFICATE")
            .ok_or_else(|| "no PEM certificate".to_owned())?;
        Self::from_der(block.into_contents())
    }

    /// A DER certificate.
    ///
    /// # Errors
    /// What is wrong with it.
    pub(crate) fn from_der(der: Vec<u8>) -> Result<Self, String> {
        let (_, certificate) = X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
        let when = |t: ASN1Time| when_at(t.to_datetime());
        Ok(Self {
            subject: certificate.subject().to_string(),
            issuer: certificate.issuer().to_string(),
            not_before: when(certificate.validity().not_before),
            not_after: when(certificate.validity().not_after),
            fingerprint: hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der)),
            der,
        })
    }

    fn parsed(&self) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(&self.der).ok().map(|(_, c)| c)
    }

    /// True if `issuer` is named as this certificate's issuer and its key verifies this
    /// certificate's signature (`self` for a self-signed root).
    pub(crate) fn is_signed_by(&self, issuer: &Self) -> bool {
        let (Some(certificate), Some(issuer)) = (self.parsed(), issuer.parsed()) else {
            return false;
        };
        certificate.issuer() == issuer.subject()
            && certificate
                .verify_signature(Some(issuer.public_key()))
                .is_ok()
    }
}

/// One CRL as the pages show it.
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
}

impl CrlFacts {
    /// Every CRL of a PEM text (GetCrl's PEM holds one per live issuing CA, active first).
    ///
    /// # Errors
    /// What is wrong with the text or one of its CRLs; a text without any CRL.
    pub(crate) fn parse_pem(text: &[u8]) -> Result<Vec<Self>, String> {
        let crls = pem::parse_many(text)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|block| block.tag() == "X509 CRL")
            .map(|block| Self::parse_der(block.into_contents()))
            .collect::<Result<Vec<_>, _>>()?;
        if crls.is_empty() {
            return Err("no PEM CRL (-----BEGIN X509 CRL-----)".into());
        }
        Ok(crls)
    }

    /// A DER CRL.
    ///
    /// # Errors
    /// What is wrong with it.
    pub(crate) fn parse_der(der: Vec<u8>) -> Result<Self, String> {
        let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| e.to_string())?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|entry| {
                let reason = entry
                    .reason_code()
                    .map_or_else(|| "unspecified".to_owned(), |(_, code)| code.to_string());
                (
                    entry.serial().to_str_radix(16),
                    when_at(entry.revocation_date.to_datetime()),
                    reason,
                )
            })
            .collect();
        let next_update_at = crl.next_update().map(|t| t.to_datetime());
        Ok(Self {
            number: crl
                .crl_number()
                .map_or_else(|| "none".to_owned(), ToString::to_string),
            this_update: when_at(crl.last_update().to_datetime()),
            next_update: next_update_at.map(when_at).unwrap_or_default(),
            next_update_at,
            issuer: crl.issuer().to_string(),
            revoked,
            der,
        })
    }

    /// True if the CRL lists `serial` (any case).
    pub(crate) fn lists(&self, serial: &str) -> bool {
        self.revoked
            .iter()
            .any(|(listed, _, _)| listed.eq_ignore_ascii_case(serial))
    }

    /// True if `ca` is the CRL's issuer by name and its key verifies the CRL's signature.
    pub(crate) fn is_signed_by(&self, ca: &CertificateFacts) -> bool {
        let (Ok((_, crl)), Some(certificate)) =
            (CertificateRevocationList::from_der(&self.der), ca.parsed())
        else {
            return false;
        };
        crl.issuer() == certificate.subject()
            && crl.verify_signature(certificate.public_key()).is_ok()
    }

    /// How long until nextUpdate from `now` ("in 6 d 23 h"), "overdue" past it.
    pub(crate) fn next_in(&self, now: OffsetDateTime) -> String {
        match self.next_update_at {
            None => "no nextUpdate".to_owned(),
            Some(at) if at < now => "overdue".to_owned(),
            // Whole seconds: a CRL's times have no fraction.
            Some(at) => format!(
                "in {}",
                span(std::time::Duration::from_secs(
                    (at - now).whole_seconds().unsigned_abs()
                ))
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Vectors made with OpenSSL 3.0, an independent issuer (`testdata/`): an ECDSA P-256 root
    //! (`req -x509`), an issuing CA it certified (`x509 -req`, pathlen 0), a CRL the issuing CA
    //! signed (`ca -gencrl`, CRL number 4096, serial 5BAC0432EF26 revoked keyCompromise on
    //! 2025-01-01), and a forged CRL naming the issuing CA but signed by another key with the
    //! same subject.

    use super::*;

    pub(crate) const ROOT: &str = include_str!("testdata/root.pem");
    pub(crate) const ISSUING: &str = include_str!("testdata/issuing.pem");
    pub(crate) const CRL: &str = include_str!("testdata/issuing-crl.pem");
    pub(crate) const FORGED_CRL: &str = include_str!("testdata/forged-crl.pem");

    fn certificate(pem: &str) -> CertificateFacts {
        CertificateFacts::from_pem(pem).expect("a test certificate")
    }

    fn crl(pem: &str) -> CrlFacts {
        CrlFacts::parse_pem(pem.as_bytes())
            .expect("a test CRL")
            .remove(0)
    }

    #[test]
    fn a_crl_is_its_issuers_only_if_the_issuers_key_verifies_it() {
        let (root, issuing) = (certificate(ROOT), certificate(ISSUING));
        assert!(crl(CRL).is_signed_by(&issuing));
        assert!(!crl(CRL).is_signed_by(&root), "another CA's key");
        let forged = crl(FORGED_CRL);
        assert_eq!(forged.issuer, crl(CRL).issuer, "the same issuer name");
        assert!(!forged.is_signed_by(&issuing), "signed by another key");
    }

    #[test]
    fn certificates_chain_by_signature_not_by_name_alone() {
        let (root, issuing) = (certificate(ROOT), certificate(ISSUING));
        assert!(issuing.is_signed_by(&root));
        assert!(root.is_signed_by(&root), "self-signed");
        assert!(!root.is_signed_by(&issuing));
        assert!(!issuing.is_signed_by(&issuing));
        assert_eq!(issuing.subject, "O=acme, CN=acme issuing 1");
        assert_eq!(issuing.issuer, root.subject);
        assert_eq!(issuing.fingerprint.len(), 64);
    }

    #[test]
    fn a_crl_shows_its_number_times_and_serials() {
        let crl = crl(CRL);
        assert_eq!(crl.number, "4096");
        assert_eq!(
            crl.revoked,
            [(
                "5bac0432ef26".to_owned(),
                "2025-01-01T00:00:00Z".to_owned(),
                "KeyCompromise".to_owned()
            )]
        );
        assert!(crl.lists("5BAC0432EF26") && !crl.lists("5bac0432ef27"));
        assert!(crl.next_in(OffsetDateTime::now_utc()).starts_with("in "));
        assert_eq!(
            crl.next_in(OffsetDateTime::now_utc() + time::Duration::days(365 * 200)),
            "overdue"
        );
    }

    #[test]
    fn every_crl_of_a_pem_text_is_read_in_order() {
        let both = format!("{FORGED_CRL}{CRL}");
        let crls = CrlFacts::parse_pem(both.as_bytes()).expect("two CRLs");
        assert_eq!(crls.len(), 2);
        assert!(crls[1].is_signed_by(&certificate(ISSUING)));
        assert!(
            CrlFacts::parse_pem(ROOT.as_bytes()).is_err(),
            "no CRL in it"
        );
        assert!(CrlFacts::parse_pem(b"<script>").is_err());
        assert!(
            CertificateFacts::from_pem(CRL).is_err(),
            "no certificate in it"
        );
    }
}

//! What a CA signs: device leaves, TLS server certificates (the service's own, brokers' from a
//! CSR), operator certificates, verification certificates and CRLs. Every validity is clamped
//! into the CA's own, and every signature goes through its [`super::CaKey`].

use rcgen::{
    CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, KeyIdMethod,
    RevokedCertParams, SanType,
};
use time::OffsetDateTime;

use super::keystore::pem_encode;
use super::operator::{validate_operator_name, validate_owner};
use super::profile::{
    check_common_name, csr_public_key, end_entity_params, generate_key, server_params, validated,
};
use super::{
    CertificateAuthority, Crl, IssuedCertificate, LeafRequest, OperatorCredentials,
    OperatorIdentity, OperatorKey, P256_PUBLIC_KEY_LEN, PkiError, PrivateKeyPkcs8, RevokedEntry,
    Role, Serial, ServerCredentials, ServerName, Validity,
};

impl CertificateAuthority {
    pub(super) fn finish(&self, der: Vec<u8>) -> IssuedCertificate {
        let pem = pem_encode("CERTIFICATE", &der);
        let chain_pem = std::iter::once(pem.clone())
            .chain(self.chain_pems())
            .chain(std::iter::once(self.root_pem.clone()))
            .collect();
        IssuedCertificate {
            der,
            pem,
            chain_pem,
        }
    }

    /// Issues a device certificate for the DPK or a firmware-bound alias key: CA:FALSE,
    /// keyUsage digitalSignature, EKU clientAuth, SKI and AKI, subject CN as requested, and for
    /// an alias key a TCG DICE TcbInfo extension (not critical) naming its firmware.
    ///
    /// # Errors
    /// [`PkiError::InvalidPublicKey`], [`PkiError::InvalidCommonName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`] if signing fails.
    pub fn issue_device_certificate(
        &self,
        request: &LeafRequest,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = validated(&request.public_key)?;
        check_common_name(&request.common_name)?;
        let mut params = end_entity_params(
            self.clamp(request.validity)?,
            request.serial,
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        params
            .distinguished_name
            .push(DnType::CommonName, request.common_name.as_str());
        if let Some(url) = &request.crl_distribution_point {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(firmware) = &request.firmware {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    rot_core::firmware::TCB_INFO_OID,
                    firmware.tcb_info_der().to_vec(),
                ));
        }
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| self.sign_error(e))?;
        Ok(self.finish(cert.der().to_vec()))
    }

    /// Issues an owner's firmware-signing certificate for `public_key`: CA:FALSE, keyUsage
    /// digitalSignature, EKU codeSigning only (so that no TLS stack accepts it for client or
    /// server authentication), SKI and AKI, subject CN as given.
    ///
    /// # Errors
    /// [`PkiError::InvalidPublicKey`], [`PkiError::InvalidCommonName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`] if signing fails.
    pub fn issue_code_signing_certificate(
        &self,
        public_key: &[u8; P256_PUBLIC_KEY_LEN],
        common_name: &str,
        validity: Validity,
        serial: Serial,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = validated(public_key)?;
        check_common_name(common_name)?;
        let mut params = end_entity_params(
            self.clamp(validity)?,
            serial,
            &[ExtendedKeyUsagePurpose::CodeSigning],
        )?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| self.sign_error(e))?;
        Ok(self.finish(cert.der().to_vec()))
    }

    /// Issues the service's own TLS certificate (EKU serverAuth) for a freshly generated key.
    /// The CN is the first name; all names go in the SAN. [`ServerName::loopback`] gives the
    /// default set.
    ///
    /// # Errors
    /// [`PkiError::NoServerNames`], [`PkiError::InvalidDnsName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`].
    pub fn issue_server_certificate(
        &self,
        names: &[ServerName],
        validity: Validity,
        serial: Serial,
    ) -> Result<ServerCredentials, PkiError> {
        let params = server_params(names, self.clamp(validity)?, serial)?;
        let key = generate_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| self.sign_error(e))?;
        let certificate = self.finish(cert.der().to_vec());
        let mut chain_der = vec![certificate.der.clone(), self.der.clone()];
        for intermediate in &self.intermediates_pem {
            chain_der.push(super::cert_pem_to_der(
                "CA certificate chain",
                intermediate,
            )?);
        }
        Ok(ServerCredentials {
            certificate,
            chain_der,
            private_key: PrivateKeyPkcs8::new(key.serialize_der()),
        })
    }

    /// Issues a TLS server certificate (EKU serverAuth) for the key in a PKCS#10 CSR, e.g. an
    /// MQTT broker's, so that its private key never leaves the host that made it. The CSR is
    /// proof of possession only: its self-signature must verify and its key must be P-256, but
    /// its subject and requested extensions are ignored. The certificate says what `names` say
    /// (CN = the first, all in the SAN), as [`CertificateAuthority::issue_server_certificate`].
    ///
    /// # Errors
    /// [`PkiError::Parse`] if `csr_pem` is not a PEM `CERTIFICATE REQUEST` or its
    /// self-signature does not verify; [`PkiError::InvalidPublicKey`] if its key is not an
    /// uncompressed P-256 point; [`PkiError::NoServerNames`], [`PkiError::InvalidDnsName`],
    /// [`PkiError::InvalidValidity`], or [`PkiError::Certificate`].
    pub fn issue_server_certificate_for_csr(
        &self,
        csr_pem: &str,
        names: &[ServerName],
        validity: Validity,
        serial: Serial,
    ) -> Result<IssuedCertificate, PkiError> {
        let public_key = csr_public_key(csr_pem)?;
        let params = server_params(names, self.clamp(validity)?, serial)?;
        let cert = params
            .signed_by(&validated(&public_key)?, &self.issuer)
            .map_err(|e| self.sign_error(e))?;
        Ok(self.finish(cert.der().to_vec()))
    }

    /// Issues a verification certificate: a leaf whose subject CN is a code the cloud handed
    /// out, proving that whoever registers the issuing CA holds its key. AWS IoT's
    /// `RegisterCACertificate` wants the registration code, Azure DPS's proof of possession
    /// the verification code. Its key pair is generated here and dropped unreturned: the
    /// certificate is only ever inspected, never used to authenticate, so it has no extended
    /// key usage at all (not clientAuth: nothing should accept it from a client).
    ///
    /// # Errors
    /// [`PkiError::InvalidCommonName`], [`PkiError::InvalidValidity`], [`PkiError::Random`],
    /// or [`PkiError::Certificate`].
    pub fn issue_verification_certificate(
        &self,
        code: &str,
        validity: Validity,
        serial: Serial,
    ) -> Result<IssuedCertificate, PkiError> {
        check_common_name(code)?;
        let mut params = end_entity_params(self.clamp(validity)?, serial, &[])?;
        params.distinguished_name.push(DnType::CommonName, code);
        let throwaway = generate_key()?;
        let cert = params
            .signed_by(&throwaway, &self.issuer)
            .map_err(|e| self.sign_error(e))?;
        Ok(self.finish(cert.der().to_vec()))
    }

    /// Issues an operator certificate (EKU clientAuth) for `name` (the subject `CN`) carrying
    /// `owner` and `role` in the subject (`O`, `OU`) and as the SAN URI
    /// `urn:oxroot:operator:<owner>:<role>`; [`OperatorIdentity::from_certificate_der`] reads
    /// them back.
    ///
    /// # Errors
    /// [`PkiError::InvalidOwner`], [`PkiError::InvalidOperatorName`],
    /// [`PkiError::InvalidPublicKey`], [`PkiError::InvalidValidity`], or
    /// [`PkiError::Certificate`].
    pub fn issue_operator_certificate(
        &self,
        key: &OperatorKey,
        name: &str,
        owner: &str,
        role: Role,
        validity: Validity,
        serial: Serial,
    ) -> Result<OperatorCredentials, PkiError> {
        validate_owner(owner)?;
        validate_operator_name(name)?;
        let identity = OperatorIdentity {
            name: name.to_owned(),
            owner: owner.to_owned(),
            role,
        };
        let mut params = end_entity_params(
            self.clamp(validity)?,
            serial,
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        let dn = &mut params.distinguished_name;
        dn.push(DnType::OrganizationName, owner);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::URI(identity.urn().try_into()?)];

        let (cert, private_key) = match key {
            OperatorKey::PublicKey(public_key) => (
                params
                    .signed_by(&validated(public_key)?, &self.issuer)
                    .map_err(|e| self.sign_error(e))?,
                None,
            ),
            OperatorKey::Generate => {
                let key = generate_key()?;
                let cert = params
                    .signed_by(&key, &self.issuer)
                    .map_err(|e| self.sign_error(e))?;
                (cert, Some(PrivateKeyPkcs8::new(key.serialize_der())))
            }
        };
        Ok(OperatorCredentials {
            identity,
            certificate: self.finish(cert.der().to_vec()),
            private_key,
        })
    }

    /// Signs a CRL of this CA.
    ///
    /// # Errors
    /// [`PkiError::InvalidCrlPeriod`] unless `next_update` is after `this_update`;
    /// [`PkiError::Certificate`] if signing fails.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        crl_number: u64,
    ) -> Result<Crl, PkiError> {
        if next_update <= this_update {
            return Err(PkiError::InvalidCrlPeriod {
                this_update,
                next_update,
            });
        }
        let number = crl_number.to_be_bytes();
        let skip = ((crl_number.leading_zeros() / 8) as usize).min(7);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from_slice(&number[skip..]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|entry| RevokedCertParams {
                    serial_number: entry.serial.to_rcgen(),
                    revocation_time: entry.revoked_at,
                    reason_code: entry.reason.to_rcgen(),
                    invalidity_date: None,
                })
                .collect(),
            // Must equal the CA's SKI, whatever method made it, so verifiers that match the CRL
            // by AKI find the right issuer.
            key_identifier_method: KeyIdMethod::PreSpecified(self.ski.clone()),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| self.sign_error(e))?;
        Ok(Crl {
            der: crl.der().to_vec(),
            pem: crl.pem()?,
        })
    }
}

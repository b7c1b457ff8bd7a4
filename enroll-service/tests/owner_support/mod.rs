//! What the per-owner CA tests share: the `openssl` CLI as the independent verifier, and an
//! owner's own root made with it (bring your own CA), which signs the service's CSRs.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    reason = "test support; a failed expect is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Runs `openssl ARGS` in `dir`: whether it succeeded, and stdout followed by stderr.
pub fn openssl<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed (apt-get install -y openssl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `openssl verify -x509_strict -purpose sslclient` of `leaf` (a file in `dir`) with
/// `ca_file` as the trust anchors and, if given, `untrusted` as the intermediates offered.
/// No `-partial_chain`: every chain has to reach a self-signed root in `ca_file`.
pub fn verify_leaf(
    dir: &Path,
    ca_file: &str,
    untrusted: Option<&str>,
    leaf: &str,
) -> (bool, String) {
    let mut args = vec![
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        ca_file,
    ];
    if let Some(untrusted) = untrusted {
        args.extend(["-untrusted", untrusted]);
    }
    args.push(leaf);
    openssl(dir, &args)
}

/// Asserts that `leaf` verifies under `ca_file` (and `untrusted`).
pub fn assert_verifies(dir: &Path, ca_file: &str, untrusted: Option<&str>, leaf: &str) {
    let (ok, out) = verify_leaf(dir, ca_file, untrusted, leaf);
    assert!(
        ok && out.contains(&format!("{leaf}: OK")),
        "{leaf} should verify under {ca_file} (+ {untrusted:?}): {out}"
    );
}

/// Asserts that `leaf` does not verify under `ca_file` (and `untrusted`) because no chain to a
/// trusted root can be built, rather than for some other reason.
pub fn assert_no_chain(dir: &Path, ca_file: &str, untrusted: Option<&str>, leaf: &str) {
    let (ok, out) = verify_leaf(dir, ca_file, untrusted, leaf);
    assert!(
        !ok && out.contains("unable to get local issuer certificate"),
        "{leaf} must not verify under {ca_file} (+ {untrusted:?}): {out}"
    );
}

/// `openssl crl -CAfile CHAIN -noout` of the CRL file `crl`: whether its signature verifies
/// with an issuer from `chain`, and what openssl said.
pub fn crl_signed_by(dir: &Path, crl: &str, chain: &str, der: bool) -> (bool, String) {
    let mut args = vec!["crl", "-in", crl, "-CAfile", chain, "-noout"];
    if der {
        args.extend(["-inform", "DER"]);
    }
    let (ok, out) = openssl(dir, &args);
    (ok && out.contains("verify OK"), out)
}

/// The serials a PEM or DER CRL file lists, upper-case hex as openssl prints them.
pub fn crl_serials(dir: &Path, crl: &str, der: bool) -> Vec<String> {
    let mut args = vec!["crl", "-in", crl, "-noout", "-text"];
    if der {
        args.extend(["-inform", "DER"]);
    }
    let (ok, out) = openssl(dir, &args);
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|line| line.trim().strip_prefix("Serial Number: "))
        .map(|serial| serial.trim().to_uppercase())
        .collect()
}

/// A serial as the service prints it (lower-case hex) in openssl's spelling.
pub fn openssl_serial(serial: &str) -> String {
    serial.to_uppercase()
}

/// The DER of every certificate in a PEM text.
pub fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .expect("PEM")
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

/// The DER of the one certificate in a PEM text.
pub fn der(pem_text: &str) -> Vec<u8> {
    let mut all = ders(pem_text);
    assert_eq!(all.len(), 1, "one certificate expected: {pem_text}");
    all.remove(0)
}

/// (subject key identifier, authority key identifier) of a PEM certificate.
pub fn key_ids(pem_text: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let der = der(pem_text);
    let (_, cert) = X509Certificate::from_der(&der).expect("certificate");
    let mut ids = (None, None);
    for ext in cert.iter_extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => ids.0 = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                ids.1 = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            _ => {}
        }
    }
    ids
}

/// Asserts that the CA certificate `ca_pem` signed `leaf_pem` (the leaf's authority key
/// identifier is the CA's subject key identifier, and the signature verifies).
pub fn assert_issued_by(leaf_pem: &str, ca_pem: &str) {
    let (ca_ski, _) = key_ids(ca_pem);
    let (_, leaf_aki) = key_ids(leaf_pem);
    assert!(ca_ski.is_some(), "the CA has no subject key identifier");
    assert_eq!(leaf_aki, ca_ski, "the leaf names another issuer");
    let (leaf_der, ca_der) = (der(leaf_pem), der(ca_pem));
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("leaf");
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("CA");
    leaf.verify_signature(Some(ca.public_key()))
        .expect("the CA's signature");
}

/// Extensions for the certificates an owner's root (made with the openssl CLI) issues.
const CA_CONFIG: &str = "\
[ca]
default_ca = expired
[expired]
database = expired-index.txt
serial = expired-serial.txt
new_certs_dir = .
default_md = sha256
policy = any_name
preserve = yes
[any_name]
organizationName = optional
commonName = optional
[req]
distinguished_name = dn
prompt = no
[dn]
[root]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[root_pathlen_0]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[issuing]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[no_cert_sign]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[no_crl_sign]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[not_a_ca]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

/// An owner's own root, made and kept by the `openssl` CLI in a directory: what an owner with
/// its own PKI does offline with the CSR the service gives it.
#[derive(Debug)]
pub struct OpensslRoot {
    pub dir: PathBuf,
    /// File name of the root key, in `dir`.
    pub key: String,
    /// File name of the root certificate, in `dir`.
    pub certificate: String,
}

impl OpensslRoot {
    /// A self-signed P-256 root `name` (files `name.key`, `name.pem`) in `dir`: CA:true,
    /// keyCertSign and cRLSign, no path length limit, or `pathlen:0` if `pathlen_0`.
    pub fn new(dir: &Path, name: &str, subject: &str, pathlen_0: bool) -> Self {
        std::fs::write(dir.join("ca.cnf"), CA_CONFIG).expect("ca.cnf");
        let (key, certificate) = (format!("{name}.key"), format!("{name}.pem"));
        let (ok, out) = openssl(
            dir,
            &[
                "req",
                "-x509",
                "-config",
                "ca.cnf",
                "-extensions",
                if pathlen_0 { "root_pathlen_0" } else { "root" },
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &certificate,
                "-days",
                "7300",
                "-utf8",
                "-subj",
                subject,
            ],
        );
        assert!(ok, "openssl made no root: {out}");
        Self {
            dir: dir.to_owned(),
            key,
            certificate,
        }
    }

    /// The root certificate, PEM.
    pub fn pem(&self) -> String {
        std::fs::read_to_string(self.dir.join(&self.certificate)).expect("root")
    }

    /// Signs the CSR `csr_pem` with the extensions section `extensions` of [`CA_CONFIG`]
    /// (`issuing` for a proper issuing CA, `not_a_ca` for a certificate that is not one);
    /// writes it to `out` in the root's directory and returns it, PEM.
    pub fn sign(&self, csr_pem: &str, extensions: &str, out: &str) -> String {
        let csr = format!("{out}.csr");
        std::fs::write(self.dir.join(&csr), csr_pem).expect("CSR");
        let (ok, said) = openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.certificate,
                "-CAkey",
                &self.key,
                "-set_serial",
                &format!("0x{}", hex::encode(rand_serial())),
                "-days",
                "3650",
                "-extfile",
                "ca.cnf",
                "-extensions",
                extensions,
                "-out",
                out,
            ],
        );
        assert!(ok, "openssl signed nothing: {said}");
        std::fs::read_to_string(self.dir.join(out)).expect("certificate")
    }

    /// Signs `csr_pem` as a proper issuing CA (the `issuing` extensions) valid only in
    /// January 2020, with `openssl ca` (`openssl x509` cannot back-date); writes it to `out`.
    pub fn sign_expired(&self, csr_pem: &str, out: &str) -> String {
        let csr = format!("{out}.csr");
        std::fs::write(self.dir.join(&csr), csr_pem).expect("CSR");
        std::fs::write(self.dir.join("expired-index.txt"), "").expect("index");
        std::fs::write(
            self.dir.join("expired-serial.txt"),
            hex::encode(rand_serial()),
        )
        .expect("serial");
        let (ok, said) = openssl(
            &self.dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                &self.certificate,
                "-keyfile",
                &self.key,
                "-in",
                &csr,
                "-out",
                out,
                "-notext",
                "-extensions",
                "issuing",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
            ],
        );
        assert!(ok, "openssl signed nothing: {said}");
        std::fs::read_to_string(self.dir.join(out)).expect("certificate")
    }

    /// A CSR for a fresh key that is not the service's (a certificate for it certifies another
    /// key than the pending CA's).
    pub fn foreign_csr(&self, subject: &str) -> String {
        let (ok, out) = openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-config",
                "ca.cnf",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "foreign.key",
                "-out",
                "foreign.csr",
                "-subj",
                subject,
            ],
        );
        assert!(ok, "openssl made no CSR: {out}");
        std::fs::read_to_string(self.dir.join("foreign.csr")).expect("CSR")
    }
}

/// Eight random bytes with the top bit clear: a positive serial.
fn rand_serial() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("RNG");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    bytes
}

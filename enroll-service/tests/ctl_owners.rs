//! `enrollctl owner …` and `enrollctl crl --owner` against the real service over mutual TLS
//! (issue 13), driven in-process with captured output: an owner with its own root from its CSR
//! to its imported CA, a managed owner's rotation and its two CRLs, what each role and owner
//! may do, the exit codes, and human output that escapes what it did not write.
#![allow(clippy::expect_used, reason = "a failed expect is a failed test")]
#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod common;
mod owner_support;

use std::path::Path;

use clap::Parser;
use common::Harness;
use enroll_service::pki::Role;
use enrollctl::{self as ctl, Cli, Exit, Options};
use owner_support::{OpensslRoot, crl_signed_by, der, openssl};
use serde_json::Value;

/// What one `enrollctl` run did.
#[derive(Debug)]
struct Run {
    exit: Exit,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit (and its process exit code) and returns the run.
    fn exits(&self, exit: Exit, code: u8) -> &Self {
        assert_eq!(self.exit, exit, "{self:#?}");
        assert_eq!(self.exit.code(), code, "{self:#?}");
        self
    }

    /// stdout parsed as the one JSON document `--json` prints.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }

    /// Asserts that nothing a terminal would act on was printed, on either stream.
    fn is_terminal_safe(&self) -> &Self {
        for (stream, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let unsafe_char = text
                .chars()
                .find(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c));
            assert!(
                unsafe_char.is_none(),
                "{stream} holds {unsafe_char:?}: {self:#?}"
            );
        }
        self
    }
}

/// `enrollctl --service URL --profile PROFILE ARGS…` in-process.
async fn enrollctl(harness: &Harness, profile: &Path, args: &[&str]) -> Run {
    let url = harness.server.url();
    let mut argv = vec![
        "enrollctl",
        "--service",
        &url,
        "--profile",
        profile.to_str().expect("a UTF-8 path"),
    ];
    argv.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = match Cli::try_parse_from(&argv) {
        Ok(cli) => ctl::run_cli(cli, Options::default(), &mut out, &mut err).await,
        // What the binary does with a command line clap refuses.
        Err(_) => ctl::run(&argv, &mut out, &mut err).await,
    };
    Run {
        exit,
        stdout: String::from_utf8(out).expect("UTF-8 stdout"),
        stderr: String::from_utf8(err).expect("UTF-8 stderr"),
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("a UTF-8 path").to_owned()
}

/// The issuing CA `id` of an owner as `owner get --json` prints it.
fn json_ca<'a>(owner: &'a Value, id: &str) -> &'a Value {
    owner["issuing_cas"]
        .as_array()
        .expect("issuing_cas")
        .iter()
        .find(|ca| ca["id"] == id)
        .unwrap_or_else(|| panic!("no issuing CA {id} in {owner}"))
}

/// A platform admin brings an owner's own CA in with `owner create --own-ca --csr-out`,
/// `owner import-ca` and `owner get --root-out`, rotates it with `owner rotate --csr-out`;
/// lists owners; and a bad import is refused with exit code 2 and a message in which the
/// hostile certificate subject is escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_own_ca_through_enrollctl() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let platform = w.join("platform");
    harness
        .write_profile(&platform, "root-admin", "*", Role::Admin)
        .await;

    let csr = path(w, "byo-1.csr");
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "owner",
            "create",
            "byo",
            "--own-ca",
            "--organisation",
            "BYO Corp",
            "--csr-out",
            &csr,
        ],
    )
    .await;
    run.exits(Exit::Success, 0).is_terminal_safe();
    for line in [
        "created owner byo",
        "own-ca",
        "issuing ca byo/1",
        "pending",
        "CSR waiting for the owner's root",
        &format!("sign {csr} with byo's root"),
        "enrollctl owner import-ca --owner byo",
    ] {
        assert!(run.stdout.contains(line), "{line:?} missing: {run:#?}");
    }
    let (ok, out) = openssl(
        w,
        &["req", "-in", "byo-1.csr", "-noout", "-verify", "-subject"],
    );
    assert!(ok && out.contains("verify OK"), "{out}");
    assert!(out.contains("CN = oxroot byo Issuing CA 1"), "{out}");

    // --own-ca without a place for the CSR is a usage error, before anything is created.
    let run = enrollctl(
        &harness,
        &platform,
        &["owner", "create", "byo2", "--own-ca"],
    )
    .await;
    run.exits(Exit::Usage, 2);
    assert!(run.stderr.contains("--csr-out"), "{run:#?}");
    // An existing CSR file is not overwritten, and the owner is not created either.
    let run = enrollctl(
        &harness,
        &platform,
        &["owner", "create", "byo3", "--own-ca", "--csr-out", &csr],
    )
    .await;
    run.exits(Exit::Failure, 1);
    assert!(
        run.stderr.contains("already exists; not overwriting it"),
        "{run:#?}"
    );
    for never in ["byo2", "byo3"] {
        let run = enrollctl(&harness, &platform, &["owner", "get", never]).await;
        run.exits(Exit::Refused, 3);
        assert!(run.stderr.contains("NOT_FOUND"), "{run:#?}");
    }
    // An owner that exists already: refused, and no CSR written.
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "owner",
            "create",
            "byo",
            "--own-ca",
            "--csr-out",
            &path(w, "again.csr"),
        ],
    )
    .await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("ALREADY_EXISTS"), "{run:#?}");
    assert!(!w.join("again.csr").exists());
    // No CRL before the owner's root has certified its issuing CA.
    let run = enrollctl(&harness, &platform, &["crl", "--owner", "byo"]).await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("FAILED_PRECONDITION"), "{run:#?}");

    // The owner's root, made with openssl, signs the CSR. First a mistake: the certificate
    // comes with another root's chain, one whose name a terminal would act on.
    let root = OpensslRoot::new(w, "root", "/O=BYO Corp/CN=BYO Root CA", false);
    let hostile = OpensslRoot::new(
        w,
        "hostile",
        "/O=Evil/CN=Root \u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}gpj.exe",
        false,
    );
    let csr_pem = std::fs::read_to_string(&csr).expect("CSR");
    hostile.sign(&csr_pem, "issuing", "hostile-issued.pem");
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "owner",
            "import-ca",
            "--owner",
            "byo",
            "--certificate",
            &path(w, "hostile-issued.pem"),
            "--chain",
            &path(w, &root.certificate),
        ],
    )
    .await;
    run.exits(Exit::Usage, 2).is_terminal_safe();
    assert!(
        run.stderr.contains("INVALID_ARGUMENT")
            && run.stderr.contains("is not the next certificate's subject"),
        "{run:#?}"
    );
    // The hostile name is there, visibly escaped.
    assert!(
        run.stderr
            .contains("\\x1b]0;owned\\x07\\x1b[2J\\u{202e}gpj.exe"),
        "{run:#?}"
    );
    // --json carries it exactly.
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "--json",
            "owner",
            "import-ca",
            "--owner",
            "byo",
            "--certificate",
            &path(w, "hostile-issued.pem"),
            "--chain",
            &path(w, &root.certificate),
        ],
    )
    .await;
    run.exits(Exit::Usage, 2);
    let error: Value = serde_json::from_str(run.stderr.trim()).expect("a JSON error");
    assert_eq!(error["error"]["grpc_code"], "INVALID_ARGUMENT", "{error}");
    assert!(
        error["error"]["grpc_message"]
            .as_str()
            .expect("a message")
            .contains("\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}gpj.exe"),
        "{error}"
    );

    let certificate = root.sign(&csr_pem, "issuing", "byo-1.pem");
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "owner",
            "import-ca",
            "--owner",
            "byo",
            "--certificate",
            &path(w, "byo-1.pem"),
            "--chain",
            &path(w, &root.certificate),
        ],
    )
    .await;
    run.exits(Exit::Success, 0).is_terminal_safe();
    assert!(
        run.stdout
            .contains("owner byo's issuing CA byo/1 issues from now on"),
        "{run:#?}"
    );
    // Again: nothing is pending any more.
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "owner",
            "import-ca",
            "--owner",
            "byo",
            "--certificate",
            &path(w, "byo-1.pem"),
            "--chain",
            &path(w, &root.certificate),
        ],
    )
    .await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("FAILED_PRECONDITION"), "{run:#?}");

    // owner get writes the owner's root, its devices' trust anchor.
    let root_out = path(w, "root-out.pem");
    let run = enrollctl(
        &harness,
        &platform,
        &["owner", "get", "byo", "--root-out", &root_out],
    )
    .await;
    run.exits(Exit::Success, 0).is_terminal_safe();
    assert_eq!(
        der(&std::fs::read_to_string(&root_out).expect("root")),
        der(&root.pem())
    );
    for field in [
        "byo",
        "own-ca",
        "issuing ca byo/1",
        "active",
        "*/root-admin",
    ] {
        assert!(run.stdout.contains(field), "{field:?} missing: {run:#?}");
    }
    let run = enrollctl(&harness, &platform, &["--json", "owner", "get", "byo"]).await;
    let owner = run.exits(Exit::Success, 0).json()["owner"].clone();
    assert_eq!(owner["ca_mode"], "CA_MODE_OWN_CA", "{owner}");
    assert_eq!(
        json_ca(&owner, "byo/1")["state"],
        "ISSUING_CA_STATE_ACTIVE",
        "{owner}"
    );
    assert_eq!(
        der(json_ca(&owner, "byo/1")["certificate_pem"]
            .as_str()
            .expect("PEM")),
        der(&certificate)
    );

    // A rotation waits for the root again: the new CSR goes to --csr-out, and without one
    // enrollctl refuses before the service makes a key whose CSR would go nowhere.
    let run = enrollctl(&harness, &platform, &["owner", "rotate", "--owner", "byo"]).await;
    run.exits(Exit::Usage, 2);
    assert!(run.stderr.contains("needs --csr-out FILE"), "{run:#?}");
    let run = enrollctl(&harness, &platform, &["--json", "owner", "get", "byo"]).await;
    let unchanged = run.exits(Exit::Success, 0).json();
    assert!(
        unchanged.to_string().contains("byo/1") && !unchanged.to_string().contains("byo/2"),
        "{unchanged}"
    );
    let csr2 = path(w, "byo-2.csr");
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "--json",
            "owner",
            "rotate",
            "--owner",
            "byo",
            "--csr-out",
            &csr2,
        ],
    )
    .await;
    let rotated = run.exits(Exit::Success, 0).json();
    assert_eq!(rotated["path"], csr2.as_str(), "{rotated}");
    let pending = json_ca(&rotated["owner"], "byo/2");
    assert_eq!(pending["state"], "ISSUING_CA_STATE_PENDING", "{rotated}");
    assert_eq!(
        std::fs::read_to_string(&csr2).expect("CSR"),
        pending["csr_pem"].as_str().expect("CSR")
    );
    assert_eq!(
        json_ca(&rotated["owner"], "byo/1")["state"],
        "ISSUING_CA_STATE_ACTIVE"
    );

    // owner list: every owner for the platform, its own for an owner's operator.
    let run = enrollctl(&harness, &platform, &["owner", "create", "acme"]).await;
    run.exits(Exit::Success, 0);
    assert!(run.stdout.contains("created owner acme"), "{run:#?}");
    let run = enrollctl(&harness, &platform, &["--json", "owner", "list"]).await;
    let listed = run.exits(Exit::Success, 0).json();
    let names: Vec<&str> = listed["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .map(|o| o["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, vec!["acme", "byo"], "{listed}");
    let run = enrollctl(&harness, &platform, &["owner", "list"]).await;
    run.exits(Exit::Success, 0).is_terminal_safe();
    let table = &run.stdout;
    assert!(
        table.contains("NAME") && table.contains("ACTIVE CA"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("byo") && l.contains("byo/1")),
        "{table}"
    );
    let acme = w.join("acme");
    harness
        .write_profile(&acme, "alice", "acme", Role::Operator)
        .await;
    let run = enrollctl(&harness, &acme, &["--json", "owner", "list"]).await;
    let listed = run.exits(Exit::Success, 0).json();
    assert_eq!(listed["owners"].as_array().expect("owners").len(), 1);
    assert_eq!(listed["owners"][0]["name"], "acme");
    let run = enrollctl(&harness, &acme, &["owner", "get", "byo"]).await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("NOT_FOUND"), "{run:#?}");
}

/// A managed owner's rotation with `owner rotate`, its CRLs with `crl --owner` (both live
/// CAs' in PEM, one CA's in DER with `--issuer`), who may ask for what, and escaped names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_crls_through_enrollctl() {
    let harness = Harness::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let platform = w.join("platform");
    harness
        .write_profile(&platform, "root-admin", "*", Role::Admin)
        .await;
    let acme_admin = w.join("acme-admin");
    harness
        .write_profile(&acme_admin, "alice", "acme", Role::Admin)
        .await;
    let acme_operator = w.join("acme-operator");
    harness
        .write_profile(&acme_operator, "oscar", "acme", Role::Operator)
        .await;
    harness
        .write_profile(&w.join("globex"), "gus", "globex", Role::Admin)
        .await;

    // Only admins rotate; acme's admin rotates acme's CA.
    let run = enrollctl(&harness, &acme_operator, &["owner", "rotate"]).await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{run:#?}");
    let run = enrollctl(
        &harness,
        &acme_admin,
        &["owner", "rotate", "--owner", "globex"],
    )
    .await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("NOT_FOUND"), "{run:#?}");
    let run = enrollctl(&harness, &acme_admin, &["owner", "rotate"]).await;
    run.exits(Exit::Success, 0).is_terminal_safe();
    assert!(
        run.stdout.contains(
            "rotated owner acme's issuing CA; acme/2 issues now, retired CAs stay trusted"
        ),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("issuing ca acme/1") && run.stdout.contains("retired"),
        "{run:#?}"
    );
    let run = enrollctl(&harness, &acme_operator, &["--json", "owner", "get"]).await;
    let owner = run.exits(Exit::Success, 0).json()["owner"].clone();
    let chain_of = |id: &str| {
        let ca = json_ca(&owner, id);
        format!(
            "{}{}",
            ca["certificate_pem"].as_str().expect("PEM"),
            owner["root_pem"].as_str().expect("PEM")
        )
    };
    std::fs::write(w.join("acme-1-chain.pem"), chain_of("acme/1")).expect("write");
    std::fs::write(w.join("acme-2-chain.pem"), chain_of("acme/2")).expect("write");

    // Both live CAs' CRLs in one PEM file, the new one first, each signed by its CA.
    let run = enrollctl(
        &harness,
        &acme_operator,
        &["crl", "--owner", "acme", "--out", &path(w, "acme.crl.pem")],
    )
    .await;
    run.exits(Exit::Success, 0).is_terminal_safe();
    assert!(run.stdout.starts_with("wrote CRL #"), "{run:#?}");
    assert!(run.stdout.contains("(0 revoked"), "{run:#?}");
    let both = std::fs::read_to_string(w.join("acme.crl.pem")).expect("CRL");
    let crls: Vec<String> = pem::parse_many(&both)
        .expect("PEM")
        .iter()
        .map(pem::encode)
        .collect();
    assert_eq!(crls.len(), 2, "{both}");
    for (crl, chain) in crls.iter().zip(["acme-2-chain.pem", "acme-1-chain.pem"]) {
        std::fs::write(w.join("one.crl.pem"), crl).expect("write");
        let (ok, out) = crl_signed_by(w, "one.crl.pem", chain, false);
        assert!(ok, "{chain}: {out}");
    }
    // Without --out the CRL is the output (the default owner is the caller's).
    let run = enrollctl(&harness, &acme_operator, &["crl"]).await;
    run.exits(Exit::Success, 0);
    assert_eq!(pem::parse_many(&run.stdout).expect("PEM").len(), 2);
    // DER is one CA's: refused without --issuer while two are live.
    let run = enrollctl(&harness, &acme_operator, &["crl", "--der"]).await;
    run.exits(Exit::Refused, 3);
    assert!(
        run.stderr.contains("FAILED_PRECONDITION") && run.stderr.contains("issuer_id"),
        "{run:#?}"
    );
    let der_out = path(w, "acme-1.crl.der");
    let run = enrollctl(
        &harness,
        &platform,
        &[
            "crl", "--owner", "acme", "--issuer", "acme/1", "--der", "--out", &der_out,
        ],
    )
    .await;
    run.exits(Exit::Success, 0);
    let (ok, out) = crl_signed_by(w, "acme-1.crl.der", "acme-1-chain.pem", true);
    assert!(ok, "the retired CA signs its CRL: {out}");
    let (ok, out) = crl_signed_by(w, "acme-1.crl.der", "acme-2-chain.pem", true);
    assert!(!ok, "{out}");
    // The platform's CRL is not an owner's.
    let run = enrollctl(&harness, &platform, &["--json", "crl", "--owner", "*"]).await;
    let platform_crl = run.exits(Exit::Success, 0).json();
    assert_eq!(platform_crl["issuer_ids"], serde_json::json!(["platform"]));

    // Another owner's CRL is not acme's to read; globex's own is one CA's.
    let run = enrollctl(&harness, &acme_operator, &["crl", "--owner", "globex"]).await;
    run.exits(Exit::Refused, 3);
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{run:#?}");
    let run = enrollctl(&harness, &w.join("globex"), &["--json", "crl"]).await;
    let globex_crl = run.exits(Exit::Success, 0).json();
    assert_eq!(globex_crl["issuer_ids"], serde_json::json!(["globex/1"]));

    // Names typed into the command line come back in refusals visibly escaped.
    let hostile_issuer = "acme/\u{1b}]0;owned\u{7}\u{202e}";
    let run = enrollctl(
        &harness,
        &acme_operator,
        &["crl", "--issuer", hostile_issuer],
    )
    .await;
    run.exits(Exit::Refused, 3).is_terminal_safe();
    assert!(run.stderr.contains("NOT_FOUND"), "{run:#?}");
    let hostile_owner = "\u{1b}[2Jevil\u{202e}";
    let run = enrollctl(&harness, &platform, &["owner", "get", hostile_owner]).await;
    run.exits(Exit::Refused, 3).is_terminal_safe();
    assert!(run.stderr.contains("NOT_FOUND"), "{run:#?}");
    let run = enrollctl(&harness, &platform, &["owner", "create", hostile_owner]).await;
    run.exits(Exit::Usage, 2).is_terminal_safe();
    assert!(run.stderr.contains("INVALID_ARGUMENT"), "{run:#?}");
}

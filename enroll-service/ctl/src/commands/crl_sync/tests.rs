//! The verification `crl sync` does before it replaces a broker's CRL file.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use time::macros::datetime;

use super::{Seen, seen_in_file, verify_crls};

const TRUSTED_CA: &str = include_str!("testdata/trusted-ca.pem");
const OTHER_CA: &str = include_str!("testdata/other-ca.pem");
const CRL_1: &str = include_str!("testdata/crl-1.pem");
const CRL_2: &str = include_str!("testdata/crl-2.pem");
const CRL_3_ONE_DAY: &str = include_str!("testdata/crl-3-one-day.pem");
const FOREIGN: &str = include_str!("testdata/crl-same-name-other-key.pem");

fn trust(pems: &[&str]) -> Vec<Vec<u8>> {
    pems.iter()
        .flat_map(|pem| pem::parse_many(pem.as_bytes()).unwrap())
        .map(pem::Pem::into_contents)
        .collect()
}

#[test]
fn a_crl_signed_by_the_pinned_ca_is_accepted_and_newer_ones_follow() {
    let now = datetime!(2026-12-05 12:00 UTC);
    let mut seen = Seen::new();
    let first = verify_crls(CRL_1.as_bytes(), &trust(&[TRUSTED_CA]), now, &mut seen).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].number, first[0].revoked), (1, 0));
    assert_eq!(first[0].issuer, "O=test, CN=Trusted CA");
    let second = verify_crls(CRL_2.as_bytes(), &trust(&[TRUSTED_CA]), now, &mut seen).unwrap();
    assert_eq!(second[0].number, 2);
    // Two CRLs in one file (a rotation's overlap) are each verified.
    let both = format!("{CRL_2}{CRL_3_ONE_DAY}");
    let both = verify_crls(both.as_bytes(), &trust(&[TRUSTED_CA]), now, &mut seen).unwrap();
    assert_eq!(both.len(), 2);
}

#[test]
fn an_older_crl_than_the_one_written_is_refused() {
    let now = datetime!(2026-12-05 12:00 UTC);
    let mut seen = Seen::new();
    verify_crls(CRL_2.as_bytes(), &trust(&[TRUSTED_CA]), now, &mut seen).unwrap();
    let error = verify_crls(CRL_1.as_bytes(), &trust(&[TRUSTED_CA]), now, &mut seen).unwrap_err();
    assert!(error.contains("older than #2"), "{error}");
    // A refusal changes nothing of what was accepted.
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [2]);
}

#[test]
fn a_crl_of_another_key_or_a_stale_one_or_no_crl_is_refused() {
    let now = datetime!(2026-12-05 12:00 UTC);
    let mut seen = Seen::new();
    // Same issuer name, another key: the signature decides.
    let error = verify_crls(FOREIGN.as_bytes(), &trust(&[TRUSTED_CA]), now, &mut seen).unwrap_err();
    assert!(
        error.contains("not signed by any CA of the pinned trust"),
        "{error}"
    );
    assert!(verify_crls(FOREIGN.as_bytes(), &trust(&[OTHER_CA]), now, &mut seen).is_ok());
    let later = datetime!(2026-12-07 12:00 UTC);
    let error = verify_crls(
        CRL_3_ONE_DAY.as_bytes(),
        &trust(&[TRUSTED_CA]),
        later,
        &mut Seen::new(),
    )
    .unwrap_err();
    assert!(error.contains("stale"), "{error}");
    let before = datetime!(2026-12-01 12:00 UTC);
    let error = verify_crls(
        CRL_1.as_bytes(),
        &trust(&[TRUSTED_CA]),
        before,
        &mut Seen::new(),
    )
    .unwrap_err();
    assert!(error.contains("in the future"), "{error}");
    let error = verify_crls(
        TRUSTED_CA.as_bytes(),
        &trust(&[TRUSTED_CA]),
        now,
        &mut Seen::new(),
    )
    .unwrap_err();
    assert!(error.contains("CERTIFICATE block"), "{error}");
    assert!(verify_crls(b"", &trust(&[TRUSTED_CA]), now, &mut Seen::new()).is_err());
}

#[test]
fn two_cas_of_one_name_number_their_crls_apart() {
    let now = datetime!(2026-12-05 12:00 UTC);
    let mut seen = Seen::new();
    let both = trust(&[TRUSTED_CA, OTHER_CA]);
    verify_crls(CRL_2.as_bytes(), &both, now, &mut seen).unwrap();
    // The other key's CRL has the same issuer name and a lower number: it is its own series.
    let foreign = verify_crls(FOREIGN.as_bytes(), &both, now, &mut seen).unwrap();
    assert!(foreign[0].number < 2, "{foreign:?}");
    assert_eq!(seen.len(), 2);
}

#[test]
fn the_file_an_earlier_run_wrote_is_the_floor_even_when_stale() {
    let later = datetime!(2026-12-07 12:00 UTC);
    let mut seen = seen_in_file(CRL_2.as_bytes(), &trust(&[TRUSTED_CA]));
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [2]);
    let error = verify_crls(CRL_1.as_bytes(), &trust(&[TRUSTED_CA]), later, &mut seen).unwrap_err();
    assert!(error.contains("older than #2"), "{error}");
    // What does not verify, or is no CRL, sets no floor.
    assert!(seen_in_file(FOREIGN.as_bytes(), &trust(&[TRUSTED_CA])).is_empty());
    assert!(seen_in_file(b"garbage", &trust(&[TRUSTED_CA])).is_empty());
}

//! `crl sync`: keeps a broker's CRL file current, so that its CRL never goes stale (Mosquitto
//! refuses every client once the CRL's nextUpdate has passed) and a revocation reaches it in
//! seconds.
//!
//! ```text
//!  WatchCrls(owner) ── a CRL was signed ──┐
//!  every --interval ──────────────────────┼─▶ GetCrl(owner, PEM) ─▶ verify each CRL against
//!  (re)connected ─────────────────────────┘     the pinned trust ─▶ changed? write atomically
//!                                                                   ─▶ run --exec
//! ```
//!
//! A CRL is accepted only if a CA certificate of the pinned trust file (the broker's own CA
//! file, read again every round so that a CA added after a rotation is trusted without a
//! restart) signed it, it is current (thisUpdate not in the future, nextUpdate not past), and
//! its CRL number is not lower than the last one written for that CA's key, counting the CRLs
//! already in the file when the sync starts: a service or a path that hands out an old or
//! foreign CRL cannot make the broker forget a revocation, not even across a restart of the
//! sync. Whatever fails is logged and retried; the file is only ever replaced by one that
//! verifies.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use oxroot_proto::v1::{CrlFormat, GetCrlRequest, WatchCrlsRequest};
use serde_json::json;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::export::write_file;
use super::{Ctx, owner};
use crate::args::CrlSyncArgs;
use crate::error::CtlError;

/// How far in the future a CRL's thisUpdate may be (clocks differ a little).
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
/// The pause before reconnecting after the service went away.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// One CRL of the file, as verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VerifiedCrl {
    /// The signing CA's subject.
    pub(crate) issuer: String,
    /// Its CRL number (0 when it has none, which this service never issues).
    pub(crate) number: u64,
    /// Revoked certificates listed.
    pub(crate) revoked: usize,
    /// nextUpdate.
    pub(crate) next_update: OffsetDateTime,
}

/// The CA certificates of the pinned trust file, DER.
fn read_trust(path: &Path) -> Result<Vec<Vec<u8>>, CtlError> {
    let text = std::fs::read(path).map_err(CtlError::io(path))?;
    let certificates: Vec<Vec<u8>> = pem::parse_many(&text)
        .map_err(|e| CtlError::Credential {
            path: path.to_owned(),
            problem: format!("not PEM: {e}"),
        })?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certificates.is_empty() {
        return Err(CtlError::Credential {
            path: path.to_owned(),
            problem: "holds no certificate: give the broker's CA file (ca.pem of the export)"
                .into(),
        });
    }
    Ok(certificates)
}

/// The last CRL number accepted per signing CA, by the CA's public key (two CAs may share a
/// name, and each numbers its own CRLs).
pub(crate) type Seen = HashMap<Vec<u8>, u64>;

/// A CRL's number (0 when it has none, which this service never issues).
fn crl_number(crl: &CertificateRevocationList<'_>) -> u64 {
    crl.crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_default()
}

/// The CA of `trust` that signed `crl`.
fn signer_of<'t>(
    crl: &CertificateRevocationList<'_>,
    trust: &'t [X509Certificate<'t>],
) -> Option<&'t X509Certificate<'t>> {
    trust
        .iter()
        .find(|ca| ca.subject() == crl.issuer() && crl.verify_signature(ca.public_key()).is_ok())
}

fn parse_trust(trust: &[Vec<u8>]) -> Vec<X509Certificate<'_>> {
    trust
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect()
}

/// The CRL numbers of a file written before (by an earlier run of the sync), for the CRLs in
/// it that a CA of `trust` signed, stale or not: the floor each CA's next CRL must reach.
/// Anything that does not parse or verify counts for nothing.
pub(crate) fn seen_in_file(pem_text: &[u8], trust: &[Vec<u8>]) -> Seen {
    let trust = parse_trust(trust);
    let mut seen = Seen::new();
    for block in pem::parse_many(pem_text).unwrap_or_default() {
        let Ok((_, crl)) = CertificateRevocationList::from_der(block.contents()) else {
            continue;
        };
        if let Some(signer) = signer_of(&crl, &trust) {
            let number = crl_number(&crl);
            let key = signer.public_key().raw.to_vec();
            let last = seen.entry(key).or_default();
            *last = (*last).max(number);
        }
    }
    seen
}

/// Verifies every CRL of a PEM file: each signed by a certificate of `trust`, current at
/// `now`, and numbered no lower than the last one accepted for its signing CA (`seen`,
/// updated).
///
/// # Errors
/// What was wrong, for the log.
pub(crate) fn verify_crls(
    pem_text: &[u8],
    trust: &[Vec<u8>],
    now: OffsetDateTime,
    seen: &mut Seen,
) -> Result<Vec<VerifiedCrl>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("the answer is not PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("the answer holds no CRL".into());
    }
    let trust = parse_trust(trust);
    let mut verified = Vec::new();
    let mut numbers = seen.clone();
    for block in &blocks {
        if block.tag() != "X509 CRL" {
            return Err(format!("the answer holds a {} block", block.tag()));
        }
        let (_, crl) = CertificateRevocationList::from_der(block.contents())
            .map_err(|e| format!("a CRL does not parse: {e}"))?;
        let issuer = crl.issuer().to_string();
        let Some(signer) = signer_of(&crl, &trust) else {
            return Err(format!(
                "the CRL of {issuer} is not signed by any CA of the pinned trust"
            ));
        };
        let signer_key = signer.public_key().raw.to_vec();
        let this_update = crl.last_update().to_datetime();
        if this_update > now + CLOCK_SKEW {
            return Err(format!(
                "the CRL of {issuer} starts in the future ({this_update})"
            ));
        }
        let next_update = crl
            .next_update()
            .map(|t| t.to_datetime())
            .ok_or_else(|| format!("the CRL of {issuer} has no nextUpdate"))?;
        if next_update <= now {
            return Err(format!(
                "the CRL of {issuer} is stale (nextUpdate {next_update})"
            ));
        }
        let number = crl_number(&crl);
        if let Some(&last) = numbers.get(&signer_key)
            && number < last
        {
            return Err(format!(
                "the CRL of {issuer} is #{number}, older than #{last} already written"
            ));
        }
        numbers.insert(signer_key, number);
        verified.push(VerifiedCrl {
            issuer,
            number,
            revoked: crl.iter_revoked_certificates().count(),
            next_update,
        });
    }
    *seen = numbers;
    Ok(verified)
}

/// What one round did.
enum Round {
    /// The file was written (and the command run).
    Written(Vec<VerifiedCrl>),
    /// The CRLs were the ones already in the file.
    Unchanged,
}

/// The sync's state across rounds.
struct Syncer<'a> {
    args: &'a CrlSyncArgs,
    owner: String,
    trust: Vec<Vec<u8>>,
    seen: Seen,
    written: Option<Vec<u8>>,
}

impl Syncer<'_> {
    /// Fetches, verifies, and writes if changed.
    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<Round, CtlError> {
        // The broker's CA file changes when an owner's CA rotates: follow it. One that cannot
        // be read now keeps the last good one (the error is the round's).
        self.trust = read_trust(&self.args.trust)?;
        let response = ctx
            .client()
            .await?
            .get_crl(GetCrlRequest {
                format: CrlFormat::Pem as i32,
                owner: self.owner.clone(),
                issuer_id: String::new(),
            })
            .await
            .map_err(CtlError::rpc("GetCrl"))?
            .into_inner();
        if self.written.as_ref() == Some(&response.crl) {
            return Ok(Round::Unchanged);
        }
        let verified = verify_crls(
            &response.crl,
            &self.trust,
            OffsetDateTime::now_utc(),
            &mut self.seen,
        )
        .map_err(CtlError::BadAnswer)?;
        write_file(&self.args.out, &response.crl, true)?;
        self.written = Some(response.crl);
        Ok(Round::Written(verified))
    }

    /// A round, logged; a new file runs the command.
    async fn round_logged(&mut self, ctx: &mut Ctx<'_>, why: &str) -> Result<(), CtlError> {
        let result = self.round(ctx).await;
        match result {
            Ok(Round::Unchanged) => Ok(()),
            Ok(Round::Written(crls)) => {
                let ran = match &self.args.exec {
                    Some(command) => Some(reload(command).await),
                    None => None,
                };
                let out = self.args.out.display().to_string();
                ctx.emit(
                    || {
                        Ok(json!({
                            "event": "written",
                            "why": why,
                            "path": out,
                            "crls": crls.iter().map(|c| json!({
                                "issuer": c.issuer,
                                "crl_number": c.number.to_string(),
                                "revoked_count": c.revoked,
                                "next_update": c.next_update.to_string(),
                            })).collect::<Vec<_>>(),
                            "exec": ran.clone(),
                        }))
                    },
                    |human| {
                        let summary: Vec<String> = crls
                            .iter()
                            .map(|c| {
                                format!("#{} of {} ({} revoked)", c.number, c.issuer, c.revoked)
                            })
                            .collect();
                        human.line(&format!(
                            "{} {why}: wrote {} to {out}{}",
                            now_text(),
                            summary.join(", "),
                            ran.as_deref().map(|r| format!("; {r}")).unwrap_or_default()
                        ))
                    },
                )
            }
            Err(e) => {
                let message = e.to_string();
                ctx.emit(
                    || Ok(json!({"event": "error", "why": why, "error": message})),
                    |human| {
                        human.line(&format!(
                            "{} {why}: kept the current file: {message}",
                            now_text()
                        ))
                    },
                )?;
                Err(e)
            }
        }
    }
}

/// Runs the reload command; says how it ended.
async fn reload(command: &str) -> String {
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
    {
        Ok(status) if status.success() => format!("ran `{command}`"),
        Ok(status) => format!("`{command}` failed ({status})"),
        Err(e) => format!("could not run `{command}`: {e}"),
    }
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(super) async fn run(args: CrlSyncArgs, ctx: &mut Ctx<'_>) -> Result<(), CtlError> {
    let trust = read_trust(&args.trust)?;
    // What an earlier run wrote is the floor: a restart must not let an older CRL back in.
    let seen = match std::fs::read(&args.out) {
        Ok(previous) => seen_in_file(&previous, &trust),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::new(),
        Err(e) => return Err(CtlError::io(&args.out)(e)),
    };
    let mut syncer = Syncer {
        trust,
        owner: owner(args.owner.clone()),
        args: &args,
        seen,
        written: None,
    };
    if args.once {
        return syncer.round_logged(ctx, "once").await;
    }
    loop {
        // Connected (again): fetch at once, then on every notice and every interval.
        let watch = match ctx.client().await {
            Ok(mut client) => client
                .watch_crls(WatchCrlsRequest {
                    owner: syncer.owner.clone(),
                })
                .await
                .map_err(CtlError::rpc("WatchCrls")),
            Err(e) => Err(e),
        };
        let mut notices = match watch {
            Ok(response) => response.into_inner(),
            Err(e) => {
                let message = e.to_string();
                ctx.emit(
                    || Ok(json!({"event": "error", "why": "connect", "error": message})),
                    |human| {
                        human.line(&format!(
                            "{} cannot watch the CRLs, retrying: {message}",
                            now_text()
                        ))
                    },
                )?;
                tokio::time::sleep(RECONNECT_AFTER).await;
                continue;
            }
        };
        let _ = syncer.round_logged(ctx, "connected").await;
        let mut tick = tokio::time::interval(args.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                notice = notices.message() => {
                    if let Ok(Some(notice)) = notice {
                        let why = format!("CRL #{} of {} signed", notice.crl_number, notice.issuer_id);
                        let _ = syncer.round_logged(ctx, &why).await;
                    } else {
                        ctx.emit(
                            || Ok(json!({"event": "reconnecting"})),
                            |human| human.line(&format!("{} the CRL watch ended; reconnecting", now_text())),
                        )?;
                        break;
                    }
                }
                _ = tick.tick() => {
                    let _ = syncer.round_logged(ctx, "interval").await;
                }
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

#[cfg(test)]
mod tests;

//! The outcome of `batch import` and `batch create --devices`: the service's report and the
//! records enrollctl could not read, in the file's line order.

use std::io;

use oxroot_proto::v1::{BatchCounts, ImportRejection, ImportReport};

use crate::import::LocalRejection;
use crate::output::{Human, Table, rejection_name};

/// What an import did, from both sides.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ImportSummary {
    pub(crate) batch_id: String,
    /// How the file was read (`ImportFormat::as_str`).
    pub(crate) format: &'static str,
    /// The service's reports, summed over the calls; rejection lines are the file's lines.
    pub(crate) report: ImportReport,
    /// Records that could not be read, and were not sent.
    pub(crate) local: Vec<ImportRejection>,
    /// The batch's counts after the last call, if the service sent them.
    pub(crate) counts: Option<BatchCounts>,
}

impl ImportSummary {
    /// Rejected records, unreadable ones included.
    pub(crate) fn rejected(&self) -> u64 {
        self.report.rejected + u64::try_from(self.local.len()).unwrap_or(u64::MAX)
    }

    /// Adds one service report (one ImportDevices call).
    pub(crate) fn add(&mut self, report: ImportReport) {
        self.report.accepted += report.accepted;
        self.report.unchanged += report.unchanged;
        self.report.rejected += report.rejected;
        self.report.rejections.extend(report.rejections);
        self.report.rejections_truncated |= report.rejections_truncated;
    }

    /// The summary line, the rejections of both sides in line order, and the new counts.
    pub(crate) fn write(&self, out: &mut Human<'_>) -> io::Result<()> {
        out.line(&format!(
            "batch {}: {} accepted, {} unchanged, {} rejected ({} unreadable, {} by the service)",
            self.batch_id,
            self.report.accepted,
            self.report.unchanged,
            self.rejected(),
            self.local.len(),
            self.report.rejected
        ))?;
        let rows = merge_rejections(&self.local, &self.report.rejections);
        if !rows.is_empty() {
            let mut table = Table::new(&["LINE", "DEVICE", "REASON", "MESSAGE"]);
            for row in rows {
                table.row(vec![
                    row.rejection.line.to_string(),
                    row.rejection.device_id.clone(),
                    rejection_name(row.rejection.reason),
                    row.rejection.message.clone(),
                ]);
            }
            out.table(&table)?;
        }
        if self.report.rejections_truncated {
            out.line(
                "(the service listed only the first of its rejections; query the audit log \
                 for the rest)",
            )?;
        }
        if let Some(counts) = &self.counts {
            out.line(&format!(
                "batch now: {}",
                super::batch::counts_text(Some(counts))
            ))?;
        }
        Ok(())
    }
}

/// An unreadable record as the contract's rejection, so that both sides print alike.
pub(crate) fn local_rejection(rejection: &LocalRejection) -> ImportRejection {
    ImportRejection {
        line: rejection.line,
        device_id: rejection.device_id.clone(),
        reason: rejection.reason as i32,
        message: rejection.message.clone(),
    }
}

/// One rejected record, from either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RejectionRow<'a> {
    rejection: &'a ImportRejection,
    /// `enrollctl` (could not be read) or `service`.
    source: &'static str,
}

/// Local and service rejections in line order; for the same line the local one comes first
/// (it cannot happen today, but the order must not depend on sort stability accidents).
fn merge_rejections<'a>(
    local: &'a [ImportRejection],
    service: &'a [ImportRejection],
) -> Vec<RejectionRow<'a>> {
    let mut rows: Vec<_> = local
        .iter()
        .map(|rejection| RejectionRow {
            rejection,
            source: "enrollctl",
        })
        .chain(service.iter().map(|rejection| RejectionRow {
            rejection,
            source: "service",
        }))
        .collect();
    rows.sort_by_key(|row| (row.rejection.line, row.source != "enrollctl"));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::testing::{HOSTILE, assert_escaped, human, json_of};
    use oxroot_proto::v1::ImportRejectionReason;

    #[test]
    fn rejections_merge_in_line_order() {
        let local = vec![local_rejection(&LocalRejection {
            line: 3,
            device_id: String::new(),
            reason: ImportRejectionReason::Malformed,
            message: "invalid JSON".into(),
        })];
        let service = vec![
            ImportRejection {
                line: 1,
                device_id: "aa".into(),
                reason: ImportRejectionReason::InvalidDeviceId as i32,
                message: "not 64 hex".into(),
            },
            ImportRejection {
                line: 7,
                device_id: "bb".into(),
                reason: ImportRejectionReason::Duplicate as i32,
                message: "seen on line 2".into(),
            },
        ];
        let rows = merge_rejections(&local, &service);
        let lines: Vec<_> = rows.iter().map(|r| (r.rejection.line, r.source)).collect();
        assert_eq!(lines, [(1, "service"), (3, "enrollctl"), (7, "service")]);
        assert_eq!(
            rejection_name(rows[0].rejection.reason),
            "invalid-device-id"
        );
        assert_eq!(rejection_name(rows[1].rejection.reason), "malformed");
    }

    #[test]
    fn import_summary_counts_both_sides() {
        let mut summary = ImportSummary {
            batch_id: "b1".into(),
            format: "csv",
            local: vec![ImportRejection::default()],
            ..ImportSummary::default()
        };
        summary.add(ImportReport {
            accepted: 3,
            unchanged: 1,
            rejected: 1,
            ..ImportReport::default()
        });
        summary.add(ImportReport {
            accepted: 2,
            rejected: 1,
            rejections_truncated: true,
            ..ImportReport::default()
        });
        assert_eq!(summary.rejected(), 3);
        let text = human(|out| summary.write(out));
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("batch b1: 5 accepted, 1 unchanged, 3 rejected (1 unreadable, 2 by the service)")
        );
        assert!(
            text.contains("(the service listed only the first"),
            "{text}"
        );
    }

    #[test]
    fn hostile_rejections_are_escaped_for_humans_and_exact_in_json() {
        let mut summary = ImportSummary {
            batch_id: "b1".into(),
            ..ImportSummary::default()
        };
        let hostile = ImportRejection {
            line: 4,
            device_id: HOSTILE.into(),
            reason: ImportRejectionReason::InvalidDeviceId as i32,
            message: HOSTILE.into(),
        };
        summary.add(ImportReport {
            rejected: 1,
            rejections: vec![hostile.clone()],
            ..ImportReport::default()
        });
        summary.local.push(local_rejection(&LocalRejection {
            line: 2,
            device_id: HOSTILE.into(),
            reason: ImportRejectionReason::Malformed,
            message: "unreadable".into(),
        }));
        assert_escaped(&human(|out| summary.write(out)), 3);
        let json = json_of(&hostile);
        assert_eq!(json["device_id"], HOSTILE);
        assert_eq!(json["message"], HOSTILE);
        assert_eq!(json["line"], "4");
        assert_eq!(json["reason"], "IMPORT_REJECTION_REASON_INVALID_DEVICE_ID");
    }
}

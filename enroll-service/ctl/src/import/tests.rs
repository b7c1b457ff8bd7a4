//! One table of files and what each must parse to, driven by one runner, then the cases that
//! need more than ids (offline registrations) and the whole-file errors.

use super::*;

const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const B: &str = "FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100";
const C: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// What a file must parse to: records as (number, DeviceId), rejections as (number, a phrase
/// the message must contain).
struct Case {
    name: &'static str,
    input: String,
    format: ImportFormat,
    detected: ImportFormat,
    records: Vec<(u64, &'static str)>,
    rejections: Vec<(u64, &'static str)>,
}

fn case(name: &'static str, input: impl Into<String>, detected: ImportFormat) -> Case {
    Case {
        name,
        input: input.into(),
        format: ImportFormat::Auto,
        detected,
        records: Vec::new(),
        rejections: Vec::new(),
    }
}

impl Case {
    fn forced(mut self, format: ImportFormat) -> Self {
        self.format = format;
        self
    }
    fn ids(mut self, ids: &[(u64, &'static str)]) -> Self {
        self.records = ids.to_vec();
        self
    }
    fn rejects(mut self, rejections: &[(u64, &'static str)]) -> Self {
        self.rejections = rejections.to_vec();
        self
    }
}

fn ids_of(parsed: &ParsedImport) -> Vec<(u64, String)> {
    parsed
        .records
        .iter()
        .map(|r| match &r.record {
            Some(import_record::Record::DeviceId(id)) => (r.line, id.clone()),
            other => panic!("line {}: expected a DeviceId, got {other:?}", r.line),
        })
        .collect()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one table, one row per case")]
fn table_of_files() {
    use ImportFormat::{Csv, Jsonl, Quarklink};
    let cases = vec![
        // QuarkLink documents.
        case("quarklink one line", format!(r#"{{"devices": ["{A}", "{B}"]}}"#), Quarklink)
            .ids(&[(1, A), (2, B)]),
        case(
            "quarklink pretty, CRLF",
            format!("{{\r\n  \"devices\": [\r\n    \"{A}\",\r\n    \"{B}\"\r\n  ]\r\n}}\r\n"),
            Quarklink,
        )
        .ids(&[(1, A), (2, B)]),
        case(
            "quarklink with BOM",
            format!("\u{FEFF}{{\"devices\": [\"{A}\"]}}"),
            Quarklink,
        )
        .ids(&[(1, A)]),
        case(
            "quarklink objects under every id key",
            format!(
                r#"{{"devices": [{{"device_id": "{A}"}}, {{"deviceId": "{B}", "name": "x"}}, {{"id": " {C} "}}]}}"#
            ),
            Quarklink,
        )
        .ids(&[(1, A), (2, B), (3, C)]),
        case(
            "quarklink numbers are elements, not lines",
            format!("{{\n\"batch\": \"x\",\n\"devices\": [\n\"{A}\",\n42,\n\"{B}\"\n]\n}}"),
            Quarklink,
        )
        .ids(&[(1, A), (3, B)])
        .rejects(&[(2, "a number is not a DeviceId")]),
        case(
            "quarklink bad elements do not stop the import",
            format!(
                r#"{{"devices": [null, {{"name": "x"}}, {{"device_id": 7}}, ["{A}"], "{B}"]}}"#
            ),
            Quarklink,
        )
        .ids(&[(5, B)])
        .rejects(&[
            (1, "null is not a DeviceId"),
            (2, "has no device_id"),
            (3, "device_id is a number"),
            (4, "an array is not a DeviceId"),
        ]),
        case("quarklink empty list", r#"{"devices": []}"#, Quarklink),
        case(
            "quarklink keeps mixed case and odd ids for the service to judge",
            format!(r#"{{"devices": ["{B}", "xyz", ""]}}"#),
            Quarklink,
        )
        .ids(&[(1, B), (2, "xyz"), (3, "")]),
        // JSON lines.
        case("jsonl strings", format!("\"{A}\"\n\"{B}\"\n"), Jsonl).ids(&[(1, A), (2, B)]),
        case(
            "jsonl CRLF, blank lines and indentation keep physical line numbers",
            format!("\r\n\"{A}\"\r\n\r\n   \r\n  \"{B}\"  \r\n"),
            Jsonl,
        )
        .ids(&[(2, A), (5, B)]),
        case(
            "jsonl objects",
            format!("{{\"device_id\": \"{A}\", \"lot\": 7}}\n{{\"id\": \"{B}\"}}"),
            Jsonl,
        )
        .ids(&[(1, A), (2, B)]),
        case(
            "jsonl with BOM",
            format!("\u{FEFF}\"{A}\"\n"),
            Jsonl,
        )
        .ids(&[(1, A)]),
        case(
            "jsonl malformed lines are rejected one by one",
            format!("\"{A}\"\n\"{B}\n{{\"device_id\": }}\n17\n{{}}\n\"{C}\""),
            Jsonl,
        )
        .ids(&[(1, A), (6, C)])
        .rejects(&[
            (2, "invalid JSON at column"),
            (3, "invalid JSON at column"),
            (4, "a number is not a DeviceId"),
            (5, "has no device_id"),
        ]),
        case(
            "jsonl first line broken but others fine, forced",
            format!("{{\"device_id\": \n{{\"device_id\": \"{A}\"}}"),
            Jsonl,
        )
        .forced(Jsonl)
        .ids(&[(2, A)])
        .rejects(&[(1, "invalid JSON")]),
        case(
            "jsonl one-line object that happens to have a devices key is QuarkLink",
            format!("{{\"devices\": [\"{A}\"]}}\n"),
            Quarklink,
        )
        .ids(&[(1, A)]),
        // CSV.
        case("csv minimal", format!("device_id\n{A}\n{B}\n"), Csv).ids(&[(2, A), (3, B)]),
        case(
            "csv extra columns, any position, CRLF, BOM",
            format!("\u{FEFF}lot,Device_ID,station\r\n7,{A},s1\r\n8,{B},s2\r\n"),
            Csv,
        )
        .ids(&[(2, A), (3, B)]),
        case(
            "csv blank lines are skipped, line numbers stay physical",
            format!("device_id\n\n{A}\n\n\n{B}"),
            Csv,
        )
        .ids(&[(3, A), (6, B)]),
        case(
            "csv quoted cells and whitespace",
            format!("name,device_id\n\"a, b\",\" {A} \"\nc,  {B}\t\n"),
            Csv,
        )
        .ids(&[(2, A), (3, B)]),
        case(
            "csv short and empty rows are rejected, not fatal",
            format!("lot,device_id\n1\n2,\n3,{A}\n,\n4, \n"),
            Csv,
        )
        .ids(&[(4, A)])
        .rejects(&[
            (2, "the row has 1 column(s); device_id is column 2"),
            (3, "device_id is empty"),
            (6, "device_id is empty"),
        ]),
        case(
            "csv rows of bare separators and spaces are padding, not records",
            format!("device_id,lot\r\n{A},1\r\n,\r\n  \r\n , \r\n{B},2\r\n,,\r\n"),
            Csv,
        )
        .ids(&[(2, A), (6, B)]),
        case(
            "csv quoted cell spanning lines keeps later line numbers right",
            format!("note,device_id\r\n\"two\r\nlines\",{A}\r\nx,{B}\r\n"),
            Csv,
        )
        .ids(&[(2, A), (4, B)]),
        case(
            "csv repeated header row from concatenated files is skipped",
            format!("device_id,lot\n{A},1\ndevice_id,lot\n{B},2\n"),
            Csv,
        )
        .ids(&[(2, A), (4, B)]),
        case("csv header only", "device_id\n", Csv),
        case(
            "csv forced on a single-column list",
            format!("device_id\r\n{B}"),
            Csv,
        )
        .forced(Csv)
        .ids(&[(2, B)]),
    ];

    for case in cases {
        let parsed = parse_import(case.input.as_bytes(), case.format)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(parsed.format, case.detected, "{}: format", case.name);
        let expected: Vec<(u64, String)> = case
            .records
            .iter()
            .map(|&(line, id)| (line, id.to_owned()))
            .collect();
        assert_eq!(ids_of(&parsed), expected, "{}: records", case.name);
        assert_eq!(
            parsed.rejections.len(),
            case.rejections.len(),
            "{}: rejections {:?}",
            case.name,
            parsed.rejections
        );
        for (got, &(line, phrase)) in parsed.rejections.iter().zip(&case.rejections) {
            assert_eq!(got.line, line, "{}: {got:?}", case.name);
            assert!(
                got.message.contains(phrase),
                "{}: {:?} should contain {phrase:?}",
                case.name,
                got.message
            );
            assert_eq!(got.reason, ImportRejectionReason::Malformed);
        }
    }
}

#[test]
fn whole_file_errors_name_the_position() {
    let cases: Vec<(&str, Vec<u8>, ImportFormat, ImportFileError)> = vec![
        (
            "empty",
            b"".to_vec(),
            ImportFormat::Auto,
            ImportFileError::Empty,
        ),
        (
            "whitespace",
            b" \r\n\t\n".to_vec(),
            ImportFormat::Csv,
            ImportFileError::Empty,
        ),
        (
            "BOM only",
            "\u{FEFF}\n".as_bytes().to_vec(),
            ImportFormat::Auto,
            ImportFileError::Empty,
        ),
        (
            "utf-16",
            vec![0xFF, 0xFE, b'd', 0],
            ImportFormat::Auto,
            ImportFileError::Utf16,
        ),
        (
            "latin-1 on line 2",
            b"device_id\nab\xE9cd\n".to_vec(),
            ImportFormat::Auto,
            ImportFileError::NotUtf8 { line: 2, column: 3 },
        ),
        (
            "bare array",
            format!("[\"{A}\"]").into_bytes(),
            ImportFormat::Auto,
            ImportFileError::NotDeviceList("a bare JSON array".into()),
        ),
        (
            "no devices key",
            b"{\n\"items\": []\n}".to_vec(),
            ImportFormat::Auto,
            ImportFileError::NotDeviceList("no \"devices\" key".into()),
        ),
        (
            "devices not an array",
            b"{\"devices\": \"abc\"}".to_vec(),
            ImportFormat::Quarklink,
            ImportFileError::NotDeviceList("\"devices\" is a string".into()),
        ),
        (
            "document is an array, forced",
            b"[]".to_vec(),
            ImportFormat::Quarklink,
            ImportFileError::NotDeviceList("the document is an array".into()),
        ),
        (
            "csv without device_id column",
            format!("id,lot\n{A},1\n").into_bytes(),
            ImportFormat::Auto,
            ImportFileError::NoDeviceIdColumn { line: 1 },
        ),
        (
            "csv header after blank lines",
            b"\n\nserial\nx\n".to_vec(),
            ImportFormat::Csv,
            ImportFileError::NoDeviceIdColumn { line: 3 },
        ),
        (
            "csv naming device_id twice",
            format!("device_id,lot,DEVICE_ID\n{A},1,{B}\n").into_bytes(),
            ImportFormat::Auto,
            ImportFileError::DuplicateDeviceIdColumn {
                line: 1,
                first: 1,
                second: 3,
            },
        ),
        (
            "plain id list without header",
            format!("{A}\n{B}\n").into_bytes(),
            ImportFormat::Auto,
            ImportFileError::NoDeviceIdColumn { line: 1 },
        ),
    ];
    for (name, input, format, expected) in cases {
        assert_eq!(parse_import(&input, format), Err(expected), "{name}");
    }
}

#[test]
fn broken_quarklink_document_reports_line_and_column() {
    let input = format!("{{\n  \"devices\": [\n    \"{A}\",\n    \"{B}\"\n    \"{C}\"\n  ]\n}}\n");
    match parse_import(input.as_bytes(), ImportFormat::Auto) {
        Err(ImportFileError::Json {
            line,
            column,
            message,
        }) => {
            assert_eq!(line, 5);
            assert!(column > 0);
            assert!(message.contains("expected"), "{message}");
            assert!(
                !message.contains("at line"),
                "position is not repeated: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A JSON lines file forced through the QuarkLink parser fails on line 2.
    let input = format!("{{\"devices\": [\"{A}\"]}}\n\"{B}\"\n");
    assert!(matches!(
        parse_import(input.as_bytes(), ImportFormat::Quarklink),
        Err(ImportFileError::Json { line: 2, .. })
    ));
}

#[test]
fn offline_registrations_become_registration_records() {
    let line = r#"{"epk": "04AABB", "proof_signature": "cc dd", "proof_context": "", "claimed_device_id": " abc ",
                  "context": {"site": "s1", "station": "st-2", "firmware_version": "1.2.3", "labels": {"lot": "2024-17"}}}"#
        .replace('\n', " ")
        .replace("cc dd", "ccdd");
    let parsed = parse_import(line.as_bytes(), ImportFormat::Auto).expect("parses");
    assert_eq!(parsed.format, ImportFormat::Jsonl);
    assert!(parsed.rejections.is_empty(), "{:?}", parsed.rejections);
    let Some(import_record::Record::Registration(registration)) = &parsed.records[0].record else {
        panic!("{:?}", parsed.records);
    };
    assert_eq!(parsed.records[0].line, 1);
    assert_eq!(registration.epk, [0x04, 0xAA, 0xBB]);
    assert_eq!(registration.proof_signature, [0xCC, 0xDD]);
    assert!(registration.proof_context.is_empty());
    assert_eq!(registration.claimed_device_id, "abc");
    let context = registration.context.as_ref().expect("context");
    assert_eq!(context.site, "s1");
    assert_eq!(context.station, "st-2");
    assert_eq!(context.firmware_version, "1.2.3");
    assert_eq!(
        context.labels.get("lot").map(String::as_str),
        Some("2024-17")
    );
}

#[test]
fn registration_without_optional_fields_takes_device_id_as_the_claim() {
    let input = format!(
        "\"{A}\"\n{{\"epk\": \"04\", \"proof_signature\": \"00\", \"device_id\": \"{B}\"}}\n"
    );
    let parsed = parse_import(input.as_bytes(), ImportFormat::Auto).expect("parses");
    assert_eq!(parsed.records.len(), 2);
    let Some(import_record::Record::Registration(registration)) = &parsed.records[1].record else {
        panic!("{:?}", parsed.records);
    };
    assert_eq!(parsed.records[1].line, 2);
    assert_eq!(registration.claimed_device_id, B);
    assert!(registration.context.is_none());
    assert!(registration.proof_context.is_empty());
}

#[test]
fn bad_registrations_are_rejected_with_the_field_and_the_claimed_id() {
    let lines = [
        (
            r#"{"epk": "zz", "proof_signature": "00"}"#,
            "epk is not hex",
        ),
        (r#"{"epk": "04"}"#, "proof_signature is missing"),
        (r#"{"epk": 4, "proof_signature": "00"}"#, "epk is a number"),
        (
            r#"{"epk": "04", "proof_signature": "00", "proof_context": "0"}"#,
            "proof_context is not hex",
        ),
        (
            r#"{"epk": "04", "proof_signature": "00", "context": "x"}"#,
            "context is a string",
        ),
        (
            r#"{"epk": "04", "proof_signature": "00", "context": {"site": 1}}"#,
            "context.site is a number",
        ),
        (
            r#"{"epk": "04", "proof_signature": "00", "context": {"labels": {"lot": 7}}}"#,
            "context.labels.lot is a number",
        ),
        (
            r#"{"epk": "04", "proof_signature": "00", "context": {"labels": []}}"#,
            "context.labels is an array",
        ),
        (
            r#"{"epk": "04", "proof_signature": "00", "claimed_device_id": 5}"#,
            "claimed_device_id is a number",
        ),
    ];
    let input = lines.map(|(l, _)| l).join("\n");
    let parsed = parse_import(input.as_bytes(), ImportFormat::Jsonl).expect("parses");
    assert!(parsed.records.is_empty(), "{:?}", parsed.records);
    assert_eq!(parsed.rejections.len(), lines.len());
    for (i, (rejection, (_, phrase))) in parsed.rejections.iter().zip(&lines).enumerate() {
        assert_eq!(rejection.line, i as u64 + 1);
        assert!(
            rejection.message.contains(phrase),
            "{:?} should contain {phrase:?}",
            rejection.message
        );
    }

    let named = format!(r#"{{"epk": "xx", "proof_signature": "00", "claimed_device_id": "{A}"}}"#);
    let parsed = parse_import(named.as_bytes(), ImportFormat::Jsonl).expect("parses");
    assert_eq!(parsed.rejections[0].device_id, A);
}

#[test]
fn quarklink_elements_are_ids_only() {
    // Registrations belong in JSON lines; inside a QuarkLink list an object with only an epk
    // is a record without DeviceId rather than a silently different kind of record.
    let input = r#"{"devices": [{"epk": "04", "proof_signature": "00"}]}"#;
    let parsed = parse_import(input.as_bytes(), ImportFormat::Auto).expect("parses");
    assert!(parsed.records.is_empty());
    assert!(parsed.rejections[0].message.contains("no device_id"));
}

#[test]
fn a_large_file_keeps_every_line_number() {
    let input: String = std::iter::once("device_id".to_owned())
        .chain((0..5_000u32).map(|i| format!("{i:064x}")))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed = parse_import(input.as_bytes(), ImportFormat::Auto).expect("parses");
    assert_eq!(parsed.records.len(), 5_000);
    assert!(
        parsed
            .records
            .iter()
            .enumerate()
            .all(|(i, r)| r.line == i as u64 + 2)
    );
}

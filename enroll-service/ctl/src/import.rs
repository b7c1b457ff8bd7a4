//! Device lists as factories hand them over, parsed into `ImportRecord`s.
//!
//! Three formats, told apart by content under [`ImportFormat::Auto`]:
//!
//! | format | looks like | record number |
//! |---|---|---|
//! | QuarkLink | `{"devices": ["<64 hex>", {"device_id": "…"}, …]}` | element index, from 1 |
//! | JSON lines | one `"<64 hex>"`, `{"device_id": …}` or offline registration per line | line, from 1 |
//! | CSV | a header row with a `device_id` column, extra columns ignored | line, from 1 |
//!
//! Detection looks at the first non-empty line only: `"` means JSON lines; `{` means JSON lines
//! if that line is a JSON value on its own (and not a one-line `{"devices": …}` document),
//! otherwise a QuarkLink document spread over several lines; anything else is CSV. Pass an
//! explicit format when a file defeats this.
//!
//! Two kinds of failure, as the service's import report has them: a record that cannot be read
//! (bad JSON on one line, an object without `device_id`, an empty cell) is a
//! [`LocalRejection`] with its number and the rest of the file is still imported; a file that
//! cannot be read at all (not UTF-8, a broken JSON document, a CSV without `device_id` column)
//! is an [`ImportFileError`] naming the position.
//!
//! Values are trimmed and otherwise passed on untouched: the service is the one place that
//! decides what a valid DeviceId is (it accepts either hex case), so this parser does not
//! second-guess it.

use std::collections::HashMap;

use oxroot_proto::v1::{
    ImportRecord, ImportRejectionReason, OfflineRegistration, RegistrationContext, import_record,
};
use serde_json::{Map, Value};

/// Keys under which a JSON object may carry its DeviceId, in order of preference. QuarkLink's
/// own exports and hand-written files use all three.
const ID_KEYS: [&str; 3] = ["device_id", "deviceId", "id"];

/// Format of an import file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// Decide from the content (see the module documentation).
    #[default]
    Auto,
    /// QuarkLink's `{"devices": [...]}` document.
    Quarklink,
    /// One JSON value per line.
    Jsonl,
    /// Comma-separated values with a header row naming a `device_id` column.
    Csv,
}

impl ImportFormat {
    /// The format's name as the `--format` option spells it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Quarklink => "quarklink",
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
        }
    }
}

/// The records of an import file, and the records that could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedImport {
    /// The format the file was parsed as (never [`ImportFormat::Auto`]).
    pub format: ImportFormat,
    /// Readable records, in file order, each with its line (or element) number.
    pub records: Vec<ImportRecord>,
    /// Unreadable records, in file order.
    pub rejections: Vec<LocalRejection>,
}

/// A record rejected by enrollctl before it reached the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRejection {
    /// Line (or element) number, from 1.
    pub line: u64,
    /// The DeviceId, if one could be read.
    pub device_id: String,
    /// Always [`ImportRejectionReason::Malformed`] today; kept so that local and service
    /// rejections print and serialise alike.
    pub reason: ImportRejectionReason,
    /// What is wrong with the record.
    pub message: String,
}

/// A file that cannot be imported at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportFileError {
    /// The file starts with a UTF-16 byte order mark.
    #[error("the file is UTF-16; save it as UTF-8")]
    Utf16,
    /// The file is not UTF-8.
    #[error("not UTF-8 text (line {line}, column {column})")]
    NotUtf8 {
        /// Line of the first bad byte, from 1.
        line: u64,
        /// Byte column of the first bad byte, from 1.
        column: u64,
    },
    /// Nothing but whitespace.
    #[error("the file is empty")]
    Empty,
    /// A QuarkLink document that is not valid JSON.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// Line, from 1.
        line: u64,
        /// Column, from 1.
        column: u64,
        /// The parser's description.
        message: String,
    },
    /// Valid JSON of the wrong shape.
    #[error("not a QuarkLink device list ({0}); expected {{\"devices\": [...]}}")]
    NotDeviceList(String),
    /// A CSV header without a `device_id` column.
    #[error(
        "the CSV header on line {line} has no device_id column (a plain list of ids needs a \
         first line reading device_id)"
    )]
    NoDeviceIdColumn {
        /// Line of the header.
        line: u64,
    },
    /// A CSV header naming `device_id` twice: which one is meant cannot be guessed.
    #[error("the CSV header on line {line} names device_id twice (columns {first} and {second})")]
    DuplicateDeviceIdColumn {
        /// Line of the header.
        line: u64,
        /// First column, from 1.
        first: usize,
        /// Second column, from 1.
        second: usize,
    },
    /// A CSV syntax error.
    #[error("invalid CSV at line {line}: {message}")]
    Csv {
        /// Line, from 1.
        line: u64,
        /// The parser's description.
        message: String,
    },
}

/// Parses an import file.
///
/// # Errors
/// [`ImportFileError`] if the file as a whole cannot be read; problems with single records are
/// returned in [`ParsedImport::rejections`] instead.
pub fn parse_import(bytes: &[u8], format: ImportFormat) -> Result<ParsedImport, ImportFileError> {
    let text = decode(bytes)?;
    let format = match format {
        ImportFormat::Auto => detect(text)?,
        explicit => explicit,
    };
    let mut parsed = ParsedImport {
        format,
        records: Vec::new(),
        rejections: Vec::new(),
    };
    match format {
        ImportFormat::Quarklink => parse_quarklink(text, &mut parsed)?,
        ImportFormat::Jsonl => parse_jsonl(text, &mut parsed),
        ImportFormat::Csv | ImportFormat::Auto => parse_csv(text, &mut parsed)?,
    }
    Ok(parsed)
}

/// UTF-8 text without the byte order mark spreadsheet programs like to add.
fn decode(bytes: &[u8]) -> Result<&str, ImportFileError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(ImportFileError::Utf16);
    }
    #[allow(
        clippy::naive_bytecount,
        reason = "one error path; not worth a dependency"
    )]
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        ImportFileError::NotUtf8 {
            line: count(good.iter().filter(|&&b| b == b'\n').count()) + 1,
            column: count(good.len() - line_start) + 1,
        }
    })?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(ImportFileError::Empty);
    }
    Ok(text)
}

fn detect(text: &str) -> Result<ImportFormat, ImportFileError> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .ok_or(ImportFileError::Empty)?;
    Ok(match first.as_bytes().first() {
        Some(b'"') => ImportFormat::Jsonl,
        Some(b'{') => match serde_json::from_str::<Value>(first) {
            Ok(Value::Object(map)) if map.contains_key("devices") => ImportFormat::Quarklink,
            Ok(_) => ImportFormat::Jsonl,
            // Not a value on its own: the opening line of a multi-line document, whose parser
            // then reports any syntax error with its position.
            Err(_) => ImportFormat::Quarklink,
        },
        Some(b'[') => {
            return Err(ImportFileError::NotDeviceList(
                "a bare JSON array".to_owned(),
            ));
        }
        _ => ImportFormat::Csv,
    })
}

fn parse_quarklink(text: &str, parsed: &mut ParsedImport) -> Result<(), ImportFileError> {
    let document: Value = serde_json::from_str(text).map_err(|e| ImportFileError::Json {
        line: count(e.line()),
        column: count(e.column()),
        message: json_message(&e),
    })?;
    let Value::Object(map) = document else {
        return Err(ImportFileError::NotDeviceList(format!(
            "the document is {}",
            type_name(&document)
        )));
    };
    let devices = match map.get("devices") {
        Some(Value::Array(devices)) => devices,
        Some(other) => {
            return Err(ImportFileError::NotDeviceList(format!(
                "\"devices\" is {}",
                type_name(other)
            )));
        }
        None => {
            return Err(ImportFileError::NotDeviceList(
                "no \"devices\" key".to_owned(),
            ));
        }
    };
    for (index, element) in devices.iter().enumerate() {
        let line = count(index) + 1;
        let outcome = match element {
            Value::Object(object) => id_from_object(object),
            other => id_from_value(other),
        };
        parsed.push(line, outcome);
    }
    Ok(())
}

fn parse_jsonl(text: &str, parsed: &mut ParsedImport) {
    for (index, raw) in text.split('\n').enumerate() {
        let line = count(index) + 1;
        // trim() also drops the '\r' of CRLF files.
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let outcome = match serde_json::from_str::<Value>(trimmed) {
            Err(e) => Err(Unreadable::new(format!(
                "invalid JSON at column {}: {}",
                e.column(),
                json_message(&e)
            ))),
            Ok(Value::Object(object)) if object.contains_key("epk") => {
                registration_from_object(&object)
            }
            Ok(Value::Object(object)) => id_from_object(&object),
            Ok(other) => id_from_value(&other),
        };
        parsed.push(line, outcome);
    }
}

fn parse_csv(text: &str, parsed: &mut ParsedImport) -> Result<(), ImportFileError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = reader.records();
    let csv_error = |e: &csv::Error| ImportFileError::Csv {
        line: e.position().map_or(0, csv::Position::line),
        message: e.to_string(),
    };
    let header = match rows.next() {
        Some(Ok(header)) => header,
        Some(Err(e)) => return Err(csv_error(&e)),
        None => return Err(ImportFileError::Empty),
    };
    let mut lines = LineCounter::new(text);
    let header_line = lines.line_of(&header);
    let mut columns = header
        .iter()
        .enumerate()
        .filter(|(_, name)| is_id_header(name))
        .map(|(index, _)| index);
    let column = columns
        .next()
        .ok_or(ImportFileError::NoDeviceIdColumn { line: header_line })?;
    if let Some(second) = columns.next() {
        return Err(ImportFileError::DuplicateDeviceIdColumn {
            line: header_line,
            first: column + 1,
            second: second + 1,
        });
    }
    for row in rows {
        let row = row.map_err(|e| csv_error(&e))?;
        let line = lines.line_of(&row);
        // Spreadsheets pad exports with rows of bare separators; like blank lines, those are
        // not records.
        if row.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        let outcome = match row.get(column).map(str::trim) {
            // A header repeated in the middle (files concatenated with `cat`) is not a record.
            Some(cell) if is_id_header(cell) => continue,
            Some("") => Err(Unreadable::new("device_id is empty")),
            Some(cell) => Ok(import_record::Record::DeviceId(cell.to_owned())),
            None => Err(Unreadable::new(format!(
                "the row has {} column(s); device_id is column {}",
                row.len(),
                column + 1
            ))),
        };
        parsed.push(line, outcome);
    }
    Ok(())
}

/// Physical line numbers of CSV records.
///
/// The csv crate's own `Position::line` is off after CRLF endings and blank lines (it
/// reports where the previous record ended), so the line is recomputed from the byte
/// offset: skip the line terminators the position points into, then count newlines before
/// the record's first byte. Records arrive in order, so counting resumes where it stopped.
struct LineCounter<'a> {
    text: &'a [u8],
    scanned: usize,
    newlines: u64,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            scanned: 0,
            newlines: 0,
        }
    }

    #[allow(
        clippy::naive_bytecount,
        reason = "each byte is counted once per file; not worth a dependency"
    )]
    fn line_of(&mut self, record: &csv::StringRecord) -> u64 {
        let mut start = record
            .position()
            .map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX))
            .min(self.text.len());
        while matches!(self.text.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start > self.scanned {
            self.newlines += count(
                self.text[self.scanned..start]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count(),
            );
            self.scanned = start;
        }
        self.newlines + 1
    }
}

fn is_id_header(cell: &str) -> bool {
    cell.trim().eq_ignore_ascii_case("device_id")
}

/// Why one record could not be read.
struct Unreadable {
    device_id: String,
    message: String,
}

impl Unreadable {
    fn new(message: impl Into<String>) -> Self {
        Self {
            device_id: String::new(),
            message: message.into(),
        }
    }
}

impl ParsedImport {
    fn push(&mut self, line: u64, outcome: Result<import_record::Record, Unreadable>) {
        match outcome {
            Ok(record) => self.records.push(ImportRecord {
                line,
                record: Some(record),
            }),
            Err(Unreadable { device_id, message }) => self.rejections.push(LocalRejection {
                line,
                device_id,
                reason: ImportRejectionReason::Malformed,
                message,
            }),
        }
    }
}

fn id_from_value(value: &Value) -> Result<import_record::Record, Unreadable> {
    match value {
        Value::String(id) => Ok(import_record::Record::DeviceId(id.trim().to_owned())),
        other => Err(Unreadable::new(format!(
            "{} is not a DeviceId (expected a string or an object with device_id)",
            type_name(other)
        ))),
    }
}

fn id_from_object(object: &Map<String, Value>) -> Result<import_record::Record, Unreadable> {
    match ID_KEYS
        .iter()
        .find_map(|&key| object.get(key).map(|v| (key, v)))
    {
        Some((_, Value::String(id))) => Ok(import_record::Record::DeviceId(id.trim().to_owned())),
        Some((key, other)) => Err(Unreadable::new(format!(
            "{key} is {}, expected a string",
            type_name(other)
        ))),
        None => Err(Unreadable::new(
            "the object has no device_id (nor deviceId, id or epk)",
        )),
    }
}

/// An offline registration captured on an air-gapped programming station. Bytes are hex;
/// lengths and signatures are the service's to check (it answers INVALID_REGISTRATION with the
/// precise cause).
fn registration_from_object(
    object: &Map<String, Value>,
) -> Result<import_record::Record, Unreadable> {
    // The claimed id, read first so that every later rejection can name the device.
    let claimed_device_id = match object.get("claimed_device_id") {
        None | Some(Value::Null) => match id_from_object(object) {
            Ok(import_record::Record::DeviceId(id)) => id,
            _ => String::new(),
        },
        Some(Value::String(id)) => id.trim().to_owned(),
        Some(other) => {
            return Err(Unreadable::new(format!(
                "claimed_device_id is {}, expected a string",
                type_name(other)
            )));
        }
    };
    let named = |message: String| Unreadable {
        device_id: claimed_device_id.clone(),
        message,
    };
    let hex_field = |key: &str, required: bool| -> Result<Vec<u8>, Unreadable> {
        match object.get(key) {
            Some(Value::String(text)) => {
                hex::decode(text.trim()).map_err(|e| named(format!("{key} is not hex: {e}")))
            }
            None | Some(Value::Null) if !required => Ok(Vec::new()),
            None | Some(Value::Null) => Err(named(format!("{key} is missing"))),
            Some(other) => Err(named(format!(
                "{key} is {}, expected a hex string",
                type_name(other)
            ))),
        }
    };
    let registration = OfflineRegistration {
        epk: hex_field("epk", true)?,
        proof_signature: hex_field("proof_signature", true)?,
        proof_context: hex_field("proof_context", false)?,
        context: context_from(object.get("context")).map_err(named)?,
        claimed_device_id: claimed_device_id.clone(),
    };
    Ok(import_record::Record::Registration(registration))
}

fn context_from(value: Option<&Value>) -> Result<Option<RegistrationContext>, String> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(format!(
                "context is {}, expected an object",
                type_name(other)
            ));
        }
    };
    let text = |key: &str| -> Result<String, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "context.{key} is {}, expected a string",
                type_name(other)
            )),
        }
    };
    let labels = match object.get("labels") {
        None | Some(Value::Null) => HashMap::new(),
        Some(Value::Object(labels)) => labels
            .iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key.clone(), value.clone())),
                other => Err(format!(
                    "context.labels.{key} is {}, expected a string",
                    type_name(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "context.labels is {}, expected an object",
                type_name(other)
            ));
        }
    };
    Ok(Some(RegistrationContext {
        site: text("site")?,
        station: text("station")?,
        firmware_version: text("firmware_version")?,
        labels,
    }))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without the " at line L column C" it appends, which the callers
/// report in their own words.
fn json_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;

//! What a command prints: a title and named fields, as aligned text or as one JSON object
//! (`--json`). Errors and warnings go to stderr, results to stdout.

use std::io::Write;

use serde_json::{Map, Value};

use crate::error::AgentError;

/// Where a command writes.
pub struct Console<'a> {
    /// Results.
    pub out: &'a mut dyn Write,
    /// Warnings and retry notes.
    pub err: &'a mut dyn Write,
    /// `--json`.
    pub json: bool,
}

impl std::fmt::Debug for Console<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl Console<'_> {
    /// Writes a warning line to stderr (never fails the command).
    pub fn warn(&mut self, text: &str) {
        let _ = writeln!(self.err, "warning: {text}");
    }
}

/// A command's result.
#[derive(Clone, Debug, Default)]
pub struct Report {
    title: String,
    fields: Vec<(String, Value)>,
}

impl Report {
    /// A report headed `title` (text mode only).
    #[must_use]
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            fields: Vec::new(),
        }
    }

    /// The same fields under another title.
    #[must_use]
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Adds a field; `Value::Null` fields are left out.
    #[must_use]
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        if !value.is_null() {
            self.fields.push((key.to_owned(), value));
        }
        self
    }

    /// The fields as a JSON object.
    #[must_use]
    pub fn to_json(&self) -> Value {
        Value::Object(self.fields.iter().cloned().collect::<Map<_, _>>())
    }

    /// This report with `earlier`'s fields in front of its own (its title kept).
    #[must_use]
    pub fn prepend(mut self, earlier: Self) -> Self {
        let mut fields = earlier.fields;
        fields.append(&mut self.fields);
        self.fields = fields;
        self
    }

    /// Prints the report.
    ///
    /// # Errors
    /// [`AgentError::Io`] if stdout is closed.
    pub fn print(&self, console: &mut Console<'_>) -> Result<(), AgentError> {
        let written = if console.json {
            writeln!(console.out, "{}", self.to_json())
        } else {
            self.write_text(console.out)
        };
        written.map_err(AgentError::io("<stdout>"))
    }

    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "{}", self.title)?;
        let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &self.fields {
            let label = key.replace('_', " ");
            match value {
                Value::String(text) if text.contains('\n') => {
                    writeln!(out, "  {label}:")?;
                    for line in text.lines() {
                        writeln!(out, "    {line}")?;
                    }
                }
                Value::String(text) => writeln!(out, "  {label:<width$}  {text}")?,
                other => writeln!(out, "  {label:<width$}  {other}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_carry_the_same_fields() {
        let report = Report::new("onboarded")
            .field("device_id", "ab")
            .field("key_slot", 2)
            .field("renew_after", Value::Null)
            .field("pem", "line 1\nline 2");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut console = Console {
            out: &mut out,
            err: &mut err,
            json: false,
        };
        report.print(&mut console).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "onboarded\n  device id  ab\n  key slot   2\n  pem:\n    line 1\n    line 2\n"
        );
        assert_eq!(
            report.to_json(),
            serde_json::json!({"device_id": "ab", "key_slot": 2, "pem": "line 1\nline 2"})
        );
    }
}

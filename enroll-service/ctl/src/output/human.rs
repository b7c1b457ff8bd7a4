//! Human output: lines, key/value blocks and aligned tables, all of it escaped for the terminal.
//!
//! Views get a [`Human`], not the raw stdout, so they cannot write a byte that has not passed
//! through [`escape`]: a [`Human::line`] is escaped as a whole, and [`Table`] and [`Fields`]
//! escape each cell and value as it is added, which also keeps the columns aligned (an escaped
//! cell is as wide as it prints). Views therefore never escape anything themselves.

use std::borrow::Cow;
use std::io::{self, Write};

use super::escape::escape;

/// The human side of stdout. Every line written through it is escaped once; the only raw
/// bytes are the line feeds that end its lines.
pub struct Human<'a> {
    out: &'a mut dyn Write,
}

impl std::fmt::Debug for Human<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Human").finish_non_exhaustive()
    }
}

impl<'a> Human<'a> {
    /// Human output on `out`.
    pub fn new(out: &'a mut dyn Write) -> Self {
        Self { out }
    }

    /// Writes `text` escaped, then a line feed. A line feed inside `text` prints as `\n`, so
    /// text from the service cannot start a line of its own.
    ///
    /// # Errors
    /// The writer's error.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        self.escaped_line(&escape(text))
    }

    /// Writes an empty line.
    ///
    /// # Errors
    /// The writer's error.
    pub fn blank(&mut self) -> io::Result<()> {
        self.escaped_line("")
    }

    /// Writes a table, header first.
    ///
    /// # Errors
    /// The writer's error.
    pub fn table(&mut self, table: &Table) -> io::Result<()> {
        table.lines().try_for_each(|line| self.escaped_line(&line))
    }

    /// Writes a key/value block.
    ///
    /// # Errors
    /// The writer's error.
    pub fn fields(&mut self, fields: &Fields) -> io::Result<()> {
        fields.lines().try_for_each(|line| self.escaped_line(&line))
    }

    /// Flushes stdout, so that a long-running command's lines appear as they are written.
    ///
    /// # Errors
    /// The writer's error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The one place a line reaches the writer; `line` has been escaped.
    fn escaped_line(&mut self, line: &str) -> io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")
    }
}

/// An aligned text table: left-aligned columns two spaces apart, no trailing spaces. Cells are
/// escaped as they are added.
#[derive(Clone, Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    #[must_use]
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| escape(h).into_owned()).collect()],
        }
    }

    /// Adds a row; missing cells print empty, extra cells are kept.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(escaped).collect());
    }

    /// Number of data rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// True without data rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table's lines, header first (escaped already).
    fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        self.rows.iter().map(move |row| {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
            line.truncate(line.trim_end().len());
            line
        })
    }
}

/// A `key: value` block with the values aligned; empty values are left out so that unset
/// optional fields do not clutter the output. Values are escaped as they are added, so a value
/// is always one line.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
}

impl Fields {
    /// An empty block.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (skipped if `value` is empty).
    #[must_use]
    pub fn field(mut self, key: &str, value: impl AsRef<str>) -> Self {
        let value = value.as_ref();
        if !value.is_empty() {
            self.pairs
                .push((escape(key).into_owned(), escape(value).into_owned()));
        }
        self
    }

    /// The block's lines (escaped already).
    fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let width = self
            .pairs
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        self.pairs.iter().map(move |(key, value)| {
            format!("{:<width$}  {value}", format!("{key}:"), width = width + 1)
        })
    }
}

/// `text` escaped, reusing it when there is nothing to escape.
fn escaped(text: String) -> String {
    match escape(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Human<'_>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut Human::new(&mut out)).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn tables_align_and_have_no_trailing_spaces() {
        let mut table = Table::new(&["ID", "STATE", "BATCH"]);
        table.row(vec!["abc".into(), "onboarded".into(), String::new()]);
        table.row(vec!["d".into(), "ready".into(), "b-1".into()]);
        assert_eq!(table.len(), 2);
        assert_eq!(
            text(|out| out.table(&table)),
            "ID   STATE      BATCH\nabc  onboarded\nd    ready      b-1\n"
        );
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let mut table = Table::new(&["SITE", "X"]);
        table.row(vec!["Zürich".into(), "1".into()]);
        assert_eq!(text(|out| out.table(&table)), "SITE    X\nZürich  1\n");
    }

    #[test]
    fn an_empty_table_prints_its_header() {
        let table = Table::new(&["A", "B"]);
        assert!(table.is_empty());
        assert_eq!(text(|out| out.table(&table)), "A  B\n");
    }

    #[test]
    fn hostile_cells_are_escaped_and_stay_aligned() {
        let mut table = Table::new(&["NAME", "X"]);
        table.row(vec!["\x1b[2Jok\r".into(), "1".into()]);
        table.row(vec!["plain".into(), "2".into()]);
        // The escaped cell is 11 characters wide, and the column is sized for it.
        assert_eq!(
            text(|out| out.table(&table)),
            "NAME         X\n\\x1b[2Jok\\r  1\nplain        2\n"
        );
    }

    #[test]
    fn fields_align_skip_empty_values_and_escape_line_breaks() {
        let fields = Fields::new()
            .field("name", "p1")
            .field("description", "")
            .field("renew window", "30d")
            .field("comment", "lost\nstate: onboarded");
        assert_eq!(
            text(|out| out.fields(&fields)),
            "name:          p1\nrenew window:  30d\ncomment:       lost\\nstate: onboarded\n"
        );
    }

    #[test]
    fn lines_are_escaped_once() {
        assert_eq!(
            text(|out| {
                out.line("revoked \u{202e}abc (\x07)")?;
                out.blank()?;
                out.line("a\\b")
            }),
            "revoked \\u{202e}abc (\\x07)\n\na\\\\b\n"
        );
    }
}

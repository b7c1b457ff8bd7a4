//! What each contract message looks like for humans, one module per resource as in
//! `commands/`. Pure functions of the messages, unit-tested without a service.
//!
//! Views write through [`Human`](crate::output::Human), or build its [`Table`] and [`Fields`],
//! which escape every text where it meets the terminal; a view never escapes anything itself,
//! and cannot write unescaped text. The JSON side needs no views: it is the proto3 JSON mapping
//! of the same messages ([`crate::output::json`]).
//!
//! [`Table`]: crate::output::Table
//! [`Fields`]: crate::output::Fields

pub(crate) mod audit;
pub(crate) mod batch;
pub(crate) mod device;
pub(crate) mod export;
pub(crate) mod firmware;
pub(crate) mod import;
pub(crate) mod operator;
pub(crate) mod owner;
pub(crate) mod policy;
pub(crate) mod rollout;
pub(crate) mod whoami;

/// "when by who", leaving out what is unknown.
fn by(when: String, who: &str) -> String {
    match (when.is_empty(), who.is_empty()) {
        (_, true) => when,
        (true, false) => format!("by {who}"),
        (false, false) => format!("{when} by {who}"),
    }
}

/// A key slot, or nothing for 0 (none yet).
fn slot(key_slot: u32) -> String {
    if key_slot == 0 {
        String::new()
    } else {
        key_slot.to_string()
    }
}

/// What every view test needs: a hostile value, how it must look, and both renderings.
#[cfg(test)]
pub(crate) mod testing {
    use std::io;

    use serde_json::Value;

    use crate::output::{Human, escape, json};

    /// Text a device or another tenant could send: clear the screen, set the window title,
    /// return to the line start, reverse the rest (RIGHT-TO-LEFT OVERRIDE), and a backslash.
    pub(crate) const HOSTILE: &str = "ok\x1b[2J\x1b]0;pwned\x07\r\u{202e}fdp.exe\\";
    /// How human output shows it: every part visible, escaped once.
    pub(crate) const SHOWN: &str = "ok\\x1b[2J\\x1b]0;pwned\\x07\\r\\u{202e}fdp.exe\\\\";

    /// The human rendering as text.
    pub(crate) fn human(write: impl FnOnce(&mut Human<'_>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut Human::new(&mut out)).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    /// Human text shows [`HOSTILE`] as [`SHOWN`] `times` times and holds nothing a terminal
    /// would act on.
    pub(crate) fn assert_escaped(text: &str, times: usize) {
        assert_eq!(text.matches(SHOWN).count(), times, "{text}");
        // split, not lines(): lines() would drop a raw CR before a line feed.
        for line in text.split('\n') {
            // Escaping the line again would change nothing but its backslashes.
            assert_eq!(escape(line), line.replace('\\', "\\\\"), "{line:?}");
        }
    }

    /// The `--json` rendering, printed and read back as the CLI prints it.
    pub(crate) fn json_of<M: prost::Message + prost::Name>(message: &M) -> Value {
        let mut line = Vec::new();
        json::json_line(&mut line, &json::message(message).expect("maps")).expect("writes");
        serde_json::from_slice(&line).expect("valid JSON")
    }
}

//! Escaping text for a terminal: the one function that makes a string from the service safe to
//! print.
//!
//! Everything `enrollctl` prints for humans passes through [`escape`] (see
//! [`Human`](super::Human)): device registration contexts, batch and policy texts, revocation
//! comments and audit details are written by devices and by other tenants, and a terminal obeys
//! what it is sent. An ESC sequence can recolour, move the cursor, rewrite earlier lines, set
//! the window title or (OSC 52) the clipboard; CR overwrites the line it is on; a bidi override
//! shows `rcs.tab` as `bat.scr`; a zero-width character makes `admin` and `ad\u{200b}min` look
//! the same.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character that a terminal would not simply show as itself written as a
/// visible escape, and nothing else changed:
///
/// | what | examples | written as |
/// |---|---|---|
/// | backslash | `\` | `\\` |
/// | tab, line feed, carriage return | | `\t`, `\n`, `\r` |
/// | other C0 controls and DEL | ESC, BEL, NUL | `\x1b`, `\x07`, `\x00`, `\x7f` |
/// | C1 controls | CSI U+009B | `\u{9b}` |
/// | bidirectional formatting | U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069 | `\u{202e}` |
/// | invisible format characters | U+00AD, U+180E, U+200B–U+200D, U+2060–U+2064, U+206A–U+206F, U+FEFF, U+FFF9–U+FFFB, tags U+E0000–U+E007F | `\u{200b}` |
/// | line and paragraph separators | U+2028, U+2029 | `\u{2028}` |
///
/// Because the backslash itself is escaped, the result is unambiguous: a `\` in it always
/// starts an escape, so `a\x1bb` (four visible characters typed by someone) and `a` ESC `b`
/// print differently. Everything else, including non-ASCII letters, passes unchanged, and text
/// with nothing to escape is returned borrowed.
///
/// Apply it exactly once, where text meets the terminal: escaping twice would show `\\x1b`.
#[must_use]
pub fn escape(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(needs_escape) else {
        return Cow::Borrowed(text);
    };
    let mut escaped = String::with_capacity(text.len() + 8);
    escaped.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\t' => escaped.push_str("\\t"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            // Writing to a String cannot fail.
            c if c.is_ascii() && needs_escape(c) => {
                let _ = write!(escaped, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// True for the characters [`escape`] rewrites.
fn needs_escape(c: char) -> bool {
    // `char::is_control` is Unicode's Cc: C0 (U+0000–U+001F), DEL and C1 (U+0080–U+009F).
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            // Bidirectional formatting: marks, embeddings, overrides, isolates.
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                // Invisible: soft hyphen, Mongolian vowel separator, zero-width space, joiners,
                // word joiner and invisible operators, deprecated format controls, BOM,
                // interlinear annotation, tags.
                | '\u{00ad}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200d}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206a}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
                // Line and paragraph separators.
                | '\u{2028}'
                | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of [`escape`], written independently of it: a test oracle that the escapes
    /// are unambiguous.
    fn unescape(escaped: &str) -> Option<String> {
        let mut text = String::new();
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                text.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => text.push('\\'),
                't' => text.push('\t'),
                'n' => text.push('\n'),
                'r' => text.push('\r'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    text.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                }
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    text.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(text)
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "line-1",
            "Zürich 東京 ünïcödé",
            "a b\u{a0}c",
            "{device_id}",
            "😀",
        ] {
            assert!(
                matches!(escape(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn terminal_control_sequences_become_visible() {
        let cases = [
            // Clear the screen, move home, red text.
            ("\x1b[2J\x1b[H\x1b[31mOK", "\\x1b[2J\\x1b[H\\x1b[31mOK"),
            // OSC 52: write the operator's clipboard, terminated by BEL.
            (
                "\x1b]52;c;Y3VybCBldmlsfHNo\x07",
                "\\x1b]52;c;Y3VybCBldmlsfHNo\\x07",
            ),
            // Window title, terminated by ST.
            ("\x1b]0;pwned\x1b\\", "\\x1b]0;pwned\\x1b\\\\"),
            // CR overwrites what came before on the line; LF forges a new field line.
            ("revoked\ronboarded", "revoked\\ronboarded"),
            ("lost\nstate:     onboarded", "lost\\nstate:     onboarded"),
            ("a\tb", "a\\tb"),
            ("nul\0byte", "nul\\x00byte"),
            ("del\x7f", "del\\x7f"),
            ("bell\x07", "bell\\x07"),
            // The 8-bit CSI (C1) that some terminals still honour.
            ("\u{9b}31m", "\\u{9b}31m"),
            ("\u{85}next line", "\\u{85}next line"),
        ];
        for (hostile, shown) in cases {
            assert_eq!(escape(hostile), shown, "{hostile:?}");
        }
    }

    #[test]
    fn bidi_controls_and_invisible_characters_become_visible() {
        // "rcs.tab" shown reversed as "bat.scr" by the RIGHT-TO-LEFT OVERRIDE.
        assert_eq!(escape("fw-\u{202e}rcs.tab"), "fw-\\u{202e}rcs.tab");
        for c in ('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{200e}', '\u{200f}', '\u{061c}'])
        {
            assert_eq!(
                escape(&format!("x{c}y")),
                format!("x\\u{{{:x}}}y", u32::from(c))
            );
        }
        assert_eq!(escape("ad\u{200b}min"), "ad\\u{200b}min");
        assert_eq!(escape("\u{feff}bom"), "\\u{feff}bom");
        assert_eq!(escape("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(escape("tag\u{e0041}"), "tag\\u{e0041}");
    }

    #[test]
    fn backslashes_are_escaped_so_escapes_cannot_be_forged() {
        // Someone typing the four characters `\x1b` does not look like a real ESC.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        assert_ne!(escape("\\x1b"), escape("\x1b"));
        assert_eq!(escape("C:\\dir"), "C:\\\\dir");
    }

    #[test]
    fn the_examples_round_trip() {
        for text in [
            "\x1b[31m\\\u{202e}\r\n",
            "\\u{202e}",
            "\u{10ffff}",
            "\u{e007f}x",
        ] {
            assert_eq!(unescape(&escape(text)).as_deref(), Some(text));
        }
    }

    proptest! {
        /// Whatever the service sends, the printed text holds no character a terminal would
        /// act on, and it determines the original exactly.
        #[test]
        fn escaped_text_is_inert_and_unambiguous(text in any::<String>()) {
            let escaped = escape(&text);
            prop_assert!(!escaped.chars().any(|c| c != '\\' && needs_escape(c)), "{escaped:?}");
            prop_assert_eq!(unescape(&escaped), Some(text));
        }

        #[test]
        fn hostile_mixtures_round_trip(
            text in proptest::collection::vec(
                prop_oneof![
                    Just('\\'), Just('\x1b'), Just('\u{202e}'), Just('\u{9b}'), Just('x'),
                    Just('{'), Just('}'), Just('u'), Just('\n'), Just('é'),
                ],
                0..40,
            )
        ) {
            let text: String = text.into_iter().collect();
            prop_assert_eq!(unescape(&escape(&text)), Some(text));
        }
    }
}

//! Free text a client hands the service (batch names and descriptions, policy descriptions,
//! revocation and transfer comments, a device's registration metadata): one line of visible
//! characters, checked on input.
//!
//! Such text is shown to operators, in terminals and in pages, and some of it comes from
//! unauthenticated devices or from another tenant. Control characters (an ESC sequence, BEL, a
//! carriage return that overwrites a line, NUL) and the invisible Unicode format characters
//! (bidi overrides such as U+202E that reorder what is read, zero-width characters that hide
//! what is there) have no business in a name or a comment, so they are refused where the text
//! enters. Output escapes as well (enrollctl, the console): this is the first of two locks.

/// Whether `c` may appear in free text.
#[must_use]
pub fn is_allowed(c: char) -> bool {
    !(c.is_control() || is_invisible_format(c))
}

/// The Unicode format characters that reorder or hide text.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}'                  // Arabic letter mark
        | '\u{180E}'                // Mongolian vowel separator
        | '\u{200B}'..='\u{200F}'   // zero-width space, joiners, LRM, RLM
        | '\u{2028}' | '\u{2029}'   // line and paragraph separators
        | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}'   // bidi isolates
        | '\u{FEFF}'                // zero-width no-break space
        | '\u{E0000}'..='\u{E007F}' // tag characters
    )
}

/// What is wrong with `value` as free text of at most `max_chars` characters, if anything.
#[must_use]
pub fn problem(value: &str, max_chars: usize) -> Option<String> {
    if value.chars().count() > max_chars {
        return Some(format!("must be at most {max_chars} characters"));
    }
    value.chars().find(|c| !is_allowed(*c)).map(|c| {
        format!(
            "must be one line of visible characters; U+{:04X} at character {} is not",
            u32::from(c),
            value.chars().position(|x| x == c).map_or(0, |p| p + 1)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_refused_and_ordinary_text_passes() {
        for good in ["line 3", "Zürich Süd, hall B", "批次 7", "a-b_c.d@e", ""] {
            assert_eq!(problem(good, 64), None, "{good:?}");
        }
        for (bad, at) in [
            ("\u{1b}[2J", "U+001B at character 1"),
            ("ring\u{7}", "U+0007 at character 5"),
            ("over\rwrite", "U+000D"),
            ("nul\0", "U+0000"),
            ("two\nlines", "U+000A"),
            ("gnp.\u{202E}exe", "U+202E at character 5"),
            ("in\u{2066}side", "U+2066"),
            ("zero\u{200B}width", "U+200B"),
            ("c1\u{9b}31m", "U+009B"),
            ("del\u{7f}", "U+007F"),
            ("tag\u{E0041}", "U+E0041"),
        ] {
            let problem = problem(bad, 64).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(problem.contains(at), "{bad:?}: {problem}");
        }
        assert_eq!(
            problem(&"x".repeat(65), 64).as_deref(),
            Some("must be at most 64 characters")
        );
    }
}

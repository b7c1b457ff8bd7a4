//! Name templates: literal text with the placeholders `{device_id}` and `{owner}`.
//!
//! Braces mean nothing else, so a misspelt placeholder (`{deviceid}`) is refused instead of
//! ending up in thousands of certificates.

use rot_core::keys::DeviceId;

const DEVICE_ID: &str = "{device_id}";
const OWNER: &str = "{owner}";

/// One piece of a template.
enum Part<'a> {
    Literal(char),
    DeviceId,
    Owner,
    /// A `{` or `}` that does not start a placeholder.
    Stray(&'a str),
}

/// Splits a template into its parts.
fn parts(template: &str) -> impl Iterator<Item = Part<'_>> {
    let mut rest = template;
    std::iter::from_fn(move || {
        let c = rest.chars().next()?;
        let (part, len) = if rest.starts_with(DEVICE_ID) {
            (Part::DeviceId, DEVICE_ID.len())
        } else if rest.starts_with(OWNER) {
            (Part::Owner, OWNER.len())
        } else if c == '{' || c == '}' {
            (Part::Stray(&rest[..1]), 1)
        } else {
            (Part::Literal(c), c.len_utf8())
        };
        rest = &rest[len..];
        Some(part)
    })
}

/// Renders `template` for a device. Stray braces (only in a template that skipped
/// [`check`]) are copied as they are.
pub(super) fn render(template: &str, device_id: &DeviceId, owner: &str) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for part in parts(template) {
        match part {
            Part::Literal(c) => out.push(c),
            Part::DeviceId => out.push_str(&device_id.to_string()),
            Part::Owner => out.push_str(owner),
            Part::Stray(brace) => out.push_str(brace),
        }
    }
    out
}

/// The characters a rendered name may use, and how to say so in an error.
#[derive(Clone, Copy)]
pub(super) struct Alphabet {
    /// Whether a character is allowed.
    pub(super) allows: fn(char) -> bool,
    /// The allowed characters, for error messages.
    pub(super) describe: &'static str,
}

/// Characters of a subject CN: letters, digits and `. _ : @ -`. No spaces, no MQTT topic
/// separators or wildcards (`/ + #`): the CN may be a broker user name and a topic level.
pub(super) const CN: Alphabet = Alphabet {
    allows: |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-'),
    describe: "A-Z a-z 0-9 . _ : @ -",
};

/// Checks a template: only known placeholders, `{device_id}` present (so that every device
/// gets a different name), and every character of the rendered name, the owner included,
/// in `alphabet`. Lengths are the caller's business.
pub(super) fn check(template: &str, owner: &str, alphabet: Alphabet) -> Result<(), String> {
    let allowed = alphabet.allows;
    let describe = alphabet.describe;
    let mut has_device_id = false;
    for part in parts(template) {
        match part {
            Part::DeviceId => has_device_id = true,
            Part::Owner => {
                if let Some(c) = owner.chars().find(|&c| !allowed(c)) {
                    return Err(format!(
                        "{{owner}} renders to {owner:?}, whose character {c:?} is not one of {describe}"
                    ));
                }
            }
            Part::Literal(c) if !allowed(c) => {
                return Err(format!("character {c:?} is not one of {describe}"));
            }
            Part::Literal(_) => {}
            Part::Stray(brace) => {
                return Err(format!(
                    "unexpected {brace:?}: the only placeholders are {DEVICE_ID} and {OWNER}"
                ));
            }
        }
    }
    if has_device_id {
        Ok(())
    } else {
        Err(format!(
            "must contain {DEVICE_ID}, so that every device gets its own name"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn id() -> DeviceId {
        DeviceId::from_bytes([0x0f; 32])
    }

    #[test]
    fn renders_placeholders_in_one_pass() {
        assert_eq!(render("{device_id}", &id(), "acme"), "0f".repeat(32));
        assert_eq!(
            render("{owner}-{device_id}-x", &id(), "acme"),
            format!("acme-{}-x", "0f".repeat(32))
        );
        // An owner that looks like a placeholder is not expanded again.
        assert_eq!(render("{owner}", &id(), "{device_id}"), "{device_id}");
        assert_eq!(render("a{b}", &id(), "o"), "a{b}");
    }

    #[test]
    fn check_refuses_unknown_placeholders_and_characters() {
        assert!(check("{device_id}", "acme", CN).is_ok());
        assert!(check("{owner}.{device_id}", "acme", CN).is_ok());
        assert!(
            check("{owner}", "acme", CN)
                .unwrap_err()
                .contains("{device_id}")
        );
        assert!(
            check("{deviceid}", "acme", CN)
                .unwrap_err()
                .contains("unexpected")
        );
        assert!(check("{device_id}}", "acme", CN).is_err());
        assert!(
            check("{device_id}/x", "acme", CN)
                .unwrap_err()
                .contains("'/'")
        );
        assert!(check("{device_id}\n", "acme", CN).is_err());
        assert!(
            check("{owner}{device_id}", "a b", CN)
                .unwrap_err()
                .contains("{owner}")
        );
    }
}

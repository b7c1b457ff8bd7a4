//! RFC 7512 PKCS#11 URIs, strictly.
//!
//! What is accepted, and why:
//! - the scheme `pkcs11:` (any case), then path attributes separated by `;`, then optionally `?`
//!   and query attributes separated by `&`; an attribute never appears twice;
//! - path attributes `token` (required), `manufacturer`, `serial`, `model` (they narrow which
//!   token), `object` (the key's CKA_LABEL), `id` (its CKA_ID) and `type` (only `private`: this
//!   crate addresses private keys);
//! - query attributes `module-path` (required, absolute) and `pin-source`, either `file:/path`
//!   (the file's first line, its line ending dropped) or `env:NAME` (an environment variable);
//! - **refused**: `pin-value` (a PIN never lives in a URI or in a config file), `module-name` (ask
//!   for the path), every other attribute, standard (`slot-id`, `library-*`, …) or vendor (`x-…`).
//!   An attribute this crate would ignore could have meant to narrow the match to another token
//!   or key, so it is an error rather than silently dropped;
//! - values are percent-decoded; a character outside the RFC's set for its part must be
//!   percent-encoded (a space, `/` or `?` in the path, `&` or `;` in the query, `#`, `%` alone…);
//!   `id` is percent-encoded bytes only (`id=%01%a2`), as the RFC's grammar says; the textual
//!   values are UTF-8 and never empty.
//!
//! [`Display`](std::fmt::Display) writes the attributes in a fixed order, percent-encoding what
//! must be, so that `parse(display(u)) == u`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::HsmError;

/// Where the token's user PIN comes from. Never the PIN itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinSource {
    /// `file:/path`: the first line of the file, its line ending (`\n` or `\r\n`) dropped.
    File(PathBuf),
    /// `env:NAME`: the value of an environment variable.
    Env(String),
}

impl PinSource {
    /// Reads the PIN.
    ///
    /// # Errors
    ///
    /// [`HsmError::Config`] when the file cannot be read, is larger than 4 KiB, or its first line
    /// is empty or not UTF-8, or the variable is unset or empty. The message names the source,
    /// never the content.
    pub fn read(&self) -> Result<Zeroizing<String>, HsmError> {
        match self {
            PinSource::File(path) => read_pin_file(path),
            PinSource::Env(name) => {
                let value =
                    Zeroizing::new(std::env::var(name).map_err(|e| env_pin_error(name, e))?);
                if value.is_empty() {
                    return Err(HsmError::Config(format!(
                        "pin-source env:{name}: the variable is empty"
                    )));
                }
                Ok(value)
            }
        }
    }
}

/// The error for a PIN variable that cannot be read. `VarError`'s own text would quote a
/// value that is not UTF-8, which is the PIN: it is wiped instead.
fn env_pin_error(name: &str, error: std::env::VarError) -> HsmError {
    let why = match error {
        std::env::VarError::NotPresent => "the variable is not set",
        std::env::VarError::NotUnicode(value) => {
            use std::os::unix::ffi::OsStringExt as _;
            drop(Zeroizing::new(value.into_vec()));
            "the variable is not valid UTF-8"
        }
    };
    HsmError::Config(format!("pin-source env:{name}: {why}"))
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, HsmError> {
    use std::io::Read as _;
    let describe =
        |e: &dyn fmt::Display| HsmError::Config(format!("pin-source file:{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(|e| describe(&e))?;
    // A fixed buffer, read to at most one byte past the limit (a FIFO or a growing file has
    // no trustworthy length up front): never reallocated, so no unwiped copy is left behind.
    let mut buffer = Zeroizing::new([0u8; 4097]);
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(describe(&e)),
        }
    }
    if filled > 4096 {
        return Err(describe(
            &"the file is larger than 4 KiB; it should hold one line",
        ));
    }
    let bytes = &buffer[..filled];
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(describe(&"the first line is empty"));
    }
    let text = std::str::from_utf8(first).map_err(|_| describe(&"the PIN is not UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(path) => write!(f, "file:{}", path.display()),
            PinSource::Env(name) => write!(f, "env:{name}"),
        }
    }
}

/// An RFC 7512 PKCS#11 URI naming a token (module and token label) and, for a key, the key's
/// label and/or id, e.g.
/// `pkcs11:token=oxroot;object=issuing-acme?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/oxroot/pin`.
///
/// It never holds a PIN: `pin-value` is refused when parsing. See the module documentation for
/// the exact rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    module_path: String,
    token: String,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    private_type: bool,
    pin_source: Option<PinSource>,
}

impl Pkcs11Uri {
    /// The module (shared library) to load: the `module-path` query attribute.
    #[must_use]
    pub fn module_path(&self) -> &Path {
        Path::new(&self.module_path)
    }
    /// The token's label (CKA_LABEL of the token, `token=`).
    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }
    /// The token's manufacturer, when the URI narrows by it.
    #[must_use]
    pub fn manufacturer(&self) -> Option<&str> {
        self.manufacturer.as_deref()
    }
    /// The token's serial number, when the URI narrows by it.
    #[must_use]
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }
    /// The token's model, when the URI narrows by it.
    #[must_use]
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// The key's label (`object=`).
    #[must_use]
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }
    /// The key's CKA_ID (`id=`, percent-encoded bytes in the URI).
    #[must_use]
    pub fn id(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }
    /// True when the URI says `type=private`.
    #[must_use]
    pub fn is_private_key_type(&self) -> bool {
        self.private_type
    }
    /// Where the PIN comes from (`pin-source=`).
    #[must_use]
    pub fn pin_source(&self) -> Option<&PinSource> {
        self.pin_source.as_ref()
    }

    /// The URI of a key on the same token (same module, token attributes and PIN source), with
    /// this label, this id (none when empty) and `type=private`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Config`] for an empty label or one longer than 255 bytes.
    pub fn key_uri(&self, label: &str, id: &[u8]) -> Result<Pkcs11Uri, HsmError> {
        check_label(label)?;
        Ok(Pkcs11Uri {
            object: Some(label.to_owned()),
            id: (!id.is_empty()).then(|| id.to_vec()),
            private_type: true,
            ..self.token_uri()
        })
    }

    /// This URI without its object attributes: the token alone.
    #[must_use]
    pub fn token_uri(&self) -> Pkcs11Uri {
        Pkcs11Uri {
            object: None,
            id: None,
            private_type: false,
            ..self.clone()
        }
    }

    /// This URI with another PIN source.
    #[must_use]
    pub fn with_pin_source(&self, source: PinSource) -> Pkcs11Uri {
        Pkcs11Uri {
            pin_source: Some(source),
            ..self.clone()
        }
    }
}

pub(crate) fn check_label(label: &str) -> Result<(), HsmError> {
    if label.is_empty() {
        return Err(HsmError::Config("a key label must not be empty".into()));
    }
    if label.len() > 255 {
        return Err(HsmError::Config(
            "a key label must be at most 255 bytes".into(),
        ));
    }
    Ok(())
}

// RFC 7512 section 2.3: pk11-res-avail, plus "&" in the path and "/", "?", "|" in the query.
const PATH_RES_AVAIL: &[u8] = b":[]@!$'()*+,=&";
const QUERY_RES_AVAIL: &[u8] = b":[]@!$'()*+,=/?|";

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[derive(Clone, Copy)]
enum Part {
    Path,
    Query,
}

impl Part {
    fn allows(self, b: u8) -> bool {
        unreserved(b)
            || match self {
                Part::Path => PATH_RES_AVAIL.contains(&b),
                Part::Query => QUERY_RES_AVAIL.contains(&b),
            }
    }
    fn name(self) -> &'static str {
        match self {
            Part::Path => "path",
            Part::Query => "query",
        }
    }
}

fn bad(msg: impl Into<String>) -> HsmError {
    HsmError::Config(format!("bad PKCS#11 URI: {}", msg.into()))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one attribute value of `part`, refusing a raw character the RFC wants
/// encoded.
fn decode(attr: &str, value: &str, part: Part) -> Result<Vec<u8>, HsmError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) else {
                return Err(bad(format!(
                    "attribute '{attr}': '%' must be followed by two hex digits"
                )));
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else if part.allows(b) {
            out.push(b);
            i += 1;
        } else {
            let shown = value[i..].chars().next().unwrap_or('?');
            return Err(bad(format!(
                "attribute '{attr}': the character {shown:?} must be percent-encoded in the {}",
                part.name()
            )));
        }
    }
    Ok(out)
}

fn decode_text(attr: &str, value: &str, part: Part) -> Result<String, HsmError> {
    let bytes = decode(attr, value, part)?;
    if bytes.is_empty() {
        return Err(bad(format!("attribute '{attr}' is empty")));
    }
    String::from_utf8(bytes).map_err(|_| bad(format!("attribute '{attr}' is not UTF-8")))
}

fn set_once<T>(slot: &mut Option<T>, attr: &str, value: T) -> Result<(), HsmError> {
    if slot.is_some() {
        return Err(bad(format!("attribute '{attr}' appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_pin_source(value: &str) -> Result<PinSource, HsmError> {
    if let Some(path) = value.strip_prefix("file:") {
        // `file:/p` and `file:///p` (an empty authority) both name /p.
        let path = path.strip_prefix("//").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(bad(format!(
                "pin-source '{value}': a file: source needs an absolute path"
            )));
        }
        Ok(PinSource::File(PathBuf::from(path)))
    } else if let Some(name) = value.strip_prefix("env:") {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad(format!(
                "pin-source '{value}': an env: source needs a variable name of letters, digits and '_'"
            )));
        }
        Ok(PinSource::Env(name.to_owned()))
    } else {
        Err(bad(format!(
            "pin-source '{value}': only file:/path and env:NAME are supported"
        )))
    }
}

/// The path attributes, as parsed.
#[derive(Default)]
struct PathAttrs {
    token: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    private_type: Option<()>,
}

fn parse_path(path: &str) -> Result<PathAttrs, HsmError> {
    let mut p = PathAttrs::default();
    if path.is_empty() {
        return Ok(p);
    }
    for attr in path.split(';') {
        let Some((name, value)) = attr.split_once('=') else {
            return Err(bad(format!("path attribute '{attr}' has no '='")));
        };
        let text = || decode_text(name, value, Part::Path);
        match name {
            "token" => set_once(&mut p.token, name, text()?)?,
            "manufacturer" => set_once(&mut p.manufacturer, name, text()?)?,
            "serial" => set_once(&mut p.serial, name, text()?)?,
            "model" => set_once(&mut p.model, name, text()?)?,
            "object" => {
                let label = text()?;
                check_label(&label)?;
                set_once(&mut p.object, name, label)?;
            }
            "id" => {
                // RFC 7512: pk11-id = "id" "=" *pct-encoded
                if value.is_empty()
                    || value.len() % 3 != 0
                    || !value.as_bytes().chunks(3).all(|c| c[0] == b'%')
                {
                    return Err(bad(
                        "attribute 'id' must be percent-encoded bytes only, e.g. id=%01%a2",
                    ));
                }
                set_once(&mut p.id, name, decode(name, value, Part::Path)?)?;
            }
            "type" => {
                let value = text()?;
                if value != "private" {
                    return Err(bad(format!(
                        "type={value}: only type=private is supported (this crate addresses private keys)"
                    )));
                }
                set_once(&mut p.private_type, name, ())?;
            }
            "" => return Err(bad(format!("path attribute '{attr}' has no name"))),
            other => {
                return Err(bad(format!(
                    "path attribute '{other}' is not supported (supported: token, manufacturer, serial, model, object, id, type)"
                )));
            }
        }
    }
    Ok(p)
}

/// The query attributes: the module path and the PIN source.
fn parse_query(query: &str) -> Result<(Option<String>, Option<PinSource>), HsmError> {
    let mut module_path = None;
    let mut pin_source = None;
    for attr in query.split('&') {
        let Some((name, value)) = attr.split_once('=') else {
            return Err(bad(format!("query attribute '{attr}' has no '='")));
        };
        match name {
            "module-path" => {
                let path = decode_text(name, value, Part::Query)?;
                if !path.starts_with('/') {
                    return Err(bad(format!(
                        "module-path '{path}' must be an absolute path"
                    )));
                }
                set_once(&mut module_path, name, path)?;
            }
            "pin-source" => {
                let source = parse_pin_source(&decode_text(name, value, Part::Query)?)?;
                set_once(&mut pin_source, name, source)?;
            }
            // Never echo the value: it is a PIN.
            "pin-value" => {
                return Err(bad(
                    "pin-value is refused: a PIN never lives in a URI or a config file; use pin-source=file:/path",
                ));
            }
            "module-name" => {
                return Err(bad(
                    "module-name is not supported: give the module's absolute module-path",
                ));
            }
            "" => return Err(bad("a query attribute has no name")),
            other => {
                return Err(bad(format!(
                    "query attribute '{other}' is not supported (supported: module-path, pin-source)"
                )));
            }
        }
    }
    Ok((module_path, pin_source))
}

impl FromStr for Pkcs11Uri {
    type Err = HsmError;

    fn from_str(s: &str) -> Result<Self, HsmError> {
        let Some(rest) = s
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &s[7..])
        else {
            return Err(bad("it must start with 'pkcs11:'"));
        };
        if rest.contains('#') {
            return Err(bad("a fragment ('#') is not allowed"));
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let p = parse_path(path)?;
        let (module_path, pin_source) = query.map(parse_query).transpose()?.unwrap_or_default();
        let Some(token) = p.token else {
            return Err(bad("the token attribute (token=LABEL) is required"));
        };
        let Some(module_path) = module_path else {
            return Err(bad(
                "the module-path query attribute (?module-path=/path/to/module.so) is required",
            ));
        };
        Ok(Pkcs11Uri {
            module_path,
            token,
            manufacturer: p.manufacturer,
            serial: p.serial,
            model: p.model,
            object: p.object,
            id: p.id,
            private_type: p.private_type.is_some(),
            pin_source,
        })
    }
}

fn encode(f: &mut fmt::Formatter<'_>, value: &[u8], part: Part) -> fmt::Result {
    for &b in value {
        if part.allows(b) {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pkcs11:token=")?;
        encode(f, self.token.as_bytes(), Part::Path)?;
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
            ("object", &self.object),
        ] {
            if let Some(value) = value {
                write!(f, ";{name}=")?;
                encode(f, value.as_bytes(), Part::Path)?;
            }
        }
        if self.private_type {
            f.write_str(";type=private")?;
        }
        if let Some(id) = &self.id {
            f.write_str(";id=")?;
            for b in id {
                write!(f, "%{b:02X}")?;
            }
        }
        f.write_str("?module-path=")?;
        encode(f, self.module_path.as_bytes(), Part::Query)?;
        if let Some(source) = &self.pin_source {
            f.write_str("&pin-source=")?;
            encode(f, source.to_string().as_bytes(), Part::Query)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_variable_that_is_not_text_is_not_quoted() {
        use std::os::unix::ffi::OsStringExt as _;
        let value = std::ffi::OsString::from_vec(b"s3cret-\xff-PIN".to_vec());
        let error = env_pin_error("PIN", std::env::VarError::NotUnicode(value));
        let shown = format!("{error} {error:?}");
        assert!(
            shown.contains("env:PIN: the variable is not valid UTF-8"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

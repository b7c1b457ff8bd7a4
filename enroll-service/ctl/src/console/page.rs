//! The page shell every page shares, the error pages, and the one rule for text from the
//! service.
//!
//! Text that a device or another tenant wrote (registration contexts, names, descriptions,
//! comments, audit details) reaches a page in two steps, both always applied: [`shown`] makes
//! control characters, bidi overrides and invisible characters visible (the same helper the
//! terminal views use, so `\u{202e}` cannot reverse what the operator reads), and maud escapes
//! every interpolated value for HTML (so `<script>` is text). No page uses `PreEscaped` on
//! anything from the service.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Console;
use crate::error::{CtlError, code_name};
use crate::output::{escape, role_name, timestamp_text, to_timestamp};

/// Text from the service as a page shows it: control, bidi and invisible characters as visible
/// escapes (`\x1b`, `\u{202e}`). maud then escapes it for HTML like every other value.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    escape(text)
}

/// PEM text (a certificate, a CSR) for a `<pre>`: as it is when it is printable ASCII and line
/// breaks, as PEM always is; otherwise through [`shown`] like any other text from the service.
pub(crate) fn shown_pem(pem: &str) -> Cow<'_, str> {
    if pem
        .bytes()
        .all(|b| b == b'\n' || b == b'\r' || (b' '..=b'~').contains(&b))
    {
        Cow::Borrowed(pem)
    } else {
        shown(pem)
    }
}

/// The sections of the console, for the navigation bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Fleet,
    Batches,
    Devices,
    Audit,
    Ca,
}

/// A page of the console: the navigation, who is acting, and `body` under an `h1` `title`.
pub(crate) fn page(console: &Console, section: Section, title: &str, body: &Markup) -> Markup {
    let me = &console.me;
    let link = |target: Section, href: &str, label: &str| {
        html! {
            @if target == section {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    let owner = if me.owner == "*" {
        "the platform".to_owned()
    } else {
        me.owner.clone()
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · oxroot console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header.top {
                    nav {
                        span.brand { "oxroot" }
                        (link(Section::Fleet, "/", "Fleet"))
                        (link(Section::Batches, "/batches", "Batches"))
                        (link(Section::Devices, "/devices", "Devices"))
                        @if console.can_read_audit() {
                            (link(Section::Audit, "/audit", "Audit"))
                        }
                        (link(Section::Ca, "/ca", "CA & CRL"))
                    }
                    div.identity {
                        span #operator data-role=(role_name(me.role)) {
                            (shown(&me.name)) " · " (role_name(me.role)) " of " (shown(&owner))
                        }
                        form method="post" action="/logout" {
                            (csrf_field(console))
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form of the console carries.
pub(crate) fn csrf_field(console: &Console) -> Markup {
    html! { input type="hidden" name=(super::access::CSRF_FIELD) value=(console.access.csrf_token()); }
}

/// A page without navigation, for errors and the login refusals (no session to show).
fn bare_page(title: &str, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · oxroot console" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header.top { nav { span.brand { "oxroot" } a href="/" { "Fleet" } } }
                main.error {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// After `POST /logout`.
pub(crate) fn logged_out() -> Markup {
    bare_page(
        "Logged out",
        &html! {
            p { "This browser no longer holds the console's session cookie." }
            p { "To log in again, stop " code { "enrollctl console" } " and start it again: it prints a new one-time link." }
        },
    )
}

/// Why a page could not be shown.
#[derive(Debug)]
pub(crate) enum PageError {
    /// The service answered an RPC with an error status (a refusal, or a failure).
    Rpc {
        rpc: &'static str,
        status: tonic::Status,
    },
    /// A login link with a wrong or spent token.
    BadLogin,
    /// A page without the session cookie.
    NotLoggedIn,
    /// A POST without this session's CSRF token, or from another origin.
    Csrf,
    /// A request addressed to another host name.
    WrongHost,
    /// A malformed request (a bad query or form value).
    BadRequest(String),
    /// No such page or object.
    NotFound(String),
    /// Too many live views at once.
    Busy,
    /// Something else failed on the console's side.
    Internal(String),
}

impl PageError {
    /// Wraps an RPC's error status.
    pub(crate) fn rpc(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc { rpc, status }
    }

    /// The HTTP status of the error page.
    pub(crate) fn status(&self) -> StatusCode {
        use tonic::Code;
        match self {
            Self::Rpc { status, .. } => match status.code() {
                Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
                Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
                Code::Unavailable
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
                | Code::Aborted => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::BadLogin | Self::NotLoggedIn => StatusCode::UNAUTHORIZED,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::WrongHost => StatusCode::MISDIRECTED_REQUEST,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error page's title and body.
    fn render(&self) -> (&'static str, Markup) {
        match self {
            Self::Rpc { rpc, status } => rpc_refusal(rpc, status),
            Self::BadLogin => (
                "This login link is not valid",
                html! {
                    p { "The token in this link is wrong, or it was already used: each link printed by "
                        code { "enrollctl console" } " logs in once." }
                    p { "Restart the console for a new link." }
                },
            ),
            Self::NotLoggedIn => (
                "Not logged in",
                html! {
                    p { "Open the login link that " code { "enrollctl console" }
                        " printed in your terminal. Only the browser that used it can use the console." }
                },
            ),
            Self::Csrf => (
                "Refused: this request did not come from the console",
                html! {
                    p { "A form of this console always carries its CSRF token; this request had none, "
                        "a wrong one, or came from another site. Nothing was done." }
                },
            ),
            Self::WrongHost => (
                "Wrong host name",
                html! { p { "This console answers to 127.0.0.1 and localhost on its own port only." } },
            ),
            Self::BadRequest(message) => ("Bad request", html! { p { (shown(message)) } }),
            Self::NotFound(message) => ("Not found", html! { p { (shown(message)) } }),
            Self::Busy => (
                "Too many live views",
                html! { p { "Close another live batch view and reload." } },
            ),
            Self::Internal(message) => ("Console error", html! { p { (shown(message)) } }),
        }
    }
}

/// The page for an RPC the service refused: the code and the service's own message.
fn rpc_refusal(rpc: &str, status: &tonic::Status) -> (&'static str, Markup) {
    use tonic::Code;
    let code = code_name(status.code());
    let title = match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => "Refused by the service",
        Code::NotFound => "Not found",
        Code::Unavailable | Code::ResourceExhausted => "The service is unavailable",
        Code::InvalidArgument | Code::OutOfRange => "The service rejected the request",
        _ => "The service could not do it",
    };
    let body = html! {
        p.refusal data-grpc-code=(code) {
            "The service answered " code { (rpc) } " with " strong { (code) } ": "
            (shown(status.message()))
        }
        @if status.code() == Code::PermissionDenied {
            p { "Your operator's role or owner does not allow this. Nothing was changed, and the "
                "service wrote the denial to its audit log." }
        }
        p { a href="/" { "Back to the fleet overview" } }
    };
    (title, body)
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rpc { rpc, status } => {
                write!(
                    f,
                    "{rpc}: {}: {}",
                    code_name(status.code()),
                    status.message()
                )
            }
            Self::BadRequest(message) | Self::NotFound(message) | Self::Internal(message) => {
                f.write_str(message)
            }
            other => f.write_str(other.render().0),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (title, body) = self.render();
        (self.status(), bare_page(title, &body)).into_response()
    }
}

impl From<CtlError> for PageError {
    fn from(error: CtlError) -> Self {
        match error {
            CtlError::Rpc { rpc, status } => Self::Rpc { rpc, status },
            other => Self::Internal(other.to_string()),
        }
    }
}

/// An instant as pages show it: RFC 3339 in UTC, to the second; empty if unset.
pub(crate) fn when(ts: Option<&prost_types::Timestamp>) -> String {
    let whole_seconds = ts.map(|t| prost_types::Timestamp {
        seconds: t.seconds,
        nanos: 0,
    });
    timestamp_text(whole_seconds.as_ref())
}

/// [`when`] for a local instant.
pub(crate) fn when_at(at: time::OffsetDateTime) -> String {
    when(Some(&to_timestamp(at)))
}

/// `part` of `whole` in whole percent, rounded down (so 100 % means every one).
pub(crate) fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part) * 100 / u128::from(whole)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html_of(error: &PageError) -> String {
        let (title, body) = error.render();
        bare_page(title, &body).into_string()
    }

    #[test]
    fn service_text_is_html_escaped_and_its_controls_made_visible() {
        let hostile = "<script>alert(1)</script>\x1b[2J\u{202e}";
        let page = html_of(&PageError::Rpc {
            rpc: "GetDevice",
            status: tonic::Status::not_found(hostile),
        });
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("\\x1b[2J\\u{202e}"), "{page}");
        assert!(
            !page.contains('\u{1b}') && !page.contains('\u{202e}'),
            "{page}"
        );
    }

    #[test]
    fn pem_keeps_its_line_breaks_and_anything_else_is_shown_escaped() {
        let pem = "-----BEGIN CERTIFICATE-----\r\nMIIB<>\n-----END CERTIFICATE-----\n";
        assert_eq!(shown_pem(pem), pem, "maud escapes the < and >");
        assert_eq!(shown_pem("MIIB\x1b[2J\n"), "MIIB\\x1b[2J\\n");
        assert_eq!(shown_pem("MIIB\u{202e}"), "MIIB\\u{202e}");
    }

    #[test]
    fn refusals_show_the_service_code_and_say_nothing_changed() {
        let error = PageError::Rpc {
            rpc: "RevokeDevice",
            status: tonic::Status::permission_denied("auditors may not revoke"),
        };
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        let page = html_of(&error);
        assert!(
            page.contains("data-grpc-code=\"PERMISSION_DENIED\""),
            "{page}"
        );
        assert!(page.contains("auditors may not revoke"), "{page}");
        assert!(page.contains("audit log"), "{page}");
    }

    #[test]
    fn access_refusals_have_their_status_codes() {
        assert_eq!(PageError::BadLogin.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(PageError::NotLoggedIn.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(PageError::Csrf.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            PageError::WrongHost.status(),
            StatusCode::MISDIRECTED_REQUEST
        );
        assert!(html_of(&PageError::BadLogin).contains("already used"));
    }

    #[test]
    fn instants_show_to_the_second() {
        let ts = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 999_999_999,
        };
        assert_eq!(when(Some(&ts)), "2027-01-15T08:00:00Z");
        assert_eq!(when(None), "");
    }

    #[test]
    fn percentages_round_down_and_survive_zero() {
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(199, 200), 99);
        assert_eq!(percent(200, 200), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }
}

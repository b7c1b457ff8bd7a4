//! Who may use the console, and what every response says to the browser about itself.
//!
//! The console acts with the operator's own certificate, so reaching it is as good as holding
//! that certificate. What stands in the way, outermost first:
//!
//! ```text
//!  request ─▶ Host is this console's own (127.0.0.1:PORT, localhost:PORT)?   else 421
//!          ─▶ /login?token=T: T equals the one-time token (constant time)?    else 401
//!                 yes: the token is spent, a session cookie is set, 303 to /
//!          ─▶ any other page: the session cookie (constant time)?             else 401
//!          ─▶ POST: an Origin, if sent, is this console; the form's csrf field
//!                 equals the session's CSRF token (constant time)?           else 403
//!  response ◀─ Content-Security-Policy, nosniff, same-origin referrers, no framing, no-store
//! ```
//!
//! - The listener is loopback only ([`check_loopback`]): nobody on the network can connect.
//! - Another local user, or a web page in the operator's browser, can connect to the port but
//!   holds neither the token (printed only to the operator's terminal, 256 random bits, usable
//!   once) nor the session cookie (HttpOnly, so no script reads it; SameSite=Strict, so no
//!   other site's page makes the browser send it).
//! - The Host check stops DNS rebinding: a page of `evil.example` that re-points its name to
//!   127.0.0.1 still sends `Host: evil.example`.
//! - The CSRF token is a second, independent guard on every state-changing request; GET
//!   never changes anything in the service.
//! - The CSP admits only this console's own script and stylesheet (no inline script or
//!   style, no other origin), so even an escaping bug could not run injected script.
//!
//! The cookie is not `Secure` because the console speaks plain HTTP on loopback; its name
//! carries the port, because browsers share cookies between the ports of one host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::page::PageError;
use super::{Console, SharedConsole};
use crate::error::CtlError;

/// The Content-Security-Policy of every response: this console's own script, stylesheet and
/// images, its own server-sent events, forms posted only to itself, and nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Random bytes in the login token, the session id and the CSRF token (256 bits each).
const SECRET_BYTES: usize = 32;
/// The largest form body the console reads (its forms are a few hundred bytes).
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;
/// The name of the form field that carries the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// Refuses to serve anywhere but loopback: the console acts with the operator's certificate.
///
/// # Errors
/// [`CtlError::Usage`] for any other address.
pub(crate) fn check_loopback(listen: SocketAddr) -> Result<(), CtlError> {
    if listen.ip().is_loopback() {
        Ok(())
    } else {
        Err(CtlError::Usage(format!(
            "--listen {listen}: the console serves on loopback only (127.0.0.0/8 or [::1]), \
             because it acts with your operator certificate; to reach it from elsewhere, \
             forward the port over SSH"
        )))
    }
}

/// A random secret as lowercase hex.
fn random_secret() -> Result<String, CtlError> {
    let mut bytes = [0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| CtlError::KeyGeneration("the system random generator failed".into()))?;
    Ok(hex::encode(bytes))
}

/// True if `given` equals `expected`, in time that does not depend on where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The session a spent login token opened.
struct Session {
    id: String,
    csrf: String,
}

/// The login token, the session, and the names this console answers to.
pub(crate) struct Access {
    /// The one-time login token, until it is spent.
    login_token: Mutex<Option<String>>,
    /// The one session: a console serves the one operator who started it.
    session: OnceLock<Session>,
    /// Set by logging out: the session is over for every copy of its cookie, for good (a new
    /// one needs a new console, with a new login link).
    ended: AtomicBool,
    /// `Host` header values that name this console.
    hosts: Vec<String>,
    /// The session cookie's name (with the port: cookies are shared between a host's ports).
    cookie: String,
    /// What the login link starts with.
    base_url: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Access for a console listening on `address`, with a fresh login token.
    ///
    /// # Errors
    /// The random generator failed.
    pub(crate) fn new(address: SocketAddr) -> Result<Self, CtlError> {
        let port = address.port();
        let hosts = vec![address.to_string(), format!("localhost:{port}")];
        Ok(Self {
            login_token: Mutex::new(Some(random_secret()?)),
            session: OnceLock::new(),
            ended: AtomicBool::new(false),
            base_url: format!("http://{address}"),
            hosts,
            cookie: format!("oxroot_console_{port}"),
        })
    }

    /// The link to print for the operator: it logs in once.
    pub(crate) fn login_url(&self) -> String {
        let token = self
            .login_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        format!("{}/login?token={token}", self.base_url)
    }

    /// The session's CSRF token, for forms ("" before anyone logged in, when no form is shown).
    pub(crate) fn csrf_token(&self) -> &str {
        self.session.get().map_or("", |s| s.csrf.as_str())
    }

    /// Spends the login token if `given` is it; returns the new session's cookie.
    fn exchange(&self, given: &str) -> Result<String, CtlError> {
        let mut token = self
            .login_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Compared in constant time, and only while unspent: a used link is as wrong as a
        // made-up one.
        let valid = token
            .as_deref()
            .is_some_and(|expected| same_secret(given, expected));
        if !valid {
            return Err(CtlError::Usage("wrong or spent login token".into()));
        }
        let session = Session {
            id: random_secret()?,
            csrf: random_secret()?,
        };
        let id = session.id.clone();
        if self.session.set(session).is_err() {
            return Err(CtlError::Usage(
                "the console already has its session".into(),
            ));
        }
        *token = None;
        Ok(format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie
        ))
    }

    /// True if the request carries this console's session cookie.
    fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(session) = self.live_session() else {
            return false;
        };
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == self.cookie && same_secret(value, &session.id))
    }

    /// True if `host` (a `Host` header) names this console.
    fn is_own_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|own| own.eq_ignore_ascii_case(host))
    }

    /// True if an `Origin` header names this console.
    fn is_own_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|host| self.is_own_host(host))
    }

    /// True if `given` is the session's CSRF token.
    fn is_csrf_token(&self, given: &str) -> bool {
        self.live_session()
            .is_some_and(|session| same_secret(given, &session.csrf))
    }

    /// The session, unless nobody logged in yet or it was logged out.
    fn live_session(&self) -> Option<&Session> {
        self.session
            .get()
            .filter(|_| !self.ended.load(Ordering::SeqCst))
    }

    /// Ends the session for every copy of its cookie.
    fn end_session(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }
}

/// `?token=…` of the login link.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    token: String,
}

/// `GET /login?token=…`: spends the one-time token for a session cookie, then sends the
/// browser to a URL without the token (so it stays out of the history and the address bar).
///
/// The one GET that changes anything, and only the console's own state: the link is what the
/// operator's terminal printed, and a browser opens links with GET.
pub(crate) async fn login(
    State(console): State<SharedConsole>,
    Query(query): Query<LoginQuery>,
) -> Response {
    match console.access.exchange(&query.token) {
        Ok(cookie) => {
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(_) => PageError::BadLogin.into_response(),
    }
}

/// `POST /logout`: ends the session (a copied cookie stops working too) and expires the
/// cookie in this browser. A console has one session: a new one needs a new console.
pub(crate) async fn logout(State(console): State<SharedConsole>) -> Response {
    console.access.end_session();
    let mut response = super::page::logged_out().into_response();
    let expired = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        console.access.cookie
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Refuses requests addressed to any other host name (DNS rebinding).
pub(crate) async fn check_host(
    State(console): State<SharedConsole>,
    request: Request,
    next: Next,
) -> Response {
    let own = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| console.access.is_own_host(host));
    if own {
        next.run(request).await
    } else {
        PageError::WrongHost.into_response()
    }
}

/// Every page but the login link and the static files needs the session; every POST also
/// needs the CSRF token (and, if the browser says where the form came from, this console).
pub(crate) async fn require_session(
    State(console): State<SharedConsole>,
    request: Request,
    next: Next,
) -> Response {
    if !console.access.has_session(request.headers()) {
        return PageError::NotLoggedIn.into_response();
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    match check_csrf(&console, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// The CSRF field of a form; other fields are the handler's.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default, rename = "csrf")]
    token: String,
}

/// Checks a POST's origin and CSRF token, and hands back the request with its body intact for
/// the handler.
async fn check_csrf(console: &Console, request: Request) -> Result<Request, PageError> {
    let (parts, body) = request.into_parts();
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|origin| console.access.is_own_origin(origin))
    {
        return Err(PageError::Csrf);
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PageError::BadRequest("the form is too large".into()))?;
    let form = Request::builder()
        .method(Method::POST)
        .header(
            header::CONTENT_TYPE,
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("")),
        )
        .body(axum::body::Body::from(bytes.clone()))
        .map_err(|_| PageError::Csrf)?;
    let token = axum::Form::<CsrfField>::from_request(form, &())
        .await
        .map(|form| form.0.token)
        .unwrap_or_default();
    if !console.access.is_csrf_token(&token) {
        return Err(PageError::Csrf);
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Adds the console's security headers to every response.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // No page address (the login link's token least of all) goes to another origin. Not
    // "no-referrer": with it browsers send `Origin: null` on form posts, which the CSRF guard
    // must refuse.
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    // Pages hold fleet data: nothing for the browser's disk cache.
    set(headers, header::CACHE_CONTROL, "no-store");
    set(
        headers,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    response
}

/// A 404 for paths the console does not have.
pub(crate) async fn not_found() -> Response {
    PageError::NotFound("no such page".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new("127.0.0.1:8780".parse().expect("address")).expect("access")
    }

    fn token_of(access: &Access) -> String {
        access
            .login_url()
            .rsplit_once("token=")
            .expect("a token")
            .1
            .to_owned()
    }

    fn cookie_headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let pair = cookie.split(';').next().expect("name=value");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).expect("header"),
        );
        headers
    }

    #[test]
    fn only_loopback_addresses_are_served() {
        for ok in ["127.0.0.1:0", "127.1.2.3:80", "[::1]:8780"] {
            assert!(check_loopback(ok.parse().expect("address")).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8780", "192.168.1.2:80", "[::]:80", "10.0.0.1:1"] {
            let error = check_loopback(bad.parse().expect("address")).expect_err(bad);
            assert!(error.to_string().contains("loopback only"), "{error}");
            assert_eq!(error.exit(), crate::Exit::Usage);
        }
    }

    #[test]
    fn the_login_token_is_long_random_and_spent_once() {
        let access = access();
        let token = token_of(&access);
        assert_eq!(token.len(), 2 * SECRET_BYTES);
        assert_ne!(
            token,
            token_of(&Access::new("127.0.0.1:1".parse().expect("a")).expect("a"))
        );
        assert!(access.exchange("wrong").is_err());
        assert!(access.exchange("").is_err());
        let cookie = access.exchange(&token).expect("the right token");
        assert!(cookie.starts_with("oxroot_console_8780="), "{cookie}");
        assert!(
            cookie.contains("; HttpOnly; SameSite=Strict; Path=/"),
            "{cookie}"
        );
        // Spent: the same link again is refused, and the printed link no longer has it.
        assert!(access.exchange(&token).is_err());
        assert!(access.login_url().ends_with("token="));
        assert!(access.has_session(&cookie_headers(&cookie)));
    }

    #[test]
    fn sessions_and_csrf_tokens_must_match_exactly() {
        let access = access();
        assert!(!access.has_session(&HeaderMap::new()));
        assert!(!access.is_csrf_token(""), "no session, no valid token");
        let cookie = access.exchange(&token_of(&access)).expect("logs in");
        let id = cookie.split(['=', ';']).nth(1).expect("id").to_owned();
        // The same id with its last digit changed (to another digit: a 0 stays no 0).
        let last = if id.ends_with('0') { '1' } else { '0' };
        let forged = format!("oxroot_console_8780={}{last}", &id[..id.len() - 1]);
        assert!(!access.has_session(&cookie_headers(&forged)));
        // Another port's console cookie with the same value is not this one's.
        let other_port = format!("oxroot_console_8781={id}");
        assert!(!access.has_session(&cookie_headers(&other_port)));
        let csrf = access.csrf_token().to_owned();
        assert_eq!(csrf.len(), 2 * SECRET_BYTES);
        assert_ne!(csrf, id, "the CSRF token is not the session id");
        assert!(access.is_csrf_token(&csrf));
        assert!(!access.is_csrf_token(""));
        assert!(!access.is_csrf_token(&csrf[1..]));
    }

    #[test]
    fn logging_out_ends_the_session_for_every_copy_of_its_cookie() {
        let access = access();
        let cookie = access.exchange(&token_of(&access)).expect("logs in");
        let csrf = access.csrf_token().to_owned();
        assert!(access.has_session(&cookie_headers(&cookie)));
        access.end_session();
        assert!(!access.has_session(&cookie_headers(&cookie)));
        assert!(!access.is_csrf_token(&csrf));
    }

    #[test]
    fn hosts_and_origins_are_this_console_only() {
        let access = access();
        for own in ["127.0.0.1:8780", "localhost:8780", "LOCALHOST:8780"] {
            assert!(access.is_own_host(own), "{own}");
        }
        for other in [
            "evil.example",
            "evil.example:8780",
            "127.0.0.1:8781",
            "127.0.0.1",
        ] {
            assert!(!access.is_own_host(other), "{other}");
        }
        assert!(access.is_own_origin("http://127.0.0.1:8780"));
        assert!(!access.is_own_origin("https://127.0.0.1:8780"));
        assert!(!access.is_own_origin("http://evil.example"));
        assert!(!access.is_own_origin("null"));
    }
}

//! Who may change things: the cluster secret on mutating calls, as a bearer token or as the
//! UI's login cookie.
//!
//! Every POST, PUT, PATCH and DELETE must carry `Authorization: Bearer <secret>`; reads are open
//! (CONTRACT.md). [`require_secret`] is middleware wrapped around every route by
//! [`crate::configure`], so a new mutating endpoint cannot forget the check.
//!
//! The UI's forms cannot send a header, so `POST /login` trades the secret for a session
//! cookie ([`SESSION_COOKIE`]): `HttpOnly` (no script reads it), `SameSite=Strict` (no other
//! site's form sends it), holding an expiry time and an HMAC of it under the secret, never the
//! secret itself. The cookie is accepted only on the UI's own form routes, never under `/api/`
//! (the JSON API stays bearer-only), and a cookie-carrying request whose `Origin` is another
//! origin (another port on the same host is the same *site*) is refused too. Changing the
//! secret ends every session. Comparisons take the same time wherever the inputs first differ.

use std::future::{ready, Ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::ClusterApi;
use crate::error::Error;

/// The name of the UI's session cookie.
pub const SESSION_COOKIE: &str = "mrc_session";
/// How long a login lasts.
pub const SESSION_SECS: u64 = 7 * 24 * 3600;
/// Mutating routes that need no secret: logging in, and logging out (which only drops a cookie).
pub const OPEN_ROUTES: [&str; 2] = ["/login", "/logout"];
/// Domain separation for the session MAC, so it can never equal another use of the secret.
const SESSION_CONTEXT: &[u8] = b"mrcluster web session v1:";

/// Whether a request with this method changes something and so needs the secret.
pub fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Checks an `Authorization` header value against the secret.
///
/// # Errors
/// [`Error::MissingSecret`] if there is no bearer token, [`Error::WrongSecret`] if it differs.
pub fn check_bearer(header: Option<&[u8]>, secret: &str) -> Result<(), Error> {
    let token = header
        .and_then(|value| value.strip_prefix(b"Bearer "))
        .map(|token| token.trim_ascii())
        .filter(|token| !token.is_empty())
        .ok_or(Error::MissingSecret)?;
    if constant_time_eq(token, secret.as_bytes()) {
        Ok(())
    } else {
        Err(Error::WrongSecret)
    }
}

/// Compares two byte strings in time that depends only on the length of `given`, never on
/// where the two first differ.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, byte) in given.iter().enumerate() {
        let other = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(byte ^ other);
    }
    std::hint::black_box(diff) == 0
}

fn session_mac(secret: &str, expires: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(SESSION_CONTEXT);
    mac.update(expires.to_string().as_bytes());
    mac
}

/// A session token valid until `expires` (seconds since the epoch): `<expires>.<hex MAC>`.
pub fn session_token(secret: &str, expires: u64) -> String {
    let tag = session_mac(secret, expires).finalize().into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

/// Whether `token` was made by [`session_token`] under `secret` and has not expired at `now`
/// (seconds since the epoch).
pub fn session_valid(token: &str, secret: &str, now: u64) -> bool {
    let Some((expires, tag)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    expires > now && session_mac(secret, expires).verify_slice(&tag).is_ok()
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the request carries a valid session cookie for `secret`.
pub fn has_session(headers: &HeaderMap, secret: &str) -> bool {
    cookie(headers, SESSION_COOKIE).is_some_and(|token| session_valid(token, secret, now_secs()))
}

/// The `Set-Cookie` value that logs a browser in.
pub fn login_cookie(secret: &str, secure: bool) -> String {
    let token = session_token(secret, now_secs() + SESSION_SECS);
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that logs a browser out.
pub fn logout_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Whether a browser's `Origin` header (if any) names the origin the request was sent to, so a
/// page on another origin cannot use the cookie. Requests without `Origin` (not from a
/// browser's cross-origin machinery) pass.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// Whether this request comes from a logged-in browser, for pages that show buttons only to
/// those who can use them. An extractor: add `session: Session` to a handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// The request carries a valid session cookie.
    pub logged_in: bool,
}

impl Session {
    /// The session of a request.
    pub fn of(req: &HttpRequest) -> Session {
        let logged_in = req
            .app_data::<web::Data<dyn ClusterApi>>()
            .is_some_and(|api| has_session(req.headers(), api.secret()));
        Session { logged_in }
    }
}

impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = Ready<Result<Session, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Session::of(req)))
    }
}

/// Decides whether a mutating request may go on: a right bearer token anywhere; or, outside
/// `/api/`, a valid session cookie from the same origin.
fn authorize(req: &ServiceRequest, secret: &str) -> Result<(), Error> {
    let bearer = check_bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes()),
        secret,
    );
    match bearer {
        Err(Error::MissingSecret) if !is_api(req.path()) => {
            if !has_session(req.headers(), secret) {
                Err(Error::MissingSecret)
            } else if !same_origin(req.headers()) {
                Err(Error::CrossOrigin)
            } else {
                Ok(())
            }
        }
        other => other,
    }
}

/// Whether a path belongs to the JSON API (which answers errors in JSON, not HTML).
pub fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/metrics"
}

/// Middleware: rejects a mutating request that is not authorized (see the module docs) with
/// 401 (403 for a foreign origin) before its handler, or its body, is touched: a JSON error
/// under `/api/`, a page offering to log in elsewhere.
///
/// # Errors
/// Only those of the wrapped service.
pub async fn require_secret(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if is_mutating(req.method()) && !OPEN_ROUTES.contains(&req.path()) {
        let verdict = match req.app_data::<web::Data<dyn ClusterApi>>() {
            Some(api) => authorize(&req, api.secret()),
            // `configure` always registers the api; refuse rather than let a call through.
            None => Err(Error::MissingSecret),
        };
        if let Err(error) = verdict {
            tracing::debug!(method = %req.method(), path = req.path(), %error, "unauthorized");
            let response: HttpResponse = if is_api(req.path()) {
                error.error_response()
            } else {
                crate::ui::login::refused_page(&error, req.request())
            };
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    #[test]
    fn bearer_tokens_are_checked_exactly() {
        assert!(check_bearer(Some(b"Bearer s3cret"), "s3cret").is_ok());
        assert!(matches!(
            check_bearer(None, "s3cret"),
            Err(Error::MissingSecret)
        ));
        assert!(matches!(
            check_bearer(Some(b"Basic s3cret"), "s3cret"),
            Err(Error::MissingSecret)
        ));
        assert!(matches!(
            check_bearer(Some(b"Bearer "), "s3cret"),
            Err(Error::MissingSecret)
        ));
        for wrong in [&b"Bearer s3cre"[..], b"Bearer s3cretX", b"Bearer S3cret"] {
            assert!(matches!(
                check_bearer(Some(wrong), "s3cret"),
                Err(Error::WrongSecret)
            ));
        }
    }

    #[test]
    fn only_writes_need_the_secret() {
        assert!(is_mutating(&Method::POST));
        assert!(is_mutating(&Method::DELETE));
        assert!(!is_mutating(&Method::GET));
        assert!(!is_mutating(&Method::HEAD));
    }

    #[test]
    fn session_tokens_need_the_secret_and_expire() {
        let token = session_token("s3cret", 2_000);
        assert!(
            !token.contains("s3cret"),
            "the secret never leaves: {token}"
        );
        assert!(session_valid(&token, "s3cret", 1_999));
        assert!(!session_valid(&token, "s3cret", 2_000), "expired");
        assert!(!session_valid(&token, "other", 1_000), "another secret");
        // moving the expiry forward breaks the MAC
        let forged = token.replacen("2000", "9000", 1);
        assert!(!session_valid(&forged, "s3cret", 1_000));
        for garbage in ["", ".", "2000", "2000.zz", "x.00"] {
            assert!(!session_valid(garbage, "s3cret", 1_000), "{garbage}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mrc_session=tok.en ; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok.en"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn login_cookies_are_http_only_and_strict() {
        let set = login_cookie("s3cret", false);
        assert!(set.starts_with("mrc_session="), "{set}");
        assert!(set.contains("; HttpOnly") && set.contains("; SameSite=Strict"));
        assert!(set.contains("; Path=/") && !set.contains("Secure"));
        assert!(login_cookie("s3cret", true).ends_with("; Secure"));
        assert!(logout_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn origins_must_match_the_host() {
        let headers = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            if let Some(origin) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(origin));
            }
            h
        };
        assert!(same_origin(&headers(None)));
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"))));
        assert!(!same_origin(&headers(Some("http://127.0.0.1:9999"))));
        assert!(!same_origin(&headers(Some("null"))));
    }
}

//! The cluster secret on mutating calls.
//!
//! Every POST, PUT, PATCH and DELETE must carry `Authorization: Bearer <secret>`; reads are open
//! (CONTRACT.md). [`require_secret`] is middleware wrapped around every route by
//! [`crate::configure`], so a new mutating endpoint cannot forget the check. The comparison
//! takes the same time wherever the presented secret first differs.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web;

use crate::api::ClusterApi;
use crate::error::Error;

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
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, byte) in given.iter().enumerate() {
        let other = expected.get(i).copied().unwrap_or(0);
        diff |= usize::from(byte ^ other);
    }
    std::hint::black_box(diff) == 0
}

/// Middleware: rejects a mutating request without the right secret with 401 and a JSON error,
/// before its handler (or its body) is touched.
///
/// # Errors
/// Only those of the wrapped service.
pub async fn require_secret(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if is_mutating(req.method()) {
        let verdict = match req.app_data::<web::Data<dyn ClusterApi>>() {
            Some(api) => check_bearer(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(|value| value.as_bytes()),
                api.secret(),
            ),
            // `configure` always registers the api; refuse rather than let a call through.
            None => Err(Error::MissingSecret),
        };
        if let Err(error) = verdict {
            tracing::debug!(method = %req.method(), path = req.path(), %error, "unauthorized");
            return Ok(req.error_response(error).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
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
}

//! The web layer's error type and how every error becomes an HTTP response: a status and a
//! JSON body `{"error": "<what is wrong>"}`.
//!
//! actix's own extractor errors (query strings, paths, JSON bodies) are routed here too by the
//! `*Config` error handlers that [`crate::configure`] installs, so no API error is plain text.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use jobs::lock::LockError;
use serde::Serialize;

use crate::api::ApiError;

/// An error answering an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The master refused or could not serve the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A lock request was refused or could not be served.
    #[error(transparent)]
    Lock(#[from] jobs::lock::LockError),
    /// A mutating call came without `Authorization: Bearer <secret>`.
    #[error("missing cluster secret: send `Authorization: Bearer <secret>`")]
    MissingSecret,
    /// A mutating call presented a secret that is not the cluster's.
    #[error("wrong cluster secret in the `Authorization` header")]
    WrongSecret,
    /// A request authorized by the login cookie came from a page of another origin.
    #[error("refused: the request comes from another origin than this UI")]
    CrossOrigin,
    /// A path segment that should be a job id is not a decimal number.
    #[error("invalid job id `{text}`: expected a decimal number")]
    InvalidId {
        /// What the path held.
        text: String,
    },
    /// A query parameter has a value that cannot be used.
    #[error("invalid query parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The request could not be decoded (query string, path or body), as actix reported it.
    #[error("{reason}")]
    BadRequest {
        /// actix's description of the problem.
        reason: String,
    },
    /// The submitted job spec is malformed or invalid.
    #[error("{0}")]
    InvalidSpec(#[source] jobs::Error),
    /// The request body is larger than the server accepts.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Reading the request body failed (the client went away, bad chunked encoding, ...).
    #[error("could not read the request body: {reason}")]
    Payload {
        /// What went wrong.
        reason: String,
    },
    /// No route matches the path.
    #[error("no such endpoint: {method} {path}")]
    NoRoute {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The route exists but not for this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Api(ApiError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            Error::Api(ApiError::NotFound(_)) => StatusCode::NOT_FOUND,
            Error::Api(ApiError::Conflict(_)) => StatusCode::CONFLICT,
            Error::Api(ApiError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Lock(error) => match error {
                LockError::Held { .. }
                | LockError::WaitTimedOut { .. }
                | LockError::Stale { .. } => StatusCode::CONFLICT,
                LockError::Invalid(_) => StatusCode::BAD_REQUEST,
                LockError::NotLeader { .. } | LockError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            Error::MissingSecret | Error::WrongSecret => StatusCode::UNAUTHORIZED,
            Error::CrossOrigin => StatusCode::FORBIDDEN,
            Error::InvalidId { .. }
            | Error::InvalidParam { .. }
            | Error::BadRequest { .. }
            | Error::InvalidSpec(_)
            | Error::Payload { .. } => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NoRoute { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = self.to_string();
        if status.is_server_error() {
            tracing::warn!(%status, error = %message, "request failed");
        } else {
            tracing::debug!(%status, error = %message, "request refused");
        }
        HttpResponse::build(status).json(ErrorBody { error: &message })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body_of(error: Error) -> (StatusCode, serde_json::Value) {
        let response = error.error_response();
        let status = response.status();
        let bytes = response.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn api_errors_map_to_their_status_with_a_json_message() {
        for (error, status) in [
            (ApiError::BadRequest("no worker runs `x`".into()), 400),
            (ApiError::NotFound("no job 5".into()), 404),
            (ApiError::Conflict("job 5 already ended".into()), 409),
            (ApiError::Unavailable("no leader".into()), 503),
        ] {
            let text = error.to_string();
            let (got, body) = body_of(Error::Api(error));
            assert_eq!(got.as_u16(), status);
            assert_eq!(body["error"], serde_json::Value::String(text));
        }
    }
}

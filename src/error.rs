//! The ONE place where errors become HTTP responses.
//!
//! Every refusal hookgate sends is an [`ApiError`]: a status, a stable
//! machine-readable `code`, and a JSON body `{"error":{"code":...}}`. Bodies
//! never carry secrets, expected signatures or request content.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

use crate::signature::VerifyError;

/// The error of a response body (an upstream's body in passthrough can fail).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every hookgate listener.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A JSON response with the given status: `value` serialized as is (a
/// `serde_json::Value`, or a struct that skips building one).
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Every error answer of the public and admin listeners (SPEC §1.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("signature: {0}")]
    Signature(VerifyError),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("dedup key missing")]
    DedupKeyMissing,
    #[error("dedup key invalid")]
    DedupKeyInvalid,
    #[error("body is not valid JSON")]
    InvalidJson,
    #[error("request path cannot be forwarded")]
    InvalidPath,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("client too slow sending the request")]
    RequestTimeout,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request head too large")]
    HeadersTooLarge,
    #[error("sender address not allowed on this route")]
    SourceNotAllowed,
    #[error("handshake refused: wrong verify token")]
    HandshakeRefused,
    #[error("unauthorized")]
    Unauthorized,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("service unavailable")]
    Unavailable { retry_after_secs: u64 },
    /// The shared request-body budget (`server.max_inflight_body`) is spent.
    #[error("too many request bodies in flight")]
    Overloaded,
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        ApiError::Signature(e)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Signature(_) | ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::DedupKeyMissing
            | ApiError::DedupKeyInvalid
            | ApiError::InvalidJson
            | ApiError::InvalidPath
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::SourceNotAllowed | ApiError::HandshakeRefused => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable { .. } | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable error code (README "Answers to the sender").
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Signature(e) => e.code(),
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::DedupKeyMissing => "dedup_key_missing",
            ApiError::DedupKeyInvalid => "dedup_key_invalid",
            ApiError::InvalidJson => "invalid_json",
            ApiError::InvalidPath => "invalid_path",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::SourceNotAllowed => "source_not_allowed",
            ApiError::HandshakeRefused => "handshake_refused",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::UpstreamUnreachable => "upstream_unreachable",
            ApiError::UpstreamTimeout => "upstream_timeout",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut r = json(
            self.status(),
            &serde_json::json!({ "error": { "code": self.code() } }),
        );
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
            }
            ApiError::Unavailable { retry_after_secs } => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Overloaded => {
                // The body was not read: the connection cannot be reused.
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unauthorized => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RequestTimeout => {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        r
    }
}

/// An error answer of the sender's `/v1/` API (seed 001's envelope):
/// `{"success":false,"error":{"code":...,"message":...}}`. Messages name
/// the field at fault and never contain a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct V1Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl V1Error {
    pub fn validation(message: impl Into<String>) -> V1Error {
        V1Error {
            status: StatusCode::BAD_REQUEST,
            code: "VALIDATION_ERROR",
            message: message.into(),
        }
    }
    pub fn unauthorized() -> V1Error {
        V1Error {
            status: StatusCode::UNAUTHORIZED,
            code: "UNAUTHORIZED",
            message: "missing or invalid API key".into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> V1Error {
        V1Error {
            status: StatusCode::FORBIDDEN,
            code: "FORBIDDEN",
            message: message.into(),
        }
    }
    pub fn quota(message: impl Into<String>) -> V1Error {
        V1Error {
            status: StatusCode::FORBIDDEN,
            code: "QUOTA_EXCEEDED",
            message: message.into(),
        }
    }
    pub fn not_found() -> V1Error {
        V1Error {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: "no such resource".into(),
        }
    }
    /// A path the API does not serve (unlike [`V1Error::not_found`], an
    /// unknown id on a served path).
    pub fn no_route() -> V1Error {
        V1Error {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: "no such route".into(),
        }
    }
    pub fn method_not_allowed() -> V1Error {
        V1Error {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "METHOD_NOT_ALLOWED",
            message: "method not allowed on this path".into(),
        }
    }
    pub fn too_large(limit: u64) -> V1Error {
        V1Error {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "PAYLOAD_TOO_LARGE",
            message: format!("the body exceeds sender.max_body ({limit} bytes)"),
        }
    }
    pub fn unavailable() -> V1Error {
        V1Error {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "UNAVAILABLE",
            message: "the store cannot take the request now; retry later".into(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut r = json(
            self.status,
            &serde_json::json!({
                "success": false,
                "error": { "code": self.code, "message": self.message }
            }),
        );
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            StatusCode::UNAUTHORIZED => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_bodies_are_the_documented_json() {
        let r = ApiError::Signature(VerifyError::Mismatch).into_response();
        assert_eq!(r.status(), 401);
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&b[..], br#"{"error":{"code":"signature_mismatch"}}"#);

        let r = ApiError::Unavailable {
            retry_after_secs: 5,
        }
        .into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        let r = ApiError::MethodNotAllowed {
            allow: "POST".into(),
        }
        .into_response();
        assert_eq!(r.headers()["allow"], "POST");
    }
}

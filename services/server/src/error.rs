//! The one mapping from engine errors to gRPC statuses and HTTP responses. Both matches are
//! exhaustive, so a new error kind cannot reach a client unmapped.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sealroom_engine::Error;

/// The gRPC status of an engine error.
pub fn to_status(error: &Error) -> tonic::Status {
    let message = error.to_string();
    match error {
        Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
        Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
        Error::NotFound(_) => tonic::Status::not_found(message),
        Error::InvalidRequest(_) | Error::InvalidData(_) => tonic::Status::invalid_argument(message),
        Error::FailedPrecondition(_) | Error::Contract(_) => tonic::Status::failed_precondition(message),
        Error::TooLarge(_) | Error::BudgetExhausted(_) => tonic::Status::resource_exhausted(message),
        Error::Storage { .. } | Error::Computation(_) => tonic::Status::internal(message),
        Error::Delivery(_) => tonic::Status::unavailable(message),
    }
}

/// The HTTP status and stable error code of an engine error.
pub fn to_http(error: &Error) -> (StatusCode, &'static str) {
    match error {
        Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        Error::InvalidData(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_data"),
        Error::FailedPrecondition(_) => (StatusCode::CONFLICT, "failed_precondition"),
        Error::Contract(_) => (StatusCode::CONFLICT, "contract"),
        Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        Error::BudgetExhausted(_) => (StatusCode::FORBIDDEN, "privacy_budget_exhausted"),
        Error::Storage { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        Error::Computation(_) => (StatusCode::INTERNAL_SERVER_ERROR, "computation"),
        Error::Delivery(_) => (StatusCode::BAD_GATEWAY, "delivery"),
    }
}

/// An engine error as an HTTP response: `{"error": {"code": …, "message": …}}`.
#[derive(Debug)]
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code) = to_http(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        let mut response =
            (status, Json(serde_json::json!({ "error": { "code": code, "message": self.0.to_string() } })))
                .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

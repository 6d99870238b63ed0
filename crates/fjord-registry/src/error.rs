//! The registry's errors and their Confluent error codes, mapped in one place.
//!
//! Confluent's clients look at `error_code` (40401, 40403, 409, 42201, ...), and some at the HTTP status; both
//! follow Confluent's `RestException` subclasses. A gap in the list is a code this registry does not produce yet.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The content type of every JSON answer, as Confluent's registry sends it.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Schema not found")]
    SchemaContentNotFound,
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, i32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, i32),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotFound(String),
    #[error("{0}")]
    Incompatible(String),
    #[error("Invalid schema {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel,
    #[error("Invalid mode. Valid values are READWRITE, READONLY, IMPORT")]
    InvalidMode,
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("One or more references exist to the schema {{subject={0},version={1}}}.")]
    ReferenceExists(String, i32),
    #[error("Context '{0}' not found.")]
    ContextNotFound(String),
    #[error("Context '{0}' is not empty: delete its subjects permanently first")]
    ContextNotEmpty(String),
    /// A malformed request other than its body (e.g. a context name with a colon).
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON at all.
    #[error("Unexpected character or malformed JSON: {0}")]
    MalformedJson(String),
    /// JSON of the wrong shape: a missing field, a field of the wrong type.
    #[error("{0}")]
    UnprocessableEntity(String),
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("HTTP 415 Unsupported Media Type: {0}")]
    UnsupportedMediaType(String),
    #[error("HTTP 404 Not Found")]
    NotFound,
    /// The `_schemas` topic could not be written or read.
    #[error("Error while registering schema: {0}")]
    Store(String),
    #[error("Write to the Kafka store timed out while {0}")]
    StoreTimeout(String),
    /// A secondary could not forward a write to the primary (Confluent's `RequestForwardingFailedException`).
    #[error("Error while forwarding the request to the primary: {0}")]
    ForwardFailed(String),
    /// No primary is known, or this instance stopped being it (Confluent's `UnknownLeaderException`).
    #[error("{0}; retry the request")]
    NotPrimary(String),
}

impl Error {
    /// (HTTP status, Confluent `error_code`).
    pub fn codes(&self) -> (StatusCode, u32) {
        use Error::*;
        match self {
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            SchemaNotFound(_) | SchemaContentNotFound => (StatusCode::NOT_FOUND, 40403),
            SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            VersionSoftDeleted(..) => (StatusCode::NOT_FOUND, 40406),
            VersionNotSoftDeleted(..) => (StatusCode::NOT_FOUND, 40407),
            SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            SubjectModeNotFound(_) => (StatusCode::NOT_FOUND, 40409),
            NotFound => (StatusCode::NOT_FOUND, 404),
            // Confluent answers an unknown context with the subject-not-found code.
            ContextNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            ContextNotEmpty(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42211),
            BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Incompatible(_) => (StatusCode::CONFLICT, 409),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidCompatibilityLevel => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            InvalidMode => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
            OperationNotPermitted(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42205),
            ReferenceExists(..) => (StatusCode::UNPROCESSABLE_ENTITY, 42206),
            UnprocessableEntity(_) => (StatusCode::UNPROCESSABLE_ENTITY, 422),
            MalformedJson(_) => (StatusCode::BAD_REQUEST, 400),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 413),
            UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
            StoreTimeout(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50002),
            ForwardFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50003),
            NotPrimary(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50004),
        }
    }
}

/// Marks the answer of a write refused because this instance is not (or no longer) the primary, so that the
/// write can be forwarded to the primary instead.
#[derive(Clone, Copy, Debug)]
pub struct NotPrimaryMarker;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let not_primary = matches!(self, Error::NotPrimary(_));
        let (status, code) = self.codes();
        if status.is_server_error() {
            tracing::error!(error_code = code, "{self}");
        }
        let body = serde_json::json!({"error_code": code, "message": self.to_string()});
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response();
        if not_primary {
            resp.extensions_mut().insert(NotPrimaryMarker);
        }
        resp
    }
}

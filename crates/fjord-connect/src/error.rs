//! Connect's REST errors: every failure a handler reports becomes `{"error_code": N, "message": "..."}` with
//! the HTTP status N, as Kafka Connect's `ConnectExceptionMapper` answers.

/// What went wrong, by the HTTP status Connect answers it with. Bad input is never `Internal`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request or a configuration is wrong; the message names the field and says what is expected.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such connector, task or plugin.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with what exists (a connector of that name already exists).
    #[error("{0}")]
    Conflict(String),
    /// 500: the worker itself failed (the offsets file could not be written, the cluster is unreachable).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status, which is also Connect's `error_code`.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::Internal(_) => 500,
        }
    }

    pub fn connector_not_found(name: &str) -> Error {
        Error::NotFound(format!("Connector {name} not found"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

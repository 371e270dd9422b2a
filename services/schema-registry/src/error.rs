//! Errors in Confluent's shape, `{"error_code": 40401, "message": "..."}`, rather than the
//! platform's: Confluent clients read `error_code` to tell, say, an unknown subject from an
//! unknown version.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::{InvalidCompatibilityLevel, InvalidSchema, InvalidVersion};

/// The media type of every answer, as Confluent's registry sends it.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound { subject: String, version: String },
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Schema not found under subject '{0}'")]
    SchemaNotUnderSubject(String),
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error(
        "Version {version} of subject '{subject}' was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted { subject: String, version: i32 },
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \
         '{subject}', details: {}",
        .details.join("; ")
    )]
    Incompatible {
        subject: String,
        details: Vec<String>,
    },
    #[error(transparent)]
    InvalidSchema(#[from] InvalidSchema),
    #[error("Invalid schema: schema type {0:?} is not supported; this registry stores AVRO only")]
    UnsupportedSchemaType(String),
    #[error("Invalid schema: schema references are not supported")]
    ReferencesUnsupported,
    #[error(transparent)]
    InvalidVersion(#[from] InvalidVersion),
    #[error(transparent)]
    InvalidCompatibilityLevel(#[from] InvalidCompatibilityLevel),
    #[error("Invalid subject {0:?}: it must be non-blank and free of control characters")]
    InvalidSubject(String),
    #[error("Malformed request: {0}")]
    MalformedRequest(String),
    #[error("Unprocessable request: {0}")]
    UnprocessableRequest(String),
    /// A write without the credentials of a writer (`auth.writers`).
    #[error("Unauthorized")]
    Unauthorized,
    /// Our fault. The cause is logged; the client sees only Confluent's generic store error.
    #[error("Error in the backend datastore")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for RegistryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl RegistryError {
    /// Confluent's numeric error code: the HTTP status, refined by two more digits.
    pub fn error_code(&self) -> u32 {
        match self {
            Self::SubjectNotFound(_) => 40401,
            Self::VersionNotFound { .. } => 40402,
            Self::SchemaNotFound(_) | Self::SchemaNotUnderSubject(_) => 40403,
            Self::SubjectSoftDeleted(_) => 40404,
            Self::SubjectNotSoftDeleted(_) => 40405,
            Self::VersionNotSoftDeleted { .. } => 40407,
            Self::SubjectConfigNotFound(_) => 40408,
            Self::Incompatible { .. } => 409,
            Self::InvalidSchema(_)
            | Self::UnsupportedSchemaType(_)
            | Self::ReferencesUnsupported => 42201,
            Self::InvalidVersion(_) => 42202,
            Self::InvalidCompatibilityLevel(_) => 42203,
            Self::InvalidSubject(_) => 42208,
            Self::MalformedRequest(_) => 400,
            Self::UnprocessableRequest(_) => 422,
            Self::Unauthorized => 401,
            Self::Internal(_) => 50001,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error_code: u32,
    message: &'a str,
}

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        let code = self.error_code();
        let status = if code >= 1000 { code / 100 } else { code };
        u16::try_from(status)
            .ok()
            .and_then(|status| StatusCode::from_u16(status).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = %format!("{cause:#}"), "registry request failed");
        }
        let message = self.to_string();
        let mut response = HttpResponse::build(self.status_code());
        if let Self::Unauthorized = self {
            response.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                r#"Basic realm="schema-registry""#,
            ));
        }
        response.content_type(CONTENT_TYPE).json(ErrorBody {
            error_code: self.error_code(),
            message: &message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_status_is_the_leading_digits_of_the_error_code() {
        let cases = [
            (RegistryError::SubjectNotFound("s".into()), 404),
            (
                RegistryError::Incompatible {
                    subject: "s".into(),
                    details: vec![],
                },
                409,
            ),
            (RegistryError::ReferencesUnsupported, 422),
            (RegistryError::MalformedRequest("x".into()), 400),
            (RegistryError::UnprocessableRequest("x".into()), 422),
            (RegistryError::Unauthorized, 401),
            (RegistryError::Internal(anyhow::anyhow!("boom")), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status_code().as_u16(), status, "{error}");
        }
    }

    #[test]
    fn internal_causes_stay_out_of_the_message() {
        let error = RegistryError::Internal(anyhow::anyhow!("password authentication failed"));
        assert!(!error.to_string().contains("password"), "{error}");
    }
}

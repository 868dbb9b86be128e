//! The one error type of the HTTP layer, rendered as RFC 9457 problem+json.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::auth::Denied;
use crate::store::{AppendError, Expected, SchemaFailure, StoreError};

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Seconds a client should wait before retrying when the store is down.
const RETRY_AFTER_SECONDS: &str = "2";

/// Everything a request can fail with; each variant is one problem type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: JSON, names, headers, query parameters.
    #[error("{0}")]
    BadRequest(String),
    /// No such stream, event, route…
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// `Accept` admits no media type this resource serves.
    #[error("this resource answers {0}")]
    NotAcceptable(&'static str),
    /// The write conflicts with what is stored (a reused event id…).
    #[error("{0}")]
    Conflict(String),
    /// The expected version did not hold.
    #[error("stream {stream} is at version {actual}")]
    WrongVersion {
        /// The stream written to.
        stream: String,
        /// What the request expected.
        expected: Expected,
        /// The stream's version.
        actual: i64,
    },
    /// An append's condition failed: a matching event arrived after its
    /// `after`.
    #[error("the condition failed: a matching event is at global position {first_match}")]
    ConditionFailed {
        /// The global position of the earliest such event.
        first_match: i64,
    },
    /// An event's `data` does not validate against its type's schema.
    #[error("event {event} ({event_type}) does not match the schema of its type: {}", .failures.len())]
    SchemaViolation {
        /// The event's index in the request.
        event: usize,
        /// Its type.
        event_type: String,
        /// Each failure, with where in `data`.
        failures: Vec<SchemaFailure>,
    },
    /// The stream was deleted: its name stays taken.
    #[error("{0}")]
    Gone(String),
    /// The body or batch exceeds the configured limits.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The `Host` is not a loopback name, on a loopback listener without
    /// authentication: a web page reaching a local server by DNS rebinding.
    #[error("this server answers only to localhost, 127.0.0.1 or [::1], not {0:?}")]
    MisdirectedHost(String),
    /// The request has no valid credential.
    #[error("{detail}")]
    Unauthenticated {
        /// Why, never quoting the credential.
        detail: String,
        /// Whether a credential was given (and refused).
        token_given: bool,
    },
    /// The credential does not allow what the request asks.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The request took longer than the configured deadline.
    #[error("the request was not received and answered within {0} s")]
    RequestTimeout(u64),
    /// A body without a deadline of its own (an import's) paused longer
    /// than the request deadline.
    #[error("the body paused for longer than {0} s")]
    BodyStalled(u64),
    /// The store is down: retry later.
    #[error("the store is unavailable; retry later")]
    Unavailable,
    /// As many feeds are open as allowed: retry later.
    #[error("{0}")]
    TooManyFeeds(String),
    /// A bug or corrupt data; the detail is logged, never shown.
    #[error("internal error")]
    Internal,
}

/// Marks a response that failed because of the store, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct StoreFailure;

impl ApiError {
    /// The HTTP status of the problem.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::SchemaViolation { .. } => StatusCode::BAD_REQUEST,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::WrongVersion { .. } | ApiError::ConditionFailed { .. } => {
                StatusCode::PRECONDITION_FAILED
            }
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) | ApiError::BodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Unavailable | ApiError::TooManyFeeds(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short name of the problem, the last part of its `type` URI.
    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::SchemaViolation { .. } => "schema-violation",
            ApiError::Gone(_) => "gone",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::NotAcceptable(_) => "not-acceptable",
            ApiError::Conflict(_) => "conflict",
            ApiError::WrongVersion { .. } => "wrong-expected-version",
            ApiError::ConditionFailed { .. } => "condition-failed",
            ApiError::TooLarge(_) => "too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::RequestTimeout(_) | ApiError::BodyStalled(_) => "request-timeout",
            ApiError::Unauthenticated { .. } => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MisdirectedHost(_) => "misdirected-host",
            ApiError::Unavailable => "store-unavailable",
            ApiError::TooManyFeeds(_) => "too-many-feeds",
            ApiError::Internal => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut extra = Map::new();
        if let ApiError::WrongVersion {
            stream,
            expected,
            actual,
        } = &self
        {
            let expected: Value = match expected {
                Expected::Exists => "exists".into(),
                Expected::NoStream => (-1).into(),
                Expected::Version(v) => (*v).into(),
                Expected::Any => Value::Null,
            };
            extra.extend([
                ("stream".into(), json!(stream)),
                ("expected_version".into(), expected),
                ("actual_version".into(), json!(actual)),
            ]);
        }
        if let ApiError::SchemaViolation {
            event,
            event_type,
            failures,
        } = &self
        {
            let failures: Vec<Value> = failures
                .iter()
                .map(|f| json!({"pointer": f.pointer, "reason": f.reason}))
                .collect();
            extra.extend([
                ("event".into(), json!(event)),
                ("event_type".into(), json!(event_type)),
                ("errors".into(), Value::Array(failures)),
            ]);
        }
        if let ApiError::ConditionFailed { first_match } = &self {
            extra.extend([
                ("condition".into(), json!("failed")),
                ("first_match".into(), json!(first_match)),
            ]);
        }
        let body = Problem {
            problem_type: format!("urn:cairn:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: self.to_string(),
            extra,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::WrongVersion { actual, .. } => {
                headers.insert(header::ETAG, super::etag(*actual));
            }
            ApiError::Unauthenticated { token_given, .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if *token_given {
                        r#"Bearer realm="cairn", error="invalid_token""#
                    } else {
                        r#"Bearer realm="cairn""#
                    }),
                );
            }
            ApiError::Unavailable | ApiError::TooManyFeeds(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        if matches!(self, ApiError::Unavailable | ApiError::Internal) {
            response.extensions_mut().insert(StoreFailure);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::Unavailable
            }
            StoreError::Conflict(_) => ApiError::Conflict(error.to_string()),
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store failure");
                ApiError::Internal
            }
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::WrongVersion {
                stream,
                expected,
                actual,
            } => ApiError::WrongVersion {
                stream,
                expected,
                actual,
            },
            AppendError::ConditionFailed { first_match } => {
                ApiError::ConditionFailed { first_match }
            }
            AppendError::AfterBeyondHead { .. } => ApiError::BadRequest(error.to_string()),
            AppendError::SchemaViolation {
                event,
                event_type,
                failures,
            } => ApiError::SchemaViolation {
                event,
                event_type,
                failures,
            },
            AppendError::IdConflict(_) => ApiError::Conflict(error.to_string()),
            AppendError::StreamDeleted(_) => ApiError::Gone(error.to_string()),
            AppendError::Store(error) => error.into(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(rejection.body_text()),
            _ => ApiError::BadRequest(rejection.body_text()),
        }
    }
}

/// The body of every error: an RFC 9457 problem. Some problems add members
/// (a `412` adds `stream`, `expected_version` and `actual_version`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:cairn:problem:wrong-expected-version")]
    problem_type: String,
    /// The HTTP status phrase.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What went wrong, for people.
    detail: String,
    /// Members particular to the kind of problem.
    #[serde(flatten)]
    #[schema(ignore)]
    extra: Map<String, Value>,
}

//! The one place errors become HTTP responses: OCI error codes, their
//! statuses, and the `{"errors":[...]}` JSON body. Internal faults are
//! logged in full and answered with a generic message, so no path or
//! internal detail leaks to a client.

use crate::body::{self, Body};
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

/// The error codes of the distribution spec, plus the few that the
/// reference registry adds and clients understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    PaginationNumberInvalid,
    /// Not in the distribution spec: a bad query parameter of Wharf's own
    /// pages (the JSON API's `type` or `q`).
    ParameterInvalid,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            TagInvalid => "TAG_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            RangeInvalid => "RANGE_INVALID",
            PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ParameterInvalid => "PARAMETER_INVALID",
            Unavailable => "UNAVAILABLE",
            Unknown => "UNKNOWN",
        }
    }

    /// The status the reference registry pairs with each code.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown => {
                StatusCode::NOT_FOUND
            }
            BlobUploadInvalid
            | DigestInvalid
            | ManifestBlobUnknown
            | ManifestInvalid
            | NameInvalid
            | SizeInvalid
            | TagInvalid
            | PaginationNumberInvalid
            | ParameterInvalid => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Denied => StatusCode::FORBIDDEN,
            Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One entry of an OCI error body.
#[derive(Debug, Clone)]
pub struct OciError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Value,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client-visible failure with an OCI code (one or more entries).
    #[error("{}: {}", .errors[0].code.as_str(), .errors[0].message)]
    Oci {
        errors: Vec<OciError>,
        status: StatusCode,
        headers: Vec<(HeaderName, String)>,
    },
    /// A storage fault (disk, index); the client sees a generic 500.
    #[error("{context}: {source}")]
    Storage {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client's request body broke off or could not be read.
    #[error("reading the request body: {0}")]
    ClientBody(#[source] BoxError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The storage behind the store (an object store) could not be reached
/// or failed: clients get 503 and may retry.
#[derive(Debug, thiserror::Error)]
#[error("object storage unavailable: {0}")]
pub struct StorageUnavailable(pub String);

/// Any error a request body (hyper's or a test's) can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Error {
    pub fn oci(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Oci {
            errors: vec![OciError {
                code,
                message: message.into(),
                detail: Value::Null,
            }],
            status: code.status(),
            headers: Vec::new(),
        }
    }

    /// Several entries in one body, e.g. one MANIFEST_BLOB_UNKNOWN per blob.
    pub fn many(errors: Vec<OciError>) -> Error {
        let status = errors
            .first()
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |e| e.code.status());
        Error::Oci {
            errors,
            status,
            headers: Vec::new(),
        }
    }

    pub fn storage(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Storage {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Attaches a `detail` value to the (first) OCI entry.
    pub fn with_detail(mut self, detail: Value) -> Error {
        if let Error::Oci { errors, .. } = &mut self {
            if let Some(e) = errors.first_mut() {
                e.detail = detail;
            }
        }
        self
    }

    /// Overrides the status the code would give (413 for an oversized manifest).
    pub fn with_status(mut self, new: StatusCode) -> Error {
        if let Error::Oci { status, .. } = &mut self {
            *status = new;
        }
        self
    }

    /// Adds a response header (Location and Range on a 416 upload answer).
    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Error {
        if let Error::Oci { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }

    /// What went wrong, for a person: the first entry's message, or the
    /// whole error when it has no OCI entry (the command line prints it).
    pub fn message(&self) -> String {
        match self {
            Error::Oci { errors, .. } => errors
                .first()
                .map_or_else(String::new, |e| e.message.clone()),
            e => e.to_string(),
        }
    }

    /// The OCI code of the first entry, for tests and logs.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Oci { errors, .. } => errors.first().map_or(ErrorCode::Unknown, |e| e.code),
            Error::Storage { .. } => ErrorCode::Unknown,
            Error::ClientBody(_) => ErrorCode::BlobUploadInvalid,
        }
    }

    /// The status and message a client is told, for pages that render
    /// errors in HTML (the web UI): the same as [`Error::into_response`]
    /// says in its body.
    pub fn public(self) -> (StatusCode, String) {
        let (errors, status, _) = self.told();
        let message = errors
            .into_iter()
            .next()
            .map_or_else(String::new, |e| e.message);
        (status, message)
    }

    /// What the client is told: the entries, the status and any headers.
    /// Storage faults are logged here (their cause stays in the log).
    fn told(self) -> (Vec<OciError>, StatusCode, Vec<(HeaderName, String)>) {
        match self {
            Error::Oci {
                errors,
                status,
                headers,
            } => (errors, status, headers),
            Error::Storage { context, source } => {
                tracing::error!(%context, error = %source, "storage fault");
                let io = source.downcast_ref::<std::io::Error>();
                let full = io.is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull);
                let unavailable = source.is::<StorageUnavailable>()
                    || io
                        .and_then(|e| e.get_ref())
                        .is_some_and(|inner| inner.is::<StorageUnavailable>());
                let (message, status) = if full {
                    ("storage is full", StatusCode::INSUFFICIENT_STORAGE)
                } else if unavailable {
                    (
                        "storage unavailable; retry later",
                        StatusCode::SERVICE_UNAVAILABLE,
                    )
                } else {
                    ("internal storage error", StatusCode::INTERNAL_SERVER_ERROR)
                };
                let code = if unavailable {
                    ErrorCode::Unavailable
                } else {
                    ErrorCode::Unknown
                };
                (
                    vec![OciError {
                        code,
                        message: message.into(),
                        detail: Value::Null,
                    }],
                    status,
                    Vec::new(),
                )
            }
            Error::ClientBody(e) => {
                tracing::debug!(error = %e, "request body broke off");
                let (message, status) = match e.downcast_ref::<body::TooSlow>() {
                    Some(slow) => (
                        format!("{slow}: cut off; an upload session keeps what arrived and can be resumed"),
                        StatusCode::REQUEST_TIMEOUT,
                    ),
                    None => (
                        "request body could not be read".into(),
                        StatusCode::BAD_REQUEST,
                    ),
                };
                (
                    vec![OciError {
                        code: ErrorCode::BlobUploadInvalid,
                        message,
                        detail: Value::Null,
                    }],
                    status,
                    Vec::new(),
                )
            }
        }
    }

    /// Renders the error as the response the client gets (the only place
    /// an error becomes the OCI JSON body).
    pub fn into_response(self) -> Response<Body> {
        let (errors, status, headers) = self.told();
        let entries: Vec<Value> = errors
            .iter()
            .map(|e| json!({"code": e.code.as_str(), "message": e.message, "detail": e.detail}))
            .collect();
        let bytes = json!({ "errors": entries }).to_string();
        let mut resp = Response::new(body::full(bytes.clone()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        resp
    }
}

impl From<crate::oci::route::RouteError> for Error {
    fn from(e: crate::oci::route::RouteError) -> Error {
        use crate::oci::name::ReferenceError;
        use crate::oci::route::RouteError as R;
        let code = match &e {
            R::NotFound => ErrorCode::NameUnknown,
            R::Name(_) | R::Encoding => ErrorCode::NameInvalid,
            R::Reference(ReferenceError::Tag(_)) => ErrorCode::TagInvalid,
            R::Reference(ReferenceError::Digest(_)) | R::Digest(_) => ErrorCode::DigestInvalid,
            R::Session => ErrorCode::BlobUploadUnknown,
        };
        Error::oci(code, e.to_string())
    }
}

/// An error and each of its sources, `: `-separated: what a connection
/// failure says only in its causes (refused, DNS, TLS).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_json_body_with_matching_status() {
        let resp = Error::oci(ErrorCode::ManifestUnknown, "no such manifest").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
    }

    #[tokio::test]
    async fn a_full_disk_is_507() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let resp = Error::storage("writing", io).into_response();
        assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    }

    #[tokio::test]
    async fn storage_errors_do_not_leak() {
        let io = std::io::Error::other("/secret/path exploded");
        let resp = Error::storage("writing /secret/path", io).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
    }
}

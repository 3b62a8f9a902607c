//! Response helpers shared by the local registry and the mirror (both sit
//! above this module): building responses with the headers the spec
//! requires, reading query parameters and bounded bodies, and serving
//! stored content with ranges ([`content`]).

pub mod content;
pub mod page;

use crate::body::{self, Body};
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::oci::{Digest, RepoName};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;

/// A response with `status`, no body and `Content-Length: 0`.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

/// A JSON response.
pub fn json(value: &serde_json::Value, content_type: &'static str) -> Response<Body> {
    let bytes = value.to_string();
    let mut r = Response::new(body::full(bytes.clone()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    r
}

/// A JSON response from bytes already serialised.
pub fn json_bytes(bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let len = bytes.len();
    let mut r = Response::new(body::full(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// Sets a header whose value we built ourselves (always valid ASCII).
pub fn set(r: &mut Response<Body>, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

pub fn blob_location(name: &RepoName, d: &Digest) -> String {
    format!("/v2/{name}/blobs/{d}")
}

pub fn upload_location(name: &RepoName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The `Range` header value of an upload that holds `len` bytes.
pub fn upload_range(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

/// Decoded query parameters, in order.
pub fn query(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub fn query_one<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Reads a whole request body of at most `limit` bytes; larger is 413.
pub async fn read_bounded<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        Error::oci(
            ErrorCode::SizeInvalid,
            format!("body is larger than the {limit}-byte limit"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let mut buf = BytesMut::new();
    let mut body = body;
    let mut seen: u64 = 0;
    let mut over = declared.is_some_and(|n| n > limit as u64);
    if declared.is_some_and(|n| n > limit as u64 + body::DRAIN_LIMIT) {
        // Declared too large to be worth reading: refuse at once.
        return Err(too_large());
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::ClientBody(e.into()))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if over || buf.len() + data.len() > limit {
                over = true;
                buf.clear();
                if seen > limit as u64 + body::DRAIN_LIMIT {
                    break;
                }
                continue;
            }
            buf.extend_from_slice(&data);
        }
    }
    if over {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

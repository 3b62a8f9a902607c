//! Serving stored content, for local and mirrored repositories alike:
//! single byte ranges (`Range`, 206 and 416), ETags with `If-None-Match`,
//! and the distribution headers every blob and manifest answer carries.
//! HEAD gets the same headers and no body.

use crate::body::{self, Body};
use crate::error::{Error, ErrorCode, Result};
use crate::oci::Digest;
use crate::store::Opened;
use http::{header, request::Parts, Method, Response, StatusCode};

/// A byte range of a blob of known size.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable Range header: send everything.
    Full,
    /// Inclusive `start..=end`.
    Part(u64, u64),
    /// Cannot be satisfied for this size.
    Unsatisfiable,
}

/// Parses a `Range` header against `size`. Multiple ranges and malformed
/// headers are ignored (the whole body is sent), as HTTP allows.
pub fn parse_range(value: Option<&str>, size: u64) -> Range {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (false, true) => a.parse::<u64>().ok().map(|s| (s, size.saturating_sub(1))),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(size.saturating_sub(1)))),
            // A last byte before the first can never be satisfied.
            (Ok(_), Ok(_)) => return Range::Unsatisfiable,
            _ => None,
        },
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return Range::Unsatisfiable,
            Ok(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
            Err(_) => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => Range::Full,
        Some((s, _)) if s >= size => Range::Unsatisfiable,
        Some((s, e)) => Range::Part(s, e),
    }
}

/// Streams stored content `d` (already opened) with the distribution
/// headers. HEAD gets the same headers and no body.
pub async fn serve_stored(
    parts: &Parts,
    blob: Opened,
    d: &Digest,
    content_type: &str,
    ranges: bool,
) -> Result<Response<Body>> {
    let size = blob.len();
    serve(parts, Content::Stored(blob), size, d, content_type, ranges).await
}

/// Where the bytes of a response come from.
pub enum Content {
    Stored(Opened),
    /// Already in memory (a verified manifest).
    Bytes(bytes::Bytes),
}

/// Serves in-memory content `d` with the same headers as a file.
pub async fn serve_bytes(
    parts: &Parts,
    bytes: bytes::Bytes,
    d: &Digest,
    content_type: &str,
) -> Result<Response<Body>> {
    let size = bytes.len() as u64;
    serve(parts, Content::Bytes(bytes), size, d, content_type, false).await
}

async fn serve(
    parts: &Parts,
    content: Content,
    size: u64,
    d: &Digest,
    content_type: &str,
    ranges: bool,
) -> Result<Response<Body>> {
    let etag = format!("\"{d}\"");
    let not_modified = super::header_str(&parts.headers, header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let (status, offset, len) = if not_modified {
        (StatusCode::NOT_MODIFIED, 0, 0)
    } else if !ranges {
        (StatusCode::OK, 0, size)
    } else {
        match parse_range(super::header_str(&parts.headers, header::RANGE), size) {
            Range::Full => (StatusCode::OK, 0, size),
            Range::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
            Range::Unsatisfiable => {
                return Err(
                    Error::oci(ErrorCode::RangeInvalid, "requested range not satisfiable")
                        .with_header(header::CONTENT_RANGE, format!("bytes */{size}")),
                );
            }
        }
    };
    let body = if parts.method == Method::HEAD || len == 0 {
        body::empty()
    } else {
        match content {
            Content::Stored(blob) => blob.body(offset, len).await?,
            Content::Bytes(b) => body::full(b.slice(offset as usize..(offset + len) as usize)),
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    super::set(&mut r, header::CONTENT_TYPE, content_type);
    super::set(&mut r, "docker-content-digest", &d.to_string());
    super::set(&mut r, header::ETAG, &etag);
    if status != StatusCode::NOT_MODIFIED {
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    if ranges {
        super::set(&mut r, header::ACCEPT_RANGES, "bytes");
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {}-{}/{size}", offset, offset + len - 1);
        super::set(&mut r, header::CONTENT_RANGE, &range);
    }
    Ok(r)
}

/// 416 for a range outside a blob of `size` bytes.
pub fn range_invalid(size: u64) -> Error {
    Error::oci(ErrorCode::RangeInvalid, "requested range not satisfiable")
        .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=3-"), 10), Range::Part(3, 9));
        assert_eq!(parse_range(Some("bytes=3-4"), 10), Range::Part(3, 4));
        assert_eq!(parse_range(Some("bytes=3-40"), 10), Range::Part(3, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Range::Part(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), Range::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=5-3"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=x-3"), 10), Range::Full);
        assert_eq!(parse_range(Some("items=1-2"), 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Range::Unsatisfiable);
    }
}

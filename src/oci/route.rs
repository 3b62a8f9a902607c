//! Turns a request path into the distribution API route it names. Names may
//! contain segments such as `blobs` or `manifests`, so routes are matched
//! from the right-hand end, as the spec asks. Every part is validated into
//! its type here; nothing later sees a raw path segment.

use super::digest::{Digest, DigestError};
use super::name::{NameError, Reference, ReferenceError, RepoName};

/// One distribution API endpoint, with its validated parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRoute {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: RepoName },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: RepoName,
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<session>`
    Upload { name: RepoName, session: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: RepoName, digest: Digest },
}

/// Why a path that looks like an API call cannot be routed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("no such API endpoint")]
    NotFound,
    #[error("invalid repository name: {0}")]
    Name(#[from] NameError),
    #[error("invalid reference: {0}")]
    Reference(#[from] ReferenceError),
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    #[error("invalid upload session id")]
    Session,
    /// A `%XX` escape of `/`, `\\`, `%`, `.` or a character no name,
    /// tag or digest holds: it would change how the path splits, and a
    /// front proxy's path rules would see another path than Wharf.
    #[error("percent-encoded separator or character not allowed in the path")]
    Encoding,
}

impl ApiRoute {
    /// Parses the path part of a request URI (without the query).
    pub fn parse(path: &str) -> Result<ApiRoute, RouteError> {
        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => return Ok(ApiRoute::Base),
            Some(r) => r.strip_prefix('/').ok_or(RouteError::NotFound)?,
            None => return Err(RouteError::NotFound),
        };
        let decoded = percent_decode(rest)?;
        let rest = decoded.as_str();
        if rest == "_catalog" {
            return Ok(ApiRoute::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Ok(ApiRoute::Tags {
                name: RepoName::parse(name)?,
            });
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Ok(ApiRoute::UploadStart {
                name: RepoName::parse(name)?,
            });
        }
        let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
        if let Some(name) = head.strip_suffix("/blobs/uploads") {
            let name = RepoName::parse(name)?;
            if !valid_session_id(last) {
                return Err(RouteError::Session);
            }
            return Ok(ApiRoute::Upload {
                name,
                session: last.to_string(),
            });
        }
        let (name, kind) = head.rsplit_once('/').ok_or(RouteError::NotFound)?;
        match kind {
            "manifests" => Ok(ApiRoute::Manifest {
                name: RepoName::parse(name)?,
                reference: Reference::parse(last)?,
            }),
            "blobs" => Ok(ApiRoute::Blob {
                name: RepoName::parse(name)?,
                digest: last.parse()?,
            }),
            "referrers" => Ok(ApiRoute::Referrers {
                name: RepoName::parse(name)?,
                digest: last.parse()?,
            }),
            _ => Err(RouteError::NotFound),
        }
    }

    /// The repository this route is about, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            ApiRoute::Base | ApiRoute::Catalog => None,
            ApiRoute::Tags { name }
            | ApiRoute::Manifest { name, .. }
            | ApiRoute::Blob { name, .. }
            | ApiRoute::UploadStart { name }
            | ApiRoute::Upload { name, .. }
            | ApiRoute::Referrers { name, .. } => Some(name),
        }
    }
}

/// Session ids are ours (UUIDs), but they arrive from clients: accept only
/// a short run of `[A-Za-z0-9-]` so one can never escape a directory.
fn valid_session_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Decodes `%XX` escapes of the characters names, tags and digests may
/// hold besides `/` and `.` (some clients escape the `:` of a digest).
/// Anything else escaped, or a broken escape, is refused.
fn percent_decode(s: &str) -> Result<String, RouteError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let c = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(RouteError::Encoding)?;
            if !(c.is_ascii_alphanumeric() || matches!(c, b':' | b'-' | b'_' | b'+' | b'=')) {
                return Err(RouteError::Encoding);
            }
            out.push(c);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| RouteError::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn routes_match_from_the_right() {
        let r = ApiRoute::parse("/v2/a/manifests/manifests/b").unwrap();
        assert_eq!(
            r,
            ApiRoute::Manifest {
                name: RepoName::parse("a/manifests").unwrap(),
                reference: Reference::parse("b").unwrap()
            }
        );
        let r = ApiRoute::parse(&format!("/v2/x/blobs/blobs/{}", d())).unwrap();
        assert_eq!(r.repo().unwrap().as_str(), "x/blobs");
        assert!(matches!(
            ApiRoute::parse("/v2/x/blobs/uploads/").unwrap(),
            ApiRoute::UploadStart { .. }
        ));
        assert!(matches!(
            ApiRoute::parse("/v2/x/blobs/uploads").unwrap(),
            ApiRoute::UploadStart { .. }
        ));
        assert!(matches!(
            ApiRoute::parse("/v2/x/blobs/uploads/abc-1").unwrap(),
            ApiRoute::Upload { .. }
        ));
        assert!(matches!(
            ApiRoute::parse("/v2/x/tags/list").unwrap(),
            ApiRoute::Tags { .. }
        ));
        assert!(matches!(
            ApiRoute::parse(&format!("/v2/x/y/referrers/{}", d())).unwrap(),
            ApiRoute::Referrers { .. }
        ));
        assert_eq!(ApiRoute::parse("/v2/").unwrap(), ApiRoute::Base);
        assert_eq!(ApiRoute::parse("/v2").unwrap(), ApiRoute::Base);
        assert_eq!(ApiRoute::parse("/v2/_catalog").unwrap(), ApiRoute::Catalog);
    }

    #[test]
    fn escaped_digest_colon() {
        let p = format!("/v2/x/blobs/{}", d().replace(':', "%3A"));
        assert!(matches!(
            ApiRoute::parse(&p).unwrap(),
            ApiRoute::Blob { .. }
        ));
    }

    #[test]
    fn bad_paths() {
        assert_eq!(ApiRoute::parse("/v1/"), Err(RouteError::NotFound));
        assert_eq!(ApiRoute::parse("/v2/x"), Err(RouteError::NotFound));
        assert_eq!(ApiRoute::parse("/v2/x/foo/bar"), Err(RouteError::NotFound));
        assert!(matches!(
            ApiRoute::parse("/v2/A/tags/list"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            ApiRoute::parse("/v2/../x/manifests/latest"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            ApiRoute::parse("/v2/x/blobs/sha256:abc"),
            Err(RouteError::Digest(_))
        ));
        assert!(matches!(
            ApiRoute::parse("/v2/x/manifests/bad+tag"),
            Err(RouteError::Reference(_))
        ));
        assert!(ApiRoute::parse("/v2/x/blobs/uploads/..%2F..%2Fetc").is_err());
    }

    #[test]
    fn escapes_that_change_how_a_path_splits_are_refused() {
        let d = d();
        for p in [
            "/v2/golden/base%2Fmanifests%2F1.0".to_string(),
            "/v2/golden/base%2fmanifests%2f1.0".into(),
            "/v2/golden%2Fbase/manifests/1.0".into(),
            "/v2/golden/base%5Cmanifests/1.0".into(),
            "/v2/golden/%2E%2E/x/manifests/1.0".into(),
            "/v2/golden/base/manifests/1%2E0".into(),
            "/v2/golden/base/manifests/%251.0".into(),
            "/v2/golden/base/manifests/1.0%00".into(),
            "/v2/golden/base/manifests/1.0%0A".into(),
            "/v2/golden/base/manifests/1.0%C3%A9".into(),
            "/v2/golden/base/manifests/1.0%".into(),
            "/v2/golden/base/manifests/1.0%zz".into(),
            format!("/v2/golden/base/blobs/{}", d.replace(':', "%3A%2F")),
            "/v2/_catalog%3F".into(),
        ] {
            assert_eq!(ApiRoute::parse(&p), Err(RouteError::Encoding), "{p}");
        }
        // Escaped characters that cannot split a path are decoded.
        assert!(matches!(
            ApiRoute::parse("/v2/golden/base/manifests/v%31.0").unwrap(),
            ApiRoute::Manifest { .. }
        ));
        assert_eq!(
            ApiRoute::parse("/v2/x/blobs/uploads/a.b"),
            Err(RouteError::Session)
        );
    }
}

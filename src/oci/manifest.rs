//! Manifest media types and the small part of a manifest the registry must
//! read: which blobs and child manifests it references, its `subject`, its
//! `artifactType` and annotations. Bytes are never re-serialised: this only
//! reads them, and the stored manifest is exactly what was pushed.

use super::digest::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest manifest accepted or mirrored (the spec asks for at least 4 MB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// The manifest types Wharf stores. Schema1 is not among them: current
/// Docker and containerd refuse it too.
pub const MANIFEST_TYPES: [&str; 5] = [
    DOCKER_MANIFEST,
    DOCKER_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
    OCI_ARTIFACT,
];

/// An OCI content descriptor, as the registry reads and writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Foreign layers name URLs; their bytes need not be in the registry.
    #[serde(default, skip_serializing)]
    pub urls: Option<Vec<String>>,
}

/// What a pushed manifest says about itself and what it references.
#[derive(Debug, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    /// Blobs (config, layers) that must exist in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index that must exist in the repository.
    pub manifests: Vec<Digest>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest its config's media type:
    /// what the referrers API reports.
    pub artifact_type: Option<String>,
    /// The config's media type, for an image manifest.
    pub config_media_type: Option<String>,
    /// `artifactType` exactly as the manifest declares it, if it does.
    pub declared_artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not a JSON object: {0}")]
    NotJson(String),
    #[error("manifest mediaType {body:?} contradicts Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    media_type: Option<Value>,
    config: Option<Value>,
    layers: Option<Value>,
    manifests: Option<Value>,
    blobs: Option<Value>,
    subject: Option<Value>,
    artifact_type: Option<Value>,
    annotations: Option<Value>,
}

/// Strips parameters (`; charset=...`) and surrounding space from a
/// Content-Type header value.
pub fn bare_media_type(header: &str) -> &str {
    header.split(';').next().unwrap_or("").trim()
}

/// Parses a manifest pushed with the (bare) `content_type`, if any.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let raw: Raw =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    let body_type = match &raw.media_type {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("mediaType", "must be a string")),
    };
    let header = content_type.filter(|h| !h.is_empty());
    let media_type = match (body_type, header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ManifestError::MediaTypeMismatch {
                body: b.to_string(),
                header: h.to_string(),
            })
        }
        (Some(t), _) | (None, Some(t)) => t.to_string(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    }

    let declared_artifact_type = match raw.artifact_type {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(invalid("artifactType", "must be a string")),
    };
    let mut out = ParsedManifest {
        media_type,
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: raw.subject.map(|v| descriptor("subject", v)).transpose()?,
        artifact_type: declared_artifact_type.clone(),
        config_media_type: None,
        declared_artifact_type,
        annotations: match raw.annotations {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid("annotations", "must be an object")),
        },
    };
    match out.media_type.as_str() {
        DOCKER_MANIFEST | OCI_MANIFEST => {
            let config = descriptor(
                "config",
                raw.config.ok_or_else(|| invalid("config", "missing"))?,
            )?;
            if out.artifact_type.is_none() {
                out.artifact_type = Some(config.media_type.clone());
            }
            out.config_media_type = Some(config.media_type.clone());
            out.blobs.push(config.digest);
            for layer in descriptors("layers", raw.layers)? {
                if layer.urls.as_ref().is_none_or(|u| u.is_empty()) {
                    out.blobs.push(layer.digest);
                }
            }
        }
        DOCKER_LIST | OCI_INDEX => {
            out.manifests = descriptors("manifests", raw.manifests)?
                .into_iter()
                .map(|d| d.digest)
                .collect();
        }
        _ => {
            out.blobs = descriptors("blobs", raw.blobs)?
                .into_iter()
                .map(|d| d.digest)
                .collect();
        }
    }
    Ok(out)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn descriptor(field: &'static str, v: Value) -> Result<Descriptor, ManifestError> {
    serde_json::from_value(v).map_err(|e| invalid(field, e.to_string()))
}

fn descriptors(field: &'static str, v: Option<Value>) -> Result<Vec<Descriptor>, ManifestError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v).map_err(|e| invalid(field, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_references() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/x-unknown","digest":"{}","size":2}},
            "layers":[{{"mediaType":"a","digest":"{}","size":1}},
                      {{"mediaType":"f","digest":"{}","size":1,"urls":["http://x"]}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}}}"#,
            dg('a'),
            dg('b'),
            dg('c'),
            dg('d')
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.blobs.len(), 2, "foreign layer is not required");
        assert_eq!(p.artifact_type.as_deref(), Some("application/x-unknown"));
        assert_eq!(p.subject.unwrap().digest.to_string(), dg('d'));
    }

    #[test]
    fn helm_manifest_without_media_type_takes_the_header() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            dg('a')
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.media_type, OCI_MANIFEST);
        let p = parse(m.as_bytes(), None).unwrap();
        assert_eq!(p.media_type, OCI_MANIFEST);
    }

    #[test]
    fn rejects() {
        assert!(matches!(
            parse(b"nope", None),
            Err(ManifestError::NotJson(_))
        ));
        assert!(matches!(
            parse(b"[1]", None),
            Err(ManifestError::NotJson(_))
        ));
        let m = format!(r#"{{"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(matches!(
            parse(m.as_bytes(), Some(OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            parse(
                b"{}",
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
            ),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse(b"{}", Some(OCI_MANIFEST)),
            Err(ManifestError::InvalidField {
                field: "config",
                ..
            })
        ));
        let bad = r#"{"config":{"mediaType":"x","digest":"sha256:XYZ","size":1}}"#;
        assert!(matches!(
            parse(bad.as_bytes(), Some(OCI_MANIFEST)),
            Err(ManifestError::InvalidField {
                field: "config",
                ..
            })
        ));
    }

    #[test]
    fn index_children() {
        let m = format!(
            r#"{{"mediaType":"{OCI_INDEX}","artifactType":"x/y","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}]}}"#,
            dg('e')
        );
        let p = parse(m.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(p.manifests.len(), 1);
        assert!(p.blobs.is_empty());
        assert_eq!(p.artifact_type.as_deref(), Some("x/y"));
    }

    #[test]
    fn bare_types() {
        assert_eq!(
            bare_media_type("application/json; charset=utf-8"),
            "application/json"
        );
    }
}

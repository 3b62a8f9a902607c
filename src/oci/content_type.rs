//! What kind of content a manifest holds, decided in this one function
//! the way Docker Hub decides it: a Helm chart (its config media type), a
//! Docker volume (its `artifactType` or config media type), an image (an
//! image config, or an index or manifest list of images), or anything
//! else, shown with its media type (ORAS's default artifacts, SBOMs,
//! signatures). The web UI, the JSON API and the metrics all call it.

use super::manifest::{ParsedManifest, DOCKER_LIST, OCI_INDEX};

pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const VOLUME: &str = "application/vnd.docker.volume.v1+tar.gz";
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The kind of content a tag points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentType {
    Image,
    Helm,
    Volume,
    /// Anything else, with the media type that says what it is.
    Other(String),
}

impl ContentType {
    /// The short name filters and labels use: `image`, `helm`, `volume`,
    /// `other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContentType::Image => "image",
            ContentType::Helm => "helm",
            ContentType::Volume => "volume",
            ContentType::Other(_) => "other",
        }
    }

    /// The media type that decided it, for `Other`.
    pub fn media_type(&self) -> Option<&str> {
        match self {
            ContentType::Other(t) => Some(t),
            _ => None,
        }
    }
}

/// Classifies `m`. For an index or manifest list, `children` are the
/// classes of the manifests it lists that are known (none need be).
pub fn classify(m: &ParsedManifest, children: &[ContentType]) -> ContentType {
    let declared = m.declared_artifact_type.as_deref();
    let config = m.config_media_type.as_deref();
    if config == Some(HELM_CONFIG) {
        return ContentType::Helm;
    }
    if declared == Some(VOLUME) || config == Some(VOLUME) {
        return ContentType::Volume;
    }
    if declared.is_none() && matches!(config, Some(OCI_IMAGE_CONFIG | DOCKER_IMAGE_CONFIG)) {
        return ContentType::Image;
    }
    let index = matches!(m.media_type.as_str(), OCI_INDEX | DOCKER_LIST);
    if index && declared.is_none() {
        // A manifest list is always of images; an OCI index is when its
        // children are (or nothing says otherwise).
        let images = children.contains(&ContentType::Image);
        let others = !children.is_empty() && !images;
        if m.media_type == DOCKER_LIST || images || !others {
            return ContentType::Image;
        }
    }
    ContentType::Other(
        declared
            .or(config)
            .unwrap_or(m.media_type.as_str())
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::{parse, DOCKER_MANIFEST, OCI_MANIFEST};

    fn dg(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// An image-style manifest with this config media type and, if given,
    /// an `artifactType`.
    fn manifest(media_type: &str, config: &str, artifact_type: Option<&str>) -> ParsedManifest {
        let at = artifact_type
            .map(|t| format!(r#","artifactType":"{t}""#))
            .unwrap_or_default();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config}","digest":"{}","size":2}},"layers":[]{at}}}"#,
            dg('a')
        );
        parse(body.as_bytes(), None).unwrap()
    }

    fn index(media_type: &str, artifact_type: Option<&str>) -> ParsedManifest {
        let at = artifact_type
            .map(|t| format!(r#","artifactType":"{t}""#))
            .unwrap_or_default();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}]{at}}}"#,
            dg('b')
        );
        parse(body.as_bytes(), None).unwrap()
    }

    #[test]
    fn as_docker_hub_decides() {
        let other = |t: &str| ContentType::Other(t.to_string());
        let empty = "application/vnd.oci.empty.v1+json";
        let oras = "application/vnd.unknown.config.v1+json";
        let random_volume = "application/vnd.random.volume.v1+tar.gz";
        let sbom = "application/spdx+json";
        let sig = "application/vnd.dev.cosign.artifact.sig.v1+json";
        for (m, children, want) in [
            (
                manifest(OCI_MANIFEST, OCI_IMAGE_CONFIG, None),
                vec![],
                ContentType::Image,
            ),
            (
                manifest(DOCKER_MANIFEST, DOCKER_IMAGE_CONFIG, None),
                vec![],
                ContentType::Image,
            ),
            (
                manifest(OCI_MANIFEST, HELM_CONFIG, None),
                vec![],
                ContentType::Helm,
            ),
            // A chart pushed with an artifactType is still a chart.
            (
                manifest(OCI_MANIFEST, HELM_CONFIG, Some("x/y")),
                vec![],
                ContentType::Helm,
            ),
            (
                manifest(OCI_MANIFEST, empty, Some(VOLUME)),
                vec![],
                ContentType::Volume,
            ),
            (
                manifest(OCI_MANIFEST, VOLUME, None),
                vec![],
                ContentType::Volume,
            ),
            (manifest(OCI_MANIFEST, oras, None), vec![], other(oras)),
            (
                manifest(OCI_MANIFEST, empty, Some(random_volume)),
                vec![],
                other(random_volume),
            ),
            (
                manifest(OCI_MANIFEST, empty, Some(sbom)),
                vec![],
                other(sbom),
            ),
            (manifest(OCI_MANIFEST, empty, Some(sig)), vec![], other(sig)),
            // An image config but an artifactType: an artifact, not an image.
            (
                manifest(OCI_MANIFEST, OCI_IMAGE_CONFIG, Some(sbom)),
                vec![],
                other(sbom),
            ),
            (index(DOCKER_LIST, None), vec![], ContentType::Image),
            (
                index(OCI_INDEX, None),
                vec![ContentType::Image],
                ContentType::Image,
            ),
            (index(OCI_INDEX, None), vec![], ContentType::Image),
            (index(OCI_INDEX, None), vec![other(oras)], other(OCI_INDEX)),
            (
                index(OCI_INDEX, Some(sig)),
                vec![ContentType::Image],
                other(sig),
            ),
        ] {
            let got = classify(&m, &children);
            assert_eq!(got, want, "{m:?} with {children:?}");
        }
        assert_eq!(ContentType::Helm.as_str(), "helm");
        assert_eq!(other(oras).media_type(), Some(oras));
    }
}

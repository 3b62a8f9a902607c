//! What a stored manifest says about itself, for people: its content type
//! (from [`classify`], the one function that decides it), its config and
//! layers with their sizes, the platforms of an index, its annotations,
//! and the bytes a pull of it moves. Pure: it reads bytes it is given and
//! the descriptions of children it is handed.

use crate::oci::content_type::{classify, ContentType};
use crate::oci::manifest::{self, DOCKER_LIST, OCI_INDEX};
use crate::oci::Digest;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One blob or child manifest a manifest lists.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// `os/architecture[/variant]`, for an index's children that say.
    pub platform: Option<String>,
    pub artifact_type: Option<String>,
}

/// A described manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Description {
    pub media_type: String,
    pub content_type: ContentType,
    /// `artifactType`, or the config media type of an artifact.
    pub artifact_type: Option<String>,
    pub config: Option<Part>,
    pub layers: Vec<Part>,
    /// An index's or manifest list's children.
    pub children: Vec<Part>,
    pub annotations: BTreeMap<String, String>,
    /// The manifest, its config and layers; for an index, itself and each
    /// child's own total where it is known (its manifest size where not).
    pub size: u64,
}

impl Description {
    /// Platforms of an index's children, in order, each once.
    pub fn platforms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.children.iter().filter_map(|c| c.platform.clone()) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// About how many bytes it holds (for the cache's bound).
    pub fn weight(&self) -> u32 {
        let part = |p: &Part| {
            96 + p.media_type.len()
                + p.digest.len()
                + p.platform.as_ref().map_or(0, String::len)
                + p.artifact_type.as_ref().map_or(0, String::len)
        };
        let bytes = 256
            + self.media_type.len()
            + self.config.as_ref().map_or(0, part)
            + self.layers.iter().map(part).sum::<usize>()
            + self.children.iter().map(part).sum::<usize>()
            + self
                .annotations
                .iter()
                .map(|(k, v)| 64 + k.len() + v.len())
                .sum::<usize>();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    pub fn is_index(&self) -> bool {
        matches!(self.media_type.as_str(), OCI_INDEX | DOCKER_LIST)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Raw {
    config: Option<RawPart>,
    #[serde(default)]
    layers: Vec<RawPart>,
    #[serde(default)]
    manifests: Vec<RawPart>,
    #[serde(default)]
    annotations: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPart {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<RawPlatform>,
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl From<RawPart> for Part {
    fn from(p: RawPart) -> Part {
        Part {
            media_type: p.media_type,
            digest: p.digest,
            size: p.size,
            platform: p.platform.map(|pl| match pl.variant {
                Some(v) => format!("{}/{}/{v}", pl.os, pl.architecture),
                None => format!("{}/{}", pl.os, pl.architecture),
            }),
            artifact_type: p.artifact_type,
        }
    }
}

/// The children (digests) an index lists, to describe them first.
pub fn children_of(bytes: &[u8]) -> Vec<Digest> {
    serde_json::from_slice::<Raw>(bytes)
        .map(|r| {
            r.manifests
                .iter()
                .filter_map(|m| m.digest.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Describes the manifest `bytes`, stored with `media_type`. `child` gives
/// the description of a child manifest that is stored (for an index).
/// Bytes that do not parse are described as `Other` with their media type.
pub fn describe(
    bytes: &[u8],
    media_type: &str,
    child: impl Fn(&Digest) -> Option<std::sync::Arc<Description>>,
) -> Description {
    let raw: Raw = serde_json::from_slice(bytes).unwrap_or_default();
    let parsed = manifest::parse(bytes, Some(media_type)).ok();
    let children: Vec<Part> = raw.manifests.into_iter().map(Part::from).collect();
    let known: Vec<Option<std::sync::Arc<Description>>> = children
        .iter()
        .map(|c| c.digest.parse().ok().and_then(|d| child(&d)))
        .collect();
    let classes: Vec<ContentType> = known
        .iter()
        .flatten()
        .map(|d| d.content_type.clone())
        .collect();
    let config: Option<Part> = raw.config.map(Part::from);
    let layers: Vec<Part> = raw.layers.into_iter().map(Part::from).collect();
    let own = bytes.len() as u64;
    // Sizes are what the manifest claims: add without wrapping.
    let size = [own, config.as_ref().map_or(0, |c| c.size)]
        .into_iter()
        .chain(layers.iter().map(|l| l.size))
        .chain(
            children
                .iter()
                .zip(&known)
                .map(|(c, k)| k.as_ref().map_or(c.size, |k| k.size)),
        )
        .fold(0u64, u64::saturating_add);
    let annotations = raw
        .annotations
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    match parsed {
        Some(p) => Description {
            media_type: p.media_type.clone(),
            content_type: classify(&p, &classes),
            artifact_type: p.artifact_type.clone(),
            config,
            layers,
            children,
            annotations,
            size,
        },
        None => Description {
            media_type: media_type.to_string(),
            content_type: ContentType::Other(media_type.to_string()),
            artifact_type: None,
            config,
            layers,
            children,
            annotations,
            size,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::content_type::{HELM_CONFIG, OCI_IMAGE_CONFIG};
    use crate::oci::manifest::OCI_MANIFEST;
    use std::sync::Arc;

    fn dg(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(config: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{config}","digest":"{}","size":10}},"layers":[{{"mediaType":"l","digest":"{}","size":100}},{{"mediaType":"l","digest":"{}","size":1000}}],"annotations":{{"note":"<b>x</b>","n":3}}}}"#,
            dg('a'),
            dg('b'),
            dg('c')
        )
    }

    #[test]
    fn an_image_counts_its_config_and_layers() {
        let body = image(OCI_IMAGE_CONFIG);
        let d = describe(body.as_bytes(), OCI_MANIFEST, |_| None);
        assert_eq!(d.content_type, ContentType::Image);
        assert_eq!(d.size, body.len() as u64 + 1110);
        assert_eq!(d.layers.len(), 2);
        assert_eq!(d.annotations["note"], "<b>x</b>");
        assert_eq!(d.annotations["n"], "3");
        assert!(!d.is_index());
    }

    #[test]
    fn a_helm_chart_without_media_type_is_helm() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{HELM_CONFIG}","digest":"{}","size":5}},"layers":[]}}"#,
            dg('a')
        );
        let d = describe(body.as_bytes(), OCI_MANIFEST, |_| None);
        assert_eq!(d.content_type, ContentType::Helm);
    }

    #[test]
    fn an_index_lists_platforms_and_sums_known_children() {
        let child = Arc::new(describe(
            image(OCI_IMAGE_CONFIG).as_bytes(),
            OCI_MANIFEST,
            |_| None,
        ));
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7,"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            dg('d'),
            dg('e')
        );
        let known = dg('d');
        let c2 = child.clone();
        let d = describe(body.as_bytes(), OCI_INDEX, move |d| {
            (d.to_string() == known).then(|| c2.clone())
        });
        assert_eq!(d.content_type, ContentType::Image);
        assert_eq!(d.platforms(), ["linux/amd64", "linux/arm/v7"]);
        assert_eq!(d.size, body.len() as u64 + child.size + 9);
        assert_eq!(children_of(body.as_bytes()).len(), 2);
    }

    #[test]
    fn claimed_sizes_do_not_wrap() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_IMAGE_CONFIG}","digest":"{}","size":18446744073709551615}},"layers":[{{"mediaType":"l","digest":"{}","size":18446744073709551615}}]}}"#,
            dg('a'),
            dg('b')
        );
        let d = describe(body.as_bytes(), OCI_MANIFEST, |_| None);
        assert_eq!(d.size, u64::MAX);
        assert!(d.weight() > 256);
    }

    #[test]
    fn garbage_is_other_with_its_media_type() {
        let d = describe(b"not json", "application/x-odd", |_| None);
        assert_eq!(
            d.content_type,
            ContentType::Other("application/x-odd".into())
        );
    }
}

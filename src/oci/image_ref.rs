//! Image references as people type them (`alpine:3.20`,
//! `ghcr.io/org/app:1.2`, `name@sha256:...`), turned into the repository
//! name Wharf serves them under and a tag or digest; lists of them; and
//! platforms (`os/arch[/variant]`) to pick from an index. Pure parsing.

use super::Digest;

/// A reference as a user types it, and where Wharf serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// What the user typed.
    pub text: String,
    /// The repository's name in Wharf's `/v2/` paths.
    pub name: String,
    /// A tag, or a digest.
    pub reference: String,
}

/// Docker Hub's names for itself.
const DOCKER_HUB: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

impl ImageRef {
    /// `alpine`, `alpine:3.20`, `ghcr.io/org/app:1.2`,
    /// `registry.example.com:5000/team/app@sha256:...`.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let t = text.trim();
        let bad = |why: &str| format!("{t:?} is not an image reference: {why}");
        let (rest, digest) = match t.split_once('@') {
            Some((r, d)) => {
                d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?;
                (r, Some(d))
            }
            None => (t, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            super::Tag::parse(tag).map_err(|e| bad(&e.to_string()))?;
        }
        let mut parts: Vec<String> = name.split('/').map(str::to_string).collect();
        let host = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
        if host {
            if !is_host(&parts[0]) {
                return Err(bad(
                    "the registry host is not a host name with an optional :port",
                ));
            }
            if parts[0].contains(':') {
                // A repository name cannot hold a ':': Wharf serves such
                // an upstream under its alias (or containerd's ?ns=).
                return Err(bad(
                    "a registry with a port is reached through its alias in Wharf (alias = \"...\" in its [[upstreams]] table): give alias/repository",
                ));
            }
            // Host names are case-insensitive; repository names are not.
            parts[0] = parts[0].to_ascii_lowercase();
            if DOCKER_HUB.contains(&parts[0].as_str()) {
                parts[0] = "docker.io".into();
                if parts.len() == 2 {
                    parts.insert(1, "library".into());
                }
            }
        }
        let name = parts.join("/");
        // The whole name as Wharf will be asked for it (length included).
        super::RepoName::parse(&name).map_err(|e| bad(&e.to_string()))?;
        Ok(ImageRef {
            text: t.to_string(),
            name,
            reference: digest.or(tag).unwrap_or("latest").to_string(),
        })
    }

    /// The registry host named in the reference, if any.
    pub fn host(&self) -> Option<&str> {
        let first = self.name.split('/').next()?;
        (self.name.contains('/') && (first.contains(['.', ':']) || first == "localhost"))
            .then_some(first)
    }
}

/// `registry.example.com`, `localhost:5000`: labels of letters, digits
/// and inner `-`, dot-separated, and a numeric port.
fn is_host(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// References from a list file: one per line; blank lines and `#`
/// comments are skipped.
pub fn read_list(text: &str) -> Result<Vec<ImageRef>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| ImageRef::parse(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "--platform {s:?}: expected os/arch or os/arch/variant, e.g. linux/amd64, linux/arm64/v8"
            )),
        }
    }

    /// Whether an index entry's `platform` object is this one (a variant
    /// asked for must match; none asked for matches any).
    pub fn matches(&self, p: &serde_json::Value) -> bool {
        p["os"].as_str() == Some(self.os.as_str())
            && p["architecture"].as_str() == Some(self.arch.as_str())
            && self
                .variant
                .as_deref()
                .is_none_or(|v| p["variant"].as_str() == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> (String, String) {
        let r = ImageRef::parse(text).unwrap();
        (r.name, r.reference)
    }

    #[test]
    fn references_as_users_type_them() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(r("alpine"), s("alpine", "latest"));
        assert_eq!(r("alpine:3.20"), s("alpine", "3.20"));
        assert_eq!(r("library/alpine:3.20"), s("library/alpine", "3.20"));
        assert_eq!(r("docker.io/alpine:3"), s("docker.io/library/alpine", "3"));
        assert_eq!(
            r("index.docker.io/bitnami/redis"),
            s("docker.io/bitnami/redis", "latest")
        );
        assert_eq!(r("ghcr.io/org/app:1.2"), s("ghcr.io/org/app", "1.2"));
        assert_eq!(r("GHCR.io/org/app"), s("ghcr.io/org/app", "latest"));
        assert_eq!(
            r("registry.hub.docker.com/alpine"),
            s("docker.io/library/alpine", "latest")
        );
        let e = ImageRef::parse("localhost:5000/team/app").unwrap_err();
        assert!(e.contains("alias"), "{e}");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(r(&format!("nginx@{d}")), s("nginx", &d));
        assert_eq!(
            r(&format!("nginx:1.27@{d}")),
            s("nginx", &d),
            "the digest wins"
        );
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:short",
            "ghcr.io/",
            "a//b",
            "alpine:3.20:x",
            "../etc",
            "-x.io/app",
            "reg.io:http/app",
            &format!("ghcr.io/{}", "a".repeat(300)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ImageRef::parse("ghcr.io/org/app").unwrap().host(),
            Some("ghcr.io")
        );
        assert_eq!(ImageRef::parse("team/app").unwrap().host(), None);
    }

    #[test]
    fn lists_skip_comments_and_name_bad_lines() {
        let refs = read_list("# bases\nalpine:3.20\n\n  ghcr.io/org/app:1 # pinned\n").unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].name, "ghcr.io/org/app");
        let e = read_list("alpine\nnot a ref\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(p.matches(&j(
            r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#
        )));
        assert!(!p.matches(&j(r#"{"os":"linux","architecture":"arm64"}"#)));
        let p = Platform::parse("linux/amd64").unwrap();
        assert!(p.matches(&j(
            r#"{"os":"linux","architecture":"amd64","variant":"v3"}"#
        )));
        assert!(!p.matches(&j(r#"{"os":"windows","architecture":"amd64"}"#)));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}

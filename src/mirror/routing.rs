//! The one routing decision: does a repository name live in Wharf's own
//! store (a local namespace) or is it mirrored, and from which configured
//! upstream under which upstream name? Only configured upstreams are ever
//! chosen: an unknown `?ns=` host is an error, never an open proxy.

use crate::config::{Config, DOCKER_HUB};
use crate::error::{Error, ErrorCode, Result};
use crate::oci::RepoName;

/// Where a repository's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Pushed to and served from Wharf's own store.
    Local,
    /// Mirrored from `upstream`, where it is called `repo`.
    Mirror { upstream: String, repo: String },
}

/// The routing rules, built once from the config.
#[derive(Debug, Clone)]
pub struct Router {
    default_upstream: String,
    local: Vec<String>,
    /// (name or alias, upstream name)
    prefixes: Vec<(String, String)>,
    upstreams: Vec<String>,
    /// "name → url" for the start-up log.
    described: Vec<String>,
}

/// Docker Hub is known by several host names.
fn canonical_host(host: &str) -> &str {
    match host {
        "registry-1.docker.io" | "index.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    }
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let mut prefixes = Vec::new();
        for u in &config.upstreams {
            prefixes.push((u.name.clone(), u.name.clone()));
            if let Some(a) = &u.alias {
                prefixes.push((a.clone(), u.name.clone()));
            }
        }
        Router {
            default_upstream: config.default_upstream.clone(),
            local: config.local_namespaces.clone(),
            prefixes,
            upstreams: config.upstreams.iter().map(|u| u.name.clone()).collect(),
            described: config
                .upstreams
                .iter()
                .map(|u| format!("{} → {}", u.name, u.url.as_str().trim_end_matches('/')))
                .collect(),
        }
    }

    pub fn is_local(&self, name: &RepoName) -> bool {
        self.local.iter().any(|l| l == name.first_component())
    }

    /// Routes `name`, with containerd's `?ns=` host if the client sent one.
    pub fn route(&self, name: &RepoName, ns: Option<&str>) -> Result<Backend> {
        if let Some(ns) = ns {
            let host = canonical_host(ns);
            if self.upstreams.iter().any(|u| u == host) {
                return Ok(self.mirror(host, name.as_str()));
            }
            if self.is_local(name) {
                return Ok(Backend::Local);
            }
            return Err(Error::oci(
                ErrorCode::NameUnknown,
                format!("upstream {ns:?} is not configured on this mirror"),
            ));
        }
        let first = name.first_component();
        if let Some((_, upstream)) = self.prefixes.iter().find(|(p, _)| p == first) {
            if let Some(rest) = name.as_str().split_once('/').map(|(_, r)| r) {
                return Ok(self.mirror(upstream, rest));
            }
        }
        if self.is_local(name) {
            return Ok(Backend::Local);
        }
        Ok(self.mirror(&self.default_upstream, name.as_str()))
    }

    /// The upstream a configured name or alias names (for names the UI
    /// shows, whose upstream part may hold a port).
    pub fn upstream_prefixed(&self, first: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .find(|(p, _)| p == first)
            .map(|(_, u)| u.as_str())
    }

    /// Whether `upstream` is a configured upstream's name.
    pub fn is_upstream(&self, upstream: &str) -> bool {
        self.upstreams.iter().any(|u| u == upstream)
    }

    /// The configured upstreams' names.
    pub fn upstream_names(&self) -> &[String] {
        &self.upstreams
    }

    /// `repo` mirrored from `upstream` (Docker Hub's bare names under
    /// `library/`).
    pub fn mirror(&self, upstream: &str, repo: &str) -> Backend {
        // Docker Hub's official images live under library/.
        let repo = if upstream == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        Backend::Mirror {
            upstream: upstream.to_string(),
            repo,
        }
    }

    /// A one-line summary for the start-up log.
    pub fn summary(&self) -> String {
        let locals: Vec<String> = self.local.iter().map(|l| format!("{l}/")).collect();
        format!(
            "local namespaces: {}; mirrored: {} (bare names go to {})",
            if locals.is_empty() {
                "none".to_string()
            } else {
                locals.join(", ")
            },
            self.described.join(", "),
            self.default_upstream
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;

    fn router() -> Router {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "local_namespaces = [\"golden\", \"charts\"]\n[[upstreams]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nalias = \"gh\"\n",
        )
        .unwrap();
        let c = Config::load(&ServeArgs {
            config: Some(f),
            upstream: vec!["quay.io=https://quay.io".into()],
            ..Default::default()
        })
        .unwrap();
        Router::new(&c)
    }

    fn n(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn m(u: &str, r: &str) -> Backend {
        Backend::Mirror {
            upstream: u.into(),
            repo: r.into(),
        }
    }

    #[test]
    fn routes() {
        let r = router();
        assert_eq!(
            r.route(&n("alpine"), None).unwrap(),
            m("docker.io", "library/alpine")
        );
        assert_eq!(
            r.route(&n("library/alpine"), None).unwrap(),
            m("docker.io", "library/alpine")
        );
        assert_eq!(
            r.route(&n("bitnami/redis"), None).unwrap(),
            m("docker.io", "bitnami/redis")
        );
        assert_eq!(r.route(&n("golden/base"), None).unwrap(), Backend::Local);
        assert_eq!(r.route(&n("charts/x/y"), None).unwrap(), Backend::Local);
        assert_eq!(
            r.route(&n("ghcr.io/org/app"), None).unwrap(),
            m("ghcr.io", "org/app")
        );
        assert_eq!(
            r.route(&n("gh/org/app"), None).unwrap(),
            m("ghcr.io", "org/app")
        );
        assert_eq!(
            r.route(&n("quay.io/a/b"), None).unwrap(),
            m("quay.io", "a/b")
        );
        assert_eq!(
            r.route(&n("docker.io/alpine"), None).unwrap(),
            m("docker.io", "library/alpine")
        );
        // An unconfigured host prefix is just part of a Docker Hub name.
        assert_eq!(
            r.route(&n("evil.com/x"), None).unwrap(),
            m("docker.io", "evil.com/x")
        );
    }

    #[test]
    fn ns_selects_only_configured_upstreams() {
        let r = router();
        assert_eq!(
            r.route(&n("library/alpine"), Some("docker.io")).unwrap(),
            m("docker.io", "library/alpine")
        );
        assert_eq!(
            r.route(&n("alpine"), Some("registry-1.docker.io")).unwrap(),
            m("docker.io", "library/alpine")
        );
        assert_eq!(
            r.route(&n("org/app"), Some("ghcr.io")).unwrap(),
            m("ghcr.io", "org/app")
        );
        assert!(r.route(&n("org/app"), Some("evil.example.com")).is_err());
        assert_eq!(
            r.route(&n("golden/x"), Some("wharf.internal:5000"))
                .unwrap(),
            Backend::Local
        );
    }
}

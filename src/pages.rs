//! The pages that are not distribution API routes, routed before any OCI
//! route is parsed: the token endpoint, and the probes an orchestrator
//! asks (`/healthz`: the process answers; `/readyz`: the store is open and
//! its index readable, and the server is not draining), the metrics
//! (`/metrics`, anonymous like the probes), the web UI (`/`, `/r/...`,
//! `/cache`, `/login`), the JSON API (`/api/...`) and maintenance
//! (`/admin/...`).

use http::Method;

/// A non-OCI page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/token`: Docker token auth.
    Token,
    /// `/healthz`: alive.
    Healthz,
    /// `/readyz`: ready for traffic.
    Readyz,
    /// The web UI's pages.
    Ui,
    /// `/login`: the UI's sign-in.
    Login,
    /// `/api/...`: the JSON API.
    Api,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/admin/...`: garbage collection and verify on the running server.
    Admin,
}

impl Page {
    /// The page `path` names, if any; everything else is left to the OCI
    /// routes.
    pub fn route(path: &str) -> Option<Page> {
        match path {
            crate::auth::TOKEN_PATH => Some(Page::Token),
            "/healthz" => Some(Page::Healthz),
            "/readyz" => Some(Page::Readyz),
            "/metrics" => Some(Page::Metrics),
            "/login" => Some(Page::Login),
            "/" | "/cache" => Some(Page::Ui),
            p if p.starts_with("/r/") => Some(Page::Ui),
            p if p.starts_with("/api/") => Some(Page::Api),
            p if p.starts_with("/admin/") => Some(Page::Admin),
            _ => None,
        }
    }

    /// Whether `method` is one this page answers (probes: GET and HEAD).
    pub fn allows(self, method: &Method) -> bool {
        match self {
            Page::Token => true, // the endpoint answers the rest itself
            Page::Admin => method == Method::POST,
            Page::Healthz | Page::Readyz | Page::Metrics | Page::Ui | Page::Login | Page::Api => {
                method == Method::GET || method == Method::HEAD
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_before_oci_routes() {
        for (path, want) in [
            ("/token", Some(Page::Token)),
            ("/healthz", Some(Page::Healthz)),
            ("/readyz", Some(Page::Readyz)),
            ("/metrics", Some(Page::Metrics)),
            ("/metrics/", None),
            ("/v2/", None),
            ("/v2/healthz/manifests/v1", None),
            ("/healthz/", None),
            ("/readyz?x=1", None),
            ("/", Some(Page::Ui)),
            ("/r/golden/app:1", Some(Page::Ui)),
            ("/cache", Some(Page::Ui)),
            ("/login", Some(Page::Login)),
            ("/api/v1/repositories", Some(Page::Api)),
            ("/admin/gc", Some(Page::Admin)),
            ("/v2/_catalog", None),
        ] {
            assert_eq!(Page::route(path), want, "{path}");
        }
        assert!(Page::Healthz.allows(&Method::HEAD));
        assert!(!Page::Readyz.allows(&Method::POST));
        assert!(Page::Metrics.allows(&Method::GET));
        assert!(!Page::Metrics.allows(&Method::PUT));
    }
}

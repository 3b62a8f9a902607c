//! Talking to one upstream registry: a pooled HTTP client (rustls for
//! https), the bearer-token flow from `WWW-Authenticate` with tokens cached
//! per scope until they expire, redirects followed where the trust rules
//! allow (`trust`) without carrying `Authorization` to another origin,
//! upstream answers sorted into the few outcomes the mirror acts on, and
//! each exchange counted (with the rate limits the upstream reports) in
//! [`crate::metrics`] and read into its pull [`budget`], which holds back
//! manifest GETs while the upstream's rate limit is spent.

pub mod auth;
pub mod budget;
pub mod trust;

use crate::config::UpstreamConfig;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to an upstream may take (clients give a mirror 30 s
/// in all, so an unreachable upstream must be noticed well before that).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an upstream may take to send response headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;
/// The client for redirects to other hosts: it connects only to public
/// addresses it resolved and checked itself.
type PublicClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<trust::PublicResolver>>, Empty<Bytes>>;

/// What went wrong upstream, in the terms the mirror decides on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// 404, or a 401 for a repository the token does not open (Docker Hub
    /// answers both for missing and private repositories).
    #[error("not found upstream")]
    NotFound,
    #[error("upstream rate limit reached (429)")]
    RateLimited { retry_after: Option<String> },
    #[error("upstream authentication failed: {0}")]
    Auth(String),
    /// Connection failure, timeout, 5xx, or a broken answer.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream answered {0}")]
    Status(u16),
}

impl UpstreamError {
    /// Whether serving stale cached content is the right answer to this.
    pub fn allows_stale(&self) -> bool {
        !matches!(self, UpstreamError::NotFound | UpstreamError::Status(_))
    }
}

/// One configured upstream registry.
pub struct Upstream {
    pub config: UpstreamConfig,
    client: HttpsClient,
    public: PublicClient,
    trust: Arc<trust::Trust>,
    auth: auth::Authorizer,
    /// 404s, summarised at info.
    misses: crate::summary::Summary,
    metrics: crate::metrics::UpstreamMetrics,
    budget: budget::Budget,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Result<Upstream, String> {
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        configure(&mut http);
        let client = https_client(tls.clone(), http);
        let mut http = HttpConnector::new_with_resolver(trust::PublicResolver);
        configure(&mut http);
        let public = https_client(tls, http);
        let trust = Arc::new(trust::Trust::new(
            &config.url,
            config.token_realms.clone(),
            config.redirect_hosts.clone(),
        ));
        let auth = auth::Authorizer::new(
            client.clone(),
            public.clone(),
            trust.clone(),
            config.name.clone(),
            config.username.clone(),
            config.password.clone(),
        );
        let metrics = crate::metrics::METRICS.upstream(&config.name);
        Ok(Upstream {
            budget: budget::Budget::new(&config.name, config.ratelimit_reserve, metrics.clone()),
            metrics,
            config,
            client,
            public,
            trust,
            auth,
            misses: crate::summary::Summary::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What this upstream's traffic is counted in.
    pub fn metrics(&self) -> &crate::metrics::UpstreamMetrics {
        &self.metrics
    }

    /// What its rate limit allows now.
    pub fn budget(&self) -> &budget::Budget {
        &self.budget
    }

    /// Sends `method` to `/v2/<repo>/<suffix>` with the pull token for
    /// `repo`, following redirects. Returns a 2xx response or an error.
    pub async fn send(
        &self,
        method: Method,
        repo: &str,
        suffix: &str,
        accept: &[&str],
    ) -> Result<Response<Incoming>, UpstreamError> {
        // A manifest GET is what a rate limit counts: none while it is
        // spent (the caller serves what is cached, or passes the 429 on).
        if method == Method::GET && suffix.starts_with("manifests/") {
            if let budget::Spend::Spent { retry_after } = self.budget.spend() {
                self.budget.saved();
                return Err(UpstreamError::RateLimited {
                    retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0).to_string()),
                });
            }
        }
        let answer = self.authorized(&method, repo, suffix, accept).await;
        if matches!(answer, Err(UpstreamError::NotFound)) {
            // Scanners make hundreds of these a second: one debug line
            // each, an info summary at most once a minute.
            tracing::debug!(upstream = self.name(), %method, repo, suffix, "not found upstream");
            if let Some((n, over)) = self.misses.tick() {
                tracing::info!(
                    upstream = self.name(),
                    "{n} upstream 404s in the last {} (each logged at debug)",
                    crate::summary::span(over)
                );
            }
        }
        answer
    }

    /// [`Upstream::send`], answering one auth challenge on the way.
    async fn authorized(
        &self,
        method: &Method,
        repo: &str,
        suffix: &str,
        accept: &[&str],
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut url = self.config.url.clone();
        let path = format!("{}/v2/{repo}/{suffix}", url.path().trim_end_matches('/'));
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path, None),
        };
        url.set_path(&path);
        url.set_query(query.as_deref());
        let scope = format!("repository:{repo}:pull");

        let mut retried_auth = false;
        loop {
            let authorization = self.auth.header(&scope).await;
            let resp = self
                .follow(method, url.clone(), accept, authorization.clone())
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return classify(resp);
            }
            if retried_auth {
                // Authenticated and still refused: Docker Hub's answer for
                // a repository that does not exist (or is private).
                return if authorization.is_some() {
                    Err(UpstreamError::NotFound)
                } else {
                    Err(UpstreamError::Auth(
                        "upstream refused anonymous access".into(),
                    ))
                };
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.auth
                .respond(&challenge, &scope, authorization.as_ref())
                .await?;
            retried_auth = true;
        }
    }

    /// One request and its redirects, each hop checked against the trust
    /// rules. `Authorization` goes only to the upstream's own origin.
    async fn follow(
        &self,
        method: &Method,
        mut url: url::Url,
        accept: &[&str],
        authorization: Option<HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let origin = url.origin();
        let mut hop = trust::Hop::Origin;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = Request::builder().method(method.clone()).uri(url.as_str());
            for a in accept {
                req = req.header(header::ACCEPT, *a);
            }
            req = req.header(
                header::USER_AGENT,
                concat!("wharf/", env!("CARGO_PKG_VERSION")),
            );
            if let Some(a) = &authorization {
                if url.origin() == origin {
                    req = req.header(header::AUTHORIZATION, a.clone());
                }
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| UpstreamError::Unavailable(format!("building request: {e}")))?;
            let sent = match hop {
                trust::Hop::Public => self.public.request(req),
                trust::Hop::Origin | trust::Hop::Listed => self.client.request(req),
            };
            let resp = tokio::time::timeout(HEADER_TIMEOUT, sent)
                .await
                .map_err(|_| {
                    UpstreamError::Unavailable(format!(
                        "no answer from {} within {HEADER_TIMEOUT:?}",
                        self.name()
                    ))
                })
                .and_then(|r| {
                    r.map_err(|e| match trust::refusal_in(&e) {
                        Some(r) => self.refused(r),
                        None => UpstreamError::Unavailable(format!(
                            "{}: {}",
                            self.name(),
                            crate::error::error_chain(&e)
                        )),
                    })
                });
            let resp = match resp {
                Ok(r) => {
                    self.metrics
                        .request(method, crate::metrics::Answer::Status(r.status().as_u16()));
                    if url.origin() == origin {
                        self.metrics.rate_limits(r.headers());
                        self.budget.observe(r.status(), r.headers());
                    }
                    r
                }
                Err(e) => {
                    self.metrics.request(method, crate::metrics::Answer::Error);
                    self.metrics.failed(&e.to_string());
                    return Err(e);
                }
            };
            if resp.status().is_redirection() && resp.status() != StatusCode::NOT_MODIFIED {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        UpstreamError::Unavailable("redirect without Location".into())
                    })?;
                let next = url.join(location).map_err(|e| {
                    UpstreamError::Unavailable(format!("bad redirect Location: {e}"))
                })?;
                hop = self
                    .trust
                    .redirect(&url, &next)
                    .map_err(|r| self.refused(&r))?;
                url = next;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED && url.origin() != origin {
                // A redirect target's challenge is not the upstream's: never
                // answer it with the upstream's credentials.
                return Err(UpstreamError::Unavailable(format!(
                    "redirect target {} refused the request (401)",
                    url.host_str().unwrap_or("?")
                )));
            }
            return Ok(resp);
        }
        Err(UpstreamError::Unavailable("too many redirects".into()))
    }
}

impl Upstream {
    /// Logs a redirect the trust rules refused and turns it into the
    /// upstream failure the client sees (503, as for any outage).
    fn refused(&self, r: &trust::Refusal) -> UpstreamError {
        tracing::warn!(upstream = self.name(), "redirect refused: {r}");
        UpstreamError::Unavailable(format!("redirect refused: {r}"))
    }
}

/// Sorts a final (non-401) answer.
fn classify(resp: Response<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(match status {
        StatusCode::NOT_FOUND => UpstreamError::NotFound,
        StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited {
            retry_after: resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        },
        StatusCode::FORBIDDEN => UpstreamError::Auth("upstream answered 403".into()),
        s if s.is_server_error() => UpstreamError::Unavailable(format!("upstream answered {s}")),
        s => UpstreamError::Status(s.as_u16()),
    })
}

/// Connection settings shared by both clients.
fn configure<R>(http: &mut HttpConnector<R>) {
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
}

/// A pooled client for http and https (rustls) over `http`.
fn https_client<R>(
    tls: rustls::ClientConfig,
    http: HttpConnector<R>,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector<R>>, Empty<Bytes>>
where
    hyper_rustls::HttpsConnector<HttpConnector<R>>:
        hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_allowed_for_outages_not_for_absence() {
        assert!(UpstreamError::Unavailable("x".into()).allows_stale());
        assert!(UpstreamError::RateLimited { retry_after: None }.allows_stale());
        assert!(UpstreamError::Auth("x".into()).allows_stale());
        assert!(!UpstreamError::NotFound.allows_stale());
    }
}

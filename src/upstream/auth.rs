//! Upstream authentication: answers a `WWW-Authenticate` challenge with a
//! bearer token from the realm (anonymously, or with the configured
//! credentials) or with Basic credentials, and caches the resulting
//! `Authorization` value per scope until the token expires. A realm the
//! trust rules refuse is sent nothing at all. Secrets never reach a log
//! line.

use super::trust::Trust;
use super::UpstreamError;
use crate::config::Secret;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tokens are refreshed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Token lifetime when the server does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

type HttpsClient = super::HttpsClient;

pub struct Authorizer {
    client: HttpsClient,
    /// For anonymous tokens from realms on other (public) hosts.
    public: super::PublicClient,
    trust: Arc<Trust>,
    /// The upstream's name, for log lines.
    upstream: String,
    username: Option<String>,
    password: Option<Secret>,
    /// scope → `Authorization` value, dropped when the token expires.
    cache: moka::future::Cache<String, Token>,
}

/// Scopes (repositories) whose tokens are held at most.
const TOKEN_CACHE_ENTRIES: u64 = 10_000;

#[derive(Clone)]
struct Token {
    value: HeaderValue,
    lifetime: Duration,
}

struct TokenExpiry;

impl moka::Expiry<String, Token> for TokenExpiry {
    fn expire_after_create(&self, _k: &String, t: &Token, _now: Instant) -> Option<Duration> {
        Some(
            t.lifetime
                .saturating_sub(EXPIRY_MARGIN)
                .max(Duration::from_secs(1)),
        )
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic ...`).
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, val);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

impl Authorizer {
    pub fn new(
        client: HttpsClient,
        public: super::PublicClient,
        trust: Arc<Trust>,
        upstream: String,
        username: Option<String>,
        password: Option<Secret>,
    ) -> Authorizer {
        Authorizer {
            client,
            public,
            trust,
            upstream,
            username,
            password,
            cache: moka::future::Cache::builder()
                .max_capacity(TOKEN_CACHE_ENTRIES)
                .expire_after(TokenExpiry)
                .build(),
        }
    }

    /// The cached `Authorization` value for `scope`, if still valid.
    pub async fn header(&self, scope: &str) -> Option<HeaderValue> {
        self.cache.get(scope).await.map(|t| t.value)
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (u, p) = (self.username.as_ref()?, self.password.as_ref()?);
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()));
        HeaderValue::from_str(&format!("Basic {raw}")).ok()
    }

    /// Answers a 401's challenge for `scope`, so the retry carries a fresh
    /// `Authorization` header. `sent` is what the refused request carried:
    /// that token is dropped. Concurrent requests for one scope share one
    /// token request.
    pub async fn respond(
        &self,
        challenge: &str,
        scope: &str,
        sent: Option<&HeaderValue>,
    ) -> Result<(), UpstreamError> {
        if let Some(sent) = sent {
            if self
                .cache
                .get(scope)
                .await
                .is_some_and(|t| t.value == *sent)
            {
                self.cache.invalidate(scope).await;
            }
        }
        self.cache
            .try_get_with(scope.to_string(), self.obtain(challenge, scope))
            .await
            .map(|_| ())
            .map_err(|e| (*e).clone())
    }

    async fn obtain(&self, challenge: &str, scope: &str) -> Result<Token, UpstreamError> {
        let c = parse_challenge(challenge).ok_or_else(|| {
            UpstreamError::Auth("401 without a usable WWW-Authenticate challenge".into())
        })?;
        match c.scheme.as_str() {
            "basic" => {
                let value = self.basic().ok_or_else(|| {
                    UpstreamError::Auth("upstream wants Basic credentials; none configured".into())
                })?;
                Ok(Token {
                    value,
                    lifetime: Duration::from_secs(3600),
                })
            }
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| UpstreamError::Auth("bearer challenge without realm".into()))?;
                let mut url = url::Url::parse(realm)
                    .map_err(|e| UpstreamError::Auth(format!("bad token realm: {e}")))?;
                // A realm the operator did not list still gives anonymous
                // tokens, when nothing secret would go there.
                let trusted = match self.trust.realm(&url) {
                    Ok(()) => true,
                    Err(r) => {
                        let anonymous = match r {
                            super::trust::Refusal::RealmNotListed { .. }
                                if self.basic().is_none() =>
                            {
                                self.trust.anonymous_realm(&url)
                            }
                            other => Err(other),
                        };
                        if let Err(r) = anonymous {
                            tracing::warn!(
                                upstream = %self.upstream,
                                realm = %super::trust::shown(&url),
                                "token realm refused, nothing sent to it: {r}"
                            );
                            return Err(UpstreamError::Auth(r.to_string()));
                        }
                        false
                    }
                };
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = c.params.get("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let (token, lifetime) = if trusted {
                    self.fetch_token(&self.client, url).await?
                } else {
                    self.fetch_token(&self.public, url).await?
                };
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| UpstreamError::Auth("token is not a valid header value".into()))?;
                Ok(Token { value, lifetime })
            }
            other => Err(UpstreamError::Auth(format!(
                "unsupported auth scheme {other:?}"
            ))),
        }
    }

    async fn fetch_token<C>(
        &self,
        client: &hyper_util::client::legacy::Client<C, Empty<Bytes>>,
        url: url::Url,
    ) -> Result<(String, Duration), UpstreamError>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        let mut req = Request::get(url.as_str());
        if let Some(b) = self.basic() {
            req = req.header(header::AUTHORIZATION, b);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| UpstreamError::Auth(format!("token request: {e}")))?;
        let resp = tokio::time::timeout(super::HEADER_TIMEOUT, client.request(req))
            .await
            .map_err(|_| UpstreamError::Unavailable("token server did not answer in time".into()))?
            .map_err(|e| {
                UpstreamError::Unavailable(format!(
                    "token server: {}",
                    crate::error::error_chain(&e)
                ))
            })?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(UpstreamError::Unavailable(format!(
                "token server answered {status}"
            )));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::RateLimited { retry_after: None });
        }
        if !status.is_success() {
            return Err(UpstreamError::Auth(format!(
                "token server answered {status}"
            )));
        }
        let body = tokio::time::timeout(
            super::HEADER_TIMEOUT,
            Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE).collect(),
        )
        .await
        .map_err(|_| UpstreamError::Unavailable("token response timed out".into()))?
        .map_err(|e| UpstreamError::Unavailable(format!("token response: {e}")))?
        .to_bytes();
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Auth(format!("token response is not JSON: {e}")))?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Auth("token response has no token".into()))?;
        let lifetime = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/alpine:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert!(parse_challenge("").is_none());
    }
}

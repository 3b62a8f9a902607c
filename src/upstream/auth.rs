//! Upstream authentication: answers a `WWW-Authenticate` challenge with a
//! bearer token from the realm (anonymously, or with the configured
//! credentials) or with Basic credentials, and caches the resulting
//! `Authorization` value per scope until the token expires. Secrets never
//! reach a log line.

use super::UpstreamError;
use crate::config::Secret;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use std::collections::HashMap;
use std::sync::Mutex;
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
    username: Option<String>,
    password: Option<Secret>,
    /// scope → (Authorization value, valid until).
    cache: Mutex<HashMap<String, (HeaderValue, Instant)>>,
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
        username: Option<String>,
        password: Option<Secret>,
    ) -> Authorizer {
        Authorizer {
            client,
            username,
            password,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The cached `Authorization` value for `scope`, if still valid.
    pub async fn header(&self, scope: &str) -> Option<HeaderValue> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(v, _)| v.clone())
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (u, p) = (self.username.as_ref()?, self.password.as_ref()?);
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()));
        HeaderValue::from_str(&format!("Basic {raw}")).ok()
    }

    fn remember(&self, scope: &str, value: HeaderValue, lifetime: Duration) {
        let until = Instant::now()
            + lifetime
                .saturating_sub(EXPIRY_MARGIN)
                .max(Duration::from_secs(1));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(scope.to_string(), (value, until));
    }

    /// Answers a 401's challenge for `scope`, so the retry carries a
    /// fresh `Authorization` header.
    pub async fn respond(&self, challenge: &str, scope: &str) -> Result<(), UpstreamError> {
        let c = parse_challenge(challenge).ok_or_else(|| {
            UpstreamError::Auth("401 without a usable WWW-Authenticate challenge".into())
        })?;
        match c.scheme.as_str() {
            "basic" => {
                let v = self.basic().ok_or_else(|| {
                    UpstreamError::Auth("upstream wants Basic credentials; none configured".into())
                })?;
                self.remember(scope, v, Duration::from_secs(3600));
                Ok(())
            }
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| UpstreamError::Auth("bearer challenge without realm".into()))?;
                let mut url = url::Url::parse(realm)
                    .map_err(|e| UpstreamError::Auth(format!("bad token realm: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = c.params.get("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let (token, lifetime) = self.fetch_token(url).await?;
                let v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| UpstreamError::Auth("token is not a valid header value".into()))?;
                self.remember(scope, v, lifetime);
                Ok(())
            }
            other => Err(UpstreamError::Auth(format!(
                "unsupported auth scheme {other:?}"
            ))),
        }
    }

    async fn fetch_token(&self, url: url::Url) -> Result<(String, Duration), UpstreamError> {
        let mut req = Request::get(url.as_str());
        if let Some(b) = self.basic() {
            req = req.header(header::AUTHORIZATION, b);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| UpstreamError::Auth(format!("token request: {e}")))?;
        let resp = tokio::time::timeout(super::HEADER_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| UpstreamError::Unavailable("token server did not answer in time".into()))?
            .map_err(|e| {
                UpstreamError::Unavailable(format!("token server: {}", super::error_chain(&e)))
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

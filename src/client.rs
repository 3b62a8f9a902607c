//! The command line's client of a running Wharf (`--server URL`): one
//! HTTP(S) request at a time with the caller's password (Basic, never in a
//! log line), its answer's JSON read with a bound, and the registry's
//! error body turned into a message a person can act on.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;

/// The largest answer read (a gc report lists every blob it removes).
const MAX_ANSWER: usize = 256 << 20;
/// The most of an error answer read.
const ERROR_BODY: usize = 64 << 10;

/// A request's body: nothing, or a file as it is read.
pub type Sent = BoxBody<Bytes, std::io::Error>;

pub struct ServerClient {
    base: url::Url,
    authorization: Option<HeaderValue>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Sent>,
}

impl ServerClient {
    /// A client of the Wharf at `url` (`http://` or `https://`), logging
    /// in as `user` with `password` when given; `ca_file` adds a CA to
    /// the trusted roots (a server with its own).
    pub fn new(
        url: &str,
        user: Option<&str>,
        password: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<ServerClient, String> {
        let base = url::Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                format!("--server {url:?}: expected http:// or https:// and a host, e.g. https://wharf.example.com:5000")
            })?;
        let authorization = match (user, password) {
            (Some(u), Some(p)) => {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                let mut v = HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| {
                    "the user name or password has characters a header cannot carry"
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            (Some(_), None) => {
                return Err("--user needs a password: set WHARF_PASSWORD or --password-file".into())
            }
            (None, _) => None,
        };
        let tls = crate::tls::client_config(ca_file)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(ServerClient {
            base,
            authorization,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// Sends `POST path_and_query` and reads the JSON answer.
    pub async fn post_json(&self, path_and_query: &str) -> Result<serde_json::Value, String> {
        self.post_body(path_and_query, nothing())
            .await
            .map_err(|e| e.message)
    }

    /// Sends `POST path_and_query` with `body` and reads the JSON answer.
    /// An answer that cannot be read keeps its status (the server did
    /// what was asked).
    pub async fn post_body(
        &self,
        path_and_query: &str,
        body: Sent,
    ) -> Result<serde_json::Value, Refused> {
        let resp = self.send(Method::POST, path_and_query, &[], body).await?;
        let (host, status) = (self.host(), resp.status());
        let body = read_bounded(resp, MAX_ANSWER).await.map_err(|e| {
            Refused::new(Some(status), format!("reading the answer of {host}: {e}"))
        })?;
        serde_json::from_slice(&body).map_err(|e| {
            Refused::new(
                Some(status),
                format!("{host} answered something that is not JSON: {e}"),
            )
        })
    }

    /// Sends `GET path_and_query` (accepting `accept`); a 2xx answer, its
    /// body unread, or what went wrong.
    pub async fn get(
        &self,
        path_and_query: &str,
        accept: &[&str],
    ) -> Result<Response<Incoming>, Refused> {
        self.send(Method::GET, path_and_query, accept, nothing())
            .await
    }

    fn host(&self) -> &str {
        self.base.host_str().unwrap_or("?")
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        accept: &[&str],
        body: Sent,
    ) -> Result<Response<Incoming>, Refused> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| Refused::new(None, format!("{path_and_query}: {e}")))?;
        let mut req = Request::builder().method(method).uri(url.as_str()).header(
            header::USER_AGENT,
            concat!("wharf/", env!("CARGO_PKG_VERSION")),
        );
        for a in accept {
            req = req.header(header::ACCEPT, *a);
        }
        if let Some(a) = &self.authorization {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        let req = req
            .body(body)
            .map_err(|e| Refused::new(None, e.to_string()))?;
        let host = self.host();
        let resp = self.client.request(req).await.map_err(|e| {
            Refused::new(
                None,
                format!("cannot reach {host}: {}", crate::error::error_chain(&e)),
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = read_bounded(resp, ERROR_BODY).await.unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        let message = match status {
            StatusCode::UNAUTHORIZED if self.authorization.is_none() => format!(
                "{host} asks who you are: pass --user NAME with WHARF_PASSWORD or --password-file ({message})"
            ),
            StatusCode::UNAUTHORIZED => format!("{host} refused the user name or password ({message})"),
            StatusCode::FORBIDDEN if path_and_query.starts_with("/admin/") => format!(
                "{host} refused: {message} (an admin is named in `admins` in its config)"
            ),
            s => format!("{host} answered {s}: {message}"),
        };
        Err(Refused::new(Some(status), message))
    }
}

fn nothing() -> Sent {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// What went wrong with a request: the status when the server answered,
/// and a message a person can act on.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: Option<StatusCode>,
    pub message: String,
}

impl Refused {
    fn new(status: Option<StatusCode>, message: String) -> Refused {
        Refused { status, message }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_bounded<B>(resp: Response<B>, limit: usize) -> Result<Bytes, String>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

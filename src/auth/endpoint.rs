//! The token endpoint of Docker token authentication, `GET /token` (and
//! the OAuth2 `POST /token` with `grant_type=password` that containerd
//! tries first). The caller proves who they are once, with Basic
//! credentials, a client certificate, or nothing (anonymous); the answer
//! is a short-lived signed token granting, of the scopes asked for, the
//! actions the policy allows. So a bcrypt check is paid once per token,
//! not once per request.

use super::policy::{decide, Decision, Identity, Op, Policy};
use super::scope::Scope;
use super::token::{Grant, Via};
use super::{Auth, Peer};
use crate::body::Body;
use crate::error::{BoxError, Error, ErrorCode, Result};
use crate::mirror::routing::Router;
use crate::reply;
use bytes::Bytes;
use http::{header, request::Parts, Method, Response, StatusCode};
use http_body::Body as HttpBody;
use std::time::SystemTime;

/// Largest OAuth2 form body read.
const MAX_FORM: usize = 64 * 1024;

fn unauthorized(message: &str) -> Error {
    Error::oci(ErrorCode::Unauthorized, message.to_string())
}

/// What the OAuth2 form says (`POST /token`).
struct Form {
    user: Option<String>,
    password: Option<crate::config::Secret>,
    scopes: Vec<String>,
}

/// The OAuth2 error body clients expect from a token endpoint.
fn oauth_error(status: StatusCode, error: &str) -> Response<Body> {
    let mut r = reply::json(&serde_json::json!({ "error": error }), "application/json");
    *r.status_mut() = status;
    r
}

impl Auth {
    /// `GET` or `POST` `/token`.
    pub async fn token<B>(
        &self,
        parts: &Parts,
        body: B,
        peer: &Peer,
        router: &Router,
    ) -> Result<Response<Body>>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let Some(tokens) = &self.tokens else {
            return Err(Error::oci(
                ErrorCode::Unsupported,
                "access control is off: no tokens are needed",
            ));
        };
        let q = reply::query(&parts.uri);
        let (form, scopes) = match parts.method {
            Method::GET => (
                None,
                q.iter()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>(),
            ),
            Method::POST => {
                let bytes = reply::read_bounded(&parts.headers, body, MAX_FORM).await?;
                let mut f = Form {
                    user: None,
                    password: None,
                    scopes: Vec::new(),
                };
                let mut grant = None;
                for (k, v) in form_urlencoded::parse(&bytes) {
                    match k.as_ref() {
                        "grant_type" => grant = Some(v.into_owned()),
                        "username" => f.user = Some(v.into_owned()),
                        "password" => f.password = Some(crate::config::Secret::new(v.into_owned())),
                        "scope" => f.scopes.push(v.into_owned()),
                        _ => {}
                    }
                }
                if grant.as_deref() != Some("password") {
                    // containerd then falls back to GET with Basic credentials.
                    return Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "unsupported_grant_type",
                    ));
                }
                let scopes = std::mem::take(&mut f.scopes);
                (Some(f), scopes)
            }
            _ => {
                return Err(Error::oci(
                    ErrorCode::Unsupported,
                    format!("{} is not supported on {}", parts.method, super::TOKEN_PATH),
                ))
            }
        };
        let scopes = Scope::parse_all(scopes.iter().map(String::as_str))
            .map_err(|e| Error::oci(ErrorCode::NameInvalid, e.to_string()))?;

        let (identity, via) = self.token_identity(parts, peer, form).await?;
        let mut access = Vec::new();
        for scope in &scopes {
            if let Some(g) = self.grant(&identity, scope, router) {
                access.push(g);
            }
        }
        let issued = tokens
            .issue(
                match &identity {
                    Identity::User(u) => u,
                    Identity::Anonymous => "",
                },
                via,
                access.clone(),
                SystemTime::now(),
            )
            .map_err(|e| Error::storage("signing a token", e))?;
        tracing::debug!(user = %identity.name(), addr = %peer.addr, grants = ?access, "token issued");
        let body = serde_json::json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in.as_secs(),
            "issued_at": humantime::format_rfc3339_seconds(issued.issued_at).to_string(),
        });
        let mut r = reply::json(&body, "application/json");
        reply::set(&mut r, header::CACHE_CONTROL, "no-store");
        Ok(r)
    }

    /// Who asks for the token: Basic credentials (header or form), else a
    /// client certificate, else anonymous. Wrong credentials are a 401.
    async fn token_identity(
        &self,
        parts: &Parts,
        peer: &Peer,
        form: Option<Form>,
    ) -> Result<(Identity, Via)> {
        let given = match form {
            Some(Form {
                user: Some(user),
                password: Some(password),
                ..
            }) => Some((user, password)),
            _ => match parts.headers.get(header::AUTHORIZATION) {
                None => None,
                Some(v) => match super::credentials::parse(v.as_bytes()) {
                    Ok(super::credentials::Credentials::Basic { user, password }) => {
                        Some((user, password))
                    }
                    Ok(super::credentials::Credentials::Bearer(_)) => {
                        return Err(unauthorized(
                            "the token endpoint takes Basic credentials, not a token",
                        ))
                    }
                    Err(e) => return Err(unauthorized(&e.to_string())),
                },
            },
        };
        match given {
            Some((user, password)) => {
                if self.check_password(&user, &password, peer).await? {
                    Ok((Identity::User(user), Via::Password))
                } else {
                    Err(unauthorized("incorrect username or password"))
                }
            }
            None => Ok(match &peer.cert_user {
                Some(u) => (Identity::User(u.clone()), Via::Certificate),
                None => (Identity::Anonymous, Via::Anonymous),
            }),
        }
    }

    /// The part of `scope` the policy allows `who`, if any.
    fn grant(&self, who: &Identity, scope: &Scope, router: &Router) -> Option<Grant> {
        match scope {
            Scope::Catalog => allowed(&self.policy, who, &Op::Catalog).then(|| Grant {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            }),
            Scope::Repository { name, actions } => {
                let at = self.locate(&router.route(name, None).ok()?);
                let granted: Vec<String> = actions
                    .iter()
                    .filter(|a| allowed(&self.policy, who, &at.op(name.as_str(), **a)))
                    .map(|a| a.as_str().to_string())
                    .collect();
                (!granted.is_empty()).then(|| Grant {
                    kind: "repository".into(),
                    name: name.as_str().to_string(),
                    actions: granted,
                })
            }
        }
    }
}

fn allowed(policy: &Policy, who: &Identity, op: &Op<'_>) -> bool {
    decide(policy, who, op) == Decision::Allow
}

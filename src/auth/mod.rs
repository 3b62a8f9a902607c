//! Access control, in one place before any handler runs: who the caller
//! is ([`Auth::authenticate`]: a bearer token, Basic credentials, a client
//! certificate, or nobody), what the request asks to do
//! ([`operation`]), and whether the policy allows it
//! ([`Auth::authorize`], through the one function [`policy::decide`]).
//! Refusals follow the distribution spec: 401 with a `WWW-Authenticate`
//! challenge naming the token endpoint and the scope needed when the
//! caller has not (or not validly) logged in, 403 when a known caller
//! lacks the right. The token endpoint lives in [`endpoint`].
//!
//! Without users, client certificates or rules ([`Policy::open`]), every
//! request is allowed what routing allows, as before access control.

pub mod credentials;
pub mod endpoint;
pub mod htpasswd;
pub mod policy;
pub mod scope;
pub mod token;

use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::mirror::routing::Backend;
use crate::oci::ApiRoute;
use credentials::Credentials;
use http::{header, request::Parts, Method};
use policy::{decide, Action, Decision, Identity, Op, Place, Policy};
use std::collections::HashSet;
use std::net::SocketAddr;
use token::{TokenError, Tokens, Via};

/// The path of the token endpoint (Docker token authentication).
pub const TOKEN_PATH: &str = "/token";
/// The `service` Wharf names in challenges and tokens.
pub const SERVICE: &str = "wharf";

/// What the server knows about a request's connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether the connection is HTTPS.
    pub tls: bool,
    /// The common name of a verified client certificate.
    pub cert_user: Option<String>,
}

impl Peer {
    /// A plain-HTTP peer (tests, benchmarks).
    pub fn plain(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            tls: false,
            cert_user: None,
        }
    }
}

/// Who a request comes from, once their credentials have been checked.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    pub addr: SocketAddr,
    /// With a bearer token, only what the token grants.
    token: Option<std::sync::Arc<token::Claims>>,
}

impl Caller {
    /// Who upload limits are counted against: the user, or the address of
    /// an anonymous client.
    pub fn quota_key(&self) -> String {
        match &self.identity {
            Identity::User(u) => format!("user:{u}"),
            Identity::Anonymous => format!("addr:{}", client_key(self.addr.ip())),
        }
    }
}

/// The address a client is counted by, for connection and upload limits:
/// its IPv4 address, or the /64 of an IPv6 one (the block one machine is
/// given, which it may rotate addresses within).
pub fn client_key(addr: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Whether `parts` is a write a browser sent for another site's page: a
/// `Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin`
/// that is not this server. Registry clients send neither; a browser that
/// signed in to the web UI would otherwise lend its password to any page
/// that posts a form here.
pub fn cross_site_write(parts: &Parts) -> bool {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let h = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = h("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    let Some(origin) = h("origin") else {
        return false;
    };
    let ours = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| h("host"));
    let theirs = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    theirs.is_none() || theirs != ours
}

/// Where a routed repository lives, as access rules see it.
#[derive(Clone, Debug)]
pub struct Location {
    pub place: Place,
    /// A mirrored repository's full name, `<upstream>/<repository>`.
    pub full: Option<String>,
}

impl Location {
    /// A local repository (and the ping and the catalog, which have none).
    pub const LOCAL: Location = Location {
        place: Place::Local,
        full: None,
    };

    /// The operation `action` on repository `name` here.
    pub fn op<'a>(&'a self, name: &'a str, action: Action) -> Op<'a> {
        Op::Repo {
            name,
            full: self.full.as_deref(),
            place: self.place,
            action,
        }
    }
}

/// Users, tokens and the policy.
pub struct Auth {
    policy: Policy,
    users: Option<htpasswd::Users>,
    /// `None` exactly when the policy is open (no tokens are needed).
    tokens: Option<Tokens>,
    private_upstreams: HashSet<String>,
    /// Where refused pushes to mirrored names are pointed.
    local_hint: Option<String>,
}

/// What a request asks to do: the operation the policy decides on, from
/// the route and the method. Reads are pulls; deletes of manifests and
/// blobs are deletes; everything else that writes (uploads, manifest PUTs,
/// and any other method) is a push.
pub fn operation<'a>(route: &'a ApiRoute, method: &Method, at: &'a Location) -> Op<'a> {
    let read = method == Method::GET || method == Method::HEAD;
    let action = match route {
        ApiRoute::Manifest { .. } | ApiRoute::Blob { .. } if method == Method::DELETE => {
            Action::Delete
        }
        ApiRoute::UploadStart { .. } | ApiRoute::Upload { .. } => Action::Push,
        _ if read => Action::Pull,
        _ => Action::Push,
    };
    match route {
        ApiRoute::Base => Op::Ping,
        ApiRoute::Catalog => Op::Catalog,
        ApiRoute::Tags { name }
        | ApiRoute::Manifest { name, .. }
        | ApiRoute::Blob { name, .. }
        | ApiRoute::UploadStart { name }
        | ApiRoute::Upload { name, .. }
        | ApiRoute::Referrers { name, .. } => at.op(name.as_str(), action),
    }
}

/// The scope a 401 tells the client to ask the token endpoint for. Reads
/// of a local repository name `pull,push`: a pusher's first request is a
/// blob HEAD, and clients that keep one token per repository (oras-py)
/// would otherwise be stuck with a pull-only token for the upload that
/// follows. The token endpoint still grants only what the rules allow.
fn scope_of(op: &Op<'_>) -> Option<String> {
    match op {
        // Maintenance is asked with a password (Basic), never a token.
        Op::Ping | Op::Admin => None,
        Op::Catalog => Some("registry:catalog:*".into()),
        Op::Repo {
            name,
            action,
            place,
            ..
        } => Some(format!(
            "repository:{name}:{}",
            match action {
                Action::Pull if *place == Place::Local => "pull,push",
                Action::Pull => "pull",
                Action::Push => "pull,push",
                Action::Delete => "delete",
            }
        )),
    }
}

impl Auth {
    /// Loads the users and the token key the config names.
    pub fn new(config: &Config) -> std::result::Result<Auth, String> {
        let users = match &config.htpasswd {
            Some(path) => Some(htpasswd::Users::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let tokens = if config.policy.is_open() {
            None
        } else {
            let (path, create) = match &config.token_key {
                Some(p) => (p.clone(), false),
                None => (config.data.join("token.key"), true),
            };
            if create {
                std::fs::create_dir_all(&config.data)
                    .map_err(|e| format!("cannot create {}: {e}", config.data.display()))?;
            }
            let key = token::load_key(&path, create)
                .map_err(|e| format!("token signing key {}: {e}", path.display()))?;
            Some(Tokens::new(&key, SERVICE, config.token_ttl)?)
        };
        Ok(Auth {
            policy: config.policy.clone(),
            users,
            tokens,
            private_upstreams: config
                .upstreams
                .iter()
                .filter(|u| u.is_private())
                .map(|u| u.name.clone())
                .collect(),
            local_hint: config.local_namespaces.first().cloned(),
        })
    }

    pub fn is_open(&self) -> bool {
        self.policy.is_open()
    }

    /// Reads the htpasswd file again if it changed.
    pub fn reload_if_changed(&self) {
        if let Some(u) = &self.users {
            u.reload_if_changed();
        }
    }

    /// Reads the htpasswd file again (SIGHUP).
    pub fn reload(&self) {
        if let Some(u) = &self.users {
            u.reload();
        }
    }

    /// How access rules see where a routed repository lives.
    pub fn locate(&self, backend: &Backend) -> Location {
        match backend {
            Backend::Local => Location::LOCAL,
            Backend::Mirror { upstream, repo } => Location {
                place: if self.private_upstreams.contains(upstream) {
                    Place::PrivateMirror
                } else {
                    Place::Mirror
                },
                // Only rules look at it: no allocation when there are none.
                full: (!self.policy.is_open()).then(|| format!("{upstream}/{repo}")),
            },
        }
    }

    /// Checks the request's credentials: an `Authorization` header (a
    /// token or Basic credentials), else a client certificate, else
    /// anonymous. Credentials that do not check out are a 401.
    pub async fn authenticate(&self, parts: &Parts, peer: &Peer) -> Result<Caller> {
        let anonymous = Caller {
            identity: Identity::Anonymous,
            addr: peer.addr,
            token: None,
        };
        let Some(tokens) = &self.tokens else {
            return Ok(anonymous); // open: credentials are not looked at
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(match &peer.cert_user {
                Some(u) => Caller {
                    identity: Identity::User(u.clone()),
                    ..anonymous
                },
                None => anonymous,
            });
        };
        let refuse = |message: String, error: &'static str| {
            self.challenge(parts, peer, None, Some(error), message)
        };
        match credentials::parse(value.as_bytes()) {
            Err(e) => Err(refuse(e.to_string(), "invalid_request")),
            Ok(Credentials::Basic { user, password }) => {
                if self.check_password(&user, &password, peer).await? {
                    Ok(Caller {
                        identity: Identity::User(user),
                        ..anonymous
                    })
                } else {
                    Err(refuse(
                        "incorrect username or password".into(),
                        "invalid_token",
                    ))
                }
            }
            Ok(Credentials::Bearer(token)) => {
                let claims = tokens.verify(token).map_err(|e| match e {
                    TokenError::Expired => refuse("token expired".into(), "invalid_token"),
                    TokenError::Invalid => refuse("token is invalid".into(), "invalid_token"),
                })?;
                if claims.via == Via::Password && !self.user_exists(&claims.sub) {
                    return Err(refuse(
                        "the token's user no longer exists".into(),
                        "invalid_token",
                    ));
                }
                Ok(Caller {
                    identity: if claims.sub.is_empty() {
                        Identity::Anonymous
                    } else {
                        Identity::User(claims.sub.clone())
                    },
                    addr: peer.addr,
                    token: Some(claims),
                })
            }
        }
    }

    /// Checks a password, logging a refusal (the user's name only when it
    /// is a user: a password typed into the name field stays out of logs).
    /// Too many checks waiting is a 429.
    async fn check_password(
        &self,
        user: &str,
        password: &crate::config::Secret,
        peer: &Peer,
    ) -> Result<bool> {
        let verdict = match &self.users {
            Some(u) => u.check(user, password).await,
            None => htpasswd::Verdict::Invalid,
        };
        match verdict {
            htpasswd::Verdict::Valid => Ok(true),
            htpasswd::Verdict::Invalid => {
                if self.user_exists(user) {
                    tracing::info!(user = %user, addr = %peer.addr, "login refused: wrong password");
                } else {
                    tracing::info!(addr = %peer.addr, "login refused: unknown user");
                }
                Ok(false)
            }
            htpasswd::Verdict::Busy => Err(Error::oci(
                ErrorCode::TooManyRequests,
                "too many logins are being checked; try again shortly",
            )
            .with_header(header::RETRY_AFTER, "1")),
        }
    }

    fn user_exists(&self, user: &str) -> bool {
        self.users.as_ref().is_some_and(|u| u.exists(user))
    }

    /// Whether `caller` may perform `op` (a token limits it further).
    fn decision(&self, caller: &Caller, op: &Op<'_>) -> (Decision, bool) {
        let d = decide(&self.policy, &caller.identity, op);
        let grants = caller.token.as_ref().map(|t| &t.access);
        let in_token = match (grants, op) {
            (None, _) | (Some(_), Op::Ping) => true,
            (Some(g), Op::Catalog) => g
                .iter()
                .any(|g| g.kind == "registry" && g.name == "catalog"),
            (Some(g), Op::Repo { name, action, .. }) => g.iter().any(|g| g.covers(name, *action)),
            // No token grants maintenance: admins send their password.
            (Some(_), Op::Admin) => false,
        };
        (d, in_token)
    }

    /// Whether `caller` may perform `op`, without an error.
    pub fn allows(&self, caller: &Caller, op: &Op<'_>) -> bool {
        matches!(self.decision(caller, op), (Decision::Allow, true))
    }

    /// Allows `op` or answers why not: 401 with a challenge for the scope
    /// when logging in (or a token for that scope) could help, 403 when a
    /// known caller lacks the right, and the mirror's read-only answers.
    pub fn authorize(
        &self,
        caller: &Caller,
        op: &Op<'_>,
        backend: &Backend,
        parts: &Parts,
        peer: &Peer,
    ) -> Result<()> {
        match self.decision(caller, op) {
            (Decision::Allow, true) => Ok(()),
            (Decision::Allow, false) => Err(self.challenge(
                parts,
                peer,
                Some(op),
                Some("insufficient_scope"),
                "the token does not grant this".into(),
            )),
            (Decision::ReadOnly, _) => Err(self.read_only(op, backend)),
            (Decision::Deny, _) if caller.identity == Identity::Anonymous => Err(self.challenge(
                parts,
                peer,
                Some(op),
                None,
                "authentication required".into(),
            )),
            (Decision::Deny, _) => {
                let what = match op {
                    Op::Ping => "use this registry".to_string(),
                    Op::Catalog => "list repositories".to_string(),
                    Op::Repo { name, action, .. } => format!("{} {name}", action.as_str()),
                    Op::Admin => "run maintenance (not in admins)".to_string(),
                };
                Err(Error::oci(
                    ErrorCode::Denied,
                    format!("{} may not {what}", caller.identity.name()),
                ))
            }
        }
    }

    fn read_only(&self, op: &Op<'_>, backend: &Backend) -> Error {
        let Op::Repo { name, action, .. } = op else {
            return Error::oci(ErrorCode::Unsupported, "not supported");
        };
        match action {
            Action::Delete => Error::oci(
                ErrorCode::Unsupported,
                "DELETE is not supported on this endpoint",
            ),
            _ => {
                let hint = match &self.local_hint {
                    Some(l) => format!("; push to a local namespace instead, e.g. {l}/{name}"),
                    None => String::new(),
                };
                let from = match backend {
                    Backend::Mirror { upstream, .. } => format!(" from {upstream}"),
                    Backend::Local => String::new(),
                };
                Error::oci(
                    ErrorCode::Denied,
                    format!("{name} is mirrored{from} and read-only{hint}"),
                )
            }
        }
    }

    /// 401 UNAUTHORIZED with `WWW-Authenticate: Bearer realm=...` pointing
    /// at this server's token endpoint.
    fn challenge(
        &self,
        parts: &Parts,
        peer: &Peer,
        op: Option<&Op<'_>>,
        error: Option<&str>,
        message: String,
    ) -> Error {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{SERVICE}\"",
            realm(parts, peer)
        );
        if let Some(scope) = op.and_then(scope_of) {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(e) = error {
            value.push_str(&format!(",error=\"{e}\""));
        }
        Error::oci(ErrorCode::Unauthorized, message).with_header(header::WWW_AUTHENTICATE, value)
    }

    /// Whether Wharf logs in to `upstream` (its mirror is never anonymous).
    pub fn is_private_upstream(&self, upstream: &str) -> bool {
        self.private_upstreams.contains(upstream)
    }

    /// Whether `caller` may pull `name`, which routes to `backend` (for
    /// the UI and the JSON API).
    pub fn may_pull(&self, caller: &Caller, name: &str, backend: &Backend) -> bool {
        let at = self.locate(backend);
        self.allows(caller, &at.op(name, Action::Pull))
    }

    /// Whether `caller` may pull local repository `name` (for listings).
    pub fn may_pull_local(&self, caller: &Caller, name: &str) -> bool {
        decide(
            &self.policy,
            &caller.identity,
            &Location::LOCAL.op(name, Action::Pull),
        ) == Decision::Allow
    }
}

/// The token endpoint's URL as this client reaches Wharf: the scheme of
/// the connection (or what a TLS-terminating proxy says it was) and the
/// host the client asked for.
fn realm(parts: &Parts, peer: &Peer) -> String {
    let forwarded = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v == "https" || *v == "http");
    let scheme = forwarded.unwrap_or(if peer.tls { "https" } else { "http" });
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        // It goes inside a quoted header parameter: nothing that could end it.
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
        .unwrap_or_else(|| peer_local_host(peer));
    format!("{scheme}://{host}{TOKEN_PATH}")
}

/// A last resort for clients that sent no usable Host.
fn peer_local_host(peer: &Peer) -> String {
    match peer.addr {
        SocketAddr::V4(_) => "127.0.0.1".into(),
        SocketAddr::V6(_) => "[::1]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::RepoName;

    #[test]
    fn operations_from_routes() {
        let name = RepoName::parse("golden/app").unwrap();
        let d: crate::oci::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let r = |route: ApiRoute, m: Method| match operation(&route, &m, &Location::LOCAL) {
            Op::Repo { action, .. } => Some(action),
            _ => None,
        };
        let manifest = || ApiRoute::Manifest {
            name: name.clone(),
            reference: crate::oci::Reference::parse("1.0").unwrap(),
        };
        let blob = || ApiRoute::Blob {
            name: name.clone(),
            digest: d.clone(),
        };
        let upload = || ApiRoute::Upload {
            name: name.clone(),
            session: "x".into(),
        };
        assert_eq!(r(manifest(), Method::GET), Some(Action::Pull));
        assert_eq!(r(manifest(), Method::HEAD), Some(Action::Pull));
        assert_eq!(r(manifest(), Method::PUT), Some(Action::Push));
        assert_eq!(r(manifest(), Method::DELETE), Some(Action::Delete));
        assert_eq!(r(manifest(), Method::POST), Some(Action::Push));
        assert_eq!(r(blob(), Method::GET), Some(Action::Pull));
        assert_eq!(r(blob(), Method::DELETE), Some(Action::Delete));
        assert_eq!(
            r(upload(), Method::GET),
            Some(Action::Push),
            "upload status"
        );
        assert_eq!(r(upload(), Method::DELETE), Some(Action::Push), "cancel");
        assert_eq!(
            r(ApiRoute::UploadStart { name: name.clone() }, Method::POST),
            Some(Action::Push)
        );
        assert_eq!(
            r(ApiRoute::Tags { name: name.clone() }, Method::GET),
            Some(Action::Pull)
        );
        assert_eq!(
            operation(&ApiRoute::Base, &Method::GET, &Location::LOCAL),
            Op::Ping
        );
        assert_eq!(
            operation(&ApiRoute::Catalog, &Method::GET, &Location::LOCAL),
            Op::Catalog
        );
    }

    #[test]
    fn realm_follows_the_client_and_never_breaks_the_header() {
        let peer = Peer::plain("127.0.0.1:1".parse().unwrap());
        let parts = |host: &str, proto: Option<&str>| {
            let mut b = http::Request::get("/v2/").header("host", host);
            if let Some(p) = proto {
                b = b.header("x-forwarded-proto", p);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            realm(&parts("wharf.lan:5000", None), &peer),
            "http://wharf.lan:5000/token"
        );
        assert_eq!(
            realm(&parts("wharf.lan", Some("https")), &peer),
            "https://wharf.lan/token"
        );
        assert_eq!(
            realm(&parts("evil\",x=\"y", None), &peer),
            "http://127.0.0.1/token"
        );
        let tls = Peer {
            tls: true,
            ..peer.clone()
        };
        assert_eq!(realm(&parts("h", Some("gopher")), &tls), "https://h/token");
    }

    #[test]
    fn writes_from_other_sites_are_told_apart() {
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut b = http::Request::builder()
                .method(method)
                .uri("/v2/golden/app/blobs/uploads/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let host = ("host", "wharf.example:5000");
        assert!(!cross_site_write(&req("POST", &[host])), "registry clients");
        assert!(!cross_site_write(&req(
            "GET",
            &[host, ("origin", "https://evil.example")]
        )));
        assert!(cross_site_write(&req(
            "POST",
            &[host, ("origin", "https://evil.example")]
        )));
        assert!(cross_site_write(&req("POST", &[host, ("origin", "null")])));
        assert!(!cross_site_write(&req(
            "POST",
            &[host, ("origin", "http://wharf.example:5000")]
        )));
        assert!(cross_site_write(&req(
            "PUT",
            &[host, ("sec-fetch-site", "cross-site")]
        )));
        assert!(cross_site_write(&req(
            "DELETE",
            &[host, ("sec-fetch-site", "same-site")]
        )));
        assert!(!cross_site_write(&req(
            "PATCH",
            &[host, ("sec-fetch-site", "same-origin")]
        )));
    }
}

//! Where an upstream's answers may send Wharf: the hosts a token realm
//! (`WWW-Authenticate: Bearer realm=...`) may be on, the hosts a redirect
//! may lead to, and which addresses count as public. Pure rules, no I/O,
//! except [`PublicResolver`], which resolves a redirect target's name and
//! hands the connector only addresses it has checked, so the addresses
//! connected to are the addresses checked (no DNS-rebinding gap).
//!
//! A token realm is fetched (with the upstream's credentials) only when it
//! is on the upstream's own origin or its host is in `token_realms`, and it
//! must be HTTPS, except on the own origin of a plain-HTTP upstream on a
//! loopback address. A redirect may lead to the upstream's own origin, to a
//! host in `redirect_hosts`, or to a host all of whose addresses are public;
//! an https → http downgrade needs `redirect_hosts` too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use url::{Host, Url};

/// Why a realm or a redirect was refused (no secrets: URLs are shown
/// without their query or user info).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("token realm {realm} is not on the upstream's origin and its host is not in token_realms (add \"{host}\" to token_realms of this upstream to trust it)")]
    RealmNotListed { realm: String, host: String },
    #[error("token realm {realm} is not HTTPS (plain HTTP is accepted only on the own origin of an upstream on a loopback address)")]
    RealmNotHttps { realm: String },
    #[error("{what} {url} is neither http nor https")]
    Scheme { what: &'static str, url: String },
    #[error("redirect from https to http {url} (add \"{host}\" to redirect_hosts of this upstream to allow it)")]
    Downgrade { url: String, host: String },
    #[error("redirect target {host} resolves to {addr}, which is not a public address (add \"{host}\" to redirect_hosts of this upstream to allow it)")]
    NotPublic { host: String, addr: IpAddr },
    #[error("redirect target {host} did not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

/// A `host` or `host:port` entry of `token_realms` or `redirect_hosts`.
/// Without a port it means the host on its scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// As `url` displays it: lowercase, IPv6 in brackets.
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `auth.example.com`, `cdn.example.com:8443`, `10.0.0.5:5000`
    /// or `[::1]:5000`.
    pub fn parse(entry: &str) -> Option<HostPattern> {
        let entry = entry.trim();
        let (host, port) = match entry.rsplit_once(':') {
            // A bare IPv6 address has colons but no port.
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                if h.contains(':') && !(h.starts_with('[') && h.ends_with(']')) {
                    (entry, None)
                } else {
                    (h, Some(p.parse::<u16>().ok()?))
                }
            }
            _ => (entry, None),
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let parsed = Host::parse(host)
            .or_else(|_| Host::parse(&format!("[{host}]")))
            .ok()?;
        Some(HostPattern {
            host: parsed.to_string(),
            port,
        })
    }

    /// Whether `url`'s host and port are this pattern's.
    pub fn matches(&self, url: &Url) -> bool {
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return false;
        };
        host.to_string() == self.host
            && match self.port {
                Some(p) => p == port,
                None => default_port(url.scheme()) == Some(port),
            }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// How a redirect may be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// To the upstream's own origin: as any upstream request.
    Origin,
    /// To a host the operator listed in `redirect_hosts`.
    Listed,
    /// To another host: only through [`PublicResolver`], so every address
    /// connected to is public (an address literal was checked here).
    Public,
}

/// The trust rules of one upstream.
#[derive(Debug, Clone)]
pub struct Trust {
    upstream: Url,
    token_realms: Vec<HostPattern>,
    redirect_hosts: Vec<HostPattern>,
}

impl Trust {
    pub fn new(
        upstream: &Url,
        token_realms: Vec<HostPattern>,
        redirect_hosts: Vec<HostPattern>,
    ) -> Trust {
        Trust {
            upstream: upstream.clone(),
            token_realms,
            redirect_hosts,
        }
    }

    /// Whether credentials may be sent to the token realm `realm`.
    pub fn realm(&self, realm: &Url) -> Result<(), Refusal> {
        let shown = shown(realm);
        if !matches!(realm.scheme(), "http" | "https") {
            return Err(Refusal::Scheme {
                what: "token realm",
                url: shown,
            });
        }
        let own = realm.origin() == self.upstream.origin();
        if !own && !self.token_realms.iter().any(|p| p.matches(realm)) {
            return Err(Refusal::RealmNotListed {
                realm: shown,
                host: host_key(realm),
            });
        }
        let plain_ok = own && is_loopback_host(&self.upstream);
        if realm.scheme() != "https" && !plain_ok {
            return Err(Refusal::RealmNotHttps { realm: shown });
        }
        Ok(())
    }

    /// Whether an upstream without credentials may fetch its anonymous
    /// token from `realm`, a realm [`Trust::realm`] does not trust: yes
    /// when it is HTTPS and on a public host (an IP literal is checked
    /// here, a name by the [`PublicResolver`] the fetch must go through).
    /// Nothing secret goes there, so this is the same rule as a redirect
    /// to a CDN (GitLab's registries, for one, answer with a realm on
    /// another host).
    pub fn anonymous_realm(&self, realm: &Url) -> Result<(), Refusal> {
        if realm.scheme() != "https" {
            return Err(Refusal::RealmNotHttps {
                realm: shown(realm),
            });
        }
        match literal_ip(realm) {
            Some(addr) if !is_public(addr) => Err(Refusal::NotPublic {
                host: host_key(realm),
                addr,
            }),
            _ => Ok(()),
        }
    }

    /// Whether, and how, a redirect from `from` to `to` may be followed.
    pub fn redirect(&self, from: &Url, to: &Url) -> Result<Hop, Refusal> {
        if !matches!(to.scheme(), "http" | "https") {
            return Err(Refusal::Scheme {
                what: "redirect target",
                url: shown(to),
            });
        }
        if to.origin() == self.upstream.origin() {
            return Ok(Hop::Origin);
        }
        if self.redirect_hosts.iter().any(|p| p.matches(to)) {
            return Ok(Hop::Listed);
        }
        if from.scheme() == "https" && to.scheme() == "http" {
            return Err(Refusal::Downgrade {
                url: shown(to),
                host: host_key(to),
            });
        }
        match literal_ip(to) {
            Some(addr) if !is_public(addr) => Err(Refusal::NotPublic {
                host: host_key(to),
                addr,
            }),
            _ => Ok(Hop::Public),
        }
    }
}

/// `host` or `host:port` (the port only when it is not the scheme's
/// default): what an operator writes in `token_realms`/`redirect_hosts`.
pub fn host_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// A URL as logs may show it: scheme, host, port and path only.
pub fn shown(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str()
            .map(|_| host_key(url))
            .unwrap_or_else(|| "?".into()),
        url.path()
    )
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(a)) => a.is_loopback(),
        Some(Host::Ipv6(a)) => a.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The host of `url` when it is an IP address.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host() {
        Some(Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

/// Whether `addr` is reachable on the public internet: not loopback,
/// private, link-local, unique-local, CGNAT, unspecified, broadcast,
/// multicast or reserved, nor an IPv4-mapped (or -compatible, or NAT64)
/// form of one of those.
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    !(o0 == 0 // "this network", 0.0.0.0 included
        || o0 == 10
        || o0 == 127
        || (o0 == 100 && (o1 & 0xc0) == 64) // CGNAT 100.64/10
        || (o0 == 169 && o1 == 254)
        || (o0 == 172 && (o1 & 0xf0) == 16)
        || (o0 == 192 && o1 == 168)
        || (o0 == 192 && o1 == 0 && a.octets()[2] == 0) // IETF protocol 192.0.0/24
        || (o0 == 198 && (o1 & 0xfe) == 18) // benchmarking 198.18/15
        || o0 >= 224) // multicast 224/4, reserved 240/4, broadcast
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, :: and ::1 included),
    // 64:ff9b::a.b.c.d (NAT64): judged by the IPv4 address inside.
    let embedded =
        (s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if embedded {
        if s[..6] == [0; 6] && (s[6] == 0) && s[7] <= 1 {
            return false; // :: and ::1
        }
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return is_public_v4(v4);
    }
    // 6to4 2002:a.b.c.d::/48: judged by the IPv4 address it carries.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return is_public_v4(v4);
    }
    // Local-use NAT64 64:ff9b:1::/48 translates to anything, private too.
    if s[..3] == [0x64, 0xff9b, 1] {
        return false;
    }
    !((s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7
        || (s[0] & 0xff00) == 0xff00) // multicast
}

/// A resolver for redirect targets on other hosts: resolves the name and
/// fails unless every address is public, so the connector only ever sees
/// (and connects to) addresses that were checked.
#[derive(Clone, Default)]
pub struct PublicResolver;

type Resolving = Pin<
    Box<dyn std::future::Future<Output = Result<std::vec::IntoIter<SocketAddr>, Refusal>> + Send>,
>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Refusal;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Refusal::Unresolved {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Refusal::Unresolved {
                    host,
                    reason: "no addresses".into(),
                });
            }
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(Refusal::NotPublic {
                    host,
                    addr: bad.ip(),
                });
            }
            Ok(addrs.into_iter())
        })
    }
}

/// The trust refusal behind a client error, if that is what it was.
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn trust(upstream: &str, realms: &[&str], redirects: &[&str]) -> Trust {
        let p = |v: &[&str]| v.iter().map(|e| HostPattern::parse(e).unwrap()).collect();
        Trust::new(&url(upstream), p(realms), p(redirects))
    }

    #[test]
    fn host_patterns() {
        let p = |s| HostPattern::parse(s).map(|p| p.to_string());
        assert_eq!(p("Auth.Docker.IO").as_deref(), Some("auth.docker.io"));
        assert_eq!(
            p("cdn.example.com:8443").as_deref(),
            Some("cdn.example.com:8443")
        );
        assert_eq!(p("127.0.0.2:5000").as_deref(), Some("127.0.0.2:5000"));
        assert_eq!(p("[::1]:5000").as_deref(), Some("[::1]:5000"));
        assert_eq!(p("::1").as_deref(), Some("[::1]"));
        for bad in [
            "",
            "https://x.io",
            "x.io/token",
            "u@x.io",
            "x.io:99999",
            "x.io:",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        let hub = HostPattern::parse("auth.docker.io").unwrap();
        assert!(hub.matches(&url("https://auth.docker.io/token")));
        assert!(hub.matches(&url("https://auth.docker.io:443/token")));
        assert!(!hub.matches(&url("https://auth.docker.io:8443/token")));
        assert!(!hub.matches(&url("https://evil.auth.docker.io/token")));
        let v6 = HostPattern::parse("[::1]:5000").unwrap();
        assert!(v6.matches(&url("http://[::1]:5000/x")));
    }

    /// (upstream, token_realms, realm, allowed)
    #[test]
    fn anonymous_realms_on_public_hosts() {
        let t = trust("https://registry.gitlab.example", &[], &[]);
        for (realm, ok) in [
            ("https://gitlab.example/jwt/auth", true),
            ("https://93.184.216.34/token", true),
            ("http://gitlab.example/jwt/auth", false),
            ("https://10.0.0.1/token", false),
            ("https://[::1]/token", false),
            ("https://169.254.169.254/latest", false),
        ] {
            assert_eq!(t.anonymous_realm(&url(realm)).is_ok(), ok, "{realm}");
        }
    }

    #[test]
    fn token_realms() {
        let table: &[(&str, &[&str], &str, bool)] = &[
            // Own origin.
            ("https://ghcr.io", &[], "https://ghcr.io/token", true),
            ("https://ghcr.io", &[], "https://ghcr.io:443/token", true),
            (
                "http://127.0.0.1:5000",
                &[],
                "http://127.0.0.1:5000/token",
                true,
            ),
            (
                "http://localhost:5000",
                &[],
                "http://localhost:5000/token",
                true,
            ),
            ("http://[::1]:5000", &[], "http://[::1]:5000/token", true),
            // Plain HTTP off loopback, even on the own origin: refused.
            (
                "http://10.0.0.5:5000",
                &[],
                "http://10.0.0.5:5000/token",
                false,
            ),
            // Another port or scheme is another origin.
            (
                "http://127.0.0.1:5000",
                &[],
                "http://127.0.0.1:5001/token",
                false,
            ),
            ("https://ghcr.io", &[], "http://ghcr.io/token", false),
            ("https://ghcr.io", &[], "https://ghcr.io:8443/token", false),
            // Another host: only when listed, and only over HTTPS.
            (
                "https://registry-1.docker.io",
                &[],
                "https://auth.docker.io/token",
                false,
            ),
            (
                "https://registry-1.docker.io",
                &["auth.docker.io"],
                "https://auth.docker.io/token",
                true,
            ),
            (
                "https://registry-1.docker.io",
                &["auth.docker.io"],
                "http://auth.docker.io/token",
                false,
            ),
            (
                "https://registry-1.docker.io",
                &["auth.docker.io"],
                "https://auth.docker.io:444/token",
                false,
            ),
            (
                "https://r.example",
                &["auth.example:8443"],
                "https://auth.example:8443/t",
                true,
            ),
            (
                "http://127.0.0.1:5000",
                &["127.0.0.1:5001"],
                "https://127.0.0.1:5001/token",
                true,
            ),
            (
                "http://127.0.0.1:5000",
                &["127.0.0.1:5001"],
                "http://127.0.0.1:5001/token",
                false,
            ),
            (
                "https://ghcr.io",
                &["ghcr.io"],
                "ftp://ghcr.io/token",
                false,
            ),
        ];
        for (upstream, realms, realm, allowed) in table {
            let got = trust(upstream, realms, &[]).realm(&url(realm));
            assert_eq!(
                got.is_ok(),
                *allowed,
                "{upstream} {realms:?} {realm}: {got:?}"
            );
        }
        let e = trust("https://r.example", &[], &[])
            .realm(&url("https://user:pw@evil.example:444/token?secret=1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("https://evil.example:444/token") && e.contains("token_realms"),
            "{e}"
        );
        assert!(!e.contains("pw") && !e.contains("secret"), "{e}");
    }

    /// (upstream, redirect_hosts, from, to, outcome)
    #[test]
    fn redirects() {
        use Hop::*;
        type Row<'a> = (&'a str, &'a [&'a str], &'a str, &'a str, Option<Hop>);
        let table: &[Row] = &[
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://r.io/other",
                Some(Origin),
            ),
            (
                "http://127.0.0.1:5000",
                &[],
                "http://127.0.0.1:5000/a",
                "/b",
                Some(Origin),
            ),
            // CDNs by name: public only, checked when resolved.
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://cdn.example.com/b",
                Some(Public),
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://93.184.216.34/b",
                Some(Public),
            ),
            // Address literals that are not public.
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://127.0.0.1/b",
                None,
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://10.1.2.3/b",
                None,
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://169.254.169.254/b",
                None,
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://[::1]/b",
                None,
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://[::ffff:10.0.0.1]/b",
                None,
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/v2/x",
                "https://[fd00::1]/b",
                None,
            ),
            (
                "http://127.0.0.1:5000",
                &[],
                "http://127.0.0.1:5000/a",
                "http://127.0.0.1:5001/b",
                None,
            ),
            (
                "http://127.0.0.1:5000",
                &[],
                "http://127.0.0.1:5000/a",
                "http://127.0.0.2:5000/b",
                None,
            ),
            // Listed hosts may be anything, downgrade included.
            (
                "http://127.0.0.1:5000",
                &["127.0.0.2:6000"],
                "http://127.0.0.1:5000/a",
                "http://127.0.0.2:6000/b",
                Some(Listed),
            ),
            (
                "http://127.0.0.1:5000",
                &["127.0.0.2:6000"],
                "http://127.0.0.1:5000/a",
                "http://127.0.0.2:6001/b",
                None,
            ),
            (
                "https://r.io",
                &["cdn.corp"],
                "https://r.io/a",
                "http://cdn.corp/b",
                Some(Listed),
            ),
            // Downgrades.
            (
                "https://r.io",
                &[],
                "https://r.io/a",
                "http://cdn.example.com/b",
                None,
            ),
            ("https://r.io", &[], "https://r.io/a", "http://r.io/b", None),
            (
                "http://r.io",
                &[],
                "http://r.io/a",
                "http://cdn.example.com/b",
                Some(Public),
            ),
            (
                "https://r.io",
                &[],
                "https://r.io/a",
                "file:///etc/passwd",
                None,
            ),
        ];
        for (upstream, hosts, from, to, want) in table {
            let from = url(from);
            let to = from.join(to).unwrap();
            let got = trust(upstream, &[], hosts).redirect(&from, &to);
            assert_eq!(
                got.clone().ok(),
                *want,
                "{upstream} {hosts:?} {to}: {got:?}"
            );
        }
    }

    #[test]
    fn public_addresses() {
        let table: &[(&str, bool)] = &[
            ("93.184.216.34", true),
            ("8.8.8.8", true),
            ("100.63.255.255", true),
            ("100.128.0.0", true),
            ("172.32.0.1", true),
            ("0.0.0.0", false),
            ("127.0.0.1", false),
            ("127.0.0.2", false),
            ("10.0.0.1", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("240.0.0.1", false),
            ("2606:4700::1111", true),
            ("::ffff:8.8.8.8", true),
            ("::", false),
            ("::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("fc00::1", false),
            ("fd12:3456::1", false),
            ("ff02::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:192.168.0.1", false),
            ("192.0.0.8", false),
            ("192.0.2.1", true),
            ("198.18.0.1", false),
            ("198.19.255.255", false),
            ("198.20.0.1", true),
            ("2002:c0a8:0101::1", false),
            ("2002:0808:0808::1", true),
            ("64:ff9b:1::a00:1", false),
            ("::ffff:169.254.1.1", false),
            ("::10.0.0.1", false),
            ("64:ff9b::10.0.0.1", false),
            ("64:ff9b::8.8.8.8", true),
        ];
        for (a, public) in table {
            assert_eq!(is_public(a.parse().unwrap()), *public, "{a}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        use tower_service::Service;
        let name = "localhost".parse().unwrap();
        let e = PublicResolver.call(name).await.unwrap_err();
        assert!(matches!(e, Refusal::NotPublic { .. }), "{e}");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e.clone());
        assert_eq!(refusal_in(&*boxed), Some(&e));
    }
}

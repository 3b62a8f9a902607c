//! Entry points for the fuzz targets (`tests/fuzz`, cargo-fuzz on a
//! nightly toolchain) and for the property tests that replay and extend
//! their corpora on stable (`tests/fuzz_corpus.rs`). Each takes arbitrary
//! bytes, feeds them to one parser that sees client or upstream input, and
//! panics when an invariant breaks (not just on a crash): parsed names
//! print back to what was parsed, ranges stay inside the blob, a token the
//! fuzzer made up is never accepted, and so on.

use crate::auth::{credentials, scope::Scope, token::Tokens};
use crate::oci::{manifest, ApiRoute, Digest, Reference, RepoName, Tag};
use crate::reply::content::{parse_range, Range};
use std::str::FromStr;
use std::time::Duration;

/// One target: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: what `tests/fuzz/fuzz_targets/*.rs` call.
pub const TARGETS: &[(&str, Target)] = &[
    ("route", route),
    ("names", names),
    ("manifest", manifest_parse),
    ("challenge", challenge),
    ("range", range),
    ("authorization", authorization),
    ("token", token),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A request path into a route: every name in a route is a valid name.
pub fn route(data: &[u8]) {
    let Some(path) = text(data) else { return };
    if let Ok(r) = ApiRoute::parse(path) {
        if let Some(name) = r.repo() {
            assert_eq!(RepoName::parse(name.as_str()).as_ref(), Ok(name));
            assert!(!name.as_str().split('/').any(|c| c == ".." || c == "."));
        }
    }
}

/// Names, tags, digests, references and token scopes: what parses prints
/// back to the same text, and parses again to the same value.
pub fn names(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
    }
    if let Ok(t) = Tag::parse(s) {
        assert_eq!(t.as_str(), s);
        assert!(t.as_str().len() <= 128);
    }
    if let Ok(d) = Digest::from_str(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(Digest::from_str(&d.to_string()).as_ref(), Ok(&d));
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(Some(Scope::Repository { name, actions })) = Scope::parse(s) {
        assert_eq!(RepoName::parse(name.as_str()).as_ref(), Ok(&name));
        let mut sorted = actions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, actions);
    }
}

/// A manifest body (the first byte picks the declared content type):
/// parsing never panics, and what it reports is consistent.
pub fn manifest_parse(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let declared = match first % 4 {
        0 => None,
        1 => Some(manifest::OCI_MANIFEST),
        2 => Some(manifest::OCI_INDEX),
        _ => Some(manifest::DOCKER_MANIFEST),
    };
    if let Ok(m) = manifest::parse(body, declared) {
        assert!(!m.media_type.is_empty());
        if let Some(d) = declared {
            assert_eq!(m.media_type, d);
        }
    }
}

/// An upstream's `WWW-Authenticate` header.
pub fn challenge(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Some(c) = crate::upstream::auth::parse_challenge(s) {
        assert!(!c.scheme.is_empty());
        assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
    }
}

/// A `Range` header against a blob size (the first 8 bytes): a part is
/// always inside the blob.
pub fn range(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (size, header) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap_or_default()) >> (size[0] % 64);
    let Some(h) = text(header) else { return };
    if let Range::Part(s, e) = parse_range(Some(h), size) {
        assert!(s <= e && e < size, "{h:?} on {size}: {s}-{e}");
    }
}

/// An `Authorization` header: bounded, and Basic credentials always have
/// a user name without a colon.
pub fn authorization(data: &[u8]) {
    match credentials::parse(data) {
        Ok(credentials::Credentials::Basic { user, .. }) => {
            assert!(!user.is_empty() && !user.contains(':'));
            assert!(data.len() <= credentials::MAX_AUTHORIZATION);
        }
        Ok(credentials::Credentials::Bearer(t)) => {
            assert!(!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()));
        }
        Err(_) => {}
    }
}

/// A bearer token: one the fuzzer made up is never accepted.
pub fn token(data: &[u8]) {
    thread_local! {
        static TOKENS: Tokens = Tokens::new(&[0x5a; 32], "wharf", Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let Some(s) = text(data) else { return };
    TOKENS.with(|t| assert!(t.verify(s).is_err(), "accepted a forged token {s:?}"));
}

//! How the index's records are written in sled (layout 2), and their text
//! form (layout 1): what a bucket holds under `index/`, and what data
//! directories written before layout 2 hold. Layout 2 writes a digest as
//! its raw hash after one algorithm byte (33 bytes for sha256 instead of
//! 71 characters), a manifest record in 18 bytes plus its subject instead
//! of JSON, and a blob's seal and last access as one record. Keys keep
//! their prefixes and their `\0` between parts; text parts (repository,
//! upstream, tag) stay text, so listings keep their lexical order, and
//! digests of one algorithm keep their order (the hash's bytes sort as
//! its hex does).
//!
//! Every key shape and value encoding lives here: the index builds keys
//! and reads values through these functions, the journal turns durable
//! records into their text form on the way to a bucket and back, and the
//! migration turns a layout 1 index into this one.

use super::ManifestMeta;
use crate::oci::digest::Algorithm;
use crate::oci::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_ARTIFACT, OCI_INDEX, OCI_MANIFEST};
use crate::oci::Digest;

/// The key of the layout marker, and the layout this build writes.
pub(super) const LAYOUT_KEY: &[u8] = b"V/layout";
pub(super) const LAYOUT: &[u8] = b"2";

/// The algorithm byte of a digest in a key or value. Part of the format:
/// never renumber.
fn algorithm_byte(a: Algorithm) -> u8 {
    match a {
        Algorithm::Sha256 => 1,
        Algorithm::Sha512 => 2,
    }
}

fn algorithm_of(b: u8) -> Option<Algorithm> {
    match b {
        1 => Some(Algorithm::Sha256),
        2 => Some(Algorithm::Sha512),
        _ => None,
    }
}

fn hash_len(a: Algorithm) -> usize {
    match a {
        Algorithm::Sha256 => 32,
        Algorithm::Sha512 => 64,
    }
}

/// Appends `d`'s binary form.
fn put_digest(out: &mut Vec<u8>, d: &Digest) {
    out.push(algorithm_byte(d.algorithm()));
    out.extend_from_slice(&d.hash());
}

/// The binary form of `d` (a tag's value).
pub(super) fn digest_bytes(d: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(65);
    put_digest(&mut out, d);
    out
}

/// Reads a binary digest at the start of `b`; returns it and what follows.
fn take_digest(b: &[u8]) -> Option<(Digest, &[u8])> {
    let (&first, rest) = b.split_first()?;
    let a = algorithm_of(first)?;
    let n = hash_len(a);
    let hash = rest.get(..n)?;
    Some((Digest::from_hash(a, hash)?, &rest[n..]))
}

/// A value that is exactly one binary digest (a tag's).
pub(super) fn read_digest(b: &[u8]) -> Option<Digest> {
    match take_digest(b)? {
        (d, []) => Some(d),
        _ => None,
    }
}

/// One part of a key.
#[derive(Clone, Copy)]
pub(super) enum Part<'a> {
    Text(&'a str),
    Digest(&'a Digest),
}

/// `prefix` and `parts`, a `\0` between parts.
pub(super) fn key(prefix: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 96);
    k.extend_from_slice(prefix.as_bytes());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        match p {
            Part::Text(s) => k.extend_from_slice(s.as_bytes()),
            Part::Digest(d) => put_digest(&mut k, d),
        }
    }
    k
}

/// The prefix under which every key starting with `parts` lives (the
/// parts and a separator).
pub(super) fn under(prefix: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut k = key(prefix, parts);
    k.push(0);
    k
}

/// `p/<repo>`: the repository holds a manifest.
pub(super) fn repo(repo: &str) -> Vec<u8> {
    key("p/", &[Part::Text(repo)])
}

/// `l/<repo>\0<digest>`: a blob or manifest linked into a repository.
pub(super) fn link(repo: &str, d: &Digest) -> Vec<u8> {
    key("l/", &[Part::Text(repo), Part::Digest(d)])
}

/// `m/<repo>\0<digest>`: a local manifest's record.
pub(super) fn manifest(repo: &str, d: &Digest) -> Vec<u8> {
    key("m/", &[Part::Text(repo), Part::Digest(d)])
}

/// `t/<repo>\0<tag>`: a local tag.
pub(super) fn tag(repo: &str, tag: &str) -> Vec<u8> {
    key("t/", &[Part::Text(repo), Part::Text(tag)])
}

/// `r/<repo>\0<subject>\0<digest>`: a referrer's descriptor.
pub(super) fn referrer(repo: &str, subject: &Digest, d: &Digest) -> Vec<u8> {
    key(
        "r/",
        &[Part::Text(repo), Part::Digest(subject), Part::Digest(d)],
    )
}

/// `u/<session>`: an upload session.
pub(super) fn upload(id: &str) -> Vec<u8> {
    key("u/", &[Part::Text(id)])
}

/// `B/<upstream>\0<digest>`: a cached mirrored blob.
pub(super) fn mirror_blob(upstream: &str, d: &Digest) -> Vec<u8> {
    key("B/", &[Part::Text(upstream), Part::Digest(d)])
}

/// `M/<upstream>\0<digest>`: a cached mirrored manifest.
pub(super) fn mirror_manifest(upstream: &str, d: &Digest) -> Vec<u8> {
    key("M/", &[Part::Text(upstream), Part::Digest(d)])
}

/// `T/<upstream>\0<repo>\0<tag>`: a mirrored tag's last known digest.
pub(super) fn mirror_tag(upstream: &str, repo: &str, tag: &str) -> Vec<u8> {
    key(
        "T/",
        &[Part::Text(upstream), Part::Text(repo), Part::Text(tag)],
    )
}

/// `T/<upstream>\0<repo>\0`: the prefix of a mirrored repository's tags.
pub(super) fn mirror_tags_of(upstream: &str, repo: &str) -> Vec<u8> {
    under("T/", &[Part::Text(upstream), Part::Text(repo)])
}

/// `s/<digest>`: a blob file's [`FileRecord`].
pub(super) fn file(d: &Digest) -> Vec<u8> {
    key("s/", &[Part::Digest(d)])
}

/// The kinds of parts in each durable record's key, after its prefix.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Digest,
}

fn shape(prefix: &[u8]) -> Option<&'static [Kind]> {
    use Kind::{Digest as D, Text as T};
    Some(match prefix {
        b"p/" => &[T],
        b"l/" | b"m/" | b"B/" | b"M/" => &[T, D],
        b"r/" => &[T, D, D],
        b"t/" => &[T, T],
        b"T/" => &[T, T, T],
        b"s/" => &[D],
        _ => return None,
    })
}

/// A text part runs to the next `\0` (text never holds one), or to the
/// end when it is the last part.
fn take_text(b: &[u8], last: bool) -> Option<(&str, &[u8])> {
    let end = if last {
        b.len()
    } else {
        b.iter().position(|&c| c == 0)?
    };
    Some((std::str::from_utf8(&b[..end]).ok()?, &b[end..]))
}

/// An owned key part read back.
pub(super) enum Parsed {
    Text(String),
    Digest(Digest),
}

impl Parsed {
    pub(super) fn digest(&self) -> Option<&Digest> {
        match self {
            Parsed::Digest(d) => Some(d),
            Parsed::Text(_) => None,
        }
    }
}

/// The parts of layout 2 key `k`, if it is a well-formed record key.
pub(super) fn parse_key(k: &[u8]) -> Option<Vec<Parsed>> {
    let kinds = shape(k.get(..2)?)?;
    let mut rest = &k[2..];
    let mut out = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            rest = rest.strip_prefix(&[0])?;
        }
        match kind {
            Kind::Text => {
                let (s, r) = take_text(rest, i + 1 == kinds.len())?;
                out.push(Parsed::Text(s.to_string()));
                rest = r;
            }
            Kind::Digest => {
                let (d, r) = take_digest(rest)?;
                out.push(Parsed::Digest(d));
                rest = r;
            }
        }
    }
    rest.is_empty().then_some(out)
}

/// The `<text>\0<digest>` key of `l/ m/ B/ M/` records: (name, digest).
pub(super) fn name_and_digest(k: &[u8]) -> Option<(String, Digest)> {
    let mut parts = parse_key(k)?.into_iter();
    match (parts.next()?, parts.next()?) {
        (Parsed::Text(n), Parsed::Digest(d)) => Some((n, d)),
        _ => None,
    }
}

/// Media types written as one byte in a manifest record. Part of the
/// format: append only, never renumber.
const MEDIA_TYPES: [&str; 5] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    OCI_ARTIFACT,
];

/// A manifest record: the media type's number (0: spelled out at the
/// end), size and time stored (8 bytes each, big-endian), the subject
/// (0, or its binary digest), then the media type when spelled out.
pub(super) fn encode_meta(m: &ManifestMeta) -> Vec<u8> {
    let code = MEDIA_TYPES
        .iter()
        .position(|t| *t == m.media_type)
        .map_or(0, |i| i as u8 + 1);
    let mut out = Vec::with_capacity(18 + 65);
    out.push(code);
    out.extend_from_slice(&m.size.to_be_bytes());
    out.extend_from_slice(&m.stored.to_be_bytes());
    match &m.subject {
        Some(s) => put_digest(&mut out, s),
        None => out.push(0),
    }
    if code == 0 {
        out.extend_from_slice(m.media_type.as_bytes());
    }
    out
}

pub(super) fn decode_meta(b: &[u8]) -> Option<ManifestMeta> {
    let (&code, rest) = b.split_first()?;
    let size = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let stored = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    let rest = rest.get(16..)?;
    let (subject, rest) = match rest.split_first()? {
        (0, r) => (None, r),
        _ => {
            let (d, r) = take_digest(rest)?;
            (Some(d), r)
        }
    };
    let media_type = match code {
        0 => std::str::from_utf8(rest).ok()?.to_string(),
        c if rest.is_empty() => MEDIA_TYPES.get(usize::from(c) - 1)?.to_string(),
        _ => return None,
    };
    Some(ManifestMeta {
        media_type,
        size,
        subject,
        stored,
    })
}

/// What the index keeps about one blob file (`s/<digest>`): when it was
/// last used, unix milliseconds (0: not recorded), and its seal (empty:
/// none). Written as the time (8 bytes, big-endian) and the seal's text.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct FileRecord {
    pub access: u64,
    pub seal: String,
}

impl FileRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.seal.len());
        out.extend_from_slice(&self.access.to_be_bytes());
        out.extend_from_slice(self.seal.as_bytes());
        out
    }

    pub(super) fn decode(b: &[u8]) -> Option<FileRecord> {
        Some(FileRecord {
            access: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            seal: std::str::from_utf8(&b[8..]).ok()?.to_string(),
        })
    }

    /// Nothing left to keep: the record goes.
    pub(super) fn is_empty(&self) -> bool {
        self.access == 0 && self.seal.is_empty()
    }
}

/// The text form (layout 1) of durable record key `k`.
pub(in crate::store) fn text_key(k: &[u8]) -> Option<Vec<u8>> {
    let prefix = k.get(..2)?;
    let mut out = prefix.to_vec();
    for (i, p) in parse_key(k)?.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        match p {
            Parsed::Text(s) => out.extend_from_slice(s.as_bytes()),
            Parsed::Digest(d) => out.extend_from_slice(d.to_string().as_bytes()),
        }
    }
    Some(out)
}

/// The layout 2 key of text (layout 1) key `k`.
pub(in crate::store) fn binary_key(k: &[u8]) -> Option<Vec<u8>> {
    let prefix = k.get(..2)?;
    let kinds = shape(prefix)?;
    let text = std::str::from_utf8(&k[2..]).ok()?;
    let parts: Vec<&str> = text.splitn(kinds.len(), '\0').collect();
    if parts.len() != kinds.len() {
        return None;
    }
    let mut digests = Vec::new();
    for (p, kind) in parts.iter().zip(kinds) {
        if *kind == Kind::Digest {
            digests.push(p.parse::<Digest>().ok()?);
        }
    }
    let mut ds = digests.iter();
    let mut typed = Vec::with_capacity(parts.len());
    for (p, kind) in parts.iter().zip(kinds) {
        typed.push(match kind {
            Kind::Text => Part::Text(p),
            Kind::Digest => Part::Digest(ds.next()?),
        });
    }
    Some(key(std::str::from_utf8(prefix).ok()?, &typed))
}

/// The text form (layout 1) of a durable record: what a bucket holds.
pub(in crate::store) fn to_text(k: &[u8], v: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let tk = text_key(k)?;
    let tv = match &k[..2] {
        b"t/" | b"T/" => read_digest(v)?.to_string().into_bytes(),
        b"m/" | b"M/" => serde_json::to_vec(&decode_meta(v)?).ok()?,
        _ => v.to_vec(),
    };
    Some((tk, tv))
}

/// A durable record from its text form (layout 1).
pub(in crate::store) fn from_text(k: &[u8], v: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let bk = binary_key(k)?;
    let bv = match &k[..2] {
        b"t/" | b"T/" => digest_bytes(&std::str::from_utf8(v).ok()?.parse().ok()?),
        b"m/" | b"M/" => encode_meta(&serde_json::from_slice(v).ok()?),
        _ => v.to_vec(),
    };
    Some((bk, bv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, x)
    }

    #[test]
    fn durable_records_round_trip_through_their_text_form() {
        let (a, b) = (d(b"a"), Digest::of(Algorithm::Sha512, b"b"));
        let meta = |media_type: &str, subject: Option<Digest>| ManifestMeta {
            media_type: media_type.into(),
            size: 472,
            subject,
            stored: 1_796_080_525,
        };
        let records: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (key("p/", &[Part::Text("lib/x")]), vec![]),
            (key("l/", &[Part::Text("lib/x"), Part::Digest(&a)]), vec![]),
            (
                key("m/", &[Part::Text("lib/x"), Part::Digest(&b)]),
                encode_meta(&meta(OCI_MANIFEST, Some(a.clone()))),
            ),
            (
                key("M/", &[Part::Text("127.0.0.1:5000"), Part::Digest(&a)]),
                encode_meta(&meta("application/x.custom+json", None)),
            ),
            (
                key("t/", &[Part::Text("lib/x"), Part::Text("v1.0")]),
                digest_bytes(&b),
            ),
            (
                key(
                    "T/",
                    &[
                        Part::Text("docker.io"),
                        Part::Text("library/a"),
                        Part::Text("3"),
                    ],
                ),
                digest_bytes(&a),
            ),
            (
                key(
                    "r/",
                    &[Part::Text("lib/x"), Part::Digest(&a), Part::Digest(&b)],
                ),
                br#"{"mediaType":"m"}"#.to_vec(),
            ),
            (
                key("B/", &[Part::Text("docker.io"), Part::Digest(&b)]),
                b"1234".to_vec(),
            ),
        ];
        for (k, v) in records {
            let (tk, tv) = to_text(&k, &v).unwrap();
            assert!(tk.len() >= k.len(), "the binary key is never longer");
            assert_eq!(from_text(&tk, &tv), Some((k.clone(), v.clone())));
            assert_eq!(binary_key(&tk), Some(k.clone()));
        }
        // The text form is layout 1's, byte for byte.
        let k = key("l/", &[Part::Text("lib/x"), Part::Digest(&a)]);
        assert_eq!(text_key(&k).unwrap(), format!("l/lib/x\0{a}").into_bytes());
        let (_, tv) = to_text(
            &key("t/", &[Part::Text("r"), Part::Text("t")]),
            &digest_bytes(&a),
        )
        .unwrap();
        assert_eq!(tv, a.to_string().into_bytes());
        let m = meta(OCI_INDEX, None);
        let (_, tv) = to_text(
            &key("m/", &[Part::Text("r"), Part::Digest(&a)]),
            &encode_meta(&m),
        )
        .unwrap();
        assert_eq!(serde_json::from_slice::<ManifestMeta>(&tv).unwrap(), m);
    }

    #[test]
    fn malformed_keys_and_values_are_refused() {
        let a = d(b"a");
        assert!(binary_key(b"l/repo\0sha256:zz").is_none());
        assert!(binary_key(b"l/repo").is_none());
        assert!(binary_key(b"x/repo\0a").is_none());
        let mut k = key("l/", &[Part::Text("r"), Part::Digest(&a)]);
        k.pop();
        assert!(parse_key(&k).is_none(), "a short hash");
        k.extend_from_slice(&[7, 7]);
        assert!(parse_key(&k).is_none(), "bytes after the last part");
        assert!(decode_meta(&[1, 0]).is_none());
        assert!(
            decode_meta(&[9; 18]).is_none(),
            "an unknown media type number"
        );
        assert!(read_digest(&[3; 33]).is_none());
        assert!(FileRecord::decode(&[0; 7]).is_none());
    }

    #[test]
    fn the_format_is_pinned() {
        let a = d(b"a");
        let m = ManifestMeta {
            media_type: OCI_MANIFEST.into(),
            size: 1,
            subject: None,
            stored: 2,
        };
        assert_eq!(
            encode_meta(&m),
            [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0]
        );
        assert_eq!(decode_meta(&encode_meta(&m)), Some(m));
        assert_eq!(digest_bytes(&a)[0], 1);
        assert_eq!(digest_bytes(&a).len(), 33);
        let f = FileRecord {
            access: 5,
            seal: "1.2:3".into(),
        };
        assert_eq!(f.encode(), b"\0\0\0\0\0\0\0\x051.2:3");
        assert_eq!(FileRecord::decode(&f.encode()), Some(f));
    }

    #[test]
    fn binary_digests_sort_as_their_text_does() {
        let mut ds: Vec<Digest> = (0..50u8).map(|i| d(&[i])).collect();
        ds.push(Digest::of(Algorithm::Sha512, b"x"));
        let mut by_text = ds.clone();
        by_text.sort_by_key(|d| d.to_string());
        let mut by_bytes = ds;
        by_bytes.sort_by_key(digest_bytes);
        assert_eq!(by_text, by_bytes);
    }
}

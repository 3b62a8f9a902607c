//! The OCI 1.1 referrers API of local repositories,
//! `GET /v2/<name>/referrers/<digest>[?artifactType=&n=&last=]`: the
//! descriptors of the manifests whose subject is `<digest>`, in digest
//! order, with those listed in a client-maintained `<alg>-<hex>` fallback
//! index merged in. Answers are paged: at most `n` descriptors (1000 by
//! default, 10,000 at most) and [`PAGE_BYTES`] per page, with a `Link` to
//! the next page keyed on the last referrer digest the page covered. The
//! index scan and the JSON are built on the blocking pool.

use crate::body::Body;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::manifest::{Descriptor, MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::oci::{Digest, RepoName, Tag};
use crate::reply;
use crate::reply::page;
use crate::store::Store;
use http::{header, request::Parts, Response};

/// Descriptors on a page without `n`, and the most one may hold (a larger
/// `n` is cut to it; the `Link` leads on).
pub const PAGE: page::Limits = page::Limits {
    default: 1000,
    max: 10_000,
    refuse_over_max: false,
};

/// Most bytes in one answer: oras-go (and so notation) reads at most
/// 4 MiB of one. A single descriptor larger than this (its annotations
/// come from a manifest of up to 4 MiB) is served alone on its page.
pub const PAGE_BYTES: usize = 4 << 20;

/// Most referrers one request reads, counting those the `artifactType`
/// filter passes over: a filter matching nothing cannot make one request
/// read everything. A page cut short by it is empty or short, and its
/// `Link` leads on.
pub const SCAN_BUDGET: usize = 20_000;

/// One page of a referrers answer.
#[derive(Debug)]
pub struct Page {
    /// The OCI image index, serialised.
    pub body: Vec<u8>,
    /// The digest to continue after, when more may remain.
    pub next: Option<String>,
}

/// Builds one page from `descs` (in digest order, all after the client's
/// `last`): those matching `filter`, at most `n` of them and at most
/// `max_bytes` in all (but never none for size alone), reading at most
/// `budget` descriptors.
pub fn build_page(
    descs: impl Iterator<Item = Result<Descriptor>>,
    filter: Option<&str>,
    n: usize,
    max_bytes: usize,
    budget: usize,
) -> Result<Page> {
    let mut body =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":["#).into_bytes();
    const TAIL: &[u8] = b"]}";
    let mut count = 0;
    // The last descriptor this page covered (listed or filtered out).
    let mut covered: Option<Digest> = None;
    let mut more = false;
    if n > 0 {
        for (read, d) in descs.enumerate() {
            if read >= budget {
                more = true;
                break;
            }
            let d = d?;
            if filter.is_some_and(|t| d.artifact_type.as_deref() != Some(t)) {
                covered = Some(d.digest);
                continue;
            }
            let item = serde_json::to_vec(&d)
                .map_err(|e| Error::storage("encoding a referrer descriptor", e))?;
            let full =
                count == n || (count > 0 && body.len() + 1 + item.len() + TAIL.len() > max_bytes);
            if full {
                more = true;
                break;
            }
            if count > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&item);
            count += 1;
            covered = Some(d.digest);
        }
    }
    body.extend_from_slice(TAIL);
    Ok(Page {
        body,
        next: covered.filter(|_| more).map(|d| d.to_string()),
    })
}

/// Merges two digest-ordered runs of descriptors into one; a digest in
/// both is listed once, as `a` has it.
fn merge(
    a: impl Iterator<Item = Result<Descriptor>>,
    b: impl Iterator<Item = Descriptor>,
) -> impl Iterator<Item = Result<Descriptor>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || {
        let ka = match a.peek() {
            Some(Ok(d)) => Some(d.digest.to_string()),
            Some(Err(_)) => return a.next(),
            None => None,
        };
        let kb = b.peek().map(|d| d.digest.to_string());
        match (ka, kb) {
            (None, None) => None,
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next().map(Ok),
            (Some(x), Some(y)) if y < x => b.next().map(Ok),
            (Some(x), Some(y)) => {
                if x == y {
                    b.next();
                }
                a.next()
            }
        }
    })
}

/// The manifests an index lists (a fallback index's bytes), in digest
/// order, once each, after `last`. Unparseable bytes list nothing.
fn fallback_descriptors(bytes: &[u8], last: Option<&Digest>) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Idx {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let mut list = serde_json::from_slice::<Idx>(bytes)
        .map(|i| i.manifests)
        .unwrap_or_default();
    list.sort_by_cached_key(|d| d.digest.to_string());
    list.dedup_by(|x, y| x.digest == y.digest);
    if let Some(l) = last {
        list.retain(|d| &d.digest > l);
    }
    list
}

/// The bytes of the index stored under the fallback tag `<alg>-<hex>` of
/// `subject`, which older clients maintain themselves, if there is one.
async fn fallback_index(
    store: &Store,
    name: &RepoName,
    subject: &Digest,
) -> Result<Option<Vec<u8>>> {
    let Ok(tag) = Tag::parse(&format!(
        "{}-{}",
        subject.algorithm().as_str(),
        subject.hex()
    )) else {
        return Ok(None);
    };
    let Some(d) = store.index().tag(name, &tag)? else {
        return Ok(None);
    };
    let Some(meta) = store.index().manifest(name, &d)? else {
        return Ok(None);
    };
    if meta.media_type != OCI_INDEX || meta.size > MAX_MANIFEST_BYTES as u64 {
        return Ok(None);
    }
    // Through the seal check like every served read: a file changed
    // behind Wharf's back is re-hashed, and a corrupt one lists nothing.
    let Some(blob) = store.open_blob(&d).await? else {
        return Ok(None);
    };
    Ok(Some(blob.read_all(meta.size).await?))
}

/// GET `/v2/<name>/referrers/<digest>`.
pub async fn get(
    store: &Store,
    parts: &Parts,
    name: &RepoName,
    subject: &Digest,
) -> Result<Response<Body>> {
    let q = reply::query(&parts.uri);
    let n = page::size(&q, PAGE)?;
    let last = match reply::query_one(&q, "last") {
        Some(l) => Some(l.parse::<Digest>().map_err(|e| {
            Error::oci(
                ErrorCode::DigestInvalid,
                format!("last must be a referrer digest: {e}"),
            )
        })?),
        None => None,
    };
    let filter = reply::query_one(&q, "artifactType").map(str::to_string);
    let fallback = fallback_index(store, name, subject).await?;
    let page = {
        let (name, subject) = (name.clone(), subject.clone());
        let (last, filter) = (last.clone(), filter.clone());
        store
            .index()
            .blocking(move |index| {
                let extra = fallback
                    .map(|b| fallback_descriptors(&b, last.as_ref()))
                    .unwrap_or_default();
                let stored = index.referrers_after(&name, &subject, last.as_ref());
                build_page(
                    merge(stored, extra.into_iter()),
                    filter.as_deref(),
                    n,
                    PAGE_BYTES,
                    SCAN_BUDGET,
                )
            })
            .await?
    };
    let mut r = reply::json_bytes(page.body, OCI_INDEX);
    if filter.is_some() {
        reply::set(&mut r, "oci-filters-applied", "artifactType");
    }
    if let Some(next) = page.next {
        let keep: Vec<(&str, &str)> = filter
            .as_deref()
            .map(|t| ("artifactType", t))
            .into_iter()
            .collect();
        let link = page::next_link(&format!("/v2/{name}/referrers/{subject}"), &next, n, &keep);
        reply::set(&mut r, header::LINK, &link);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Algorithm;
    use serde_json::Value;

    fn desc(i: u32, artifact_type: &str, note_len: usize) -> Descriptor {
        let mut ann = serde_json::Map::new();
        ann.insert("note".into(), Value::String("x".repeat(note_len)));
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(Algorithm::Sha256, &i.to_be_bytes()),
            size: 100,
            artifact_type: Some(artifact_type.into()),
            annotations: Some(ann),
            urls: None,
        }
    }

    /// `count` descriptors in digest order, every third one an SBOM.
    fn sorted(count: u32) -> Vec<Descriptor> {
        let mut v: Vec<_> = (0..count)
            .map(|i| desc(i, if i % 3 == 0 { "sbom" } else { "sig" }, 10))
            .collect();
        v.sort_by_key(|d| d.digest.to_string());
        v
    }

    fn digests(p: &Page) -> Vec<String> {
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_INDEX);
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect()
    }

    /// Follows pages over `all` the way a client follows `Link`.
    fn walk(
        all: &[Descriptor],
        filter: Option<&str>,
        n: usize,
        bytes: usize,
        budget: usize,
    ) -> (Vec<String>, usize) {
        let mut last: Option<String> = None;
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let it = all
                .iter()
                .filter(|d| {
                    last.as_deref()
                        .is_none_or(|l| d.digest.to_string().as_str() > l)
                })
                .cloned()
                .map(Ok);
            let p = build_page(it, filter, n, bytes, budget).unwrap();
            assert!(p.body.len() <= bytes, "page of {} bytes", p.body.len());
            out.extend(digests(&p));
            pages += 1;
            assert!(pages < 10_000, "paging never ends");
            match p.next {
                Some(l) => last = Some(l),
                None => return (out, pages),
            }
        }
    }

    #[test]
    fn pages_cover_everything_once_in_order() {
        let all = sorted(250);
        let want: Vec<String> = all.iter().map(|d| d.digest.to_string()).collect();
        for n in [1, 7, 100, 250, 1000] {
            let (got, pages) = walk(&all, None, n, PAGE_BYTES, SCAN_BUDGET);
            assert_eq!(got, want, "n={n}");
            assert_eq!(pages, 250usize.div_ceil(n).max(1), "n={n}");
        }
    }

    #[test]
    fn the_filter_holds_across_pages_and_the_budget() {
        let all = sorted(250);
        let want: Vec<String> = all
            .iter()
            .filter(|d| d.artifact_type.as_deref() == Some("sbom"))
            .map(|d| d.digest.to_string())
            .collect();
        for (n, budget) in [
            (5, SCAN_BUDGET),
            (1000, SCAN_BUDGET),
            (5, 7),
            (1000, 1),
            (3, 2),
        ] {
            let (got, _) = walk(&all, Some("sbom"), n, PAGE_BYTES, budget);
            assert_eq!(got, want, "n={n} budget={budget}");
        }
        let (got, pages) = walk(&all, Some("nothing"), 10, PAGE_BYTES, 100);
        assert!(got.is_empty());
        assert_eq!(pages, 3, "empty pages lead on until the budget covered all");
    }

    #[test]
    fn pages_stop_at_the_byte_cap_but_never_stall() {
        let mut all: Vec<_> = (0..40).map(|i| desc(i, "sig", 1000)).collect();
        all.sort_by_key(|d| d.digest.to_string());
        let want: Vec<String> = all.iter().map(|d| d.digest.to_string()).collect();
        let (got, pages) = walk(&all, None, 1000, 5000, SCAN_BUDGET);
        assert_eq!(got, want);
        assert!(
            pages >= 10,
            "about four descriptors of 1 KiB per 5000 bytes: {pages}"
        );

        // One descriptor larger than the cap is served alone.
        let big = [desc(1, "sig", 10_000)];
        let p = build_page(big.iter().cloned().map(Ok), None, 10, 5000, 10).unwrap();
        assert_eq!(digests(&p).len(), 1);
        assert_eq!(p.next, None);
    }

    #[test]
    fn zero_n_is_an_empty_last_page() {
        let all = sorted(3);
        let p = build_page(all.into_iter().map(Ok), None, 0, PAGE_BYTES, 10).unwrap();
        assert!(digests(&p).is_empty());
        assert_eq!(p.next, None);
    }

    #[test]
    fn fallback_entries_merge_in_order_once() {
        let all = sorted(20);
        let (stored, extra): (Vec<_>, Vec<_>) = all
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        let stored: Vec<_> = stored.into_iter().map(|(_, d)| d).collect();
        let mut extra: Vec<_> = extra.into_iter().map(|(_, d)| d).collect();
        // The fallback index also lists one the index has, out of order.
        extra.push(stored[3].clone());
        extra.reverse();
        let bytes = serde_json::to_vec(&serde_json::json!({ "manifests": extra })).unwrap();
        let merged: Vec<String> = merge(
            stored.iter().cloned().map(Ok),
            fallback_descriptors(&bytes, None).into_iter(),
        )
        .map(|d| d.unwrap().digest.to_string())
        .collect();
        let want: Vec<String> = all.iter().map(|d| d.digest.to_string()).collect();
        assert_eq!(merged, want);

        let after = want[9].clone();
        let rest = fallback_descriptors(&bytes, Some(&after.parse().unwrap()));
        assert!(rest.iter().all(|d| d.digest.to_string() > after));
        assert!(fallback_descriptors(b"not json", None).is_empty());
    }
}

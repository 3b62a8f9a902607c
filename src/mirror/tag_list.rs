//! Tag lists of mirrored repositories, from the upstream: one walk of the
//! upstream's `Link` pages per (upstream, repository, `n`, `last`) at a
//! time, shared by every request asking the same while it runs, bounded as
//! a whole (tags collected, bytes read, pages followed) and page by page
//! (a page may be no larger than the bytes left). A walk cut short by a
//! bound answers the tags so far with `more` set, so the client gets a
//! `Link` to the next page and carries on from there. The answer is
//! serialized once, shared by the requests of the walk, and dropped when
//! the last of them has sent it.

use crate::oci::Tag;
use crate::upstream::{Upstream, UpstreamError};
use bytes::{Buf, Bytes};
use http::{header, Method};
use http_body_util::BodyExt;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most upstream pages followed for one walk.
pub const MAX_TAG_PAGES: usize = 100;
/// How long one page's body may take to arrive.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bounds of one walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tags collected at most.
    pub tags: usize,
    /// Bytes of page bodies read at most (one page included).
    pub bytes: u64,
}

/// Largest piece of a serialized answer. Answers are built from pieces
/// well under the allocator's mmap threshold: one big buffer per answer
/// would raise that threshold and keep tens of MiB resident afterwards.
const PIECE: usize = 32 * 1024;

/// A walk's answer, in the client's terms: sorted, after `last`, at most
/// `n` tags.
#[derive(Debug)]
pub struct TagPage {
    /// The JSON array of the tags, in pieces of at most [`PIECE`] bytes
    /// (about; one tag may overrun it).
    pub json: Vec<Bytes>,
    /// The last tag of the page, for the `Link` to the next.
    pub last: Option<String>,
    /// Whether more tags remain: the upstream said so, or a bound cut the
    /// walk short.
    pub more: bool,
}

impl TagPage {
    /// A page of `tags` (already sorted and cut to size).
    pub fn of(tags: &[String], more: bool) -> TagPage {
        let mut json = Vec::new();
        let mut piece = Vec::with_capacity(PIECE + 512);
        piece.push(b'[');
        for (i, t) in tags.iter().enumerate() {
            if i > 0 {
                piece.push(b',');
            }
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut piece, t);
            if piece.len() >= PIECE {
                json.push(Bytes::from(std::mem::replace(
                    &mut piece,
                    Vec::with_capacity(PIECE + 512),
                )));
            }
        }
        piece.push(b']');
        json.push(Bytes::from(piece));
        TagPage {
            json,
            last: tags.last().cloned(),
            more,
        }
    }

    /// Bytes of the JSON array.
    pub fn json_len(&self) -> usize {
        self.json.iter().map(Bytes::len).sum()
    }
}

type Key = (String, String, Option<usize>, Option<String>);
type Shared = Result<Arc<TagPage>, UpstreamError>;
type Cell = Arc<tokio::sync::OnceCell<Shared>>;

/// Different walks that may run at once; more wait their turn. Each can
/// hold a few tens of MiB (its tags and one page) while it runs.
pub const MAX_WALKS: usize = 4;
/// How long a walk waits for its turn before giving up.
pub const WALK_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The walks in flight.
pub struct TagWalks {
    inflight: Mutex<HashMap<Key, Cell>>,
    running: tokio::sync::Semaphore,
}

impl Default for TagWalks {
    fn default() -> TagWalks {
        TagWalks {
            inflight: Mutex::default(),
            running: tokio::sync::Semaphore::new(MAX_WALKS),
        }
    }
}

/// Takes a walk's cell out of the map when its request is done (or
/// dropped), unless other requests still wait on an unfinished walk.
struct Leave<'a> {
    walks: &'a TagWalks,
    key: &'a Key,
    cell: Option<Cell>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut map = self
            .walks
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(mine) = self.cell.take() else {
            return;
        };
        let ours = map.get(self.key).is_some_and(|c| Arc::ptr_eq(c, &mine));
        // This request lets go of the cell under the lock, so of several
        // leaving at once the last one sees only the map's reference.
        drop(mine);
        let done = map
            .get(self.key)
            .is_some_and(|c| c.initialized() || Arc::strong_count(c) == 1);
        if ours && done {
            map.remove(self.key);
        }
    }
}

impl TagWalks {
    /// The upstream's tag list for `n` and `last`, from a walk shared with
    /// every identical request running at the same time.
    pub async fn get(
        &self,
        up: &Upstream,
        repo: &str,
        n: Option<usize>,
        last: Option<&str>,
        limits: Limits,
    ) -> Shared {
        let key: Key = (
            up.name().to_string(),
            repo.to_string(),
            n,
            last.map(str::to_string),
        );
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        // The request's only reference to the cell is in `leave`, which
        // lets go of it under the map's lock.
        let leave = Leave {
            walks: self,
            key: &key,
            cell: Some(cell),
        };
        let Some(cell) = leave.cell.as_ref() else {
            return Err(UpstreamError::Unavailable("tag walk lost".into()));
        };
        cell.get_or_init(|| async {
            // A bounded wait for a turn: past it the caller answers from
            // the cache, or with an error.
            let turn = tokio::time::timeout(WALK_QUEUE_WAIT, self.running.acquire()).await;
            let Ok(Ok(_turn)) = turn else {
                return Err(UpstreamError::Unavailable(
                    "too many upstream tag lists are being read; retry shortly".into(),
                ));
            };
            walk(up, repo, n, last, limits).await.map(Arc::new)
        })
        .await
        .clone()
    }
}

/// Why a walk stopped before the upstream's last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Tags,
    Bytes,
    Pages,
}

/// Follows the upstream's pages for `n` and `last` within `limits`.
async fn walk(
    up: &Upstream,
    repo: &str,
    n: Option<usize>,
    last: Option<&str>,
    limits: Limits,
) -> Result<TagPage, UpstreamError> {
    let mut tags: Vec<String> = Vec::new();
    let mut tags_left = limits.tags;
    let mut bytes_left = limits.bytes;
    let mut suffix = tags_suffix(n, last);
    let mut cut = None;
    let mut upstream_more = false;
    for page in 0.. {
        if page == MAX_TAG_PAGES {
            cut = Some(Cut::Pages);
            break;
        }
        let resp = up
            .send(Method::GET, repo, &suffix, &["application/json"])
            .await?;
        let next = resp
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_page_query);
        let (body, size) = match read_page(resp.into_body(), bytes_left).await? {
            Some(b) => b,
            None if tags.is_empty() => {
                return Err(UpstreamError::Unavailable(format!(
                    "an upstream tag list page is larger than max_upstream_tag_bytes ({} bytes)",
                    limits.bytes
                )))
            }
            None => {
                cut = Some(Cut::Bytes);
                break;
            }
        };
        bytes_left = bytes_left.saturating_sub(size as u64);
        let full = parse_page(
            std::io::BufReader::with_capacity(16 * 1024, body.reader()),
            &mut tags,
            &mut tags_left,
        )?;
        if full {
            cut = Some(Cut::Tags);
            break;
        }
        match next {
            Some(q) if n.is_none() => suffix = format!("tags/list?{q}"),
            other => {
                upstream_more = other.is_some();
                break;
            }
        }
    }
    // The spec wants lexical order and exact pages; not every upstream
    // keeps either (distribution 2.8 ignores n), and a hostile one repeats.
    tags.sort_unstable();
    tags.dedup();
    if let Some(l) = last {
        let after = tags.partition_point(|t| t.as_str() <= l);
        tags.drain(..after);
    }
    let limit = n.unwrap_or(usize::MAX);
    let more = upstream_more || cut.is_some() || tags.len() > limit;
    tags.truncate(limit);
    if let Some(c) = cut {
        let (key, what) = match c {
            Cut::Tags => ("max_upstream_tags", format!("{} tags", limits.tags)),
            Cut::Bytes => ("max_upstream_tag_bytes", format!("{} bytes", limits.bytes)),
            Cut::Pages => ("a walk's page limit", format!("{MAX_TAG_PAGES} pages")),
        };
        tracing::info!(
            upstream = up.name(),
            repo,
            tags = tags.len(),
            "upstream tag list cut at {what} ({key}): answered with a Link to the next page"
        );
    }
    Ok(TagPage::of(&tags, more))
}

/// Reads one page's body, at most `limit` bytes, and its size; `None` when
/// it is larger. The body stays in the pieces it arrived in (never one
/// big buffer; see [`PIECE`]).
async fn read_page(
    body: hyper::body::Incoming,
    limit: u64,
) -> Result<Option<(impl Buf, usize)>, UpstreamError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(
        PAGE_TIMEOUT,
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| UpstreamError::Unavailable("upstream tag list stalled".into()))?;
    match collected {
        Ok(c) => {
            let buf = c.aggregate();
            let size = buf.remaining();
            Ok(Some((buf, size)))
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Ok(None),
        Err(e) => Err(UpstreamError::Unavailable(format!(
            "upstream tag list broke off: {e}"
        ))),
    }
}

/// Adds the valid tags of one page (`{"tags": [...]}`) to `out`, at most
/// `left` of them; returns whether the page held more than that.
fn parse_page(
    body: impl std::io::Read,
    out: &mut Vec<String>,
    left: &mut usize,
) -> Result<bool, UpstreamError> {
    let mut full = false;
    let mut de = serde_json::Deserializer::from_reader(body);
    PageSeed {
        out,
        left,
        full: &mut full,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| UpstreamError::Unavailable(format!("bad tag list: {e}")))?;
    Ok(full)
}

/// Deserializes a tag-list page straight into the walk's list, keeping at
/// most `left` tags: an upstream's page never exists twice in memory, nor
/// as more strings than the bound.
struct PageSeed<'a> {
    out: &'a mut Vec<String>,
    left: &'a mut usize,
    full: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tag list object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k == "tags" {
                map.next_value_seed(TagsSeed {
                    out: &mut *self.out,
                    left: &mut *self.left,
                    full: &mut *self.full,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `tags` array (or `null`).
struct TagsSeed<'a> {
    out: &'a mut Vec<String>,
    left: &'a mut usize,
    full: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of tags or null")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            if *self.left == 0 {
                // Past the bound: read on (the page is in memory anyway)
                // without keeping anything, to learn whether there was more.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    *self.full = true;
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                }
                return Ok(());
            }
            let Some(t) = seq.next_element::<std::borrow::Cow<'de, str>>()? else {
                return Ok(());
            };
            // Anything that is not a tag (too long, a slash, a newline...)
            // never reaches a client.
            if Tag::parse(&t).is_ok() {
                self.out.push(t.into_owned());
                *self.left -= 1;
            }
        }
    }
}

/// The query of a `Link: <...?last=x&n=y>; rel="next"` header.
pub fn next_page_query(link: &str) -> Option<String> {
    let target = link
        .split(';')
        .next()?
        .trim()
        .strip_prefix('<')?
        .strip_suffix('>')?;
    let url = url::Url::parse("http://upstream.invalid")
        .ok()?
        .join(target)
        .ok()?;
    url.query().map(str::to_string)
}

/// `tags/list` with the client's `n` and `last`, passed on upstream.
fn tags_suffix(n: Option<usize>, last: Option<&str>) -> String {
    let mut qs = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        qs.append_pair("n", &n.to_string());
    }
    if let Some(l) = last {
        qs.append_pair("last", l);
    }
    let qs = qs.finish();
    if qs.is_empty() {
        "tags/list".to_string()
    } else {
        format!("tags/list?{qs}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_page_query("</v2/library/alpine/tags/list?last=3.19&n=100>; rel=\"next\"")
                .as_deref(),
            Some("last=3.19&n=100")
        );
        assert_eq!(next_page_query("garbage"), None);
    }

    #[test]
    fn pages_are_parsed_within_the_bound() {
        let mut out = Vec::new();
        let mut left = 3;
        let page = br#"{"name":"x","tags":["a","b\u0063","not/a/tag",""]}"#;
        assert!(!parse_page(&page[..], &mut out, &mut left).unwrap());
        assert_eq!(out, ["a", "bc"]);
        assert_eq!(left, 1);
        let page = br#"{"tags":["c","d","e"],"name":"x"}"#;
        assert!(
            parse_page(&page[..], &mut out, &mut left).unwrap(),
            "over the bound"
        );
        assert_eq!(out, ["a", "bc", "c"]);
        assert_eq!(left, 0);
        let mut left = 5;
        assert!(!parse_page(&br#"{"name":"x","tags":null}"#[..], &mut out, &mut left).unwrap());
        assert!(!parse_page(&br#"{"name":"x"}"#[..], &mut out, &mut left).unwrap());
        for bad in [
            &br#"{"tags":[1]}"#[..],
            b"[]",
            b"{\"tags\":[\"a\"]",
            b"{} x",
        ] {
            assert!(parse_page(bad, &mut out, &mut left).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_are_json_arrays() {
        let p = TagPage::of(&["a".to_string(), "b\"c".to_string()], true);
        assert_eq!(p.json.concat(), br#"["a","b\"c"]"#);
        assert_eq!(p.last.as_deref(), Some("b\"c"));
        let p = TagPage::of(&[], false);
        assert_eq!(p.json.concat(), b"[]");
        assert_eq!(p.last, None);
        // A long answer's pieces join into one JSON array.
        let many: Vec<String> = (0..10_000).map(|i| format!("tag-{i}")).collect();
        let p = TagPage::of(&many, false);
        assert!(p.json.len() > 1 && p.json.iter().all(|b| b.len() < PIECE + 200));
        let joined: Vec<u8> = p.json.concat();
        assert_eq!(joined.len(), p.json_len());
        let back: Vec<String> = serde_json::from_slice(&joined).unwrap();
        assert_eq!(back, many);
    }
}

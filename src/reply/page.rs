//! Paging of listings (tags, the catalog, referrers): how many entries a
//! page holds (`n`, with a default and a maximum per listing), where it
//! starts (an exclusive `last`, a key the index orders by), and the `Link`
//! header that names the next page while more remain.

use crate::error::{Error, ErrorCode, Result};
use crate::reply;

/// The page sizes one listing allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries on a page when the client gives no `n`.
    pub default: usize,
    /// Most entries on one page.
    pub max: usize,
    /// An `n` over `max` is refused (400) rather than cut to `max`.
    pub refuse_over_max: bool,
}

/// The page size a request asks for: `n` when given (cut to the maximum,
/// or refused over it), the default otherwise. Anything but decimal digits
/// is `PAGINATION_NUMBER_INVALID`.
pub fn size(q: &[(String, String)], limits: Limits) -> Result<usize> {
    let Some(v) = reply::query_one(q, "n") else {
        return Ok(limits.default);
    };
    let invalid = || {
        Error::oci(
            ErrorCode::PaginationNumberInvalid,
            format!("n must be a number from 0 to {}", limits.max),
        )
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    // All digits: too many for a u64 is just a very large number.
    let n = v.parse::<u64>().unwrap_or(u64::MAX);
    if n <= limits.max as u64 {
        Ok(n as usize)
    } else if limits.refuse_over_max {
        Err(invalid())
    } else {
        Ok(limits.max)
    }
}

/// The `Link` header value naming the page after `last` on `path`, with
/// the page size and any other parameters the next page must keep (a
/// filter).
pub fn next_link(path: &str, last: &str, n: usize, keep: &[(&str, &str)]) -> String {
    let mut qs = form_urlencoded::Serializer::new(String::new());
    qs.append_pair("last", last)
        .append_pair("n", &n.to_string());
    for (k, v) in keep {
        qs.append_pair(k, v);
    }
    format!("<{path}?{}>; rel=\"next\"", qs.finish())
}

/// Cuts `items` (read with one entry more than the page holds) to the page
/// and names its last entry when more remain after it.
pub fn cut(mut items: Vec<String>, n: usize) -> (Vec<String>, Option<String>) {
    let more = items.len() > n;
    items.truncate(n);
    let next = match (more, items.last()) {
        (true, Some(l)) => Some(l.clone()),
        _ => None,
    };
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(s.as_bytes()).into_owned().collect()
    }

    const REFUSE: Limits = Limits {
        default: 100,
        max: 1000,
        refuse_over_max: true,
    };
    const CLAMP: Limits = Limits {
        default: 100,
        max: 1000,
        refuse_over_max: false,
    };

    #[test]
    fn n_defaults_cuts_or_refuses() {
        assert_eq!(size(&q(""), REFUSE).unwrap(), 100);
        assert_eq!(size(&q("n=0"), REFUSE).unwrap(), 0);
        assert_eq!(size(&q("n=1000"), REFUSE).unwrap(), 1000);
        assert_eq!(size(&q("n=7&last=x"), CLAMP).unwrap(), 7);
        assert_eq!(size(&q("n=1001"), CLAMP).unwrap(), 1000);
        assert_eq!(size(&q("n=99999999999999999999999"), CLAMP).unwrap(), 1000);
        assert!(size(&q("n=99999999999999999999999"), REFUSE).is_err());
        for bad in ["n=1001", "n=-1", "n=", "n=ten", "n=1.5", "n=%2B1"] {
            let e = size(&q(bad), REFUSE).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PaginationNumberInvalid, "{bad}");
        }
        for bad in ["n=-1", "n=", "n=0x10"] {
            let e = size(&q(bad), CLAMP).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PaginationNumberInvalid, "{bad}");
        }
    }

    #[test]
    fn link_escapes_and_keeps_filters() {
        assert_eq!(
            next_link("/v2/a/tags/list", "b", 2, &[]),
            "</v2/a/tags/list?last=b&n=2>; rel=\"next\""
        );
        assert_eq!(
            next_link(
                "/v2/a/referrers/sha256:00",
                "sha256:ff",
                10,
                &[("artifactType", "application/vnd.x+json")]
            ),
            "</v2/a/referrers/sha256:00?last=sha256%3Aff&n=10&artifactType=application%2Fvnd.x%2Bjson>; rel=\"next\""
        );
    }

    #[test]
    fn cut_names_the_last_entry_only_when_more_remain() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cut(v(&["a", "b", "c"]), 2),
            (v(&["a", "b"]), Some("b".into()))
        );
        assert_eq!(cut(v(&["a", "b"]), 2), (v(&["a", "b"]), None));
        assert_eq!(cut(v(&[]), 2), (v(&[]), None));
        assert_eq!(cut(v(&["a"]), 0), (v(&[]), None));
    }
}

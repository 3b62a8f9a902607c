//! An upstream's pull budget: what its rate-limit headers last said
//! (Docker Hub sends `ratelimit-limit: 100;w=21600`, `ratelimit-remaining`
//! and `docker-ratelimit-source` on its answers, HEADs included, and counts
//! a manifest GET as a pull, a HEAD not), and what a 429 said, turned into
//! how freely the mirror may spend: [`Spend`]. One per upstream (an
//! upstream has one credential, so this is per credential too).
//!
//! A reading stands for [`RECHECK`] at most (the limit is a sliding
//! window: pulls come back as old ones age out); after that the mirror
//! asks the upstream again as usual, and that answer's headers are the
//! next reading. Registries that send no such headers and no 429 are never
//! held back.

use crate::config::RatelimitReserve;
use crate::metrics::{ratelimit_value, UpstreamMetrics};
use http::{header, HeaderMap, StatusCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reading (or a 429 without `Retry-After`) stands.
pub const RECHECK: Duration = Duration::from_secs(600);
/// How long a bare 429 (no rate-limit headers, no `Retry-After`) stops
/// manifest GETs: a registry that says nothing of its window.
const BARE_429: Duration = Duration::from_secs(60);

/// How freely the mirror may spend pulls at an upstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Plenty left, or nothing known: revalidate tags and fetch as usual.
    Freely,
    /// At or under the reserve: tags are served at their last known
    /// digest (when that is cached) instead of being asked about, and only
    /// content nobody has cached is fetched.
    Reserve,
    /// Nothing left (a 429, or 0 remaining): manifest GETs are answered
    /// 429 without asking, for `retry_after`.
    Spent { retry_after: Duration },
}

impl Spend {
    /// The value of `wharf_upstream_pull_budget_state`.
    fn gauge(self) -> u8 {
        match self {
            Spend::Freely => 0,
            Spend::Reserve => 1,
            Spend::Spent { .. } => 2,
        }
    }

    /// Whether tags should keep their last known digest.
    pub fn holds_tags(self) -> bool {
        self != Spend::Freely
    }
}

/// What the upstream said last.
#[derive(Debug, Clone, Default)]
struct Reading {
    limit: Option<u64>,
    remaining: Option<u64>,
    /// The window the limit is counted over (`w=`), seconds.
    window: Option<u64>,
    /// `docker-ratelimit-source`: the address or account counted.
    source: Option<String>,
    at: Option<Instant>,
    /// No manifest GET before this (a 429).
    spent_until: Option<Instant>,
}

/// Where the budget stood at the last reading, for the log lines written
/// when it crosses a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Plenty,
    Half,
    Reserve,
    Spent,
}

pub struct Budget {
    upstream: String,
    reserve: RatelimitReserve,
    metrics: UpstreamMetrics,
    state: Mutex<(Reading, Level)>,
}

impl Budget {
    pub fn new(upstream: &str, reserve: RatelimitReserve, metrics: UpstreamMetrics) -> Budget {
        Budget {
            upstream: upstream.to_string(),
            reserve,
            metrics,
            state: Mutex::new((Reading::default(), Level::Plenty)),
        }
    }

    /// Reads an answer from the upstream's own origin.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap) {
        self.observe_at(status, headers, Instant::now());
    }

    /// How freely to spend now.
    pub fn spend(&self) -> Spend {
        let spend = self.spend_at(Instant::now());
        self.metrics.budget_state(spend.gauge());
        spend
    }

    /// Counts one upstream manifest request not sent to save the budget.
    pub fn saved(&self) {
        self.metrics.budget_saved();
    }

    fn observe_at(&self, status: StatusCode, headers: &HeaderMap, now: Instant) {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let limit = text("ratelimit-limit").and_then(ratelimit_value);
        let remaining = text("ratelimit-remaining").and_then(ratelimit_value);
        let limited = status == StatusCode::TOO_MANY_REQUESTS;
        if limit.is_none() && remaining.is_none() && !limited {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut state.0;
        if limit.is_some() {
            r.limit = limit;
        }
        if let Some(w) = text("ratelimit-limit")
            .or(text("ratelimit-remaining"))
            .and_then(window_of)
        {
            r.window = Some(w);
        }
        if let Some(s) = text("docker-ratelimit-source") {
            r.source = Some(s.chars().take(64).collect());
        }
        let headers = limit.is_some() || remaining.is_some();
        // A bare 429 says nothing of what is left: it only stops GETs.
        r.remaining = if limited && headers {
            Some(0)
        } else {
            remaining.or(r.remaining)
        };
        r.at = Some(now);
        let until = if limited {
            let wait = text(header::RETRY_AFTER.as_str())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(if headers { RECHECK } else { BARE_429 });
            Some(now + wait.min(RECHECK))
        } else if remaining == Some(0) {
            Some(now + RECHECK)
        } else {
            None
        };
        // Answers cross on the wire: an earlier one arriving late does not
        // lift a stop, and the later of two deadlines holds.
        r.spent_until = match (r.spent_until.filter(|u| *u > now), until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let level = self.level(r);
        let before = std::mem::replace(&mut state.1, level);
        let r = state.0.clone();
        drop(state);
        self.metrics.budget_state(self.spend_at(now).gauge());
        if level != before {
            self.log(before, level, &r);
        }
    }

    fn spend_at(&self, now: Instant) -> Spend {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = &state.0;
        if let Some(until) = r.spent_until.filter(|u| *u > now) {
            return Spend::Spent {
                retry_after: until - now,
            };
        }
        let fresh = r.at.is_some_and(|at| now.duration_since(at) < RECHECK);
        let low = r.remaining.is_some_and(|left| {
            left == 0 || self.reserve.of(r.limit).is_some_and(|keep| left <= keep)
        });
        if fresh && low {
            return Spend::Reserve;
        }
        Spend::Freely
    }

    fn level(&self, r: &Reading) -> Level {
        if r.spent_until.is_some() {
            return Level::Spent;
        }
        let Some(left) = r.remaining else {
            return Level::Plenty;
        };
        if left == 0 {
            Level::Spent
        } else if self.reserve.of(r.limit).is_some_and(|keep| left <= keep) {
            Level::Reserve
        } else if r.limit.is_some_and(|l| left.saturating_mul(2) <= l) {
            Level::Half
        } else {
            Level::Plenty
        }
    }

    fn log(&self, before: Level, now: Level, r: &Reading) {
        let upstream = self.upstream.as_str();
        let left = r.remaining.map_or("?".into(), |n| n.to_string());
        let limit = r.limit.map_or("?".into(), |n| n.to_string());
        let window = r.window.map_or("?".into(), |w| format!("{w}s"));
        let source = r.source.as_deref().unwrap_or("-");
        match now {
            Level::Spent => tracing::warn!(
                upstream,
                remaining = %left,
                limit = %limit,
                window = %window,
                source,
                "pull budget spent: manifests nobody has cached are answered 429 without asking the upstream until it is read again; tags are served at their last known digest"
            ),
            Level::Reserve => tracing::warn!(
                upstream,
                remaining = %left,
                limit = %limit,
                window = %window,
                source,
                "pull budget in its reserve ({}): tags are served at their last known digest instead of being checked, only content nobody has cached is fetched",
                describe(self.reserve)
            ),
            Level::Half if before < Level::Half => tracing::info!(
                upstream,
                remaining = %left,
                limit = %limit,
                window = %window,
                source,
                "half of the pull budget is spent"
            ),
            Level::Half | Level::Plenty => tracing::info!(
                upstream,
                remaining = %left,
                limit = %limit,
                window = %window,
                source,
                "pull budget recovered: tags are checked upstream again"
            ),
        }
    }
}

fn describe(r: RatelimitReserve) -> String {
    match r {
        RatelimitReserve::Percent(p) => format!("{p}% of the limit"),
        RatelimitReserve::Pulls(n) => format!("{n} pulls"),
    }
}

/// The `w=` of a rate-limit header value (`100;w=21600`), seconds.
fn window_of(v: &str) -> Option<u64> {
    v.split(';')
        .skip(1)
        .filter_map(|p| p.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(reserve: RatelimitReserve) -> Budget {
        Budget::new(
            "test.example",
            reserve,
            crate::metrics::METRICS.upstream("test.example"),
        )
    }

    fn headers(limit: u64, remaining: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit-limit",
            format!("{limit};w=21600").parse().unwrap(),
        );
        h.insert(
            "ratelimit-remaining",
            format!("{remaining};w=21600").parse().unwrap(),
        );
        h.insert("docker-ratelimit-source", "192.0.2.7".parse().unwrap());
        h
    }

    #[test]
    fn the_budget_follows_the_headers_down_and_back_up() {
        let b = budget(RatelimitReserve::Percent(10));
        let t = Instant::now();
        assert_eq!(b.spend_at(t), Spend::Freely, "nothing known");
        b.observe_at(StatusCode::OK, &headers(100, 50), t);
        assert_eq!(b.spend_at(t), Spend::Freely);
        b.observe_at(StatusCode::OK, &headers(100, 11), t);
        assert_eq!(b.spend_at(t), Spend::Freely);
        b.observe_at(StatusCode::OK, &headers(100, 10), t);
        assert_eq!(b.spend_at(t), Spend::Reserve);
        assert_eq!(
            b.state.lock().unwrap().0.source.as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(b.state.lock().unwrap().0.window, Some(21600));
        // A reading goes stale: the next request reads again.
        assert_eq!(b.spend_at(t + RECHECK), Spend::Freely);
        b.observe_at(StatusCode::OK, &headers(100, 40), t + RECHECK);
        assert_eq!(b.spend_at(t + RECHECK), Spend::Freely, "recovered");
    }

    #[test]
    fn a_429_or_nothing_left_stops_manifest_gets_for_a_while() {
        let b = budget(RatelimitReserve::Pulls(5));
        let t = Instant::now();
        b.observe_at(StatusCode::OK, &headers(100, 0), t);
        assert_eq!(
            b.spend_at(t),
            Spend::Spent {
                retry_after: RECHECK
            }
        );
        assert_eq!(b.spend_at(t + RECHECK), Spend::Freely, "asked again");
        // A 429 with Retry-After: that long (capped at RECHECK).
        let b = budget(RatelimitReserve::Pulls(5));
        let mut h = headers(100, 0);
        h.insert(header::RETRY_AFTER, "30".parse().unwrap());
        b.observe_at(StatusCode::TOO_MANY_REQUESTS, &h, t);
        assert_eq!(
            b.spend_at(t + Duration::from_secs(10)),
            Spend::Spent {
                retry_after: Duration::from_secs(20)
            }
        );
        // Then GETs go again, and the reading (none left) still holds tags.
        assert_eq!(b.spend_at(t + Duration::from_secs(30)), Spend::Reserve);
        assert_eq!(b.spend_at(t + RECHECK), Spend::Freely);
        h.insert(header::RETRY_AFTER, "99999".parse().unwrap());
        let b = budget(RatelimitReserve::Pulls(5));
        b.observe_at(StatusCode::TOO_MANY_REQUESTS, &h, t);
        assert_eq!(b.spend_at(t + RECHECK), Spend::Freely, "capped");
        // A bare 429 from a registry that sends no rate-limit headers.
        let b = budget(RatelimitReserve::Percent(10));
        b.observe_at(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), t);
        assert_eq!(
            b.spend_at(t),
            Spend::Spent {
                retry_after: BARE_429
            }
        );
        assert_eq!(b.spend_at(t + BARE_429), Spend::Freely, "tags are not held");
        // An answer sent before the 429 and arriving after it does not
        // lift the stop; the later of two deadlines holds.
        b.observe_at(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), t);
        b.observe_at(
            StatusCode::OK,
            &headers(100, 60),
            t + Duration::from_secs(1),
        );
        assert!(matches!(
            b.spend_at(t + Duration::from_secs(2)),
            Spend::Spent { .. }
        ));
        assert_eq!(b.spend_at(t + BARE_429), Spend::Freely);
        let mut short = headers(100, 0);
        short.insert(header::RETRY_AFTER, "5".parse().unwrap());
        b.observe_at(StatusCode::TOO_MANY_REQUESTS, &short, t);
        b.observe_at(StatusCode::OK, &headers(100, 0), t);
        assert!(matches!(
            b.spend_at(t + Duration::from_secs(6)),
            Spend::Spent { .. }
        ));
    }

    #[test]
    fn registries_without_headers_are_never_held_back() {
        let b = budget(RatelimitReserve::Pulls(1_000_000));
        let t = Instant::now();
        b.observe_at(StatusCode::OK, &HeaderMap::new(), t);
        b.observe_at(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), t);
        assert_eq!(b.spend_at(t), Spend::Freely);
    }

    #[test]
    fn a_share_of_an_unknown_limit_holds_nothing_back() {
        let b = budget(RatelimitReserve::Percent(50));
        let t = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", "3".parse().unwrap());
        b.observe_at(StatusCode::OK, &h, t);
        assert_eq!(b.spend_at(t), Spend::Freely);
        let b = budget(RatelimitReserve::Pulls(3));
        b.observe_at(StatusCode::OK, &h, t);
        assert_eq!(b.spend_at(t), Spend::Reserve);
    }

    #[test]
    fn windows_are_read_from_either_header() {
        assert_eq!(window_of("100;w=21600"), Some(21600));
        assert_eq!(window_of("100; w=60"), Some(60));
        assert_eq!(window_of("100"), None);
        assert_eq!(window_of("100;w=x"), None);
    }
}

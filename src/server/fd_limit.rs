//! The process's file-descriptor limit against `--max-connections`: the
//! soft limit is raised to the hard one at start-up, and when even that
//! cannot hold every connection plus the files it works with, fewer
//! connections are accepted (with a warning that says how to raise it).
//! Requests in flight are capped too, since an HTTP/2 connection carries
//! many, each of which may hold a file or an upstream socket. So running
//! out of descriptors never turns into errors for clients already
//! connected.

/// Descriptors set aside for the store, the listener, logs and the
/// upstream connection pools.
pub const RESERVED: u64 = 256;
/// Descriptors one connection may need: its socket, and the blob file or
/// upstream socket its request works with.
pub const PER_CONNECTION: u64 = 2;

/// Requests in flight per connection at most, with descriptors to spare.
pub const REQUESTS_PER_CONNECTION: u64 = 4;

/// What to do about the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit to set, if it changes.
    pub raise_to: Option<u64>,
    /// How many connections to accept at most.
    pub max_connections: usize,
    /// How many requests may be in flight at once, over all connections.
    pub max_requests: usize,
    /// Set when `max_connections` had to be lowered.
    pub short_by: Option<u64>,
}

/// Descriptors `max_connections` connections need.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(PER_CONNECTION)
        .saturating_add(RESERVED)
}

/// The pure rule. `None` limits are unlimited.
pub fn plan(soft: Option<u64>, hard: Option<u64>, max_connections: usize) -> Plan {
    let want = needed(max_connections);
    let raise_to = match (soft, hard) {
        (Some(s), Some(h)) if h > s => Some(h),
        (Some(_), None) => Some(u64::MAX),
        _ => None,
    };
    let limit = match (soft, hard) {
        (None, _) | (Some(_), None) => u64::MAX,
        (Some(s), Some(h)) => s.max(h),
    };
    let conns = max_connections as u64;
    if limit >= want {
        // What the connections' sockets leave, up to a few per connection.
        let requests =
            (limit - RESERVED - conns).min(conns.saturating_mul(REQUESTS_PER_CONNECTION));
        return Plan {
            raise_to,
            max_connections,
            max_requests: usize::try_from(requests).unwrap_or(usize::MAX),
            short_by: None,
        };
    }
    let fits = (limit.saturating_sub(RESERVED) / PER_CONNECTION)
        .max(1)
        .min(conns);
    Plan {
        raise_to,
        max_connections: fits as usize,
        max_requests: fits as usize,
        short_by: Some(want - limit),
    }
}

/// Raises the soft limit as far as it goes and returns how many
/// connections and requests in flight fit, logging what it did.
pub fn fit(max_connections: usize) -> (usize, usize) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let now = getrlimit(Resource::Nofile);
        let mut p = plan(now.current, now.maximum, max_connections);
        if let Some(to) = p.raise_to {
            let raised = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: (to != u64::MAX).then_some(to),
                    maximum: now.maximum,
                },
            );
            if let Err(e) = raised {
                tracing::warn!(error = %e, "could not raise the file-descriptor limit");
                p = plan(now.current, now.current, max_connections);
            } else {
                tracing::debug!(from = ?now.current, to, "raised the file-descriptor limit");
            }
        }
        if let Some(short) = p.short_by {
            tracing::warn!(
                limit = needed(max_connections) - short,
                needed = needed(max_connections),
                max_connections = p.max_connections,
                "the file-descriptor limit is too low for --max-connections: accepting at most {} connections; raise it (systemd LimitNOFILE=, ulimit -n) or lower --max-connections",
                p.max_connections
            );
        }
        (p.max_connections, p.max_requests)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let p = plan(None, None, max_connections);
        (p.max_connections, p.max_requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for (soft, hard, max, want) in [
            // Raised to the hard limit, which is enough.
            (
                Some(1024),
                Some(524288),
                10000,
                Plan {
                    raise_to: Some(524288),
                    max_connections: 10000,
                    max_requests: 40000,
                    short_by: None,
                },
            ),
            // Already enough.
            (
                Some(65536),
                Some(65536),
                10000,
                Plan {
                    raise_to: None,
                    max_connections: 10000,
                    max_requests: 40000,
                    short_by: None,
                },
            ),
            // Enough for the connections, not for four requests each.
            (
                Some(30000),
                Some(30000),
                10000,
                Plan {
                    raise_to: None,
                    max_connections: 10000,
                    max_requests: 30000 - 256 - 10000,
                    short_by: None,
                },
            ),
            // Unlimited.
            (
                None,
                None,
                10000,
                Plan {
                    raise_to: None,
                    max_connections: 10000,
                    max_requests: 40000,
                    short_by: None,
                },
            ),
            // Too low even raised: fewer connections.
            (
                Some(1024),
                Some(1024),
                10000,
                Plan {
                    raise_to: None,
                    max_connections: 384,
                    max_requests: 384,
                    short_by: Some(20256 - 1024),
                },
            ),
            (
                Some(256),
                Some(4096),
                10000,
                Plan {
                    raise_to: Some(4096),
                    max_connections: 1920,
                    max_requests: 1920,
                    short_by: Some(20256 - 4096),
                },
            ),
            // Absurdly low: still one.
            (
                Some(100),
                Some(100),
                10,
                Plan {
                    raise_to: None,
                    max_connections: 1,
                    max_requests: 1,
                    short_by: Some(276 - 100),
                },
            ),
        ] {
            assert_eq!(plan(soft, hard, max), want, "{soft:?} {hard:?} {max}");
        }
    }
}
